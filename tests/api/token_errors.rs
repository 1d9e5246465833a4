//! Every malformed token request gets the exact RFC 6749 §5.2 answer (JSON `error` and
//! `error_description`, `Cache-Control: no-store`, `Pragma: no-cache`), and the server stays
//! healthy afterwards.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt as _;

use crate::helpers::{
    raw_http1_connection, read_until_closed, spawn_app, Reply, TestApp, ARGON_CLIENT_ID,
    ARGON_CLIENT_SECRET, CLIENT_ID, CLIENT_SECRET, DISABLED_PASSWORD, DISABLED_USER,
    NO_REFRESH_CLIENT_ID, PASSWORD, REFRESH_ONLY_CLIENT_ID, SHARED_SECRET, USER,
};

const FORM: &str = "application/x-www-form-urlencoded";
/// `max_body_bytes` in the shipped config.
const BODY_LIMIT: usize = 16 * 1024;
/// `access_token_default_validity_period` in the shipped config.
const ACCESS_TTL: u64 = 3600;

// ---------------------------------------------------------------------------------------------
// Helpers local to this module
// ---------------------------------------------------------------------------------------------

/// A valid password grant for alice, form-encoded.
fn password_body() -> String {
    format!("grant_type=password&username={USER}&password={PASSWORD}")
}

/// An `Authorization: Basic` value for `id:secret`, base64-encoded exactly as given.
fn basic(id: &str, secret: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")))
}

/// POSTs `body` to /token with the given Content-Type (or none) and Authorization (or none).
async fn post(
    app: &TestApp,
    content_type: Option<&str>,
    authorization: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> Reply {
    let mut request = app.client.post(app.url("/token")).body(body);
    if let Some(content_type) = content_type {
        request = request.header(CONTENT_TYPE, content_type);
    }
    if let Some(authorization) = authorization {
        request = request.header(AUTHORIZATION, authorization);
    }
    Reply::read(request.send().await.unwrap()).await
}

/// POSTs a form body to /token as the main client (HTTP Basic).
async fn post_form(app: &TestApp, body: impl Into<reqwest::Body>) -> Reply {
    post(
        app,
        Some(FORM),
        Some(&basic(CLIENT_ID, CLIENT_SECRET)),
        body,
    )
    .await
}

/// POSTs a form body to /token with exactly this Authorization header, or none.
async fn post_authorized(app: &TestApp, authorization: Option<&str>, body: &str) -> Reply {
    post(app, Some(FORM), authorization, body.to_owned()).await
}

/// GET /health answers 200 `{"status":"ok","store":"ok"}`.
async fn assert_still_healthy(app: &TestApp) {
    let response = app.client.get(app.url("/health")).send().await.unwrap();
    let reply = Reply::read(response).await;
    assert_eq!(
        reply.status, 200,
        "health after the request: {}",
        reply.text
    );
    assert_eq!(reply.body, json!({"status": "ok", "store": "ok"}));
}

/// Asserts a 401 `invalid_client` with the Basic challenge RFC 6749 §5.2 requires.
fn assert_invalid_client(reply: &Reply) {
    reply.assert_error(401, "invalid_client");
    assert_eq!(
        reply.header("www-authenticate"),
        Some("Basic realm=\"tokengate\""),
        "body: {}",
        reply.text
    );
}

/// A response read off a raw HTTP/1.1 connection.
struct RawResponse {
    status_line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    fn parse(received: &[u8]) -> Self {
        let split = received
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no HTTP head in {:?}", String::from_utf8_lossy(received)));
        let head = String::from_utf8_lossy(&received[..split]).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default().to_owned();
        let headers: Vec<(String, String)> = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
            .collect();
        let mut body = received[split + 4..].to_vec();
        let length = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse::<usize>().ok());
        if let Some(length) = length {
            body.truncate(length);
        }
        Self {
            status_line,
            headers,
            body,
        }
    }
}

