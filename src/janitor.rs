//! The janitor: deletes what can no longer matter (expired tokens, old grant revocations,
//! finished lockout windows, full shared rate-limit buckets), every `janitor_interval`. A pass
//! repeats batches for as long as they find rows, up to [`PASS_BUDGET`]; a pass that ran out
//! of time is followed by another after [`CATCH_UP_PAUSE`], so a backlog of any size goes at
//! the store's purge rate rather than at `batch` rows per interval. Every node of a cluster
//! may run it: the stores hand each node disjoint batches.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::metrics::JanitorMetrics;
use crate::oauth::TokenService;
use crate::store::PurgeLimits;

/// How long one pass may keep purging. Each batch is one short transaction (on SQLite one
/// write of the writer), so token requests interleave between batches; the bound keeps a
/// pass from holding the store's attention for long at a time.
pub const PASS_BUDGET: Duration = Duration::from_secs(5);

/// The wait after a pass that ran out of time with rows left (instead of the interval).
pub const CATCH_UP_PAUSE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy)]
pub struct JanitorSettings {
    pub interval: Duration,
    pub batch: u32,
    /// How long a failed-login count matters (`[security] failed_login_window`).
    pub failure_window_secs: i64,
}

/// What one pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    /// Rows deleted (as the store counts them).
    pub purged: u64,
    /// The pass stopped at its time budget while batches still found rows.
    pub unfinished: bool,
}

/// Runs a pass at once and then every `interval` (or [`CATCH_UP_PAUSE`] after an unfinished
/// one), until `stop` changes.
pub fn spawn(
    service: Arc<TokenService>,
    settings: JanitorSettings,
    metrics: JanitorMetrics,
    mut stop: watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        loop {
            // The lockout window may change with a reload; its rows must outlive it.
            let settings = JanitorSettings {
                failure_window_secs: service
                    .lockout_policy()
                    .map_or(0, |policy| policy.window_secs),
                ..settings
            };
            let pass = run_once(&service, settings, PASS_BUDGET, &stop, &metrics).await;
            let wait = if pass.unfinished {
                CATCH_UP_PAUSE.min(settings.interval)
            } else {
                settings.interval
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return,
            }
        }
    });
}

/// One janitor pass: batches until one finds nothing, `budget` has passed (measured on the
/// monotonic timer: it bounds work, while the injected clock says what has expired), or
/// `stop` changed.
pub async fn run_once(
    service: &TokenService,
    settings: JanitorSettings,
    budget: Duration,
    stop: &watch::Receiver<bool>,
    metrics: &JanitorMetrics,
) -> Pass {
    let started = Instant::now();
    let now = service.clock.now_secs();
    // Fixed for the pass: rows that expire while it runs wait for the next one, so a pass
    // under steady traffic ends once it has caught up.
    let limits = PurgeLimits {
        // A token just past expiry may still be in a reuse check; a minute of slack is plenty.
        expired_before: now.saturating_sub(60),
        failures_before: now.saturating_sub(settings.failure_window_secs),
        // A minute of slack: another node's clock may run behind this one's.
        buckets_full_before_ms: service.clock.now_ms().saturating_sub(60_000),
        now,
        batch: settings.batch,
    };
    let mut pass = Pass {
        purged: 0,
        unfinished: false,
    };
    loop {
        match service.tokens.purge(limits).await {
            // Nothing left in any table (a batch that found rows might have been the last,
            // but one more that finds none is cheap with the purge indexes).
            Ok(deleted) if deleted.total() == 0 => break,
            Ok(deleted) => {
                for (table, rows) in deleted.by_table() {
                    if rows > 0 {
                        metrics.purged(table, rows);
                    }
                }
                pass.purged = pass.purged.saturating_add(deleted.total());
            }
            Err(err) => {
                tracing::warn!(error = %err, "janitor batch failed; retrying next pass");
                break;
            }
        }
        if started.elapsed() >= budget {
            pass.unfinished = true;
            break;
        }
        if stop.has_changed().unwrap_or(true) {
            break;
        }
        tokio::task::yield_now().await;
    }
    if pass.purged > 0 {
        tracing::info!(
            purged = pass.purged,
            elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            unfinished = pass.unfinished,
            "janitor purged expired rows"
        );
    }
    pass
}
