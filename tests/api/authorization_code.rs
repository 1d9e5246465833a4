//! `grant_type=authorization_code` (RFC 6749 §4.1.3, RFC 7636 §4.5–4.6): a code works once, for
//! its client, redirect URI and PKCE verifier, within `authorization_code_validity_period`; a
//! code presented again revokes the tokens issued from it. The codes here are put in the store
//! as `/authorize` does (see `authorize.rs` for the whole flow through the login page).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use tokengate::crypto::token::SecretDigest;
use tokengate::store::model::AuthorizationCodeRecord;

use crate::helpers::*;

/// RFC 7636 Appendix B.
pub const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
pub const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

/// A fresh code for `client` and alice, bound to `redirect_uri` and [`CHALLENGE`], as
/// `/authorize` stores it.
async fn code_for(app: &TestApp, client: &str, redirect_uri: Option<&str>) -> String {
    let code = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let now = app.clock_now();
    app.store
        .create_authorization_code(AuthorizationCodeRecord {
            digest: SecretDigest::of(code.as_bytes()),
            client_id: client.into(),
            redirect_uri: redirect_uri.map(str::to_owned),
            code_challenge: CHALLENGE.into(),
            username: USER.into(),
            scope: "PRODUCTION".into(),
            issued_at: now,
            expires_at: now + app.settings.oauth.authorization_code_validity_secs as i64,
            redeemed_at: None,
            family_id: None,
        })
        .await
        .unwrap();
    code
}

/// The public client's token request: client_id in the body, no secret.
async fn exchange(app: &TestApp, code: &str, redirect_uri: &str, verifier: &str) -> Reply {
    app.public_code_exchange(code, redirect_uri, verifier).await
}

#[tokio::test]
async fn a_public_client_exchanges_its_code_and_verifier_for_tokens() {
    // Arrange
    let app = spawn_app().await;
    let code = code_for(&app, PUBLIC_CLIENT_ID, Some(PUBLIC_REDIRECT_URI)).await;

    // Act
    let reply = exchange(&app, &code, PUBLIC_REDIRECT_URI, VERIFIER).await;

    // Assert
    let (access, refresh) = reply.assert_tokens(3600, "PRODUCTION");
    let introspected = app.introspect(&access).await;
    assert_eq!(introspected.body["active"], true, "{}", introspected.text);
    assert_eq!(introspected.body["username"], USER);
    assert_eq!(introspected.body["client_id"], PUBLIC_CLIENT_ID);
    // Its refresh token rotates, by client_id alone too.
    app.public_refresh(refresh.as_deref().unwrap())
        .await
        .assert_tokens(3600, "PRODUCTION");
}

#[tokio::test]
async fn a_confidential_client_exchanges_its_code_with_its_secret() {
    // Arrange
    let app = spawn_app().await;
    let code = code_for(&app, WEB_CLIENT_ID, Some(WEB_REDIRECT_URI)).await;

    // Act
    let without_secret = app
        .post_token_without_secret(&[
            ("grant_type", "authorization_code"),
            ("client_id", WEB_CLIENT_ID),
            ("code", &code),
            ("redirect_uri", WEB_REDIRECT_URI),
            ("code_verifier", VERIFIER),
        ])
        .await;
    let with_secret = app
        .post_token_as(
            WEB_CLIENT_ID,
            SHARED_SECRET,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", WEB_REDIRECT_URI),
                ("code_verifier", VERIFIER),
            ],
        )
        .await;

    // Assert
    without_secret.assert_error(401, "invalid_client");
    with_secret.assert_tokens(3600, "PRODUCTION");
}

