//! The janitor: deletes what can no longer matter (expired tokens, old grant revocations,
//! finished lockout windows, full shared rate-limit buckets) in bounded batches, every `janitor_interval`. Every node of a
//! cluster may run it: the stores hand each node disjoint batches.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::oauth::TokenService;
use crate::store::PurgeLimits;

/// Batches one tick may run before it waits for the next tick.
const MAX_BATCHES_PER_TICK: usize = 100;

#[derive(Debug, Clone, Copy)]
pub struct JanitorSettings {
    pub interval: Duration,
    pub batch: u32,
    /// How long a failed-login count matters (`[security] failed_login_window`).
    pub failure_window_secs: i64,
}

/// Runs until `stop` changes.
pub fn spawn(service: Arc<TokenService>, settings: JanitorSettings, stop: watch::Receiver<bool>) {
    crate::reload::until_stopped(settings.interval, stop, move || {
        let service = service.clone();
        async move { run_once(&service, settings).await }
    });
}

/// One janitor pass: batches until nothing is left or the per-tick bound is reached.
pub async fn run_once(service: &TokenService, settings: JanitorSettings) {
    let now = service.clock.now_secs();
    let limits = PurgeLimits {
        // A token just past expiry may still be in a reuse check; a minute of slack is plenty.
        expired_before: now.saturating_sub(60),
        failures_before: now.saturating_sub(settings.failure_window_secs),
        // A minute of slack: another node's clock may run behind this one's.
        buckets_full_before_ms: service.clock.now_ms().saturating_sub(60_000),
        now,
        batch: settings.batch,
    };
    let mut total = 0u64;
    for _ in 0..MAX_BATCHES_PER_TICK {
        match service.tokens.purge(limits).await {
            Ok(0) => break,
            Ok(deleted) => total += deleted,
            Err(err) => {
                tracing::warn!(error = %err, "janitor batch failed; retrying next pass");
                break;
            }
        }
        tokio::task::yield_now().await;
    }
    if total > 0 {
        tracing::info!(purged = total, "janitor purged expired rows");
    }
}
