//! The lease world driven by the liveset world: the leases must keep one
//! writer per VM disk even when the liveset protocol errs (issue 25).
//!
//! One seed runs both simulators in lock step. The liveset world
//! ([`crate::world`]) gets the random fault schedule of `ha-sim` (power
//! cuts, network cuts and partitions, packet loss, storage cuts, slow
//! statefile I/O, freezes, planned shutdowns) and, when asked, a survival
//! rule broken on purpose. The lease world follows it host by host:
//!
//! - a host the liveset world powers off, or whose watchdog fires, goes
//!   down with its guests; a host whose engine fences writes its fencing
//!   mark first (its guests gone), as `xapid` does; a host boots again
//!   when it does there;
//! - a frozen host's `xapid` is frozen (its fence guard still pauses its
//!   guests at the lease deadline); a storage cut fails its lease I/O, and
//!   slow statefile I/O makes its lease I/O slow;
//! - who restarts what is the liveset's call: a host that acts as master
//!   (it holds the master lock in its own eyes; with [`Masters::Every`],
//!   every online host, as after the worst split) tries to take every VM
//!   that no host of its liveset runs, and every VM whose host's lease
//!   lapsed in its eyes.
//!
//! The lease world's checker judges the guests, as alone: at most one
//! running, unpaused guest per VM at any step. The liveset world's checker
//! runs too, and its first violation (a split brain, say) is reported, not
//! fatal: the point is what the leases do after it.

use ha_lease::host::Timing;
use ha_liveness::rules::{Outcome, Views};
use ha_liveness::timeouts::TimeoutError;
use ha_liveness::Millis;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{Broken, Config, LeaseWorld, Report};
use crate::schedule::{inject, undo_due, Undo, T_S};
use crate::world::{FenceCause, Power, World};

/// A survival rule broken on purpose: every host always wins outright, so
/// both sides of any split keep their livesets.
pub fn always_wins(_: &Views) -> Outcome {
    Outcome::WonOutright
}

/// Who restarts VMs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Masters {
    /// The host holding the master lock, in its own eyes (as `xapid`).
    Lock,
    /// Every online host: two or more masters at once all the time.
    Every,
}

/// How to run one coupled seed.
#[derive(Debug, Clone, Copy)]
pub struct Setup {
    pub hosts: Option<usize>,
    pub millis: Millis,
    pub masters: Masters,
    /// The survival rule, when broken on purpose.
    pub survival: Option<fn(&Views) -> Outcome>,
    /// A lease rule broken on purpose.
    pub broken: Broken,
    /// Real guests (`super::disk`).
    pub real_guests: bool,
    pub trace: bool,
}

/// What a coupled seed found.
#[derive(Debug, Clone, Default)]
pub struct CoupledReport {
    /// The lease world's report; its `violation` is two writers of a VM.
    pub leases: Report,
    /// The liveset world's first violation, if any.
    pub liveset_violation: Option<String>,
    /// Milliseconds during which two hosts acted as master at once.
    pub two_masters_ms: u64,
    /// Engine fences mirrored into the lease world (with fencing marks).
    pub engine_fences: usize,
}

/// Run one seed of both worlds.
pub fn run(seed: u64, setup: Setup) -> Result<CoupledReport, TimeoutError> {
    let mut pick = StdRng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15);
    let n = setup.hosts.unwrap_or_else(|| pick.random_range(2..=5));
    let vms = pick.random_range(1..=6);
    let survival = setup.survival;
    let mut w = World::with_config(n, T_S, seed, |c| {
        if let Some(s) = survival {
            c.survival = s;
        }
    })?;
    if setup.trace {
        w.trace = Some(Vec::new());
    }
    let cfg = Config {
        hosts: n,
        vms,
        millis: setup.millis,
        timing: Timing::for_timeout(T_S * 1000),
        broken: setup.broken,
        real_guests: setup.real_guests,
    };
    let mut l = LeaseWorld::new(seed, cfg, setup.trace);
    l.driven = Some(vec![vec![false; vms]; n]);
    let mut out = CoupledReport::default();
    let mut mirror = Mirror {
        on: vec![true; n],
        fences: vec![0; n],
        epoch: w.hosts.iter().map(|h| h.epoch).collect(),
    };
    let settle = setup.millis.saturating_sub(60_000);
    let mut next_fault = 40_000 + pick.random_range(0..10_000);
    let mut undo: Vec<(Millis, Undo)> = Vec::new();
    while w.now < setup.millis && l.report.violation.is_none() {
        if w.now >= next_fault && w.now < settle {
            inject(&mut w, &mut pick, &mut undo, n);
            l.report.faults += 1;
            next_fault = w.now + pick.random_range(10_000..40_000);
        }
        undo_due(&mut w, &mut undo, settle);
        w.step();
        if let Some(lines) = &mut w.trace {
            for line in lines.drain(..) {
                println!("{:>9} liveset: {line}", w.now);
            }
        }
        if out.liveset_violation.is_none() {
            if let Some(v) = &w.violation {
                out.liveset_violation = Some(v.to_string());
                l.note(format!("the liveset world broke a rule: {v}"));
            }
        }
        out.engine_fences += mirror.hosts(&w, &mut l);
        let masters = wanted(&w, &mut l, setup.masters);
        if masters > 1 {
            out.two_masters_ms += crate::world::STEP;
        }
        while l.now < w.now && l.report.violation.is_none() {
            l.step();
        }
    }
    out.leases = l.report;
    Ok(out)
}