#[tokio::test]
async fn a_code_presented_twice_is_refused_and_revokes_the_tokens_issued_from_it() {
    // Arrange
    let app = spawn_app().await;
    let code = code_for(&app, PUBLIC_CLIENT_ID, Some(PUBLIC_REDIRECT_URI)).await;
    let first = exchange(&app, &code, PUBLIC_REDIRECT_URI, VERIFIER).await;
    let (access, refresh) = first.assert_tokens(3600, "PRODUCTION");

    // Act
    let second = exchange(&app, &code, PUBLIC_REDIRECT_URI, VERIFIER).await;

    // Assert
    second.assert_error(400, "invalid_grant");
    assert_eq!(app.introspect(&access).await.body["active"], false);
    app.public_refresh(refresh.as_deref().unwrap())
        .await
        .assert_error(400, "invalid_grant");
    assert_eq!(
        app.metric("tokengate_authorization_code_reuse_detected_total")
            .await,
        1.0
    );
    let trail = audit_file(app.home.path());
    let reuse = wait_for_event(&trail, "authorization_code_reuse_detected", |_| true).await;
    assert_eq!(reuse["client_id"], PUBLIC_CLIENT_ID);
    assert_eq!(reuse["subject"], USER);
    let revoked = wait_for_event(&trail, "grant_revoked", |_| true).await;
    assert_eq!(revoked["by"], "reuse_detection");
    assert_eq!(revoked["grant_id"], reuse["grant_id"]);
}

/// Someone who saw a code but not its verifier (what PKCE guards against) cannot revoke the
/// user's tokens by presenting it again: a wrong verifier is refused before reuse is judged.
#[tokio::test]
async fn a_redeemed_code_presented_without_its_verifier_revokes_nothing() {
    // Arrange
    let app = spawn_app().await;
    let code = code_for(&app, PUBLIC_CLIENT_ID, Some(PUBLIC_REDIRECT_URI)).await;
    let (access, _) = exchange(&app, &code, PUBLIC_REDIRECT_URI, VERIFIER)
        .await
        .assert_tokens(3600, "PRODUCTION");
    let other_verifier = "a".repeat(43);

    // Act
    let replayed = exchange(&app, &code, PUBLIC_REDIRECT_URI, &other_verifier).await;

    // Assert
    replayed.assert_error(400, "invalid_grant");
    assert_eq!(app.introspect(&access).await.body["active"], true);
    assert_eq!(
        app.metric("tokengate_authorization_code_reuse_detected_total")
            .await,
        0.0
    );
}

/// RFC 9700 §4.14.2: a public client's refresh tokens are rotated even where the operator
/// turned rotation off for everyone else.
#[tokio::test]
async fn a_public_clients_refresh_token_is_rotated_even_with_renewal_off() {
    // Arrange
    let app = spawn_app_with(|s| s.oauth.renew_refresh_token = false).await;
    let code = code_for(&app, PUBLIC_CLIENT_ID, Some(PUBLIC_REDIRECT_URI)).await;
    let (_, refresh) = exchange(&app, &code, PUBLIC_REDIRECT_URI, VERIFIER)
        .await
        .assert_tokens(3600, "PRODUCTION");
    let refresh = refresh.unwrap();

    // Act
    let (_, renewed) = app
        .public_refresh(&refresh)
        .await
        .assert_tokens(3600, "PRODUCTION");

    // Assert
    let renewed = renewed.unwrap();
    assert_ne!(renewed, refresh);
    app.public_refresh(&renewed)
        .await
        .assert_tokens(3600, "PRODUCTION");
}

/// `user revoke-tokens` (or a password change) between the login that issued a code and the
/// code's exchange revokes the code with the user's tokens: `invalid_grant`, and the tokens it
/// would have given are not alive either (a retry cannot get them).
#[tokio::test]
async fn a_code_issued_before_the_users_tokens_were_revoked_is_refused() {
    use tokengate::clock::Clock as _;
    // Arrange
    let app = spawn_app().await;
    let code = code_for(&app, PUBLIC_CLIENT_ID, Some(PUBLIC_REDIRECT_URI)).await;
    let later_code = {
        app.clock.advance_secs(2);
        app.store
            .revoke_subject(
                tokengate::store::SubjectKind::User,
                USER,
                app.clock.now_ms(),
                app.clock_now(),
            )
            .await
            .unwrap();
        app.clock.advance_secs(2);
        code_for(&app, PUBLIC_CLIENT_ID, Some(PUBLIC_REDIRECT_URI)).await
    };

    // Act
    let exchanged = exchange(&app, &code, PUBLIC_REDIRECT_URI, VERIFIER).await;
    let again = exchange(&app, &code, PUBLIC_REDIRECT_URI, VERIFIER).await;
    let later = exchange(&app, &later_code, PUBLIC_REDIRECT_URI, VERIFIER).await;

    // Assert
    exchanged.assert_error(400, "invalid_grant");
    again.assert_error(400, "invalid_grant");
    // A code issued after the mark works.
    later.assert_tokens(3600, "PRODUCTION");
}

