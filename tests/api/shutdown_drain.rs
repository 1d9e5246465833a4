//! Graceful shutdown of open connections and the drain before it: every connection accepted
//! before the stop gets its request answered with `Connection: close` (also one that sends it
//! only after the stop began, or was still in its TLS handshake); new connections are refused;
//! with `shutdown_drain_period`, `/health` answers 503 for that long while requests (and new
//! connections) are still served.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

use crate::helpers::*;

/// A client_credentials grant (SHA-256 secret: no argon2 wait) as raw HTTP/1.1.
fn token_request() -> String {
    use base64::Engine as _;
    let credentials = base64::engine::general_purpose::STANDARD
        .encode(format!("{SERVICE_CLIENT_ID}:{SHARED_SECRET}"));
    let body = "grant_type=client_credentials";
    format!(
        "POST /token HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic {credentials}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Waits until `addr` refuses new connections (the listener is closed).
async fn wait_until_refused(addr: SocketAddr, within: Duration) {
    let deadline = Instant::now() + within;
    while TcpStream::connect(addr).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "still accepting connections after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends the token request on `tls` and reads until the server closes: the whole answer.
async fn answer_to_token_request(tls: &mut tokio_rustls::client::TlsStream<TcpStream>) -> String {
    tls.write_all(token_request().as_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    String::from_utf8_lossy(&read_until_closed(tls).await).into_owned()
}

fn assert_token_answer_closing_the_connection(text: &str) {
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("\r\nconnection: close\r\n"),
        "{text}"
    );
    assert!(text.contains("\"access_token\""), "{text}");
}

#[tokio::test]
async fn a_connection_that_sends_its_first_request_after_the_stop_gets_it_answered() {
    let app = spawn_app().await;
    let addr = app.addr;
    let mut tls = raw_http1_connection(&app).await;

    let stopping = tokio::spawn(app.stop());
    wait_until_refused(addr, Duration::from_secs(10)).await;
    let answer = answer_to_token_request(&mut tls).await;

    assert_token_answer_closing_the_connection(&answer);
    tokio::time::timeout(Duration::from_secs(15), stopping)
        .await
        .expect("the server stops within its grace period")
        .unwrap();
}

#[tokio::test]
async fn a_connection_still_in_its_tls_handshake_at_the_stop_finishes_it_and_is_answered() {
    let app = spawn_app().await;
    let addr = app.addr;
    // Accepted, but no ClientHello yet: the server waits in the handshake.
    let tcp = TcpStream::connect(addr).await.unwrap();
    // Connections are accepted in order: once a later one is served, the first was accepted.
    let mut later = raw_http1_connection(&app).await;
    later
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let later_answer = String::from_utf8_lossy(&read_until_closed(&mut later).await).into_owned();
    assert!(later_answer.starts_with("HTTP/1.1 200"), "{later_answer}");
    let connector =
        tokio_rustls::TlsConnector::from(Arc::new(tls_client_config(&app, b"http/1.1")));

    let stopping = tokio::spawn(app.stop());
    wait_until_refused(addr, Duration::from_secs(10)).await;
    let mut tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("the handshake begun before the stop completes");
    let answer = answer_to_token_request(&mut tls).await;

    assert_token_answer_closing_the_connection(&answer);
    tokio::time::timeout(Duration::from_secs(15), stopping)
        .await
        .expect("the server stops within its grace period")
        .unwrap();
}

#[tokio::test]
async fn a_connection_that_sends_nothing_after_the_stop_is_closed_after_the_header_read_timeout() {
    let app = spawn_app_with(|s| {
        s.server.header_read_timeout = Duration::from_secs(1);
    })
    .await;
    let addr = app.addr;
    let mut silent = raw_http1_connection(&app).await;

    let started = Instant::now();
    let stopping = tokio::spawn(app.stop());
    let closed = closed_within(&mut silent, Duration::from_secs(8)).await;

    assert!(closed, "a silent connection held the shutdown open");
    tokio::time::timeout(Duration::from_secs(8), stopping)
        .await
        .expect("the server stops once the silent connection is closed")
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(8));
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn during_the_drain_health_is_503_while_tokens_are_still_issued_then_the_server_stops() {
    const DRAIN: Duration = Duration::from_secs(4);
    let app = spawn_app_with(|s| s.server.shutdown_drain_period = DRAIN).await;
    let addr = app.addr;
    let client = app.client.clone();
    let health_url = app.url("/health");
    let token_url = app.url("/token");
    let cert = app.settings.tls.cert.clone();
    assert_eq!(app.get("/health").await.status, 200);

    let started = Instant::now();
    let stopping = tokio::spawn(app.stop());
    let deadline = Instant::now() + DRAIN;
    let health = loop {
        let reply = Reply::read(client.get(&health_url).send().await.unwrap()).await;
        if reply.status != 200 || Instant::now() > deadline {
            break reply;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let form = [("grant_type", "client_credentials")];
    let token = post_basic_form(&client, &token_url, SERVICE_CLIENT_ID, SHARED_SECRET, &form).await;
    // A new connection is still accepted and served during the drain.
    let fresh_client = https_client(&cert);
    let fresh = post_basic_form(
        &fresh_client,
        &token_url,
        SERVICE_CLIENT_ID,
        SHARED_SECRET,
        &form,
    )
    .await;
    let answered_within = started.elapsed();
    let still_running = !stopping.is_finished();

    health.assert_error(503, "temporarily_unavailable");
    assert_eq!(token.status, 200, "{}", token.text);
    assert_eq!(fresh.status, 200, "{}", fresh.text);
    assert!(
        still_running && answered_within < DRAIN,
        "answered after {answered_within:?}, the drain is {DRAIN:?}"
    );
    tokio::time::timeout(Duration::from_secs(20), stopping)
        .await
        .expect("the server stops after the drain and its grace period")
        .unwrap();
    assert!(started.elapsed() >= DRAIN, "stopped before the drain ended");
    assert!(TcpStream::connect(addr).await.is_err());
}
