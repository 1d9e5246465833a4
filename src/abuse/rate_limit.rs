//! Token-bucket rate limits per client IP and per client id.
//!
//! Every node keeps buckets in memory ([`RateLimiter`]); in a cluster on PostgreSQL a
//! [`Limiter`] also takes from buckets in the database, so a limit holds for the cluster, not
//! per node. Full buckets are forgotten periodically, so memory is bounded by the keys active
//! within that period.

use std::collections::HashMap;
use std::fmt::Display;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use ipnet::IpNet;
use prometheus_client::metrics::counter::Counter;

use crate::live::Live;
use crate::store::RateLimitStore;

/// `rate` tokens per second, at most `burst` stored.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: f64,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated_ms: i64,
}

/// One limiter: a bucket per key. The rate is given at each check, so that a reload's new
/// rate applies to the buckets already filled.
pub struct RateLimiter<K> {
    buckets: Mutex<HashMap<K, Bucket>>,
}

/// Past this many buckets, full ones are dropped before a new one is added.
const SWEEP_AT: usize = 100_000;
/// If sweeping leaves this many, every bucket is forgotten: memory stays bounded even when
/// many clients keep their buckets below full.
const HARD_CAP: usize = 1_000_000;

impl<K: Eq + Hash + Clone> Default for RateLimiter<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Eq + Hash + Clone> RateLimiter<K> {
    pub fn new() -> Self {
        Self {
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `key` at `rate`. `Err(seconds)` says when to retry.
    pub fn check(&self, key: &K, rate: Rate, now_ms: i64) -> Result<(), u64> {
        let Ok(mut buckets) = self.buckets.lock() else {
            return Ok(()); // a poisoned limiter must not take the service down
        };
        if buckets.len() >= SWEEP_AT && !buckets.contains_key(key) {
            buckets.retain(|_, bucket| refill(bucket, rate, now_ms) < rate.burst);
            if buckets.len() >= HARD_CAP {
                buckets.clear();
            }
        }
        let bucket = buckets.entry(key.clone()).or_insert(Bucket {
            tokens: rate.burst,
            updated_ms: now_ms,
        });
        let tokens = refill(bucket, rate, now_ms);
        bucket.updated_ms = now_ms;
        if tokens >= 1.0 {
            bucket.tokens = tokens - 1.0;
            Ok(())
        } else {
            bucket.tokens = tokens;
            Err(retry_after_secs(tokens, rate))
        }
    }

    /// Lowers the bucket of `key` to `tokens` if it holds more (the cluster's bucket, shared
    /// by every node, turned out to hold only that many).
    pub fn at_most(&self, key: &K, tokens: f64) {
        if let Ok(mut buckets) = self.buckets.lock() {
            if let Some(bucket) = buckets.get_mut(key) {
                bucket.tokens = bucket.tokens.min(tokens);
            }
        }
    }
}

/// When a bucket holding `tokens` (< 1) has one again: whole seconds for Retry-After, at
/// least 1.
pub fn retry_after_secs(tokens: f64, rate: Rate) -> u64 {
    let wait = (1.0 - tokens) / rate.per_second;
    wait.ceil().max(1.0) as u64
}

/// How long a shared bucket may take to answer before the node's own limit is used instead.
const SHARED_TIMEOUT: Duration = Duration::from_secs(1);
/// After the shared buckets failed, how long only the node's own limits apply, so that an
/// outage does not add `SHARED_TIMEOUT` to every request.
const SHARED_PAUSE: Duration = Duration::from_secs(5);

/// The buckets every node shares through the database, with a breaker: once they fail to
/// answer, they are left alone for `SHARED_PAUSE` and each node limits on its own.
pub struct SharedBuckets {
    store: Arc<dyn RateLimitStore>,
    paused_until: Mutex<Option<Instant>>,
}

impl SharedBuckets {
    pub fn new(store: Arc<dyn RateLimitStore>) -> Self {
        Self {
            store,
            paused_until: Mutex::new(None),
        }
    }

    /// `None` when the shared buckets cannot say (paused, failed or slow): use the node's own.
    async fn take(&self, key: &str, rate: Rate, now_ms: i64) -> Option<Take> {
        let paused = match self.paused_until.lock() {
            Ok(until) => until.is_some_and(|until| Instant::now() < until),
            Err(_) => false,
        };
        if paused {
            return None;
        }
        let failure =
            match tokio::time::timeout(SHARED_TIMEOUT, self.store.take(key, rate, now_ms)).await {
                Ok(Ok(verdict)) => return Some(verdict),
                Ok(Err(err)) => err.to_string(),
                Err(_) => format!("no answer within {} ms", SHARED_TIMEOUT.as_millis()),
            };
        if let Ok(mut until) = self.paused_until.lock() {
            *until = Some(Instant::now() + SHARED_PAUSE);
        }
        tracing::warn!(
            error = %failure,
            "shared rate limits unavailable; each node's own limits apply for the next {} s",
            SHARED_PAUSE.as_secs()
        );
        None
    }
}

/// What a shared bucket said.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Take {
    Allowed,
    /// Empty: it holds only `tokens` (less than one).
    Refused {
        tokens: f64,
    },
}

/// The limit on one kind of key (client IP, client id): this node's buckets and, in a cluster,
/// the buckets every node shares through the database.
///
/// The local bucket is checked first. It only counts this node's requests, so it never holds
/// fewer tokens than the shared one, and when it is empty the key is over its limit for the
/// cluster too: the database is not asked. When the shared bucket refuses, the local one is
/// lowered to what the shared one holds, so the next request from that key waits for a refill
/// here too. A flood from one key therefore costs the database at most `rate` writes a second
/// per node, and a node is never stricter than the cluster.
pub struct Limiter<K> {
    /// `None`: the limit is off (`[rate_limit] enabled = false`); a reload replaces it.
    rate: Live<Option<Rate>>,
    local: RateLimiter<K>,
    shared: Option<Arc<SharedBuckets>>,
    /// Prefixes the key in the shared table (`ip`, `client`).
    kind: &'static str,
    /// `tokengate_rate_limited_total` of this limiter's bucket.
    refused: Counter,
}

impl<K: Eq + Hash + Clone + Display> Limiter<K> {
    pub fn new(
        rate: Live<Option<Rate>>,
        kind: &'static str,
        shared: Option<Arc<SharedBuckets>>,
        refused: Counter,
    ) -> Self {
        Self {
            rate,
            local: RateLimiter::new(),
            shared,
            kind,
            refused,
        }
    }

