//! Batched lookups on PostgreSQL: the rows concurrent requests look up by key (a refresh token
//! for every refresh grant, an access token for every introspection, a user) are fetched by
//! one statement per batch instead of one each, so the database pays its per-statement and
//! per-round-trip costs once per batch. A lookup is sent after the commit of any write its
//! caller saw answered, so it sees that write.
//!
//! Each statement looks its keys up one by one (`UNNEST` with a `LATERAL` primary-key lookup
//! that the planner cannot turn into a scan of the table), so its one prepared plan suits a
//! table of any size.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::{Arc, LazyLock};

use sqlx::postgres::{PgArguments, PgPool, PgRow};
use sqlx::query::Query;
use sqlx::{Postgres, Row as _};
use tokio::sync::oneshot;

use super::batcher::Run;
use super::kept::Kept;
use super::{backend, bounded, corrupt, decode_token};
use crate::crypto::token::TokenId;
use crate::store::model::{AccessTokenRecord, RefreshTokenRecord, Role, User};
use crate::store::revocation::TOKEN_COLUMNS;
use crate::store::StoreError;

/// A kind of row looked up by key.
pub(super) trait Lookup: Send + Sync + 'static {
    type Key: Eq + Hash + Clone + Send + Sync + 'static;
    type Record: Clone + Send + 'static;

    /// The statement: `$1` the array of keys; returns at most one row per key.
    fn sql() -> &'static str;
    fn bind<'q>(
        keys: &'q [Self::Key],
        query: Query<'q, Postgres, PgArguments>,
    ) -> Query<'q, Postgres, PgArguments>;
    fn key(row: &PgRow) -> Result<Self::Key, StoreError>;
    fn record(row: &PgRow) -> Result<Self::Record, StoreError>;
}

/// One lookup and where its answer goes (`None`: no such row).
pub(super) struct ReadJob<L: Lookup> {
    pub(super) key: L::Key,
    pub(super) reply: oneshot::Sender<Result<Option<L::Record>, StoreError>>,
}

/// The lookups' runner.
pub(super) struct Reads<L> {
    conn: Kept,
    kind: PhantomData<fn() -> L>,
}

impl<L> Reads<L> {
    pub(super) fn new(pool: PgPool) -> Self {
        Self {
            conn: Kept::new(pool),
            kind: PhantomData,
        }
    }
}

/// The failure of a batch, told to each of its lookups.
#[derive(Debug, thiserror::Error)]
#[error("the batch of lookups failed: {0}")]
struct BatchFailed(String);

fn copy(err: &StoreError) -> StoreError {
    match err {
        StoreError::Unavailable(message) => StoreError::Unavailable(message.clone()),
        StoreError::Corrupt(message) => StoreError::Corrupt(message.clone()),
        other => StoreError::Backend(Box::new(BatchFailed(other.to_string()))),
    }
}

async fn fetch<L: Lookup>(
    kept: &Kept,
    keys: &[L::Key],
) -> Result<HashMap<L::Key, Result<L::Record, StoreError>>, StoreError> {
    let rows = bounded(async {
        let mut conn = kept.get().await.map_err(backend)?;
        let rows = L::bind(keys, sqlx::query(L::sql()))
            .fetch_all(&mut *conn)
            .await;
        kept.put(conn, &rows);
        rows.map_err(backend)
    })
    .await?;
    let mut found = HashMap::with_capacity(rows.len());
    for row in &rows {
        // A row that does not decode fails its own lookups only.
        found.insert(L::key(row)?, L::record(row));
    }
    Ok(found)
}

impl<L: Lookup> Run for Reads<L> {
    type Job = ReadJob<L>;

    fn stop(&self) {
        self.conn.release();
    }

    async fn run(self: Arc<Self>, jobs: Vec<ReadJob<L>>) {
        let mut seen = HashSet::with_capacity(jobs.len());
        let keys: Vec<L::Key> = jobs
            .iter()
            .filter(|job| seen.insert(&job.key))
            .map(|job| job.key.clone())
            .collect();
        match fetch::<L>(&self.conn, &keys).await {
            Ok(found) => {
                for job in jobs {
                    let answer = match found.get(&job.key) {
                        None => Ok(None),
                        Some(Ok(record)) => Ok(Some(record.clone())),
                        Some(Err(err)) => Err(copy(err)),
                    };
                    let _ = job.reply.send(answer);
                }
            }
            Err(err) => {
                for job in jobs {
                    let _ = job.reply.send(Err(copy(&err)));
                }
            }
        }
    }
}

