//! WSO2 API Manager's `POST /client-registration/v0.17/register` over real HTTPS
//! (`[registration] wso2_compat`): a developer's Basic credentials, the product's JSON in and
//! out, the client owned by that developer and usable at `/token` at once; roles, owner,
//! credentials and policy refusals; off by default.

use std::sync::Arc;

use serde_json::{json, Value};
use tokengate::abuse::rate_limit::Rate;
use tokengate::clock::ManualClock;
use tokengate::config::{DirectoryLocation, Settings};
use tokengate::crypto::password;
use tokengate::store::measured::Unobserved;
use tokengate::store::model::GrantType;
use tokengate::store::open_database;

use crate::helpers::*;

const PATH: &str = "/client-registration/v0.17/register";
const DEVELOPER: &str = "devon";
const DEVELOPER_PASSWORD: &str = "devon-password";
const OTHER_DEVELOPER: &str = "dana";
const ADMIN: &str = "ada";
const ADMIN_PASSWORD: &str = "ada-password";

/// An app whose clients live in its database, with `wso2_compat` on (unless `adjust` turns it
/// off), registered clients allowed client_credentials, password and refresh_token, and users
/// `devon` and `dana` (developers) and `ada` (admin) beside the fixture's `alice` (no role).
async fn spawn_wso2(adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let home = Arc::new(tempfile::tempdir().unwrap());
    write_fixture_stores(home.path());
    let mut settings = test_settings(home.path());
    settings.stores.clients = DirectoryLocation::Database;
    settings.registration.wso2_compat = true;
    settings.registration.allowed_grant_types = [
        GrantType::AuthorizationCode,
        GrantType::RefreshToken,
        GrantType::ClientCredentials,
        GrantType::Password,
    ]
    .into();
    adjust(&mut settings);
    let users = home.path().join("config/users.toml");
    let mut text = std::fs::read_to_string(&users).unwrap();
    for (name, password, role) in [
        (DEVELOPER, DEVELOPER_PASSWORD, "developer"),
        (OTHER_DEVELOPER, "dana-password", "developer"),
        (ADMIN, ADMIN_PASSWORD, "admin"),
    ] {
        let hash = password::hash_password(password, &settings.password_hashing).unwrap();
        text.push_str(&format!(
            "\n[users.{name}]\npassword_hash = \"{hash}\"\nroles = [\"{role}\"]\n"
        ));
    }
    std::fs::write(&users, text).unwrap();
    spawn_in(home, settings, Arc::new(ManualClock::starting_now())).await
}

/// What the product's scripts send (its documentation's sample, as `owner`).
fn product_request(owner: &str) -> Value {
    json!({
        "callbackUrl": "www.google.lk",
        "clientName": "rest_api_publisher",
        "owner": owner,
        "grantType": "client_credentials password refresh_token",
        "saasApp": true,
    })
}

async fn register(app: &TestApp, user: &str, password: &str, body: &Value) -> Reply {
    let response = app
        .client
        .post(app.url(PATH))
        .basic_auth(user, Some(password))
        .json(body)
        .send()
        .await
        .unwrap();
    Reply::read(response).await
}

