//! Failed client authentications per (client id, client address), kept in this node's memory.
//!
//! After `max_failures` wrong secrets for one client from one address within the window, that
//! address gets `invalid_client` for that client without any secret being checked, until the
//! lock ends. An operator-chosen (argon2) client secret then cannot be guessed at hashing
//! speed, and a flood of wrong secrets from one address stops queueing in front of the real
//! client's own verifications. Per node, because client authentication is on every request's
//! hot path (each refresh): a database read there would cost every request for the sake of
//! the few that fail. The map is bounded.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use crate::live::Live;

/// When failed client authentications lock a (client, address) pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAuthPolicy {
    pub max_failures: u32,
    pub window_secs: i64,
    pub lock_secs: i64,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    window_start: i64,
    locked_until: Option<i64>,
}

impl Failures {
    fn over(&self, now: i64, window_secs: i64) -> bool {
        self.window_start.saturating_add(window_secs) <= now
            && self.locked_until.is_none_or(|until| until <= now)
    }
}

/// Past this many pairs, finished ones are forgotten before a new one is added; if that leaves
/// the map full, new pairs are not tracked (the locks already held stay).
const MAX_TRACKED: usize = 100_000;

/// The failure counts of one node.
pub struct ClientAuthFailures {
    /// `None`: nothing is counted or locked (a reload may turn it on or off).
    policy: Live<Option<ClientAuthPolicy>>,
    pairs: Mutex<HashMap<(String, IpAddr), Failures>>,
}

impl ClientAuthFailures {
    pub fn new(policy: ClientAuthPolicy) -> Self {
        Self::live(Live::new(Some(policy)))
    }

    /// Counts with the policy in `policy` at each failure (a reload replaces it).
    pub fn live(policy: Live<Option<ClientAuthPolicy>>) -> Self {
        Self {
            policy,
            pairs: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `client_id` is locked for `ip` at `now`: its secret must not be checked.
    pub fn locked(&self, client_id: &str, ip: IpAddr, now: i64) -> bool {
        if self.policy.load().is_none() {
            return false;
        }
        let Ok(pairs) = self.pairs.lock() else {
            return false;
        };
        pairs
            .get(&(client_id.to_owned(), ip))
            .and_then(|failures| failures.locked_until)
            .is_some_and(|until| until > now)
    }

    /// Counts a wrong secret; returns `Some(until)` when this failure locked the pair.
    pub fn failed(&self, client_id: &str, ip: IpAddr, now: i64) -> Option<i64> {
        let policy = self.policy.load()?;
        let Ok(mut pairs) = self.pairs.lock() else {
            return None;
        };
        let key = (client_id.to_owned(), ip);
        if pairs.len() >= MAX_TRACKED && !pairs.contains_key(&key) {
            pairs.retain(|_, failures| !failures.over(now, policy.window_secs));
            if pairs.len() >= MAX_TRACKED {
                return None;
            }
        }
        let failures = pairs.entry(key).or_insert(Failures {
            count: 0,
            window_start: now,
            locked_until: None,
        });
        if failures.locked_until.is_some_and(|until| until > now) {
            return None;
        }
        if failures.over(now, policy.window_secs) {
            *failures = Failures {
                count: 0,
                window_start: now,
                locked_until: None,
            };
        }
        failures.count = failures.count.saturating_add(1);
        if failures.count >= policy.max_failures {
            let until = now.saturating_add(policy.lock_secs);
            *failures = Failures {
                count: 0,
                window_start: now,
                locked_until: Some(until),
            };
            return Some(until);
        }
        None
    }

    /// The right secret from `ip`: its failures are forgotten.
    pub fn succeeded(&self, client_id: &str, ip: IpAddr) {
        if let Ok(mut pairs) = self.pairs.lock() {
            // The common case on the hot path: nothing to forget, nothing to allocate.
            if !pairs.is_empty() {
                pairs.remove(&(client_id.to_owned(), ip));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: ClientAuthPolicy = ClientAuthPolicy {
        max_failures: 3,
        window_secs: 100,
        lock_secs: 50,
    };

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn the_last_allowed_failure_locks_the_pair_for_the_lock_duration() {
        let failures = ClientAuthFailures::new(POLICY);
        let a = ip("198.51.100.1");
        assert_eq!(failures.failed("c", a, 0), None);
        assert_eq!(failures.failed("c", a, 1), None);
        assert_eq!(failures.failed("c", a, 2), Some(52));

        assert!(failures.locked("c", a, 51));
        assert!(!failures.locked("c", ip("198.51.100.2"), 51), "per address");
        assert!(!failures.locked("other", a, 51), "per client");
        assert!(!failures.locked("c", a, 52));
    }

    #[test]
    fn failures_from_an_elapsed_window_do_not_add_up_and_a_success_forgets_them() {
        let failures = ClientAuthFailures::new(POLICY);
        let a = ip("198.51.100.1");
        failures.failed("c", a, 0);
        failures.failed("c", a, 1);
        assert_eq!(failures.failed("c", a, 100), None);
        failures.succeeded("c", a);
        assert_eq!(failures.failed("c", a, 101), None);
        assert_eq!(failures.failed("c", a, 102), None);
        assert_eq!(failures.failed("c", a, 103), Some(153));
    }
}
