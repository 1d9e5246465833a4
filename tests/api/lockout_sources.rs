//! Lockout per (user name, client address) and per user name over every address: a guesser at
//! one address cannot lock the real user out from another, and one spread over many addresses
//! still meets a limit.

use std::sync::Arc;

use tokengate::clock::ManualClock;
use tokengate::config::Settings;

use crate::helpers::*;

/// 127.0.0.1 (the tests' own address) is a trusted proxy: `X-Forwarded-For` plays the client.
fn behind_proxy(settings: &mut Settings) {
    settings.rate_limit.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
}

async fn login_from(app: &TestApp, ip: &str, password: &str) -> Reply {
    app.post_form_from(
        ip,
        "/token",
        CLIENT_ID,
        CLIENT_SECRET,
        &[
            ("grant_type", "password"),
            ("username", USER),
            ("password", password),
        ],
    )
    .await
}

async fn fail_from(app: &TestApp, ip: &str) {
    login_from(app, ip, "wrong")
        .await
        .assert_error(400, "invalid_grant");
}

#[tokio::test]
async fn five_failures_from_one_address_do_not_lock_the_user_out_from_another() {
    let app = spawn_app_with(behind_proxy).await;
    for _ in 0..5 {
        fail_from(&app, "198.51.100.1").await;
    }
    let before = app.hasher.verifications_started();

    let guesser = login_from(&app, "198.51.100.1", PASSWORD).await;
    let user = login_from(&app, "203.0.113.7", PASSWORD).await;

    guesser.assert_error(400, "invalid_grant");
    assert_eq!(
        guesser.body["error_description"],
        "invalid username or password"
    );
    user.assert_tokens(3600, "default");
    assert_eq!(
        app.hasher.verifications_started() - before,
        1,
        "only the other address's password was checked"
    );
}

#[tokio::test]
async fn fifty_failures_over_many_addresses_lock_the_name_everywhere_and_a_success_does_not_reset_them(
) {
    let app = spawn_app_with(behind_proxy).await;
    // 48 failures, four from each of twelve addresses: none of them is locked on its own.
    for host in 1..=12 {
        for _ in 0..4 {
            fail_from(&app, &format!("198.51.100.{host}")).await;
        }
    }
    // The real user, elsewhere, still gets in; that forgets nothing about the others' guesses.
    login_from(&app, "203.0.113.7", PASSWORD)
        .await
        .assert_tokens(3600, "default");
    fail_from(&app, "198.51.100.13").await;
    fail_from(&app, "198.51.100.13").await;
    let before = app.hasher.verifications_started();

    let known = login_from(&app, "203.0.113.7", PASSWORD).await;
    let fresh = login_from(&app, "192.0.2.99", PASSWORD).await;

    known.assert_error(400, "invalid_grant");
    fresh.assert_error(400, "invalid_grant");
    assert_eq!(
        app.hasher.verifications_started(),
        before,
        "a name locked everywhere costs no password verification"
    );
}

#[tokio::test]
async fn the_lock_for_an_address_ends_after_the_lock_duration() {
    let app = spawn_app_with(behind_proxy).await;
    for _ in 0..5 {
        fail_from(&app, "198.51.100.1").await;
    }
    app.clock.advance_secs(899);
    login_from(&app, "198.51.100.1", PASSWORD)
        .await
        .assert_error(400, "invalid_grant");

    app.clock.advance_secs(1);

    login_from(&app, "198.51.100.1", PASSWORD)
        .await
        .assert_tokens(3600, "default");
}

#[tokio::test]
async fn on_postgres_both_counts_are_shared_by_the_cluster() {
    let Some(database) = TestDatabase::create("lockout_sources_shared").await else {
        return;
    };
    let clock = Arc::new(ManualClock::starting_now());
    let adjust = |s: &mut Settings| {
        behind_proxy(s);
        if let Some(policy) = s.security.lockout.as_mut() {
            policy.max_failures_per_user = 8;
        }
    };
    let first = postgres_node(&database, clock.clone(), adjust).await;
    let second = postgres_node(&database, clock, adjust).await;

    // Five failures from one address, over both nodes: locked for that address on both.
    for node in [&first, &second, &first, &second, &first] {
        fail_from(node, "198.51.100.1").await;
    }
    login_from(&second, "198.51.100.1", PASSWORD)
        .await
        .assert_error(400, "invalid_grant");
    login_from(&first, "203.0.113.7", PASSWORD)
        .await
        .assert_tokens(3600, "default");

    // Three more from another address make eight for the name: locked everywhere.
    for node in [&second, &first, &second] {
        fail_from(node, "198.51.100.2").await;
    }
    login_from(&first, "203.0.113.7", PASSWORD)
        .await
        .assert_error(400, "invalid_grant");
    login_from(&second, "192.0.2.99", PASSWORD)
        .await
        .assert_error(400, "invalid_grant");
}

/// How many lockout rows the app's database holds.
async fn lockout_rows(app: &TestApp) -> i64 {
    use sqlx::Connection as _;
    const QUERY: &str = "SELECT COUNT(*) FROM login_failures";
    match &app.settings.stores.tokens {
        tokengate::config::TokenStoreSettings::Sqlite { path, .. } => {
            let options = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(path)
                .read_only(true);
            let mut conn = sqlx::SqliteConnection::connect_with(&options)
                .await
                .unwrap();
            let found = sqlx::query_scalar(QUERY)
                .fetch_one(&mut conn)
                .await
                .unwrap();
            let _ = conn.close().await;
            found
        }
        tokengate::config::TokenStoreSettings::Postgres(postgres) => {
            let mut conn = sqlx::PgConnection::connect(&postgres.url).await.unwrap();
            let found = sqlx::query_scalar(QUERY)
                .fetch_one(&mut conn)
                .await
                .unwrap();
            let _ = conn.close().await;
            found
        }
    }
}

async fn the_janitor_forgets_both_rows_once_the_window_is_over(app: TestApp) {
    fail_from(&app, "198.51.100.1").await;
    assert_eq!(
        lockout_rows(&app).await,
        2,
        "the address's row and the name's"
    );

    app.clock.advance_secs(901);
    let mut purged = false;
    // Passes run every second; the bound is generous because CI shares the machine.
    for _ in 0..300 {
        if lockout_rows(&app).await == 0 {
            purged = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    assert!(purged, "the finished lockout rows were not purged");
}

#[tokio::test]
async fn the_janitor_forgets_finished_lockout_rows_on_sqlite() {
    let app = spawn_app_with(|s| {
        behind_proxy(s);
        s.stores.janitor_interval = Some(std::time::Duration::from_secs(1));
    })
    .await;

    the_janitor_forgets_both_rows_once_the_window_is_over(app).await;
}

#[tokio::test]
async fn the_janitor_forgets_finished_lockout_rows_on_postgres() {
    let Some(database) = TestDatabase::create("lockout_sources_janitor").await else {
        return;
    };
    let app = postgres_node(&database, Arc::new(ManualClock::starting_now()), |s| {
        behind_proxy(s);
        s.stores.janitor_interval = Some(std::time::Duration::from_secs(1));
    })
    .await;

    the_janitor_forgets_both_rows_once_the_window_is_over(app).await;
}
