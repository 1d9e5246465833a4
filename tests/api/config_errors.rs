//! `config/identity.toml` → `Settings`: every key is read, the port offset is applied, paths
//! resolve against the home folder, and every mistake is reported with its file and key.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokengate::config::DirectoryLocation::{self, File};
use tokengate::config::{
    self, AuditDestination, AuditSettings, ConfigError, ConfigProblem, ConfigSource, LogFormat,
    RegistrationMode, RegistrationSettings, Settings, SqliteSynchronous, TokenStoreSettings,
};
use tokengate::store::model::GrantType;

use crate::helpers::{project_root, spawn_app_with, stored_access_token};

/// The shipped config file's text.
fn shipped_text() -> String {
    std::fs::read_to_string(shipped_file()).unwrap()
}

fn shipped_file() -> PathBuf {
    project_root().join("config/identity.toml")
}

/// The shipped text with one exact line (or fragment) replaced; fails if it is not there.
fn shipped_with(replacements: &[(&str, &str)]) -> String {
    let mut text = shipped_text();
    for (from, to) in replacements {
        assert!(text.contains(from), "the shipped config has no `{from}`");
        text = text.replacen(from, to, 1);
    }
    text
}

/// A source whose home is `home`, with no offset from the command line.
fn source_in(home: &Path) -> ConfigSource {
    ConfigSource {
        config_path: None,
        port_offset: None,
        home: Some(home.to_path_buf()),
    }
}

/// Validates `text` as if it were `/etc/tokengate/identity.toml`, home `/srv/tokengate`.
fn validate(text: &str) -> Result<Settings, ConfigError> {
    config::validate(
        text,
        Path::new("/etc/tokengate/identity.toml"),
        &source_in(Path::new("/srv/tokengate")),
    )
}

/// The problems `text` has; fails if it validates.
fn problems_of(text: &str) -> Vec<ConfigProblem> {
    match validate(text) {
        Ok(_) => panic!("expected the config to be rejected:\n{text}"),
        Err(err) => err.problems,
    }
}

/// Asserts that exactly the problems found all name the file, and one names `key`.
fn assert_names_key(problems: &[ConfigProblem], key: &str) {
    assert!(!problems.is_empty());
    for problem in problems {
        assert_eq!(
            problem.file,
            Path::new("/etc/tokengate/identity.toml"),
            "{problem}"
        );
        assert!(
            problem
                .to_string()
                .starts_with("/etc/tokengate/identity.toml: "),
            "the message does not start with the file: {problem}"
        );
    }
    assert!(
        problems.iter().any(|p| p.key == key),
        "no problem names `{key}`: {problems:?}"
    );
    let shown = ConfigError {
        problems: problems.to_vec(),
    }
    .to_string();
    assert!(shown.contains(key), "`{key}` not in the message: {shown}");
}

// ---------------------------------------------------------------------------------------------
// The shipped file
// ---------------------------------------------------------------------------------------------

#[test]
fn the_shipped_config_file_loads_with_its_documented_values() {
    // Arrange
    let home = tempfile::tempdir().unwrap();
    let source = ConfigSource {
        config_path: Some(shipped_file()),
        ..source_in(home.path())
    };

    // Act
    let settings = config::load(&source).unwrap();

    // Assert
    let home = home.path();
    assert_eq!(settings.config_file, shipped_file());
    let server = &settings.server;
    assert_eq!(server.host, "0.0.0.0".parse::<IpAddr>().unwrap());
    assert_eq!(server.https_port, 8243);
    assert_eq!(server.port_offset, 0);
    assert_eq!(server.max_connections, 10_000);
    assert_eq!(server.max_connections_per_ip, 512);
    assert_eq!(server.tls_handshake_timeout, Duration::from_secs(10));
    assert_eq!(server.header_read_timeout, Duration::from_secs(10));
    assert_eq!(server.request_timeout, Duration::from_secs(30));
    assert_eq!(server.max_body_bytes, 16_384);
    assert_eq!(server.shutdown_grace_period, Duration::from_secs(10));
    assert_eq!(server.shutdown_drain_period, Duration::ZERO);
    assert_eq!(settings.tls.cert, home.join("certs/server.crt"));
    assert_eq!(settings.tls.key, home.join("certs/server.key"));
    assert!(settings.tls.generate_self_signed);
    assert_eq!(settings.oauth.access_token_validity_secs, 3600);
    assert_eq!(settings.oauth.refresh_token_validity_secs, 86_400);
    assert!(settings.oauth.renew_refresh_token);
    let hashing = &settings.password_hashing;
    assert_eq!(hashing.argon2_memory_kib, 12_288);
    assert_eq!(hashing.argon2_iterations, 3);
    assert_eq!(hashing.argon2_parallelism, 1);
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    assert_eq!(hashing.workers, cores, "workers = 0 means one per core");
    assert_eq!(hashing.queue_capacity, 64);
    assert_eq!(settings.stores.users, File(home.join("config/users.toml")));
    assert_eq!(
        settings.stores.clients,
        File(home.join("config/clients.toml"))
    );
    let TokenStoreSettings::Sqlite { path, synchronous } = &settings.stores.tokens else {
        panic!("the test config uses SQLite")
    };
    assert_eq!(path, &home.join("data/tokens.db"));
    assert_eq!(*synchronous, SqliteSynchronous::Normal);
    assert_eq!(settings.stores.reload_interval, Duration::from_secs(2));
    let management = &settings.management;
    assert!(management.enabled);
    assert_eq!(management.host, "127.0.0.1".parse::<IpAddr>().unwrap());
    assert_eq!(management.port, 9000);
    assert!(!management.per_client_metrics);
}

