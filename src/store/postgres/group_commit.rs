//! Group commit of the token writes on PostgreSQL: the tokens concurrent requests create, the
//! refresh tokens they rotate and the tokens and grants they revoke leave together as one
//! statement, one round trip and one commit (one WAL flush), however many requests they come
//! from. Each caller hears its own outcome, and only once the commit holding its write is done.
//!
//! The statement is a set of data-modifying CTEs over arrays (`UNNEST`), outside any explicit
//! transaction, so it commits on its own and as a whole:
//! - the rotations are one `UPDATE … FROM` with the rotation's condition, `RETURNING` the ids
//!   it spent: a rotation won exactly when its old id comes back;
//! - a rotation's new tokens are inserted only if its old id was spent, so a losing rotation
//!   writes nothing;
//! - revocations return the rows they changed.
//!
//! A batch never holds two writes to the same row (two rotations of one refresh token, two
//! revocations of one token or grant): the later ones go in a round after the first, so each
//! is judged by the database against what the earlier committed, and of two rotations of one
//! token exactly one wins, as across nodes. A batch that fails for a reason one write may
//! cause (a constraint, a deadlock, a row lock held past `lock_timeout`) is retried one write
//! at a time, so that write fails alone; a database that is down, overloaded or too slow fails
//! every write of the batch, each told so. No write is reported done before its commit.

use std::collections::HashSet;
use std::sync::{Arc, LazyLock};

use sqlx::postgres::{PgConnection, PgPool};
use sqlx::Row as _;
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use super::batcher::Run;
use super::kept::Kept;
use super::{is_unavailable, OPERATION_TIMEOUT};
use crate::crypto::token::TokenId;
use crate::store::measured::StoreObserver;
use crate::store::model::{NewTokens, TokenRecord};
use crate::store::revocation::STILL_REDEEMABLE;
use crate::store::StoreError;

/// A token write, as the `TokenStore` methods make them.
pub(super) enum Write {
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
}

/// A write and where its outcome goes: whether it changed anything (a rotation of a spent
/// token, a revocation of a revoked one did not; a creation always does).
pub(super) struct WriteJob {
    pub(super) write: Write,
    pub(super) reply: oneshot::Sender<Result<bool, StoreError>>,
}

/// The row a write changes that another write of the same batch might change too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Row {
    Refresh(TokenId),
    Access(TokenId),
    Family(TokenId),
}

impl Write {
    fn row(&self) -> Option<Row> {
        match self {
            Self::Create(_) => None,
            Self::Rotate { old, .. } => Some(Row::Refresh(*old)),
            Self::RevokeAccess { id, .. } => Some(Row::Access(*id)),
            Self::RevokeFamily { family_id, .. } => Some(Row::Family(*family_id)),
        }
    }
}

/// `RETURNING` kinds of the statement's result rows.
const SPENT: i32 = 0;
const ACCESS_REVOKED: i32 = 1;
const FAMILY_REVOKED: i32 = 2;

/// The parts a batch's statement may have; a statement holds only those its writes need
/// (each part costs the database some set-up per execution, used or not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Parts(usize);

impl Parts {
    const ROTATIONS: usize = 1;
    const ACCESS: usize = 2;
    const REFRESH: usize = 4;
    const REVOKE_ACCESS: usize = 8;
    const REVOKE_FAMILY: usize = 16;
    const VARIANTS: usize = 32;

    fn has(self, part: usize) -> bool {
        self.0 & part != 0
    }
}

/// The insert of one token table's rows from arrays, `rotates` holding the old id of the
/// rotation a token belongs to (NULL for a plain creation): a losing rotation inserts nothing.
fn insert_from_arrays(table: &str, first: usize, after_rotations: bool) -> String {
    let p = |n: usize| format!("${}", first + n);
    let condition = if after_rotations {
        " WHERE t.rotates IS NULL OR t.rotates IN (SELECT s.id FROM spent s)"
    } else {
        ""
    };
    format!(
        "INSERT INTO {table} (id, secret_sha256, client_id, username, scope, family_id, \
         issued_at, expires_at) \
         SELECT t.id, t.secret_sha256, t.client_id, t.username, t.scope, t.family_id, \
                t.issued_at, t.expires_at \
         FROM UNNEST({}::bytea[], {}::bytea[], {}::text[], {}::text[], {}::text[], \
                     {}::bytea[], {}::int8[], {}::int8[], {}::bytea[]) \
              AS t(id, secret_sha256, client_id, username, scope, family_id, issued_at, \
                   expires_at, rotates){condition}",
        p(0),
        p(1),
        p(2),
        p(3),
        p(4),
        p(5),
        p(6),
        p(7),
        p(8)
    )
}

