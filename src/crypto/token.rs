//! Opaque tokens: `<id>.<secret>`, both base64url without padding.
//!
//! The id is a UUIDv7 (48-bit millisecond timestamp + 74 random bits): it reveals only the issue
//! time, and being time-ordered it makes every insert land at the end of the store's B-tree
//! instead of scattering writes over it. The secret is 256 bits from the OS CSPRNG (one
//! `getrandom` call per token: a user-space generator would save ~1 % of a refresh's CPU but
//! keep the state that predicts the next secrets in memory); only its SHA-256 digest is
//! stored, so a copy of the database cannot be replayed as tokens.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::rngs::OsRng;
use rand::RngCore as _;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;

/// The time-ordered, non-secret half of a token; the store's primary key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenId(pub [u8; 16]);

impl TokenId {
    pub fn new(now_ms: i64) -> Self {
        let mut random = [0u8; 10];
        OsRng.fill_bytes(&mut random);
        Self::from_parts(now_ms, &random)
    }

    fn from_parts(now_ms: i64, random: &[u8; 10]) -> Self {
        let millis = u64::try_from(now_ms).unwrap_or(0);
        Self(
            uuid::Builder::from_unix_timestamp_millis(millis, random)
                .into_uuid()
                .into_bytes(),
        )
    }

    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; 16]>::try_from(bytes).ok().map(Self)
    }

    /// The smallest id of millisecond `ms` (its 48-bit time, then zero bytes): every id minted
    /// before `ms` sorts below it, every id minted at or after it does not. Compared bytewise,
    /// as the databases compare blobs.
    pub fn lower_bound(ms: i64) -> Self {
        let millis = u64::try_from(ms).unwrap_or(0).min((1 << 48) - 1);
        let mut bytes = [0u8; 16];
        for (slot, byte) in bytes
            .iter_mut()
            .zip(millis.to_be_bytes().into_iter().skip(2))
        {
            *slot = byte;
        }
        Self(bytes)
    }

    /// When the id was minted, in Unix milliseconds (its first 48 bits).
    pub fn minted_at_ms(&self) -> i64 {
        let mut millis = [0u8; 8];
        for (slot, byte) in millis.iter_mut().skip(2).zip(self.0) {
            *slot = byte;
        }
        i64::try_from(u64::from_be_bytes(millis)).unwrap_or(i64::MAX)
    }

    /// The hyphenated UUID form, for logs and `jti`.
    pub fn to_uuid_string(&self) -> String {
        uuid::Uuid::from_bytes(self.0).hyphenated().to_string()
    }
}

/// SHA-256 of a token's secret half.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SecretDigest(pub [u8; 32]);

impl std::fmt::Debug for SecretDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretDigest(..)")
    }
}

impl SecretDigest {
    pub fn of(secret: &[u8]) -> Self {
        Self(Sha256::digest(secret).into())
    }

    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(bytes).ok().map(Self)
    }

    /// Constant-time equality, so response timing does not reveal how much of a digest matched.
    pub fn matches(&self, other: &SecretDigest) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

/// A freshly minted token: the string goes to the client once, the digest to the store.
pub struct MintedToken {
    pub id: TokenId,
    pub digest: SecretDigest,
    pub value: SecretString,
}

impl MintedToken {
    pub fn new(now_ms: i64) -> Self {
        // One getrandom call for the id's random bits and the secret.
        let mut random = [0u8; 42];
        OsRng.fill_bytes(&mut random);
        let (id_random, secret) = random.split_at(10);
        // Always 10 bytes (42 > 10); the fallback never runs and touches only the id.
        let id_random: &[u8; 10] = id_random.try_into().unwrap_or(&[0; 10]);
        let id = TokenId::from_parts(now_ms, id_random);
        let value = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(id.0),
            URL_SAFE_NO_PAD.encode(secret)
        );
        Self {
            id,
            digest: SecretDigest::of(secret),
            value: SecretString::from(value),
        }
    }
}

/// A token as presented by a client, split into its id and the digest of its secret.
#[derive(Debug, Clone, Copy)]
pub struct PresentedToken {
    pub id: TokenId,
    pub digest: SecretDigest,
}

impl PresentedToken {
    /// `None` for anything that is not a well-formed token of ours.
    pub fn parse(value: &SecretString) -> Option<Self> {
        let value = value.expose_secret();
        // 22 + 1 + 43 characters; anything longer is not ours and is not worth decoding.
        if value.len() != 66 {
            return None;
        }
        let (id, secret) = value.split_once('.')?;
        let id = TokenId::from_slice(&URL_SAFE_NO_PAD.decode(id).ok()?)?;
        let secret = URL_SAFE_NO_PAD.decode(secret).ok()?;
        if secret.len() != 32 {
            return None;
        }
        Some(Self {
            id,
            digest: SecretDigest::of(&secret),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_tokens_parse_back_to_the_same_id_and_digest() {
        let minted = MintedToken::new(1_700_000_000_000);
        let presented = PresentedToken::parse(&minted.value).unwrap();
        assert_eq!(presented.id, minted.id);
        assert!(presented.digest.matches(&minted.digest));
        assert_eq!(minted.value.expose_secret().len(), 66);
    }

    #[test]
    fn ids_are_time_ordered() {
        let earlier = TokenId::new(1_700_000_000_000);
        let later = TokenId::new(1_700_000_000_001);
        assert!(earlier < later);
    }

    #[test]
    fn the_lower_bound_of_a_millisecond_splits_ids_at_it() {
        let ms = 1_700_000_000_123;
        let bound = TokenId::lower_bound(ms);
        assert!(TokenId::new(ms - 1) < bound);
        assert!(TokenId::new(ms) > bound);
        assert!(TokenId::new(ms + 1) > bound);
        assert_eq!(TokenId::new(ms).minted_at_ms(), ms);
        assert_eq!(bound.minted_at_ms(), ms);
    }

    #[test]
    fn garbage_is_not_a_token() {
        for bad in [
            "",
            "abc",
            &"a".repeat(66),
            &format!("{}.{}", "A".repeat(22), "!".repeat(43)),
        ] {
            assert!(PresentedToken::parse(&SecretString::from(bad.to_owned())).is_none());
        }
    }
}
