//! Client-secret hashes.
//!
//! Secrets tokengate generates carry 256 bits of entropy, so a salted SHA-256 (stored as the PHC
//! string `$sha256$<salt>$<hash>`) cannot be brute-forced and costs microseconds, which matters
//! because every refresh grant authenticates its client. Secrets an operator chose may be weak,
//! so they are stored as argon2id PHC strings and verified on the hashing pool.

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine as _;
use rand::rngs::OsRng;
use rand::RngCore as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;

/// How a stored client secret must be verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretHashKind {
    /// `$sha256$…`: fast, for generated high-entropy secrets.
    Sha256,
    /// `$argon2id$…`: slow, for operator-chosen secrets; goes to the hashing pool.
    Argon2,
}

pub fn kind_of(phc: &str) -> Option<SecretHashKind> {
    if phc.starts_with("$sha256$") {
        Some(SecretHashKind::Sha256)
    } else if phc.starts_with("$argon2id$") {
        Some(SecretHashKind::Argon2)
    } else {
        None
    }
}

/// A new high-entropy secret (256 random bits, base64url): client secrets, authorization codes,
/// login session and device ids, CSRF values.
pub fn generate_secret() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn salted_sha256(salt: &[u8], secret: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(salt);
    hasher.update(secret);
    hasher.finalize().into()
}

/// `$sha256$<salt>$<hash>` with a random 16-byte salt.
pub fn hash_sha256(secret: &str) -> String {
    let mut salt = [0u8; 16];
    OsRng.fill_bytes(&mut salt);
    let hash = salted_sha256(&salt, secret.as_bytes());
    format!(
        "$sha256${}${}",
        STANDARD_NO_PAD.encode(salt),
        STANDARD_NO_PAD.encode(hash)
    )
}

/// Whether `phc` is a well-formed `$sha256$` string.
pub fn parse_sha256(phc: &str) -> Option<(Vec<u8>, [u8; 32])> {
    let rest = phc.strip_prefix("$sha256$")?;
    let (salt, hash) = rest.split_once('$')?;
    let salt = STANDARD_NO_PAD.decode(salt).ok()?;
    let hash = <[u8; 32]>::try_from(STANDARD_NO_PAD.decode(hash).ok()?).ok()?;
    if salt.len() < 8 {
        return None;
    }
    Some((salt, hash))
}

/// Verifies a secret against a `$sha256$` string in constant time; malformed strings never match.
pub fn verify_sha256(phc: &str, secret: &str) -> bool {
    match parse_sha256(phc) {
        Some((salt, expected)) => salted_sha256(&salt, secret.as_bytes())
            .ct_eq(&expected)
            .into(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_hashes_verify_only_their_secret() {
        let secret = generate_secret();
        assert_eq!(secret.len(), 43);
        let phc = hash_sha256(&secret);
        assert_eq!(kind_of(&phc), Some(SecretHashKind::Sha256));
        assert!(verify_sha256(&phc, &secret));
        assert!(!verify_sha256(&phc, "wrong"));
        assert!(!verify_sha256("$sha256$garbage", &secret));
    }
}
