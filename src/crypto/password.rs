//! argon2id on a bounded pool of hashing threads.
//!
//! A verification costs ~15 ms of CPU and `m` KiB of memory, so it must never run on the async
//! runtime's threads, and never more at once than there are cores. A fixed set of OS threads
//! takes jobs from a bounded queue; each keeps one work area and reuses it, so memory stays at
//! `workers × m` however many logins arrive. When the queue is full, callers are told at once
//! (`Overloaded`, answered with 503) instead of piling up behind a flood.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use argon2::{Algorithm, Argon2, Block, Params, Version};
use crossbeam_channel::{Receiver, Sender, TrySendError};
use password_hash::{PasswordHash, PasswordHasher as _, SaltString};
use rand::rngs::OsRng;
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq as _;
use tokio::sync::oneshot;

use crate::config::PasswordHashingSettings;
use crate::metrics::PasswordPoolMetrics;

/// Stored hashes asking for more than the config allows are refused rather than allowed to
/// exhaust memory or pin a hashing thread for minutes (a pasted or hand-edited PHC string).
use crate::config::validate::{
    MAX_ARGON2_ITERATIONS as MAX_STORED_ITERATIONS, MAX_ARGON2_MEMORY_KIB as MAX_STORED_MEMORY_KIB,
    MAX_ARGON2_PARALLELISM as MAX_STORED_PARALLELISM,
};

fn check_cost(params: &Params) -> Result<(), HashError> {
    if params.m_cost() > MAX_STORED_MEMORY_KIB
        || params.t_cost() > MAX_STORED_ITERATIONS
        || params.p_cost() > MAX_STORED_PARALLELISM
    {
        return Err(HashError::Malformed(format!(
            "argon2 cost above the limits (m <= {MAX_STORED_MEMORY_KIB} KiB, t <= {MAX_STORED_ITERATIONS}, p <= {MAX_STORED_PARALLELISM})"
        )));
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("too many password verifications are waiting")]
    Overloaded,
    #[error("the stored password hash is not usable: {0}")]
    Malformed(String),
    #[error("invalid argon2 parameters: {0}")]
    Params(String),
    #[error("the password hashing workers have stopped")]
    WorkersGone,
}

struct Job {
    phc: String,
    password: SecretString,
    reply: oneshot::Sender<Result<bool, HashError>>,
}

/// Handle to the hashing pool; cheap to clone. The workers stop when the last handle is dropped.
#[derive(Clone)]
pub struct PasswordHasher {
    inner: Arc<Inner>,
}

struct Inner {
    jobs: Sender<Job>,
    /// Verifications started by a worker (for tests and metrics).
    started: Arc<AtomicU64>,
    /// Verified against when the user does not exist, so that case costs the same time.
    dummy_hash: String,
    metrics: PasswordPoolMetrics,
}

impl PasswordHasher {
    /// Starts `settings.workers` hashing threads.
    pub fn start(
        settings: &PasswordHashingSettings,
        metrics: PasswordPoolMetrics,
    ) -> Result<Self, HashError> {
        let dummy_hash = dummy_phc(settings)?;
        let (jobs, queue) = crossbeam_channel::bounded(settings.queue_capacity);
        let started = Arc::new(AtomicU64::new(0));
        for index in 0..settings.workers.max(1) {
            let queue = queue.clone();
            let started = started.clone();
            let retained_kib = settings.argon2_memory_kib;
            let metrics = metrics.clone();
            std::thread::Builder::new()
                .name(format!("tokengate-argon2-{index}"))
                .spawn(move || run_worker(&queue, retained_kib, &started, &metrics))
                .map_err(|err| {
                    HashError::Params(format!("cannot start a hashing thread: {err}"))
                })?;
        }
        Ok(Self {
            inner: Arc::new(Inner {
                jobs,
                started,
                dummy_hash,
                metrics,
            }),
        })
    }