#[test]
fn every_key_of_the_shipped_config_is_read_from_the_file() {
    // Arrange: every value changed away from its default.
    let text = shipped_with(&[
        ("host = \"0.0.0.0\"", "host = \"127.0.0.2\""),
        ("https_port = 8243", "https_port = 9000"),
        ("port_offset = 0", "port_offset = 7"),
        ("max_connections = 10000", "max_connections = 11"),
        (
            "max_connections_per_ip = 512",
            "max_connections_per_ip = 21",
        ),
        ("tls_handshake_timeout = 10", "tls_handshake_timeout = 12"),
        ("header_read_timeout = 10", "header_read_timeout = 13"),
        ("request_timeout = 30", "request_timeout = 14"),
        ("max_body_bytes = 16384", "max_body_bytes = 2048"),
        ("shutdown_grace_period = 10", "shutdown_grace_period = 15"),
        ("shutdown_drain_period = 0", "shutdown_drain_period = 22"),
        ("cert = \"certs/server.crt\"", "cert = \"tls/a.crt\""),
        ("key = \"certs/server.key\"", "key = \"tls/a.key\""),
        (
            "generate_self_signed = true",
            "generate_self_signed = false",
        ),
        (
            "access_token_default_validity_period = 3600",
            "access_token_default_validity_period = 16",
        ),
        (
            "refresh_token_validity_period = 86400",
            "refresh_token_validity_period = 17",
        ),
        ("renew_refresh_token = true", "renew_refresh_token = false"),
        ("argon2_memory_kib = 12288", "argon2_memory_kib = 8192"),
        ("argon2_iterations = 3", "argon2_iterations = 4"),
        ("argon2_parallelism = 1", "argon2_parallelism = 4"),
        ("workers = 0", "workers = 5"),
        ("queue_capacity = 64", "queue_capacity = 18"),
        ("users = \"config/users.toml\"", "users = \"u/users.toml\""),
        (
            "clients = \"config/clients.toml\"",
            "clients = \"c/clients.toml\"",
        ),
        (
            "tokens = \"sqlite://data/tokens.db\"",
            "tokens = \"sqlite://t/t.db\"",
        ),
        (
            "sqlite_synchronous = \"normal\"",
            "sqlite_synchronous = \"full\"",
        ),
        ("reload_interval = 2", "reload_interval = 19"),
        ("enabled = true", "enabled = false"),
        ("host = \"127.0.0.1\"", "host = \"10.1.2.3\""),
        ("\nport = 9000", "\nport = 9100"),
        ("per_client_metrics = false", "per_client_metrics = true"),
    ]);

    // Act
    let settings = validate(&text).unwrap();

    // Assert
    let home = Path::new("/srv/tokengate");
    let server = &settings.server;
    assert_eq!(server.host, "127.0.0.2".parse::<IpAddr>().unwrap());
    assert_eq!(server.https_port, 9007);
    assert_eq!(server.port_offset, 7);
    assert_eq!(server.max_connections, 11);
    assert_eq!(server.max_connections_per_ip, 21);
    assert_eq!(server.tls_handshake_timeout, Duration::from_secs(12));
    assert_eq!(server.header_read_timeout, Duration::from_secs(13));
    assert_eq!(server.request_timeout, Duration::from_secs(14));
    assert_eq!(server.max_body_bytes, 2048);
    assert_eq!(server.shutdown_grace_period, Duration::from_secs(15));
    assert_eq!(server.shutdown_drain_period, Duration::from_secs(22));
    assert_eq!(settings.tls.cert, home.join("tls/a.crt"));
    assert_eq!(settings.tls.key, home.join("tls/a.key"));
    assert!(!settings.tls.generate_self_signed);
    assert_eq!(settings.oauth.access_token_validity_secs, 16);
    assert_eq!(settings.oauth.refresh_token_validity_secs, 17);
    assert!(!settings.oauth.renew_refresh_token);
    let hashing = &settings.password_hashing;
    assert_eq!(hashing.argon2_memory_kib, 8192);
    assert_eq!(hashing.argon2_iterations, 4);
    assert_eq!(hashing.argon2_parallelism, 4);
    assert_eq!(hashing.workers, 5);
    assert_eq!(hashing.queue_capacity, 18);
    assert_eq!(settings.stores.users, File(home.join("u/users.toml")));
    assert_eq!(settings.stores.clients, File(home.join("c/clients.toml")));
    let TokenStoreSettings::Sqlite { path, synchronous } = &settings.stores.tokens else {
        panic!("the test config uses SQLite")
    };
    assert_eq!(path, &home.join("t/t.db"));
    assert_eq!(*synchronous, SqliteSynchronous::Full);
    assert_eq!(settings.stores.reload_interval, Duration::from_secs(19));
    let management = &settings.management;
    assert!(!management.enabled);
    assert_eq!(management.host, "10.1.2.3".parse::<IpAddr>().unwrap());
    assert_eq!(management.port, 9107, "the offset applies to it too");
    assert!(management.per_client_metrics);
}

