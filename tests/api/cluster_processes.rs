//! Three real `tokengate serve` processes on one PostgreSQL database behave as one server.

use crate::helpers::process::{serve, Home, DEMO_CLIENT_ID, DEMO_CLIENT_SECRET};
use crate::helpers::TestDatabase;

#[tokio::test]
async fn three_server_processes_on_one_postgres_behave_as_one_server() {
    // Arrange: three real `serve` processes, each with its own home and port offset, one
    // database. They share the same user and client files, as a cluster must.
    let Some(database) = TestDatabase::create("three_processes").await else {
        return;
    };
    let homes: Vec<Home> = (0..3).map(|_| Home::new()).collect();
    for home in &homes {
        home.edit(
            "config/identity.toml",
            "tokens = \"sqlite://data/tokens.db\"",
            &format!("tokens = \"{}\"", database.url),
        );
    }
    let mut nodes = Vec::new();
    for home in &homes {
        nodes.push(serve(home).await);
    }
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    assert!(
        a.log().contains("every node must get the same files"),
        "{}",
        a.log()
    );

    // Act + Assert: issued on A, refreshed on B, revoked on C, refused on A.
    let (_, refresh) = a.demo_login().await.assert_tokens(3600, "PRODUCTION");
    let (_, refresh) = b
        .demo_refresh(&refresh.unwrap())
        .await
        .assert_tokens(3600, "PRODUCTION");
    let refresh = refresh.unwrap();
    let revoked = c
        .post_token_form(
            "/revoke",
            DEMO_CLIENT_ID,
            DEMO_CLIENT_SECRET,
            &[("token", refresh.as_str())],
        )
        .await;
    assert_eq!(revoked.status, 200, "{}", revoked.text);
    a.demo_refresh(&refresh)
        .await
        .assert_error(400, "invalid_grant");

    // The same refresh token on two processes at the same moment: exactly one succeeds.
    for _ in 0..5 {
        let (_, refresh) = a.demo_login().await.assert_tokens(3600, "PRODUCTION");
        let refresh = refresh.unwrap();
        let (first, second) = tokio::join!(b.demo_refresh(&refresh), c.demo_refresh(&refresh));
        let (won, lost) = if first.status == 200 {
            (first, second)
        } else {
            (second, first)
        };
        won.assert_tokens(3600, "PRODUCTION");
        lost.assert_error(400, "invalid_grant");
    }
}
