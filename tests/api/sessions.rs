//! Ending sessions: not-before marks per user and per client (what `user revoke-tokens`,
//! `client revoke-tokens`, `set-password` and `remove` write), `refresh_token_max_lifetime`,
//! and grant revocations that outlive every token of the grant. The CLI side is in
//! `cli_sessions.rs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokengate::clock::{Clock as _, ManualClock};
use tokengate::store::SubjectKind;

use crate::helpers::*;

/// A password grant for alice as `client_id` (shared or main secret), scope default.
async fn login_as(app: &TestApp, client_id: &str, secret: &str) -> (String, String) {
    let (access, refresh) = app
        .post_token_as(
            client_id,
            secret,
            &[
                ("grant_type", "password"),
                ("username", USER),
                ("password", PASSWORD),
            ],
        )
        .await
        .assert_tokens(
            if client_id == SHORT_CLIENT_ID {
                120
            } else {
                3600
            },
            "default",
        );
    (access, refresh.expect("a refresh token"))
}

async fn refresh_as(app: &TestApp, client_id: &str, secret: &str, refresh: &str) -> Reply {
    app.post_token_as(
        client_id,
        secret,
        &[("grant_type", "refresh_token"), ("refresh_token", refresh)],
    )
    .await
}

fn assert_inactive(reply: &Reply) {
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(
        reply.body,
        serde_json::json!({"active": false}),
        "{}",
        reply.text
    );
}

fn assert_active(reply: &Reply) {
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body["active"], true, "{}", reply.text);
}

/// Writes the mark `tokengate user|client revoke-tokens` writes, at the app's clock.
async fn mark(app: &TestApp, kind: SubjectKind, name: &str) {
    app.store
        .revoke_subject(kind, name, app.clock.now_ms(), app.clock.now_secs())
        .await
        .unwrap();
}

async fn a_user_mark_ends_every_token_of_the_user_and_nothing_else(app: TestApp) {
    // Arrange: alice through two clients (one with JWT access tokens), and an application
    // token of another client.
    let (access, refresh) = app.login(None).await.assert_tokens(3600, "default");
    let refresh = refresh.unwrap();
    let jwt = app.jwt_password_grant().await;
    assert_eq!(jwt.status, 200, "{}", jwt.text);
    let (jwt_access, jwt_refresh) = (jwt.str("access_token"), jwt.str("refresh_token"));
    let app_token = app
        .post_token_as(
            SERVICE_CLIENT_ID,
            SHARED_SECRET,
            &[("grant_type", "client_credentials")],
        )
        .await
        .assert_tokens(600, "default")
        .0;
    assert_active(&app.introspect(&access).await);
    assert_active(&app.introspect(jwt_access).await);

    // Act
    app.clock.advance_secs(1);
    mark(&app, SubjectKind::User, USER).await;

    // Assert: every token of alice is ended, on every kind of token.
    assert_inactive(&app.introspect(&access).await);
    assert_inactive(&app.introspect(&refresh).await);
    assert_inactive(&app.introspect(jwt_access).await);
    app.refresh(&refresh)
        .await
        .assert_error(400, "invalid_grant");
    refresh_as(&app, JWT_CLIENT_ID, SHARED_SECRET, jwt_refresh)
        .await
        .assert_error(400, "invalid_grant");
    assert_active(&app.introspect(&app_token).await);
    // A login after the mark is not caught by it.
    app.clock.advance_secs(1);
    let (new_access, new_refresh) = app.login(None).await.assert_tokens(3600, "default");
    assert_active(&app.introspect(&new_access).await);
    app.refresh(&new_refresh.unwrap())
        .await
        .assert_tokens(3600, "default");
}

#[tokio::test]
async fn a_user_mark_ends_every_token_of_the_user_and_nothing_else_on_sqlite() {
    a_user_mark_ends_every_token_of_the_user_and_nothing_else(spawn_app().await).await;
}

