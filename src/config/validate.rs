//! `RawConfig` → [`Settings`]: every rule checked, every problem collected with its file and key.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::RawConfig;
use super::{
    AuditDestination, AuditSettings, CertificateFiles, ConfigError, ConfigProblem, ConfigSource,
    DirectoryLocation, JwtAlgorithm, LogFormat, LoggingSettings, LoginSettings, LogoFile,
    ManagementSettings, OAuthSettings, PasswordHashingSettings, PortalSettings, RateLimitSettings,
    RegistrationMode, RegistrationSettings, SecuritySettings, ServerSettings, Settings,
    SqliteSynchronous, StoreSettings, TlsSettings, TokenFormat, TokenStoreSettings,
};

/// OWASP's floor for argon2id; below it a stolen user file is cheap to crack.
const MIN_ARGON2_MEMORY_KIB: i64 = 7 * 1024;
/// Above this a single verification could exhaust memory when multiplied by the workers.
/// The most argon2 cost the server accepts, in its config and in any stored hash (the password
/// pool refuses costlier stored hashes): one limit, so a config the server starts with cannot
/// make every hash it writes unusable.
pub(crate) const MAX_ARGON2_MEMORY_KIB: u32 = 256 * 1024;
pub(crate) const MAX_ARGON2_ITERATIONS: u32 = 20;
pub(crate) const MAX_ARGON2_PARALLELISM: u32 = 16;

struct Problems<'a> {
    file: &'a Path,
    found: Vec<ConfigProblem>,
}

impl Problems<'_> {
    fn add(&mut self, key: &str, message: impl Into<String>) {
        self.found.push(ConfigProblem {
            file: self.file.to_path_buf(),
            key: key.to_owned(),
            message: message.into(),
        });
    }

    /// An integer within `min..=max`, else a problem naming the key.
    fn range(&mut self, key: &str, value: i64, min: i64, max: i64) -> i64 {
        if value < min || value > max {
            self.add(key, format!("must be between {min} and {max}, got {value}"));
            min
        } else {
            value
        }
    }

    fn seconds(&mut self, key: &str, value: i64, min: i64) -> Duration {
        let secs = self.range(key, value, min, 10 * 365 * 86_400);
        Duration::from_secs(u64::try_from(secs).unwrap_or(0))
    }
}

fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn to_u32(value: i64) -> u32 {
    u32::try_from(value).unwrap_or(0)
}

fn to_usize(value: i64) -> usize {
    usize::try_from(value).unwrap_or(0)
}

/// Parses the text of `file` and checks every rule.
pub fn validate(text: &str, file: &Path, source: &ConfigSource) -> Result<Settings, ConfigError> {
    let (settings, problems) = validate_with_fallbacks(text, file, source);
    if problems.is_empty() {
        Ok(settings)
    } else {
        Err(ConfigError { problems })
    }
}

