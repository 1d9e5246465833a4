//! The management listener (issue 11): `/metrics` in the Prometheus text format on a plain-HTTP
//! port of its own, and `/health/live`, `/health/ready`. The counters are scraped before and
//! after a known set of requests to the token port, and must move by exactly those.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokengate::abuse::rate_limit::Rate;
use tokengate::clock::Clock as _;
use tokio::io::AsyncWriteExt as _;

use crate::helpers::{
    https_client, post_basic_form, postgres_node, spawn_app, spawn_app_with, Reply, TestApp,
    TestDatabase, RESOURCE_SERVER_ID, SERVICE_CLIENT_ID, SHARED_SECRET, USER,
};

const POLL: Duration = Duration::from_millis(50);
const DEADLINE: Duration = Duration::from_secs(15);

/// The app's management address (it must have one).
fn management(app: &TestApp) -> SocketAddr {
    app.management_addr
        .expect("the management listener is enabled by default")
}

/// `GET http://<management>/<path>` read to the end.
async fn get_management(app: &TestApp, path: &str) -> Reply {
    let url = format!("http://{}{path}", management(app));
    let response = reqwest::Client::new().get(url).send().await.unwrap();
    Reply::read(response).await
}

/// One scrape of `/metrics`, checked for status and content type.
async fn scrape_text(app: &TestApp) -> String {
    let reply = get_management(app, "/metrics").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    reply.text
}

/// Every sample of a scrape, by series (`name{labels}`).
struct Scrape(HashMap<String, f64>);

impl Scrape {
    async fn of(app: &TestApp) -> Self {
        let text = scrape_text(app).await;
        let samples = text
            .lines()
            .filter(|line| !line.starts_with('#') && !line.is_empty())
            .map(|line| {
                let (series, value) = line.rsplit_once(' ').unwrap();
                (series.to_owned(), value.parse::<f64>().unwrap())
            })
            .collect();
        Self(samples)
    }

    /// A series' value; 0 when it does not exist yet.
    fn value(&self, series: &str) -> f64 {
        self.0.get(series).copied().unwrap_or(0.0)
    }

    /// The sum of every series of `name` (any labels).
    fn total(&self, name: &str) -> f64 {
        self.0
            .iter()
            .filter(|(series, _)| {
                series.as_str() == name || series.starts_with(&format!("{name}{{"))
            })
            .map(|(_, value)| value)
            .sum()
    }
}

/// `value(after) - value(before)` of one series.
fn moved(before: &Scrape, after: &Scrape, series: &str) -> f64 {
    after.value(series) - before.value(series)
}

fn requests(endpoint: &str, grant_type: &str, outcome: &str) -> String {
    format!(
        "tokengate_token_requests_total{{endpoint=\"{endpoint}\",grant_type=\"{grant_type}\",outcome=\"{outcome}\"}}"
    )
}

fn duration_count(endpoint: &str, grant_type: &str) -> String {
    format!(
        "tokengate_request_duration_seconds_count{{endpoint=\"{endpoint}\",grant_type=\"{grant_type}\"}}"
    )
}

async fn client_credentials(app: &TestApp, secret: &str) -> Reply {
    app.post_token_as(
        SERVICE_CLIENT_ID,
        secret,
        &[("grant_type", "client_credentials")],
    )
    .await
}

