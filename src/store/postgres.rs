//! The PostgreSQL token store, for several tokengate nodes sharing one database.
//!
//! Same contract as the SQLite store. What every token request does goes in batches (`batcher`):
//! the token writes of concurrent requests (creations, rotations, revocations) are committed
//! together, one statement and one WAL flush per batch (`group_commit`); the lookups of refresh
//! tokens, access tokens and users are one statement per batch (`reads`); so are the takes from
//! the shared rate-limit buckets, which a node also takes ahead of time while a bucket is far
//! from empty (`buckets`). The rotation is a conditional `UPDATE` (which takes the row lock),
//! so of two nodes, or two requests of one batch, redeeming the same refresh token exactly one
//! succeeds. Lockout steps, directory edits, not-before marks and the janitor's purges are
//! statements of their own; lockout counts are one atomic upsert per failure.

mod batcher;
mod buckets;
mod group_commit;
mod kept;
mod reads;

use std::collections::BTreeSet;
use std::future::Future;
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow, PgSslMode};
use sqlx::{Connection as _, Row as _};
use tokio::sync::oneshot;

use batcher::{Batcher, Limits};
use buckets::{BucketTakes, Leases, TakeJob};
use group_commit::{TokenWrites, Write, WriteJob};
use kept::Kept;
use reads::{AccessTokens, Lookup, ReadJob, Reads, RefreshTokens, Users};

use super::directory::ClientRow;
use super::measured::{ConnectionCounts, ConnectionPools, StoreObserver};
use super::model::{
    AccessTokenRecord, AuthorizationCodeRecord, Client, ConsentRecord, InitialAccessTokenRecord,
    InitialTokenRow, LoginSessionRecord, NewTokens, PreviousSecret, RefreshTokenRecord,
    RegistrationRecord, Role, TokenRecord, User,
};
use super::sql::{directory, lockouts, purge, registration, tokens};
use super::{
    attempt_steps, Attempt, AttemptRows, AttemptStep, Directory, FailureRow, LockoutPolicy,
    LockoutStore, PublicKey, PublishedKeyStore, PurgeLimits, PurgedRows, RateLimitStore,
    Redemption, Registration, RegistrationStore, Rotation, RowChange, StoreError, SubjectKind,
    TokenStore,
};
use crate::abuse::rate_limit::{Rate, Take};
use crate::crypto::token::{SecretDigest, TokenId};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("src/store/migrations/postgres");

pub struct PostgresTokenStore {
    pool: PgPool,
    /// Without the statement time limits: a migration may take as long as it takes.
    migration_options: PgConnectOptions,
    /// For the shared rate-limit buckets only, so that checks for many keys at once (a flood)
    /// cannot take the connections token requests need.
    buckets: PgPool,
    /// The connections of the batches of token writes and lookups.
    batches: PgPool,
    /// Token writes, committed in batches.
    writes: Batcher<TokenWrites>,
    /// Lookups, in batches.
    refresh_reads: Batcher<Reads<RefreshTokens>>,
    access_reads: Batcher<Reads<AccessTokens>>,
    user_reads: Batcher<Reads<Users>>,
    /// Takes from the shared rate-limit buckets, in batches.
    takes: Batcher<BucketTakes>,
    /// Tokens of shared buckets this node took ahead of time.
    leases: Arc<Leases>,
}

/// How the batches are shaped. One batch of each kind at a time (more only while one is stuck,
/// see `batcher`): the next one gathers what comes in meanwhile, so batches grow with the load
/// and the database runs one statement (and, for writes, one WAL flush) per batch. Measured on
/// two cores with the database on the same machine, a second write batch in flight did not
/// shorten the wait (its commit needs a WAL flush of its own, after the first one's) and
/// halved the batches, so the database spent more per request; lookups did no better with two
/// in flight either.
const WRITE_BATCHES: Limits = Limits {
    max_jobs: 512,
    in_flight: 1,
    most_in_flight: 3,
    queue: 4096,
};

/// Lookups of one kind (refresh tokens, access tokens, users): a primary-key lookup per key.
const READ_BATCHES: Limits = Limits {
    max_jobs: 512,
    in_flight: 1,
    most_in_flight: 2,
    queue: 4096,
};

/// Takes from the shared rate-limit buckets: one unlogged row update per bucket per batch, no
/// WAL flush to wait for, and a second batch in flight would only wait on the first one's row
/// locks (every request of a client takes from the same two buckets).
const TAKE_BATCHES: Limits = Limits {
    max_jobs: 512,
    in_flight: 1,
    most_in_flight: 2,
    queue: 4096,
};

/// Connections of the batches of token writes and lookups, on top of the node's pool for
/// everything else: one per kind of batch while that kind is used (two under refresh load),
/// and enough that a batch never waits for one while others are stuck (every kind's
/// `most_in_flight`). Opened as needed.
const BATCH_CONNECTIONS: u32 = 9;
const _: () = assert!(
    BATCH_CONNECTIONS as usize >= WRITE_BATCHES.most_in_flight + 3 * READ_BATCHES.most_in_flight
);

/// Connection failures (to sqlx, a connection cut mid-handshake is a protocol error),
/// resource exhaustion, operator shutdown and serialization conflicts are worth a retry: 503.
fn is_unavailable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code.starts_with("08")
                || code.starts_with("53")
                || code.starts_with("57P")
                || code == "57014" // query_canceled: statement_timeout
                || code == "55P03" // lock_not_available: lock_timeout
                || code == "40001"
                || code == "40P01"
        }),
        _ => false,
    }
}