#[test]
fn users_and_clients_can_live_in_the_database_and_rate_limits_can_stay_per_node() {
    // Arrange
    let text = shipped_with(&[
        ("users = \"config/users.toml\"", "users = \"sql\""),
        ("clients = \"config/clients.toml\"", "clients = \"sql\""),
        ("enabled = false", "enabled = true"),
        ("shared = true", "shared = false"),
    ]);

    // Act
    let settings = validate(&text).unwrap();
    let shipped = validate(&shipped_text()).unwrap();

    // Assert
    assert_eq!(settings.stores.users, DirectoryLocation::Database);
    assert_eq!(settings.stores.clients, DirectoryLocation::Database);
    assert!(settings.rate_limit.per_ip.is_some());
    assert!(!settings.rate_limit.shared);
    assert!(shipped.rate_limit.shared, "shared is the default");
}

// ---------------------------------------------------------------------------------------------
// The port offset
// ---------------------------------------------------------------------------------------------

#[test]
fn the_shipped_port_without_an_offset_is_8243() {
    let settings = validate(&shipped_text()).unwrap();

    assert_eq!(settings.server.https_port, 8243);
    assert_eq!(settings.server.port_offset, 0);
}

#[test]
fn a_port_offset_from_the_command_line_is_added_to_the_https_port() {
    // Arrange
    let source = ConfigSource {
        port_offset: Some(5),
        ..source_in(Path::new("/srv/tokengate"))
    };

    // Act
    let settings = config::validate(&shipped_text(), &shipped_file(), &source).unwrap();

    // Assert
    assert_eq!(settings.server.https_port, 8248);
    assert_eq!(settings.server.port_offset, 5);
}

#[test]
fn a_port_offset_in_the_file_is_added_to_the_https_port() {
    let text = shipped_with(&[("port_offset = 0", "port_offset = 10")]);

    let settings = validate(&text).unwrap();

    assert_eq!(settings.server.https_port, 8253);
    assert_eq!(settings.server.port_offset, 10);
}

#[test]
fn the_command_line_port_offset_wins_over_the_files() {
    // Arrange
    let text = shipped_with(&[("port_offset = 0", "port_offset = 10")]);
    let source = ConfigSource {
        port_offset: Some(5),
        ..source_in(Path::new("/srv/tokengate"))
    };

    // Act
    let settings = config::validate(&text, &shipped_file(), &source).unwrap();

    // Assert
    assert_eq!(settings.server.https_port, 8248);
    assert_eq!(settings.server.port_offset, 5);
}

// ---------------------------------------------------------------------------------------------
// The access token validity
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_configured_access_token_validity_is_what_a_password_grant_answers_and_stores() {
    // Arrange
    let text = shipped_with(&[(
        "access_token_default_validity_period = 3600",
        "access_token_default_validity_period = 1800",
    )]);
    let configured = validate(&text).unwrap();
    assert_eq!(configured.oauth.access_token_validity_secs, 1800);
    let app = spawn_app_with(|settings| settings.oauth = configured.oauth.clone()).await;

    // Act
    let reply = app.login(Some("PRODUCTION")).await;

    // Assert
    let (access, refresh) = reply.assert_tokens(1800, "PRODUCTION");
    assert!(refresh.is_some());
    let record = stored_access_token(&app, &access)
        .await
        .expect("the access token is stored");
    assert_eq!(record.expires_at - record.issued_at, 1800);
}

// ---------------------------------------------------------------------------------------------
// Mistakes: each names the file and the key
// ---------------------------------------------------------------------------------------------

#[test]
fn an_unknown_top_level_key_is_rejected_naming_the_file_and_the_key() {
    let text = format!("colour = \"blue\"\n{}", shipped_text());

    let problems = problems_of(&text);

    assert_eq!(problems.len(), 1, "{problems:?}");
    let shown = problems[0].to_string();
    assert!(
        shown.starts_with("/etc/tokengate/identity.toml: "),
        "{shown}"
    );
    assert!(shown.contains("colour"), "{shown}");
    assert_eq!(problems[0].key, "colour");
}

#[test]
fn an_unknown_key_in_the_server_section_is_rejected_naming_the_file_and_the_key() {
    let text = shipped_with(&[("[server]\n", "[server]\nfoo = 1\n")]);

    let problems = problems_of(&text);

    assert_eq!(problems.len(), 1, "{problems:?}");
    let shown = problems[0].to_string();
    assert!(
        shown.starts_with("/etc/tokengate/identity.toml: "),
        "{shown}"
    );
    assert!(shown.contains("server.foo"), "{shown}");
    assert_eq!(problems[0].key, "server.foo");
}

