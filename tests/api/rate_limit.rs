//! Token buckets per client IP and per client id on /token: 429, Retry-After, RFC-style JSON.

use tokengate::abuse::rate_limit::Rate;

use crate::helpers::*;

fn bucket(per_second: f64, burst: f64) -> Option<Rate> {
    Some(Rate { per_second, burst })
}

/// A cheap request: a malformed refresh token, answered 400 without any hashing.
async fn cheap(app: &TestApp, forwarded_for: Option<&str>) -> Reply {
    let mut request = app
        .client
        .post(app.url("/token"))
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", "x")]);
    if let Some(value) = forwarded_for {
        request = request.header("x-forwarded-for", value);
    }
    Reply::read(request.send().await.unwrap()).await
}

fn assert_limited(reply: &Reply) {
    reply.assert_error(429, "slow_down");
    let retry: u64 = reply.header("retry-after").unwrap().parse().unwrap();
    assert!(retry >= 1, "{retry}");
}

#[tokio::test]
async fn a_client_ip_over_its_burst_gets_429_until_tokens_refill() {
    let app = spawn_app_with(|s| s.rate_limit.per_ip = bucket(1.0, 3.0)).await;
    for _ in 0..3 {
        cheap(&app, None).await.assert_error(400, "invalid_grant");
    }

    assert_limited(&cheap(&app, None).await);

    app.clock.advance_secs(1);
    cheap(&app, None).await.assert_error(400, "invalid_grant");
    assert_limited(&cheap(&app, None).await);
}

#[tokio::test]
async fn forwarded_for_from_an_untrusted_peer_is_ignored() {
    let app = spawn_app_with(|s| s.rate_limit.per_ip = bucket(1.0, 2.0)).await;
    cheap(&app, Some("198.51.100.1"))
        .await
        .assert_error(400, "invalid_grant");
    cheap(&app, Some("198.51.100.2"))
        .await
        .assert_error(400, "invalid_grant");

    assert_limited(&cheap(&app, Some("198.51.100.3")).await);
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_bucket() {
    let app = spawn_app_with(|s| {
        s.rate_limit.per_ip = bucket(1.0, 2.0);
        s.rate_limit.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    for _ in 0..2 {
        cheap(&app, Some("198.51.100.1"))
            .await
            .assert_error(400, "invalid_grant");
    }
    assert_limited(&cheap(&app, Some("198.51.100.1")).await);

    // A forged leftmost entry does not help: the rightmost untrusted hop counts.
    assert_limited(&cheap(&app, Some("203.0.113.5, 198.51.100.1")).await);
    cheap(&app, Some("198.51.100.2"))
        .await
        .assert_error(400, "invalid_grant");
}

#[tokio::test]
async fn each_client_id_has_its_own_bucket() {
    let app = spawn_app_with(|s| s.rate_limit.per_client = bucket(1.0, 2.0)).await;
    for _ in 0..2 {
        cheap(&app, None).await.assert_error(400, "invalid_grant");
    }

    assert_limited(&cheap(&app, None).await);
    app.post_token_as(
        OTHER_CLIENT_ID,
        OTHER_CLIENT_SECRET,
        &[("grant_type", "refresh_token"), ("refresh_token", "x")],
    )
    .await
    .assert_error(400, "invalid_grant");
}

#[tokio::test]
async fn rate_limits_are_off_unless_enabled() {
    let app = spawn_app().await;
    assert!(app.settings.rate_limit.per_ip.is_none());

    for _ in 0..60 {
        cheap(&app, None).await.assert_error(400, "invalid_grant");
    }
}
