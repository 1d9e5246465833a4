//! Configuration: `config/identity.toml` parsed into typed, validated [`Settings`] once, at
//! startup. Precedence is flag > `TOKENGATE_*` environment variable > file > built-in default;
//! clap applies the first two, this module the rest.

mod raw;
pub(crate) mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::store::toml_file::FileError;

pub use validate::{validate, validate_with_fallbacks};

/// The default config file, relative to the home directory.
pub const DEFAULT_CONFIG_PATH: &str = "config/identity.toml";

/// Environment variables tokengate reads; any other `TOKENGATE_*` variable earns a warning.
pub const KNOWN_ENV_VARS: &[&str] = &[
    "TOKENGATE_CONFIG",
    "TOKENGATE_PORT_OFFSET",
    "TOKENGATE_HOME",
    "TOKENGATE_LOG",
    "TOKENGATE_TEST_DATABASE_URL",
];

/// One thing wrong with the configuration, naming where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub file: PathBuf,
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(f, "{}: {}: {}", self.file.display(), self.key, self.message)
        }
    }
}

/// Every problem found, so an operator fixes them in one pass rather than one per restart.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<ConfigProblem>,
}

impl ConfigError {
    pub fn single(file: &Path, key: &str, message: impl Into<String>) -> Self {
        Self {
            problems: vec![ConfigProblem {
                file: file.to_path_buf(),
                key: key.to_owned(),
                message: message.into(),
            }],
        }
    }
}

/// A users or clients file's problems are configuration problems to the operator.
impl From<FileError> for ConfigError {
    fn from(err: FileError) -> Self {
        Self {
            problems: err
                .problems
                .into_iter()
                .map(|problem| ConfigProblem {
                    file: problem.file,
                    key: problem.key,
                    message: problem.message,
                })
                .collect(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.problems.iter().map(ToString::to_string).collect();
        write!(f, "{}", lines.join("\n"))
    }
}

/// Where the configuration comes from: what the command line and environment said.
#[derive(Debug, Clone, Default)]
pub struct ConfigSource {
    /// `--config` / `TOKENGATE_CONFIG`; `None` means [`DEFAULT_CONFIG_PATH`].
    pub config_path: Option<PathBuf>,
    /// `--port-offset` / `TOKENGATE_PORT_OFFSET`; overrides `[server] port_offset`.
    pub port_offset: Option<i64>,
    /// `TOKENGATE_HOME`; relative paths resolve against it, else the current directory.
    pub home: Option<PathBuf>,
}

impl ConfigSource {
    /// Reads `TOKENGATE_HOME` from the environment (the other two come through clap).
    pub fn from_env(config_path: Option<PathBuf>, port_offset: Option<i64>) -> Self {
        Self {
            config_path,
            port_offset,
            home: std::env::var_os("TOKENGATE_HOME").map(PathBuf::from),
        }
    }

    pub fn home_dir(&self) -> PathBuf {
        match &self.home {
            Some(home) => home.clone(),
            None => std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
        }
    }

    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.home_dir().join(path)
        }
    }

    pub fn config_file(&self) -> PathBuf {
        let path = self
            .config_path
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH));
        self.resolve(&path)
    }
}

/// Reads and validates the config file named by `source`.
pub fn load(source: &ConfigSource) -> Result<Settings, ConfigError> {
    let file = source.config_file();
    let text = std::fs::read_to_string(&file)
        .map_err(|err| ConfigError::single(&file, "", format!("cannot read the file: {err}")))?;
    validate(&text, &file, source)
}

/// As [`load`], but settings come back whatever is wrong: what cannot be read (a key, or the
/// whole file) is its default, and the problems say so (`check-config`).
pub fn load_with_fallbacks(source: &ConfigSource) -> (Settings, Vec<ConfigProblem>) {
    let file = source.config_file();
    match std::fs::read_to_string(&file) {
        Ok(text) => validate_with_fallbacks(&text, &file, source),
        Err(err) => {
            let (settings, _) = validate_with_fallbacks("", &file, source);
            let problem = ConfigProblem {
                file: file.clone(),
                key: String::new(),
                message: format!("cannot read the file: {err}"),
            };
            (settings, vec![problem])
        }
    }
}

