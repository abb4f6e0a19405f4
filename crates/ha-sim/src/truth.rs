//! Ground truth: what the simulated world really was, step by step, for
//! the availability oracle (`oracle`) to judge fences against.
//!
//! When enabled with [`World::record_truth`], the world stores a [`Truth`]
//! after each step, only when something changed, plus a [`FenceRecord`]
//! for every fence and watchdog crash. Recording reads the world and never
//! touches its random generator, so a seed does the same with or without it.

use ha_liveness::{HostSet, Millis, Phase, Timeouts};

use crate::world::{Power, World};

/// How a host's statefile I/O is doing, by the latency of its cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Io {
    /// At most T2 − 2·t2 per cycle: slots stay fresh for every reader.
    Ok,
    /// Between `Ok` and `Hung`: whether slots look fresh depends on timing.
    Slow,
    /// At least Ws − t2 per cycle: the statefile watchdog is meant to fire.
    Hung,
    /// I/O fails.
    Cut,
}

/// The latency limits of the [`Io`] classes, from the timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoLimits {
    /// The longest `Ok` cycle: T2 − 2·t2.
    pub ok_max: Millis,
    /// The shortest `Hung` cycle: Ws − t2.
    pub hung_min: Millis,
}

impl IoLimits {
    pub fn new(t: &Timeouts) -> IoLimits {
        IoLimits {
            ok_max: t.sf_timeout.saturating_sub(2 * t.sf_interval),
            hung_min: t.sf_watchdog.saturating_sub(t.sf_interval),
        }
    }

    pub fn class(&self, cut: bool, latency: Millis) -> Io {
        if cut {
            Io::Cut
        } else if latency <= self.ok_max {
            Io::Ok
        } else if latency >= self.hung_min {
            Io::Hung
        } else {
            Io::Slow
        }
    }
}

/// One host at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostTruth {
    /// Powered, HA online (frozen or not).
    pub live: bool,
    /// Live and not frozen.
    pub online: bool,
    /// Powered, not frozen, HA running (starting or online).
    pub up: bool,
    pub frozen: bool,
    /// Powered off by a fault (not by a fence or a watchdog crash).
    pub off_fault: bool,
    pub io: Io,
    /// Its liveset while live, else empty.
    pub liveset: HostSet,
    /// What it offers to the tie-break between equal partitions (its link
    /// state, the priority of what it runs).
    pub tie: ha_liveness::TieBreak,
}

/// The world at one instant, valid until the next sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truth {
    pub at: Millis,
    pub hosts: Vec<HostTruth>,
    /// Per host i, the hosts j whose link i → j is cut.
    pub cut: Vec<HostSet>,
    /// The network loses packets.
    pub loss: bool,
    /// Under loss, per host i, the hosts j (link i → j not cut) that have
    /// had no heartbeat from i arrive for T1 − 2·t1 or more.
    pub flaky: Vec<HostSet>,
    /// Hosts whose slot says they left cleanly.
    pub excluded: HostSet,
}

impl Truth {
    /// Both directions between `a` and `b` are cut-free (flaky links count
    /// as working unless `flaky_broken`).
    pub fn linked(&self, a: usize, b: usize, flaky_broken: bool) -> bool {
        let one = |i: usize, j: usize| {
            let cut = self.cut.get(i).is_some_and(|s| s.contains(j));
            let flaky = flaky_broken && self.flaky.get(i).is_some_and(|s| s.contains(j));
            !cut && !flaky
        };
        one(a, b) && one(b, a)
    }

    /// Some flaky link touches a host of `among`.
    pub fn any_flaky(&self, among: HostSet) -> bool {
        self.flaky
            .iter()
            .enumerate()
            .any(|(i, s)| !s.is_empty() && (among.contains(i) || !s.and(among).is_empty()))
    }