/// Polls a scrape until `done` holds, failing after [`DEADLINE`].
async fn scrape_until(app: &TestApp, what: &str, done: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let scrape = Scrape::of(app).await;
        if done(&scrape) {
            return scrape;
        }
        assert!(Instant::now() < deadline, "{what} within {DEADLINE:?}");
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::test]
async fn request_counters_and_latency_counts_move_by_exactly_the_requests_made() {
    // Arrange
    let app = spawn_app().await;
    let warm_up = client_credentials(&app, SHARED_SECRET).await;
    let token = warm_up.assert_tokens(600, "default").0;
    let before = Scrape::of(&app).await;

    // Act: 3 issued, 2 wrong secrets, 1 unknown grant type, 1 introspection, 1 revocation,
    // 1 unknown path.
    for _ in 0..3 {
        client_credentials(&app, SHARED_SECRET)
            .await
            .assert_tokens(600, "default");
    }
    for _ in 0..2 {
        client_credentials(&app, "not the secret")
            .await
            .assert_error(401, "invalid_client");
    }
    app.post_token(&[("grant_type", "urn:example:made-up")])
        .await
        .assert_error(400, "unsupported_grant_type");
    let introspected = app.introspect(&token).await;
    assert_eq!(introspected.status, 200, "{}", introspected.text);
    assert_eq!(introspected.body["active"], true);
    let revoked = app
        .post_form_as(
            "/revoke",
            SERVICE_CLIENT_ID,
            SHARED_SECRET,
            &[("token", &token)],
        )
        .await;
    assert_eq!(revoked.status, 200, "{}", revoked.text);
    let unknown = app.get("/no-such-endpoint").await;
    assert_eq!(unknown.status, 404);
    let after = Scrape::of(&app).await;

    // Assert
    let expected = [
        (requests("token", "client_credentials", "ok"), 3.0),
        (
            requests("token", "client_credentials", "invalid_client"),
            2.0,
        ),
        (requests("token", "other", "unsupported_grant_type"), 1.0),
        (requests("introspect", "none", "ok"), 1.0),
        (requests("revoke", "none", "ok"), 1.0),
        (requests("other", "none", "not_found"), 1.0),
        (duration_count("token", "client_credentials"), 5.0),
        (duration_count("token", "other"), 1.0),
        (duration_count("introspect", "none"), 1.0),
        (duration_count("revoke", "none"), 1.0),
        (duration_count("other", "none"), 1.0),
    ];
    for (series, by) in &expected {
        assert_eq!(moved(&before, &after, series), *by, "{series}");
    }
    let all = "tokengate_token_requests_total";
    assert_eq!(
        after.total(all) - before.total(all),
        9.0,
        "nothing else counted"
    );
    let durations = "tokengate_request_duration_seconds_count";
    assert_eq!(after.total(durations) - before.total(durations), 9.0);
    // The /health and /jwks of the token port, and scrapes, are not token requests.
    let sum = "tokengate_request_duration_seconds_sum{endpoint=\"token\",grant_type=\"client_credentials\"}";
    assert!(moved(&before, &after, sum) > 0.0);
}

#[tokio::test]
async fn the_scrape_names_every_family_with_help_and_type_and_the_build() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let text = scrape_text(&app).await;

    // Assert
    for (name, kind) in [
        ("tokengate_password_verifications_total", "counter"),
        ("tokengate_password_queue_depth", "gauge"),
        ("tokengate_password_verify_seconds", "histogram"),
        ("tokengate_account_lockouts_total", "counter"),
        ("tokengate_refresh_reuse_detected_total", "counter"),
        ("tokengate_rate_limited_total", "counter"),
        ("tokengate_tls_handshake_failures_total", "counter"),
        ("tokengate_connections_open", "gauge"),
        ("tokengate_connections_rejected_total", "counter"),
        ("tokengate_signing_keys", "gauge"),
        ("tokengate_config_reloads_total", "counter"),
        ("tokengate_tls_certificate_expiry_seconds", "gauge"),
        ("tokengate_store_batch_size", "histogram"),
        ("tokengate_build_info", "gauge"),
        ("process_resident_memory_bytes", "gauge"),
        ("process_cpu_seconds_total", "counter"),
        ("process_open_fds", "gauge"),
        ("process_max_fds", "gauge"),
        ("process_start_time_seconds", "gauge"),
    ] {
        assert!(text.contains(&format!("# HELP {name} ")), "{name}:\n{text}");
        assert!(
            text.contains(&format!("# TYPE {name} {kind}\n")),
            "{name}:\n{text}"
        );
    }
    let build = format!(
        "tokengate_build_info{{version=\"{}\",commit=\"",
        env!("CARGO_PKG_VERSION")
    );
    assert!(text.contains(&build), "{text}");
    assert!(
        text.contains("tokengate_signing_keys{state=\"active\"} 1\n"),
        "{text}"
    );
    let scrape = Scrape::of(&app).await;
    assert!(scrape.value("process_resident_memory_bytes") > 1_000_000.0);
    assert!(scrape.value("process_open_fds") > 0.0);
    let started = scrape.value("process_start_time_seconds");
    let now = tokengate::clock::SystemClock.now_secs() as f64;
    assert!(started > now - 3600.0 && started <= now + 1.0, "{started}");
}

