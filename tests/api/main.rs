//! The single integration-test binary: every module talks real HTTPS to a real server.

// Test modules share helpers; nothing here is a public API.
#![allow(unreachable_pub)]
// A test crate: a failed unwrap is a failed test, which is what we want.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod helpers;

mod audit;
mod authorization_code;
mod authorize;
mod browser;
mod browser_portal;
mod check_config;
mod cli_clients;
mod cli_config;
mod cli_keys;
mod cli_sessions;
mod cli_users;
mod client_auth_abuse;
mod client_credentials;
mod client_secrets;
mod cluster_processes;
mod config_errors;
mod config_lockout;
mod connections_per_ip;
mod consent;
mod crash;
mod db_outage;
mod dual_stack;
mod handover;
mod health_probe;
mod hostile;
mod interop;
mod introspect;
mod janitor;
mod janitor_backlog;
mod jwt;
mod live_reload;
mod lockout;
mod lockout_in_flight;
mod lockout_sources;
mod log_injection;
mod logging;
mod metadata;
mod metrics;
mod nul_bytes;
mod overload;
mod portal;
mod postgres;
mod postgres_tls;
mod public_clients;
mod rate_limit;
mod refresh_reuse;
mod registration;
mod registration_wso2;
mod request_id;
mod restart;
mod revoke;
mod secret_files;
mod serve_binary;
mod sessions;
mod shutdown;
mod shutdown_drain;
mod sql_directory;
mod store_contract;
mod store_failure;
mod timeouts;
mod tls_health;
mod token_errors;
mod token_password;
mod token_refresh;
