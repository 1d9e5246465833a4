//! Timing and failure counts for every call into the token database, in one place for both
//! backends: [`measure`] wraps the stores `open_database` opened, and each call reports to the
//! [`StoreObserver`] it was given (the metrics implement it; the store knows no metrics).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::model::{
    AccessTokenRecord, AuthorizationCodeRecord, ConsentRecord, LoginSessionRecord, NewTokens,
    RefreshTokenRecord,
};
use super::{
    Attempt, AttemptStep, DatabaseStores, LockoutPolicy, LockoutStore, PresentedRotation,
    PurgeLimits, PurgedRows, Rate, RateLimitStore, Redemption, Rotation, StoreError, SubjectKind,
    Successor, Take, TokenStore,
};
use crate::crypto::token::{SecretDigest, TokenId};

/// What the stores report about their own work.
pub trait StoreObserver: Send + Sync + 'static {
    /// One call (`op`, e.g. `"rotate_refresh_token"`) took `elapsed`, success or not.
    fn operation(&self, op: &'static str, elapsed: Duration);
    /// A call failed; `kind` is [`StoreError::kind`].
    fn failed(&self, op: &'static str, kind: &'static str);
    /// One group commit wrote `writes` requests' writes in one transaction.
    fn committed_batch(&self, writes: usize);
}

/// Connections a node holds open to the database, for the pool gauge.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionCounts {
    pub idle: usize,
    /// Checked out: running a statement, or kept by a batcher between its batches.
    pub busy: usize,
}

/// A backend with connection pools (PostgreSQL).
pub trait ConnectionPools: Send + Sync + 'static {
    /// Every pool's connections, added up.
    fn connections(&self) -> ConnectionCounts;
}

/// For the CLI and tests: nothing is recorded.
pub struct Unobserved;

impl StoreObserver for Unobserved {
    fn operation(&self, _: &'static str, _: Duration) {}
    fn failed(&self, _: &'static str, _: &'static str) {}
    fn committed_batch(&self, _: usize) {}
}

/// Every kind [`StoreObserver::failed`] reports: [`StoreError::kind`]'s, and `cancelled` for
/// a call its caller gave up on (a client that hung up, a bound that ran out) before the store
/// answered, which is what a slow store looks like from here.
pub const FAILURE_KINDS: [&str; 4] = ["unavailable", "corrupt", "backend", CANCELLED];
const CANCELLED: &str = "cancelled";

impl StoreError {
    /// A bounded name for the kind of failure, for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unavailable(_) => "unavailable",
            Self::Corrupt(_) => "corrupt",
            Self::Backend(_) => "backend",
        }
    }
}

/// The stores of `database`, each call timed and its failures counted by `observer`.
pub(super) fn measure(
    database: DatabaseStores,
    observer: &Arc<dyn StoreObserver>,
) -> DatabaseStores {
    DatabaseStores {
        tokens: Arc::new(Measured::new(database.tokens, observer)),
        lockouts: Arc::new(Measured::new(database.lockouts, observer)),
        rate_limits: database
            .rate_limits
            .map(|store| Arc::new(Measured::new(store, observer)) as Arc<dyn RateLimitStore>),
        ..database
    }
}

/// One call's report, made when it ends or is dropped.
struct Timing<'a> {
    observer: &'a dyn StoreObserver,
    op: &'static str,
    started: Instant,
    /// What to report as the failure; `cancelled` until the call answers.
    failure: Option<&'static str>,
}

impl Drop for Timing<'_> {
    fn drop(&mut self) {
        self.observer.operation(self.op, self.started.elapsed());
        if let Some(kind) = self.failure {
            self.observer.failed(self.op, kind);
        }
    }
}

/// One store (`S` is `dyn TokenStore`, `dyn LockoutStore` or `dyn RateLimitStore`), measured.
struct Measured<S: ?Sized> {
    inner: Arc<S>,
    observer: Arc<dyn StoreObserver>,
}

impl<S: ?Sized> Measured<S> {
    fn new(inner: Arc<S>, observer: &Arc<dyn StoreObserver>) -> Self {
        Self {
            inner,
            observer: observer.clone(),
        }
    }

    async fn timed<T>(
        &self,
        op: &'static str,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        // Reports from its `Drop`, so that a call dropped at its await (the caller went away)
        // still counts, with the time it had taken by then.
        let mut timing = Timing {
            observer: self.observer.as_ref(),
            op,
            started: Instant::now(),
            failure: Some(CANCELLED),
        };
        let result = call.await;
        timing.failure = result.as_ref().err().map(StoreError::kind);
        result
    }
}

#[async_trait]
impl TokenStore for Measured<dyn TokenStore> {
    async fn create_tokens(&self, tokens: NewTokens) -> Result<(), StoreError> {
        let store = &self.inner;
        self.timed("create_tokens", store.create_tokens(tokens))
            .await
    }

    async fn revoke_access_token(&self, id: &TokenId, now: i64) -> Result<bool, StoreError> {
        let store = &self.inner;
        self.timed("revoke_access_token", store.revoke_access_token(id, now))
            .await
    }

    async fn revoke_family(&self, family_id: &TokenId, now: i64) -> Result<bool, StoreError> {
        let store = &self.inner;
        self.timed("revoke_family", store.revoke_family(family_id, now))
            .await
    }

    async fn revoke_subject(
        &self,
        kind: SubjectKind,
        name: &str,
        not_before_ms: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        let store = &self.inner;
        self.timed(
            "revoke_subject",
            store.revoke_subject(kind, name, not_before_ms, now),
        )
        .await
    }

