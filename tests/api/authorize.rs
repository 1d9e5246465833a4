//! `GET /authorize`, the hosted login page and `GET /logout` over real HTTPS, as a browser
//! would use them (cookies carried by hand, so their attributes can be checked): RFC 6749
//! §4.1.1–4.1.2, RFC 7636, RFC 9207 `iss`, RFC 8252 §7.3 loopback ports, RFC 9700 §4.1.3 exact
//! matching, and the page's CSRF value, headers and login session.

use std::collections::HashMap;
use std::time::Duration;

use crate::authorization_code::{CHALLENGE, VERIFIER};
use crate::helpers::*;

/// A browser: the cookies it was given, sent back on every request.
#[derive(Default)]
pub(crate) struct Browser {
    cookies: HashMap<String, String>,
    /// Sent as `X-Forwarded-For` (the client's address when 127.0.0.1 is a trusted proxy).
    forwarded_for: Option<String>,
}

impl Browser {
    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn keep_cookies(&mut self, reply: &Reply) {
        for set in reply.headers.get_all("set-cookie") {
            let set = set.to_str().unwrap();
            let (pair, _) = set.split_once(';').unwrap_or((set, ""));
            let (name, value) = pair.split_once('=').unwrap();
            if set.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
    }

    /// A browser at `address` (behind the tests' trusted proxy).
    fn at(address: &str) -> Self {
        Self {
            forwarded_for: Some(address.to_owned()),
            ..Self::default()
        }
    }

    pub(crate) async fn get(&mut self, app: &TestApp, path_and_query: &str) -> Reply {
        let mut request = app.client.get(app.url(path_and_query));
        if let Some(address) = &self.forwarded_for {
            request = request.header("x-forwarded-for", address);
        }
        if !self.cookies.is_empty() {
            request = request.header("cookie", self.cookie_header());
        }
        let reply = Reply::read(request.send().await.unwrap()).await;
        self.keep_cookies(&reply);
        reply
    }

    async fn post(&mut self, app: &TestApp, form: &[(String, String)]) -> Reply {
        self.post_to(app, "/authorize", form).await
    }

    pub(crate) async fn post_to(
        &mut self,
        app: &TestApp,
        path: &str,
        form: &[(String, String)],
    ) -> Reply {
        let mut request = app.client.post(app.url(path)).form(form);
        if let Some(address) = &self.forwarded_for {
            request = request.header("x-forwarded-for", address);
        }
        if !self.cookies.is_empty() {
            request = request.header("cookie", self.cookie_header());
        }
        let reply = Reply::read(request.send().await.unwrap()).await;
        self.keep_cookies(&reply);
        reply
    }

    /// Fills in the login form of `page` and submits it.
    pub(crate) async fn sign_in(
        &mut self,
        app: &TestApp,
        page: &Reply,
        user: &str,
        password: &str,
    ) -> Reply {
        let mut form = hidden_fields(&page.text);
        form.push(("username".into(), user.into()));
        form.push(("password".into(), password.into()));
        self.post(app, &form).await
    }
}

/// A lockout after `max_failures` from one address (`per_user` from all; 0: no such limit), with
/// a five-minute window and lock.
fn lockout(max_failures: u32, per_user: u32) -> Option<tokengate::store::LockoutPolicy> {
    Some(tokengate::store::LockoutPolicy {
        max_failures,
        max_failures_per_user: per_user,
        window_secs: 300,
        lock_secs: 300,
    })
}

/// `/authorize?…` for the public client with PKCE, state `xyz` and scope PRODUCTION; `change`
/// replaces (or with an empty value removes) parameters.
pub(crate) fn authorize_path(change: &[(&str, &str)]) -> String {
    let mut params: Vec<(&str, &str)> = vec![
        ("response_type", "code"),
        ("client_id", PUBLIC_CLIENT_ID),
        ("redirect_uri", PUBLIC_REDIRECT_URI),
        ("state", "xyz"),
        ("scope", "PRODUCTION"),
        ("code_challenge", CHALLENGE),
        ("code_challenge_method", "S256"),
    ];
    for (name, value) in change {
        params.retain(|(n, _)| n != name);
        if !value.is_empty() {
            params.push((name, value));
        }
    }
    let query = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    format!("/authorize?{query}")
}

/// The hidden inputs of a login page, unescaped.
pub(crate) fn hidden_fields(html: &str) -> Vec<(String, String)> {
    html.split("<input type=\"hidden\" ")
        .skip(1)
        .map(|input| {
            let attribute = |name: &str| {
                let start = input.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
                let end = start + input[start..].find('"').unwrap();
                unescape(&input[start..end])
            };
            (attribute("name"), attribute("value"))
        })
        .collect()
}

/// HTML character references as askama writes them (numeric) or as named ones.
pub(crate) fn unescape(text: &str) -> String {
    text.replace("&#34;", "\"")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#60;", "<")
        .replace("&lt;", "<")
        .replace("&#62;", ">")
        .replace("&gt;", ">")
        .replace("&#38;", "&")
        .replace("&amp;", "&")
}

/// The `Location` of a redirect and its query parameters.
pub(crate) fn location(reply: &Reply) -> (String, HashMap<String, String>) {
    assert_eq!(reply.status, 303, "not a redirect: {}", reply.text);
    let location = reply.header("location").unwrap();
    let (base, query) = location.split_once('?').unwrap();
    let params = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    (base.to_owned(), params)
}

fn set_cookie<'a>(reply: &'a Reply, name: &str) -> &'a str {
    reply
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|value| value.to_str().unwrap())
        .find(|value| value.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} cookie: {:?}", reply.headers))
}