/// How long the database may work on one statement, or wait for a row lock, before it cancels
/// the statement itself. Its transaction then rolls back, so the outcome is known (nothing was
/// written) and the request gets a 503.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a statement waits for a row lock another session holds. Below
/// [`STATEMENT_TIMEOUT`], so that a batch held up by one locked row fails as a lock wait
/// (`lock_not_available`, which the group commit retries one write at a time, so only the write
/// on that row fails) and not as a slow statement (which fails every write of the batch).
const LOCK_TIMEOUT: Duration = Duration::from_secs(1);

/// The backstop for a database that stops answering altogether (a network partition): only
/// then does a node stop waiting without hearing how the operation ended. Well above
/// [`STATEMENT_TIMEOUT`] plus the pool's acquire timeout, so a slow but working database is
/// always answered by the database itself.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one janitor statement may scan and delete.
const PURGE_TIMEOUT: Duration = Duration::from_secs(60);

async fn bounded<T>(work: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
    bounded_for(OPERATION_TIMEOUT, work).await
}

async fn bounded_for<T>(
    limit: Duration,
    work: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
        Err(StoreError::Unavailable(format!(
            "the database did not answer within {} s",
            limit.as_secs()
        )))
    })
}

fn backend(err: sqlx::Error) -> StoreError {
    if is_unavailable(&err) {
        StoreError::Unavailable(err.to_string())
    } else {
        StoreError::Backend(Box::new(err))
    }
}

/// What `serve` says when `url`'s `sslmode` does not authenticate the database server (libpq's
/// modes: only `verify-full` checks both the certificate chain and the host name).
pub fn unauthenticated_server_warning(url: &str) -> Option<&'static str> {
    match PgConnectOptions::from_str(url).ok()?.get_ssl_mode() {
        PgSslMode::Require => Some(
            "sslmode=require encrypts the connection to PostgreSQL but does not authenticate \
             the server: whoever can intercept it can pose as the database. Use \
             sslmode=verify-full with sslrootcert=<the CA that signed the server's certificate>",
        ),
        PgSslMode::Prefer | PgSslMode::Allow => Some(
            "the PostgreSQL URL's sslmode (prefer when unset, or allow) may connect without TLS \
             and does not authenticate the server. Use sslmode=verify-full with \
             sslrootcert=<the CA that signed the server's certificate>",
        ),
        PgSslMode::VerifyCa => Some(
            "sslmode=verify-ca checks the PostgreSQL server's certificate chain but not its host \
             name: any server with a certificate from that CA can pose as the database. Use \
             sslmode=verify-full",
        ),
        PgSslMode::Disable | PgSslMode::VerifyFull => None,
    }
}

impl PostgresTokenStore {
    /// Connects a pool of at most `max_connections`, plus the batches' own (see
    /// [`BATCH_CONNECTIONS`]) and a quarter as many for the shared rate limits, lazily: a
    /// database that is down at start makes requests fail with 503 until it returns, instead
    /// of failing the start.
    /// Each group commit's size goes to `observer`.
    pub fn connect(
        url: &str,
        max_connections: u32,
        observer: Arc<dyn StoreObserver>,
    ) -> Result<Self, StoreError> {
        let migration_options = PgConnectOptions::from_str(url)
            .map_err(|err| StoreError::Unavailable(format!("bad PostgreSQL URL: {err}")))?;
        let limit = STATEMENT_TIMEOUT.as_millis().to_string();
        let lock_limit = LOCK_TIMEOUT.as_millis().to_string();
        // A transaction left open by a node that stopped (or was cut off) mid-way would hold
        // its row and advisory locks until TCP gave up on it (hours): the server ends it.
        let idle = OPERATION_TIMEOUT.as_millis().to_string();
        let options = migration_options.clone().options([
            ("statement_timeout", &limit),
            ("lock_timeout", &lock_limit),
            ("idle_in_transaction_session_timeout", &idle),
        ]);
        // The batch statements are planned once per connection: their plan (index and TID
        // lookups per array element) is the right one whatever the batch size, and planning
        // them anew for each batch, as PostgreSQL does while the batches are smaller than
        // its generic estimate, cost more than running them.
        let generic = options
            .clone()
            .options([("plan_cache_mode", "force_generic_plan")]);
        let pool = |max_connections: u32, options: &PgConnectOptions| {
            PgPoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(Duration::from_secs(3))
                .connect_lazy_with(options.clone())
        };
        let (pool, batches, buckets) = (
            pool(max_connections, &options),
            pool(BATCH_CONNECTIONS, &generic),
            pool(max_connections.div_ceil(4), &generic),
        );
        let leases = Arc::new(Leases::default());
        Ok(Self {
            leases: leases.clone(),
            writes: Batcher::new(
                TokenWrites {
                    batches: Kept::new(batches.clone()),
                    alone: pool.clone(),
                    observer,
                },
                WRITE_BATCHES,
            ),
            refresh_reads: Batcher::new(Reads::new(batches.clone()), READ_BATCHES),
            access_reads: Batcher::new(Reads::new(batches.clone()), READ_BATCHES),
            user_reads: Batcher::new(Reads::new(batches.clone()), READ_BATCHES),
            takes: Batcher::new(
                BucketTakes {
                    conn: Kept::new(buckets.clone()),
                    leases: leases.clone(),
                },
                TAKE_BATCHES,
            ),
            pool,
            batches,
            buckets,
            migration_options,
        })
    }

