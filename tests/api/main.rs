//! The single integration-test binary: every module talks real HTTPS to a real server.

#![allow(unreachable_pub)] // test modules share helpers; nothing here is a public API

mod helpers;

mod binary;
mod config_errors;
mod restart;
mod tls_health;
mod token_errors;
mod token_password;
mod token_refresh;
