//! Re-reading operator-edited files (users, clients, signing keys) while the server runs.

use std::sync::{Arc, Weak};
use std::time::Duration;

/// Calls `reload` on `target` every `interval`, on the blocking pool (it reads and parses
/// files), until the last other `Arc` to `target` is dropped.
pub fn periodically<T: Send + Sync + 'static>(target: &Arc<T>, interval: Duration, reload: fn(&T)) {
    let weak: Weak<T> = Arc::downgrade(target);
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let Some(target) = weak.upgrade() else { break };
            let _ = tokio::task::spawn_blocking(move || reload(&target)).await;
        }
    });
}
