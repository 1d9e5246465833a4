//! `[server] max_connections_per_ip`: one host cannot take every connection slot. Over the
//! limit a new connection is closed at once; other hosts and trusted proxies still connect,
//! and a closed connection gives its slot back. Real TCP and TLS, from several loopback
//! addresses (all of 127.0.0.0/8 reaches the listener on Linux).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpSocket;
use tokio_rustls::client::TlsStream;

use crate::helpers::*;

type Tls = TlsStream<tokio::net::TcpStream>;

/// A TLS connection to `to` from `from`, or the error that ended it (a closed connection).
async fn connect_from(app: &TestApp, from: &str, to: SocketAddr) -> std::io::Result<Tls> {
    let from: IpAddr = from.parse().unwrap();
    let socket = if from.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.bind(SocketAddr::new(from, 0))?;
    let tcp = socket.connect(to).await?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls_client_config(app, b"http/1.1")));
    let handshake = connector.connect(ServerName::try_from("localhost").unwrap(), tcp);
    tokio::time::timeout(Duration::from_secs(10), handshake)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

/// `GET /health` on an open connection, keeping it open; the status line.
async fn health_on(tls: &mut Tls) -> String {
    tls.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&received).contains("\"status\"") {
        let n = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&received));
        received.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&received)
        .lines()
        .next()
        .unwrap()
        .to_owned()
}

/// Whether the connection from `from` is refused: the server closes it before TLS completes
/// or before it answers a request.
async fn refused_from(app: &TestApp, from: &str, to: SocketAddr) -> bool {
    match connect_from(app, from, to).await {
        Err(_) => true,
        Ok(mut tls) => {
            let _ = tls
                .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .await;
            read_until_closed(&mut tls).await.is_empty()
        }
    }
}

async fn app_with_limit(limit: usize, trusted: &[&str]) -> TestApp {
    let trusted: Vec<ipnet::IpNet> = trusted.iter().map(|net| net.parse().unwrap()).collect();
    spawn_app_with(|s| {
        s.server.max_connections_per_ip = limit;
        s.rate_limit.trusted_proxies = trusted;
    })
    .await
}

#[tokio::test]
async fn a_host_over_its_connection_limit_is_closed_at_once_while_others_still_connect() {
    let app = app_with_limit(3, &[]).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut tls = connect_from(&app, "127.0.0.1", app.addr).await.unwrap();
        assert_eq!(health_on(&mut tls).await, "HTTP/1.1 200 OK");
        held.push(tls);
    }

    let fourth_refused = refused_from(&app, "127.0.0.1", app.addr).await;
    let mut other = connect_from(&app, "127.0.0.2", app.addr).await.unwrap();

    assert!(
        fourth_refused,
        "a fourth connection from 127.0.0.1 was served"
    );
    assert_eq!(health_on(&mut other).await, "HTTP/1.1 200 OK");
    for tls in &mut held {
        assert_eq!(
            health_on(tls).await,
            "HTTP/1.1 200 OK",
            "held connections still work"
        );
    }
}

#[tokio::test]
async fn closing_a_connection_gives_its_slot_back() {
    let app = app_with_limit(3, &[]).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect_from(&app, "127.0.0.1", app.addr).await.unwrap());
    }
    assert!(refused_from(&app, "127.0.0.1", app.addr).await);

    let mut closed = held.pop().unwrap();
    closed.shutdown().await.unwrap();
    drop(closed);
    // The server notices the close when the connection's task ends: poll for the free slot.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut again = loop {
        if let Ok(mut tls) = connect_from(&app, "127.0.0.1", app.addr).await {
            if !closed_within(&mut tls, Duration::from_millis(200)).await {
                break tls;
            }
        }
        assert!(Instant::now() < deadline, "the slot never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    assert_eq!(health_on(&mut again).await, "HTTP/1.1 200 OK");
}

#[tokio::test]
async fn a_trusted_proxy_is_not_limited() {
    let app = app_with_limit(3, &["127.0.0.3/32"]).await;
    let mut held = Vec::new();

    for _ in 0..6 {
        let mut tls = connect_from(&app, "127.0.0.3", app.addr).await.unwrap();
        assert_eq!(health_on(&mut tls).await, "HTTP/1.1 200 OK");
        held.push(tls);
    }
    // The limit still holds for everyone else.
    for _ in 0..3 {
        held.push(connect_from(&app, "127.0.0.1", app.addr).await.unwrap());
    }
    assert!(refused_from(&app, "127.0.0.1", app.addr).await);
}

#[tokio::test]
async fn on_a_dual_stack_listener_a_mapped_ipv4_peer_counts_as_its_ipv4_address() {
    // `host = "::"` sees 127.0.0.1 as ::ffff:127.0.0.1; ::1 is another host.
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "skipped: no IPv6 loopback here");
        return;
    }
    let app = spawn_app_with(|s| {
        s.server.host = "::".parse().unwrap();
        s.server.max_connections_per_ip = 2;
        s.rate_limit.trusted_proxies = vec!["127.0.0.3/32".parse().unwrap()];
    })
    .await;
    let v4 = SocketAddr::new("127.0.0.1".parse().unwrap(), app.addr.port());
    let v6 = SocketAddr::new("::1".parse().unwrap(), app.addr.port());
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(connect_from(&app, "127.0.0.1", v4).await.unwrap());
    }

    let third_refused = refused_from(&app, "127.0.0.1", v4).await;
    let mut from_v6 = connect_from(&app, "::1", v6).await.unwrap();
    let mut proxies = Vec::new();
    for _ in 0..3 {
        proxies.push(connect_from(&app, "127.0.0.3", v4).await.unwrap());
    }

    assert!(
        third_refused,
        "a third connection from 127.0.0.1 was served"
    );
    assert_eq!(health_on(&mut from_v6).await, "HTTP/1.1 200 OK");
    for tls in &mut proxies {
        assert_eq!(health_on(tls).await, "HTTP/1.1 200 OK", "trusted proxy");
    }
}
