//! Bounded exhaustive exploration: every fault schedule of a bounded space,
//! run in the simulated [`World`] with its checkers at every step.
//!
//! # The space
//!
//! HA is enabled at time 0 and the pool forms its liveset (by 30 s with
//! T = 10 s). From `start_ms`, at every decision point `step_ms` apart over
//! `window_ms`, the explorer chooses nothing or one fault of the alphabet
//! ([`fault::Alphabet::enabled`]: power off/on, network cut/restore of a
//! host, one-way cut/heal of a link, storage cut/restore, statefile latency
//! set to one of a few values or back to normal, a freeze of one of a few
//! lengths, a corrupt slot, a planned leave), with at most `faults` faults
//! per schedule; undoing a fault is a fault. After the window the faults
//! stay for `hold_ms`, then everything heals (power on, links, storage,
//! latency) and the pool runs `settle_ms` more. Packets are never lost;
//! with `max_delay_ms = 0` every packet takes exactly 1 ms, so a schedule
//! determines the whole run.
//!
//! # Why not `stateright`
//!
//! Driving the engines from a `stateright` model would mean writing a
//! second world (network, statefile, watchdogs, reboots, the election) and
//! second checkers for it, and hashing states the engine cannot hash (no
//! `Hash`; its timers are absolute `Millis`, so time is part of the state
//! and every tick is a transition). Its strength, interleavings of message
//! delivery, is not where the engine's decisions are: they are at timeouts,
//! which only a clocked world reaches. So this explorer runs the real
//! [`World`] and its checkers, and enumerates fault schedules by depth-first
//! search over snapshots: the world is cloned at each decision point and
//! each branch continues from the clone, so the cost is the tree of
//! schedules, not schedules × length.
//!
//! # Pruning
//!
//! States are compared by a 128-bit hash of the world's `Debug` text (every
//! field, including the time): two branches that reach the same world at the
//! same time with the same faults left have the same futures, so the second
//! is pruned (sound up to hash collisions). There is no symmetry reduction:
//! hosts are not interchangeable (the lowest index wins ties in the survival
//! rules and in the master election), so permuting hosts would not be sound.

mod fault;

use std::collections::HashMap;
use std::fmt::{self, Write};
use std::hash::{DefaultHasher, Hash, Hasher};

use ha_liveness::timeouts::TimeoutError;
use ha_liveness::{Config, HostSet, Millis};

pub use fault::{Alphabet, Fault, ParseError, Schedule, LEAVE_MS};

use crate::world::{Power, World, STEP};
use crate::Violation;

/// The bounded space of fault schedules.
#[derive(Debug, Clone)]
pub struct Space {
    pub hosts: usize,
    /// The HA timeout, in seconds (lab mode).
    pub t_s: u64,
    /// The world's seed (the HA generation; no randomness is drawn from it
    /// when `max_delay_ms` is 0).
    pub seed: u64,
    /// At most this many faults per schedule.
    pub faults: usize,
    /// The first decision point.
    pub start_ms: Millis,
    /// Between decision points.
    pub step_ms: Millis,
    /// Decision points are `start_ms + k * step_ms` below `start_ms + window_ms`.
    pub window_ms: Millis,
    /// How long faults stay after the window, before everything heals.
    pub hold_ms: Millis,
    /// How long the healed pool runs.
    pub settle_ms: Millis,
    /// Packets take 1 ms plus up to this long (0: exactly 1 ms).
    pub max_delay_ms: Millis,
    pub alphabet: Alphabet,
    /// Prune states seen before.
    pub dedup: bool,
    /// Where a path cannot branch any more (its faults are spent, or the
    /// window is over), compare states only this often: hashing a world
    /// costs about as much as 50 steps.
    pub check_ms: Millis,
    /// Keep at most this many violations (all are counted).
    pub keep: usize,
}

impl Space {
    /// `hosts` hosts, T = 10 s, `faults` faults at decision points every
    /// `step_ms` over `window_ms` from 30 s.
    pub fn new(hosts: usize, faults: usize, step_ms: Millis, window_ms: Millis) -> Space {
        Space {
            hosts,
            t_s: 10,
            seed: 0,
            faults,
            start_ms: 30_000,
            step_ms,
            window_ms,
            hold_ms: 20_000,
            settle_ms: 60_000,
            max_delay_ms: 0,
            alphabet: Alphabet {
                latencies: vec![7_000, 12_000],
                freezes: vec![8_000, 12_000],
                normal_latency: 5,
            },
            dedup: true,
            check_ms: 10_000,
            keep: 100,
        }
    }

    fn points(&self) -> usize {
        usize::try_from(self.window_ms.div_ceil(self.step_ms.max(1))).unwrap_or(usize::MAX)
    }

    fn window_end(&self) -> Millis {
        self.start_ms + self.points() as Millis * self.step_ms
    }