/// As [`validate`], but always returns settings: a key that cannot be read (or the whole file,
/// if it is not TOML) falls back to its default, so `check-config` can still check the files
/// the settings name. The problems say what fell back.
pub fn validate_with_fallbacks(
    text: &str,
    file: &Path,
    source: &ConfigSource,
) -> (Settings, Vec<ConfigProblem>) {
    let (raw, found) = crate::toml_parse::parse_partial::<RawConfig>(text);
    let found = found
        .into_iter()
        .map(|problem| ConfigProblem {
            file: file.to_path_buf(),
            key: problem.key,
            message: problem.message,
        })
        .collect();
    let raw = raw.unwrap_or_default();
    let mut problems = Problems { file, found };

    let host = match raw.server.host.parse::<IpAddr>() {
        Ok(ip) => ip,
        Err(_) => {
            problems.add(
                "server.host",
                format!("`{}` is not an IP address", raw.server.host),
            );
            IpAddr::from([0, 0, 0, 0])
        }
    };
    let base_port = problems.range("server.https_port", raw.server.https_port, 0, 65_535);
    let (offset_key, port_offset) = match source.port_offset {
        Some(offset) => ("--port-offset / TOKENGATE_PORT_OFFSET", offset),
        None => ("server.port_offset", raw.server.port_offset),
    };
    let port_offset = problems.range(offset_key, port_offset, 0, 65_535);
    let https_port = with_offset(
        &mut problems,
        offset_key,
        "https_port",
        base_port,
        port_offset,
    );
    let server = ServerSettings {
        host,
        https_port,
        port_offset,
        max_connections: to_usize(problems.range(
            "server.max_connections",
            raw.server.max_connections,
            1,
            1_000_000,
        )),
        max_connections_per_ip: to_usize(problems.range(
            "server.max_connections_per_ip",
            raw.server.max_connections_per_ip,
            0,
            1_000_000,
        )),
        tls_handshake_timeout: problems.seconds(
            "server.tls_handshake_timeout",
            raw.server.tls_handshake_timeout,
            1,
        ),
        header_read_timeout: problems.seconds(
            "server.header_read_timeout",
            raw.server.header_read_timeout,
            1,
        ),
        keep_alive_timeout: problems.seconds(
            "server.keep_alive_timeout",
            raw.server.keep_alive_timeout,
            1,
        ),
        request_timeout: problems.seconds("server.request_timeout", raw.server.request_timeout, 1),
        max_body_bytes: to_usize(problems.range(
            "server.max_body_bytes",
            raw.server.max_body_bytes,
            1024,
            1024 * 1024,
        )),
        shutdown_grace_period: problems.seconds(
            "server.shutdown_grace_period",
            raw.server.shutdown_grace_period,
            0,
        ),
        shutdown_drain_period: Duration::from_secs(to_u64(problems.range(
            "server.shutdown_drain_period",
            raw.server.shutdown_drain_period,
            0,
            3600,
        ))),
        // "" turns it off (e.g. in a container, where nothing signals by pid file).
        pid_file: (!raw.server.pid_file.trim().is_empty())
            .then(|| source.resolve(Path::new(&raw.server.pid_file))),
    };

    let tls = TlsSettings {
        cert: required_path(&mut problems, source, "tls.cert", &raw.tls.cert),
        key: required_path(&mut problems, source, "tls.key", &raw.tls.key),
        generate_self_signed: raw.tls.generate_self_signed,
    };

    let oauth = OAuthSettings {
        access_token_validity_secs: to_u64(problems.range(
            "oauth.access_token_default_validity_period",
            raw.oauth.access_token_default_validity_period,
            1,
            i64::from(u32::MAX),
        )),
        application_access_token_validity_secs: to_u64(problems.range(
            "oauth.application_access_token_default_validity_period",
            raw.oauth.application_access_token_default_validity_period,
            1,
            i64::from(u32::MAX),
        )),
        refresh_token_validity_secs: to_u64(problems.range(
            "oauth.refresh_token_validity_period",
            raw.oauth.refresh_token_validity_period,
            1,
            i64::from(u32::MAX),
        )),
        renew_refresh_token: raw.oauth.renew_refresh_token,
        refresh_token_reuse_grace_secs: to_u64(problems.range(
            "oauth.refresh_token_reuse_grace_period",
            raw.oauth.refresh_token_reuse_grace_period,
            0,
            300,
        )),
        refresh_token_max_lifetime_secs: to_u64(problems.range(
            "oauth.refresh_token_max_lifetime",
            raw.oauth.refresh_token_max_lifetime,
            0,
            i64::from(u32::MAX),
        )),
        authorization_code_validity_secs: to_u64(problems.range(
            "oauth.authorization_code_validity_period",
            raw.oauth.authorization_code_validity_period,
            1,
            600,
        )),
        issuer: raw.oauth.issuer.clone(),
        token_format: TokenFormat::parse(&raw.oauth.token_format).unwrap_or_else(|| {
            problems.add(
                "oauth.token_format",
                format!(
                    "must be \"opaque\" or \"jwt\", got \"{}\"",
                    raw.oauth.token_format
                ),
            );
            TokenFormat::Opaque
        }),
        jwt_algorithm: JwtAlgorithm::parse(&raw.oauth.jwt_algorithm).unwrap_or_else(|| {
            problems.add(
                "oauth.jwt_algorithm",
                format!(
                    "must be \"EdDSA\", \"ES256\" or \"RS256\", got \"{}\"",
                    raw.oauth.jwt_algorithm
                ),
            );
            JwtAlgorithm::EdDsa
        }),
        default_audience: raw.oauth.default_audience.clone(),
        signing_keys_dir: required_path(
            &mut problems,
            source,
            "oauth.signing_keys",
            &raw.oauth.signing_keys,
        ),
    };
    if let Some(issuer) = &oauth.issuer {
        // RFC 8414 §2: an https URL with no query or fragment.
        if !issuer.starts_with("https://") || issuer.contains(['?', '#']) || issuer.len() <= 8 {
            problems.add(
                "oauth.issuer",
                format!("`{issuer}` must be an https URL without query or fragment"),
            );
        }
    }
    if oauth.default_audience.as_deref().is_some_and(str::is_empty) {
        problems.add("oauth.default_audience", "must not be empty");
    }

    let hashing = &raw.password_hashing;
    let password_hashing = PasswordHashingSettings {
        argon2_memory_kib: to_u32(problems.range(
            "password_hashing.argon2_memory_kib",
            hashing.argon2_memory_kib,
            MIN_ARGON2_MEMORY_KIB,
            i64::from(MAX_ARGON2_MEMORY_KIB),
        )),
        argon2_iterations: to_u32(problems.range(
            "password_hashing.argon2_iterations",
            hashing.argon2_iterations,
            1,
            i64::from(MAX_ARGON2_ITERATIONS),
        )),
        argon2_parallelism: to_u32(problems.range(
            "password_hashing.argon2_parallelism",
            hashing.argon2_parallelism,
            1,
            i64::from(MAX_ARGON2_PARALLELISM),
        )),
        // More hashing threads than cores only adds memory and queueing, not throughput.
        workers: match problems.range("password_hashing.workers", hashing.workers, 0, 256) {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => to_usize(n),
        },
        queue_capacity: to_usize(problems.range(
            "password_hashing.queue_capacity",
            hashing.queue_capacity,
            1,
            1_000_000,
        )),
    };

    // Every worker keeps one work area: bound their sum.
    let work_areas_kib = password_hashing.argon2_memory_kib as usize * password_hashing.workers;
    if work_areas_kib > 8 * 1024 * 1024 {
        problems.add(
            "password_hashing.workers",
            format!(
                "workers x argon2_memory_kib = {} MiB is more than 8 GiB",
                work_areas_kib / 1024
            ),
        );
    }
    let synchronous = match raw.stores.sqlite_synchronous.as_str() {
        "normal" => SqliteSynchronous::Normal,
        "full" => SqliteSynchronous::Full,
        other => {
            problems.add(
                "stores.sqlite_synchronous",
                format!("must be \"normal\" or \"full\", got \"{other}\""),
            );
            SqliteSynchronous::Normal
        }
    };
    let max_connections = to_u32(problems.range("stores.pool_size", raw.stores.pool_size, 1, 1000));
    let tokens = parse_token_store(&mut problems, source, &raw.stores.tokens, synchronous);
    let tokens = match tokens {
        TokenStoreSettings::Postgres(mut postgres) => {
            postgres.max_connections = max_connections;
            postgres.run_migrations = raw.stores.run_migrations;
            TokenStoreSettings::Postgres(postgres)
        }
        sqlite => sqlite,
    };
    let stores = StoreSettings {
        users: directory_location(&mut problems, source, "stores.users", &raw.stores.users),
        clients: directory_location(&mut problems, source, "stores.clients", &raw.stores.clients),
        tokens,
        reload_interval: problems.seconds("stores.reload_interval", raw.stores.reload_interval, 1),
        janitor_interval: match problems.seconds(
            "stores.janitor_interval",
            raw.stores.janitor_interval,
            0,
        ) {
            interval if interval.is_zero() => None,
            interval => Some(interval),
        },
        janitor_batch: to_u32(problems.range(
            "stores.janitor_batch",
            raw.stores.janitor_batch,
            1,
            100_000,
        )),
    };

    let max_failures = problems.range(
        "security.max_failed_login_attempts",
        raw.security.max_failed_login_attempts,
        0,
        1000,
    );
    let window_secs = problems.range(
        "security.failed_login_window",
        raw.security.failed_login_window,
        1,
        86_400,
    );
    let lock_secs = problems.range(
        "security.account_lock_duration",
        raw.security.account_lock_duration,
        1,
        30 * 86_400,
    );
    let max_failures_per_user = problems.range(
        "security.max_failed_login_attempts_per_user",
        raw.security.max_failed_login_attempts_per_user,
        0,
        1_000_000,
    );
    if max_failures_per_user > 0 && max_failures_per_user < max_failures {
        problems.add(
            "security.max_failed_login_attempts_per_user",
            format!(
                "must be 0 (off) or at least security.max_failed_login_attempts ({max_failures}), got {max_failures_per_user}"
            ),
        );
    }
    let max_client_failures = problems.range(
        "security.max_failed_client_auth_attempts",
        raw.security.max_failed_client_auth_attempts,
        0,
        1_000_000,
    );
    let security = SecuritySettings {
        lockout: (max_failures > 0).then(|| crate::store::LockoutPolicy {
            max_failures: to_u32(max_failures),
            max_failures_per_user: to_u32(max_failures_per_user),
            window_secs,
            lock_secs,
        }),
        client_auth_lockout: (max_client_failures > 0).then(|| {
            crate::abuse::client_failures::ClientAuthPolicy {
                max_failures: to_u32(max_client_failures),
                window_secs,
                lock_secs,
            }
        }),
    };

    let limits = &raw.rate_limit;
    let mut rate = |key: &str, per_second: f64, burst: f64| {
        let valid = |v: f64| v.is_finite() && v > 0.0 && v <= 1_000_000.0;
        if !valid(per_second) {
            problems.add(
                &format!("rate_limit.{key}_rate"),
                "must be above 0 and at most 1000000",
            );
        }
        if !valid(burst) || burst < 1.0 {
            problems.add(
                &format!("rate_limit.{key}_burst"),
                "must be between 1 and 1000000",
            );
        }
        crate::abuse::rate_limit::Rate { per_second, burst }
    };
    let per_ip = rate("per_ip", limits.per_ip_rate, limits.per_ip_burst);
    let per_client = rate(
        "per_client",
        limits.per_client_rate,
        limits.per_client_burst,
    );
    let mut trusted_proxies = Vec::new();
    for entry in &limits.trusted_proxies {
        let parsed = entry
            .parse::<ipnet::IpNet>()
            .or_else(|_| entry.parse::<IpAddr>().map(ipnet::IpNet::from));
        match parsed {
            Ok(net) => trusted_proxies.push(canonical_net(net)),
            Err(_) => problems.add(
                "rate_limit.trusted_proxies",
                format!("`{entry}` is not an IP address or CIDR block"),
            ),
        }
    }
    let rate_limit = RateLimitSettings {
        per_ip: limits.enabled.then_some(per_ip),
        per_client: limits.enabled.then_some(per_client),
        trusted_proxies,
        shared: limits.shared,
    };

    let management = management(&mut problems, source, &raw.management, &server, offset_key);
    let logging = logging(&mut problems, &raw.logging);
    let audit = audit(&mut problems, source, &raw.audit);
    let login = login(&mut problems, source, &raw.login);
    let registration = registration(&mut problems, &raw.registration, &stores);
    let portal = portal(&mut problems, &raw.portal, &stores);

    let settings = Settings {
        config_file: file.to_path_buf(),
        source: source.clone(),
        server,
        tls,
        oauth,
        password_hashing,
        stores,
        security,
        rate_limit,
        management,
        logging,
        audit,
        login,
        registration,
        portal,
    };
    (settings, problems.found)
}

