//! The embedded token store: SQLite through sqlx, in WAL mode.
//!
//! Reads go through a small pool. Writes go through one connection owned by a writer task that
//! drains every write waiting in its queue and commits them in a single transaction (group
//! commit), so concurrent token requests share a commit instead of queueing for the lock. A
//! request is answered only after the commit that holds its tokens: with WAL and
//! `synchronous=NORMAL` the tokens survive the process being killed; `synchronous=FULL` also
//! survives power loss.

use std::path::Path;
use std::str::FromStr as _;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous as SqlxSynchronous,
};
use sqlx::{Connection as _, Row as _};
use tokio::sync::{mpsc, oneshot};

use super::directory::{ClientRow, SELECT_CLIENTS, SELECT_CLIENTS_REVISION, SELECT_USERS};
use super::model::{AccessTokenRecord, Client, NewTokens, RefreshTokenRecord, TokenRecord, User};
use super::revocation::{
    upsert_mark, CLOCK_SKEW_SLACK_SECS, OLDEST_TOKEN_ISSUED_AT, STILL_REDEEMABLE, TOKEN_COLUMNS,
};
use super::{
    attempt_steps, Attempt, AttemptRows, AttemptStep, Directory, FailureRow, LockoutPolicy,
    LockoutStore, PurgeLimits, Rotation, RowChange, StoreError, SubjectKind, TokenStore,
    ALL_SOURCES,
};
use crate::crypto::token::{SecretDigest, TokenId};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("src/store/migrations/sqlite");

/// SQLite's `synchronous` pragma. `Normal` (WAL) survives a killed process; `Full` also survives
/// power loss, at the price of an fsync per commit batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqliteSynchronous {
    Normal,
    Full,
}

/// Most writes committed in one transaction; bounds the latency one commit adds.
const MAX_BATCH: usize = 512;
/// Writes allowed to wait for the writer before callers wait for queue space.
const WRITE_QUEUE: usize = 4096;
const READ_CONNECTIONS: u32 = 4;

enum WriteOp {
    Create(NewTokens),
    Rotate {
        old: TokenId,
        now: i64,
        new: NewTokens,
    },
    RevokeAccess {
        id: TokenId,
        now: i64,
    },
    RevokeFamily {
        family_id: TokenId,
        now: i64,
    },
    RevokeSubject {
        kind: SubjectKind,
        name: String,
        not_before: TokenId,
        now: i64,
    },
    Attempt {
        username: String,
        source: String,
        step: AttemptStep,
        now: i64,
        policy: LockoutPolicy,
    },
    ClearFailures {
        username: String,
    },
    Directory(DirectoryChange),
    Purge(PurgeLimits),
    Shutdown,
}

/// An edit of the users or clients table (`tokengate user|client …`).
enum DirectoryChange {
    AddUser { user: User, now: i64 },
    RemoveUser(String),
    UserPassword { name: String, password_hash: String },
    UserDisabled { name: String, disabled: bool },
    AddClient { client: ClientRow, now: i64 },
    RemoveClient(String),
    ClientDisabled { id: String, disabled: bool },
}

/// What a write reports back.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    /// Whether the write changed anything.
    Changed(bool),
    /// The verdict on a login attempt.
    Attempt(Attempt),
    /// The rows a purge deleted.
    Deleted(u64),
}

/// A write's reply: whether it changed anything (a rotation whose token was already spent, or a
/// revocation of an already revoked token, did not).
struct WriteJob {
    op: WriteOp,
    reply: oneshot::Sender<Result<Outcome, StoreError>>,
}

pub struct SqliteTokenStore {
    readers: SqlitePool,
    writes: mpsc::Sender<WriteJob>,
}

/// SQLITE_BUSY (5), SQLITE_LOCKED (6), SQLITE_IOERR (10), SQLITE_FULL (13): the database is
/// contended, the disk full or failing; a retry may succeed. sqlx reports extended codes
/// (e.g. 778 = SQLITE_IOERR_WRITE), whose low byte is the primary code.
fn is_unavailable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => true,
        sqlx::Error::Database(db) => db
            .code()
            .and_then(|code| code.parse::<u32>().ok())
            .is_some_and(|code| matches!(code & 0xff, 5 | 6 | 10 | 13)),
        _ => false,
    }
}

