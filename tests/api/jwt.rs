//! RFC 9068 JWT access tokens, checked with an independent JOSE library (jsonwebtoken)
//! against the published JWKS, including across a key rotation.

use std::time::Duration;

use ed25519_dalek::pkcs8::EncodePrivateKey as _;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{
    decode, decode_header, Algorithm, DecodingKey, EncodingKey, Header, Validation,
};
use serde_json::{json, Value};

use tokengate::clock::Clock as _;

use crate::helpers::*;

async fn jwt_login(app: &TestApp) -> (String, Option<String>) {
    app.jwt_password_grant()
        .await
        .assert_jwt(3600, "PRODUCTION")
}

impl Reply {
    /// Like `assert_tokens`, for a JWT access token.
    fn assert_jwt(&self, expires_in: u64, scope: &str) -> (String, Option<String>) {
        assert_eq!(self.status, 200, "{}", self.text);
        assert_eq!(self.body["token_type"], "Bearer");
        assert_eq!(self.body["expires_in"], expires_in);
        assert_eq!(self.body["scope"], scope);
        let access = self.str("access_token").to_owned();
        assert_eq!(
            access.matches('.').count(),
            2,
            "a JWS compact serialisation: {access}"
        );
        (
            access,
            self.body["refresh_token"].as_str().map(str::to_owned),
        )
    }
}

/// Verifies `token` the way a resource server would: keys from /jwks, by `kid`.
async fn verify_with_jwks(app: &TestApp, token: &str) -> Result<Value, String> {
    let jwks: JwkSet =
        serde_json::from_value(app.get("/jwks").await.body).map_err(|e| e.to_string())?;
    let header = decode_header(token).map_err(|e| e.to_string())?;
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    let kid = header.kid.ok_or("no kid")?;
    let jwk = jwks.find(&kid).ok_or("kid not published")?;
    let key = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    let mut validation = Validation::new(header.alg);
    validation.set_audience(&[JWT_AUDIENCE]);
    validation.set_issuer(&[format!("https://localhost:{}", app.addr.port())]);
    validation.set_required_spec_claims(&["exp", "iat", "iss", "sub", "aud"]);
    decode::<Value>(token, &key, &validation)
        .map(|data| data.claims)
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn a_jwt_client_gets_an_rfc_9068_access_token_a_resource_server_can_verify() {
    let app = spawn_app().await;

    let (access, refresh) = jwt_login(&app).await;

    let claims = verify_with_jwks(&app, &access).await.unwrap();
    assert_eq!(
        claims["iss"],
        format!("https://localhost:{}", app.addr.port())
    );
    assert_eq!(claims["sub"], USER);
    assert_eq!(claims["aud"], JWT_AUDIENCE);
    assert_eq!(claims["client_id"], JWT_CLIENT_ID);
    assert_eq!(claims["scope"], "PRODUCTION");
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        3600
    );
    assert!(uuid::Uuid::parse_str(claims["jti"].as_str().unwrap()).is_ok());
    let header = decode_header(&access).unwrap();
    assert_eq!(header.alg, Algorithm::EdDSA);
    let refresh = refresh.expect("refresh tokens stay opaque");
    assert_token_shape(&refresh);
}

#[tokio::test]
async fn jwt_access_tokens_refresh_introspect_and_revoke_by_jti() {
    let app = spawn_app().await;
    let (access, refresh) = jwt_login(&app).await;

    let introspected = app.introspect(&access).await;
    assert_eq!(introspected.body["active"], true, "{}", introspected.text);
    assert_eq!(introspected.body["aud"], JWT_AUDIENCE);
    let claims = verify_with_jwks(&app, &access).await.unwrap();
    assert_eq!(introspected.body["jti"], claims["jti"]);

    let (renewed, _) = app
        .post_token_as(
            JWT_CLIENT_ID,
            SHARED_SECRET,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh.as_deref().unwrap()),
            ],
        )
        .await
        .assert_jwt(3600, "PRODUCTION");
    verify_with_jwks(&app, &renewed).await.unwrap();

    let revoked = app
        .post_form_as(
            "/revoke",
            JWT_CLIENT_ID,
            SHARED_SECRET,
            &[("token", &access)],
        )
        .await;
    assert_eq!(revoked.status, 200);
    assert_eq!(app.introspect(&access).await.body, json!({"active": false}));
    assert_eq!(app.introspect(&renewed).await.body["active"], true);
}

#[tokio::test]
async fn client_credentials_jwts_name_the_client_as_subject() {
    let app = spawn_app().await;

    let (access, refresh) = app
        .post_token_as(
            JWT_CLIENT_ID,
            SHARED_SECRET,
            &[("grant_type", "client_credentials")],
        )
        .await
        .assert_jwt(3600, "default");

    assert!(refresh.is_none());
    let claims = verify_with_jwks(&app, &access).await.unwrap();
    assert_eq!(claims["sub"], JWT_CLIENT_ID);
}

