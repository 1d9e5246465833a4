//! JWT signing keys (RFC 9068 access tokens) and the JWKS document (RFC 7517).
//!
//! Keys are PKCS#8 PEM files in one folder; the key type (Ed25519, P-256, RSA) decides the
//! algorithm (EdDSA, ES256, RS256) and the key id is the key's RFC 7638 thumbprint. A key's
//! activation time is its file's modification time. The newest key of the configured algorithm
//! signs. An older key stops signing when a newer key is activated; it stays published in the
//! JWKS until every token it can have signed has expired (its successor's activation + the
//! longest access-token lifetime), then drops out. Rotation is therefore: add a key file
//! (`tokengate keys rotate` does), and delete old files whenever convenient.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use ed25519_dalek::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _};
use jwt_compact::alg::{Ed25519, Es256, Rsa};
use jwt_compact::jwk::JsonWebKey;
use jwt_compact::{AlgorithmExt as _, Claims, Header, UntrustedToken};
use rand::rngs::OsRng;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::config::JwtAlgorithm;
use crate::metrics::ReloadMetrics;

/// The `typ` of RFC 9068 access tokens.
pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";
const RSA_BITS: usize = 2048;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{}: {message}", path.display())]
    File { path: PathBuf, message: String },
    #[error("signing failed: {0}")]
    Signing(String),
    #[error("no signing key for {0}")]
    NoSigningKey(&'static str),
}

fn file_error(path: &Path, message: impl Into<String>) -> KeyError {
    KeyError::File {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

enum KeyMaterial {
    Ed25519(ed25519_dalek::SigningKey),
    Es256(p256::ecdsa::SigningKey),
    Rs256(Box<rsa::RsaPrivateKey>),
}

impl KeyMaterial {
    fn from_pem(pem: &str) -> Option<Self> {
        if let Ok(key) = ed25519_dalek::SigningKey::from_pkcs8_pem(pem) {
            return Some(Self::Ed25519(key));
        }
        if let Ok(key) = p256::ecdsa::SigningKey::from_pkcs8_pem(pem) {
            return Some(Self::Es256(key));
        }
        if let Ok(key) = rsa::RsaPrivateKey::from_pkcs8_pem(pem) {
            return Some(Self::Rs256(Box::new(key)));
        }
        None
    }

    fn generate(algorithm: JwtAlgorithm) -> Result<Self, KeyError> {
        Ok(match algorithm {
            JwtAlgorithm::EdDsa => Self::Ed25519(ed25519_dalek::SigningKey::generate(&mut OsRng)),
            JwtAlgorithm::Es256 => Self::Es256(p256::ecdsa::SigningKey::random(&mut OsRng)),
            JwtAlgorithm::Rs256 => Self::Rs256(Box::new(
                rsa::RsaPrivateKey::new(&mut OsRng, RSA_BITS)
                    .map_err(|err| KeyError::Signing(err.to_string()))?,
            )),
        })
    }

    fn to_pem(&self) -> Result<String, KeyError> {
        let pem = match self {
            Self::Ed25519(key) => key.to_pkcs8_pem(Default::default()),
            Self::Es256(key) => key.to_pkcs8_pem(Default::default()),
            Self::Rs256(key) => key.to_pkcs8_pem(Default::default()),
        };
        pem.map(|pem| pem.to_string())
            .map_err(|err| KeyError::Signing(err.to_string()))
    }

    fn algorithm(&self) -> JwtAlgorithm {
        match self {
            Self::Ed25519(_) => JwtAlgorithm::EdDsa,
            Self::Es256(_) => JwtAlgorithm::Es256,
            Self::Rs256(_) => JwtAlgorithm::Rs256,
        }
    }

    /// The public JWK (no private parts) as jwt-compact encodes it, and its RFC 7638
    /// thumbprint (the key id).
    fn public_jwk(&self) -> (serde_json::Value, String) {
        fn encode(jwk: &JsonWebKey<'_>) -> (serde_json::Value, String) {
            let thumbprint = URL_SAFE_NO_PAD.encode(jwk.thumbprint::<Sha256>());
            (serde_json::to_value(jwk).unwrap_or_default(), thumbprint)
        }
        match self {
            Self::Ed25519(key) => encode(&JsonWebKey::from(&key.verifying_key())),
            Self::Es256(key) => encode(&JsonWebKey::from(key.verifying_key())),
            Self::Rs256(key) => encode(&JsonWebKey::from(&rsa::RsaPublicKey::from(key.as_ref()))),
        }
    }
}

/// One signing key from the folder.
pub struct SigningKey {
    pub kid: String,
    pub algorithm: JwtAlgorithm,
    /// Unix seconds: the file's modification time.
    pub activated_at: i64,
    /// Nanoseconds of the modification time, to order keys added within one second.
    activated_nanos: i64,
    pub path: PathBuf,
    jwk: serde_json::Value,
    material: KeyMaterial,
}

/// The claims of an RFC 9068 access token besides `exp` and `iat`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessTokenClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub client_id: String,
    pub scope: String,
    pub jti: String,
}

/// The claims of a JWT access token of ours (see [`read_access_token`]).
#[derive(Debug, Clone)]
pub struct JwtAccessToken {
    pub claims: AccessTokenClaims,
    pub issued_at: i64,
    pub expires_at: i64,
}

fn timestamp(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).unwrap_or_default()
}