    fn same_state(&self, o: &Truth) -> bool {
        self.hosts == o.hosts
            && self.cut == o.cut
            && self.loss == o.loss
            && self.flaky == o.flaky
            && self.excluded == o.excluded
    }
}

/// A fence or watchdog crash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FenceRecord {
    pub at: Millis,
    pub host: usize,
    /// The fence code (`SM_SURVIVALRULE_FAILED`, ...), or `watchdog`.
    pub code: String,
    /// The engine's phase when it went down.
    pub phase: Phase,
    /// When this boot of the host started.
    pub booted_at: Millis,
    /// After it, no powered host had HA online, and this one had.
    pub whole_pool: bool,
}

/// What the world records while truth recording is on.
#[derive(Debug, Clone)]
pub struct Recorder {
    pub samples: Vec<Truth>,
    pub fences: Vec<FenceRecord>,
    pub limits: IoLimits,
    /// T1 − 2·t1: silence on a lossy link this long makes it flaky.
    pub flaky_after: Millis,
    /// Per host, when its current boot started.
    pub booted_at: Vec<Millis>,
    /// Last heartbeat arrival, per (from, to).
    arrivals: Vec<Vec<Millis>>,
}

impl Recorder {
    pub fn new(n: usize, t: &Timeouts) -> Recorder {
        Recorder {
            samples: Vec::new(),
            fences: Vec::new(),
            limits: IoLimits::new(t),
            flaky_after: t.hb_timeout.saturating_sub(2 * t.hb_interval),
            booted_at: vec![0; n],
            arrivals: vec![vec![0; n]; n],
        }
    }

    /// A heartbeat from `from` arrived at `to`.
    pub fn arrival(&mut self, from: usize, to: usize, now: Millis) {
        if let Some(t) = self.arrivals.get_mut(from).and_then(|r| r.get_mut(to)) {
            *t = now;
        }
    }

    /// Store `w`'s state now, if it differs from the last sample.
    pub fn observe(&mut self, w: &World) {
        let s = self.sample(w);
        if self.samples.last().is_none_or(|l| !l.same_state(&s)) {
            self.samples.push(s);
        }
    }

    fn sample(&self, w: &World) -> Truth {
        let now = w.now;
        let n = w.hosts.len();
        let hosts = w
            .hosts
            .iter()
            .map(|h| {
                let on = h.power == Power::On;
                let frozen = on && h.frozen(now);
                let live = on && h.engine.is_online();
                HostTruth {
                    live,
                    online: live && !frozen,
                    up: on && !frozen && h.engine.is_running(),
                    frozen,
                    off_fault: h.power == (Power::Off { until: None }),
                    io: self.limits.class(h.storage_cut, h.io_latency()),
                    liveset: if live { h.engine.liveset() } else { HostSet::EMPTY },
                    tie: ha_liveness::TieBreak {
                        network: h.link_up,
                        priority: h.priority,
                    },
                }
            })
            .collect();
        let mut cut = vec![HostSet::EMPTY; n];
        for &(i, j) in &w.net.cut {
            if let Some(s) = cut.get_mut(i) {
                s.insert(j);
            }
        }
        let loss = w.net.loss > 0.0;
        let mut flaky = vec![HostSet::EMPTY; n];
        if loss {
            for (i, row) in self.arrivals.iter().enumerate() {
                for (j, &t) in row.iter().enumerate() {
                    let silent = now.saturating_sub(t) >= self.flaky_after;
                    if i != j && silent && !cut[i].contains(j) {
                        flaky[i].insert(j);
                    }
                }
            }
        }
        Truth {
            at: now,
            hosts,
            cut,
            loss,
            flaky,
            excluded: w.excluded(),
        }
    }

    /// The sample in effect at `t` (the last one taken at or before it).
    pub fn at(&self, t: Millis) -> Option<&Truth> {
        let k = self.samples.partition_point(|s| s.at <= t);
        k.checked_sub(1).and_then(|k| self.samples.get(k))
    }
}
