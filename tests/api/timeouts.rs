//! Slow and idle connections are timed out, so they cannot hold the server's resources.

use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

use crate::helpers::{
    closed_within, raw_http1_connection, read_until_closed, spawn_app_with, Reply,
};

const BOUND: Duration = Duration::from_secs(15);

#[tokio::test]
async fn a_connection_that_never_finishes_the_tls_handshake_is_closed() {
    let app = spawn_app_with(|s| s.server.tls_handshake_timeout = Duration::from_secs(1)).await;
    let mut tcp = TcpStream::connect(app.addr).await.unwrap();
    let started = Instant::now();

    let closed = closed_within(&mut tcp, BOUND).await;

    assert!(closed, "the server kept a silent connection open");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed before the timeout"
    );
}

#[tokio::test]
async fn a_request_whose_headers_never_finish_is_closed() {
    let app = spawn_app_with(|s| s.server.header_read_timeout = Duration::from_secs(1)).await;
    let mut tls = raw_http1_connection(&app).await;
    tls.write_all(b"POST /token HTTP/1.1\r\nHost: localhost\r\nContent-Type: applic")
        .await
        .unwrap();
    tls.flush().await.unwrap();
    let started = Instant::now();

    let closed = closed_within(&mut tls, BOUND).await;

    assert!(closed, "a slowloris request kept its connection");
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    let app = spawn_app_with(|s| s.server.header_read_timeout = Duration::from_secs(1)).await;
    let mut tls = raw_http1_connection(&app).await;
    tls.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    tls.flush().await.unwrap();

    // The response arrives, then the connection idles until the server closes it.
    let received = read_until_closed(&mut tls).await;

    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}

#[tokio::test]
async fn a_body_that_stops_arriving_gets_408_and_json() {
    let app = spawn_app_with(|s| s.server.request_timeout = Duration::from_secs(1)).await;
    let mut tls = raw_http1_connection(&app).await;
    tls.write_all(
        b"POST /token HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
          Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\n\
          grant_type=pass",
    )
    .await
    .unwrap();
    tls.flush().await.unwrap();

    let received = read_until_closed(&mut tls).await;

    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("\"error\":\"invalid_request\""), "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("cache-control: no-store"),
        "{text}"
    );
    // And the server is fine afterwards.
    let health = Reply::read(app.client.get(app.url("/health")).send().await.unwrap()).await;
    assert_eq!(health.status, 200);
}