/// Sends raw bytes over HTTP/1.1-over-TLS (the request should say `Connection: close`) and
/// returns the parsed response.
async fn raw_http1_exchange(app: &TestApp, request: &[u8]) -> RawResponse {
    let mut tls = raw_http1_connection(app).await;
    tls.write_all(request).await.unwrap();
    tls.flush().await.unwrap();
    RawResponse::parse(&read_until_closed(&mut tls).await)
}

// ---------------------------------------------------------------------------------------------
// Content-Type
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_body_without_content_type_is_invalid_request() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let reply = post(
        &app,
        None,
        Some(&basic(CLIENT_ID, CLIENT_SECRET)),
        password_body(),
    )
    .await;

    // Assert
    reply.assert_error(400, "invalid_request");
    assert_still_healthy(&app).await;
}

#[tokio::test]
async fn a_json_body_is_invalid_request() {
    // Arrange
    let app = spawn_app().await;
    let body = json!({"grant_type": "password", "username": USER, "password": PASSWORD});

    // Act
    let reply = post(
        &app,
        Some("application/json"),
        Some(&basic(CLIENT_ID, CLIENT_SECRET)),
        body.to_string(),
    )
    .await;

    // Assert
    reply.assert_error(400, "invalid_request");
    assert_still_healthy(&app).await;
}

#[tokio::test]
async fn a_text_plain_body_is_invalid_request() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let reply = post(
        &app,
        Some("text/plain"),
        Some(&basic(CLIENT_ID, CLIENT_SECRET)),
        password_body(),
    )
    .await;

    // Assert
    reply.assert_error(400, "invalid_request");
    assert_still_healthy(&app).await;
}

#[tokio::test]
async fn form_content_type_with_charset_utf8_is_accepted() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let reply = post(
        &app,
        Some("application/x-www-form-urlencoded; charset=UTF-8"),
        Some(&basic(CLIENT_ID, CLIENT_SECRET)),
        password_body(),
    )
    .await;

    // Assert
    reply.assert_tokens(ACCESS_TTL, "default");
    assert_still_healthy(&app).await;
}

// ---------------------------------------------------------------------------------------------
// Form syntax
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_repeated_grant_type_is_invalid_request() {
    // Arrange
    let app = spawn_app().await;
    let body =
        format!("grant_type=password&grant_type=password&username={USER}&password={PASSWORD}");

    // Act
    let reply = post_form(&app, body).await;

    // Assert
    reply.assert_error(400, "invalid_request");
    assert_still_healthy(&app).await;
}

#[tokio::test]
async fn a_repeated_scope_is_invalid_request() {
    // Arrange
    let app = spawn_app().await;
    let body = format!("{}&scope=PRODUCTION&scope=SANDBOX", password_body());

    // Act
    let reply = post_form(&app, body).await;

    // Assert
    reply.assert_error(400, "invalid_request");
    assert_still_healthy(&app).await;
}

#[tokio::test]
async fn a_percent_encoded_invalid_utf8_sequence_is_invalid_request() {
    // Arrange
    let app = spawn_app().await;
    let body = format!("grant_type=password&username=%C3%28&password={PASSWORD}");

    // Act
    let reply = post_form(&app, body).await;

    // Assert
    reply.assert_error(400, "invalid_request");
    assert_still_healthy(&app).await;
}

#[tokio::test]
async fn a_raw_0xff_byte_in_the_body_is_invalid_request() {
    // Arrange
    let app = spawn_app().await;
    let mut body = b"grant_type=password&password=x&username=al".to_vec();
    body.push(0xFF);
    body.extend_from_slice(b"ice");

    // Act
    let reply = post_form(&app, body).await;

    // Assert
    reply.assert_error(400, "invalid_request");
    assert_still_healthy(&app).await;
}

