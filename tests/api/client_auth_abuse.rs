//! Client authentication under attack: `/revoke` and `/introspect` are rate limited like
//! `/token`, and repeated wrong secrets for a client from one address stop being checked.

use tokengate::abuse::rate_limit::Rate;
use tokengate::config::Settings;

use crate::helpers::*;

/// So slow that no token comes back while a test runs.
const NO_REFILL: f64 = 0.001;

fn bucket(burst: f64) -> Option<Rate> {
    Some(Rate {
        per_second: NO_REFILL,
        burst,
    })
}

/// 127.0.0.1 (the tests' own address) is a trusted proxy: `X-Forwarded-For` plays the client.
fn behind_proxy(settings: &mut Settings) {
    settings.rate_limit.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
}

fn assert_limited(reply: &Reply) {
    assert_eq!(reply.status, 429, "body: {}", reply.text);
    assert_eq!(reply.body["error"], "rate_limited", "body: {}", reply.text);
    let retry: u64 = reply.header("retry-after").unwrap().parse().unwrap();
    assert!(retry >= 1, "{retry}");
}

#[tokio::test]
async fn revoke_and_introspect_are_limited_per_client_ip() {
    let app = spawn_app_with(|s| s.rate_limit.per_ip = bucket(2.0)).await;
    assert_eq!(app.revoke("unknown").await.status, 200);
    assert_eq!(app.introspect("unknown").await.status, 200);

    assert_limited(&app.revoke("unknown").await);
    assert_limited(&app.introspect("unknown").await);
}

#[tokio::test]
async fn revoke_and_introspect_are_limited_per_client() {
    let app = spawn_app_with(|s| s.rate_limit.per_client = bucket(2.0)).await;
    for _ in 0..2 {
        assert_eq!(app.revoke("unknown").await.status, 200);
        app.introspect("unknown").await;
    }

    assert_limited(&app.revoke("unknown").await);
    assert_limited(&app.introspect("unknown").await);
    // The limit is the client's: the same endpoint as another client is not limited.
    let other = app
        .post_form_as(
            "/revoke",
            OTHER_CLIENT_ID,
            OTHER_CLIENT_SECRET,
            &[("token", "unknown")],
        )
        .await;
    assert_eq!(other.status, 200, "body: {}", other.text);
}

/// A cheap request as the argon2 client: a malformed refresh token, 400 once authenticated.
async fn argon_client_from(app: &TestApp, ip: &str, secret: &str) -> Reply {
    app.post_form_from(
        ip,
        "/token",
        ARGON_CLIENT_ID,
        secret,
        &[("grant_type", "refresh_token"), ("refresh_token", "x")],
    )
    .await
}

#[tokio::test]
async fn after_ten_wrong_secrets_from_one_address_its_secrets_are_refused_without_hashing() {
    let app = spawn_app_with(behind_proxy).await;
    for guess in 0..10 {
        argon_client_from(&app, "198.51.100.1", &format!("guess {guess}"))
            .await
            .assert_error(401, "invalid_client");
    }
    let before = app.hasher.verifications_started();

    let eleventh = argon_client_from(&app, "198.51.100.1", "guess 10").await;
    let right_from_there = argon_client_from(&app, "198.51.100.1", ARGON_CLIENT_SECRET).await;

    eleventh.assert_error(401, "invalid_client");
    right_from_there.assert_error(401, "invalid_client");
    assert_eq!(
        app.hasher.verifications_started(),
        before,
        "no secret was hashed for the locked address"
    );
    // The real client, elsewhere, is not held up.
    argon_client_from(&app, "203.0.113.7", ARGON_CLIENT_SECRET)
        .await
        .assert_error(400, "invalid_grant");
    assert_eq!(app.hasher.verifications_started(), before + 1);
}

#[tokio::test]
async fn the_client_lock_for_an_address_ends_after_the_lock_duration() {
    let app = spawn_app_with(behind_proxy).await;
    for guess in 0..10 {
        argon_client_from(&app, "198.51.100.1", &format!("guess {guess}"))
            .await
            .assert_error(401, "invalid_client");
    }

    app.clock.advance_secs(900);

    argon_client_from(&app, "198.51.100.1", ARGON_CLIENT_SECRET)
        .await
        .assert_error(400, "invalid_grant");
}

#[tokio::test]
async fn the_client_auth_limit_can_be_turned_off() {
    let app = spawn_app_with(|s| {
        behind_proxy(s);
        s.security.client_auth_lockout = None;
    })
    .await;
    for guess in 0..12 {
        argon_client_from(&app, "198.51.100.1", &format!("guess {guess}"))
            .await
            .assert_error(401, "invalid_client");
    }

    argon_client_from(&app, "198.51.100.1", ARGON_CLIENT_SECRET)
        .await
        .assert_error(400, "invalid_grant");
}

#[tokio::test]
async fn wrong_secrets_sent_at_the_same_moment_get_no_more_checks_than_the_allowance() {
    let app = spawn_app_with(behind_proxy).await;
    let before = app.hasher.verifications_started();

    let replies = futures::future::join_all((0..30).map(|guess| {
        let app = &app;
        async move { argon_client_from(app, "198.51.100.1", &format!("guess {guess}")).await }
    }))
    .await;

    for reply in &replies {
        reply.assert_error(401, "invalid_client");
    }
    let checked = app.hasher.verifications_started() - before;
    assert!(checked <= 10, "{checked} secrets were hashed");
}

#[tokio::test]
async fn an_ipv6_guesser_gains_nothing_by_hopping_within_its_64() {
    let app = spawn_app_with(behind_proxy).await;
    for guess in 0..10 {
        argon_client_from(
            &app,
            &format!("2001:db8:1:2::{guess:x}"),
            &format!("guess {guess}"),
        )
        .await
        .assert_error(401, "invalid_client");
    }
    let before = app.hasher.verifications_started();

    argon_client_from(&app, "2001:db8:1:2:ffff::1", "guess 10")
        .await
        .assert_error(401, "invalid_client");

    assert_eq!(app.hasher.verifications_started(), before);
}

#[tokio::test]
async fn wrong_generated_secrets_do_not_lock_the_client_for_its_address() {
    // A generated 256-bit secret cannot be guessed: locking it would only let a neighbour on a
    // shared address (carrier NAT) lock a public app's users out.
    let app = spawn_app_with(behind_proxy).await;
    let refresh_as = |secret: &'static str| {
        app.post_form_from(
            "198.51.100.9",
            "/token",
            CLIENT_ID,
            secret,
            &[("grant_type", "refresh_token"), ("refresh_token", "x")],
        )
    };
    for _ in 0..12 {
        refresh_as("not-the-secret")
            .await
            .assert_error(401, "invalid_client");
    }

    let right = refresh_as(CLIENT_SECRET).await;

    right.assert_error(400, "invalid_grant");
}
