//! Ending sessions from the command line, against a running `tokengate serve`:
//! `user set-password`, `user revoke-tokens`, `client revoke-tokens`, `remove` and
//! `disable`/`enable`, with users and clients in files and in the token database.

use std::time::{Duration, Instant};

use crate::helpers::process::{
    poll_until, serve, Home, Server, DEMO_CLIENT_ID, DEMO_CLIENT_SECRET,
};
use crate::helpers::Reply;

const ADMIN: &str = "admin";
const ADMIN_PASSWORD: &str = "admin";
/// Generous: the shipped `reload_interval` is 2 s, and the mark after a file edit is 3 s ahead.
const DEADLINE: Duration = Duration::from_secs(20);

/// A home whose lockout does not count the few failed logins of polling for a file change.
fn new_home() -> Home {
    let home = Home::new();
    home.edit(
        "config/identity.toml",
        "max_failed_login_attempts = 5 ",
        "max_failed_login_attempts = 1000 ",
    );
    home.edit(
        "config/identity.toml",
        "max_failed_login_attempts_per_user = 50",
        "max_failed_login_attempts_per_user = 1000",
    );
    home
}

/// A resource server added with the CLI and seen by `server`; returns its secret.
async fn add_resource_server(home: &Home, server: &Server) -> String {
    let added = home
        .run(
            &["client", "add", "rs", "--introspect", "--grant-types", ""],
            None,
        )
        .await;
    added.assert_success();
    let secret = added.stdout.trim().to_owned();
    let seen = poll_until(
        || server.post_token_form("/introspect", "rs", &secret, &[("token", "x")]),
        |reply| reply.status == 200,
    )
    .await;
    assert_eq!(seen.status, 200, "{}", seen.text);
    secret
}

/// Adds a client with a generated secret and waits until `server` knows it.
async fn add_client(home: &Home, server: &Server, id: &str, extra: &[&str]) -> String {
    let mut args = vec!["client", "add", id, "--scopes", "PRODUCTION"];
    args.extend_from_slice(extra);
    let added = home.run(&args, None).await;
    added.assert_success();
    let secret = added.stdout.trim().to_owned();
    let seen = poll_until(
        || server.password_grant(id, &secret, ADMIN, ADMIN_PASSWORD),
        |reply| reply.status == 200,
    )
    .await;
    assert_eq!(seen.status, 200, "{}", seen.text);
    secret
}

async fn introspect(server: &Server, rs_secret: &str, token: &str) -> Reply {
    server
        .post_token_form("/introspect", "rs", rs_secret, &[("token", token)])
        .await
}

async fn refresh(server: &Server, client: &str, secret: &str, token: &str) -> Reply {
    server
        .post_token_form(
            "/token",
            client,
            secret,
            &[("grant_type", "refresh_token"), ("refresh_token", token)],
        )
        .await
}

/// A login of `user` through `client`: (access, refresh).
async fn login(
    server: &Server,
    client: &str,
    secret: &str,
    user: &str,
    password: &str,
) -> (String, String) {
    let reply = server.password_grant(client, secret, user, password).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    (
        reply.str("access_token").to_owned(),
        reply.str("refresh_token").to_owned(),
    )
}

/// A server on `home`, a resource server to introspect with (its secret), and the demo user's
/// access and refresh tokens.
async fn demo_session(home: &Home) -> (Server, String, String, String) {
    let server = serve(home).await;
    let rs = add_resource_server(home, &server).await;
    let (access, refresh_token) = login(
        &server,
        DEMO_CLIENT_ID,
        DEMO_CLIENT_SECRET,
        ADMIN,
        ADMIN_PASSWORD,
    )
    .await;
    (server, rs, access, refresh_token)
}

fn assert_active(reply: &Reply, active: bool) {
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body["active"], active, "{}", reply.text);
}