#[tokio::test]
async fn a_user_mark_ends_every_token_of_the_user_and_nothing_else_on_postgres() {
    let Some(database) = TestDatabase::create("user_mark").await else {
        return;
    };
    let app = postgres_node(&database, Arc::new(ManualClock::starting_now()), |_| {}).await;
    a_user_mark_ends_every_token_of_the_user_and_nothing_else(app).await;
}

#[tokio::test]
async fn a_client_mark_ends_the_clients_tokens_for_every_user_and_no_other_clients() {
    // Arrange
    let app = spawn_app().await;
    let (access, refresh) = login_as(&app, CLIENT_ID, CLIENT_SECRET).await;
    let (other_access, other_refresh) = login_as(&app, OTHER_CLIENT_ID, OTHER_CLIENT_SECRET).await;
    let jwt_app = app
        .post_token_as(
            JWT_CLIENT_ID,
            SHARED_SECRET,
            &[("grant_type", "client_credentials")],
        )
        .await;
    assert_eq!(jwt_app.status, 200, "{}", jwt_app.text);
    let jwt_app_token = jwt_app.str("access_token").to_owned();
    assert_active(&app.introspect(&jwt_app_token).await);

    // Act
    app.clock.advance_secs(1);
    mark(&app, SubjectKind::Client, CLIENT_ID).await;
    mark(&app, SubjectKind::Client, JWT_CLIENT_ID).await;

    // Assert
    assert_inactive(&app.introspect(&access).await);
    assert_inactive(&app.introspect(&refresh).await);
    app.refresh(&refresh)
        .await
        .assert_error(400, "invalid_grant");
    assert_inactive(&app.introspect(&jwt_app_token).await);
    assert_active(&app.introspect(&other_access).await);
    refresh_as(&app, OTHER_CLIENT_ID, OTHER_CLIENT_SECRET, &other_refresh)
        .await
        .assert_tokens(3600, "default");
}

#[tokio::test]
async fn a_mark_seen_by_one_postgres_node_is_seen_by_every_node_at_once() {
    // Arrange: two nodes on one database.
    let Some(database) = TestDatabase::create("mark_two_nodes").await else {
        return;
    };
    let clock = Arc::new(ManualClock::starting_now());
    let first = postgres_node(&database, clock.clone(), |_| {}).await;
    let second = postgres_node(&database, clock.clone(), |_| {}).await;
    let (access, refresh) = first.login(None).await.assert_tokens(3600, "default");
    let refresh = refresh.unwrap();
    assert_active(&second.introspect(&access).await);

    // Act: the mark is written through the first node's store.
    clock.advance_secs(1);
    mark(&first, SubjectKind::User, USER).await;

    // Assert: the second node refuses at once (no cache in between).
    assert_inactive(&second.introspect(&access).await);
    second
        .refresh(&refresh)
        .await
        .assert_error(400, "invalid_grant");
}

#[tokio::test]
async fn a_later_mark_is_never_moved_back_by_an_earlier_one() {
    // Arrange
    let app = spawn_app().await;
    let (access, _) = app.login(None).await.assert_tokens(3600, "default");
    let now_ms = app.clock.now_ms();

    // Act: a mark ahead of the token, then one from before it.
    app.store
        .revoke_subject(SubjectKind::User, USER, now_ms + 5_000, app.clock_now())
        .await
        .unwrap();
    app.store
        .revoke_subject(SubjectKind::User, USER, now_ms - 60_000, app.clock_now())
        .await
        .unwrap();

    // Assert
    assert_inactive(&app.introspect(&access).await);
}