impl SigningKey {
    /// `seen_at`: when this process first saw the file appear, as (seconds, nanoseconds);
    /// a file copied in with an old modification time still counts as added then.
    fn load(path: &Path, seen_at: Option<(i64, i64)>) -> Result<Self, KeyError> {
        let pem = std::fs::read_to_string(path)
            .map_err(|err| file_error(path, format!("cannot read: {err}")))?;
        let material = KeyMaterial::from_pem(&pem).ok_or_else(|| {
            file_error(path, "not a PKCS#8 PEM Ed25519, P-256 or RSA private key")
        })?;
        if let KeyMaterial::Rs256(key) = &material {
            if rsa::traits::PublicKeyParts::size(key.as_ref()) * 8 < RSA_BITS {
                return Err(file_error(path, "RSA keys must have at least 2048 bits"));
            }
        }
        let meta = std::fs::metadata(path).map_err(|err| file_error(path, err.to_string()))?;
        let (jwk, kid) = material.public_jwk();
        // A clock-skewed future mtime must not make a key the newest for ever.
        let now = crate::clock::Clock::now_secs(&crate::clock::SystemClock);
        let modified = (meta.mtime().min(now), meta.mtime_nsec());
        let (activated_at, activated_nanos) = seen_at.map_or(modified, |seen| seen.max(modified));
        Ok(Self {
            kid,
            algorithm: material.algorithm(),
            activated_at,
            activated_nanos,
            path: path.to_path_buf(),
            jwk,
            material,
        })
    }

    /// Signs an RFC 9068 access token.
    pub fn sign(
        &self,
        claims: AccessTokenClaims,
        issued_at: i64,
        expires_at: i64,
    ) -> Result<String, KeyError> {
        let header = Header::empty()
            .with_key_id(self.kid.clone())
            .with_token_type(ACCESS_TOKEN_TYPE);
        let mut claims = Claims::new(claims);
        claims.issued_at = Some(timestamp(issued_at));
        claims.expiration = Some(timestamp(expires_at));
        let signed = match &self.material {
            KeyMaterial::Ed25519(key) => Ed25519.token(&header, &claims, key),
            KeyMaterial::Es256(key) => Es256.token(&header, &claims, key),
            KeyMaterial::Rs256(key) => Rsa::rs256().token(&header, &claims, key.as_ref()),
        };
        signed.map_err(|err| KeyError::Signing(err.to_string()))
    }
}

/// Keys by state (see [`KeySet::counts`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyCounts {
    pub active: usize,
    pub pending: usize,
    pub published: usize,
    pub retired: usize,
}

/// Every key in the folder, oldest first.
pub struct KeySet {
    keys: Vec<SigningKey>,
    /// How long a new key is published before it signs (in a cluster, until every node names
    /// it in its JWKS); 0 for a single node.
    activation_delay_secs: i64,
}

