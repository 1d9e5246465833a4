//! The embedded token store: SQLite in WAL mode, called through rusqlite on threads of its own.
//!
//! SQLite writes block, so none runs on the async runtime. One writer thread owns the only
//! write connection: it takes every write waiting in its queue and commits them in a single
//! transaction (group commit), so concurrent token requests share a commit instead of queueing
//! for the lock; a request hands its write over and awaits the commit (sqlx's SQLite driver
//! switched threads once per statement, and that switching was most of a refresh grant's CPU).
//! Other reads run where they are asked for, on one of a few read connections (WAL lets them
//! read while the writer writes). The exception is the refresh token a refresh grant presents:
//! the writer reads it between two commits, from its own page cache. A read connection's cache
//! is stale after every commit, and reading the changed pages again from the files made that
//! lookup cost as much as the rotation that follows it (profiled: 19 % of the server's CPU,
//! against a few percent in the writer). Statements are prepared once per connection and cached.
//!
//! A thread of its own copies the write-ahead log into the database file (checkpoints), so the
//! writer never stalls on that copy and its fsync.
//!
//! A request is answered only after the commit that holds its tokens: with WAL and
//! `synchronous=NORMAL` the tokens survive the process being killed; `synchronous=FULL` also
//! survives power loss. Migrations run through sqlx's migrator when the store opens, so
//! `tokengate migrate` reports the same versions on both backends.

use std::collections::BTreeSet;
use std::path::Path;
use std::str::FromStr as _;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, TryLockError};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{
    params, Connection, ErrorCode, OpenFlags, OptionalExtension as _, Row, TransactionBehavior,
};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode};
use sqlx::Connection as _;
use tokio::sync::{mpsc, oneshot};

use super::directory::ClientRow;
use super::measured::StoreObserver;
use super::model::{
    AccessTokenRecord, AuthorizationCodeRecord, Client, ConsentRecord, InitialAccessTokenRecord,
    InitialTokenRow, LoginSessionRecord, NewTokens, PreviousSecret, RefreshTokenRecord,
    RegistrationRecord, Role, TokenRecord, User,
};
use super::sql::{directory, lockouts, purge, registration, tokens};
use super::successor_of;
use super::{
    attempt_steps, Attempt, AttemptRows, AttemptStep, Directory, FailureRow, LockoutPolicy,
    LockoutStore, PresentedRotation, PurgeLimits, PurgedRows, Redemption, Registration,
    RegistrationStore, Rotation, RowChange, StoreError, SubjectKind, Successor, TokenStore,
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

impl SqliteSynchronous {
    fn pragma(self) -> &'static str {
        match self {
            Self::Normal => "NORMAL",
            Self::Full => "FULL",
        }
    }
}

/// Most writes committed in one transaction; bounds the latency one commit adds.
const MAX_BATCH: usize = 512;
/// Writes allowed to wait for the writer before callers wait for queue space.
const WRITE_QUEUE: usize = 4096;
/// Read connections beyond one per runtime thread (one per core), for the janitor and health
/// probes: a read hardly ever waits for another.
const SPARE_READ_CONNECTIONS: usize = 2;
/// How long the writer waits for another process's lock (the CLI, a second server).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a read waits. In WAL mode a reader waits only while another process recovers the
/// write-ahead log after a crash; reads run on the async runtime's threads, so they give up
/// soon (503) rather than stall every connection on that thread.
const READ_BUSY_TIMEOUT: Duration = Duration::from_millis(200);
/// Distinct statements per connection: every one this file prepares fits.
const STATEMENT_CACHE: usize = 64;
/// How often the checkpoint thread copies the write-ahead log into the database file.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(100);
/// WAL pages after which the writer checkpoints by itself. Under steady load this is the usual
/// way the log starts over: SQLite restarts it only when a write begins with every frame already
/// copied, which the checkpoint thread, racing the commits, rarely leaves. By then that thread
/// has copied nearly everything, so the writer's checkpoint is mostly one fsync; the log file
/// grows to about 80 MB (4 KiB pages). Measured (refresh, c=32): 1000 pages (SQLite's default)
/// cost about 25 % of the throughput and tripled p99, 4000 about 10 %.
const WRITER_CHECKPOINT_PAGES: u32 = 20_000;
/// How long a read answered by the writer (a refresh token's lookup, the health probe) waits
/// for it. It waits behind the batch being committed, which may itself wait up to
/// [`BUSY_TIMEOUT`] for another process's lock, or for a disk that stopped answering; past this
/// the request gets a 503 (and the lookup, its caller gone, is left out).
const WRITER_READ_TIMEOUT: Duration = Duration::from_secs(3);
/// Failed checkpoints in a row between two log lines about them (one a minute): a full or
/// failing disk would otherwise log ten lines a second.
const CHECKPOINT_FAILURES_PER_LOG: u32 = 600;

/// What the writer thread is asked to do: every write, and the reads of refresh tokens (see
/// `answer_reads`).
enum WriterOp {
    /// A read of a refresh token, answered by the writer (see `find_refresh_token`).
    FindRefresh(TokenId),
    /// The health probe: answered when the writer gets to it, so a writer stuck behind a lock
    /// or a disk makes the node unready.
    Ping,
    Create(NewTokens),
    Rotate {
        old: TokenId,
        now: i64,
        new: NewTokens,
    },
    /// A read and, when the successor says so, a rotation in one job (see `rotate_presented`).
    /// `None` once the successor has run.
    RotatePresented {
        id: TokenId,
        now: i64,
        successor: Option<Successor>,
    },
    RevokeAccess {
        id: TokenId,
        now: i64,
    },
    CreateCode(Box<AuthorizationCodeRecord>),
    CreateSession(Box<LoginSessionRecord>),
    DeleteSession(SecretDigest),
    SaveConsent(Box<ConsentRecord>),
    RedeemCode {
        digest: SecretDigest,
        now: i64,
        new: NewTokens,
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
        every_address: &'static str,
        step: AttemptStep,
        now: i64,
        policy: LockoutPolicy,
    },
    ClearFailures {
        username: String,
    },
    Directory(DirectoryChange),
    Registration(RegistrationChange),
    Purge(PurgeLimits),
    Shutdown,
}

/// An edit of the users or clients table (`tokengate user|client …`).
enum DirectoryChange {
    AddUser { user: User, now: i64 },
    RemoveUser(String),
    UserPassword { name: String, password_hash: String },
    UserDisabled { name: String, disabled: bool },
    UserRoles { name: String, roles: String },
    AddClient { client: Box<ClientRow>, now: i64 },
    RemoveClient(String),
    ClientDisabled { id: String, disabled: bool },
}

