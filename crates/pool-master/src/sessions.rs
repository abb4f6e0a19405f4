//! Sessions: issued at login, checked on every call, expired when idle.
//!
//! Sessions live in the memory of the host that issued them, as in XAPI: a
//! restart of the master invalidates them (`SESSION_INVALID`), and clients log
//! in again. The table is bounded; past [`MAX_SESSIONS`] the least recently
//! used session is dropped.
//!
//! A session may hold one [`Subscription`] of the legacy event API
//! (`event.register`/`event.next`), which goes with it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The most sessions kept at once.
pub const MAX_SESSIONS: usize = 10_000;

/// Who a session speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A user who logged in with a password.
    User(String),
    /// A pool member, authenticated with the pool secret.
    Member(String),
}

/// What `event.register` asked for on a session, and where its next
/// `event.next` reads from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subscription {
    /// `*`, a class (`vm`) or an object (`vm/OpaqueRef:...`), as given
    /// (classes lowercased), without repeats.
    pub classes: Vec<String>,
    /// The places in the pool database's event log and in the task log.
    pub cursor: (u64, u64),
}

#[derive(Debug)]
struct Session {
    principal: Principal,
    last_used: Instant,
    subscription: Option<Subscription>,
}

/// The session table of one host.
pub struct Sessions {
    idle_timeout: Duration,
    table: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    pub fn new(idle_timeout: Duration) -> Self {
        Sessions {
            idle_timeout,
            table: Mutex::new(HashMap::new()),
        }
    }

    /// Open a session and return its reference.
    pub fn open(&self, principal: Principal) -> String {
        let reference = format!("OpaqueRef:{}", uuid::Uuid::new_v4());
        let now = Instant::now();
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        table.retain(|_, s| now.duration_since(s.last_used) < self.idle_timeout);
        if table.len() >= MAX_SESSIONS {
            if let Some(oldest) = table.iter().min_by_key(|(_, s)| s.last_used).map(|(k, _)| k.clone()) {
                table.remove(&oldest);
            }
        }
        table.insert(
            reference.clone(),
            Session {
                principal,
                last_used: now,
                subscription: None,
            },
        );
        reference
    }

    /// The principal of a live session, refreshing its idle timer.
    pub fn check(&self, reference: &str) -> Option<Principal> {
        let now = Instant::now();
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let session = table.get_mut(reference)?;
        if now.duration_since(session.last_used) >= self.idle_timeout {
            table.remove(reference);
            return None;
        }
        session.last_used = now;
        Some(session.principal.clone())
    }

    /// Run `f` on the subscription of live session `reference` (with the
    /// table locked, so that two calls of one session take turns); `None`
    /// when there is no such session.
    pub fn with_subscription<R>(&self, reference: &str, f: impl FnOnce(&mut Option<Subscription>) -> R) -> Option<R> {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let session = table.get_mut(reference)?;
        Some(f(&mut session.subscription))
    }

    pub fn close(&self, reference: &str) -> bool {
        self.table
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(reference)
            .is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_open_check_close_and_expire() {
        let s = Sessions::new(Duration::from_millis(50));
        let r = s.open(Principal::User("root".into()));
        assert_eq!(s.check(&r), Some(Principal::User("root".into())));
        assert!(s.close(&r));
        assert_eq!(s.check(&r), None);
        let r2 = s.open(Principal::User("root".into()));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(s.check(&r2), None, "idle session must expire");
    }

    #[test]
    fn a_subscription_goes_with_its_session() {
        let s = Sessions::new(Duration::from_secs(60));
        let r = s.open(Principal::User("root".into()));
        assert_eq!(s.with_subscription(&r, |sub| sub.clone()), Some(None));
        s.with_subscription(&r, |sub| {
            *sub = Some(Subscription {
                classes: vec!["vm".into()],
                cursor: (1, 2),
            })
        });
        assert_eq!(
            s.with_subscription(&r, |sub| sub.as_ref().map(|x| x.cursor)),
            Some(Some((1, 2)))
        );
        assert!(s.close(&r));
        assert_eq!(s.with_subscription(&r, |sub| sub.clone()), None);
    }
}