/// `base` + the port offset, as the port to bind; 0 stays 0 (the OS chooses, whatever the
/// offset). `key` names the port in a problem.
fn with_offset(
    problems: &mut Problems<'_>,
    offset_key: &str,
    key: &str,
    base: i64,
    offset: i64,
) -> u16 {
    if base == 0 {
        return 0;
    }
    match u16::try_from(base + offset) {
        Ok(port) => port,
        Err(_) => {
            problems.add(
                offset_key,
                format!("{key} {base} + offset {offset} is beyond the last port 65535"),
            );
            0
        }
    }
}

/// `[management]`: host and port checked like `[server]`'s (the same offset applies), on a
/// port of its own.
fn management(
    problems: &mut Problems<'_>,
    source: &ConfigSource,
    raw: &super::raw::RawManagement,
    server: &ServerSettings,
    offset_key: &str,
) -> ManagementSettings {
    let host = match raw.host.parse::<IpAddr>() {
        Ok(ip) => ip,
        Err(_) => {
            problems.add(
                "management.host",
                format!("`{}` is not an IP address", raw.host),
            );
            IpAddr::from([127, 0, 0, 1])
        }
    };
    let base_port = problems.range("management.port", raw.port, 0, 65_535);
    let port = with_offset(
        problems,
        offset_key,
        "management.port",
        base_port,
        server.port_offset,
    );
    if raw.enabled && port != 0 && port == server.https_port && hosts_overlap(host, server.host) {
        problems.add(
            "management.port",
            format!(
                "{port} is also server.https_port (after the offset): the management listener \
                 needs a port of its own"
            ),
        );
    }
    let (cert, key) = (raw.cert.trim(), raw.key.trim());
    let tls = match (cert.is_empty(), key.is_empty()) {
        (true, true) => None,
        (false, false) => Some(CertificateFiles {
            cert: source.resolve(Path::new(cert)),
            key: source.resolve(Path::new(key)),
        }),
        (false, true) => {
            problems.add(
                "management.key",
                "missing: management.cert is set, and HTTPS needs both (or neither, for plain HTTP)",
            );
            None
        }
        (true, false) => {
            problems.add(
                "management.cert",
                "missing: management.key is set, and HTTPS needs both (or neither, for plain HTTP)",
            );
            None
        }
    };
    ManagementSettings {
        enabled: raw.enabled,
        host,
        port,
        per_client_metrics: raw.per_client_metrics,
        tls,
    }
}

