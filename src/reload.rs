//! Background work while the server runs: re-reading operator-edited files (users, clients,
//! signing keys), and passes that repeat until shutdown (janitor, key sharing).

use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::watch;

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

/// Runs `pass` every `interval`, the first at once, until `stop` changes. A pass that overruns
/// delays the next one rather than piling passes up.
pub fn until_stopped<Pass, Done>(interval: Duration, mut stop: watch::Receiver<bool>, pass: Pass)
where
    Pass: Fn() -> Done + Send + 'static,
    Done: Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stop.changed() => return,
            }
            pass().await;
        }
    });
}
