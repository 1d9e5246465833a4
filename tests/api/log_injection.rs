//! The server's log cannot be forged or flooded from a request: control characters in logged
//! values are escaped (one event, one line) and request values are cut to 128 characters.
//! Run against the real binary, reading what it writes to stderr.

use std::time::{Duration, Instant};

use crate::helpers::process::{serve, Home, Server, DEMO_CLIENT_ID, DEMO_CLIENT_SECRET};

/// A user name that would write a line of its own, styled red, if it reached the log as is.
const HOSTILE_USER: &str =
    "eve\n2026-12-01T00:00:00.000000Z  INFO tokengate::http::token: FORGED login ok\x1b[31m\r";

/// Waits until the log holds `needle` (bounded), and returns the log.
async fn log_containing(server: &Server, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = server.log();
        if log.contains(needle) || Instant::now() > deadline {
            return log;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_user_name_with_newlines_and_ansi_escapes_cannot_forge_a_log_line() {
    let home = Home::new();
    let server = serve(&home).await;

    // Enough failures to lock the name: the lockout's audit lines carry the user name.
    for _ in 0..6 {
        let reply = server
            .password_grant(DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, HOSTILE_USER, "wrong")
            .await;
        reply.assert_error(400, "invalid_grant");
    }

    let log = log_containing(&server, "login refused: account locked").await;
    let escaped = r#"username="eve\n2026-12-01T00:00:00.000000Z  INFO tokengate::http::token: FORGED login ok\u{1b}[31m\r""#;
    assert!(
        log.contains(escaped),
        "the user name is not logged escaped:\n{log}"
    );
    assert!(
        !log.contains('\x1b'),
        "an escape sequence reached the log:\n{log:?}"
    );
    assert!(
        !log.contains('\r'),
        "a carriage return reached the log:\n{log:?}"
    );
    for line in log.lines() {
        assert!(
            !line.starts_with("2026-12-01T00:00:00.000000Z"),
            "a forged line:\n{log}"
        );
        if line.contains("FORGED") {
            assert!(
                line.contains("account locked"),
                "the name shows up outside its field: {line}"
            );
        }
    }
}

#[tokio::test]
async fn client_ids_and_user_names_in_log_lines_are_cut_to_128_characters() {
    let home = Home::new();
    let server = serve(&home).await;
    let long_id = format!("{}{}", "c".repeat(128), "d".repeat(10_000));
    let long_user = format!("{}{}", "u".repeat(128), "v".repeat(500));

    let reply = server
        .post_token_form(
            "/token",
            &long_id,
            "secret",
            &[("grant_type", "client_credentials")],
        )
        .await;
    reply.assert_error(401, "invalid_client");
    // Enough failures to lock the name, which the audit line names.
    for _ in 0..5 {
        server
            .password_grant(DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, &long_user, "wrong")
            .await
            .assert_error(400, "invalid_grant");
    }

    let shown_id = format!("client_id=\"{}\"…", "c".repeat(128));
    let shown_user = format!("username=\"{}\"…", "u".repeat(128));
    let log = log_containing(&server, &shown_user).await;
    assert!(log.contains(&shown_id), "the client id is not cut:\n{log}");
    assert!(
        log.contains(&shown_user),
        "the user name is not cut:\n{log}"
    );
    // The first character past the cut, right after the kept part (a bare "cd" could be in
    // a random key file name).
    let past_id = format!("{}d", "c".repeat(128));
    let past_user = format!("{}v", "u".repeat(128));
    assert!(
        !log.contains(&past_id) && !log.contains(&past_user),
        "more than 128 characters logged:\n{log}"
    );
}
