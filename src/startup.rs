//! `Application::build(settings)`: everything the server needs, bound and ready, so that "port
//! in use" or a bad certificate is a startup error. Tests call the same function on port 0.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use secrecy::SecretString;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::connection::{self, ConnectionLimits};
use crate::janitor::{self, JanitorSettings};
use crate::key_sharing;
use crate::listener;

use crate::abuse::connections::ConnectionsPerIp;
use crate::abuse::rate_limit::{Limiter, SharedBuckets};
use crate::audit::{node_name, Audit, AuditError};
use crate::clock::{Clock, SystemClock};
use crate::config::{ConfigError, Settings};
use crate::config::{DirectoryLocation, TokenStoreSettings};
use crate::config::{JwtAlgorithm, OAuthSettings};
use crate::crypto::jwk::{self, KeyError, KeyRing};
use crate::crypto::password::{self, HashError, PasswordHasher};
use crate::http::health::Readiness;
use crate::http::{self, AppParts, AppState, HttpLimits};
use crate::live::Live;
use crate::management::{BeforeScrape, BoundManagement, Management, ManagementState};
use crate::metrics::{
    ConnectionMetrics, JanitorMetrics, KeyState, Metrics, RateBucket, RejectReason, ReloadSource,
    SigningKeyMetrics, TlsListener,
};
use crate::oauth::registration::{RegistrationParts, RegistrationService};
use crate::oauth::token::ServiceParts;
use crate::oauth::TokenService;
use crate::reload::{LiveSettings, Reloader};
use crate::store::directory::{SqlClientStore, SqlUserStore};
use crate::store::toml_file::{TomlClientStore, TomlUserStore};
use crate::store::{
    self, ClientStore, DatabaseStores, PublishedKeyStore, StoreError, TokenStore, UserStore,
};
use crate::tls::reload::{CertificateReporting, ServedCertificate};
use crate::tls::{self, TlsError};

/// The demo credentials the shipped config carries, as the product tokengate replaces ships them.
pub const DEMO_CLIENT_ID: &str = "wU62DjlyDBnq87GlBwplfqvmAbAa";
pub const DEMO_CLIENT_SECRET: &str = "ksdSdoefDDP7wpaElfqvmjDue";
pub const DEMO_USER: &str = "admin";
pub const DEMO_PASSWORD: &str = "admin";

