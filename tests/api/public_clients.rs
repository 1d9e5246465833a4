//! Public clients (RFC 6749 §2.1, token endpoint auth method `none`): no secret, authenticated
//! by `client_id` alone, only for the grants that allow it; registered in clients.toml or with
//! `tokengate client add --public --redirect-uri …`, with the redirect URI rules checked.

use crate::helpers::process::Home;
use crate::helpers::*;

#[tokio::test]
async fn a_public_client_is_authenticated_by_its_client_id_alone() {
    // Arrange
    let app = spawn_app().await;

    // Act: a refresh token it does not have; authentication passes, the grant refuses.
    let reply = app
        .post_token_without_secret(&[
            ("grant_type", "refresh_token"),
            ("client_id", PUBLIC_CLIENT_ID),
            (
                "refresh_token",
                "AAAAAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            ),
        ])
        .await;

    // Assert
    reply.assert_error(400, "invalid_grant");
}

#[tokio::test]
async fn a_public_client_may_not_use_a_grant_it_is_not_registered_for() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let reply = app
        .post_token_without_secret(&[
            ("grant_type", "client_credentials"),
            ("client_id", PUBLIC_CLIENT_ID),
        ])
        .await;

    // Assert
    reply.assert_error(400, "unauthorized_client");
}

#[tokio::test]
async fn a_public_client_that_presents_a_secret_is_refused() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let in_body = app
        .post_token_without_secret(&[
            ("grant_type", "refresh_token"),
            ("client_id", PUBLIC_CLIENT_ID),
            ("client_secret", "anything"),
            ("refresh_token", "x.y"),
        ])
        .await;
    let basic = app
        .post_token_as(
            PUBLIC_CLIENT_ID,
            "anything",
            &[("grant_type", "refresh_token"), ("refresh_token", "x.y")],
        )
        .await;

    // Assert
    in_body.assert_error(401, "invalid_client");
    basic.assert_error(401, "invalid_client");
}

#[tokio::test]
async fn a_confidential_client_still_needs_its_secret() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let reply = app
        .post_token_without_secret(&[
            ("grant_type", "refresh_token"),
            ("client_id", WEB_CLIENT_ID),
            ("refresh_token", "x.y"),
        ])
        .await;

    // Assert
    reply.assert_error(401, "invalid_client");
}

#[tokio::test]
async fn check_config_reports_every_rule_a_public_client_and_its_redirect_uris_break() {
    // Arrange
    let home = Home::new();
    let mut clients = home.read("config/clients.toml");
    clients.push_str(
        "\n[clients.bad-public]\npublic = true\nsecret_hash = \"$sha256$x\"\n\
         grant_types = [\"authorization_code\", \"password\"]\n\
         redirect_uris = [\"http://app.example/cb\", \"https://app.example/cb#frag\", \"myapp:/cb\"]\n\n\
         [clients.no-uris]\npublic = true\ngrant_types = [\"authorization_code\"]\n\n\
         [clients.no-secret]\ngrant_types = [\"password\"]\nname = \"  \"\n",
    );
    std::fs::write(home.file("config/clients.toml"), clients).unwrap();

    // Act
    let run = home.run(&["check-config"], None).await;

    // Assert
    run.assert_failure();
    for expected in [
        "clients.bad-public.secret_hash: a public client has no secret",
        "clients.bad-public.grant_types: a public client may use only authorization_code and refresh_token, not password",
        "clients.bad-public.redirect_uris: `http://app.example/cb` plain http is allowed only for the loopback addresses",
        "clients.bad-public.redirect_uris: `https://app.example/cb#frag` must not have a fragment",
        "clients.bad-public.redirect_uris: `myapp:/cb` a private-use scheme must be a reverse domain name",
        "clients.no-uris.redirect_uris: a client with the authorization_code grant needs at least one",
        "clients.no-secret.secret_hash: missing: a confidential client needs one",
        "clients.no-secret.name: must be 1 to 100 printable characters",
    ] {
        assert!(run.stderr.contains(expected) || run.stdout.contains(expected), "{expected}\n{run:#?}");
    }
}

