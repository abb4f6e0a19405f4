//! Passwords: salted argon2 hashes at rest, a fast path for repeat logins,
//! and the decoy hash unknown names are checked against (the throttle on
//! guessing is `throttle`).
//!
//! `xe` logs in once per command, so a script of a thousand commands verifies
//! the same password a thousand times. Argon2 is deliberately slow (tens of
//! milliseconds), so after a successful verification we keep, in memory only,
//! an HMAC of (user, password, stored hash) under a key drawn at start-up;
//! a later login with the same password matches that HMAC in microseconds.
//! A changed hash invalidates the entry; nothing of it ever reaches disk.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

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
    fn the_decoy_hash_is_a_real_hash_no_password_matches() {
        let v = Verifier::default();
        assert!(decoy_hash().starts_with("$argon2"));
        assert!(!v.verify("nobody", "", decoy_hash()));
    }
}