// ---------------------------------------------------------------------------------------------
// grant_type
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_missing_grant_type_is_invalid_request() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let reply = app
        .post_token(&[("username", USER), ("password", PASSWORD)])
        .await;

    // Assert
    reply.assert_error(400, "invalid_request");
    assert_still_healthy(&app).await;
}

#[tokio::test]
async fn authorization_code_grant_for_a_client_not_registered_for_it_is_unauthorized_client() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let reply = app
        .post_token(&[
            ("grant_type", "authorization_code"),
            ("code", "abc"),
            ("redirect_uri", "https://example.com/cb"),
        ])
        .await;

    // Assert
    reply.assert_error(400, "unauthorized_client");
    assert_still_healthy(&app).await;
}

#[tokio::test]
async fn an_unknown_grant_type_is_unsupported_grant_type() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let reply = app.post_token(&[("grant_type", "foo")]).await;

    // Assert
    reply.assert_error(400, "unsupported_grant_type");
    assert_still_healthy(&app).await;
}

#[tokio::test]
async fn refresh_grant_for_a_password_only_client_is_unauthorized_client() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let reply = app
        .post_token_as(
            NO_REFRESH_CLIENT_ID,
            SHARED_SECRET,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", "whatever.token"),
            ],
        )
        .await;

    // Assert
    reply.assert_error(400, "unauthorized_client");
    assert_still_healthy(&app).await;
}

#[tokio::test]
async fn password_grant_for_a_refresh_only_client_is_unauthorized_client() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let reply = app
        .post_token_as(
            REFRESH_ONLY_CLIENT_ID,
            SHARED_SECRET,
            &[
                ("grant_type", "password"),
                ("username", USER),
                ("password", PASSWORD),
            ],
        )
        .await;

    // Assert
    reply.assert_error(400, "unauthorized_client");
    assert_still_healthy(&app).await;
}

// ---------------------------------------------------------------------------------------------
// Grant parameters
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn password_grant_without_username_is_invalid_request() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let reply = app
        .post_token(&[("grant_type", "password"), ("password", PASSWORD)])
        .await;

    // Assert
    reply.assert_error(400, "invalid_request");
    assert_still_healthy(&app).await;
}

#[tokio::test]
async fn password_grant_without_password_is_invalid_request() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let reply = app
        .post_token(&[("grant_type", "password"), ("username", USER)])
        .await;

    // Assert
    reply.assert_error(400, "invalid_request");
    assert_still_healthy(&app).await;
}

#[tokio::test]
async fn refresh_grant_without_refresh_token_is_invalid_request() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let reply = app.post_token(&[("grant_type", "refresh_token")]).await;

    // Assert
    reply.assert_error(400, "invalid_request");
    assert_still_healthy(&app).await;
}

// ---------------------------------------------------------------------------------------------
// Client authentication
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn no_client_credentials_is_401_invalid_client_with_basic_challenge() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let reply = post_authorized(&app, None, &password_body()).await;

    // Assert
    assert_invalid_client(&reply);
    assert_still_healthy(&app).await;
}

#[tokio::test]
async fn a_wrong_basic_secret_is_401_invalid_client_with_basic_challenge() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let reply = app
        .post_token_as(
            CLIENT_ID,
            "not-the-secret",
            &[
                ("grant_type", "password"),
                ("username", USER),
                ("password", PASSWORD),
            ],
        )
        .await;

    // Assert
    assert_invalid_client(&reply);
    assert_still_healthy(&app).await;
}

#[tokio::test]
async fn an_unknown_client_is_401_invalid_client_with_basic_challenge() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let reply = app
        .post_token_as(
            "no-such-client",
            CLIENT_SECRET,
            &[
                ("grant_type", "password"),
                ("username", USER),
                ("password", PASSWORD),
            ],
        )
        .await;

    // Assert
    assert_invalid_client(&reply);
    assert_still_healthy(&app).await;
}