#[test]
fn an_unknown_key_in_the_oauth_section_is_rejected_naming_the_file_and_the_key() {
    let text = shipped_with(&[("[oauth]\n", "[oauth]\naccess_token_validity = 60\n")]);

    let problems = problems_of(&text);

    assert_eq!(problems.len(), 1, "{problems:?}");
    let shown = problems[0].to_string();
    assert!(
        shown.starts_with("/etc/tokengate/identity.toml: "),
        "{shown}"
    );
    assert!(shown.contains("oauth.access_token_validity"), "{shown}");
    assert_eq!(problems[0].key, "oauth.access_token_validity");
}

#[test]
fn a_value_of_the_wrong_type_names_its_key() {
    let text = shipped_with(&[("https_port = 8243", "https_port = \"x\"")]);

    let problems = problems_of(&text);

    assert_names_key(&problems, "server.https_port");
}

#[test]
fn a_port_beyond_65535_names_its_key() {
    let text = shipped_with(&[("https_port = 8243", "https_port = 70000")]);

    let problems = problems_of(&text);

    assert_names_key(&problems, "server.https_port");
    assert_eq!(problems.len(), 1, "{problems:?}");
}

#[test]
fn an_argon2_memory_below_the_minimum_names_its_key() {
    let text = shipped_with(&[("argon2_memory_kib = 12288", "argon2_memory_kib = 1024")]);

    let problems = problems_of(&text);

    assert_names_key(&problems, "password_hashing.argon2_memory_kib");
    assert_eq!(problems.len(), 1, "{problems:?}");
}

/// The config's upper limits are the ones stored hashes are verified under: a cost the pool
/// would refuse to verify is refused here, by key, instead of making every login fail.
#[test]
fn an_argon2_cost_above_what_hashes_may_ask_names_its_keys() {
    let text = shipped_with(&[
        ("argon2_memory_kib = 12288", "argon2_memory_kib = 262145"),
        ("argon2_iterations = 3", "argon2_iterations = 21"),
        ("argon2_parallelism = 1", "argon2_parallelism = 17"),
    ]);

    let problems = problems_of(&text);

    assert_names_key(&problems, "password_hashing.argon2_memory_kib");
    assert_names_key(&problems, "password_hashing.argon2_iterations");
    assert_names_key(&problems, "password_hashing.argon2_parallelism");
    assert_eq!(problems.len(), 3, "{problems:?}");

    let at_the_limits = shipped_with(&[
        ("argon2_memory_kib = 12288", "argon2_memory_kib = 262144"),
        ("argon2_iterations = 3", "argon2_iterations = 20"),
        ("argon2_parallelism = 1", "argon2_parallelism = 16"),
    ]);
    assert!(validate(&at_the_limits).is_ok());
}

#[test]
fn a_zero_access_token_validity_names_its_key() {
    let text = shipped_with(&[(
        "access_token_default_validity_period = 3600",
        "access_token_default_validity_period = 0",
    )]);

    let problems = problems_of(&text);

    assert_names_key(&problems, "oauth.access_token_default_validity_period");
    assert_eq!(problems.len(), 1, "{problems:?}");
}

#[test]
fn an_unknown_sqlite_synchronous_mode_names_its_key() {
    let text = shipped_with(&[(
        "sqlite_synchronous = \"normal\"",
        "sqlite_synchronous = \"sometimes\"",
    )]);

    let problems = problems_of(&text);

    assert_names_key(&problems, "stores.sqlite_synchronous");
    assert_eq!(problems.len(), 1, "{problems:?}");
}

#[test]
fn a_token_store_url_that_is_not_sqlite_names_its_key() {
    let text = shipped_with(&[(
        "tokens = \"sqlite://data/tokens.db\"",
        "tokens = \"mysql://x\"",
    )]);

    let problems = problems_of(&text);

    assert_names_key(&problems, "stores.tokens");
    assert_eq!(problems.len(), 1, "{problems:?}");
}

#[test]
fn a_host_that_is_not_an_ip_address_names_its_key() {
    let text = shipped_with(&[("host = \"0.0.0.0\"", "host = \"not-an-ip\"")]);

    let problems = problems_of(&text);

    assert_names_key(&problems, "server.host");
    assert_eq!(problems.len(), 1, "{problems:?}");
}

#[test]
fn several_problems_are_all_reported_at_once() {
    // Arrange
    let text = shipped_with(&[
        ("https_port = 8243", "https_port = 70000"),
        ("argon2_memory_kib = 12288", "argon2_memory_kib = 1024"),
        (
            "access_token_default_validity_period = 3600",
            "access_token_default_validity_period = 0",
        ),
        (
            "sqlite_synchronous = \"normal\"",
            "sqlite_synchronous = \"sometimes\"",
        ),
    ]);

    // Act
    let problems = problems_of(&text);

    // Assert
    assert!(problems.len() >= 3, "{problems:?}");
    for key in [
        "server.https_port",
        "password_hashing.argon2_memory_kib",
        "oauth.access_token_default_validity_period",
        "stores.sqlite_synchronous",
    ] {
        assert_names_key(&problems, key);
    }
    let shown = ConfigError { problems }.to_string();
    assert_eq!(shown.lines().count(), 4, "one line per problem: {shown}");
}