fn backend(err: sqlx::Error) -> StoreError {
    if is_unavailable(&err) {
        StoreError::Unavailable(err.to_string())
    } else {
        StoreError::Backend(Box::new(err))
    }
}

/// The same failure reported to every write of a rolled-back batch.
#[derive(Debug, thiserror::Error)]
#[error("commit failed: {0}")]
struct BatchFailed(String);

fn batch_error(err: &sqlx::Error) -> StoreError {
    if is_unavailable(err) {
        StoreError::Unavailable(err.to_string())
    } else {
        StoreError::Backend(Box::new(BatchFailed(err.to_string())))
    }
}

impl SqliteTokenStore {
    /// Opens (creating if needed) the database at `path` and applies pending migrations.
    pub async fn open(path: &Path, synchronous: SqliteSynchronous) -> Result<Self, StoreError> {
        if let Some(parent) = path.parent() {
            crate::secret_files::create_private_dir_all(parent).map_err(|err| {
                StoreError::Unavailable(format!("cannot create {}: {err}", parent.display()))
            })?;
        }
        let existed = path.exists();
        // SQLite gives the -wal and -shm files the main file's mode: creating it 0600 first
        // keeps all three private (a file SQLite created would follow the umask).
        crate::secret_files::ensure_private_file(path).map_err(|err| {
            StoreError::Unavailable(format!("cannot create {}: {err}", path.display()))
        })?;
        let options = SqliteConnectOptions::from_str("sqlite://")
            .map_err(backend)?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match synchronous {
                SqliteSynchronous::Normal => SqlxSynchronous::Normal,
                SqliteSynchronous::Full => SqlxSynchronous::Full,
            })
            .busy_timeout(Duration::from_secs(5));
        let mut writer = SqliteConnection::connect_with(&options)
            .await
            .map_err(|err| {
                StoreError::Unavailable(format!("cannot open {}: {err}", path.display()))
            })?;
        MIGRATOR
            .run(&mut writer)
            .await
            .map_err(|err| StoreError::Backend(Box::new(err)))?;
        let readers = SqlitePoolOptions::new()
            .max_connections(READ_CONNECTIONS)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(backend)?;
        if existed {
            tracing::info!(path = %path.display(), "token store opened");
        } else {
            tracing::info!(path = %path.display(), "token store created");
        }
        let (writes, queue) = mpsc::channel(WRITE_QUEUE);
        tokio::spawn(run_writer(writer, queue));
        Ok(Self { readers, writes })
    }

    /// Submits a write and reports whether it changed anything.
    async fn submit(&self, op: WriteOp) -> Result<bool, StoreError> {
        Ok(match self.submit_for(op).await? {
            Outcome::Changed(changed) => changed,
            Outcome::Attempt(_) => true,
            Outcome::Deleted(rows) => rows > 0,
        })
    }

    async fn submit_for(&self, op: WriteOp) -> Result<Outcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.writes
            .send(WriteJob { op, reply })
            .await
            .map_err(|_| StoreError::Unavailable("the token store is closed".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the token store writer stopped".into()))?
    }
}

async fn run_writer(mut conn: SqliteConnection, mut queue: mpsc::Receiver<WriteJob>) {
    let mut batch: Vec<WriteJob> = Vec::with_capacity(MAX_BATCH);
    let mut shutting_down = false;
    while !shutting_down && queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        shutting_down = batch.iter().any(|job| matches!(job.op, WriteOp::Shutdown));
        match apply_batch(&mut conn, &batch).await {
            Ok(outcomes) => {
                for (job, outcome) in batch.drain(..).zip(outcomes) {
                    let _ = job.reply.send(Ok(outcome));
                }
            }
            Err(err) => {
                tracing::error!(error = %err, writes = batch.len(), "token store commit failed; batch rolled back");
                for job in batch.drain(..) {
                    let _ = job.reply.send(Err(batch_error(&err)));
                }
            }
        }
    }
    queue.close();
    if let Err(err) = conn.close().await {
        tracing::warn!(error = %err, "closing the token store writer");
    }
}

