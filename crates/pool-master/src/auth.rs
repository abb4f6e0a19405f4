//! Passwords: salted argon2 hashes at rest, a fast path for repeat logins,
//! and a throttle on guessing.
//!
//! `xe` logs in once per command, so a script of a thousand commands verifies
//! the same password a thousand times. Argon2 is deliberately slow (tens of
//! milliseconds), so after a successful verification we keep, in memory only,
//! an HMAC of (user, password, stored hash) under a key drawn at start-up;
//! a later login with the same password matches that HMAC in microseconds.
//! A changed hash invalidates the entry; nothing of it ever reaches disk.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Hash `password` with a fresh salt (PHC string format).
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
}

/// Verifies passwords against stored hashes, remembering recent successes.
pub struct Verifier {
    key: [u8; 32],
    recent: Mutex<HashMap<String, Vec<u8>>>,
}

impl Default for Verifier {
    fn default() -> Self {
        Verifier {
            key: rand::random(),
            recent: Mutex::new(HashMap::new()),
        }
    }
}

impl Verifier {
    fn mac(&self, user: &str, password: &str, stored: &str) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
        for part in [user, password, stored] {
            mac.update(&(part.len() as u64).to_le_bytes());
            mac.update(part.as_bytes());
        }
        mac
    }

    /// Does `password` match `stored` (a PHC hash) for `user`?
    pub fn verify(&self, user: &str, password: &str, stored: &str) -> bool {
        let cached = self.recent.lock().ok().and_then(|m| m.get(user).cloned());
        // `verify_slice` compares in constant time.
        if cached.is_some_and(|tag| self.mac(user, password, stored).verify_slice(&tag).is_ok()) {
            return true;
        }
        let ok = PasswordHash::new(stored)
            .map(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
            .unwrap_or(false);
        if ok {
            let tag = self.mac(user, password, stored).finalize().into_bytes().to_vec();
            if let Ok(mut m) = self.recent.lock() {
                m.insert(user.to_string(), tag);
            }
        }
        ok
    }
}

/// A hash no password matches in practice: an unknown user's login checks
/// against it, so it costs what a known user's does (no timing tells an
/// attacker which names exist).
pub fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| {
        let secret: [u8; 32] = rand::random();
        hash_password(&format!("{secret:?}")).unwrap_or_default()
    })
}

/// Failures a user name may have before its logins are spaced out.
const FREE_FAILURES: u32 = 3;
/// The spacing after the first throttled failure; it doubles with each
/// further one, up to [`MAX_SPACING`].
const FIRST_SPACING: Duration = Duration::from_millis(250);
const MAX_SPACING: Duration = Duration::from_secs(8);
/// A login that would wait longer than this is refused at once: the
/// queue of guesses for one name stays short.
const MAX_QUEUE: Duration = Duration::from_secs(10);
/// Names remembered at most (an attacker may try any number), and how
/// long a name's failures are remembered without a new one.
const MAX_NAMES: usize = 10_000;
const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);

/// Consecutive failed logins per user name, and when the next attempt
/// may check its password. After [`FREE_FAILURES`] failures the attempts
/// for that name are spaced out (250 ms, doubling, at most 8 s apart):
/// each waits for a slot of its own, without using the CPU, so a flood of
/// guesses from many connections checks one password per slot, while the
/// right password still gets in after a wait. A success clears the name.
#[derive(Default)]
pub struct Throttle {
    names: Mutex<HashMap<String, Failures>>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    /// When the next attempt may check its password.
    next_slot: Instant,
}

impl Failures {
    fn spacing(&self) -> Duration {
        let over = self.count.saturating_sub(FREE_FAILURES);
        if over == 0 {
            return Duration::ZERO;
        }
        FIRST_SPACING
            .saturating_mul(1u32 << (over - 1).min(16))
            .min(MAX_SPACING)
    }
}

