//! Persistence behind traits: one trait per aggregate, one implementation per backend, chosen
//! once at startup by [`open_token_store`].

pub mod model;
pub mod postgres;
pub mod sqlite;
pub mod toml_file;

use std::sync::Arc;

use async_trait::async_trait;

use crate::config::{Settings, TokenStoreSettings};
use crate::crypto::token::TokenId;
use model::{AccessTokenRecord, Client, NewTokens, RefreshTokenRecord, User};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend cannot be reached or is shutting down; the request may be retried.
    #[error("token store unavailable: {0}")]
    Unavailable(String),
    /// A stored row does not decode; never expected, reported rather than panicking.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    #[error("token store error: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// What the janitor may delete (see [`TokenStore::purge`]).
#[derive(Debug, Clone, Copy)]
pub struct PurgeLimits {
    pub expired_before: i64,
    pub revoked_before: i64,
    /// Failed-login rows whose window started before this and that hold no current lock.
    pub failures_before: i64,
    pub now: i64,
    pub batch: u32,
}

/// Outcome of redeeming a refresh token under rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    /// The old token was marked spent and the new tokens recorded, in one transaction.
    Rotated,
    /// The old token was already spent or revoked when the write ran (e.g. a concurrent
    /// redemption won the race); nothing was written.
    AlreadySpent,
}

/// Issued tokens, keyed by their time-ordered id, holding only digests of their secrets.
#[async_trait]
pub trait TokenStore: Send + Sync + 'static {
    /// Records the tokens of one grant. Returns once they are durable (committed).
    async fn create_tokens(&self, tokens: NewTokens) -> Result<(), StoreError>;

    /// RFC 7009: revokes one access token. `Ok(false)` if it was unknown or already revoked.
    async fn revoke_access_token(&self, id: &TokenId, now: i64) -> Result<bool, StoreError>;

    /// RFC 7009 §2.1: revokes every token of a grant (refresh and access tokens sharing
    /// `family_id`). The revocation is kept at least until `keep_until`, when every token of
    /// the grant has expired. `Ok(false)` if the family was already revoked.
    async fn revoke_family(
        &self,
        family_id: &TokenId,
        now: i64,
        keep_until: i64,
    ) -> Result<bool, StoreError>;

    /// `Ok(None)` when no refresh token has this id. `revoked_at` includes the revocation of
    /// the token's family.
    async fn find_refresh_token(
        &self,
        id: &TokenId,
    ) -> Result<Option<RefreshTokenRecord>, StoreError>;

    /// `Ok(None)` when no access token has this id; `revoked_at` includes its family's.
    async fn find_access_token(
        &self,
        id: &TokenId,
    ) -> Result<Option<AccessTokenRecord>, StoreError>;

    /// RFC 6749 §6 rotation: atomically marks `old` spent (only if it is neither spent nor
    /// revoked, and its family not revoked) and records `new`. Exactly one of several concurrent calls for the same `old`
    /// returns [`Rotation::Rotated`].
    async fn rotate_refresh_token(
        &self,
        old: &TokenId,
        now: i64,
        new: NewTokens,
    ) -> Result<Rotation, StoreError>;

    /// Deletes at most `limits.batch` rows per table of what can no longer matter: tokens
    /// expired before `limits.expired_before`, grant revocations older than
    /// `limits.revoked_before`, failed-login counts whose window and lock are over. Returns the
    /// rows deleted. Safe to run on every node at once (no two delete the same rows, and each
    /// batch is a short transaction).
    async fn purge(&self, limits: PurgeLimits) -> Result<u64, StoreError>;

    /// Whether the store answers; for readiness.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Flushes pending writes and closes connections.
    async fn close(&self);
}

/// The lockout rule applied by [`LockoutStore::record_failure`].
#[derive(Debug, Clone, Copy)]
pub struct LockoutPolicy {
    pub max_failures: u32,
    pub window_secs: i64,
    pub lock_secs: i64,
}

/// The verdict on one login attempt, counted before its password is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// The password may be checked. `locks_until` is set when this attempt used the last
    /// one allowed: the account is locked from now on unless this attempt succeeds.
    Allowed { locks_until: Option<i64> },
    /// The account is locked until then; the password must not be checked.
    Locked { until: i64 },
}