#[tokio::test]
async fn concurrent_exchanges_of_one_code_give_tokens_once() {
    // Arrange
    let app = spawn_app().await;
    let code = code_for(&app, PUBLIC_CLIENT_ID, Some(PUBLIC_REDIRECT_URI)).await;

    // Act
    let replies = futures::future::join_all(
        (0..8).map(|_| exchange(&app, &code, PUBLIC_REDIRECT_URI, VERIFIER)),
    )
    .await;

    // Assert: the code was redeemed once, and the others, presenting a used code, revoked
    // what it gave (RFC 6749 §4.1.2). Whether the winner's answer went out before a loser's
    // revocation reached its tokens is a race: either it got tokens that are revoked now, or
    // it was refused too (the grant checks its tokens are alive before answering).
    let winners: Vec<&Reply> = replies.iter().filter(|reply| reply.status == 200).collect();
    assert!(winners.len() <= 1, "{replies:#?}");
    for reply in replies.iter().filter(|reply| reply.status != 200) {
        reply.assert_error(400, "invalid_grant");
    }
    for winner in winners {
        let (access, _) = winner.assert_tokens(3600, "PRODUCTION");
        assert_eq!(app.introspect(&access).await.body["active"], false);
    }
    let issued = tokengate::store::TokenStore::find_authorization_code(
        app.store.as_ref(),
        &tokengate::crypto::token::SecretDigest::of(code.as_bytes()),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(issued.redeemed_at.is_some() && issued.family_id.is_some());
}

#[tokio::test]
async fn an_expired_code_is_refused() {
    // Arrange
    let app = spawn_app().await;
    let code = code_for(&app, PUBLIC_CLIENT_ID, Some(PUBLIC_REDIRECT_URI)).await;
    app.clock.advance_secs(60);

    // Act
    let reply = exchange(&app, &code, PUBLIC_REDIRECT_URI, VERIFIER).await;

    // Assert
    reply.assert_error(400, "invalid_grant");
}

#[tokio::test]
async fn a_wrong_verifier_is_refused_and_leaves_the_code_for_the_right_one() {
    // Arrange
    let app = spawn_app().await;
    let code = code_for(&app, PUBLIC_CLIENT_ID, Some(PUBLIC_REDIRECT_URI)).await;
    let wrong = "A".repeat(43);

    // Act
    let refused = exchange(&app, &code, PUBLIC_REDIRECT_URI, &wrong).await;
    // The plain method: the challenge itself as the verifier.
    let plain = exchange(&app, &code, PUBLIC_REDIRECT_URI, CHALLENGE).await;
    let malformed = exchange(&app, &code, PUBLIC_REDIRECT_URI, "short").await;
    let right = exchange(&app, &code, PUBLIC_REDIRECT_URI, VERIFIER).await;

    // Assert
    refused.assert_error(400, "invalid_grant");
    assert_eq!(
        refused.body["error_description"],
        "the code_verifier does not match the code_challenge"
    );
    plain.assert_error(400, "invalid_grant");
    malformed.assert_error(400, "invalid_request");
    right.assert_tokens(3600, "PRODUCTION");
}

#[tokio::test]
async fn a_missing_verifier_or_code_is_invalid_request() {
    // Arrange
    let app = spawn_app().await;
    let code = code_for(&app, PUBLIC_CLIENT_ID, Some(PUBLIC_REDIRECT_URI)).await;

    // Act
    let no_verifier = app
        .post_token_without_secret(&[
            ("grant_type", "authorization_code"),
            ("client_id", PUBLIC_CLIENT_ID),
            ("code", &code),
            ("redirect_uri", PUBLIC_REDIRECT_URI),
        ])
        .await;
    let no_code = app
        .post_token_without_secret(&[
            ("grant_type", "authorization_code"),
            ("client_id", PUBLIC_CLIENT_ID),
            ("redirect_uri", PUBLIC_REDIRECT_URI),
            ("code_verifier", VERIFIER),
        ])
        .await;

    // Assert
    no_verifier.assert_error(400, "invalid_request");
    no_code.assert_error(400, "invalid_request");
}

#[tokio::test]
async fn a_wrong_or_missing_redirect_uri_is_refused() {
    // Arrange
    let app = spawn_app().await;
    let code = code_for(&app, PUBLIC_CLIENT_ID, Some(PUBLIC_REDIRECT_URI)).await;

    // Act
    let other_registered = exchange(&app, &code, HTTPS_REDIRECT_URI, VERIFIER).await;
    let missing = app
        .post_token_without_secret(&[
            ("grant_type", "authorization_code"),
            ("client_id", PUBLIC_CLIENT_ID),
            ("code", &code),
            ("code_verifier", VERIFIER),
        ])
        .await;
    let right = exchange(&app, &code, PUBLIC_REDIRECT_URI, VERIFIER).await;

    // Assert
    other_registered.assert_error(400, "invalid_grant");
    missing.assert_error(400, "invalid_grant");
    right.assert_tokens(3600, "PRODUCTION");
}

#[tokio::test]
async fn another_clients_code_is_refused_and_not_spent() {
    // Arrange
    let app = spawn_app().await;
    let code = code_for(&app, WEB_CLIENT_ID, Some(WEB_REDIRECT_URI)).await;

    // Act
    let stolen = exchange(&app, &code, WEB_REDIRECT_URI, VERIFIER).await;
    let owner = app
        .post_token_as(
            WEB_CLIENT_ID,
            SHARED_SECRET,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", WEB_REDIRECT_URI),
                ("code_verifier", VERIFIER),
            ],
        )
        .await;

    // Assert
    stolen.assert_error(400, "invalid_grant");
    owner.assert_tokens(3600, "PRODUCTION");
}