#[tokio::test]
async fn basic_and_a_body_client_secret_together_are_invalid_request() {
    // Arrange
    let app = spawn_app().await;
    let body = format!(
        "{}&client_id={CLIENT_ID}&client_secret={CLIENT_SECRET}",
        password_body()
    );

    // Act
    let reply = post_authorized(&app, Some(&basic(CLIENT_ID, CLIENT_SECRET)), &body).await;

    // Assert
    reply.assert_error(400, "invalid_request");
    assert_still_healthy(&app).await;
}

#[tokio::test]
async fn basic_and_a_different_body_client_id_are_invalid_request() {
    // Arrange
    let app = spawn_app().await;
    let body = format!("{}&client_id=other-app", password_body());

    // Act
    let reply = post_authorized(&app, Some(&basic(CLIENT_ID, CLIENT_SECRET)), &body).await;

    // Assert
    reply.assert_error(400, "invalid_request");
    assert_still_healthy(&app).await;
}

#[tokio::test]
async fn basic_and_the_same_body_client_id_are_accepted() {
    // Arrange
    let app = spawn_app().await;
    let body = format!("{}&client_id={CLIENT_ID}", password_body());

    // Act
    let reply = post_authorized(&app, Some(&basic(CLIENT_ID, CLIENT_SECRET)), &body).await;

    // Assert
    reply.assert_tokens(ACCESS_TTL, "default");
    assert_still_healthy(&app).await;
}

#[tokio::test]
async fn malformed_basic_credentials_are_invalid_request() {
    // Arrange
    let app = spawn_app().await;
    let malformed = [
        ("scheme alone", "Basic".to_owned()),
        ("not base64", "Basic !!!".to_owned()),
        ("no colon", format!("Basic {}", STANDARD.encode(CLIENT_ID))),
        (
            "not UTF-8",
            format!("Basic {}", STANDARD.encode([0xC3, 0x28, b':', b'x'])),
        ),
    ];

    for (case, authorization) in &malformed {
        // Act
        let reply = post_authorized(&app, Some(authorization), &password_body()).await;

        // Assert
        assert_eq!(reply.status, 400, "{case}: {}", reply.text);
        reply.assert_error(400, "invalid_request");
    }
    assert_still_healthy(&app).await;
}

#[tokio::test]
async fn a_bearer_authorization_is_401_invalid_client() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let reply = post_authorized(&app, Some("Bearer xyz"), &password_body()).await;

    // Assert
    assert_invalid_client(&reply);
    assert_still_healthy(&app).await;
}

#[tokio::test]
async fn basic_credentials_are_form_decoded_after_base64() {
    // Arrange: RFC 6749 §2.3.1 — id and secret are form-urlencoded before base64. The fixture
    // values need no encoding, so encode characters that don't need it: `-` in the id as %2D,
    // the secret's first letter as %XX.
    let app = spawn_app().await;
    let (first, rest) = CLIENT_SECRET.split_at(1);
    let encoded_secret = format!("%{:02X}{rest}", first.as_bytes()[0]);
    let encoded_id = CLIENT_ID.replace('-', "%2D");
    assert_ne!(encoded_id, CLIENT_ID);
    let authorization = basic(&encoded_id, &encoded_secret);

    // Act
    let reply = post_authorized(&app, Some(&authorization), &password_body()).await;

    // Assert
    reply.assert_tokens(ACCESS_TTL, "default");
    assert_still_healthy(&app).await;
}

#[tokio::test]
async fn a_space_in_a_basic_secret_may_be_sent_form_encoded_as_plus() {
    // Arrange: the argon client's secret is "operator chosen"; §2.3.1 encodes the space as `+`.
    let app = spawn_app().await;
    let authorization = basic(ARGON_CLIENT_ID, &ARGON_CLIENT_SECRET.replace(' ', "+"));

    // Act
    let reply = post_authorized(&app, Some(&authorization), &password_body()).await;

    // Assert
    reply.assert_tokens(ACCESS_TTL, "default");
    assert_still_healthy(&app).await;
}

