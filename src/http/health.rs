//! `GET /health`: 200 while the server is ready and its token store answers; 503 while the
//! store does not, and during the shutdown drain (`[server] shutdown_drain_period`), so a load
//! balancer takes the node out before it stops accepting connections.
//!
//! The store is probed at most once per [`PROBE_INTERVAL`]: checks within it share the last
//! result, and checks while a probe runs wait for that one probe. So a flood of health checks
//! costs the database one query a second and cannot take the connections token requests need.
//! The probe runs in a task of its own, so a caller that disconnects cannot cancel it and leave
//! it marked in flight.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::time::Instant;

use super::error::ApiError;
use super::AppState;
use crate::store::TokenStore;

/// How long one probe's result answers health checks.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// How long a check waits for a probe in flight before it calls the store not ready (a store
/// that stopped answering must not make health checks hang until the store's own timeouts).
pub const PROBE_WAIT: Duration = Duration::from_secs(2);

type ProbeResult = Result<(), String>;
type Probe = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ProbeResult> + Send>> + Send + Sync>;

/// Whether this node should get traffic: the shared store probe and the drain flag.
pub struct Readiness {
    probe: Probe,
    interval: Duration,
    wait: Duration,
    draining: AtomicBool,
    state: Mutex<ProbeState>,
}

#[derive(Default)]
struct ProbeState {
    last: Option<(Instant, ProbeResult)>,
    /// The answer of the probe running now (`None` until it ends).
    in_flight: Option<watch::Receiver<Option<ProbeResult>>>,
}

impl Readiness {
    /// Readiness from `ping`s of the token store.
    pub fn for_store(store: Arc<dyn TokenStore>) -> Arc<Self> {
        Self::new(
            Arc::new(move || {
                let store = store.clone();
                Box::pin(async move { store.ping().await.map_err(|err| err.to_string()) })
            }),
            PROBE_INTERVAL,
            PROBE_WAIT,
        )
    }

    fn new(probe: Probe, interval: Duration, wait: Duration) -> Arc<Self> {
        Arc::new(Self {
            probe,
            interval,
            wait,
            draining: AtomicBool::new(false),
            state: Mutex::new(ProbeState::default()),
        })
    }

    /// Whether the shutdown drain has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// From now on the node reports not ready (the shutdown drain has begun).
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// `Err(cause)` when the node should not get traffic.
    pub async fn check(self: &Arc<Self>) -> ProbeResult {
        if self.is_draining() {
            return Err("shutting down".to_owned());
        }
        let mut answer = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((at, result)) = &state.last {
                if at.elapsed() < self.interval {
                    return result.clone();
                }
            }
            match &state.in_flight {
                Some(answer) => answer.clone(),
                None => {
                    let (report, answer) = watch::channel(None);
                    state.in_flight = Some(answer.clone());
                    tokio::spawn(self.clone().probe_once(report));
                    answer
                }
            }
        };
        let answered = tokio::time::timeout(self.wait, answer.wait_for(Option::is_some))
            .await
            .map(|seen| seen.map(|result| result.clone()));
        match answered {
            Ok(Ok(Some(result))) => result,
            Ok(Ok(None) | Err(_)) => Err("the store probe ended without an answer".to_owned()),
            Err(_) => Err(format!(
                "the token store did not answer within {} s",
                self.wait.as_secs_f32()
            )),
        }
    }

    async fn probe_once(self: Arc<Self>, report: watch::Sender<Option<ProbeResult>>) {
        /// Clears the in-flight mark however the probe ends (also if its task is dropped).
        struct Done<'a>(&'a Readiness);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                let mut state = self.0.state.lock().unwrap_or_else(PoisonError::into_inner);
                state.in_flight = None;
            }
        }
        let done = Done(&self);
        let result = (self.probe)().await;
        {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            state.last = Some((Instant::now(), result.clone()));
            state.in_flight = None;
        }
        drop(done);
        report.send_replace(Some(result));
    }
}

pub async fn health(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    if state.readiness.is_draining() {
        return Err(ApiError::Draining);
    }
    state.readiness.check().await.map_err(ApiError::NotReady)?;
    Ok(Json(json!({ "status": "ok", "store": "ok" })))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// A probe that counts its runs, takes `takes` and answers `Ok`.
    fn counting(takes: Duration) -> (Probe, Arc<AtomicUsize>) {
        let runs = Arc::new(AtomicUsize::new(0));
        let counter = runs.clone();
        let probe: Probe = Arc::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                tokio::time::sleep(takes).await;
                Ok(())
            })
        });
        (probe, runs)
    }

    #[tokio::test]
    async fn concurrent_and_repeated_checks_share_one_probe() {
        let (probe, runs) = counting(Duration::from_millis(100));
        let readiness = Readiness::new(probe, Duration::from_secs(60), Duration::from_secs(10));

        let checks: Vec<_> = (0..50)
            .map(|_| {
                let readiness = readiness.clone();
                tokio::spawn(async move { readiness.check().await })
            })
            .collect();
        for check in checks {
            assert_eq!(check.await.unwrap(), Ok(()));
        }
        assert_eq!(readiness.check().await, Ok(()));

        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_result_older_than_the_interval_is_probed_again() {
        let (probe, runs) = counting(Duration::ZERO);
        let readiness = Readiness::new(probe, Duration::from_millis(20), Duration::from_secs(10));

        assert_eq!(readiness.check().await, Ok(()));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while runs.load(Ordering::SeqCst) < 2 && std::time::Instant::now() < deadline {
            assert_eq!(readiness.check().await, Ok(()));
            tokio::task::yield_now().await;
        }

        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_probe_that_does_not_answer_is_not_ready_and_is_not_started_twice() {
        let (probe, runs) = counting(Duration::from_secs(3600));
        let readiness = Readiness::new(probe, Duration::from_secs(1), Duration::from_millis(50));

        let first = readiness.check().await;
        let second = readiness.check().await;

        assert!(first.is_err() && second.is_err(), "{first:?} {second:?}");
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_draining_node_is_not_ready_without_probing() {
        let (probe, runs) = counting(Duration::ZERO);
        let readiness = Readiness::new(probe, Duration::from_secs(1), Duration::from_secs(1));

        readiness.start_draining();

        assert_eq!(readiness.check().await, Err("shutting down".to_owned()));
        assert_eq!(runs.load(Ordering::SeqCst), 0);
    }
}
