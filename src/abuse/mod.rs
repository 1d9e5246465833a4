//! Defences against abuse of the token endpoint beyond the protocol itself.

pub mod connections;
pub mod rate_limit;