#[tokio::test]
async fn an_operator_chosen_argon2_secret_authenticates_twice_in_a_row() {
    // Arrange
    let app = spawn_app().await;
    let form = [
        ("grant_type", "password"),
        ("username", USER),
        ("password", PASSWORD),
    ];

    // Act: the second request is served from the verification cache.
    let first = app
        .post_token_as(ARGON_CLIENT_ID, ARGON_CLIENT_SECRET, &form)
        .await;
    let second = app
        .post_token_as(ARGON_CLIENT_ID, ARGON_CLIENT_SECRET, &form)
        .await;

    // Assert
    let (first_access, _) = first.assert_tokens(ACCESS_TTL, "default");
    let (second_access, _) = second.assert_tokens(ACCESS_TTL, "default");
    assert_ne!(first_access, second_access);
    assert_still_healthy(&app).await;
}

#[tokio::test]
async fn a_wrong_argon2_secret_is_401_invalid_client_even_after_a_cached_success() {
    // Arrange
    let app = spawn_app().await;
    let form = [
        ("grant_type", "password"),
        ("username", USER),
        ("password", PASSWORD),
    ];
    let warm = app
        .post_token_as(ARGON_CLIENT_ID, ARGON_CLIENT_SECRET, &form)
        .await;
    warm.assert_tokens(ACCESS_TTL, "default");

    // Act
    let reply = app
        .post_token_as(ARGON_CLIENT_ID, "operator chosen!", &form)
        .await;

    // Assert
    assert_invalid_client(&reply);
    assert_still_healthy(&app).await;
}

#[tokio::test]
async fn a_wrong_argon2_secret_is_401_invalid_client() {
    // Arrange
    let app = spawn_app().await;
    let form = [
        ("grant_type", "password"),
        ("username", USER),
        ("password", PASSWORD),
    ];

    // Act
    let reply = app
        .post_token_as(ARGON_CLIENT_ID, "operator chose", &form)
        .await;

    // Assert
    assert_invalid_client(&reply);
    assert_still_healthy(&app).await;
}

// ---------------------------------------------------------------------------------------------
// Methods and paths
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn get_on_token_is_405_with_allow_post() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let reply = Reply::read(app.client.get(app.url("/token")).send().await.unwrap()).await;

    // Assert
    reply.assert_error(405, "invalid_request");
    assert_eq!(reply.header("allow"), Some("POST"));
    assert_still_healthy(&app).await;
}

#[tokio::test]
async fn put_on_token_is_405_with_allow_post() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let response = app
        .client
        .put(app.url("/token"))
        .header(CONTENT_TYPE, FORM)
        .body(password_body())
        .send()
        .await
        .unwrap();
    let reply = Reply::read(response).await;

    // Assert
    reply.assert_error(405, "invalid_request");
    assert_eq!(reply.header("allow"), Some("POST"));
    assert_still_healthy(&app).await;
}

#[tokio::test]
async fn post_on_health_is_405_with_allow_get() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let reply = Reply::read(app.client.post(app.url("/health")).send().await.unwrap()).await;

    // Assert
    reply.assert_error(405, "invalid_request");
    let allow = reply.header("allow").unwrap_or_default();
    assert!(
        allow.split(',').any(|method| method.trim() == "GET"),
        "Allow: {allow}"
    );
    assert_still_healthy(&app).await;
}

#[tokio::test]
async fn an_unknown_path_is_404_not_found_json() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let reply = Reply::read(app.client.get(app.url("/nope")).send().await.unwrap()).await;

    // Assert
    reply.assert_error(404, "not_found");
    assert_still_healthy(&app).await;
}

// ---------------------------------------------------------------------------------------------
// Body size
// ---------------------------------------------------------------------------------------------

