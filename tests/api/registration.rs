//! Dynamic client registration (RFC 7591) and its management (RFC 7592) over real HTTPS:
//! `[registration] mode` off, open and initial_access_token; the policy and client rules;
//! registration access tokens bound to their client alone; a registered client usable at once
//! on the node that registered it; deletion ending its tokens.

use std::sync::Arc;

use serde_json::{json, Value};
use tokengate::abuse::rate_limit::Rate;
use tokengate::clock::ManualClock;
use tokengate::config::{DirectoryLocation, RegistrationMode, Settings};
use tokengate::crypto::secret;
use tokengate::crypto::token::SecretDigest;
use tokengate::store::measured::Unobserved;
use tokengate::store::model::{Client, GrantType, InitialAccessTokenRecord};
use tokengate::store::{open_database, DatabaseStores};

use crate::authorization_code::VERIFIER;
use crate::authorize::{authorize_path, hidden_fields, location, Browser};
use crate::helpers::process::{poll_until, serve, Home};
use crate::helpers::*;

const LOOPBACK: &str = "http://127.0.0.1/cb";

/// An app whose clients live in its database (none at first but a resource server, for
/// `/introspect`), registration in `mode`, registered clients allowed the code flow, refresh
/// and client_credentials, and the scope `read`.
async fn spawn_registration(mode: RegistrationMode, adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let home = Arc::new(tempfile::tempdir().unwrap());
    write_fixture_stores(home.path());
    let mut settings = test_settings(home.path());
    settings.stores.clients = DirectoryLocation::Database;
    settings.registration.mode = mode;
    settings.registration.allowed_grant_types = [
        GrantType::AuthorizationCode,
        GrantType::RefreshToken,
        GrantType::ClientCredentials,
    ]
    .into();
    settings.registration.allowed_scopes = ["read".to_owned()].into();
    adjust(&mut settings);
    let database = database(&settings).await;
    let resource_server = Client {
        id: RESOURCE_SERVER_ID.into(),
        secret_hash: secret::hash_sha256(SHARED_SECRET),
        public: false,
        redirect_uris: Vec::new(),
        require_consent: false,
        name: None,
        owner: None,
        grant_types: Default::default(),
        scopes: Default::default(),
        access_token_validity_secs: None,
        application_access_token_validity_secs: None,
        refresh_token_validity_secs: None,
        introspect: true,
        token_format: None,
        audience: None,
        disabled: false,
        previous_secret: None,
    };
    assert!(database
        .directory
        .add_client(&resource_server, 0)
        .await
        .unwrap());
    database.tokens.close().await;
    spawn_in(home, settings, Arc::new(ManualClock::starting_now())).await
}

/// The app's token database, opened beside it (as the CLI opens it).
async fn database(settings: &Settings) -> DatabaseStores {
    open_database(&settings.stores.tokens, Arc::new(Unobserved))
        .await
        .unwrap()
}

/// Stores an initial access token as `tokengate registration token create` does.
async fn initial_token(app: &TestApp, expires_in: i64, uses: u32) -> String {
    let token = secret::generate_secret();
    let database = database(&app.settings).await;
    database
        .registrations
        .create_initial_token(
            &InitialAccessTokenRecord {
                digest: SecretDigest::of(token.as_bytes()),
                expires_at: app.clock_now() + expires_in,
                uses,
            },
            app.clock_now(),
        )
        .await
        .unwrap();
    database.tokens.close().await;
    token
}

async fn send(request: reqwest::RequestBuilder) -> Reply {
    Reply::read(request.send().await.unwrap()).await
}

async fn register(app: &TestApp, bearer: Option<&str>, metadata: &Value) -> Reply {
    let mut request = app.client.post(app.url("/register")).json(metadata);
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    send(request).await
}

/// A confidential client allowed client_credentials and `read`.
fn service_metadata() -> Value {
    json!({
        "client_name": "Nightly Report",
        "grant_types": ["client_credentials"],
        "token_endpoint_auth_method": "client_secret_basic",
        "scope": "read",
    })
}

/// A public native app: the code flow with a loopback redirect URI.
fn native_metadata() -> Value {
    json!({
        "client_name": "Desk App",
        "redirect_uris": [LOOPBACK],
        "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "scope": "read",
    })
}