/// What the lease world last took from the liveset world, per host.
struct Mirror {
    on: Vec<bool>,
    fences: Vec<usize>,
    epoch: Vec<u32>,
}

impl Mirror {
    /// Carry each host's power, freeze and storage over; the engine
    /// fences carried over.
    fn hosts(&mut self, w: &World, l: &mut LeaseWorld) -> usize {
        let mut fenced = 0;
        for (i, h) in w.hosts.iter().enumerate() {
            let on = h.power == Power::On;
            if self.on[i] && !on {
                let engine_fence = h.fences.len() > self.fences[i]
                    && h.fences
                        .last()
                        .is_some_and(|f| matches!(f.cause, FenceCause::Engine(_)));
                if engine_fence && l.hosts[i].up && !l.hosts[i].fencing {
                    fenced += 1;
                    l.fence(i);
                } else {
                    l.power_off(i);
                }
            }
            self.fences[i] = h.fences.len();
            self.on[i] = on;
            // A new boot there: the host boots here once it is down (a
            // fencing mark may still be on its way).
            if on && h.epoch != self.epoch[i] {
                if l.hosts[i].up && !l.hosts[i].fencing {
                    l.power_off(i);
                }
                if !l.hosts[i].up && !l.hosts[i].fencing {
                    l.hosts[i].down_until = l.now;
                    self.epoch[i] = h.epoch;
                }
            }
            let host = &mut l.hosts[i];
            host.frozen_until = h.frozen_until.unwrap_or(0);
            host.cut_until = if h.storage_cut { Millis::MAX } else { 0 };
            host.slow_until = if h.io_latency() > 1_000 { Millis::MAX } else { 0 };
        }
        fenced
    }
}

/// Set which host would start which VM now; returns how many hosts act as
/// master.
fn wanted(w: &World, l: &mut LeaseWorld, masters: Masters) -> usize {
    let n = w.hosts.len();
    let vms = l.cfg.vms;
    let mut acting = 0;
    let mut wanted = vec![vec![false; vms]; n];
    for (h, host) in w.hosts.iter().enumerate() {
        let e = &host.engine;
        let master = match masters {
            Masters::Lock => e.holds_master_lock(),
            Masters::Every => e.is_online(),
        };
        if !host.running() || host.frozen(w.now) || !e.is_online() || !master {
            continue;
        }
        acting += 1;
        let live = e.liveset();
        for (vm, want) in wanted[h].iter_mut().enumerate() {
            let run_by = (0..n).find(|&p| l.hosts[p].up && l.hosts[p].guests[vm].is_some());
            *want = match run_by {
                None => true,
                Some(p) if p == h => false,
                Some(p) => !live.contains(p) || l.hosts[h].observers[p].expired(),
            };
        }
    }
    l.driven = Some(wanted);
    acting
}

impl LeaseWorld {
    /// The host loses its power now: its guests die, its I/O in flight
    /// fails (writes on their way still land); it stays down until booted.
    fn power_off(&mut self, h: usize) {
        if !self.hosts[h].up {
            return;
        }
        self.go_down(h, Millis::MAX);
        self.note(format!("host {h} goes down with its host in the liveset world"));
    }
}
