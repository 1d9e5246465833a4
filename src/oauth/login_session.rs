//! Login sessions of the hosted login page: after a successful login a browser holds a random
//! 256-bit session id in a cookie, and the next authorization within `[login]
//! session_lifetime` skips the form. Only the SHA-256 of the id is kept, in this node's memory
//! (see ARCHITECTURE.md: a cluster needs sticky sessions for `/authorize` until sessions move
//! to the database), bounded in number; the oldest sessions go first when it is full.

use std::collections::HashMap;
use std::sync::Mutex;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::rngs::OsRng;
use rand::RngCore as _;
use secrecy::{ExposeSecret as _, SecretString};

use crate::crypto::token::SecretDigest;

/// Sessions kept at most; past this the ones closest to expiry are dropped.
const MAX_SESSIONS: usize = 100_000;

struct Session {
    username: String,
    expires_at: i64,
}

pub struct LoginSessions {
    lifetime_secs: i64,
    sessions: Mutex<HashMap<[u8; 32], Session>>,
}

impl LoginSessions {
    pub fn new(lifetime_secs: u64) -> Self {
        Self {
            lifetime_secs: i64::try_from(lifetime_secs).unwrap_or(i64::MAX),
            sessions: Mutex::new(HashMap::new()),
        }
    }

    /// How long a new session lives, for the cookie's `Max-Age`.
    pub fn lifetime_secs(&self) -> i64 {
        self.lifetime_secs
    }

    /// Starts a session for `username` at `now`; the id is for the cookie only.
    pub fn start(&self, username: &str, now: i64) -> SecretString {
        let mut id = [0u8; 32];
        OsRng.fill_bytes(&mut id);
        let id = URL_SAFE_NO_PAD.encode(id);
        let session = Session {
            username: username.to_owned(),
            expires_at: now.saturating_add(self.lifetime_secs),
        };
        if let Ok(mut sessions) = self.sessions.lock() {
            sessions.retain(|_, session| session.expires_at > now);
            if sessions.len() >= MAX_SESSIONS {
                let oldest = sessions
                    .iter()
                    .min_by_key(|(_, session)| session.expires_at)
                    .map(|(key, _)| *key);
                if let Some(oldest) = oldest {
                    sessions.remove(&oldest);
                }
            }
            sessions.insert(SecretDigest::of(id.as_bytes()).0, session);
        }
        SecretString::from(id)
    }

    /// The user of the session `id` if it is still alive at `now`. The id is looked up by its
    /// digest: a 256-bit random id cannot be guessed, so the lookup leaks nothing by its timing.
    pub fn user(&self, id: &SecretString, now: i64) -> Option<String> {
        let key = SecretDigest::of(id.expose_secret().as_bytes()).0;
        let sessions = self.sessions.lock().ok()?;
        sessions
            .get(&key)
            .filter(|session| session.expires_at > now)
            .map(|session| session.username.clone())
    }

    /// Ends the session `id` (`GET /logout`); whether there was one.
    pub fn end(&self, id: &SecretString) -> bool {
        let key = SecretDigest::of(id.expose_secret().as_bytes()).0;
        self.sessions
            .lock()
            .map(|mut sessions| sessions.remove(&key).is_some())
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_names_its_user_until_it_expires_or_ends() {
        let sessions = LoginSessions::new(100);
        let id = sessions.start("alice", 1000);
        assert_eq!(sessions.user(&id, 1099).as_deref(), Some("alice"));
        assert_eq!(sessions.user(&id, 1100), None);
        let other = sessions.start("bob", 1000);
        assert!(sessions.end(&other));
        assert_eq!(sessions.user(&other, 1001), None);
        assert!(!sessions.end(&other));
        assert_eq!(
            sessions.user(&SecretString::from("made-up".to_owned()), 1001),
            None
        );
    }
}