/// A write of dynamic client registration.
enum RegistrationChange {
    CreateInitial {
        token: InitialAccessTokenRecord,
        now: i64,
    },
    Register {
        client: Box<ClientRow>,
        registration: Box<RegistrationRecord>,
        initial: Option<SecretDigest>,
        now: i64,
    },
    Update {
        client: Box<ClientRow>,
        token_endpoint_auth_method: String,
        read_secret_hash: String,
    },
    Delete(String),
    RevokeInitial(SecretDigest),
    ReplaceSecret {
        client_id: String,
        read_secret_hash: String,
        secret_hash: String,
        previous: Option<PreviousSecret>,
    },
}

/// What a write reports back.
#[derive(Debug)]
enum Outcome {
    /// A refresh token read by the writer.
    Refresh(Option<RefreshTokenRecord>),
    /// Whether the write changed anything (a rotation whose token was already spent, or a
    /// revocation of an already revoked token, did not).
    Changed(bool),
    /// What a read-and-rotate did; a stored row that does not decode fails this job only.
    Presented(Result<PresentedRotation, StoreError>),
    /// The verdict on a login attempt.
    Attempt(Attempt),
    /// The rows a purge deleted.
    Deleted(PurgedRows),
    /// What became of a registration.
    Registered(Registration),
}

impl Outcome {
    /// Whether the job wrote (or may have written) rows: a presented refresh token left as it
    /// was did not, and is not counted in the commit's size.
    fn wrote(&self) -> bool {
        !matches!(
            self,
            Outcome::Presented(Ok(PresentedRotation::Kept(_) | PresentedRotation::Unknown))
                | Outcome::Presented(Err(_))
        )
    }
}

struct WriterJob {
    op: WriterOp,
    reply: oneshot::Sender<Result<Outcome, StoreError>>,
}

pub struct SqliteTokenStore {
    writes: mpsc::Sender<WriterJob>,
    readers: Vec<Mutex<Connection>>,
    /// Where the next read starts looking for a free connection.
    next_reader: AtomicUsize,
    closed: AtomicBool,
}

/// SQLITE_BUSY, SQLITE_LOCKED, SQLITE_IOERR, SQLITE_FULL, SQLITE_CANTOPEN, SQLITE_READONLY,
/// SQLITE_NOMEM, SQLITE_PROTOCOL: the database is contended, the disk full, failing or
/// remounted read-only, memory short; a retry (or the operator) may fix it, so 503.
fn is_unavailable(err: &rusqlite::Error) -> bool {
    matches!(
        err,
        rusqlite::Error::SqliteFailure(failure, _) if matches!(
            failure.code,
            ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::SystemIoFailure
                | ErrorCode::DiskFull
                | ErrorCode::CannotOpen
                | ErrorCode::ReadOnly
                | ErrorCode::OutOfMemory
                | ErrorCode::FileLockingProtocolFailed
        )
    )
}

fn backend(err: rusqlite::Error) -> StoreError {
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

fn batch_error(err: &rusqlite::Error) -> StoreError {
    if is_unavailable(err) {
        StoreError::Unavailable(err.to_string())
    } else {
        StoreError::Backend(Box::new(BatchFailed(err.to_string())))
    }
}

/// A writer reply of another kind than the job's: never expected, reported rather than trusted.
fn wrong_outcome() -> StoreError {
    StoreError::Corrupt("the writer answered with another kind of outcome".into())
}

fn closed() -> StoreError {
    StoreError::Unavailable("the token store is closed".into())
}

/// Opens one connection of the store with its pragmas.
fn connect(
    path: &Path,
    synchronous: SqliteSynchronous,
    query_only: bool,
    busy_timeout: Duration,
) -> Result<Connection, StoreError> {
    let unavailable = |err: rusqlite::Error| {
        StoreError::Unavailable(format!("cannot open {}: {err}", path.display()))
    };
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(unavailable)?;
    conn.busy_timeout(busy_timeout).map_err(unavailable)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {}; PRAGMA query_only = {};",
        synchronous.pragma(),
        if query_only { "ON" } else { "OFF" }
    ))
    .map_err(unavailable)?;
    Ok(conn)
}

impl SqliteTokenStore {
    /// Opens (creating if needed) the database at `path` and applies pending migrations; the
    /// writer reports each commit's size to `observer`.
    pub async fn open(
        path: &Path,
        synchronous: SqliteSynchronous,
        observer: Arc<dyn StoreObserver>,
    ) -> Result<Self, StoreError> {
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
        migrate(path).await?;
        let writer = connect(path, synchronous, false, BUSY_TIMEOUT)?;
        writer
            .pragma_update(None, "wal_autocheckpoint", WRITER_CHECKPOINT_PAGES)
            .map_err(backend)?;
        let checkpointer = Checkpointer::start(connect(path, synchronous, false, BUSY_TIMEOUT)?)?;
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        let readers = (0..cores + SPARE_READ_CONNECTIONS)
            .map(|_| connect(path, synchronous, true, READ_BUSY_TIMEOUT).map(Mutex::new))
            .collect::<Result<Vec<_>, _>>()?;
        let (writes, write_queue) = mpsc::channel(WRITE_QUEUE);
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || run_writer(writer, write_queue, checkpointer, observer.as_ref()))
            .map_err(|err| StoreError::Unavailable(format!("cannot start the writer: {err}")))?;
        if existed {
            tracing::info!(path = %path.display(), "token store opened");
        } else {
            tracing::info!(path = %path.display(), "token store created");
        }
        Ok(Self {
            writes,
            readers,
            next_reader: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
        })
    }

    /// Submits a write and reports whether it changed anything.
    async fn submit(&self, op: WriterOp) -> Result<bool, StoreError> {
        Ok(match self.submit_for(op).await? {
            Outcome::Changed(changed) => changed,
            Outcome::Attempt(_) => true,
            Outcome::Deleted(rows) => rows.total() > 0,
            Outcome::Refresh(found) => found.is_some(),
            Outcome::Presented(rotation) => {
                matches!(rotation, Ok(PresentedRotation::Rotated { .. }))
            }
            Outcome::Registered(registration) => registration == Registration::Registered,
        })
    }

    /// Queues a write. A caller that goes away while it waits does not undo it: the write
    /// commits (or fails) with its batch, and only the answer is lost.
    async fn submit_for(&self, op: WriterOp) -> Result<Outcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.writes
            .send(WriterJob { op, reply })
            .await
            .map_err(|_| closed())?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the token store writer stopped".into()))?
    }

    /// A read the writer answers, within [`WRITER_READ_TIMEOUT`].
    async fn ask_writer(&self, op: WriterOp) -> Result<Outcome, StoreError> {
        tokio::time::timeout(WRITER_READ_TIMEOUT, self.submit_for(op))
            .await
            .unwrap_or_else(|_| {
                Err(StoreError::Unavailable(format!(
                    "the token store writer did not answer within {} s",
                    WRITER_READ_TIMEOUT.as_secs()
                )))
            })
    }

    /// Runs `read` on a free read connection (waiting for one only when all are taken, which
    /// takes more concurrent reads than the runtime has threads). No await while one is held.
    fn read<T>(
        &self,
        read: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(closed());
        }
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        let count = self.readers.len();
        for offset in 0..count {
            let Some(slot) = self.readers.get((start + offset) % count) else {
                continue;
            };
            match slot.try_lock() {
                Ok(conn) => return read(&conn),
                // A read that panicked cannot have left the connection half-way: SQLite
                // resets its statements.
                Err(TryLockError::Poisoned(poisoned)) => return read(&poisoned.into_inner()),
                Err(TryLockError::WouldBlock) => {}
            }
        }
        let slot = self
            .readers
            .get(start % count)
            .ok_or_else(|| StoreError::Unavailable("no read connection".into()))?;
        let conn = slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        read(&conn)
    }
}

