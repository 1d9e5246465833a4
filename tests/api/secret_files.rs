//! Files holding secrets: the real binary creates the token database (with its -wal and -shm
//! files), the TLS key, signing keys and the files its CLI writes readable by the owner only
//! (folders it creates 0700), and `serve` and `check-config` warn, naming the file, when group
//! or others can read one.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use crate::helpers::process::{serve, Home};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|err| panic!("{}: {err}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn assert_mode(path: &Path, expected: u32) {
    assert_eq!(
        mode(path),
        expected,
        "{} is {:o}, not {expected:o}",
        path.display(),
        mode(path)
    );
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn pem_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "pem"))
        .collect();
    files.sort();
    files
}

#[tokio::test]
async fn serve_creates_the_database_its_wal_and_shm_the_tls_key_and_signing_keys_owner_only() {
    // Under the usual umask (022) a file created without care is readable by everyone.
    let home = Home::new();
    let server = serve(&home).await;
    // A write, so the -wal file holds something and both side files exist.
    server.demo_login().await;

    let data = home.path().join("data");
    assert_mode(&data, 0o700);
    for name in ["tokens.db", "tokens.db-wal", "tokens.db-shm"] {
        assert_mode(&data.join(name), 0o600);
    }
    assert_mode(&home.path().join("certs"), 0o700);
    assert_mode(&home.path().join("certs/server.key"), 0o600);
    let keys = home.path().join("keys");
    assert_mode(&keys, 0o700);
    let key_files = pem_files(&keys);
    assert!(!key_files.is_empty());
    for key in key_files {
        assert_mode(&key, 0o600);
    }
}

#[tokio::test]
async fn files_and_folders_the_cli_creates_are_owner_only_and_a_rewrite_keeps_the_mode() {
    let home = Home::new();
    // Users and clients in files that do not exist yet, in folders that do not exist yet.
    home.edit(
        "config/identity.toml",
        "users = \"config/users.toml\"",
        "users = \"private/users/users.toml\"",
    );
    home.edit(
        "config/identity.toml",
        "clients = \"config/clients.toml\"",
        "clients = \"private/clients.toml\"",
    );

    home.run(
        &["user", "add", "alice", "--password-stdin"],
        Some("a long passphrase"),
    )
    .await
    .assert_success();
    home.run(&["client", "add", "my-app"], None)
        .await
        .assert_success();
    home.run(&["keys", "rotate"], None).await.assert_success();

    assert_mode(&home.path().join("private"), 0o700);
    assert_mode(&home.path().join("private/users"), 0o700);
    assert_mode(&home.path().join("private/users/users.toml"), 0o600);
    assert_mode(&home.path().join("private/clients.toml"), 0o600);
    assert_mode(&home.path().join("keys"), 0o700);
    for key in pem_files(&home.path().join("keys")) {
        assert_mode(&key, 0o600);
    }
    // The lock files beside them too.
    assert_mode(&home.path().join("private/users/.users.toml.lock"), 0o600);

    // A rewrite keeps the operator's mode, here one shared with the service's group.
    chmod(&home.path().join("private/clients.toml"), 0o640);
    home.run(&["client", "disable", "my-app"], None)
        .await
        .assert_success();
    home.run(
        &["user", "add", "bob", "--password-stdin"],
        Some("another passphrase"),
    )
    .await
    .assert_success();
    assert_mode(&home.path().join("private/clients.toml"), 0o640);
    assert_mode(&home.path().join("private/users/users.toml"), 0o600);
}

#[tokio::test]
async fn serve_warns_naming_each_secret_file_group_or_others_can_read() {
    let home = Home::new();
    // The first start generates the TLS key and a signing key, owner-only.
    let first = serve(&home).await;
    let quiet = first.log();
    drop(first);
    let key = home.path().join("certs/server.key");
    let signing_key = pem_files(&home.path().join("keys")).remove(0);
    assert!(
        !quiet.contains(&format!("{}: holds secrets", key.display())),
        "{quiet}"
    );

    let users = home.path().join("config/users.toml");
    let clients = home.path().join("config/clients.toml");
    for file in [&key, &signing_key, &users, &clients] {
        chmod(file, 0o644);
    }
    chmod(&clients, 0o640);
    let server = serve(&home).await;

    let log = server.log();
    for (file, mode) in [
        (&key, "644"),
        (&signing_key, "644"),
        (&users, "644"),
        (&clients, "640"),
    ] {
        let warning = format!(
            "{}: holds secrets and is readable by group or others (mode {mode}); run chmod 600 on it",
            file.display()
        );
        assert!(log.contains(&warning), "no `{warning}` in:\n{log}");
    }
    let identity = home.path().join("config/identity.toml");
    assert!(
        !log.contains(&format!("{}: holds secrets", identity.display())),
        "identity.toml holds no password here:\n{log}"
    );
}

#[tokio::test]
async fn check_config_warns_naming_each_secret_file_group_or_others_can_read() {
    let home = Home::new();
    home.run(&["keys", "rotate"], None).await.assert_success();
    let signing_key = pem_files(&home.path().join("keys")).remove(0);
    let identity = home.path().join("config/identity.toml");
    let users = home.path().join("config/users.toml");
    let clients = home.path().join("config/clients.toml");
    // A database password makes identity.toml a secret file.
    home.edit(
        "config/identity.toml",
        "tokens = \"sqlite://data/tokens.db\"",
        "tokens = \"postgres://tokengate:hunter2@127.0.0.1:5432/tokengate\"",
    );
    chmod(&identity, 0o644);
    chmod(&users, 0o600);
    chmod(&clients, 0o604);
    chmod(&signing_key, 0o640);

    let run = home.run(&["check-config"], None).await;

    run.assert_success();
    for (file, mode) in [(&identity, "644"), (&clients, "604"), (&signing_key, "640")] {
        let warning = format!(
            "warning: {}: holds secrets and is readable by group or others (mode {mode}); run chmod 600 on it",
            file.display()
        );
        assert!(run.stderr.contains(&warning), "no `{warning}` in {run:#?}");
    }
    assert!(
        !run.stderr.contains(&format!("{}: holds", users.display())),
        "{run:#?}"
    );

    // Without the password the config file holds no secret.
    home.edit(
        "config/identity.toml",
        "postgres://tokengate:hunter2@",
        "postgres://tokengate@",
    );
    let run = home.run(&["check-config"], None).await;
    run.assert_success();
    assert!(
        !run.stderr
            .contains(&format!("{}: holds", identity.display())),
        "{run:#?}"
    );
}
