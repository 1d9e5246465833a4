//! Client authentication (RFC 6749 §2.3), done once before any grant runs.
//!
//! Generated secrets are checked with a salted SHA-256 (microseconds). Operator-chosen secrets
//! are argon2id; a successful slow check is remembered for a few minutes, keyed by a keyed
//! digest of the presented secret (never the secret) together with the stored hash it matched,
//! so that hot paths such as refresh grants do not pay an argon2 verify per request, and any
//! change to the client's secret invalidates the entry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rand::rngs::OsRng;
use rand::RngCore as _;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;

use super::error::OAuthError;
use super::params::{AuthorizationHeader, FormParams};
use crate::clock::Clock;
use crate::crypto::password::PasswordHasher;
use crate::crypto::secret::{self, SecretHashKind};
use crate::store::model::Client;
use crate::store::ClientStore;

/// How long a successful argon2 verification of a client secret is trusted.
const CACHE_TTL_MS: i64 = 5 * 60 * 1000;

/// The client credentials a request carries, before they are checked.
pub enum PresentedClient {
    /// HTTP Basic (RFC 6749 §2.3.1).
    Basic {
        id: String,
        secret: SecretString,
    },
    /// `client_id` / `client_secret` in the form body.
    Body {
        id: String,
        secret: Option<SecretString>,
    },
    /// An `Authorization` header with a scheme other than Basic.
    OtherScheme,
    None,
}

impl PresentedClient {
    /// The claimed client id, for logs (it is not secret).
    pub fn claimed_id(&self) -> Option<&str> {
        match self {
            Self::Basic { id, .. } | Self::Body { id, .. } => Some(id),
            Self::OtherScheme | Self::None => None,
        }
    }
}

/// Works out which credentials a request presents. RFC 6749 §2.3: a client must not use more
/// than one authentication method per request. A `client_id` in the body that repeats the
/// Basic id is tolerated, since common client libraries send it.
pub fn presented_client(
    authorization: Option<AuthorizationHeader>,
    form: &FormParams,
) -> Result<PresentedClient, OAuthError> {
    let body_id = form.get("client_id");
    let body_secret = form.get("client_secret");
    match authorization {
        Some(AuthorizationHeader::Basic(basic)) => {
            let repeats_basic_id = body_id.is_none_or(|id| id == basic.client_id);
            if body_secret.is_some() || !repeats_basic_id {
                return Err(OAuthError::invalid_request(
                    "client credentials were sent both in the Authorization header and in the body",
                ));
            }
            Ok(PresentedClient::Basic {
                id: basic.client_id,
                secret: basic.client_secret,
            })
        }
        Some(AuthorizationHeader::OtherScheme) => Ok(PresentedClient::OtherScheme),
        None => match body_id {
            Some(id) => Ok(PresentedClient::Body {
                id: id.to_owned(),
                secret: body_secret.map(|s| SecretString::from(s.to_owned())),
            }),
            None if body_secret.is_some() => Err(OAuthError::invalid_request(
                "client_secret was sent without client_id",
            )),
            None => Ok(PresentedClient::None),
        },
    }
}

struct CachedVerification {
    secret_hash: String,
    presented_digest: [u8; 32],
    expires_ms: i64,
}

pub struct ClientAuthenticator {
    clients: Arc<dyn ClientStore>,
    hasher: PasswordHasher,
    clock: Arc<dyn Clock>,
    cache_key: [u8; 32],
    cache: Mutex<HashMap<String, CachedVerification>>,
}

impl ClientAuthenticator {
    pub fn new(
        clients: Arc<dyn ClientStore>,
        hasher: PasswordHasher,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let mut cache_key = [0u8; 32];
        OsRng.fill_bytes(&mut cache_key);
        Self {
            clients,
            hasher,
            clock,
            cache_key,
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn digest(&self, client_id: &str, secret: &SecretString) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(self.cache_key);
        hasher.update(client_id.as_bytes());
        hasher.update([0u8]);
        hasher.update(secret.expose_secret().as_bytes());
        hasher.finalize().into()
    }

    fn cached(&self, client: &Client, digest: &[u8; 32]) -> bool {
        let now = self.clock.now_ms();
        let Ok(cache) = self.cache.lock() else {
            return false;
        };
        cache.get(&client.id).is_some_and(|entry| {
            entry.expires_ms > now
                && entry.secret_hash == client.secret_hash
                && bool::from(entry.presented_digest.ct_eq(digest))
        })
    }

    fn remember(&self, client: &Client, digest: [u8; 32]) {
        let entry = CachedVerification {
            secret_hash: client.secret_hash.clone(),
            presented_digest: digest,
            expires_ms: self.clock.now_ms().saturating_add(CACHE_TTL_MS),
        };
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(client.id.clone(), entry);
        }
    }

    /// Returns the client if the credentials are right; `invalid_client` otherwise.
    pub async fn authenticate(
        &self,
        presented: PresentedClient,
    ) -> Result<Arc<Client>, OAuthError> {
        let (id, secret) = match presented {
            PresentedClient::Basic { id, secret } => (id, secret),
            PresentedClient::Body {
                id,
                secret: Some(secret),
            } => (id, secret),
            // Only confidential clients exist here: an id without a secret cannot authenticate.
            PresentedClient::Body { secret: None, .. } | PresentedClient::None => {
                return Err(OAuthError::invalid_client())
            }
            PresentedClient::OtherScheme => return Err(OAuthError::invalid_client()),
        };
        let client = self.clients.find_client(&id).await?;
        let Some(client) = client.filter(|client| !client.disabled) else {
            return Err(OAuthError::invalid_client());
        };
        let verified = match secret::kind_of(&client.secret_hash) {
            Some(SecretHashKind::Sha256) => {
                secret::verify_sha256(&client.secret_hash, secret.expose_secret())
            }
            Some(SecretHashKind::Argon2) => {
                let digest = self.digest(&client.id, &secret);
                if self.cached(&client, &digest) {
                    true
                } else {
                    let verified = self.hasher.verify(&client.secret_hash, secret).await?;
                    if verified {
                        self.remember(&client, digest);
                    }
                    verified
                }
            }
            None => false,
        };
        if verified {
            Ok(client)
        } else {
            Err(OAuthError::invalid_client())
        }
    }
}
