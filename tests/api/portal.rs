//! The developer portal (`/portal/`, `[portal] enabled`) over real HTTPS, as a browser uses it
//! (cookies carried by hand, forms posted with their CSRF value): sign-in and roles, creating an
//! application and using its key and secret at `/token`, what each developer may see (another
//! owner's application is 404 on every URL), secret regeneration, edits, disabling, deleting
//! and test tokens.

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use tokengate::clock::ManualClock;
use tokengate::config::{DirectoryLocation, Settings};
use tokengate::crypto::{password, secret};
use tokengate::oauth::portal::MAX_APPLICATIONS_PER_DEVELOPER;
use tokengate::store::measured::Unobserved;
use tokengate::store::model::{Client, GrantType};
use tokengate::store::open_database;

use crate::authorize::{hidden_fields, unescape, Browser};
use crate::helpers::*;

pub(crate) const DEVELOPER: &str = "devon";
pub(crate) const DEVELOPER_PASSWORD: &str = "devon-password";
pub(crate) const OTHER_DEVELOPER: &str = "dana";
pub(crate) const OTHER_PASSWORD: &str = "dana-password";
pub(crate) const ADMIN: &str = "ada";
pub(crate) const ADMIN_PASSWORD: &str = "ada-password";
/// A developer whose account is disabled.
pub(crate) const DISABLED_DEVELOPER: &str = "dora";
pub(crate) const DISABLED_DEVELOPER_PASSWORD: &str = "dora-password";
/// A client the CLI made (no owner) in the clients table: admins only.
pub(crate) const OPERATOR_CLIENT_ID: &str = "ops-tool";
/// Another, with an operator-chosen (argon2) secret, ARGON_CLIENT_SECRET.
pub(crate) const OPERATOR_ARGON_CLIENT_ID: &str = "ops-argon";

const SESSION_COOKIE: &str = "__Host-tokengate-session";
const CSRF_COOKIE: &str = "__Host-tokengate-csrf";

/// An app whose clients live in its database, with the portal on (unless `adjust` turns it
/// off), offering the code, refresh and client_credentials grants and scopes `read` and
/// `write`, and users `devon` and `dana` (developers), `ada` (admin) and `dora` (a disabled
/// developer) beside the fixture's `alice` (no role). No per-IP rate limit: the manual clock
/// does not refill it, and a test's pages and token requests are more than its burst.
pub(crate) async fn spawn_portal(adjust: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_portal_on(None, Arc::new(ManualClock::starting_now()), false, adjust).await
}

/// [`spawn_portal`] with clients in the table: the resource server (for `/introspect`),
/// `ops-tool` (client_credentials, a generated secret) and `ops-argon` (an operator-chosen
/// secret), neither with an owner.
async fn spawn_portal_with_clients(adjust: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_portal_on(None, Arc::new(ManualClock::starting_now()), true, adjust).await
}

/// [`spawn_portal`] on `database` (PostgreSQL, shared with other nodes) instead of a SQLite
/// file of its own, with the clients of [`spawn_portal_with_clients`] when `with_clients`.
async fn spawn_portal_on(
    database: Option<&TestDatabase>,
    clock: Arc<ManualClock>,
    with_clients: bool,
    adjust: impl FnOnce(&mut Settings),
) -> TestApp {
    let home = Arc::new(tempfile::tempdir().unwrap());
    write_fixture_stores(home.path());
    let mut settings = match database {
        Some(database) => postgres_settings(home.path(), database),
        None => test_settings(home.path()),
    };
    settings.stores.clients = DirectoryLocation::Database;
    settings.rate_limit.per_ip = None;
    settings.portal.enabled = true;
    settings.portal.allowed_grant_types = [
        GrantType::AuthorizationCode,
        GrantType::RefreshToken,
        GrantType::ClientCredentials,
    ]
    .into();
    settings.portal.allowed_scopes = ["read".to_owned(), "write".to_owned()].into();
    adjust(&mut settings);
    let users = home.path().join("config/users.toml");
    let mut text = std::fs::read_to_string(&users).unwrap();
    for (name, password, role) in [
        (DEVELOPER, DEVELOPER_PASSWORD, "developer"),
        (OTHER_DEVELOPER, OTHER_PASSWORD, "developer"),
        (ADMIN, ADMIN_PASSWORD, "admin"),
        (DISABLED_DEVELOPER, DISABLED_DEVELOPER_PASSWORD, "developer"),
    ] {
        let hash = password::hash_password(password, &settings.password_hashing).unwrap();
        text.push_str(&format!(
            "\n[users.{name}]\npassword_hash = \"{hash}\"\nroles = [\"{role}\"]\n"
        ));
        if name == DISABLED_DEVELOPER {
            text.push_str("disabled = true\n");
        }
    }
    std::fs::write(&users, text).unwrap();
    if with_clients {
        add_operator_clients(&settings).await;
    }
    spawn_in(home, settings, clock).await
}

/// Adds the clients of [`spawn_portal_with_clients`] to the table (on a second node sharing
/// the database they are there already).
async fn add_operator_clients(settings: &Settings) {
    let database = open_database(&settings.stores.tokens, Arc::new(Unobserved))
        .await
        .unwrap();
    let shared = secret::hash_sha256(SHARED_SECRET);
    let argon = password::hash_password(ARGON_CLIENT_SECRET, &settings.password_hashing).unwrap();
    for (id, secret_hash, grant_types, scopes, introspect) in [
        (RESOURCE_SERVER_ID, &shared, vec![], vec![], true),
        (
            OPERATOR_CLIENT_ID,
            &shared,
            vec![GrantType::ClientCredentials],
            vec!["read".to_owned()],
            false,
        ),
        (
            OPERATOR_ARGON_CLIENT_ID,
            &argon,
            vec![GrantType::ClientCredentials],
            vec![],
            false,
        ),
    ] {
        let client = Client {
            id: id.into(),
            secret_hash: secret_hash.clone(),
            public: false,
            redirect_uris: Vec::new(),
            require_consent: false,
            name: None,
            owner: None,
            grant_types: grant_types.into_iter().collect(),
            scopes: scopes.into_iter().collect(),
            access_token_validity_secs: None,
            application_access_token_validity_secs: None,
            refresh_token_validity_secs: None,
            introspect,
            token_format: None,
            audience: None,
            disabled: false,
            previous_secret: None,
        };
        // `false` on a second node: the first one added it.
        database.directory.add_client(&client, 0).await.unwrap();
    }
    database.tokens.close().await;
}

/// The text of the element with `id` on a page (`<code … id="x">text</code>`, `<pre id=…>`),
/// unescaped.
pub(crate) fn element_text(html: &str, id: &str) -> String {
    let start = html
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} on the page: {html}"));
    let open_end = start + html[start..].find('>').unwrap() + 1;
    let close = open_end + html[open_end..].find("</").unwrap();
    crate::authorize::unescape(&html[open_end..close])
}

/// The page's CSRF value (its hidden `csrf_token`).
fn csrf(page: &Reply) -> String {
    hidden_fields(&page.text)
        .into_iter()
        .find(|(name, _)| name == "csrf_token")
        .unwrap_or_else(|| panic!("no CSRF field on the page: {}", page.text))
        .1
}

/// A browser signed in to the portal as `user`.
pub(crate) async fn signed_in(app: &TestApp, user: &str, password: &str) -> Browser {
    let mut browser = Browser::default();
    let page = browser.get(app, "/portal/").await;
    assert_eq!(page.status, 200, "{}", page.text);
    let signed = browser
        .post_to(
            app,
            "/portal/login",
            &[
                ("csrf_token".into(), csrf(&page)),
                ("username".into(), user.into()),
                ("password".into(), password.into()),
            ],
        )
        .await;
    assert_eq!(signed.status, 303, "{}", signed.text);
    assert_eq!(signed.header("location"), Some("/portal/"));
    browser
}

/// Posts `form` (and the CSRF value of the page at `page_path`) to `path`.
pub(crate) async fn post_form(
    browser: &mut Browser,
    app: &TestApp,
    page_path: &str,
    path: &str,
    form: &[(&str, &str)],
) -> Reply {
    let page = browser.get(app, page_path).await;
    let mut fields = vec![("csrf_token".to_owned(), csrf(&page))];
    fields.extend(form.iter().map(|(n, v)| (n.to_string(), v.to_string())));
    browser.post_to(app, path, &fields).await
}

/// A confidential client_credentials application `name` made through the create form: its
/// consumer key and secret, read off the page.
pub(crate) async fn create_confidential(
    browser: &mut Browser,
    app: &TestApp,
    name: &str,
) -> (String, String) {
    let page = post_form(
        browser,
        app,
        "/portal/apps/new",
        "/portal/apps",
        &[
            ("name", name),
            ("type", "confidential"),
            ("grant.client_credentials", "on"),
            ("scope.read", "on"),
        ],
    )
    .await;
    assert_eq!(page.status, 200, "{}", page.text);
    (
        element_text(&page.text, "consumer-key"),
        element_text(&page.text, "consumer-secret"),
    )
}