/// Refresh tokens by id, with `revoked_at` folded as every token read folds it.
pub(super) struct RefreshTokens;

static REFRESH_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {TOKEN_COLUMNS}, t.spent_at AS spent_at, t.replaced_by AS replaced_by \
         FROM UNNEST($1::bytea[]) AS k(id) \
         CROSS JOIN LATERAL (SELECT * FROM refresh_tokens WHERE refresh_tokens.id = k.id \
                             OFFSET 0) AS t"
    )
});

fn bind_ids<'q>(
    keys: &'q [TokenId],
    query: Query<'q, Postgres, PgArguments>,
) -> Query<'q, Postgres, PgArguments> {
    query.bind(keys.iter().map(|id| id.0.as_slice()).collect::<Vec<_>>())
}

fn id_of(row: &PgRow) -> Result<TokenId, StoreError> {
    let bytes: Vec<u8> = row.try_get("id").map_err(backend)?;
    TokenId::from_slice(&bytes).ok_or_else(|| corrupt("id"))
}

impl Lookup for RefreshTokens {
    type Key = TokenId;
    type Record = RefreshTokenRecord;

    fn sql() -> &'static str {
        REFRESH_SQL.as_str()
    }

    fn bind<'q>(
        keys: &'q [TokenId],
        query: Query<'q, Postgres, PgArguments>,
    ) -> Query<'q, Postgres, PgArguments> {
        bind_ids(keys, query)
    }

    fn key(row: &PgRow) -> Result<TokenId, StoreError> {
        id_of(row)
    }

    fn record(row: &PgRow) -> Result<RefreshTokenRecord, StoreError> {
        let replaced_by: Option<Vec<u8>> = row.try_get("replaced_by").map_err(backend)?;
        let replaced_by = match replaced_by {
            Some(bytes) => Some(TokenId::from_slice(&bytes).ok_or_else(|| corrupt("replaced_by"))?),
            None => None,
        };
        Ok(RefreshTokenRecord {
            token: decode_token(row)?,
            spent_at: row.try_get("spent_at").map_err(backend)?,
            replaced_by,
        })
    }
}

/// Access tokens by id, with `revoked_at` folded.
pub(super) struct AccessTokens;

static ACCESS_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {TOKEN_COLUMNS} \
         FROM UNNEST($1::bytea[]) AS k(id) \
         CROSS JOIN LATERAL (SELECT * FROM access_tokens WHERE access_tokens.id = k.id \
                             OFFSET 0) AS t"
    )
});

impl Lookup for AccessTokens {
    type Key = TokenId;
    type Record = AccessTokenRecord;

    fn sql() -> &'static str {
        ACCESS_SQL.as_str()
    }

    fn bind<'q>(
        keys: &'q [TokenId],
        query: Query<'q, Postgres, PgArguments>,
    ) -> Query<'q, Postgres, PgArguments> {
        bind_ids(keys, query)
    }

    fn key(row: &PgRow) -> Result<TokenId, StoreError> {
        id_of(row)
    }

    fn record(row: &PgRow) -> Result<AccessTokenRecord, StoreError> {
        decode_token(row)
    }
}

/// Users by name (`stores.users = "sql"`).
pub(super) struct Users;

impl Lookup for Users {
    type Key = String;
    type Record = User;

    fn sql() -> &'static str {
        "SELECT u.name, u.password_hash, u.disabled, u.roles \
         FROM UNNEST($1::text[]) AS k(name) \
         CROSS JOIN LATERAL (SELECT * FROM users WHERE users.name = k.name OFFSET 0) AS u"
    }

    fn bind<'q>(
        keys: &'q [String],
        query: Query<'q, Postgres, PgArguments>,
    ) -> Query<'q, Postgres, PgArguments> {
        query.bind(keys.iter().map(String::as_str).collect::<Vec<_>>())
    }

    fn key(row: &PgRow) -> Result<String, StoreError> {
        row.try_get("name").map_err(backend)
    }

    fn record(row: &PgRow) -> Result<User, StoreError> {
        let roles: String = row.try_get("roles").map_err(backend)?;
        // A role this version does not know grants nothing.
        let (roles, _) = Role::parse_list(roles.split_whitespace());
        Ok(User {
            name: row.try_get("name").map_err(backend)?,
            password_hash: row.try_get("password_hash").map_err(backend)?,
            disabled: row.try_get("disabled").map_err(backend)?,
            roles,
        })
    }
}