/// The statement for a batch with `parts`, its arrays bound in the order of the parts
/// (rotations: 3 arrays, access and refresh tokens: 9 each, access revocations and grant
/// revocations: 2 each). The same text for the same parts, so each connection prepares each
/// variant once.
///
/// Each row a rotation or revocation updates is found by a primary-key lookup per array
/// element (`LATERAL … OFFSET 0`, which the planner keeps as a lookup) and updated by its
/// address (`ctid`), so the one prepared plan is right for a table of any size: a join the
/// planner may pick while a table is small (a hash join over a scan of the whole table)
/// would stay in the prepared plan as the table grows. A row that another session changes
/// meanwhile (it spent the token, revoked it or purged the row) moves to a new address, and
/// the update then skips it: that write lost the race, as it should.
fn batch_sql(parts: Parts) -> String {
    let mut next = 1;
    let mut params = |count: usize| {
        let first = next;
        next += count;
        first
    };
    let mut ctes = Vec::new();
    let mut results = Vec::new();
    if parts.has(Parts::ROTATIONS) {
        let p = params(3);
        ctes.push(format!(
            "rotation AS ( \
               SELECT r.spent_now, r.successor, t.at \
               FROM UNNEST(${}::bytea[], ${}::int8[], ${}::bytea[]) \
                 AS r(old_id, spent_now, successor) \
               CROSS JOIN LATERAL ( \
                 SELECT refresh_tokens.ctid AS at FROM refresh_tokens \
                 WHERE refresh_tokens.id = r.old_id {STILL_REDEEMABLE} OFFSET 0) AS t \
             ), spent AS ( \
               UPDATE refresh_tokens SET spent_at = rotation.spent_now, \
                                         replaced_by = rotation.successor \
               FROM rotation WHERE refresh_tokens.ctid = rotation.at \
                 AND refresh_tokens.spent_at IS NULL AND refresh_tokens.revoked_at IS NULL \
               RETURNING refresh_tokens.id \
             )",
            p,
            p + 1,
            p + 2
        ));
        results.push(format!("SELECT {SPENT} AS kind, id FROM spent"));
    }
    let after_rotations = parts.has(Parts::ROTATIONS);
    if parts.has(Parts::ACCESS) {
        let sql = insert_from_arrays("access_tokens", params(9), after_rotations);
        ctes.push(format!("new_access AS ({sql})"));
    }
    if parts.has(Parts::REFRESH) {
        let sql = insert_from_arrays("refresh_tokens", params(9), after_rotations);
        ctes.push(format!("new_refresh AS ({sql})"));
    }
    if parts.has(Parts::REVOKE_ACCESS) {
        let p = params(2);
        ctes.push(format!(
            "revoked_access AS ( \
               UPDATE access_tokens SET revoked_at = v.revoked_now \
               FROM (SELECT v.revoked_now, t.at \
                     FROM UNNEST(${}::bytea[], ${}::int8[]) AS v(token_id, revoked_now) \
                     CROSS JOIN LATERAL ( \
                       SELECT access_tokens.ctid AS at FROM access_tokens \
                       WHERE access_tokens.id = v.token_id \
                         AND access_tokens.revoked_at IS NULL \
                       OFFSET 0) AS t) AS v \
               WHERE access_tokens.ctid = v.at AND access_tokens.revoked_at IS NULL \
               RETURNING access_tokens.id \
             )",
            p,
            p + 1
        ));
        results.push(format!(
            "SELECT {ACCESS_REVOKED} AS kind, id FROM revoked_access"
        ));
    }
    if parts.has(Parts::REVOKE_FAMILY) {
        let p = params(2);
        ctes.push(format!(
            "revoked_family AS ( \
               INSERT INTO revoked_families (family_id, revoked_at) \
               SELECT * FROM UNNEST(${}::bytea[], ${}::int8[]) \
               ON CONFLICT (family_id) DO NOTHING \
               RETURNING family_id \
             )",
            p,
            p + 1
        ));
        results.push(format!(
            "SELECT {FAMILY_REVOKED} AS kind, family_id AS id FROM revoked_family"
        ));
    }
    if results.is_empty() {
        results.push(format!(
            "SELECT {SPENT} AS kind, NULL::bytea AS id WHERE FALSE"
        ));
    }
    format!("WITH {} {}", ctes.join(", "), results.join(" UNION ALL "))
}