/// Logs in until the login's tokens live on (a mark set ahead after a file edit has passed),
/// then checks them.
async fn wait_for_a_lasting_login(
    server: &Server,
    rs_secret: &str,
    user: &str,
    password: &str,
) -> (String, String) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let reply = server
            .password_grant(DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, user, password)
            .await;
        if reply.status == 200 {
            let access = reply.str("access_token").to_owned();
            let refresh_token = reply.str("refresh_token").to_owned();
            let refreshed =
                refresh(server, DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, &refresh_token).await;
            if refreshed.status == 200 {
                assert_active(&introspect(server, rs_secret, &access).await, true);
                return (access, refreshed.str("refresh_token").to_owned());
            }
        }
        assert!(
            Instant::now() < deadline,
            "no lasting login: {}",
            reply.text
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn set_password_ends_the_old_sessions_keeps_the_files_comments_and_the_new_password_works() {
    // Arrange
    let home = new_home();
    let (server, rs, access, refresh_token) = demo_session(&home).await;
    home.edit(
        "config/users.toml",
        "[users.admin]\npassword_hash",
        "[users.admin]\n# the demo user's hash, kept in a comment line of its own\npassword_hash",
    );
    let before = home.read("config/users.toml");

    // Act
    let set = home
        .run(
            &["user", "set-password", ADMIN, "--password-stdin"],
            Some("a new passphrase\n"),
        )
        .await;

    // Assert
    set.assert_success();
    assert!(set.stderr.contains("ended its tokens"), "{set:#?}");
    let after = home.read("config/users.toml");
    assert_ne!(before, after);
    let comments = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|line| line.starts_with('#'))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(comments(&before), comments(&after));
    assert!(after.contains("[users.admin]"), "{after}");
    assert_active(&introspect(&server, &rs, &access).await, false);
    assert_active(&introspect(&server, &rs, &refresh_token).await, false);
    refresh(&server, DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, &refresh_token)
        .await
        .assert_error(400, "invalid_grant");
    wait_for_a_lasting_login(&server, &rs, ADMIN, "a new passphrase").await;
    server
        .password_grant(DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, ADMIN, ADMIN_PASSWORD)
        .await
        .assert_error(400, "invalid_grant");
}

#[tokio::test]
async fn set_password_with_keep_sessions_keeps_the_tokens() {
    // Arrange
    let home = new_home();
    let (server, rs, access, refresh_token) = demo_session(&home).await;

    // Act
    home.run(
        &[
            "user",
            "set-password",
            ADMIN,
            "--password-stdin",
            "--keep-sessions",
        ],
        Some("a new passphrase"),
    )
    .await
    .assert_success();
    let new_login = poll_until(
        || {
            server.password_grant(
                DEMO_CLIENT_ID,
                DEMO_CLIENT_SECRET,
                ADMIN,
                "a new passphrase",
            )
        },
        |reply| reply.status == 200,
    )
    .await;

    // Assert
    assert_eq!(new_login.status, 200, "{}", new_login.text);
    assert_active(&introspect(&server, &rs, &access).await, true);
    let refreshed = refresh(&server, DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, &refresh_token).await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.text);
}

#[tokio::test]
async fn set_password_in_the_sql_directory_ends_the_sessions_at_once() {
    // Arrange: users and clients in the (SQLite) token database.
    let home = new_home();
    home.edit(
        "config/identity.toml",
        "users = \"config/users.toml\"",
        "users = \"sql\"",
    );
    home.run(&["user", "add", "bob", "--password-stdin"], Some("bob-pw"))
        .await
        .assert_success();
    let server = serve(&home).await;
    let rs = add_resource_server(&home, &server).await;
    let (access, refresh_token) =
        login(&server, DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, "bob", "bob-pw").await;

    // Act
    home.run(
        &["user", "set-password", "bob", "--password-stdin"],
        Some("bob-new-pw"),
    )
    .await
    .assert_success();

    // Assert: no reload to wait for.
    assert_active(&introspect(&server, &rs, &access).await, false);
    refresh(&server, DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, &refresh_token)
        .await
        .assert_error(400, "invalid_grant");
    server
        .password_grant(DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, "bob", "bob-pw")
        .await
        .assert_error(400, "invalid_grant");
    let (new_access, new_refresh) = login(
        &server,
        DEMO_CLIENT_ID,
        DEMO_CLIENT_SECRET,
        "bob",
        "bob-new-pw",
    )
    .await;
    assert_active(&introspect(&server, &rs, &new_access).await, true);
    let refreshed = refresh(&server, DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, &new_refresh).await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.text);
}

