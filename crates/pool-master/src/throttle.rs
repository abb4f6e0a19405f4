//! The throttle on password guessing: failed logins are counted per user
//! name and per network source, and once either has failed too often its
//! attempts wait for slots of their own, spaced out, without using the CPU.
//!
//! Per name, a flood of guesses from many addresses checks one password
//! per slot; per source, one address guessing across many names (the
//! names an attacker does not know) is slowed as well. The right password
//! still gets in after a wait, and a success clears its name (not its
//! source: one valid account must not reset an attacker's address).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures a user name may have before its logins are spaced out.
const FREE_PER_NAME: u32 = 3;
/// Failures one network source may have, across names, before its logins
/// are spaced out: more than a name's, as scripts and several admins may
/// share an address.
const FREE_PER_SOURCE: u32 = 20;
/// The spacing after the first throttled failure; it doubles with each
/// further one, up to [`MAX_SPACING`].
const FIRST_SPACING: Duration = Duration::from_millis(250);
const MAX_SPACING: Duration = Duration::from_secs(8);
/// A login that would wait longer than this is refused at once: the
/// queue of guesses for one name or source stays short.
const MAX_QUEUE: Duration = Duration::from_secs(10);
/// Keys remembered at most per table (an attacker may try any number of
/// names, or addresses), and how long a key's failures are remembered
/// without a new one.
const MAX_KEYS: usize = 10_000;
const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);

/// Failed logins per user name and per source address.
#[derive(Default)]
pub struct Throttle {
    names: Limiter<String>,
    sources: Limiter<IpAddr>,
}

impl Throttle {
    /// How long a login for `user` from `source` (when the call came over
    /// the network) starting at `now` must wait before its password is
    /// checked, its slots taken; `None` when a queue is full (refuse at
    /// once).
    pub fn admit(&self, user: &str, source: Option<IpAddr>, now: Instant) -> Option<Duration> {
        let source = source.map(source_key);
        let by_source = match source {
            Some(ip) => self.sources.admit(&ip, FREE_PER_SOURCE, now)?,
            None => Duration::ZERO,
        };
        let by_name = self.names.admit(&user.to_string(), FREE_PER_NAME, now)?;
        Some(by_source.max(by_name))
    }

    /// A login for `user` from `source` failed at `now`: the name's
    /// consecutive failures so far.
    pub fn failed(&self, user: &str, source: Option<IpAddr>, now: Instant) -> u32 {
        let source = source.map(source_key);
        if let Some(ip) = source {
            self.sources.failed(ip, FREE_PER_SOURCE, now);
        }
        self.names.failed(user.to_string(), FREE_PER_NAME, now)
    }

    /// A login for `user` succeeded.
    pub fn succeeded(&self, user: &str) {
        self.names.clear(&user.to_string());
    }
}

/// The key of a source: an IPv4 address, or an IPv6 address's /64 (one
/// attacker holds a whole /64 as easily as one address).
fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

/// Consecutive failures per key, and when the key's next attempt may run.
struct Limiter<K> {
    keys: Mutex<HashMap<K, Failures>>,
}