/// One row of the failure table: failures in the current window, its start, the lock's end.
pub(crate) type FailureRow = (i64, i64, Option<i64>);

/// The lockout rule, shared by every backend: given the stored row, the verdict on a new
/// attempt and the row to store. Every attempt counts until it succeeds (which clears the
/// row), so attempts made at the same moment cannot exceed the allowance.
pub(crate) fn next_attempt(
    row: Option<FailureRow>,
    now: i64,
    policy: LockoutPolicy,
) -> (Attempt, Option<FailureRow>) {
    if let Some((_, _, Some(until))) = row {
        if until > now {
            return (Attempt::Locked { until }, None);
        }
    }
    let (failures, window_start) = match row {
        Some((failures, start, _)) if start.saturating_add(policy.window_secs) > now => {
            (failures, start)
        }
        _ => (0, now),
    };
    let failures = failures.saturating_add(1);
    if failures >= i64::from(policy.max_failures) {
        let until = now.saturating_add(policy.lock_secs);
        (
            Attempt::Allowed {
                locks_until: Some(until),
            },
            Some((0, now, Some(until))),
        )
    } else {
        (
            Attempt::Allowed { locks_until: None },
            Some((failures, window_start, None)),
        )
    }
}

/// Login attempts per user name and account locks. Kept in the token database so that every
/// node of a cluster sees the same counts.
#[async_trait]
pub trait LockoutStore: Send + Sync + 'static {
    /// Counts an attempt for `username`, atomically, before its password is checked.
    async fn begin_attempt(
        &self,
        username: &str,
        now: i64,
        policy: LockoutPolicy,
    ) -> Result<Attempt, StoreError>;

    /// Forgets attempts and any lock (a successful login, or `tokengate user unlock`).
    /// Returns whether there was anything to forget.
    async fn clear_failures(&self, username: &str) -> Result<bool, StoreError>;
}

/// Users, looked up by name.
#[async_trait]
pub trait UserStore: Send + Sync + 'static {
    async fn find_user(&self, name: &str) -> Result<Option<User>, StoreError>;
}

/// Clients, looked up by id.
#[async_trait]
pub trait ClientStore: Send + Sync + 'static {
    async fn find_client(&self, id: &str) -> Result<Option<Arc<Client>>, StoreError>;

    /// Every client (for the discovery document and key retirement).
    async fn list_clients(&self) -> Result<Vec<Arc<Client>>, StoreError>;
}

/// The stores that live in the token database.
pub struct DatabaseStores {
    pub tokens: Arc<dyn TokenStore>,
    pub lockouts: Arc<dyn LockoutStore>,
}

/// Opens the token database the settings name.
pub async fn open_database(settings: &Settings) -> Result<DatabaseStores, StoreError> {
    match &settings.stores.tokens {
        TokenStoreSettings::Sqlite { path, synchronous } => {
            let store = Arc::new(sqlite::SqliteTokenStore::open(path, *synchronous).await?);
            Ok(DatabaseStores {
                tokens: store.clone(),
                lockouts: store,
            })
        }
        TokenStoreSettings::Postgres(postgres) => {
            let store = Arc::new(postgres::PostgresTokenStore::connect(
                &postgres.url,
                postgres.max_connections,
            )?);
            if postgres.run_migrations {
                store.migrate().await?;
            } else if !store.migrations_applied().await? {
                return Err(StoreError::Unavailable(
                    "database migrations are pending: run `tokengate migrate`".into(),
                ));
            }
            Ok(DatabaseStores {
                tokens: store.clone(),
                lockouts: store,
            })
        }
    }
}

/// `tokengate migrate`: applies the token database's pending migrations.
pub async fn migrate(settings: &Settings) -> Result<(), StoreError> {
    match &settings.stores.tokens {
        // SQLite migrates whenever it is opened.
        TokenStoreSettings::Sqlite { path, synchronous } => {
            sqlite::SqliteTokenStore::open(path, *synchronous)
                .await?
                .close()
                .await;
            Ok(())
        }
        TokenStoreSettings::Postgres(postgres) => {
            let store = postgres::PostgresTokenStore::connect(&postgres.url, 1)?;
            store.migrate().await?;
            store.close().await;
            Ok(())
        }
    }
}
