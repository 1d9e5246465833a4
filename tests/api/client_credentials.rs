//! RFC 6749 §4.4: the client credentials grant.

use crate::helpers::*;

#[tokio::test]
async fn client_credentials_issue_an_application_token_without_a_refresh_token() {
    let app = spawn_app().await;

    let reply = app
        .post_token_as(
            SERVICE_CLIENT_ID,
            SHARED_SECRET,
            &[
                ("grant_type", "client_credentials"),
                ("scope", "reports.read"),
            ],
        )
        .await;

    let (access, refresh) = reply.assert_tokens(600, "reports.read");
    assert!(
        refresh.is_none(),
        "RFC 6749 §4.4.3: no refresh token: {}",
        reply.text
    );
    let record = stored_access_token(&app, &access).await.unwrap();
    assert_eq!(record.username, None);
    assert_eq!(record.client_id, SERVICE_CLIENT_ID);
    assert_eq!(record.expires_at - record.issued_at, 600);
}

#[tokio::test]
async fn application_tokens_use_the_application_validity_setting() {
    let app = spawn_app_with(|s| s.oauth.application_access_token_validity_secs = 1234).await;

    let reply = app
        .post_token_as(
            JWT_CLIENT_ID,
            SHARED_SECRET,
            &[("grant_type", "client_credentials")],
        )
        .await;

    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body["expires_in"], 1234);
    assert_eq!(reply.body["scope"], "default");
    assert!(reply.body.get("refresh_token").is_none(), "{}", reply.text);
}

#[tokio::test]
async fn client_credentials_scope_rules_match_the_other_grants() {
    let app = spawn_app().await;

    let reply = app
        .post_token_as(
            SERVICE_CLIENT_ID,
            SHARED_SECRET,
            &[
                ("grant_type", "client_credentials"),
                ("scope", "reports.write"),
            ],
        )
        .await;

    reply.assert_error(400, "invalid_scope");
}

#[tokio::test]
async fn an_application_token_introspects_with_the_client_as_subject() {
    let app = spawn_app().await;
    let (access, _) = app
        .post_token_as(
            SERVICE_CLIENT_ID,
            SHARED_SECRET,
            &[("grant_type", "client_credentials")],
        )
        .await
        .assert_tokens(600, "default");

    let reply = app.introspect(&access).await;

    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body["active"], true);
    assert_eq!(reply.body["sub"], SERVICE_CLIENT_ID);
    assert_eq!(reply.body["client_id"], SERVICE_CLIENT_ID);
    assert!(reply.body.get("username").is_none(), "{}", reply.text);
}

#[tokio::test]
async fn a_client_not_allowed_client_credentials_is_unauthorized_client() {
    let app = spawn_app().await;

    let reply = app
        .post_token(&[("grant_type", "client_credentials")])
        .await;

    reply.assert_error(400, "unauthorized_client");
}
