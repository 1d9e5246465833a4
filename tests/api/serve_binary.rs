//! `tokengate serve` as an operator runs it: a self-signed certificate on first start, the port
//! offset from the flag or the environment, the demo warnings, the README's curl commands, and a
//! broken config that stops the start naming the file and the key.

use std::os::unix::fs::PermissionsExt as _;
use std::process::{Command, Stdio};

use base64::Engine as _;
use serde_json::Value;

use crate::helpers::assert_token_shape;
use crate::helpers::process::{
    free_port, offset_of, run_to_end, serve, serve_with, toml_of, Home, OffsetFrom, DEMO_CLIENT_ID,
    DEMO_CLIENT_SECRET, DEMO_USER,
};

/// POSTs `body` to `https://localhost:PORT/token` with the demo client's Basic credentials the
/// way the README does: with `curl -k -s` when curl is installed, else the same request with
/// reqwest. Returns the response body as JSON.
async fn readme_token_request(port: u16, body: &str) -> Value {
    let basic = base64::engine::general_purpose::STANDARD
        .encode(format!("{DEMO_CLIENT_ID}:{DEMO_CLIENT_SECRET}"));
    let url = format!("https://localhost:{port}/token");
    let text = if curl_installed() {
        let mut curl = Command::new("curl");
        curl.args(["-k", "-s", "-d", body, "-H"])
            .arg(format!("Authorization: Basic {basic}"))
            .arg(&url);
        for proxy in ["https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"] {
            curl.env_remove(proxy);
        }
        let run = run_to_end(curl, None).await;
        assert_eq!(run.status.code(), Some(0), "curl failed: {run:#?}");
        run.stdout
    } else {
        // Only here, standing in for `curl -k`: the README's command skips verification.
        let client = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .no_proxy()
            .build()
            .unwrap();
        client
            .post(&url)
            .header("Authorization", format!("Basic {basic}"))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body.to_owned())
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text:?}"))
}

fn curl_installed() -> bool {
    Command::new("curl")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

#[tokio::test]
async fn serve_generates_a_self_signed_certificate_and_answers_health_on_the_offset_port() {
    // Arrange
    let home = Home::new();
    assert!(!home.cert().exists());

    // Act
    let server = serve(&home).await;
    let health = server.get("/health").await;

    // Assert
    assert_eq!(health.status, 200, "{}", health.text);
    assert_eq!(health.header("content-type"), Some("application/json"));
    assert_eq!(health.body["status"], "ok", "{}", health.text);
    assert!(home.cert().is_file());
    let key = home.file("certs/server.key");
    assert!(key.is_file());
    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "the key is readable by others: {mode:o}");
    assert!(
        home.file("data/tokens.db").is_file(),
        "the token database is not in TOKENGATE_HOME"
    );
    let cwd = std::fs::read_dir(home.file("elsewhere")).unwrap().count();
    assert_eq!(cwd, 0, "files were written to the current folder");
    let log = server.log();
    assert!(
        log.contains("self-signed") && log.contains(&home.cert().display().to_string()),
        "the log does not mention the generated certificate:\n{log}"
    );
    assert!(
        log.contains(&format!(":{}", server.port)),
        "the log does not name the port:\n{log}"
    );
}

#[tokio::test]
async fn the_readme_curl_commands_get_and_refresh_tokens_from_the_served_binary() {
    // Arrange
    let home = Home::new();
    let server = serve(&home).await;

    // Act: the README's password grant.
    let issued = readme_token_request(
        server.port,
        "grant_type=password&username=admin&password=admin&scope=PRODUCTION",
    )
    .await;

    // Assert
    assert_eq!(issued["token_type"], "Bearer", "{issued}");
    assert_eq!(issued["expires_in"], 3600, "{issued}");
    assert_eq!(issued["scope"], "PRODUCTION", "{issued}");
    let access = issued["access_token"].as_str().unwrap().to_owned();
    let refresh = issued["refresh_token"].as_str().unwrap().to_owned();
    assert_token_shape(&access);
    assert_token_shape(&refresh);

    // Act: the README's refresh grant.
    let refreshed = readme_token_request(
        server.port,
        &format!("grant_type=refresh_token&refresh_token={refresh}"),
    )
    .await;

    // Assert
    assert_eq!(refreshed["token_type"], "Bearer", "{refreshed}");
    assert_eq!(refreshed["expires_in"], 3600, "{refreshed}");
    assert_eq!(refreshed["scope"], "PRODUCTION", "{refreshed}");
    let new_access = refreshed["access_token"].as_str().unwrap();
    let new_refresh = refreshed["refresh_token"].as_str().unwrap();
    assert_token_shape(new_access);
    assert_token_shape(new_refresh);
    assert_ne!(new_access, access);
    assert_ne!(new_refresh, refresh);

    // Act + Assert: the first refresh token was spent by the refresh.
    server
        .demo_refresh(&refresh)
        .await
        .assert_error(400, "invalid_grant");
}

