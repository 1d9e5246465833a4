//! Client authentication (RFC 6749 §2.3), done once before any grant runs.
//!
//! Generated secrets are checked with a salted SHA-256 (microseconds). Operator-chosen secrets
//! are argon2id; a successful slow check is remembered for a few minutes, keyed by a keyed
//! digest of the presented secret (never the secret) together with the stored hash it matched,
//! so that hot paths such as refresh grants do not pay an argon2 verify per request, and any
//! change to the client's secret invalidates the entry.
//!
//! A client whose secret the developer portal regenerated with an overlap (`[portal]
//! secret_overlap`) also authenticates with its previous secret until the deadline stored with
//! it ([`Client::previous_secret`]). Only a `$sha256$` previous secret counts (the portal
//! generates nothing else): it is checked afresh on every request, by the service's clock, so
//! nothing cached can outlive the deadline; an argon2 previous hash is ignored.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use rand::rngs::OsRng;
use rand::RngCore as _;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;

use super::error::OAuthError;
use super::params::{AuthorizationHeader, FormParams};
use crate::abuse::client_failures::ClientAuthFailures;
use crate::abuse::rate_limit::bucket_key;
use crate::audit::{rfc3339_secs, Audit, ClientAuthFailure, Event, Origin};
use crate::clock::Clock;
use crate::crypto::password::PasswordHasher;
use crate::crypto::secret::{self, SecretHashKind};
use crate::store::model::Client;
use crate::store::ClientStore;

/// How long a successful argon2 verification of a client secret is trusted (it is dropped
/// at once when the client's stored hash changes). Long, so that guessers flooding the
/// client's verification slot cannot push the real client out of the cache.
const CACHE_TTL_MS: i64 = 24 * 60 * 60 * 1000;
/// How long a wrong secret is remembered.
const WRONG_TTL_MS: i64 = 5 * 60 * 1000;

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
    /// Recent wrong secrets per client (bounded), so repeating one costs no argon2 work.
    wrong: Mutex<HashMap<String, VecDeque<CachedVerification>>>,
    /// One argon2 verification per client at a time.
    gates: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Wrong secrets per (client, address); `None` when not limited.
    failures: Option<ClientAuthFailures>,
    audit: Audit,
}

/// Wrong secrets remembered per client.
const WRONG_SECRETS_KEPT: usize = 16;
/// How long a request waits for its client's verification slot before a 503.
const GATE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
#[error("the client's secret verification slot stayed busy")]
struct ClientGateBusy;

