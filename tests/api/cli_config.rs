//! `tokengate check-config`, and how the config file is chosen: `--config`, `TOKENGATE_CONFIG`,
//! and the flag winning over the variable.

use std::path::PathBuf;

use crate::helpers::process::{run_to_end, toml_of, Home};

#[tokio::test]
async fn check_config_accepts_the_shipped_config() {
    // Arrange
    let home = Home::new();

    // Act
    let run = home.run(&["check-config"], None).await;

    // Assert
    run.assert_success();
    assert!(run.stdout.contains("ok"), "{run:#?}");
    let identity = home.file("config/identity.toml").display().to_string();
    assert!(run.stdout.contains(&identity), "{run:#?}");
}

#[tokio::test]
async fn check_config_rejects_an_unknown_key_naming_the_file_and_the_key() {
    // Arrange
    let home = Home::new();
    home.edit("config/identity.toml", "[server]\n", "[server]\nfoo = 1\n");

    // Act
    let run = home.run(&["check-config"], None).await;

    // Assert
    run.assert_failure();
    let identity = home.file("config/identity.toml").display().to_string();
    assert!(run.stderr.contains(&identity), "{run:#?}");
    assert!(run.stderr.contains("foo"), "{run:#?}");
    assert!(!run.stdout.contains("ok"), "{run:#?}");
}

#[tokio::test]
async fn check_config_rejects_a_bad_value_naming_its_key() {
    // Arrange
    let home = Home::new();
    home.edit(
        "config/identity.toml",
        "https_port = 8243",
        "https_port = 70000",
    );

    // Act
    let run = home.run(&["check-config"], None).await;

    // Assert
    run.assert_failure();
    let identity = home.file("config/identity.toml").display().to_string();
    assert!(run.stderr.contains(&identity), "{run:#?}");
    assert!(run.stderr.contains("server.https_port"), "{run:#?}");
}

#[tokio::test]
async fn check_config_prints_every_problem() {
    // Arrange
    let home = Home::new();
    home.edit(
        "config/identity.toml",
        "https_port = 8243",
        "https_port = 70000",
    );
    home.edit(
        "config/identity.toml",
        "argon2_memory_kib = 12288",
        "argon2_memory_kib = 1024",
    );

    // Act
    let run = home.run(&["check-config"], None).await;

    // Assert
    run.assert_failure();
    assert!(run.stderr.contains("server.https_port"), "{run:#?}");
    assert!(
        run.stderr.contains("password_hashing.argon2_memory_kib"),
        "{run:#?}"
    );
}

#[tokio::test]
async fn check_config_names_the_users_file_and_key_of_a_broken_password_hash() {
    // Arrange
    let home = Home::new();
    let users = home.read("config/users.toml");
    let hash = toml_of(&users)["users"]["admin"]["password_hash"]
        .as_str()
        .unwrap()
        .to_owned();
    home.edit("config/users.toml", &hash, "$argon2id$broken");

    // Act
    let run = home.run(&["check-config"], None).await;

    // Assert
    run.assert_failure();
    let users_file = home.file("config/users.toml").display().to_string();
    assert!(run.stderr.contains(&users_file), "{run:#?}");
    assert!(run.stderr.contains("users.admin.password_hash"), "{run:#?}");
}

/// Writes a valid copy and a broken copy of the config outside `config/`; returns (good, bad).
fn alternative_configs(home: &Home) -> (PathBuf, PathBuf) {
    let dir = home.file("alt");
    std::fs::create_dir_all(&dir).unwrap();
    let shipped = home.read("config/identity.toml");
    let good = dir.join("good.toml");
    std::fs::write(&good, &shipped).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        shipped.replacen("https_port = 8243", "https_port = 70000", 1),
    )
    .unwrap();
    // The default file is broken too, so only a selected good file can pass.
    home.edit("config/identity.toml", "[server]\n", "[server]\nfoo = 1\n");
    (good, bad)
}

#[tokio::test]
async fn the_config_flag_selects_the_config_file() {
    // Arrange
    let home = Home::new();
    let (good, bad) = alternative_configs(&home);

    // Act
    let accepted = home
        .run(&["--config", good.to_str().unwrap(), "check-config"], None)
        .await;
    let rejected = home
        .run(&["--config", bad.to_str().unwrap(), "check-config"], None)
        .await;

    // Assert
    accepted.assert_success();
    assert!(
        accepted.stdout.contains(good.to_str().unwrap()),
        "{accepted:#?}"
    );
    rejected.assert_failure();
    assert!(
        rejected.stderr.contains(bad.to_str().unwrap()),
        "{rejected:#?}"
    );
}

#[tokio::test]
async fn the_tokengate_config_variable_selects_the_config_file() {
    // Arrange
    let home = Home::new();
    let (good, bad) = alternative_configs(&home);

    // Act
    let mut command = home.command(&["check-config"]);
    command.env("TOKENGATE_CONFIG", &good);
    let accepted = run_to_end(command, None).await;
    let mut command = home.command(&["check-config"]);
    command.env("TOKENGATE_CONFIG", &bad);
    let rejected = run_to_end(command, None).await;

    // Assert
    accepted.assert_success();
    assert!(
        accepted.stdout.contains(good.to_str().unwrap()),
        "{accepted:#?}"
    );
    rejected.assert_failure();
    assert!(
        rejected.stderr.contains(bad.to_str().unwrap()),
        "{rejected:#?}"
    );
}

#[tokio::test]
async fn the_config_flag_wins_over_the_tokengate_config_variable() {
    // Arrange
    let home = Home::new();
    let (good, bad) = alternative_configs(&home);
    let mut command = home.command(&["--config", good.to_str().unwrap(), "check-config"]);
    command.env("TOKENGATE_CONFIG", &bad);

    // Act
    let run = run_to_end(command, None).await;

    // Assert
    run.assert_success();
    assert!(run.stdout.contains(good.to_str().unwrap()), "{run:#?}");
}