/// Asserts a 201 client information response (RFC 7591 §3.2.1).
fn assert_registered(app: &TestApp, reply: &Reply) {
    assert_eq!(reply.status, 201, "{}", reply.text);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    assert_eq!(reply.header("pragma"), Some("no-cache"));
    let id = reply.str("client_id");
    assert_eq!(
        reply.str("registration_client_uri"),
        format!("{}/register/{id}", app.settings_issuer())
    );
    assert_eq!(reply.str("registration_access_token").len(), 43);
    let issued_at = reply.body["client_id_issued_at"].as_i64().unwrap();
    assert!((issued_at - app.clock_now()).abs() <= 1, "{issued_at}");
}

async fn client_credentials(app: &TestApp, reply: &Reply) -> Reply {
    app.post_token_as(
        reply.str("client_id"),
        reply.str("client_secret"),
        &[("grant_type", "client_credentials"), ("scope", "read")],
    )
    .await
}

async fn manage(
    app: &TestApp,
    method: reqwest::Method,
    client_id: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Reply {
    let mut request = app
        .client
        .request(method, app.url(&format!("/register/{client_id}")));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    send(request).await
}

fn assert_bearer_refused(reply: &Reply) {
    reply.assert_error(401, "invalid_token");
    assert_eq!(
        reply.header("www-authenticate"),
        Some("Bearer realm=\"tokengate\", error=\"invalid_token\""),
        "{}",
        reply.text
    );
}

#[tokio::test]
async fn registration_is_off_by_default_and_the_endpoints_do_not_exist() {
    let app = spawn_app().await;

    let registered = register(&app, None, &service_metadata()).await;
    let read = app.get("/register/some-client").await;
    let metadata = app.get("/.well-known/oauth-authorization-server").await;

    registered.assert_error(404, "not_found");
    read.assert_error(404, "not_found");
    assert_eq!(metadata.status, 200);
    assert!(
        metadata.body.get("registration_endpoint").is_none(),
        "{}",
        metadata.text
    );
}

#[tokio::test]
async fn the_metadata_names_the_registration_endpoint_when_registration_is_on() {
    let app = spawn_registration(RegistrationMode::Open, |_| {}).await;

    let metadata = app.get("/.well-known/oauth-authorization-server").await;

    assert_eq!(
        metadata.str("registration_endpoint"),
        format!("{}/register", app.settings_issuer())
    );
}

#[tokio::test]
async fn an_open_registration_gives_a_confidential_client_a_secret_once_and_a_token_at_once() {
    let app = spawn_registration(RegistrationMode::Open, |_| {}).await;

    let reply = register(&app, None, &service_metadata()).await;
    let tokens = client_credentials(&app, &reply).await;

    assert_registered(&app, &reply);
    assert_eq!(reply.str("client_secret").len(), 43);
    assert_eq!(reply.body["client_secret_expires_at"], 0);
    assert_eq!(reply.body["client_name"], "Nightly Report");
    assert_eq!(reply.body["grant_types"], json!(["client_credentials"]));
    assert_eq!(reply.body["response_types"], json!([]));
    assert_eq!(
        reply.body["token_endpoint_auth_method"],
        "client_secret_basic"
    );
    assert_eq!(reply.body["scope"], "read");
    assert_eq!(reply.body["redirect_uris"], json!([]));
    tokens.assert_tokens(
        app.settings.oauth.application_access_token_validity_secs,
        "read",
    );
    let event = wait_for_event(&audit_file(app.home.path()), "client_registered", |_| true).await;
    assert_eq!(event["client_id"], reply.str("client_id"));
    assert_eq!(event["mode"], "open");
    assert_eq!(event["grant_types"], json!(["client_credentials"]));
    assert!(!event.to_string().contains(reply.str("client_secret")));
}

#[tokio::test]
async fn the_secret_is_stored_hashed_and_never_shown_again() {
    let app = spawn_registration(RegistrationMode::Open, |_| {}).await;
    let reply = register(&app, None, &service_metadata()).await;
    assert_registered(&app, &reply);
    let (id, secret, token) = (
        reply.str("client_id"),
        reply.str("client_secret"),
        reply.str("registration_access_token"),
    );

    let read = manage(&app, reqwest::Method::GET, id, Some(token), None).await;
    let database = database(&app.settings).await;
    let rows = database.directory.list_clients().await.unwrap();
    let registration = database.registrations.find_registration(id).await.unwrap();
    database.tokens.close().await;

    assert_eq!(read.status, 200, "{}", read.text);
    assert!(read.body.get("client_secret").is_none(), "{}", read.text);
    assert!(!read.text.contains(secret));
    let row = rows.iter().find(|row| row.id == id).unwrap();
    assert!(row.secret_hash.starts_with("$sha256$"));
    assert!(secret::verify_sha256(&row.secret_hash, secret));
    let registration = registration.unwrap();
    assert_eq!(registration.token, SecretDigest::of(token.as_bytes()));
    let file = std::fs::read(app.home.path().join("data/tokens.db")).unwrap();
    let holds = |text: &str| file.windows(text.len()).any(|w| w == text.as_bytes());
    assert!(!holds(secret) && !holds(token));
}

#[tokio::test]
async fn a_registered_public_client_runs_the_code_flow_at_once_after_the_users_consent() {
    let app = spawn_registration(RegistrationMode::Open, |_| {}).await;
    let reply = register(&app, None, &native_metadata()).await;
    assert_registered(&app, &reply);
    assert!(reply.body.get("client_secret").is_none(), "{}", reply.text);
    assert!(reply.body.get("client_secret_expires_at").is_none());
    assert_eq!(reply.body["token_endpoint_auth_method"], "none");
    assert_eq!(reply.body["response_types"], json!(["code"]));
    let id = reply.str("client_id");

    let mut browser = Browser::default();
    let path = authorize_path(&[
        ("client_id", id),
        ("redirect_uri", LOOPBACK),
        ("scope", "read"),
    ]);
    let page = browser.get(&app, &path).await;
    let consent = browser.sign_in(&app, &page, USER, PASSWORD).await;
    assert!(consent.text.contains("Desk App"), "{}", consent.text);
    let mut form = hidden_fields(&consent.text);
    form.push(("decision".into(), "allow".into()));
    let redirect = browser.post_to(&app, "/authorize/consent", &form).await;
    let (base, params) = location(&redirect);
    let exchanged = app
        .post_token_without_secret(&[
            ("grant_type", "authorization_code"),
            ("client_id", id),
            ("code", &params["code"]),
            ("redirect_uri", LOOPBACK),
            ("code_verifier", VERIFIER),
        ])
        .await;

    assert_eq!(base, LOOPBACK);
    let (_, refresh) =
        exchanged.assert_tokens(app.settings.oauth.access_token_validity_secs, "read");
    assert!(refresh.is_some());
}

#[tokio::test]
async fn initial_access_token_mode_asks_for_a_usable_token_and_spends_its_uses() {
    let app = spawn_registration(RegistrationMode::InitialAccessToken, |_| {}).await;
    let once = initial_token(&app, 3600, 1).await;
    let expiring = initial_token(&app, 60, 5).await;

    let without = register(&app, None, &service_metadata()).await;
    let unknown = register(&app, Some("not-a-token"), &service_metadata()).await;
    let basic = send(
        app.client
            .post(app.url("/register"))
            .basic_auth("x", Some("y"))
            .json(&service_metadata()),
    )
    .await;
    let first = register(&app, Some(&once), &service_metadata()).await;
    let second = register(&app, Some(&once), &service_metadata()).await;
    assert_registered(&app, &first);
    app.clock.advance_secs(60);
    let expired = register(&app, Some(&expiring), &service_metadata()).await;

    assert_bearer_refused(&without);
    assert_bearer_refused(&unknown);
    assert_bearer_refused(&basic);
    assert_bearer_refused(&second);
    assert_bearer_refused(&expired);
    let event = wait_for_event(&audit_file(app.home.path()), "client_registered", |_| true).await;
    assert_eq!(event["mode"], "initial_access_token");
}

#[tokio::test]
async fn an_initial_token_refused_by_the_policy_keeps_its_use() {
    let app = spawn_registration(RegistrationMode::InitialAccessToken, |_| {}).await;
    let once = initial_token(&app, 3600, 1).await;

    let refused = register(&app, Some(&once), &json!({"grant_types": ["password"]})).await;
    let registered = register(&app, Some(&once), &service_metadata()).await;

    refused.assert_error(400, "invalid_client_metadata");
    assert_registered(&app, &registered);
}

#[tokio::test]
async fn of_eight_concurrent_registrations_with_a_one_use_token_one_registers() {
    let app = spawn_registration(RegistrationMode::InitialAccessToken, |_| {}).await;
    let once = initial_token(&app, 3600, 1).await;

    let metadata = service_metadata();
    let replies =
        futures::future::join_all((0..8).map(|_| register(&app, Some(&once), &metadata))).await;

    let created = replies.iter().filter(|reply| reply.status == 201).count();
    assert_eq!(
        created,
        1,
        "{:?}",
        replies.iter().map(|r| &r.text).collect::<Vec<_>>()
    );
    for reply in replies.iter().filter(|reply| reply.status != 201) {
        assert_bearer_refused(reply);
    }
    let database = database(&app.settings).await;
    let clients = database.directory.list_clients().await.unwrap().len();
    database.tokens.close().await;
    assert_eq!(clients, 2, "the resource server and one registered client");
}

#[tokio::test]
async fn what_the_policy_or_the_client_rules_forbid_is_refused_with_the_rfc_error() {
    let app = spawn_registration(RegistrationMode::Open, |_| {}).await;
    let cases = [
        (
            json!({"grant_types": ["password"]}),
            "invalid_client_metadata",
        ),
        (
            json!({"grant_types": ["client_credentials"], "scope": "admin"}),
            "invalid_client_metadata",
        ),
        (
            json!({"grant_types": ["client_credentials"], "token_endpoint_auth_method": "none"}),
            "invalid_client_metadata",
        ),
        (
            json!({"redirect_uris": [LOOPBACK], "response_types": ["token"]}),
            "invalid_client_metadata",
        ),
        (
            json!({"redirect_uris": "https://a.example/cb"}),
            "invalid_client_metadata",
        ),
        (
            json!({"redirect_uris": ["http://app.example/cb"]}),
            "invalid_redirect_uri",
        ),
        (
            json!({"redirect_uris": ["https://app.example/cb#frag"]}),
            "invalid_redirect_uri",
        ),
        (json!({}), "invalid_redirect_uri"),
    ];

    for (metadata, error) in cases {
        let reply = register(&app, None, &metadata).await;
        reply.assert_error(400, error);
        assert!(reply.body.get("client_id").is_none());
    }
    let not_json = send(
        app.client
            .post(app.url("/register"))
            .header("content-type", "application/json")
            .body("grant_types=client_credentials"),
    )
    .await;
    let form = send(
        app.client
            .post(app.url("/register"))
            .form(&[("grant_types", "client_credentials")]),
    )
    .await;
    let large = send(
        app.client
            .post(app.url("/register"))
            .header("content-type", "application/json")
            .body(format!(
                "{{\"client_name\":\"{}\"}}",
                "x".repeat(app.settings.server.max_body_bytes)
            )),
    )
    .await;

    not_json.assert_error(400, "invalid_client_metadata");
    form.assert_error(400, "invalid_request");
    large.assert_error(413, "invalid_request");
    let database = database(&app.settings).await;
    let clients = database.directory.list_clients().await.unwrap().len();
    database.tokens.close().await;
    assert_eq!(clients, 1, "only the resource server");
}

#[tokio::test]
async fn a_registration_token_manages_its_own_client_and_no_other() {
    let app = spawn_registration(RegistrationMode::Open, |_| {}).await;
    let a = register(&app, None, &service_metadata()).await;
    let b = register(&app, None, &native_metadata()).await;
    assert_registered(&app, &a);
    assert_registered(&app, &b);
    let (a_id, a_token) = (a.str("client_id"), a.str("registration_access_token"));
    let (b_id, b_token) = (b.str("client_id"), b.str("registration_access_token"));
    use reqwest::Method;

    // Another client's token, or none, opens nothing.
    for method in [Method::GET, Method::PUT, Method::DELETE] {
        let body = (method == Method::PUT).then(service_metadata);
        for token in [Some(a_token), None, Some("made-up")] {
            let reply = manage(&app, method.clone(), b_id, token, body.as_ref()).await;
            assert_bearer_refused(&reply);
        }
    }
    let unknown = manage(&app, Method::GET, "no-such-client", Some(a_token), None).await;
    assert_bearer_refused(&unknown);

    // Its own token reads, replaces and deletes it.
    let read = manage(&app, Method::GET, a_id, Some(a_token), None).await;
    assert_eq!(read.status, 200, "{}", read.text);
    assert_eq!(read.header("cache-control"), Some("no-store"));
    assert_eq!(read.body["client_id"], a_id);
    assert_eq!(read.body["registration_access_token"], a_token);
    assert_eq!(
        read.body["client_id_issued_at"],
        a.body["client_id_issued_at"]
    );
    assert_eq!(read.body["client_name"], "Nightly Report");
    let mut changed = service_metadata();
    changed["client_name"] = json!("Weekly Report");
    changed["scope"] = json!("");
    changed["client_id"] = json!(a_id);
    let updated = manage(&app, Method::PUT, a_id, Some(a_token), Some(&changed)).await;
    assert_eq!(updated.status, 200, "{}", updated.text);
    assert_eq!(updated.body["client_name"], "Weekly Report");
    assert!(updated.body.get("scope").is_none(), "{}", updated.text);
    assert!(
        updated.body.get("client_secret").is_none(),
        "{}",
        updated.text
    );
    // The secret stays; the scope is gone at once.
    let narrowed = app
        .post_token_as(
            a_id,
            a.str("client_secret"),
            &[("grant_type", "client_credentials"), ("scope", "read")],
        )
        .await;
    narrowed.assert_error(400, "invalid_scope");
    let policy = manage(
        &app,
        Method::PUT,
        a_id,
        Some(a_token),
        Some(&json!({"grant_types": ["password"]})),
    )
    .await;
    policy.assert_error(400, "invalid_client_metadata");
    let wrong_id = manage(
        &app,
        Method::PUT,
        a_id,
        Some(a_token),
        Some(&json!({"client_id": b_id, "grant_types": ["client_credentials"]})),
    )
    .await;
    wrong_id.assert_error(400, "invalid_client_metadata");
    let event = wait_for_event(
        &audit_file(app.home.path()),
        "client_registration_updated",
        |_| true,
    )
    .await;
    assert_eq!(event["client_id"], a_id);

    // B still stands, whatever A's token tried.
    let b_read = manage(&app, Method::GET, b_id, Some(b_token), None).await;
    assert_eq!(b_read.status, 200, "{}", b_read.text);
    assert_eq!(b_read.body["client_name"], "Desk App");
}

#[tokio::test]
async fn a_public_client_that_becomes_confidential_gets_a_secret_shown_in_that_answer_only() {
    let app = spawn_registration(RegistrationMode::Open, |_| {}).await;
    let reply = register(&app, None, &native_metadata()).await;
    let (id, token) = (
        reply.str("client_id"),
        reply.str("registration_access_token"),
    );
    let mut confidential = service_metadata();
    confidential["token_endpoint_auth_method"] = json!("client_secret_post");

    let updated = manage(
        &app,
        reqwest::Method::PUT,
        id,
        Some(token),
        Some(&confidential),
    )
    .await;
    let read = manage(&app, reqwest::Method::GET, id, Some(token), None).await;

    assert_eq!(updated.status, 200, "{}", updated.text);
    assert_eq!(
        updated.body["token_endpoint_auth_method"],
        "client_secret_post"
    );
    assert_eq!(
        read.body["token_endpoint_auth_method"],
        "client_secret_post"
    );
    assert_eq!(updated.body["client_secret_expires_at"], 0);
    client_credentials(&app, &updated).await.assert_tokens(
        app.settings.oauth.application_access_token_validity_secs,
        "read",
    );
    assert!(read.body.get("client_secret").is_none(), "{}", read.text);
}

#[tokio::test]
async fn deleting_a_registration_removes_the_client_and_ends_its_tokens() {
    let app = spawn_registration(RegistrationMode::Open, |_| {}).await;
    let reply = register(&app, None, &service_metadata()).await;
    let (id, token) = (
        reply.str("client_id"),
        reply.str("registration_access_token"),
    );
    let tokens = client_credentials(&app, &reply).await;
    let (access, _) = tokens.assert_tokens(
        app.settings.oauth.application_access_token_validity_secs,
        "read",
    );
    assert_eq!(app.introspect(&access).await.body["active"], true);

    let deleted = manage(&app, reqwest::Method::DELETE, id, Some(token), None).await;
    let after = manage(&app, reqwest::Method::GET, id, Some(token), None).await;
    let again = manage(&app, reqwest::Method::DELETE, id, Some(token), None).await;

    assert_eq!(deleted.status, 204, "{}", deleted.text);
    assert_eq!(deleted.text, "");
    assert_eq!(deleted.header("cache-control"), Some("no-store"));
    assert_eq!(app.introspect(&access).await.body, json!({"active": false}));
    client_credentials(&app, &reply)
        .await
        .assert_error(401, "invalid_client");
    assert_bearer_refused(&after);
    assert_bearer_refused(&again);
    let event = wait_for_event(
        &audit_file(app.home.path()),
        "client_registration_deleted",
        |_| true,
    )
    .await;
    assert_eq!(event["client_id"], id);
    for change in ["registered", "deleted"] {
        assert_eq!(
            app.metric(&format!(
                "tokengate_client_changes_total{{change=\"{change}\",via=\"register\"}}"
            ))
            .await,
            1.0,
            "{change}"
        );
    }

    // The tokens stay ended on a node that still holds the client (until it re-reads the
    // table): played here by putting the row back as it was.
    let database = database(&app.settings).await;
    let stale = Client {
        id: id.to_owned(),
        secret_hash: secret::hash_sha256(reply.str("client_secret")),
        public: false,
        redirect_uris: Vec::new(),
        require_consent: false,
        name: None,
        owner: None,
        grant_types: [GrantType::ClientCredentials].into(),
        scopes: ["read".to_owned()].into(),
        access_token_validity_secs: None,
        application_access_token_validity_secs: None,
        refresh_token_validity_secs: None,
        introspect: false,
        token_format: None,
        audience: None,
        disabled: false,
        previous_secret: None,
    };
    assert!(database.directory.add_client(&stale, 0).await.unwrap());
    database.tokens.close().await;
    let back = poll_until(|| client_credentials(&app, &reply), |r| r.status == 200).await;
    assert_eq!(back.status, 200, "{}", back.text);
    assert_eq!(app.introspect(&access).await.body, json!({"active": false}));
}

#[tokio::test]
async fn the_registration_endpoints_are_limited_per_client_ip_and_counted() {
    let app = spawn_registration(RegistrationMode::Open, |settings| {
        settings.rate_limit.per_ip = Some(Rate {
            per_second: 0.001,
            burst: 2.0,
        });
    })
    .await;

    let first = register(&app, None, &service_metadata()).await;
    let second = register(&app, None, &json!({"grant_types": ["password"]})).await;
    let third = register(&app, None, &service_metadata()).await;

    assert_registered(&app, &first);
    second.assert_error(400, "invalid_client_metadata");
    third.assert_error(429, "rate_limited");
    let series = |outcome: &str| {
        format!(
            "tokengate_token_requests_total{{endpoint=\"register\",grant_type=\"none\",outcome=\"{outcome}\"}}"
        )
    };
    assert_eq!(app.metric(&series("ok")).await, 1.0);
    assert_eq!(app.metric(&series("invalid_client_metadata")).await, 1.0);
    assert_eq!(app.metric(&series("rate_limited")).await, 1.0);
}

/// A home whose server (the real binary) registers client_credentials clients with scope
/// `read` for an initial access token, kept in the database.
fn initial_token_home() -> Home {
    let home = Home::new();
    home.edit(
        "config/identity.toml",
        "clients = \"config/clients.toml\"",
        "clients = \"sql\"",
    );
    home.edit(
        "config/identity.toml",
        "mode = \"off\"",
        "mode = \"initial_access_token\"",
    );
    home.edit(
        "config/identity.toml",
        "allowed_grant_types = [\"authorization_code\", \"refresh_token\"]",
        "allowed_grant_types = [\"client_credentials\"]",
    );
    home.edit(
        "config/identity.toml",
        "allowed_scopes = []",
        "allowed_scopes = [\"read\"]",
    );
    home
}

#[tokio::test]
async fn registration_token_create_prints_a_token_once_that_the_server_accepts_for_its_uses() {
    let home = initial_token_home();

    let created = home
        .run(
            &[
                "registration",
                "token",
                "create",
                "--uses",
                "1",
                "--expires",
                "600",
            ],
            None,
        )
        .await;
    let server = serve(&home).await;
    let register = |token: String| {
        let server = &server;
        async move {
            Reply::read(
                server
                    .client
                    .post(server.url("/register"))
                    .bearer_auth(token)
                    .json(&service_metadata())
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }
    };
    created.assert_success();
    let token = created.stdout.trim().to_owned();
    let first = register(token.clone()).await;
    let second = register(token.clone()).await;

    assert_eq!(token.len(), 43, "{}", created.stdout);
    assert_eq!(first.status, 201, "{}", first.text);
    assert_bearer_refused(&second);
    let file = std::fs::read(home.path().join("data/tokens.db")).unwrap();
    assert!(!file.windows(token.len()).any(|w| w == token.as_bytes()));
    let events = events_named(
        &home.path().join("logs/audit.jsonl"),
        "initial_access_token_created",
    );
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["uses"], 1);
    assert_eq!(events[0]["source"], "cli");
    assert!(!events[0].to_string().contains(&token));
}

#[tokio::test]
async fn registration_token_list_shows_the_tokens_and_revoke_ends_one() {
    // Arrange: two tokens.
    let home = initial_token_home();
    let kept = home
        .run(&["registration", "token", "create", "--uses", "3"], None)
        .await;
    let revoked = home
        .run(&["registration", "token", "create", "--uses", "1"], None)
        .await;
    kept.assert_success();
    revoked.assert_success();

    // Act
    let listed = home.run(&["registration", "token", "list"], None).await;
    listed.assert_success();
    let id_of = |token: &str| {
        use base64::Engine as _;
        use sha2::Digest as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(sha2::Sha256::digest(token.trim().as_bytes()))
    };
    let revoked_id = id_of(&revoked.stdout);
    let revoke = home
        .run(&["registration", "token", "revoke", &revoked_id], None)
        .await;
    let again = home
        .run(&["registration", "token", "revoke", &revoked_id], None)
        .await;
    let nonsense = home
        .run(&["registration", "token", "revoke", "not-an-id"], None)
        .await;
    let after = home.run(&["registration", "token", "list"], None).await;
    let server = serve(&home).await;
    let register = |token: String| {
        let server = &server;
        async move {
            Reply::read(
                server
                    .client
                    .post(server.url("/register"))
                    .bearer_auth(token.trim().to_owned())
                    .json(&service_metadata())
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }
    };
    let with_revoked = register(revoked.stdout.clone()).await;
    let with_kept = register(kept.stdout.clone()).await;

    // Assert: the list names each by its digest, never by the token.
    let lines = listed.stdout_lines();
    assert_eq!(lines.len(), 2, "{listed:#?}");
    for (token, uses) in [
        (&kept.stdout, "uses_left=3"),
        (&revoked.stdout, "uses_left=1"),
    ] {
        assert!(
            lines
                .iter()
                .any(|line| line.starts_with(&format!("{}\t", id_of(token))) && line.contains(uses)),
            "{listed:#?}"
        );
        assert!(!listed.stdout.contains(token.trim()), "{listed:#?}");
    }
    revoke.assert_success();
    again.assert_failure();
    nonsense.assert_failure();
    assert_eq!(after.stdout_lines().len(), 1, "{after:#?}");
    assert_bearer_refused(&with_revoked);
    assert_eq!(with_kept.status, 201, "{}", with_kept.text);
    let events = events_named(
        &home.path().join("logs/audit.jsonl"),
        "initial_access_token_revoked",
    );
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["token_id"], revoked_id.as_str());
}

/// Runs `program args` in `dir` (at most two minutes); `None` when it cannot be started (not
/// installed).
async fn run_tool(
    program: &str,
    args: &[&str],
    dir: &std::path::Path,
    env: &[(&str, &str)],
) -> Option<std::process::Output> {
    let mut command = std::process::Command::new(program);
    command.args(args).current_dir(dir);
    for (name, value) in env {
        command.env(name, value);
    }
    let running = tokio::task::spawn_blocking(move || command.output());
    let finished = tokio::time::timeout(std::time::Duration::from_secs(120), running)
        .await
        .unwrap_or_else(|_| panic!("{program} {args:?} did not finish within two minutes"));
    finished.unwrap().ok()
}

#[tokio::test]
async fn a_third_party_rfc_7591_client_registers_and_gets_a_token() {
    // oauth4webapi (npm), pinned by tests/interop/package-lock.json, installed into a temp
    // folder so that the tree stays clean.
    let interop = project_root().join("tests/interop");
    let dir = tempfile::tempdir().unwrap();
    for file in ["package.json", "package-lock.json", "register.mjs"] {
        std::fs::copy(interop.join(file), dir.path().join(file)).unwrap();
    }
    let versions = (
        run_tool("node", &["--version"], dir.path(), &[]).await,
        run_tool("npm", &["--version"], dir.path(), &[]).await,
    );
    let (Some(node), Some(npm)) = versions else {
        println!("skipped: node and npm are needed for the oauth4webapi registration test");
        return;
    };
    assert!(node.status.success() && npm.status.success());
    let installed = run_tool(
        "npm",
        &["ci", "--no-audit", "--no-fund", "--ignore-scripts"],
        dir.path(),
        &[],
    )
    .await
    .unwrap();
    assert!(
        installed.status.success(),
        "npm ci failed (is the npm registry reachable?): {}",
        String::from_utf8_lossy(&installed.stderr)
    );
    let app = spawn_registration(RegistrationMode::InitialAccessToken, |_| {}).await;
    let token = initial_token(&app, 600, 1).await;
    let cert = app.settings.tls.cert.display().to_string();
    let issuer = app.settings_issuer();

    let ran = run_tool(
        "node",
        &["register.mjs"],
        dir.path(),
        &[
            ("ISSUER", issuer.as_str()),
            ("INITIAL_TOKEN", token.as_str()),
            ("NODE_EXTRA_CA_CERTS", cert.as_str()),
            // The server listens on 127.0.0.1; `localhost` may resolve to ::1 first.
            ("NODE_OPTIONS", "--dns-result-order=ipv4first"),
        ],
    )
    .await
    .unwrap();

    assert!(
        ran.status.success(),
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    let answer: Value = serde_json::from_slice(&ran.stdout).unwrap();
    assert_eq!(
        answer["registration_endpoint"],
        format!("{issuer}/register")
    );
    let introspected = app
        .introspect(answer["access_token"].as_str().unwrap())
        .await;
    assert_eq!(introspected.body["active"], true, "{}", introspected.text);
    assert_eq!(introspected.body["client_id"], answer["client_id"]);
    assert_eq!(introspected.body["scope"], "read");
    let again = register(&app, Some(&token), &service_metadata()).await;
    assert_bearer_refused(&again);
}

#[tokio::test]
async fn another_node_on_the_database_knows_a_registered_client_within_the_reload_interval() {
    let first = spawn_registration(RegistrationMode::Open, |_| {}).await;
    let second = spawn_in(
        first.home.clone(),
        first.settings.clone(),
        Arc::new(ManualClock::starting_now()),
    )
    .await;

    let reply = register(&first, None, &service_metadata()).await;
    let elsewhere = poll_until(
        || client_credentials(&second, &reply),
        |reply| reply.status == 200,
    )
    .await;

    assert_registered(&first, &reply);
    elsewhere.assert_tokens(
        second.settings.oauth.application_access_token_validity_secs,
        "read",
    );
    let read = manage(
        &second,
        reqwest::Method::GET,
        reply.str("client_id"),
        Some(reply.str("registration_access_token")),
        None,
    )
    .await;
    assert_eq!(read.status, 200, "{}", read.text);
}