#[tokio::test]
async fn open_connections_are_counted_until_their_clients_disconnect() {
    // Arrange
    let app = spawn_app().await;
    let baseline = Scrape::of(&app).await.value("tokengate_connections_open");

    // Act: three clients, one kept-alive connection each.
    let clients: Vec<reqwest::Client> = (0..3)
        .map(|_| https_client(&app.settings.tls.cert))
        .collect();
    for client in &clients {
        let health = client.get(app.url("/health")).send().await.unwrap();
        assert_eq!(health.status(), 200);
    }
    let held = Scrape::of(&app).await.value("tokengate_connections_open");
    drop(clients);

    // Assert
    assert_eq!(held, baseline + 3.0);
    scrape_until(&app, "the connections are counted closed", |scrape| {
        scrape.value("tokengate_connections_open") == baseline
    })
    .await;
}

#[tokio::test]
async fn a_failed_tls_handshake_is_counted() {
    // Arrange
    let app = spawn_app().await;
    let before = Scrape::of(&app).await;

    // Act: not TLS at all.
    let mut tcp = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();

    // Assert
    let series = "tokengate_tls_handshake_failures_total";
    scrape_until(&app, "the handshake failure is counted", |after| {
        moved(&before, after, series) == 1.0
    })
    .await;
    drop(tcp);
}

#[tokio::test]
async fn password_verifications_lockouts_and_refresh_reuse_are_counted() {
    // Arrange
    let app = spawn_app().await;
    let before = Scrape::of(&app).await;

    // Act: a login, its refresh, the spent token again (reuse), then wrong passwords until
    // the name is locked for this address (the shipped max_failed_login_attempts is 5).
    let (_, refresh) = app.login(None).await.assert_tokens(3600, "default");
    let refresh = refresh.unwrap();
    app.refresh(&refresh).await.assert_tokens(3600, "default");
    app.refresh(&refresh)
        .await
        .assert_error(400, "invalid_grant");
    for _ in 0..5 {
        app.post_token(&[
            ("grant_type", "password"),
            ("username", USER),
            ("password", "wrong"),
        ])
        .await
        .assert_error(400, "invalid_grant");
    }
    let after = Scrape::of(&app).await;

    // Assert
    let verifications =
        |outcome: &str| format!("tokengate_password_verifications_total{{outcome=\"{outcome}\"}}");
    assert_eq!(moved(&before, &after, &verifications("valid")), 1.0);
    assert_eq!(moved(&before, &after, &verifications("invalid")), 5.0);
    assert_eq!(moved(&before, &after, &verifications("shed")), 0.0);
    assert_eq!(
        moved(&before, &after, "tokengate_password_verify_seconds_count"),
        6.0
    );
    assert_eq!(after.value("tokengate_password_queue_depth"), 0.0);
    assert_eq!(
        moved(&before, &after, "tokengate_account_lockouts_total"),
        1.0
    );
    assert_eq!(
        moved(&before, &after, "tokengate_refresh_reuse_detected_total"),
        1.0
    );
    assert_eq!(
        moved(
            &before,
            &after,
            &requests("token", "password", "invalid_grant")
        ),
        5.0
    );
    assert_eq!(
        moved(
            &before,
            &after,
            &requests("token", "refresh_token", "invalid_grant")
        ),
        1.0
    );
}

fn store_ops(op: &str) -> String {
    format!("tokengate_store_operation_seconds_count{{op=\"{op}\"}}")
}

