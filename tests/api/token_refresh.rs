//! RFC 6749 §6: the refresh grant, with rotation (RFC 9700 §4.14.2) on and off.

use crate::helpers::*;

#[tokio::test]
async fn a_refresh_token_renews_the_access_token_and_rotates_itself() {
    let app = spawn_app().await;
    let (access, refresh) = app
        .login(Some("PRODUCTION"))
        .await
        .assert_tokens(3600, "PRODUCTION");
    let refresh = refresh.unwrap();

    let reply = app.refresh(&refresh).await;

    let (new_access, new_refresh) = reply.assert_tokens(3600, "PRODUCTION");
    let new_refresh = new_refresh.expect("rotation issues a new refresh token");
    assert_ne!(new_access, access);
    assert_ne!(new_refresh, refresh);
    let old_record = stored_access_token(&app, &access).await.unwrap();
    let new_record = stored_access_token(&app, &new_access).await.unwrap();
    assert_eq!(
        old_record.family_id, new_record.family_id,
        "one grant, one family"
    );
}

#[tokio::test]
async fn a_spent_refresh_token_is_refused() {
    let app = spawn_app().await;
    let (_, refresh) = app.login(None).await.assert_tokens(3600, "default");
    let refresh = refresh.unwrap();
    app.refresh(&refresh).await.assert_tokens(3600, "default");

    let reply = app.refresh(&refresh).await;

    reply.assert_error(400, "invalid_grant");
}

#[tokio::test]
async fn the_newest_refresh_token_keeps_working_down_the_chain() {
    let app = spawn_app().await;
    let (_, refresh) = app.login(None).await.assert_tokens(3600, "default");
    let mut refresh = refresh.unwrap();

    for _ in 0..5 {
        let (_, next) = app.refresh(&refresh).await.assert_tokens(3600, "default");
        refresh = next.unwrap();
    }

    app.refresh(&refresh).await.assert_tokens(3600, "default");
}

#[tokio::test]
async fn a_refresh_token_is_bound_to_its_client() {
    let app = spawn_app().await;
    let (_, refresh) = app.login(None).await.assert_tokens(3600, "default");
    let refresh = refresh.unwrap();

    let foreign = app
        .post_token_as(
            OTHER_CLIENT_ID,
            OTHER_CLIENT_SECRET,
            &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
        )
        .await;

    foreign.assert_error(400, "invalid_grant");
    // The failed foreign attempt did not spend it.
    app.refresh(&refresh).await.assert_tokens(3600, "default");
}

#[tokio::test]
async fn unknown_and_malformed_refresh_tokens_are_invalid_grant() {
    let app = spawn_app().await;
    let (_, refresh) = app.login(None).await.assert_tokens(3600, "default");
    let refresh = refresh.unwrap();
    let (id, _) = refresh.split_once('.').unwrap();
    let forged = format!("{id}.{}", "A".repeat(43));

    for token in ["garbage", "a.b", forged.as_str(), &"x".repeat(5000)] {
        app.refresh(token).await.assert_error(400, "invalid_grant");
    }
}

#[tokio::test]
async fn a_refresh_may_narrow_the_scope_but_not_widen_it() {
    let app = spawn_app().await;
    let (_, refresh) = app
        .login(Some("PRODUCTION SANDBOX"))
        .await
        .assert_tokens(3600, "PRODUCTION SANDBOX");
    let refresh = refresh.unwrap();

    let widened = app
        .post_token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("scope", "PRODUCTION default"),
        ])
        .await;
    widened.assert_error(400, "invalid_scope");

    let narrowed = app
        .post_token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("scope", "SANDBOX"),
        ])
        .await;
    let (_, next) = narrowed.assert_tokens(3600, "SANDBOX");

    // RFC 6749 §6: the new refresh token keeps the original scope.
    app.refresh(&next.unwrap())
        .await
        .assert_tokens(3600, "PRODUCTION SANDBOX");
}

