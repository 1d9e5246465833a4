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

mod binary;
mod check_config;
mod client_credentials;
mod client_secrets;
mod config_errors;
mod db_outage;
mod hostile;
mod interop;
mod introspect;
mod janitor;
mod jwt;
mod lockout;
mod log_injection;
mod metadata;
mod nul_bytes;
mod overload;
mod postgres;
mod postgres_tls;
mod rate_limit;
mod refresh_reuse;
mod restart;
mod revoke;
mod secret_files;
mod shutdown;
mod sql_directory;
mod store_failure;
mod timeouts;
mod tls_health;
mod token_errors;
mod token_password;
mod token_refresh;
