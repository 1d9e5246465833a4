//! The `[security]` keys of lockout per client IP and per user, and of the client-auth limit.

use std::path::Path;

use tokengate::config::{self, ConfigError, ConfigSource, Settings};

use crate::helpers::project_root;

fn shipped_with(from: &str, to: &str) -> String {
    let text = std::fs::read_to_string(project_root().join("config/identity.toml")).unwrap();
    assert!(text.contains(from), "the shipped config has no `{from}`");
    text.replacen(from, to, 1)
}

fn validate(text: &str) -> Result<Settings, ConfigError> {
    config::validate(
        text,
        Path::new("/etc/tokengate/identity.toml"),
        &ConfigSource {
            config_path: None,
            port_offset: None,
            home: Some(Path::new("/srv/tokengate").to_path_buf()),
        },
    )
}

#[test]
fn the_shipped_file_counts_5_per_ip_50_per_user_and_10_client_secrets() {
    let settings = validate(&shipped_with("", "")).unwrap();

    let lockout = settings.security.lockout.unwrap();
    assert_eq!(lockout.max_failures, 5);
    assert_eq!(lockout.max_failures_per_user, 50);
    let client = settings.security.client_auth_lockout.unwrap();
    assert_eq!(client.max_failures, 10);
    assert_eq!(client.window_secs, 900);
    assert_eq!(client.lock_secs, 900);
}

#[test]
fn a_per_user_limit_below_the_per_ip_limit_is_reported_with_file_and_key() {
    let text = shipped_with(
        "max_failed_login_attempts_per_user = 50",
        "max_failed_login_attempts_per_user = 4",
    );

    let problems = validate(&text).unwrap_err().problems;

    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(
        problems[0].key,
        "security.max_failed_login_attempts_per_user"
    );
    assert_eq!(problems[0].file, Path::new("/etc/tokengate/identity.toml"));
    assert!(
        problems[0].message.contains("at least"),
        "{}",
        problems[0].message
    );
}

#[test]
fn zero_turns_the_per_user_and_the_client_auth_limits_off() {
    let text = shipped_with(
        "max_failed_login_attempts_per_user = 50",
        "max_failed_login_attempts_per_user = 0",
    )
    .replacen(
        "max_failed_client_auth_attempts = 10",
        "max_failed_client_auth_attempts = 0",
        1,
    );

    let settings = validate(&text).unwrap();

    assert_eq!(settings.security.lockout.unwrap().max_failures_per_user, 0);
    assert!(settings.security.client_auth_lockout.is_none());
}