#[tokio::test]
async fn user_revoke_tokens_ends_that_users_tokens_on_every_client_and_no_one_elses() {
    // Arrange: admin through the demo client and a JWT client; carol through the demo client.
    let home = new_home();
    home.run(
        &["user", "add", "carol", "--password-stdin"],
        Some("carol-pw"),
    )
    .await
    .assert_success();
    let server = serve(&home).await;
    let rs = add_resource_server(&home, &server).await;
    let jwt_secret = add_client(&home, &server, "jwt-app", &["--token-format", "jwt"]).await;
    let (access, refresh_token) = login(
        &server,
        DEMO_CLIENT_ID,
        DEMO_CLIENT_SECRET,
        ADMIN,
        ADMIN_PASSWORD,
    )
    .await;
    let (jwt_access, jwt_refresh) =
        login(&server, "jwt-app", &jwt_secret, ADMIN, ADMIN_PASSWORD).await;
    assert_eq!(jwt_access.matches('.').count(), 2, "{jwt_access}");
    assert_active(&introspect(&server, &rs, &jwt_access).await, true);
    let (carol_access, carol_refresh) = login(
        &server,
        DEMO_CLIENT_ID,
        DEMO_CLIENT_SECRET,
        "carol",
        "carol-pw",
    )
    .await;

    // Act
    let revoked = home.run(&["user", "revoke-tokens", ADMIN], None).await;

    // Assert: at once, without a reload.
    revoked.assert_success();
    assert_active(&introspect(&server, &rs, &access).await, false);
    assert_active(&introspect(&server, &rs, &jwt_access).await, false);
    refresh(&server, DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, &refresh_token)
        .await
        .assert_error(400, "invalid_grant");
    refresh(&server, "jwt-app", &jwt_secret, &jwt_refresh)
        .await
        .assert_error(400, "invalid_grant");
    assert_active(&introspect(&server, &rs, &carol_access).await, true);
    let refreshed = refresh(&server, DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, &carol_refresh).await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.text);
    // The account stays: a new login works and lives.
    let (new_access, _) = login(
        &server,
        DEMO_CLIENT_ID,
        DEMO_CLIENT_SECRET,
        ADMIN,
        ADMIN_PASSWORD,
    )
    .await;
    assert_active(&introspect(&server, &rs, &new_access).await, true);
}

#[tokio::test]
async fn client_revoke_tokens_ends_that_clients_tokens_for_every_user_and_no_other_clients() {
    // Arrange
    let home = new_home();
    let (server, rs, access, refresh_token) = demo_session(&home).await;
    let other_secret = add_client(&home, &server, "other-app", &[]).await;
    let (other_access, other_refresh) =
        login(&server, "other-app", &other_secret, ADMIN, ADMIN_PASSWORD).await;

    // Act
    let revoked = home
        .run(&["client", "revoke-tokens", DEMO_CLIENT_ID], None)
        .await;

    // Assert
    revoked.assert_success();
    assert_active(&introspect(&server, &rs, &access).await, false);
    refresh(&server, DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, &refresh_token)
        .await
        .assert_error(400, "invalid_grant");
    assert_active(&introspect(&server, &rs, &other_access).await, true);
    let refreshed = refresh(&server, "other-app", &other_secret, &other_refresh).await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.text);
}

