//! Restarting the server on the same home folder: tokens live in the SQLite store, so what was
//! issued before a stop is honoured after it, and what was spent stays spent.

use std::sync::Arc;

use tokengate::clock::ManualClock;

use crate::helpers::{spawn_app, spawn_in, stored_access_token, TestApp, CLIENT_ID, USER};

/// Stops `app` gracefully and starts a new server on the same home folder, settings and database.
async fn restart(app: TestApp) -> TestApp {
    let mut settings = app.settings.clone();
    settings.server.https_port = 0;
    let home = app.stop().await;
    spawn_in(home, settings, Arc::new(ManualClock::starting_now())).await
}

#[tokio::test]
async fn tokens_issued_before_a_restart_are_honoured_after_it() {
    // Arrange
    let app = spawn_app().await;
    let (access, refresh) = app
        .login(Some("PRODUCTION"))
        .await
        .assert_tokens(3600, "PRODUCTION");
    let refresh = refresh.expect("the main client gets a refresh token");

    // Act
    let app = restart(app).await;
    let reply = app.refresh(&refresh).await;

    // Assert
    let (new_access, new_refresh) = reply.assert_tokens(3600, "PRODUCTION");
    let new_refresh = new_refresh.expect("the refresh grant rotates the refresh token");
    assert_ne!(new_access, access);
    assert_ne!(new_refresh, refresh);
    let record = stored_access_token(&app, &access)
        .await
        .expect("the access token issued before the restart is still stored");
    assert_eq!(record.client_id, CLIENT_ID);
    assert_eq!(record.username.as_deref(), Some(USER));
    assert_eq!(record.scope, "PRODUCTION");
    assert_eq!(record.expires_at - record.issued_at, 3600);
    assert!(record.revoked_at.is_none());
}

#[tokio::test]
async fn a_spent_refresh_token_stays_spent_across_a_restart() {
    // Arrange: a refresh token redeemed (and so rotated) before the restart.
    let app = spawn_app().await;
    let (_, spent) = app
        .login(Some("PRODUCTION"))
        .await
        .assert_tokens(3600, "PRODUCTION");
    let spent = spent.expect("the main client gets a refresh token");
    app.refresh(&spent).await.assert_tokens(3600, "PRODUCTION");

    // Act
    let app = restart(app).await;
    let replayed = app.refresh(&spent).await;

    // Assert
    replayed.assert_error(400, "invalid_grant");
}

#[tokio::test]
async fn the_rotated_refresh_token_still_works_after_a_restart() {
    // Arrange
    let app = spawn_app().await;
    let (_, first) = app
        .login(Some("PRODUCTION"))
        .await
        .assert_tokens(3600, "PRODUCTION");
    let first = first.expect("the main client gets a refresh token");
    let (_, current) = app.refresh(&first).await.assert_tokens(3600, "PRODUCTION");
    let current = current.expect("the refresh grant rotates the refresh token");

    // Act
    let app = restart(app).await;
    let reply = app.refresh(&current).await;

    // Assert
    let (_, next) = reply.assert_tokens(3600, "PRODUCTION");
    assert_ne!(next.as_deref(), Some(current.as_str()));
}

#[tokio::test]
async fn a_password_grant_answered_just_before_a_graceful_stop_is_durable() {
    // Arrange
    let app = spawn_app().await;
    let reply = app.login(None).await;
    assert_eq!(reply.status, 200, "body: {}", reply.text);
    let refresh = reply.str("refresh_token").to_owned();
    let scope = reply.str("scope").to_owned();

    // Act: stop right after the 200, with nothing else in between.
    let app = restart(app).await;
    let reply = app.refresh(&refresh).await;

    // Assert
    reply.assert_tokens(3600, &scope);
}
