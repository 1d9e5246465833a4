//! The consent screen of clients with `require_consent = true` (third-party apps), and the
//! login pages' branding (`[login] title`, `logo`, `scope_descriptions`), over real HTTPS with
//! cookies carried by hand (`authorize::Browser`).

use std::collections::HashMap;

use crate::authorization_code::VERIFIER;
use crate::authorize::{
    assert_error_redirect, assert_page_headers, authorize_path, hidden_fields, location, Browser,
};
use crate::helpers::*;

/// `/authorize?…` for the third-party client; `change` as in `authorize_path`.
fn third_party_path(change: &[(&str, &str)]) -> String {
    let mut all = vec![
        ("client_id", THIRD_PARTY_CLIENT_ID),
        ("redirect_uri", THIRD_PARTY_REDIRECT_URI),
        ("scope", "PRODUCTION SANDBOX"),
    ];
    all.extend_from_slice(change);
    authorize_path(&all)
}

/// An app whose consent screen describes PRODUCTION.
async fn spawn_consent_app() -> TestApp {
    spawn_app_with(|settings| {
        settings.login.scope_descriptions.insert(
            "PRODUCTION".to_owned(),
            "Read and change your production data".to_owned(),
        );
    })
    .await
}

/// Answers the consent screen `page` with `decision` (`allow`, `deny`, …).
async fn answer(browser: &mut Browser, app: &TestApp, page: &Reply, decision: &str) -> Reply {
    let mut form = hidden_fields(&page.text);
    form.push(("decision".into(), decision.into()));
    browser.post_to(app, "/authorize/consent", &form).await
}

/// Signs alice in on the login page of `path`: the consent screen comes back.
async fn sign_in_to_consent(browser: &mut Browser, app: &TestApp, path: &str) -> Reply {
    let page = browser.get(app, path).await;
    assert!(page.text.contains("type=\"password\""), "{}", page.text);
    let consent = browser.sign_in(app, &page, USER, PASSWORD).await;
    assert_is_consent_screen(&consent);
    consent
}

fn assert_is_consent_screen(reply: &Reply) {
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert!(reply.text.contains("Allow access?"), "{}", reply.text);
    assert!(
        reply.text.contains("action=\"/authorize/consent\""),
        "{}",
        reply.text
    );
}

/// The code of a redirect to the third-party client, with its state and `iss`.
fn code_of(app: &TestApp, reply: &Reply) -> String {
    assert_page_headers(reply);
    let (base, params) = location(reply);
    assert_eq!(base, THIRD_PARTY_REDIRECT_URI);
    assert_eq!(params["state"], "xyz");
    assert_eq!(params["iss"], app.settings_issuer());
    params["code"].clone()
}

async fn exchange(app: &TestApp, code: &str) -> Reply {
    app.post_token_without_secret(&[
        ("grant_type", "authorization_code"),
        ("client_id", THIRD_PARTY_CLIENT_ID),
        ("code", code),
        ("redirect_uri", THIRD_PARTY_REDIRECT_URI),
        ("code_verifier", VERIFIER),
    ])
    .await
}

#[tokio::test]
async fn the_consent_screen_lists_the_scopes_and_allow_sends_the_code() {
    // Arrange
    let app = spawn_consent_app().await;
    let mut browser = Browser::default();

    // Act
    let consent = sign_in_to_consent(&mut browser, &app, &third_party_path(&[])).await;
    let allowed = answer(&mut browser, &app, &consent, "allow").await;

    // Assert: the screen names the app, the user and each scope (described, or by name).
    assert_page_headers(&consent);
    assert!(consent.text.contains(THIRD_PARTY_NAME), "{}", consent.text);
    assert!(consent.text.contains("<strong>alice</strong>"));
    assert!(consent
        .text
        .contains("<li>Read and change your production data<code>PRODUCTION</code></li>"));
    assert!(
        consent.text.contains("<li>SANDBOX</li>"),
        "{}",
        consent.text
    );
    assert!(consent.text.contains("name=\"csrf_token\""));
    // Signed in: the session cookie comes with the consent screen.
    assert!(consent
        .headers
        .get_all("set-cookie")
        .iter()
        .any(|cookie| cookie
            .to_str()
            .unwrap()
            .starts_with("__Host-tokengate-session=")));
    // Assert: the code, and tokens for alice with both scopes.
    let code = code_of(&app, &allowed);
    let tokens = exchange(&app, &code).await;
    tokens.assert_tokens(3600, "PRODUCTION SANDBOX");
    let given = wait_for_event(&audit_file(app.home.path()), "consent_given", |_| true).await;
    assert_eq!(given["client_id"], THIRD_PARTY_CLIENT_ID);
    assert_eq!(given["subject"], USER);
    assert_eq!(given["scope"], "PRODUCTION SANDBOX");
    let issued = wait_for_event(
        &audit_file(app.home.path()),
        "authorization_code_issued",
        |event| event["login"] == "consent",
    )
    .await;
    assert_eq!(issued["client_id"], THIRD_PARTY_CLIENT_ID);
}

