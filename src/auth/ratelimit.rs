//! Failed-authentication limiter: 10 failures within 60 s lock a client out for 300 s, even with the right
//! secret afterwards. What is counted is a `LimitKey`: a non-local client by its address, an IPv6 one per
//! /64 (one host commonly holds a whole prefix, and could otherwise pick a fresh address for every ten
//! guesses); a browser on loopback by its `Origin`. A local client that is not a browser is never counted.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Mutex;

use crate::auth::locality::ClientAddr;
use crate::clock::Millis;

#[derive(Clone, Copy, Debug)]
pub struct RateLimitConfig {
    pub max_failures: u32,
    pub window_ms: Millis,
    pub lockout_ms: Millis,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig { max_failures: 10, window_ms: 60_000, lockout_ms: 300_000 }
    }
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    window_start_ms: Millis,
    failures: u32,
    locked_until_ms: Option<Millis>,
}

/// What failures are counted against.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum LimitKey {
    /// A non-local client: its IPv4 address, or the /64 network of its IPv6 one.
    Network(IpAddr),
    /// A browser on loopback, by its `Origin` (empty when it sent none): a web page can make failed attempts
    /// from loopback, so loopback does not exempt it, and one origin's failures do not lock out another's.
    LocalBrowser(String),
}

impl LimitKey {
    /// The key a client's failures count against; `None` for a local client that is not a browser, which is
    /// never counted nor locked out.
    pub fn of(client: &ClientAddr) -> Option<LimitKey> {
        match (client.local, client.browser) {
            (false, _) => Some(LimitKey::from(client.ip)),
            (true, true) => Some(LimitKey::LocalBrowser(client.origin.clone().unwrap_or_default())),
            (true, false) => None,
        }
    }
}

impl From<IpAddr> for LimitKey {
    fn from(ip: IpAddr) -> Self {
        LimitKey::Network(crate::domain::client_network(ip))
    }
}

impl fmt::Display for LimitKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LimitKey::Network(IpAddr::V6(network)) => write!(f, "{network}/64"),
            LimitKey::Network(ip) => write!(f, "{ip}"),
            LimitKey::LocalBrowser(origin) if origin.is_empty() => f.write_str("browser on loopback without Origin"),
            LimitKey::LocalBrowser(origin) => write!(f, "browser on loopback from {origin}"),
        }
    }
}

/// The most addresses tracked at once; beyond it, stale entries are dropped first.
const MAX_TRACKED: usize = 65_536;

#[derive(Debug)]
pub struct FailedAuthLimiter {
    config: RateLimitConfig,
    entries: Mutex<HashMap<LimitKey, Entry>>,
    /// In a fleet: per network, the failures the other nodes counted in their current windows and the
    /// latest lockout any of them decided, as last shared ([`FailedAuthLimiter::set_elsewhere`]).
    elsewhere: Mutex<HashMap<IpAddr, Elsewhere>>,
}

/// What the other nodes of a fleet counted for one network.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Elsewhere {
    pub failures: u32,
    pub locked_until_ms: Option<Millis>,
}

/// This node's count for one network, to share with the fleet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalCount {
    /// The network (an IPv4 address, or the /64 of an IPv6 one).
    pub network: IpAddr,
    pub window_start_ms: Millis,
    pub failures: u32,
    pub locked_until_ms: Option<Millis>,
}

/// What recording a failure did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureOutcome {
    Counted,
    /// This failure locked the address out (worth an audit row).
    LockedOut,
}

impl FailedAuthLimiter {
    pub fn new(config: RateLimitConfig) -> Self {
        FailedAuthLimiter { config, entries: Mutex::new(HashMap::new()), elsewhere: Mutex::new(HashMap::new()) }
    }

    /// Milliseconds until `key` may try again, when it is locked out (here, or by another node).
    pub fn locked_for(&self, key: impl Into<LimitKey>, now_ms: Millis) -> Option<Millis> {
        let key = key.into();
        let here = self.entries.lock().expect("limiter lock").get(&key).and_then(|entry| entry.locked_until_ms);
        let there = match &key {
            LimitKey::Network(network) => {
                self.elsewhere.lock().expect("limiter lock").get(network).and_then(|e| e.locked_until_ms)
            }
            LimitKey::LocalBrowser(_) => None,
        };
        here.max(there).filter(|until| *until > now_ms).map(|until| until - now_ms)
    }