impl KeySet {
    /// Reads every `*.pem` file in `dir`; activation times are the files' modification times.
    pub fn load(dir: &Path) -> Result<Self, KeyError> {
        Self::load_seen(dir, &HashMap::new())
    }

    /// As [`KeySet::load`], with the times this process first saw some of the files.
    fn load_seen(dir: &Path, seen: &HashMap<PathBuf, (i64, i64)>) -> Result<Self, KeyError> {
        let entries = std::fs::read_dir(dir)
            .map_err(|err| file_error(dir, format!("cannot read the folder: {err}")))?;
        let mut keys = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|ext| ext == "pem") {
                let seen_at = seen.get(&path).copied();
                keys.push(SigningKey::load(&path, seen_at)?);
            }
        }
        keys.sort_by(|a, b| {
            (a.activated_at, a.activated_nanos, &a.path).cmp(&(
                b.activated_at,
                b.activated_nanos,
                &b.path,
            ))
        });
        Ok(Self {
            keys,
            activation_delay_secs: 0,
        })
    }

    /// Every key, oldest first.
    pub fn all(&self) -> &[SigningKey] {
        &self.keys
    }

    /// The key of `algorithm` that signs at `now`: the newest one, once it has been published
    /// for the activation delay. Until then the one before it signs, or, when every key is that
    /// young (a node's first minutes), the oldest.
    pub fn signer(&self, algorithm: JwtAlgorithm, now: i64) -> Option<&SigningKey> {
        let mut of_algorithm = self.keys.iter().filter(|key| key.algorithm == algorithm);
        if self.activation_delay_secs == 0 {
            return of_algorithm.next_back();
        }
        let oldest = of_algorithm.clone().next();
        of_algorithm
            .rev()
            .find(|key| key.activated_at.saturating_add(self.activation_delay_secs) <= now)
            .or(oldest)
    }

    /// Keys whose tokens may still be live at `now`: every key that is the newest of its
    /// algorithm (one of them signs; the others may have signed until the configured
    /// algorithm changed), and every older key until `max_validity_secs` after a newer key of
    /// its algorithm was activated.
    pub fn published(&self, now: i64, max_validity_secs: i64) -> Vec<&SigningKey> {
        self.keys
            .iter()
            .enumerate()
            .filter(|(index, key)| {
                let successor = self
                    .keys
                    .iter()
                    .skip(index + 1)
                    .find(|newer| newer.algorithm == key.algorithm);
                match successor {
                    // It signs until its successor has been published for the activation
                    // delay; its tokens end by then + the lifetime.
                    Some(successor) => {
                        now < successor
                            .activated_at
                            .saturating_add(self.activation_delay_secs)
                            .saturating_add(max_validity_secs)
                    }
                    None => true,
                }
            })
            .map(|(_, key)| key)
            .collect()
    }

    /// How many keys are in each state at `now`, for `tokengate_signing_keys`: the one that
    /// signs for `algorithm` is active; newer keys of that algorithm still in their activation
    /// delay are pending; other published keys are published; keys no longer published are
    /// retired (their files may be deleted).
    pub fn counts(&self, algorithm: JwtAlgorithm, now: i64, max_validity_secs: i64) -> KeyCounts {
        let signer = self.signer(algorithm, now);
        let published = self.published(now, max_validity_secs);
        let signer_index =
            signer.and_then(|signer| self.keys.iter().position(|key| std::ptr::eq(key, signer)));
        let mut counts = KeyCounts::default();
        for (index, key) in self.keys.iter().enumerate() {
            if Some(index) == signer_index {
                counts.active += 1;
            } else if !published.iter().any(|shown| std::ptr::eq(*shown, key)) {
                counts.retired += 1;
            } else if key.algorithm == algorithm && signer_index.is_some_and(|at| index > at) {
                counts.pending += 1;
            } else {
                counts.published += 1;
            }
        }
        counts
    }

    /// The public JWKs of the published keys, as the JWKS lists them.
    pub fn published_jwks(&self, now: i64, max_validity_secs: i64) -> Vec<serde_json::Value> {
        self.published(now, max_validity_secs)
            .into_iter()
            .map(|key| {
                let mut jwk = key.jwk.clone();
                if let Some(object) = jwk.as_object_mut() {
                    object.insert("kid".into(), key.kid.clone().into());
                    object.insert("alg".into(), key.algorithm.as_str().into());
                    object.insert("use".into(), "sig".into());
                }
                jwk
            })
            .collect()
    }
}