#[tokio::test]
async fn an_expired_refresh_token_is_refused() {
    let app = spawn_app().await;
    let (_, refresh) = app.login(None).await.assert_tokens(3600, "default");
    let refresh = refresh.unwrap();

    app.clock.advance_secs(86_400);

    app.refresh(&refresh)
        .await
        .assert_error(400, "invalid_grant");
}

#[tokio::test]
async fn a_refresh_token_works_until_just_before_it_expires() {
    let app = spawn_app().await;
    let (_, refresh) = app.login(None).await.assert_tokens(3600, "default");

    app.clock.advance_secs(86_400 - 2);

    app.refresh(&refresh.unwrap())
        .await
        .assert_tokens(3600, "default");
}

#[tokio::test]
async fn a_client_override_sets_the_refresh_token_validity() {
    let app = spawn_app().await;
    let login = [
        ("grant_type", "password"),
        ("username", USER),
        ("password", PASSWORD),
    ];
    let (_, first) = app
        .post_token_as(SHORT_CLIENT_ID, SHARED_SECRET, &login)
        .await
        .assert_tokens(120, "default");
    let (_, second) = app
        .post_token_as(SHORT_CLIENT_ID, SHARED_SECRET, &login)
        .await
        .assert_tokens(120, "default");

    app.clock.advance_secs(590);
    app.post_token_as(
        SHORT_CLIENT_ID,
        SHARED_SECRET,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &first.unwrap()),
        ],
    )
    .await
    .assert_tokens(120, "default");

    app.clock.advance_secs(20);
    app.post_token_as(
        SHORT_CLIENT_ID,
        SHARED_SECRET,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &second.unwrap()),
        ],
    )
    .await
    .assert_error(400, "invalid_grant");
}

#[tokio::test]
async fn without_rotation_the_same_refresh_token_is_returned_and_keeps_working() {
    let app = spawn_app_with(|settings| settings.oauth.renew_refresh_token = false).await;
    let (_, refresh) = app.login(None).await.assert_tokens(3600, "default");
    let refresh = refresh.unwrap();

    for _ in 0..3 {
        let (_, returned) = app.refresh(&refresh).await.assert_tokens(3600, "default");
        assert_eq!(returned.as_deref(), Some(refresh.as_str()));
    }
}

#[tokio::test]
async fn of_two_concurrent_redemptions_of_one_refresh_token_exactly_one_succeeds() {
    let app = spawn_app().await;
    for _ in 0..5 {
        let (_, refresh) = app.login(None).await.assert_tokens(3600, "default");
        let refresh = refresh.unwrap();

        let (first, second) = tokio::join!(app.refresh(&refresh), app.refresh(&refresh));

        let statuses = [first.status, second.status];
        assert!(
            statuses.contains(&200) && statuses.contains(&400),
            "statuses {statuses:?}: {} / {}",
            first.text,
            second.text
        );
    }
}

#[tokio::test]
async fn a_removed_user_can_no_longer_refresh() {
    let app = spawn_app().await;
    let (_, refresh) = app.login(None).await.assert_tokens(3600, "default");
    let refresh = refresh.unwrap();
    let users = app.home.path().join("config/users.toml");
    let text = std::fs::read_to_string(&users).unwrap();
    let without_alice: String = text
        .split("\n\n")
        .filter(|section| !section.contains(&format!("[users.{USER}]")))
        .collect::<Vec<_>>()
        .join("\n\n");
    std::fs::write(&users, without_alice).unwrap();

    // The server re-reads the file within its reload interval (1 s here).
    let mut last = None;
    for _ in 0..100 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let reply = app.login(None).await;
        if reply.status == 400 {
            last = Some(reply);
            break;
        }
    }
    last.expect("the removal was picked up")
        .assert_error(400, "invalid_grant");

    app.refresh(&refresh)
        .await
        .assert_error(400, "invalid_grant");
}
