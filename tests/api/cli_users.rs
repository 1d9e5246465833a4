//! `tokengate hash-password` and `tokengate user add | list | remove | disable | enable | import |
//! unlock`: the users file keeps its comments, stores only hashes, and a running server follows.

use crate::helpers::process::{
    comment_lines, poll_until, serve, toml_of, Home, DEMO_CLIENT_ID, DEMO_CLIENT_SECRET,
    DEMO_PASSWORD, DEMO_USER,
};

const ARGON2ID_PREFIX: &str = "$argon2id$v=19$m=12288,t=3,p=1$";

#[tokio::test]
async fn hash_password_prints_one_argon2id_line_for_the_password_on_stdin() {
    // Arrange
    let home = Home::new();

    // Act
    let run = home.run(&["hash-password"], Some("secret\n")).await;

    // Assert
    run.assert_success();
    let lines = run.stdout_lines();
    assert_eq!(lines.len(), 1, "{run:#?}");
    let hash = lines[0];
    assert!(hash.starts_with(ARGON2ID_PREFIX), "{hash}");
    let mut work_area = Vec::new();
    assert!(tokengate::crypto::password::verify_with(hash, "secret", &mut work_area).unwrap());
    assert!(
        !tokengate::crypto::password::verify_with(hash, "secret\n", &mut work_area).unwrap(),
        "the trailing newline is not part of the password"
    );
}

