//! Login sessions of the hosted login page: after a successful login a browser holds a random
//! 256-bit session id in a cookie, and the next authorization within `[login]
//! session_lifetime` skips the form. Only the SHA-256 of the id is stored, in the token
//! database, so every node of a cluster knows the session, and a user's not-before mark
//! (`user revoke-tokens`, `set-password`, `remove`) ends it as it ends the user's tokens.

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::rngs::OsRng;
use rand::RngCore as _;
use secrecy::{ExposeSecret as _, SecretString};

use super::error::OAuthError;
use crate::clock::Clock;
use crate::crypto::token::{SecretDigest, TokenId};
use crate::store::model::LoginSessionRecord;
use crate::store::TokenStore;

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
        let mut bytes = [0u8; 32];
        OsRng.fill_bytes(&mut bytes);
        let id = URL_SAFE_NO_PAD.encode(bytes);
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

    /// Ends the session `id` (`GET /logout`); whether there was one.
    pub async fn end(&self, id: &SecretString) -> Result<bool, OAuthError> {
        if !well_formed(id) {
            return Ok(false);
        }
        let digest = SecretDigest::of(id.expose_secret().as_bytes());
        Ok(self.store.delete_login_session(&digest).await?)
    }
}
