//! The lockout's "check in flight" slot is given back however the request ends: clients that
//! go away in the middle of their password checks do not leave the account answering 503.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{Connection as _, PgConnection};
use tokengate::clock::ManualClock;
use tokengate::config::TokenStoreSettings;

use crate::helpers::*;

/// Sends a dozen password grants for the fixture user and drops them while their checks are
/// in flight (the hashing pool busy with them), then logs in with the right password.
async fn a_dozen_abandoned_checks_then_the_right_password(app: &TestApp) -> Reply {
    let before = app.hasher.verifications_started();
    let requests: Vec<_> = (0..12)
        .map(|_| {
            let client = app.client.clone();
            let url = app.url("/token");
            tokio::spawn(async move {
                client
                    .post(url)
                    .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
                    .form(&[
                        ("grant_type", "password"),
                        ("username", USER),
                        ("password", "a guess"),
                    ])
                    .send()
                    .await
            })
        })
        .collect();
    // Every slot of the allowance is taken by a check in flight, and the pool works on them.
    let deadline = Instant::now() + Duration::from_secs(20);
    while app.hasher.verifications_started() == before || checks_in_flight(app).await < 5 {
        assert!(Instant::now() < deadline, "the checks did not start");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    for request in &requests {
        request.abort();
    }
    for request in requests {
        let _ = request.await;
    }

    app.login(None).await
}

/// The most password checks in flight the lockout table records for the fixture user.
async fn checks_in_flight(app: &TestApp) -> i64 {
    const QUERY: &str = "SELECT COALESCE(MAX(pending), 0) FROM login_failures WHERE username = $1";
    match &app.settings.stores.tokens {
        TokenStoreSettings::Sqlite { path, .. } => {
            let options = SqliteConnectOptions::new().filename(path).read_only(true);
            let mut conn = SqliteConnection::connect_with(&options).await.unwrap();
            let found = sqlx::query_scalar(QUERY)
                .bind(USER)
                .fetch_one(&mut conn)
                .await;
            let _ = conn.close().await;
            found.unwrap_or(0)
        }
        TokenStoreSettings::Postgres(postgres) => {
            let mut conn = PgConnection::connect(&postgres.url).await.unwrap();
            let found = sqlx::query_scalar(QUERY)
                .bind(USER)
                .fetch_one(&mut conn)
                .await;
            let _ = conn.close().await;
            found.unwrap()
        }
    }
}

#[tokio::test]
async fn clients_that_go_away_mid_check_do_not_leave_the_account_busy() {
    let app = spawn_app().await;

    let reply = a_dozen_abandoned_checks_then_the_right_password(&app).await;

    reply.assert_tokens(3600, "default");
}

#[tokio::test]
async fn on_postgres_clients_that_go_away_mid_check_do_not_leave_the_account_busy() {
    let Some(database) = TestDatabase::create("lockout_in_flight").await else {
        return;
    };
    let app = postgres_node(&database, Arc::new(ManualClock::starting_now()), |_| {}).await;

    let reply = a_dozen_abandoned_checks_then_the_right_password(&app).await;

    reply.assert_tokens(3600, "default");
}

/// Password checks begun (lockout rows taken) for names starting with `prefix`.
async fn begun_for(app: &TestApp, prefix: &str) -> i64 {
    let TokenStoreSettings::Sqlite { path, .. } = &app.settings.stores.tokens else {
        panic!("a SQLite app")
    };
    let options = SqliteConnectOptions::new().filename(path).read_only(true);
    let mut conn = SqliteConnection::connect_with(&options).await.unwrap();
    let found = sqlx::query_scalar(
        "SELECT COUNT(*) FROM login_failures WHERE source = '' AND pending > 0 \
         AND username LIKE ?1",
    )
    .bind(format!("{prefix}%"))
    .fetch_one(&mut conn)
    .await;
    let _ = conn.close().await;
    found.unwrap_or(0)
}

#[tokio::test]
async fn checks_whose_clients_went_away_are_not_hashed() {
    // Clients that send logins and hang up must not keep the hashing queue full.
    let app = spawn_app_with(|settings| settings.password_hashing.workers = 1).await;
    let before = app.hasher.verifications_started();
    let send = |name: String| {
        let client = app.client.clone();
        let url = app.url("/token");
        tokio::spawn(async move {
            client
                .post(url)
                .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
                .form(&[
                    ("grant_type", "password"),
                    ("username", name.as_str()),
                    ("password", "a guess"),
                ])
                .send()
                .await
        })
    };
    let blocker = send("blocker".to_owned());
    let deadline = Instant::now() + Duration::from_secs(20);
    while app.hasher.verifications_started() == before {
        assert!(Instant::now() < deadline, "the blocker did not start");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let queued: Vec<_> = (0..10).map(|n| send(format!("queued-{n}"))).collect();
    while begun_for(&app, "queued-").await < 10 {
        assert!(Instant::now() < deadline, "the queued checks did not begin");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    // Act
    for request in &queued {
        request.abort();
    }
    for request in queued {
        let _ = request.await;
    }
    // Queued behind whatever is left: once it is answered, the queue has been worked off.
    let login = app.login(None).await;

    // Assert
    login.assert_tokens(3600, "default");
    let _ = blocker.await;
    let hashed = app.hasher.verifications_started() - before;
    assert!(
        hashed <= 3,
        "{hashed} verifications for 1 blocker, 1 login and 10 abandoned checks"
    );
}