/// A login, its refresh and a client_credentials grant: the store calls each makes, counted
/// and timed per operation, and the group commits that wrote them.
async fn assert_store_work_is_counted(
    app: &TestApp,
    refresh_ops: &[(&str, f64)],
    writes_through_batches: &[&str],
) {
    // The janitor's pass at start is a write too: counted before the window, not inside it
    // (its commit is counted when it happens, its call when it returns).
    let before = scrape_until(app, "the janitor's first pass", |scrape| {
        scrape.value(&store_ops("purge")) >= 1.0
    })
    .await;

    let (_, refresh) = app.login(None).await.assert_tokens(3600, "default");
    app.refresh(&refresh.unwrap())
        .await
        .assert_tokens(3600, "default");
    client_credentials(app, SHARED_SECRET)
        .await
        .assert_tokens(600, "default");
    let after = Scrape::of(app).await;

    let ops = |op: &str| moved(&before, &after, &store_ops(op));
    assert_eq!(ops("create_tokens"), 2.0, "the login's and the service's");
    for (op, count) in refresh_ops {
        assert_eq!(ops(op), *count, "{op}");
    }
    assert!(ops("login_attempt") >= 1.0, "the login's lockout steps");
    let committed: f64 = writes_through_batches.iter().map(|op| ops(op)).sum();
    assert_eq!(
        moved(&before, &after, "tokengate_store_batch_size_sum"),
        committed,
        "every write went through exactly one counted commit"
    );
    assert!(moved(&before, &after, "tokengate_store_batch_size_count") >= 1.0);
    assert_eq!(after.total("tokengate_store_errors_total"), 0.0);
}

#[tokio::test]
async fn store_operations_and_commit_sizes_are_counted_on_sqlite() {
    let app = spawn_app().await;

    // The SQLite writer commits the lockout steps with the tokens.
    // The refresh: one call that reads, judges and rotates the token, in one writer job.
    assert_store_work_is_counted(
        &app,
        &[
            ("rotate_presented", 1.0),
            ("find_refresh_token", 0.0),
            ("rotate_refresh_token", 0.0),
        ],
        &["create_tokens", "rotate_presented", "login_attempt"],
    )
    .await;

    let scrape = Scrape::of(&app).await;
    assert!(
        !scrape
            .0
            .keys()
            .any(|series| series.starts_with("tokengate_db_connections{")),
        "SQLite has no pool to report"
    );
}

#[tokio::test]
async fn store_operations_commit_sizes_and_pool_connections_are_counted_on_postgres() {
    let Some(database) =
        TestDatabase::create("store_operations_commit_sizes_and_pool_connections").await
    else {
        return;
    };
    let app = postgres_node(
        &database,
        std::sync::Arc::new(tokengate::clock::ManualClock::starting_now()),
        |_| {},
    )
    .await;

    // Token writes leave in group commits; lockout steps are transactions of their own.
    // The refresh: one call (a read, then the rotation in a group commit, inside it).
    assert_store_work_is_counted(
        &app,
        &[("rotate_presented", 1.0)],
        &["create_tokens", "rotate_presented"],
    )
    .await;

    let scrape = Scrape::of(&app).await;
    let idle = scrape.value("tokengate_db_connections{state=\"idle\"}");
    let busy = scrape.value("tokengate_db_connections{state=\"busy\"}");
    assert!(idle + busy >= 1.0, "idle {idle}, busy {busy}");
}

#[tokio::test]
async fn rate_limited_requests_are_counted_by_bucket_and_outcome() {
    // Arrange: one request per client IP, then nothing for a long while.
    let app = spawn_app_with(|settings| {
        settings.rate_limit.per_ip = Some(Rate {
            per_second: 0.001,
            burst: 1.0,
        });
    })
    .await;
    let before = Scrape::of(&app).await;

    // Act
    client_credentials(&app, SHARED_SECRET)
        .await
        .assert_tokens(600, "default");
    let refused = client_credentials(&app, SHARED_SECRET).await;
    let after = Scrape::of(&app).await;

    // Assert
    assert_eq!(refused.status, 429, "{}", refused.text);
    assert_eq!(
        moved(
            &before,
            &after,
            "tokengate_rate_limited_total{bucket=\"ip\"}"
        ),
        1.0
    );
    assert_eq!(
        moved(
            &before,
            &after,
            "tokengate_rate_limited_total{bucket=\"client\"}"
        ),
        0.0
    );
    // Refused before the form was read: the grant type is not known.
    assert_eq!(
        moved(&before, &after, &requests("token", "other", "rate_limited")),
        1.0
    );
}