/// A valid password-grant body padded with an ignored parameter to exactly `len` bytes.
fn padded_password_body(len: usize) -> String {
    let mut body = format!("{}&pad=", password_body());
    let padding = len - body.len();
    body.push_str(&"x".repeat(padding));
    assert_eq!(body.len(), len);
    body
}

#[tokio::test]
async fn a_body_of_exactly_16_kib_is_accepted() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let reply = post_form(&app, padded_password_body(BODY_LIMIT)).await;

    // Assert
    reply.assert_tokens(ACCESS_TTL, "default");
    assert_still_healthy(&app).await;
}

#[tokio::test]
async fn a_body_over_16_kib_with_content_length_is_413() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let reply = post_form(&app, padded_password_body(20_000)).await;

    // Assert
    reply.assert_error(413, "invalid_request");
    assert_still_healthy(&app).await;
}

#[tokio::test]
async fn a_chunked_body_over_16_kib_is_413() {
    // Arrange: reqwest's streaming bodies need its `stream` feature, which the dev-dependency
    // doesn't enable, so the chunked request is written by hand over HTTP/1.1.
    let app = spawn_app().await;
    let body = padded_password_body(20_000);
    let mut request = format!(
        "POST /token HTTP/1.1\r\nHost: localhost\r\nAuthorization: {}\r\n\
         Content-Type: {FORM}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        basic(CLIENT_ID, CLIENT_SECRET)
    )
    .into_bytes();
    for chunk in body.as_bytes().chunks(1000) {
        request.extend_from_slice(format!("{:X}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");

    // Act
    let response = raw_http1_exchange(&app, &request).await;

    // Assert
    assert!(
        response.status_line.starts_with("HTTP/1.1 413"),
        "{}",
        response.status_line
    );
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(response.header("cache-control"), Some("no-store"));
    assert_eq!(response.header("pragma"), Some("no-cache"));
    let body = response.json();
    assert_eq!(body["error"], "invalid_request", "{body}");
    assert!(body["error_description"].is_string(), "{body}");
    assert_still_healthy(&app).await;
}

// ---------------------------------------------------------------------------------------------
// Malformed HTTP
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn authorization_header_with_a_space_before_the_colon_is_400() {
    // Arrange: the product's historically mis-printed `Authorization :Basic …`. RFC 9112 §5.1:
    // no whitespace is allowed between the field name and the colon; a server must reject it
    // with 400. reqwest can't send it, so the request is written by hand.
    let app = spawn_app().await;
    let body = password_body();
    let request = format!(
        "POST /token HTTP/1.1\r\nHost: localhost\r\nAuthorization :{}\r\n\
         Content-Type: {FORM}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        basic(CLIENT_ID, CLIENT_SECRET),
        body.len()
    );

    // Act
    let response = raw_http1_exchange(&app, request.as_bytes()).await;

    // Assert
    assert!(
        response.status_line.starts_with("HTTP/1.1 400"),
        "{}",
        response.status_line
    );
    assert!(
        response.json().get("access_token").is_none(),
        "no token may be issued: {:?}",
        String::from_utf8_lossy(&response.body)
    );
    assert_still_healthy(&app).await;
}

// ---------------------------------------------------------------------------------------------
// Users and scopes
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn unknown_user_and_wrong_password_get_identical_invalid_grant_answers() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let unknown_user = app
        .post_token(&[
            ("grant_type", "password"),
            ("username", "nobody"),
            ("password", PASSWORD),
        ])
        .await;
    let wrong_password = app
        .post_token(&[
            ("grant_type", "password"),
            ("username", USER),
            ("password", "wrong"),
        ])
        .await;

    // Assert
    unknown_user.assert_error(400, "invalid_grant");
    wrong_password.assert_error(400, "invalid_grant");
    assert_eq!(unknown_user.text, wrong_password.text);
    assert_eq!(unknown_user.body, wrong_password.body);
    assert_still_healthy(&app).await;
}

#[tokio::test]
async fn a_disabled_user_with_the_right_password_is_invalid_grant() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let reply = app
        .post_token(&[
            ("grant_type", "password"),
            ("username", DISABLED_USER),
            ("password", DISABLED_PASSWORD),
        ])
        .await;
    let wrong_password = app
        .post_token(&[
            ("grant_type", "password"),
            ("username", USER),
            ("password", "wrong"),
        ])
        .await;

    // Assert: the same answer as a wrong password, so the account state doesn't leak.
    reply.assert_error(400, "invalid_grant");
    assert_eq!(reply.body, wrong_password.body);
    assert_still_healthy(&app).await;
}