/// Reads an access token's claims *without* checking its signature. Callers trust them only
/// once the whole token matched the digest recorded when it was issued: that proves it is the
/// very token this service issued, whichever node of a cluster signed it, with a key only that
/// node holds. `None` for anything that is not an RFC 9068 access token.
pub fn read_access_token(token: &str) -> Option<JwtAccessToken> {
    let untrusted = UntrustedToken::new(token).ok()?;
    if untrusted.header().token_type.as_deref() != Some(ACCESS_TOKEN_TYPE) {
        return None;
    }
    let claims = untrusted
        .deserialize_claims_unchecked::<AccessTokenClaims>()
        .ok()?;
    Some(JwtAccessToken {
        issued_at: claims.issued_at?.timestamp(),
        expires_at: claims.expiration?.timestamp(),
        claims: claims.custom,
    })
}

/// Writes a new key of `algorithm` into `dir` (owner-readable only); it signs from now on.
pub fn generate_key(dir: &Path, algorithm: JwtAlgorithm, now_ms: i64) -> Result<PathBuf, KeyError> {
    use std::io::Write as _;
    crate::secret_files::create_private_dir_all(dir)
        .map_err(|err| file_error(dir, format!("cannot create the folder: {err}")))?;
    let material = KeyMaterial::generate(algorithm)?;
    let pem = material.to_pem()?;
    // The time orders the files for a reader; the random part keeps two keys made in the same
    // millisecond (or by two nodes) apart.
    let suffix: u32 = rand::Rng::gen(&mut OsRng);
    let name = format!(
        "{now_ms}-{}-{suffix:08x}.pem",
        algorithm.as_str().to_ascii_lowercase()
    );
    let path = dir.join(name);
    let mut file = crate::secret_files::create_private_file(&path)
        .map_err(|err| file_error(&path, format!("cannot create: {err}")))?;
    file.write_all(pem.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|err| file_error(&path, format!("cannot write: {err}")))?;
    Ok(path)
}

/// Makes sure a key of `algorithm` exists in `dir`; returns the new key's path if it made one.
pub fn ensure_signing_key(
    dir: &Path,
    algorithm: JwtAlgorithm,
    now_ms: i64,
) -> Result<Option<PathBuf>, KeyError> {
    let has_key = |keys: KeySet| keys.all().iter().any(|key| key.algorithm == algorithm);
    if dir.exists() && has_key(KeySet::load(dir)?) {
        return Ok(None);
    }
    generate_key(dir, algorithm, now_ms).map(Some)
}

type FolderStamp = Vec<(PathBuf, i64, u64)>;

/// Sets a file's modification time to `now_ms`; best effort (a read-only folder keeps the
/// in-memory order for this process only).
fn touch(path: &Path, now_ms: i64) {
    let when = std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(now_ms).unwrap_or(0));
    let touched = std::fs::File::options()
        .write(true)
        .open(path)
        .and_then(|file| file.set_modified(when));
    if let Err(err) = touched {
        tracing::warn!(file = %path.display(), error = %err, "could not mark a new signing key as added now");
    }
}

fn folder_stamp(dir: &Path) -> FolderStamp {
    let mut stamp: FolderStamp = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|entry| {
                    let meta = entry.metadata().ok()?;
                    Some((entry.path(), meta.mtime(), meta.size()))
                })
                .collect()
        })
        .unwrap_or_default();
    stamp.sort();
    stamp
}

/// The key set of a folder, re-read when files are added, changed or removed.
pub struct KeyRing {
    dir: PathBuf,
    /// See [`KeySet`]'s `activation_delay_secs`.
    activation_delay_secs: i64,
    current: RwLock<(FolderStamp, Arc<KeySet>)>,
    /// Public JWKs the other nodes of a cluster sign with (see `key_sharing`).
    elsewhere: RwLock<Arc<Vec<serde_json::Value>>>,
    /// Files that appeared while running, and when: they activate no earlier than that.
    seen: std::sync::Mutex<HashMap<PathBuf, (i64, i64)>>,
    reloads: ReloadMetrics,
}