/// `[logging]`: the format by name, the level as a filter directive `TOKENGATE_LOG` would take.
fn logging(problems: &mut Problems<'_>, raw: &super::raw::RawLogging) -> LoggingSettings {
    let format = match raw.format.as_str() {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            problems.add(
                "logging.format",
                format!("must be \"text\" or \"json\", got \"{other}\""),
            );
            LogFormat::Text
        }
    };
    let level = match crate::telemetry::parse_filter(&raw.level) {
        Ok(_) => raw.level.clone(),
        Err(err) => {
            problems.add(
                "logging.level",
                format!(
                    "`{}` is not a log filter ({err}); e.g. \"info\" or \"warn,tokengate=debug\"",
                    raw.level
                ),
            );
            crate::telemetry::DEFAULT_LEVEL.to_owned()
        }
    };
    LoggingSettings { format, level }
}

/// `[registration]`: the mode and what registered clients may get. Registered clients are
/// kept in the clients table, so that every node sees them: any mode but `off` needs it.
fn registration(
    problems: &mut Problems<'_>,
    raw: &super::raw::RawRegistration,
    stores: &StoreSettings,
) -> RegistrationSettings {
    let defaults = RegistrationSettings::default();
    let mode = match RegistrationMode::parse(&raw.mode) {
        Some(mode) => mode,
        None => {
            problems.add(
                "registration.mode",
                format!(
                    "must be one of {}, got `{}`",
                    RegistrationMode::NAMES.join(", "),
                    raw.mode
                ),
            );
            defaults.mode
        }
    };
    if mode != RegistrationMode::Off && stores.clients != DirectoryLocation::Database {
        problems.add(
            "registration.mode",
            format!(
                "`{}` needs [stores] clients = \"sql\": registered clients are kept in the \
                 token database, where every node reads them",
                mode.as_str()
            ),
        );
    }
    if raw.wso2_compat && stores.clients != DirectoryLocation::Database {
        problems.add(
            "registration.wso2_compat",
            "needs [stores] clients = \"sql\": registered clients are kept in the token \
             database, where every node reads them",
        );
    }
    let allowed_grant_types = grant_types(
        problems,
        "registration.allowed_grant_types",
        &raw.allowed_grant_types,
    );
    let allowed_scopes = scope_names(problems, "registration.allowed_scopes", &raw.allowed_scopes);
    RegistrationSettings {
        mode,
        allowed_grant_types,
        allowed_scopes,
        wso2_compat: raw.wso2_compat,
    }
}

