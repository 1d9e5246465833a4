//! `tokengate check-config` reports every problem in every file in one run, also when the
//! config file itself has errors: what cannot be read falls back to its default, so the users
//! and clients files it names are still checked.

use crate::helpers::process::{Home, DEMO_CLIENT_ID};

#[tokio::test]
async fn check_config_reports_problems_in_the_config_users_and_clients_files_in_one_run() {
    let home = Home::new();
    home.edit(
        "config/identity.toml",
        "[server]\n",
        "[server]\nno_such_key = 1\n",
    );
    home.edit(
        "config/identity.toml",
        "max_failed_login_attempts = 5",
        "max_failed_login_attempts = \"five\"",
    );
    let users = home.read("config/users.toml");
    let hash_start = users.find("$argon2id$").unwrap();
    let hash_end = hash_start + users[hash_start..].find('"').unwrap();
    home.edit(
        "config/users.toml",
        &users[hash_start..hash_end],
        "$argon2id$broken",
    );
    home.edit(
        "config/clients.toml",
        "grant_types = [\"password\", \"refresh_token\"]",
        "grant_types = [\"password\", \"implicit\"]",
    );

    let run = home.run(&["check-config"], None).await;

    run.assert_failure();
    let identity = home
        .path()
        .join("config/identity.toml")
        .display()
        .to_string();
    let users = home.path().join("config/users.toml").display().to_string();
    let clients = home
        .path()
        .join("config/clients.toml")
        .display()
        .to_string();
    let lines: Vec<&str> = run.stderr.lines().collect();
    let has = |file: &str, key: &str| {
        lines
            .iter()
            .any(|line| line.starts_with(&format!("{file}: {key}")))
    };
    assert!(has(&identity, "server.no_such_key"), "{run:#?}");
    assert!(
        has(&identity, "security.max_failed_login_attempts"),
        "{run:#?}"
    );
    assert!(has(&users, "users.admin.password_hash"), "{run:#?}");
    let grant_types = format!("clients.{DEMO_CLIENT_ID}.grant_types");
    assert!(has(&clients, &grant_types), "{run:#?}");
    assert!(
        run.stderr.contains("unknown grant type `implicit`"),
        "{run:#?}"
    );
    assert!(run.stderr.contains("4 problem(s) found"), "{run:#?}");
}

#[tokio::test]
async fn check_config_still_checks_the_default_users_and_clients_files_when_the_config_is_not_toml()
{
    let home = Home::new();
    std::fs::write(
        home.path().join("config/identity.toml"),
        "[server\nthis is not toml",
    )
    .unwrap();
    home.edit(
        "config/clients.toml",
        "grant_types = [\"password\", \"refresh_token\"]",
        "grant_types = [\"telepathy\"]",
    );

    let run = home.run(&["check-config"], None).await;

    run.assert_failure();
    let identity = home
        .path()
        .join("config/identity.toml")
        .display()
        .to_string();
    let clients = home
        .path()
        .join("config/clients.toml")
        .display()
        .to_string();
    assert!(
        run.stderr
            .contains(&format!("{identity}: not valid TOML (line ")),
        "{run:#?}"
    );
    let grant_types = format!("{clients}: clients.{DEMO_CLIENT_ID}.grant_types");
    assert!(run.stderr.contains(&grant_types), "{run:#?}");
    assert!(
        run.stderr.contains("unknown grant type `telepathy`"),
        "{run:#?}"
    );
}