#[tokio::test]
async fn revoke_tokens_of_a_name_not_in_the_store_warns_and_still_writes_the_mark() {
    // A user deleted from users.toml by hand may still have tokens: they can be ended anyway.
    // Arrange
    let home = new_home();

    // Act
    let user = home.run(&["user", "revoke-tokens", "nobody"], None).await;
    let client = home
        .run(&["client", "revoke-tokens", "nothing"], None)
        .await;
    let remove = home.run(&["user", "remove", "nobody"], None).await;

    // Assert
    user.assert_success();
    assert!(user.stderr.contains("has no user `nobody`"), "{user:#?}");
    assert!(
        user.stderr.contains("ended every token of user `nobody`"),
        "{user:#?}"
    );
    client.assert_success();
    assert!(
        client.stderr.contains("has no client `nothing`"),
        "{client:#?}"
    );
    remove.assert_failure();
    assert!(
        remove.stderr.contains("no user named `nobody`"),
        "{remove:#?}"
    );
}

#[tokio::test]
async fn a_removed_user_or_client_added_again_starts_with_no_tokens() {
    // Arrange
    let home = new_home();
    let (server, rs, access, refresh_token) = demo_session(&home).await;
    let app_secret = add_client(&home, &server, "mobile-app", &[]).await;
    home.run(
        &["user", "add", "dave", "--password-stdin"],
        Some("dave-pw"),
    )
    .await
    .assert_success();
    let dave = poll_until(
        || server.password_grant("mobile-app", &app_secret, "dave", "dave-pw"),
        |reply| reply.status == 200,
    )
    .await;
    assert_eq!(dave.status, 200, "{}", dave.text);
    let dave_refresh = dave.str("refresh_token").to_owned();
    // Act: remove both, add both again.
    home.run(&["user", "remove", ADMIN], None)
        .await
        .assert_success();
    home.run(&["client", "remove", "mobile-app"], None)
        .await
        .assert_success();
    home.run(
        &["user", "add", ADMIN, "--password-stdin"],
        Some(ADMIN_PASSWORD),
    )
    .await
    .assert_success();
    let added = home
        .run(
            &["client", "add", "mobile-app", "--scopes", "PRODUCTION"],
            None,
        )
        .await;
    added.assert_success();
    let new_app_secret = added.stdout.trim().to_owned();
    wait_for_a_lasting_login(&server, &rs, ADMIN, ADMIN_PASSWORD).await;
    let app_back = poll_until(
        || server.password_grant("mobile-app", &new_app_secret, "dave", "dave-pw"),
        |reply| reply.status == 200,
    )
    .await;
    assert_eq!(app_back.status, 200, "{}", app_back.text);

    // Assert: the old tokens stay ended.
    assert_active(&introspect(&server, &rs, &access).await, false);
    refresh(&server, DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, &refresh_token)
        .await
        .assert_error(400, "invalid_grant");
    refresh(&server, "mobile-app", &new_app_secret, &dave_refresh)
        .await
        .assert_error(400, "invalid_grant");
}

#[tokio::test]
async fn disable_suspends_the_tokens_and_enable_restores_them() {
    // Arrange
    let home = new_home();
    let (server, rs, access, refresh_token) = demo_session(&home).await;

    // Act + Assert: suspended while disabled.
    home.run(&["user", "disable", ADMIN], None)
        .await
        .assert_success();
    let suspended = poll_until(
        || introspect(&server, &rs, &access),
        |reply| reply.body["active"] == false,
    )
    .await;
    assert_active(&suspended, false);
    refresh(&server, DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, &refresh_token)
        .await
        .assert_error(400, "invalid_grant");

    // Act + Assert: enable brings the unexpired tokens back.
    home.run(&["user", "enable", ADMIN], None)
        .await
        .assert_success();
    let restored = poll_until(
        || introspect(&server, &rs, &access),
        |reply| reply.body["active"] == true,
    )
    .await;
    assert_active(&restored, true);
    let refreshed = refresh(&server, DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, &refresh_token).await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.text);
}