    /// Verifies `password` against a stored argon2 PHC string on the pool.
    pub async fn verify(&self, phc: &str, password: SecretString) -> Result<bool, HashError> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            phc: phc.to_owned(),
            password,
            reply,
        };
        // Counted before the send: a worker may take the job before `try_send` returns.
        self.inner.metrics.queued();
        match self.inner.jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.inner.metrics.dequeued();
                self.inner.metrics.shed();
                return Err(HashError::Overloaded);
            }
            Err(TrySendError::Disconnected(_)) => {
                self.inner.metrics.dequeued();
                self.inner.metrics.shed();
                return Err(HashError::WorkersGone);
            }
        }
        answer.await.map_err(|_| HashError::WorkersGone)?
    }

    /// How many verifications the workers have started since the pool began.
    pub fn verifications_started(&self) -> u64 {
        self.inner.started.load(Ordering::Relaxed)
    }

    /// Spends the time of one verification and always fails; for unknown users.
    pub async fn verify_dummy(&self, password: SecretString) -> Result<bool, HashError> {
        let dummy = self.inner.dummy_hash.clone();
        self.verify(&dummy, password).await.map(|_| false)
    }
}

fn run_worker(
    queue: &Receiver<Job>,
    retained_kib: u32,
    started: &AtomicU64,
    metrics: &PasswordPoolMetrics,
) {
    let mut work_area: Vec<Block> = Vec::new();
    let retained_blocks = usize::try_from(retained_kib).unwrap_or(0);
    while let Ok(job) = queue.recv() {
        metrics.dequeued();
        // The caller went away (client disconnected): don't spend 15 ms on nobody.
        if job.reply.is_closed() {
            continue;
        }
        started.fetch_add(1, Ordering::Relaxed);
        let began = std::time::Instant::now();
        // A stored hash with a larger `m` than new hashes get (made before the parameters were
        // changed, or pasted) is checked in an area of its own, freed once the caller has its
        // answer: the kept area neither grows to its size for good nor is given up.
        let mut one_off = Vec::new();
        let area = if blocks_needed(&job.phc).is_some_and(|needed| needed > retained_blocks) {
            &mut one_off
        } else {
            &mut work_area
        };
        let outcome = verify_with(&job.phc, job.password.expose_secret(), area);
        metrics.verified(matches!(outcome, Ok(true)), began.elapsed());
        let _ = job.reply.send(outcome);
        drop(one_off);
    }
}

/// The work area a PHC string's verification takes, in argon2 blocks (1 KiB each); `None` if it
/// does not parse (its verification then fails before using any).
fn blocks_needed(phc: &str) -> Option<usize> {
    let parsed = PasswordHash::new(phc).ok()?;
    Params::try_from(&parsed)
        .ok()
        .map(|params| params.block_count())
}

/// Verifies `password` against an argon2 PHC string, reusing `work_area` for the memory blocks.
pub fn verify_with(
    phc: &str,
    password: &str,
    work_area: &mut Vec<Block>,
) -> Result<bool, HashError> {
    let malformed = |what: &str| HashError::Malformed(what.to_owned());
    let parsed = PasswordHash::new(phc).map_err(|err| HashError::Malformed(err.to_string()))?;
    let algorithm =
        Algorithm::try_from(parsed.algorithm).map_err(|_| malformed("not an argon2 hash"))?;
    let version = match parsed.version {
        Some(number) => {
            Version::try_from(number).map_err(|_| malformed("unknown argon2 version"))?
        }
        None => Version::default(),
    };
    let params = Params::try_from(&parsed).map_err(|err| HashError::Malformed(err.to_string()))?;
    check_cost(&params)?;
    let salt = parsed.salt.ok_or_else(|| malformed("no salt"))?;
    let mut salt_buffer = [0u8; 64];
    let salt = salt
        .decode_b64(&mut salt_buffer)
        .map_err(|_| malformed("salt is not base64"))?;
    let expected = parsed.hash.ok_or_else(|| malformed("no hash"))?;
    let mut computed = vec![0u8; expected.len()];
    let needed = params.block_count();
    if work_area.len() < needed {
        // Exactly: `resize` alone may double the capacity, and untouched capacity still counts
        // against the memory a worker is allowed.
        work_area.reserve_exact(needed.saturating_sub(work_area.len()));
        work_area.resize(needed, Block::default());
    }
    Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(
            password.as_bytes(),
            salt,
            &mut computed,
            work_area.as_mut_slice(),
        )
        .map_err(|err| HashError::Malformed(err.to_string()))?;
    Ok(computed.ct_eq(expected.as_bytes()).into())
}