/// Validated configuration. Durations and ports are final (offset applied), paths are absolute.
#[derive(Debug, Clone)]
pub struct Settings {
    pub config_file: PathBuf,
    /// What the command line and environment said, so a reload reads the file the same way.
    pub source: ConfigSource,
    pub server: ServerSettings,
    pub tls: TlsSettings,
    pub oauth: OAuthSettings,
    pub password_hashing: PasswordHashingSettings,
    pub stores: StoreSettings,
    pub security: SecuritySettings,
    pub rate_limit: RateLimitSettings,
    pub management: ManagementSettings,
    pub logging: LoggingSettings,
    pub audit: AuditSettings,
    pub login: LoginSettings,
    pub registration: RegistrationSettings,
    pub portal: PortalSettings,
}

// `[registration]` is the registration endpoint's own type.
pub use crate::oauth::registration::{RegistrationMode, RegistrationSettings};
// `[portal]` is the developer portal's own type.
pub use crate::oauth::portal::PortalSettings;

/// `[login]`: the hosted login page of `/authorize`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginSettings {
    /// Seconds a login session (its cookie) spares the user the form on the next
    /// authorization.
    pub session_lifetime_secs: u64,
    /// The product name at the top of every page (and in the window title).
    pub title: String,
    /// An image shown above the title: read once at start, served at `/authorize/logo`.
    pub logo: Option<LogoFile>,
    /// What the consent screen says for a scope instead of its name.
    pub scope_descriptions: BTreeMap<String, String>,
}

/// `[login] logo`: the file and the media type its extension names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoFile {
    pub path: PathBuf,
    pub content_type: &'static str,
}

impl LogoFile {
    /// The largest logo accepted: it is held in memory and sent with every first page view.
    pub const MAX_BYTES: u64 = 256 * 1024;
}

// `[logging]` and `[audit]` are the telemetry's and the audit trail's own types.
pub use crate::audit::{AuditDestination, AuditSettings};
pub use crate::telemetry::{LogFormat, LoggingSettings};

/// `[management]`: the listener for `/metrics` and the health probes, apart from the token
/// port so that it is not exposed by accident; plain HTTP unless it has its own certificate.
#[derive(Debug, Clone)]
pub struct ManagementSettings {
    /// `false`: no management listener is bound (metrics are still recorded, unread).
    pub enabled: bool,
    pub host: IpAddr,
    /// With the offset applied; 0 asks the OS for a free port (tests).
    pub port: u16,
    /// Adds `client_id` to `tokengate_token_requests_total`: one series per client.
    pub per_client_metrics: bool,
    /// `cert` and `key`: HTTPS with this pair; `None`: plain HTTP.
    pub tls: Option<CertificateFiles>,
}

/// A certificate (chain) file and its key file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `None` limits are off (`[rate_limit] enabled = false`).
#[derive(Debug, Clone)]
pub struct RateLimitSettings {
    pub per_ip: Option<crate::abuse::rate_limit::Rate>,
    pub per_client: Option<crate::abuse::rate_limit::Rate>,
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// With a PostgreSQL token store, keep the buckets in the database so that the limits hold
    /// for the whole cluster; else each node limits on its own.
    pub shared: bool,
}

