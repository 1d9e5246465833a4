//! `tokengate client add | list | remove`: generated and operator-chosen secrets stored as
//! hashes only, the clients file keeps its comments, and a running server picks up new clients.

use crate::helpers::process::{
    comment_lines, serve, toml_of, Home, DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, DEMO_PASSWORD,
    DEMO_USER, POLL,
};
use crate::helpers::Reply;

#[tokio::test]
async fn client_add_prints_a_generated_secret_once_and_stores_only_its_sha256_hash() {
    // Arrange
    let home = Home::new();
    let comments_before = comment_lines(&home.read("config/clients.toml"));

    // Act
    let run = home
        .run(
            &[
                "client",
                "add",
                "my-app",
                "--scopes",
                "PRODUCTION",
                "--grant-types",
                "password refresh_token",
            ],
            None,
        )
        .await;

    // Assert
    run.assert_success();
    let lines = run.stdout_lines();
    assert_eq!(lines.len(), 1, "the secret alone on stdout: {run:#?}");
    let secret = lines[0];
    assert_eq!(secret.len(), 43, "{secret}");
    assert!(
        secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "not base64url: {secret}"
    );
    assert!(
        !run.stderr.contains(secret),
        "the secret went to stderr too: {run:#?}"
    );
    let clients = home.read("config/clients.toml");
    assert!(
        !clients.contains(secret),
        "the secret itself is stored:\n{clients}"
    );
    let entry = &toml_of(&clients)["clients"]["my-app"];
    assert!(
        entry["secret_hash"]
            .as_str()
            .unwrap()
            .starts_with("$sha256$"),
        "{clients}"
    );
    assert_eq!(
        entry["grant_types"],
        toml_of("v = [\"password\", \"refresh_token\"]")["v"]
    );
    assert_eq!(entry["scopes"], toml_of("v = [\"PRODUCTION\"]")["v"]);
    assert_eq!(
        comment_lines(&clients),
        comments_before,
        "comments lost:\n{clients}"
    );
}

#[tokio::test]
async fn a_running_server_gives_tokens_to_a_client_added_with_the_cli() {
    // Arrange
    let home = Home::new();
    let server = serve(&home).await;

    // Act
    let added = home
        .run(
            &[
                "client",
                "add",
                "my-app",
                "--scopes",
                "PRODUCTION",
                "--grant-types",
                "password refresh_token",
            ],
            None,
        )
        .await;
    added.assert_success();
    let secret = added.stdout.trim().to_owned();
    let reply = server
        .poll_password_grant("my-app", &secret, DEMO_USER, DEMO_PASSWORD)
        .await;

    // Assert
    let (_, refresh) = reply.assert_tokens(3600, "PRODUCTION");
    let refresh = refresh.expect("refresh_token is among the client's grant types");
    let refreshed = server
        .post_token(
            "my-app",
            &secret,
            &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
        )
        .await;
    refreshed.assert_tokens(3600, "PRODUCTION");
}

#[tokio::test]
async fn client_add_with_secret_stdin_stores_an_argon2id_hash_of_that_secret() {
    // Arrange
    let home = Home::new();

    // Act
    let run = home
        .run(
            &["client", "add", "x", "--secret-stdin"],
            Some("operator chosen\n"),
        )
        .await;

    // Assert
    run.assert_success();
    assert!(!run.stdout.contains("operator chosen"), "{run:#?}");
    let clients = home.read("config/clients.toml");
    assert!(!clients.contains("operator chosen"), "{clients}");
    let hash = toml_of(&clients)["clients"]["x"]["secret_hash"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(
        tokengate::crypto::password::verify_with(&hash, "operator chosen", &mut Vec::new())
            .unwrap()
    );
}

#[tokio::test]
async fn client_add_refuses_an_unknown_grant_type() {
    // Arrange
    let home = Home::new();
    let before = home.read("config/clients.toml");

    // Act
    let run = home
        .run(
            &["client", "add", "bad-app", "--grant-types", "implicit"],
            None,
        )
        .await;

    // Assert
    run.assert_failure();
    assert!(run.stderr.contains("implicit"), "{run:#?}");
    assert_eq!(home.read("config/clients.toml"), before, "the file changed");
}

#[tokio::test]
async fn client_list_shows_every_client_id() {
    // Arrange
    let home = Home::new();
    home.run(&["client", "add", "my-app", "--scopes", "PRODUCTION"], None)
        .await
        .assert_success();

    // Act
    let run = home.run(&["client", "list"], None).await;

    // Assert
    run.assert_success();
    let ids: Vec<&str> = run
        .stdout_lines()
        .into_iter()
        .map(|line| line.split('\t').next().unwrap())
        .collect();
    assert_eq!(ids, vec!["my-app", DEMO_CLIENT_ID], "{run:#?}");
}

#[tokio::test]
async fn client_remove_deletes_the_client_and_keeps_the_files_comments() {
    // Arrange
    let home = Home::new();
    let comments_before = comment_lines(&home.read("config/clients.toml"));
    home.run(&["client", "add", "my-app", "--scopes", "PRODUCTION"], None)
        .await
        .assert_success();

    // Act
    let removed = home.run(&["client", "remove", "my-app"], None).await;
    let listed = home.run(&["client", "list"], None).await;
    let missing = home.run(&["client", "remove", "my-app"], None).await;

    // Assert
    removed.assert_success();
    listed.assert_success();
    assert_eq!(listed.stdout_lines().len(), 1, "{listed:#?}");
    assert!(listed.stdout.starts_with(DEMO_CLIENT_ID), "{listed:#?}");
    let clients = home.read("config/clients.toml");
    assert!(
        toml_of(&clients)["clients"].get("my-app").is_none(),
        "{clients}"
    );
    assert_eq!(
        comment_lines(&clients),
        comments_before,
        "comments lost:\n{clients}"
    );
    missing.assert_failure();
}

#[tokio::test]
async fn client_add_with_introspect_makes_a_resource_server() {
    // Arrange
    let home = Home::new();
    let server = serve(&home).await;

    // Act
    let added = home
        .run(
            &[
                "client",
                "add",
                "api-gateway",
                "--introspect",
                "--grant-types",
                "",
            ],
            None,
        )
        .await;

    // Assert
    added.assert_success();
    assert!(home
        .read("config/clients.toml")
        .contains("introspect = true"));
    let secret = added.stdout.trim().to_owned();
    let token = server
        .poll_password_grant(DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, DEMO_USER, DEMO_PASSWORD)
        .await;
    let access = token.str("access_token").to_owned();
    let mut reply = None;
    for _ in 0..100 {
        let response = server
            .client
            .post(server.url("/introspect"))
            .basic_auth("api-gateway", Some(&secret))
            .form(&[("token", access.as_str())])
            .send()
            .await
            .unwrap();
        let read = Reply::read(response).await;
        if read.status == 200 {
            reply = Some(read);
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    let reply = reply.expect("the new resource server was picked up");
    assert_eq!(reply.body["active"], true, "{}", reply.text);
    assert_eq!(reply.body["client_id"], DEMO_CLIENT_ID);
}