#[tokio::test]
async fn a_tampered_signature_an_unpublished_kid_and_an_expired_jwt_are_inactive() {
    let app = spawn_app().await;
    let (access, _) = jwt_login(&app).await;
    let mut tampered = access.clone().into_bytes();
    let last = tampered.len() - 2;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let foreign = sign_with_unpublished_key(&verify_with_jwks(&app, &access).await.unwrap());

    for token in [&tampered, &foreign] {
        assert_eq!(app.introspect(token).await.body, json!({"active": false}));
        assert!(verify_with_jwks(&app, token).await.is_err());
        // Revoking what is not ours is a no-op with 200.
        let reply = app
            .post_form_as("/revoke", JWT_CLIENT_ID, SHARED_SECRET, &[("token", token)])
            .await;
        assert_eq!(reply.status, 200);
    }
    assert_eq!(app.introspect(&access).await.body["active"], true);

    app.clock.advance_secs(3600);
    assert_eq!(app.introspect(&access).await.body, json!({"active": false}));
}

/// The same claims, signed by an Ed25519 key the server never saw, under a made-up kid.
fn sign_with_unpublished_key(claims: &Value) -> String {
    let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let pem = key.to_pkcs8_pem(Default::default()).unwrap();
    let mut header = Header::new(Algorithm::EdDSA);
    header.typ = Some("at+jwt".into());
    header.kid = Some("not-a-published-key".into());
    jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_ed_pem(pem.as_bytes()).unwrap(),
    )
    .unwrap()
}

async fn wait_for_key_count(app: &TestApp, count: usize) -> Value {
    for _ in 0..100 {
        let jwks = app.get("/jwks").await.body;
        if jwks["keys"].as_array().map(Vec::len) == Some(count) {
            return jwks;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the JWKS never had {count} keys");
}

#[tokio::test]
async fn after_a_rotation_the_new_key_signs_and_the_old_one_stays_published_until_its_tokens_expire(
) {
    let app = spawn_app().await;
    let (old_token, _) = jwt_login(&app).await;
    let old_kid = decode_header(&old_token).unwrap().kid.unwrap();

    // What `tokengate keys rotate` does.
    tokengate::crypto::jwk::generate_key(
        &app.settings.oauth.signing_keys_dir,
        tokengate::config::JwtAlgorithm::EdDsa,
        app.clock.now_ms(),
    )
    .unwrap();
    wait_for_key_count(&app, 2).await;

    let (new_token, _) = jwt_login(&app).await;
    let new_kid = decode_header(&new_token).unwrap().kid.unwrap();
    assert_ne!(
        new_kid, old_kid,
        "the new key signs from the moment it is added"
    );
    verify_with_jwks(&app, &old_token).await.unwrap();
    verify_with_jwks(&app, &new_token).await.unwrap();

    // The longest access-token lifetime among the fixture clients is 3600 s, counted from when
    // the server saw the new key appear (up to a reload interval after it was written, and
    // later still on a busy machine): 30 s of slack.
    app.clock.advance_secs(3600 + 30);
    let jwks = wait_for_key_count(&app, 1).await;
    assert_eq!(jwks["keys"][0]["kid"], new_kid.as_str());
}

#[tokio::test]
async fn a_key_file_dropped_into_the_folder_signs_too() {
    let app =
        spawn_app_with(|s| s.oauth.jwt_algorithm = tokengate::config::JwtAlgorithm::Es256).await;
    let (before, _) = jwt_login(&app).await;
    assert_eq!(decode_header(&before).unwrap().alg, Algorithm::ES256);
    let key = p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
    let pem = key.to_pkcs8_pem(Default::default()).unwrap();
    std::fs::write(
        app.settings.oauth.signing_keys_dir.join("operator.pem"),
        pem.as_bytes(),
    )
    .unwrap();
    wait_for_key_count(&app, 2).await; // the first-start ES256 key and the dropped one

    let (after, _) = jwt_login(&app).await;

    assert_ne!(
        decode_header(&after).unwrap().kid,
        decode_header(&before).unwrap().kid
    );
    assert_eq!(decode_header(&after).unwrap().alg, Algorithm::ES256);
    verify_with_jwks(&app, &after).await.unwrap();
}

#[tokio::test]
async fn rs256_tokens_verify_for_older_resource_servers() {
    let app =
        spawn_app_with(|s| s.oauth.jwt_algorithm = tokengate::config::JwtAlgorithm::Rs256).await;

    let (access, _) = jwt_login(&app).await;

    assert_eq!(decode_header(&access).unwrap().alg, Algorithm::RS256);
    let claims = verify_with_jwks(&app, &access).await.unwrap();
    assert_eq!(claims["client_id"], JWT_CLIENT_ID);
    assert_eq!(app.introspect(&access).await.body["active"], true);
}

#[tokio::test]
async fn a_key_copied_in_with_an_old_modification_time_still_signs_from_when_it_appeared() {
    let app = spawn_app().await;
    let (before, _) = jwt_login(&app).await;
    let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let pem = key.to_pkcs8_pem(Default::default()).unwrap();
    let path = app
        .settings
        .oauth
        .signing_keys_dir
        .join("copied-with-cp-p.pem");
    std::fs::write(&path, pem.as_bytes()).unwrap();
    // What `cp -p` of an old file does: a modification time far in the past.
    let a_day_ago = std::time::SystemTime::UNIX_EPOCH
        + Duration::from_secs(u64::try_from(app.clock_now() - 86_400).unwrap());
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(a_day_ago)
        .unwrap();
    wait_for_key_count(&app, 2).await;

    let (after, _) = jwt_login(&app).await;

    assert_ne!(
        decode_header(&after).unwrap().kid,
        decode_header(&before).unwrap().kid
    );
    verify_with_jwks(&app, &before).await.unwrap();
    verify_with_jwks(&app, &after).await.unwrap();
}
