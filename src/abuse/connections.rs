//! Open connections per client IP (`[server] max_connections_per_ip`): one host cannot take
//! every connection slot of `max_connections`.
//!
//! A slot is taken when the connection is accepted and given back by [`IpSlot`]'s `Drop`, so it
//! returns however the connection ends (closed, timed out, reset, or its task dropped at
//! shutdown). Peers are counted by their canonical address: an IPv4-mapped IPv6 peer
//! (`::ffff:a.b.c.d`, what a dual-stack listener sees) is the IPv4 host it is. Trusted proxies
//! carry many clients' connections and are not counted.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use ipnet::IpNet;

use super::rate_limit::bucket_key;

/// The open connections of every client IP.
pub struct ConnectionsPerIp {
    /// 0 is no limit.
    limit: usize,
    exempt: Arc<[IpNet]>,
    open: Mutex<HashMap<IpAddr, Open>>,
}

#[derive(Default)]
struct Open {
    connections: usize,
    /// A refusal has been reported since the IP last had no connections open (one warning,
    /// not one per connection a flooding host opens).
    reported: bool,
}

/// Why a connection gets no slot.
#[derive(Debug, PartialEq, Eq)]
pub struct OverLimit {
    /// The first refusal since this IP last had no connection open: worth a warning.
    pub first: bool,
}

/// One counted connection of `ip`; dropping it gives the slot back.
pub struct IpSlot {
    counts: Arc<ConnectionsPerIp>,
    ip: Option<IpAddr>,
}

impl ConnectionsPerIp {
    pub fn new(limit: usize, exempt: Arc<[IpNet]>) -> Arc<Self> {
        Arc::new(Self {
            limit,
            exempt,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for a new connection from `peer`; `Err` when that IP already holds `limit`.
    pub fn try_acquire(self: &Arc<Self>, peer: IpAddr) -> Result<IpSlot, OverLimit> {
        let ip = peer.to_canonical();
        if self.limit == 0 || self.exempt.iter().any(|net| net.contains(&ip)) {
            return Ok(IpSlot {
                counts: self.clone(),
                ip: None,
            });
        }
        // A poisoned map only means another connection panicked while counting: keep serving.
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // An IPv6 host is counted by its /64, as the rate limits and the lockout count it: a
        // host holds a whole /64 and could otherwise open connections from every address in it.
        let ip = bucket_key(ip);
        let entry = open.entry(ip).or_default();
        if entry.connections >= self.limit {
            let first = !entry.reported;
            entry.reported = true;
            return Err(OverLimit { first });
        }
        entry.connections += 1;
        Ok(IpSlot {
            counts: self.clone(),
            ip: Some(ip),
        })
    }

    /// How many connections `peer` holds now.
    pub fn open_from(&self, peer: IpAddr) -> usize {
        let open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        open.get(&bucket_key(peer.to_canonical()))
            .map_or(0, |entry| entry.connections)
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let Some(ip) = self.ip else { return };
        let mut open = self
            .counts
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(entry) = open.get_mut(&ip) {
            entry.connections = entry.connections.saturating_sub(1);
            if entry.connections == 0 {
                // Only IPs with open connections stay in memory.
                open.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn addresses_of_one_ipv6_64_share_one_count() {
        let counts = ConnectionsPerIp::new(1, Arc::from(Vec::new()));
        let first = counts.try_acquire(ip("2001:db8:1:2::1"));
        let same_64 = counts.try_acquire(ip("2001:db8:1:2:ffff::9"));
        let other_64 = counts.try_acquire(ip("2001:db8:1:3::1"));
        assert!(first.is_ok());
        assert!(same_64.is_err(), "a host cannot hop within its /64");
        assert!(other_64.is_ok());
    }

    #[test]
    fn a_mapped_ipv4_peer_shares_the_count_of_its_ipv4_address() {
        let counts = ConnectionsPerIp::new(2, Arc::from(Vec::new()));
        let first = counts.try_acquire(ip("10.0.0.1"));
        let second = counts.try_acquire(ip("::ffff:10.0.0.1"));

        assert!(first.is_ok() && second.is_ok());
        assert_eq!(
            counts.try_acquire(ip("10.0.0.1")).err(),
            Some(OverLimit { first: true })
        );
        assert_eq!(
            counts.try_acquire(ip("::ffff:10.0.0.1")).err(),
            Some(OverLimit { first: false })
        );
        assert!(counts.try_acquire(ip("10.0.0.2")).is_ok());
        drop(second);
        assert_eq!(counts.open_from(ip("10.0.0.1")), 1);
        let again = counts.try_acquire(ip("10.0.0.1"));
        assert!(again.is_ok());
        assert_eq!(
            counts.try_acquire(ip("10.0.0.1")).err(),
            Some(OverLimit { first: false })
        );
        // Once the host has closed everything, a new episode at the limit is reported again.
        drop((first, again));
        let held = (
            counts.try_acquire(ip("10.0.0.1")),
            counts.try_acquire(ip("10.0.0.1")),
        );
        assert!(held.0.is_ok() && held.1.is_ok());
        assert_eq!(
            counts.try_acquire(ip("10.0.0.1")).err(),
            Some(OverLimit { first: true })
        );
    }

    #[test]
    fn trusted_proxies_are_not_counted_and_empty_entries_are_forgotten() {
        let proxies: Vec<IpNet> = vec!["192.0.2.0/24".parse().unwrap()];
        let counts = ConnectionsPerIp::new(1, Arc::from(proxies));
        let held: Vec<_> = (0..5)
            .map(|_| counts.try_acquire(ip("192.0.2.7")))
            .collect();
        let client = counts.try_acquire(ip("198.51.100.1"));

        assert!(held.iter().all(Result::is_ok));
        assert!(client.is_ok());
        drop(client);
        assert!(counts.open.lock().unwrap().is_empty());
    }
}