/// Grant type names of `key` (an unknown one is a problem).
fn grant_types(
    problems: &mut Problems<'_>,
    key: &str,
    names: &[String],
) -> std::collections::BTreeSet<crate::store::model::GrantType> {
    let mut grants = std::collections::BTreeSet::new();
    for name in names {
        match crate::store::model::GrantType::parse(name) {
            Some(grant) => {
                grants.insert(grant);
            }
            None => problems.add(key, format!("unknown grant type `{name}`")),
        }
    }
    grants
}

/// Scope names of `key` (one that is no RFC 6749 scope token is a problem).
fn scope_names(
    problems: &mut Problems<'_>,
    key: &str,
    names: &[String],
) -> std::collections::BTreeSet<String> {
    for scope in names {
        if !crate::store::model::is_scope_token(scope) {
            problems.add(
                key,
                format!("`{scope}` is not a valid scope name (RFC 6749 §3.3)"),
            );
        }
    }
    names.iter().cloned().collect()
}

/// `[portal]`: whether the developer portal is served and what its applications may have.
/// Its applications are kept in the clients table, so the portal needs it.
fn portal(
    problems: &mut Problems<'_>,
    raw: &super::raw::RawPortal,
    stores: &StoreSettings,
) -> PortalSettings {
    if raw.enabled && stores.clients != DirectoryLocation::Database {
        problems.add(
            "portal.enabled",
            "needs [stores] clients = \"sql\": the portal's applications are kept in the \
             token database, where every node reads them",
        );
    }
    let allowed_grant_types = grant_types(
        problems,
        "portal.allowed_grant_types",
        &raw.allowed_grant_types,
    );
    if raw.enabled && allowed_grant_types.is_empty() {
        problems.add(
            "portal.allowed_grant_types",
            "must name at least one grant type while the portal is enabled",
        );
    }
    let allowed_scopes = scope_names(problems, "portal.allowed_scopes", &raw.allowed_scopes);
    let secret_overlap_secs =
        to_u64(problems.range("portal.secret_overlap", raw.secret_overlap, 0, 30 * 86_400));
    PortalSettings {
        enabled: raw.enabled,
        allowed_grant_types,
        allowed_scopes,
        secret_overlap_secs,
    }
}

