//! A NUL byte in any parameter — form names and values, Basic credentials — is
//! `invalid_request` on every backend and endpoint: no protocol value holds one, and
//! PostgreSQL text columns refuse them (a 500 before this rule).

use std::sync::Arc;

use tokengate::clock::ManualClock;

use crate::helpers::*;

/// What one hostile request sends.
struct Case {
    what: &'static str,
    path: &'static str,
    client_id: &'static str,
    secret: &'static str,
    form: Vec<(&'static str, &'static str)>,
}

fn login(username: &'static str, password: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![
        ("grant_type", "password"),
        ("username", username),
        ("password", password),
    ]
}

fn cases() -> Vec<Case> {
    let token = |what, client_id, secret, form| Case {
        what,
        path: "/token",
        client_id,
        secret,
        form,
    };
    vec![
        token(
            "the user name",
            CLIENT_ID,
            CLIENT_SECRET,
            login("ali\0ce", PASSWORD),
        ),
        token(
            "a new user name",
            CLIENT_ID,
            CLIENT_SECRET,
            login("\0", PASSWORD),
        ),
        token(
            "the password",
            CLIENT_ID,
            CLIENT_SECRET,
            login(USER, "alice-\0password"),
        ),
        token(
            "the scope",
            CLIENT_ID,
            CLIENT_SECRET,
            vec![
                ("grant_type", "password"),
                ("username", USER),
                ("password", PASSWORD),
                ("scope", "default\0"),
            ],
        ),
        token(
            "the grant type",
            CLIENT_ID,
            CLIENT_SECRET,
            vec![("grant_type", "password\0")],
        ),
        token(
            "a parameter name",
            CLIENT_ID,
            CLIENT_SECRET,
            vec![
                ("grant_type", "password"),
                ("username", USER),
                ("password", PASSWORD),
                ("x\0", "1"),
            ],
        ),
        token(
            "a refresh token",
            CLIENT_ID,
            CLIENT_SECRET,
            vec![
                ("grant_type", "refresh_token"),
                ("refresh_token", "0191b7a2-0000-7000-8000-000000000000.\0"),
            ],
        ),
        token(
            "the Basic client id",
            "test-app\0",
            CLIENT_SECRET,
            login(USER, PASSWORD),
        ),
        token(
            "a Basic client id never seen",
            "\0\0",
            CLIENT_SECRET,
            login(USER, PASSWORD),
        ),
        token(
            "the Basic secret",
            CLIENT_ID,
            "Zm9v\0",
            login(USER, PASSWORD),
        ),
        Case {
            what: "a revoked token",
            path: "/revoke",
            client_id: CLIENT_ID,
            secret: CLIENT_SECRET,
            form: vec![("token", "abc\0def")],
        },
        Case {
            what: "an introspected token",
            path: "/introspect",
            client_id: RESOURCE_SERVER_ID,
            secret: SHARED_SECRET,
            form: vec![("token", "\0")],
        },
        Case {
            what: "the Basic client id on /introspect",
            path: "/introspect",
            client_id: "resource-server\0",
            secret: SHARED_SECRET,
            form: vec![("token", "x")],
        },
    ]
}

async fn assert_nul_bytes_are_invalid_requests(app: &TestApp) {
    for case in cases() {
        let reply = app
            .post_form_as(case.path, case.client_id, case.secret, &case.form)
            .await;
        assert_eq!(
            (reply.status, reply.body["error"].as_str()),
            (400, Some("invalid_request")),
            "a NUL in {}: {}",
            case.what,
            reply.text
        );
        assert_eq!(
            reply.header("cache-control"),
            Some("no-store"),
            "{}",
            case.what
        );
    }
    // A client id in the body (client_secret_post) is a form value like any other.
    let reply = app
        .client
        .post(app.url("/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "service-app\0"),
            ("client_secret", "x"),
        ])
        .send()
        .await
        .unwrap();
    let reply = Reply::read(reply).await;
    reply.assert_error(400, "invalid_request");

    app.login(None).await.assert_tokens(3600, "default");
    assert_eq!(app.get("/health").await.status, 200);
}

#[tokio::test]
async fn a_nul_byte_in_any_parameter_is_invalid_request_on_sqlite() {
    let app = spawn_app().await;
    assert_nul_bytes_are_invalid_requests(&app).await;
}

#[tokio::test]
async fn a_nul_byte_in_any_parameter_is_invalid_request_on_postgres() {
    let Some(database) =
        TestDatabase::create("a_nul_byte_in_any_parameter_is_invalid_request_on_postgres").await
    else {
        return;
    };
    // Failed logins are counted per user name in a text column, where a NUL gave a 500.
    let app = postgres_node(&database, Arc::new(ManualClock::starting_now()), |_| {}).await;
    assert_nul_bytes_are_invalid_requests(&app).await;
}
