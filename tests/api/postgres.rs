//! The PostgreSQL token store: the same flows as SQLite, and several nodes on one database.
//! Each test creates and drops a database of its own; without TOKENGATE_TEST_DATABASE_URL
//! the tests print one `skipped:` line and pass.

use std::sync::Arc;

use tokengate::clock::ManualClock;

use crate::helpers::*;

/// `count` nodes (in-process servers with their own homes) sharing `database`.
async fn nodes(database: &TestDatabase, count: usize) -> Vec<TestApp> {
    let mut nodes = Vec::new();
    for _ in 0..count {
        nodes.push(postgres_node(database, Arc::new(ManualClock::starting_now()), |_| {}).await);
    }
    nodes
}

#[tokio::test]
async fn the_token_flows_work_on_postgres() {
    let Some(database) = TestDatabase::create("the_token_flows_work_on_postgres").await else {
        return;
    };
    let app = nodes(&database, 1).await.remove(0);

    let (access, refresh) = app
        .login(Some("PRODUCTION"))
        .await
        .assert_tokens(3600, "PRODUCTION");
    let refresh = refresh.unwrap();
    assert_eq!(app.introspect(&access).await.body["active"], true);
    let (_, next) = app
        .refresh(&refresh)
        .await
        .assert_tokens(3600, "PRODUCTION");
    app.refresh(&refresh)
        .await
        .assert_error(400, "invalid_grant");
    // Reuse revoked the grant: the rotated token is dead too.
    app.refresh(&next.unwrap())
        .await
        .assert_error(400, "invalid_grant");
    assert_eq!(app.introspect(&access).await.body["active"], false);

    let (access, refresh) = app.login(None).await.assert_tokens(3600, "default");
    assert_eq!(app.revoke(&refresh.unwrap()).await.status, 200);
    assert_eq!(app.introspect(&access).await.body["active"], false);
    assert_eq!(app.get("/health").await.status, 200);
}

#[tokio::test]
async fn a_token_issued_on_one_node_is_refreshed_on_another_and_revoked_on_a_third() {
    let Some(database) = TestDatabase::create("three_nodes").await else {
        return;
    };
    let nodes = nodes(&database, 3).await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);

    let (_, refresh) = a.login(None).await.assert_tokens(3600, "default");
    let (access, refresh) = b
        .refresh(&refresh.unwrap())
        .await
        .assert_tokens(3600, "default");
    let refresh = refresh.unwrap();
    assert_eq!(c.revoke(&refresh).await.status, 200);

    a.refresh(&refresh).await.assert_error(400, "invalid_grant");
    assert_eq!(a.introspect(&access).await.body["active"], false);
}

#[tokio::test]
async fn one_refresh_token_redeemed_on_two_nodes_at_once_succeeds_exactly_once() {
    let Some(database) = TestDatabase::create("double_redemption").await else {
        return;
    };
    let nodes = nodes(&database, 2).await;
    for _ in 0..10 {
        let (_, refresh) = nodes[0].login(None).await.assert_tokens(3600, "default");
        let refresh = refresh.unwrap();

        let (first, second) = tokio::join!(nodes[0].refresh(&refresh), nodes[1].refresh(&refresh));

        let statuses = [first.status, second.status];
        assert!(
            statuses.contains(&200) && statuses.contains(&400),
            "{statuses:?}: {} / {}",
            first.text,
            second.text
        );
    }
}

#[tokio::test]
async fn an_account_lock_is_shared_by_every_node() {
    let Some(database) = TestDatabase::create("shared_lockout").await else {
        return;
    };
    let nodes = nodes(&database, 2).await;
    for _ in 0..5 {
        nodes[0]
            .post_token(&[
                ("grant_type", "password"),
                ("username", USER),
                ("password", "no"),
            ])
            .await
            .assert_error(400, "invalid_grant");
    }
    let before = nodes[1].hasher.verifications_started();

    nodes[1]
        .login(None)
        .await
        .assert_error(400, "invalid_grant");

    assert_eq!(
        nodes[1].hasher.verifications_started(),
        before,
        "locked: no argon2 work"
    );
}

/// A JWT login on `node` (the fixture JWT client); returns the access token.
async fn jwt_login(node: &TestApp) -> String {
    let reply = node.jwt_password_grant().await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.str("access_token").to_owned()
}