#[tokio::test]
async fn a_consent_is_remembered_for_the_scopes_given_and_asked_again_for_more() {
    // Arrange: alice allowed PRODUCTION only.
    let app = spawn_consent_app().await;
    let mut browser = Browser::default();
    let consent = sign_in_to_consent(
        &mut browser,
        &app,
        &third_party_path(&[("scope", "PRODUCTION")]),
    )
    .await;
    code_of(&app, &answer(&mut browser, &app, &consent, "allow").await);

    // Act + Assert: the same scope again goes straight back with a code.
    let again = browser
        .get(&app, &third_party_path(&[("scope", "PRODUCTION")]))
        .await;
    let code = code_of(&app, &again);
    exchange(&app, &code)
        .await
        .assert_tokens(3600, "PRODUCTION");

    // Act + Assert: a scope not allowed yet asks again, for what is asked now.
    let more = browser.get(&app, &third_party_path(&[])).await;
    assert_is_consent_screen(&more);
    assert!(more.text.contains("<li>SANDBOX</li>"));
    code_of(&app, &answer(&mut browser, &app, &more, "allow").await);

    // Both answers count together: either scope alone, or both, need no question.
    for scope in ["SANDBOX", "PRODUCTION", "SANDBOX PRODUCTION"] {
        let reply = browser
            .get(&app, &third_party_path(&[("scope", scope)]))
            .await;
        code_of(&app, &reply);
    }
}

#[tokio::test]
async fn deny_sends_access_denied_and_is_not_remembered() {
    // Arrange
    let app = spawn_consent_app().await;
    let mut browser = Browser::default();
    let consent = sign_in_to_consent(&mut browser, &app, &third_party_path(&[])).await;

    // Act
    let denied = answer(&mut browser, &app, &consent, "deny").await;
    let next = browser.get(&app, &third_party_path(&[])).await;

    // Assert
    assert_error_redirect(&app, &denied, THIRD_PARTY_REDIRECT_URI, "access_denied");
    let event = wait_for_event(&audit_file(app.home.path()), "consent_denied", |_| true).await;
    assert_eq!(event["outcome"], "failure");
    assert_eq!(event["subject"], USER);
    // Still signed in, and asked again.
    assert_is_consent_screen(&next);
}

#[tokio::test]
async fn revoking_the_users_tokens_forgets_their_consent() {
    // Arrange: alice allowed the app.
    let app = spawn_consent_app().await;
    let mut browser = Browser::default();
    let consent = sign_in_to_consent(&mut browser, &app, &third_party_path(&[])).await;
    code_of(&app, &answer(&mut browser, &app, &consent, "allow").await);
    app.clock.advance_secs(1);

    // Act: what `tokengate user revoke-tokens` writes.
    use tokengate::clock::Clock as _;
    app.store
        .revoke_subject(
            tokengate::store::SubjectKind::User,
            USER,
            app.clock.now_ms(),
            app.clock_now(),
        )
        .await
        .unwrap();

    // Assert: the session is over, and after signing in the question comes back.
    sign_in_to_consent(&mut browser, &app, &third_party_path(&[])).await;
}

#[tokio::test]
async fn prompt_none_without_consent_answers_consent_required() {
    // Arrange: alice is signed in (through another app) but never answered this one.
    let app = spawn_consent_app().await;
    let mut browser = Browser::default();
    let page = browser.get(&app, &authorize_path(&[])).await;
    browser.sign_in(&app, &page, USER, PASSWORD).await;

    // Act
    let reply = browser
        .get(&app, &third_party_path(&[("prompt", "none")]))
        .await;

    // Assert
    assert_error_redirect(&app, &reply, THIRD_PARTY_REDIRECT_URI, "consent_required");
}

