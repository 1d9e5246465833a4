//! `/health` answers from a probe of the store made at most once a second, so a flood of
//! health checks cannot take the database connections token requests need; and it still turns
//! 503 within seconds of the store going away. Counted on PostgreSQL: a probe reads the
//! migrations table (`SELECT COUNT(*) FROM _sqlx_migrations`), which nothing else reads once
//! the node runs, so its scan count in `pg_stat_user_tables` counts the probes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::Connection as _;
use tokengate::clock::ManualClock;

use crate::helpers::*;

fn admin_url() -> String {
    std::env::var("TOKENGATE_TEST_DATABASE_URL").unwrap()
}

async fn admin_sql(statement: &str) {
    let mut admin = sqlx::PgConnection::connect(&admin_url()).await.unwrap();
    sqlx::query(statement).execute(&mut admin).await.unwrap();
}

/// Ends the node's database sessions (a session writes its statistics when it ends) and
/// waits until they are gone.
async fn end_sessions_of(database: &TestDatabase) {
    let mut admin = sqlx::PgConnection::connect(&admin_url()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let remaining: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(&database.name)
        .fetch_one(&mut admin)
        .await
        .unwrap();
        if remaining == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "sessions of {} remain",
            database.name
        );
        sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
            .bind(&database.name)
            .execute(&mut admin)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Scans of the migrations table by sessions that have ended.
async fn probes_of(database: &TestDatabase) -> i64 {
    let mut reader = sqlx::PgConnection::connect(&database.url).await.unwrap();
    let scans = sqlx::query_scalar(
        "SELECT coalesce(seq_scan, 0) + coalesce(idx_scan, 0) FROM pg_stat_user_tables \
         WHERE relname = '_sqlx_migrations'",
    )
    .fetch_one(&mut reader)
    .await
    .unwrap();
    reader.close().await.unwrap();
    scans
}

/// `/health` from `workers` concurrent loops for `period`; how many answers were 200.
async fn flood_health(app: &TestApp, workers: usize, period: Duration) -> usize {
    let ok = Arc::new(AtomicUsize::new(0));
    let until = Instant::now() + period;
    let loops: Vec<_> = (0..workers)
        .map(|_| {
            let (client, url, ok) = (app.client.clone(), app.url("/health"), ok.clone());
            tokio::spawn(async move {
                while Instant::now() < until {
                    let response = client.get(&url).send().await.unwrap();
                    if response.status() == 200 {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    let _ = response.bytes().await;
                }
            })
        })
        .collect();
    for each in loops {
        each.await.unwrap();
    }
    ok.load(Ordering::Relaxed)
}

/// A node on `database` that runs nothing in the background (no janitor, keys shared rarely).
async fn quiet_node(database: &TestDatabase) -> TestApp {
    postgres_node(database, Arc::new(ManualClock::starting_now()), |s| {
        s.stores.janitor_interval = None;
        s.stores.reload_interval = Duration::from_secs(3600);
    })
    .await
}

#[tokio::test]
async fn a_flood_of_health_checks_probes_the_database_about_once_a_second() {
    let Some(database) = TestDatabase::create("health_flood").await else {
        return;
    };
    let app = quiet_node(&database).await;
    assert_eq!(app.get("/health").await.status, 200);
    end_sessions_of(&database).await;
    let before = probes_of(&database).await;

    let started = Instant::now();
    let answered = flood_health(&app, 16, Duration::from_secs(3)).await;
    let took = started.elapsed().as_secs_f64().ceil() as i64;
    end_sessions_of(&database).await;
    let probes = probes_of(&database).await - before;

    // One probe at the start and at most one a second after it.
    let allowed = took + 2;
    assert!(
        answered >= 100,
        "only {answered} health checks answered 200"
    );
    assert!(
        (1..=allowed).contains(&probes),
        "{probes} store probes for {answered} health checks in {took} s (allowed {allowed})"
    );
}

#[tokio::test]
async fn health_turns_503_within_seconds_of_the_database_going_away_and_back_to_200() {
    let Some(database) = TestDatabase::create("health_outage").await else {
        return;
    };
    let app = quiet_node(&database).await;
    assert_eq!(app.get("/health").await.status, 200);

    admin_sql(&format!(
        "ALTER DATABASE {} WITH ALLOW_CONNECTIONS false",
        database.name
    ))
    .await;
    end_sessions_of(&database).await;
    let gone = Instant::now();
    let deadline = gone + Duration::from_secs(10);
    let down = loop {
        let reply = app.get("/health").await;
        if reply.status != 200 || Instant::now() > deadline {
            break reply;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let noticed_after = gone.elapsed();
    admin_sql(&format!(
        "ALTER DATABASE {} WITH ALLOW_CONNECTIONS true",
        database.name
    ))
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let up = loop {
        let reply = app.get("/health").await;
        if reply.status == 200 || Instant::now() > deadline {
            break reply;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    down.assert_error(503, "temporarily_unavailable");
    assert!(
        noticed_after < Duration::from_secs(3),
        "503 only after {noticed_after:?}"
    );
    assert_eq!(up.status, 200, "{}", up.text);
}
