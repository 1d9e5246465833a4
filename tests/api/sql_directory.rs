//! Users and clients in the token database (`[stores] users = "sql"`, `clients = "sql"`),
//! managed with the same `tokengate user …` / `client …` commands as the files, on SQLite and
//! on PostgreSQL, and shared by every node of a cluster.

use crate::helpers::process::{poll_until, serve, Home, Server};
use crate::helpers::{Reply, TestDatabase};

/// A home whose users and clients live in the token database (`tokens`, or the shipped SQLite
/// file when `None`).
fn sql_home(tokens: Option<&str>) -> Home {
    let home = Home::new();
    home.edit(
        "config/identity.toml",
        "users = \"config/users.toml\"",
        "users = \"sql\"",
    );
    home.edit(
        "config/identity.toml",
        "clients = \"config/clients.toml\"",
        "clients = \"sql\"",
    );
    if let Some(url) = tokens {
        home.edit(
            "config/identity.toml",
            "tokens = \"sqlite://data/tokens.db\"",
            &format!("tokens = \"{url}\""),
        );
    }
    home
}

/// Adds `name` with `password` and a client with a generated secret, returning the secret.
async fn add_user_and_client(home: &Home, name: &str, password: &str, client: &str) -> String {
    home.run(&["user", "add", name, "--password-stdin"], Some(password))
        .await
        .assert_success();
    let added = home
        .run(&["client", "add", client, "--scopes", "PRODUCTION"], None)
        .await;
    added.assert_success();
    added.stdout.trim().to_owned()
}

async fn login(server: &Server, client: &str, secret: &str, user: &str, password: &str) -> Reply {
    server.password_grant(client, secret, user, password).await
}

#[tokio::test]
async fn user_and_client_commands_edit_the_sqlite_tables_and_leave_the_files_alone() {
    // Arrange
    let home = sql_home(None);
    let users_file = home.read("config/users.toml");
    let clients_file = home.read("config/clients.toml");

    // Act
    let secret = add_user_and_client(&home, "bob", "bob-pw", "mobile-app").await;
    let users = home.run(&["user", "list"], None).await;
    let clients = home.run(&["client", "list"], None).await;
    let user_again = home
        .run(&["user", "add", "bob", "--password-stdin"], Some("x"))
        .await;
    let client_again = home.run(&["client", "add", "mobile-app"], None).await;
    let user_as_client = home
        .run(
            &["user", "add", "mobile-app", "--password-stdin"],
            Some("x"),
        )
        .await;
    let bad_grant = home
        .run(
            &["client", "add", "other", "--grant-types", "implicit"],
            None,
        )
        .await;
    let bad_validity = home
        .run(
            &["client", "add", "other", "--access-token-validity", "0"],
            None,
        )
        .await;
    let missing = home.run(&["user", "remove", "nobody"], None).await;

    // Assert
    assert_eq!(secret.len(), 43, "a 256-bit base64url secret: {secret}");
    users.assert_success();
    assert_eq!(users.stdout_lines(), vec!["bob"], "{users:#?}");
    clients.assert_success();
    assert_eq!(
        clients.stdout_lines(),
        vec!["mobile-app\tgrant_types=password,refresh_token\tscopes=PRODUCTION"],
        "{clients:#?}"
    );
    user_again.assert_failure();
    assert!(
        user_again
            .stderr
            .contains("the token database: user `bob` already exists"),
        "{user_again:#?}"
    );
    client_again.assert_failure();
    assert!(
        client_again.stderr.contains("already exists"),
        "{client_again:#?}"
    );
    user_as_client.assert_failure();
    assert!(
        user_as_client.stderr.contains("already a client"),
        "{user_as_client:#?}"
    );
    bad_grant.assert_failure();
    assert!(
        bad_grant.stderr.contains("unknown grant type `implicit`"),
        "{bad_grant:#?}"
    );
    bad_validity.assert_failure();
    assert!(
        bad_validity
            .stderr
            .contains("clients.other.access_token_validity_period"),
        "{bad_validity:#?}"
    );
    missing.assert_failure();
    assert!(
        missing.stderr.contains("no user named `nobody`"),
        "{missing:#?}"
    );
    assert_eq!(home.read("config/users.toml"), users_file);
    assert_eq!(home.read("config/clients.toml"), clients_file);
    let listed = home.run(&["client", "list"], None).await;
    assert_eq!(listed.stdout_lines().len(), 1, "a refused add left a row");
}