    /// Takes one token for `key`. `Err(seconds)` says when to retry.
    pub async fn check(&self, key: &K, now_ms: i64) -> Result<(), u64> {
        let checked = self.check_buckets(key, now_ms).await;
        if checked.is_err() {
            self.refused.inc();
        }
        checked
    }

    async fn check_buckets(&self, key: &K, now_ms: i64) -> Result<(), u64> {
        let Some(rate) = self.rate.load() else {
            return Ok(());
        };
        self.local.check(key, rate, now_ms)?;
        let Some(shared) = &self.shared else {
            return Ok(());
        };
        let shared_key = format!("{}:{key}", self.kind);
        // When the database cannot say, the request goes on: the token store answers 503 for
        // anything that needs it, and the node's own bucket still applies.
        match shared.take(&shared_key, rate, now_ms).await {
            Some(Take::Refused { tokens }) => {
                self.local.at_most(key, tokens);
                Err(retry_after_secs(tokens, rate))
            }
            Some(Take::Allowed) | None => Ok(()),
        }
    }
}

fn refill(bucket: &Bucket, rate: Rate, now_ms: i64) -> f64 {
    let elapsed = (now_ms.saturating_sub(bucket.updated_ms)).max(0) as f64 / 1000.0;
    (bucket.tokens + elapsed * rate.per_second).min(rate.burst)
}

/// The bucket for an address: IPv6 clients get a /64 each (what one subscriber is given), so
/// that hopping between addresses of one's own prefix gains nothing.
pub fn bucket_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(std::net::Ipv6Addr::from(prefix))
        }
    }
}

/// The client's address: the peer, or — when the peer is a trusted proxy — the nearest
/// address in `X-Forwarded-For` that is not itself a trusted proxy (the rightmost untrusted
/// hop: earlier entries can be forged by the client). An IPv4-mapped IPv6 address
/// (`::ffff:a.b.c.d`, what a dual-stack listener sees for an IPv4 peer) is its IPv4 address.
pub fn client_ip(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[IpNet]) -> IpAddr {
    let peer = peer.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let Some(header) = forwarded_for else {
        return peer;
    };
    for hop in header.rsplit(',') {
        match hop.trim().parse::<IpAddr>().map(|ip| ip.to_canonical()) {
            Ok(ip) if is_trusted(&ip) => continue,
            Ok(ip) => return ip,
            // A malformed hop: stop trusting the chain here.
            Err(_) => return peer,
        }
    }
    peer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_allowed_then_the_rate() {
        let rate = Rate {
            per_second: 2.0,
            burst: 3.0,
        };
        let limiter = RateLimiter::new();
        for _ in 0..3 {
            assert!(limiter.check(&"k", rate, 0).is_ok());
        }
        assert_eq!(limiter.check(&"k", rate, 0), Err(1));
        assert!(
            limiter.check(&"k", rate, 500).is_ok(),
            "one token back after 0.5 s at 2/s"
        );
        assert!(limiter.check(&"k", rate, 500).is_err());
        assert!(
            limiter.check(&"other", rate, 500).is_ok(),
            "keys are independent"
        );
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let proxy: IpAddr = "10.1.2.3".parse().unwrap();
        let outsider: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(
            client_ip(outsider, Some("198.51.100.1"), &trusted),
            outsider
        );
        assert_eq!(
            client_ip(
                proxy,
                Some("198.51.100.7, 198.51.100.1, 10.9.9.9"),
                &trusted
            ),
            "198.51.100.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_ip(proxy, None, &trusted), proxy);
        assert_eq!(client_ip(proxy, Some("garbage"), &trusted), proxy);
    }

    #[test]
    fn ipv4_mapped_peers_and_hops_are_their_ipv4_address() {
        let trusted: Vec<IpNet> = vec!["127.0.0.1/32".parse().unwrap()];
        let mapped_proxy: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        let mapped_outsider: IpAddr = "::ffff:203.0.113.9".parse().unwrap();
        assert_eq!(
            client_ip(mapped_outsider, None, &trusted),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_ip(
                mapped_proxy,
                Some("::ffff:198.51.100.1, ::ffff:127.0.0.1"),
                &trusted
            ),
            "198.51.100.1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn ipv6_clients_share_a_bucket_per_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(bucket_key(a), bucket_key(b));
        assert_ne!(bucket_key(a), bucket_key(other));
        let v4: IpAddr = "198.51.100.7".parse().unwrap();
        assert_eq!(bucket_key(v4), v4);
    }
}