/// Hashes a new password as an argon2id PHC string with the configured parameters.
pub fn hash_password(
    password: &str,
    settings: &PasswordHashingSettings,
) -> Result<String, HashError> {
    let params = configured_params(settings)?;
    let salt = SaltString::generate(&mut OsRng);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|err| HashError::Params(err.to_string()))
}

/// The argon2 parameters new hashes (and the dummy) use.
fn configured_params(settings: &PasswordHashingSettings) -> Result<Params, HashError> {
    Params::new(
        settings.argon2_memory_kib,
        settings.argon2_iterations,
        settings.argon2_parallelism,
        None,
    )
    .map_err(|err| HashError::Params(err.to_string()))
}

/// A PHC string with the configured parameters, a random salt and a random output: verifying a
/// password against it costs one verification, as for a real hash, and never succeeds. Written
/// out rather than hashed, so that starting the server does not spend an argon2 run on it (half
/// of the time from start to the first token).
fn dummy_phc(settings: &PasswordHashingSettings) -> Result<String, HashError> {
    let params = configured_params(settings)?;
    let salt = SaltString::generate(&mut OsRng);
    let mut output = [0_u8; Params::DEFAULT_OUTPUT_LEN];
    rand::RngCore::fill_bytes(&mut OsRng, &mut output);
    let hash = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: (&params)
            .try_into()
            .map_err(|err: password_hash::Error| HashError::Params(err.to_string()))?,
        salt: Some(salt.as_salt()),
        hash: Some(
            password_hash::Output::new(&output)
                .map_err(|err| HashError::Params(err.to_string()))?,
        ),
    };
    Ok(hash.to_string())
}

/// Whether `phc` is an argon2 hash made with other parameters than `settings` gives new hashes
/// and the dummy hash. Verifying it takes another time than a name that does not exist (checked
/// against the dummy), so a login's duration tells such users apart until their passwords are
/// set again.
pub fn made_with_other_params(phc: &str, settings: &PasswordHashingSettings) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    let same_kind = parsed.algorithm == Algorithm::Argon2id.ident()
        && parsed.version.unwrap_or(u32::from(Version::default())) == u32::from(Version::V0x13);
    Params::try_from(&parsed).is_ok_and(|params| {
        !same_kind
            || (params.m_cost(), params.t_cost(), params.p_cost())
                != (
                    settings.argon2_memory_kib,
                    settings.argon2_iterations,
                    settings.argon2_parallelism,
                )
    })
}