#[tokio::test]
async fn a_server_on_sqlite_serves_the_users_and_clients_of_its_tables() {
    // Arrange
    let home = sql_home(None);
    let secret = add_user_and_client(&home, "bob", "bob-pw", "mobile-app").await;
    let server = serve(&home).await;

    // Act
    let bob = login(&server, "mobile-app", &secret, "bob", "bob-pw").await;
    let wrong_password = login(&server, "mobile-app", &secret, "bob", "nope").await;
    let wrong_secret = login(&server, "mobile-app", "nope", "bob", "bob-pw").await;
    // The shipped demo credentials live in the files, which this server does not read.
    let demo = server.demo_login().await;

    // Assert
    let (access, refresh) = bob.assert_tokens(3600, "PRODUCTION");
    assert!(refresh.is_some());
    assert!(!access.is_empty());
    wrong_password.assert_error(400, "invalid_grant");
    wrong_secret.assert_error(401, "invalid_client");
    demo.assert_error(401, "invalid_client");
    assert!(
        !server.log().contains("DEMO"),
        "no demo credentials here:\n{}",
        server.log()
    );
}

/// With users in the database the refresh grant reads the user before it rotates (the store
/// cannot judge them on its own thread): a disabled user's refresh token is refused and left
/// as it was, so it works again once the user is enabled.
#[tokio::test]
async fn a_disabled_users_refresh_is_refused_and_works_again_once_enabled() {
    // Arrange
    let home = sql_home(None);
    let secret = add_user_and_client(&home, "bob", "bob-pw", "mobile-app").await;
    let server = serve(&home).await;
    let (_, refresh) = login(&server, "mobile-app", &secret, "bob", "bob-pw")
        .await
        .assert_tokens(3600, "PRODUCTION");
    let refresh = refresh.expect("a refresh token");
    let form = [("grant_type", "refresh_token"), ("refresh_token", &refresh)];

    // Act
    home.run(&["user", "disable", "bob"], None)
        .await
        .assert_success();
    let while_disabled = server.post_token("mobile-app", &secret, &form).await;
    home.run(&["user", "enable", "bob"], None)
        .await
        .assert_success();
    let once_enabled = server.post_token("mobile-app", &secret, &form).await;

    // Assert
    while_disabled.assert_error(400, "invalid_grant");
    once_enabled.assert_tokens(3600, "PRODUCTION");
}

#[tokio::test]
async fn disabling_removing_and_enabling_in_the_tables_takes_effect_while_serving() {
    // Arrange
    let home = sql_home(None);
    let secret = add_user_and_client(&home, "bob", "bob-pw", "mobile-app").await;
    let server = serve(&home).await;
    let bob = || login(&server, "mobile-app", &secret, "bob", "bob-pw");
    bob().await.assert_tokens(3600, "PRODUCTION");

    // Act + Assert: users are read per request, so a change shows at once.
    home.run(&["user", "disable", "bob"], None)
        .await
        .assert_success();
    assert_eq!(
        home.run(&["user", "list"], None).await.stdout_lines(),
        vec!["bob\tdisabled"]
    );
    bob().await.assert_error(400, "invalid_grant");
    home.run(&["user", "enable", "bob"], None)
        .await
        .assert_success();
    bob().await.assert_tokens(3600, "PRODUCTION");

    // Clients are held in memory and re-read when the table changed.
    home.run(&["client", "disable", "mobile-app"], None)
        .await
        .assert_success();
    poll_until(bob, |reply| reply.status == 401)
        .await
        .assert_error(401, "invalid_client");
    home.run(&["client", "enable", "mobile-app"], None)
        .await
        .assert_success();
    poll_until(bob, |reply| reply.status == 200)
        .await
        .assert_tokens(3600, "PRODUCTION");
    home.run(&["client", "remove", "mobile-app"], None)
        .await
        .assert_success();
    poll_until(bob, |reply| reply.status == 401)
        .await
        .assert_error(401, "invalid_client");
    home.run(&["user", "remove", "bob"], None)
        .await
        .assert_success();
    assert!(home
        .run(&["user", "list"], None)
        .await
        .stdout_lines()
        .is_empty());
}

