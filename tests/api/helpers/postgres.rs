//! PostgreSQL for tests: a database of its own per test (when TOKENGATE_TEST_DATABASE_URL is
//! set) and in-process nodes on it.

use std::path::Path;
use std::sync::Arc;

use tokengate::clock::ManualClock;
use tokengate::config::Settings;

use crate::helpers::{spawn_in, test_settings, write_fixture_stores, TestApp};

/// A PostgreSQL database of its own for one test, dropped when the guard is dropped.
pub struct TestDatabase {
    admin_url: String,
    pub name: String,
    pub url: String,
}

impl TestDatabase {
    /// `None` when TOKENGATE_TEST_DATABASE_URL is unset, after printing a `skipped:` line for
    /// this test, so every skipped test shows up on its own.
    pub async fn create(test: &str) -> Option<Self> {
        use sqlx::Connection as _;
        let Ok(admin_url) = std::env::var("TOKENGATE_TEST_DATABASE_URL") else {
            use std::io::Write as _;
            // libtest names each test's thread after the test (`module::name`); with
            // --test-threads=1 the test runs on `main`, so fall back to the caller's label.
            let current = std::thread::current();
            let test = match current.name() {
                Some(name) if name != "main" => name,
                _ => test,
            };
            // Straight to stderr: the test harness would swallow a println! of a passing test.
            let _ = writeln!(
                std::io::stderr(),
                "skipped: {test} (set TOKENGATE_TEST_DATABASE_URL to run the PostgreSQL tests)"
            );
            return None;
        };
        let name = format!("tokengate_test_{}", uuid::Uuid::now_v7().simple());
        let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap();
        let url = match admin_url.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{name}"),
            None => panic!("TOKENGATE_TEST_DATABASE_URL has no database part: {admin_url}"),
        };
        Some(Self {
            admin_url,
            name,
            url,
        })
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop runs outside async: a short-lived runtime on its own thread does the cleanup.
        let _ = std::thread::spawn(move || {
            use sqlx::Connection as _;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                if let Ok(mut admin) = sqlx::PgConnection::connect(&admin_url).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut admin)
                        .await;
                }
            });
        })
        .join();
    }
}

/// A node on `database` in a home folder of its own (fixture users and clients), with `adjust`
/// applied to its settings.
pub async fn postgres_node(
    database: &TestDatabase,
    clock: Arc<ManualClock>,
    adjust: impl FnOnce(&mut Settings),
) -> TestApp {
    let home = Arc::new(tempfile::tempdir().unwrap());
    write_fixture_stores(home.path());
    let mut settings = postgres_settings(home.path(), database);
    adjust(&mut settings);
    spawn_in(home, settings, clock).await
}

/// The PostgreSQL URL a node's settings hold, for tests that route or tune the connection.
pub fn postgres_url(settings: &mut Settings) -> &mut String {
    match &mut settings.stores.tokens {
        tokengate::config::TokenStoreSettings::Postgres(postgres) => &mut postgres.url,
        other => panic!("not a PostgreSQL node: {other:?}"),
    }
}

/// Settings for a node on `database`, in a home folder of its own.
pub fn postgres_settings(home: &Path, database: &TestDatabase) -> Settings {
    let mut settings = test_settings(home);
    settings.stores.tokens =
        tokengate::config::TokenStoreSettings::Postgres(tokengate::config::PostgresSettings {
            url: database.url.clone(),
            max_connections: 5,
            run_migrations: true,
        });
    settings
}