    fn heal_at(&self) -> Millis {
        self.window_end() + self.hold_ms
    }

    fn end(&self) -> Millis {
        self.heal_at() + self.settle_ms
    }

    fn check(&self) -> Result<(), ExploreError> {
        let bad = |why: &str| Err(ExploreError::Space(why.to_string()));
        if !(1..=64).contains(&self.hosts) {
            return bad("hosts must be between 1 and 64");
        }
        for (name, v) in [
            ("start", self.start_ms),
            ("step", self.step_ms),
            ("hold", self.hold_ms),
            ("settle", self.settle_ms),
            ("check", self.check_ms),
        ] {
            if v % STEP != 0 {
                return Err(ExploreError::Space(format!("{name} must be a multiple of {STEP} ms")));
            }
        }
        if self.step_ms <= LEAVE_MS {
            return bad("step must be longer than a planned leave (200 ms)");
        }
        if self.faults > usize::from(u8::MAX) {
            return bad("at most 255 faults");
        }
        if self.alphabet.latencies.contains(&self.alphabet.normal_latency) {
            return bad("the slow latencies must differ from the normal one");
        }
        Ok(())
    }

    /// A world at time 0, HA being enabled.
    fn root(&self, tweak: fn(&mut Config)) -> Result<World, ExploreError> {
        let mut w = World::with_config(self.hosts, self.t_s, self.seed, tweak)?;
        w.net.max_delay = self.max_delay_ms;
        for h in &mut w.hosts {
            h.sf_latency = self.alphabet.normal_latency;
        }
        Ok(w)
    }
}

/// Why exploring or replaying could not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExploreError {
    Timeout(TimeoutError),
    Space(String),
    Schedule(String),
}

impl fmt::Display for ExploreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExploreError::Timeout(e) => write!(f, "bad HA timeout: {e}"),
            ExploreError::Space(why) => write!(f, "bad space: {why}"),
            ExploreError::Schedule(why) => write!(f, "bad schedule: {why}"),
        }
    }
}

impl std::error::Error for ExploreError {}

impl From<TimeoutError> for ExploreError {
    fn from(e: TimeoutError) -> ExploreError {
        ExploreError::Timeout(e)
    }
}

/// A schedule that broke a safety property.
#[derive(Debug, Clone)]
pub struct Found {
    pub schedule: Schedule,
    pub violation: Violation,
}

/// What an exploration did.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Schedules run to their end (or to a violation).
    pub schedules: u64,
    /// Branches cut because their state was seen before.
    pub pruned: u64,
    /// Distinct states remembered.
    pub states: u64,
    /// Simulation steps taken (50 ms each).
    pub steps: u64,
    /// Every host was online with the full liveset when the window opened.
    pub formed: bool,
    /// Schedules that broke a safety property.
    pub violating: u64,
    /// The first [`Space::keep`] of them.
    pub violations: Vec<Found>,
}

/// Explore every schedule of `space` with the real survival rules.
pub fn explore(space: &Space) -> Result<Summary, ExploreError> {
    explore_with(space, |_| {})
}

/// Like [`explore`], with a chance to change the engines' config.
pub fn explore_with(space: &Space, tweak: fn(&mut Config)) -> Result<Summary, ExploreError> {
    space.check()?;
    let mut search = Search {
        space,
        seen: HashMap::new(),
        text: String::new(),
        schedule: Vec::new(),
        summary: Summary::default(),
    };
    let mut w = space.root(tweak)?;
    match search.advance(&mut w, space.start_ms) {
        Ok(()) => {
            search.summary.formed = formed(&w);
            search.node(w, 0);
        }
        Err(v) => search.found(v),
    }
    search.summary.states = search.seen.len() as u64;
    Ok(search.summary)
}

fn formed(w: &World) -> bool {
    let all = HostSet::first(w.hosts.len());
    w.online() == all && w.hosts.iter().all(|h| h.engine.liveset() == all)
}

/// The depth-first search.
struct Search<'a> {
    space: &'a Space,
    /// State hash -> fewest faults used when it was reached.
    seen: HashMap<u128, u8>,
    /// A buffer for the world's `Debug` text.
    text: String,
    /// The faults on the current path.
    schedule: Vec<(Millis, Fault)>,
    summary: Summary,
}