// ---------------------------------------------------------------------------------------------
// [management]
// ---------------------------------------------------------------------------------------------

#[test]
fn a_management_port_beyond_65535_names_its_key() {
    let text = shipped_with(&[("\nport = 9000", "\nport = 70000")]);

    let problems = problems_of(&text);

    assert_names_key(&problems, "management.port");
    assert_eq!(problems.len(), 1, "{problems:?}");
}

#[test]
fn a_management_host_that_is_not_an_ip_address_names_its_key() {
    let text = shipped_with(&[("host = \"127.0.0.1\"", "host = \"localhost\"")]);

    let problems = problems_of(&text);

    assert_names_key(&problems, "management.host");
    assert_eq!(problems.len(), 1, "{problems:?}");
}

#[test]
fn management_values_of_the_wrong_type_name_their_keys() {
    let text = shipped_with(&[
        ("enabled = true", "enabled = \"yes\""),
        ("per_client_metrics = false", "per_client_metrics = 1"),
    ]);

    let problems = problems_of(&text);

    assert_names_key(&problems, "management.enabled");
    assert_names_key(&problems, "management.per_client_metrics");
}

#[test]
fn an_unknown_key_in_the_management_section_names_the_file_and_the_key() {
    let text = shipped_with(&[(
        "per_client_metrics = false",
        "per_client_metrics = false\ntls = true",
    )]);

    let problems = problems_of(&text);

    assert_names_key(&problems, "management.tls");
}

#[test]
fn a_management_port_that_is_also_the_https_port_names_its_key() {
    let text = shipped_with(&[("\nport = 9000", "\nport = 8243")]);

    let problems = problems_of(&text);

    assert_names_key(&problems, "management.port");
    assert!(problems[0].message.contains("https_port"), "{problems:?}");
}

#[test]
fn an_offset_that_pushes_only_the_management_port_past_65535_is_reported() {
    // 8243 + 57000 = 65243 still fits; 9000 + 57000 does not.
    let text = shipped_with(&[("port_offset = 0", "port_offset = 57000")]);

    let problems = problems_of(&text);

    assert_names_key(&problems, "server.port_offset");
    assert!(
        problems[0].message.contains("management.port"),
        "{problems:?}"
    );
}

#[test]
fn a_management_port_of_zero_stays_zero_whatever_the_offset() {
    let text = shipped_with(&[
        ("port_offset = 0", "port_offset = 5"),
        ("\nport = 9000", "\nport = 0"),
    ]);

    let settings = validate(&text).unwrap();

    assert_eq!(settings.management.port, 0);
    assert_eq!(settings.server.https_port, 8248);
}

// ---------------------------------------------------------------------------------------------
// Paths
// ---------------------------------------------------------------------------------------------

#[test]
fn relative_paths_resolve_against_the_home_folder_and_absolute_paths_stay() {
    // Arrange
    let home = tempfile::tempdir().unwrap();
    let text = shipped_with(&[
        (
            "cert = \"certs/server.crt\"",
            "cert = \"/etc/ssl/tokengate.crt\"",
        ),
        (
            "users = \"config/users.toml\"",
            "users = \"/etc/tokengate/users.toml\"",
        ),
        (
            "tokens = \"sqlite://data/tokens.db\"",
            "tokens = \"sqlite:///var/lib/tokengate/tokens.db\"",
        ),
    ]);

    // Act
    let settings = config::validate(&text, &shipped_file(), &source_in(home.path())).unwrap();

    // Assert: the changed ones are absolute and stay; the others resolve against home.
    assert_eq!(settings.tls.cert, Path::new("/etc/ssl/tokengate.crt"));
    assert_eq!(settings.tls.key, home.path().join("certs/server.key"));
    assert_eq!(
        settings.stores.users,
        File("/etc/tokengate/users.toml".into())
    );
    assert_eq!(
        settings.stores.clients,
        File(home.path().join("config/clients.toml"))
    );
    let TokenStoreSettings::Sqlite { path, .. } = &settings.stores.tokens else {
        panic!("the test config uses SQLite")
    };
    assert_eq!(path, Path::new("/var/lib/tokengate/tokens.db"));
}

#[test]
fn the_config_file_itself_is_found_relative_to_the_home_folder() {
    // Arrange
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("config")).unwrap();
    let text = shipped_with(&[("port_offset = 0", "port_offset = 3")]);
    std::fs::write(home.path().join("config/identity.toml"), text).unwrap();

    // Act: no config path given, so config/identity.toml under home.
    let settings = config::load(&source_in(home.path())).unwrap();

    // Assert
    assert_eq!(
        settings.config_file,
        home.path().join("config/identity.toml")
    );
    assert_eq!(settings.server.https_port, 8246);
}

