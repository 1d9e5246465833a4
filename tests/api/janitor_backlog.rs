//! The janitor keeps up with any traffic: a store holding a large backlog of expired rows is
//! purged to empty within a few passes, whatever `janitor_interval` is, while the server keeps
//! answering token requests. Plus the by-hand measurement of the purge rate (`#[ignore]`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::Connection as _;
use tokengate::clock::ManualClock;
use tokengate::config::{Settings, TokenStoreSettings};

use crate::helpers::*;

/// Expired rows per token table: more than the 100 batches of 1,000 rows that one janitor
/// pass used to allow.
const EXPIRED_TOKENS: i64 = 150_000;
/// Old grant revocations and finished lockout windows.
const STALE_OTHERS: i64 = 20_000;

/// A direct connection to an app's database, for filling and counting behind its back.
enum Database {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl Database {
    async fn open(settings: &Settings) -> Self {
        match &settings.stores.tokens {
            TokenStoreSettings::Sqlite { path, .. } => {
                let options = sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(path)
                    .busy_timeout(Duration::from_secs(10));
                Self::Sqlite(
                    sqlx::SqliteConnection::connect_with(&options)
                        .await
                        .unwrap(),
                )
            }
            TokenStoreSettings::Postgres(postgres) => {
                Self::Postgres(sqlx::PgConnection::connect(&postgres.url).await.unwrap())
            }
        }
    }

    /// Inserts `tokens` expired access and refresh tokens, and `others` purgeable grant
    /// revocations and lockout rows, each table with one `INSERT … SELECT`.
    async fn fill(&mut self, now: i64, tokens: i64, others: i64) {
        let (issued, expires, revoked, window) = (
            now - 2 * 86_400,
            now - 86_400,
            now - 3 * 86_400,
            now - 86_400,
        );
        let columns = "id, secret_sha256, client_id, username, scope, family_id, issued_at, \
                       expires_at";
        let statements = match self {
            Self::Sqlite(_) => {
                let series = |count: i64| {
                    format!(
                        "WITH RECURSIVE n(i) AS (SELECT 1 WHERE {count} > 0 UNION ALL \
                         SELECT i + 1 FROM n WHERE i < {count}) SELECT"
                    )
                };
                let tokens_from = |table: &str| {
                    format!(
                        "INSERT INTO {table} ({columns}) {} randomblob(16), randomblob(32), \
                         'backlog', 'user-' || i, '', randomblob(16), {issued}, {expires} FROM n",
                        series(tokens)
                    )
                };
                [
                    tokens_from("access_tokens"),
                    tokens_from("refresh_tokens"),
                    format!(
                        "INSERT INTO revoked_families (family_id, revoked_at) {} \
                         randomblob(16), {revoked} FROM n",
                        series(others)
                    ),
                    format!(
                        "INSERT INTO login_failures (username, source, failures, window_start) \
                         {} 'user-' || i, '', 1, {window} FROM n",
                        series(others)
                    ),
                ]
            }
            Self::Postgres(_) => {
                let id = "decode(lpad(to_hex(i), 32, '0'), 'hex')";
                let tokens_from = |table: &str| {
                    format!(
                        "INSERT INTO {table} ({columns}) SELECT {id}, sha256({id}), 'backlog', \
                         'user-' || i, '', {id}, {issued}, {expires} \
                         FROM generate_series(1, {tokens}) AS i"
                    )
                };
                [
                    tokens_from("access_tokens"),
                    tokens_from("refresh_tokens"),
                    format!(
                        "INSERT INTO revoked_families (family_id, revoked_at) \
                         SELECT {id}, {revoked} FROM generate_series(1, {others}) AS i"
                    ),
                    format!(
                        "INSERT INTO login_failures (username, source, failures, window_start) \
                         SELECT 'user-' || i, '', 1, {window} FROM generate_series(1, {others}) AS i"
                    ),
                ]
            }
        };
        for sql in statements {
            self.execute(&sql).await;
        }
    }

    async fn execute(&mut self, sql: &str) {
        match self {
            Self::Sqlite(conn) => sqlx::query(sql).execute(conn).await.map(|_| ()),
            Self::Postgres(conn) => sqlx::query(sql).execute(conn).await.map(|_| ()),
        }
        .unwrap_or_else(|err| panic!("{sql}: {err}"));
    }

    /// The rows `fill` made that the janitor may delete at `now` (expired tokens, revocations
    /// older than every token, lockout rows an hour old).
    async fn purgeable(&mut self, now: i64) -> i64 {
        let (before, old) = (now - 60, now - 3600);
        let sql = format!(
            "SELECT (SELECT COUNT(*) FROM access_tokens WHERE expires_at < {before}) \
             + (SELECT COUNT(*) FROM refresh_tokens WHERE expires_at < {before}) \
             + (SELECT COUNT(*) FROM revoked_families WHERE revoked_at < {old}) \
             + (SELECT COUNT(*) FROM login_failures WHERE window_start < {old})"
        );
        match self {
            Self::Sqlite(conn) => sqlx::query_scalar(&sql).fetch_one(conn).await,
            Self::Postgres(conn) => sqlx::query_scalar(&sql).fetch_one(conn).await,
        }
        .unwrap()
    }

    /// Whether any expired token is left (cheap enough to ask often).
    async fn any_expired(&mut self, now: i64) -> bool {
        let before = now - 60;
        let sql = format!(
            "SELECT EXISTS (SELECT 1 FROM access_tokens WHERE expires_at < {before}) \
             OR EXISTS (SELECT 1 FROM refresh_tokens WHERE expires_at < {before})"
        );
        match self {
            Self::Sqlite(conn) => sqlx::query_scalar(&sql).fetch_one(conn).await,
            Self::Postgres(conn) => sqlx::query_scalar(&sql).fetch_one(conn).await,
        }
        .unwrap()
    }