#[tokio::test]
async fn import_copies_the_shipped_files_into_the_tables() {
    // Arrange
    let home = sql_home(None);
    let users_file = home.path().join("config/users.toml");
    let clients_file = home.path().join("config/clients.toml");

    // Act
    let users = home
        .run(&["user", "import", users_file.to_str().unwrap()], None)
        .await;
    let clients = home
        .run(&["client", "import", clients_file.to_str().unwrap()], None)
        .await;
    let again = home
        .run(&["user", "import", users_file.to_str().unwrap()], None)
        .await;
    let server = serve(&home).await;
    let demo = server.demo_login().await;

    // Assert
    users.assert_success();
    assert!(users.stderr.contains("imported 1 user(s)"), "{users:#?}");
    clients.assert_success();
    assert!(
        clients.stderr.contains("imported 1 client(s)"),
        "{clients:#?}"
    );
    again.assert_success();
    assert!(
        again.stderr.contains("skipped user `admin`") && again.stderr.contains("imported 0"),
        "{again:#?}"
    );
    demo.assert_tokens(3600, "PRODUCTION");
    // The demo credentials are just as public in the database: still warned about.
    let log = server.log();
    assert!(log.contains("DEMO CLIENT ACTIVE"), "{log}");
    assert!(log.contains("DEMO USER ACTIVE"), "{log}");
}

#[tokio::test]
async fn check_config_with_sql_stores_does_not_need_the_files() {
    // Arrange
    let home = sql_home(None);
    std::fs::remove_file(home.path().join("config/users.toml")).unwrap();
    std::fs::remove_file(home.path().join("config/clients.toml")).unwrap();

    // Act
    let checked = home.run(&["check-config"], None).await;

    // Assert
    checked.assert_success();
    assert!(checked.stdout.contains("ok"), "{checked:#?}");
}

#[tokio::test]
async fn three_processes_share_the_users_and_clients_of_one_postgres_database() {
    // Arrange: users and clients in the database, added once by the CLI of one home.
    let Some(database) = TestDatabase::create("sql_directory_cluster").await else {
        return;
    };
    let homes: Vec<Home> = (0..3).map(|_| sql_home(Some(&database.url))).collect();
    home_migrate(&homes[0]).await;
    let secret = add_user_and_client(&homes[0], "bob", "bob-pw", "mobile-app").await;
    let mut nodes = Vec::new();
    for home in &homes {
        nodes.push(serve(home).await);
    }

    // Act + Assert: every node knows them, whichever home's CLI made the change.
    for node in &nodes {
        login(node, "mobile-app", &secret, "bob", "bob-pw")
            .await
            .assert_tokens(3600, "PRODUCTION");
        assert!(
            !node.log().contains("every node must get the same files"),
            "no file stores, no drift warning:\n{}",
            node.log()
        );
    }
    homes[1]
        .run(&["user", "disable", "bob"], None)
        .await
        .assert_success();
    for node in &nodes {
        login(node, "mobile-app", &secret, "bob", "bob-pw")
            .await
            .assert_error(400, "invalid_grant");
    }
    homes[2]
        .run(&["user", "enable", "bob"], None)
        .await
        .assert_success();
    homes[2]
        .run(&["client", "disable", "mobile-app"], None)
        .await
        .assert_success();
    for node in &nodes {
        poll_until(
            || login(node, "mobile-app", &secret, "bob", "bob-pw"),
            |reply| reply.status == 401,
        )
        .await
        .assert_error(401, "invalid_client");
    }
    let listed = homes[0].run(&["client", "list"], None).await;
    assert_eq!(
        listed.stdout_lines(),
        vec!["mobile-app\tgrant_types=password,refresh_token\tscopes=PRODUCTION\tdisabled"],
        "{listed:#?}"
    );
}

