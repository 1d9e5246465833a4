//! Background work while the server runs: re-reading operator-edited files (users, clients,
//! signing keys, certificates), passes that repeat until shutdown (janitor, key sharing), and
//! [`Reloader`], which re-reads `identity.toml` on SIGHUP.

use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::watch;

use crate::abuse::client_failures::ClientAuthPolicy;
use crate::abuse::rate_limit::Rate;
use crate::audit::Audit;
use crate::config::{self, ConfigError, OAuthSettings, Settings, TokenStoreSettings};
use crate::live::Live;
use crate::metrics::ReloadMetrics;
use crate::store::LockoutPolicy;
use crate::tls::reload::ServedCertificate;

/// Calls `reload` on `target` every `interval`, on the blocking pool (it reads and parses
/// files), until the last other `Arc` to `target` is dropped.
pub fn periodically<T: Send + Sync + 'static>(target: &Arc<T>, interval: Duration, reload: fn(&T)) {
    let weak: Weak<T> = Arc::downgrade(target);
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let Some(target) = weak.upgrade() else { break };
            let _ = tokio::task::spawn_blocking(move || reload(&target)).await;
        }
    });
}

/// Runs `pass` every `interval`, the first at once, until `stop` changes. A pass that overruns
/// delays the next one rather than piling passes up.
pub fn until_stopped<Pass, Done>(interval: Duration, mut stop: watch::Receiver<bool>, pass: Pass)
where
    Pass: Fn() -> Done + Send + 'static,
    Done: Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stop.changed() => return,
            }
            pass().await;
        }
    });
}

/// The settings that change live, each where its component reads it (`startup.rs` hands the
/// clones to the components' constructors; [`Reloader`] writes them).
#[derive(Clone)]
pub struct LiveSettings {
    /// `[oauth]` lifetimes, grace period, renewal, token format and default audience.
    pub oauth: Live<OAuthSettings>,
    pub lockout: Live<Option<LockoutPolicy>>,
    pub client_auth_lockout: Live<Option<ClientAuthPolicy>>,
    /// `None` when `[rate_limit] enabled = false`.
    pub per_ip: Live<Option<Rate>>,
    pub per_client: Live<Option<Rate>>,
}

impl LiveSettings {
    pub fn new(settings: &Settings) -> Self {
        Self {
            oauth: Live::new(settings.oauth.clone()),
            lockout: Live::new(settings.security.lockout),
            client_auth_lockout: Live::new(settings.security.client_auth_lockout),
            per_ip: Live::new(settings.rate_limit.per_ip),
            per_client: Live::new(settings.rate_limit.per_client),
        }
    }

    fn set(&self, settings: &Settings) {
        self.oauth.set(settings.oauth.clone());
        self.lockout.set(settings.security.lockout);
        self.client_auth_lockout
            .set(settings.security.client_auth_lockout);
        self.per_ip.set(settings.rate_limit.per_ip);
        self.per_client.set(settings.rate_limit.per_client);
    }
}

/// What one reload did, for the log and for the outputs re-applied after it (the audit
/// trail's `config_reloaded` event names the same keys).
#[derive(Debug, Default)]
pub struct ReloadReport {
    /// Keys that changed and now apply.
    pub changed: Vec<&'static str>,
    /// Keys that changed but keep their running value until a restart.
    pub needs_restart: Vec<&'static str>,
    /// The file's problems (`FILE: KEY: message`); non-empty means it was refused whole.
    pub problems: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file has problems: nothing of it was applied.
    #[error("{0}")]
    Config(ConfigError),
    #[error("the configuration could not be read: {0}")]
    Task(String),
}

/// Re-reads `identity.toml` (SIGHUP, `tokengate reload`) the way `serve` read it at start.
///
/// A file with any problem is refused whole: the running settings stay and every problem is
/// logged as `check-config` prints it. Otherwise the settings that can change live (see
/// [`LiveSettings`], and the TLS files) apply to new requests and handshakes, and every other
/// key that changed is logged as needing a restart, its running value kept.
pub struct Reloader {
    /// What runs now; the lock also keeps two reloads from interleaving.
    running: tokio::sync::Mutex<Settings>,
    live: LiveSettings,
    certificate: Arc<ServedCertificate>,
    management_certificate: Option<Arc<ServedCertificate>>,
    metrics: ReloadMetrics,
    /// Reopened on every reload (logrotate's SIGHUP), reconfigured by an accepted file, and
    /// told the outcome (`config_reloaded`).
    audit: Audit,
}