impl KeyRing {
    /// `activation_delay_secs`: how long a new key is published before it signs. Re-reads
    /// of the folder are counted in `reloads`.
    pub fn open(
        dir: &Path,
        activation_delay_secs: i64,
        reloads: ReloadMetrics,
    ) -> Result<Arc<Self>, KeyError> {
        let stamp = folder_stamp(dir);
        let mut keys = KeySet::load(dir)?;
        keys.activation_delay_secs = activation_delay_secs;
        Ok(Arc::new(Self {
            dir: dir.to_path_buf(),
            activation_delay_secs,
            current: RwLock::new((stamp, Arc::new(keys))),
            elsewhere: RwLock::new(Arc::new(Vec::new())),
            seen: std::sync::Mutex::new(HashMap::new()),
            reloads,
        }))
    }

    pub fn keys(&self) -> Arc<KeySet> {
        match self.current.read() {
            Ok(guard) => guard.1.clone(),
            Err(poisoned) => poisoned.into_inner().1.clone(),
        }
    }

    /// Sets the public JWKs the cluster's nodes publish (this node's own may be among them).
    pub fn set_published_elsewhere(&self, keys: Vec<serde_json::Value>) {
        if let Ok(mut guard) = self.elsewhere.write() {
            *guard = Arc::new(keys);
        }
    }

    /// The JWKS document (RFC 7517 §5): this node's published keys, then those of the other
    /// nodes of a cluster.
    pub fn jwks(&self, now: i64, max_validity_secs: i64) -> serde_json::Value {
        let mut keys = self.keys().published_jwks(now, max_validity_secs);
        let elsewhere = match self.elsewhere.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        for jwk in elsewhere.iter() {
            let kid = jwk.get("kid");
            if !keys.iter().any(|own| own.get("kid") == kid) {
                keys.push(jwk.clone());
            }
        }
        serde_json::json!({ "keys": keys })
    }

    /// Re-reads the folder if files were added, changed or removed (blocking file I/O).
    pub fn reload_if_changed(&self) {
        let stamp = folder_stamp(&self.dir);
        let unchanged = self
            .current
            .read()
            .map(|guard| guard.0 == stamp)
            .unwrap_or(false);
        if unchanged {
            return;
        }
        let known: Vec<PathBuf> = self
            .current
            .read()
            .map(|guard| guard.0.iter().map(|(path, _, _)| path.clone()).collect())
            .unwrap_or_default();
        let now_ms = crate::clock::Clock::now_ms(&crate::clock::SystemClock);
        let seen = match self.seen.lock() {
            Ok(mut seen) => {
                for (path, modified, _) in &stamp {
                    if !known.contains(path) {
                        seen.entry(path.clone()).or_insert((
                            now_ms.div_euclid(1000),
                            now_ms.rem_euclid(1000) * 1_000_000,
                        ));
                        // Persist "appeared now" in the file itself, so a restart (or another
                        // reader of the folder) orders this key the same way.
                        if *modified < now_ms.div_euclid(1000) {
                            touch(path, now_ms);
                        }
                    }
                }
                seen.clone()
            }
            Err(_) => HashMap::new(),
        };
        match KeySet::load_seen(&self.dir, &seen) {
            Ok(mut keys) => {
                keys.activation_delay_secs = self.activation_delay_secs;
                self.reloads.reloaded(true);
                tracing::info!(folder = %self.dir.display(), keys = keys.keys.len(), "signing keys reloaded");
                if let Ok(mut guard) = self.current.write() {
                    *guard = (stamp, Arc::new(keys));
                }
            }
            Err(err) => {
                self.reloads.reloaded(false);
                tracing::error!(error = %err, "signing keys not reloaded; keeping the previous set");
                if let Ok(mut guard) = self.current.write() {
                    guard.0 = stamp;
                }
            }
        }
    }

    /// Re-reads the folder every `interval` until the ring is dropped.
    pub fn watch(self: &Arc<Self>, interval: Duration) {
        crate::reload::periodically(self, interval, Self::reload_if_changed);
    }
}
