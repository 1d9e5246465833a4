//! A token store that cannot write (here: another process holds SQLite's write lock; a full
//! disk takes the same path) answers 503 with Retry-After, writes nothing half-way, keeps
//! serving what needs no write, and recovers by itself.

use std::str::FromStr as _;

use sqlx::Connection as _;

use crate::helpers::*;

/// Connection options for the app's SQLite token store, opened from outside the server.
pub(crate) fn store_file(app: &TestApp) -> sqlx::sqlite::SqliteConnectOptions {
    let tokengate::config::TokenStoreSettings::Sqlite { path, .. } = &app.settings.stores.tokens
    else {
        panic!("the test config uses SQLite")
    };
    sqlx::sqlite::SqliteConnectOptions::from_str("sqlite://")
        .unwrap()
        .filename(path)
}

#[tokio::test]
async fn a_store_that_cannot_write_answers_503_and_recovers() {
    let app = spawn_app().await;
    let (access, refresh) = app.login(None).await.assert_tokens(3600, "default");
    let refresh = refresh.unwrap();
    let options = store_file(&app);
    let mut intruder = sqlx::SqliteConnection::connect_with(&options)
        .await
        .unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut intruder)
        .await
        .unwrap();

    // Writes fail once the store's busy timeout runs out; meanwhile the writer is stuck, and
    // the health probe (answered by the writer) says so...
    let health_while_stuck = async {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(4);
        loop {
            let status = app.get("/health").await.status;
            if status == 503 || std::time::Instant::now() > deadline {
                return status;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    };
    let (login, renewal, health) =
        tokio::join!(app.login(None), app.refresh(&refresh), health_while_stuck);
    assert_eq!(health, 503, "/health while the writer waits for the lock");
    // ...while what needs no write goes on.
    let introspected = app.introspect(&access).await;

    login.assert_error(503, "temporarily_unavailable");
    renewal.assert_error(503, "temporarily_unavailable");
    assert!(login.header("retry-after").is_some());
    assert_eq!(introspected.body["active"], true, "{}", introspected.text);

    sqlx::query("ROLLBACK")
        .execute(&mut intruder)
        .await
        .unwrap();
    drop(intruder);
    // Nothing was half-written: the refresh token that failed to rotate is still live.
    app.refresh(&refresh).await.assert_tokens(3600, "default");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while app.get("/health").await.status != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "/health never recovered"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    app.login(None).await.assert_tokens(3600, "default");
}

/// A refresh whose client hung up while the store was waiting for its lock is not written
/// afterwards: the client never learnt of a rotation, so its retry with the same refresh
/// token works instead of being taken for reuse (which would revoke the grant).
#[tokio::test]
async fn a_rotation_whose_client_hung_up_while_the_store_waited_is_not_written() {
    let app = spawn_app().await;
    let (_, refresh) = app.login(None).await.assert_tokens(3600, "default");
    let refresh = refresh.unwrap();
    let options = store_file(&app);
    let mut intruder = sqlx::SqliteConnection::connect_with(&options)
        .await
        .unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut intruder)
        .await
        .unwrap();

    // The client gives up while the store waits for the lock...
    let gave_up =
        tokio::time::timeout(std::time::Duration::from_millis(500), app.refresh(&refresh)).await;
    assert!(gave_up.is_err(), "the refresh should still be waiting");
    // ...and the lock is released before the store's busy timeout (5 s) runs out.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    sqlx::query("ROLLBACK")
        .execute(&mut intruder)
        .await
        .unwrap();
    drop(intruder);

    let retried = app.refresh(&refresh).await;
    let (_, next) = retried.assert_tokens(3600, "default");
    // The grant is alive: the new refresh token works too.
    app.refresh(&next.unwrap())
        .await
        .assert_tokens(3600, "default");
}

/// The write-ahead log is copied into the database file while the server keeps running, by the
/// store's checkpoint thread, not only when the writer's own (rare, late) automatic checkpoint
/// or the close gets to it. Read here with `immutable`, which looks at the database file alone.
#[tokio::test]
async fn committed_tokens_reach_the_database_file_while_the_server_runs() {
    let app = spawn_app().await;
    let (_, refresh) = app.login(None).await.assert_tokens(3600, "default");
    let mut refresh = refresh.unwrap();
    for _ in 0..30 {
        let (_, next) = app.refresh(&refresh).await.assert_tokens(3600, "default");
        refresh = next.unwrap();
    }
    let options = store_file(&app).immutable(true);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let in_file = loop {
        // A fresh connection each time: an immutable one never looks at the file again.
        // The checkpoint may be writing the file meanwhile: a failed or torn read is "not yet".
        let rows = match sqlx::SqliteConnection::connect_with(&options).await {
            Ok(mut file) => {
                let counted: Result<i64, _> =
                    sqlx::query_scalar("SELECT COUNT(*) FROM refresh_tokens")
                        .fetch_one(&mut file)
                        .await;
                let _ = file.close().await;
                counted.unwrap_or(-1)
            }
            Err(_) => -1,
        };
        if rows == 31 || std::time::Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(in_file, 31, "refresh tokens in the database file itself");
    app.stop().await;
}