async fn apply_batch(
    conn: &mut SqliteConnection,
    batch: &[WriteJob],
) -> Result<Vec<Outcome>, sqlx::Error> {
    // IMMEDIATE takes the write lock up front: a deferred transaction that reads before it
    // writes fails at once with SQLITE_BUSY when another process (a second server on the same
    // file, the CLI) wrote meanwhile, instead of waiting out busy_timeout.
    sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
    let mut outcomes = Vec::with_capacity(batch.len());
    for job in batch {
        match apply(conn, &job.op).await {
            Ok(outcome) => outcomes.push(outcome),
            Err(err) => {
                let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                return Err(err);
            }
        }
    }
    if let Err(err) = sqlx::query("COMMIT").execute(&mut *conn).await {
        let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
        return Err(err);
    }
    Ok(outcomes)
}

/// One step of a login attempt (see `store::attempt_steps`) inside the writer's transaction.
async fn attempt_in(
    conn: &mut SqliteConnection,
    username: &str,
    source: &str,
    step: AttemptStep,
    now: i64,
    policy: LockoutPolicy,
) -> Result<Attempt, sqlx::Error> {
    let found = sqlx::query(
        "SELECT source, failures, window_start, locked_until, pending FROM login_failures \
         WHERE username = ?1 AND source IN (?2, ?3)",
    )
    .bind(username)
    .bind(source)
    .bind(ALL_SOURCES)
    .fetch_all(&mut *conn)
    .await?;
    let mut rows = AttemptRows {
        source: None,
        all: policy.counts_every_address().then_some(None),
    };
    for row in found {
        let values: FailureRow = (
            row.try_get("failures")?,
            row.try_get("window_start")?,
            row.try_get("locked_until")?,
            row.try_get("pending")?,
        );
        let row_source: String = row.try_get("source")?;
        if row_source == source {
            rows.source = Some(values);
        } else if let Some(all) = rows.all.as_mut() {
            *all = Some(values);
        }
    }
    let (verdict, changes) = attempt_steps(rows, step, now, policy);
    change_failures(conn, username, source, changes.source).await?;
    if let Some(change) = changes.all {
        change_failures(conn, username, ALL_SOURCES, change).await?;
    }
    Ok(verdict)
}

