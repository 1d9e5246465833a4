//! The connection a batch runner keeps from one batch to the next.
//!
//! sqlx's pool sends a round trip to the database when it hands a connection out and another
//! when it takes it back (to check it is still usable): for a statement per batch that is three
//! round trips instead of one, and the next batch waits for them. So each runner keeps one
//! connection out of its pool while the statements on it end cleanly (with or without an
//! error from the database), and checks it only when it sat unused for a while, the way the
//! pool would have checked it: a connection the database or the network closed meanwhile
//! (an outage) is then found out before a batch is sent on it. A connection whose statement
//! ended any other way (cut off, timed out) goes back to the pool, which closes it if broken.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::postgres::PgPool;
use sqlx::{Connection as _, Postgres};

/// A kept connection unused for longer than this is checked before a batch goes on it. Under
/// load the batches follow each other without a pause, so this costs nothing then.
const TRUSTED_FOR: Duration = Duration::from_millis(10);

pub(super) struct Kept {
    pool: PgPool,
    idle: Mutex<Option<(PoolConnection<Postgres>, Instant)>>,
}

impl Kept {
    pub(super) fn new(pool: PgPool) -> Self {
        Self {
            pool,
            idle: Mutex::new(None),
        }
    }

    /// A connection for one batch: the kept one if it is there and usable, else one from the
    /// pool.
    pub(super) async fn get(&self) -> Result<PoolConnection<Postgres>, sqlx::Error> {
        let kept = self.idle.lock().ok().and_then(|mut idle| idle.take());
        if let Some((mut conn, since)) = kept {
            if since.elapsed() <= TRUSTED_FOR || conn.ping().await.is_ok() {
                return Ok(conn);
            }
            // Dropped, it goes back to the pool, which finds it broken and closes it.
        }
        self.pool.acquire().await
    }

    /// After a batch: keeps `conn` for the next one if the statement ended cleanly (answered,
    /// or refused by the database), else hands it back to the pool to be checked.
    pub(super) fn put<T>(&self, conn: PoolConnection<Postgres>, outcome: &Result<T, sqlx::Error>) {
        let clean = matches!(outcome, Ok(_) | Err(sqlx::Error::Database(_)));
        if !clean {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            if idle.is_none() {
                *idle = Some((conn, Instant::now()));
            }
        }
    }

    /// Hands the kept connection back (before the pool closes).
    pub(super) fn release(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.take();
        }
    }
}