#[tokio::test]
async fn a_scope_the_client_does_not_have_is_invalid_scope() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let reply = app.login(Some("ADMIN")).await;

    // Assert
    reply.assert_error(400, "invalid_scope");
    assert_still_healthy(&app).await;
}

#[tokio::test]
async fn a_scope_with_an_invalid_character_is_invalid_scope() {
    // Arrange: RFC 6749 §3.3 excludes `"` (0x22) from scope tokens.
    let app = spawn_app().await;

    // Act
    let reply = app.login(Some("a\"b")).await;

    // Assert
    reply.assert_error(400, "invalid_scope");
    assert_still_healthy(&app).await;
}

// ---------------------------------------------------------------------------------------------
// Hostile input
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn two_thousand_unknown_parameters_are_ignored() {
    // Arrange: RFC 6749 §3.2 — unrecognized parameters must be ignored.
    let app = spawn_app().await;
    let mut body = password_body();
    for i in 1..=2000 {
        body.push_str(&format!("&a{i}=1"));
    }
    assert!(body.len() <= BODY_LIMIT, "{}", body.len());

    // Act
    let reply = post_form(&app, body).await;

    // Assert
    reply.assert_tokens(ACCESS_TTL, "default");
    assert_still_healthy(&app).await;
}

#[tokio::test]
async fn a_nul_byte_in_the_username_is_invalid_request() {
    // Arrange
    let app = spawn_app().await;
    let body = format!("grant_type=password&username={USER}%00&password={PASSWORD}");

    // Act
    let reply = post_form(&app, body).await;

    // Assert: no parameter may hold a NUL (see nul_bytes.rs), whatever the backend.
    reply.assert_error(400, "invalid_request");
    assert_still_healthy(&app).await;
}

#[tokio::test]
async fn a_100_kb_header_is_refused_with_431_or_a_closed_connection() {
    // Arrange
    let app = spawn_app().await;
    let huge = "x".repeat(100 * 1024);

    // Act
    let outcome = app
        .client
        .post(app.url("/token"))
        .header(AUTHORIZATION, basic(CLIENT_ID, CLIENT_SECRET))
        .header(CONTENT_TYPE, FORM)
        .header("x-huge", huge)
        .body(password_body())
        .send()
        .await;

    // Assert
    if let Ok(response) = outcome {
        let reply = Reply::read(response).await;
        assert_eq!(reply.status, 431, "{}", reply.text);
    }
    assert_still_healthy(&app).await;
}

#[tokio::test]
async fn a_100_kb_header_over_http1_is_refused_with_431_or_a_closed_connection() {
    // Arrange
    let app = spawn_app().await;
    let pem = std::fs::read(&app.settings.tls.cert).unwrap();
    let http1 = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .tls_built_in_root_certs(false)
        .http1_only()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let huge = "x".repeat(100 * 1024);

    // Act
    let outcome = http1
        .post(app.url("/token"))
        .header(AUTHORIZATION, basic(CLIENT_ID, CLIENT_SECRET))
        .header(CONTENT_TYPE, FORM)
        .header("x-huge", huge)
        .body(password_body())
        .send()
        .await;

    // Assert
    if let Ok(response) = outcome {
        let reply = Reply::read(response).await;
        assert_eq!(reply.status, 431, "{}", reply.text);
    }
    assert_still_healthy(&app).await;
}