async fn change_failures(
    conn: &mut SqliteConnection,
    username: &str,
    source: &str,
    change: RowChange,
) -> Result<(), sqlx::Error> {
    match change {
        RowChange::Keep => {}
        RowChange::Delete => {
            sqlx::query("DELETE FROM login_failures WHERE username = ?1 AND source = ?2")
                .bind(username)
                .bind(source)
                .execute(&mut *conn)
                .await?;
        }
        RowChange::Store((failures, window_start, locked_until, pending)) => {
            sqlx::query(
                "INSERT INTO login_failures (username, source, failures, window_start, \
                 locked_until, pending) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                 ON CONFLICT (username, source) DO UPDATE SET \
                 failures = ?3, window_start = ?4, locked_until = ?5, pending = ?6",
            )
            .bind(username)
            .bind(source)
            .bind(failures)
            .bind(window_start)
            .bind(locked_until)
            .bind(pending)
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(())
}

/// Applies one write inside the batch's transaction.
async fn apply(conn: &mut SqliteConnection, op: &WriteOp) -> Result<Outcome, sqlx::Error> {
    if let WriteOp::Attempt {
        username,
        source,
        step,
        now,
        policy,
    } = op
    {
        return Ok(Outcome::Attempt(
            attempt_in(conn, username, source, *step, *now, *policy).await?,
        ));
    }
    if let WriteOp::Purge(limits) = op {
        return Ok(Outcome::Deleted(purge(conn, *limits).await?));
    }
    Ok(Outcome::Changed(match op {
        WriteOp::Create(tokens) => {
            insert_tokens(conn, tokens).await?;
            true
        }
        WriteOp::Rotate { old, now, new } => {
            let replaced_by = new.refresh.as_ref().map(|r| r.token.id.0.to_vec());
            let sql = format!(
                "UPDATE refresh_tokens SET spent_at = ?1, replaced_by = ?2 WHERE id = ?3 \
                 {STILL_REDEEMABLE}"
            );
            let spent = sqlx::query(&sql)
                .bind(now)
                .bind(replaced_by)
                .bind(old.0.as_slice())
                .execute(&mut *conn)
                .await?;
            let rotated = spent.rows_affected() == 1;
            if rotated {
                insert_tokens(conn, new).await?;
            }
            rotated
        }
        WriteOp::RevokeAccess { id, now } => {
            sqlx::query(
                "UPDATE access_tokens SET revoked_at = ?1 WHERE id = ?2 AND revoked_at IS NULL",
            )
            .bind(now)
            .bind(id.0.as_slice())
            .execute(&mut *conn)
            .await?
            .rows_affected()
                == 1
        }
        WriteOp::RevokeFamily { family_id, now } => {
            sqlx::query(
                "INSERT INTO revoked_families (family_id, revoked_at) \
                 VALUES (?1, ?2) ON CONFLICT (family_id) DO NOTHING",
            )
            .bind(family_id.0.as_slice())
            .bind(now)
            .execute(&mut *conn)
            .await?
            .rows_affected()
                == 1
        }
        WriteOp::RevokeSubject {
            kind,
            name,
            not_before,
            now,
        } => {
            sqlx::query(&upsert_mark(["?1", "?2", "?3", "?4"]))
                .bind(kind.as_str())
                .bind(name.as_str())
                .bind(not_before.0.as_slice())
                .bind(now)
                .execute(&mut *conn)
                .await?
                .rows_affected()
                == 1
        }
        WriteOp::Attempt { .. } => true, // answered above
        WriteOp::ClearFailures { username } => {
            sqlx::query("DELETE FROM login_failures WHERE username = ?1")
                .bind(username.as_str())
                .execute(&mut *conn)
                .await?
                .rows_affected()
                > 0
        }
        WriteOp::Directory(change) => change_directory(conn, change).await?,
        WriteOp::Purge(_) => true, // answered above
        WriteOp::Shutdown => true,
    }))
}

/// Applies a user or client edit; whether it changed a row.
async fn change_directory(
    conn: &mut SqliteConnection,
    change: &DirectoryChange,
) -> Result<bool, sqlx::Error> {
    let query = match change {
        DirectoryChange::AddUser { user, now } => sqlx::query(
            "INSERT INTO users (name, password_hash, disabled, created_at) \
             VALUES (?1, ?2, ?3, ?4) ON CONFLICT (name) DO NOTHING",
        )
        .bind(user.name.as_str())
        .bind(user.password_hash.as_str())
        .bind(user.disabled)
        .bind(now),
        DirectoryChange::RemoveUser(name) => {
            sqlx::query("DELETE FROM users WHERE name = ?1").bind(name.as_str())
        }
        DirectoryChange::UserPassword {
            name,
            password_hash,
        } => sqlx::query("UPDATE users SET password_hash = ?1 WHERE name = ?2")
            .bind(password_hash.as_str())
            .bind(name.as_str()),
        DirectoryChange::UserDisabled { name, disabled } => {
            sqlx::query("UPDATE users SET disabled = ?1 WHERE name = ?2")
                .bind(disabled)
                .bind(name.as_str())
        }
        DirectoryChange::AddClient { client, now } => sqlx::query(
            "INSERT INTO clients (id, secret_hash, grant_types, scopes, \
             access_token_validity_period, application_access_token_validity_period, \
             refresh_token_validity_period, introspect, token_format, audience, disabled, \
             created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(client.id.as_str())
        .bind(client.secret_hash.as_str())
        .bind(client.grant_types.as_str())
        .bind(client.scopes.as_str())
        .bind(client.access_token_validity_period)
        .bind(client.application_access_token_validity_period)
        .bind(client.refresh_token_validity_period)
        .bind(client.introspect)
        .bind(client.token_format.as_deref())
        .bind(client.audience.as_deref())
        .bind(client.disabled)
        .bind(now),
        DirectoryChange::RemoveClient(id) => {
            sqlx::query("DELETE FROM clients WHERE id = ?1").bind(id.as_str())
        }
        DirectoryChange::ClientDisabled { id, disabled } => {
            sqlx::query("UPDATE clients SET disabled = ?1 WHERE id = ?2")
                .bind(disabled)
                .bind(id.as_str())
        }
    };
    Ok(query.execute(&mut *conn).await?.rows_affected() == 1)
}

/// One bounded purge batch per table (see `TokenStore::purge`). Returns the rows deleted.
async fn purge(conn: &mut SqliteConnection, limits: PurgeLimits) -> Result<u64, sqlx::Error> {
    let batch = i64::from(limits.batch);
    let mut deleted = 0;
    for table in ["access_tokens", "refresh_tokens"] {
        deleted += sqlx::query(&format!(
            "DELETE FROM {table} WHERE id IN \
             (SELECT id FROM {table} WHERE expires_at < ?1 LIMIT ?2)"
        ))
        .bind(limits.expired_before)
        .bind(batch)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    }
    // A revocation goes only once no token issued before it is stored, whatever lifetimes
    // the grant's tokens were issued with (keep_until is not enough: lifetimes change).
    deleted += sqlx::query(&format!(
        "DELETE FROM revoked_families WHERE family_id IN \
         (SELECT family_id FROM revoked_families \
          WHERE revoked_at < COALESCE({OLDEST_TOKEN_ISSUED_AT}, ?1) - {CLOCK_SKEW_SLACK_SECS} \
          LIMIT ?2)"
    ))
    .bind(i64::MAX)
    .bind(batch)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    deleted += sqlx::query(
        "DELETE FROM login_failures WHERE (username, source) IN \
         (SELECT username, source FROM login_failures WHERE window_start < ?1 \
          AND COALESCE(locked_until, 0) <= ?2 LIMIT ?3)",
    )
    .bind(limits.failures_before)
    .bind(limits.now)
    .bind(batch)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(deleted)
}

const INSERT_ACCESS: &str = "INSERT INTO access_tokens (id, secret_sha256, client_id, \
    username, scope, family_id, issued_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";
const INSERT_REFRESH: &str = "INSERT INTO refresh_tokens (id, secret_sha256, client_id, \
    username, scope, family_id, issued_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";

async fn insert_token(
    conn: &mut SqliteConnection,
    sql: &'static str,
    token: &TokenRecord,
) -> Result<(), sqlx::Error> {
    sqlx::query(sql)
        .bind(token.id.0.as_slice())
        .bind(token.secret_digest.0.as_slice())
        .bind(token.client_id.as_str())
        .bind(token.username.as_deref())
        .bind(token.scope.as_str())
        .bind(token.family_id.0.as_slice())
        .bind(token.issued_at)
        .bind(token.expires_at)
        .execute(conn)
        .await
        .map(|_| ())
}

async fn insert_tokens(conn: &mut SqliteConnection, tokens: &NewTokens) -> Result<(), sqlx::Error> {
    insert_token(conn, INSERT_ACCESS, &tokens.access).await?;
    if let Some(refresh) = &tokens.refresh {
        insert_token(conn, INSERT_REFRESH, &refresh.token).await?;
    }
    Ok(())
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_owned())
}

fn token_id(row: &SqliteRow, column: &str) -> Result<TokenId, StoreError> {
    let bytes: Vec<u8> = row.try_get(column).map_err(backend)?;
    TokenId::from_slice(&bytes).ok_or_else(|| corrupt(column))
}

fn digest(row: &SqliteRow) -> Result<SecretDigest, StoreError> {
    let bytes: Vec<u8> = row.try_get("secret_sha256").map_err(backend)?;
    SecretDigest::from_slice(&bytes).ok_or_else(|| corrupt("secret_sha256"))
}

fn decode_token(row: &SqliteRow) -> Result<TokenRecord, StoreError> {
    Ok(TokenRecord {
        id: token_id(row, "id")?,
        secret_digest: digest(row)?,
        client_id: row.try_get("client_id").map_err(backend)?,
        username: row.try_get("username").map_err(backend)?,
        scope: row.try_get("scope").map_err(backend)?,
        family_id: token_id(row, "family_id")?,
        issued_at: row.try_get("issued_at").map_err(backend)?,
        expires_at: row.try_get("expires_at").map_err(backend)?,
        revoked_at: row.try_get("revoked_at").map_err(backend)?,
    })
}

#[async_trait]
impl TokenStore for SqliteTokenStore {
    async fn create_tokens(&self, tokens: NewTokens) -> Result<(), StoreError> {
        self.submit(WriteOp::Create(tokens)).await.map(|_| ())
    }

    async fn revoke_access_token(&self, id: &TokenId, now: i64) -> Result<bool, StoreError> {
        self.submit(WriteOp::RevokeAccess { id: *id, now }).await
    }

    async fn revoke_family(&self, family_id: &TokenId, now: i64) -> Result<bool, StoreError> {
        self.submit(WriteOp::RevokeFamily {
            family_id: *family_id,
            now,
        })
        .await
    }

    async fn revoke_subject(
        &self,
        kind: SubjectKind,
        name: &str,
        not_before_ms: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        self.submit(WriteOp::RevokeSubject {
            kind,
            name: name.to_owned(),
            not_before: TokenId::lower_bound(not_before_ms),
            now,
        })
        .await
        .map(|_| ())
    }

    async fn find_refresh_token(
        &self,
        id: &TokenId,
    ) -> Result<Option<RefreshTokenRecord>, StoreError> {
        let sql = format!(
            "SELECT {TOKEN_COLUMNS}, t.spent_at AS spent_at, t.replaced_by AS replaced_by \
             FROM refresh_tokens t WHERE t.id = ?1"
        );
        let row = sqlx::query(&sql)
            .bind(id.0.as_slice())
            .fetch_optional(&self.readers)
            .await
            .map_err(backend)?;
        let Some(row) = row else { return Ok(None) };
        let replaced_by: Option<Vec<u8>> = row.try_get("replaced_by").map_err(backend)?;
        let replaced_by = match replaced_by {
            Some(bytes) => Some(TokenId::from_slice(&bytes).ok_or_else(|| corrupt("replaced_by"))?),
            None => None,
        };
        Ok(Some(RefreshTokenRecord {
            token: decode_token(&row)?,
            spent_at: row.try_get("spent_at").map_err(backend)?,
            replaced_by,
        }))
    }

    async fn find_access_token(
        &self,
        id: &TokenId,
    ) -> Result<Option<AccessTokenRecord>, StoreError> {
        let sql = format!("SELECT {TOKEN_COLUMNS} FROM access_tokens t WHERE t.id = ?1");
        let row = sqlx::query(&sql)
            .bind(id.0.as_slice())
            .fetch_optional(&self.readers)
            .await
            .map_err(backend)?;
        row.as_ref().map(decode_token).transpose()
    }

    async fn rotate_refresh_token(
        &self,
        old: &TokenId,
        now: i64,
        new: NewTokens,
    ) -> Result<Rotation, StoreError> {
        let rotated = self
            .submit(WriteOp::Rotate {
                old: *old,
                now,
                new,
            })
            .await?;
        Ok(if rotated {
            Rotation::Rotated
        } else {
            Rotation::AlreadySpent
        })
    }

    async fn purge(&self, limits: PurgeLimits) -> Result<u64, StoreError> {
        match self.submit_for(WriteOp::Purge(limits)).await? {
            Outcome::Deleted(rows) => Ok(rows),
            Outcome::Changed(_) | Outcome::Attempt(_) => Err(StoreError::Corrupt(
                "the writer answered the wrong write".into(),
            )),
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        if self.writes.is_closed() {
            return Err(StoreError::Unavailable(
                "the token store writer stopped".into(),
            ));
        }
        sqlx::query("SELECT 1")
            .execute(&self.readers)
            .await
            .map(|_| ())
            .map_err(backend)
    }

    async fn close(&self) {
        // Queued behind every write already accepted, so those still commit.
        let _ = self.submit(WriteOp::Shutdown).await;
        self.readers.close().await;
    }
}

#[async_trait]
impl LockoutStore for SqliteTokenStore {
    async fn attempt(
        &self,
        username: &str,
        source: &str,
        step: AttemptStep,
        now: i64,
        policy: LockoutPolicy,
    ) -> Result<Attempt, StoreError> {
        let outcome = self
            .submit_for(WriteOp::Attempt {
                username: username.to_owned(),
                source: source.to_owned(),
                step,
                now,
                policy,
            })
            .await?;
        match outcome {
            Outcome::Attempt(attempt) => Ok(attempt),
            Outcome::Changed(_) | Outcome::Deleted(_) => Err(StoreError::Corrupt(
                "the writer answered the wrong write".into(),
            )),
        }
    }

    async fn clear_failures(&self, username: &str) -> Result<bool, StoreError> {
        self.submit(WriteOp::ClearFailures {
            username: username.to_owned(),
        })
        .await
    }
}

#[async_trait]
impl Directory for SqliteTokenStore {
    async fn find_user(&self, name: &str) -> Result<Option<User>, StoreError> {
        sqlx::query_as("SELECT name, password_hash, disabled FROM users WHERE name = ?1")
            .bind(name)
            .fetch_optional(&self.readers)
            .await
            .map_err(backend)
    }

    async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        sqlx::query_as(SELECT_USERS)
            .fetch_all(&self.readers)
            .await
            .map_err(backend)
    }

    async fn add_user(&self, user: &User, now: i64) -> Result<bool, StoreError> {
        let user = user.clone();
        self.submit(WriteOp::Directory(DirectoryChange::AddUser { user, now }))
            .await
    }

    async fn remove_user(&self, name: &str) -> Result<bool, StoreError> {
        self.submit(WriteOp::Directory(DirectoryChange::RemoveUser(
            name.to_owned(),
        )))
        .await
    }

    async fn set_user_password(&self, name: &str, password_hash: &str) -> Result<bool, StoreError> {
        self.submit(WriteOp::Directory(DirectoryChange::UserPassword {
            name: name.to_owned(),
            password_hash: password_hash.to_owned(),
        }))
        .await
    }

    async fn set_user_disabled(&self, name: &str, disabled: bool) -> Result<bool, StoreError> {
        let name = name.to_owned();
        self.submit(WriteOp::Directory(DirectoryChange::UserDisabled {
            name,
            disabled,
        }))
        .await
    }

    async fn clients_revision(&self) -> Result<i64, StoreError> {
        sqlx::query_scalar(SELECT_CLIENTS_REVISION)
            .fetch_one(&self.readers)
            .await
            .map_err(backend)
    }

    async fn list_clients(&self) -> Result<Vec<ClientRow>, StoreError> {
        sqlx::query_as(SELECT_CLIENTS)
            .fetch_all(&self.readers)
            .await
            .map_err(backend)
    }

    async fn client_exists(&self, id: &str) -> Result<bool, StoreError> {
        let found: Option<i64> = sqlx::query_scalar("SELECT 1 FROM clients WHERE id = ?1")
            .bind(id)
            .fetch_optional(&self.readers)
            .await
            .map_err(backend)?;
        Ok(found.is_some())
    }

    async fn add_client(&self, client: &Client, now: i64) -> Result<bool, StoreError> {
        let client = ClientRow::from_client(client);
        self.submit(WriteOp::Directory(DirectoryChange::AddClient {
            client,
            now,
        }))
        .await
    }

    async fn remove_client(&self, id: &str) -> Result<bool, StoreError> {
        self.submit(WriteOp::Directory(DirectoryChange::RemoveClient(
            id.to_owned(),
        )))
        .await
    }

    async fn set_client_disabled(&self, id: &str, disabled: bool) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.submit(WriteOp::Directory(DirectoryChange::ClientDisabled {
            id,
            disabled,
        }))
        .await
    }
}
