//! RFC 8414 discovery and the JWKS, served from the running configuration.

use crate::helpers::*;

#[tokio::test]
async fn the_discovery_document_describes_the_running_server() {
    let app = spawn_app().await;

    let reply = app.get("/.well-known/oauth-authorization-server").await;

    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let issuer = format!("https://localhost:{}", app.addr.port());
    let doc = &reply.body;
    assert_eq!(doc["issuer"], issuer.as_str());
    assert_eq!(doc["token_endpoint"], format!("{issuer}/token"));
    assert_eq!(doc["revocation_endpoint"], format!("{issuer}/revoke"));
    assert_eq!(
        doc["introspection_endpoint"],
        format!("{issuer}/introspect")
    );
    assert_eq!(doc["jwks_uri"], format!("{issuer}/jwks"));
    assert_eq!(
        doc["grant_types_supported"],
        serde_json::json!([
            "password",
            "refresh_token",
            "client_credentials",
            "authorization_code"
        ])
    );
    assert_eq!(doc["authorization_endpoint"], format!("{issuer}/authorize"));
    assert_eq!(doc["response_types_supported"], serde_json::json!(["code"]));
    assert_eq!(
        doc["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    assert_eq!(doc["authorization_response_iss_parameter_supported"], true);
    // The fixture has a public client: `none` is offered where it can authenticate.
    let with_none = serde_json::json!(["client_secret_basic", "client_secret_post", "none"]);
    let methods = serde_json::json!(["client_secret_basic", "client_secret_post"]);
    assert_eq!(doc["token_endpoint_auth_methods_supported"], with_none);
    assert_eq!(doc["revocation_endpoint_auth_methods_supported"], with_none);
    assert_eq!(
        doc["introspection_endpoint_auth_methods_supported"],
        methods
    );
    assert_eq!(
        doc["scopes_supported"],
        serde_json::json!(["PRODUCTION", "SANDBOX", "default", "reports.read"])
    );
}

#[tokio::test]
async fn a_configured_issuer_is_the_base_of_every_url() {
    let app = spawn_app_with(|s| s.oauth.issuer = Some("https://auth.example.test".into())).await;

    let doc = app
        .get("/.well-known/oauth-authorization-server")
        .await
        .body;

    assert_eq!(doc["issuer"], "https://auth.example.test");
    assert_eq!(doc["token_endpoint"], "https://auth.example.test/token");
    assert_eq!(doc["jwks_uri"], "https://auth.example.test/jwks");
}

#[tokio::test]
async fn the_default_issuer_is_localhost_on_8243_shifted_by_the_offset() {
    let free_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let home = std::sync::Arc::new(tempfile::tempdir().unwrap());
    write_fixture_stores(home.path());
    let source = tokengate::config::ConfigSource {
        config_path: Some(project_root().join("config/identity.toml")),
        port_offset: Some(i64::from(free_port) - 8243),
        home: Some(home.path().to_path_buf()),
    };
    let mut settings = tokengate::config::load(&source).unwrap();
    settings.server.host = "127.0.0.1".parse().unwrap();
    settings.management.port = 0;
    assert_eq!(settings.server.https_port, free_port);

    let app = spawn_in(
        home,
        settings,
        std::sync::Arc::new(tokengate::clock::ManualClock::starting_now()),
    )
    .await;

    let doc = app
        .get("/.well-known/oauth-authorization-server")
        .await
        .body;
    assert_eq!(doc["issuer"], format!("https://localhost:{free_port}"));
}

#[tokio::test]
async fn the_jwks_publishes_one_ed25519_key_by_default() {
    let app = spawn_app().await;

    let reply = app.get("/jwks").await;

    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(
        reply.header("content-type"),
        Some("application/jwk-set+json")
    );
    let keys = reply.body["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "{}", reply.text);
    let key = &keys[0];
    assert_eq!(key["kty"], "OKP");
    assert_eq!(key["crv"], "Ed25519");
    assert_eq!(key["alg"], "EdDSA");
    assert_eq!(key["use"], "sig");
    assert!(key["kid"].as_str().is_some_and(|kid| kid.len() == 43));
    assert!(key.get("d").is_none(), "no private part: {}", reply.text);
}

#[tokio::test]
async fn post_on_discovery_is_405() {
    let app = spawn_app().await;

    let reply = Reply::read(
        app.client
            .post(app.url("/.well-known/oauth-authorization-server"))
            .send()
            .await
            .unwrap(),
    )
    .await;

    reply.assert_error(405, "invalid_request");
}

#[tokio::test]
async fn none_is_offered_only_once_a_public_client_exists() {
    // Arrange: the fixture clients without the public ones.
    let home = std::sync::Arc::new(tempfile::tempdir().unwrap());
    write_fixture_stores(home.path());
    let clients_file = home.path().join("config/clients.toml");
    let mut clients = std::fs::read_to_string(&clients_file).unwrap();
    for public in [PUBLIC_CLIENT_ID, THIRD_PARTY_CLIENT_ID] {
        let start = clients.find(&format!("[clients.{public}]")).unwrap();
        let end = clients[start + 1..]
            .find("[clients.")
            .map_or(clients.len(), |next| start + 1 + next);
        clients.replace_range(start..end, "");
    }
    assert!(!clients.contains("public = true"), "{clients}");
    std::fs::write(&clients_file, clients).unwrap();
    let settings = test_settings(home.path());
    let app = spawn_in(
        home,
        settings,
        std::sync::Arc::new(tokengate::clock::ManualClock::starting_now()),
    )
    .await;

    // Act
    let doc = app
        .get("/.well-known/oauth-authorization-server")
        .await
        .body;

    // Assert
    let methods = serde_json::json!(["client_secret_basic", "client_secret_post"]);
    assert_eq!(doc["token_endpoint_auth_methods_supported"], methods);
    assert_eq!(doc["revocation_endpoint_auth_methods_supported"], methods);
}