#[tokio::test]
async fn a_new_signing_key_counts_as_a_reload_and_shows_in_the_key_states() {
    // Arrange
    let app = spawn_app().await;
    let before = Scrape::of(&app).await;
    let ok = "tokengate_config_reloads_total{outcome=\"ok\",source=\"signing_keys\"}";

    // Act: `keys rotate` by hand; the folder is re-read within reload_interval (1 s here).
    tokengate::crypto::jwk::generate_key(
        &app.settings.oauth.signing_keys_dir,
        app.settings.oauth.jwt_algorithm,
        app.clock.now_ms(),
    )
    .unwrap();

    // Assert: two keys, one of them signing (a single node activates the new one at once).
    let after = scrape_until(&app, "the new key is loaded", |scrape| {
        moved(&before, scrape, ok) >= 1.0
    })
    .await;
    let states = ["active", "pending", "published", "retired"]
        .map(|state| after.value(&format!("tokengate_signing_keys{{state=\"{state}\"}}")));
    assert_eq!(states.iter().sum::<f64>(), 2.0, "{states:?}");
    assert_eq!(states[0], 1.0, "{states:?}");
    assert_eq!(
        moved(
            &before,
            &after,
            "tokengate_config_reloads_total{outcome=\"error\",source=\"signing_keys\"}"
        ),
        0.0
    );
}

#[tokio::test]
async fn per_client_metrics_label_requests_with_the_authenticated_client() {
    // Arrange
    let app = spawn_app_with(|settings| settings.management.per_client_metrics = true).await;

    // Act
    client_credentials(&app, SHARED_SECRET)
        .await
        .assert_tokens(600, "default");
    client_credentials(&app, "not the secret")
        .await
        .assert_error(401, "invalid_client");
    let scrape = Scrape::of(&app).await;

    // Assert: an id that failed authentication is not a label value (it could be anything).
    let labelled = |outcome: &str, client: &str| {
        format!(
            "tokengate_token_requests_total{{endpoint=\"token\",grant_type=\"client_credentials\",outcome=\"{outcome}\",client_id=\"{client}\"}}"
        )
    };
    assert_eq!(scrape.value(&labelled("ok", SERVICE_CLIENT_ID)), 1.0);
    assert_eq!(scrape.value(&labelled("invalid_client", "")), 1.0);
    assert_eq!(
        scrape.value(&duration_count("token", "client_credentials")),
        2.0,
        "the latency histogram has no client label"
    );
}

#[tokio::test]
async fn liveness_and_readiness_answer_200_on_the_management_port() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let live = get_management(&app, "/health/live").await;
    let ready = get_management(&app, "/health/ready").await;

    // Assert
    assert_eq!(live.status, 200, "{}", live.text);
    assert_eq!(live.body, serde_json::json!({ "status": "ok" }));
    assert_eq!(ready.status, 200, "{}", ready.text);
    assert_eq!(
        ready.body,
        serde_json::json!({ "status": "ok", "store": "ok" })
    );
    assert_eq!(
        management(&app).ip(),
        "127.0.0.1".parse::<std::net::IpAddr>().unwrap()
    );
    assert_ne!(management(&app).port(), app.addr.port());
}

#[tokio::test]
async fn a_management_client_that_never_reads_loses_its_connection_after_30_seconds() {
    use tokio::io::AsyncReadExt as _;

    // Arrange: more pipelined scrapes than the socket buffers and the server's read buffer
    // hold, so the server blocks writing answers nobody reads, with requests left unread.
    let app = spawn_app().await;
    let client = tokio::net::TcpStream::connect(management(&app))
        .await
        .unwrap();
    let (mut answers_in, mut requests_out) = client.into_split();
    let requests = "GET /metrics HTTP/1.1\r\nhost: m\r\n\r\n".repeat(50_000);
    let started = Instant::now();
    let writer = tokio::spawn(async move {
        // Blocks once every buffer is full; fails once the server has closed.
        let _ = requests_out.write_all(requests.as_bytes()).await;
        requests_out
    });

    // Act: read nothing for longer than the connection may live.
    tokio::time::sleep(Duration::from_secs(35)).await;
    let mut answers = vec![0; 1 << 16];
    let mut received = 0_usize;
    let drained = tokio::time::timeout(Duration::from_secs(20), async {
        while let Ok(read @ 1..) = answers_in.read(&mut answers).await {
            received += read;
        }
    })
    .await;
    writer.abort();

    // Assert: the server had given up on it: what it wrote before is all there is (a live
    // connection would go on answering the remaining scrapes, tens of kB each).
    assert!(
        drained.is_ok() && received < 64 << 20,
        "the connection was still open {:?} after it was made ({received} bytes read)",
        started.elapsed()
    );
    assert_eq!(get_management(&app, "/health/live").await.status, 200);
}