impl ClientAuthenticator {
    pub fn new(
        clients: Arc<dyn ClientStore>,
        hasher: PasswordHasher,
        clock: Arc<dyn Clock>,
        failures: Option<ClientAuthFailures>,
        audit: Audit,
    ) -> Self {
        let mut cache_key = [0u8; 32];
        OsRng.fill_bytes(&mut cache_key);
        Self {
            clients,
            hasher,
            clock,
            cache_key,
            cache: Mutex::new(HashMap::new()),
            wrong: Mutex::new(HashMap::new()),
            gates: Mutex::new(HashMap::new()),
            failures,
            audit,
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

    /// argon2 verification of an operator-chosen secret. Successes are cached; so are recent
    /// wrong secrets, and only one verification per client runs at a time, so a flood of
    /// guesses against one (public) client id costs at most one hashing thread.
    async fn verify_slow(
        &self,
        client: &Client,
        secret: SecretString,
        client_ip: Option<IpAddr>,
    ) -> Result<bool, OAuthError> {
        let digest = self.digest(&client.id, &secret);
        if self.cached(client, &digest) {
            return Ok(true);
        }
        if self.known_wrong(client, &digest) {
            return Ok(false);
        }
        let gate = self.gate(&client.id);
        let Ok(_turn) = tokio::time::timeout(GATE_WAIT, gate.lock()).await else {
            return Err(OAuthError::unavailable(
                "too many requests are waiting; retry later",
                ClientGateBusy,
            ));
        };
        // Whoever held the gate may have settled this very secret, or locked this address
        // (guesses sent at the same moment all wait here).
        if self.cached(client, &digest) {
            return Ok(true);
        }
        if self.known_wrong(client, &digest) || self.locked(client, client_ip) {
            return Ok(false);
        }
        let verified = self.hasher.verify(&client.secret_hash, secret).await?;
        if verified {
            self.remember(client, digest);
        } else {
            self.remember_wrong(client, digest);
        }
        Ok(verified)
    }

    fn gate(&self, client_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        match self.gates.lock() {
            Ok(mut gates) => gates.entry(client_id.to_owned()).or_default().clone(),
            // A poisoned map only loses the serialisation, never correctness.
            Err(_) => Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    fn known_wrong(&self, client: &Client, digest: &[u8; 32]) -> bool {
        let now = self.clock.now_ms();
        let Ok(wrong) = self.wrong.lock() else {
            return false;
        };
        wrong.get(&client.id).is_some_and(|entries| {
            entries.iter().any(|entry| {
                entry.expires_ms > now
                    && entry.secret_hash == client.secret_hash
                    && bool::from(entry.presented_digest.ct_eq(digest))
            })
        })
    }

    fn remember_wrong(&self, client: &Client, digest: [u8; 32]) {
        let entry = CachedVerification {
            secret_hash: client.secret_hash.clone(),
            presented_digest: digest,
            expires_ms: self.clock.now_ms().saturating_add(WRONG_TTL_MS),
        };
        if let Ok(mut wrong) = self.wrong.lock() {
            let entries = wrong.entry(client.id.clone()).or_default();
            if entries.len() >= WRONG_SECRETS_KEPT {
                entries.pop_front();
            }
            entries.push_back(entry);
        }
    }

    /// Whether `secret` is `client`'s secret, by the kind of hash stored for it.
    pub async fn secret_matches(
        &self,
        client: &Client,
        secret: SecretString,
    ) -> Result<bool, OAuthError> {
        self.secret_matches_from(client, secret, None).await
    }

    async fn secret_matches_from(
        &self,
        client: &Client,
        secret: SecretString,
        client_ip: Option<IpAddr>,
    ) -> Result<bool, OAuthError> {
        // First, as it costs one SHA-256 at most: an app still on its previous secret never
        // waits for an argon2 verification of the current one.
        if self.previous_secret_matches(client, &secret) {
            return Ok(true);
        }
        Ok(match secret::kind_of(&client.secret_hash) {
            Some(SecretHashKind::Sha256) => {
                secret::verify_sha256(&client.secret_hash, secret.expose_secret())
            }
            Some(SecretHashKind::Argon2) => self.verify_slow(client, secret, client_ip).await?,
            None => false,
        })
    }

    /// Whether `secret` is `client`'s previous secret and the overlap has not ended (`now <
    /// until`). A previous hash other than `$sha256$` never matches: the portal generates only
    /// those, and a success of the argon2 path would be cached beyond the deadline.
    fn previous_secret_matches(&self, client: &Client, secret: &SecretString) -> bool {
        client.previous_secret.as_ref().is_some_and(|previous| {
            self.clock.now_secs() < previous.until
                && secret::kind_of(&previous.hash) == Some(SecretHashKind::Sha256)
                && secret::verify_sha256(&previous.hash, secret.expose_secret())
        })
    }

    /// The failure counts that guard `client`: only operator-chosen (argon2) secrets are
    /// guarded. A generated 256-bit secret cannot be guessed and costs microseconds to check,
    /// so locking it would only let anyone who shares an address with a public app's users
    /// (carrier NAT, an unlisted proxy) lock them out with ten requests.
    fn failures_for(&self, client: &Client) -> Option<&ClientAuthFailures> {
        self.failures
            .as_ref()
            .filter(|_| secret::kind_of(&client.secret_hash) == Some(SecretHashKind::Argon2))
    }

    /// Whether too many wrong secrets from `client_ip` lock `client` for that address.
    fn locked(&self, client: &Client, client_ip: Option<IpAddr>) -> bool {
        match (self.failures_for(client), client_ip) {
            (Some(failures), Some(ip)) => failures.locked(&client.id, ip, self.clock.now_secs()),
            _ => false,
        }
    }

    /// Returns the client if the credentials are right; `invalid_client` otherwise, also —
    /// without checking the secret — while too many wrong secrets from `client_ip` lock the
    /// client for that address.
    pub async fn authenticate(
        &self,
        presented: PresentedClient,
        origin: &Origin,
    ) -> Result<Arc<Client>, OAuthError> {
        let failed = |id: Option<&str>, reason| {
            self.audit
                .record(origin, id, None, Event::ClientAuthFailed { reason });
            OAuthError::invalid_client()
        };
        let (id, secret) = match presented {
            PresentedClient::Basic { id, secret } => (id, Some(secret)),
            PresentedClient::Body { id, secret } => (id, secret),
            PresentedClient::None | PresentedClient::OtherScheme => {
                return Err(failed(None, ClientAuthFailure::NoCredentials))
            }
        };
        let client = self.clients.find_client(&id).await?;
        let Some(client) = client.filter(|client| !client.disabled) else {
            return Err(failed(Some(id.as_str()), ClientAuthFailure::UnknownClient));
        };
        // RFC 6749 §2.3 / RFC 8414 `none`: a public client is identified by its id alone (the
        // token endpoint lets it use only the grants that allow it). A confidential client's id
        // without a secret authenticates nothing; a secret for a public client is refused
        // rather than ignored, as the app is misconfigured.
        let secret = match (client.public, secret) {
            (true, None) => return Ok(client),
            (true, Some(_)) => {
                return Err(failed(
                    Some(id.as_str()),
                    ClientAuthFailure::SecretForPublicClient,
                ))
            }
            (false, None) => {
                return Err(failed(Some(id.as_str()), ClientAuthFailure::NoCredentials))
            }
            (false, Some(secret)) => secret,
        };
        // Counted per rate-limit bucket: an IPv6 client gains nothing by hopping within its /64.
        let client_ip = origin.ip.map(bucket_key);
        if self.locked(&client, client_ip) {
            return Err(failed(Some(id.as_str()), ClientAuthFailure::Locked));
        }
        let matches = self.secret_matches_from(&client, secret, client_ip).await?;
        if let Some((failures, ip)) = self.failures_for(&client).zip(client_ip) {
            if matches {
                failures.succeeded(&client.id, ip);
            } else if let Some(until) = failures.failed(&client.id, ip, self.clock.now_secs()) {
                tracing::warn!(target: "audit", client_id = %client.id, client_ip = %ip, locked_until = until, "client locked for this address after repeated failed authentications");
                self.audit.record(
                    origin,
                    Some(client.id.as_str()),
                    None,
                    Event::ClientLocked {
                        locked_until: rfc3339_secs(until),
                    },
                );
            }
        }
        if matches {
            Ok(client)
        } else {
            Err(failed(
                Some(client.id.as_str()),
                ClientAuthFailure::WrongSecret,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AuditSettings;
    use crate::clock::ManualClock;
    use crate::config::PasswordHashingSettings;
    use crate::crypto::password::hash_password;
    use crate::metrics::{AuditMetrics, Metrics};
    use crate::store::model::{GrantType, PreviousSecret};
    use crate::store::StoreError;

    const NOW_SECS: i64 = 1_800_000_000;
    const OVERLAP_SECS: i64 = 60;

    /// A client store holding one client.
    struct OneClient(Arc<Client>);

    #[async_trait::async_trait]
    impl ClientStore for OneClient {
        async fn find_client(&self, id: &str) -> Result<Option<Arc<Client>>, StoreError> {
            Ok(Some(self.0.clone()).filter(|client| client.id == id))
        }

        async fn list_clients(&self) -> Result<Vec<Arc<Client>>, StoreError> {
            Ok(vec![self.0.clone()])
        }
    }

    fn cheap_hashing() -> PasswordHashingSettings {
        PasswordHashingSettings {
            argon2_memory_kib: 1024,
            argon2_iterations: 1,
            argon2_parallelism: 1,
            workers: 1,
            queue_capacity: 4,
        }
    }

    /// A confidential client with `secret_hash`, whose `previous_hash` works for another
    /// [`OVERLAP_SECS`].
    fn client(secret_hash: String, previous_hash: Option<String>) -> Client {
        Client {
            id: "app".into(),
            secret_hash,
            public: false,
            redirect_uris: Vec::new(),
            require_consent: false,
            name: None,
            owner: None,
            grant_types: [GrantType::ClientCredentials].into(),
            scopes: Default::default(),
            access_token_validity_secs: None,
            application_access_token_validity_secs: None,
            refresh_token_validity_secs: None,
            introspect: false,
            token_format: None,
            audience: None,
            disabled: false,
            previous_secret: previous_hash.map(|hash| PreviousSecret {
                hash,
                until: NOW_SECS + OVERLAP_SECS,
            }),
        }
    }

    fn authenticator(client: &Client, clock: &Arc<ManualClock>) -> ClientAuthenticator {
        let hasher =
            PasswordHasher::start(&cheap_hashing(), Metrics::new(false).password_pool).unwrap();
        let audit = Audit::start(
            &AuditSettings::off(),
            "node".into(),
            clock.clone(),
            AuditMetrics::unregistered(),
        )
        .unwrap();
        ClientAuthenticator::new(
            Arc::new(OneClient(Arc::new(client.clone()))),
            hasher,
            clock.clone(),
            None,
            audit,
        )
    }

    async fn accepts(auth: &ClientAuthenticator, client: &Client, secret: &str) -> bool {
        auth.secret_matches(client, SecretString::from(secret))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_previous_secret_is_accepted_until_its_deadline_and_the_current_one_always() {
        let client = client(secret::hash_sha256("new"), Some(secret::hash_sha256("old")));
        let clock = Arc::new(ManualClock::new(NOW_SECS * 1000));
        let auth = authenticator(&client, &clock);

        assert!(accepts(&auth, &client, "new").await);
        assert!(accepts(&auth, &client, "old").await);
        assert!(!accepts(&auth, &client, "other").await);

        clock.advance_secs(OVERLAP_SECS - 1);
        assert!(
            accepts(&auth, &client, "old").await,
            "a second before until"
        );

        clock.advance_secs(1);
        assert!(!accepts(&auth, &client, "old").await, "at until");
        assert!(accepts(&auth, &client, "new").await);

        clock.advance_secs(3600);
        assert!(!accepts(&auth, &client, "old").await, "after until");
        assert!(accepts(&auth, &client, "new").await);
    }

    #[tokio::test]
    async fn the_previous_secret_counts_beside_an_argon2_current_one_and_is_never_cached() {
        let current = hash_password("chosen", &cheap_hashing()).unwrap();
        let client = client(current, Some(secret::hash_sha256("old")));
        let clock = Arc::new(ManualClock::new(NOW_SECS * 1000));
        let auth = authenticator(&client, &clock);

        assert!(accepts(&auth, &client, "old").await);
        assert!(accepts(&auth, &client, "chosen").await);
        assert!(accepts(&auth, &client, "old").await);

        clock.advance_secs(OVERLAP_SECS);
        assert!(!accepts(&auth, &client, "old").await);
        assert!(accepts(&auth, &client, "chosen").await);
    }

    #[tokio::test]
    async fn an_argon2_previous_secret_is_ignored() {
        let previous = hash_password("old", &cheap_hashing()).unwrap();
        let client = client(secret::hash_sha256("new"), Some(previous));
        let clock = Arc::new(ManualClock::new(NOW_SECS * 1000));
        let auth = authenticator(&client, &clock);

        assert!(!accepts(&auth, &client, "old").await);
        assert!(accepts(&auth, &client, "new").await);
    }

    #[tokio::test]
    async fn authentication_with_the_previous_secret_gives_the_client() {
        let client = client(secret::hash_sha256("new"), Some(secret::hash_sha256("old")));
        let clock = Arc::new(ManualClock::new(NOW_SECS * 1000));
        let auth = authenticator(&client, &clock);
        let presented = |secret: &str| PresentedClient::Basic {
            id: "app".into(),
            secret: SecretString::from(secret),
        };

        let authenticated = auth
            .authenticate(presented("old"), &Origin::default())
            .await
            .unwrap();
        assert_eq!(authenticated.id, "app");

        clock.advance_secs(OVERLAP_SECS);
        let refused = auth
            .authenticate(presented("old"), &Origin::default())
            .await
            .err()
            .unwrap();
        assert_eq!(refused.code, OAuthError::invalid_client().code);
    }
}