    async fn find_refresh_token(
        &self,
        id: &TokenId,
    ) -> Result<Option<RefreshTokenRecord>, StoreError> {
        let store = &self.inner;
        self.timed("find_refresh_token", store.find_refresh_token(id))
            .await
    }

    async fn find_access_token(
        &self,
        id: &TokenId,
    ) -> Result<Option<AccessTokenRecord>, StoreError> {
        let store = &self.inner;
        self.timed("find_access_token", store.find_access_token(id))
            .await
    }

    async fn rotate_refresh_token(
        &self,
        old: &TokenId,
        now: i64,
        new: NewTokens,
    ) -> Result<Rotation, StoreError> {
        let store = &self.inner;
        self.timed(
            "rotate_refresh_token",
            store.rotate_refresh_token(old, now, new),
        )
        .await
    }

    async fn rotate_presented(
        &self,
        id: &TokenId,
        now: i64,
        successor: Successor,
    ) -> Result<PresentedRotation, StoreError> {
        let store = &self.inner;
        self.timed(
            "rotate_presented",
            store.rotate_presented(id, now, successor),
        )
        .await
    }

    async fn create_authorization_code(
        &self,
        code: AuthorizationCodeRecord,
    ) -> Result<(), StoreError> {
        let store = &self.inner;
        self.timed(
            "create_authorization_code",
            store.create_authorization_code(code),
        )
        .await
    }

    async fn find_authorization_code(
        &self,
        digest: &SecretDigest,
    ) -> Result<Option<AuthorizationCodeRecord>, StoreError> {
        let store = &self.inner;
        self.timed(
            "find_authorization_code",
            store.find_authorization_code(digest),
        )
        .await
    }

    async fn redeem_authorization_code(
        &self,
        digest: &SecretDigest,
        now: i64,
        new: NewTokens,
    ) -> Result<Redemption, StoreError> {
        let store = &self.inner;
        self.timed(
            "redeem_authorization_code",
            store.redeem_authorization_code(digest, now, new),
        )
        .await
    }

    async fn create_login_session(&self, session: LoginSessionRecord) -> Result<(), StoreError> {
        let store = &self.inner;
        self.timed("create_login_session", store.create_login_session(session))
            .await
    }

    async fn find_login_session(
        &self,
        digest: &SecretDigest,
        now: i64,
    ) -> Result<Option<String>, StoreError> {
        let store = &self.inner;
        self.timed("find_login_session", store.find_login_session(digest, now))
            .await
    }

    async fn delete_login_session(&self, digest: &SecretDigest) -> Result<bool, StoreError> {
        let store = &self.inner;
        self.timed("delete_login_session", store.delete_login_session(digest))
            .await
    }

    async fn save_consent(&self, consent: ConsentRecord) -> Result<(), StoreError> {
        let store = &self.inner;
        self.timed("save_consent", store.save_consent(consent))
            .await
    }

    async fn find_consent(
        &self,
        username: &str,
        client_id: &str,
    ) -> Result<Option<String>, StoreError> {
        let store = &self.inner;
        self.timed("find_consent", store.find_consent(username, client_id))
            .await
    }

    async fn purge(&self, limits: PurgeLimits) -> Result<PurgedRows, StoreError> {
        let store = &self.inner;
        self.timed("purge", store.purge(limits)).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let store = &self.inner;
        self.timed("ping", store.ping()).await
    }

    async fn close(&self) {
        self.inner.close().await;
    }
}

#[async_trait]
impl LockoutStore for Measured<dyn LockoutStore> {
    async fn attempt_counted_in(
        &self,
        username: &str,
        source: &str,
        every_address: &'static str,
        step: AttemptStep,
        now: i64,
        policy: LockoutPolicy,
    ) -> Result<Attempt, StoreError> {
        let store = &self.inner;
        self.timed(
            "login_attempt",
            store.attempt_counted_in(username, source, every_address, step, now, policy),
        )
        .await
    }

    async fn clear_failures(&self, username: &str) -> Result<bool, StoreError> {
        let store = &self.inner;
        self.timed("clear_failures", store.clear_failures(username))
            .await
    }
}

#[async_trait]
impl RateLimitStore for Measured<dyn RateLimitStore> {
    async fn take(&self, key: &str, rate: Rate, now_ms: i64) -> Result<Take, StoreError> {
        self.timed("rate_limit_take", self.inner.take(key, rate, now_ms))
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    struct Recorded(Mutex<Vec<(&'static str, Option<&'static str>)>>);

    impl StoreObserver for Recorded {
        fn operation(&self, op: &'static str, _: Duration) {
            self.0.lock().unwrap().push((op, None));
        }
        fn failed(&self, op: &'static str, kind: &'static str) {
            self.0.lock().unwrap().push((op, Some(kind)));
        }
        fn committed_batch(&self, _: usize) {}
    }

    #[tokio::test]
    async fn a_call_dropped_before_it_answers_counts_as_cancelled_with_its_time() {
        let recorded: Arc<Recorded> = Arc::default();
        let observer: Arc<dyn StoreObserver> = recorded.clone();
        let store = Measured::new(Arc::new(()), &observer);

        let never = store.timed("ping", std::future::pending::<Result<(), StoreError>>());
        let gave_up = tokio::time::timeout(Duration::from_millis(10), never).await;
        let answered = store
            .timed("ping", async {
                Err::<(), _>(StoreError::Corrupt("x".into()))
            })
            .await;

        assert!(gave_up.is_err() && answered.is_err());
        assert_eq!(
            *recorded.0.lock().unwrap(),
            vec![
                ("ping", None),
                ("ping", Some("cancelled")),
                ("ping", None),
                ("ping", Some("corrupt")),
            ]
        );
    }
}