#[tokio::test]
async fn a_client_added_on_postgres_by_plain_sql_is_picked_up_too() {
    // Arrange: an operator inserting a row without the CLI; the trigger still moves the
    // revision the nodes watch.
    let Some(database) = TestDatabase::create("sql_directory_plain_sql").await else {
        return;
    };
    let home = sql_home(Some(&database.url));
    home_migrate(&home).await;
    home.run(&["user", "add", "bob", "--password-stdin"], Some("bob-pw"))
        .await
        .assert_success();
    let server = serve(&home).await;
    let secret_hash = tokengate::crypto::secret::hash_sha256("hand-made-secret");

    // Act
    let mut connection = {
        use sqlx::Connection as _;
        sqlx::PgConnection::connect(&database.url).await.unwrap()
    };
    sqlx::query(
        "INSERT INTO clients (id, secret_hash, grant_types, scopes, created_at) \
         VALUES ('by-hand', $1, 'password', 'PRODUCTION', 0)",
    )
    .bind(&secret_hash)
    .execute(&mut connection)
    .await
    .unwrap();
    let reply = poll_until(
        || login(&server, "by-hand", "hand-made-secret", "bob", "bob-pw"),
        |reply| reply.status == 200,
    )
    .await;

    // Assert
    reply.assert_tokens(3600, "PRODUCTION");
}

/// `tokengate migrate` in `home`, so that CLI commands find the tables before any node ran.
async fn home_migrate(home: &Home) {
    home.run(&["migrate"], None).await.assert_success();
}

#[tokio::test]
async fn a_bad_client_row_written_by_hand_is_reported_and_the_others_still_serve() {
    // Arrange: a good client through the CLI, a bad one (unknown grant type, zero validity)
    // straight into the table.
    let home = sql_home(None);
    let secret = add_user_and_client(&home, "bob", "bob-pw", "mobile-app").await;
    run_sql(
        &home,
        "INSERT INTO clients (id, secret_hash, grant_types, scopes, \
         access_token_validity_period, created_at) \
         VALUES ('broken', 'plain-text', 'password implicit', '', 0, 0)",
    )
    .await;

    // Act
    let server = serve(&home).await;
    let good = login(&server, "mobile-app", &secret, "bob", "bob-pw").await;
    let broken = login(&server, "broken", "plain-text", "bob", "bob-pw").await;
    let listed = home.run(&["client", "list"], None).await;

    // Assert
    good.assert_tokens(3600, "PRODUCTION");
    broken.assert_error(401, "invalid_client");
    let log = server.log();
    assert!(
        log.contains("ignoring a client") && log.contains("clients row `broken`"),
        "{log}"
    );
    assert!(log.contains("unknown grant type `implicit`"), "{log}");
    listed.assert_success();
    assert_eq!(listed.stdout_lines().len(), 1, "{listed:#?}");
    assert!(
        listed.stderr.contains("clients row `broken`") && listed.stderr.contains("secret_hash"),
        "{listed:#?}"
    );
}

#[tokio::test]
async fn three_processes_share_account_lockouts_and_rate_limits_through_postgres() {
    // Arrange: three real servers on one database; 3 failed logins lock an account, and one
    // client IP may send 8 token requests (refilling too slowly to matter here).
    let Some(database) = TestDatabase::create("shared_abuse_state").await else {
        return;
    };
    let homes: Vec<Home> = (0..3)
        .map(|_| {
            let home = sql_home(Some(&database.url));
            for (from, to) in [
                (
                    "max_failed_login_attempts = 5",
                    "max_failed_login_attempts = 3",
                ),
                ("enabled = false", "enabled = true"),
                ("per_ip_rate = 20", "per_ip_rate = 0.001"),
                ("per_ip_burst = 40", "per_ip_burst = 8"),
            ] {
                home.edit("config/identity.toml", from, to);
            }
            home
        })
        .collect();
    home_migrate(&homes[0]).await;
    let secret = add_user_and_client(&homes[0], "bob", "bob-pw", "mobile-app").await;
    let mut nodes = Vec::new();
    for home in &homes {
        nodes.push(serve(home).await);
    }
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let bob = |node, password| login(node, "mobile-app", &secret, "bob", password);

    // Act + Assert: one failed login on each node locks the account on every node.
    for node in [a, b, c] {
        bob(node, "wrong").await.assert_error(400, "invalid_grant");
    }
    bob(a, "bob-pw").await.assert_error(400, "invalid_grant");
    homes[2]
        .run(&["user", "unlock", "bob"], None)
        .await
        .assert_success();
    bob(b, "bob-pw").await.assert_tokens(3600, "PRODUCTION");

    // Five requests so far; three more use up the IP's 8, wherever they land.
    for node in [c, a, b] {
        bob(node, "bob-pw").await.assert_tokens(3600, "PRODUCTION");
    }
    for node in [c, a, b] {
        let refused = bob(node, "bob-pw").await;
        refused.assert_error(429, "rate_limited");
        assert!(refused.header("retry-after").is_some());
    }
}

