//! Overload: a flood of password guesses is shed with 503 instead of queueing, so refresh
//! grants (no hashing) keep being served; many slow connections do not lock clients out.
//! Request counts are bounded; latency bounds are loose sanity limits, not performance targets.

use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

use crate::helpers::*;

#[tokio::test]
async fn refresh_grants_keep_succeeding_under_a_flood_of_wrong_passwords() {
    let app = spawn_app_with(|s| {
        s.password_hashing.queue_capacity = 4;
        s.security.lockout = None; // every guess must reach the hashing pool
    })
    .await;
    let (_, refresh) = app.login(None).await.assert_tokens(3600, "default");
    let mut refresh = refresh.unwrap();

    let flood = futures::future::join_all((0..150).map(|i| {
        let name = format!("guess{i}");
        let app = &app;
        async move {
            app.post_token(&[
                ("grant_type", "password"),
                ("username", &name),
                ("password", "x"),
            ])
            .await
        }
    }));
    let refreshes = async {
        let mut slowest = Duration::ZERO;
        for _ in 0..30 {
            let started = Instant::now();
            let (_, next) = app.refresh(&refresh).await.assert_tokens(3600, "default");
            slowest = slowest.max(started.elapsed());
            refresh = next.unwrap();
        }
        slowest
    };
    let (flood, slowest_refresh) = tokio::join!(flood, refreshes);

    let shed = flood.iter().filter(|reply| reply.status == 503).count();
    let refused = flood.iter().filter(|reply| reply.status == 400).count();
    assert_eq!(shed + refused, flood.len(), "only 400 or 503 answers");
    assert!(
        shed > 0,
        "a queue of 4 must shed part of 150 concurrent guesses"
    );
    for reply in flood.iter().filter(|reply| reply.status == 503) {
        reply.assert_error(503, "temporarily_unavailable");
        assert_eq!(reply.header("retry-after"), Some("1"));
    }
    assert!(
        slowest_refresh < Duration::from_secs(5),
        "a refresh waited {slowest_refresh:?} behind the flood"
    );
}

#[tokio::test]
async fn many_slow_connections_do_not_lock_out_a_normal_client() {
    let app = spawn_app_with(|s| {
        s.server.tls_handshake_timeout = Duration::from_secs(60);
        s.server.header_read_timeout = Duration::from_secs(60);
    })
    .await;
    // 300 connections that never finish the TLS handshake, 30 that stall mid-request.
    let mut silent = Vec::new();
    for _ in 0..300 {
        silent.push(TcpStream::connect(app.addr).await.unwrap());
    }
    let mut stalled = Vec::new();
    for _ in 0..30 {
        let mut tls = raw_http1_connection(&app).await;
        tls.write_all(b"POST /token HTTP/1.1\r\nHost: localhost\r\nContent-Le")
            .await
            .unwrap();
        tls.flush().await.unwrap();
        stalled.push(tls);
    }

    let started = Instant::now();
    let reply = app.login(None).await;

    reply.assert_tokens(3600, "default");
    assert!(started.elapsed() < Duration::from_secs(5));
    drop((silent, stalled));
}
