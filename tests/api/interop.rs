//! An OAuth client library nobody here wrote (the `oauth2` crate) runs password → refresh →
//! revoke, and the authorization code flow with PKCE as a public client, against the running
//! server.

use oauth2::basic::BasicClient;
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, PkceCodeChallenge, RedirectUrl,
    ResourceOwnerPassword, ResourceOwnerUsername, RevocationUrl, Scope, StandardRevocableToken,
    TokenResponse as _, TokenUrl,
};

use crate::authorize::{location, Browser};

use crate::helpers::*;

#[tokio::test]
async fn the_oauth2_crate_gets_refreshes_and_revokes_tokens() {
    let app = spawn_app().await;
    let client = BasicClient::new(ClientId::new(CLIENT_ID.into()))
        .set_client_secret(ClientSecret::new(CLIENT_SECRET.into()))
        .set_token_uri(TokenUrl::new(app.url("/token")).unwrap())
        .set_revocation_url(RevocationUrl::new(app.url("/revoke")).unwrap());

    let issued = client
        .exchange_password(
            &ResourceOwnerUsername::new(USER.into()),
            &ResourceOwnerPassword::new(PASSWORD.into()),
        )
        .add_scope(Scope::new("PRODUCTION".into()))
        .request_async(&app.client)
        .await
        .expect("password grant");
    assert_eq!(
        issued.expires_in(),
        Some(std::time::Duration::from_secs(3600))
    );
    assert_eq!(
        issued.scopes(),
        Some(&vec![Scope::new("PRODUCTION".into())])
    );
    let first_refresh = issued.refresh_token().expect("a refresh token").clone();

    let refreshed = client
        .exchange_refresh_token(&first_refresh)
        .request_async(&app.client)
        .await
        .expect("refresh grant");
    assert_ne!(
        refreshed.access_token().secret(),
        issued.access_token().secret()
    );
    let second_refresh = refreshed.refresh_token().expect("rotated").clone();

    // The spent token is refused with an RFC 6749 error the library understands.
    let reuse = client
        .exchange_refresh_token(&first_refresh)
        .request_async(&app.client)
        .await;
    match reuse {
        Err(oauth2::RequestTokenError::ServerResponse(err)) => {
            assert_eq!(
                err.error(),
                &oauth2::basic::BasicErrorResponseType::InvalidGrant
            );
        }
        other => panic!("expected invalid_grant, got {other:?}"),
    }

    client
        .revoke_token(StandardRevocableToken::RefreshToken(second_refresh.clone()))
        .unwrap()
        .request_async(&app.client)
        .await
        .expect("revocation");
    assert!(client
        .exchange_refresh_token(&second_refresh)
        .request_async(&app.client)
        .await
        .is_err());
    assert_eq!(
        app.introspect(refreshed.access_token().secret()).await.body["active"],
        false
    );
}

#[tokio::test]
async fn the_oauth2_crate_runs_the_code_flow_with_pkce_as_a_public_client() {
    // Arrange
    let app = spawn_app().await;
    let redirect = "http://127.0.0.1:8400/callback";
    let client = BasicClient::new(ClientId::new(PUBLIC_CLIENT_ID.into()))
        .set_auth_uri(AuthUrl::new(app.url("/authorize")).unwrap())
        .set_token_uri(TokenUrl::new(app.url("/token")).unwrap())
        .set_redirect_uri(RedirectUrl::new(redirect.into()).unwrap());
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, state) = client
        .authorize_url(CsrfToken::new_random)
        .add_scope(Scope::new("PRODUCTION".into()))
        .set_pkce_challenge(challenge)
        .url();
    let mut browser = Browser::default();

    // Act: the user signs in on the page the library sent them to.
    let path = url.as_str().strip_prefix(&app.base_url).unwrap();
    let page = browser.get(&app, path).await;
    let signed_in = browser.sign_in(&app, &page, USER, PASSWORD).await;
    let (base, params) = location(&signed_in);
    assert_eq!(base, redirect);
    assert_eq!(&params["state"], state.secret());
    let issued = client
        .exchange_code(AuthorizationCode::new(params["code"].clone()))
        .set_pkce_verifier(verifier)
        .request_async(&app.client)
        .await
        .expect("authorization code grant");

    // Assert
    assert_eq!(
        issued.scopes(),
        Some(&vec![Scope::new("PRODUCTION".into())])
    );
    let refreshed = client
        .exchange_refresh_token(issued.refresh_token().expect("a refresh token"))
        .request_async(&app.client)
        .await
        .expect("a public client refreshes by its id");
    assert_eq!(
        app.introspect(refreshed.access_token().secret()).await.body["username"],
        USER
    );
}