/// Every variant's text, made once.
static BATCH_SQL: LazyLock<Vec<String>> = LazyLock::new(|| {
    (0..Parts::VARIANTS)
        .map(|bits| batch_sql(Parts(bits)))
        .collect()
});

/// One array per column of a token insert.
#[derive(Default)]
struct TokenColumns<'a> {
    id: Vec<&'a [u8]>,
    secret_sha256: Vec<&'a [u8]>,
    client_id: Vec<&'a str>,
    username: Vec<Option<&'a str>>,
    scope: Vec<&'a str>,
    family_id: Vec<&'a [u8]>,
    issued_at: Vec<i64>,
    expires_at: Vec<i64>,
    rotates: Vec<Option<&'a [u8]>>,
}

impl<'a> TokenColumns<'a> {
    fn push(&mut self, token: &'a TokenRecord, rotates: Option<&'a TokenId>) {
        self.id.push(&token.id.0);
        self.secret_sha256.push(&token.secret_digest.0);
        self.client_id.push(&token.client_id);
        self.username.push(token.username.as_deref());
        self.scope.push(&token.scope);
        self.family_id.push(&token.family_id.0);
        self.issued_at.push(token.issued_at);
        self.expires_at.push(token.expires_at);
        self.rotates.push(rotates.map(|old| old.0.as_slice()));
    }

    fn bind<'q>(
        self,
        query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>
    where
        'a: 'q,
    {
        query
            .bind(self.id)
            .bind(self.secret_sha256)
            .bind(self.client_id)
            .bind(self.username)
            .bind(self.scope)
            .bind(self.family_id)
            .bind(self.issued_at)
            .bind(self.expires_at)
            .bind(self.rotates)
    }
}

/// What a committed batch changed.
#[derive(Default)]
struct Changed {
    spent: HashSet<TokenId>,
    access_revoked: HashSet<TokenId>,
    family_revoked: HashSet<TokenId>,
}

impl Changed {
    fn outcome(&self, write: &Write) -> bool {
        match write {
            Write::Create(_) => true,
            Write::Rotate { old, .. } => self.spent.contains(old),
            Write::RevokeAccess { id, .. } => self.access_revoked.contains(id),
            Write::RevokeFamily { family_id, .. } => self.family_revoked.contains(family_id),
        }
    }
}