/// `[login]`: the session lifetime and the page's branding.
fn login(
    problems: &mut Problems<'_>,
    source: &ConfigSource,
    raw: &super::raw::RawLogin,
) -> LoginSettings {
    let session_lifetime_secs = to_u64(problems.range(
        "login.session_lifetime",
        raw.session_lifetime,
        60,
        30 * 86_400,
    ));
    let printable = |text: &str, max: usize| {
        !text.trim().is_empty()
            && text.chars().count() <= max
            && !text.chars().any(char::is_control)
    };
    if !printable(&raw.title, 80) {
        problems.add("login.title", "must be 1 to 80 printable characters");
    }
    let logo = match raw.logo.as_str() {
        "" => None,
        path => {
            let path = source.resolve(Path::new(path));
            logo_file(problems, path)
        }
    };
    for (scope, description) in &raw.scope_descriptions {
        let key = format!("login.scope_descriptions.{scope}");
        if !crate::store::model::is_scope_token(scope) {
            problems.add(&key, "is not a valid scope name (RFC 6749 §3.3)");
        }
        if !printable(description, 200) {
            problems.add(&key, "must be 1 to 200 printable characters");
        }
    }
    LoginSettings {
        session_lifetime_secs,
        title: raw.title.clone(),
        logo,
        scope_descriptions: raw.scope_descriptions.clone(),
    }
}

/// `[login] logo`: an image file of a type browsers show, small enough to hold in memory.
fn logo_file(problems: &mut Problems<'_>, path: PathBuf) -> Option<LogoFile> {
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let content_type = match extension.as_deref() {
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("svg") => "image/svg+xml",
        _ => {
            problems.add(
                "login.logo",
                format!(
                    "{}: must be a .png, .jpg, .gif, .webp or .svg file",
                    path.display()
                ),
            );
            return None;
        }
    };
    match std::fs::metadata(&path) {
        Ok(meta) if !meta.is_file() => {
            problems.add("login.logo", format!("{}: is not a file", path.display()));
            None
        }
        Ok(meta) if meta.len() > LogoFile::MAX_BYTES => {
            problems.add(
                "login.logo",
                format!(
                    "{}: is {} bytes; the most is {}",
                    path.display(),
                    meta.len(),
                    LogoFile::MAX_BYTES
                ),
            );
            None
        }
        Ok(_) => Some(LogoFile { path, content_type }),
        Err(err) => {
            problems.add(
                "login.logo",
                format!("{}: cannot be read: {err}", path.display()),
            );
            None
        }
    }
}