    /// This node's counts of networks (a browser on loopback is this node's alone), for the fleet: those
    /// with failures in their current window or an active lockout.
    pub fn local_counts(&self, now_ms: Millis) -> Vec<LocalCount> {
        let entries = self.entries.lock().expect("limiter lock");
        entries
            .iter()
            .filter_map(|(key, entry)| match key {
                LimitKey::Network(network) => Some(LocalCount {
                    network: *network,
                    window_start_ms: entry.window_start_ms,
                    failures: entry.failures,
                    locked_until_ms: entry.locked_until_ms,
                }),
                LimitKey::LocalBrowser(_) => None,
            })
            .filter(|count| {
                now_ms - count.window_start_ms < self.config.window_ms
                    || count.locked_until_ms.is_some_and(|until| until > now_ms)
            })
            .collect()
    }

    /// What the other nodes counted, as the fleet last shared it (it replaces the previous view).
    pub fn set_elsewhere(&self, counts: HashMap<IpAddr, Elsewhere>) {
        *self.elsewhere.lock().expect("limiter lock") = counts;
    }

    fn failures_elsewhere(&self, key: &LimitKey) -> u32 {
        match key {
            LimitKey::Network(network) => {
                self.elsewhere.lock().expect("limiter lock").get(network).map_or(0, |e| e.failures)
            }
            LimitKey::LocalBrowser(_) => 0,
        }
    }

