//! The audit trail: one JSON line per security event in `[audit] file`, with the common
//! fields, the request's id and address, and never a token, secret or password.

use std::os::unix::fs::PermissionsExt as _;
use std::time::Duration;

use serde_json::Value;
use tokengate::abuse::rate_limit::Rate;
use tokengate::config::{AuditDestination, AuditSettings};

use crate::helpers::process::{serve, Home, Server, DEMO_CLIENT_ID, DEMO_USER};
use crate::helpers::*;

fn trail(app: &TestApp) -> std::path::PathBuf {
    audit_file(app.home.path())
}

#[tokio::test]
async fn a_password_grant_writes_token_issued_naming_the_tokens_by_id_only() {
    let app = spawn_app().await;

    let reply = app.login(Some("PRODUCTION")).await;
    let (access, refresh) = reply.assert_tokens(3600, "PRODUCTION");
    let refresh = refresh.unwrap();

    let event = wait_for_event(&trail(&app), "token_issued", |_| true).await;
    assert_common_fields(&event, "server");
    assert_eq!(event["outcome"], "success");
    assert_eq!(event["grant_type"], "password");
    assert_eq!(event["client_id"], CLIENT_ID);
    assert_eq!(event["subject"], USER);
    assert_eq!(event["scope"], "PRODUCTION");
    assert_eq!(event["ip"], "127.0.0.1");
    let stored = stored_access_token(&app, &access).await.unwrap();
    assert_eq!(event["token_id"], stored.id.to_uuid_string());
    assert_eq!(event["grant_id"], stored.family_id.to_uuid_string());
    assert!(event["refresh_token_id"].is_string(), "{event}");
    assert_eq!(
        Some(event["request_id"].as_str().unwrap()),
        reply.header("x-request-id")
    );

    let text = std::fs::read_to_string(trail(&app)).unwrap();
    for secret in [
        access.as_str(),
        refresh.as_str(),
        access.split_once('.').unwrap().1,
        refresh.split_once('.').unwrap().1,
        CLIENT_SECRET,
        PASSWORD,
    ] {
        assert!(!text.contains(secret), "the trail holds a secret: {text}");
    }
}