/// The headers every page and redirect of the login flow carries.
pub(crate) fn assert_page_headers(reply: &Reply) {
    let csp = reply.header("content-security-policy").unwrap();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!csp.contains("script-src"), "{csp}");
    assert_eq!(reply.header("x-frame-options"), Some("DENY"));
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    assert_eq!(reply.header("referrer-policy"), Some("no-referrer"));
}

/// The redirect's error answer (RFC 6749 §4.1.2.1 with RFC 9207 `iss`).
pub(crate) fn assert_error_redirect(app: &TestApp, reply: &Reply, redirect_uri: &str, error: &str) {
    assert_page_headers(reply);
    let (base, params) = location(reply);
    assert_eq!(base, redirect_uri);
    assert_eq!(params["error"], error, "{params:?}");
    assert!(!params["error_description"].is_empty());
    assert_eq!(params["state"], "xyz");
    assert_eq!(params["iss"], app.settings_issuer());
    assert!(!params.contains_key("code"));
}

impl TestApp {
    pub(crate) fn settings_issuer(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }
}

/// The public client's exchange of a code from the login page, with its PKCE verifier.
async fn exchange(app: &TestApp, code: &str, redirect_uri: &str) -> Reply {
    app.public_code_exchange(code, redirect_uri, VERIFIER).await
}

#[tokio::test]
async fn the_login_page_then_the_code_then_the_tokens() {
    // Arrange
    let app = spawn_app().await;
    let mut browser = Browser::default();

    // Act
    let page = browser.get(&app, &authorize_path(&[])).await;
    let signed_in = browser.sign_in(&app, &page, USER, PASSWORD).await;

    // Assert: the page.
    assert_eq!(page.status, 200, "{}", page.text);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_page_headers(&page);
    assert!(
        page.text
            .contains("to continue to <strong>Example Notes</strong>"),
        "the client's name: {}",
        page.text
    );
    assert!(page.text.contains("name=\"username\""));
    assert!(page.text.contains("type=\"password\""));
    assert!(!page.text.contains("<script"), "no JavaScript");
    let csrf = set_cookie(&page, "__Host-tokengate-csrf");
    for attribute in ["Path=/", "Secure", "HttpOnly", "SameSite=Lax"] {
        assert!(csrf.contains(attribute), "{csrf}");
    }
    assert!(!csrf.contains("Domain"), "{csrf}");
    // Assert: the answer.
    assert_page_headers(&signed_in);
    let (base, params) = location(&signed_in);
    assert_eq!(base, PUBLIC_REDIRECT_URI);
    assert_eq!(params["state"], "xyz");
    assert_eq!(params["iss"], app.settings_issuer());
    assert_eq!(params["code"].len(), 43, "256 bits, base64url");
    let session = set_cookie(&signed_in, "__Host-tokengate-session");
    for attribute in [
        "Path=/",
        "Secure",
        "HttpOnly",
        "SameSite=Lax",
        "Max-Age=28800",
    ] {
        assert!(session.contains(attribute), "{session}");
    }
    let issued = wait_for_event(
        &audit_file(app.home.path()),
        "authorization_code_issued",
        |_| true,
    )
    .await;
    assert_eq!(issued["client_id"], PUBLIC_CLIENT_ID);
    assert_eq!(issued["subject"], USER);
    assert_eq!(issued["login"], "form");
    assert_eq!(issued["scope"], "PRODUCTION");
    // Assert: the code buys tokens for alice, once.
    let tokens = exchange(&app, &params["code"], PUBLIC_REDIRECT_URI).await;
    let (access, _) = tokens.assert_tokens(3600, "PRODUCTION");
    assert_eq!(app.introspect(&access).await.body["username"], USER);
    exchange(&app, &params["code"], PUBLIC_REDIRECT_URI)
        .await
        .assert_error(400, "invalid_grant");
}

