//! The developer portal in a real browser (issue 13): headless Chromium signs a developer in at
//! `/portal/`, creates an application, reads its consumer key, secret and curl command off the
//! page, runs that command with the real `curl` for a token, regenerates the secret (the old one
//! is refused at `/token`, the new one works) and deletes the application through its
//! confirmation page (its tokens are then inactive at `/introspect`). The portal's pages fit a
//! phone screen, name every control, and the keyboard follows the create form. Each test prints
//! one `skipped:` line when Chromium is not installed.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use fantoccini::key::Key;
use fantoccini::Locator;
use serde_json::Value;
use tokengate::crypto::secret;
use tokengate::store::measured::Unobserved;
use tokengate::store::model::Client;
use tokengate::store::open_database;

use crate::helpers::browser::Browser;
use crate::helpers::process::poll_until;
use crate::helpers::*;
use crate::portal::{spawn_portal, DEVELOPER, DEVELOPER_PASSWORD};

pub(crate) const APP_NAME: &str = "Weather station";
/// The create form's radio button for a confidential application, by its label.
const CONFIDENTIAL: &str = "Confidential: a server or a script that keeps a secret";
const PUBLIC: &str = "Public: a mobile or browser app (authorization code with PKCE, no secret)";

/// What the page shows once after "Create": the consumer key and secret, and the curl command.
pub(crate) struct Created {
    pub(crate) key: String,
    pub(crate) secret: String,
    pub(crate) curl: String,
}

/// The name libtest gave the running test (its thread's), for `skipped:` lines.
fn test_name() -> String {
    std::thread::current()
        .name()
        .filter(|name| *name != "main")
        .unwrap_or("a browser test")
        .to_owned()
}

/// Opens `/portal/`, signs in as the developer by the labelled fields and the "Sign in" button,
/// and waits for the list of applications.
pub(crate) async fn sign_in(browser: &Browser, app: &TestApp) {
    browser.goto(&app.url("/portal/")).await;
    let username = browser.input_labelled("Username").await;
    username.send_keys(DEVELOPER).await.unwrap();
    let password = browser.input_labelled("Password").await;
    password.send_keys(DEVELOPER_PASSWORD).await.unwrap();
    browser.button("Sign in").await.click().await.unwrap();
    browser.wait_for_heading("Applications").await;
}

/// Follows "Create an application" from the list and waits for the form.
async fn open_the_create_form(browser: &Browser) {
    browser
        .link("Create an application")
        .await
        .click()
        .await
        .unwrap();
    browser.wait_for_heading("Create an application").await;
}

/// From the list: a confidential client_credentials application `name` with scope `read`, made
/// through the form as a person fills it in; what the page then shows once.
pub(crate) async fn create_application(browser: &Browser, name: &str) -> Created {
    open_the_create_form(browser).await;
    let name_field = browser.input_labelled("Name").await;
    name_field.send_keys(name).await.unwrap();
    browser.choose(CONFIDENTIAL).await;
    browser.choose("client_credentials").await;
    browser.choose("read").await;
    browser.button("Create").await.click().await.unwrap();
    browser.wait_for_heading("Application created").await;
    Created {
        key: browser.text_of("consumer-key").await,
        secret: browser.text_of("consumer-secret").await,
        curl: browser.text_of("curl-command").await,
    }
}

/// The server's certificate file (the harness generates it for localhost, 127.0.0.1 and ::1).
fn certificate(app: &TestApp) -> PathBuf {
    let cert = app.settings.tls.cert.clone();
    assert!(cert.is_file(), "no certificate at {}", cert.display());
    cert
}

/// Whether `curl` can be run.
fn curl_installed() -> bool {
    Command::new("curl")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success())
}

