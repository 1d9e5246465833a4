//! The served binary stopped hard or on purpose: SIGTERM exits 0 and a restart refreshes its
//! tokens; after SIGKILL, right after a 200 or at a random moment under load, every token answered
//! with 200 still works.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::process::{
    serve, Home, Server, DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, GRACE_PERIOD,
};
use crate::helpers::Reply;

#[tokio::test]
async fn sigterm_stops_the_server_with_status_0_and_its_tokens_refresh_after_a_restart() {
    // Arrange
    let home = Home::new();
    let mut server = serve(&home).await;
    let (_, refresh) = server.demo_login().await.assert_tokens(3600, "PRODUCTION");
    let refresh = refresh.unwrap();

    // Act
    server.send_signal("TERM");
    let status = server.wait_for_exit(GRACE_PERIOD).await;

    // Assert
    let status = status.unwrap_or_else(|| {
        panic!(
            "still running {GRACE_PERIOD:?} after SIGTERM:\n{}",
            server.log()
        )
    });
    assert_eq!(status.code(), Some(0), "{status}\n{}", server.log());
    assert!(!server.log().contains("panicked"), "{}", server.log());

    // Act: a new process on the same home.
    let restarted = serve(&home).await;
    let reply = restarted.demo_refresh(&refresh).await;

    // Assert
    let (_, rotated) = reply.assert_tokens(3600, "PRODUCTION");
    assert_ne!(rotated.as_deref(), Some(refresh.as_str()));
}

#[tokio::test]
async fn a_token_answered_with_200_survives_sigkill_right_after() {
    // Arrange
    let home = Home::new();
    let mut server = serve(&home).await;
    let (_, refresh) = server.demo_login().await.assert_tokens(3600, "PRODUCTION");
    let refresh = refresh.unwrap();

    // Act: killed at once, no chance to flush anything.
    server.send_signal("KILL");
    let status = server.wait_for_exit(GRACE_PERIOD).await.unwrap();
    assert_eq!(status.code(), None, "killed by a signal: {status}");
    let restarted = serve(&home).await;
    let reply = restarted.demo_refresh(&refresh).await;

    // Assert
    reply.assert_tokens(3600, "PRODUCTION");
}

/// One refresh on `server`'s connection pool; `None` when the server is gone.
async fn try_refresh(server: &Server, refresh_token: &str) -> Option<Reply> {
    let response = server
        .client
        .post(server.url("/token"))
        .basic_auth(DEMO_CLIENT_ID, Some(DEMO_CLIENT_SECRET))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ])
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.ok()?;
    Some(Reply {
        status,
        headers,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    })
}

#[tokio::test]
async fn every_token_answered_200_survives_sigkill_under_load() {
    // Arrange: a refresh whose response the kill swallowed leaves the client holding the token
    // it sent, already spent; the reuse grace period is what lets it redeem that once more.
    let home = Home::new();
    home.edit(
        "config/identity.toml",
        "refresh_token_reuse_grace_period = 0",
        "refresh_token_reuse_grace_period = 120",
    );
    let added = home
        .run(
            &[
                "client",
                "add",
                "checker",
                "--introspect",
                "--grant-types",
                "",
            ],
            None,
        )
        .await;
    added.assert_success();
    let checker_secret = added.stdout.trim().to_owned();
    let mut server = serve(&home).await;
    let mut chains = Vec::new();
    for _ in 0..6 {
        let (_, refresh) = server.demo_login().await.assert_tokens(3600, "PRODUCTION");
        chains.push(refresh.unwrap());
    }

    for _ in 0..3 {
        // Act: every chain refreshes as fast as it can; the server is killed at a random
        // moment mid-flight.
        let kill_after =
            Duration::from_millis(rand::Rng::gen_range(&mut rand::thread_rng(), 100..900));
        let stop = std::sync::atomic::AtomicBool::new(false);
        let load = futures::future::join_all(chains.iter().map(|first| {
            let (server, stop) = (&server, &stop);
            async move {
                let mut last_refresh = first.clone();
                let mut last_access = None;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    match try_refresh(server, &last_refresh).await {
                        Some(reply) if reply.status == 200 => {
                            last_refresh = reply.str("refresh_token").to_owned();
                            last_access = Some(reply.str("access_token").to_owned());
                        }
                        _ => break,
                    }
                }
                (last_refresh, last_access)
            }
        }));
        let killer = async {
            tokio::time::sleep(kill_after).await;
            server.send_signal("KILL");
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        };
        let (results, ()) = tokio::join!(load, killer);
        let status = server.wait_for_exit(GRACE_PERIOD).await.unwrap();
        assert_eq!(status.code(), None, "killed by a signal: {status}");
        assert!(
            results.iter().any(|(_, access)| access.is_some()),
            "the load ran before the kill at {kill_after:?}"
        );

        // Assert: the store opens cleanly, every access token answered 200 is active and every
        // chain's last refresh token redeems.
        server = serve(&home).await;
        assert_eq!(server.get("/health").await.status, 200);
        chains.clear();
        for (last_refresh, last_access) in results {
            if let Some(access) = last_access {
                let response = server
                    .client
                    .post(server.url("/introspect"))
                    .basic_auth("checker", Some(&checker_secret))
                    .form(&[("token", access.as_str())])
                    .send()
                    .await
                    .unwrap();
                let introspected = Reply::read(response).await;
                assert_eq!(introspected.body["active"], true, "{}", introspected.text);
            }
            let reply = server.demo_refresh(&last_refresh).await;
            let (_, next) = reply.assert_tokens(3600, "PRODUCTION");
            chains.push(next.unwrap());
        }
    }
}

#[tokio::test]
async fn sigterm_with_a_drain_period_turns_health_503_while_tokens_are_still_issued_and_a_second_sigterm_ends_it(
) {
    // Arrange
    let home = Home::new();
    home.edit(
        "config/identity.toml",
        "shutdown_drain_period = 0",
        "shutdown_drain_period = 600",
    );
    let mut server = serve(&home).await;
    assert_eq!(server.get("/health").await.status, 200);

    // Act
    server.send_signal("TERM");

    // Assert: the load balancer sees the node go unready, while requests still get answers.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    let health = loop {
        let health = server.get("/health").await;
        if health.status == 503 || std::time::Instant::now() > deadline {
            break health;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(health.status, 503, "{}\n{}", health.text, server.log());
    let during_drain = server.demo_login().await;
    during_drain.assert_tokens(3600, "PRODUCTION");
    // An operator who cannot wait out the drain signals again.
    server.send_signal("TERM");
    let status = server
        .wait_for_exit(GRACE_PERIOD)
        .await
        .unwrap_or_else(|| panic!("still draining after a second SIGTERM:\n{}", server.log()));
    assert_eq!(status.code(), Some(0), "{status}\n{}", server.log());
}