/// A rotation whose read came before a mark and whose write comes after it (the refresh grant
/// read the token, then `revoke-tokens` committed): the conditional write must refuse, so that
/// no live successor is minted.
async fn a_rotation_racing_a_mark_mints_no_successor(app: TestApp) {
    use tokengate::crypto::token::{PresentedToken, SecretDigest, TokenId};
    use tokengate::store::model::{NewTokens, RefreshTokenRecord};
    use tokengate::store::Rotation;

    // Arrange: the grant's refresh token as the grant read it, then the mark.
    let (_, refresh) = app.login(None).await.assert_tokens(3600, "default");
    let id = PresentedToken::parse(&secrecy::SecretString::from(refresh.unwrap()))
        .unwrap()
        .id;
    let old = app.store.find_refresh_token(&id).await.unwrap().unwrap();
    assert!(old.token.revoked_at.is_none());
    app.clock.advance_secs(1);
    mark(&app, SubjectKind::User, USER).await;
    let now_ms = app.clock.now_ms();
    let successor = |id: TokenId| {
        let mut record = old.token.clone();
        record.id = id;
        record.secret_digest = SecretDigest::of(b"successor");
        record.issued_at = app.clock_now();
        record
    };
    let new = NewTokens {
        access: successor(TokenId::new(now_ms)),
        refresh: Some(RefreshTokenRecord {
            token: successor(TokenId::new(now_ms)),
            spent_at: None,
            replaced_by: None,
        }),
    };

    // Act
    let rotation = app
        .store
        .rotate_refresh_token(&id, app.clock_now(), new)
        .await
        .unwrap();

    // Assert
    assert_eq!(rotation, Rotation::AlreadySpent);
}

#[tokio::test]
async fn a_rotation_racing_a_mark_mints_no_successor_on_sqlite() {
    a_rotation_racing_a_mark_mints_no_successor(spawn_app().await).await;
}

#[tokio::test]
async fn a_rotation_racing_a_mark_mints_no_successor_on_postgres() {
    let Some(database) = TestDatabase::create("rotation_mark").await else {
        return;
    };
    let app = postgres_node(&database, Arc::new(ManualClock::starting_now()), |_| {}).await;
    a_rotation_racing_a_mark_mints_no_successor(app).await;
}

/// The refresh token's `exp` as introspection reports it.
async fn refresh_expiry(app: &TestApp, refresh: &str) -> i64 {
    let reply = app.introspect(refresh).await;
    assert_active(&reply);
    reply.body["exp"].as_i64().unwrap()
}

#[tokio::test]
async fn rotation_refreshes_until_the_max_lifetime_and_then_the_refresh_is_invalid_grant() {
    // Arrange: refresh tokens live a day each, the grant at most 1000 s.
    let app = spawn_app_with(|s| s.oauth.refresh_token_max_lifetime_secs = 1000).await;
    let start = app.clock_now();
    let (_, refresh) = app.login(None).await.assert_tokens(3600, "default");
    let mut refresh = refresh.unwrap();
    assert_eq!(refresh_expiry(&app, &refresh).await, start + 1000);

    // Act + Assert: rotation keeps working, each new token capped at the grant's end.
    for _ in 0..3 {
        app.clock.advance_secs(300);
        let (_, next) = app.refresh(&refresh).await.assert_tokens(3600, "default");
        refresh = next.unwrap();
        assert_eq!(refresh_expiry(&app, &refresh).await, start + 1000);
    }
    app.clock.advance_secs(100); // start + 1000
    app.refresh(&refresh)
        .await
        .assert_error(400, "invalid_grant");
}

#[tokio::test]
async fn without_a_max_lifetime_rotation_slides_the_refresh_expiry() {
    // Arrange
    let app = spawn_app().await;
    let (_, refresh) = app.login(None).await.assert_tokens(3600, "default");

    // Act
    app.clock.advance_secs(80_000);
    let (_, next) = app
        .refresh(&refresh.unwrap())
        .await
        .assert_tokens(3600, "default");

    // Assert
    assert_eq!(
        refresh_expiry(&app, &next.unwrap()).await,
        app.clock_now() + 86_400
    );
}