/// Whether `phc` parses as an argon2 hash we can verify (for `check-config`).
pub fn check_phc(phc: &str) -> Result<(), HashError> {
    let parsed = PasswordHash::new(phc).map_err(|err| HashError::Malformed(err.to_string()))?;
    Algorithm::try_from(parsed.algorithm)
        .map_err(|_| HashError::Malformed("not an argon2 hash".into()))?;
    let params = Params::try_from(&parsed).map_err(|err| HashError::Malformed(err.to_string()))?;
    check_cost(&params)?;
    if parsed.salt.is_none() || parsed.hash.is_none() {
        return Err(HashError::Malformed("no salt or no hash".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap_settings() -> PasswordHashingSettings {
        PasswordHashingSettings {
            argon2_memory_kib: 1024,
            argon2_iterations: 1,
            argon2_parallelism: 1,
            workers: 1,
            queue_capacity: 4,
        }
    }

    #[test]
    fn a_hash_verifies_its_password_only_and_reuses_the_work_area() {
        let phc = hash_password("correct horse", &cheap_settings()).unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"));
        let mut work_area = Vec::new();
        assert!(verify_with(&phc, "correct horse", &mut work_area).unwrap());
        assert_eq!(work_area.len(), 1024);
        assert!(!verify_with(&phc, "wrong", &mut work_area).unwrap());
        check_phc(&phc).unwrap();
    }

    #[test]
    fn stored_hashes_beyond_the_cost_limits_are_refused() {
        let costly = "$argon2id$v=19$m=1024,t=5000,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA";
        assert!(matches!(check_phc(costly), Err(HashError::Malformed(_))));
        assert!(verify_with(costly, "x", &mut Vec::new()).is_err());
    }

    #[test]
    fn malformed_hashes_are_errors_not_panics() {
        let mut work_area = Vec::new();
        for bad in [
            "",
            "$argon2id$",
            "plain",
            "$sha256$abc$def",
            "$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHQ",
        ] {
            assert!(verify_with(bad, "x", &mut work_area).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_hash_made_with_other_parameters_is_told_apart() {
        let settings = cheap_settings();
        let current = dummy_phc(&settings).unwrap();
        let older = dummy_phc(&PasswordHashingSettings {
            argon2_memory_kib: 2048,
            ..cheap_settings()
        })
        .unwrap();

        let other_kind = current.replacen("$argon2id$", "$argon2i$", 1);

        assert!(!made_with_other_params(&current, &settings));
        assert!(made_with_other_params(&older, &settings));
        assert!(made_with_other_params(&other_kind, &settings));
        assert!(!made_with_other_params("not a hash", &settings));
    }

    #[test]
    fn the_dummy_hash_has_the_configured_cost_and_matches_no_password() {
        let settings = cheap_settings();
        let dummy = dummy_phc(&settings).unwrap();
        check_phc(&dummy).unwrap();
        let parsed = PasswordHash::new(&dummy).unwrap();
        let params = Params::try_from(&parsed).unwrap();
        assert_eq!(
            (params.m_cost(), params.t_cost(), params.p_cost()),
            (
                settings.argon2_memory_kib,
                settings.argon2_iterations,
                settings.argon2_parallelism
            )
        );
        assert_eq!(parsed.hash.unwrap().len(), Params::DEFAULT_OUTPUT_LEN);
        // A full verification runs (Ok) and fails, as for a real hash and a wrong password.
        assert!(!verify_with(&dummy, "pw", &mut Vec::new()).unwrap());
        assert_ne!(
            dummy,
            dummy_phc(&settings).unwrap(),
            "a fresh salt each time"
        );
    }

    #[tokio::test]
    async fn the_pool_verifies_and_the_dummy_always_fails() {
        let hasher = PasswordHasher::start(
            &cheap_settings(),
            crate::metrics::Metrics::new(false).password_pool,
        )
        .unwrap();
        let phc = hash_password("pw", &cheap_settings()).unwrap();
        assert!(hasher.verify(&phc, SecretString::from("pw")).await.unwrap());
        assert!(!hasher.verify(&phc, SecretString::from("no")).await.unwrap());
        assert!(!hasher.verify_dummy(SecretString::from("pw")).await.unwrap());
    }

    #[tokio::test]
    async fn a_hash_needing_more_memory_than_configured_is_checked_in_an_area_of_its_own() {
        let settings = cheap_settings();
        let hasher =
            PasswordHasher::start(&settings, crate::metrics::Metrics::new(false).password_pool)
                .unwrap();
        let larger = PasswordHashingSettings {
            argon2_memory_kib: 4096,
            ..cheap_settings()
        };
        let old = hash_password("old", &larger).unwrap();
        let current = hash_password("new", &settings).unwrap();

        assert_eq!(blocks_needed(&old), Some(4096));
        assert_eq!(blocks_needed("not a hash"), None);
        assert!(hasher
            .verify(&old, SecretString::from("old"))
            .await
            .unwrap());
        assert!(!hasher
            .verify(&old, SecretString::from("new"))
            .await
            .unwrap());
        assert!(hasher
            .verify(&current, SecretString::from("new"))
            .await
            .unwrap());
    }
}
