//! Random fault schedules drawn from a seed, and one simulation run.
//!
//! A run enables HA on a pool of 2 to 5 hosts (T = 10 s), lets it form its
//! liveset, then injects a fault every 10 to 40 s for the run's length:
//! power cuts, network cuts (whole, one-way, partitions), packet loss,
//! storage cuts (one host or all), slow statefile I/O, corrupt slots,
//! freezes longer than T and planned shutdowns (leave, then power off). Every fault is undone after a while, and the
//! world heals completely for the last minute so the run ends settled.
//!
//! With `--boot` the whole pool first loses power at 30 s and comes back
//! with faults on some of its hosts as they boot ([`restart_pool`]): the
//! liveset forms, or not, without them.

use std::collections::BTreeMap;

use ha_liveness::timeouts::TimeoutError;
use ha_liveness::{HostSet, Millis};
use rand::Rng;

use crate::avail::{assess, AvailReport};
use crate::single::SingleFault;
use crate::world::World;
use crate::Violation;

/// What one seed did.
#[derive(Debug, Clone)]
pub struct Report {
    pub seed: u64,
    pub hosts: usize,
    pub faults: usize,
    /// Fences by their code (`SM_SURVIVALRULE_FAILED`, ...): a rise in
    /// timeouts is a loss of availability the safety checks do not see.
    pub fence_codes: BTreeMap<String, usize>,
    pub shrinks: usize,
    pub violation: Option<Violation>,
    pub trace: Vec<String>,
    /// The availability oracle's verdicts, with [`Options::avail`].
    pub avail: Option<AvailReport>,
    /// The one fault of a [`Options::single`] run.
    pub single: Option<SingleFault>,
}

/// How to run a seed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// Keep the trace.
    pub trace: bool,
    /// Record the ground truth and judge every fence (`oracle`).
    pub avail: bool,
    /// One fault on one host instead of the random schedule (`single`).
    pub single: bool,
    /// Restart the whole pool at 30 s with faults on some of its hosts as
    /// they boot, before the random schedule (`--boot`).
    pub boot: bool,
    /// An attacker replays captured heartbeats throughout (`--replay`).
    pub replay: bool,
    /// The HA timeout T in seconds ([`T_S`] when not given, `--timeout`).
    pub t_s: Option<u64>,
}

/// When a `--boot` run restarts the whole pool.
const RESTART_AT: Millis = 30_000;

/// The HA timeout of simulated pools, in seconds.
pub const T_S: u64 = 10;

/// A fault with its undo time.
pub(crate) enum Undo {
    PowerOn(usize),
    Network(usize),
    Heal,
    Storage(usize),
    StorageAll,
    Latency(usize),
}

/// Run seed `seed` for `length` ms of simulated time.
pub fn run(seed: u64, hosts: Option<usize>, length: Millis, trace: bool) -> Result<Report, TimeoutError> {
    run_with(seed, hosts, length, trace, |_| {})
}

/// Like [`run`], with a chance to change the engines' config.
pub fn run_with(
    seed: u64,
    hosts: Option<usize>,
    length: Millis,
    trace: bool,
    tweak: impl Fn(&mut ha_liveness::Config),
) -> Result<Report, TimeoutError> {
    let opts = Options {
        trace,
        ..Options::default()
    };
    run_opts(seed, hosts, length, opts, tweak)
}

/// Like [`run_with`], with every option.
pub fn run_opts(
    seed: u64,
    hosts: Option<usize>,
    length: Millis,
    opts: Options,
    tweak: impl Fn(&mut ha_liveness::Config),
) -> Result<Report, TimeoutError> {
    let mut pick = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15);
    let n = hosts.unwrap_or_else(|| pick.random_range(2..=5));
    let mut w = World::with_config(n, opts.t_s.unwrap_or(T_S), seed, tweak)?;
    if opts.trace {
        w.trace = Some(Vec::new());
    }
    if opts.avail {
        w.record_truth();
    }
    if opts.replay {
        w.replayer = Some(crate::world::Replayer::new(seed));
    }
    let single = opts.single.then(|| SingleFault::draw(&mut pick, n));
    let (mut started, mut ended) = (false, false);
    let mut faults = 0;
    let mut undo: Vec<(Millis, Undo)> = Vec::new();
    let settle = length.saturating_sub(60_000);
    let mut next_fault = 40_000 + pick.random_range(0..10_000);
    let mut restarted = !opts.boot;
    let result = loop {
        if w.now >= length {
            break Ok(());
        }
        if !restarted && w.now >= RESTART_AT {
            restarted = true;
            faults += restart_pool(&mut w, &mut pick, &mut undo, n);
        }
        if let Some(f) = &single {
            if !started && w.now >= f.at {
                started = true;
                faults += 1;
                f.start(&mut w);
            }
            if started && !ended && w.now >= f.at + f.lasts {
                ended = true;
                f.end(&mut w);
            }
        } else if w.now >= next_fault && w.now < settle {
            faults += 1;
            inject(&mut w, &mut pick, &mut undo, n);
            next_fault = w.now + pick.random_range(10_000..40_000);
        }
        undo_due(&mut w, &mut undo, settle);
        if let Err(v) = w.run_until(w.now + 1_000) {
            break Err(v);
        }
    };
    let mut fence_codes = BTreeMap::new();
    for f in w.hosts.iter().flat_map(|h| &h.fences) {
        *fence_codes.entry(f.cause.name().to_string()).or_insert(0) += 1;
    }
    let avail = w.truth.as_ref().map(|rec| {
        let budget = w.hosts.first().map_or(0, |h| h.engine.fh_budget());
        let mut flags = hosts.map(|h| format!(" --hosts {h}")).unwrap_or_default();
        for (on, flag) in [
            (opts.single, " --single"),
            (opts.boot, " --boot"),
            (opts.replay, " --replay"),
        ] {
            if on {
                flags += flag;
            }
        }
        let replay = format!("ha-sim --seed {seed}{flags} --seconds {} --trace", length / 1000);
        assess(rec, &w.timeouts(), budget, single.as_ref(), &replay)
    });
    Ok(Report {
        seed,
        hosts: n,
        faults,
        fence_codes,
        shrinks: w.checker.shrinks,
        violation: result.err(),
        trace: w.trace.take().unwrap_or_default(),
        avail,
        single,
    })
}

