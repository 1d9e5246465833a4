//! Slow and idle connections are timed out, so they cannot hold the server's resources.

use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

use crate::helpers::{
    closed_within, raw_http1_connection, raw_tls_connection, read_until_closed, spawn_app_with,
    Reply,
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

#[tokio::test]
async fn a_connection_silent_after_the_tls_handshake_is_closed_on_http1_and_http2() {
    let app = spawn_app_with(|s| s.server.header_read_timeout = Duration::from_secs(1)).await;
    for alpn in [&b"http/1.1"[..], b"h2"] {
        let mut tls = raw_tls_connection(&app, alpn).await;
        let started = Instant::now();

        let closed = closed_within(&mut tls, BOUND).await;

        assert!(closed, "a silent {alpn:?} connection was kept");
        assert!(started.elapsed() >= Duration::from_millis(900));
    }
}

#[tokio::test]
async fn a_half_sent_http2_preface_does_not_hold_the_connection() {
    let app = spawn_app_with(|s| s.server.header_read_timeout = Duration::from_secs(1)).await;
    let mut tls = raw_tls_connection(&app, b"h2").await;
    tls.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    tls.flush().await.unwrap();

    assert!(closed_within(&mut tls, BOUND).await);
}

#[tokio::test]
async fn an_http2_connection_idle_after_its_preface_is_closed() {
    let app = spawn_app_with(|s| s.server.header_read_timeout = Duration::from_secs(1)).await;
    let mut tls = raw_tls_connection(&app, b"h2").await;
    // The client preface and an empty SETTINGS frame: a valid HTTP/2 connection, no request.
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    tls.flush().await.unwrap();

    assert!(closed_within(&mut tls, BOUND).await);
}

#[tokio::test]
async fn an_idle_connection_is_closed_after_the_keep_alive_timeout() {
    let app = spawn_app_with(|s| {
        s.server.header_read_timeout = Duration::from_secs(30);
        s.server.keep_alive_timeout = Duration::from_secs(1);
    })
    .await;
    let mut tls = raw_http1_connection(&app).await;
    tls.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    tls.flush().await.unwrap();
    let started = Instant::now();

    let received = read_until_closed(&mut tls).await;

    assert!(String::from_utf8_lossy(&received).starts_with("HTTP/1.1 200"));
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "closed by the keep-alive timeout, not the 30 s header timeout"
    );
}