    /// One janitor statement, `binds` for its `$1`, `$2`…, in a transaction of its own that
    /// raises the statement limit: scanning for expired rows in a large table may take longer
    /// than a token request may.
    async fn purge_one(&self, sql: &str, binds: &[i64]) -> Result<u64, StoreError> {
        bounded_for(PURGE_TIMEOUT, async move {
            let mut tx = self.pool.begin().await.map_err(backend)?;
            let limit = format!(
                "SET LOCAL statement_timeout = {}",
                PURGE_TIMEOUT.as_millis()
            );
            sqlx::query(&limit)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
            let mut query = sqlx::query(sql);
            for value in binds {
                query = query.bind(*value);
            }
            let rows = query
                .execute(&mut *tx)
                .await
                .map_err(backend)?
                .rows_affected();
            tx.commit().await.map_err(backend)?;
            Ok(rows)
        })
        .await
    }

    /// Hands a token write to the group commit and waits for its commit; whether it changed
    /// anything.
    async fn write(&self, write: Write) -> Result<bool, StoreError> {
        bounded(async move {
            let (reply, answer) = oneshot::channel();
            self.writes.submit(WriteJob { write, reply }).await?;
            answer.await.map_err(|_| {
                StoreError::Unavailable("the token writer stopped before answering".into())
            })?
        })
        .await
    }

    /// Looks `key` up with the concurrent lookups of its kind.
    async fn read<L: reads::Lookup>(
        &self,
        batcher: &Batcher<Reads<L>>,
        key: L::Key,
    ) -> Result<Option<L::Record>, StoreError> {
        bounded(async move {
            let (reply, answer) = oneshot::channel();
            batcher.submit(ReadJob { key, reply }).await?;
            answer.await.map_err(|_| {
                StoreError::Unavailable("the token store stopped before answering".into())
            })?
        })
        .await
    }

    /// Runs one write within the time bound; whether it changed exactly one row.
    async fn changed_one(
        &self,
        query: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> Result<bool, StoreError> {
        bounded(async move {
            let done = query.execute(&self.pool).await.map_err(backend)?;
            Ok(done.rows_affected() == 1)
        })
        .await
    }

    /// Opens one connection of the rate-limit pool, so that the first shared check does not
    /// pay for connecting (and trip the breaker on a busy machine). Best effort.
    pub async fn warm_up(&self) {
        let _ = bounded(async {
            sqlx::query("SELECT 1")
                .execute(&self.buckets)
                .await
                .map_err(backend)
        })
        .await;
    }

    /// Applies pending migrations, on a connection of their own without the statement limits.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let failed = |err: &dyn std::fmt::Display| {
            StoreError::Unavailable(format!("migrations failed: {err}"))
        };
        let connect = PgConnection::connect_with(&self.migration_options);
        let mut connection = tokio::time::timeout(OPERATION_TIMEOUT, connect)
            .await
            .map_err(|_| failed(&"the database did not answer"))?
            .map_err(|err| failed(&err))?;
        let migrated = MIGRATOR
            .run(&mut connection)
            .await
            .map_err(|err| failed(&err));
        let _ = connection.close().await;
        migrated
    }

    /// Whether every migration this version knows has been applied.
    pub async fn migrations_applied(&self) -> Result<bool, StoreError> {
        let applied: Result<i64, sqlx::Error> =
            sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success")
                .fetch_one(&self.pool)
                .await;
        let applied = match applied {
            Ok(count) => count,
            // 42P01 undefined_table: no migration has ever run.
            Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("42P01") => 0,
            Err(err) => return Err(backend(err)),
        };
        let known = i64::try_from(MIGRATOR.iter().count()).unwrap_or(i64::MAX);
        Ok(applied >= known)
    }
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_owned())
}

fn token_id(row: &PgRow, column: &str) -> Result<TokenId, StoreError> {
    let bytes: Vec<u8> = row.try_get(column).map_err(backend)?;
    TokenId::from_slice(&bytes).ok_or_else(|| corrupt(column))
}

fn decode_token(row: &PgRow) -> Result<TokenRecord, StoreError> {
    let digest: Vec<u8> = row.try_get("secret_sha256").map_err(backend)?;
    Ok(TokenRecord {
        id: token_id(row, "id")?,
        secret_digest: SecretDigest::from_slice(&digest).ok_or_else(|| corrupt("secret_sha256"))?,
        client_id: row.try_get("client_id").map_err(backend)?,
        username: row.try_get("username").map_err(backend)?,
        scope: row.try_get("scope").map_err(backend)?,
        family_id: token_id(row, "family_id")?,
        issued_at: row.try_get("issued_at").map_err(backend)?,
        expires_at: row.try_get("expires_at").map_err(backend)?,
        revoked_at: row.try_get("revoked_at").map_err(backend)?,
    })
}