async fn client_credentials(app: &TestApp, id: &str, secret: &str) -> Reply {
    let response = app
        .client
        .post(app.url("/token"))
        .basic_auth(id, Some(secret))
        .form(&[("grant_type", "client_credentials"), ("scope", "read")])
        .send()
        .await
        .unwrap();
    Reply::read(response).await
}

#[tokio::test]
async fn a_developer_creates_an_application_and_its_key_and_secret_get_a_token() {
    let app = spawn_portal(|_| {}).await;
    let mut browser = signed_in(&app, DEVELOPER, DEVELOPER_PASSWORD).await;

    let (key, secret) = create_confidential(&mut browser, &app, "Weather widget").await;

    let tokens = client_credentials(&app, &key, &secret).await;
    tokens.assert_tokens(
        app.settings.oauth.application_access_token_validity_secs,
        "read",
    );
    let list = browser.get(&app, "/portal/").await;
    assert_eq!(list.status, 200);
    assert!(list.text.contains("Weather widget"), "{}", list.text);
    assert!(list.text.contains(&key));
    let shown = browser.get(&app, &format!("/portal/apps/{key}")).await;
    assert_eq!(shown.status, 200, "{}", shown.text);
    assert!(shown.text.contains(&key));
    assert!(
        !shown.text.contains(&secret),
        "the secret is shown once only"
    );
    for header in [
        "content-security-policy",
        "x-frame-options",
        "cache-control",
    ] {
        assert!(shown.header(header).is_some(), "{header}");
    }
    assert_eq!(shown.header("cache-control"), Some("no-store"));
}

// ---------------------------------------------------------------------------------------------
// Helpers of the tests below.

/// The page's text with askama's escapes undone.
fn text_of(page: &Reply) -> String {
    unescape(&page.text)
}

/// The value of cookie `name` that `reply` sets, if it sets one.
fn cookie_set(reply: &Reply, name: &str) -> Option<String> {
    reply
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find_map(|set| {
            let (pair, _) = set.split_once(';').unwrap_or((set, ""));
            let (key, value) = pair.split_once('=')?;
            (key == name).then(|| value.to_owned())
        })
}

/// `GET path` with exactly the `cookie` header given.
async fn get_with_cookies(app: &TestApp, path: &str, cookies: &str) -> Reply {
    let response = app
        .client
        .get(app.url(path))
        .header("cookie", cookies)
        .send()
        .await
        .unwrap();
    Reply::read(response).await
}

/// `POST path` with exactly the `cookie` header given.
async fn post_with_cookies(
    app: &TestApp,
    path: &str,
    cookies: &str,
    form: &[(&str, &str)],
) -> Reply {
    let response = app
        .client
        .post(app.url(path))
        .header("cookie", cookies)
        .form(form)
        .send()
        .await
        .unwrap();
    Reply::read(response).await
}

/// Signs in by hand (no [`Browser`]): the values of the session and CSRF cookies.
async fn session_cookies(app: &TestApp, user: &str, password: &str) -> (String, String) {
    let page = app.get("/portal/").await;
    let csrf_value = cookie_set(&page, CSRF_COOKIE).expect("the sign-in form sets a CSRF cookie");
    let signed = post_with_cookies(
        app,
        "/portal/login",
        &format!("{CSRF_COOKIE}={csrf_value}"),
        &[
            ("csrf_token", &csrf_value),
            ("username", user),
            ("password", password),
        ],
    )
    .await;
    assert_eq!(signed.status, 303, "{}", signed.text);
    let session = cookie_set(&signed, SESSION_COOKIE).expect("a session cookie");
    (session, csrf_value)
}

/// Posts the sign-in form as `user` from a fresh browser: its answer and the browser.
async fn try_sign_in(app: &TestApp, user: &str, password: &str) -> (Reply, Browser) {
    let mut browser = Browser::default();
    let page = browser.get(app, "/portal/").await;
    let reply = browser
        .post_to(
            app,
            "/portal/login",
            &[
                ("csrf_token".into(), csrf(&page)),
                ("username".into(), user.into()),
                ("password".into(), password.into()),
            ],
        )
        .await;
    (reply, browser)
}

/// Whether `page` is the portal's sign-in form.
fn is_sign_in_form(page: &Reply) -> bool {
    page.text.contains("action=\"/portal/login\"") && page.text.contains("name=\"password\"")
}

/// Creates an application from `form` (the create page's CSRF value added).
async fn create(browser: &mut Browser, app: &TestApp, form: &[(&str, &str)]) -> Reply {
    post_form(browser, app, "/portal/apps/new", "/portal/apps", form).await
}

/// Posts `form` to `path` with the CSRF value of the application page of `id`.
async fn post_on_app(
    browser: &mut Browser,
    app: &TestApp,
    id: &str,
    path: &str,
    form: &[(&str, &str)],
) -> Reply {
    post_form(browser, app, &format!("/portal/apps/{id}"), path, form).await
}

/// A client_credentials request with Basic credentials for `scope` (none: `default`).
async fn token_for(app: &TestApp, id: &str, secret: &str, scope: Option<&str>) -> Reply {
    let mut form = vec![("grant_type", "client_credentials")];
    if let Some(scope) = scope {
        form.push(("scope", scope));
    }
    app.post_form_as("/token", id, secret, &form).await
}

/// A series of `tokengate_client_changes_total` for the portal.
fn portal_change(change: &str) -> String {
    format!("tokengate_client_changes_total{{change=\"{change}\",via=\"portal\"}}")
}

/// The headers every portal page answers with.
fn assert_page_headers(page: &Reply, what: &str) {
    let csp = page
        .header("content-security-policy")
        .unwrap_or_else(|| panic!("{what}: no CSP"));
    assert!(csp.contains("default-src 'none'"), "{what}: {csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{what}: {csp}");
    assert_eq!(page.header("x-frame-options"), Some("DENY"), "{what}");
    assert_eq!(page.header("cache-control"), Some("no-store"), "{what}");
    assert_eq!(
        page.header("referrer-policy"),
        Some("no-referrer"),
        "{what}"
    );
}

// ---------------------------------------------------------------------------------------------
// Off by default; signing in and out.

#[tokio::test]
async fn the_portal_is_off_by_default_and_its_paths_do_not_exist() {
    let home = tempfile::tempdir().unwrap();
    assert!(
        !test_settings(home.path()).portal.enabled,
        "the shipped config"
    );
    let app = spawn_portal_with_clients(|settings| settings.portal.enabled = false).await;

    for path in ["/portal/", "/portal", "/portal/apps/new"] {
        let page = app.get(path).await;
        assert_eq!(page.status, 404, "{path}: {}", page.text);
    }
    let login = post_with_cookies(
        &app,
        "/portal/login",
        "",
        &[("username", DEVELOPER), ("password", DEVELOPER_PASSWORD)],
    )
    .await;
    assert_eq!(login.status, 404);
    assert_eq!(cookie_set(&login, SESSION_COOKIE), None);
}

