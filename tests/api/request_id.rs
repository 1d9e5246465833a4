//! `X-Request-Id`: a sane id from the client is kept, anything else replaced by a generated
//! one, and every answer carries it, errors included.

use std::time::Duration;

use tokengate::abuse::rate_limit::Rate;

use crate::helpers::*;

async fn send(request: reqwest::RequestBuilder) -> Reply {
    Reply::read(request.send().await.unwrap()).await
}

fn is_generated(id: &str) -> bool {
    uuid::Uuid::parse_str(id).is_ok_and(|uuid| uuid.get_version_num() == 4)
}

#[tokio::test]
async fn a_sane_request_id_is_echoed_on_successes_and_on_every_kind_of_error() {
    let app = spawn_app_with(|s| {
        s.rate_limit.per_ip = Some(Rate {
            per_second: 0.001,
            burst: 3.0,
        })
    })
    .await;
    let id = "lb-7:0193a4f2-7c1e-7d3a-9b2e-5f6a7b8c9d0e";
    let token = || {
        app.client
            .post(app.url("/token"))
            .header("x-request-id", id)
    };

    let ok = send(token().basic_auth(CLIENT_ID, Some(CLIENT_SECRET)).form(&[
        ("grant_type", "password"),
        ("username", USER),
        ("password", PASSWORD),
    ]))
    .await;
    let unauthorized = send(
        token()
            .basic_auth(CLIENT_ID, Some("wrong"))
            .form(&[("grant_type", "client_credentials")]),
    )
    .await;
    let bad_request = send(token().body("not a form")).await;
    let limited = send(token().form(&[("grant_type", "password")])).await;
    let not_found = send(
        app.client
            .get(app.url("/nowhere"))
            .header("x-request-id", id),
    )
    .await;
    let wrong_method = send(app.client.get(app.url("/token")).header("x-request-id", id)).await;
    let health = send(
        app.client
            .get(app.url("/health"))
            .header("x-request-id", id),
    )
    .await;

    assert_eq!(ok.status, 200, "{}", ok.text);
    unauthorized.assert_error(401, "invalid_client");
    bad_request.assert_error(400, "invalid_request");
    limited.assert_error(429, "rate_limited");
    assert_eq!(not_found.status, 404);
    assert_eq!(wrong_method.status, 405);
    assert_eq!(health.status, 200);
    for reply in [
        &ok,
        &unauthorized,
        &bad_request,
        &limited,
        &not_found,
        &wrong_method,
        &health,
    ] {
        assert_eq!(reply.header("x-request-id"), Some(id), "{reply:?}");
    }
    let issued = wait_for_event(&audit_file(app.home.path()), "token_issued", |_| true).await;
    assert_eq!(issued["request_id"], id);
}

#[tokio::test]
async fn without_a_request_id_each_request_gets_a_fresh_one() {
    let app = spawn_app().await;

    let first = app.get("/health").await;
    let second = app.get("/nowhere").await;

    let (first, second) = (
        first.header("x-request-id").unwrap(),
        second.header("x-request-id").unwrap(),
    );
    assert!(is_generated(first), "{first}");
    assert!(is_generated(second), "{second}");
    assert_ne!(first, second);
}

#[tokio::test]
async fn an_insane_request_id_is_replaced_and_never_reaches_the_trail() {
    let app = spawn_app().await;
    let long = "a".repeat(129);
    for insane in [
        long.as_str(),
        "has spaces",
        "quote\"brace{",
        "semi;colon",
        "",
    ] {
        // The trail writes a repeated failure from one address once per window.
        app.clock
            .advance_secs(tokengate::audit::FLOOD_INTERVAL_MS / 1000);
        let reply = send(
            app.client
                .post(app.url("/token"))
                .header("x-request-id", insane)
                .basic_auth(CLIENT_ID, Some("wrong"))
                .form(&[("grant_type", "client_credentials")]),
        )
        .await;
        reply.assert_error(401, "invalid_client");
        let answered = reply.header("x-request-id").unwrap();
        assert!(is_generated(answered), "{insane:?} → {answered}");
        wait_for_event(&audit_file(app.home.path()), "client_auth_failed", |e| {
            e["request_id"] == answered
        })
        .await;
    }
    let text = std::fs::read_to_string(audit_file(app.home.path())).unwrap();
    assert!(
        !text.contains(&long) && !text.contains("has spaces"),
        "{text}"
    );
    // At most 128 characters are taken as they are.
    let longest = "b".repeat(128);
    let reply = send(
        app.client
            .get(app.url("/health"))
            .header("x-request-id", &longest),
    )
    .await;
    assert_eq!(reply.header("x-request-id"), Some(longest.as_str()));
}

#[tokio::test]
async fn the_503_of_the_shutdown_drain_carries_the_request_id_too() {
    let app = spawn_app_with(|s| s.server.shutdown_drain_period = Duration::from_secs(2)).await;
    let client = app.client.clone();
    let health_url = app.url("/health");

    let stopping = tokio::spawn(app.stop());
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    let health = loop {
        let reply = send(client.get(&health_url).header("x-request-id", "drain-1")).await;
        if reply.status != 200 || std::time::Instant::now() > deadline {
            break reply;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    health.assert_error(503, "temporarily_unavailable");
    assert_eq!(health.header("x-request-id"), Some("drain-1"));
    tokio::time::timeout(Duration::from_secs(20), stopping)
        .await
        .unwrap()
        .unwrap();
}