#[test]
fn a_config_file_that_does_not_exist_is_an_error_naming_its_path() {
    // Arrange
    let home = tempfile::tempdir().unwrap();
    let missing = home.path().join("nowhere/identity.toml");
    let source = ConfigSource {
        config_path: Some(missing.clone()),
        ..source_in(home.path())
    };

    // Act
    let err = config::load(&source).unwrap_err();

    // Assert
    assert_eq!(err.problems.len(), 1, "{err}");
    assert_eq!(err.problems[0].file, missing);
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );
}

#[test]
fn every_unknown_key_and_wrong_type_is_reported_not_just_the_first() {
    let text = shipped_with(&[
        ("https_port = 8243", "https_port = \"x\"\ncolour = \"blue\""),
        (
            "renew_refresh_token = true",
            "renew_refresh_token = true\nrenew_everything = true",
        ),
    ]) + "\n[nonsense]\nkey = 1\n";

    let problems = problems_of(&text);

    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    for key in [
        "server.https_port",
        "server.colour",
        "oauth.renew_everything",
        "nonsense",
    ] {
        assert!(keys.contains(&key), "{key} not reported: {problems:#?}");
    }
    assert!(problems
        .iter()
        .all(|p| p.file == Path::new("/etc/tokengate/identity.toml")));
}

#[test]
fn every_broken_entry_of_a_users_file_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users.toml");
    std::fs::write(
        &path,
        "[users.a]\npassword_hash = \"x\"\nshoe_size = 42\n\n[users.b]\npasword_hash = \"typo\"\n",
    )
    .unwrap();

    let problems = tokengate::store::toml_file::load_users(&path)
        .unwrap_err()
        .problems;

    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    assert!(keys.contains(&"users.a.shoe_size"), "{problems:#?}");
    assert!(keys.contains(&"users.b.pasword_hash"), "{problems:#?}");
}

#[test]
fn a_negative_per_ip_connection_limit_and_an_hour_long_drain_name_their_keys() {
    let text = shipped_with(&[
        (
            "max_connections_per_ip = 512",
            "max_connections_per_ip = -1",
        ),
        ("shutdown_drain_period = 0", "shutdown_drain_period = 3601"),
    ]);

    let problems = problems_of(&text);

    assert_names_key(&problems, "server.max_connections_per_ip");
    assert_names_key(&problems, "server.shutdown_drain_period");
    assert_eq!(problems.len(), 2, "{problems:?}");
}

// ---------------------------------------------------------------------------------------------
// [logging] and [audit]
// ---------------------------------------------------------------------------------------------

#[test]
fn the_shipped_logging_and_audit_sections_load_with_their_documented_defaults() {
    let home = tempfile::tempdir().unwrap();
    let source = ConfigSource {
        config_path: Some(shipped_file()),
        ..source_in(home.path())
    };

    let settings = config::load(&source).unwrap();

    assert_eq!(settings.logging.format, LogFormat::Text);
    assert_eq!(settings.logging.level, "info");
    assert_eq!(
        settings.audit,
        AuditSettings {
            destination: AuditDestination::File(home.path().join("logs/audit.jsonl")),
            max_bytes: None,
            keep: 5,
        }
    );
}

#[test]
fn logging_and_audit_keys_are_read_from_the_file() {
    let settings = validate(&shipped_with(&[
        ("format = \"text\"", "format = \"json\""),
        ("level = \"info\"", "level = \"warn,tokengate=debug\""),
        (
            "file = \"logs/audit.jsonl\"",
            "file = \"/var/log/tokengate/audit.jsonl\"",
        ),
        ("max_bytes = 0", "max_bytes = 1048576"),
        ("keep = 5", "keep = 9"),
    ]))
    .unwrap();

    assert_eq!(settings.logging.format, LogFormat::Json);
    assert_eq!(settings.logging.level, "warn,tokengate=debug");
    assert_eq!(
        settings.audit.destination,
        AuditDestination::File(PathBuf::from("/var/log/tokengate/audit.jsonl"))
    );
    assert_eq!(settings.audit.max_bytes, Some(1_048_576));
    assert_eq!(settings.audit.keep, 9);
}

#[test]
fn an_audit_file_of_a_dash_is_stderr_and_an_empty_one_is_off() {
    let stderr = validate(&shipped_with(&[(
        "file = \"logs/audit.jsonl\"",
        "file = \"-\"",
    )]))
    .unwrap();
    let off = validate(&shipped_with(&[(
        "file = \"logs/audit.jsonl\"",
        "file = \"\"",
    )]))
    .unwrap();

    assert_eq!(stderr.audit.destination, AuditDestination::Stderr);
    assert_eq!(off.audit.destination, AuditDestination::Off);
}

#[test]
fn an_unknown_log_format_names_its_key() {
    let problems = problems_of(&shipped_with(&[("format = \"text\"", "format = \"xml\"")]));
    assert_names_key(&problems, "logging.format");
}