#[tokio::test]
async fn prompt_consent_asks_again_even_after_a_login_on_the_form() {
    // Arrange: alice allowed the app and then signed out.
    let app = spawn_consent_app().await;
    let mut browser = Browser::default();
    let consent = sign_in_to_consent(&mut browser, &app, &third_party_path(&[])).await;
    code_of(&app, &answer(&mut browser, &app, &consent, "allow").await);

    // Act + Assert: with a session.
    let with_session = browser
        .get(&app, &third_party_path(&[("prompt", "consent")]))
        .await;
    assert_is_consent_screen(&with_session);
    // Act + Assert: after a login on the form (prompt rides along in the form).
    browser.get(&app, "/logout").await;
    sign_in_to_consent(
        &mut browser,
        &app,
        &third_party_path(&[("prompt", "consent")]),
    )
    .await;
}

#[tokio::test]
async fn clients_without_require_consent_never_show_the_screen() {
    let app = spawn_consent_app().await;
    let mut browser = Browser::default();
    let page = browser.get(&app, &authorize_path(&[])).await;

    let signed_in = browser.sign_in(&app, &page, USER, PASSWORD).await;

    let (base, params) = location(&signed_in);
    assert_eq!(base, PUBLIC_REDIRECT_URI);
    assert!(params.contains_key("code"));
}

#[tokio::test]
async fn a_consent_form_without_the_csrf_value_or_a_session_gives_no_code() {
    // Arrange
    let app = spawn_consent_app().await;
    let mut browser = Browser::default();
    let consent = sign_in_to_consent(&mut browser, &app, &third_party_path(&[])).await;
    let allow = |csrf: Option<&str>| {
        let mut form: Vec<(String, String)> = hidden_fields(&consent.text)
            .into_iter()
            .filter(|(name, _)| name != "csrf_token")
            .collect();
        if let Some(csrf) = csrf {
            form.push(("csrf_token".into(), csrf.into()));
        }
        form.push(("decision".into(), "allow".into()));
        form
    };

    // Act + Assert: a wrong or missing CSRF value is refused with the screen again.
    for csrf in [Some("x".repeat(43)), None] {
        let reply = browser
            .post_to(&app, "/authorize/consent", &allow(csrf.as_deref()))
            .await;
        assert_eq!(reply.status, 403, "{}", reply.text);
        assert!(reply.text.contains("This form has expired"));
        assert!(reply.header("location").is_none());
    }
    // Act + Assert: another browser (no session, its own CSRF cookie) gets the login form.
    let mut stranger = Browser::default();
    let stranger_page = stranger.get(&app, &third_party_path(&[])).await;
    let mut form = allow(None);
    let csrf = hidden_fields(&stranger_page.text)
        .into_iter()
        .find(|(name, _)| name == "csrf_token")
        .unwrap();
    form.push(csrf);
    let reply = stranger.post_to(&app, "/authorize/consent", &form).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert!(reply.text.contains("Your session has ended"));
    assert!(reply.text.contains("type=\"password\""));
    // Act + Assert: neither allow nor deny.
    let reply = answer(&mut browser, &app, &consent, "maybe").await;
    assert_eq!(reply.status, 400, "{}", reply.text);
    assert_is_consent_screen(&Reply {
        status: 200,
        ..reply
    });
    // The screen still works after all that.
    code_of(&app, &answer(&mut browser, &app, &consent, "allow").await);
}

#[tokio::test]
async fn a_screen_shown_to_another_user_than_the_sessions_asks_again() {
    // Arrange: the screen was shown to alice; then the browser's session became someone
    // else's (a sign-in in another tab).
    let app = spawn_consent_app().await;
    let mut browser = Browser::default();
    let consent = sign_in_to_consent(&mut browser, &app, &third_party_path(&[])).await;
    let mut form: Vec<(String, String)> = hidden_fields(&consent.text)
        .into_iter()
        .map(|(name, value)| {
            let value = if name == "consent_user" {
                "bob".to_owned()
            } else {
                value
            };
            (name, value)
        })
        .collect();
    form.push(("decision".into(), "allow".into()));

    // Act
    let reply = browser.post_to(&app, "/authorize/consent", &form).await;

    // Assert
    assert_is_consent_screen(&reply);
    assert!(reply.text.contains("signed in as another user"));
    assert!(reply.text.contains("<strong>alice</strong>"));
}

