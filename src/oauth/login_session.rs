//! Login sessions of the hosted login page: after a successful login a browser holds a random
//! 256-bit session id in a cookie, and the next authorization within `[login]
//! session_lifetime` skips the form. Only the SHA-256 of the id is stored, in the token
//! database, so every node of a cluster knows the session, and a user's not-before mark
//! (`user revoke-tokens`, `set-password`, `remove`) ends it as it ends the user's tokens.
//!
//! A browser that signed in also keeps a *known device* cookie for [`KNOWN_DEVICE_SECS`]: proof
//! that this browser once knew the user's password, so the lockout can tell it from guessers
//! (its logins are counted per device, and a lock of the name everywhere does not apply to it;
//! OWASP's "device cookies"). Known devices are stored in the same table as sessions, under
//! a digest of a different domain (`known-device:` + id), so neither id works as the other.

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use secrecy::{ExposeSecret as _, SecretString};

use super::error::OAuthError;
use crate::clock::Clock;
use crate::crypto::secret::generate_secret;
use crate::crypto::token::{SecretDigest, TokenId};
use crate::store::model::LoginSessionRecord;
use crate::store::TokenStore;

/// How long a browser stays a known device after its last sign-in.
pub const KNOWN_DEVICE_SECS: i64 = 90 * 86_400;

/// What a known device's id is stored as: never the same digest as a session id.
fn device_digest(id: &SecretString) -> SecretDigest {
    let mut bytes = b"known-device:".to_vec();
    bytes.extend_from_slice(id.expose_secret().as_bytes());
    SecretDigest::of(&bytes)
}

pub struct LoginSessions {
    lifetime_secs: i64,
    store: Arc<dyn TokenStore>,
    clock: Arc<dyn Clock>,
}

/// A cookie value we could have set: 43 base64url characters (anything else is not looked up).
fn well_formed(id: &SecretString) -> bool {
    let id = id.expose_secret();
    id.len() == 43
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl LoginSessions {
    pub fn new(lifetime_secs: u64, store: Arc<dyn TokenStore>, clock: Arc<dyn Clock>) -> Self {
        Self {
            lifetime_secs: i64::try_from(lifetime_secs).unwrap_or(i64::MAX),
            store,
            clock,
        }
    }

    /// How long a new session lives, for the cookie's `Max-Age`.
    pub fn lifetime_secs(&self) -> i64 {
        self.lifetime_secs
    }

    /// Starts a session for `username` now; the id is for the cookie only.
    pub async fn start(&self, username: &str) -> Result<SecretString, OAuthError> {
        let id = generate_secret();
        self.store
            .create_login_session(LoginSessionRecord {
                digest: SecretDigest::of(id.as_bytes()),
                username: username.to_owned(),
                started: TokenId::new(self.clock.now_ms()),
                expires_at: self.clock.now_secs().saturating_add(self.lifetime_secs),
            })
            .await?;
        Ok(SecretString::from(id))
    }

    /// The user of the session `id` if it is still alive. The id is looked up by its digest: a
    /// 256-bit random id cannot be guessed, so the lookup leaks nothing by its timing.
    pub async fn user(&self, id: &SecretString) -> Result<Option<String>, OAuthError> {
        if !well_formed(id) {
            return Ok(None);
        }
        let digest = SecretDigest::of(id.expose_secret().as_bytes());
        Ok(self
            .store
            .find_login_session(&digest, self.clock.now_secs())
            .await?)
    }

    /// Records this browser as a known device of `username`; the id is for its cookie only.
    pub async fn remember_device(&self, username: &str) -> Result<SecretString, OAuthError> {
        let id = SecretString::from(generate_secret());
        self.store
            .create_login_session(LoginSessionRecord {
                digest: device_digest(&id),
                username: username.to_owned(),
                started: TokenId::new(self.clock.now_ms()),
                expires_at: self.clock.now_secs().saturating_add(KNOWN_DEVICE_SECS),
            })
            .await?;
        Ok(id)
    }

    /// The lockout's name for the known device `id` if it is one of `username`'s (and no
    /// not-before mark of the user came since); `None` otherwise.
    pub async fn known_device_of(
        &self,
        id: &SecretString,
        username: &str,
    ) -> Result<Option<String>, OAuthError> {
        if !well_formed(id) {
            return Ok(None);
        }
        let digest = device_digest(id);
        let owner = self
            .store
            .find_login_session(&digest, self.clock.now_secs())
            .await?;
        Ok((owner.as_deref() == Some(username)).then(|| {
            // Short, and not the id: the lockout table is not a place for secrets.
            let tag = digest.0.get(..12).unwrap_or_default();
            format!("device:{}", URL_SAFE_NO_PAD.encode(tag))
        }))
    }

    /// Ends the session `id` (`GET /logout`); whether there was one.
    pub async fn end(&self, id: &SecretString) -> Result<bool, OAuthError> {
        if !well_formed(id) {
            return Ok(false);
        }
        let digest = SecretDigest::of(id.expose_secret().as_bytes());
        Ok(self.store.delete_login_session(&digest).await?)
    }
}
