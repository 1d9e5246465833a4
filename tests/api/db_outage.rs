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

#[tokio::test]
async fn a_database_outage_is_503_and_the_node_recovers_by_itself() {
    let Some(database) = TestDatabase::create("db_outage").await else {
        return;
    };
    let target: SocketAddr = "127.0.0.1:5432".parse().unwrap();
    let proxy = Proxy::start(target).await;
    let home = Arc::new(tempfile::tempdir().unwrap());
    write_fixture_stores(home.path());
    let mut settings = postgres_settings(home.path(), &database);
    if let tokengate::config::TokenStoreSettings::Postgres(postgres) = &mut settings.stores.tokens {
        postgres.url = postgres
            .url
            .replace("127.0.0.1:5432", &proxy.addr.to_string());
    }
    let app = spawn_in(home, settings, Arc::new(ManualClock::starting_now())).await;
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