#[tokio::test]
async fn a_login_session_skips_the_form_until_logout() {
    // Arrange
    let app = spawn_app().await;
    let mut browser = Browser::default();
    let page = browser.get(&app, &authorize_path(&[])).await;
    browser.sign_in(&app, &page, USER, PASSWORD).await;

    // Act
    let again = browser.get(&app, &authorize_path(&[])).await;
    let forced = browser
        .get(&app, &authorize_path(&[("prompt", "login")]))
        .await;
    let silent = browser
        .get(&app, &authorize_path(&[("prompt", "none")]))
        .await;
    let logout = browser.get(&app, "/logout").await;
    let after_logout = browser.get(&app, &authorize_path(&[])).await;

    // Assert
    let (_, params) = location(&again);
    exchange(&app, &params["code"], PUBLIC_REDIRECT_URI)
        .await
        .assert_tokens(3600, "PRODUCTION");
    assert_eq!(forced.status, 200, "prompt=login shows the form");
    assert!(forced.text.contains("type=\"password\""));
    let (_, params) = location(&silent);
    assert!(params.contains_key("code"), "{params:?}");
    assert_eq!(logout.status, 200);
    assert_page_headers(&logout);
    assert!(set_cookie(&logout, "__Host-tokengate-session").contains("Max-Age=0"));
    assert_eq!(after_logout.status, 200, "{}", after_logout.text);
    assert!(after_logout.text.contains("type=\"password\""));
}

#[tokio::test]
async fn prompt_none_without_a_session_answers_login_required() {
    // Arrange
    let app = spawn_app().await;
    let mut browser = Browser::default();

    // Act
    let reply = browser
        .get(&app, &authorize_path(&[("prompt", "none")]))
        .await;

    // Assert
    assert_error_redirect(&app, &reply, PUBLIC_REDIRECT_URI, "login_required");
}

#[tokio::test]
async fn an_unknown_client_or_redirect_uri_gets_an_error_page_and_no_redirect() {
    // Arrange
    let app = spawn_app().await;
    let mut browser = Browser::default();

    // Act
    let unknown_client = browser
        .get(&app, &authorize_path(&[("client_id", "nobody")]))
        .await;
    let unregistered = browser
        .get(
            &app,
            &authorize_path(&[("redirect_uri", "https://evil.example/cb")]),
        )
        .await;
    // Exact matching: a registered URI with anything added is another URI.
    let extended = browser
        .get(
            &app,
            &authorize_path(&[("redirect_uri", "com.example.app:/callback/x")]),
        )
        .await;
    let missing_with_several = browser
        .get(&app, &authorize_path(&[("redirect_uri", "")]))
        .await;
    let repeated = browser
        .get(&app, &format!("{}&state=again", authorize_path(&[])))
        .await;

    // Assert
    for reply in [
        &unknown_client,
        &unregistered,
        &extended,
        &missing_with_several,
        &repeated,
    ] {
        assert_eq!(reply.status, 400, "{}", reply.text);
        assert!(reply.header("location").is_none());
        assert_eq!(
            reply.header("content-type"),
            Some("text/html; charset=utf-8")
        );
        assert_page_headers(reply);
        assert!(!reply.text.contains("type=\"password\""));
    }
    assert!(unknown_client.text.contains("not registered"));
    assert!(unregistered.text.contains("redirect URI"));
}

#[tokio::test]
async fn other_errors_are_redirected_with_state_and_iss() {
    // Arrange
    let app = spawn_app().await;
    let mut browser = Browser::default();

    // Act and assert
    for (change, error) in [
        (
            vec![("response_type", "token")],
            "unsupported_response_type",
        ),
        (vec![("response_type", "")], "invalid_request"),
        (vec![("code_challenge", "")], "invalid_request"),
        (vec![("code_challenge_method", "plain")], "invalid_request"),
        (vec![("code_challenge_method", "")], "invalid_request"),
        (vec![("code_challenge", "too-short")], "invalid_request"),
        (vec![("scope", "SANDBOX")], "invalid_scope"),
        (vec![("prompt", "none consent")], "invalid_request"),
    ] {
        let reply = browser.get(&app, &authorize_path(&change)).await;
        assert_error_redirect(&app, &reply, PUBLIC_REDIRECT_URI, error);
    }
}

