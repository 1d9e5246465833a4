//! A serde mirror of `config/identity.toml`, exactly as an operator writes it. Unknown keys are
//! rejected (`deny_unknown_fields`) so a typo is an error, not a silently ignored setting.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawConfig {
    pub(crate) server: RawServer,
    pub(crate) tls: RawTls,
    pub(crate) oauth: RawOAuth,
    pub(crate) password_hashing: RawPasswordHashing,
    pub(crate) stores: RawStores,
    pub(crate) security: RawSecurity,
    pub(crate) rate_limit: RawRateLimit,
    pub(crate) management: RawManagement,
    pub(crate) logging: RawLogging,
    pub(crate) audit: RawAudit,
    pub(crate) login: RawLogin,
    pub(crate) registration: RawRegistration,
    pub(crate) portal: RawPortal,
}

/// `[portal]`: the developer portal at `/portal/`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawPortal {
    pub(crate) enabled: bool,
    pub(crate) allowed_grant_types: Vec<String>,
    pub(crate) allowed_scopes: Vec<String>,
    pub(crate) secret_overlap: i64,
}

impl Default for RawPortal {
    fn default() -> Self {
        Self {
            enabled: false,
            allowed_grant_types: vec![
                "authorization_code".to_owned(),
                "refresh_token".to_owned(),
                "client_credentials".to_owned(),
            ],
            allowed_scopes: Vec::new(),
            secret_overlap: 0,
        }
    }
}

/// `[registration]`: dynamic client registration (RFC 7591/7592).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawRegistration {
    pub(crate) mode: String,
    pub(crate) allowed_grant_types: Vec<String>,
    pub(crate) allowed_scopes: Vec<String>,
    pub(crate) wso2_compat: bool,
}

impl Default for RawRegistration {
    fn default() -> Self {
        Self {
            mode: "off".to_owned(),
            allowed_grant_types: vec!["authorization_code".to_owned(), "refresh_token".to_owned()],
            allowed_scopes: Vec::new(),
            wso2_compat: false,
        }
    }
}

/// `[login]`: the hosted login page of `/authorize`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawLogin {
    pub(crate) session_lifetime: i64,
    pub(crate) title: String,
    pub(crate) logo: String,
    pub(crate) scope_descriptions: BTreeMap<String, String>,
}

