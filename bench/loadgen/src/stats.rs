//! Per-worker counters and latency histogram, merged once at the end (no shared locks on
//! the hot path).

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;

/// Latencies are recorded in microseconds, 1 µs .. 120 s, 3 significant digits.
const MAX_LATENCY_US: u64 = 120_000_000;

pub struct Stats {
    latency_us: Histogram<u64>,
    /// Timed requests that ended in the measured window: a response or a transport failure.
    pub requests: u64,
    pub ok: u64,
    /// Failures of untimed work: connecting, and the password grants that (re)seed refresh
    /// chains. They are not requests of the scenario, but they are errors.
    pub untimed_errors: u64,
    /// Password grants sent to restart a refresh chain after a failure (untimed).
    pub reseeds: u64,
    /// Seeding password grants sent again after a 503.
    pub seed_retries: u64,
    /// Connections reopened because the server closed or broke one (untimed).
    pub reconnects: u64,
    pub status: BTreeMap<u16, u64>,
    pub first_error: Option<String>,
}

impl Stats {
    pub fn new() -> Result<Self, String> {
        Ok(Self {
            latency_us: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
                .map_err(|e| format!("histogram: {e}"))?,
            requests: 0,
            ok: 0,
            untimed_errors: 0,
            reseeds: 0,
            seed_retries: 0,
            reconnects: 0,
            status: BTreeMap::new(),
            first_error: None,
        })
    }

    /// A timed request got an HTTP response (`Ok` or not) after `latency`.
    pub fn response(&mut self, status: u16, latency: Duration, ok: bool) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency_us.saturating_record(us.max(1));
        *self.status.entry(status).or_insert(0) += 1;
        self.requests += 1;
        if ok {
            self.ok += 1;
        }
    }

    /// A timed request failed without a response (connection broken, TLS error, ...).
    pub fn transport_failure(&mut self) {
        self.requests += 1;
    }

    pub fn note_error(&mut self, message: impl FnOnce() -> String) {
        if self.first_error.is_none() {
            self.first_error = Some(message());
        }
    }

    /// Timed requests that were not ok, plus failed untimed work.
    pub fn errors(&self) -> u64 {
        self.requests - self.ok + self.untimed_errors
    }

    pub fn merge(&mut self, other: Stats) -> Result<(), String> {
        self.latency_us
            .add(&other.latency_us)
            .map_err(|e| format!("merge histograms: {e:?}"))?;
        self.requests += other.requests;
        self.ok += other.ok;
        self.untimed_errors += other.untimed_errors;
        self.reseeds += other.reseeds;
        self.seed_retries += other.seed_retries;
        self.reconnects += other.reconnects;
        for (code, n) in other.status {
            *self.status.entry(code).or_insert(0) += n;
        }
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        Ok(())
    }

    /// Latency at quantile `q` in ms, `None` if nothing was recorded.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        (!self.latency_us.is_empty()).then(|| self.latency_us.value_at_quantile(q) as f64 / 1000.0)
    }

    pub fn max_ms(&self) -> Option<f64> {
        (!self.latency_us.is_empty()).then(|| self.latency_us.max() as f64 / 1000.0)
    }

    pub fn mean_ms(&self) -> Option<f64> {
        (!self.latency_us.is_empty()).then(|| self.latency_us.mean() / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_count_bad_responses_transport_failures_and_untimed_failures() {
        let mut a = Stats::new().unwrap();
        a.response(200, Duration::from_millis(2), true);
        a.response(503, Duration::from_millis(1), false);
        a.transport_failure();
        let mut b = Stats::new().unwrap();
        b.untimed_errors = 2;
        b.response(200, Duration::from_millis(4), true);
        a.merge(b).unwrap();
        assert_eq!((a.requests, a.ok, a.errors()), (4, 2, 4));
        assert_eq!(a.status.get(&200), Some(&2));
        let p50 = a.quantile_ms(0.5).unwrap();
        assert!((1.9..=2.1).contains(&p50), "{p50}");
        assert!(a.max_ms().unwrap() >= 3.9);
    }
}