/// Runs `writes` (no two on the same row) as one statement: committed as a whole or not at all.
async fn execute(conn: &mut PgConnection, writes: &[&Write]) -> Result<Changed, sqlx::Error> {
    let mut rotations: Vec<(&TokenId, i64, Option<&[u8]>)> = Vec::new();
    let mut access = TokenColumns::default();
    let mut refresh = TokenColumns::default();
    let mut revoke_access: (Vec<&[u8]>, Vec<i64>) = (Vec::new(), Vec::new());
    let mut revoke_family: (Vec<&[u8]>, Vec<i64>) = (Vec::new(), Vec::new());
    for write in writes {
        let (new, rotates) = match write {
            Write::Create(new) => (new, None),
            Write::Rotate { old, now, new } => {
                let successor = new.refresh.as_ref().map(|r| r.token.id.0.as_slice());
                rotations.push((old, *now, successor));
                (new, Some(old))
            }
            Write::RevokeAccess { id, now } => {
                revoke_access.0.push(&id.0);
                revoke_access.1.push(*now);
                continue;
            }
            Write::RevokeFamily { family_id, now } => {
                revoke_family.0.push(&family_id.0);
                revoke_family.1.push(*now);
                continue;
            }
        };
        access.push(&new.access, rotates);
        if let Some(next) = &new.refresh {
            refresh.push(&next.token, rotates);
        }
    }
    // Rows locked in one order by every batch, so that two batches rotating the same tokens
    // wait for each other instead of deadlocking.
    rotations.sort_by_key(|(old, _, _)| **old);
    let mut old_ids = Vec::with_capacity(rotations.len());
    let mut spent_now = Vec::with_capacity(rotations.len());
    let mut successors = Vec::with_capacity(rotations.len());
    for (old, now, successor) in rotations {
        old_ids.push(old.0.as_slice());
        spent_now.push(now);
        successors.push(successor);
    }
    let mut bits = 0;
    for (present, part) in [
        (!old_ids.is_empty(), Parts::ROTATIONS),
        (!access.id.is_empty(), Parts::ACCESS),
        (!refresh.id.is_empty(), Parts::REFRESH),
        (!revoke_access.0.is_empty(), Parts::REVOKE_ACCESS),
        (!revoke_family.0.is_empty(), Parts::REVOKE_FAMILY),
    ] {
        if present {
            bits |= part;
        }
    }
    let parts = Parts(bits);
    let Some(sql) = BATCH_SQL.get(parts.0) else {
        return Ok(Changed::default());
    };
    if parts.0 == 0 {
        return Ok(Changed::default());
    }
    let mut query = sqlx::query(sql.as_str());
    if parts.has(Parts::ROTATIONS) {
        query = query.bind(old_ids).bind(spent_now).bind(successors);
    }
    if parts.has(Parts::ACCESS) {
        query = access.bind(query);
    }
    if parts.has(Parts::REFRESH) {
        query = refresh.bind(query);
    }
    if parts.has(Parts::REVOKE_ACCESS) {
        query = query.bind(revoke_access.0).bind(revoke_access.1);
    }
    if parts.has(Parts::REVOKE_FAMILY) {
        query = query.bind(revoke_family.0).bind(revoke_family.1);
    }
    let rows = query.fetch_all(conn).await?;
    let mut changed = Changed::default();
    for row in rows {
        let kind: i32 = row.try_get("kind")?;
        let id: Vec<u8> = row.try_get("id")?;
        let Some(id) = TokenId::from_slice(&id) else {
            return Err(sqlx::Error::Decode("a returned id is not 16 bytes".into()));
        };
        let set = match kind {
            SPENT => &mut changed.spent,
            ACCESS_REVOKED => &mut changed.access_revoked,
            _ => &mut changed.family_revoked,
        };
        set.insert(id);
    }
    Ok(changed)
}

/// The failure of a batch, told to each of its writes.
#[derive(Debug, thiserror::Error)]
#[error("the batch of token writes failed: {0}")]
struct BatchFailed(String);

fn batch_error(err: &sqlx::Error) -> StoreError {
    if is_unavailable(err) {
        StoreError::Unavailable(err.to_string())
    } else {
        StoreError::Backend(Box::new(BatchFailed(err.to_string())))
    }
}

fn timed_out() -> StoreError {
    StoreError::Unavailable(format!(
        "the database did not answer within {} s",
        OPERATION_TIMEOUT.as_secs()
    ))
}

/// Whether the failure may be one write's doing, so that the others would commit without it:
/// the database ran the batch and refused it (a constraint, a deadlock, a row lock another
/// session held past `lock_timeout`). Not when it cannot be reached, is shutting down, out of
/// resources or cancelled the statement for taking too long: then every write would fail (or
/// wait) again.
fn worth_retrying_alone(err: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = err else {
        return false;
    };
    let Some(code) = db.code() else {
        return true;
    };
    !(code == "57014"
        || code.starts_with("08")
        || code.starts_with("53")
        || code.starts_with("57P"))
}