#[test]
fn a_log_level_that_is_not_a_filter_names_its_key() {
    let problems = problems_of(&shipped_with(&[(
        "level = \"info\"",
        "level = \"tokengate=loudest\"",
    )]));
    assert_names_key(&problems, "logging.level");
}

#[test]
fn audit_rotation_out_of_range_names_its_keys() {
    let problems = problems_of(&shipped_with(&[
        ("max_bytes = 0", "max_bytes = 100"),
        ("keep = 5", "keep = -1"),
    ]));
    assert_names_key(&problems, "audit.max_bytes");
    assert_names_key(&problems, "audit.keep");
    assert_eq!(problems.len(), 2, "{problems:?}");
}

#[test]
fn an_unknown_key_in_the_audit_section_names_the_file_and_the_key() {
    let problems = problems_of(&shipped_with(&[("keep = 5", "keep = 5\nrotate = true")]));
    assert_names_key(&problems, "audit.rotate");
}

#[test]
fn the_login_branding_is_read_from_the_file() {
    // Arrange
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("brand")).unwrap();
    std::fs::write(home.path().join("brand/Logo.SVG"), "<svg/>").unwrap();
    let text = shipped_with(&[
        ("title = \"tokengate\"", "title = \"Example Corp\""),
        ("logo = \"\"", "logo = \"brand/Logo.SVG\""),
        (
            "default = \"Basic access to your account\"",
            "default = \"Your profile\"\n\"reports.read\" = \"Read your reports\"",
        ),
    ]);

    // Act
    let settings = config::validate(&text, &shipped_file(), &source_in(home.path())).unwrap();

    // Assert
    let login = &settings.login;
    assert_eq!(login.title, "Example Corp");
    let logo = login.logo.as_ref().unwrap();
    assert_eq!(logo.path, home.path().join("brand/Logo.SVG"));
    assert_eq!(logo.content_type, "image/svg+xml");
    assert_eq!(login.scope_descriptions["default"], "Your profile");
    assert_eq!(
        login.scope_descriptions["reports.read"],
        "Read your reports"
    );
    // The shipped file: no logo, the default title and the default scope described.
    let shipped = validate(&shipped_text()).unwrap();
    assert_eq!(shipped.login.title, "tokengate");
    assert_eq!(shipped.login.logo, None);
    assert_eq!(
        shipped.login.scope_descriptions["default"],
        "Basic access to your account"
    );
}

#[test]
fn a_logo_that_is_missing_too_large_or_not_an_image_names_the_file_and_its_key() {
    // Arrange
    let home = tempfile::tempdir().unwrap();
    std::fs::write(home.path().join("big.png"), vec![0u8; 256 * 1024 + 1]).unwrap();
    std::fs::write(home.path().join("logo.exe"), "MZ").unwrap();
    std::fs::create_dir_all(home.path().join("folder.png")).unwrap();
    let problems = |logo: &str| {
        let text = shipped_with(&[("logo = \"\"", &format!("logo = \"{logo}\""))]);
        match config::validate(
            &text,
            Path::new("/etc/tokengate/identity.toml"),
            &source_in(home.path()),
        ) {
            Ok(_) => panic!("{logo} was accepted"),
            Err(err) => err.problems,
        }
    };

    for (logo, says) in [
        ("missing.png", "cannot be read"),
        ("big.png", "is 262145 bytes; the most is 262144"),
        ("logo.exe", "must be a .png, .jpg, .gif, .webp or .svg file"),
        ("folder.png", "is not a file"),
    ] {
        // Act
        let found = problems(logo);

        // Assert
        assert_names_key(&found, "login.logo");
        let shown = found[0].to_string();
        assert!(shown.contains(says), "{shown}");
        assert!(
            shown.contains(&home.path().join(logo).display().to_string()),
            "{shown}"
        );
    }
}

#[test]
fn an_empty_title_and_bad_scope_descriptions_name_their_keys() {
    let text = shipped_with(&[
        ("title = \"tokengate\"", "title = \" \""),
        (
            "default = \"Basic access to your account\"",
            "default = \"\"\n\"bad scope\" = \"x\"",
        ),
    ]);

    let problems = problems_of(&text);

    assert_names_key(&problems, "login.title");
    assert_names_key(&problems, "login.scope_descriptions.default");
    assert_names_key(&problems, "login.scope_descriptions.bad scope");
}

// ---------------------------------------------------------------------------------------------
// [registration]
// ---------------------------------------------------------------------------------------------