impl Throttle {
    /// How long a login for `user` starting at `now` must wait before its
    /// password is checked, its slot taken; `None` when the queue for the
    /// name is full (refuse at once).
    pub fn admit(&self, user: &str, now: Instant) -> Option<Duration> {
        let mut names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        let Some(f) = names.get_mut(user) else {
            return Some(Duration::ZERO);
        };
        let spacing = f.spacing();
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

    /// A login for `user` failed at `now`: its consecutive failures so far.
    pub fn failed(&self, user: &str, now: Instant) -> u32 {
        let mut names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        if names.len() >= MAX_NAMES && !names.contains_key(user) {
            names.retain(|_, f| now.saturating_duration_since(f.last) < FORGET_AFTER);
            if names.len() >= MAX_NAMES {
                // Still full of fresh names: forget the ones with the
                // fewest failures first.
                let mut counts: Vec<u32> = names.values().map(|f| f.count).collect();
                counts.sort_unstable();
                let cut = counts[counts.len() / 2];
                names.retain(|_, f| f.count > cut);
            }
        }
        let f = names.entry(user.to_string()).or_insert(Failures {
            count: 0,
            last: now,
            next_slot: now,
        });
        if now.saturating_duration_since(f.last) >= FORGET_AFTER {
            f.count = 0;
        }
        f.count = f.count.saturating_add(1);
        f.last = now;
        let spacing = f.spacing();
        f.next_slot = f.next_slot.max(now + spacing);
        f.count
    }

    /// A login for `user` succeeded.
    pub fn succeeded(&self, user: &str) {
        self.names.lock().unwrap_or_else(|p| p.into_inner()).remove(user);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_right_and_refuses_wrong_passwords() {
        let stored = hash_password("s3cret").unwrap();
        assert!(stored.starts_with("$argon2"));
        let v = Verifier::default();
        assert!(!v.verify("root", "wrong", &stored));
        assert!(v.verify("root", "s3cret", &stored));
        // Second time through the fast path, and a wrong one still fails.
        assert!(v.verify("root", "s3cret", &stored));
        assert!(!v.verify("root", "s3cret2", &stored));
        // A new hash (password changed) no longer matches the old password.
        let other = hash_password("new").unwrap();
        assert!(!v.verify("root", "s3cret", &other));
        assert!(!v.verify("root", "x", "not a hash"));
    }

    #[test]
    fn guesses_for_one_name_are_spaced_out_and_a_success_clears_them() {
        let t = Throttle::default();
        let t0 = Instant::now();
        for _ in 0..FREE_FAILURES {
            assert_eq!(t.admit("root", t0), Some(Duration::ZERO));
            t.failed("root", t0);
        }
        // The 4th failure spaces the next attempts 250 ms apart, doubling.
        assert_eq!(t.admit("root", t0), Some(Duration::ZERO));
        assert_eq!(t.failed("root", t0), 4);
        assert_eq!(t.admit("root", t0), Some(FIRST_SPACING));
        // Many connections at once each get a slot of their own.
        assert_eq!(t.admit("root", t0), Some(2 * FIRST_SPACING));
        assert_eq!(t.admit("root", t0), Some(3 * FIRST_SPACING));
        // Another name is not slowed.
        assert_eq!(t.admit("admin", t0), Some(Duration::ZERO));
        // The queue is bounded.
        for _ in 0..40 {
            t.failed("root", t0);
        }
        let mut refused = false;
        for _ in 0..100 {
            refused |= t.admit("root", t0).is_none();
        }
        assert!(refused, "the queue of guesses never filled");
        t.succeeded("root");
        assert_eq!(t.admit("root", t0), Some(Duration::ZERO));
    }

    #[test]
    fn the_throttle_forgets_names_and_stays_bounded() {
        let t = Throttle::default();
        let t0 = Instant::now();
        for i in 0..(MAX_NAMES + 10) {
            t.failed(&format!("user{i}"), t0);
        }
        assert!(t.names.lock().unwrap().len() <= MAX_NAMES + 1);
        let later = t0 + FORGET_AFTER;
        assert_eq!(t.failed("user0", later), 1, "old failures are forgotten");
    }

    #[test]
    fn the_decoy_hash_is_a_real_hash_no_password_matches() {
        let v = Verifier::default();
        assert!(decoy_hash().starts_with("$argon2"));
        assert!(!v.verify("nobody", "", decoy_hash()));
    }
}
