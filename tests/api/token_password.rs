//! RFC 6749 §4.3: the password grant, its successes and its §5.2 errors.

use std::time::Instant;

use crate::helpers::*;

#[tokio::test]
async fn password_grant_issues_a_bearer_token_pair_with_the_configured_validity() {
    let app = spawn_app().await;

    let reply = app.login(Some("PRODUCTION")).await;

    let (access, refresh) = reply.assert_tokens(3600, "PRODUCTION");
    assert!(refresh.is_some(), "a client allowed refresh_token gets one");
    let record = stored_access_token(&app, &access).await.expect("stored");
    assert_eq!(record.expires_at - record.issued_at, 3600);
    assert_eq!(record.client_id, CLIENT_ID);
    assert_eq!(record.username.as_deref(), Some(USER));
    assert_eq!(record.scope, "PRODUCTION");
    let object = reply.body.as_object().unwrap();
    assert_eq!(
        object.len(),
        5,
        "exactly the RFC 6749 §5.1 fields: {}",
        reply.text
    );
}

#[tokio::test]
async fn no_scope_requested_grants_the_default_scope() {
    let app = spawn_app().await;

    let reply = app.login(None).await;

    reply.assert_tokens(3600, "default");
}

#[tokio::test]
async fn several_scopes_are_granted_when_all_are_allowed() {
    let app = spawn_app().await;

    let reply = app.login(Some("PRODUCTION SANDBOX default")).await;

    reply.assert_tokens(3600, "PRODUCTION SANDBOX default");
}

#[tokio::test]
async fn a_scope_the_client_may_not_request_is_invalid_scope() {
    let app = spawn_app().await;

    let reply = app.login(Some("PRODUCTION ADMIN")).await;

    reply.assert_error(400, "invalid_scope");
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_user_get_the_same_answer() {
    let app = spawn_app().await;

    let wrong_password = app
        .post_token(&[
            ("grant_type", "password"),
            ("username", USER),
            ("password", "nope"),
        ])
        .await;
    let unknown_user = app
        .post_token(&[
            ("grant_type", "password"),
            ("username", "nobody"),
            ("password", "nope"),
        ])
        .await;

    wrong_password.assert_error(400, "invalid_grant");
    unknown_user.assert_error(400, "invalid_grant");
    assert_eq!(wrong_password.body, unknown_user.body);
}

#[tokio::test]
async fn an_unknown_user_costs_a_full_password_verification() {
    // Not a benchmark: a sanity bound that the dummy hash runs at all. Each request is timed
    // over a few rounds and the medians compared with a wide margin.
    let app = spawn_app().await;
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        app.post_token(&[
            ("grant_type", "password"),
            ("username", USER),
            ("password", "x"),
        ])
        .await;
        known.push(started.elapsed());
        let started = Instant::now();
        app.post_token(&[
            ("grant_type", "password"),
            ("username", "ghost"),
            ("password", "x"),
        ])
        .await;
        unknown.push(started.elapsed());
    }
    known.sort();
    unknown.sort();
    let (known, unknown) = (known[2], unknown[2]);

    assert!(
        unknown * 3 > known,
        "unknown user answered much faster ({unknown:?}) than a wrong password ({known:?})"
    );
}

#[tokio::test]
async fn a_disabled_user_cannot_log_in_even_with_the_right_password() {
    let app = spawn_app().await;

    let reply = app
        .post_token(&[
            ("grant_type", "password"),
            ("username", DISABLED_USER),
            ("password", DISABLED_PASSWORD),
        ])
        .await;

    reply.assert_error(400, "invalid_grant");
}

#[tokio::test]
async fn a_client_without_the_refresh_grant_gets_no_refresh_token() {
    let app = spawn_app().await;

    let reply = app
        .post_token_as(
            NO_REFRESH_CLIENT_ID,
            SHARED_SECRET,
            &[
                ("grant_type", "password"),
                ("username", USER),
                ("password", PASSWORD),
            ],
        )
        .await;

    let (_, refresh) = reply.assert_tokens(3600, "default");
    assert!(refresh.is_none(), "{}", reply.text);
}

#[tokio::test]
async fn a_client_override_sets_the_access_token_validity() {
    let app = spawn_app().await;

    let reply = app
        .post_token_as(
            SHORT_CLIENT_ID,
            SHARED_SECRET,
            &[
                ("grant_type", "password"),
                ("username", USER),
                ("password", PASSWORD),
            ],
        )
        .await;

    let (access, _) = reply.assert_tokens(120, "default");
    let record = stored_access_token(&app, &access).await.unwrap();
    assert_eq!(record.expires_at - record.issued_at, 120);
}

#[tokio::test]
async fn the_configured_validity_shows_in_expires_in_and_the_stored_expiry() {
    let app = spawn_app_with(|settings| settings.oauth.access_token_validity_secs = 900).await;

    let reply = app.login(None).await;

    let (access, _) = reply.assert_tokens(900, "default");
    let record = stored_access_token(&app, &access).await.unwrap();
    assert_eq!(record.expires_at - record.issued_at, 900);
}

#[tokio::test]
async fn client_credentials_in_the_body_authenticate_the_client() {
    let app = spawn_app().await;

    let response = app
        .client
        .post(app.url("/token"))
        .form(&[
            ("grant_type", "password"),
            ("username", USER),
            ("password", PASSWORD),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
        ])
        .send()
        .await
        .unwrap();

    Reply::read(response).await.assert_tokens(3600, "default");
}

#[tokio::test]
async fn only_a_digest_of_each_token_is_stored() {
    let app = spawn_app().await;
    let tokengate::config::TokenStoreSettings::Sqlite { path, .. } =
        app.settings.stores.tokens.clone()
    else {
        panic!("the test config uses SQLite")
    };
    let reply = app.login(None).await;
    let (access, refresh) = reply.assert_tokens(3600, "default");
    let _home = app.stop().await; // keeps the folder alive

    let mut stored = std::fs::read(&path).unwrap();
    if let Ok(wal) = std::fs::read(path.with_extension("db-wal")) {
        stored.extend(wal);
    }
    for token in [access, refresh.unwrap()] {
        let (_, secret) = token.split_once('.').unwrap();
        let secret = base64_url_decode(secret);
        let digest = sha2::Sha256::digest(&secret);
        assert!(!contains(&stored, token.as_bytes()), "token string stored");
        assert!(!contains(&stored, &secret), "token secret stored");
        assert!(contains(&stored, &digest), "the digest is what is stored");
    }
}

use sha2::Digest as _;

fn base64_url_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .unwrap()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}