#[tokio::test]
async fn a_state_over_2048_bytes_is_refused_and_not_echoed() {
    // Arrange
    let app = spawn_app().await;
    let mut browser = Browser::default();
    let long_state = "s".repeat(2049);

    // Act
    let reply = browser
        .get(&app, &authorize_path(&[("state", long_state.as_str())]))
        .await;

    // Assert
    let (base, params) = location(&reply);
    assert_eq!(base, PUBLIC_REDIRECT_URI);
    assert_eq!(params["error"], "invalid_request", "{params:?}");
    assert!(!params.contains_key("state"), "{params:?}");
    assert_eq!(params["iss"], app.settings_issuer());
}

#[tokio::test]
async fn a_loopback_redirect_uri_matches_whatever_port_the_app_picked() {
    // Arrange
    let app = spawn_app().await;
    let mut browser = Browser::default();
    let with_port = "http://127.0.0.1:51004/callback";

    // Act
    let page = browser
        .get(&app, &authorize_path(&[("redirect_uri", with_port)]))
        .await;
    let signed_in = browser.sign_in(&app, &page, USER, PASSWORD).await;
    let other_path = browser
        .get(
            &app,
            &authorize_path(&[("redirect_uri", "http://127.0.0.1:51004/elsewhere")]),
        )
        .await;
    let localhost = browser
        .get(
            &app,
            &authorize_path(&[("redirect_uri", "http://localhost:51004/callback")]),
        )
        .await;

    // Assert
    assert_eq!(page.status, 200, "{}", page.text);
    let (base, params) = location(&signed_in);
    assert_eq!(base, with_port, "the answer goes to the app's own port");
    // The token request must name the same URI, port included.
    exchange(&app, &params["code"], "http://127.0.0.1:51005/callback")
        .await
        .assert_error(400, "invalid_grant");
    exchange(&app, &params["code"], with_port)
        .await
        .assert_tokens(3600, "PRODUCTION");
    assert_eq!(other_path.status, 400);
    assert_eq!(localhost.status, 400);
}

#[tokio::test]
async fn a_client_with_one_redirect_uri_may_leave_it_out_of_both_requests() {
    // Arrange
    let app = spawn_app().await;
    let mut browser = Browser::default();
    let path = authorize_path(&[("client_id", WEB_CLIENT_ID), ("redirect_uri", "")]);

    // Act
    let page = browser.get(&app, &path).await;
    let signed_in = browser.sign_in(&app, &page, USER, PASSWORD).await;
    let (base, params) = location(&signed_in);
    let tokens = app
        .post_token_as(
            WEB_CLIENT_ID,
            SHARED_SECRET,
            &[
                ("grant_type", "authorization_code"),
                ("code", &params["code"]),
                ("code_verifier", VERIFIER),
            ],
        )
        .await;

    // Assert
    assert!(
        page.text
            .contains(&format!("<strong>{WEB_CLIENT_ID}</strong>")),
        "a client without a name is shown by its id: {}",
        page.text
    );
    assert_eq!(base, WEB_REDIRECT_URI);
    tokens.assert_tokens(3600, "PRODUCTION");
}

#[tokio::test]
async fn a_form_without_the_right_csrf_value_is_refused() {
    // Arrange
    let app = spawn_app().await;
    let mut browser = Browser::default();
    let page = browser.get(&app, &authorize_path(&[])).await;
    let mut form = hidden_fields(&page.text);
    form.push(("username".into(), USER.into()));
    form.push(("password".into(), PASSWORD.into()));
    let wrong: Vec<(String, String)> = form
        .iter()
        .map(|(name, value)| {
            let value = if name == "csrf_token" {
                "A".repeat(43)
            } else {
                value.clone()
            };
            (name.clone(), value)
        })
        .collect();
    let missing: Vec<(String, String)> = form
        .iter()
        .filter(|(name, _)| name != "csrf_token")
        .cloned()
        .collect();

    // Act
    let with_wrong = browser.post(&app, &wrong).await;
    let with_missing = browser.post(&app, &missing).await;
    // A form posted from another site carries no cookie of ours.
    let cross_site = Reply::read(
        app.client
            .post(app.url("/authorize"))
            .form(&form)
            .send()
            .await
            .unwrap(),
    )
    .await;
    // The page the user still has open works: the refusals above left its cookie alone.
    let right = browser.post(&app, &form).await;

    // Assert
    for reply in [&with_wrong, &with_missing, &cross_site] {
        assert_eq!(reply.status, 403, "{}", reply.text);
        assert!(reply.header("location").is_none());
        assert_page_headers(reply);
        assert!(reply.text.contains("expired"), "{}", reply.text);
    }
    // No cookie is set for the cross-site post: a real browser would store it and break the
    // form the user has open.
    assert!(cross_site.header("set-cookie").is_none(), "{cross_site:?}");
    let (_, params) = location(&right);
    assert!(params.contains_key("code"));
}

