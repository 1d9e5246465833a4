//! RFC 7009: POST /revoke.

use std::sync::Arc;

use tokengate::clock::ManualClock;

use crate::helpers::*;

async fn login_pair(app: &TestApp) -> (String, String) {
    let (access, refresh) = app.login(None).await.assert_tokens(3600, "default");
    (access, refresh.unwrap())
}

fn assert_revocation_ok(reply: &Reply) {
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.text, "", "RFC 7009 §2.2: no content is needed");
    assert_eq!(reply.header("cache-control"), Some("no-store"));
}

#[tokio::test]
async fn revoking_an_access_token_deactivates_it_but_not_its_refresh_token() {
    let app = spawn_app().await;
    let (access, refresh) = login_pair(&app).await;

    let reply = app.revoke(&access).await;

    assert_revocation_ok(&reply);
    assert_eq!(
        app.introspect(&access).await.body,
        serde_json::json!({"active": false})
    );
    app.refresh(&refresh).await.assert_tokens(3600, "default");
}

#[tokio::test]
async fn revoking_a_refresh_token_revokes_every_token_of_its_grant() {
    let app = spawn_app().await;
    let (first_access, first_refresh) = login_pair(&app).await;
    let (second_access, second_refresh) = app
        .refresh(&first_refresh)
        .await
        .assert_tokens(3600, "default");
    let second_refresh = second_refresh.unwrap();
    // An unrelated grant of the same user and client must survive.
    let (other_access, other_refresh) = login_pair(&app).await;

    let reply = app.revoke(&second_refresh).await;

    assert_revocation_ok(&reply);
    app.refresh(&second_refresh)
        .await
        .assert_error(400, "invalid_grant");
    for access in [&first_access, &second_access] {
        assert_eq!(app.introspect(access).await.body["active"], false);
    }
    assert_eq!(app.introspect(&other_access).await.body["active"], true);
    app.refresh(&other_refresh)
        .await
        .assert_tokens(3600, "default");
}

#[tokio::test]
async fn unknown_expired_and_already_revoked_tokens_still_get_200() {
    let app = spawn_app().await;
    let (access, refresh) = login_pair(&app).await;

    assert_revocation_ok(&app.revoke("not-a-token").await);
    assert_revocation_ok(
        &app.revoke(&format!("{}x", &access[..access.len() - 1]))
            .await,
    );
    assert_revocation_ok(&app.revoke(&refresh).await);
    assert_revocation_ok(&app.revoke(&refresh).await);
    app.clock.advance_secs(7200);
    assert_revocation_ok(&app.revoke(&access).await);
}

#[tokio::test]
async fn a_client_cannot_revoke_another_clients_tokens() {
    let app = spawn_app().await;
    let (access, refresh) = login_pair(&app).await;

    for token in [&access, &refresh] {
        let reply = app
            .post_form_as(
                "/revoke",
                OTHER_CLIENT_ID,
                OTHER_CLIENT_SECRET,
                &[("token", token)],
            )
            .await;
        assert_revocation_ok(&reply);
    }

    assert_eq!(app.introspect(&access).await.body["active"], true);
    app.refresh(&refresh).await.assert_tokens(3600, "default");
}

#[tokio::test]
async fn the_token_type_hint_is_only_a_hint() {
    let app = spawn_app().await;
    let (access, refresh) = login_pair(&app).await;

    let wrong_hint = app
        .post_form_as(
            "/revoke",
            CLIENT_ID,
            CLIENT_SECRET,
            &[("token", &refresh), ("token_type_hint", "access_token")],
        )
        .await;
    // RFC 7009 §2.1: "An invalid token type hint value is ignored".
    let unknown_hint = app
        .post_form_as(
            "/revoke",
            CLIENT_ID,
            CLIENT_SECRET,
            &[("token", &access), ("token_type_hint", "id_token")],
        )
        .await;

    assert_revocation_ok(&wrong_hint);
    assert_revocation_ok(&unknown_hint);
    app.refresh(&refresh)
        .await
        .assert_error(400, "invalid_grant");
    assert_eq!(app.introspect(&access).await.body["active"], false);
}

#[tokio::test]
async fn a_revocation_without_a_token_is_invalid_request() {
    let app = spawn_app().await;

    let reply = app
        .post_form_as(
            "/revoke",
            CLIENT_ID,
            CLIENT_SECRET,
            &[("token_type_hint", "access_token")],
        )
        .await;

    reply.assert_error(400, "invalid_request");
}

#[tokio::test]
async fn revocation_requires_client_authentication() {
    let app = spawn_app().await;
    let (access, _) = login_pair(&app).await;

    let anonymous = Reply::read(
        app.client
            .post(app.url("/revoke"))
            .form(&[("token", access.as_str())])
            .send()
            .await
            .unwrap(),
    )
    .await;
    let wrong_secret = app
        .post_form_as("/revoke", CLIENT_ID, "wrong", &[("token", &access)])
        .await;

    for reply in [anonymous, wrong_secret] {
        reply.assert_error(401, "invalid_client");
        assert_eq!(
            reply.header("www-authenticate"),
            Some("Basic realm=\"tokengate\"")
        );
    }
    assert_eq!(app.introspect(&access).await.body["active"], true);
}

#[tokio::test]
async fn get_on_revoke_is_405() {
    let app = spawn_app().await;

    let reply = app.get("/revoke").await;

    reply.assert_error(405, "invalid_request");
    assert_eq!(reply.header("allow"), Some("POST"));
}

#[tokio::test]
async fn a_revocation_survives_a_restart() {
    let app = spawn_app().await;
    let (access, refresh) = login_pair(&app).await;
    assert_revocation_ok(&app.revoke(&refresh).await);
    let mut settings = app.settings.clone();
    settings.server.https_port = 0;
    let home = app.stop().await;

    let app = spawn_in(home, settings, Arc::new(ManualClock::starting_now())).await;

    app.refresh(&refresh)
        .await
        .assert_error(400, "invalid_grant");
    assert_eq!(app.introspect(&access).await.body["active"], false);
}