impl Search<'_> {
    fn advance(&mut self, w: &mut World, until: Millis) -> Result<(), Violation> {
        let before = w.now;
        let r = w.run_until(until);
        self.summary.steps += (w.now - before) / STEP;
        r
    }

    fn found(&mut self, violation: Violation) {
        self.summary.schedules += 1;
        self.summary.violating += 1;
        if self.summary.violations.len() < self.space.keep {
            self.summary.violations.push(Found {
                schedule: Schedule(self.schedule.clone()),
                violation,
            });
        }
    }

    /// Whether `w`, with `used` faults spent, is new; remembers it.
    fn fresh(&mut self, w: &World, used: usize) -> bool {
        if !self.space.dedup {
            return true;
        }
        self.text.clear();
        // Writing into a String cannot fail.
        let _ = write!(self.text, "{w:?}");
        let mut a = DefaultHasher::new();
        self.text.hash(&mut a);
        let mut b = DefaultHasher::new();
        0x9e37_79b9_u32.hash(&mut b);
        self.text.hash(&mut b);
        let key = (u128::from(a.finish()) << 64) | u128::from(b.finish());
        let used = u8::try_from(used).unwrap_or(u8::MAX);
        match self.seen.get(&key) {
            Some(&old) if old <= used => {
                self.pruned();
                false
            }
            _ => {
                self.seen.insert(key, used);
                true
            }
        }
    }

    fn pruned(&mut self) {
        self.summary.pruned += 1;
    }

    /// At decision point `point` (or past the window), explore every
    /// continuation of `w`. States are compared at every point where the
    /// path can still branch, and every `check_ms` where it cannot.
    fn node(&mut self, mut w: World, mut point: usize) {
        let s = self.space;
        let sparse = usize::try_from(s.check_ms.div_ceil(s.step_ms)).unwrap_or(1).max(1);
        while point < s.points() {
            let used = self.schedule.len();
            let branching = used < s.faults;
            if (branching || point % sparse == 0) && !self.fresh(&w, used) {
                return;
            }
            let next = s.start_ms + (point as Millis + 1) * s.step_ms;
            if branching {
                for f in s.alphabet.enabled(&w) {
                    let mut branch = w.clone();
                    self.schedule.push((w.now, f));
                    let applied = f.apply(&mut branch);
                    // A planned leave runs a little inside `apply`.
                    self.summary.steps += (branch.now - w.now) / STEP;
                    match applied.and_then(|()| self.advance(&mut branch, next)) {
                        Ok(()) => self.node(branch, point + 1),
                        Err(v) => self.found(v),
                    }
                    self.schedule.pop();
                }
            }
            if let Err(v) = self.advance(&mut w, next) {
                self.found(v);
                return;
            }
            point += 1;
        }
        self.tail(w);
    }

    /// After the window: hold, heal, settle, comparing states every
    /// `check_ms`.
    fn tail(&mut self, mut w: World) {
        let s = self.space;
        let every = s.check_ms.max(STEP);
        let mut healed = false;
        while w.now < s.end() {
            if !self.fresh(&w, s.faults) {
                return;
            }
            if !healed && w.now >= s.heal_at() {
                heal(&mut w, s.alphabet.normal_latency);
                healed = true;
            }
            let next = (w.now + every).min(if healed { s.end() } else { s.heal_at() });
            if let Err(v) = self.advance(&mut w, next) {
                self.found(v);
                return;
            }
        }
        self.summary.schedules += 1;
    }
}

/// Undo every fault: power on, links, storage, latency.
fn heal(w: &mut World, normal_latency: Millis) {
    if let Some(t) = &mut w.trace {
        t.push(format!("{:>8} HEAL everything", w.now));
    }
    for i in 0..w.hosts.len() {
        if w.hosts[i].power == (Power::Off { until: None }) {
            w.power_on(i);
        }
        if w.hosts[i].storage_cut {
            w.set_storage(i, true);
        }
        w.hosts[i].sf_latency = normal_latency;
    }
    if !w.net.cut.is_empty() {
        w.heal_network();
    }
}

/// One schedule run again, traced.
#[derive(Debug, Clone)]
pub struct Replay {
    pub violation: Option<Violation>,
    pub trace: Vec<String>,
}

/// Run `schedule` in `space` exactly as the explorer did, with a trace.
pub fn replay(space: &Space, schedule: &Schedule, tweak: fn(&mut Config)) -> Result<Replay, ExploreError> {
    space.check()?;
    let s = space;
    for &(t, f) in &schedule.0 {
        let on_point = t >= s.start_ms && t < s.window_end() && (t - s.start_ms) % s.step_ms == 0;
        if !on_point || !f.fits(s.hosts) {
            return Err(ExploreError::Schedule(format!(
                "{t} {f} is not a fault at a decision point"
            )));
        }
    }
    let mut w = s.root(tweak)?;
    w.trace = Some(Vec::new());
    let run = |w: &mut World| -> Result<(), Violation> {
        w.run_until(s.start_ms)?;
        for point in 0..s.points() {
            let now = w.now;
            for &(_, f) in schedule.0.iter().filter(|(t, _)| *t == now) {
                f.apply(w)?;
            }
            w.run_until(s.start_ms + (point as Millis + 1) * s.step_ms)?;
        }
        w.run_until(s.heal_at())?;
        heal(w, s.alphabet.normal_latency);
        w.run_until(s.end())
    };
    let violation = run(&mut w).err();
    Ok(Replay {
        violation,
        trace: w.trace.take().unwrap_or_default(),
    })
}