/// Runs `command`, as copied off the page, in a POSIX shell (it is single-quoted for one), with
/// no proxy and `ca` as curl's only trusted certificate (`None`: the system's);
/// `--silent --show-error --fail-with-body` appended after its last quoted argument.
async fn run_in_a_shell(command: &str, ca: Option<&Path>) -> std::process::Output {
    assert!(
        command.starts_with("curl ") && !command.contains('\n'),
        "not one curl command line: {command:?}"
    );
    let line = format!("{command} --silent --show-error --fail-with-body --max-time 30");
    let ca = ca.map(Path::to_path_buf);
    // A blocking child on the blocking pool: the test's runtime also runs the server.
    tokio::task::spawn_blocking(move || {
        let mut shell = Command::new("sh");
        shell.arg("-c").arg(line);
        match ca {
            Some(ca) => shell.env("CURL_CA_BUNDLE", ca),
            None => shell.env_remove("CURL_CA_BUNDLE"),
        };
        for proxy in [
            "http_proxy",
            "https_proxy",
            "all_proxy",
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
        ] {
            shell.env_remove(proxy);
        }
        shell.output().unwrap()
    })
    .await
    .unwrap()
}

/// The JSON the page's curl command prints, trusting the server's certificate.
async fn token_by_curl(command: &str, ca: &Path) -> Value {
    let output = run_in_a_shell(command, Some(ca)).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the page's curl command failed ({}): {stdout}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(&stdout)
        .unwrap_or_else(|err| panic!("curl printed no JSON ({err}): {stdout}"))
}

/// A client_credentials grant (scope `read`) with HTTP Basic `key` and `secret`.
async fn client_credentials(app: &TestApp, key: &str, secret: &str) -> Reply {
    app.post_token_as(
        key,
        secret,
        &[("grant_type", "client_credentials"), ("scope", "read")],
    )
    .await
}

/// Adds the fixture's resource server (`RESOURCE_SERVER_ID`, `SHARED_SECRET`, allowed to
/// introspect) to the portal app's database, as the CLI would beside the running server, and
/// waits until the server has re-read its clients and lets it introspect.
async fn add_the_resource_server(app: &TestApp) {
    let database = open_database(&app.settings.stores.tokens, Arc::new(Unobserved))
        .await
        .unwrap();
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
        .add_client(&resource_server, app.clock_now())
        .await
        .unwrap());
    database.tokens.close().await;
    let answer = poll_until(
        || app.introspect("not-a-token"),
        |reply| reply.status == 200,
    )
    .await;
    assert_eq!(answer.body["active"], false, "{}", answer.text);
}

/// Whether `/introspect` (as the fixture's resource server) says `token` is active.
async fn active(app: &TestApp, token: &str) -> bool {
    let introspected = app.introspect(token).await;
    assert_eq!(introspected.status, 200, "{}", introspected.text);
    introspected.body["active"]
        .as_bool()
        .unwrap_or_else(|| panic!("no `active`: {}", introspected.text))
}