/// The kids `node`'s /jwks names.
async fn published_kids(node: &TestApp) -> Vec<String> {
    let jwks = node.get("/jwks").await.body;
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|key| key["kid"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn each_node_signs_with_its_own_key_and_every_node_publishes_and_accepts_all_of_them() {
    let Some(database) = TestDatabase::create("shared_jwks").await else {
        return;
    };
    // Two nodes with key folders of their own (each generates a key at start) behind one
    // issuer name, as behind a load balancer.
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let clock = Arc::new(ManualClock::starting_now());
        nodes.push(
            postgres_node(&database, clock, |s| {
                s.oauth.issuer = Some("https://tokens.example.test".into())
            })
            .await,
        );
    }
    let (a, b) = (&nodes[0], &nodes[1]);
    let from_a = jwt_login(a).await;
    let from_b = jwt_login(b).await;
    let kid_of = |token: &str| jsonwebtoken::decode_header(token).unwrap().kid.unwrap();
    let (kid_a, kid_b) = (kid_of(&from_a), kid_of(&from_b));
    assert_ne!(kid_a, kid_b, "each node has a key of its own");

    // Every node's JWKS names both keys (A learns of B's within its reload interval).
    assert!(published_kids(b).await.contains(&kid_a));
    let mut a_knows_b = false;
    for _ in 0..100 {
        if published_kids(a).await.contains(&kid_b) {
            a_knows_b = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(a_knows_b, "A's JWKS never named B's key");

    // A resource server holding B's JWKS verifies A's token.
    let jwks: jsonwebtoken::jwk::JwkSet =
        serde_json::from_value(b.get("/jwks").await.body).unwrap();
    let key = jsonwebtoken::DecodingKey::from_jwk(jwks.find(&kid_a).unwrap()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.set_audience(&[JWT_AUDIENCE]);
    validation.set_issuer(&["https://tokens.example.test"]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(&from_a, &key, &validation)
        .unwrap()
        .claims;
    assert_eq!(claims["sub"], USER);

    // Introspected and revoked on the node that did not sign it.
    assert_eq!(b.introspect(&from_a).await.body["active"], true);
    let revoked = b
        .post_form_as(
            "/revoke",
            JWT_CLIENT_ID,
            SHARED_SECRET,
            &[("token", from_a.as_str())],
        )
        .await;
    assert_eq!(revoked.status, 200);
    assert_eq!(a.introspect(&from_a).await.body["active"], false);
    assert_eq!(a.introspect(&from_b).await.body["active"], true);
}

#[tokio::test]
async fn after_a_rotation_on_one_node_every_token_it_signs_names_a_key_the_others_publish() {
    let Some(database) = TestDatabase::create("rotation_in_a_cluster").await else {
        return;
    };
    let nodes = nodes(&database, 2).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let kid_of = |token: &str| jsonwebtoken::decode_header(token).unwrap().kid.unwrap();
    let first_kid = kid_of(&jwt_login(a).await);

    // Act: a new key on A (what `tokengate keys rotate` does there).
    tokengate::crypto::jwk::generate_key(
        &a.settings.oauth.signing_keys_dir,
        a.settings.oauth.jwt_algorithm,
        tokengate::clock::Clock::now_ms(&tokengate::clock::SystemClock),
    )
    .unwrap();

    // Assert: whatever A signs meanwhile, B already publishes its key; and A does move on.
    let started = std::time::Instant::now();
    let mut rotated = false;
    while started.elapsed() < std::time::Duration::from_secs(30) {
        // Keep A's clock with real time, in which the key file was written.
        let real = tokengate::clock::Clock::now_ms(&tokengate::clock::SystemClock);
        let behind_ms = real - tokengate::clock::Clock::now_ms(a.clock.as_ref());
        a.clock.advance_secs(behind_ms.div_euclid(1000));
        let kid = kid_of(&jwt_login(a).await);
        assert!(
            published_kids(b).await.contains(&kid),
            "A signed with {kid} (first {first_kid}) after {:?}, which B does not publish yet: {:?}", started.elapsed(), published_kids(b).await
        );
        if kid != first_kid {
            rotated = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert!(rotated, "A never signed with its new key");
}

#[tokio::test]
async fn sslmode_decides_whether_a_node_reaches_its_database_over_tls() {
    let Some(database) = TestDatabase::create("database_tls").await else {
        return;
    };
    let pool = sqlx::PgPool::connect(&database.url).await.unwrap();
    let ssl: String = sqlx::query_scalar("SHOW ssl")
        .fetch_one(&pool)
        .await
        .unwrap();
    if ssl != "on" {
        eprintln!(
            "skipped: the PostgreSQL server has ssl off (sslmode_decides_whether_a_node_reaches_its_database_over_tls)"
        );
        return;
    }
    // Two nodes: one that requires TLS, one that refuses it; `sslmode` decides.
    let mut nodes = Vec::new();
    for mode in ["require", "disable"] {
        let clock = Arc::new(ManualClock::starting_now());
        let node = postgres_node(&database, clock, |s| {
            let url = postgres_url(s);
            *url = format!("{url}?sslmode={mode}&application_name=node-{mode}");
        })
        .await;
        let (_, refresh) = node.login(None).await.assert_tokens(3600, "default");
        node.refresh(&refresh.unwrap())
            .await
            .assert_tokens(3600, "default");
        nodes.push(node);
    }

    let encrypted = |mode: &'static str| {
        sqlx::query_as::<_, (i64, i64)>(
            "SELECT COUNT(*) FILTER (WHERE s.ssl), COUNT(*) FILTER (WHERE NOT s.ssl) \
             FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
             WHERE a.application_name = $1",
        )
        .bind(format!("node-{mode}"))
        .fetch_one(&pool)
    };
    let (tls, plain) = encrypted("require").await.unwrap();
    assert!(
        tls > 0 && plain == 0,
        "sslmode=require: {tls} TLS, {plain} plain"
    );
    let (tls, plain) = encrypted("disable").await.unwrap();
    assert!(
        tls == 0 && plain > 0,
        "sslmode=disable: {tls} TLS, {plain} plain"
    );
    pool.close().await;
}

/// The id half of an opaque token, as the store keys it.
fn token_id(token: &str) -> Vec<u8> {
    use base64::Engine as _;
    let id = token.split('.').next().unwrap();
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(id)
        .unwrap()
}

/// Waits until `count` statements of this database wait for a lock.
async fn rotations_waiting_for_locks(watcher: &mut sqlx::PgConnection, count: i64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&mut *watcher)
        .await
        .unwrap();
        if waiting >= count {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{waiting} of {count} rotations wait for a lock"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// A rotation whose caller went away while it waited for its round (every batch that may run
/// at once stuck on row locks another session holds) is left out of that round: the client
/// never learnt of it, so its retry with the same refresh token works instead of being taken
/// for reuse, which would revoke the grant.
#[tokio::test]
async fn a_rotation_whose_caller_left_before_its_round_is_not_written() {
    use sqlx::Connection as _;
    let Some(database) = TestDatabase::create("caller_gone_before_round").await else {
        return;
    };
    let node = postgres_node(&database, Arc::new(ManualClock::starting_now()), |_| {}).await;
    let (_, gone) = node.login(None).await.assert_tokens(3600, "default");
    let gone = gone.unwrap();
    let mut held = Vec::new();
    for _ in 0..3 {
        let (_, refresh) = node.login(None).await.assert_tokens(3600, "default");
        held.push(refresh.unwrap());
    }
    let mut intruder = sqlx::PgConnection::connect(&database.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut intruder).await.unwrap();
    let ids: Vec<Vec<u8>> = held.iter().map(|token| token_id(token)).collect();
    sqlx::query("SELECT 1 FROM refresh_tokens WHERE id = ANY($1) FOR UPDATE")
        .bind(&ids)
        .execute(&mut intruder)
        .await
        .unwrap();

    let mut watchers = Vec::new();
    for _ in 0..3 {
        watchers.push(sqlx::PgConnection::connect(&database.url).await.unwrap());
    }
    let [mut watch_1, mut watch_2, mut watch_3] = <[_; 3]>::try_from(watchers).ok().unwrap();
    // One write batch runs at a time, and one more beside it after each 50 ms it is stuck, up
    // to three: the three rotations of locked rows, each sent once the one before waits for
    // its lock, take all three...
    let (first, second, third, ()) = tokio::join!(
        node.refresh(&held[0]),
        async {
            rotations_waiting_for_locks(&mut watch_1, 1).await;
            node.refresh(&held[1]).await
        },
        async {
            rotations_waiting_for_locks(&mut watch_2, 2).await;
            node.refresh(&held[2]).await
        },
        async {
            rotations_waiting_for_locks(&mut watch_3, 3).await;
            // ...so this rotation waits for a round, and its client gives up meanwhile...
            let gave_up =
                tokio::time::timeout(std::time::Duration::from_millis(300), node.refresh(&gone))
                    .await;
            assert!(gave_up.is_err(), "the rotation should still be waiting");
            // ...before the locks go, within the database's 1 s lock timeout (a batch that
            // reaches it is retried write by write, still holding its place).
            sqlx::query("ROLLBACK")
                .execute(&mut intruder)
                .await
                .unwrap();
        }
    );
    for answer in [first, second, third] {
        answer.assert_tokens(3600, "default");
    }
    let (_, next) = node.refresh(&gone).await.assert_tokens(3600, "default");
    // The grant is alive: the new refresh token works too.
    node.refresh(&next.unwrap())
        .await
        .assert_tokens(3600, "default");
}
