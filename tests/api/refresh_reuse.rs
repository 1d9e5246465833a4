//! RFC 9700 §4.14.2: refresh token reuse detection, and the grace period for mobile apps.

use crate::helpers::*;

/// Logs in and refreshes once: (first refresh token, now spent; its successor, live).
async fn spent_and_live(app: &TestApp) -> (String, String, String) {
    let (access, first) = app.login(None).await.assert_tokens(3600, "default");
    let (_, second) = app
        .refresh(&first.clone().unwrap())
        .await
        .assert_tokens(3600, "default");
    (access, first.unwrap(), second.unwrap())
}

#[tokio::test]
async fn presenting_a_spent_refresh_token_revokes_the_whole_grant() {
    let app = spawn_app().await;
    let (first_access, spent, live) = spent_and_live(&app).await;

    let reuse = app.refresh(&spent).await;

    reuse.assert_error(400, "invalid_grant");
    app.refresh(&live).await.assert_error(400, "invalid_grant");
    assert_eq!(app.introspect(&first_access).await.body["active"], false);
    assert_eq!(app.introspect(&live).await.body["active"], false);
}

#[tokio::test]
async fn reuse_does_not_touch_the_users_other_grants() {
    let app = spawn_app().await;
    let (_, spent, _) = spent_and_live(&app).await;
    let (other_access, other_refresh) = app.login(None).await.assert_tokens(3600, "default");

    app.refresh(&spent).await.assert_error(400, "invalid_grant");

    assert_eq!(app.introspect(&other_access).await.body["active"], true);
    app.refresh(&other_refresh.unwrap())
        .await
        .assert_tokens(3600, "default");
}

#[tokio::test]
async fn within_the_grace_period_the_just_spent_token_works_once_more() {
    let app = spawn_app_with(|s| s.oauth.refresh_token_reuse_grace_secs = 5).await;
    let (first_access, spent, _) = spent_and_live(&app).await;
    app.clock.advance_secs(5);

    let retry = app.refresh(&spent).await;

    let (_, newest) = retry.assert_tokens(3600, "default");
    assert_eq!(
        app.introspect(&first_access).await.body["active"],
        true,
        "grant not revoked"
    );
    app.refresh(&newest.unwrap())
        .await
        .assert_tokens(3600, "default");
}

#[tokio::test]
async fn two_racing_refreshes_both_succeed_within_the_grace_period() {
    let app = spawn_app_with(|s| s.oauth.refresh_token_reuse_grace_secs = 5).await;
    let (_, refresh) = app.login(None).await.assert_tokens(3600, "default");
    let refresh = refresh.unwrap();

    let (a, b) = tokio::join!(app.refresh(&refresh), app.refresh(&refresh));

    let (_, a_refresh) = a.assert_tokens(3600, "default");
    let (_, b_refresh) = b.assert_tokens(3600, "default");
    // Exactly one of the two new refresh tokens is the grant's live one.
    let a_works = app.refresh(&a_refresh.unwrap()).await.status == 200;
    let b_works = app.refresh(&b_refresh.unwrap()).await.status == 200;
    assert!(a_works || b_works);
}

#[tokio::test]
async fn after_the_grace_period_reuse_revokes_the_grant() {
    let app = spawn_app_with(|s| s.oauth.refresh_token_reuse_grace_secs = 5).await;
    let (_, spent, live) = spent_and_live(&app).await;
    app.clock.advance_secs(6);

    app.refresh(&spent).await.assert_error(400, "invalid_grant");

    app.refresh(&live).await.assert_error(400, "invalid_grant");
}

#[tokio::test]
async fn only_the_immediate_predecessor_of_the_live_token_gets_the_grace() {
    let app = spawn_app_with(|s| s.oauth.refresh_token_reuse_grace_secs = 5).await;
    let (_, older, middle) = spent_and_live(&app).await;
    let (_, live) = app.refresh(&middle).await.assert_tokens(3600, "default");

    app.refresh(&older).await.assert_error(400, "invalid_grant");

    app.refresh(&live.unwrap())
        .await
        .assert_error(400, "invalid_grant");
}

#[tokio::test]
async fn without_a_grace_period_even_an_immediate_retry_revokes_the_grant() {
    let app = spawn_app().await;
    assert_eq!(
        app.settings.oauth.refresh_token_reuse_grace_secs, 0,
        "off by default"
    );
    let (_, spent, live) = spent_and_live(&app).await;

    app.refresh(&spent).await.assert_error(400, "invalid_grant");

    app.refresh(&live).await.assert_error(400, "invalid_grant");
}