/// Applies the pending migrations through sqlx's migrator (its `_sqlx_migrations` table is
/// what `tokengate migrate` and the PostgreSQL store read too).
async fn migrate(path: &Path) -> Result<(), StoreError> {
    let options = SqliteConnectOptions::from_str("sqlite://")
        .map_err(|err| StoreError::Backend(Box::new(err)))?
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(BUSY_TIMEOUT);
    let mut conn = SqliteConnection::connect_with(&options)
        .await
        .map_err(|err| StoreError::Unavailable(format!("cannot open {}: {err}", path.display())))?;
    let migrated = MIGRATOR
        .run(&mut conn)
        .await
        .map_err(|err| StoreError::Backend(Box::new(err)));
    if let Err(err) = conn.close().await {
        tracing::warn!(error = %err, "closing the migration connection");
    }
    migrated
}

/// Copies the write-ahead log into the database file on a thread of its own. A checkpoint
/// writes every page again and fsyncs the file; done by the writer (SQLite's automatic
/// checkpoint), it stalled every commit queued behind it for as long. PASSIVE never waits for
/// the writer or the readers: it copies what it can and the next pass copies the rest.
struct Checkpointer {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    fn start(conn: Connection) -> Result<Self, StoreError> {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || {
                let mut failures: u32 = 0;
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(CHECKPOINT_INTERVAL)
                {
                    match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                        Ok(()) => failures = 0,
                        Err(err) => {
                            if failures.is_multiple_of(CHECKPOINT_FAILURES_PER_LOG) {
                                tracing::warn!(error = %err, failed_in_a_row = failures + 1, "token store checkpoint failed");
                            }
                            failures = failures.saturating_add(1);
                        }
                    }
                }
            })
            .map_err(|err| {
                StoreError::Unavailable(format!("cannot start the checkpoint thread: {err}"))
            })?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run_writer(
    mut conn: Connection,
    mut queue: mpsc::Receiver<WriterJob>,
    checkpointer: Checkpointer,
    observer: &dyn StoreObserver,
) {
    let mut batch: Vec<WriterJob> = Vec::with_capacity(MAX_BATCH);
    let mut shutting_down = false;
    while !shutting_down {
        let Some(first) = queue.blocking_recv() else {
            break;
        };
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        answer_reads(&conn, &mut batch);
        if batch.is_empty() {
            continue;
        }
        shutting_down = batch.iter().any(|job| matches!(job.op, WriterOp::Shutdown));
        match apply_batch(&mut conn, &mut batch) {
            Ok(outcomes) => {
                observer.committed_batch(outcomes.iter().flatten().filter(|o| o.wrote()).count());
                for (job, outcome) in batch.drain(..).zip(outcomes) {
                    if let Some(outcome) = outcome {
                        let _ = job.reply.send(Ok(outcome));
                    }
                }
            }
            Err(err) => {
                // A failed ROLLBACK would leave the connection inside the transaction, and
                // every later batch would fail to begin.
                if !conn.is_autocommit() {
                    if let Err(rollback) = conn.execute_batch("ROLLBACK") {
                        tracing::error!(error = %rollback, "token store rollback failed");
                    }
                }
                tracing::error!(error = %err, writes = batch.len(), "token store commit failed; batch rolled back");
                for job in batch.drain(..) {
                    let _ = job.reply.send(Err(batch_error(&err)));
                }
            }
        }
    }
    // Writes queued behind the shutdown are answered "stopped" by dropping them.
    queue.close();
    // Stopped before the writer's connection closes, so no checkpoint runs after it; the read
    // connections close with the store, and the last to close checkpoints the whole log.
    drop(checkpointer);
    if let Err((_, err)) = conn.close() {
        tracing::warn!(error = %err, "closing the token store writer");
    }
}

/// Answers the reads among `batch` and takes them out of it. They run on the writer's connection,
/// whose page cache stays valid (it is the only writer), between two commits: a read connection
/// finds its cache stale after every commit and reads the pages again from the files, which made
/// a refresh token's lookup cost as much as its rotation.
fn answer_reads(conn: &Connection, batch: &mut Vec<WriterJob>) {
    let is_read = |op: &WriterOp| matches!(op, WriterOp::FindRefresh(_) | WriterOp::Ping);
    if !batch.iter().any(|job| is_read(&job.op)) {
        return;
    }
    // The writes keep their order: of two writes to one row, the first queued is applied first.
    let (reads, writes): (Vec<_>, Vec<_>) = batch.drain(..).partition(|job| is_read(&job.op));
    batch.extend(writes);
    // Still inside a transaction whose rollback failed: its rows were never committed.
    let in_failed_transaction = !conn.is_autocommit();
    for job in reads {
        if job.reply.is_closed() {
            continue;
        }
        let answer = if in_failed_transaction {
            Err(StoreError::Unavailable(
                "the token store writer could not roll back".into(),
            ))
        } else {
            match job.op {
                WriterOp::FindRefresh(id) => query_one(
                    conn,
                    &tokens::FIND_REFRESH,
                    [id.0.as_slice()],
                    decode_refresh,
                )
                .map(Outcome::Refresh),
                _ => Ok(Outcome::Changed(true)),
            }
        };
        let _ = job.reply.send(answer);
    }
}

