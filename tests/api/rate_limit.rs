//! Token buckets per client IP and per client id on /token: 429, Retry-After, RFC-style JSON.

use tokengate::abuse::rate_limit::Rate;

use crate::helpers::*;

fn bucket(per_second: f64, burst: f64) -> Option<Rate> {
    Some(Rate { per_second, burst })
}

/// A cheap request: a malformed refresh token, answered 400 without any hashing.
async fn cheap(app: &TestApp, forwarded_for: Option<&str>) -> Reply {
    let mut request = app
        .client
        .post(app.url("/token"))
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", "x")]);
    if let Some(value) = forwarded_for {
        request = request.header("x-forwarded-for", value);
    }
    Reply::read(request.send().await.unwrap()).await
}

fn assert_limited(reply: &Reply) {
    reply.assert_error(429, "rate_limited");
    let retry: u64 = reply.header("retry-after").unwrap().parse().unwrap();
    assert!(retry >= 1, "{retry}");
}

#[tokio::test]
async fn a_client_ip_over_its_burst_gets_429_until_tokens_refill() {
    let app = spawn_app_with(|s| s.rate_limit.per_ip = bucket(1.0, 3.0)).await;
    for _ in 0..3 {
        cheap(&app, None).await.assert_error(400, "invalid_grant");
    }

    assert_limited(&cheap(&app, None).await);

    app.clock.advance_secs(1);
    cheap(&app, None).await.assert_error(400, "invalid_grant");
    assert_limited(&cheap(&app, None).await);
}