fn decode_code(row: &PgRow) -> Result<AuthorizationCodeRecord, StoreError> {
    let digest: Vec<u8> = row.try_get("digest").map_err(backend)?;
    let family_id: Option<Vec<u8>> = row.try_get("family_id").map_err(backend)?;
    let family_id = match family_id {
        Some(bytes) => Some(TokenId::from_slice(&bytes).ok_or_else(|| corrupt("family_id"))?),
        None => None,
    };
    Ok(AuthorizationCodeRecord {
        digest: SecretDigest::from_slice(&digest).ok_or_else(|| corrupt("digest"))?,
        client_id: row.try_get("client_id").map_err(backend)?,
        redirect_uri: row.try_get("redirect_uri").map_err(backend)?,
        code_challenge: row.try_get("code_challenge").map_err(backend)?,
        username: row.try_get("username").map_err(backend)?,
        scope: row.try_get("scope").map_err(backend)?,
        issued_at: row.try_get("issued_at").map_err(backend)?,
        expires_at: row.try_get("expires_at").map_err(backend)?,
        redeemed_at: row.try_get("redeemed_at").map_err(backend)?,
        family_id,
    })
}

/// Inserts one token with `sql` (`tokens::INSERT_ACCESS` or `INSERT_REFRESH`) in `tx`.
async fn insert_token(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    sql: &str,
    token: &TokenRecord,
) -> Result<(), StoreError> {
    sqlx::query(sql)
        .bind(token.id.0.as_slice())
        .bind(token.secret_digest.0.as_slice())
        .bind(&token.client_id)
        .bind(&token.username)
        .bind(&token.scope)
        .bind(token.family_id.0.as_slice())
        .bind(token.issued_at)
        .bind(token.expires_at)
        .execute(&mut **tx)
        .await
        .map_err(backend)?;
    Ok(())
}

impl ConnectionPools for PostgresTokenStore {
    fn connections(&self) -> ConnectionCounts {
        [&self.pool, &self.batches, &self.buckets].into_iter().fold(
            ConnectionCounts::default(),
            |sum, pool| {
                let open = usize::try_from(pool.size()).unwrap_or(usize::MAX);
                let idle = pool.num_idle();
                ConnectionCounts {
                    idle: sum.idle + idle,
                    busy: sum.busy + open.saturating_sub(idle),
                }
            },
        )
    }
}

#[async_trait]
impl TokenStore for PostgresTokenStore {
    async fn create_tokens(&self, tokens: NewTokens) -> Result<(), StoreError> {
        self.write(Write::Create(tokens)).await.map(|_| ())
    }

    async fn revoke_access_token(&self, id: &TokenId, now: i64) -> Result<bool, StoreError> {
        self.write(Write::RevokeAccess { id: *id, now }).await
    }

