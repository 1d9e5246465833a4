//! Operator-chosen (argon2id) client secrets: verified once, then cached; guesses are cheap
//! to refuse and cannot occupy more than one hashing thread.

use crate::helpers::*;

async fn as_argon_client(app: &TestApp, secret: &str) -> Reply {
    app.post_token_as(
        ARGON_CLIENT_ID,
        secret,
        &[("grant_type", "client_credentials")],
    )
    .await
}

#[tokio::test]
async fn concurrent_first_requests_verify_the_secret_once() {
    let app = spawn_app().await;
    let before = app.hasher.verifications_started();

    let replies =
        futures::future::join_all((0..8).map(|_| as_argon_client(&app, ARGON_CLIENT_SECRET))).await;

    for reply in &replies {
        // The argon client may not use client_credentials: authenticated, then refused.
        reply.assert_error(400, "unauthorized_client");
    }
    assert_eq!(app.hasher.verifications_started() - before, 1);
}

#[tokio::test]
async fn a_repeated_wrong_secret_costs_one_verification() {
    let app = spawn_app().await;
    let before = app.hasher.verifications_started();

    for _ in 0..5 {
        as_argon_client(&app, "a wrong guess")
            .await
            .assert_error(401, "invalid_client");
    }

    assert_eq!(app.hasher.verifications_started() - before, 1);
    as_argon_client(&app, ARGON_CLIENT_SECRET)
        .await
        .assert_error(400, "unauthorized_client");
}