#[test]
fn registration_is_off_by_default_and_read_from_the_file() {
    let shipped = validate(&shipped_text()).unwrap();
    let text = shipped_with(&[
        ("clients = \"config/clients.toml\"", "clients = \"sql\""),
        ("mode = \"off\"", "mode = \"open\""),
        (
            "allowed_grant_types = [\"authorization_code\", \"refresh_token\"]",
            "allowed_grant_types = [\"client_credentials\"]",
        ),
        (
            "allowed_scopes = []",
            "allowed_scopes = [\"read\", \"write\"]",
        ),
        ("wso2_compat = false", "wso2_compat = true"),
    ]);

    let settings = validate(&text).unwrap();

    assert_eq!(shipped.registration, RegistrationSettings::default());
    assert_eq!(shipped.registration.mode, RegistrationMode::Off);
    assert!(!shipped.registration.wso2_compat);
    assert_eq!(settings.registration.mode, RegistrationMode::Open);
    assert!(settings.registration.wso2_compat);
    assert_eq!(
        settings.registration.allowed_grant_types,
        [GrantType::ClientCredentials].into()
    );
    assert_eq!(
        settings.registration.allowed_scopes,
        ["read".to_owned(), "write".to_owned()].into()
    );
}

#[test]
fn registration_needs_clients_in_the_database_and_known_grants_and_scopes() {
    let file_clients = problems_of(&shipped_with(&[(
        "mode = \"off\"",
        "mode = \"initial_access_token\"",
    )]));
    let unknown_mode = problems_of(&shipped_with(&[("mode = \"off\"", "mode = \"closed\"")]));
    let unknown_grant = problems_of(&shipped_with(&[(
        "allowed_grant_types = [\"authorization_code\", \"refresh_token\"]",
        "allowed_grant_types = [\"implicit\"]",
    )]));
    let bad_scope = problems_of(&shipped_with(&[(
        "allowed_scopes = []",
        "allowed_scopes = [\"a b\"]",
    )]));

    assert_names_key(&file_clients, "registration.mode");
    assert!(
        file_clients[0]
            .message
            .contains("[stores] clients = \"sql\""),
        "{file_clients:?}"
    );
    assert_names_key(&unknown_mode, "registration.mode");
    assert!(
        unknown_mode[0].message.contains("`closed`"),
        "{unknown_mode:?}"
    );
    assert_names_key(&unknown_grant, "registration.allowed_grant_types");
    assert!(unknown_grant[0].message.contains("`implicit`"));
    assert_names_key(&bad_scope, "registration.allowed_scopes");
    assert_eq!(file_clients.len(), 1, "{file_clients:?}");
}

#[test]
fn wso2_compat_needs_clients_in_the_database_whatever_the_mode() {
    let file_clients = problems_of(&shipped_with(&[(
        "wso2_compat = false",
        "wso2_compat = true",
    )]));

    assert_names_key(&file_clients, "registration.wso2_compat");
    assert!(
        file_clients[0]
            .message
            .contains("[stores] clients = \"sql\""),
        "{file_clients:?}"
    );
    assert_eq!(file_clients.len(), 1, "{file_clients:?}");
}

// ---------------------------------------------------------------------------------------------
// [portal]
// ---------------------------------------------------------------------------------------------

/// The shipped `[portal] enabled` line.
const PORTAL_ENABLED: &str = "enabled = false                    # true needs [stores] clients";

#[test]
fn the_portal_is_off_by_default_and_read_from_the_file() {
    let shipped = validate(&shipped_text()).unwrap();
    let text = shipped_with(&[
        ("clients = \"config/clients.toml\"", "clients = \"sql\""),
        (PORTAL_ENABLED, "enabled = true # "),
        (
            "allowed_grant_types = [\"authorization_code\", \"refresh_token\", \"client_credentials\"]",
            "allowed_grant_types = [\"client_credentials\", \"password\"]",
        ),
        ("secret_overlap = 0 ", "secret_overlap = 3600 "),
    ]);

    let settings = validate(&text).unwrap();

    assert_eq!(shipped.portal, tokengate::config::PortalSettings::default());
    assert!(!shipped.portal.enabled);
    assert!(settings.portal.enabled);
    assert_eq!(
        settings.portal.allowed_grant_types,
        [GrantType::ClientCredentials, GrantType::Password].into()
    );
    assert_eq!(settings.portal.secret_overlap_secs, 3600);
}

#[test]
fn the_portal_needs_clients_in_the_database_known_grants_and_a_bounded_overlap() {
    let file_clients = problems_of(&shipped_with(&[(PORTAL_ENABLED, "enabled = true # ")]));
    let unknown_grant = problems_of(&shipped_with(&[(
        "allowed_grant_types = [\"authorization_code\", \"refresh_token\", \"client_credentials\"]",
        "allowed_grant_types = [\"implicit\"]",
    )]));
    let long_overlap = problems_of(&shipped_with(&[(
        "secret_overlap = 0 ",
        "secret_overlap = 9999999 ",
    )]));

    assert_names_key(&file_clients, "portal.enabled");
    assert!(
        file_clients[0]
            .message
            .contains("[stores] clients = \"sql\""),
        "{file_clients:?}"
    );
    assert_eq!(file_clients.len(), 1, "{file_clients:?}");
    assert_names_key(&unknown_grant, "portal.allowed_grant_types");
    assert!(unknown_grant[0].message.contains("`implicit`"));
    assert_names_key(&long_overlap, "portal.secret_overlap");
}