#[tokio::test]
async fn the_audit_file_is_created_readable_by_its_owner_only() {
    let app = spawn_app().await;
    app.login(None).await.assert_tokens(3600, "default");
    wait_for_event(&trail(&app), "token_issued", |_| true).await;

    let mode = std::fs::metadata(trail(&app)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{mode:o}");
    let dir = std::fs::metadata(trail(&app).parent().unwrap()).unwrap();
    assert_eq!(dir.permissions().mode() & 0o777, 0o700);
}

#[tokio::test]
async fn a_wrong_password_writes_login_failed() {
    let app = spawn_app().await;

    let reply = app
        .post_token(&[
            ("grant_type", "password"),
            ("username", USER),
            ("password", "not-the-password"),
        ])
        .await;
    reply.assert_error(400, "invalid_grant");

    let event = wait_for_event(&trail(&app), "login_failed", |_| true).await;
    assert_common_fields(&event, "server");
    assert_eq!(event["outcome"], "failure");
    assert_eq!(event["reason"], "invalid_credentials");
    assert_eq!(event["client_id"], CLIENT_ID);
    assert_eq!(event["subject"], USER);
    assert_eq!(event["ip"], "127.0.0.1");
    let text = std::fs::read_to_string(trail(&app)).unwrap();
    assert!(!text.contains("not-the-password"), "{text}");
}

#[tokio::test]
async fn repeated_failures_write_account_locked_then_refusals_say_locked() {
    let app = spawn_app().await;
    let wrong = [
        ("grant_type", "password"),
        ("username", USER),
        ("password", "wrong"),
    ];
    // The shipped config locks a name for an address after 5 failures.
    for _ in 0..5 {
        app.post_token(&wrong)
            .await
            .assert_error(400, "invalid_grant");
    }

    let locked = wait_for_event(&trail(&app), "account_locked", |_| true).await;
    assert_common_fields(&locked, "server");
    assert_eq!(locked["outcome"], "failure");
    assert_eq!(locked["subject"], USER);
    assert_eq!(locked["locked_for"], "address");
    assert!(
        chrono::DateTime::parse_from_rfc3339(locked["locked_until"].as_str().unwrap()).is_ok(),
        "{locked}"
    );

    // Even the right password is refused now, unchecked.
    app.login(None).await.assert_error(400, "invalid_grant");
    wait_for_event(&trail(&app), "login_failed", |e| {
        e["reason"] == "account_locked"
    })
    .await;
    assert!(events_named(&trail(&app), "token_issued").is_empty());
}

#[tokio::test]
async fn a_reused_refresh_token_writes_reuse_detected_and_the_grants_revocation() {
    let app = spawn_app().await;
    let (_, first) = app.login(None).await.assert_tokens(3600, "default");
    let first = first.unwrap();
    app.refresh(&first).await.assert_tokens(3600, "default");

    let reuse = app.refresh(&first).await;
    reuse.assert_error(400, "invalid_grant");

    let detected = wait_for_event(&trail(&app), "refresh_reuse_detected", |_| true).await;
    assert_common_fields(&detected, "server");
    assert_eq!(detected["outcome"], "failure");
    assert_eq!(detected["client_id"], CLIENT_ID);
    assert_eq!(detected["subject"], USER);
    assert_eq!(
        Some(detected["request_id"].as_str().unwrap()),
        reuse.header("x-request-id")
    );
    let revoked = wait_for_event(&trail(&app), "grant_revoked", |_| true).await;
    assert_eq!(revoked["by"], "reuse_detection");
    assert_eq!(revoked["grant_id"], detected["grant_id"]);
    assert_eq!(revoked["request_id"], detected["request_id"]);
    // Login and the one good refresh issued tokens, in one grant.
    let issued = events_named(&trail(&app), "token_issued");
    assert_eq!(issued.len(), 2, "{issued:?}");
    assert_eq!(issued[1]["grant_type"], "refresh_token");
    assert_eq!(issued[1]["grant_id"], revoked["grant_id"]);
}

#[tokio::test]
async fn revoking_a_refresh_token_writes_grant_revoked_by_the_client() {
    let app = spawn_app().await;
    let (_, refresh) = app.login(None).await.assert_tokens(3600, "default");

    let reply = app.revoke(&refresh.unwrap()).await;
    assert_eq!(reply.status, 200);

    let revoked = wait_for_event(&trail(&app), "grant_revoked", |_| true).await;
    assert_common_fields(&revoked, "server");
    assert_eq!(revoked["outcome"], "success");
    assert_eq!(revoked["by"], "client");
    assert_eq!(revoked["client_id"], CLIENT_ID);
    assert_eq!(revoked["subject"], USER);
    let issued = wait_for_event(&trail(&app), "token_issued", |_| true).await;
    assert_eq!(revoked["grant_id"], issued["grant_id"]);
}

#[tokio::test]
async fn a_wrong_client_secret_and_an_unknown_client_write_client_auth_failed() {
    let app = spawn_app().await;
    let form = [("grant_type", "client_credentials")];

    app.post_token_as(CLIENT_ID, "not-the-secret", &form)
        .await
        .assert_error(401, "invalid_client");
    app.post_token_as("nobody", "whatever", &form)
        .await
        .assert_error(401, "invalid_client");

    let wrong = wait_for_event(&trail(&app), "client_auth_failed", |e| {
        e["reason"] == "wrong_secret"
    })
    .await;
    assert_common_fields(&wrong, "server");
    assert_eq!(wrong["outcome"], "failure");
    assert_eq!(wrong["client_id"], CLIENT_ID);
    assert_eq!(wrong["ip"], "127.0.0.1");
    let unknown = wait_for_event(&trail(&app), "client_auth_failed", |e| {
        e["reason"] == "unknown_client"
    })
    .await;
    assert_eq!(unknown["client_id"], "nobody");
    let text = std::fs::read_to_string(trail(&app)).unwrap();
    assert!(!text.contains("not-the-secret"), "{text}");
}

#[tokio::test]
async fn a_request_over_the_rate_limit_writes_rate_limited_with_its_request_id() {
    let app = spawn_app_with(|s| {
        s.rate_limit.per_ip = Some(Rate {
            per_second: 0.001,
            burst: 1.0,
        })
    })
    .await;
    let form = [("grant_type", "refresh_token"), ("refresh_token", "x")];
    app.post_token(&form)
        .await
        .assert_error(400, "invalid_grant");

    let limited = app.post_token(&form).await;
    limited.assert_error(429, "rate_limited");

    let event = wait_for_event(&trail(&app), "rate_limited", |_| true).await;
    assert_common_fields(&event, "server");
    assert_eq!(event["outcome"], "failure");
    assert_eq!(event["bucket"], "ip");
    assert_eq!(event["ip"], "127.0.0.1");
    assert_eq!(
        Some(event["request_id"].as_str().unwrap()),
        limited.header("x-request-id")
    );
}

/// Unauthenticated traffic must not flood the trail: repeats of one failure from one address
/// are counted, not written, until the next window; successes are all written.
#[tokio::test]
async fn a_burst_of_wrong_secrets_from_one_address_writes_one_line_then_the_count_left_out() {
    // Arrange: no lockout or rate limit, so every request is a wrong secret.
    let app = spawn_app_with(|s| {
        s.security.client_auth_lockout = None;
        s.rate_limit.per_ip = None;
        s.rate_limit.per_client = None;
    })
    .await;
    let form = [("grant_type", "client_credentials")];

    // Act
    for _ in 0..50 {
        app.post_token_as(SERVICE_CLIENT_ID, "not-the-secret", &form)
            .await
            .assert_error(401, "invalid_client");
    }
    for _ in 0..3 {
        app.post_token_as(SERVICE_CLIENT_ID, SHARED_SECRET, &form)
            .await
            .assert_tokens(600, "default");
    }
    // The events are written in order: once the last success is there, so is the burst.
    let issued = wait_for_event(&trail(&app), "token_issued", |_| true).await;
    while events_named(&trail(&app), "token_issued").len() < 3 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Assert
    let failed = events_named(&trail(&app), "client_auth_failed");
    let reasons: Vec<&Value> = failed.iter().map(|e| &e["reason"]).collect();
    assert_eq!(reasons, ["wrong_secret"]);
    assert_eq!(failed[0].get("suppressed"), None, "{}", failed[0]);
    assert_eq!(issued.get("suppressed"), None, "{issued}");

    // After the window, the address's next failure carries the count left out.
    app.clock.advance_secs(10);
    let next = app
        .post_token_as(SERVICE_CLIENT_ID, "not-the-secret", &form)
        .await;
    next.assert_error(401, "invalid_client");
    let request_id = next.header("x-request-id").unwrap().to_owned();
    let counted = wait_for_event(&trail(&app), "client_auth_failed", |e| {
        e["request_id"] == request_id.as_str()
    })
    .await;
    assert_common_fields(&counted, "server");
    assert_eq!(counted["suppressed"], 49, "{counted}");
    assert_eq!(counted["ip"], "127.0.0.1");
    assert_eq!(events_named(&trail(&app), "client_auth_failed").len(), 2);
}

#[tokio::test]
async fn with_the_file_set_to_nothing_no_trail_is_written() {
    let on = spawn_app().await;
    let off = spawn_app_with(|s| s.audit = AuditSettings::off()).await;

    on.login(None).await.assert_tokens(3600, "default");
    off.login(None).await.assert_tokens(3600, "default");

    wait_for_event(&trail(&on), "token_issued", |_| true).await;
    assert!(!trail(&off).exists());
    assert!(!off.home.path().join("logs").exists());
}

#[tokio::test]
async fn with_max_bytes_the_file_is_rotated_keeping_the_newest_files() {
    let app = spawn_app_with(|s| {
        s.audit.max_bytes = Some(1024);
        s.audit.keep = 2;
    })
    .await;
    assert!(matches!(
        app.settings.audit.destination,
        AuditDestination::File(_)
    ));

    // Each token_issued line is ~400 bytes: 12 grants fill the file and both copies.
    for _ in 0..12 {
        app.post_token_as(
            SERVICE_CLIENT_ID,
            SHARED_SECRET,
            &[("grant_type", "client_credentials")],
        )
        .await
        .assert_tokens(600, "default");
    }

    let path = trail(&app);
    let numbered = |n: u32| std::path::PathBuf::from(format!("{}.{n}", path.display()));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !numbered(2).exists() {
        assert!(std::time::Instant::now() < deadline, "never rotated twice");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!numbered(3).exists(), "keep = 2 keeps two rotated files");
    for file in [path.clone(), numbered(1), numbered(2)] {
        let size = std::fs::metadata(&file).unwrap().len();
        assert!(size <= 1024, "{} is {size} bytes", file.display());
        let events = audit_events(&file);
        assert!(
            events.iter().all(|e| e["event"] == "token_issued"),
            "{events:?}"
        );
    }
    let mode = std::fs::metadata(numbered(1)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

/// The CLI writes its changes to the same trail (a process of its own, appending).
#[tokio::test]
async fn the_clis_changes_to_users_clients_and_keys_are_audited() {
    let home = Home::new();
    let path = audit_file(home.path());

    home.run(
        &["user", "add", "carol", "--password-stdin"],
        Some("carol's secret"),
    )
    .await
    .assert_success();
    home.run(&["client", "remove", DEMO_CLIENT_ID], None)
        .await
        .assert_success();
    home.run(&["keys", "rotate"], None).await.assert_success();
    home.run(&["user", "revoke-tokens", DEMO_USER], None)
        .await
        .assert_success();

    let events = audit_events(&path);
    let names: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "user_added",
            "client_removed",
            "key_rotated",
            "tokens_revoked"
        ]
    );
    for event in &events {
        assert_common_fields(event, "cli");
        assert_eq!(event["outcome"], "success");
        assert_eq!(event["ip"], Value::Null);
        assert_eq!(event["request_id"], Value::Null);
    }
    assert_eq!(events[0]["subject"], "carol");
    assert_eq!(events[1]["client_id"], DEMO_CLIENT_ID);
    assert_eq!(events[2]["algorithm"], "EdDSA");
    assert!(
        events[2]["kid"].as_str().is_some_and(|kid| !kid.is_empty()),
        "{}",
        events[2]
    );
    assert_eq!(events[3]["subject"], DEMO_USER);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains("carol's secret"), "{text}");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

/// The service's user may write `logs/`, so it can put a symlink where the trail goes; the CLI,
/// run as root, must neither create nor chown the file it points to (/etc/ld.so.preload, say).
#[tokio::test]
async fn the_cli_refuses_an_audit_file_that_is_a_symlink_and_creates_nothing_through_it() {
    // Arrange: tests run as root here, like an operator's `sudo tokengate user add`.
    let home = Home::new();
    let elsewhere = tempfile::tempdir().unwrap();
    let target = elsewhere.path().join("ld.so.preload");
    let path = audit_file(home.path());
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&target, &path).unwrap();

    // Act
    let run = home
        .run(
            &["user", "add", "carol", "--password-stdin"],
            Some("carol's secret"),
        )
        .await;

    // Assert: the change is made, the event is not written, and the CLI says so.
    run.assert_success();
    assert!(home.read("config/users.toml").contains("carol"));
    assert!(!target.exists(), "the CLI created the symlink's target");
    assert!(std::fs::symlink_metadata(&path)
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(
        run.stderr.contains("warning") && run.stderr.contains("symbolic link"),
        "{run:#?}"
    );
}

/// As logrotate does: serves, records a token, moves the trail to `audit.jsonl.1` and sends
/// `signal`; returns once the next token's event is in a new file at the path, with that file
/// and the moved one.
async fn move_the_trail_and_signal(
    home: &Home,
    signal: &str,
) -> (Server, std::path::PathBuf, std::path::PathBuf) {
    let path = audit_file(home.path());
    let moved = home.file("logs/audit.jsonl.1");
    let server = serve(home).await;
    server.demo_login().await.assert_tokens(3600, "PRODUCTION");
    wait_for_event(&path, "token_issued", |_| true).await;
    std::fs::rename(&path, &moved).unwrap();

    server.send_signal(signal);
    // The writer opens the path again as soon as it is told, creating the file.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !path.exists() {
        assert!(std::time::Instant::now() < deadline, "{}", server.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let second = server.demo_login().await;
    second.assert_tokens(3600, "PRODUCTION");
    let request_id = second.header("x-request-id").unwrap();
    wait_for_event(&path, "token_issued", |e| e["request_id"] == request_id).await;
    assert_eq!(events_named(&moved, "token_issued").len(), 1);
    (server, path, moved)
}

async fn stops_cleanly(mut server: Server) {
    server.send_signal("TERM");
    assert!(server
        .wait_for_exit(Duration::from_secs(30))
        .await
        .is_some_and(|status| status.success()));
}

/// logrotate moves the file and sends SIGHUP: the server goes on in a new file at the path.
#[tokio::test]
async fn sighup_reopens_the_audit_file_after_it_was_moved() {
    let home = Home::new();

    let (server, path, _) = move_the_trail_and_signal(&home, "HUP").await;

    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // SIGHUP did not end the server.
    assert_eq!(server.get("/health").await.status, 200);
    stops_cleanly(server).await;
}

/// logrotate's `postrotate` sends SIGUSR1: the server goes on in a new file at the path, and
/// nothing else happens (SIGHUP would also re-read the whole config).
#[tokio::test]
async fn sigusr1_reopens_the_audit_file_without_reloading_the_config() {
    let home = Home::new();

    let (server, path, moved) = move_the_trail_and_signal(&home, "USR1").await;

    let log = server.log();
    assert!(log.contains("reopening the audit file"), "{log}");
    assert!(!log.contains("reloading the configuration"), "{log}");
    assert!(events_named(&path, "config_reloaded").is_empty());
    assert!(events_named(&moved, "config_reloaded").is_empty());
    stops_cleanly(server).await;
}

#[tokio::test]
async fn an_application_token_is_audited_with_the_client_as_its_subject() {
    let app = spawn_app().await;

    app.post_token_as(
        SERVICE_CLIENT_ID,
        SHARED_SECRET,
        &[
            ("grant_type", "client_credentials"),
            ("scope", "reports.read"),
        ],
    )
    .await
    .assert_tokens(600, "reports.read");

    let event = wait_for_event(&trail(&app), "token_issued", |_| true).await;
    assert_eq!(event["grant_type"], "client_credentials");
    assert_eq!(event["client_id"], SERVICE_CLIENT_ID);
    assert_eq!(event["subject"], SERVICE_CLIENT_ID);
    assert_eq!(event["scope"], "reports.read");
    assert_eq!(event["refresh_token_id"], Value::Null);
    assert_eq!(event["grant_id"], event["token_id"]);
}

#[tokio::test]
async fn a_jwt_access_token_is_audited_by_its_jti() {
    use base64::Engine as _;
    let app = spawn_app().await;

    let reply = app.jwt_password_grant().await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let jwt = reply.str("access_token");
    let payload = jwt.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();

    let event = wait_for_event(&trail(&app), "token_issued", |_| true).await;
    assert_eq!(event["client_id"], JWT_CLIENT_ID);
    assert_eq!(event["token_id"], claims["jti"]);
    let text = std::fs::read_to_string(trail(&app)).unwrap();
    assert!(!text.contains(payload), "the trail holds the JWT: {text}");
}

#[tokio::test]
async fn sighup_moves_the_trail_to_a_new_file_switches_the_log_format_and_records_the_reload() {
    // Arrange
    let home = Home::new();
    let old = audit_file(home.path());
    let new = home.file("logs/after-reload.jsonl");
    let server = serve(&home).await;
    home.edit(
        "config/identity.toml",
        "file = \"logs/audit.jsonl\"",
        "file = \"logs/after-reload.jsonl\"",
    );
    home.edit(
        "config/identity.toml",
        "format = \"text\"",
        "format = \"json\"",
    );

    // Act
    server.send_signal("HUP");

    // Assert: the reload's own event goes to the old file (recorded before the switch
    // reached the writer, or after: either file), later events to the new one.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let reloaded = loop {
        let found: Vec<Value> = [&old, &new]
            .into_iter()
            .filter(|path| path.exists())
            .flat_map(|path| events_named(path, "config_reloaded"))
            .collect();
        if let Some(event) = found.into_iter().next() {
            break event;
        }
        assert!(std::time::Instant::now() < deadline, "{}", server.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(reloaded["outcome"], "success", "{reloaded}");
    let changed = reloaded.to_string();
    assert!(
        changed.contains("audit.file") && changed.contains("logging.format"),
        "{reloaded}"
    );
    let login = server.demo_login().await;
    login.assert_tokens(3600, "PRODUCTION");
    let request_id = login.header("x-request-id").unwrap().to_owned();
    wait_for_event(&new, "token_issued", |e| {
        e["request_id"] == request_id.as_str()
    })
    .await;
    assert!(
        events_named(&old, "token_issued")
            .iter()
            .all(|e| e["request_id"] != request_id.as_str()),
        "the old trail got an event after the reload"
    );
    // The log is JSON lines from the reload on: the token request's line (written by the
    // log's own thread, within 20 ms) is one.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let line: Value = loop {
        let log = server.log();
        let request_line = log
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .find(|line| line["fields"]["request_id"] == request_id.as_str());
        if let Some(line) = request_line {
            break line;
        }
        assert!(std::time::Instant::now() < deadline, "{log}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(line["level"].is_string(), "{line}");
}
