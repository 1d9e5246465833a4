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