#[tokio::test]
async fn a_max_lifetime_configured_later_refuses_older_grants_without_rotation() {
    // Arrange: a grant from before the maximum was set (a restart on the same database).
    let app = spawn_app_with(|s| s.oauth.renew_refresh_token = false).await;
    let (_, refresh) = app.login(None).await.assert_tokens(3600, "default");
    let refresh = refresh.unwrap();
    let clock = app.clock.clone();
    let mut settings = app.settings.clone();
    let home = app.stop().await;
    settings.oauth.refresh_token_max_lifetime_secs = 600;
    let app = spawn_in(home, settings, clock).await;
    app.refresh(&refresh).await.assert_tokens(3600, "default");

    // Act
    app.clock.advance_secs(600);

    // Assert
    app.refresh(&refresh)
        .await
        .assert_error(400, "invalid_grant");
}

/// Waits until the janitor has purged `access` (it ran after the clock moved).
async fn wait_for_purge(app: &TestApp, access: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while stored_access_token(app, access).await.is_some() {
        assert!(Instant::now() < deadline, "the janitor did not run");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A client issues ten-day refresh tokens; its lifetime is then cut to 600 s (the clients file
/// is re-read) and a grant revoked: the revocation must outlive the ten-day token.
async fn a_revocation_outlives_tokens_issued_under_a_longer_lifetime(app: TestApp) {
    // Arrange
    let clients = app.home.path().join("config/clients.toml");
    let (_, refresh) = login_as(&app, SHORT_CLIENT_ID, SHARED_SECRET).await;
    let text = std::fs::read_to_string(&clients).unwrap();
    std::fs::write(
        &clients,
        text.replace(
            "refresh_token_validity_period = 864000",
            "refresh_token_validity_period = 600",
        ),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, probe) = login_as(&app, SHORT_CLIENT_ID, SHARED_SECRET).await;
        if refresh_expiry(&app, &probe).await == app.clock_now() + 600 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the clients file was not re-read"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let revoked = app
        .post_form_as(
            "/revoke",
            SHORT_CLIENT_ID,
            SHARED_SECRET,
            &[("token", &refresh)],
        )
        .await;
    assert_eq!(revoked.status, 200, "{}", revoked.text);

    // Act: past every lifetime configured now (a day at most), not past the token's ten days;
    // the janitor runs.
    app.clock.advance_secs(2 * 86_400 + 120);
    let (marker, _) = app.login(None).await.assert_tokens(3600, "default");
    app.clock.advance_secs(3600 + 120);
    wait_for_purge(&app, &marker).await;
    let (second_marker, _) = app.login(None).await.assert_tokens(3600, "default");
    app.clock.advance_secs(3600 + 120);
    wait_for_purge(&app, &second_marker).await;

    // Assert
    assert_inactive(&app.introspect(&refresh).await);
    refresh_as(&app, SHORT_CLIENT_ID, SHARED_SECRET, &refresh)
        .await
        .assert_error(400, "invalid_grant");
}

/// An app whose short-lived client issues ten-day refresh tokens, with the janitor every second.
async fn long_refresh_app(postgres: Option<&TestDatabase>) -> TestApp {
    let home = Arc::new(tempfile::tempdir().unwrap());
    write_fixture_stores(home.path());
    let clients = home.path().join("config/clients.toml");
    let text = std::fs::read_to_string(&clients).unwrap();
    std::fs::write(
        &clients,
        text.replace(
            "refresh_token_validity_period = 600",
            "refresh_token_validity_period = 864000",
        ),
    )
    .unwrap();
    let mut settings = match postgres {
        Some(database) => postgres_settings(home.path(), database),
        None => test_settings(home.path()),
    };
    settings.stores.janitor_interval = Some(Duration::from_secs(1));
    spawn_in(home, settings, Arc::new(ManualClock::starting_now())).await
}

#[tokio::test]
async fn a_revocation_outlives_tokens_issued_under_a_longer_lifetime_on_sqlite() {
    a_revocation_outlives_tokens_issued_under_a_longer_lifetime(long_refresh_app(None).await).await;
}

#[tokio::test]
async fn a_revocation_outlives_tokens_issued_under_a_longer_lifetime_on_postgres() {
    let Some(database) = TestDatabase::create("revocation_outlives").await else {
        return;
    };
    let app = long_refresh_app(Some(&database)).await;
    a_revocation_outlives_tokens_issued_under_a_longer_lifetime(app).await;
}

/// The shipped `identity.toml` with `refresh_token_max_lifetime` set to `value`, validated.
fn shipped_config_with_max_lifetime(
    value: &str,
) -> Result<tokengate::config::Settings, tokengate::config::ConfigError> {
    let text = std::fs::read_to_string(project_root().join("config/identity.toml")).unwrap();
    let line = "refresh_token_max_lifetime = 0 ";
    assert!(text.contains(line), "the shipped config documents the key");
    tokengate::config::validate(
        &text.replacen(line, &format!("refresh_token_max_lifetime = {value} "), 1),
        std::path::Path::new("/etc/tokengate/identity.toml"),
        &tokengate::config::ConfigSource {
            config_path: None,
            port_offset: None,
            home: Some("/srv/tokengate".into()),
        },
    )
}

#[test]
fn refresh_token_max_lifetime_is_read_from_the_file_and_a_negative_one_names_its_key() {
    // Act
    let shipped = shipped_config_with_max_lifetime("0").unwrap();
    let set = shipped_config_with_max_lifetime("2592000").unwrap();
    let negative = shipped_config_with_max_lifetime("-1").unwrap_err();

    // Assert
    assert_eq!(shipped.oauth.refresh_token_max_lifetime_secs, 0);
    assert_eq!(set.oauth.refresh_token_max_lifetime_secs, 2_592_000);
    assert!(
        negative.problems.iter().any(|problem| {
            problem.key == "oauth.refresh_token_max_lifetime"
                && problem.file == std::path::Path::new("/etc/tokengate/identity.toml")
        }),
        "{negative}"
    );
}

#[tokio::test]
async fn a_login_whose_check_began_before_a_mark_is_ended_by_it_though_minted_after() {
    // A password change lands while a login with the old password is still being checked: the
    // grant counts from the start of the check, so the mark covers it.
    let app = spawn_app_with(|settings| settings.password_hashing.workers = 1).await;
    let before = app.hasher.verifications_started();
    // Unknown names (one each, so no lockout) keep the one hashing worker busy.
    let blockers: Vec<_> = (0..6)
        .map(|n| {
            let client = app.client.clone();
            let url = app.url("/token");
            tokio::spawn(async move {
                post_basic_form(
                    &client,
                    &url,
                    CLIENT_ID,
                    CLIENT_SECRET,
                    &[
                        ("grant_type", "password"),
                        ("username", &format!("blocker-{n}")),
                        ("password", "wrong"),
                    ],
                )
                .await
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.hasher.verifications_started() < before + 1 {
        assert!(Instant::now() < deadline, "the blockers never started");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let login = {
        let client = app.client.clone();
        let url = app.url("/token");
        tokio::spawn(async move {
            post_basic_form(
                &client,
                &url,
                CLIENT_ID,
                CLIENT_SECRET,
                &[
                    ("grant_type", "password"),
                    ("username", USER),
                    ("password", PASSWORD),
                ],
            )
            .await
        })
    };
    // The login has long read the user by the time three more blockers have started hashing.
    while app.hasher.verifications_started() < before + 4 {
        assert!(Instant::now() < deadline, "the blockers stalled");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }

    // Act: the mark is written while the login still waits for its hash.
    let mark_ms = app.clock.now_ms() + 5_000;
    app.clock.advance_secs(10);
    app.store
        .revoke_subject(SubjectKind::User, USER, mark_ms, app.clock.now_secs())
        .await
        .unwrap();
    let reply = login.await.unwrap();
    for blocker in blockers {
        blocker.await.unwrap().assert_error(400, "invalid_grant");
    }

    // Assert: the tokens were issued after the mark, yet the mark ended them.
    let (_, refresh) = reply.assert_tokens(3600, "default");
    let refreshed = app.refresh(&refresh.unwrap()).await;
    refreshed.assert_error(400, "invalid_grant");
}
