//! The hosted login page in a real browser (issue 12): headless Chromium, driven through
//! WebDriver, signs in with the form over real HTTPS, lands on the app's loopback redirect URI
//! (RFC 8252 §7.3) with `code`, `state` and `iss` (RFC 9207), and the code buys tokens; the login
//! session spares the next sign-in until `/logout`; a wrong password is refused without telling
//! whether the user exists; keyboard, screen-reader and phone users can use the form. Each test
//! prints one `skipped:` line when Chromium is not installed.

use fantoccini::key::Key;
use fantoccini::Locator;

use crate::authorization_code::{CHALLENGE, VERIFIER};
use crate::helpers::browser::{Browser, Loopback};
use crate::helpers::*;

/// The issuer the server names in `iss`, from its discovery document (RFC 8414).
async fn issuer(app: &TestApp) -> String {
    let metadata = app.get("/.well-known/oauth-authorization-server").await;
    assert_eq!(metadata.status, 200, "{}", metadata.text);
    metadata.str("issuer").to_owned()
}

/// An authorization request of the public client (PKCE S256, scope PRODUCTION) that redirects to
/// `loopback`, with `state`.
fn authorize_url(app: &TestApp, loopback: &Loopback, state: &str) -> String {
    authorize_url_for(app, loopback, PUBLIC_CLIENT_ID, "PRODUCTION", state)
}

/// An authorization request of `client_id` for `scope` (PKCE S256) that redirects to `loopback`.
fn authorize_url_for(
    app: &TestApp,
    loopback: &Loopback,
    client_id: &str,
    scope: &str,
    state: &str,
) -> String {
    let redirect_uri = loopback.redirect_uri();
    let query = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("response_type", "code"),
            ("client_id", client_id),
            ("redirect_uri", redirect_uri.as_str()),
            ("scope", scope),
            ("state", state),
            ("code_challenge", CHALLENGE),
            ("code_challenge_method", "S256"),
        ])
        .finish();
    app.url(&format!("/authorize?{query}"))
}

/// Types into the fields found by their labels and submits with the button, as a person would.
async fn sign_in(browser: &Browser, user: &str, password: &str) {
    let username = browser.input_labelled("Username").await;
    username.send_keys(user).await.unwrap();
    let password_field = browser.input_labelled("Password").await;
    password_field.send_keys(password).await.unwrap();
    browser.button("Sign in").await.click().await.unwrap();
}

/// The text of the page's alert (the login form's error message).
async fn alert(browser: &Browser) -> String {
    let alert = browser.wait_for(Locator::Css("[role=alert]")).await;
    alert.text().await.unwrap()
}