#[tokio::test]
async fn a_user_without_a_portal_role_gets_the_answer_of_a_wrong_password_and_no_session() {
    // The portal must not tell a stranger that a guess at any user's password was right.
    let app = spawn_portal_with_clients(|_| {}).await;

    let (reply, mut browser) = try_sign_in(&app, USER, PASSWORD).await;
    let (wrong, _) = try_sign_in(&app, USER, "not-the-password").await;

    assert_eq!(reply.status, 200, "{}", reply.text);
    assert!(
        reply.text.contains("Invalid username or password."),
        "{}",
        reply.text
    );
    assert_eq!(wrong.status, 200, "{}", wrong.text);
    assert!(wrong.text.contains("Invalid username or password."));
    assert_eq!(cookie_set(&reply, SESSION_COOKIE), None);
    assert_page_headers(&reply, "no access");
    let again = browser.get(&app, "/portal/").await;
    assert_eq!(again.status, 200);
    assert!(is_sign_in_form(&again), "{}", again.text);
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_user_get_the_same_answer_and_no_session() {
    let app = spawn_portal_with_clients(|_| {}).await;

    let (wrong, _) = try_sign_in(&app, DEVELOPER, "not-the-password").await;
    let (unknown, _) = try_sign_in(&app, "nobody", DEVELOPER_PASSWORD).await;

    for reply in [&wrong, &unknown] {
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert!(is_sign_in_form(reply), "{}", reply.text);
        assert!(
            reply.text.contains("Invalid username or password."),
            "{}",
            reply.text
        );
        assert_eq!(cookie_set(reply, SESSION_COOKIE), None);
    }
    // The same page but for the name entered.
    assert_eq!(
        wrong.text.replace(DEVELOPER, "NAME"),
        unknown
            .text
            .replace("nobody", "NAME")
            .replace(&csrf(&unknown), &csrf(&wrong))
    );
}

#[tokio::test]
async fn a_disabled_developer_cannot_sign_in() {
    let app = spawn_portal_with_clients(|_| {}).await;

    let (reply, mut browser) =
        try_sign_in(&app, DISABLED_DEVELOPER, DISABLED_DEVELOPER_PASSWORD).await;

    assert_eq!(reply.status, 200, "{}", reply.text);
    assert!(
        reply.text.contains("Invalid username or password."),
        "{}",
        reply.text
    );
    assert_eq!(cookie_set(&reply, SESSION_COOKIE), None);
    assert!(is_sign_in_form(&browser.get(&app, "/portal/").await));
}

#[tokio::test]
async fn signing_out_ends_the_session_and_a_logout_without_the_csrf_value_does_not() {
    let app = spawn_portal_with_clients(|_| {}).await;
    let (session, csrf_value) = session_cookies(&app, DEVELOPER, DEVELOPER_PASSWORD).await;
    let cookies = format!("{SESSION_COOKIE}={session}; {CSRF_COOKIE}={csrf_value}");

    let forged = post_with_cookies(&app, "/portal/logout", &cookies, &[]).await;
    assert_eq!(forged.status, 403, "{}", forged.text);
    assert_page_headers(&forged, "a logout without the CSRF value");
    let still = get_with_cookies(&app, "/portal/", &cookies).await;
    assert_eq!(still.status, 200);
    assert!(!is_sign_in_form(&still), "{}", still.text);
    assert!(still.text.contains(DEVELOPER));

    let out = post_with_cookies(
        &app,
        "/portal/logout",
        &cookies,
        &[("csrf_token", &csrf_value)],
    )
    .await;

    assert_eq!(out.status, 303, "{}", out.text);
    assert_eq!(out.header("location"), Some("/portal/"));
    assert_eq!(cookie_set(&out, SESSION_COOKIE).as_deref(), Some(""));
    // The old cookie, replayed, is no session any more.
    let replayed = get_with_cookies(&app, "/portal/", &cookies).await;
    assert_eq!(replayed.status, 200);
    assert!(is_sign_in_form(&replayed), "{}", replayed.text);
    let event = wait_for_event(&audit_file(app.home.path()), "logged_out", |_| true).await;
    assert_eq!(event["subject"], DEVELOPER);
}

// ---------------------------------------------------------------------------------------------
// Who sees what.

#[tokio::test]
async fn another_developers_application_is_not_found_on_every_portal_url() {
    let app = spawn_portal_with_clients(|_| {}).await;
    let mut devon = signed_in(&app, DEVELOPER, DEVELOPER_PASSWORD).await;
    let (key, secret) = create_confidential(&mut devon, &app, "Devon's app").await;
    let mut dana = signed_in(&app, OTHER_DEVELOPER, OTHER_PASSWORD).await;
    let home = dana.get(&app, "/portal/").await;
    let token = csrf(&home);

    for id in [key.as_str(), "no-such-app"] {
        let mut answers = Vec::new();
        for path in [
            format!("/portal/apps/{id}"),
            format!("/portal/apps/{id}/delete"),
        ] {
            answers.push((format!("GET {path}"), dana.get(&app, &path).await));
        }
        let posts: [(String, Vec<(&str, &str)>); 5] = [
            (
                format!("/portal/apps/{id}"),
                vec![
                    ("name", "Hijacked"),
                    ("scope.read", "on"),
                    ("scope.write", "on"),
                ],
            ),
            (format!("/portal/apps/{id}/secret"), vec![]),
            (
                format!("/portal/apps/{id}/status"),
                vec![("disabled", "true")],
            ),
            (format!("/portal/apps/{id}/delete"), vec![]),
            (
                format!("/portal/apps/{id}/token"),
                vec![("client_secret", &secret), ("validity", "60")],
            ),
        ];
        for (path, form) in posts {
            let mut fields = vec![("csrf_token".to_owned(), token.clone())];
            fields.extend(form.iter().map(|(n, v)| (n.to_string(), v.to_string())));
            answers.push((
                format!("POST {path}"),
                dana.post_to(&app, &path, &fields).await,
            ));
        }
        for (what, reply) in answers {
            assert_eq!(reply.status, 404, "{what}: {}", reply.text);
            assert!(reply.text.contains("No such application"), "{what}");
            assert!(!reply.text.contains(&secret), "{what}");
            assert_page_headers(&reply, &what);
        }
    }
    // Someone else's and no one's are the same answer.
    let other = dana.get(&app, &format!("/portal/apps/{key}")).await;
    let unknown = dana.get(&app, "/portal/apps/no-such-app").await;
    assert_eq!(other.text, unknown.text);

    // Nothing changed: the name, the status, the secret.
    let tokens = token_for(&app, &key, &secret, Some("read")).await;
    tokens.assert_tokens(
        app.settings.oauth.application_access_token_validity_secs,
        "read",
    );
    let page = devon.get(&app, &format!("/portal/apps/{key}")).await;
    assert_eq!(page.status, 200);
    assert!(text_of(&page).contains("Devon's app"), "{}", page.text);
    assert!(!page.text.contains("Hijacked"));
    assert!(page.text.contains("<dd>Active</dd>"), "{}", page.text);
    assert!(!dana.get(&app, "/portal/").await.text.contains(&key));
    for change in ["secret_regenerated", "updated", "disabled", "deleted"] {
        assert_eq!(app.metric(&portal_change(change)).await, 0.0, "{change}");
    }
    // Devon signs out last: every event before it is in the file once it is.
    let out = post_form(&mut devon, &app, "/portal/", "/portal/logout", &[]).await;
    assert_eq!(out.status, 303, "{}", out.text);
    wait_for_event(&audit_file(app.home.path()), "logged_out", |_| true).await;
    let events = audit_events(&audit_file(app.home.path()));
    assert!(
        !events
            .iter()
            .any(|event| event["subject"] == OTHER_DEVELOPER),
        "{events:?}"
    );
}

#[tokio::test]
async fn a_developer_sees_only_their_applications_and_an_admin_sees_and_manages_all() {
    let app = spawn_portal_with_clients(|_| {}).await;
    let mut devon = signed_in(&app, DEVELOPER, DEVELOPER_PASSWORD).await;
    let (devon_key, _) = create_confidential(&mut devon, &app, "Devon's app").await;
    let mut dana = signed_in(&app, OTHER_DEVELOPER, OTHER_PASSWORD).await;
    let (dana_key, _) = create_confidential(&mut dana, &app, "Dana's app").await;
    let mut ada = signed_in(&app, ADMIN, ADMIN_PASSWORD).await;

    let devon_list = devon.get(&app, "/portal/").await;
    let admin_list = ada.get(&app, "/portal/").await;

    assert!(devon_list.text.contains(&devon_key));
    assert!(!devon_list.text.contains(&dana_key));
    assert!(!devon_list.text.contains(OPERATOR_CLIENT_ID));
    assert!(!devon_list.text.contains(RESOURCE_SERVER_ID));
    for shown in [
        &devon_key,
        &dana_key,
        OPERATOR_CLIENT_ID,
        RESOURCE_SERVER_ID,
    ] {
        assert!(
            admin_list.text.contains(shown),
            "{shown}: {}",
            admin_list.text
        );
    }
    assert!(admin_list.text.contains("(made by an operator)"));
    assert!(admin_list.text.contains(&format!("<td>{DEVELOPER}</td>")));
    assert!(
        devon
            .get(&app, &format!("/portal/apps/{OPERATOR_CLIENT_ID}"))
            .await
            .status
            == 404
    );

    // The admin manages the operator's client: renames it, gives it a new secret.
    let page = ada
        .get(&app, &format!("/portal/apps/{OPERATOR_CLIENT_ID}"))
        .await;
    assert_eq!(page.status, 200, "{}", page.text);
    let saved = post_on_app(
        &mut ada,
        &app,
        OPERATOR_CLIENT_ID,
        &format!("/portal/apps/{OPERATOR_CLIENT_ID}"),
        &[("name", "Operations tool"), ("scope.read", "on")],
    )
    .await;
    assert_eq!(saved.status, 303, "{}", saved.text);
    token_for(&app, OPERATOR_CLIENT_ID, SHARED_SECRET, Some("read"))
        .await
        .assert_tokens(
            app.settings.oauth.application_access_token_validity_secs,
            "read",
        );
    let regenerated = post_on_app(
        &mut ada,
        &app,
        OPERATOR_CLIENT_ID,
        &format!("/portal/apps/{OPERATOR_CLIENT_ID}/secret"),
        &[],
    )
    .await;
    assert_eq!(regenerated.status, 200, "{}", regenerated.text);
    let new_secret = element_text(&regenerated.text, "consumer-secret");
    token_for(&app, OPERATOR_CLIENT_ID, SHARED_SECRET, None)
        .await
        .assert_error(401, "invalid_client");
    token_for(&app, OPERATOR_CLIENT_ID, &new_secret, Some("read"))
        .await
        .assert_tokens(
            app.settings.oauth.application_access_token_validity_secs,
            "read",
        );
    // Renaming the resource server leaves it a resource server.
    let renamed = post_on_app(
        &mut ada,
        &app,
        RESOURCE_SERVER_ID,
        &format!("/portal/apps/{RESOURCE_SERVER_ID}"),
        &[("name", "Resource server")],
    )
    .await;
    assert_eq!(renamed.status, 303, "{}", renamed.text);
    let (access, _) = token_for(&app, OPERATOR_CLIENT_ID, &new_secret, None)
        .await
        .assert_tokens(
            app.settings.oauth.application_access_token_validity_secs,
            "default",
        );
    let introspected = app.introspect(&access).await;
    assert_eq!(introspected.status, 200, "{}", introspected.text);
    assert_eq!(introspected.body["active"], true);
    // And the admin's regeneration is audited with the admin as subject.
    let event = wait_for_event(
        &audit_file(app.home.path()),
        "client_secret_regenerated",
        |_| true,
    )
    .await;
    assert_eq!(event["client_id"], OPERATOR_CLIENT_ID);
    assert_eq!(event["subject"], ADMIN);
}

// ---------------------------------------------------------------------------------------------
// CSRF.

#[tokio::test]
async fn a_form_without_the_csrf_cookie_or_with_a_wrong_value_is_refused_and_changes_nothing() {
    let app = spawn_portal_with_clients(|_| {}).await;
    let mut devon = signed_in(&app, DEVELOPER, DEVELOPER_PASSWORD).await;
    let (key, secret) = create_confidential(&mut devon, &app, "Guarded").await;
    let (session, csrf_value) = session_cookies(&app, DEVELOPER, DEVELOPER_PASSWORD).await;
    let status_path = format!("/portal/apps/{key}/status");
    let both = format!("{SESSION_COOKIE}={session}; {CSRF_COOKIE}={csrf_value}");
    let wrong_value = "A".repeat(43);

    let without_cookie = post_with_cookies(
        &app,
        &status_path,
        &format!("{SESSION_COOKIE}={session}"),
        &[("csrf_token", &csrf_value), ("disabled", "true")],
    )
    .await;
    let wrong = post_with_cookies(
        &app,
        &status_path,
        &both,
        &[("csrf_token", &wrong_value), ("disabled", "true")],
    )
    .await;
    let missing = post_with_cookies(&app, &status_path, &both, &[("disabled", "true")]).await;
    let wrong_create = post_with_cookies(
        &app,
        "/portal/apps",
        &both,
        &[
            ("csrf_token", &wrong_value),
            ("name", "Sneaky"),
            ("type", "confidential"),
            ("grant.client_credentials", "on"),
        ],
    )
    .await;
    let wrong_delete = post_with_cookies(
        &app,
        &format!("/portal/apps/{key}/delete"),
        &both,
        &[("csrf_token", &wrong_value)],
    )
    .await;

    assert_eq!(without_cookie.status, 403, "{}", without_cookie.text);
    assert!(without_cookie.text.contains("expired"));
    assert!(
        without_cookie.headers.get("set-cookie").is_none(),
        "no new cookie for a post without one"
    );
    assert_page_headers(&without_cookie, "no CSRF cookie");
    for (what, reply) in [
        ("wrong value", &wrong),
        ("no value", &missing),
        ("create", &wrong_create),
        ("delete", &wrong_delete),
    ] {
        assert_eq!(reply.status, 403, "{what}: {}", reply.text);
        assert!(reply.text.contains("This form has expired"), "{what}");
        assert_page_headers(reply, what);
    }
    let page = devon.get(&app, &format!("/portal/apps/{key}")).await;
    assert!(page.text.contains("<dd>Active</dd>"), "{}", page.text);
    assert!(!devon.get(&app, "/portal/").await.text.contains("Sneaky"));
    token_for(&app, &key, &secret, Some("read"))
        .await
        .assert_tokens(
            app.settings.oauth.application_access_token_validity_secs,
            "read",
        );
    assert_eq!(app.metric(&portal_change("registered")).await, 1.0);
    assert_eq!(app.metric(&portal_change("disabled")).await, 0.0);
    assert_eq!(app.metric(&portal_change("deleted")).await, 0.0);
}

// ---------------------------------------------------------------------------------------------
// The consumer secret.

#[tokio::test]
async fn the_secret_is_shown_once_and_a_regenerated_one_replaces_it_at_once() {
    let app = spawn_portal_with_clients(|_| {}).await;
    let mut devon = signed_in(&app, DEVELOPER, DEVELOPER_PASSWORD).await;
    let created = create(
        &mut devon,
        &app,
        &[
            ("name", "Weather widget"),
            ("type", "confidential"),
            ("grant.client_credentials", "on"),
            ("scope.read", "on"),
        ],
    )
    .await;
    assert_eq!(created.status, 200, "{}", created.text);
    assert!(created.text.contains("it is not shown again"));
    assert_page_headers(&created, "created");
    let key = element_text(&created.text, "consumer-key");
    let old = element_text(&created.text, "consumer-secret");
    let page = devon.get(&app, &format!("/portal/apps/{key}")).await;
    assert!(!page.text.contains(&old));

    let regenerated = post_on_app(
        &mut devon,
        &app,
        &key,
        &format!("/portal/apps/{key}/secret"),
        &[],
    )
    .await;

    assert_eq!(regenerated.status, 200, "{}", regenerated.text);
    assert_page_headers(&regenerated, "regenerated");
    assert!(regenerated.text.contains("The old one no longer works."));
    let new = element_text(&regenerated.text, "consumer-secret");
    assert_ne!(new, old);
    let basic = STANDARD.encode(format!("{key}:{new}"));
    assert!(element_text(&regenerated.text, "curl-command")
        .contains(&format!("Authorization: Basic {basic}")));
    token_for(&app, &key, &old, Some("read"))
        .await
        .assert_error(401, "invalid_client");
    token_for(&app, &key, &new, Some("read"))
        .await
        .assert_tokens(
            app.settings.oauth.application_access_token_validity_secs,
            "read",
        );
    let page = devon.get(&app, &format!("/portal/apps/{key}")).await;
    assert!(!page.text.contains(&new) && !page.text.contains(&old));
    let event = wait_for_event(
        &audit_file(app.home.path()),
        "client_secret_regenerated",
        |_| true,
    )
    .await;
    assert_eq!(event["client_id"], key.as_str());
    assert_eq!(event["subject"], DEVELOPER);
    assert!(event["previous_valid_until"].is_null(), "{event}");
    assert!(!event.to_string().contains(&new) && !event.to_string().contains(&old));
    assert_eq!(app.metric(&portal_change("secret_regenerated")).await, 1.0);
}

#[tokio::test]
async fn with_a_secret_overlap_the_old_secret_works_until_the_overlap_ends() {
    let app = spawn_portal_with_clients(|settings| settings.portal.secret_overlap_secs = 60).await;
    let mut devon = signed_in(&app, DEVELOPER, DEVELOPER_PASSWORD).await;
    let (key, old) = create_confidential(&mut devon, &app, "Rotating").await;
    let validity = app.settings.oauth.application_access_token_validity_secs;

    let regenerated = post_on_app(
        &mut devon,
        &app,
        &key,
        &format!("/portal/apps/{key}/secret"),
        &[],
    )
    .await;

    assert_eq!(regenerated.status, 200, "{}", regenerated.text);
    assert!(
        regenerated
            .text
            .contains("The old one keeps working for 60 seconds."),
        "{}",
        regenerated.text
    );
    let new = element_text(&regenerated.text, "consumer-secret");
    token_for(&app, &key, &old, Some("read"))
        .await
        .assert_tokens(validity, "read");
    token_for(&app, &key, &new, Some("read"))
        .await
        .assert_tokens(validity, "read");
    // An edit meanwhile keeps the overlap.
    let saved = post_on_app(
        &mut devon,
        &app,
        &key,
        &format!("/portal/apps/{key}"),
        &[("name", "Rotating, renamed"), ("scope.read", "on")],
    )
    .await;
    assert_eq!(saved.status, 303, "{}", saved.text);
    token_for(&app, &key, &old, Some("read"))
        .await
        .assert_tokens(validity, "read");
    app.clock.advance_secs(61);
    token_for(&app, &key, &old, Some("read"))
        .await
        .assert_error(401, "invalid_client");
    token_for(&app, &key, &new, Some("read"))
        .await
        .assert_tokens(validity, "read");
    let event = wait_for_event(
        &audit_file(app.home.path()),
        "client_secret_regenerated",
        |_| true,
    )
    .await;
    assert!(event["previous_valid_until"].is_string(), "{event}");
    assert_eq!(event["subject"], DEVELOPER);
}

// ---------------------------------------------------------------------------------------------
// Creating.

#[tokio::test]
async fn creating_gives_only_the_grants_and_scopes_the_portal_offers() {
    let app = spawn_portal_with_clients(|_| {}).await;
    let mut devon = signed_in(&app, DEVELOPER, DEVELOPER_PASSWORD).await;

    let created = create(
        &mut devon,
        &app,
        &[
            ("name", "Weather <b>widget</b>"),
            ("type", "confidential"),
            ("grant.client_credentials", "on"),
            ("grant.password", "on"),
            ("scope.read", "on"),
            ("scope.admin", "on"),
        ],
    )
    .await;

    assert_eq!(created.status, 200, "{}", created.text);
    assert!(!created.text.contains("<b>widget"), "the name is escaped");
    let key = element_text(&created.text, "consumer-key");
    let secret = element_text(&created.text, "consumer-secret");
    let page = devon.get(&app, &format!("/portal/apps/{key}")).await;
    assert!(
        page.text
            .contains("<dt>Grant types</dt><dd>client_credentials</dd>"),
        "{}",
        page.text
    );
    assert!(page.text.contains("<dt>Scopes</dt><dd>default, read</dd>"));
    assert!(!page.text.contains("<b>widget"), "the name is escaped");
    assert!(text_of(&page).contains("<h1>Weather <b>widget</b></h1>"));
    token_for(&app, &key, &secret, Some("admin"))
        .await
        .assert_error(400, "invalid_scope");
    app.post_form_as(
        "/token",
        &key,
        &secret,
        &[
            ("grant_type", "password"),
            ("username", USER),
            ("password", PASSWORD),
        ],
    )
    .await
    .assert_error(400, "unauthorized_client");
    let event = wait_for_event(&audit_file(app.home.path()), "client_registered", |_| true).await;
    assert_eq!(event["client_id"], key.as_str());
    assert_eq!(event["subject"], DEVELOPER);
    assert_eq!(event["mode"], "portal");
    assert_eq!(
        event["grant_types"],
        serde_json::json!(["client_credentials"])
    );
    assert_eq!(event["scopes"], serde_json::json!(["read"]));
    assert_eq!(event["token_endpoint_auth_method"], "client_secret_basic");
    assert!(!event.to_string().contains(&secret));
    assert_eq!(app.metric(&portal_change("registered")).await, 1.0);
}

#[tokio::test]
async fn a_public_application_has_no_secret_and_none_can_be_regenerated() {
    let app = spawn_portal_with_clients(|_| {}).await;
    let mut devon = signed_in(&app, DEVELOPER, DEVELOPER_PASSWORD).await;

    let created = create(
        &mut devon,
        &app,
        &[
            ("name", "Notes"),
            ("type", "public"),
            ("grant.authorization_code", "on"),
            ("grant.refresh_token", "on"),
            ("redirect_uris", PUBLIC_REDIRECT_URI),
        ],
    )
    .await;

    assert_eq!(created.status, 200, "{}", created.text);
    assert!(!created.text.contains("id=\"consumer-secret\""));
    assert!(!created.text.contains("id=\"curl-command\""));
    assert!(created.text.contains("A public application has no secret"));
    let key = element_text(&created.text, "consumer-key");
    let page = devon.get(&app, &format!("/portal/apps/{key}")).await;
    assert!(
        page.text.contains("<dt>Type</dt><dd>Public</dd>"),
        "{}",
        page.text
    );
    assert!(!page.text.contains(&format!("/portal/apps/{key}/secret")));
    assert!(!page.text.contains(&format!("/portal/apps/{key}/token")));
    assert!(page.text.contains(PUBLIC_REDIRECT_URI));
    let regenerated = post_on_app(
        &mut devon,
        &app,
        &key,
        &format!("/portal/apps/{key}/secret"),
        &[],
    )
    .await;
    assert_eq!(regenerated.status, 400, "{}", regenerated.text);
    assert!(regenerated
        .text
        .contains("A public application has no secret."));
    assert!(!regenerated.text.contains("id=\"consumer-secret\""));
    let token = post_on_app(
        &mut devon,
        &app,
        &key,
        &format!("/portal/apps/{key}/token"),
        &[("client_secret", ""), ("validity", "60")],
    )
    .await;
    assert_eq!(token.status, 400, "{}", token.text);
    assert!(!token.text.contains("id=\"access-token\""));
    assert_eq!(app.metric(&portal_change("secret_regenerated")).await, 0.0);
    let event = wait_for_event(&audit_file(app.home.path()), "client_registered", |_| true).await;
    assert_eq!(event["token_endpoint_auth_method"], "none");
    // A public application cannot have client_credentials.
    let refused = create(
        &mut devon,
        &app,
        &[
            ("name", "Public service"),
            ("type", "public"),
            ("grant.client_credentials", "on"),
        ],
    )
    .await;
    assert_eq!(refused.status, 400, "{}", refused.text);
}

#[tokio::test]
async fn a_refused_create_form_is_shown_again_with_a_400_and_nothing_is_made() {
    let app = spawn_portal_with_clients(|_| {}).await;
    let mut devon = signed_in(&app, DEVELOPER, DEVELOPER_PASSWORD).await;

    let bad_redirect = create(
        &mut devon,
        &app,
        &[
            ("name", "My App"),
            ("type", "confidential"),
            ("grant.authorization_code", "on"),
            ("scope.write", "on"),
            ("redirect_uris", "http://example.com/cb"),
        ],
    )
    .await;
    let no_grant = create(
        &mut devon,
        &app,
        &[("name", "My App"), ("type", "confidential")],
    )
    .await;
    let no_name = create(
        &mut devon,
        &app,
        &[
            ("name", "  "),
            ("type", "confidential"),
            ("grant.client_credentials", "on"),
        ],
    )
    .await;

    for (what, reply) in [
        ("bad redirect URI", &bad_redirect),
        ("no grant", &no_grant),
        ("no name", &no_name),
    ] {
        assert_eq!(reply.status, 400, "{what}: {}", reply.text);
        assert!(reply.text.contains("id=\"form-error\""), "{what}");
        assert!(reply.text.contains("action=\"/portal/apps\""), "{what}");
        assert!(!reply.text.contains("id=\"consumer-secret\""), "{what}");
        assert_page_headers(reply, what);
    }
    assert!(bad_redirect.text.contains("value=\"My App\""));
    assert!(bad_redirect.text.contains("http://example.com/cb"));
    assert!(bad_redirect
        .text
        .contains("name=\"scope.write\" value=\"on\" checked"));
    assert!(text_of(&no_grant).contains("Choose at least one grant type."));
    assert!(no_grant.text.contains("value=\"My App\""));
    assert!(text_of(&no_name).contains("Give the application a name."));
    let list = devon.get(&app, "/portal/").await;
    assert!(
        list.text.contains("You have no applications yet."),
        "{}",
        list.text
    );
    assert_eq!(app.metric(&portal_change("registered")).await, 0.0);
}

// ---------------------------------------------------------------------------------------------
// Editing, disabling, deleting.

#[tokio::test]
async fn editing_changes_the_name_scopes_and_redirect_uris() {
    let app = spawn_portal_with_clients(|_| {}).await;
    let mut devon = signed_in(&app, DEVELOPER, DEVELOPER_PASSWORD).await;
    let created = create(
        &mut devon,
        &app,
        &[
            ("name", "Web app"),
            ("type", "confidential"),
            ("grant.authorization_code", "on"),
            ("grant.client_credentials", "on"),
            ("scope.read", "on"),
            ("redirect_uris", HTTPS_REDIRECT_URI),
        ],
    )
    .await;
    assert_eq!(created.status, 200, "{}", created.text);
    let key = element_text(&created.text, "consumer-key");
    let secret = element_text(&created.text, "consumer-secret");
    let validity = app.settings.oauth.application_access_token_validity_secs;
    let app_path = format!("/portal/apps/{key}");
    let second_uri = "https://app.example.test/other";

    let saved = post_on_app(
        &mut devon,
        &app,
        &key,
        &app_path,
        &[
            ("name", "Renamed app"),
            ("scope.read", "on"),
            ("scope.write", "on"),
            ("scope.admin", "on"),
            (
                "redirect_uris",
                &format!("{HTTPS_REDIRECT_URI}\r\n{second_uri}\r\n"),
            ),
        ],
    )
    .await;

    assert_eq!(saved.status, 303, "{}", saved.text);
    let location = saved.header("location").unwrap().to_owned();
    assert_eq!(location, format!("/portal/apps/{key}?done=saved"));
    let page = devon.get(&app, &location).await;
    assert_eq!(page.status, 200);
    assert!(page.text.contains("Saved."));
    assert!(page.text.contains("<h1>Renamed app</h1>"), "{}", page.text);
    assert!(page.text.contains(HTTPS_REDIRECT_URI) && page.text.contains(second_uri));
    assert!(page
        .text
        .contains("<dt>Scopes</dt><dd>default, read, write</dd>"));
    token_for(&app, &key, &secret, Some("read write"))
        .await
        .assert_tokens(validity, "read write");

    // Taking `read` away takes it from new tokens.
    let saved = post_on_app(
        &mut devon,
        &app,
        &key,
        &app_path,
        &[
            ("name", "Renamed app"),
            ("scope.write", "on"),
            ("redirect_uris", second_uri),
        ],
    )
    .await;
    assert_eq!(saved.status, 303, "{}", saved.text);
    token_for(&app, &key, &secret, Some("read"))
        .await
        .assert_error(400, "invalid_scope");
    token_for(&app, &key, &secret, Some("write"))
        .await
        .assert_tokens(validity, "write");
    let page = devon.get(&app, &app_path).await;
    assert!(!page.text.contains(HTTPS_REDIRECT_URI), "{}", page.text);

    // A redirect URI the rules refuse: a 400 on the page, nothing changed.
    let refused = post_on_app(
        &mut devon,
        &app,
        &key,
        &app_path,
        &[
            ("name", "Renamed again"),
            ("scope.write", "on"),
            ("redirect_uris", "http://example.com/cb"),
        ],
    )
    .await;
    assert_eq!(refused.status, 400, "{}", refused.text);
    assert!(refused.text.contains("id=\"form-error\""));
    let page = devon.get(&app, &app_path).await;
    assert!(page.text.contains("<h1>Renamed app</h1>"));
    assert!(page.text.contains(second_uri));
    let event = wait_for_event(
        &audit_file(app.home.path()),
        "client_registration_updated",
        |_| true,
    )
    .await;
    assert_eq!(event["client_id"], key.as_str());
    assert_eq!(event["subject"], DEVELOPER);
    assert_eq!(app.metric(&portal_change("updated")).await, 2.0);
}

#[tokio::test]
async fn an_application_without_the_code_grant_takes_no_redirect_uris() {
    let app = spawn_portal_with_clients(|_| {}).await;
    let mut devon = signed_in(&app, DEVELOPER, DEVELOPER_PASSWORD).await;
    let (key, _) = create_confidential(&mut devon, &app, "Service").await;

    let refused = post_on_app(
        &mut devon,
        &app,
        &key,
        &format!("/portal/apps/{key}"),
        &[
            ("name", "Service"),
            ("scope.read", "on"),
            ("redirect_uris", HTTPS_REDIRECT_URI),
        ],
    )
    .await;

    assert_eq!(refused.status, 400, "{}", refused.text);
    assert!(refused.text.contains("Redirect URIs are used only by"));
    assert_eq!(app.metric(&portal_change("updated")).await, 0.0);
}

#[tokio::test]
async fn a_disabled_application_gets_no_tokens_until_it_is_enabled_again() {
    let app = spawn_portal_with_clients(|_| {}).await;
    let mut devon = signed_in(&app, DEVELOPER, DEVELOPER_PASSWORD).await;
    let (key, secret) = create_confidential(&mut devon, &app, "Switchable").await;
    let validity = app.settings.oauth.application_access_token_validity_secs;
    let (access, _) = token_for(&app, &key, &secret, Some("read"))
        .await
        .assert_tokens(validity, "read");
    let status_path = format!("/portal/apps/{key}/status");

    let disabled = post_on_app(
        &mut devon,
        &app,
        &key,
        &status_path,
        &[("disabled", "true")],
    )
    .await;

    assert_eq!(disabled.status, 303, "{}", disabled.text);
    let location = disabled.header("location").unwrap().to_owned();
    assert_eq!(location, format!("/portal/apps/{key}?done=disabled"));
    let page = devon.get(&app, &location).await;
    assert!(
        page.text.contains("<dt>Status</dt><dd>Disabled</dd>"),
        "{}",
        page.text
    );
    token_for(&app, &key, &secret, Some("read"))
        .await
        .assert_error(401, "invalid_client");
    assert_eq!(app.introspect(&access).await.body["active"], false);
    let test_token = post_on_app(
        &mut devon,
        &app,
        &key,
        &format!("/portal/apps/{key}/token"),
        &[("client_secret", &secret), ("validity", "60")],
    )
    .await;
    assert_eq!(test_token.status, 400, "{}", test_token.text);
    assert!(test_token.text.contains("The application is disabled."));

    // A developer cannot undo a disabling (it may be an operator's or an admin's): an admin can.
    let refused = post_on_app(
        &mut devon,
        &app,
        &key,
        &status_path,
        &[("disabled", "false")],
    )
    .await;
    assert_eq!(refused.status, 400, "{}", refused.text);
    assert!(
        refused
            .text
            .contains("Only an administrator can enable a disabled application again."),
        "{}",
        refused.text
    );
    token_for(&app, &key, &secret, Some("read"))
        .await
        .assert_error(401, "invalid_client");
    let mut ada = signed_in(&app, ADMIN, ADMIN_PASSWORD).await;
    let enabled = post_on_app(&mut ada, &app, &key, &status_path, &[("disabled", "false")]).await;

    assert_eq!(enabled.status, 303, "{}", enabled.text);
    assert_eq!(
        enabled.header("location"),
        Some(format!("/portal/apps/{key}?done=enabled").as_str())
    );
    token_for(&app, &key, &secret, Some("read"))
        .await
        .assert_tokens(validity, "read");
    assert_eq!(app.introspect(&access).await.body["active"], true);
    let neither = post_on_app(
        &mut devon,
        &app,
        &key,
        &status_path,
        &[("disabled", "maybe")],
    )
    .await;
    assert_eq!(neither.status, 400, "{}", neither.text);
    let off = wait_for_event(&audit_file(app.home.path()), "client_disabled", |_| true).await;
    let on = wait_for_event(&audit_file(app.home.path()), "client_enabled", |_| true).await;
    assert_eq!(off["client_id"], key.as_str());
    assert_eq!(off["subject"], DEVELOPER);
    assert_eq!(on["client_id"], key.as_str());
    assert_eq!(on["subject"], ADMIN);
    assert_eq!(app.metric(&portal_change("disabled")).await, 1.0);
    assert_eq!(app.metric(&portal_change("enabled")).await, 1.0);
}

#[tokio::test]
async fn deleting_an_application_revokes_its_tokens_and_its_key() {
    let app = spawn_portal_with_clients(|_| {}).await;
    let mut devon = signed_in(&app, DEVELOPER, DEVELOPER_PASSWORD).await;
    let (key, secret) = create_confidential(&mut devon, &app, "Short-lived").await;
    let (access, _) = token_for(&app, &key, &secret, Some("read"))
        .await
        .assert_tokens(
            app.settings.oauth.application_access_token_validity_secs,
            "read",
        );
    assert_eq!(app.introspect(&access).await.body["active"], true);
    let confirm = devon.get(&app, &format!("/portal/apps/{key}/delete")).await;
    assert_eq!(confirm.status, 200, "{}", confirm.text);
    assert!(confirm
        .text
        .contains(&format!("action=\"/portal/apps/{key}/delete\"")));
    assert_page_headers(&confirm, "delete page");

    let deleted = post_form(
        &mut devon,
        &app,
        &format!("/portal/apps/{key}/delete"),
        &format!("/portal/apps/{key}/delete"),
        &[],
    )
    .await;

    assert_eq!(deleted.status, 303, "{}", deleted.text);
    assert_eq!(deleted.header("location"), Some("/portal/?done=deleted"));
    let list = devon.get(&app, "/portal/?done=deleted").await;
    assert!(list.text.contains("The application was deleted"));
    assert!(!list.text.contains(&key));
    let introspected = app.introspect(&access).await;
    assert_eq!(introspected.status, 200);
    assert_eq!(introspected.body, serde_json::json!({"active": false}));
    token_for(&app, &key, &secret, Some("read"))
        .await
        .assert_error(401, "invalid_client");
    assert_eq!(
        devon.get(&app, &format!("/portal/apps/{key}")).await.status,
        404
    );
    let event = wait_for_event(
        &audit_file(app.home.path()),
        "client_registration_deleted",
        |_| true,
    )
    .await;
    assert_eq!(event["client_id"], key.as_str());
    assert_eq!(event["subject"], DEVELOPER);
    assert_eq!(app.metric(&portal_change("deleted")).await, 1.0);
}

// ---------------------------------------------------------------------------------------------
// Generate a token.

#[tokio::test]
async fn generate_a_token_shows_an_active_token_and_its_curl_command_once() {
    let app = spawn_portal_with_clients(|_| {}).await;
    let mut devon = signed_in(&app, DEVELOPER, DEVELOPER_PASSWORD).await;
    let (key, secret) = create_confidential(&mut devon, &app, "Tester").await;
    let token_path = format!("/portal/apps/{key}/token");
    let page = devon.get(&app, &format!("/portal/apps/{key}")).await;
    assert!(page.text.contains(&format!("action=\"{token_path}\"")));

    let shown = post_on_app(
        &mut devon,
        &app,
        &key,
        &token_path,
        &[
            ("client_secret", &secret),
            ("validity", "120"),
            ("scope", "read"),
        ],
    )
    .await;

    assert_eq!(shown.status, 200, "{}", shown.text);
    assert_page_headers(&shown, "test token");
    let access = element_text(&shown.text, "access-token");
    let introspected = app.introspect(&access).await;
    assert_eq!(introspected.body["active"], true, "{}", introspected.text);
    assert_eq!(introspected.body["client_id"], key.as_str());
    assert_eq!(introspected.body["scope"], "read");
    let lifetime = introspected.body["exp"].as_i64().unwrap() - app.clock_now();
    assert!((118..=121).contains(&lifetime), "{lifetime}");
    let curl = element_text(&shown.text, "curl-command");
    let basic = STANDARD.encode(format!("{key}:{secret}"));
    assert!(
        curl.contains(&format!("-H 'Authorization: Basic {basic}'")),
        "{curl}"
    );
    let metadata = app.get("/.well-known/oauth-authorization-server").await;
    let token_endpoint = metadata.body["token_endpoint"].as_str().unwrap();
    assert!(
        curl.starts_with(&format!("curl -X POST '{token_endpoint}' ")),
        "{curl}"
    );
    // The command's header works.
    let by_command = app
        .client
        .post(app.url("/token"))
        .header("authorization", format!("Basic {basic}"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    Reply::read(by_command).await.assert_tokens(
        app.settings.oauth.application_access_token_validity_secs,
        "default",
    );
    let page = devon.get(&app, &format!("/portal/apps/{key}")).await;
    assert!(!page.text.contains(&access) && !page.text.contains(&secret));
    let event = wait_for_event(&audit_file(app.home.path()), "portal_token_issued", |_| {
        true
    })
    .await;
    assert_eq!(event["client_id"], key.as_str());
    assert_eq!(event["subject"], DEVELOPER);
    assert_eq!(event["expires_in"], 120);
    assert_eq!(event["scope"], "read");
    assert!(!event.to_string().contains(&access) && !event.to_string().contains(&secret));
}

#[tokio::test]
async fn generate_a_token_refuses_a_wrong_secret_a_validity_out_of_range_and_a_scope_not_given() {
    let app = spawn_portal_with_clients(|_| {}).await;
    let mut devon = signed_in(&app, DEVELOPER, DEVELOPER_PASSWORD).await;
    let (key, secret) = create_confidential(&mut devon, &app, "Tester").await;
    let token_path = format!("/portal/apps/{key}/token");
    let max = app.settings.oauth.application_access_token_validity_secs;
    let above = (max + 1).to_string();

    let mut refusals = Vec::new();
    for (what, client_secret, validity, scope, text) in [
        (
            "wrong secret",
            "not-the-secret",
            "120",
            "",
            "That is not the application's consumer secret.",
        ),
        (
            "above the maximum",
            secret.as_str(),
            above.as_str(),
            "",
            "The validity must be between 1",
        ),
        (
            "zero",
            secret.as_str(),
            "0",
            "",
            "The validity must be between 1",
        ),
        (
            "not a number",
            secret.as_str(),
            "soon",
            "",
            "The validity must be a number of seconds.",
        ),
        (
            "scope not given",
            secret.as_str(),
            "120",
            "write",
            "The application may not have that scope.",
        ),
    ] {
        let reply = post_on_app(
            &mut devon,
            &app,
            &key,
            &token_path,
            &[
                ("client_secret", client_secret),
                ("validity", validity),
                ("scope", scope),
            ],
        )
        .await;
        assert_eq!(reply.status, 400, "{what}: {}", reply.text);
        assert!(text_of(&reply).contains(text), "{what}: {}", reply.text);
        assert!(!reply.text.contains("id=\"access-token\""), "{what}");
        assert!(!reply.text.contains(&secret), "{what}");
        refusals.push(reply);
    }

    // An application without client_credentials has no form, and a post is refused.
    let created = create(
        &mut devon,
        &app,
        &[
            ("name", "Code only"),
            ("type", "confidential"),
            ("grant.authorization_code", "on"),
            ("redirect_uris", HTTPS_REDIRECT_URI),
        ],
    )
    .await;
    assert_eq!(created.status, 200, "{}", created.text);
    let code_key = element_text(&created.text, "consumer-key");
    let code_secret = element_text(&created.text, "consumer-secret");
    let code_path = format!("/portal/apps/{code_key}/token");
    let page = devon.get(&app, &format!("/portal/apps/{code_key}")).await;
    assert!(!page.text.contains(&format!("action=\"{code_path}\"")));
    let refused = post_on_app(
        &mut devon,
        &app,
        &code_key,
        &code_path,
        &[("client_secret", &code_secret), ("validity", "60")],
    )
    .await;
    assert_eq!(refused.status, 400, "{}", refused.text);
    assert!(!refused.text.contains("id=\"access-token\""));
    // One good one last: the only one audited.
    let shown = post_on_app(
        &mut devon,
        &app,
        &key,
        &token_path,
        &[("client_secret", &secret), ("validity", &max.to_string())],
    )
    .await;
    assert_eq!(shown.status, 200, "{}", shown.text);
    wait_for_event(&audit_file(app.home.path()), "portal_token_issued", |_| {
        true
    })
    .await;
    assert_eq!(
        events_named(&audit_file(app.home.path()), "portal_token_issued").len(),
        1
    );
}

// ---------------------------------------------------------------------------------------------
// Limits and headers.

#[tokio::test]
async fn a_developer_may_own_at_most_fifty_applications_and_an_admin_is_not_limited() {
    let app = spawn_portal_with_clients(|_| {}).await;
    let mut devon = signed_in(&app, DEVELOPER, DEVELOPER_PASSWORD).await;
    let page = devon.get(&app, "/portal/apps/new").await;
    let fields = |name: String| {
        vec![
            ("csrf_token".to_owned(), csrf(&page)),
            ("name".to_owned(), name),
            ("type".to_owned(), "confidential".to_owned()),
            ("grant.client_credentials".to_owned(), "on".to_owned()),
        ]
    };
    for n in 0..MAX_APPLICATIONS_PER_DEVELOPER {
        let reply = devon
            .post_to(&app, "/portal/apps", &fields(format!("App {n}")))
            .await;
        assert_eq!(reply.status, 200, "app {n}: {}", reply.text);
    }

    let over = devon
        .post_to(&app, "/portal/apps", &fields("One too many".into()))
        .await;

    assert_eq!(over.status, 400, "{}", over.text);
    assert!(
        over.text
            .contains("applications, the most a developer may have"),
        "{}",
        over.text
    );
    assert!(!devon
        .get(&app, "/portal/")
        .await
        .text
        .contains("One too many"));
    let mut ada = signed_in(&app, ADMIN, ADMIN_PASSWORD).await;
    let admin_page = ada.get(&app, "/portal/apps/new").await;
    let by_admin = ada
        .post_to(
            &app,
            "/portal/apps",
            &[
                ("csrf_token".to_owned(), csrf(&admin_page)),
                ("name".to_owned(), "Admin's app".to_owned()),
                ("type".to_owned(), "confidential".to_owned()),
                ("grant.client_credentials".to_owned(), "on".to_owned()),
            ],
        )
        .await;
    assert_eq!(by_admin.status, 200, "{}", by_admin.text);
}

#[tokio::test]
async fn every_portal_page_has_the_security_headers_and_no_script() {
    let app = spawn_portal_with_clients(|_| {}).await;
    let mut anonymous = Browser::default();
    let mut pages = vec![
        ("sign-in form", anonymous.get(&app, "/portal/").await),
        ("/portal", anonymous.get(&app, "/portal").await),
    ];
    let mut devon = signed_in(&app, DEVELOPER, DEVELOPER_PASSWORD).await;
    let (key, _) = create_confidential(&mut devon, &app, "Headers").await;
    pages.push(("list", devon.get(&app, "/portal/").await));
    pages.push(("new", devon.get(&app, "/portal/apps/new").await));
    pages.push(("app", devon.get(&app, &format!("/portal/apps/{key}")).await));
    pages.push((
        "delete",
        devon.get(&app, &format!("/portal/apps/{key}/delete")).await,
    ));
    pages.push(("not found", devon.get(&app, "/portal/apps/nope").await));
    pages.push((
        "refused create",
        create(&mut devon, &app, &[("name", "x")]).await,
    ));
    pages.push((
        "saved",
        post_on_app(
            &mut devon,
            &app,
            &key,
            &format!("/portal/apps/{key}/status"),
            &[("disabled", "true")],
        )
        .await,
    ));
    pages.push((
        "secret",
        post_on_app(
            &mut devon,
            &app,
            &key,
            &format!("/portal/apps/{key}/secret"),
            &[],
        )
        .await,
    ));

    for (what, page) in &pages {
        assert_page_headers(page, what);
        assert!(!page.text.contains("<script"), "{what}");
    }
    assert_eq!(pages[1].1.status, 303);
    assert_eq!(pages[1].1.header("location"), Some("/portal/"));
}

// ---------------------------------------------------------------------------------------------
// Another node's change not yet seen here (played by writing the row beside the app, whose
// clients are not re-read within the test).

/// Gives client `id` the secret `new` in the database, as another node's portal does.
async fn replace_secret_elsewhere(app: &TestApp, id: &str, new: &str) {
    let database = open_database(&app.settings.stores.tokens, Arc::new(Unobserved))
        .await
        .unwrap();
    let stored = database
        .directory
        .list_clients()
        .await
        .unwrap()
        .into_iter()
        .find(|row| row.id == id)
        .unwrap()
        .secret_hash;
    assert!(database
        .registrations
        .replace_client_secret(id, &stored, &secret::hash_sha256(new), None)
        .await
        .unwrap());
    database.tokens.close().await;
}

#[tokio::test]
async fn an_edit_on_a_node_that_has_not_seen_a_new_secret_does_not_bring_the_old_one_back() {
    let app = spawn_portal_with_clients(|settings| {
        settings.stores.reload_interval = std::time::Duration::from_secs(3600);
    })
    .await;
    let mut devon = signed_in(&app, DEVELOPER, DEVELOPER_PASSWORD).await;
    let (key, old) = create_confidential(&mut devon, &app, "Two nodes").await;
    let new = secret::generate_secret();
    replace_secret_elsewhere(&app, &key, &new).await;

    let saved = post_on_app(
        &mut devon,
        &app,
        &key,
        &format!("/portal/apps/{key}"),
        &[("name", "Two nodes, renamed"), ("scope.read", "on")],
    )
    .await;

    assert_eq!(saved.status, 303, "{}", saved.text);
    token_for(&app, &key, &old, Some("read"))
        .await
        .assert_error(401, "invalid_client");
    token_for(&app, &key, &new, Some("read"))
        .await
        .assert_tokens(
            app.settings.oauth.application_access_token_validity_secs,
            "read",
        );
}

#[tokio::test]
async fn a_regeneration_on_a_node_that_has_not_seen_the_last_one_keeps_only_the_last_secret() {
    let app = spawn_portal_with_clients(|settings| {
        settings.stores.reload_interval = std::time::Duration::from_secs(3600);
        settings.portal.secret_overlap_secs = 60;
    })
    .await;
    let mut devon = signed_in(&app, DEVELOPER, DEVELOPER_PASSWORD).await;
    let (key, first) = create_confidential(&mut devon, &app, "Two nodes").await;
    let second = secret::generate_secret();
    replace_secret_elsewhere(&app, &key, &second).await;

    let regenerated = post_on_app(
        &mut devon,
        &app,
        &key,
        &format!("/portal/apps/{key}/secret"),
        &[],
    )
    .await;

    assert_eq!(regenerated.status, 200, "{}", regenerated.text);
    let third = element_text(&regenerated.text, "consumer-secret");
    let validity = app.settings.oauth.application_access_token_validity_secs;
    token_for(&app, &key, &first, Some("read"))
        .await
        .assert_error(401, "invalid_client");
    token_for(&app, &key, &second, Some("read"))
        .await
        .assert_tokens(validity, "read");
    token_for(&app, &key, &third, Some("read"))
        .await
        .assert_tokens(validity, "read");
}

#[tokio::test]
async fn two_nodes_on_postgres_share_the_portal_and_an_edit_on_the_second_keeps_the_new_secret() {
    let Some(database) = TestDatabase::create("portal_two_nodes").await else {
        return;
    };
    let clock = Arc::new(ManualClock::starting_now());
    let node = |clock| {
        spawn_portal_on(Some(&database), clock, true, |settings| {
            settings.stores.reload_interval = std::time::Duration::from_secs(3600);
        })
    };
    let first = node(clock.clone()).await;
    let second = node(clock.clone()).await;
    let mut devon = signed_in(&first, DEVELOPER, DEVELOPER_PASSWORD).await;
    let (key, old) = create_confidential(&mut devon, &first, "Clustered").await;
    let app_path = format!("/portal/apps/{key}");
    // The second node re-reads the table when it makes an application itself (an unknown id
    // does not make it re-read); then it finds the first one, with the first node's session.
    create_confidential(&mut devon, &second, "Made on the second node").await;
    let seen = devon.get(&second, &app_path).await;
    assert_eq!(seen.status, 200, "{}", seen.text);

    let regenerated =
        post_on_app(&mut devon, &first, &key, &format!("{app_path}/secret"), &[]).await;
    assert_eq!(regenerated.status, 200, "{}", regenerated.text);
    let new = element_text(&regenerated.text, "consumer-secret");
    let saved = post_on_app(
        &mut devon,
        &second,
        &key,
        &app_path,
        &[("name", "Clustered, renamed"), ("scope.read", "on")],
    )
    .await;

    assert_eq!(saved.status, 303, "{}", saved.text);
    let validity = first.settings.oauth.application_access_token_validity_secs;
    for node in [&first, &second] {
        token_for(node, &key, &old, Some("read"))
            .await
            .assert_error(401, "invalid_client");
        token_for(node, &key, &new, Some("read"))
            .await
            .assert_tokens(validity, "read");
    }
    // (The first node shows the new name once it re-reads the table: within the interval.)
    let page = devon.get(&second, &app_path).await;
    assert!(
        page.text.contains("<h1>Clustered, renamed</h1>"),
        "{}",
        page.text
    );
}

#[tokio::test]
async fn an_operator_chosen_secret_regenerated_with_an_overlap_stops_at_once_and_the_page_says_so()
{
    let app = spawn_portal_with_clients(|settings| settings.portal.secret_overlap_secs = 60).await;
    let mut ada = signed_in(&app, ADMIN, ADMIN_PASSWORD).await;
    let validity = app.settings.oauth.application_access_token_validity_secs;
    token_for(&app, OPERATOR_ARGON_CLIENT_ID, ARGON_CLIENT_SECRET, None)
        .await
        .assert_tokens(validity, "default");

    let regenerated = post_on_app(
        &mut ada,
        &app,
        OPERATOR_ARGON_CLIENT_ID,
        &format!("/portal/apps/{OPERATOR_ARGON_CLIENT_ID}/secret"),
        &[],
    )
    .await;

    assert_eq!(regenerated.status, 200, "{}", regenerated.text);
    assert!(
        regenerated.text.contains("The old one no longer works."),
        "{}",
        regenerated.text
    );
    let new = element_text(&regenerated.text, "consumer-secret");
    token_for(&app, OPERATOR_ARGON_CLIENT_ID, ARGON_CLIENT_SECRET, None)
        .await
        .assert_error(401, "invalid_client");
    token_for(&app, OPERATOR_ARGON_CLIENT_ID, &new, None)
        .await
        .assert_tokens(validity, "default");
    let event = wait_for_event(
        &audit_file(app.home.path()),
        "client_secret_regenerated",
        |_| true,
    )
    .await;
    assert!(event["previous_valid_until"].is_null(), "{event}");
    assert_eq!(event["subject"], ADMIN);
}

#[tokio::test]
async fn the_sign_in_form_without_its_csrf_cookie_or_value_is_refused() {
    let app = spawn_portal_with_clients(|_| {}).await;
    let page = app.get("/portal/").await;
    let csrf_value = cookie_set(&page, CSRF_COOKIE).unwrap();
    let credentials = [("username", DEVELOPER), ("password", DEVELOPER_PASSWORD)];

    let without_cookie = post_with_cookies(
        &app,
        "/portal/login",
        "",
        &[credentials[0], credentials[1], ("csrf_token", &csrf_value)],
    )
    .await;
    let wrong_value = post_with_cookies(
        &app,
        "/portal/login",
        &format!("{CSRF_COOKIE}={csrf_value}"),
        &[
            credentials[0],
            credentials[1],
            ("csrf_token", &"A".repeat(43)),
        ],
    )
    .await;

    for (what, reply) in [
        ("no cookie", &without_cookie),
        ("wrong value", &wrong_value),
    ] {
        assert_eq!(reply.status, 403, "{what}: {}", reply.text);
        assert!(reply.text.contains("expired"), "{what}");
        assert_eq!(cookie_set(reply, SESSION_COOKIE), None, "{what}");
        assert_page_headers(reply, what);
    }
    assert!(without_cookie.headers.get("set-cookie").is_none());
}

#[tokio::test]
async fn signed_in_pages_take_from_the_per_address_rate_limit_and_answer_a_page_over_it() {
    let app = spawn_portal_with_clients(|settings| {
        settings.rate_limit.per_ip = Some(tokengate::abuse::rate_limit::Rate {
            per_second: 0.001,
            burst: 3.0,
        });
    })
    .await;
    // The sign-in post takes one.
    let mut devon = signed_in(&app, DEVELOPER, DEVELOPER_PASSWORD).await;

    let first = devon.get(&app, "/portal/").await;
    let second = devon.get(&app, "/portal/apps/new").await;
    let over = devon.get(&app, "/portal/").await;

    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(second.status, 200, "{}", second.text);
    assert_eq!(over.status, 429, "{}", over.text);
    assert!(over.header("retry-after").is_some());
    assert!(over.text.contains("Too many attempts"));
    assert_page_headers(&over, "over the limit");
}

/// A regeneration whose browser went away while the store was busy still completes: the new
/// secret is in force and the change is audited and counted (it runs in a task of its own; a
/// handler dropped at its store write would have left it unaudited, and the developer without
/// the secret and without a trace).
#[tokio::test]
async fn a_regeneration_whose_browser_went_away_is_completed_and_audited() {
    use sqlx::Connection as _;
    let app = spawn_portal(|_| {}).await;
    let mut devon = signed_in(&app, DEVELOPER, DEVELOPER_PASSWORD).await;
    let (key, old) = create_confidential(&mut devon, &app, "Patient").await;
    let page = devon.get(&app, &format!("/portal/apps/{key}")).await;
    let form = vec![("csrf_token".to_owned(), csrf(&page))];
    let mut intruder =
        sqlx::SqliteConnection::connect_with(&crate::store_failure::store_file(&app))
            .await
            .unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut intruder)
        .await
        .unwrap();

    // The browser gives up while the store waits for the lock...
    let path = format!("/portal/apps/{key}/secret");
    let gave_up = tokio::time::timeout(
        std::time::Duration::from_millis(500),
        devon.post_to(&app, &path, &form),
    )
    .await;
    assert!(gave_up.is_err(), "the regeneration should still be waiting");
    // ...and the lock goes before the store's busy timeout (5 s).
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    sqlx::query("ROLLBACK")
        .execute(&mut intruder)
        .await
        .unwrap();
    drop(intruder);

    let event = wait_for_event(
        &audit_file(app.home.path()),
        "client_secret_regenerated",
        |_| true,
    )
    .await;
    assert_eq!(event["client_id"], key.as_str());
    assert_eq!(event["subject"], DEVELOPER);
    token_for(&app, &key, &old, Some("read"))
        .await
        .assert_error(401, "invalid_client");
    assert_eq!(app.metric(&portal_change("secret_regenerated")).await, 1.0);
}