#[tokio::test]
async fn idle_connections_from_one_address_cannot_take_the_probes_slots() {
    // Arrange: another host (127.0.0.2) opens more idle connections than the port serves.
    let app = spawn_app().await;
    let mut idle = Vec::new();
    for _ in 0..80 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        idle.push(socket.connect(management(&app)).await.unwrap());
    }
    // Let the server take them all from its queue.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Act: the local probe.
    let live = get_management(&app, "/health/live").await;

    // Assert
    assert_eq!(live.status, 200);
    drop(idle);
}

#[tokio::test]
async fn metrics_and_probes_are_not_served_on_the_token_port() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let metrics = app.get("/metrics").await;
    let ready = app.get("/health/ready").await;

    // Assert
    metrics.assert_error(404, "not_found");
    ready.assert_error(404, "not_found");
}

#[tokio::test]
async fn the_management_listener_stops_with_the_server() {
    // Arrange
    let app = spawn_app().await;
    let addr = management(&app);
    assert_eq!(get_management(&app, "/health/live").await.status, 200);

    // Act
    app.stop().await;

    // Assert
    let refused = tokio::net::TcpStream::connect(addr).await;
    assert!(refused.is_err(), "{addr} still accepts connections");
}

#[tokio::test]
async fn a_disabled_management_listener_binds_no_port() {
    // Arrange: a port that was free a moment ago, configured but disabled.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();

    // Act
    let app = spawn_app_with(|settings| {
        settings.management.enabled = false;
        settings.management.port = port;
    })
    .await;

    // Assert
    assert_eq!(app.management_addr, None);
    std::net::TcpListener::bind(("127.0.0.1", port))
        .expect("the disabled listener's port is still free");
    let health = app.get("/health").await;
    assert_eq!(health.status, 200);
}

#[tokio::test]
async fn a_management_port_in_use_is_a_startup_error() {
    // Arrange
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let home = tempfile::tempdir().unwrap();
    crate::helpers::write_fixture_stores(home.path());
    let mut settings = crate::helpers::test_settings(home.path());
    settings.management.port = port;

    // Act
    let built = tokengate::Application::build(settings).await;

    // Assert
    let Err(error) = built else {
        panic!("the app started although its management port was taken")
    };
    let error = error.to_string();
    assert!(error.contains("management"), "{error}");
    assert!(error.contains(&port.to_string()), "{error}");
}

#[tokio::test]
async fn promtool_accepts_the_scrape_without_complaint() {
    // Arrange: every kind of family has samples (histograms, labelled counters, gauges).
    let app = spawn_app().await;
    let Ok(promtool) = which_promtool() else {
        println!("skipped: promtool is not installed (Debian package `prometheus`)");
        return;
    };
    client_credentials(&app, SHARED_SECRET)
        .await
        .assert_tokens(600, "default");
    app.login(None).await.assert_tokens(3600, "default");
    post_basic_form(
        &app.client,
        &app.url("/introspect"),
        RESOURCE_SERVER_ID,
        "not the secret",
        &[("token", "x")],
    )
    .await
    .assert_error(401, "invalid_client");
    let text = scrape_text(&app).await;

    // Act
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), text.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();

    // Assert
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool: {said}\n{text}");
    assert_eq!(said.trim(), "", "promtool complained:\n{text}");
}

/// `promtool` on the PATH.
fn which_promtool() -> Result<std::path::PathBuf, ()> {
    let path = std::env::var_os("PATH").ok_or(())?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("promtool"))
        .find(|candidate| candidate.is_file())
        .ok_or(())
}