/// Applies a batch in one transaction; `None` for a write left out because its caller had
/// gone away.
fn apply_batch(
    conn: &mut Connection,
    batch: &mut [WriterJob],
) -> Result<Vec<Option<Outcome>>, rusqlite::Error> {
    // IMMEDIATE takes the write lock up front: a deferred transaction that reads before it
    // writes fails at once with SQLITE_BUSY when another process (a second server on the same
    // file, the CLI) wrote meanwhile, instead of waiting out busy_timeout. A transaction
    // dropped before its commit (an error) is rolled back.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Checked once the lock is ours, after any wait for it: a caller that went away meanwhile
    // (a client that hung up because the store was slow) never hears the outcome. Writing it
    // anyway would spend a refresh token behind the client's back, and its retry would look
    // like reuse and revoke the grant; left out, it was never written and the retry works.
    let outcomes = batch
        .iter_mut()
        .map(|job| {
            if job.reply.is_closed() {
                return Ok(None);
            }
            match &mut job.op {
                WriterOp::RotatePresented { id, now, successor } => {
                    rotate_presented_in(&tx, id, *now, successor.take())
                        .map(|rotation| Some(Outcome::Presented(rotation)))
                }
                op => apply(&tx, op).map(Some),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    tx.commit()?;
    Ok(outcomes)
}

/// One step of a login attempt (see `store::attempt_steps`) inside the writer's transaction.
fn attempt_in(
    conn: &Connection,
    username: &str,
    source: &str,
    every_address: &str,
    step: AttemptStep,
    now: i64,
    policy: LockoutPolicy,
) -> Result<Attempt, rusqlite::Error> {
    let mut rows = AttemptRows {
        source: None,
        all: policy.counts_every_address().then_some(None),
    };
    let mut select = conn.prepare_cached(lockouts::SELECT_ROWS)?;
    let mut found = select.query(params![username, source, every_address])?;
    while let Some(row) = found.next()? {
        let values: FailureRow = (row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?);
        let row_source: String = row.get(0)?;
        if row_source == source {
            rows.source = Some(values);
        } else if let Some(all) = rows.all.as_mut() {
            *all = Some(values);
        }
    }
    let (verdict, changes) = attempt_steps(rows, step, now, policy);
    change_failures(conn, username, source, changes.source)?;
    if let Some(change) = changes.all {
        change_failures(conn, username, every_address, change)?;
    }
    Ok(verdict)
}

fn change_failures(
    conn: &Connection,
    username: &str,
    source: &str,
    change: RowChange,
) -> Result<(), rusqlite::Error> {
    match change {
        RowChange::Keep => {}
        RowChange::Delete => {
            conn.prepare_cached(lockouts::DELETE_ROW)?
                .execute(params![username, source])?;
        }
        RowChange::Store((failures, window_start, locked_until, pending)) => {
            conn.prepare_cached(lockouts::UPSERT_ROW)?.execute(params![
                username,
                source,
                failures,
                window_start,
                locked_until,
                pending
            ])?;
        }
    }
    Ok(())
}

/// Applies one write inside the batch's transaction.
fn apply(conn: &Connection, op: &WriterOp) -> Result<Outcome, rusqlite::Error> {
    Ok(Outcome::Changed(match op {
        WriterOp::Attempt {
            username,
            source,
            every_address,
            step,
            now,
            policy,
        } => {
            return Ok(Outcome::Attempt(attempt_in(
                conn,
                username,
                source,
                every_address,
                *step,
                *now,
                *policy,
            )?))
        }
        WriterOp::Purge(limits) => return Ok(Outcome::Deleted(purge(conn, *limits)?)),
        WriterOp::Create(tokens) => {
            insert_tokens(conn, tokens)?;
            true
        }
        WriterOp::Rotate { old, now, new } => {
            let replaced_by = new.refresh.as_ref().map(|r| r.token.id.0.as_slice());
            let rotated = conn
                .prepare_cached(&tokens::SPEND_REFRESH)?
                .execute(params![now, replaced_by, old.0.as_slice()])?
                == 1;
            if rotated {
                insert_tokens(conn, new)?;
            }
            rotated
        }
        WriterOp::CreateCode(code) => {
            conn.prepare_cached(tokens::INSERT_CODE)?.execute(params![
                code.digest.0.as_slice(),
                code.client_id,
                code.redirect_uri,
                code.code_challenge,
                code.username,
                code.scope,
                code.issued_at,
                code.expires_at
            ])?;
            true
        }
        WriterOp::CreateSession(session) => {
            conn.prepare_cached(tokens::INSERT_SESSION)?
                .execute(params![
                    session.digest.0.as_slice(),
                    session.username,
                    session.started.0.as_slice(),
                    session.expires_at
                ])?;
            true
        }
        WriterOp::DeleteSession(digest) => {
            conn.prepare_cached(tokens::DELETE_SESSION)?
                .execute(params![digest.0.as_slice()])?
                == 1
        }
        WriterOp::SaveConsent(consent) => {
            conn.prepare_cached(tokens::SAVE_CONSENT)?.execute(params![
                consent.username,
                consent.client_id,
                consent.scope,
                consent.granted.0.as_slice()
            ])?;
            true
        }
        WriterOp::RedeemCode { digest, now, new } => {
            let redeemed = conn.prepare_cached(tokens::REDEEM_CODE)?.execute(params![
                now,
                new.access.family_id.0.as_slice(),
                digest.0.as_slice()
            ])? == 1;
            if redeemed {
                insert_tokens(conn, new)?;
            }
            redeemed
        }
        WriterOp::RevokeAccess { id, now } => {
            conn.prepare_cached(tokens::REVOKE_ACCESS)?
                .execute(params![now, id.0.as_slice()])?
                == 1
        }
        WriterOp::RevokeFamily { family_id, now } => {
            conn.prepare_cached(tokens::REVOKE_FAMILY)?
                .execute(params![family_id.0.as_slice(), now])?
                == 1
        }
        WriterOp::RevokeSubject {
            kind,
            name,
            not_before,
            now,
        } => {
            conn.prepare_cached(&tokens::UPSERT_MARK)?.execute(params![
                kind.as_str(),
                name,
                not_before.0.as_slice(),
                now
            ])? == 1
        }
        WriterOp::ClearFailures { username } => {
            conn.prepare_cached(lockouts::CLEAR_USER)?
                .execute(params![username])?
                > 0
        }
        WriterOp::Directory(change) => change_directory(conn, change)?,
        WriterOp::Registration(change) => return change_registration(conn, change),
        WriterOp::Shutdown => true,
        // Answered before the batch by `answer_reads`.
        WriterOp::FindRefresh(_) | WriterOp::Ping => false,
        // Applied by `apply_batch`, which hands its successor over.
        WriterOp::RotatePresented { .. } => false,
    }))
}

/// Reads refresh token `id` and, if it is live and `successor` returns its replacement, spends it
/// and records the replacement, inside the batch's transaction. The writer is the store's only
/// writer and holds the write lock, so nothing changes the row between the read and the write.
fn rotate_presented_in(
    conn: &Connection,
    id: &TokenId,
    now: i64,
    successor: Option<Successor>,
) -> Result<Result<PresentedRotation, StoreError>, rusqlite::Error> {
    let found = conn
        .prepare_cached(&tokens::FIND_REFRESH)?
        .query_row([id.0.as_slice()], |row| Ok(decode_refresh(row)))
        .optional()?;
    let old = match found {
        None => return Ok(Ok(PresentedRotation::Unknown)),
        Some(Err(corrupt)) => return Ok(Err(corrupt)),
        Some(Ok(old)) => old,
    };
    let Some(new) = successor.and_then(|successor| successor_of(&old, successor)) else {
        return Ok(Ok(PresentedRotation::Kept(old)));
    };
    let replaced_by = new.refresh.as_ref().map(|r| r.token.id.0.as_slice());
    let spent = conn
        .prepare_cached(tokens::SPEND_READ_REFRESH)?
        .execute(params![now, replaced_by, id.0.as_slice()])?;
    // Always 1 after the read above; if that ever changes, no second live token is written.
    if spent != 1 {
        return Ok(Ok(PresentedRotation::Kept(old)));
    }
    insert_tokens(conn, &new)?;
    Ok(Ok(PresentedRotation::Rotated {
        old,
        new: Box::new(new),
    }))
}

/// Applies a user or client edit; whether it changed a row.
fn change_directory(conn: &Connection, change: &DirectoryChange) -> Result<bool, rusqlite::Error> {
    let changed = match change {
        DirectoryChange::AddUser { user, now } => conn
            .prepare_cached(directory::INSERT_USER)?
            .execute(params![
                user.name,
                user.password_hash,
                user.disabled,
                Role::join(&user.roles),
                now
            ])?,
        DirectoryChange::RemoveUser(name) => conn
            .prepare_cached(directory::DELETE_USER)?
            .execute(params![name])?,
        DirectoryChange::UserPassword {
            name,
            password_hash,
        } => conn
            .prepare_cached(directory::SET_USER_PASSWORD)?
            .execute(params![password_hash, name])?,
        DirectoryChange::UserRoles { name, roles } => conn
            .prepare_cached(directory::SET_USER_ROLES)?
            .execute(params![roles, name])?,
        DirectoryChange::UserDisabled { name, disabled } => conn
            .prepare_cached(directory::SET_USER_DISABLED)?
            .execute(params![disabled, name])?,
        DirectoryChange::AddClient { client, now } => conn
            .prepare_cached(directory::INSERT_CLIENT)?
            .execute(params![
                client.id,
                client.secret_hash,
                client.grant_types,
                client.scopes,
                client.access_token_validity_period,
                client.application_access_token_validity_period,
                client.refresh_token_validity_period,
                client.introspect,
                client.token_format,
                client.audience,
                client.disabled,
                client.public,
                client.redirect_uris,
                client.require_consent,
                client.name,
                client.owner,
                client.previous_secret_hash,
                client.previous_secret_until,
                now
            ])?,
        DirectoryChange::RemoveClient(id) => conn
            .prepare_cached(directory::DELETE_CLIENT)?
            .execute(params![id])?,
        DirectoryChange::ClientDisabled { id, disabled } => conn
            .prepare_cached(directory::SET_CLIENT_DISABLED)?
            .execute(params![disabled, id])?,
    };
    Ok(changed == 1)
}

/// Applies a registration write (see `RegistrationStore`).
fn change_registration(
    conn: &Connection,
    change: &RegistrationChange,
) -> Result<Outcome, rusqlite::Error> {
    let changed = match change {
        RegistrationChange::CreateInitial { token, now } => conn
            .prepare_cached(registration::INSERT_INITIAL_TOKEN)?
            .execute(params![
                token.digest.0.as_slice(),
                token.expires_at,
                token.uses,
                now
            ])?,
        RegistrationChange::Register {
            client,
            registration,
            initial,
            now,
        } => {
            // The other writes of the batch share the transaction: a refused registration
            // undoes only its own statements.
            conn.execute_batch("SAVEPOINT registration")?;
            let outcome = register_in(conn, client, registration, initial.as_ref(), *now)?;
            if outcome != Registration::Registered {
                conn.execute_batch("ROLLBACK TO registration")?;
            }
            conn.execute_batch("RELEASE registration")?;
            return Ok(Outcome::Registered(outcome));
        }
        RegistrationChange::Update {
            client,
            token_endpoint_auth_method,
            read_secret_hash,
        } => {
            let changed = conn
                .prepare_cached(registration::UPDATE_CLIENT)?
                .execute(params![
                    client.secret_hash,
                    client.grant_types,
                    client.scopes,
                    client.access_token_validity_period,
                    client.application_access_token_validity_period,
                    client.refresh_token_validity_period,
                    client.introspect,
                    client.token_format,
                    client.audience,
                    client.public,
                    client.redirect_uris,
                    client.require_consent,
                    client.name,
                    client.id,
                    read_secret_hash
                ])?;
            // Only with the client: a refused update changes nothing.
            if changed == 1 {
                conn.prepare_cached(registration::SET_REGISTRATION_AUTH_METHOD)?
                    .execute(params![token_endpoint_auth_method, client.id])?;
            }
            changed
        }
        RegistrationChange::Delete(id) => {
            conn.prepare_cached(registration::DELETE_REGISTRATION)?
                .execute(params![id])?;
            conn.prepare_cached(directory::DELETE_CLIENT)?
                .execute(params![id])?
        }
        RegistrationChange::RevokeInitial(digest) => conn
            .prepare_cached(registration::DELETE_INITIAL_TOKEN)?
            .execute(params![digest.0.as_slice()])?,
        RegistrationChange::ReplaceSecret {
            client_id,
            read_secret_hash,
            secret_hash,
            previous,
        } => conn
            .prepare_cached(registration::REPLACE_CLIENT_SECRET)?
            .execute(params![
                secret_hash,
                previous.as_ref().map(|p| p.hash.as_str()),
                previous.as_ref().map(|p| p.until),
                client_id,
                read_secret_hash
            ])?,
    };
    Ok(Outcome::Changed(changed == 1))
}

/// The statements of one registration, inside a savepoint its caller rolls back unless it
/// answers `Registered`.
fn register_in(
    conn: &Connection,
    client: &ClientRow,
    registration: &RegistrationRecord,
    initial: Option<&SecretDigest>,
    now: i64,
) -> Result<Registration, rusqlite::Error> {
    if let Some(initial) = initial {
        let spent = conn
            .prepare_cached(registration::SPEND_INITIAL_TOKEN)?
            .execute(params![initial.0.as_slice(), now])?
            == 1;
        if !spent {
            return Ok(Registration::InitialTokenRefused);
        }
    }
    let added = change_directory(
        conn,
        &DirectoryChange::AddClient {
            client: Box::new(client.clone()),
            now,
        },
    )?;
    if !added {
        return Ok(Registration::IdTaken);
    }
    conn.prepare_cached(registration::UPSERT_REGISTRATION)?
        .execute(params![
            client.id,
            registration.token.0.as_slice(),
            registration.token_endpoint_auth_method,
            registration.registered_at
        ])?;
    Ok(Registration::Registered)
}

/// One bounded purge batch per table (see `TokenStore::purge`). Returns the rows deleted.
fn purge(conn: &Connection, limits: PurgeLimits) -> Result<PurgedRows, rusqlite::Error> {
    let batch = i64::from(limits.batch);
    let rows = |changed: usize| u64::try_from(changed).unwrap_or(u64::MAX);
    let [access, refresh] = purge::TOKENS_SQLITE;
    let tokens = params![limits.expired_before, batch];
    Ok(PurgedRows {
        access_tokens: rows(conn.prepare_cached(access)?.execute(tokens)?),
        refresh_tokens: rows(conn.prepare_cached(refresh)?.execute(tokens)?),
        revoked_families: rows(
            conn.prepare_cached(&purge::REVOCATIONS_SQLITE)?
                .execute(params![i64::MAX, batch])?,
        ),
        login_failures: rows(
            conn.prepare_cached(purge::LOCKOUTS_SQLITE)?
                .execute(params![limits.failures_before, limits.now, batch])?,
        ),
        authorization_codes: rows(conn.prepare_cached(purge::CODES_SQLITE)?.execute(tokens)?),
        login_sessions: rows(
            conn.prepare_cached(purge::SESSIONS_SQLITE)?
                .execute(tokens)?,
        ),
        initial_access_tokens: rows(
            conn.prepare_cached(purge::INITIAL_TOKENS_SQLITE)?
                .execute(tokens)?,
        ),
        ..PurgedRows::default()
    })
}

fn insert_token(conn: &Connection, sql: &str, token: &TokenRecord) -> Result<(), rusqlite::Error> {
    conn.prepare_cached(sql)?.execute(params![
        token.id.0.as_slice(),
        token.secret_digest.0.as_slice(),
        token.client_id,
        token.username,
        token.scope,
        token.family_id.0.as_slice(),
        token.issued_at,
        token.expires_at
    ])?;
    Ok(())
}

fn insert_tokens(conn: &Connection, new: &NewTokens) -> Result<(), rusqlite::Error> {
    insert_token(conn, tokens::INSERT_ACCESS, &new.access)?;
    if let Some(refresh) = &new.refresh {
        insert_token(conn, tokens::INSERT_REFRESH, &refresh.token)?;
    }
    Ok(())
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_owned())
}

fn blob<'row>(row: &'row Row<'_>, column: usize, name: &str) -> Result<&'row [u8], StoreError> {
    row.get_ref(column)
        .map_err(backend)?
        .as_blob()
        .map_err(|_| corrupt(name))
}

fn token_id(row: &Row<'_>, column: usize, name: &str) -> Result<TokenId, StoreError> {
    TokenId::from_slice(blob(row, column, name)?).ok_or_else(|| corrupt(name))
}

/// A token row as `revocation::TOKEN_COLUMNS` lists it, read by position (looking columns up by name
/// was a measurable part of a read).
fn decode_token(row: &Row<'_>) -> Result<TokenRecord, StoreError> {
    Ok(TokenRecord {
        id: token_id(row, 0, "id")?,
        secret_digest: SecretDigest::from_slice(blob(row, 1, "secret_sha256")?)
            .ok_or_else(|| corrupt("secret_sha256"))?,
        client_id: row.get(2).map_err(backend)?,
        username: row.get(3).map_err(backend)?,
        scope: row.get(4).map_err(backend)?,
        family_id: token_id(row, 5, "family_id")?,
        issued_at: row.get(6).map_err(backend)?,
        expires_at: row.get(7).map_err(backend)?,
        revoked_at: row.get(8).map_err(backend)?,
    })
}

/// A token row, then `spent_at` and `replaced_by` (see `sql::tokens::FIND_REFRESH`).
fn decode_refresh(row: &Row<'_>) -> Result<RefreshTokenRecord, StoreError> {
    let replaced_by = match row.get_ref(10).map_err(backend)?.as_blob_or_null() {
        Ok(Some(bytes)) => Some(TokenId::from_slice(bytes).ok_or_else(|| corrupt("replaced_by"))?),
        Ok(None) => None,
        Err(_) => return Err(corrupt("replaced_by")),
    };
    Ok(RefreshTokenRecord {
        token: decode_token(row)?,
        spent_at: row.get(9).map_err(backend)?,
        replaced_by,
    })
}

fn decode_user(row: &Row<'_>) -> Result<User, StoreError> {
    let roles: String = row.get("roles").map_err(backend)?;
    // A role this version does not know grants nothing.
    let (roles, _) = Role::parse_list(roles.split_whitespace());
    Ok(User {
        name: row.get("name").map_err(backend)?,
        password_hash: row.get("password_hash").map_err(backend)?,
        disabled: row.get("disabled").map_err(backend)?,
        roles,
    })
}

/// A row of `tokens::FIND_CODE`, by position.
fn decode_code(row: &Row<'_>) -> Result<AuthorizationCodeRecord, StoreError> {
    let digest = SecretDigest::from_slice(blob(row, 0, "digest")?)
        .ok_or_else(|| corrupt("authorization code digest"))?;
    let family_id = match row.get_ref(9).map_err(backend)? {
        rusqlite::types::ValueRef::Null => None,
        _ => Some(token_id(row, 9, "authorization code family_id")?),
    };
    Ok(AuthorizationCodeRecord {
        digest,
        client_id: row.get(1).map_err(backend)?,
        redirect_uri: row.get(2).map_err(backend)?,
        code_challenge: row.get(3).map_err(backend)?,
        username: row.get(4).map_err(backend)?,
        scope: row.get(5).map_err(backend)?,
        issued_at: row.get(6).map_err(backend)?,
        expires_at: row.get(7).map_err(backend)?,
        redeemed_at: row.get(8).map_err(backend)?,
        family_id,
    })
}

fn decode_client(row: &Row<'_>) -> Result<ClientRow, StoreError> {
    Ok(ClientRow {
        id: row.get("id").map_err(backend)?,
        secret_hash: row.get("secret_hash").map_err(backend)?,
        grant_types: row.get("grant_types").map_err(backend)?,
        scopes: row.get("scopes").map_err(backend)?,
        access_token_validity_period: row.get("access_token_validity_period").map_err(backend)?,
        application_access_token_validity_period: row
            .get("application_access_token_validity_period")
            .map_err(backend)?,
        refresh_token_validity_period: row.get("refresh_token_validity_period").map_err(backend)?,
        introspect: row.get("introspect").map_err(backend)?,
        token_format: row.get("token_format").map_err(backend)?,
        audience: row.get("audience").map_err(backend)?,
        disabled: row.get("disabled").map_err(backend)?,
        public: row.get("public").map_err(backend)?,
        redirect_uris: row.get("redirect_uris").map_err(backend)?,
        require_consent: row.get("require_consent").map_err(backend)?,
        name: row.get("name").map_err(backend)?,
        owner: row.get("owner").map_err(backend)?,
        previous_secret_hash: row.get("previous_secret_hash").map_err(backend)?,
        previous_secret_until: row.get("previous_secret_until").map_err(backend)?,
    })
}

/// The first row of `sql` with `params`, decoded; `Ok(None)` when there is none.
fn query_one<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    decode: impl FnOnce(&Row<'_>) -> Result<T, StoreError>,
) -> Result<Option<T>, StoreError> {
    let mut statement = conn.prepare_cached(sql).map_err(backend)?;
    let mut rows = statement.query(params).map_err(backend)?;
    match rows.next().map_err(backend)? {
        Some(row) => decode(row).map(Some),
        None => Ok(None),
    }
}

/// Every row of `sql`, decoded.
fn query_all<T>(
    conn: &Connection,
    sql: &str,
    decode: impl Fn(&Row<'_>) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let mut statement = conn.prepare_cached(sql).map_err(backend)?;
    let mut rows = statement.query([]).map_err(backend)?;
    let mut all = Vec::new();
    while let Some(row) = rows.next().map_err(backend)? {
        all.push(decode(row)?);
    }
    Ok(all)
}

#[async_trait]
impl TokenStore for SqliteTokenStore {
    async fn create_tokens(&self, tokens: NewTokens) -> Result<(), StoreError> {
        self.submit(WriterOp::Create(tokens)).await.map(|_| ())
    }

    async fn revoke_access_token(&self, id: &TokenId, now: i64) -> Result<bool, StoreError> {
        self.submit(WriterOp::RevokeAccess { id: *id, now }).await
    }

    async fn revoke_family(&self, family_id: &TokenId, now: i64) -> Result<bool, StoreError> {
        self.submit(WriterOp::RevokeFamily {
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
        self.submit(WriterOp::RevokeSubject {
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
        match self.ask_writer(WriterOp::FindRefresh(*id)).await? {
            Outcome::Refresh(found) => Ok(found),
            _ => Err(wrong_outcome()),
        }
    }

    async fn find_access_token(
        &self,
        id: &TokenId,
    ) -> Result<Option<AccessTokenRecord>, StoreError> {
        self.read(|conn| query_one(conn, &tokens::FIND_ACCESS, [id.0.as_slice()], decode_token))
    }

    async fn rotate_refresh_token(
        &self,
        old: &TokenId,
        now: i64,
        new: NewTokens,
    ) -> Result<Rotation, StoreError> {
        let rotated = self
            .submit(WriterOp::Rotate {
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

    /// One writer job: the read, the successor and the write in the same transaction, so a
    /// refresh waits for one commit instead of a read round and then a commit.
    async fn rotate_presented(
        &self,
        id: &TokenId,
        now: i64,
        successor: Successor,
    ) -> Result<PresentedRotation, StoreError> {
        let op = WriterOp::RotatePresented {
            id: *id,
            now,
            successor: Some(successor),
        };
        match self.submit_for(op).await? {
            Outcome::Presented(rotation) => rotation,
            _ => Err(wrong_outcome()),
        }
    }

    async fn create_authorization_code(
        &self,
        code: AuthorizationCodeRecord,
    ) -> Result<(), StoreError> {
        self.submit(WriterOp::CreateCode(Box::new(code)))
            .await
            .map(|_| ())
    }

    async fn find_authorization_code(
        &self,
        digest: &SecretDigest,
    ) -> Result<Option<AuthorizationCodeRecord>, StoreError> {
        self.read(|conn| query_one(conn, tokens::FIND_CODE, [digest.0.as_slice()], decode_code))
    }

    async fn redeem_authorization_code(
        &self,
        digest: &SecretDigest,
        now: i64,
        new: NewTokens,
    ) -> Result<Redemption, StoreError> {
        let redeemed = self
            .submit(WriterOp::RedeemCode {
                digest: *digest,
                now,
                new,
            })
            .await?;
        Ok(if redeemed {
            Redemption::Redeemed
        } else {
            Redemption::Refused
        })
    }

    async fn create_login_session(&self, session: LoginSessionRecord) -> Result<(), StoreError> {
        self.submit(WriterOp::CreateSession(Box::new(session)))
            .await
            .map(|_| ())
    }

    async fn find_login_session(
        &self,
        digest: &SecretDigest,
        now: i64,
    ) -> Result<Option<String>, StoreError> {
        self.read(|conn| {
            query_one(
                conn,
                tokens::FIND_SESSION,
                params![digest.0.as_slice(), now],
                |row| row.get(0).map_err(backend),
            )
        })
    }

    async fn delete_login_session(&self, digest: &SecretDigest) -> Result<bool, StoreError> {
        self.submit(WriterOp::DeleteSession(*digest)).await
    }

    async fn save_consent(&self, consent: ConsentRecord) -> Result<(), StoreError> {
        self.submit(WriterOp::SaveConsent(Box::new(consent)))
            .await
            .map(|_| ())
    }

    async fn find_consent(
        &self,
        username: &str,
        client_id: &str,
    ) -> Result<Option<String>, StoreError> {
        self.read(|conn| {
            query_one(
                conn,
                tokens::FIND_CONSENT,
                params![username, client_id],
                |row| row.get(0).map_err(backend),
            )
        })
    }

    async fn purge(&self, limits: PurgeLimits) -> Result<PurgedRows, StoreError> {
        match self.submit_for(WriterOp::Purge(limits)).await? {
            Outcome::Deleted(rows) => Ok(rows),
            _ => Err(wrong_outcome()),
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        if self.writes.is_closed() {
            return Err(StoreError::Unavailable(
                "the token store writer stopped".into(),
            ));
        }
        self.ask_writer(WriterOp::Ping).await?;
        self.read(|conn| {
            conn.prepare_cached("SELECT 1")
                .and_then(|mut select| select.query_row([], |_| Ok(())))
                .map_err(backend)
        })
    }

    async fn close(&self) {
        // Queued behind every write already accepted, so those still commit.
        let _ = self.submit(WriterOp::Shutdown).await;
        self.closed.store(true, Ordering::Relaxed);
    }
}

#[async_trait]
impl LockoutStore for SqliteTokenStore {
    async fn attempt_counted_in(
        &self,
        username: &str,
        source: &str,
        every_address: &'static str,
        step: AttemptStep,
        now: i64,
        policy: LockoutPolicy,
    ) -> Result<Attempt, StoreError> {
        let outcome = self
            .submit_for(WriterOp::Attempt {
                username: username.to_owned(),
                source: source.to_owned(),
                every_address,
                step,
                now,
                policy,
            })
            .await?;
        match outcome {
            Outcome::Attempt(attempt) => Ok(attempt),
            _ => Err(wrong_outcome()),
        }
    }

    async fn clear_failures(&self, username: &str) -> Result<bool, StoreError> {
        self.submit(WriterOp::ClearFailures {
            username: username.to_owned(),
        })
        .await
    }
}

#[async_trait]
impl Directory for SqliteTokenStore {
    async fn find_user(&self, name: &str) -> Result<Option<User>, StoreError> {
        self.read(|conn| query_one(conn, directory::FIND_USER, [name], decode_user))
    }

    async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        self.read(|conn| query_all(conn, directory::SELECT_USERS, decode_user))
    }

    async fn add_user(&self, user: &User, now: i64) -> Result<bool, StoreError> {
        let user = user.clone();
        self.submit(WriterOp::Directory(DirectoryChange::AddUser { user, now }))
            .await
    }

    async fn remove_user(&self, name: &str) -> Result<bool, StoreError> {
        self.submit(WriterOp::Directory(DirectoryChange::RemoveUser(
            name.to_owned(),
        )))
        .await
    }

    async fn set_user_password(&self, name: &str, password_hash: &str) -> Result<bool, StoreError> {
        self.submit(WriterOp::Directory(DirectoryChange::UserPassword {
            name: name.to_owned(),
            password_hash: password_hash.to_owned(),
        }))
        .await
    }

    async fn set_user_disabled(&self, name: &str, disabled: bool) -> Result<bool, StoreError> {
        let name = name.to_owned();
        self.submit(WriterOp::Directory(DirectoryChange::UserDisabled {
            name,
            disabled,
        }))
        .await
    }

    async fn set_user_roles(&self, name: &str, roles: &BTreeSet<Role>) -> Result<bool, StoreError> {
        self.submit(WriterOp::Directory(DirectoryChange::UserRoles {
            name: name.to_owned(),
            roles: Role::join(roles),
        }))
        .await
    }

    async fn clients_revision(&self) -> Result<i64, StoreError> {
        self.read(|conn| {
            query_one(conn, directory::SELECT_CLIENTS_REVISION, [], |row| {
                row.get(0).map_err(backend)
            })?
            .ok_or_else(|| corrupt("directory_revisions has no clients row"))
        })
    }

    async fn list_clients(&self) -> Result<Vec<ClientRow>, StoreError> {
        self.read(|conn| query_all(conn, directory::SELECT_CLIENTS, decode_client))
    }

    async fn client_exists(&self, id: &str) -> Result<bool, StoreError> {
        self.read(|conn| Ok(query_one(conn, directory::CLIENT_EXISTS, [id], |_| Ok(()))?.is_some()))
    }

    async fn add_client(&self, client: &Client, now: i64) -> Result<bool, StoreError> {
        let client = Box::new(ClientRow::from_client(client));
        self.submit(WriterOp::Directory(DirectoryChange::AddClient {
            client,
            now,
        }))
        .await
    }

    async fn remove_client(&self, id: &str) -> Result<bool, StoreError> {
        self.submit(WriterOp::Directory(DirectoryChange::RemoveClient(
            id.to_owned(),
        )))
        .await
    }

    async fn set_client_disabled(&self, id: &str, disabled: bool) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.submit(WriterOp::Directory(DirectoryChange::ClientDisabled {
            id,
            disabled,
        }))
        .await
    }
}

#[async_trait]
impl RegistrationStore for SqliteTokenStore {
    async fn create_initial_token(
        &self,
        token: &InitialAccessTokenRecord,
        now: i64,
    ) -> Result<(), StoreError> {
        let token = token.clone();
        self.submit(WriterOp::Registration(RegistrationChange::CreateInitial {
            token,
            now,
        }))
        .await
        .map(|_| ())
    }

    async fn initial_token_usable(
        &self,
        digest: &SecretDigest,
        now: i64,
    ) -> Result<bool, StoreError> {
        self.read(|conn| {
            Ok(query_one(
                conn,
                registration::FIND_INITIAL_TOKEN,
                params![digest.0.as_slice(), now],
                |_| Ok(()),
            )?
            .is_some())
        })
    }

    async fn register_client(
        &self,
        client: &Client,
        registration: &RegistrationRecord,
        initial: Option<&SecretDigest>,
        now: i64,
    ) -> Result<Registration, StoreError> {
        let change = RegistrationChange::Register {
            client: Box::new(ClientRow::from_client(client)),
            registration: Box::new(registration.clone()),
            initial: initial.copied(),
            now,
        };
        match self.submit_for(WriterOp::Registration(change)).await? {
            Outcome::Registered(registration) => Ok(registration),
            _ => Err(wrong_outcome()),
        }
    }

    async fn find_registration(
        &self,
        client_id: &str,
    ) -> Result<Option<RegistrationRecord>, StoreError> {
        self.read(|conn| {
            query_one(conn, registration::FIND_REGISTRATION, [client_id], |row| {
                Ok(RegistrationRecord {
                    token: SecretDigest::from_slice(blob(row, 0, "token_sha256")?)
                        .ok_or_else(|| corrupt("client_registrations.token_sha256"))?,
                    token_endpoint_auth_method: row.get(1).map_err(backend)?,
                    registered_at: row.get(2).map_err(backend)?,
                })
            })
        })
    }

    async fn update_registered_client(
        &self,
        client: &Client,
        token_endpoint_auth_method: &str,
        read_secret_hash: &str,
    ) -> Result<bool, StoreError> {
        self.submit(WriterOp::Registration(RegistrationChange::Update {
            client: Box::new(ClientRow::from_client(client)),
            token_endpoint_auth_method: token_endpoint_auth_method.to_owned(),
            read_secret_hash: read_secret_hash.to_owned(),
        }))
        .await
    }

    async fn delete_registered_client(&self, client_id: &str) -> Result<bool, StoreError> {
        self.submit(WriterOp::Registration(RegistrationChange::Delete(
            client_id.to_owned(),
        )))
        .await
    }

    async fn list_initial_tokens(&self) -> Result<Vec<InitialTokenRow>, StoreError> {
        self.read(|conn| {
            query_all(conn, registration::LIST_INITIAL_TOKENS, |row| {
                Ok(InitialTokenRow {
                    digest: SecretDigest::from_slice(blob(row, 0, "digest")?)
                        .ok_or_else(|| corrupt("initial access token digest"))?,
                    expires_at: row.get(1).map_err(backend)?,
                    uses_left: row.get(2).map_err(backend)?,
                    created_at: row.get(3).map_err(backend)?,
                })
            })
        })
    }

    async fn revoke_initial_token(&self, digest: &SecretDigest) -> Result<bool, StoreError> {
        self.submit(WriterOp::Registration(RegistrationChange::RevokeInitial(
            *digest,
        )))
        .await
    }

    async fn replace_client_secret(
        &self,
        client_id: &str,
        read_secret_hash: &str,
        secret_hash: &str,
        previous: Option<&PreviousSecret>,
    ) -> Result<bool, StoreError> {
        self.submit(WriterOp::Registration(RegistrationChange::ReplaceSecret {
            client_id: client_id.to_owned(),
            read_secret_hash: read_secret_hash.to_owned(),
            secret_hash: secret_hash.to_owned(),
            previous: previous.cloned(),
        }))
        .await
    }
}