#[tokio::test]
async fn a_wrong_password_an_unknown_user_and_a_disabled_one_get_the_same_answer() {
    // Arrange
    let app = spawn_app().await;
    let mut browser = Browser::default();
    let page = browser.get(&app, &authorize_path(&[])).await;

    // Act
    let wrong = browser.sign_in(&app, &page, USER, "wrong").await;
    let unknown = browser.sign_in(&app, &page, "nobody", "wrong").await;
    let disabled = browser
        .sign_in(&app, &page, DISABLED_USER, DISABLED_PASSWORD)
        .await;

    // Assert
    for reply in [&wrong, &unknown, &disabled] {
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert!(reply.header("location").is_none());
        assert!(
            reply.text.contains("Invalid username or password."),
            "{}",
            reply.text
        );
        assert_page_headers(reply);
    }
    let without_name = |text: &str| text.replace("nobody", "").replace(DISABLED_USER, "");
    assert_eq!(
        without_name(&unknown.text).replace(USER, ""),
        without_name(&wrong.text).replace(USER, ""),
        "the page tells nothing about which names exist"
    );
}

#[tokio::test]
async fn the_login_page_shares_the_password_grants_lockout() {
    // Arrange
    let app = spawn_app_with(|settings| {
        settings.security.lockout = lockout(2, 0);
    })
    .await;
    let mut browser = Browser::default();
    let page = browser.get(&app, &authorize_path(&[])).await;

    // Act
    browser.sign_in(&app, &page, USER, "wrong-1").await;
    browser.sign_in(&app, &page, USER, "wrong-2").await;
    let right_on_the_page = browser.sign_in(&app, &page, USER, PASSWORD).await;
    let right_on_the_token_endpoint = app.login(None).await;

    // Assert
    assert_eq!(right_on_the_page.status, 200);
    assert!(right_on_the_page
        .text
        .contains("Invalid username or password."));
    right_on_the_token_endpoint.assert_error(400, "invalid_grant");
}

#[tokio::test]
async fn a_login_whose_browser_went_away_does_not_leave_the_account_busy() {
    // Arrange: one failure locks, so a check left pending would answer the next login "busy".
    let app = spawn_app_with(|settings| {
        settings.security.lockout = lockout(1, 0);
    })
    .await;
    let mut browser = Browser::default();
    let page = browser.get(&app, &authorize_path(&[])).await;
    let mut form = hidden_fields(&page.text);
    form.push(("username".into(), USER.into()));
    form.push(("password".into(), PASSWORD.into()));

    // Act: the request is dropped once its password check has started (not before).
    let checks_before = app.hasher.verifications_started();
    let abandoned = app
        .client
        .post(app.url("/authorize"))
        .header("cookie", browser.cookie_header())
        .form(&form)
        .send();
    let check_started = async {
        while app.hasher.verifications_started() == checks_before {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    tokio::select! {
        _ = abandoned => panic!("the login was answered before its check was seen to start"),
        () = check_started => {}
    }
    let started = std::time::Instant::now();
    let next = browser.sign_in(&app, &page, USER, PASSWORD).await;

    // Assert
    let (_, params) = location(&next);
    assert!(params.contains_key("code"));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "it waited for a slot"
    );
}

#[tokio::test]
async fn what_the_request_sends_is_escaped_on_the_page() {
    // Arrange
    let app = spawn_app().await;
    let mut browser = Browser::default();
    let state = "\"><script>alert(1)</script>";

    // Act
    let page = browser
        .get(&app, &authorize_path(&[("state", state)]))
        .await;
    let signed_in = browser.sign_in(&app, &page, USER, PASSWORD).await;

    // Assert
    assert_eq!(page.status, 200);
    assert!(!page.text.contains("<script>"), "{}", page.text);
    let (_, params) = location(&signed_in);
    assert_eq!(
        params["state"], state,
        "the state comes back as it was sent"
    );
}

#[tokio::test]
async fn only_get_and_post_reach_the_authorization_endpoint() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let reply = Reply::read(app.client.put(app.url("/authorize")).send().await.unwrap()).await;

    // Assert
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("allow"), Some("GET, HEAD, POST"));
}