impl Report {
    /// How many times hosts fenced.
    pub fn fences(&self) -> usize {
        self.fence_codes.values().sum()
    }
}

/// Undo the faults whose time has come (every one from `settle` on).
pub(crate) fn undo_due(w: &mut World, undo: &mut Vec<(Millis, Undo)>, settle: Millis) {
    let now = w.now;
    let n = w.hosts.len();
    let (due, later): (Vec<_>, Vec<_>) = undo.drain(..).partition(|(t, _)| *t <= now || now >= settle);
    *undo = later;
    for (_, u) in due {
        match u {
            Undo::PowerOn(i) => w.power_on(i),
            Undo::Network(i) => w.set_network(i, true),
            Undo::Heal => w.heal_network(),
            Undo::Storage(i) => w.set_storage(i, true),
            Undo::StorageAll => {
                for i in 0..n {
                    w.set_storage(i, true);
                }
            }
            Undo::Latency(i) => w.set_latency(i, 5),
        }
    }
}

/// Power the whole pool off and on again (a site power cut), with faults
/// on 1 to n-1 of its hosts as they come up: one stays off, loses its
/// network, one direction of a link, its storage, or has slow statefile
/// I/O. Returns how many faults it injected.
fn restart_pool(w: &mut World, r: &mut impl Rng, undo: &mut Vec<(Millis, Undo)>, n: usize) -> usize {
    for i in 0..n {
        w.power_off(i);
    }
    let faulty = r.random_range(1..n.max(2));
    let mut hosts: Vec<usize> = (0..n).collect();
    for k in 0..n {
        hosts.swap(k, r.random_range(k..n));
    }
    let mut stays_off = HostSet::EMPTY;
    for &host in hosts.iter().take(faulty) {
        let back = w.now + r.random_range(5_000..120_000);
        match r.random_range(0..5) {
            0 => {
                stays_off.insert(host);
                undo.push((back, Undo::PowerOn(host)));
            }
            1 => {
                w.set_network(host, false);
                undo.push((back, Undo::Network(host)));
            }
            2 if n > 1 => {
                let other = (host + 1 + r.random_range(0..n - 1)) % n;
                w.cut_link(host, other);
                undo.push((back, Undo::Heal));
            }
            3 => {
                w.set_storage(host, false);
                undo.push((back, Undo::Storage(host)));
            }
            _ => {
                w.set_latency(host, r.random_range(500..30_000));
                undo.push((back, Undo::Latency(host)));
            }
        }
    }
    // The others come up within a few seconds of each other.
    for i in (0..n).filter(|&i| !stays_off.contains(i)) {
        undo.push((w.now + r.random_range(1_000..5_000), Undo::PowerOn(i)));
    }
    faulty
}

/// One random fault of the schedule, with its undo.
pub(crate) fn inject(w: &mut World, r: &mut impl Rng, undo: &mut Vec<(Millis, Undo)>, n: usize) {
    let host = r.random_range(0..n);
    let back = w.now + r.random_range(5_000..60_000);
    match r.random_range(0..11) {
        0 => {
            w.power_off(host);
            undo.push((back, Undo::PowerOn(host)));
        }
        10 => {
            // A planned shutdown: leave cleanly, then power off.
            w.send(host, ha_liveness::Event::Leave);
            let _ = w.run_until(w.now + 200);
            w.power_off(host);
            undo.push((back, Undo::PowerOn(host)));
        }
        1 => {
            w.set_network(host, false);
            undo.push((back, Undo::Network(host)));
        }
        2 => {
            let other = (host + 1 + r.random_range(0..n - 1)) % n;
            w.cut_link(host, other);
            undo.push((back, Undo::Heal));
        }
        3 => {
            let group: HostSet = (0..n).filter(|_| r.random_bool(0.5)).collect();
            w.partition(group);
            undo.push((back, Undo::Heal));
        }
        4 => {
            w.net.loss = r.random_range(0.05..0.5);
            undo.push((back, Undo::Heal));
        }
        5 => {
            w.set_storage(host, false);
            undo.push((back, Undo::Storage(host)));
        }
        6 => {
            for i in 0..n {
                w.set_storage(i, false);
            }
            undo.push((back, Undo::StorageAll));
        }
        7 => {
            let ms = r.random_range(500..30_000);
            w.set_latency(host, ms);
            undo.push((back, Undo::Latency(host)));
        }
        8 => w.corrupt_slot(host),
        _ => {
            let t = w.timeouts().t;
            w.freeze(host, r.random_range(t / 2..3 * t));
        }
    }
}
