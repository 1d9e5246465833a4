//! PostgreSQL going away: token requests fail fast with 503 + Retry-After, /health says not
//! ready, nothing issued is lost, and the node recovers by itself. The outage is made by a TCP
//! proxy in this file that is cut and restored.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokengate::clock::ManualClock;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::helpers::*;

/// Forwards connections to `target` while up; when cut, drops every open connection and
/// refuses new ones.
struct Proxy {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    pipes: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let pipes: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (accept_up, accept_pipes) = (up.clone(), pipes.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !accept_up.load(Ordering::SeqCst) {
                    continue; // dropped at once: the database is "unreachable"
                }
                let pipe = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                accept_pipes.lock().unwrap().push(pipe);
            }
        });
        Self { addr, up, pipes }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for pipe in self.pipes.lock().unwrap().drain(..) {
            pipe.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// A node whose database connections go through `proxy`.
async fn node_behind(
    proxy: &Proxy,
    database: &TestDatabase,
    adjust: impl FnOnce(&mut tokengate::config::Settings),
) -> TestApp {
    let home = Arc::new(tempfile::tempdir().unwrap());
    write_fixture_stores(home.path());
    let mut settings = postgres_settings(home.path(), database);
    if let tokengate::config::TokenStoreSettings::Postgres(postgres) = &mut settings.stores.tokens {
        postgres.url = postgres
            .url
            .replace("127.0.0.1:5432", &proxy.addr.to_string());
    }
    adjust(&mut settings);
    spawn_in(home, settings, Arc::new(ManualClock::starting_now())).await
}

#[tokio::test]
async fn a_database_outage_is_503_and_the_node_recovers_by_itself() {
    let Some(database) = TestDatabase::create("db_outage").await else {
        return;
    };
    let proxy = Proxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let app = node_behind(&proxy, &database, |_| {}).await;
    let (access, refresh) = app.login(None).await.assert_tokens(3600, "default");
    let refresh = refresh.unwrap();

    proxy.cut();
    let started = Instant::now();
    let login = app.login(None).await;
    let renewal = app.refresh(&refresh).await;
    let health = app.get("/health").await;

    for reply in [&login, &renewal] {
        reply.assert_error(503, "temporarily_unavailable");
        assert!(reply.header("retry-after").is_some());
    }
    assert_eq!(health.status, 503, "{}", health.text);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );

    proxy.restore();
    let mut recovered = false;
    for _ in 0..150 {
        if app.get("/health").await.status == 200 {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "/health never came back");
    assert_eq!(app.introspect(&access).await.body["active"], true);
    app.refresh(&refresh).await.assert_tokens(3600, "default");
}

#[tokio::test]
async fn shared_rate_limits_do_not_turn_a_database_outage_into_another_error() {
    let Some(database) = TestDatabase::create("db_outage_rate_limit").await else {
        return;
    };
    let proxy = Proxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let bucket = Some(tokengate::abuse::rate_limit::Rate {
        per_second: 100.0,
        burst: 100.0,
    });
    let app = node_behind(&proxy, &database, |s| {
        s.rate_limit.per_ip = bucket;
        s.rate_limit.per_client = bucket;
    })
    .await;
    let (_, refresh) = app.login(None).await.assert_tokens(3600, "default");
    let refresh = refresh.unwrap();

    // The shared buckets cannot be reached: the node's own limit applies, and the request
    // goes on to the store, which says 503.
    proxy.cut();
    let renewal = app.refresh(&refresh).await;
    let malformed = app
        .post_token(&[("grant_type", "refresh_token"), ("refresh_token", "x")])
        .await;

    renewal.assert_error(503, "temporarily_unavailable");
    malformed.assert_error(400, "invalid_grant");

    proxy.restore();
    let mut renewed = None;
    for _ in 0..150 {
        let reply = app.refresh(&refresh).await;
        if reply.status == 200 {
            renewed = Some(reply);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    renewed
        .expect("the refresh never succeeded after the database returned")
        .assert_tokens(3600, "default");
}