#[tokio::test]
async fn client_add_public_writes_no_secret_and_client_list_shows_the_redirect_uris() {
    // Arrange
    let home = Home::new();

    // Act
    let added = home
        .run(
            &[
                "client",
                "add",
                "phone-app",
                "--public",
                "--redirect-uri",
                "com.example.phone:/cb",
                "--redirect-uri",
                "http://127.0.0.1/cb",
            ],
            None,
        )
        .await;
    let list = home.run(&["client", "list"], None).await;
    let refused = home
        .run(
            &[
                "client",
                "add",
                "bad-app",
                "--public",
                "--grant-types",
                "password",
                "--redirect-uri",
                "com.example.bad:/cb",
            ],
            None,
        )
        .await;

    // Assert
    added.assert_success();
    assert_eq!(added.stdout, "", "no secret is printed: {added:#?}");
    let clients = home.read("config/clients.toml");
    let entry = &crate::helpers::process::toml_of(&clients)["clients"]["phone-app"];
    assert_eq!(entry["public"].as_bool(), Some(true), "{clients}");
    assert!(entry.get("secret_hash").is_none(), "{clients}");
    list.assert_success();
    let line = list
        .stdout_lines()
        .into_iter()
        .find(|line| line.starts_with("phone-app\t"))
        .unwrap_or_else(|| panic!("{list:#?}"))
        .to_owned();
    assert!(
        line.contains("grant_types=refresh_token,authorization_code")
            && line.contains("\tpublic")
            && line.contains("redirect_uris=com.example.phone:/cb,http://127.0.0.1/cb"),
        "{line}"
    );
    refused.assert_failure();
    assert!(
        refused
            .stderr
            .contains("a public client may use only authorization_code"),
        "{refused:#?}"
    );
}

#[tokio::test]
async fn a_public_client_added_to_the_sql_directory_keeps_its_redirect_uris() {
    // Arrange
    let home = Home::new();
    home.edit(
        "config/identity.toml",
        "clients = \"config/clients.toml\"",
        "clients = \"sql\"",
    );

    // Act
    let added = home
        .run(
            &[
                "client",
                "add",
                "phone-app",
                "--public",
                "--name",
                "Phone App",
                "--redirect-uri",
                "https://phone.example/cb",
            ],
            None,
        )
        .await;
    let list = home.run(&["client", "list"], None).await;
    let needs_consent = home
        .run(
            &[
                "client",
                "add",
                "third-party",
                "--public",
                "--require-consent",
                "--redirect-uri",
                "https://third.example/cb",
            ],
            None,
        )
        .await;
    let refused = home
        .run(
            &[
                "client",
                "add",
                "http-app",
                "--public",
                "--redirect-uri",
                "http://phone.example/cb",
            ],
            None,
        )
        .await;

    // Assert
    added.assert_success();
    list.assert_success();
    assert!(
        list.stdout
            .lines()
            .any(|line| line.starts_with("phone-app\t")
                && line.contains("\tpublic")
                && line.contains("redirect_uris=https://phone.example/cb")
                && line.contains("\tname=\"Phone App\"")),
        "{list:#?}"
    );
    needs_consent.assert_success();
    let listed = home.run(&["client", "list"], None).await;
    assert!(
        listed
            .stdout
            .lines()
            .any(|line| line.starts_with("third-party\t") && line.contains("\trequire_consent")),
        "{listed:#?}"
    );
    refused.assert_failure();
    assert!(
        refused.stderr.contains("plain http is allowed only"),
        "{refused:#?}"
    );
}

#[tokio::test]
async fn a_public_client_revokes_its_tokens_by_client_id_alone() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let reply = post_public_to(
        &app,
        "/revoke",
        &[("client_id", PUBLIC_CLIENT_ID), ("token", "unknown.token")],
    )
    .await;
    let introspect = post_public_to(
        &app,
        "/introspect",
        &[("client_id", PUBLIC_CLIENT_ID), ("token", "unknown.token")],
    )
    .await;

    // Assert: RFC 7009 §2.2, 200 whatever the token; a public client cannot introspect.
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(introspect.status, 403, "{}", introspect.text);
}

async fn post_public_to(app: &TestApp, path: &str, form: &[(&str, &str)]) -> Reply {
    let response = app
        .client
        .post(app.url(path))
        .form(form)
        .send()
        .await
        .unwrap();
    Reply::read(response).await
}

/// `iss` (RFC 9207) defaults to `https://localhost:<port>`, which apps compare with the server
/// they called: a server with code-flow clients and no `[oauth] issuer` says so at start.
#[tokio::test]
async fn a_default_issuer_is_warned_about_once_a_client_has_the_code_flow() {
    for issuer_set in [false, true] {
        // Arrange
        let home = Home::new();
        home.run(
            &[
                "client",
                "add",
                "phone-app",
                "--public",
                "--redirect-uri",
                "https://phone.example/cb",
            ],
            None,
        )
        .await
        .assert_success();
        if issuer_set {
            home.edit(
                "config/identity.toml",
                "# issuer = \"https://auth.example.com\"",
                "issuer = \"https://auth.example.com\"",
            );
        }

        // Act
        let server = crate::helpers::process::serve(&home).await;

        // Assert
        let warned = server.log().contains("issuer is not set");
        assert_eq!(warned, !issuer_set, "{}", server.log());
    }
}
