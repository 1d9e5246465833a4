//! RFC 7662: POST /introspect, for resource servers.

use serde_json::json;

use crate::helpers::*;

fn assert_uuid(value: &serde_json::Value) {
    let text = value.as_str().expect("jti is a string");
    assert!(uuid::Uuid::parse_str(text).is_ok(), "{text}");
}

#[tokio::test]
async fn an_active_access_token_is_described_in_full() {
    let app = spawn_app().await;
    let (access, _) = app
        .login(Some("PRODUCTION"))
        .await
        .assert_tokens(3600, "PRODUCTION");

    let reply = app.introspect(&access).await;

    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    let body = &reply.body;
    assert_eq!(body["active"], true);
    assert_eq!(body["scope"], "PRODUCTION");
    assert_eq!(body["client_id"], CLIENT_ID);
    assert_eq!(body["username"], USER);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["sub"], USER);
    let issuer = format!("https://localhost:{}", app.addr.port());
    assert_eq!(body["iss"], issuer.as_str());
    assert_eq!(
        body["aud"],
        issuer.as_str(),
        "no audience configured: the issuer"
    );
    let iat = body["iat"].as_i64().unwrap();
    assert_eq!(body["exp"].as_i64().unwrap() - iat, 3600);
    assert_eq!(body["nbf"].as_i64().unwrap(), iat);
    assert!((iat - app.clock_now()).abs() <= 1);
    assert_uuid(&body["jti"]);
    assert_eq!(body.as_object().unwrap().len(), 12, "{}", reply.text);
}

#[tokio::test]
async fn an_active_refresh_token_is_described_as_such() {
    let app = spawn_app().await;
    let (_, refresh) = app.login(None).await.assert_tokens(3600, "default");

    let reply = app.introspect(&refresh.unwrap()).await;

    assert_eq!(reply.body["active"], true, "{}", reply.text);
    assert_eq!(reply.body["token_type"], "refresh_token");
    let lifetime = reply.body["exp"].as_i64().unwrap() - reply.body["iat"].as_i64().unwrap();
    assert_eq!(lifetime, 86_400);
}

#[tokio::test]
async fn spent_expired_and_unknown_tokens_are_inactive_and_nothing_more() {
    let app = spawn_app().await;
    let (access, refresh) = app.login(None).await.assert_tokens(3600, "default");
    let refresh = refresh.unwrap();
    app.refresh(&refresh).await.assert_tokens(3600, "default");
    let spent = app.introspect(&refresh).await;
    let unknown = app
        .introspect("AAAAAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
        .await;
    let garbage = app.introspect("definitely not a token").await;
    app.clock.advance_secs(3600);
    let expired = app.introspect(&access).await;

    for reply in [spent, unknown, garbage, expired] {
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert_eq!(reply.body, json!({"active": false}));
    }
}

#[tokio::test]
async fn an_access_token_is_active_until_its_last_second() {
    let app = spawn_app().await;
    let (access, _) = app.login(None).await.assert_tokens(3600, "default");

    app.clock.advance_secs(3598);

    assert_eq!(app.introspect(&access).await.body["active"], true);
}

#[tokio::test]
async fn an_unknown_token_type_hint_is_ignored() {
    let app = spawn_app().await;
    let (access, _) = app.login(None).await.assert_tokens(3600, "default");

    let reply = app
        .post_form_as(
            "/introspect",
            RESOURCE_SERVER_ID,
            SHARED_SECRET,
            &[("token", &access), ("token_type_hint", "refresh_token")],
        )
        .await;
    let odd = app
        .post_form_as(
            "/introspect",
            RESOURCE_SERVER_ID,
            SHARED_SECRET,
            &[("token", &access), ("token_type_hint", "saml_assertion")],
        )
        .await;

    assert_eq!(reply.body["active"], true, "{}", reply.text);
    assert_eq!(odd.body["active"], true, "{}", odd.text);
}

#[tokio::test]
async fn an_unauthenticated_caller_gets_401() {
    let app = spawn_app().await;
    let (access, _) = app.login(None).await.assert_tokens(3600, "default");

    let reply = Reply::read(
        app.client
            .post(app.url("/introspect"))
            .form(&[("token", access.as_str())])
            .send()
            .await
            .unwrap(),
    )
    .await;

    reply.assert_error(401, "invalid_client");
    assert_eq!(
        reply.header("www-authenticate"),
        Some("Basic realm=\"tokengate\"")
    );
}

#[tokio::test]
async fn a_client_that_is_not_a_resource_server_gets_403() {
    let app = spawn_app().await;
    let (access, _) = app.login(None).await.assert_tokens(3600, "default");

    let reply = app
        .post_form_as(
            "/introspect",
            CLIENT_ID,
            CLIENT_SECRET,
            &[("token", &access)],
        )
        .await;

    reply.assert_error(403, "access_denied");
}

#[tokio::test]
async fn introspection_without_a_token_is_invalid_request() {
    let app = spawn_app().await;

    let reply = app
        .post_form_as("/introspect", RESOURCE_SERVER_ID, SHARED_SECRET, &[])
        .await;

    reply.assert_error(400, "invalid_request");
}