    async fn revoke_family(&self, family_id: &TokenId, now: i64) -> Result<bool, StoreError> {
        self.write(Write::RevokeFamily {
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
        let not_before = TokenId::lower_bound(not_before_ms);
        bounded(async move {
            sqlx::query(&tokens::UPSERT_MARK)
                .bind(kind.as_str())
                .bind(name)
                .bind(not_before.0.as_slice())
                .bind(now)
                .execute(&self.pool)
                .await
                .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn find_refresh_token(
        &self,
        id: &TokenId,
    ) -> Result<Option<RefreshTokenRecord>, StoreError> {
        self.read(&self.refresh_reads, *id).await
    }

    async fn find_access_token(
        &self,
        id: &TokenId,
    ) -> Result<Option<AccessTokenRecord>, StoreError> {
        self.read(&self.access_reads, *id).await
    }

    async fn rotate_refresh_token(
        &self,
        old: &TokenId,
        now: i64,
        new: NewTokens,
    ) -> Result<Rotation, StoreError> {
        let rotated = self.write(Write::Rotate {
            old: *old,
            now,
            new,
        });
        Ok(if rotated.await? {
            Rotation::Rotated
        } else {
            Rotation::AlreadySpent
        })
    }

    async fn create_authorization_code(
        &self,
        code: AuthorizationCodeRecord,
    ) -> Result<(), StoreError> {
        bounded(async move {
            sqlx::query(tokens::INSERT_CODE)
                .bind(code.digest.0.as_slice())
                .bind(&code.client_id)
                .bind(&code.redirect_uri)
                .bind(&code.code_challenge)
                .bind(&code.username)
                .bind(&code.scope)
                .bind(code.issued_at)
                .bind(code.expires_at)
                .execute(&self.pool)
                .await
                .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn find_authorization_code(
        &self,
        digest: &SecretDigest,
    ) -> Result<Option<AuthorizationCodeRecord>, StoreError> {
        bounded(async move {
            let row = sqlx::query(tokens::FIND_CODE)
                .bind(digest.0.as_slice())
                .fetch_optional(&self.pool)
                .await
                .map_err(backend)?;
            row.as_ref().map(decode_code).transpose()
        })
        .await
    }

    /// Not through the group commit: codes are redeemed once per login, not per request. The
    /// row lock the conditional UPDATE takes makes a concurrent redemption wait for this one's
    /// commit and then find the code redeemed. A caller that goes away before the commit drops
    /// the transaction, which rolls it back: the code stays usable for its retry.
    async fn redeem_authorization_code(
        &self,
        digest: &SecretDigest,
        now: i64,
        new: NewTokens,
    ) -> Result<Redemption, StoreError> {
        bounded(async move {
            let mut tx = self.pool.begin().await.map_err(backend)?;
            let redeemed = sqlx::query(tokens::REDEEM_CODE)
                .bind(now)
                .bind(new.access.family_id.0.as_slice())
                .bind(digest.0.as_slice())
                .execute(&mut *tx)
                .await
                .map_err(backend)?
                .rows_affected()
                == 1;
            if !redeemed {
                return Ok(Redemption::Refused);
            }
            insert_token(&mut tx, tokens::INSERT_ACCESS, &new.access).await?;
            if let Some(refresh) = &new.refresh {
                insert_token(&mut tx, tokens::INSERT_REFRESH, &refresh.token).await?;
            }
            tx.commit().await.map_err(backend)?;
            Ok(Redemption::Redeemed)
        })
        .await
    }

    async fn create_login_session(&self, session: LoginSessionRecord) -> Result<(), StoreError> {
        bounded(async move {
            sqlx::query(tokens::INSERT_SESSION)
                .bind(session.digest.0.as_slice())
                .bind(&session.username)
                .bind(session.started.0.as_slice())
                .bind(session.expires_at)
                .execute(&self.pool)
                .await
                .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn find_login_session(
        &self,
        digest: &SecretDigest,
        now: i64,
    ) -> Result<Option<String>, StoreError> {
        bounded(async move {
            sqlx::query_scalar(tokens::FIND_SESSION)
                .bind(digest.0.as_slice())
                .bind(now)
                .fetch_optional(&self.pool)
                .await
                .map_err(backend)
        })
        .await
    }

    async fn delete_login_session(&self, digest: &SecretDigest) -> Result<bool, StoreError> {
        self.changed_one(sqlx::query(tokens::DELETE_SESSION).bind(digest.0.as_slice()))
            .await
    }

    async fn save_consent(&self, consent: ConsentRecord) -> Result<(), StoreError> {
        bounded(async move {
            sqlx::query(tokens::SAVE_CONSENT)
                .bind(&consent.username)
                .bind(&consent.client_id)
                .bind(&consent.scope)
                .bind(consent.granted.0.as_slice())
                .execute(&self.pool)
                .await
                .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn find_consent(
        &self,
        username: &str,
        client_id: &str,
    ) -> Result<Option<String>, StoreError> {
        bounded(async move {
            sqlx::query_scalar(tokens::FIND_CONSENT)
                .bind(username)
                .bind(client_id)
                .fetch_optional(&self.pool)
                .await
                .map_err(backend)
        })
        .await
    }

    async fn purge(&self, limits: PurgeLimits) -> Result<PurgedRows, StoreError> {
        let batch = i64::from(limits.batch);
        let mut purged = PurgedRows::default();
        // SKIP LOCKED: nodes purging at the same moment take disjoint batches and never wait.
        // `ctid = ANY(ARRAY(…))`: the rows the batch locked are deleted by their address (a
        // TID scan); `IN (subquery)` let the planner hash-join against the whole table.
        let [access, refresh] = purge::TOKENS_POSTGRES;
        let deletes: [(&str, Vec<i64>, &mut u64); 9] = [
            (
                access,
                vec![limits.expired_before, batch],
                &mut purged.access_tokens,
            ),
            (
                refresh,
                vec![limits.expired_before, batch],
                &mut purged.refresh_tokens,
            ),
            (
                &purge::REVOCATIONS_POSTGRES,
                vec![i64::MAX, batch],
                &mut purged.revoked_families,
            ),
            (
                purge::LOCKOUTS_POSTGRES,
                vec![limits.failures_before, limits.now, batch],
                &mut purged.login_failures,
            ),
            (
                purge::RATE_BUCKETS_POSTGRES,
                vec![limits.buckets_full_before_ms, batch],
                &mut purged.rate_buckets,
            ),
            (
                purge::SESSIONS_POSTGRES,
                vec![limits.expired_before, batch],
                &mut purged.login_sessions,
            ),
            (
                purge::CODES_POSTGRES,
                vec![limits.expired_before, batch],
                &mut purged.authorization_codes,
            ),
            (
                purge::INITIAL_TOKENS_POSTGRES,
                vec![limits.expired_before, batch],
                &mut purged.initial_access_tokens,
            ),
            // A handful of rows (keys of nodes), so no batch.
            (
                purge::PUBLISHED_KEYS_POSTGRES,
                vec![limits.now],
                &mut purged.published_keys,
            ),
        ];
        // Each table on its own: one that cannot be purged (e.g. a long scan cancelled) does
        // not keep the others growing.
        let mut first_error = None;
        let mut any_done = false;
        for (sql, binds, count) in deletes {
            match self.purge_one(sql, &binds).await {
                Ok(rows) => {
                    *count = rows;
                    any_done = true;
                }
                Err(err) => {
                    tracing::warn!(error = %err, "janitor: one table not purged this time");
                    first_error.get_or_insert(err);
                }
            }
        }
        match first_error {
            Some(err) if !any_done => Err(err),
            _ => Ok(purged),
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        bounded(async move {
            sqlx::query("SELECT 1")
                .execute(&self.pool)
                .await
                .map(|_| ())
                .map_err(backend)?;
            if self.migrations_applied().await? {
                Ok(())
            } else {
                Err(StoreError::Unavailable(
                    "database migrations are pending (run `tokengate migrate`)".into(),
                ))
            }
        })
        .await
    }

    async fn close(&self) {
        // The writes already accepted are committed (or fail) first.
        self.writes.close().await;
        self.takes.close().await;
        self.refresh_reads.close().await;
        self.access_reads.close().await;
        self.user_reads.close().await;
        self.pool.close().await;
        self.batches.close().await;
        self.buckets.close().await;
    }
}

/// Writes one failure row as a lockout step left it.
async fn change_failures(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    username: &str,
    source: &str,
    change: RowChange,
) -> Result<(), StoreError> {
    match change {
        RowChange::Keep => {}
        RowChange::Delete => {
            sqlx::query(lockouts::DELETE_ROW)
                .bind(username)
                .bind(source)
                .execute(&mut **tx)
                .await
                .map_err(backend)?;
        }
        RowChange::Store((failures, window_start, locked_until, pending)) => {
            sqlx::query(lockouts::UPSERT_ROW)
                .bind(username)
                .bind(source)
                .bind(failures)
                .bind(window_start)
                .bind(locked_until)
                .bind(pending)
                .execute(&mut **tx)
                .await
                .map_err(backend)?;
        }
    }
    Ok(())
}

#[async_trait]
impl LockoutStore for PostgresTokenStore {
    async fn attempt_counted_in(
        &self,
        username: &str,
        source: &str,
        every_address: &'static str,
        step: AttemptStep,
        now: i64,
        policy: LockoutPolicy,
    ) -> Result<Attempt, StoreError> {
        bounded(async move {
            // A transaction-scoped advisory lock on the name serialises attempts for it across
            // every node, whether or not its rows exist yet; both rows change in one transaction.
            let mut tx = self.pool.begin().await.map_err(backend)?;
            // Attempts on one name queue here by design (a burst on one account): they get the
            // whole statement timeout, not the short row-lock wait of the batches.
            sqlx::query(&format!(
                "SET LOCAL lock_timeout = {}",
                STATEMENT_TIMEOUT.as_millis()
            ))
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
            sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
                .bind(username)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
            let found = sqlx::query(lockouts::SELECT_ROWS)
                .bind(username)
                .bind(source)
                .bind(every_address)
                .fetch_all(&mut *tx)
                .await
                .map_err(backend)?;
            let mut rows = AttemptRows {
                source: None,
                all: policy.counts_every_address().then_some(None),
            };
            for row in found {
                let values: FailureRow = (
                    row.try_get("failures").map_err(backend)?,
                    row.try_get("window_start").map_err(backend)?,
                    row.try_get("locked_until").map_err(backend)?,
                    row.try_get("pending").map_err(backend)?,
                );
                let row_source: String = row.try_get("source").map_err(backend)?;
                if row_source == source {
                    rows.source = Some(values);
                } else if let Some(all) = rows.all.as_mut() {
                    *all = Some(values);
                }
            }
            let (verdict, changes) = attempt_steps(rows, step, now, policy);
            change_failures(&mut tx, username, source, changes.source).await?;
            if let Some(change) = changes.all {
                change_failures(&mut tx, username, every_address, change).await?;
            }
            tx.commit().await.map_err(backend)?;
            Ok(verdict)
        })
        .await
    }

    async fn clear_failures(&self, username: &str) -> Result<bool, StoreError> {
        bounded(async move {
            let done = sqlx::query(lockouts::CLEAR_USER)
                .bind(username)
                .execute(&self.pool)
                .await
                .map_err(backend)?;
            Ok(done.rows_affected() > 0)
        })
        .await
    }
}

#[async_trait]
impl Directory for PostgresTokenStore {
    async fn find_user(&self, name: &str) -> Result<Option<User>, StoreError> {
        self.read(&self.user_reads, name.to_owned()).await
    }

    async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        bounded(async move {
            let rows = sqlx::query(directory::SELECT_USERS)
                .fetch_all(&self.pool)
                .await
                .map_err(backend)?;
            rows.iter().map(<Users as Lookup>::record).collect()
        })
        .await
    }

    async fn add_user(&self, user: &User, now: i64) -> Result<bool, StoreError> {
        self.changed_one(
            sqlx::query(directory::INSERT_USER)
                .bind(user.name.as_str())
                .bind(user.password_hash.as_str())
                .bind(user.disabled)
                .bind(Role::join(&user.roles))
                .bind(now),
        )
        .await
    }

    async fn remove_user(&self, name: &str) -> Result<bool, StoreError> {
        self.changed_one(sqlx::query(directory::DELETE_USER).bind(name))
            .await
    }

    async fn set_user_password(&self, name: &str, password_hash: &str) -> Result<bool, StoreError> {
        self.changed_one(
            sqlx::query(directory::SET_USER_PASSWORD)
                .bind(password_hash)
                .bind(name),
        )
        .await
    }

    async fn set_user_disabled(&self, name: &str, disabled: bool) -> Result<bool, StoreError> {
        self.changed_one(
            sqlx::query(directory::SET_USER_DISABLED)
                .bind(disabled)
                .bind(name),
        )
        .await
    }

    async fn set_user_roles(&self, name: &str, roles: &BTreeSet<Role>) -> Result<bool, StoreError> {
        self.changed_one(
            sqlx::query(directory::SET_USER_ROLES)
                .bind(Role::join(roles))
                .bind(name),
        )
        .await
    }

    async fn clients_revision(&self) -> Result<i64, StoreError> {
        bounded(async move {
            sqlx::query_scalar(directory::SELECT_CLIENTS_REVISION)
                .fetch_one(&self.pool)
                .await
                .map_err(backend)
        })
        .await
    }

    async fn list_clients(&self) -> Result<Vec<ClientRow>, StoreError> {
        bounded(async move {
            sqlx::query_as(directory::SELECT_CLIENTS)
                .fetch_all(&self.pool)
                .await
                .map_err(backend)
        })
        .await
    }

    async fn client_exists(&self, id: &str) -> Result<bool, StoreError> {
        bounded(async move {
            let found: Option<i32> = sqlx::query_scalar(directory::CLIENT_EXISTS)
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .map_err(backend)?;
            Ok(found.is_some())
        })
        .await
    }

    async fn add_client(&self, client: &Client, now: i64) -> Result<bool, StoreError> {
        self.changed_one(insert_client(ClientRow::from_client(client), now))
            .await
    }

    async fn remove_client(&self, id: &str) -> Result<bool, StoreError> {
        self.changed_one(sqlx::query(directory::DELETE_CLIENT).bind(id))
            .await
    }

    async fn set_client_disabled(&self, id: &str, disabled: bool) -> Result<bool, StoreError> {
        self.changed_one(
            sqlx::query(directory::SET_CLIENT_DISABLED)
                .bind(disabled)
                .bind(id),
        )
        .await
    }
}

/// Binds a client's row for `registration::UPDATE_CLIENT` (every field but the id and
/// `disabled`).
fn bind_client_fields<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    row: ClientRow,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    query
        .bind(row.secret_hash)
        .bind(row.grant_types)
        .bind(row.scopes)
        .bind(row.access_token_validity_period)
        .bind(row.application_access_token_validity_period)
        .bind(row.refresh_token_validity_period)
        .bind(row.introspect)
        .bind(row.token_format)
        .bind(row.audience)
        .bind(row.public)
        .bind(row.redirect_uris)
        .bind(row.require_consent)
        .bind(row.name)
}

#[async_trait]
impl RegistrationStore for PostgresTokenStore {
    async fn create_initial_token(
        &self,
        token: &InitialAccessTokenRecord,
        now: i64,
    ) -> Result<(), StoreError> {
        bounded(async move {
            sqlx::query(registration::INSERT_INITIAL_TOKEN)
                .bind(token.digest.0.as_slice())
                .bind(token.expires_at)
                .bind(i64::from(token.uses))
                .bind(now)
                .execute(&self.pool)
                .await
                .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn initial_token_usable(
        &self,
        digest: &SecretDigest,
        now: i64,
    ) -> Result<bool, StoreError> {
        bounded(async move {
            let found: Option<i32> = sqlx::query_scalar(registration::FIND_INITIAL_TOKEN)
                .bind(digest.0.as_slice())
                .bind(now)
                .fetch_optional(&self.pool)
                .await
                .map_err(backend)?;
            Ok(found.is_some())
        })
        .await
    }

    /// A transaction of its own: the UPDATE's row lock makes a concurrent registration with
    /// the same initial token wait for this commit and then find the use spent. A caller that
    /// goes away before the commit drops the transaction, which rolls all of it back.
    async fn register_client(
        &self,
        client: &Client,
        registration: &RegistrationRecord,
        initial: Option<&SecretDigest>,
        now: i64,
    ) -> Result<Registration, StoreError> {
        let row = ClientRow::from_client(client);
        let id = row.id.clone();
        bounded(async move {
            let mut tx = self.pool.begin().await.map_err(backend)?;
            if let Some(initial) = initial {
                let spent = sqlx::query(registration::SPEND_INITIAL_TOKEN)
                    .bind(initial.0.as_slice())
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(backend)?
                    .rows_affected()
                    == 1;
                if !spent {
                    return Ok(Registration::InitialTokenRefused);
                }
            }
            let added = insert_client(row, now)
                .execute(&mut *tx)
                .await
                .map_err(backend)?
                .rows_affected()
                == 1;
            if !added {
                return Ok(Registration::IdTaken);
            }
            sqlx::query(registration::UPSERT_REGISTRATION)
                .bind(id)
                .bind(registration.token.0.as_slice())
                .bind(registration.token_endpoint_auth_method.as_str())
                .bind(registration.registered_at)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
            tx.commit().await.map_err(backend)?;
            Ok(Registration::Registered)
        })
        .await
    }

    async fn find_registration(
        &self,
        client_id: &str,
    ) -> Result<Option<RegistrationRecord>, StoreError> {
        bounded(async move {
            let found: Option<(Vec<u8>, String, i64)> =
                sqlx::query_as(registration::FIND_REGISTRATION)
                    .bind(client_id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(backend)?;
            found
                .map(|(bytes, token_endpoint_auth_method, registered_at)| {
                    let token = SecretDigest::from_slice(&bytes).ok_or_else(|| {
                        StoreError::Corrupt("client_registrations.token_sha256".into())
                    })?;
                    Ok(RegistrationRecord {
                        token,
                        token_endpoint_auth_method,
                        registered_at,
                    })
                })
                .transpose()
        })
        .await
    }

    async fn update_registered_client(
        &self,
        client: &Client,
        token_endpoint_auth_method: &str,
        read_secret_hash: &str,
    ) -> Result<bool, StoreError> {
        let row = ClientRow::from_client(client);
        let id = row.id.clone();
        bounded(async move {
            let mut tx = self.pool.begin().await.map_err(backend)?;
            let updated = bind_client_fields(sqlx::query(registration::UPDATE_CLIENT), row)
                .bind(&id)
                .bind(read_secret_hash)
                .execute(&mut *tx)
                .await
                .map_err(backend)?
                .rows_affected()
                == 1;
            // Only with the client: a refused update changes nothing.
            if !updated {
                return Ok(false);
            }
            sqlx::query(registration::SET_REGISTRATION_AUTH_METHOD)
                .bind(token_endpoint_auth_method)
                .bind(&id)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
            tx.commit().await.map_err(backend)?;
            Ok(updated)
        })
        .await
    }

    async fn delete_registered_client(&self, client_id: &str) -> Result<bool, StoreError> {
        bounded(async move {
            let mut tx = self.pool.begin().await.map_err(backend)?;
            let deleted = sqlx::query(directory::DELETE_CLIENT)
                .bind(client_id)
                .execute(&mut *tx)
                .await
                .map_err(backend)?
                .rows_affected()
                == 1;
            sqlx::query(registration::DELETE_REGISTRATION)
                .bind(client_id)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
            tx.commit().await.map_err(backend)?;
            Ok(deleted)
        })
        .await
    }

    async fn list_initial_tokens(&self) -> Result<Vec<InitialTokenRow>, StoreError> {
        bounded(async move {
            let rows = sqlx::query(registration::LIST_INITIAL_TOKENS)
                .fetch_all(&self.pool)
                .await
                .map_err(backend)?;
            rows.iter()
                .map(|row| {
                    let digest: Vec<u8> = row.try_get("digest").map_err(backend)?;
                    Ok(InitialTokenRow {
                        digest: SecretDigest::from_slice(&digest).ok_or_else(|| {
                            StoreError::Corrupt("an initial access token digest".into())
                        })?,
                        expires_at: row.try_get("expires_at").map_err(backend)?,
                        uses_left: row.try_get("uses_left").map_err(backend)?,
                        created_at: row.try_get("created_at").map_err(backend)?,
                    })
                })
                .collect()
        })
        .await
    }

    async fn revoke_initial_token(&self, digest: &SecretDigest) -> Result<bool, StoreError> {
        self.changed_one(sqlx::query(registration::DELETE_INITIAL_TOKEN).bind(digest.0.as_slice()))
            .await
    }

    async fn replace_client_secret(
        &self,
        client_id: &str,
        read_secret_hash: &str,
        secret_hash: &str,
        previous: Option<&PreviousSecret>,
    ) -> Result<bool, StoreError> {
        self.changed_one(
            sqlx::query(registration::REPLACE_CLIENT_SECRET)
                .bind(secret_hash)
                .bind(previous.map(|p| p.hash.as_str()))
                .bind(previous.map(|p| p.until))
                .bind(client_id)
                .bind(read_secret_hash),
        )
        .await
    }
}

/// `INSERT_CLIENT` for `row` (`client add`, a registration): the one place its parameters are
/// bound.
fn insert_client(
    row: ClientRow,
    now: i64,
) -> sqlx::query::Query<'static, sqlx::Postgres, sqlx::postgres::PgArguments> {
    sqlx::query(directory::INSERT_CLIENT)
        .bind(row.id)
        .bind(row.secret_hash)
        .bind(row.grant_types)
        .bind(row.scopes)
        .bind(row.access_token_validity_period)
        .bind(row.application_access_token_validity_period)
        .bind(row.refresh_token_validity_period)
        .bind(row.introspect)
        .bind(row.token_format)
        .bind(row.audience)
        .bind(row.disabled)
        .bind(row.public)
        .bind(row.redirect_uris)
        .bind(row.require_consent)
        .bind(row.name)
        .bind(row.owner)
        .bind(row.previous_secret_hash)
        .bind(row.previous_secret_until)
        .bind(now)
}

#[async_trait]
impl RateLimitStore for PostgresTokenStore {
    async fn take(&self, key: &str, rate: Rate, now_ms: i64) -> Result<Take, StoreError> {
        if self.leases.take(key, now_ms) {
            return Ok(Take::Allowed);
        }
        bounded(async move {
            let (reply, answer) = oneshot::channel();
            self.takes
                .submit(TakeJob {
                    key: key.to_owned(),
                    rate,
                    now_ms,
                    reply,
                })
                .await?;
            answer.await.map_err(|_| {
                StoreError::Unavailable("the rate-limit writer stopped before answering".into())
            })?
        })
        .await
    }
}

#[async_trait]
impl PublishedKeyStore for PostgresTokenStore {
    async fn publish_keys(&self, keys: &[PublicKey], valid_until: i64) -> Result<(), StoreError> {
        bounded(async move {
            for key in keys {
                // Never shortens what was promised before (by this node before a restart).
                sqlx::query(
                    "INSERT INTO published_keys (kid, jwk, valid_until) VALUES ($1, $2, $3) \
                     ON CONFLICT (kid) DO UPDATE SET jwk = EXCLUDED.jwk, \
                     valid_until = GREATEST(published_keys.valid_until, EXCLUDED.valid_until)",
                )
                .bind(&key.kid)
                .bind(&key.jwk)
                .bind(valid_until)
                .execute(&self.pool)
                .await
                .map_err(backend)?;
            }
            Ok(())
        })
        .await
    }

    async fn published_keys(&self, now: i64) -> Result<Vec<PublicKey>, StoreError> {
        bounded(async move {
            let rows = sqlx::query(
                "SELECT kid, jwk FROM published_keys WHERE valid_until >= $1 ORDER BY kid",
            )
            .bind(now)
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
            rows.iter()
                .map(|row| {
                    Ok(PublicKey {
                        kid: row.try_get("kid").map_err(backend)?,
                        jwk: row.try_get("jwk").map_err(backend)?,
                    })
                })
                .collect()
        })
        .await
    }
}