#[derive(Debug, Clone)]
pub struct SecuritySettings {
    /// Account lockout: `None` when `max_failed_login_attempts = 0`.
    pub lockout: Option<crate::store::LockoutPolicy>,
    /// Failed client authentications per client and address: `None` when
    /// `max_failed_client_auth_attempts = 0`.
    pub client_auth_lockout: Option<crate::abuse::client_failures::ClientAuthPolicy>,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub host: IpAddr,
    /// The HTTPS port with the offset applied; 0 asks the OS for a free port (tests).
    pub https_port: u16,
    pub port_offset: i64,
    pub max_connections: usize,
    /// Open connections one client IP may hold; 0 is no limit. Trusted proxies are exempt.
    pub max_connections_per_ip: usize,
    pub tls_handshake_timeout: Duration,
    /// Also the time a new connection has to start its first request.
    pub header_read_timeout: Duration,
    /// Idle time between requests after which a connection is closed.
    pub keep_alive_timeout: Duration,
    pub request_timeout: Duration,
    pub max_body_bytes: usize,
    /// After the drain, how long requests (and connections waiting for their first request)
    /// get to finish before the server stops regardless.
    pub shutdown_grace_period: Duration,
    /// After SIGTERM, how long `/health` answers 503 while everything else is still served,
    /// so that a load balancer takes the node out before connections are refused.
    pub shutdown_drain_period: Duration,
    /// Where `serve` writes its process id (`tokengate reload` reads it); `None`: nowhere.
    pub pid_file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct TlsSettings {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub generate_self_signed: bool,
}

#[derive(Debug, Clone)]
pub struct OAuthSettings {
    /// Seconds an access token from the password or refresh grant lives.
    pub access_token_validity_secs: u64,
    /// Seconds an application token (client_credentials grant) lives.
    pub application_access_token_validity_secs: u64,
    pub refresh_token_validity_secs: u64,
    pub renew_refresh_token: bool,
    /// Seconds during which the immediate predecessor of a grant's live refresh token is still
    /// honoured; 0 turns the grace off (any reuse revokes the grant).
    pub refresh_token_reuse_grace_secs: u64,
    /// Seconds from the start of a grant (its first refresh token) after which no refresh
    /// succeeds and no refresh token lives, however often it was rotated; 0 = no limit.
    pub refresh_token_max_lifetime_secs: u64,
    /// Seconds an authorization code can be redeemed in (RFC 6749 §4.1.2: short, 10 minutes
    /// at most).
    pub authorization_code_validity_secs: u64,
    /// `None`: `https://localhost:<the bound HTTPS port>`, settled at startup.
    pub issuer: Option<String>,
    pub token_format: TokenFormat,
    pub jwt_algorithm: JwtAlgorithm,
    /// `aud` of JWT access tokens for clients without their own; `None` means the issuer.
    pub default_audience: Option<String>,
    /// Folder of JWT signing keys (PKCS#8 PEM files).
    pub signing_keys_dir: PathBuf,
}

pub use crate::store::model::TokenFormat;

/// The JWS algorithm of JWT access tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JwtAlgorithm {
    /// Ed25519.
    EdDsa,
    /// ECDSA P-256 with SHA-256.
    Es256,
    /// RSASSA-PKCS1-v1_5 with SHA-256, 2048-bit keys.
    Rs256,
}

impl JwtAlgorithm {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "EdDSA" => Some(Self::EdDsa),
            "ES256" => Some(Self::Es256),
            "RS256" => Some(Self::Rs256),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::EdDsa => "EdDSA",
            Self::Es256 => "ES256",
            Self::Rs256 => "RS256",
        }
    }
}

#[derive(Debug, Clone)]
pub struct PasswordHashingSettings {
    pub argon2_memory_kib: u32,
    pub argon2_iterations: u32,
    pub argon2_parallelism: u32,
    /// Hashing threads; each keeps one work area of `argon2_memory_kib`.
    pub workers: usize,
    /// Verifications allowed to wait for a worker before requests are shed with 503.
    pub queue_capacity: usize,
}

#[derive(Debug, Clone)]
pub struct StoreSettings {
    pub users: DirectoryLocation,
    pub clients: DirectoryLocation,
    pub tokens: TokenStoreSettings,
    /// How often the user and client files are checked for changes made while serving.
    pub reload_interval: Duration,
    /// How often the janitor purges expired rows; `None` turns it off.
    pub janitor_interval: Option<Duration>,
    /// Rows per table one janitor batch deletes at most.
    pub janitor_batch: u32,
}

/// Where users (or clients) are kept: a TOML file, or tables in the token database
/// (`"sql"`), which every node of a cluster shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirectoryLocation {
    File(PathBuf),
    Database,
}

impl DirectoryLocation {
    /// The value that selects the token database.
    pub const DATABASE: &'static str = "sql";

    /// For messages: the file's path, or "the token database".
    pub fn describe(&self) -> String {
        match self {
            Self::File(path) => path.display().to_string(),
            Self::Database => "the token database".to_owned(),
        }
    }
}

// The token store's own settings live with the store (the store knows nothing of config).
pub use crate::store::sqlite::SqliteSynchronous;
pub use crate::store::{PostgresSettings, TokenStoreSettings};