#[tokio::test]
async fn a_code_from_the_login_page_expires_after_the_validity_period() {
    // Arrange
    let app = spawn_app().await;
    let mut browser = Browser::default();
    let page = browser.get(&app, &authorize_path(&[])).await;
    let (_, params) = location(&browser.sign_in(&app, &page, USER, PASSWORD).await);

    // Act
    app.clock.advance_secs(60);
    let late = exchange(&app, &params["code"], PUBLIC_REDIRECT_URI).await;

    // Assert
    late.assert_error(400, "invalid_grant");
}

#[tokio::test]
async fn a_login_session_ends_after_its_lifetime() {
    // Arrange
    let app = spawn_app().await;
    let mut browser = Browser::default();
    let page = browser.get(&app, &authorize_path(&[])).await;
    browser.sign_in(&app, &page, USER, PASSWORD).await;

    // Act
    app.clock.advance_secs(28_799);
    let within = browser.get(&app, &authorize_path(&[])).await;
    app.clock.advance_secs(1);
    let after = browser.get(&app, &authorize_path(&[])).await;

    // Assert
    location(&within);
    assert_eq!(after.status, 200, "{}", after.text);
    assert!(after.text.contains("type=\"password\""));
}

#[tokio::test]
async fn ending_the_users_tokens_ends_their_login_sessions_too() {
    // Arrange
    let app = spawn_app().await;
    let mut browser = Browser::default();
    let page = browser.get(&app, &authorize_path(&[])).await;
    browser.sign_in(&app, &page, USER, PASSWORD).await;
    app.clock.advance_secs(1);

    // Act: what `tokengate user revoke-tokens` and `set-password` write.
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
    let after = browser.get(&app, &authorize_path(&[])).await;

    // Assert
    assert_eq!(after.status, 200, "{}", after.text);
    assert!(after.text.contains("type=\"password\""));
}

#[tokio::test]
async fn two_nodes_on_one_postgres_database_share_codes_and_login_sessions() {
    // Arrange
    let Some(database) = TestDatabase::create("two_nodes_share_codes_and_sessions").await else {
        return;
    };
    let clock = std::sync::Arc::new(tokengate::clock::ManualClock::starting_now());
    let issuer = "https://auth.example.test";
    let node = |clock| {
        postgres_node(&database, clock, |settings| {
            settings.oauth.issuer = Some(issuer.into());
        })
    };
    let first = node(clock.clone()).await;
    let second = node(clock.clone()).await;
    let mut browser = Browser::default();

    // Act: signed in on one node, the code exchanged and the session used on the other.
    let page = browser.get(&first, &authorize_path(&[])).await;
    let (_, params) = location(&browser.sign_in(&first, &page, USER, PASSWORD).await);
    let tokens = exchange(&second, &params["code"], PUBLIC_REDIRECT_URI).await;
    let again = browser.get(&second, &authorize_path(&[])).await;

    // Assert
    assert_eq!(params["iss"], issuer);
    tokens.assert_tokens(3600, "PRODUCTION");
    let (_, params) = location(&again);
    assert_eq!(params["iss"], issuer);
    exchange(&first, &params["code"], PUBLIC_REDIRECT_URI)
        .await
        .assert_tokens(3600, "PRODUCTION");
}