impl Reloader {
    pub fn new(
        running: Settings,
        live: LiveSettings,
        certificate: Arc<ServedCertificate>,
        management_certificate: Option<Arc<ServedCertificate>>,
        metrics: ReloadMetrics,
        audit: Audit,
    ) -> Self {
        Self {
            running: tokio::sync::Mutex::new(running),
            live,
            certificate,
            management_certificate,
            metrics,
            audit,
        }
    }

    /// One reload; errors are logged and counted here too, so a signal handler may ignore them.
    pub async fn reload(&self) -> Result<(), ReloadError> {
        let mut running = self.running.lock().await;
        let source = running.source.clone();
        let file = running.config_file.clone();
        tracing::info!(file = %file.display(), "reloading the configuration");
        let loaded = tokio::task::spawn_blocking(move || config::load(&source))
            .await
            .map_err(|err| ReloadError::Task(err.to_string()));
        let new = match loaded {
            Ok(Ok(new)) => new,
            Ok(Err(err)) => {
                for problem in &err.problems {
                    tracing::error!("{problem}");
                }
                tracing::error!(
                    file = %file.display(),
                    "{} problem(s) found; configuration not reloaded, the running one stays",
                    err.problems.len()
                );
                let report = ReloadReport {
                    problems: err.problems.iter().map(ToString::to_string).collect(),
                    ..ReloadReport::default()
                };
                self.reapply_outputs(&running, &report);
                self.metrics.reloaded(false);
                return Err(ReloadError::Config(err));
            }
            Err(err) => {
                tracing::error!(error = %err, "configuration not reloaded, the running one stays");
                let report = ReloadReport {
                    problems: vec![err.to_string()],
                    ..ReloadReport::default()
                };
                self.reapply_outputs(&running, &report);
                self.metrics.reloaded(false);
                return Err(err);
            }
        };
        let restart = needs_restart(&running, &new);
        for key in &restart {
            tracing::warn!(
                key,
                "changed in the file, but needs a restart: the running value stays until then"
            );
        }
        let mut applied = with_live_part(&running, &new);
        // The certificate is re-read on every reload, changed paths or not (SIGHUP is also
        // how an operator says "the files are replaced now"). A pair that does not load keeps
        // the served one and its paths; the rest of the file still applies.
        let paths = (applied.tls.cert.clone(), applied.tls.key.clone());
        let certificate = self.certificate.clone();
        let tls = tokio::task::spawn_blocking(move || certificate.reload(Some(paths))).await;
        if !matches!(tls, Ok(Ok(()))) {
            applied.tls = running.tls.clone();
        }
        if let Some(certificate) = self.management_certificate.clone() {
            let _ = tokio::task::spawn_blocking(move || certificate.reload(None)).await;
        }
        let report = ReloadReport {
            changed: live_changes(&running, &applied),
            needs_restart: restart,
            problems: Vec::new(),
        };
        self.live.set(&applied);
        tracing::info!(
            file = %file.display(),
            changed = %if report.changed.is_empty() { "nothing that reloads".to_owned() } else { report.changed.join(", ") },
            "configuration applied to new requests"
        );
        self.reapply_outputs(&applied, &report);
        *running = applied;
        self.metrics.reloaded(true);
        Ok(())
    }

