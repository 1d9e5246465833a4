//! Account lockout: repeated failed password grants lock the user name for a while.

use std::sync::Arc;

use tokengate::clock::ManualClock;

use crate::helpers::*;

async fn fail_login(app: &TestApp, username: &str) {
    app.post_token(&[
        ("grant_type", "password"),
        ("username", username),
        ("password", "wrong"),
    ])
    .await
    .assert_error(400, "invalid_grant");
}

#[tokio::test]
async fn five_failures_lock_the_account_with_the_same_answer_and_no_argon2_work() {
    let app = spawn_app().await;
    for _ in 0..5 {
        fail_login(&app, USER).await;
    }
    let verifications_before = app.hasher.verifications_started();

    let locked = app.login(None).await;

    locked.assert_error(400, "invalid_grant");
    assert_eq!(
        locked.body["error_description"],
        "invalid username or password"
    );
    assert_eq!(
        app.hasher.verifications_started(),
        verifications_before,
        "a locked account costs no password verification"
    );
}

#[tokio::test]
async fn the_lock_ends_after_the_lock_duration() {
    let app = spawn_app().await;
    for _ in 0..5 {
        fail_login(&app, USER).await;
    }
    app.clock.advance_secs(899);
    app.login(None).await.assert_error(400, "invalid_grant");

    app.clock.advance_secs(1);

    app.login(None).await.assert_tokens(3600, "default");
}

#[tokio::test]
async fn a_successful_login_resets_the_count() {
    let app = spawn_app().await;
    for _ in 0..4 {
        fail_login(&app, USER).await;
    }
    app.login(None).await.assert_tokens(3600, "default");
    for _ in 0..4 {
        fail_login(&app, USER).await;
    }

    app.login(None).await.assert_tokens(3600, "default");
}

#[tokio::test]
async fn failures_outside_the_window_do_not_add_up() {
    let app = spawn_app().await;
    for _ in 0..4 {
        fail_login(&app, USER).await;
    }
    app.clock.advance_secs(900);
    fail_login(&app, USER).await;

    app.login(None).await.assert_tokens(3600, "default");
}

#[tokio::test]
async fn unknown_names_are_counted_like_real_ones() {
    let app = spawn_app().await;
    for _ in 0..5 {
        fail_login(&app, "ghost").await;
    }
    let before = app.hasher.verifications_started();

    fail_login(&app, "ghost").await;

    assert_eq!(app.hasher.verifications_started(), before);
}

#[tokio::test]
async fn one_locked_user_does_not_lock_another() {
    let app = spawn_app().await;
    for _ in 0..5 {
        fail_login(&app, "ghost").await;
    }

    app.login(None).await.assert_tokens(3600, "default");
}

#[tokio::test]
async fn lockout_can_be_turned_off() {
    let app = spawn_app_with(|s| s.security.lockout = None).await;
    for _ in 0..8 {
        fail_login(&app, USER).await;
    }

    app.login(None).await.assert_tokens(3600, "default");
}

#[tokio::test]
async fn the_lock_is_shared_by_every_server_on_the_same_database() {
    let first = spawn_app().await;
    let mut settings = first.settings.clone();
    settings.server.https_port = 0;
    let second = spawn_in(
        first.home.clone(),
        settings,
        Arc::new(ManualClock::starting_now()),
    )
    .await;

    for _ in 0..5 {
        fail_login(&first, USER).await;
    }

    second.login(None).await.assert_error(400, "invalid_grant");
}

#[tokio::test]
async fn guesses_sent_at_the_same_moment_get_no_more_than_the_allowance() {
    let app = spawn_app().await;
    let before = app.hasher.verifications_started();

    let replies = futures::future::join_all((0..20).map(|_| {
        app.post_token(&[
            ("grant_type", "password"),
            ("username", USER),
            ("password", "guess"),
        ])
    }))
    .await;

    for reply in &replies {
        // The surplus waits for the checks in flight, then finds the account locked.
        reply.assert_error(400, "invalid_grant");
    }
    assert!(
        app.hasher.verifications_started() - before <= 5,
        "{} passwords were checked",
        app.hasher.verifications_started() - before
    );
    app.login(None).await.assert_error(400, "invalid_grant");
}

#[tokio::test]
async fn concurrent_honest_logins_for_one_account_all_succeed() {
    let app = spawn_app().await;

    let replies = futures::future::join_all((0..12).map(|_| app.login(None))).await;

    for reply in replies {
        reply.assert_tokens(3600, "default");
    }
}
