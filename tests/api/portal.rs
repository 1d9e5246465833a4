//! The developer portal (`/portal/`, `[portal] enabled`) over real HTTPS, as a browser uses it
//! (cookies carried by hand, forms posted with their CSRF value): sign-in and roles, creating an
//! application and using its key and secret at `/token`, what each developer may see (another
//! owner's application is 404 on every URL), secret regeneration, edits, disabling, deleting
//! and test tokens.

use std::sync::Arc;

use tokengate::clock::ManualClock;
use tokengate::config::{DirectoryLocation, Settings};
use tokengate::crypto::password;
use tokengate::store::model::GrantType;

use crate::authorize::{hidden_fields, Browser};
use crate::helpers::*;

pub(crate) const DEVELOPER: &str = "devon";
pub(crate) const DEVELOPER_PASSWORD: &str = "devon-password";
pub(crate) const OTHER_DEVELOPER: &str = "dana";
pub(crate) const OTHER_PASSWORD: &str = "dana-password";
pub(crate) const ADMIN: &str = "ada";
pub(crate) const ADMIN_PASSWORD: &str = "ada-password";

/// An app whose clients live in its database, with the portal on (unless `adjust` turns it
/// off), offering the code, refresh and client_credentials grants and scopes `read` and
/// `write`, and users `devon` and `dana` (developers) and `ada` (admin) beside the fixture's
/// `alice` (no role).
pub(crate) async fn spawn_portal(adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let home = Arc::new(tempfile::tempdir().unwrap());
    write_fixture_stores(home.path());
    let mut settings = test_settings(home.path());
    settings.stores.clients = DirectoryLocation::Database;
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
    ] {
        let hash = password::hash_password(password, &settings.password_hashing).unwrap();
        text.push_str(&format!(
            "\n[users.{name}]\npassword_hash = \"{hash}\"\nroles = [\"{role}\"]\n"
        ));
    }
    std::fs::write(&users, text).unwrap();
    spawn_in(home, settings, Arc::new(ManualClock::starting_now())).await
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