    /// Runs after every reload, accepted (`settings` is what now runs, `report.problems` is
    /// empty) or refused (`settings` is the running config, kept): the log's level and format
    /// and the audit trail's file follow an accepted file; the audit file is reopened either
    /// way (logrotate's SIGHUP) and told the outcome.
    fn reapply_outputs(&self, settings: &Settings, report: &ReloadReport) {
        if report.problems.is_empty() {
            if let Err(err) = crate::telemetry::reconfigure(&settings.logging) {
                tracing::error!(error = %err, "[logging] not applied; logging as before");
            }
            self.audit.reconfigure(&settings.audit);
        }
        self.audit.reopen();
        let strings = |keys: &[&'static str]| keys.iter().map(|key| (*key).to_owned()).collect();
        self.audit.config_reloaded(
            strings(&report.changed),
            strings(&report.needs_restart),
            report.problems.clone(),
        );
    }
}

/// `new`, except that what cannot change live keeps its running value.
fn with_live_part(running: &Settings, new: &Settings) -> Settings {
    let mut applied = running.clone();
    applied.oauth = OAuthSettings {
        // Settled at startup: discovery, the key ring and its folder depend on them.
        issuer: running.oauth.issuer.clone(),
        jwt_algorithm: running.oauth.jwt_algorithm,
        signing_keys_dir: running.oauth.signing_keys_dir.clone(),
        ..new.oauth.clone()
    };
    applied.security = new.security.clone();
    applied.rate_limit.per_ip = new.rate_limit.per_ip;
    applied.rate_limit.per_client = new.rate_limit.per_client;
    applied.tls.cert = new.tls.cert.clone();
    applied.tls.key = new.tls.key.clone();
    applied.logging = new.logging.clone();
    applied.audit = new.audit.clone();
    applied
}

/// The keys of the live groups whose values change, for the log line.
fn live_changes(running: &Settings, applied: &Settings) -> Vec<&'static str> {
    let (old, new) = (&running.oauth, &applied.oauth);
    let (old_lock, new_lock) = (&running.security, &applied.security);
    let (old_rate, new_rate) = (&running.rate_limit, &applied.rate_limit);
    [
        (
            "oauth.access_token_default_validity_period",
            old.access_token_validity_secs != new.access_token_validity_secs,
        ),
        (
            "oauth.application_access_token_default_validity_period",
            old.application_access_token_validity_secs
                != new.application_access_token_validity_secs,
        ),
        (
            "oauth.refresh_token_validity_period",
            old.refresh_token_validity_secs != new.refresh_token_validity_secs,
        ),
        (
            "oauth.renew_refresh_token",
            old.renew_refresh_token != new.renew_refresh_token,
        ),
        (
            "oauth.refresh_token_reuse_grace_period",
            old.refresh_token_reuse_grace_secs != new.refresh_token_reuse_grace_secs,
        ),
        (
            "oauth.refresh_token_max_lifetime",
            old.refresh_token_max_lifetime_secs != new.refresh_token_max_lifetime_secs,
        ),
        (
            "oauth.authorization_code_validity_period",
            old.authorization_code_validity_secs != new.authorization_code_validity_secs,
        ),
        ("oauth.token_format", old.token_format != new.token_format),
        (
            "oauth.default_audience",
            old.default_audience != new.default_audience,
        ),
        (
            "security (login lockout)",
            old_lock.lockout != new_lock.lockout,
        ),
        (
            "security (client authentication lockout)",
            old_lock.client_auth_lockout != new_lock.client_auth_lockout,
        ),
        ("rate_limit (per IP)", old_rate.per_ip != new_rate.per_ip),
        (
            "rate_limit (per client)",
            old_rate.per_client != new_rate.per_client,
        ),
        ("tls.cert", running.tls.cert != applied.tls.cert),
        ("tls.key", running.tls.key != applied.tls.key),
        (
            "logging.format",
            running.logging.format != applied.logging.format,
        ),
        (
            "logging.level",
            running.logging.level != applied.logging.level,
        ),
        (
            "audit.file",
            running.audit.destination != applied.audit.destination,
        ),
        (
            "audit.max_bytes",
            running.audit.max_bytes != applied.audit.max_bytes,
        ),
        ("audit.keep", running.audit.keep != applied.audit.keep),
    ]
    .into_iter()
    .filter_map(|(key, changed)| changed.then_some(key))
    .collect()
}