/// Why a port another process listens on (with SO_REUSEPORT, under this user) is refused.
const PORT_IN_USE: &str =
    "the port is in use by another process; to upgrade in place use `serve --takeover`";

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Tls(#[from] TlsError),
    #[error("cannot open the token store: {0}")]
    Store(#[from] StoreError),
    #[error("JWT signing keys: {0}")]
    Keys(#[from] KeyError),
    #[error("cannot start password hashing: {0}")]
    Hashing(#[from] HashError),
    #[error("{0}")]
    Audit(#[from] AuditError),
    #[error("login.logo: cannot read {}: {source}", path.display())]
    Logo {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {PORT_IN_USE}")]
    PortInUse { addr: SocketAddr },
    #[error("cannot listen on {addr} for [management] (metrics and probes): {source}")]
    ManagementBind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// How this start was asked for on the command line (not configuration: `serve --takeover`
/// means one start, never a setting a file keeps).
#[derive(Debug, Clone, Copy, Default)]
pub struct StartOptions {
    /// An in-place upgrade: the token and management ports may be shared with the running
    /// server (SO_REUSEPORT). Without it, a port another process listens on is an error.
    pub takeover: bool,
}

pub struct Application {
    settings: Arc<Settings>,
    /// Taken by `run_until`, which closes it.
    listener: Option<TcpListener>,
    local_addr: SocketAddr,
    acceptor: TlsAcceptor,
    router: axum::Router,
    tokens: Arc<dyn TokenStore>,
    hasher: PasswordHasher,
    token_service: Arc<TokenService>,
    /// Where the nodes of a cluster publish their signing keys (`None` on SQLite).
    published_keys: Option<Arc<dyn PublishedKeyStore>>,
    /// What `/health` says; told when the shutdown drain begins.
    readiness: Arc<Readiness>,
    /// The bound management listener (`None` when `[management] enabled = false`).
    management: Option<Management>,
    connection_metrics: ConnectionMetrics,
    janitor_metrics: JanitorMetrics,
    audit: Audit,
    /// Re-reads the config file on SIGHUP (`run_until_stopped`) or when a test asks.
    reloader: Arc<Reloader>,
    /// SIGHUP as caught since before the build ([`Self::reload_on_hangups`]).
    hangups: Option<tokio::signal::unix::Signal>,
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        Self::build_with_clock(settings, Arc::new(SystemClock)).await
    }

    /// As [`Application::build`], started as `serve` was asked to (`--takeover`).
    pub async fn build_with_options(
        settings: Settings,
        options: StartOptions,
    ) -> Result<Self, StartupError> {
        Self::start(settings, Arc::new(SystemClock), options).await
    }

    /// As [`Application::build`], with an injected clock (tests move it to expire tokens).
    pub async fn build_with_clock(
        settings: Settings,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StartupError> {
        Self::start(settings, clock, StartOptions::default()).await
    }

    async fn start(
        settings: Settings,
        clock: Arc<dyn Clock>,
        options: StartOptions,
    ) -> Result<Self, StartupError> {
        if tls::ensure_certificate(&settings.tls)? {
            tracing::warn!(
                cert = %settings.tls.cert.display(),
                key = %settings.tls.key.display(),
                "generated a self-signed certificate for localhost; replace it with a real one for production"
            );
        }
        let Metrics {
            registry,
            token_endpoint,
            password_pool,
            grants,
            rate_limits,
            connections: connection_metrics,
            janitor: janitor_metrics,
            signing_keys,
            reloads,
            tls: tls_metrics,
            store: store_metrics,
            audit: audit_metrics,
            client_changes,
        } = Metrics::new(settings.management.per_client_metrics);
        let audit = Audit::start(&settings.audit, node_name(), clock.clone(), audit_metrics)?;
        let certificate = ServedCertificate::open(
            &settings.tls.cert,
            &settings.tls.key,
            CertificateReporting {
                listener: TlsListener::Https,
                clock: clock.clone(),
                metrics: tls_metrics.clone(),
                reloads: reloads.of(ReloadSource::Tls),
            },
        )?;
        certificate.watch(settings.stores.reload_interval);
        let tls_config = tls::server_config_with(certificate.clone(), tls::HTTPS_ALPN)?;
        let management_certificate = match (&settings.management.tls, settings.management.enabled) {
            (Some(files), true) => {
                let certificate = ServedCertificate::open(
                    &files.cert,
                    &files.key,
                    CertificateReporting {
                        listener: TlsListener::Management,
                        clock: clock.clone(),
                        metrics: tls_metrics,
                        reloads: reloads.of(ReloadSource::ManagementTls),
                    },
                )?;
                certificate.watch(settings.stores.reload_interval);
                Some(certificate)
            }
            _ => None,
        };
        let live = LiveSettings::new(&settings);
        let hasher = PasswordHasher::start(&settings.password_hashing, password_pool)?;
        if let TokenStoreSettings::Postgres(postgres) = &settings.stores.tokens {
            if let Some(warning) = store::postgres::unauthenticated_server_warning(&postgres.url) {
                tracing::warn!("{warning}");
            }
        }
        let database =
            store::open_database(&settings.stores.tokens, Arc::new(store_metrics.clone())).await?;
        let users = open_user_store(&settings, &database)?;
        let clients = open_client_store(&settings, &database).await?;
        warn_about_file_stores_in_a_cluster(&settings);
        let tokens = database.tokens.clone();
        let shared_buckets = database
            .rate_limits
            .clone()
            .filter(|_| settings.rate_limit.shared)
            .map(|store| Arc::new(SharedBuckets::new(store)));

        let addr = SocketAddr::new(settings.server.host, settings.server.https_port);
        let socket = listener::bind(addr).map_err(|source| StartupError::Bind { addr, source })?;
        let local_addr = socket.local_addr();
        if socket.shared() {
            // Another home, maybe another database, would otherwise get half the connections.
            if !options.takeover {
                return Err(StartupError::PortInUse { addr: local_addr });
            }
            warn_about_a_shared_port(local_addr);
        }

        if let Some(path) = jwk::ensure_signing_key(
            &settings.oauth.signing_keys_dir,
            settings.oauth.jwt_algorithm,
            clock.now_ms(),
        )? {
            tracing::info!(key = %path.display(), algorithm = settings.oauth.jwt_algorithm.as_str(), "generated a JWT signing key");
        }
        // In a cluster a new key signs only once every node names it in its JWKS: this node
        // notices the file, publishes the key and the others read it, each within an interval;
        // the rest covers whole-second file times and a busy machine.
        let activation_delay_secs = if database.published_keys.is_some() {
            let interval = i64::try_from(settings.stores.reload_interval.as_secs()).unwrap_or(60);
            interval.saturating_mul(3).saturating_add(5)
        } else {
            0
        };
        crate::secret_files::warn_exposed(&settings);
        let keys = KeyRing::open(
            &settings.oauth.signing_keys_dir,
            activation_delay_secs,
            reloads.of(ReloadSource::SigningKeys),
        )?;
        keys.watch(settings.stores.reload_interval);
        let issuer = settings
            .oauth
            .issuer
            .clone()
            .unwrap_or_else(|| format!("https://localhost:{}", local_addr.port()));

        let token_service = Arc::new(TokenService::new(ServiceParts {
            settings: live.oauth.clone(),
            issuer,
            clients,
            users,
            tokens: tokens.clone(),
            lockouts: database.lockouts.clone(),
            lockout_policy: live.lockout.clone(),
            // Always made, so that a reload can turn the limit on; off, it checks nothing.
            client_limiter: Some(Limiter::new(
                live.per_client.clone(),
                "client",
                shared_buckets.clone(),
                rate_limits.refused(RateBucket::Client),
            )),
            client_auth_lockout: live.client_auth_lockout.clone(),
            keys,
            hasher: hasher.clone(),
            clock: clock.clone(),
            metrics: grants,
            audit: audit.clone(),
        }));
        warn_about_demo_credentials(&token_service).await;
        if settings.oauth.issuer.is_none() {
            warn_about_a_default_issuer(&token_service).await;
        }
        if let Some(store) = &database.published_keys {
            // Before serving, so that this node's first /jwks already names the others' keys.
            key_sharing::share_once(
                &token_service,
                store.as_ref(),
                settings.stores.reload_interval,
            )
            .await;
        }
        let service_for_janitor = token_service.clone();
        let readiness = Readiness::for_store(tokens.clone());
        let signing_key_gauges = Arc::new(SigningKeyGauges {
            keys: token_service.keys.clone(),
            clients: token_service.clients.clone(),
            oauth: live.oauth.clone(),
            algorithm: settings.oauth.jwt_algorithm,
            clock,
            metrics: signing_keys,
        });
        let pools = database.pools.clone();
        let before_scrape: BeforeScrape = Arc::new(move || {
            if let Some(pools) = &pools {
                let now = pools.connections();
                store_metrics.connections(now.idle, now.busy);
            }
            let gauges = signing_key_gauges.clone();
            Box::pin(async move { gauges.refresh().await })
        });
        let management = if settings.management.enabled {
            let addr = SocketAddr::new(settings.management.host, settings.management.port);
            if !options.takeover && listener::listening_on(addr) {
                return Err(StartupError::ManagementBind {
                    addr,
                    source: std::io::Error::new(std::io::ErrorKind::AddrInUse, PORT_IN_USE),
                });
            }
            let state = ManagementState::new(registry, readiness.clone(), Some(before_scrape));
            let tls = management_certificate
                .clone()
                .map(|certificate| tls::server_config_with(certificate, tls::MANAGEMENT_ALPN))
                .transpose()?
                .map(TlsAcceptor::from);
            let management = Management::bind(addr, state, tls)
                .map_err(|source| StartupError::ManagementBind { addr, source })?;
            Some(management)
        } else {
            None
        };
        let login_pages = Arc::new(
            http::pages::LoginPages::load(&settings.login)
                .map_err(|(path, source)| StartupError::Logo { path, source })?,
        );
        let login_sessions = Arc::new(crate::oauth::login_session::LoginSessions::new(
            settings.login.session_lifetime_secs,
            token_service.tokens.clone(),
            token_service.clock.clone(),
        ));
        let registration = Arc::new(RegistrationService::new(RegistrationParts {
            settings: settings.registration.clone(),
            issuer: token_service.issuer.clone(),
            store: database.registrations.clone(),
            clients: token_service.clients.clone(),
            tokens: token_service.tokens.clone(),
            clock: token_service.clock.clone(),
            audit: audit.clone(),
            reload_interval: settings.stores.reload_interval,
            changes: client_changes.clone(),
        }));
        let portal = Arc::new(crate::oauth::portal::PortalService::new(
            crate::oauth::portal::PortalParts {
                settings: settings.portal.clone(),
                service: token_service.clone(),
                registration: registration.clone(),
                registrations: database.registrations.clone(),
                directory: database.directory.clone(),
                changes: client_changes.clone(),
            },
        ));
        let router = http::router(AppState::new(AppParts {
            ip_limiter: Some(Arc::new(Limiter::new(
                live.per_ip.clone(),
                "ip",
                shared_buckets,
                rate_limits.refused(RateBucket::Ip),
            ))),
            trusted_proxies: settings.rate_limit.trusted_proxies.clone().into(),
            token_service,
            limits: HttpLimits {
                max_body_bytes: settings.server.max_body_bytes,
                request_timeout: settings.server.request_timeout,
            },
            readiness: readiness.clone(),
            metrics: token_endpoint,
            audit: audit.clone(),
            login_sessions,
            login_pages,
            // Counted against the queue alone: a job leaves the queue only when a worker takes
            // it, so page jobs may briefly all be waiting there.
            login_checks: Arc::new(tokio::sync::Semaphore::new(
                (settings.password_hashing.queue_capacity / 2).max(1),
            )),
            registration,
            portal,
        }));
        // Last, once nothing above can fail: a listening socket shares the port's connections
        // with the other process on it, and those queued here would be reset if this one exited.
        let listener = socket
            .listen()
            .map_err(|source| StartupError::Bind { addr, source })?;
        let management = management
            .map(BoundManagement::listen)
            .transpose()
            .map_err(|(addr, source)| StartupError::ManagementBind { addr, source })?;
        let reloader = Arc::new(Reloader::new(
            settings.clone(),
            live,
            certificate,
            management_certificate,
            reloads.of(ReloadSource::Config),
            audit.clone(),
        ));
        Ok(Self {
            settings: Arc::new(settings),
            listener: Some(listener),
            local_addr,
            acceptor: TlsAcceptor::from(tls_config),
            router,
            tokens,
            hasher,
            token_service: service_for_janitor,
            published_keys: database.published_keys.clone(),
            readiness,
            management,
            connection_metrics,
            janitor_metrics,
            audit,
            reloader,
            hangups: None,
        })
    }

    /// Reloads on the SIGHUPs `hangups` catches, including those caught before serving began
    /// (`serve` catches SIGHUP before it builds, so a reload sent while the server starts is
    /// applied once it serves instead of being lost).
    pub fn reload_on_hangups(&mut self, hangups: tokio::signal::unix::Signal) {
        self.hangups = Some(hangups);
    }

    /// What re-reads the config file (SIGHUP does, in [`Self::run_until_stopped`]).
    pub fn reloader(&self) -> Arc<Reloader> {
        self.reloader.clone()
    }

    pub fn port(&self) -> u16 {
        self.local_addr.port()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The management listener's address (`None` when `[management] enabled = false`).
    pub fn management_addr(&self) -> Option<SocketAddr> {
        self.management.as_ref().map(Management::local_addr)
    }

    /// The settings it was built with (a reload changes what runs, not these).
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The argon2 pool (tests count its verifications).
    pub fn password_hasher(&self) -> PasswordHasher {
        self.hasher.clone()
    }

    /// The audit trail: [`Audit::reopen`] (SIGHUP), [`Audit::reconfigure`] and
    /// [`Audit::config_reloaded`] for a config reload.
    pub fn audit(&self) -> Audit {
        self.audit.clone()
    }

    /// The token store the server writes to (tests inspect stored records through it).
    pub fn token_store(&self) -> Arc<dyn TokenStore> {
        self.tokens.clone()
    }

    /// Serves until SIGTERM or Ctrl-C, then shuts down gracefully; SIGHUP reloads the config
    /// file and the TLS files ([`Reloader`]); SIGUSR1 only reopens the audit file.
    pub async fn run_until_stopped(mut self) -> Result<(), StartupError> {
        let reloads = reload_on_sighup(self.reloader.clone(), self.hangups.take());
        let reopens = reopen_audit_on_sigusr1(self.audit.clone());
        // A second signal during the drain ends it at once (an operator in a hurry).
        let stopped = self.run_stopping(shutdown_signal(), shutdown_signal).await;
        for task in [reloads, reopens].into_iter().flatten() {
            task.abort();
        }
        stopped
    }

    /// Serves until `shutdown` completes, then: for `shutdown_drain_period` `/health` answers
    /// 503 while everything else is still served; then no new connections (the listener is
    /// closed without resetting one queued for it, see [`listener::close`]), every open
    /// connection gets its request in flight, or its next one, answered with
    /// `Connection: close`, within `shutdown_grace_period`; then the token store is closed
    /// (committing queued writes).
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), StartupError> {
        self.run_stopping(shutdown, std::future::pending::<()>)
            .await
    }

    /// [`Self::run_until`], with the drain cut short when the future `cut_drain_short` makes
    /// (once the drain has begun) completes.
    async fn run_stopping<F: Future<Output = ()> + Send>(
        mut self,
        shutdown: impl Future<Output = ()> + Send,
        cut_drain_short: impl FnOnce() -> F + Send,
    ) -> Result<(), StartupError> {
        // Always there: `build` puts it there and this consumes the application.
        let Some(listener) = self.listener.take() else {
            return Ok(());
        };
        tracing::info!(address = %self.local_addr, "tokengate listening (HTTPS)");
        // Served until the token port has stopped, so the probes see the drain and the grace.
        let (stop_management, management_stop) = watch::channel(false);
        let management = self
            .management
            .take()
            .map(|management| tokio::spawn(management.serve(management_stop)));
        let server = &self.settings.server;
        let (stop_connections, connections_stop) = watch::channel(false);
        if let Some(store) = &self.published_keys {
            key_sharing::spawn(
                self.token_service.clone(),
                store.clone(),
                self.settings.stores.reload_interval,
                connections_stop.clone(),
            );
        }
        if let Some(interval) = self.settings.stores.janitor_interval {
            janitor::spawn(
                self.token_service.clone(),
                JanitorSettings {
                    interval,
                    batch: self.settings.stores.janitor_batch,
                    failure_window_secs: self
                        .settings
                        .security
                        .lockout
                        .map_or(0, |policy| policy.window_secs),
                },
                self.janitor_metrics.clone(),
                connections_stop.clone(),
            );
        }
        let accept = Acceptor {
            app: &self,
            connections: Arc::new(Semaphore::new(server.max_connections)),
            per_ip: ConnectionsPerIp::new(
                server.max_connections_per_ip,
                self.settings.rate_limit.trusted_proxies.clone().into(),
            ),
            limits: ConnectionLimits {
                tls_handshake_timeout: server.tls_handshake_timeout,
                first_request_timeout: server.header_read_timeout,
                keep_alive_timeout: server.keep_alive_timeout,
                shutdown_grace_period: server.shutdown_grace_period,
            },
            builder: Arc::new(http_builder(server.header_read_timeout)),
            stop: connections_stop,
            metrics: self.connection_metrics.clone(),
        };
        accept.until(&listener, shutdown).await;
        let drain = server.shutdown_drain_period;
        if !drain.is_zero() {
            tracing::info!(
                seconds = drain.as_secs(),
                "shutting down: draining (/health answers 503, requests are still served)"
            );
            self.readiness.start_draining();
            let cut_short = cut_drain_short();
            accept
                .until(&listener, async {
                    tokio::select! {
                        () = tokio::time::sleep(drain) => {}
                        () = cut_short => {
                            tracing::info!("shutting down: second signal, the drain ends now");
                        }
                    }
                })
                .await;
        }
        // Told before the listener closes, so that the connections it still accepts are
        // answered once, with `Connection: close`.
        let _ = stop_connections.send(true);
        tracing::info!("shutting down: no new connections; answering the requests of open ones");
        // Another process on the port (an upgrade) gets the new connections from now on.
        listener::close(listener, |tcp, peer| accept.serve(tcp, peer)).await;
        let connections = accept.connections.clone();
        drop(accept);
        // Every connection holds a permit until it is closed: having them all back means done.
        let all = u32::try_from(server.max_connections).unwrap_or(u32::MAX);
        let grace = server.shutdown_grace_period;
        if tokio::time::timeout(grace, connections.acquire_many(all))
            .await
            .is_err()
        {
            tracing::warn!("requests still in flight after the grace period were cut off");
        }
        let _ = stop_management.send(true);
        if let Some(management) = management {
            // It closes its listener (half a second) and gives the requests in flight a second;
            // this bound is a backstop.
            if tokio::time::timeout(Duration::from_secs(3), management)
                .await
                .is_err()
            {
                tracing::warn!("the management listener did not stop in time");
            }
        }
        self.tokens.close().await;
        let audit = self.audit.clone();
        // The queued audit events are written before the process ends.
        let flushed = tokio::task::spawn_blocking(move || audit.flush_blocking(AUDIT_FLUSH_WAIT))
            .await
            .unwrap_or(false);
        if !flushed {
            tracing::warn!("audit events still queued at exit were not all written");
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// `tokengate_signing_keys`, computed at scrape time: whether a key is pending, active,
/// published or retired changes with time, not only when the folder does.
struct SigningKeyGauges {
    keys: Arc<KeyRing>,
    clients: Arc<dyn ClientStore>,
    oauth: Live<OAuthSettings>,
    algorithm: JwtAlgorithm,
    clock: Arc<dyn Clock>,
    metrics: SigningKeyMetrics,
}

impl SigningKeyGauges {
    async fn refresh(&self) {
        let max_validity = match crate::oauth::token::max_access_token_validity_secs(
            &self.oauth.get(),
            self.clients.as_ref(),
        )
        .await
        {
            Ok(max_validity) => max_validity,
            // The clients cannot be listed (database down): the gauges keep their last values.
            Err(_) => return,
        };
        let counts = self
            .keys
            .keys()
            .counts(self.algorithm, self.clock.now_secs(), max_validity);
        self.metrics.set(KeyState::Active, counts.active);
        self.metrics.set(KeyState::Pending, counts.pending);
        self.metrics.set(KeyState::Published, counts.published);
        self.metrics.set(KeyState::Retired, counts.retired);
    }
}

/// hyper's HTTP/1.1 and HTTP/2 settings for every connection.
fn http_builder(header_read_timeout: Duration) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(128)
        .max_header_list_size(64 * 1024)
        // Pings find peers that vanished without closing.
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(10));
    builder
}

/// The accept loop and what every accepted connection needs.
struct Acceptor<'a> {
    app: &'a Application,
    /// `max_connections`: a permit per open connection.
    connections: Arc<Semaphore>,
    per_ip: Arc<ConnectionsPerIp>,
    limits: ConnectionLimits,
    builder: Arc<auto::Builder<TokioExecutor>>,
    stop: watch::Receiver<bool>,
    metrics: ConnectionMetrics,
}

impl Acceptor<'_> {
    /// Accepts and serves connections until `until` completes.
    async fn until(&self, listener: &TcpListener, until: impl Future<Output = ()>) {
        let mut until = std::pin::pin!(until);
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = &mut until => return,
            };
            match accepted {
                Ok((tcp, peer)) => self.serve(tcp, peer),
                Err(err) => {
                    // Typically EMFILE: back off briefly instead of spinning.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// Serves an accepted connection in a task of its own, within the connection limits.
    fn serve(&self, tcp: TcpStream, peer: SocketAddr) {
        let ip_slot = match self.per_ip.try_acquire(peer.ip()) {
            Ok(slot) => slot,
            Err(refused) => {
                self.metrics.rejected(RejectReason::PerIpLimit);
                // Once per episode: a host flooding connections must not flood the log.
                if refused.first {
                    tracing::warn!(peer = %peer, "connection limit per IP reached; closing its new connections");
                } else {
                    tracing::debug!(peer = %peer, "connection limit per IP reached; closing the new connection");
                }
                return;
            }
        };
        let Ok(permit) = self.connections.clone().try_acquire_owned() else {
            self.metrics.rejected(RejectReason::MaxConnections);
            tracing::warn!(peer = %peer, "connection limit reached; closing the new connection");
            return;
        };
        let open = self.metrics.opened();
        let _ = tcp.set_nodelay(true);
        let serve = connection::serve(
            tcp,
            peer,
            connection::Handshake {
                acceptor: self.app.acceptor.clone(),
                failures: self.metrics.handshake_failures(),
            },
            self.app.router.clone(),
            self.builder.clone(),
            self.limits,
            self.stop.clone(),
        );
        // The slots (and the open-connection count) go back when the connection ends, also
        // if its task is dropped.
        tokio::spawn(async move {
            serve.await;
            drop(permit);
            drop(ip_slot);
            drop(open);
        });
    }
}

/// How long the exit waits for queued audit events to be written.
const AUDIT_FLUSH_WAIT: Duration = Duration::from_secs(2);

/// Reloads on every SIGHUP until aborted, from `caught` when given (it has seen the SIGHUPs
/// since it was made: one sent during start-up reloads at once). Installed before serving,
/// since SIGHUP's default action would end the process. `None` if the handler cannot be
/// installed (logged).
fn reload_on_sighup(
    reloader: Arc<Reloader>,
    caught: Option<tokio::signal::unix::Signal>,
) -> Option<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    match caught.map_or_else(|| signal(SignalKind::hangup()), Ok) {
        Ok(mut hangups) => Some(tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                // Logged and counted inside.
                let _ = reloader.reload().await;
            }
        })),
        Err(err) => {
            tracing::error!(error = %err, "cannot handle SIGHUP: reloading is unavailable");
            None
        }
    }
}

/// Reopens the audit file on every SIGUSR1 until aborted (logrotate's `postrotate`; nginx's
/// convention), without re-reading the config as SIGHUP does. Installed before serving, since
/// SIGUSR1's default action would end the process. `None` if it cannot be installed (logged).
fn reopen_audit_on_sigusr1(audit: Audit) -> Option<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::user_defined1()) {
        Ok(mut signals) => Some(tokio::spawn(async move {
            while signals.recv().await.is_some() {
                tracing::info!(
                    "SIGUSR1: reopening the audit file (the configuration is not re-read)"
                );
                audit.reopen();
            }
        })),
        Err(err) => {
            tracing::error!(error = %err, "cannot handle SIGUSR1: use SIGHUP to reopen the audit file");
            None
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

fn open_user_store(
    settings: &Settings,
    database: &DatabaseStores,
) -> Result<Arc<dyn UserStore>, StartupError> {
    Ok(match &settings.stores.users {
        DirectoryLocation::File(path) => {
            let store = TomlUserStore::open(path, settings.stores.reload_interval)
                .map_err(ConfigError::from)?;
            warn_about_other_hash_params(&store.all(), settings, path);
            Arc::new(store)
        }
        DirectoryLocation::Database => Arc::new(SqlUserStore::new(database.directory.clone())),
    })
}

async fn open_client_store(
    settings: &Settings,
    database: &DatabaseStores,
) -> Result<Arc<dyn ClientStore>, StartupError> {
    Ok(match &settings.stores.clients {
        DirectoryLocation::File(path) => Arc::new(
            TomlClientStore::open(path, settings.stores.reload_interval)
                .map_err(ConfigError::from)?,
        ),
        DirectoryLocation::Database => {
            SqlClientStore::open(database.directory.clone(), settings.stores.reload_interval)
                .await?
        }
    })
}

/// Nodes sharing a database but reading users or clients from their own files drift apart as
/// soon as one file is edited.
fn warn_about_file_stores_in_a_cluster(settings: &Settings) {
    if !matches!(settings.stores.tokens, TokenStoreSettings::Postgres(_)) {
        return;
    }
    let files: Vec<String> = [&settings.stores.users, &settings.stores.clients]
        .into_iter()
        .filter(|location| matches!(location, DirectoryLocation::File(_)))
        .map(DirectoryLocation::describe)
        .collect();
    if !files.is_empty() {
        tracing::warn!(
            files = %files.join(", "),
            "shared PostgreSQL token store with users or clients in local files: every node \
             must get the same files, or the nodes will disagree about who may log in; set \
             [stores] users = \"sql\" and clients = \"sql\" to keep them in the database"
        );
    }
}

/// Another process listened on the token port when this one bound it: an upgrade under way
/// (README, "Upgrading without dropping requests"), or a second server started by mistake.
fn warn_about_a_shared_port(address: SocketAddr) {
    tracing::info!(
        address = %address,
        "another process listens on this port: sharing its connections (SO_REUSEPORT) until \
         it stops"
    );
    // Only a handshake the old process answered but had not completed when it closed depends
    // on the sysctl (see listener.rs); this is the moment the operator can still set it.
    if listener::migrate_requests() == Some(false) {
        tracing::warn!(
            "net.ipv4.tcp_migrate_req is 0: a connection still in its handshake with the \
             process that stops can be reset; set it to 1 (README, \"Upgrading without \
             dropping requests\")"
        );
    }
}

/// Apps of the authorization code flow compare `iss` (RFC 9207) with the server they called:
/// the default, `https://localhost:<port>`, is right only for a server used on localhost.
async fn warn_about_a_default_issuer(service: &TokenService) {
    let Ok(clients) = service.clients.list_clients().await else {
        return;
    };
    if clients.iter().any(|client| {
        client
            .grant_types
            .contains(&crate::store::model::GrantType::AuthorizationCode)
    }) {
        tracing::warn!(
            issuer = %service.issuer,
            "[oauth] issuer is not set: codes name this localhost address as their issuer (iss), \
             which apps check against the address they called; set it to the server's public \
             https URL"
        );
    }
}

/// Warns when users' password hashes were made with other argon2 parameters than
/// `[password_hashing]` now gives (changed since): until those passwords are set again, how long
/// a failed login takes tells their names from names that do not exist.
fn warn_about_other_hash_params(
    users: &[store::model::User],
    settings: &Settings,
    path: &std::path::Path,
) {
    let other = users
        .iter()
        .filter(|user| {
            password::made_with_other_params(&user.password_hash, &settings.password_hashing)
        })
        .count();
    if other > 0 {
        tracing::warn!(
            users = other,
            file = %path.display(),
            "password hashes made with other argon2 parameters than [password_hashing]: until \
             these passwords are set again (`tokengate user set-password`), how long a failed \
             login takes can tell these user names from names that do not exist"
        );
    }
}

/// Logs a loud warning while the shipped demo client or user still has its published secret.
async fn warn_about_demo_credentials(service: &TokenService) {
    let hasher = &service.hasher;
    if let Ok(Some(client)) = service.clients.find_client(DEMO_CLIENT_ID).await {
        let published = service
            .client_secret_matches(&client, SecretString::from(DEMO_CLIENT_SECRET))
            .await
            .unwrap_or(false);
        if published && !client.disabled {
            tracing::warn!(
                client_id = DEMO_CLIENT_ID,
                "DEMO CLIENT ACTIVE with its published secret: anyone can use it. Replace it: \
                 `tokengate client add <id>` then `tokengate client remove {DEMO_CLIENT_ID}`"
            );
        }
    }
    if let Ok(Some(user)) = service.users.find_user(DEMO_USER).await {
        if !user.disabled {
            let published = hasher
                .verify(&user.password_hash, SecretString::from(DEMO_PASSWORD))
                .await
                .unwrap_or(false);
            if published {
                tracing::warn!(
                    user = DEMO_USER,
                    "DEMO USER ACTIVE with password `admin`: anyone can log in. Replace it: \
                     `tokengate user add <name> --password-stdin` then `tokengate user remove admin`"
                );
            }
        }
    }
}