#[tokio::test]
async fn the_title_and_the_logo_brand_every_page() {
    // Arrange
    let home = std::sync::Arc::new(tempfile::tempdir().unwrap());
    write_fixture_stores(home.path());
    let png: &[u8] = b"\x89PNG\r\n\x1a\n not really a picture";
    std::fs::write(home.path().join("config/logo.png"), png).unwrap();
    let mut settings = test_settings(home.path());
    settings.login.title = "Example Corp <ID>".to_owned();
    settings.login.logo = Some(tokengate::config::LogoFile {
        path: home.path().join("config/logo.png"),
        content_type: "image/png",
    });
    let app = spawn_in(
        home,
        settings,
        std::sync::Arc::new(tokengate::clock::ManualClock::starting_now()),
    )
    .await;

    // Act
    let page = app.get(&authorize_path(&[])).await;
    let logo = app
        .client
        .get(app.url("/authorize/logo"))
        .send()
        .await
        .unwrap();

    // Assert: escaped, in the window title and at the top of the card.
    assert!(
        page.text
            .contains("<title>Sign in to Example Notes · Example Corp &#60;ID&#62;</title>")
            || page
                .text
                .contains("<title>Sign in to Example Notes · Example Corp &lt;ID&gt;</title>"),
        "{}",
        page.text
    );
    assert!(page.text.contains("<img src=\"/authorize/logo\""));
    assert!(page
        .header("content-security-policy")
        .unwrap()
        .contains("img-src 'self'"));
    assert_eq!(logo.status(), 200);
    let headers: HashMap<String, String> = logo
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()))
        .collect();
    assert_eq!(headers["content-type"], "image/png");
    assert!(headers["content-security-policy"].contains("sandbox"));
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(logo.bytes().await.unwrap().as_ref(), png);
}

#[tokio::test]
async fn without_a_logo_the_page_has_none_and_its_address_is_404() {
    let app = spawn_app().await;

    let page = app.get(&authorize_path(&[])).await;
    let logo = app.get("/authorize/logo").await;

    assert!(page
        .text
        .contains("<title>Sign in to Example Notes · tokengate</title>"));
    assert!(!page.text.contains("<img"));
    assert_eq!(logo.status, 404);
}

#[tokio::test]
async fn prompt_values_combine_and_unknown_ones_are_ignored() {
    // Arrange: alice allowed the app and is signed in.
    let app = spawn_consent_app().await;
    let mut browser = Browser::default();
    let consent = sign_in_to_consent(&mut browser, &app, &third_party_path(&[])).await;
    code_of(&app, &answer(&mut browser, &app, &consent, "allow").await);

    // Act + Assert: `select_account` is not acted on: the session answers.
    let select = browser
        .get(&app, &third_party_path(&[("prompt", "select_account")]))
        .await;
    code_of(&app, &select);
    // Act + Assert: `none` with another value is a contradiction.
    let contradiction = browser
        .get(&app, &third_party_path(&[("prompt", "none login")]))
        .await;
    assert_error_redirect(
        &app,
        &contradiction,
        THIRD_PARTY_REDIRECT_URI,
        "invalid_request",
    );
    // Act + Assert: `login consent`: the form despite the session, then the screen despite the
    // remembered answer.
    sign_in_to_consent(
        &mut browser,
        &app,
        &third_party_path(&[("prompt", "login consent")]),
    )
    .await;
}

#[tokio::test]
async fn a_session_store_that_fails_is_not_taken_for_a_signed_out_user() {
    // Arrange: alice is signed in; then the sessions table cannot be read.
    let app = spawn_consent_app().await;
    let mut browser = Browser::default();
    let page = browser.get(&app, &authorize_path(&[])).await;
    browser.sign_in(&app, &page, USER, PASSWORD).await;
    let tokengate::config::TokenStoreSettings::Sqlite { path, .. } = &app.settings.stores.tokens
    else {
        panic!("the test config uses SQLite")
    };
    let database = rusqlite::Connection::open(path).unwrap();
    database
        .execute_batch("ALTER TABLE login_sessions RENAME TO login_sessions_gone")
        .unwrap();

    // Act
    let reply = browser
        .get(&app, &authorize_path(&[("prompt", "none")]))
        .await;

    // Assert: the app is told to try again, not that the user is signed out.
    let (_, params) = location(&reply);
    assert_eq!(params["error"], "temporarily_unavailable", "{params:?}");
}