#[tokio::test]
async fn the_password_grant_of_the_readme_answers_200_with_no_store_headers() {
    // Arrange
    let home = Home::new();
    let server = serve(&home).await;

    // Act
    let reply = server.demo_login().await;

    // Assert
    let (_, refresh) = reply.assert_tokens(3600, "PRODUCTION");
    assert!(refresh.is_some(), "{}", reply.text);
}

#[tokio::test]
async fn serve_warns_loudly_about_the_demo_client_and_the_demo_user() {
    // Arrange
    let home = Home::new();

    // Act
    let server = serve(&home).await;

    // Assert
    let log = server.log();
    let warnings: Vec<&str> = log.lines().filter(|line| line.contains("WARN")).collect();
    assert!(
        warnings
            .iter()
            .any(|line| line.contains("DEMO CLIENT") && line.contains(DEMO_CLIENT_ID)),
        "no warning about the demo client:\n{log}"
    );
    assert!(
        warnings
            .iter()
            .any(|line| line.contains("DEMO USER") && line.contains(DEMO_USER)),
        "no warning about the demo user:\n{log}"
    );
}

#[tokio::test]
async fn serve_warns_while_users_have_hashes_made_with_other_argon2_parameters() {
    // Arrange: the shipped users' hashes have the shipped parameters; a home whose config was
    // changed since (as after raising or lowering them) has one user, admin, left behind.
    let as_shipped = Home::new();
    let changed = Home::new();
    changed.edit(
        "config/identity.toml",
        "argon2_memory_kib = 12288",
        "argon2_memory_kib = 9216",
    );
    changed.edit(
        "config/identity.toml",
        "argon2_iterations = 3",
        "argon2_iterations = 4",
    );

    // Act
    let unchanged_server = serve(&as_shipped).await;
    let changed_server = serve(&changed).await;

    // Assert
    let warning = "password hashes made with other argon2 parameters";
    let log = unchanged_server.log();
    assert!(!log.contains(warning), "{log}");
    let log = changed_server.log();
    let line = log
        .lines()
        .find(|line| line.contains(warning))
        .unwrap_or_else(|| panic!("no warning about the old hashes:\n{log}"));
    assert!(line.contains("WARN") && line.contains("users=1 "), "{line}");
}

#[tokio::test]
async fn the_port_offset_can_come_from_the_environment() {
    // Arrange
    let home = Home::new();

    // Act: TOKENGATE_PORT_OFFSET, no flag.
    let server = serve_with(&home, OffsetFrom::Env).await;

    // Assert
    let health = server.get("/health").await;
    assert_eq!(health.status, 200, "{}", health.text);
    let log = server.log();
    assert!(log.contains(&format!(":{}", server.port)), "{log}");
}

#[tokio::test]
async fn the_port_offset_flag_wins_over_the_environment_variable() {
    // Arrange
    let home = Home::new();

    // Act: --port-offset N and TOKENGATE_PORT_OFFSET pointing elsewhere.
    let server = serve_with(&home, OffsetFrom::FlagOverEnv).await;

    // Assert: the flag's port (8243 + N) answers.
    let health = server.get("/health").await;
    assert_eq!(health.status, 200, "{}", health.text);
    let log = server.log();
    assert!(log.contains(&format!(":{}", server.port)), "{log}");
}

#[tokio::test]
async fn serve_with_a_broken_config_exits_1_naming_the_file_and_the_key_without_panicking() {
    // Arrange
    let home = Home::new();
    home.edit(
        "config/identity.toml",
        "https_port = 8243",
        "https_port = 70000",
    );
    let offset = offset_of(free_port());

    // Act
    let run = home.run(&["serve", "--port-offset", &offset], None).await;

    // Assert
    run.assert_failure();
    let identity = home.file("config/identity.toml").display().to_string();
    assert!(run.stderr.contains(&identity), "{run:#?}");
    assert!(run.stderr.contains("server.https_port"), "{run:#?}");
}

#[tokio::test]
async fn serve_with_a_broken_users_file_exits_1_naming_the_file_and_the_key_without_panicking() {
    // Arrange
    let home = Home::new();
    let users = home.read("config/users.toml");
    let hash = toml_of(&users)["users"]["admin"]["password_hash"]
        .as_str()
        .unwrap()
        .to_owned();
    home.edit("config/users.toml", &hash, "not-a-hash");
    let offset = offset_of(free_port());

    // Act
    let run = home.run(&["serve", "--port-offset", &offset], None).await;

    // Assert
    run.assert_failure();
    let users_file = home.file("config/users.toml").display().to_string();
    assert!(run.stderr.contains(&users_file), "{run:#?}");
    assert!(run.stderr.contains("users.admin.password_hash"), "{run:#?}");
}