/// Where a statement gets its connection.
#[derive(Clone, Copy)]
enum Conns<'a> {
    /// The batches': the runner's kept one.
    Kept(&'a Kept),
    /// Writes retried one by one: any of the pool.
    Pool(&'a PgPool),
}

/// Runs `writes` once within the backstop.
async fn execute_bounded(conns: Conns<'_>, writes: &[&Write]) -> Result<Changed, Failure> {
    let run = async {
        match conns {
            Conns::Kept(kept) => {
                let mut conn = kept.get().await?;
                let outcome = execute(&mut conn, writes).await;
                kept.put(conn, &outcome);
                outcome
            }
            Conns::Pool(pool) => execute(&mut *pool.acquire().await?, writes).await,
        }
    };
    match tokio::time::timeout(OPERATION_TIMEOUT, run).await {
        Ok(Ok(changed)) => Ok(changed),
        Ok(Err(err)) => Err(Failure::Sql(err)),
        Err(_) => Err(Failure::TimedOut),
    }
}

enum Failure {
    Sql(sqlx::Error),
    TimedOut,
}

impl Failure {
    fn to_store_error(&self) -> StoreError {
        match self {
            Self::Sql(err) => batch_error(err),
            Self::TimedOut => timed_out(),
        }
    }
}

/// The token writes' runner: one statement per round of a batch.
pub(super) struct TokenWrites {
    /// For the batches (with their prepared plans).
    pub(super) batches: Kept,
    /// For writes retried one at a time.
    pub(super) alone: PgPool,
    pub(super) observer: Arc<dyn StoreObserver>,
}

impl TokenWrites {
    /// One round: writes of which no two touch the same row.
    async fn commit_round(&self, jobs: Vec<WriteJob>) {
        // A caller that went away while its write waited (its 10 s bound ran out, or its
        // client hung up) never hears the outcome: writing it anyway would spend a refresh
        // token behind the client's back, and the retry would look like reuse and revoke the
        // grant. Left out, it was never written, and the retry works.
        let jobs: Vec<WriteJob> = jobs
            .into_iter()
            .filter(|job| !job.reply.is_closed())
            .collect();
        if jobs.is_empty() {
            return;
        }
        let writes: Vec<&Write> = jobs.iter().map(|job| &job.write).collect();
        let failure = match execute_bounded(Conns::Kept(&self.batches), &writes).await {
            Ok(changed) => {
                self.observer.committed_batch(jobs.len());
                for job in jobs {
                    let outcome = changed.outcome(&job.write);
                    let _ = job.reply.send(Ok(outcome));
                }
                return;
            }
            Err(failure) => failure,
        };
        match failure {
            Failure::Sql(err) if jobs.len() > 1 && worth_retrying_alone(&err) => {
                tracing::warn!(error = %err, writes = jobs.len(), "a batch of token writes was refused; each is retried on its own");
                // Each on its own statement, all at once: the write that caused the failure
                // fails alone, the others commit.
                let mut alone = JoinSet::new();
                for job in jobs {
                    let pool = self.alone.clone();
                    let observer = self.observer.clone();
                    alone.spawn(async move {
                        if job.reply.is_closed() {
                            return;
                        }
                        let answer = execute_bounded(Conns::Pool(&pool), &[&job.write])
                            .await
                            .map(|changed| {
                                observer.committed_batch(1);
                                changed.outcome(&job.write)
                            })
                            .map_err(|failure| failure.to_store_error());
                        let _ = job.reply.send(answer);
                    });
                }
                while alone.join_next().await.is_some() {}
            }
            failure => {
                if let Failure::Sql(err) = &failure {
                    tracing::warn!(error = %err, writes = jobs.len(), "a batch of token writes failed; nothing of it was committed");
                }
                for job in jobs {
                    let _ = job.reply.send(Err(failure.to_store_error()));
                }
            }
        }
    }
}

impl Run for TokenWrites {
    type Job = WriteJob;

    fn stop(&self) {
        self.batches.release();
    }

    async fn run(self: Arc<Self>, jobs: Vec<WriteJob>) {
        let mut pending = jobs;
        while !pending.is_empty() {
            // The first write to each row goes now, any other after it.
            let mut rows = HashSet::new();
            let (now, later): (Vec<WriteJob>, Vec<WriteJob>) = pending
                .into_iter()
                .partition(|job| job.write.row().is_none_or(|row| rows.insert(row)));
            self.commit_round(now).await;
            pending = later;
        }
    }
}
