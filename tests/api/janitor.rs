//! The janitor deletes expired tokens in the background and leaves live ones alone.

use std::sync::Arc;
use std::time::Duration;

use tokengate::clock::ManualClock;

use crate::helpers::*;

async fn expired_tokens_are_purged_and_live_ones_kept(app: TestApp) {
    let (old_access, old_refresh) = app.login(None).await.assert_tokens(3600, "default");
    let old_refresh = old_refresh.unwrap();
    app.clock.advance_secs(86_400 + 120);
    let (live_access, live_refresh) = app.login(None).await.assert_tokens(3600, "default");

    let mut purged = false;
    // Passes run every second; the bound is generous because CI shares the machine.
    for _ in 0..300 {
        if stored_access_token(&app, &old_access).await.is_none() {
            purged = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    assert!(purged, "the expired access token was not purged");
    let old_id =
        tokengate::crypto::token::PresentedToken::parse(&secrecy::SecretString::from(old_refresh))
            .unwrap()
            .id;
    assert!(app
        .store
        .find_refresh_token(&old_id)
        .await
        .unwrap()
        .is_none());
    assert!(stored_access_token(&app, &live_access).await.is_some());
    app.refresh(&live_refresh.unwrap())
        .await
        .assert_tokens(3600, "default");
    for table in ["access_tokens", "refresh_tokens"] {
        assert_eq!(purged_rows(&app, table).await, 1.0, "{table}");
    }
}

/// `tokengate_janitor_purged_rows_total{table}`, once the pass that purged has counted.
async fn purged_rows(app: &TestApp, table: &str) -> f64 {
    let series = format!("tokengate_janitor_purged_rows_total{{table=\"{table}\"}}");
    let mut value = 0.0;
    for _ in 0..100 {
        value = app.metric(&series).await;
        if value > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    value
}

#[tokio::test]
async fn the_janitor_purges_expired_tokens_on_sqlite() {
    let app = spawn_app_with(|s| s.stores.janitor_interval = Some(Duration::from_secs(1))).await;

    expired_tokens_are_purged_and_live_ones_kept(app).await;
}

#[tokio::test]
async fn the_janitor_purges_expired_tokens_on_postgres() {
    let Some(database) = TestDatabase::create("janitor").await else {
        return;
    };
    let app = postgres_node(&database, Arc::new(ManualClock::starting_now()), |s| {
        s.stores.janitor_interval = Some(Duration::from_secs(1))
    })
    .await;

    expired_tokens_are_purged_and_live_ones_kept(app).await;
}
