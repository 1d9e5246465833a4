//! Defences against abuse of the token endpoint beyond the protocol itself.

pub mod client_failures;
pub mod connections;
pub mod rate_limit;