#[tokio::test]
async fn a_developer_creates_an_application_gets_a_token_with_its_curl_command_regenerates_the_secret_and_deletes_it(
) {
    // Arrange
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = spawn_portal(|_| {}).await;
    add_the_resource_server(&app).await;
    let validity = app.settings.oauth.application_access_token_validity_secs;

    // Act: sign in, create the application, read what the page shows once.
    sign_in(&browser, &app).await;
    let created = create_application(&browser, APP_NAME).await;

    // Assert: a key, a secret, and a command for this server's token endpoint with them.
    assert!(!created.key.is_empty() && !created.secret.is_empty());
    assert_ne!(created.key, created.secret);
    let port = app.addr.port();
    assert!(
        created
            .curl
            .starts_with(&format!("curl -X POST 'https://localhost:{port}/token' ")),
        "{}",
        created.curl
    );

    // Act: run the command as shown, with the server's certificate as curl's CA.
    let first_token = if curl_installed() {
        // (curl checks the certificate: without it as a CA, it refuses the server.)
        let unverified = run_in_a_shell(&created.curl, None).await;
        assert_eq!(
            unverified.status.code(),
            Some(60),
            "{}",
            String::from_utf8_lossy(&unverified.stderr)
        );
        let answer = token_by_curl(&created.curl, &certificate(&app)).await;
        // Assert: a bearer token of the application's validity.
        assert_eq!(answer["token_type"], "Bearer", "{answer}");
        assert_eq!(answer["expires_in"], validity, "{answer}");
        assert_eq!(answer["scope"], "default", "{answer}");
        let token = answer["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no access_token: {answer}"))
            .to_owned();
        assert_token_shape(&token);
        token
    } else {
        let _ = writeln!(
            std::io::stderr(),
            "skipped: {} runs the page's curl command (no curl installed; the rest ran)",
            test_name()
        );
        let (token, _) = client_credentials(&app, &created.key, &created.secret)
            .await
            .assert_tokens(validity, "read");
        token
    };
    let introspected = app.introspect(&first_token).await;
    assert_eq!(introspected.body["active"], true, "{}", introspected.text);
    assert_eq!(introspected.body["client_id"], created.key.as_str());

    // Act: regenerate the secret on the application's page.
    browser
        .link("Back to the application")
        .await
        .click()
        .await
        .unwrap();
    browser.wait_for_heading(APP_NAME).await;
    assert_eq!(browser.text_of("consumer-key").await, created.key);
    browser
        .button("Regenerate the secret")
        .await
        .click()
        .await
        .unwrap();
    browser.wait_for_heading("New consumer secret").await;
    let new_secret = browser.text_of("consumer-secret").await;

    // Assert: a new secret for the same key; the old one refused, the new one works.
    assert_eq!(browser.text_of("consumer-key").await, created.key);
    assert_ne!(new_secret, created.secret);
    let refused = client_credentials(&app, &created.key, &created.secret).await;
    refused.assert_error(401, "invalid_client");
    let (second_token, _) = client_credentials(&app, &created.key, &new_secret)
        .await
        .assert_tokens(validity, "read");
    assert!(active(&app, &second_token).await);

    // Act: delete the application through its confirmation page.
    browser
        .link("Back to the application")
        .await
        .click()
        .await
        .unwrap();
    browser.wait_for_heading(APP_NAME).await;
    browser
        .link("Delete the application…")
        .await
        .click()
        .await
        .unwrap();
    browser
        .wait_for_heading(&format!("Delete {APP_NAME}?"))
        .await;
    browser.button("Delete").await.click().await.unwrap();
    browser.wait_for_heading("Applications").await;

    // Assert: gone from the list, its tokens inactive, its key refused.
    let notice = browser.wait_for(Locator::Css("[role=status]")).await;
    assert_eq!(
        notice.text().await.unwrap(),
        "The application was deleted and its tokens revoked."
    );
    let list = browser.wait_for(Locator::Css("main")).await;
    let list = list.text().await.unwrap();
    assert!(!list.contains(APP_NAME), "{list}");
    assert!(!list.contains(&created.key), "{list}");
    assert!(
        !active(&app, &first_token).await,
        "the curl token is active"
    );
    assert!(
        !active(&app, &second_token).await,
        "the second token is active"
    );
    client_credentials(&app, &created.key, &new_secret)
        .await
        .assert_error(401, "invalid_client");
    browser.close().await;
}

/// Asserts that the page does not scroll sideways and that every control a person uses (input,
/// text area, button, link) has an accessible name.
async fn assert_fits_and_names_its_controls(browser: &Browser, page: &str) {
    let widths = browser
        .script(
            "return [document.documentElement.scrollWidth, window.innerWidth, \
             document.body.scrollWidth];",
        )
        .await;
    let (scroll_width, width) = (widths[0].as_i64().unwrap(), widths[1].as_i64().unwrap());
    assert!(
        scroll_width <= width,
        "{page} scrolls sideways at {width} px: {widths}"
    );
    let controls = browser
        .client
        .find_all(Locator::XPath(
            "//input[not(@type = 'hidden')] | //textarea | //select | //button | //a",
        ))
        .await
        .unwrap();
    assert!(!controls.is_empty(), "{page} has no controls");
    for control in controls {
        let name = browser.computed_label(&control).await;
        let html = control.html(false).await.unwrap();
        assert!(
            !name.trim().is_empty(),
            "{page}: no accessible name for {html}"
        );
    }
}