#[tokio::test]
async fn login_form_posts_share_the_per_address_rate_limit_and_get_a_page_over_it() {
    // Arrange
    let app = spawn_app_with(|settings| {
        settings.rate_limit.per_ip = Some(tokengate::abuse::rate_limit::Rate {
            per_second: 0.001,
            burst: 2.0,
        });
    })
    .await;
    let mut browser = Browser::default();
    let page = browser.get(&app, &authorize_path(&[])).await;

    // Act: one password grant and one form post use up the address's burst.
    app.login(None).await.assert_tokens(3600, "default");
    browser.sign_in(&app, &page, USER, "wrong").await;
    let limited = browser.sign_in(&app, &page, USER, PASSWORD).await;
    let token_endpoint = app.login(None).await;

    // Assert
    assert_eq!(limited.status, 429, "{}", limited.text);
    assert!(limited.header("retry-after").is_some());
    assert_eq!(
        limited.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_page_headers(&limited);
    assert!(limited.header("location").is_none());
    token_endpoint.assert_error(429, "rate_limited");
    // Showing the page is not limited.
    assert_eq!(browser.get(&app, &authorize_path(&[])).await.status, 200);
}

#[tokio::test]
async fn authorizations_and_logouts_with_a_session_cookie_take_from_the_per_address_rate_limit() {
    // Arrange: a burst of 2, used by the sign-in and the session's first authorization.
    let app = spawn_app_with(|settings| {
        settings.rate_limit.per_ip = Some(tokengate::abuse::rate_limit::Rate {
            per_second: 0.001,
            burst: 2.0,
        });
    })
    .await;
    let mut browser = Browser::default();
    let page = browser.get(&app, &authorize_path(&[])).await;
    let signed_in = browser.sign_in(&app, &page, USER, PASSWORD).await;
    assert_eq!(signed_in.status, 303, "{}", signed_in.text);

    // Act
    let by_session = browser.get(&app, &authorize_path(&[])).await;
    let over = browser.get(&app, &authorize_path(&[])).await;
    let logout = browser.get(&app, "/logout").await;

    // Assert: the session's code came from the burst, then each request was refused.
    assert_eq!(by_session.status, 303, "{}", by_session.text);
    for refused in [&over, &logout] {
        assert_eq!(refused.status, 429, "{}", refused.text);
        assert!(refused.header("retry-after").is_some());
        assert_page_headers(refused);
    }
}

#[tokio::test]
async fn signing_in_again_ends_the_browsers_previous_session() {
    // Arrange
    let app = spawn_app().await;
    let mut browser = Browser::default();
    let page = browser.get(&app, &authorize_path(&[])).await;
    browser.sign_in(&app, &page, USER, PASSWORD).await;
    let first_session = browser.cookies["__Host-tokengate-session"].clone();

    // Act: prompt=login, and the form again.
    let page = browser
        .get(&app, &authorize_path(&[("prompt", "login")]))
        .await;
    let signed_in = browser.sign_in(&app, &page, USER, PASSWORD).await;
    let mut holder_of_the_old_cookie = Browser::default();
    holder_of_the_old_cookie
        .cookies
        .insert("__Host-tokengate-session".into(), first_session.clone());
    let with_old = holder_of_the_old_cookie
        .get(&app, &authorize_path(&[]))
        .await;
    let with_new = browser.get(&app, &authorize_path(&[])).await;

    // Assert
    assert_eq!(signed_in.status, 303, "{}", signed_in.text);
    assert_ne!(browser.cookies["__Host-tokengate-session"], first_session);
    assert_eq!(with_old.status, 200, "the old session must be over");
    assert!(with_old.text.contains("type=\"password\""));
    assert!(location(&with_new).1.contains_key("code"));
}

#[tokio::test]
async fn guesses_on_the_page_from_everywhere_lock_neither_the_users_browser_nor_the_password_grant()
{
    // Arrange: 2 failures lock an address, 4 from all addresses lock the name everywhere.
    let app = spawn_app_with(|settings| {
        settings.rate_limit.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        settings.security.lockout = lockout(2, 4);
    })
    .await;
    // alice signed in once in her browser, then signed out.
    let mut alice = Browser::at("203.0.113.7");
    let page = alice.get(&app, &authorize_path(&[])).await;
    let first = alice.sign_in(&app, &page, USER, PASSWORD).await;
    location(&first);
    let device = set_cookie(&first, "__Host-tokengate-device");
    for attribute in [
        "Path=/",
        "Secure",
        "HttpOnly",
        "SameSite=Lax",
        "Max-Age=7776000",
    ] {
        assert!(device.contains(attribute), "{device}");
    }
    alice.get(&app, "/logout").await;
    // Guessers at two other addresses lock the name everywhere.
    for address in ["198.51.100.1", "198.51.100.2"] {
        let mut guesser = Browser::at(address);
        let page = guesser.get(&app, &authorize_path(&[])).await;
        for _ in 0..2 {
            guesser.sign_in(&app, &page, USER, "wrong").await;
        }
    }

    // Act
    let mut fresh = Browser::at("203.0.113.7");
    let fresh_page = fresh.get(&app, &authorize_path(&[])).await;
    let from_a_new_browser = fresh.sign_in(&app, &fresh_page, USER, PASSWORD).await;
    let page = alice.get(&app, &authorize_path(&[])).await;
    let from_her_browser = alice.sign_in(&app, &page, USER, PASSWORD).await;
    let by_password_grant = app
        .post_form_from(
            "203.0.113.7",
            "/token",
            CLIENT_ID,
            CLIENT_SECRET,
            &[
                ("grant_type", "password"),
                ("username", USER),
                ("password", PASSWORD),
            ],
        )
        .await;

    // Assert: on the page the name is locked for every browser but the one that proved it knew
    // the password; the password grant's apps (which need a client secret) are not affected.
    assert_eq!(
        from_a_new_browser.status, 200,
        "{}",
        from_a_new_browser.text
    );
    assert!(from_a_new_browser
        .text
        .contains("Invalid username or password."));
    by_password_grant.assert_tokens(3600, "default");
    let (_, params) = location(&from_her_browser);
    exchange(&app, &params["code"], PUBLIC_REDIRECT_URI)
        .await
        .assert_tokens(3600, "PRODUCTION");
}

#[tokio::test]
async fn a_known_device_counts_its_own_failures_and_is_no_login_session() {
    // Arrange: alice's browser is a known device; 2 failures lock a source.
    let app = spawn_app_with(|settings| {
        settings.security.lockout = lockout(2, 4);
    })
    .await;
    let mut alice = Browser::default();
    let page = alice.get(&app, &authorize_path(&[])).await;
    let first = alice.sign_in(&app, &page, USER, PASSWORD).await;
    location(&first);
    alice.get(&app, "/logout").await;
    let device = alice.cookies["__Host-tokengate-device"].clone();

    // Act + Assert: its id is no login session.
    let mut thief = Browser::default();
    thief
        .cookies
        .insert("__Host-tokengate-session".into(), device.clone());
    let as_session = thief.get(&app, &authorize_path(&[])).await;
    assert!(
        as_session.text.contains("type=\"password\""),
        "{}",
        as_session.text
    );
    // Act + Assert: wrong passwords from the device lock the device like an address.
    let page = alice.get(&app, &authorize_path(&[])).await;
    for _ in 0..2 {
        alice.sign_in(&app, &page, USER, "wrong").await;
    }
    let locked_device = alice.sign_in(&app, &page, USER, PASSWORD).await;
    assert!(locked_device.text.contains("Invalid username or password."));
    // ... and the address is untouched: the device's failures count for the device alone.
    let mut other = Browser::default();
    let page = other.get(&app, &authorize_path(&[])).await;
    location(&other.sign_in(&app, &page, USER, PASSWORD).await);
}

#[tokio::test]
async fn a_flood_of_login_page_posts_leaves_the_password_grant_its_share_of_the_hashing_pool() {
    // Arrange: one hashing worker and a queue of three: the page may use one of the places
    // in the queue, the grants keep two.
    let app = spawn_app_with(|settings| {
        settings.password_hashing.workers = 1;
        settings.password_hashing.queue_capacity = 3;
        settings.security.lockout = None;
    })
    .await;
    let mut browser = Browser::default();
    let page = browser.get(&app, &authorize_path(&[])).await;
    let mut form = hidden_fields(&page.text);
    form.push(("password".into(), "guess".into()));
    let csrf = browser.cookie_header();

    // Act: twelve posts for made-up names (a dummy hash each) and two password grants at once.
    let posts = (0..12).map(|n| {
        let mut form = form.clone();
        form.push(("username".into(), format!("nobody-{n}")));
        let request = app
            .client
            .post(app.url("/authorize"))
            .header("cookie", csrf.clone())
            .form(&form);
        async move { Reply::read(request.send().await.unwrap()).await }
    });
    let (page_replies, grants) = tokio::join!(
        futures::future::join_all(posts),
        futures::future::join_all((0..2).map(|_| app.login(None)))
    );

    // Assert: the grants were served; the page got its answers or a busy page, nothing else.
    for grant in &grants {
        grant.assert_tokens(3600, "default");
    }
    let busy = page_replies.iter().filter(|r| r.status == 503).count();
    assert!(busy > 0, "the flood never hit the page's share");
    for reply in &page_replies {
        assert!(
            reply.status == 503 || reply.text.contains("Invalid username or password."),
            "{}: {}",
            reply.status,
            reply.text
        );
    }
}