    /// Counts a failure of `key`; the one that brings its failures on all nodes together (this node's and
    /// what the others last shared) to the limit locks it out.
    pub fn record_failure(&self, key: impl Into<LimitKey>, now_ms: Millis) -> FailureOutcome {
        let key = key.into();
        let elsewhere = self.failures_elsewhere(&key);
        let mut entries = self.entries.lock().expect("limiter lock");
        if entries.len() >= MAX_TRACKED {
            let config = self.config;
            entries.retain(|_, entry| {
                entry.locked_until_ms.is_some_and(|until| until > now_ms)
                    || now_ms - entry.window_start_ms < config.window_ms
            });
        }
        let entry = entries.entry(key).or_insert(Entry { window_start_ms: now_ms, failures: 0, locked_until_ms: None });
        if entry.locked_until_ms.is_some_and(|until| until <= now_ms) {
            *entry = Entry { window_start_ms: now_ms, failures: 0, locked_until_ms: None };
        }
        if now_ms - entry.window_start_ms >= self.config.window_ms {
            entry.window_start_ms = now_ms;
            entry.failures = 0;
        }
        entry.failures += 1;
        if entry.failures.saturating_add(elsewhere) >= self.config.max_failures && entry.locked_until_ms.is_none() {
            entry.locked_until_ms = Some(now_ms + self.config.lockout_ms);
            return FailureOutcome::LockedOut;
        }
        FailureOutcome::Counted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn ten_failures_in_a_minute_lock_out_for_five_minutes() {
        let limiter = FailedAuthLimiter::new(RateLimitConfig::default());
        let addr = ip("203.0.113.1");
        for i in 0..9 {
            assert_eq!(limiter.record_failure(addr, 1_000 + i), FailureOutcome::Counted);
            assert_eq!(limiter.locked_for(addr, 1_000 + i), None);
        }
        assert_eq!(limiter.record_failure(addr, 2_000), FailureOutcome::LockedOut);
        assert_eq!(limiter.locked_for(addr, 2_000), Some(300_000));
        assert_eq!(limiter.locked_for(addr, 301_999), Some(1));
        assert_eq!(limiter.locked_for(addr, 302_000), None);
        assert_eq!(limiter.locked_for(ip("203.0.113.2"), 2_000), None, "other addresses are not affected");
    }

    /// In a fleet, failures counted on other nodes count here too, and their lockouts hold here.
    #[test]
    fn the_fleets_failures_and_lockouts_count_here() {
        let limiter = FailedAuthLimiter::new(RateLimitConfig::default());
        let (addr, other) = (ip("203.0.113.5"), ip("203.0.113.6"));
        let mut shared = HashMap::new();
        shared.insert(addr, Elsewhere { failures: 6, locked_until_ms: None });
        shared.insert(other, Elsewhere { failures: 10, locked_until_ms: Some(9_000) });
        limiter.set_elsewhere(shared);
        assert_eq!(limiter.locked_for(other, 1_000), Some(8_000), "locked out by another node");
        for i in 0..3 {
            assert_eq!(limiter.record_failure(addr, 1_000 + i), FailureOutcome::Counted);
        }
        assert_eq!(limiter.record_failure(addr, 1_010), FailureOutcome::LockedOut, "6 elsewhere + 4 here");
        let counts = limiter.local_counts(1_010);
        assert_eq!(
            counts,
            vec![LocalCount { network: addr, window_start_ms: 1_000, failures: 4, locked_until_ms: Some(301_010) }]
        );
        assert!(limiter.local_counts(400_000).is_empty(), "nothing current to share");
        // A browser on loopback is this node's alone: never shared.
        limiter.record_failure(LimitKey::LocalBrowser("http://evil.example".into()), 1_000);
        assert_eq!(limiter.local_counts(1_010).len(), 1);
    }

    #[test]
    fn failures_spread_over_more_than_a_window_do_not_lock() {
        let limiter = FailedAuthLimiter::new(RateLimitConfig::default());
        let addr = ip("198.51.100.1");
        for i in 0..20 {
            assert_eq!(limiter.record_failure(addr, i * 7_000), FailureOutcome::Counted, "failure {i}");
        }
        assert_eq!(limiter.locked_for(addr, 140_000), None);
    }

    #[test]
    fn lockout_ends_and_counting_starts_over() {
        let limiter = FailedAuthLimiter::new(RateLimitConfig { max_failures: 2, window_ms: 100, lockout_ms: 1_000 });
        let addr = ip("198.51.100.2");
        limiter.record_failure(addr, 0);
        assert_eq!(limiter.record_failure(addr, 1), FailureOutcome::LockedOut);
        assert_eq!(limiter.record_failure(addr, 2_000), FailureOutcome::Counted);
        assert_eq!(limiter.locked_for(addr, 2_000), None);
    }

    #[test]
    fn ipv6_clients_are_counted_per_64() {
        let limiter = FailedAuthLimiter::new(RateLimitConfig::default());
        for host in 1..=10u16 {
            limiter.record_failure(ip(&format!("2001:db8:1:2::{host:x}")), 1_000);
        }
        assert_eq!(limiter.locked_for(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"), 1_000), Some(300_000));
        assert_eq!(limiter.locked_for(ip("2001:db8:1:3::1"), 1_000), None, "another /64");
        // IPv4 stays per address, mapped or not.
        for host in 1..=9u8 {
            limiter.record_failure(ip(&format!("198.51.100.{host}")), 1_000);
        }
        limiter.record_failure(ip("::ffff:198.51.100.10"), 1_000);
        assert_eq!(limiter.locked_for(ip("198.51.100.11"), 1_000), None);
        for _ in 0..9 {
            limiter.record_failure(ip("::ffff:198.51.100.12"), 1_000);
        }
        assert_eq!(limiter.record_failure(ip("198.51.100.12"), 1_000), FailureOutcome::LockedOut);
    }

    #[test]
    fn local_clients_are_exempt_unless_browsers_which_count_per_origin() {
        let client = |ip_text: &str, local: bool, browser: bool, origin: Option<&str>| ClientAddr {
            ip: ip(ip_text),
            local,
            browser,
            origin: origin.map(str::to_owned),
        };
        assert_eq!(LimitKey::of(&client("127.0.0.1", true, false, None)), None);
        let evil = LimitKey::of(&client("127.0.0.1", true, true, Some("http://evil.example"))).unwrap();
        assert_eq!(evil, LimitKey::LocalBrowser("http://evil.example".into()));
        assert_eq!(evil.to_string(), "browser on loopback from http://evil.example");
        let bare = LimitKey::of(&client("::1", true, true, None)).unwrap();
        assert_eq!(bare.to_string(), "browser on loopback without Origin");
        let remote = LimitKey::of(&client("2001:db8:1:2::9", false, true, Some("http://evil.example"))).unwrap();
        assert_eq!(remote, LimitKey::from(ip("2001:db8:1:2::1")), "a remote browser counts by its network");
        assert_eq!(remote.to_string(), "2001:db8:1:2::/64");
        assert_eq!(LimitKey::of(&client("203.0.113.1", false, false, None)).unwrap().to_string(), "203.0.113.1");

        let limiter = FailedAuthLimiter::new(RateLimitConfig::default());
        for _ in 0..10 {
            limiter.record_failure(evil.clone(), 1_000);
        }
        assert_eq!(limiter.locked_for(evil, 1_000), Some(300_000));
        assert_eq!(limiter.locked_for(LimitKey::LocalBrowser("http://127.0.0.1:18789".into()), 1_000), None);
        assert_eq!(limiter.locked_for(bare, 1_000), None);
        assert_eq!(limiter.locked_for(ip("127.0.0.1"), 1_000), None);
    }
}