#[tokio::test]
async fn every_portal_page_fits_a_phone_screen_and_names_its_controls() {
    // Arrange
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = spawn_portal(|_| {}).await;
    browser.goto(&app.url("/portal/")).await;
    browser.set_viewport(360, 740).await;

    // Act + Assert: each page on the way through the portal.
    browser.input_labelled("Username").await;
    assert_fits_and_names_its_controls(&browser, "the sign-in page").await;
    sign_in(&browser, &app).await;
    assert_fits_and_names_its_controls(&browser, "the empty list").await;
    open_the_create_form(&browser).await;
    assert_fits_and_names_its_controls(&browser, "the create form").await;
    browser.goto(&app.url("/portal/")).await;
    let created = create_application(&browser, APP_NAME).await;
    assert_fits_and_names_its_controls(&browser, "the created page (key, secret, curl)").await;
    browser
        .goto(&app.url(&format!("/portal/apps/{}", created.key)))
        .await;
    browser.wait_for_heading(APP_NAME).await;
    assert_fits_and_names_its_controls(&browser, "the application's page").await;
    browser
        .link("Delete the application…")
        .await
        .click()
        .await
        .unwrap();
    browser
        .wait_for_heading(&format!("Delete {APP_NAME}?"))
        .await;
    assert_fits_and_names_its_controls(&browser, "the delete confirmation").await;
    browser.goto(&app.url("/portal/")).await;
    browser.wait_for_heading("Applications").await;
    browser.link(APP_NAME).await;
    assert_fits_and_names_its_controls(&browser, "the list of applications").await;
    browser.close().await;
}

#[tokio::test]
async fn the_create_form_names_every_input_and_the_keyboard_goes_through_it_in_order() {
    // Arrange
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = spawn_portal(|_| {}).await;
    browser.goto(&app.url("/portal/")).await;
    let username = browser.input_labelled("Username").await;
    assert_eq!(
        browser.focused().await,
        username.element_id().to_string(),
        "the portal's sign-in form has no focus on its username field"
    );
    sign_in(&browser, &app).await;
    open_the_create_form(&browser).await;

    // Act: every control of the form, and its group.
    let mut names = Vec::new();
    for control in browser
        .client
        .find_all(Locator::XPath(
            "//form[@action = '/portal/apps']//*[self::input[not(@type = 'hidden')] or \
             self::textarea or self::button]",
        ))
        .await
        .unwrap()
    {
        names.push(browser.computed_label(&control).await);
    }
    let mut groups = Vec::new();
    for fieldset in browser
        .client
        .find_all(Locator::Css("form fieldset"))
        .await
        .unwrap()
    {
        groups.push(browser.computed_label(&fieldset).await);
    }

    // Assert: each named by its label; the radio buttons and checkboxes in named groups.
    assert_eq!(
        names,
        [
            "Name",
            CONFIDENTIAL,
            PUBLIC,
            "refresh_token",
            "client_credentials",
            "authorization_code",
            "read",
            "write",
            "Redirect URIs",
            "Create",
        ],
    );
    assert_eq!(groups, ["Type", "Grant types", "Scopes"]);
    browser.input_labelled("Name").await;
    browser.input_labelled("Redirect URIs").await;

    // Act: from the name field, Tab through the form.
    browser.input_labelled("Name").await.click().await.unwrap();
    let mut order = Vec::new();
    for _ in 0..8 {
        let focused = browser.client.active_element().await.unwrap();
        focused.send_keys(&Key::Tab).await.unwrap();
        let focused = browser.client.active_element().await.unwrap();
        order.push(browser.computed_label(&focused).await);
    }

    // Assert: the checked radio button (one stop for the group), each checkbox, the text area,
    // then Create.
    assert_eq!(
        order,
        [
            CONFIDENTIAL,
            "refresh_token",
            "client_credentials",
            "authorization_code",
            "read",
            "write",
            "Redirect URIs",
            "Create",
        ],
    );
    browser.close().await;
}
