//! `tokengate keys rotate | list`: a new signing key that a running server publishes and signs with.

use crate::helpers::process::{
    serve, Home, DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, DEMO_PASSWORD, DEMO_USER, POLL,
};

#[tokio::test]
async fn keys_rotate_adds_a_key_that_a_running_server_publishes_and_signs_with() {
    // Arrange: a server whose demo client gets JWT access tokens.
    let home = Home::new();
    home.edit(
        "config/clients.toml",
        "scopes = [\"PRODUCTION\", \"SANDBOX\"]",
        "scopes = [\"PRODUCTION\", \"SANDBOX\"]\ntoken_format = \"jwt\"",
    );
    let server = serve(&home).await;
    let jwks = server.get("/jwks").await;
    assert_eq!(
        jwks.body["keys"].as_array().unwrap().len(),
        1,
        "{}",
        jwks.text
    );
    let first_kid = jwks.body["keys"][0]["kid"].as_str().unwrap().to_owned();

    // Act
    let rotated = home.run(&["keys", "rotate"], None).await;
    let listed = home.run(&["keys", "list"], None).await;

    // Assert
    rotated.assert_success();
    assert!(rotated.stderr.contains("signing key"), "{rotated:#?}");
    listed.assert_success();
    assert_eq!(listed.stdout_lines().len(), 2, "{listed:#?}");
    assert!(
        listed.stdout_lines()[0].starts_with(&first_kid),
        "{listed:#?}"
    );
    let new_kid = listed.stdout_lines()[1]
        .split('\t')
        .next()
        .unwrap()
        .to_owned();
    let mut published = Vec::new();
    for _ in 0..100 {
        let jwks = server.get("/jwks").await;
        published = jwks.body["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|key| key["kid"].as_str().unwrap().to_owned())
            .collect();
        if published.len() == 2 {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    assert!(
        published.contains(&first_kid) && published.contains(&new_kid),
        "{published:?}"
    );
    let token = server
        .poll_password_grant(DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, DEMO_USER, DEMO_PASSWORD)
        .await;
    let access = token.str("access_token");
    let header = jsonwebtoken::decode_header(access).unwrap();
    assert_eq!(header.kid.as_deref(), Some(new_kid.as_str()));
}