impl Default for RawLogin {
    fn default() -> Self {
        Self {
            session_lifetime: 28_800,
            title: "tokengate".to_owned(),
            logo: String::new(),
            scope_descriptions: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawLogging {
    pub(crate) format: String,
    pub(crate) level: String,
}

impl Default for RawLogging {
    fn default() -> Self {
        Self {
            format: "text".into(),
            level: crate::telemetry::DEFAULT_LEVEL.into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawAudit {
    pub(crate) file: String,
    pub(crate) max_bytes: i64,
    pub(crate) keep: i64,
}

impl Default for RawAudit {
    fn default() -> Self {
        Self {
            file: "logs/audit.jsonl".into(),
            max_bytes: 0,
            keep: 5,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawManagement {
    pub(crate) enabled: bool,
    pub(crate) host: String,
    pub(crate) port: i64,
    pub(crate) per_client_metrics: bool,
    /// Both or neither: with them the listener speaks HTTPS.
    pub(crate) cert: String,
    pub(crate) key: String,
}

impl Default for RawManagement {
    fn default() -> Self {
        Self {
            enabled: true,
            host: "127.0.0.1".into(),
            port: 9000,
            per_client_metrics: false,
            cert: String::new(),
            key: String::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawRateLimit {
    pub(crate) enabled: bool,
    pub(crate) shared: bool,
    pub(crate) per_ip_rate: f64,
    pub(crate) per_ip_burst: f64,
    pub(crate) per_client_rate: f64,
    pub(crate) per_client_burst: f64,
    pub(crate) trusted_proxies: Vec<String>,
}

impl Default for RawRateLimit {
    fn default() -> Self {
        Self {
            enabled: false,
            shared: true,
            per_ip_rate: 20.0,
            per_ip_burst: 40.0,
            per_client_rate: 200.0,
            per_client_burst: 400.0,
            trusted_proxies: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawSecurity {
    pub(crate) max_failed_login_attempts: i64,
    pub(crate) max_failed_login_attempts_per_user: i64,
    pub(crate) max_failed_client_auth_attempts: i64,
    pub(crate) failed_login_window: i64,
    pub(crate) account_lock_duration: i64,
}

impl Default for RawSecurity {
    fn default() -> Self {
        Self {
            max_failed_login_attempts: 5,
            max_failed_login_attempts_per_user: 50,
            max_failed_client_auth_attempts: 10,
            failed_login_window: 900,
            account_lock_duration: 900,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawServer {
    pub(crate) host: String,
    pub(crate) https_port: i64,
    pub(crate) port_offset: i64,
    pub(crate) max_connections: i64,
    pub(crate) max_connections_per_ip: i64,
    pub(crate) tls_handshake_timeout: i64,
    pub(crate) header_read_timeout: i64,
    pub(crate) keep_alive_timeout: i64,
    pub(crate) request_timeout: i64,
    pub(crate) max_body_bytes: i64,
    pub(crate) shutdown_grace_period: i64,
    pub(crate) shutdown_drain_period: i64,
    pub(crate) pid_file: String,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            host: "0.0.0.0".into(),
            https_port: 8243,
            port_offset: 0,
            max_connections: 10_000,
            max_connections_per_ip: 512,
            tls_handshake_timeout: 10,
            header_read_timeout: 10,
            keep_alive_timeout: 60,
            request_timeout: 30,
            max_body_bytes: 16 * 1024,
            shutdown_grace_period: 10,
            shutdown_drain_period: 0,
            pid_file: "data/tokengate.pid".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawTls {
    pub(crate) cert: String,
    pub(crate) key: String,
    pub(crate) generate_self_signed: bool,
}

impl Default for RawTls {
    fn default() -> Self {
        Self {
            cert: "certs/server.crt".into(),
            key: "certs/server.key".into(),
            generate_self_signed: false,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawOAuth {
    pub(crate) access_token_default_validity_period: i64,
    pub(crate) application_access_token_default_validity_period: i64,
    pub(crate) refresh_token_validity_period: i64,
    pub(crate) renew_refresh_token: bool,
    pub(crate) refresh_token_reuse_grace_period: i64,
    pub(crate) refresh_token_max_lifetime: i64,
    pub(crate) authorization_code_validity_period: i64,
    pub(crate) issuer: Option<String>,
    pub(crate) token_format: String,
    pub(crate) jwt_algorithm: String,
    pub(crate) default_audience: Option<String>,
    pub(crate) signing_keys: String,
}

impl Default for RawOAuth {
    fn default() -> Self {
        Self {
            access_token_default_validity_period: 3600,
            application_access_token_default_validity_period: 3600,
            refresh_token_validity_period: 86_400,
            renew_refresh_token: true,
            refresh_token_reuse_grace_period: 0,
            refresh_token_max_lifetime: 0,
            authorization_code_validity_period: 60,
            issuer: None,
            token_format: "opaque".into(),
            jwt_algorithm: "EdDSA".into(),
            default_audience: None,
            signing_keys: "keys".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawPasswordHashing {
    pub argon2_memory_kib: i64,
    pub argon2_iterations: i64,
    pub argon2_parallelism: i64,
    pub(crate) workers: i64,
    pub(crate) queue_capacity: i64,
}

impl Default for RawPasswordHashing {
    fn default() -> Self {
        Self {
            argon2_memory_kib: 12_288,
            argon2_iterations: 3,
            argon2_parallelism: 1,
            workers: 0,
            queue_capacity: 64,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawStores {
    pub(crate) users: String,
    pub(crate) clients: String,
    pub(crate) tokens: String,
    pub(crate) sqlite_synchronous: String,
    pub(crate) pool_size: i64,
    pub(crate) run_migrations: bool,
    pub(crate) reload_interval: i64,
    pub(crate) janitor_interval: i64,
    pub(crate) janitor_batch: i64,
}

impl Default for RawStores {
    fn default() -> Self {
        Self {
            users: "config/users.toml".into(),
            clients: "config/clients.toml".into(),
            tokens: "sqlite://data/tokens.db".into(),
            sqlite_synchronous: "normal".into(),
            pool_size: 10,
            run_migrations: true,
            reload_interval: 2,
            janitor_interval: 60,
            janitor_batch: 1000,
        }
    }
}
