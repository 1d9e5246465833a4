//! `[logging]`: the format and the filter come from the config file (`TOKENGATE_LOG` still
//! wins for the filter); every line of a request carries its request id.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::process::{serve, Home, Server};

/// Polls the server's log until a line satisfies `matches`.
async fn wait_for_line(server: &Server, matches: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(line) = server.log().lines().find(|line| matches(line)) {
            return line.to_owned();
        }
        assert!(std::time::Instant::now() < deadline, "{}", server.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn json_format_writes_one_json_object_per_line_with_the_request_id() {
    let home = Home::new();
    home.edit(
        "config/identity.toml",
        "format = \"text\"",
        "format = \"json\"",
    );
    let server = serve(&home).await;

    let reply = server.demo_login().await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let request_id = reply.header("x-request-id").unwrap().to_owned();

    let summary = wait_for_line(&server, |line| line.contains("token request")).await;
    let summary: Value = serde_json::from_str(&summary).unwrap();
    assert_eq!(summary["message"], "token request");
    assert_eq!(summary["level"], "INFO");
    assert_eq!(summary["target"], "tokengate::http::token");
    assert_eq!(summary["fields"]["request_id"], request_id.as_str());
    assert_eq!(
        summary["fields"]["client_id"],
        "wU62DjlyDBnq87GlBwplfqvmAbAa"
    );
    assert_eq!(summary["fields"]["grant_type"], "password");
    assert!(summary["fields"]["latency_ms"].is_number(), "{summary}");
    assert!(
        chrono::DateTime::parse_from_rfc3339(summary["timestamp"].as_str().unwrap()).is_ok(),
        "{summary}"
    );
    // Every line, the start-up warnings included, is one JSON object.
    for line in server.log().lines() {
        let value: Value = serde_json::from_str(line)
            .unwrap_or_else(|err| panic!("not JSON ({err}): {line}\n{}", server.log()));
        for field in ["timestamp", "level", "target", "message", "fields"] {
            assert!(value.get(field).is_some(), "`{field}` missing: {line}");
        }
    }
}

#[tokio::test]
async fn text_format_lines_carry_the_request_id_too() {
    let home = Home::new();
    let server = serve(&home).await;

    let reply = server.demo_login().await;
    let request_id = reply.header("x-request-id").unwrap().to_owned();

    let summary = wait_for_line(&server, |line| line.contains("token request")).await;
    assert!(
        summary.contains(&format!("request_id={request_id}")),
        "{summary}"
    );
    assert!(serde_json::from_str::<Value>(&summary).is_err());
}

/// Logins, a refresh and a reuse of the spent refresh token: the reuse logs a warning after
/// the requests' info lines, so once it is in the log, any info line would be too.
async fn login_refresh_and_reuse(server: &Server) {
    let login = server.demo_login().await;
    let first = login.str("refresh_token").to_owned();
    assert_eq!(server.demo_refresh(&first).await.status, 200);
    assert_eq!(server.demo_refresh(&first).await.status, 400);
    wait_for_line(server, |line| line.contains("refresh token reuse detected")).await;
}

#[tokio::test]
async fn the_level_in_the_file_filters_the_log() {
    let home = Home::new();
    home.edit(
        "config/identity.toml",
        "level = \"info\"",
        "level = \"warn\"",
    );
    let server = serve(&home).await;

    login_refresh_and_reuse(&server).await;

    assert!(!server.log().contains("token request"), "{}", server.log());
}

#[tokio::test]
async fn tokengate_log_wins_over_the_level_in_the_file() {
    let home = Home::new();
    home.edit(
        "config/identity.toml",
        "level = \"info\"",
        "level = \"warn\"",
    );
    home.set_env("TOKENGATE_LOG", "info");
    let server = serve(&home).await;

    login_refresh_and_reuse(&server).await;

    assert!(server.log().contains("token request"), "{}", server.log());
}