#[tokio::test]
async fn user_add_stores_a_hashed_password_and_keeps_the_files_comments() {
    // Arrange
    let home = Home::new();
    let comments_before = comment_lines(&home.read("config/users.toml"));
    assert!(!comments_before.is_empty());

    // Act
    let added = home
        .run(&["user", "add", "bob", "--password-stdin"], Some("bob-pw"))
        .await;
    let listed = home.run(&["user", "list"], None).await;

    // Assert
    added.assert_success();
    listed.assert_success();
    assert_eq!(listed.stdout_lines(), vec!["admin", "bob"], "{listed:#?}");
    let users = home.read("config/users.toml");
    assert_eq!(
        comment_lines(&users),
        comments_before,
        "comments lost:\n{users}"
    );
    assert!(
        !users.contains("bob-pw"),
        "the password itself is stored:\n{users}"
    );
    let hash = toml_of(&users)["users"]["bob"]["password_hash"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(hash.starts_with(ARGON2ID_PREFIX), "{hash}");
    assert!(tokengate::crypto::password::verify_with(&hash, "bob-pw", &mut Vec::new()).unwrap());
}

#[tokio::test]
async fn user_add_refuses_a_user_that_already_exists() {
    // Arrange
    let home = Home::new();
    home.run(&["user", "add", "bob", "--password-stdin"], Some("bob-pw"))
        .await
        .assert_success();
    let before = home.read("config/users.toml");

    // Act
    let again = home
        .run(
            &["user", "add", "bob", "--password-stdin"],
            Some("other-pw"),
        )
        .await;

    // Assert
    again.assert_failure();
    assert!(again.stderr.contains("already exists"), "{again:#?}");
    assert_eq!(home.read("config/users.toml"), before, "the file changed");
}

#[tokio::test]
async fn user_remove_deletes_the_user_and_keeps_the_files_comments() {
    // Arrange
    let home = Home::new();
    let comments_before = comment_lines(&home.read("config/users.toml"));
    home.run(&["user", "add", "bob", "--password-stdin"], Some("bob-pw"))
        .await
        .assert_success();

    // Act
    let removed = home.run(&["user", "remove", "bob"], None).await;
    let listed = home.run(&["user", "list"], None).await;

    // Assert
    removed.assert_success();
    listed.assert_success();
    assert_eq!(listed.stdout_lines(), vec!["admin"], "{listed:#?}");
    let users = home.read("config/users.toml");
    assert!(toml_of(&users)["users"].get("bob").is_none(), "{users}");
    assert_eq!(
        comment_lines(&users),
        comments_before,
        "comments lost:\n{users}"
    );
}

#[tokio::test]
async fn user_and_client_disable_and_enable_edit_the_files_and_a_running_server_follows() {
    // Arrange
    let home = Home::new();
    let server = serve(&home).await;
    server.demo_login().await.assert_tokens(3600, "PRODUCTION");

    // Act + Assert: the user. Polling logins would count as failed logins and lock the
    // account, so wait for the server to report the reload instead.
    let reloads = server.reloads();
    home.run(&["user", "disable", DEMO_USER], None)
        .await
        .assert_success();
    let users = home.read("config/users.toml");
    assert_eq!(
        toml_of(&users)["users"][DEMO_USER]["disabled"].as_bool(),
        Some(true),
        "{users}"
    );
    assert_eq!(
        home.run(&["user", "list"], None).await.stdout_lines(),
        vec!["admin\tdisabled"]
    );
    server.wait_for_reload_after(reloads).await;
    server.demo_login().await.assert_error(400, "invalid_grant");
    let reloads = server.reloads();
    home.run(&["user", "enable", DEMO_USER], None)
        .await
        .assert_success();
    assert!(toml_of(&home.read("config/users.toml"))["users"][DEMO_USER]
        .get("disabled")
        .is_none());
    server.wait_for_reload_after(reloads).await;
    server.demo_login().await.assert_tokens(3600, "PRODUCTION");

    // The client.
    home.run(&["client", "disable", DEMO_CLIENT_ID], None)
        .await
        .assert_success();
    poll_until(|| server.demo_login(), |reply| reply.status == 401)
        .await
        .assert_error(401, "invalid_client");
    home.run(&["client", "enable", DEMO_CLIENT_ID], None)
        .await
        .assert_success();
    poll_until(|| server.demo_login(), |reply| reply.status == 200)
        .await
        .assert_tokens(3600, "PRODUCTION");
    let missing = home.run(&["client", "disable", "nobody"], None).await;
    missing.assert_failure();
    assert!(
        missing.stderr.contains("no client named `nobody`"),
        "{missing:#?}"
    );
}

#[tokio::test]
async fn user_and_client_import_copy_another_file_into_the_configured_files() {
    // Arrange
    let home = Home::new();
    let other = home.path().join("other-users.toml");
    let hash = tokengate::crypto::password::hash_password(
        "carol-pw",
        &tokengate::config::PasswordHashingSettings {
            argon2_memory_kib: 19_456,
            argon2_iterations: 2,
            argon2_parallelism: 1,
            workers: 1,
            queue_capacity: 1,
        },
    )
    .unwrap();
    std::fs::write(
        &other,
        format!(
            "[users.carol]\npassword_hash = \"{hash}\"\n\n[users.admin]\npassword_hash = \"{hash}\"\n\
             \n[users.dave]\npassword_hash = \"{hash}\"\ndisabled = true\n"
        ),
    )
    .unwrap();

    // Act
    let imported = home
        .run(&["user", "import", other.to_str().unwrap()], None)
        .await;
    let listed = home.run(&["user", "list"], None).await;

    // Assert: admin was there already and keeps its own password.
    imported.assert_success();
    assert!(
        imported.stderr.contains("skipped user `admin`"),
        "{imported:#?}"
    );
    assert!(
        imported.stderr.contains("imported 2 user(s)"),
        "{imported:#?}"
    );
    assert_eq!(
        listed.stdout_lines(),
        vec!["admin", "carol", "dave\tdisabled"]
    );
    let server = serve(&home).await;
    server.demo_login().await.assert_tokens(3600, "PRODUCTION");
    server
        .password_grant(DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, "carol", "carol-pw")
        .await
        .assert_tokens(3600, "PRODUCTION");
}

#[tokio::test]
async fn user_remove_of_a_missing_user_fails() {
    // Arrange
    let home = Home::new();
    let before = home.read("config/users.toml");

    // Act
    let run = home.run(&["user", "remove", "nobody"], None).await;

    // Assert
    run.assert_failure();
    assert!(run.stderr.contains("nobody"), "{run:#?}");
    assert_eq!(home.read("config/users.toml"), before, "the file changed");
}

#[tokio::test]
async fn a_running_server_picks_up_a_user_added_with_the_cli() {
    // Arrange: polling logins for a name that does not exist yet would lock it (lockout counts
    // unknown names too), so this test turns the lockout off.
    let home = Home::new();
    home.edit(
        "config/identity.toml",
        "max_failed_login_attempts = 5",
        "max_failed_login_attempts = 0",
    );
    let server = serve(&home).await;
    let unknown = server
        .password_grant(DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, "bob", "bob-pw")
        .await;
    unknown.assert_error(400, "invalid_grant");

    // Act
    home.run(&["user", "add", "bob", "--password-stdin"], Some("bob-pw"))
        .await
        .assert_success();
    let reply = server
        .poll_password_grant(DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, "bob", "bob-pw")
        .await;

    // Assert
    reply.assert_tokens(3600, "PRODUCTION");
}

#[tokio::test]
async fn user_unlock_lifts_an_account_lock() {
    // Arrange: lock the demo user with five wrong passwords.
    let home = Home::new();
    let server = serve(&home).await;
    for _ in 0..5 {
        let reply = server
            .post_token(
                DEMO_CLIENT_ID,
                DEMO_CLIENT_SECRET,
                &[
                    ("grant_type", "password"),
                    ("username", DEMO_USER),
                    ("password", "nope"),
                ],
            )
            .await;
        reply.assert_error(400, "invalid_grant");
    }
    let login = [
        ("grant_type", "password"),
        ("username", DEMO_USER),
        ("password", DEMO_PASSWORD),
    ];
    server
        .post_token(DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, &login)
        .await
        .assert_error(400, "invalid_grant");

    // Act
    let unlocked = home.run(&["user", "unlock", DEMO_USER], None).await;
    let again = home.run(&["user", "unlock", DEMO_USER], None).await;

    // Assert
    unlocked.assert_success();
    assert!(unlocked.stderr.contains("unlocked"), "{unlocked:#?}");
    again.assert_success();
    assert!(again.stderr.contains("no failed logins"), "{again:#?}");
    server
        .post_token(DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, &login)
        .await
        .assert_tokens(3600, "default");
}

#[tokio::test]
async fn concurrent_cli_edits_do_not_lose_one_another() {
    // Arrange
    let home = Home::new();
    let names: Vec<String> = (0..6).map(|i| format!("user{i}")).collect();

    // Act: six `user add` processes at once.
    let args: Vec<[&str; 4]> = names
        .iter()
        .map(|name| ["user", "add", name.as_str(), "--password-stdin"])
        .collect();
    let runs = futures::future::join_all(args.iter().map(|args| home.run(args, Some("pw")))).await;

    // Assert
    for run in &runs {
        run.assert_success();
    }
    let listed = home.run(&["user", "list"], None).await;
    listed.assert_success();
    for name in &names {
        assert!(
            listed.stdout_lines().contains(&name.as_str()),
            "{name} lost: {listed:#?}"
        );
    }
}

/// Developer-portal roles (issue 13), in the users file and in the database alike.
#[tokio::test]
async fn user_roles_are_set_at_add_replaced_by_set_roles_and_listed() {
    for in_database in [false, true] {
        // Arrange
        let home = Home::new();
        if in_database {
            home.edit(
                "config/identity.toml",
                "users = \"config/users.toml\"",
                "users = \"sql\"",
            );
        }

        // Act
        let added = home
            .run(
                &[
                    "user",
                    "add",
                    "dev",
                    "--password-stdin",
                    "--role",
                    "developer",
                ],
                Some("dev-pw"),
            )
            .await;
        let unknown = home
            .run(
                &[
                    "user",
                    "add",
                    "typo",
                    "--password-stdin",
                    "--role",
                    "developper",
                ],
                Some("pw"),
            )
            .await;
        let first = home.run(&["user", "list"], None).await;
        let set = home
            .run(&["user", "set-roles", "dev", "admin", "developer"], None)
            .await;
        let both = home.run(&["user", "list"], None).await;
        let cleared = home.run(&["user", "set-roles", "dev"], None).await;
        let none = home.run(&["user", "list"], None).await;
        let missing = home
            .run(&["user", "set-roles", "nobody", "admin"], None)
            .await;

        // Assert
        added.assert_success();
        unknown.assert_failure();
        assert!(
            unknown.stderr.contains("`developper` is not a role"),
            "{unknown:#?}"
        );
        assert!(
            first.stdout_lines().contains(&"dev\troles=developer"),
            "{first:#?}"
        );
        assert!(!first.stdout.contains("typo"), "{first:#?}");
        set.assert_success();
        assert!(
            both.stdout_lines().contains(&"dev\troles=developer,admin"),
            "{both:#?}"
        );
        cleared.assert_success();
        assert!(none.stdout_lines().contains(&"dev"), "{none:#?}");
        missing.assert_failure();
        if !in_database {
            let users = home.read("config/users.toml");
            assert!(!users.contains("roles"), "{users}");
        }
        let events = crate::helpers::audit_events(&crate::helpers::audit_file(home.path()));
        assert!(
            events.iter().any(|e| e["event"] == "user_roles_set"
                && e["subject"] == "dev"
                && e["roles"] == serde_json::json!(["developer", "admin"])),
            "{events:?}"
        );
    }
}
