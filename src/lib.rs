//! tokengate: a standalone OAuth 2.0 token server (the "Token API" of an API gateway).
//!
//! Layers: [`http`] (axum handlers) → [`oauth`] (RFC 6749 protocol logic, no HTTP or SQL types)
//! → [`store`] (persistence behind traits). [`startup`] wires them together; [`cli`] is the
//! operator's command line.

pub mod abuse;
pub mod audit;
pub mod cli;
pub mod clock;
pub mod config;
pub mod connection;
pub mod crypto;
pub mod http;
pub mod janitor;
pub mod key_sharing;
pub mod listener;
pub mod live;
pub mod management;
pub mod metrics;
pub mod oauth;
pub mod pid_file;
pub mod reload;
pub mod secret_files;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod toml_parse;

pub use startup::Application;