#[tokio::test]
async fn a_code_of_a_user_disabled_since_logging_in_is_refused() {
    // Arrange
    let app = spawn_app().await;
    let now = app.clock_now();
    let code = "disabled-user-code";
    app.store
        .create_authorization_code(AuthorizationCodeRecord {
            digest: SecretDigest::of(code.as_bytes()),
            client_id: PUBLIC_CLIENT_ID.into(),
            redirect_uri: Some(PUBLIC_REDIRECT_URI.into()),
            code_challenge: CHALLENGE.into(),
            username: DISABLED_USER.into(),
            scope: "PRODUCTION".into(),
            issued_at: now,
            expires_at: now + 60,
            redeemed_at: None,
            family_id: None,
        })
        .await
        .unwrap();

    // Act
    let reply = exchange(&app, code, PUBLIC_REDIRECT_URI, VERIFIER).await;

    // Assert
    reply.assert_error(400, "invalid_grant");
}

#[tokio::test]
async fn the_code_validity_period_is_validated() {
    // Arrange
    let home = crate::helpers::process::Home::new();
    home.edit(
        "config/identity.toml",
        "authorization_code_validity_period = 60",
        "authorization_code_validity_period = 3600",
    );

    // Act
    let run = home.run(&["check-config"], None).await;

    // Assert
    run.assert_failure();
    assert!(
        run.stderr.contains(
            "oauth.authorization_code_validity_period: must be between 1 and 600, got 3600"
        ),
        "{run:#?}"
    );
}