impl<K> Default for Limiter<K> {
    fn default() -> Self {
        Self {
            keys: Mutex::new(HashMap::new()),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    /// When the next attempt may check its password.
    next_slot: Instant,
}

impl Failures {
    fn spacing(&self, free: u32) -> Duration {
        let over = self.count.saturating_sub(free);
        if over == 0 {
            return Duration::ZERO;
        }
        FIRST_SPACING
            .saturating_mul(1u32 << (over - 1).min(16))
            .min(MAX_SPACING)
    }
}

impl<K: Eq + Hash + Clone> Limiter<K> {
    fn admit(&self, key: &K, free: u32, now: Instant) -> Option<Duration> {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        let Some(f) = keys.get_mut(key) else {
            return Some(Duration::ZERO);
        };
        let spacing = f.spacing(free);
        if spacing.is_zero() {
            return Some(Duration::ZERO);
        }
        let slot = f.next_slot.max(now);
        let wait = slot - now;
        if wait > MAX_QUEUE {
            return None;
        }
        f.next_slot = slot + spacing;
        Some(wait)
    }

    fn failed(&self, key: K, free: u32, now: Instant) -> u32 {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if keys.len() >= MAX_KEYS && !keys.contains_key(&key) {
            keys.retain(|_, f| now.saturating_duration_since(f.last) < FORGET_AFTER);
            if keys.len() >= MAX_KEYS {
                // Still full of fresh keys: forget the ones with the
                // fewest failures first.
                let mut counts: Vec<u32> = keys.values().map(|f| f.count).collect();
                counts.sort_unstable();
                let cut = counts[counts.len() / 2];
                keys.retain(|_, f| f.count > cut);
            }
        }
        let f = keys.entry(key).or_insert(Failures {
            count: 0,
            last: now,
            next_slot: now,
        });
        if now.saturating_duration_since(f.last) >= FORGET_AFTER {
            f.count = 0;
        }
        f.count = f.count.saturating_add(1);
        f.last = now;
        let spacing = f.spacing(free);
        f.next_slot = f.next_slot.max(now + spacing);
        f.count
    }

    fn clear(&self, key: &K) {
        self.keys.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.keys.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HERE: Option<IpAddr> = None;

    #[test]
    fn guesses_for_one_name_are_spaced_out_and_a_success_clears_them() {
        let t = Throttle::default();
        let t0 = Instant::now();
        for _ in 0..FREE_PER_NAME {
            assert_eq!(t.admit("root", HERE, t0), Some(Duration::ZERO));
            t.failed("root", HERE, t0);
        }
        // The 4th failure spaces the next attempts 250 ms apart, doubling.
        assert_eq!(t.admit("root", HERE, t0), Some(Duration::ZERO));
        assert_eq!(t.failed("root", HERE, t0), 4);
        assert_eq!(t.admit("root", HERE, t0), Some(FIRST_SPACING));
        // Many connections at once each get a slot of their own.
        assert_eq!(t.admit("root", HERE, t0), Some(2 * FIRST_SPACING));
        assert_eq!(t.admit("root", HERE, t0), Some(3 * FIRST_SPACING));
        // Another name is not slowed.
        assert_eq!(t.admit("admin", HERE, t0), Some(Duration::ZERO));
        // The queue is bounded.
        for _ in 0..40 {
            t.failed("root", HERE, t0);
        }
        let mut refused = false;
        for _ in 0..100 {
            refused |= t.admit("root", HERE, t0).is_none();
        }
        assert!(refused, "the queue of guesses never filled");
        t.succeeded("root");
        assert_eq!(t.admit("root", HERE, t0), Some(Duration::ZERO));
    }

    #[test]
    fn one_source_guessing_across_names_is_spaced_out_and_others_are_not() {
        let t = Throttle::default();
        let t0 = Instant::now();
        let attacker: Option<IpAddr> = Some("192.0.2.7".parse().unwrap());
        let admin: Option<IpAddr> = Some("192.0.2.8".parse().unwrap());
        // A different name each time: no name ever reaches its limit.
        for i in 0..FREE_PER_SOURCE {
            let name = format!("guess{i}");
            assert_eq!(t.admit(&name, attacker, t0), Some(Duration::ZERO));
            assert_eq!(t.failed(&name, attacker, t0), 1);
        }
        assert_eq!(t.admit("guess-a", attacker, t0), Some(Duration::ZERO));
        t.failed("guess-a", attacker, t0);
        // Now every attempt from that address waits for a slot, whatever
        // the name, the right one included.
        assert_eq!(t.admit("guess-b", attacker, t0), Some(FIRST_SPACING));
        assert_eq!(t.admit("root", attacker, t0), Some(2 * FIRST_SPACING));
        // Another address, and a call that did not come over the network,
        // are not slowed.
        assert_eq!(t.admit("root", admin, t0), Some(Duration::ZERO));
        assert_eq!(t.admit("root", HERE, t0), Some(Duration::ZERO));
        // A success does not clear the source.
        t.succeeded("root");
        assert!(t.admit("root", attacker, t0).unwrap() > Duration::ZERO);
        // Its queue is bounded too.
        for i in 0..40 {
            t.failed(&format!("more{i}"), attacker, t0);
        }
        let refused = (0..100).any(|_| t.admit("root", attacker, t0).is_none());
        assert!(refused, "the source's queue never filled");
        // And it is forgotten after a quiet while.
        let later = t0 + FORGET_AFTER;
        t.failed("late", attacker, later);
        assert_eq!(t.admit("late2", attacker, later), Some(Duration::ZERO));
    }

    #[test]
    fn an_ipv6_source_is_its_64() {
        let t = Throttle::default();
        let t0 = Instant::now();
        for i in 0..=FREE_PER_SOURCE {
            let ip: IpAddr = format!("2001:db8:1:2::{:x}", i + 1).parse().unwrap();
            t.failed(&format!("n{i}"), Some(ip), t0);
        }
        let same_64: IpAddr = "2001:db8:1:2:ffff::1".parse().unwrap();
        let other_64: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert!(t.admit("x", Some(same_64), t0).unwrap() > Duration::ZERO);
        assert_eq!(t.admit("x", Some(other_64), t0), Some(Duration::ZERO));
    }

    #[test]
    fn the_throttle_forgets_keys_and_stays_bounded() {
        let t = Throttle::default();
        let t0 = Instant::now();
        for i in 0..(MAX_KEYS + 10) {
            let octets = (i as u32).to_be_bytes();
            let ip = IpAddr::from([10, octets[1], octets[2], octets[3]]);
            t.failed(&format!("user{i}"), Some(ip), t0);
        }
        assert!(t.names.len() <= MAX_KEYS + 1);
        assert!(t.sources.len() <= MAX_KEYS + 1);
        let later = t0 + FORGET_AFTER;
        assert_eq!(t.failed("user0", HERE, later), 1, "old failures are forgotten");
    }
}