/// Runs one statement on the SQLite token database of `home`, as an operator with `sqlite3`.
async fn run_sql(home: &Home, statement: &str) {
    let database = home.path().join("data/tokens.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", database.display()))
        .await
        .unwrap();
    sqlx::query(statement).execute(&pool).await.unwrap();
    pool.close().await;
}

#[tokio::test]
async fn a_client_row_spoilt_while_serving_keeps_its_last_good_copy() {
    // Arrange
    let home = sql_home(None);
    let secret = add_user_and_client(&home, "bob", "bob-pw", "mobile-app").await;
    let server = serve(&home).await;
    let bob = || login(&server, "mobile-app", &secret, "bob", "bob-pw");
    bob().await.assert_tokens(3600, "PRODUCTION");

    // Act: a typo in the row, then (to know the node has looked) a new client added.
    run_sql(
        &home,
        "UPDATE clients SET grant_types = 'password refresh-token' WHERE id = 'mobile-app'",
    )
    .await;
    let other = home
        .run(
            &["client", "add", "other-app", "--scopes", "PRODUCTION"],
            None,
        )
        .await;
    other.assert_success();
    let other_secret = other.stdout.trim().to_owned();
    poll_until(
        || login(&server, "other-app", &other_secret, "bob", "bob-pw"),
        |reply| reply.status == 200,
    )
    .await
    .assert_tokens(3600, "PRODUCTION");

    // Assert: the spoilt client still works as it did, and the log says why.
    bob().await.assert_tokens(3600, "PRODUCTION");
    let log = server.log();
    assert!(
        log.contains("keeping the last good copy") && log.contains("refresh-token"),
        "{log}"
    );

    // A spoilt row that says it is disabled is taken at its word.
    run_sql(
        &home,
        "UPDATE clients SET disabled = 1 WHERE id = 'mobile-app'",
    )
    .await;
    poll_until(bob, |reply| reply.status == 401)
        .await
        .assert_error(401, "invalid_client");
}

#[tokio::test]
async fn a_users_row_with_an_unusable_hash_cannot_log_in_but_its_tokens_still_work() {
    // Arrange
    let home = sql_home(None);
    let secret = add_user_and_client(&home, "bob", "bob-pw", "mobile-app").await;
    let server = serve(&home).await;
    let (_, refresh) = login(&server, "mobile-app", &secret, "bob", "bob-pw")
        .await
        .assert_tokens(3600, "PRODUCTION");

    // Act: the operator blocks password logins by hand, shadow-file style.
    run_sql(
        &home,
        "UPDATE users SET password_hash = '!' WHERE name = 'bob'",
    )
    .await;
    let password = login(&server, "mobile-app", &secret, "bob", "bob-pw").await;
    let renewal = server
        .post_token_form(
            "/token",
            "mobile-app",
            &secret,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh.unwrap().as_str()),
            ],
        )
        .await;

    // Assert
    password.assert_error(400, "invalid_grant");
    renewal.assert_tokens(3600, "PRODUCTION");
    assert!(
        server.log().contains("not an argon2 PHC string"),
        "{}",
        server.log()
    );
}
