//! A dual-stack listener (`host = "::"`) sees IPv4 peers as `::ffff:a.b.c.d`; they count as
//! their IPv4 address for rate limits, lockout and `trusted_proxies`.

use std::net::IpAddr;
use std::time::Duration;

use tokengate::abuse::rate_limit::Rate;

use crate::helpers::*;

fn dual_stack_with_ip_limit(settings: &mut tokengate::config::Settings) {
    settings.server.host = "::".parse().unwrap();
    settings.rate_limit.per_ip = Some(Rate {
        per_second: 0.001,
        burst: 2.0,
    });
}

/// A cheap request (malformed refresh token, 400) from `client`, maybe with X-Forwarded-For.
async fn cheap(app: &TestApp, client: &reqwest::Client, forwarded_for: Option<&str>) -> Reply {
    let mut request = client
        .post(app.url("/token"))
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", "x")]);
    if let Some(value) = forwarded_for {
        request = request.header("x-forwarded-for", value);
    }
    Reply::read(request.send().await.unwrap()).await
}

/// An HTTPS client trusting the app's certificate whose connections come from `local`.
fn client_from(app: &TestApp, local: &str) -> reqwest::Client {
    let pem = std::fs::read(&app.settings.tls.cert).unwrap();
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .tls_built_in_root_certs(false)
        .no_proxy()
        .local_address(local.parse::<IpAddr>().unwrap())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_mapped_ipv4_proxy_is_trusted_and_its_forwarded_clients_have_their_own_buckets() {
    let app = spawn_app_with(|s| {
        dual_stack_with_ip_limit(s);
        s.rate_limit.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    for _ in 0..2 {
        cheap(&app, &app.client, Some("198.51.100.1"))
            .await
            .assert_error(400, "invalid_grant");
    }
    cheap(&app, &app.client, Some("198.51.100.1"))
        .await
        .assert_error(429, "rate_limited");

    cheap(&app, &app.client, Some("::ffff:198.51.100.2"))
        .await
        .assert_error(400, "invalid_grant");
    // Written mapped or not, it is one client.
    cheap(&app, &app.client, Some("::ffff:198.51.100.1"))
        .await
        .assert_error(429, "rate_limited");
}

#[tokio::test]
async fn mapped_ipv4_peers_each_have_the_bucket_of_their_ipv4_address() {
    let app = spawn_app_with(dual_stack_with_ip_limit).await;
    let first = client_from(&app, "127.0.0.2");
    let second = client_from(&app, "127.0.0.3");
    for _ in 0..2 {
        cheap(&app, &first, None)
            .await
            .assert_error(400, "invalid_grant");
    }
    cheap(&app, &first, None)
        .await
        .assert_error(429, "rate_limited");

    // Another IPv4 address: not the same IPv6 /64 as the first.
    cheap(&app, &second, None)
        .await
        .assert_error(400, "invalid_grant");
}