/// The keys that changed in the file but apply only at startup.
pub fn needs_restart(running: &Settings, new: &Settings) -> Vec<&'static str> {
    let (old_server, new_server) = (&running.server, &new.server);
    let (old_hash, new_hash) = (&running.password_hashing, &new.password_hashing);
    let (old_stores, new_stores) = (&running.stores, &new.stores);
    let (old_mgmt, new_mgmt) = (&running.management, &new.management);
    let mut keys: Vec<(&'static str, bool)> = vec![
        ("server.host", old_server.host != new_server.host),
        (
            "server.https_port",
            old_server.https_port != new_server.https_port,
        ),
        (
            "server.port_offset",
            old_server.port_offset != new_server.port_offset,
        ),
        (
            "server.max_connections",
            old_server.max_connections != new_server.max_connections,
        ),
        (
            "server.max_connections_per_ip",
            old_server.max_connections_per_ip != new_server.max_connections_per_ip,
        ),
        (
            "server.tls_handshake_timeout",
            old_server.tls_handshake_timeout != new_server.tls_handshake_timeout,
        ),
        (
            "server.header_read_timeout",
            old_server.header_read_timeout != new_server.header_read_timeout,
        ),
        (
            "server.keep_alive_timeout",
            old_server.keep_alive_timeout != new_server.keep_alive_timeout,
        ),
        (
            "server.request_timeout",
            old_server.request_timeout != new_server.request_timeout,
        ),
        (
            "server.max_body_bytes",
            old_server.max_body_bytes != new_server.max_body_bytes,
        ),
        (
            "server.shutdown_grace_period",
            old_server.shutdown_grace_period != new_server.shutdown_grace_period,
        ),
        (
            "server.shutdown_drain_period",
            old_server.shutdown_drain_period != new_server.shutdown_drain_period,
        ),
        (
            "server.pid_file",
            old_server.pid_file != new_server.pid_file,
        ),
        (
            "tls.generate_self_signed",
            running.tls.generate_self_signed != new.tls.generate_self_signed,
        ),
        ("registration", running.registration != new.registration),
        ("portal", running.portal != new.portal),
        (
            "login.session_lifetime",
            running.login.session_lifetime_secs != new.login.session_lifetime_secs,
        ),
        ("login.title", running.login.title != new.login.title),
        ("login.logo", running.login.logo != new.login.logo),
        (
            "login.scope_descriptions",
            running.login.scope_descriptions != new.login.scope_descriptions,
        ),
        ("oauth.issuer", running.oauth.issuer != new.oauth.issuer),
        (
            "oauth.jwt_algorithm",
            running.oauth.jwt_algorithm != new.oauth.jwt_algorithm,
        ),
        (
            "oauth.signing_keys",
            running.oauth.signing_keys_dir != new.oauth.signing_keys_dir,
        ),
        (
            "password_hashing.argon2_memory_kib",
            old_hash.argon2_memory_kib != new_hash.argon2_memory_kib,
        ),
        (
            "password_hashing.argon2_iterations",
            old_hash.argon2_iterations != new_hash.argon2_iterations,
        ),
        (
            "password_hashing.argon2_parallelism",
            old_hash.argon2_parallelism != new_hash.argon2_parallelism,
        ),
        (
            "password_hashing.workers",
            old_hash.workers != new_hash.workers,
        ),
        (
            "password_hashing.queue_capacity",
            old_hash.queue_capacity != new_hash.queue_capacity,
        ),
        ("stores.users", old_stores.users != new_stores.users),
        ("stores.clients", old_stores.clients != new_stores.clients),
        (
            "stores.reload_interval",
            old_stores.reload_interval != new_stores.reload_interval,
        ),
        (
            "stores.janitor_interval",
            old_stores.janitor_interval != new_stores.janitor_interval,
        ),
        (
            "stores.janitor_batch",
            old_stores.janitor_batch != new_stores.janitor_batch,
        ),
        (
            "rate_limit.shared",
            running.rate_limit.shared != new.rate_limit.shared,
        ),
        (
            "rate_limit.trusted_proxies",
            running.rate_limit.trusted_proxies != new.rate_limit.trusted_proxies,
        ),
        ("management.enabled", old_mgmt.enabled != new_mgmt.enabled),
        ("management.host", old_mgmt.host != new_mgmt.host),
        ("management.port", old_mgmt.port != new_mgmt.port),
        (
            "management.per_client_metrics",
            old_mgmt.per_client_metrics != new_mgmt.per_client_metrics,
        ),
        (
            "management.cert",
            old_mgmt.tls.as_ref().map(|t| &t.cert) != new_mgmt.tls.as_ref().map(|t| &t.cert),
        ),
        (
            "management.key",
            old_mgmt.tls.as_ref().map(|t| &t.key) != new_mgmt.tls.as_ref().map(|t| &t.key),
        ),
    ];
    match (&old_stores.tokens, &new_stores.tokens) {
        (
            TokenStoreSettings::Sqlite { path, synchronous },
            TokenStoreSettings::Sqlite {
                path: new_path,
                synchronous: new_synchronous,
            },
        ) => {
            keys.push(("stores.tokens", path != new_path));
            keys.push(("stores.sqlite_synchronous", synchronous != new_synchronous));
        }
        (TokenStoreSettings::Postgres(old), TokenStoreSettings::Postgres(new)) => {
            keys.push(("stores.tokens", old.url != new.url));
            keys.push((
                "stores.pool_size",
                old.max_connections != new.max_connections,
            ));
            keys.push((
                "stores.run_migrations",
                old.run_migrations != new.run_migrations,
            ));
        }
        _ => keys.push(("stores.tokens", true)),
    }
    keys.into_iter()
        .filter_map(|(key, changed)| changed.then_some(key))
        .collect()
}