#[tokio::test]
async fn forwarded_for_from_an_untrusted_peer_is_ignored() {
    let app = spawn_app_with(|s| s.rate_limit.per_ip = bucket(1.0, 2.0)).await;
    cheap(&app, Some("198.51.100.1"))
        .await
        .assert_error(400, "invalid_grant");
    cheap(&app, Some("198.51.100.2"))
        .await
        .assert_error(400, "invalid_grant");

    assert_limited(&cheap(&app, Some("198.51.100.3")).await);
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_bucket() {
    let app = spawn_app_with(|s| {
        s.rate_limit.per_ip = bucket(1.0, 2.0);
        s.rate_limit.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    for _ in 0..2 {
        cheap(&app, Some("198.51.100.1"))
            .await
            .assert_error(400, "invalid_grant");
    }
    assert_limited(&cheap(&app, Some("198.51.100.1")).await);

    // A forged leftmost entry does not help: the rightmost untrusted hop counts.
    assert_limited(&cheap(&app, Some("203.0.113.5, 198.51.100.1")).await);
    cheap(&app, Some("198.51.100.2"))
        .await
        .assert_error(400, "invalid_grant");
}

#[tokio::test]
async fn each_client_id_has_its_own_bucket() {
    let app = spawn_app_with(|s| s.rate_limit.per_client = bucket(1.0, 2.0)).await;
    for _ in 0..2 {
        cheap(&app, None).await.assert_error(400, "invalid_grant");
    }

    assert_limited(&cheap(&app, None).await);
    app.post_token_as(
        OTHER_CLIENT_ID,
        OTHER_CLIENT_SECRET,
        &[("grant_type", "refresh_token"), ("refresh_token", "x")],
    )
    .await
    .assert_error(400, "invalid_grant");
}

#[tokio::test]
async fn rate_limits_are_off_unless_enabled() {
    let app = spawn_app().await;
    assert!(app.settings.rate_limit.per_ip.is_none());

    for _ in 0..60 {
        cheap(&app, None).await.assert_error(400, "invalid_grant");
    }
}

/// `count` nodes sharing `database`, each with `adjust` applied to its settings. They share
/// one clock, as synchronised servers would, so time passes only when the test says so.
async fn cluster(
    database: &TestDatabase,
    count: usize,
    adjust: impl Fn(&mut tokengate::config::Settings),
) -> Vec<TestApp> {
    let clock = std::sync::Arc::new(tokengate::clock::ManualClock::starting_now());
    let mut nodes = Vec::new();
    for _ in 0..count {
        nodes.push(postgres_node(database, clock.clone(), &adjust).await);
    }
    nodes
}

/// So slow that no token comes back while a test runs.
const NO_REFILL: f64 = 0.001;

#[tokio::test]
async fn on_postgres_a_client_ip_limit_holds_for_the_whole_cluster_not_per_node() {
    let Some(database) = TestDatabase::create("shared_ip_limit").await else {
        return;
    };
    let nodes = cluster(&database, 3, |s| {
        s.rate_limit.per_ip = bucket(NO_REFILL, 4.0)
    })
    .await;

    // Four requests spread over three nodes use up the one bucket of 127.0.0.1.
    for node in [&nodes[0], &nodes[1], &nodes[2], &nodes[0]] {
        cheap(node, None).await.assert_error(400, "invalid_grant");
    }

    // Per node, each would still have tokens left; shared, none has.
    for node in &nodes {
        let reply = cheap(node, None).await;
        assert_limited(&reply);
        let retry: u64 = reply.header("retry-after").unwrap().parse().unwrap();
        assert!(retry > 60, "one token takes 1000 s at this rate: {retry}");
    }
}

#[tokio::test]
async fn on_postgres_a_client_limit_holds_for_the_whole_cluster_not_per_node() {
    let Some(database) = TestDatabase::create("shared_client_limit").await else {
        return;
    };
    let nodes = cluster(&database, 2, |s| {
        s.rate_limit.per_client = bucket(NO_REFILL, 3.0)
    })
    .await;

    for node in [&nodes[0], &nodes[1], &nodes[0]] {
        cheap(node, None).await.assert_error(400, "invalid_grant");
    }

    assert_limited(&cheap(&nodes[1], None).await);
    assert_limited(&cheap(&nodes[0], None).await);
    // Another client has a bucket of its own, on every node.
    nodes[1]
        .post_token_as(
            OTHER_CLIENT_ID,
            OTHER_CLIENT_SECRET,
            &[("grant_type", "refresh_token"), ("refresh_token", "x")],
        )
        .await
        .assert_error(400, "invalid_grant");
}

#[tokio::test]
async fn on_postgres_with_shared_off_each_node_limits_on_its_own() {
    let Some(database) = TestDatabase::create("unshared_limit").await else {
        return;
    };
    let nodes = cluster(&database, 2, |s| {
        s.rate_limit.per_ip = bucket(NO_REFILL, 2.0);
        s.rate_limit.shared = false;
    })
    .await;

    for _ in 0..2 {
        cheap(&nodes[0], None)
            .await
            .assert_error(400, "invalid_grant");
    }
    assert_limited(&cheap(&nodes[0], None).await);

    cheap(&nodes[1], None)
        .await
        .assert_error(400, "invalid_grant");
}

#[tokio::test]
async fn on_postgres_a_shared_bucket_refills_at_its_rate() {
    let Some(database) = TestDatabase::create("shared_refill").await else {
        return;
    };
    let nodes = cluster(&database, 2, |s| s.rate_limit.per_ip = bucket(1.0, 2.0)).await;
    cheap(&nodes[0], None)
        .await
        .assert_error(400, "invalid_grant");
    cheap(&nodes[1], None)
        .await
        .assert_error(400, "invalid_grant");
    assert_limited(&cheap(&nodes[1], None).await);

    // One second later: one token back, for whichever node asks.
    nodes[0].clock.advance_secs(1);
    cheap(&nodes[1], None)
        .await
        .assert_error(400, "invalid_grant");
    assert_limited(&cheap(&nodes[0], None).await);
}

#[tokio::test]
async fn the_janitor_forgets_shared_buckets_once_they_are_full_again() {
    let Some(database) = TestDatabase::create("shared_bucket_janitor").await else {
        return;
    };
    let mut nodes = cluster(&database, 1, |s| {
        s.rate_limit.per_ip = bucket(1.0, 5.0);
        s.stores.janitor_interval = Some(std::time::Duration::from_secs(1));
    })
    .await;
    let node = nodes.remove(0);
    cheap(&node, None).await.assert_error(400, "invalid_grant");
    let pool = sqlx::PgPool::connect(&database.url).await.unwrap();
    let count =
        || sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM rate_buckets").fetch_one(&pool);
    assert_eq!(count().await.unwrap(), 1);

    // Full again one second after its one take; the janitor allows a minute of slack.
    node.clock.advance_secs(62);
    let mut forgotten = false;
    for _ in 0..300 {
        if count().await.unwrap() == 0 {
            forgotten = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    assert!(forgotten, "the full bucket was not purged");
    pool.close().await;
}

#[tokio::test]
async fn once_the_cluster_refused_a_key_a_node_refuses_it_on_its_own_without_asking_the_database() {
    let Some(database) = TestDatabase::create("shared_local_lowered").await else {
        return;
    };
    let nodes = cluster(&database, 2, |s| {
        s.rate_limit.per_ip = bucket(NO_REFILL, 2.0)
    })
    .await;
    // Node A empties the shared bucket; node B has not seen the key yet.
    for _ in 0..2 {
        cheap(&nodes[0], None)
            .await
            .assert_error(400, "invalid_grant");
    }
    assert_limited(&cheap(&nodes[1], None).await);

    // Forget the shared bucket: a node that asked the database now would find a full one.
    let pool = sqlx::PgPool::connect(&database.url).await.unwrap();
    sqlx::query("DELETE FROM rate_buckets")
        .execute(&pool)
        .await
        .unwrap();

    // B learnt from the refusal that the key's bucket is empty and refuses by itself, so a
    // flood from one key cannot cost the database a write per request.
    assert_limited(&cheap(&nodes[1], None).await);
    let asked: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM rate_buckets")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(asked, 0, "the database was asked");
    pool.close().await;
}

#[tokio::test]
async fn a_keep_alive_connection_refused_for_its_rate_goes_on_answering() {
    use tokio::io::AsyncWriteExt as _;

    // Arrange: the IP's bucket is empty, and one connection sends two requests with bodies.
    let app = spawn_app_with(|s| s.rate_limit.per_ip = bucket(0.001, 1.0)).await;
    cheap(&app, None).await.assert_error(400, "invalid_grant");
    let body = "grant_type=refresh_token&refresh_token=x";
    let request = |last: bool| {
        format!(
            "POST /token HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: {}\r\n{}\r\n{body}",
            body.len(),
            if last { "connection: close\r\n" } else { "" }
        )
    };
    let mut tls = raw_tls_connection(&app, b"http/1.1").await;

    // Act: as many clients do, the headers first and the body in a write of its own.
    let first = request(false);
    let (headers, _) = first.split_at(first.len() - body.len());
    tls.write_all(headers.as_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let _ = tls.write_all(body.as_bytes()).await;
    let _ = tls.write_all(request(true).as_bytes()).await;
    let answers = String::from_utf8_lossy(&read_until_closed(&mut tls).await).into_owned();

    // Assert: both refused by the limit, on the one connection (its unread body would have
    // closed it after the first).
    assert_eq!(answers.matches("HTTP/1.1 429").count(), 2, "{answers}");
}

#[tokio::test]
async fn a_refused_client_waiting_for_100_continue_is_not_invited_to_send_its_body() {
    use tokio::io::AsyncWriteExt as _;

    // Arrange: the IP's bucket is empty.
    let app = spawn_app_with(|s| s.rate_limit.per_ip = bucket(0.001, 1.0)).await;
    cheap(&app, None).await.assert_error(400, "invalid_grant");
    let mut tls = raw_tls_connection(&app, b"http/1.1").await;

    // Act: headers only, waiting for 100 Continue before the body.
    tls.write_all(
        b"POST /token HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: 40\r\nexpect: 100-continue\r\n\r\n",
    )
    .await
    .unwrap();
    let answer = String::from_utf8_lossy(&read_until_closed(&mut tls).await).into_owned();

    // Assert: refused at once, no invitation, and the connection ends.
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    assert!(!answer.contains("100 Continue"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
}

/// A public client names itself by its id alone, which anyone can send: its bucket is per
/// client and address, so strangers cannot use up its users' allowance.
#[tokio::test]
async fn a_public_clients_bucket_is_per_address() {
    // Arrange: 127.0.0.1 is a trusted proxy, so X-Forwarded-For plays the client's address.
    let app = spawn_app_with(|s| {
        s.rate_limit.per_client = bucket(NO_REFILL, 2.0);
        s.rate_limit.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let junk = |address: &'static str| {
        let request = app
            .client
            .post(app.url("/token"))
            .header("x-forwarded-for", address)
            .form(&[
                ("grant_type", "refresh_token"),
                ("client_id", PUBLIC_CLIENT_ID),
                ("refresh_token", "x"),
            ]);
        async move { Reply::read(request.send().await.unwrap()).await }
    };

    // Act: a stranger uses up the bucket at their address.
    for _ in 0..2 {
        junk("198.51.100.1")
            .await
            .assert_error(400, "invalid_grant");
    }
    let stranger = junk("198.51.100.1").await;
    let user = junk("203.0.113.7").await;

    // Assert
    assert_limited(&stranger);
    user.assert_error(400, "invalid_grant");
}
