//! The safety checkers, run after every step of the simulation.
//!
//! - **Liveset**: a host leaves a winner's liveset only once it is down,
//!   has stopped HA (disarmed), or is frozen past its watchdog (which must
//!   then have fired); and a host that was dropped never acts armed again
//!   in the same boot.
//! - **Split brain**: no two armed, online hosts each believe they own the
//!   pool without the other.
//! - **Master**: at most one running host holds the master lock, and at
//!   most one serves as master (`Engine::master_lock_confirmed`).
//! - **Stale members** (availability): a host that is down stays in no
//!   online host's liveset longer than [`Checker::stale_bound`] once
//!   nothing else is wrong in the pool. The master would show its VMs
//!   running while they write nothing (issue 28: a host lost while the
//!   pool forms was never judged).

use std::fmt;

use ha_liveness::{HostSet, Millis};

use crate::world::{Host, Power};

/// One of the engine's answers about the master lock.
type LockQuery = fn(&ha_liveness::Engine) -> bool;

/// A broken safety property.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub at: Millis,
    pub what: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at {} ms: {}", self.at, self.what)
    }
}

/// What the checkers remember between steps.
#[derive(Debug, Clone)]
pub struct Checker {
    /// The last liveset each host announced.
    livesets: Vec<HostSet>,
    /// (dropper, dropped, dropped's boot epoch) for hosts dropped while
    /// frozen past their watchdog.
    dropped: Vec<(usize, usize, u32)>,
    /// How many liveset shrinks happened.
    pub shrinks: usize,
    /// Per host: since when it has been down while the rest of the pool
    /// was calm (see [`Checker::stale`]).
    calm_down_since: Vec<Option<Millis>>,
    /// How long a down host may stay in a liveset once the rest is calm.
    pub stale_bound: Millis,
}

fn acting(h: &Host, now: Millis) -> bool {
    h.power == Power::On && !h.frozen(now) && h.engine.is_running() && h.armed
}

impl Checker {
    /// Checkers for `n` hosts; a down host must leave every liveset within
    /// `stale_bound` of the moment the rest of the pool is calm.
    pub fn new(n: usize, stale_bound: Millis) -> Checker {
        Checker {
            livesets: vec![HostSet::EMPTY; n],
            dropped: Vec::new(),
            shrinks: 0,
            calm_down_since: vec![None; n],
            stale_bound,
        }
    }

    /// The stale-member check. `calm[d]`: host `d` is down and nothing
    /// else in the pool is wrong (every other host up, online, not frozen,
    /// with its storage; no network fault between them). Then the others
    /// must drop `d` within [`Checker::stale_bound`].
    pub fn stale(&mut self, now: Millis, hosts: &[Host], calm: &[bool]) -> Result<(), Violation> {
        for (d, &calm_now) in calm.iter().enumerate() {
            let since = &mut self.calm_down_since[d];
            if !calm_now {
                *since = None;
                continue;
            }
            let from = *since.get_or_insert(now);
            if now - from <= self.stale_bound {
                continue;
            }
            if let Some(a) = (0..hosts.len()).find(|&a| {
                a != d && acting(&hosts[a], now) && hosts[a].engine.is_online() && hosts[a].engine.liveset().contains(d)
            }) {
                return Err(Violation {
                    at: now,
                    what: format!(
                        "host {d} has been down for {} ms, the rest of the pool calm, and host {a} still holds it in its liveset {}",
                        now - from,
                        hosts[a].engine.liveset()
                    ),
                });
            }
        }
        Ok(())
    }

    /// Host `i` booted: its earlier livesets are gone with it.
    pub fn booted(&mut self, i: usize) {
        self.livesets[i] = HostSet::EMPTY;
    }

    /// Host `by` announced liveset `set`.
    pub fn liveset_changed(&mut self, now: Millis, by: usize, set: HostSet, hosts: &[Host]) -> Result<(), Violation> {
        let before = std::mem::replace(&mut self.livesets[by], set);
        let gone = before.minus(set);
        if gone.is_empty() {
            return Ok(());
        }
        self.shrinks += 1;
        for d in gone.iter() {
            let h = &hosts[d];
            let wd_fired = h.watchdog.iter().flatten().any(|&w| w <= now);
            let ok = h.power != Power::On || !h.engine.is_running() || !h.armed || (h.frozen(now) && wd_fired);
            if !ok {
                return Err(Violation {
                    at: now,
                    what: format!(
                        "host {by} dropped host {d} from its liveset while host {d} runs with fencing armed ({:?}, liveset {})",
                        h.engine.status(),
                        h.engine.liveset()
                    ),
                });
            }
            if h.power == Power::On && h.engine.is_running() && h.armed && h.frozen(now) {
                // Frozen past its watchdog: it must never act in this boot.
                self.dropped.push((by, d, h.epoch));
            }
        }
        Ok(())
    }

    /// The checks that hold at every step.
    pub fn check(&mut self, now: Millis, hosts: &[Host]) -> Result<(), Violation> {
        for &(by, d, epoch) in &self.dropped {
            let h = &hosts[d];
            if h.epoch == epoch && acting(h, now) {
                return Err(Violation {
                    at: now,
                    what: format!("host {d} was dropped by host {by} but still acts with fencing armed"),
                });
            }
        }
        let online: Vec<usize> = (0..hosts.len())
            .filter(|&i| acting(&hosts[i], now) && hosts[i].engine.is_online())
            .collect();
        for &a in &online {
            for &b in &online {
                let (la, lb) = (hosts[a].engine.liveset(), hosts[b].engine.liveset());
                if a < b && !la.contains(b) && !lb.contains(a) {
                    return Err(Violation {
                        at: now,
                        what: format!("split brain: host {a} owns liveset {la} and host {b} owns liveset {lb}"),
                    });
                }
            }
        }
        // The engine's lock, and the one xapid serves writes on (it spares
        // silent joiners): at most one host each.
        let checks: [(LockQuery, &str); 2] = [
            (ha_liveness::Engine::holds_master_lock, "all hold the master lock"),
            (ha_liveness::Engine::master_lock_confirmed, "all serve as master"),
        ];
        for (holds, what) in checks {
            let masters: Vec<usize> = online.iter().copied().filter(|&i| holds(&hosts[i].engine)).collect();
            if masters.len() > 1 {
                return Err(Violation {
                    at: now,
                    what: format!("hosts {masters:?} {what}"),
                });
            }
        }
        // Forget drops of hosts that have rebooted since.
        self.dropped.retain(|&(_, d, epoch)| hosts[d].epoch == epoch);
        Ok(())
    }
}