/// `[audit]`: `""` is off, `"-"` standard error, anything else a path (relative to the home).
fn audit(
    problems: &mut Problems<'_>,
    source: &ConfigSource,
    raw: &super::raw::RawAudit,
) -> AuditSettings {
    let destination = match raw.file.as_str() {
        "" => AuditDestination::Off,
        "-" => AuditDestination::Stderr,
        path if path.trim().is_empty() => {
            problems.add(
                "audit.file",
                "must be a path, \"-\" (standard error) or \"\" (off)",
            );
            AuditDestination::Off
        }
        path => AuditDestination::File(source.resolve(Path::new(path))),
    };
    let max_bytes = match raw.max_bytes {
        0 => None,
        bytes if (1024..=1 << 40).contains(&bytes) => Some(to_u64(bytes)),
        bytes => {
            problems.add(
                "audit.max_bytes",
                format!("must be 0 (no rotation) or between 1024 and 1099511627776, got {bytes}"),
            );
            None
        }
    };
    let keep = to_u32(problems.range("audit.keep", raw.keep, 0, 1000));
    AuditSettings {
        destination,
        max_bytes,
        keep,
    }
}

/// Whether listeners on `a` and `b` would take the same port (one of them may be a wildcard).
fn hosts_overlap(a: IpAddr, b: IpAddr) -> bool {
    a == b || a.is_unspecified() || b.is_unspecified()
}

fn required_path(
    problems: &mut Problems<'_>,
    source: &ConfigSource,
    key: &str,
    value: &str,
) -> PathBuf {
    if value.trim().is_empty() {
        problems.add(key, "must not be empty");
    }
    source.resolve(Path::new(value))
}

/// `"sql"` selects the token database; anything else is a file path.
fn directory_location(
    problems: &mut Problems<'_>,
    source: &ConfigSource,
    key: &str,
    value: &str,
) -> DirectoryLocation {
    if value == DirectoryLocation::DATABASE {
        DirectoryLocation::Database
    } else {
        DirectoryLocation::File(required_path(problems, source, key, value))
    }
}

fn parse_token_store(
    problems: &mut Problems<'_>,
    source: &ConfigSource,
    url: &str,
    synchronous: SqliteSynchronous,
) -> TokenStoreSettings {
    let sqlite_path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"));
    match sqlite_path {
        Some(path) if !path.is_empty() && !path.contains('?') => TokenStoreSettings::Sqlite {
            path: source.resolve(Path::new(path)),
            synchronous,
        },
        _ if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            TokenStoreSettings::Postgres(super::PostgresSettings {
                url: url.to_owned(),
                max_connections: 10,
                run_migrations: true,
            })
        }
        _ => {
            problems.add(
                "stores.tokens",
                "not a token store URL; expected sqlite://PATH or postgres://…",
            );
            TokenStoreSettings::Sqlite {
                path: PathBuf::new(),
                synchronous,
            }
        }
    }
}

/// Peers are compared as canonical addresses (an IPv4-mapped `::ffff:a.b.c.d` is `a.b.c.d`), so
/// a trusted proxy written in its mapped form is matched too.
fn canonical_net(net: ipnet::IpNet) -> ipnet::IpNet {
    match net {
        ipnet::IpNet::V6(v6) => match (v6.addr().to_ipv4_mapped(), v6.prefix_len()) {
            (Some(v4), prefix) if prefix >= 96 => {
                ipnet::Ipv4Net::new(v4, prefix - 96).map_or(net, ipnet::IpNet::V4)
            }
            _ => net,
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod canonical_net_tests {
    use super::canonical_net;

    #[test]
    fn a_mapped_ipv4_proxy_is_written_as_its_ipv4_network() {
        let mapped: ipnet::IpNet = "::ffff:10.0.0.0/104".parse().unwrap();
        assert_eq!(canonical_net(mapped), "10.0.0.0/8".parse().unwrap());
        let host: ipnet::IpNet = "::ffff:127.0.0.1/128".parse().unwrap();
        assert_eq!(canonical_net(host), "127.0.0.1/32".parse().unwrap());
        let v6: ipnet::IpNet = "2001:db8::/32".parse().unwrap();
        assert_eq!(canonical_net(v6), v6);
    }
}