    async fn close(self) {
        let _ = match self {
            Self::Sqlite(conn) => conn.close().await,
            Self::Postgres(conn) => conn.close().await,
        };
    }
}

/// Fills the database of `first` (a node with its janitor off) while nothing runs on it, then
/// starts a node with `janitor_interval` = one hour: only its first pass, and the catch-up
/// passes that follow one that ran out of time, can clean the store within the test.
/// Also returns the clock's time and the moment the node was started.
async fn backlog_node(
    first: TestApp,
    tokens: i64,
    others: i64,
) -> (TestApp, Database, i64, Instant) {
    let (now, settings, clock) = (
        first.clock_now(),
        first.settings.clone(),
        first.clock.clone(),
    );
    let home = first.stop().await;
    let mut database = Database::open(&settings).await;
    database.fill(now, tokens, others).await;
    assert_eq!(database.purgeable(now).await, 2 * tokens + 2 * others);
    let mut settings = settings;
    settings.stores.janitor_interval = Some(Duration::from_secs(3600));
    let started = Instant::now();
    let app = spawn_in(home, settings, clock).await;
    (app, database, now, started)
}

async fn a_backlog_of_expired_rows_is_purged_while_tokens_are_issued(
    app: TestApp,
    mut database: Database,
    now: i64,
) {
    let (_, refresh) = app.login(None).await.assert_tokens(3600, "default");
    let mut refresh = refresh.unwrap();
    let mut left = database.purgeable(now).await;
    let mut seen = vec![left];
    let mut answered_while_purging = 0;
    // Generous: CI shares the machine. The old janitor left a third of each token table for
    // the next pass, an hour later.
    let deadline = Instant::now() + Duration::from_secs(120);

    while left > 0 && Instant::now() < deadline {
        let (access, next) = app.refresh(&refresh).await.assert_tokens(3600, "default");
        assert!(stored_access_token(&app, &access).await.is_some());
        refresh = next.unwrap();
        answered_while_purging += 1;
        left = database.purgeable(now).await;
        if seen.last() != Some(&left) {
            seen.push(left);
        }
    }

    assert_eq!(
        left, 0,
        "expired rows still stored after 120 s (counts seen: {seen:?})"
    );
    assert!(
        seen.windows(2).all(|pair| pair[1] < pair[0]),
        "the backlog only shrinks: {seen:?}"
    );
    assert!(answered_while_purging > 0);
    // What was issued meanwhile is live and kept.
    app.refresh(&refresh).await.assert_tokens(3600, "default");
    database.close().await;
}

#[tokio::test]
async fn a_backlog_of_expired_rows_is_purged_while_tokens_are_issued_on_sqlite() {
    let first = spawn_app_with(|s| s.stores.janitor_interval = None).await;
    let (app, database, now, _) = backlog_node(first, EXPIRED_TOKENS, STALE_OTHERS).await;

    a_backlog_of_expired_rows_is_purged_while_tokens_are_issued(app, database, now).await;
}

#[tokio::test]
async fn a_backlog_of_expired_rows_is_purged_while_tokens_are_issued_on_postgres() {
    let Some(database) = TestDatabase::create("janitor_backlog").await else {
        return;
    };
    let first = postgres_node(&database, Arc::new(ManualClock::starting_now()), |s| {
        s.stores.janitor_interval = None
    })
    .await;
    let (app, connection, now, _) = backlog_node(first, EXPIRED_TOKENS, STALE_OTHERS).await;

    a_backlog_of_expired_rows_is_purged_while_tokens_are_issued(app, connection, now).await;
}

/// Measures the purge rate with the default settings: how long the janitor takes to empty a
/// store of `tokens` expired rows per token table. Prints the figure; asserts nothing about it.
async fn measure_purge_rate(
    backend: &str,
    app: TestApp,
    mut database: Database,
    now: i64,
    started: Instant,
) {
    let total = 2 * MEASURED_TOKENS;
    let deadline = started + Duration::from_secs(600);
    while database.any_expired(now).await && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    assert!(!database.any_expired(now).await, "not empty after 600 s");
    println!(
        "purge rate ({backend}): {total} rows in {elapsed:.2} s = {:.0} rows/s",
        total as f64 / elapsed
    );
    drop(app);
    database.close().await;
}

/// Rows per token table for the measurement.
const MEASURED_TOKENS: i64 = 500_000;

#[tokio::test]
#[ignore = "a measurement, run by hand: cargo test --test api purge_rate -- --ignored --nocapture"]
async fn purge_rate_on_sqlite() {
    let first = spawn_app_with(|s| s.stores.janitor_interval = None).await;
    let (app, database, now, started) = backlog_node(first, MEASURED_TOKENS, 0).await;

    measure_purge_rate("sqlite", app, database, now, started).await;
}

#[tokio::test]
#[ignore = "a measurement, run by hand: cargo test --test api purge_rate -- --ignored --nocapture"]
async fn purge_rate_on_postgres() {
    let Some(database) = TestDatabase::create("purge_rate").await else {
        return;
    };
    let first = postgres_node(&database, Arc::new(ManualClock::starting_now()), |s| {
        s.stores.janitor_interval = None
    })
    .await;
    let (app, connection, now, started) = backlog_node(first, MEASURED_TOKENS, 0).await;

    measure_purge_rate("postgres", app, connection, now, started).await;
}
