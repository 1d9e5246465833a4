//! PostgreSQL going away: token requests fail fast with 503 + Retry-After, /health says not
//! ready, nothing issued is lost, and the node recovers by itself. The outage is made by a TCP
//! proxy in this file that is cut and restored.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokengate::clock::ManualClock;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::helpers::*;

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Up,
    /// Every open connection is dropped and new ones are refused: the database is down.
    Cut,
    /// Connections stay open but nothing goes through, new ones included: a network partition,
    /// where the database never answers and nothing says so.
    Stalled,
}

/// A TCP proxy to `target` whose link the test cuts, stalls and restores.
struct Proxy {
    addr: SocketAddr,
    link: watch::Sender<Link>,
    pipes: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

/// Holds a stalled connection open and silent until the link is no longer stalled.
async fn hold_while_stalled(link: &mut watch::Receiver<Link>) {
    let _ = link
        .wait_for(|link| *link != Link::Stalled)
        .await
        .map(|_| ());
}

impl Proxy {
    async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (link, watching) = watch::channel(Link::Up);
        let pipes: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept_pipes = pipes.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut link = watching.clone();
                let now = *link.borrow();
                let pipe = match now {
                    Link::Cut => continue, // dropped at once: the database is "unreachable"
                    Link::Stalled => tokio::spawn(async move {
                        hold_while_stalled(&mut link).await;
                        drop(client);
                    }),
                    Link::Up => tokio::spawn(async move {
                        let Ok(mut server) = TcpStream::connect(target).await else {
                            return;
                        };
                        let stalled = tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => false,
                            seen = link.wait_for(|link| *link == Link::Stalled) => seen.is_ok(),
                        };
                        if stalled {
                            hold_while_stalled(&mut link).await;
                        }
                    }),
                };
                accept_pipes.lock().unwrap().push(pipe);
            }
        });
        Self { addr, link, pipes }
    }

    fn cut(&self) {
        self.link.send_replace(Link::Cut);
        for pipe in self.pipes.lock().unwrap().drain(..) {
            pipe.abort();
        }
    }

    fn stall(&self) {
        self.link.send_replace(Link::Stalled);
    }

    /// Back up; connections held by a stall are closed, as a partition's end would show.
    fn restore(&self) {
        self.link.send_replace(Link::Up);
    }
}

/// A node whose database connections go through `proxy`.
async fn node_behind(
    proxy: &Proxy,
    database: &TestDatabase,
    adjust: impl FnOnce(&mut tokengate::config::Settings),
) -> TestApp {
    postgres_node(database, Arc::new(ManualClock::starting_now()), |s| {
        let url = postgres_url(s);
        *url = url.replace("127.0.0.1:5432", &proxy.addr.to_string());
        adjust(s);
    })
    .await
}

/// A node behind `proxy` with shared rate limits far above what the tests send.
async fn rate_limited_node_behind(proxy: &Proxy, database: &TestDatabase) -> TestApp {
    let bucket = Some(tokengate::abuse::rate_limit::Rate {
        per_second: 100.0,
        burst: 100.0,
    });
    node_behind(proxy, database, |s| {
        s.rate_limit.per_ip = bucket;
        s.rate_limit.per_client = bucket;
    })
    .await
}