/// The `client_credentials` request of the product's getting-started guide: `curl -u
/// clientId:clientSecret -d grant_type=client_credentials …/token`.
async fn token_with(app: &TestApp, client_id: &str, client_secret: &str) -> Reply {
    let response = app
        .client
        .post(app.url("/token"))
        .basic_auth(client_id, Some(client_secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    Reply::read(response).await
}

async fn owner_of(app: &TestApp, client_id: &str) -> Option<String> {
    let database = open_database(&app.settings.stores.tokens, Arc::new(Unobserved))
        .await
        .unwrap();
    let rows = database.directory.list_clients().await.unwrap();
    database.tokens.close().await;
    let row = rows
        .into_iter()
        .find(|row| row.id == client_id)
        .unwrap_or_else(|| panic!("{client_id} is not in the clients table"));
    row.owner
}

#[tokio::test]
async fn a_developer_registers_as_the_product_answers_and_gets_a_token_at_once() {
    let app = spawn_wso2(|_| {}).await;

    let reply = register(
        &app,
        DEVELOPER,
        DEVELOPER_PASSWORD,
        &product_request(DEVELOPER),
    )
    .await;

    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    assert_eq!(reply.body["clientName"], "rest_api_publisher");
    assert_eq!(reply.body["callBackURL"], "www.google.lk");
    assert_eq!(reply.body["isSaasApplication"], true);
    assert_eq!(reply.body["appOwner"], DEVELOPER);
    let json_string: Value = serde_json::from_str(reply.str("jsonString")).unwrap();
    assert_eq!(
        json_string,
        json!({
            "grant_types": "client_credentials password refresh_token",
            "redirect_uris": "www.google.lk",
            "client_name": "rest_api_publisher",
        })
    );
    let client_id = reply.str("clientId");
    let client_secret = reply.str("clientSecret");
    let tokens = token_with(&app, client_id, client_secret).await;
    tokens.assert_tokens(
        app.settings.oauth.application_access_token_validity_secs,
        "default",
    );
    assert_eq!(owner_of(&app, client_id).await.as_deref(), Some(DEVELOPER));
    let event = wait_for_event(&audit_file(app.home.path()), "client_registered", |_| true).await;
    assert_eq!(event["client_id"], client_id);
    assert_eq!(event["subject"], DEVELOPER);
    assert_eq!(event["mode"], "wso2_compat");
    assert!(!event.to_string().contains(client_secret));
    assert_eq!(
        app.metric(
            "tokengate_token_requests_total{endpoint=\"register_wso2\",grant_type=\"none\",outcome=\"ok\"}"
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn wso2_registration_is_off_by_default_and_the_path_does_not_exist() {
    let app = spawn_wso2(|settings| settings.registration.wso2_compat = false).await;

    let reply = register(
        &app,
        DEVELOPER,
        DEVELOPER_PASSWORD,
        &product_request(DEVELOPER),
    )
    .await;

    reply.assert_error(404, "not_found");
}

#[tokio::test]
async fn a_user_without_the_developer_or_admin_role_is_refused() {
    let app = spawn_wso2(|_| {}).await;

    let reply = register(&app, USER, PASSWORD, &product_request(USER)).await;

    reply.assert_error(403, "access_denied");
}

#[tokio::test]
async fn a_wrong_password_or_no_credentials_is_401_with_a_basic_challenge() {
    let app = spawn_wso2(|_| {}).await;

    let wrong = register(
        &app,
        DEVELOPER,
        "not-the-password",
        &product_request(DEVELOPER),
    )
    .await;
    let none = Reply::read(
        app.client
            .post(app.url(PATH))
            .json(&product_request(DEVELOPER))
            .send()
            .await
            .unwrap(),
    )
    .await;

    for reply in [&wrong, &none] {
        reply.assert_error(401, "invalid_client");
        assert_eq!(
            reply.header("www-authenticate"),
            Some("Basic realm=\"tokengate\"")
        );
    }
    let failed = wait_for_event(&audit_file(app.home.path()), "login_failed", |_| true).await;
    assert_eq!(failed["subject"], DEVELOPER);
    assert_eq!(failed["client_id"], Value::Null);
}

#[tokio::test]
async fn a_developer_registers_only_for_themselves_and_an_admin_for_anyone() {
    let app = spawn_wso2(|_| {}).await;

    let for_other = register(
        &app,
        DEVELOPER,
        DEVELOPER_PASSWORD,
        &product_request(OTHER_DEVELOPER),
    )
    .await;
    let by_admin = register(
        &app,
        ADMIN,
        ADMIN_PASSWORD,
        &product_request(OTHER_DEVELOPER),
    )
    .await;

    for_other.assert_error(403, "access_denied");
    assert_eq!(by_admin.status, 200, "{}", by_admin.text);
    assert_eq!(by_admin.body["appOwner"], OTHER_DEVELOPER);
    assert_eq!(
        owner_of(&app, by_admin.str("clientId")).await.as_deref(),
        Some(OTHER_DEVELOPER)
    );
}

#[tokio::test]
async fn a_grant_type_the_policy_does_not_allow_is_refused() {
    let app = spawn_wso2(|settings| {
        settings.registration.allowed_grant_types =
            [GrantType::ClientCredentials, GrantType::RefreshToken].into();
    })
    .await;

    let refused = register(
        &app,
        DEVELOPER,
        DEVELOPER_PASSWORD,
        &product_request(DEVELOPER),
    )
    .await;
    let code_flow = register(
        &app,
        DEVELOPER,
        DEVELOPER_PASSWORD,
        &json!({"callbackUrl": "www.google.lk", "clientName": "web", "owner": DEVELOPER,
                "grantType": "authorization_code", "saasApp": false}),
    )
    .await;

    refused.assert_error(400, "invalid_client_metadata");
    assert!(
        refused.str("error_description").contains("password"),
        "{}",
        refused.text
    );
    code_flow.assert_error(400, "invalid_client_metadata");
}

#[tokio::test]
async fn the_callback_must_be_a_valid_redirect_uri_with_the_code_grant() {
    let app = spawn_wso2(|_| {}).await;
    let code_flow = |callback: &str| {
        json!({"callbackUrl": callback, "clientName": "web", "owner": DEVELOPER,
               "grantType": "authorization_code refresh_token"})
    };

    let bad = register(
        &app,
        DEVELOPER,
        DEVELOPER_PASSWORD,
        &code_flow("www.google.lk"),
    )
    .await;
    let good = register(
        &app,
        DEVELOPER,
        DEVELOPER_PASSWORD,
        &code_flow("https://app.example.test/cb"),
    )
    .await;

    bad.assert_error(400, "invalid_redirect_uri");
    assert_eq!(good.status, 200, "{}", good.text);
    assert_eq!(good.body["isSaasApplication"], false);
    let json_string: Value = serde_json::from_str(good.str("jsonString")).unwrap();
    assert_eq!(json_string["redirect_uris"], "https://app.example.test/cb");
}

#[tokio::test]
async fn a_body_that_is_not_json_is_refused_with_a_clear_message() {
    let app = spawn_wso2(|_| {}).await;

    let form = Reply::read(
        app.client
            .post(app.url(PATH))
            .basic_auth(DEVELOPER, Some(DEVELOPER_PASSWORD))
            .form(&[("clientName", "x")])
            .send()
            .await
            .unwrap(),
    )
    .await;
    let garbage = Reply::read(
        app.client
            .post(app.url(PATH))
            .basic_auth(DEVELOPER, Some(DEVELOPER_PASSWORD))
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .await
            .unwrap(),
    )
    .await;

    let oversize = Reply::read(
        app.client
            .post(app.url(PATH))
            .basic_auth(DEVELOPER, Some(DEVELOPER_PASSWORD))
            .header("content-type", "application/json")
            .body(vec![b' '; app.settings.server.max_body_bytes + 1])
            .send()
            .await
            .unwrap(),
    )
    .await;

    form.assert_error(400, "invalid_request");
    assert!(form.str("error_description").contains("application/json"));
    garbage.assert_error(400, "invalid_client_metadata");
    assert_eq!(oversize.status, 413, "{}", oversize.text);
}

#[tokio::test]
async fn the_endpoint_is_limited_per_client_ip_and_counted() {
    let app = spawn_wso2(|settings| {
        settings.rate_limit.per_ip = Some(Rate {
            per_second: 0.001,
            burst: 2.0,
        });
    })
    .await;

    let first = register(
        &app,
        DEVELOPER,
        DEVELOPER_PASSWORD,
        &product_request(DEVELOPER),
    )
    .await;
    let second = register(&app, USER, PASSWORD, &product_request(USER)).await;
    let third = register(
        &app,
        DEVELOPER,
        DEVELOPER_PASSWORD,
        &product_request(DEVELOPER),
    )
    .await;

    assert_eq!(first.status, 200, "{}", first.text);
    second.assert_error(403, "access_denied");
    third.assert_error(429, "rate_limited");
    let series = |outcome: &str| {
        format!(
            "tokengate_token_requests_total{{endpoint=\"register_wso2\",grant_type=\"none\",outcome=\"{outcome}\"}}"
        )
    };
    assert_eq!(app.metric(&series("ok")).await, 1.0);
    assert_eq!(app.metric(&series("access_denied")).await, 1.0);
    assert_eq!(app.metric(&series("rate_limited")).await, 1.0);
}

#[tokio::test]
async fn guesses_here_lock_the_name_as_on_the_login_page_never_for_the_password_grant() {
    // Arrange: 2 failures lock an address, 4 from all addresses lock the name everywhere; the
    // developer has a client allowed the password grant.
    let app = spawn_wso2(|settings| {
        settings.rate_limit.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        settings.security.lockout = Some(tokengate::store::LockoutPolicy {
            max_failures: 2,
            max_failures_per_user: 4,
            window_secs: 300,
            lock_secs: 300,
        });
    })
    .await;
    let app_client = register(
        &app,
        DEVELOPER,
        DEVELOPER_PASSWORD,
        &product_request(DEVELOPER),
    )
    .await;
    assert_eq!(app_client.status, 200, "{}", app_client.text);
    let from = |address: &'static str, password: &'static str| {
        let request = app
            .client
            .post(app.url(PATH))
            .header("x-forwarded-for", address)
            .basic_auth(DEVELOPER, Some(password))
            .json(&product_request(DEVELOPER));
        async move { Reply::read(request.send().await.unwrap()).await }
    };
    for address in ["198.51.100.1", "198.51.100.2"] {
        for _ in 0..2 {
            from(address, "wrong")
                .await
                .assert_error(401, "invalid_client");
        }
    }

    // Act
    let here_from_a_new_address = from("203.0.113.7", DEVELOPER_PASSWORD).await;
    let by_password_grant = app
        .post_form_from(
            "203.0.113.7",
            "/token",
            app_client.str("clientId"),
            app_client.str("clientSecret"),
            &[
                ("grant_type", "password"),
                ("username", DEVELOPER),
                ("password", DEVELOPER_PASSWORD),
            ],
        )
        .await;

    // Assert
    here_from_a_new_address.assert_error(401, "invalid_client");
    assert_eq!(by_password_grant.status, 200, "{}", by_password_grant.text);
}
