//! Cryptography, all through well-kept crates: token minting and digests, client-secret hashes,
//! and argon2id on a bounded pool of hashing threads.

pub mod jwk;
pub mod password;
pub mod secret;
pub mod token;