/// Retries a refresh until it succeeds (the database is back), for up to 30 s.
async fn refresh_once_back(app: &TestApp, refresh: &str) -> Reply {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reply = app.refresh(refresh).await;
        if reply.status == 200 || Instant::now() > deadline {
            return reply;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
    let unavailable = app
        .metric("tokengate_store_errors_total{kind=\"unavailable\"}")
        .await;
    assert!(unavailable >= 2.0, "{unavailable} store errors counted");

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
    let app = rate_limited_node_behind(&proxy, &database).await;
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
    refresh_once_back(&app, &refresh)
        .await
        .assert_tokens(3600, "default");
}

#[tokio::test]
async fn a_database_that_stops_answering_is_503_within_seconds_and_the_node_recovers() {
    let Some(database) = TestDatabase::create("db_partition").await else {
        return;
    };
    let proxy = Proxy::start("127.0.0.1:5432".parse().unwrap()).await;
    // Shared rate limits too: their database round trip must not hang either.
    let app = rate_limited_node_behind(&proxy, &database).await;
    let (access, refresh) = app.login(None).await.assert_tokens(3600, "default");
    let refresh = refresh.unwrap();

    // A partition: open connections go silent, new ones are never answered.
    proxy.stall();
    let started = Instant::now();
    let renewal = app.refresh(&refresh).await;
    let renewal_took = started.elapsed();
    let started = Instant::now();
    let malformed = app
        .post_token(&[("grant_type", "refresh_token"), ("refresh_token", "x")])
        .await;
    let malformed_took = started.elapsed();
    let health = app.get("/health").await;

    renewal.assert_error(503, "temporarily_unavailable");
    assert!(renewal.header("retry-after").is_some());
    // One second for the shared rate limit to give up, three for the token store.
    assert!(renewal_took < Duration::from_secs(8), "{renewal_took:?}");
    // Needs no database; the shared limits are paused after the first timeout.
    malformed.assert_error(400, "invalid_grant");
    assert!(
        malformed_took < Duration::from_secs(2),
        "{malformed_took:?}"
    );
    assert_eq!(health.status, 503, "{}", health.text);

    proxy.restore();
    refresh_once_back(&app, &refresh)
        .await
        .assert_tokens(3600, "default");
    assert_eq!(app.introspect(&access).await.body["active"], true);
}

#[tokio::test]
async fn a_database_that_does_not_answer_in_time_is_503_and_leaves_nothing_half_done() {
    let Some(database) = TestDatabase::create("db_slow").await else {
        return;
    };
    let app = postgres_node(&database, Arc::new(ManualClock::starting_now()), |_| {}).await;
    let (_, refresh) = app.login(None).await.assert_tokens(3600, "default");
    let refresh = refresh.unwrap();

    // Another session holds every refresh token row: the rotation's UPDATE waits on it, as a
    // query does on a stuck or overloaded database.
    let pool = sqlx::PgPool::connect(&database.url).await.unwrap();
    let mut blocker = pool.begin().await.unwrap();
    sqlx::query("SELECT id FROM refresh_tokens FOR UPDATE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let started = Instant::now();
    let renewal = app.refresh(&refresh).await;
    let took = started.elapsed();
    blocker.rollback().await.unwrap();

    // The database gave up waiting for the lock after 3 s (lock_timeout) and rolled the
    // rotation back: answered then, not when the lock went.
    renewal.assert_error(503, "temporarily_unavailable");
    assert!(renewal.header("retry-after").is_some());
    assert!(took < Duration::from_secs(6), "{took:?}");
    // The abandoned rotation did not commit: the refresh token was not spent.
    app.refresh(&refresh).await.assert_tokens(3600, "default");
    pool.close().await;
}

#[tokio::test]
async fn a_slow_commit_is_waited_for_so_the_answer_matches_what_was_saved() {
    let Some(database) = TestDatabase::create("db_slow_commit").await else {
        return;
    };
    let app = postgres_node(&database, Arc::new(ManualClock::starting_now()), |_| {}).await;
    let (_, refresh) = app.login(None).await.assert_tokens(3600, "default");
    let refresh = refresh.unwrap();

    // A deferred trigger makes the COMMIT of a rotation itself take 4 s. PostgreSQL does not
    // apply statement_timeout to a COMMIT, so a node that gave up waiting here could not know
    // whether the rotation was saved, and the client's retry would look like token reuse.
    let pool = sqlx::PgPool::connect(&database.url).await.unwrap();
    for statement in [
        "CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN PERFORM pg_sleep(4); RETURN NULL; END $$",
        "CREATE CONSTRAINT TRIGGER slow_commit AFTER UPDATE ON refresh_tokens \
         DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit()",
    ] {
        sqlx::query(statement).execute(&pool).await.unwrap();
    }
    let started = Instant::now();
    let renewal = app.refresh(&refresh).await;
    let took = started.elapsed();
    sqlx::query("DROP TRIGGER slow_commit ON refresh_tokens")
        .execute(&pool)
        .await
        .unwrap();

    // The node waited for the commit, so its answer is what the database saved: the new
    // refresh token works, and the old one is spent.
    assert!(took >= Duration::from_secs(4), "{took:?}");
    let (_, next) = renewal.assert_tokens(3600, "default");
    app.refresh(&next.unwrap())
        .await
        .assert_tokens(3600, "default");
    pool.close().await;
}