#[tokio::test]
async fn a_person_signs_in_and_the_app_gets_a_code_tokens_and_later_a_code_without_the_form() {
    // Arrange
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = spawn_app().await;
    let mut loopback = Loopback::start().await;
    let issuer = issuer(&app).await;

    // Act: the form, filled in by its labels.
    browser
        .goto(&authorize_url(&app, &loopback, "first-state"))
        .await;
    sign_in(&browser, USER, PASSWORD).await;
    let first = loopback.next_redirect().await;

    // Assert: the browser is at the app's redirect URI with the code, the state and the issuer.
    let landed = browser
        .wait_for_url_starting_with(&loopback.redirect_uri())
        .await;
    assert_eq!(landed.path(), "/callback");
    assert!(first.contains_key("code"), "{first:?}");
    assert_eq!(first["state"], "first-state", "{first:?}");
    assert_eq!(first["iss"], issuer, "{first:?}");
    assert!(!first.contains_key("error"), "{first:?}");
    let reply = app
        .public_code_exchange(&first["code"], &loopback.redirect_uri(), VERIFIER)
        .await;
    let (access, refresh) = reply.assert_tokens(3600, "PRODUCTION");
    assert!(refresh.is_some(), "no refresh token: {}", reply.text);
    let introspected = app.introspect(&access).await;
    assert_eq!(introspected.body["active"], true, "{}", introspected.text);
    assert_eq!(introspected.body["username"], USER);

    // Act: a second authorization in the same browser: the session cookie answers it.
    browser
        .goto(&authorize_url(&app, &loopback, "second-state"))
        .await;
    let second = loopback.next_redirect().await;

    // Assert: a new code at once, without the form; it buys tokens too.
    browser
        .wait_for_url_starting_with(&loopback.redirect_uri())
        .await;
    assert_eq!(second["state"], "second-state", "{second:?}");
    assert_eq!(second["iss"], issuer, "{second:?}");
    assert_ne!(second["code"], first["code"]);
    let reply = app
        .public_code_exchange(&second["code"], &loopback.redirect_uri(), VERIFIER)
        .await;
    reply.assert_tokens(3600, "PRODUCTION");
    browser.close().await;
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_user_get_the_same_message_and_no_redirect() {
    // Arrange
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = spawn_app().await;
    let mut loopback = Loopback::start().await;
    let url = authorize_url(&app, &loopback, "xyz");

    // Act
    browser.goto(&url).await;
    sign_in(&browser, USER, "not-alice-password").await;
    let wrong_password = alert(&browser).await;
    let after_wrong_password = browser.url().await;
    browser.goto(&url).await;
    sign_in(&browser, "nobody", "not-alice-password").await;
    let unknown_user = alert(&browser).await;

    // Assert: the same words for both, the form again, and the app never called.
    assert_eq!(wrong_password, "Invalid username or password.");
    assert_eq!(unknown_user, wrong_password);
    for at in [after_wrong_password, browser.url().await] {
        assert!(
            at.as_str().starts_with(&app.url("/authorize")),
            "left the login page for {at}"
        );
    }
    browser.input_labelled("Password").await;
    loopback.assert_no_redirect();
    browser.close().await;
}

#[tokio::test]
async fn the_keyboard_goes_from_username_to_password_to_the_button_and_every_input_has_a_label() {
    // Arrange
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = spawn_app().await;
    let loopback = Loopback::start().await;
    browser.goto(&authorize_url(&app, &loopback, "xyz")).await;
    let username = browser.input_labelled("Username").await;
    let password = browser.input_labelled("Password").await;
    let button = browser.button("Sign in").await;

    // Act
    let on_load = browser.focused().await;
    let active = browser.client.active_element().await.unwrap();
    active.send_keys(&Key::Tab).await.unwrap();
    let after_one_tab = browser.focused().await;
    let active = browser.client.active_element().await.unwrap();
    active.send_keys(&Key::Tab).await.unwrap();
    let after_two_tabs = browser.focused().await;

    // Assert: focus order.
    assert_eq!(
        on_load,
        username.element_id().to_string(),
        "the username field has no focus on load"
    );
    assert_eq!(
        after_one_tab,
        password.element_id().to_string(),
        "Tab does not go from the username to the password"
    );
    assert_eq!(
        after_two_tabs,
        button.element_id().to_string(),
        "Tab does not go from the password to the button"
    );
    // Every input a person fills in has a <label for> naming its id.
    let inputs = browser
        .client
        .find_all(Locator::XPath("//input[not(@type = 'hidden')]"))
        .await
        .unwrap();
    assert_eq!(inputs.len(), 2, "the form has the username and password");
    for input in inputs {
        let id = input
            .attr("id")
            .await
            .unwrap()
            .expect("the input has an id");
        let labels = browser
            .client
            .find_all(Locator::Css(&format!("label[for=\"{id}\"]")))
            .await
            .unwrap();
        assert_eq!(labels.len(), 1, "input #{id} has one <label for>");
        let label = labels[0].text().await.unwrap();
        assert_eq!(browser.computed_label(&input).await, label);
    }
    browser.close().await;
}

#[tokio::test]
async fn the_form_fits_a_phone_screen_and_the_card_is_centred_on_a_desktop() {
    // Arrange
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = spawn_app().await;
    let loopback = Loopback::start().await;
    let url = authorize_url(&app, &loopback, "xyz");

    // Act: a phone.
    browser.goto(&url).await;
    browser.set_viewport(360, 740).await;
    browser.input_labelled("Username").await;
    let phone = browser
        .script(
            "const button = document.querySelector('button').getBoundingClientRect();
             return { scrollWidth: document.documentElement.scrollWidth,
                      width: window.innerWidth, height: window.innerHeight,
                      button: [button.left, button.top, button.right, button.bottom] };",
        )
        .await;

    // Assert: no sideways scrolling, and the button on screen without scrolling.
    assert_eq!(phone["width"], 360, "{phone}");
    assert!(
        phone["scrollWidth"].as_f64().unwrap() <= phone["width"].as_f64().unwrap(),
        "the page scrolls sideways: {phone}"
    );
    let button: Vec<f64> = serde_json::from_value(phone["button"].clone()).unwrap();
    assert!(
        button[0] >= 0.0
            && button[1] >= 0.0
            && button[2] <= phone["width"].as_f64().unwrap()
            && button[3] <= phone["height"].as_f64().unwrap(),
        "the button is not wholly on screen: {phone}"
    );

    // Act: a desktop.
    browser.set_viewport(1280, 800).await;
    browser.goto(&url).await;
    browser.input_labelled("Username").await;
    let desktop = browser
        .script(
            "const card = document.querySelector('main').getBoundingClientRect();
             return { width: document.documentElement.clientWidth,
                      card: [card.left, card.right] };",
        )
        .await;

    // Assert: the card in the middle, as wide as it is meant to be (not the whole window).
    let width = desktop["width"].as_f64().unwrap();
    let card: Vec<f64> = serde_json::from_value(desktop["card"].clone()).unwrap();
    let (left_margin, right_margin) = (card[0], width - card[1]);
    assert!(
        (left_margin - right_margin).abs() <= 2.0,
        "the card is not centred: {desktop}"
    );
    assert!(
        card[1] - card[0] < width / 2.0,
        "the card fills the window: {desktop}"
    );
    browser.close().await;
}

#[tokio::test]
async fn after_logout_the_next_authorization_shows_the_form_again() {
    // Arrange: signed in, with a session cookie.
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = spawn_app().await;
    let mut loopback = Loopback::start().await;
    browser.goto(&authorize_url(&app, &loopback, "first")).await;
    sign_in(&browser, USER, PASSWORD).await;
    let first = loopback.next_redirect().await;
    assert!(first.contains_key("code"), "{first:?}");

    // Act
    browser.goto(&app.url("/logout")).await;
    let signed_out = browser.wait_for(Locator::Css("main p")).await;
    let signed_out = signed_out.text().await.unwrap();
    browser
        .goto(&authorize_url(&app, &loopback, "second"))
        .await;

    // Assert: the form, not a redirect.
    assert_eq!(signed_out, "You are signed out. You can close this window.");
    let at = browser.url().await;
    assert!(
        at.as_str().starts_with(&app.url("/authorize")),
        "the browser went on to {at}, not to the form"
    );
    browser.input_labelled("Username").await;
    loopback.assert_no_redirect();
    browser.close().await;
}

/// The third-party app's authorization (scopes PRODUCTION and SANDBOX): signs alice in and
/// waits for the consent screen.
async fn sign_in_to_the_consent_screen(browser: &Browser, app: &TestApp, loopback: &Loopback) {
    browser
        .goto(&authorize_url_for(
            app,
            loopback,
            THIRD_PARTY_CLIENT_ID,
            "PRODUCTION SANDBOX",
            "consent-state",
        ))
        .await;
    sign_in(browser, USER, PASSWORD).await;
    // The consent form, not the login page's heading that is still there until the answer.
    browser
        .wait_for(Locator::Css("form[action='/authorize/consent']"))
        .await;
    let heading = browser.wait_for(Locator::Css("h1")).await;
    assert_eq!(heading.text().await.unwrap(), "Allow access?");
}

#[tokio::test]
async fn a_person_allows_a_third_party_app_and_is_not_asked_again() {
    // Arrange
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = spawn_app().await;
    let mut loopback = Loopback::start().await;

    // Act: the consent screen after the sign-in.
    sign_in_to_the_consent_screen(&browser, &app, &loopback).await;

    // Assert: the app's name, the user and each requested scope are on the screen.
    let lead = browser.wait_for(Locator::Css("p.lead")).await;
    let lead = lead.text().await.unwrap();
    assert!(lead.contains(THIRD_PARTY_NAME), "{lead}");
    assert!(lead.contains(USER), "{lead}");
    let mut scopes = Vec::new();
    for item in browser
        .client
        .find_all(Locator::Css("ul.scopes li"))
        .await
        .unwrap()
    {
        scopes.push(item.text().await.unwrap());
    }
    assert_eq!(scopes.len(), 2, "{scopes:?}");
    assert!(scopes[0].contains("PRODUCTION"), "{scopes:?}");
    assert!(scopes[1].contains("SANDBOX"), "{scopes:?}");
    loopback.assert_no_redirect();
    // Assert: nothing has the focus at first (one stray Enter allows nothing); then the
    // keyboard goes to Allow, then Deny.
    let body = browser.wait_for(Locator::Css("body")).await;
    assert_eq!(
        browser.focused().await,
        body.element_id().to_string(),
        "something has the focus on load"
    );
    let client = &browser.client;
    let press = |key: Key| async move {
        let focused = client.active_element().await.unwrap();
        focused.send_keys(&key).await.unwrap();
    };
    press(Key::Enter).await;
    press(Key::Tab).await;
    let allow = browser.button("Allow").await;
    assert_eq!(
        browser.focused().await,
        allow.element_id().to_string(),
        "Tab goes to Allow first"
    );
    press(Key::Tab).await;
    let deny = browser.button("Deny").await;
    assert_eq!(
        browser.focused().await,
        deny.element_id().to_string(),
        "Tab goes from Allow to Deny"
    );
    loopback.assert_no_redirect();

    // Act: Allow.
    allow.click().await.unwrap();
    let redirect = loopback.next_redirect().await;

    // Assert: the code, and tokens with both scopes.
    assert_eq!(redirect["state"], "consent-state", "{redirect:?}");
    assert!(!redirect.contains_key("error"), "{redirect:?}");
    let tokens = app
        .post_token_without_secret(&[
            ("grant_type", "authorization_code"),
            ("client_id", THIRD_PARTY_CLIENT_ID),
            ("code", &redirect["code"]),
            ("redirect_uri", &loopback.redirect_uri()),
            ("code_verifier", VERIFIER),
        ])
        .await;
    tokens.assert_tokens(3600, "PRODUCTION SANDBOX");

    // Act + Assert: the next authorization of the app goes straight back with a code.
    browser
        .goto(&authorize_url_for(
            &app,
            &loopback,
            THIRD_PARTY_CLIENT_ID,
            "SANDBOX",
            "second",
        ))
        .await;
    let second = loopback.next_redirect().await;
    assert_eq!(second["state"], "second", "{second:?}");
    assert!(second.contains_key("code"), "{second:?}");
    browser.close().await;
}

#[tokio::test]
async fn a_person_denies_a_third_party_app_and_it_gets_access_denied() {
    // Arrange
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = spawn_app().await;
    let mut loopback = Loopback::start().await;
    sign_in_to_the_consent_screen(&browser, &app, &loopback).await;

    // Act
    browser.button("Deny").await.click().await.unwrap();
    let redirect = loopback.next_redirect().await;

    // Assert
    assert_eq!(redirect["error"], "access_denied", "{redirect:?}");
    assert_eq!(redirect["state"], "consent-state", "{redirect:?}");
    assert!(!redirect.contains_key("code"), "{redirect:?}");
    browser.close().await;
}

#[tokio::test]
async fn the_consent_screen_fits_a_phone_screen() {
    // Arrange
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = spawn_app().await;
    let loopback = Loopback::start().await;
    browser.set_viewport(360, 740).await;

    // Act
    sign_in_to_the_consent_screen(&browser, &app, &loopback).await;

    // Assert: no sideways scrolling, and both buttons wholly on screen.
    let fits = browser
        .script(
            "const inside = (e) => { const r = e.getBoundingClientRect(); \
             return r.left >= 0 && r.right <= window.innerWidth && r.bottom <= window.innerHeight; }; \
             return [document.documentElement.scrollWidth <= window.innerWidth, \
             [...document.querySelectorAll('button')].every(inside)];",
        )
        .await;
    assert_eq!(
        fits,
        serde_json::json!([true, true]),
        "scrolls sideways or a button is off screen"
    );
    browser.close().await;
}

/// Writes the README's screenshots: `docs/screenshots/login-phone.png` (360 × 740),
/// `login-desktop.png` (1280 × 800), `consent-phone.png` (360 × 740), and the developer
/// portal's `portal-created-phone.png` (360 × 740: key, secret and curl command shown once)
/// and `portal-apps-desktop.png` (1280 × 800: an application's page).
#[tokio::test]
#[ignore = "writes docs/screenshots/*.png; run with `cargo test --test api -- --ignored write_readme_screenshots`"]
async fn write_readme_screenshots() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    // As an operator would describe the scopes (`[login.scope_descriptions]`).
    let app = spawn_app_with(|settings| {
        for (scope, description) in [
            ("PRODUCTION", "Read and print your production photos"),
            ("SANDBOX", "Try out printing with test photos"),
        ] {
            settings
                .login
                .scope_descriptions
                .insert(scope.to_owned(), description.to_owned());
        }
    })
    .await;
    let loopback = Loopback::start().await;
    let folder = project_root().join("docs/screenshots");
    std::fs::create_dir_all(&folder).unwrap();
    for (file, width, height) in [
        ("login-phone.png", 360, 740),
        ("login-desktop.png", 1280, 800),
    ] {
        browser.goto(&authorize_url(&app, &loopback, "xyz")).await;
        browser.set_viewport(width, height).await;
        browser.input_labelled("Username").await;
        // No focus ring or text cursor in the pictures.
        browser
            .script("document.activeElement.blur(); return null;")
            .await;
        let png = browser.client.screenshot().await.unwrap();
        std::fs::write(folder.join(file), png).unwrap();
    }
    browser.set_viewport(360, 740).await;
    sign_in_to_the_consent_screen(&browser, &app, &loopback).await;
    browser
        .script("document.activeElement.blur(); return null;")
        .await;
    let png = browser.client.screenshot().await.unwrap();
    std::fs::write(folder.join("consent-phone.png"), png).unwrap();

    // The developer portal: what a phone shows once after "Create", and the application's
    // page on a desktop.
    let portal = crate::portal::spawn_portal(|_| {}).await;
    browser.client.delete_all_cookies().await.unwrap();
    crate::browser_portal::sign_in(&browser, &portal).await;
    let created =
        crate::browser_portal::create_application(&browser, crate::browser_portal::APP_NAME).await;
    browser
        .script("document.activeElement.blur(); window.scrollTo(0, 0); return null;")
        .await;
    let png = browser.client.screenshot().await.unwrap();
    std::fs::write(folder.join("portal-created-phone.png"), png).unwrap();
    browser.set_viewport(1280, 800).await;
    browser
        .goto(&portal.url(&format!("/portal/apps/{}", created.key)))
        .await;
    browser
        .wait_for_heading(crate::browser_portal::APP_NAME)
        .await;
    browser
        .script("document.activeElement.blur(); return null;")
        .await;
    let png = browser.client.screenshot().await.unwrap();
    std::fs::write(folder.join("portal-apps-desktop.png"), png).unwrap();
    browser.close().await;
}
