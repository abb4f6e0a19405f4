//! The simulated world: hosts running HA engines, a network, a shared
//! statefile and a watchdog per host, under one clock.
//!
//! Time advances in steps of [`STEP`]. In each step the world delivers the
//! packets and statefile cycles that are due, fires expired watchdogs,
//! ticks every running engine, carries out their commands, and then runs
//! the checkers. Everything random comes from one seeded generator, so a
//! seed replays exactly.

use std::collections::BTreeMap;

use ha_liveness::engine::Config;
use ha_liveness::message::Global;
use ha_liveness::timeouts::TimeoutError;
use ha_liveness::{
    Command, Engine, Event, FenceCode, HostSet, Millis, PoolState, Slot, SlotRead, StatefileRead, Status, TieBreak,
    Timeouts,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::check::{Checker, Violation};
use crate::truth::{FenceRecord, Recorder};

/// One step of simulated time.
pub const STEP: Millis = 50;

/// How long a down host may stay in the others' livesets once nothing else
/// is wrong: detection on both channels, a fault handler's steps, and the
/// winners' fence wait (rule W), with a second of slack for the steps;
/// plus, when the host's last slot showed it past the survival test of a
/// round of its own, the longer wait for such a late loser (T1 and another
/// fence wait): it may have gone down inside that round; and T1 more when
/// it was last heard without the statefile (rule W).
pub fn stale_bound(t: &Timeouts) -> Millis {
    let late_loser = t.hb_timeout + t.fence_wait(false);
    let unheard_nonholder = t.hb_timeout;
    t.hb_timeout.max(t.sf_timeout)
        + 2 * t.hb_interval.max(t.sf_interval)
        + t.fence_wait(true)
        + late_loser
        + unheard_nonholder
        + 1_000
}

/// How a host is doing, physically.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Power {
    On,
    /// Crashed, fenced or powered off; `until` is when it boots again.
    Off {
        until: Option<Millis>,
    },
}

/// A statefile cycle in flight.
#[derive(Debug, Clone)]
struct Cycle {
    due: Millis,
    /// How long it takes, from when it was issued.
    latency: Millis,
    slot: Slot,
    global: Option<Global>,
}

/// What brought a host down on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FenceCause {
    /// The engine fenced, with this code.
    Engine(FenceCode),
    /// Its watchdog fired.
    Watchdog,
}

impl FenceCause {
    /// The name tables print: the engine's code, or `watchdog`.
    pub fn name(self) -> &'static str {
        match self {
            FenceCause::Engine(code) => code.name(),
            FenceCause::Watchdog => "watchdog",
        }
    }
}

/// One fence of a host: why, and the line that says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub cause: FenceCause,
    pub text: String,
}

/// One simulated host.
#[derive(Debug, Clone)]
pub struct Host {
    pub engine: Engine,
    pub power: Power,
    /// Incremented at every boot.
    pub epoch: u32,
    /// Frozen (no events, no I/O) until this time.
    pub frozen_until: Option<Millis>,
    /// Watchdog expiry (heartbeat, statefile) while armed.
    pub watchdog: [Option<Millis>; 2],
    pub armed: bool,
    cycle: Option<Cycle>,
    /// Statefile I/O fails.
    pub storage_cut: bool,
    /// Statefile I/O takes this long.
    pub sf_latency: Millis,
    /// When to retry starting HA after the engine stopped.
    restart_at: Option<Millis>,
    pub fences: Vec<Fence>,
    /// What the host's protected VMs weigh in the tie-break between equal
    /// partitions (0 unless a test sets it).
    pub priority: u32,
    /// The tie-break values last reported to the engine in this boot.
    tie_sent: Option<TieBreak>,
    /// The host's cable is plugged in (its link is up): `set_network`
    /// pulls it; partitions and one-way cuts happen beyond the link.
    pub link_up: bool,
    /// The election asked for the master lock last time (this boot).
    pub wants_master: bool,
    /// Heartbeats that reached the host while it was frozen: its socket
    /// keeps them (up to [`BACKLOG`]) and the engine reads them on waking.
    backlog: Vec<ha_liveness::Heartbeat>,
}

/// How many heartbeats a frozen host's socket buffer keeps.
const BACKLOG: usize = 256;

impl Host {
    pub fn running(&self) -> bool {
        self.power == Power::On && self.engine.is_running()
    }

    pub fn frozen(&self, now: Millis) -> bool {
        self.frozen_until.is_some_and(|t| now < t)
    }

    /// The statefile latency it suffers: the one set now, or that of the
    /// cycle in flight, whichever is longer.
    pub fn io_latency(&self) -> Millis {
        self.cycle.as_ref().map_or(0, |c| c.latency).max(self.sf_latency)
    }
}

/// The network between hosts.
#[derive(Debug, Clone, Default)]
pub struct Network {
    /// Directed links that drop everything: (from, to).
    pub cut: std::collections::BTreeSet<(usize, usize)>,
    /// Probability of losing any packet.
    pub loss: f64,
    /// Largest delivery delay.
    pub max_delay: Millis,
}

/// The shared statefile.
#[derive(Debug, Clone, Default)]
struct Statefile {
    global: Option<Global>,
    slots: Vec<Option<Slot>>,
    corrupt: Vec<bool>,
}

/// The whole world. Cloneable, so an explorer can branch from a snapshot.
#[derive(Debug, Clone)]
pub struct World {
    pub now: Millis,
    pub hosts: Vec<Host>,
    pub net: Network,
    sf: Statefile,
    /// Packets in flight: (deliver at, sequence) -> (to, heartbeat,
    /// replayed by the attacker).
    packets: BTreeMap<(Millis, u64), (usize, ha_liveness::Heartbeat, bool)>,
    /// An attacker on the network that captures every heartbeat and
    /// sends old ones again (`--replay`): it has no key, so it cannot
    /// forge or change one.
    pub replayer: Option<Replayer>,
    packet_seq: u64,
    pub rng: StdRng,
    pub checker: Checker,
    config: Config,
    /// Lines of what happened, when tracing.
    pub trace: Option<Vec<String>>,
    /// Delay before a fenced or crashed host boots again.
    pub reboot_delay: Millis,
    /// Stop at the first violation.
    pub violation: Option<Violation>,
    /// Let the hosts elect a master through the lock, as xapi does.
    pub elect_master: bool,
    /// Ground truth for the availability oracle, when recording.
    pub truth: Option<Recorder>,
}

impl World {
    /// A pool of `n` hosts with HA timeout `t_s` (lab mode: at least 3 s),
    /// HA being enabled at time 0.
    pub fn new(n: usize, t_s: u64, seed: u64) -> Result<World, TimeoutError> {
        World::with_config(n, t_s, seed, |_| {})
    }

    /// Like [`World::new`], with a chance to change the engines' config.
    pub fn with_config(n: usize, t_s: u64, seed: u64, tweak: impl Fn(&mut Config)) -> Result<World, TimeoutError> {
        let timeouts = Timeouts::derive(t_s, true)?;
        let hosts: Vec<String> = (0..n)
            .map(|i| format!("{:08x}-0000-4000-8000-{:012x}", i + 1, i + 1))
            .collect();
        let mut config = Config::new(hosts, 0, timeouts, 0x5eed_0000 + u128::from(seed), 1);
        tweak(&mut config);
        let mut world = World {
            now: 0,
            hosts: Vec::new(),
            net: Network {
                max_delay: 20,
                ..Default::default()
            },
            sf: Statefile {
                global: Some(Global {
                    pool_state: PoolState::Init,
                    generation: config.generation,
                    master: None,
                }),
                slots: vec![None; n],
                corrupt: vec![false; n],
            },
            packets: BTreeMap::new(),
            replayer: None,
            packet_seq: 0,
            rng: StdRng::seed_from_u64(seed),
            checker: Checker::new(n, stale_bound(&timeouts)),
            config,
            trace: None,
            reboot_delay: 8_000,
            violation: None,
            elect_master: true,
            truth: None,
        };
        for i in 0..n {
            let engine = world.engine(i);
            world.hosts.push(Host {
                engine,
                power: Power::On,
                epoch: 0,
                frozen_until: None,
                watchdog: [None, None],
                armed: false,
                cycle: None,
                storage_cut: false,
                sf_latency: 5,
                restart_at: None,
                priority: 0,
                tie_sent: None,
                link_up: true,
                wants_master: false,
                backlog: Vec::new(),
                fences: Vec::new(),
            });
        }
        for i in 0..n {
            world.boot(i);
        }
        Ok(world)
    }

    fn engine(&self, i: usize) -> Engine {
        let mut c = self.config.clone();
        c.me = i;
        // `boot` counts this start before the engine runs.
        c.boot = u64::from(self.hosts.get(i).map_or(0, |h| h.epoch)) + 1;
        Engine::new(c)
    }

    pub fn timeouts(&self) -> Timeouts {
        self.config.timeouts
    }

    /// Start recording the ground truth (see `truth`) from now on.
    pub fn record_truth(&mut self) {
        let mut r = Recorder::new(self.hosts.len(), &self.config.timeouts);
        r.observe(self);
        self.truth = Some(r);
    }

    /// Hosts whose slot on the statefile says they left cleanly.
    pub fn excluded(&self) -> HostSet {
        (0..self.sf.slots.len())
            .filter(|&i| self.sf.slots[i].is_some_and(|s| s.excluded))
            .collect()
    }

    fn note(&mut self, line: String) {
        if let Some(t) = &mut self.trace {
            t.push(format!("{:>8} {line}", self.now));
        }
    }

    fn boot(&mut self, i: usize) {
        let engine = self.engine(i);
        let h = &mut self.hosts[i];
        h.engine = engine;
        h.power = Power::On;
        h.epoch += 1;
        h.watchdog = [None, None];
        h.armed = false;
        h.cycle = None;
        h.frozen_until = None;
        h.restart_at = None;
        h.tie_sent = None;
        h.wants_master = false;
        h.backlog.clear();
        self.checker.booted(i);
        let now = self.now;
        if let Some(b) = self.truth.as_mut().and_then(|r| r.booted_at.get_mut(i)) {
            *b = now;
        }
        let cmds = self.hosts[i].engine.start(now);
        self.note(format!("host {i} boots (epoch {})", self.hosts[i].epoch));
        self.run_commands(i, cmds);
    }

    /// Power a host off now; it stays off until [`World::power_on`].
    pub fn power_off(&mut self, i: usize) {
        self.note(format!("FAULT power-off host {i}"));
        self.hosts[i].power = Power::Off { until: None };
        self.hosts[i].armed = false;
    }

    pub fn power_on(&mut self, i: usize) {
        if matches!(self.hosts[i].power, Power::Off { .. }) {
            self.note(format!("FAULT power-on host {i}"));
            self.boot(i);
        }
    }

    /// Cut or restore every link of host `i`, both ways.
    pub fn set_network(&mut self, i: usize, up: bool) {
        self.note(format!(
            "FAULT network of host {i} {}",
            if up { "restored" } else { "cut" }
        ));
        self.hosts[i].link_up = up;
        for j in 0..self.hosts.len() {
            if j != i {
                for link in [(i, j), (j, i)] {
                    if up {
                        self.net.cut.remove(&link);
                    } else {
                        self.net.cut.insert(link);
                    }
                }
            }
        }
    }

    /// Split the network between `group` and the rest.
    pub fn partition(&mut self, group: HostSet) {
        self.note(format!("FAULT partition {group} from the rest"));
        for i in 0..self.hosts.len() {
            for j in 0..self.hosts.len() {
                if group.contains(i) != group.contains(j) {
                    self.net.cut.insert((i, j));
                }
            }
        }
    }

    /// Cut one direction only.
    pub fn cut_link(&mut self, from: usize, to: usize) {
        self.note(format!("FAULT one-way cut {from} -> {to}"));
        self.net.cut.insert((from, to));
    }

    pub fn heal_network(&mut self) {
        self.note("FAULT network healed".into());
        self.net.cut.clear();
        self.net.loss = 0.0;
        for h in &mut self.hosts {
            h.link_up = true;
        }
    }

    pub fn set_storage(&mut self, i: usize, up: bool) {
        self.note(format!(
            "FAULT storage of host {i} {}",
            if up { "restored" } else { "cut" }
        ));
        self.hosts[i].storage_cut = !up;
    }

    /// Make every statefile access of host `i` take `ms` milliseconds.
    pub fn set_latency(&mut self, i: usize, ms: Millis) {
        self.note(format!("FAULT statefile I/O of host {i} takes {ms} ms"));
        self.hosts[i].sf_latency = ms;
    }

    pub fn corrupt_slot(&mut self, i: usize) {
        self.note(format!("FAULT slot {i} corrupted"));
        if let Some(c) = self.sf.corrupt.get_mut(i) {
            *c = true;
        }
    }

    pub fn freeze(&mut self, i: usize, for_ms: Millis) {
        self.note(format!("FAULT host {i} frozen for {for_ms} ms"));
        self.hosts[i].frozen_until = Some(self.now + for_ms);
    }

    /// Ask host `i`'s engine something from outside (xapi's scripts).
    pub fn send(&mut self, i: usize, event: Event) {
        if self.hosts[i].running() && !self.hosts[i].frozen(self.now) {
            let cmds = self.hosts[i].engine.handle(self.now, event);
            self.run_commands(i, cmds);
        }
    }

    /// Advance until `until`, or until a checker fails.
    pub fn run_until(&mut self, until: Millis) -> Result<(), Violation> {
        while self.now < until {
            self.step();
            if let Some(v) = &self.violation {
                return Err(v.clone());
            }
        }
        Ok(())
    }

    /// One step of simulated time.
    pub fn step(&mut self) {
        self.now += STEP;
        let now = self.now;
        let n = self.hosts.len();
        // Boots.
        for i in 0..n {
            if let Power::Off { until: Some(t) } = self.hosts[i].power {
                if now >= t {
                    self.boot(i);
                }
            }
            if self.hosts[i].power == Power::On && !self.hosts[i].engine.is_running() {
                match self.hosts[i].restart_at {
                    Some(t) if now >= t => self.boot(i),
                    None => self.hosts[i].restart_at = Some(now + 10_000),
                    _ => {}
                }
            }
        }
        // Watchdogs: a frozen host's watchdog is frozen with it (the
        // worst case: a watchdog thread inside the process).
        for i in 0..n {
            let h = &self.hosts[i];
            if h.power == Power::On && h.armed && !h.frozen(now) {
                if let Some(w) = h.watchdog.iter().flatten().copied().find(|&d| now > d) {
                    let line = format!("watchdog: expired at {w}");
                    self.crash(i, FenceCause::Watchdog, line);
                }
            }
        }
        // The attacker sends captured heartbeats again, to any host.
        if let Some(r) = &mut self.replayer {
            for (delay, to, hb) in r.replay(n) {
                self.packet_seq += 1;
                self.packets.insert((now + delay, self.packet_seq), (to, hb, true));
            }
        }
        // Packets: first what a host that woke up found in its socket.
        for i in 0..n {
            if !self.hosts[i].backlog.is_empty() && !self.hosts[i].frozen(now) {
                for hb in std::mem::take(&mut self.hosts[i].backlog) {
                    self.deliver(i, Event::Heartbeat(hb));
                }
            }
        }
        let due: Vec<_> = self
            .packets
            .range(..=(now, u64::MAX))
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        for (k, (to, hb, replayed)) in due {
            self.packets.remove(&k);
            if let (Some(r), false) = (&mut self.truth, replayed) {
                r.arrival(hb.from, to, now);
            }
            let h = &mut self.hosts[to];
            if h.running() && h.frozen(now) {
                if h.backlog.len() < BACKLOG {
                    h.backlog.push(hb);
                }
                continue;
            }
            self.deliver(to, Event::Heartbeat(hb));
        }
        // Statefile cycles.
        for i in 0..n {
            let due = self.hosts[i].cycle.as_ref().is_some_and(|c| now >= c.due);
            if due && self.hosts[i].power == Power::On && !self.hosts[i].frozen(now) {
                if let Some(c) = self.hosts[i].cycle.take() {
                    let result = self.statefile_io(i, c);
                    self.deliver(i, Event::Statefile(result));
                }
            }
        }
        // The tie-break values, as a host's I/O shell reports them: its
        // link state and the priority of what it runs.
        for i in 0..n {
            let tie = TieBreak {
                network: self.hosts[i].link_up,
                priority: self.hosts[i].priority,
            };
            if self.hosts[i].tie_sent != Some(tie) && self.hosts[i].running() && !self.hosts[i].frozen(now) {
                self.hosts[i].tie_sent = Some(tie);
                self.deliver(i, Event::TieBreak(tie));
            }
        }
        // Ticks.
        for i in 0..n {
            self.deliver(i, Event::Tick);
        }
        if self.elect_master {
            self.elect();
        }
        let calm: Vec<bool> = (0..n).map(|d| self.calm_but(d)).collect();
        let check = self
            .checker
            .check(now, &self.hosts)
            .and_then(|()| self.checker.stale(now, &self.hosts, &calm));
        if let Err(v) = check {
            self.note(format!("VIOLATION {v}"));
            self.violation = Some(v);
        }
        if let Some(mut r) = self.truth.take() {
            r.observe(self);
            self.truth = Some(r);
        }
    }

    /// Host `d` is down and nothing else is wrong: every other host is
    /// up, online, armed, not frozen, with timely storage and a readable
    /// slot, and no packet is lost or cut between them.
    fn calm_but(&self, d: usize) -> bool {
        let now = self.now;
        let down = self.hosts[d].power != Power::On;
        let net_ok = self.net.loss == 0.0 && self.net.cut.iter().all(|&(a, b)| a == d || b == d);
        down && net_ok
            && self.hosts.iter().enumerate().filter(|&(j, _)| j != d).all(|(j, h)| {
                h.power == Power::On
                    && !h.frozen(now)
                    && h.armed
                    && h.engine.is_online()
                    && !h.storage_cut
                    && h.io_latency() <= 50
                    && h.link_up
                    && !self.sf.corrupt.get(j).copied().unwrap_or(false)
            })
    }

    fn deliver(&mut self, i: usize, event: Event) {
        let h = &self.hosts[i];
        if h.power != Power::On || h.frozen(self.now) || !h.engine.is_running() {
            return;
        }
        let cmds = self.hosts[i].engine.handle(self.now, event);
        self.run_commands(i, cmds);
    }

    fn statefile_io(&mut self, i: usize, c: Cycle) -> Result<StatefileRead, String> {
        if self.hosts[i].storage_cut {
            return Err("I/O error".into());
        }
        if let Some(g) = c.global {
            self.sf.global = Some(g);
        }
        if let Some(s) = self.sf.slots.get_mut(i) {
            *s = Some(c.slot);
            self.sf.corrupt[i] = false;
        }
        Ok(StatefileRead {
            global: self.sf.global,
            slots: (0..self.hosts.len())
                .map(|j| match (self.sf.corrupt[j], self.sf.slots[j]) {
                    (true, _) => SlotRead::Corrupt,
                    (false, Some(s)) => SlotRead::Valid(s),
                    (false, None) => SlotRead::Empty,
                })
                .collect(),
        })
    }

    fn crash(&mut self, i: usize, cause: FenceCause, why: String) {
        self.note(format!("host {i} goes down: {why}"));
        if self.truth.is_some() {
            self.record_fence(i, cause);
        }
        let until = self.now + self.reboot_delay;
        let h = &mut self.hosts[i];
        h.fences.push(Fence { cause, text: why });
        h.power = Power::Off { until: Some(until) };
        h.armed = false;
        h.cycle = None;
    }

    /// Log host `i` going down now, before it does.
    fn record_fence(&mut self, i: usize, cause: FenceCause) {
        let live = |h: &Host| h.power == Power::On && h.engine.is_online();
        // A fencing engine already says `Fenced`: ask the last sample.
        let was_live = self
            .truth
            .as_ref()
            .and_then(|r| r.samples.last())
            .and_then(|s| s.hosts.get(i))
            .is_some_and(|h| h.live);
        let others = (0..self.hosts.len()).any(|j| j != i && live(&self.hosts[j]));
        let phase = self.hosts[i].engine.phase();
        let now = self.now;
        if let Some(r) = &mut self.truth {
            r.fences.push(FenceRecord {
                at: now,
                host: i,
                code: cause.name().to_string(),
                phase,
                booted_at: r.booted_at.get(i).copied().unwrap_or(0),
                whole_pool: was_live && !others,
            });
        }
    }

    fn run_commands(&mut self, i: usize, cmds: Vec<Command>) {
        for c in cmds {
            match c {
                Command::SendHeartbeat(hb) => {
                    for to in 0..self.hosts.len() {
                        if to == i || self.net.cut.contains(&(i, to)) {
                            continue;
                        }
                        if self.net.loss > 0.0 && self.rng.random_bool(self.net.loss.min(1.0)) {
                            continue;
                        }
                        let delay = 1 + self.rng.random_range(0..=self.net.max_delay);
                        self.packet_seq += 1;
                        self.packets
                            .insert((self.now + delay, self.packet_seq), (to, hb.clone(), false));
                        if let Some(r) = &mut self.replayer {
                            r.capture(to, hb.clone());
                        }
                    }
                }
                Command::StatefileCycle { slot, global } => {
                    let latency = self.hosts[i].sf_latency;
                    let due = self.now + latency;
                    self.hosts[i].cycle = Some(Cycle {
                        due,
                        latency,
                        slot,
                        global,
                    });
                }
                Command::Feed(w, timeout) => {
                    let k = match w {
                        ha_liveness::Watchdog::Heartbeat => 0,
                        ha_liveness::Watchdog::Statefile => 1,
                    };
                    self.hosts[i].watchdog[k] = Some(self.now + timeout);
                }
                Command::Arm => self.hosts[i].armed = true,
                Command::Disarm => self.hosts[i].armed = false,
                Command::Fence(reason) => {
                    self.crash(i, FenceCause::Engine(reason.code), format!("fenced: {reason}"));
                    return;
                }
                Command::Liveset(set) => {
                    self.note(format!("host {i} liveset {set}"));
                    let now = self.now;
                    if let Err(v) = self.checker.liveset_changed(now, i, set, &self.hosts) {
                        self.note(format!("VIOLATION {v}"));
                        self.violation = Some(v);
                    }
                }
                Command::Exited(e) => self.note(format!("host {i} HA stopped: {}", e.name())),
                Command::Log(line) => self.note(format!("host {i}: {line}")),
            }
        }
    }

    /// xapi's election: an online host that sees no lock holder in its
    /// liveset asks for the lock (the lowest index wins); a host that sees
    /// another holder stops asking.
    fn elect(&mut self) {
        for i in 0..self.hosts.len() {
            let h = &self.hosts[i];
            if !h.running() || h.frozen(self.now) || !h.engine.is_online() {
                continue;
            }
            // xapid's policy, the one copy of it (`lock::wants_lock`).
            let last = h.engine.global().and_then(|g| g.master);
            let want = ha_liveness::lock::wants_lock(&ha_liveness::lock::Election {
                me: i,
                holder: h.engine.lock_holder(),
                sf_access: h.engine.sf_access(),
                last_master: last,
                last_master_live: last.is_some_and(|m| h.engine.liveset().contains(m)),
                wanted: h.wants_master,
            });
            self.hosts[i].wants_master = want;
            let event = if want {
                Event::ProposeMaster
            } else {
                Event::ReleaseMaster
            };
            let cmds = self.hosts[i].engine.handle(self.now, event);
            self.run_commands(i, cmds);
        }
    }

    /// Hosts that are powered, running HA, not frozen, and online.
    pub fn online(&self) -> HostSet {
        (0..self.hosts.len())
            .filter(|&i| {
                let h = &self.hosts[i];
                h.running() && !h.frozen(self.now) && h.engine.is_online()
            })
            .collect()
    }

    /// Hosts whose HA engine fenced at least once.
    pub fn fenced(&self) -> HostSet {
        (0..self.hosts.len())
            .filter(|&i| !self.hosts[i].fences.is_empty())
            .collect()
    }

    pub fn status(&self, i: usize) -> &Status {
        self.hosts[i].engine.status()
    }
}

/// How many captured heartbeats the attacker keeps.
const CAPTURED: usize = 4096;

/// An attacker that records every heartbeat on the wire and, at random,
/// sends old ones again, in any order: 0.8 packets a step (50 ms) on
/// average, each from anywhere in what it has captured, the latest ones
/// likeliest (a dead host's last words are what would bring it back). A
/// packet names its receiver under the pool secret (`codec`), so the
/// attacker can send it only to the host it was sent to; relaying one
/// host's packet to another would forge a link.
#[derive(Debug, Clone)]
pub struct Replayer {
    captured: std::collections::VecDeque<(usize, ha_liveness::Heartbeat)>,
    rng: StdRng,
}

impl Replayer {
    pub fn new(seed: u64) -> Replayer {
        Replayer {
            captured: std::collections::VecDeque::new(),
            rng: StdRng::seed_from_u64(seed ^ 0x5eed_0fa7_7ac4),
        }
    }

    fn capture(&mut self, to: usize, hb: ha_liveness::Heartbeat) {
        if self.captured.len() == CAPTURED {
            self.captured.pop_front();
        }
        self.captured.push_back((to, hb));
    }

    /// The packets to send this step: (delay, to, heartbeat).
    fn replay(&mut self, hosts: usize) -> Vec<(Millis, usize, ha_liveness::Heartbeat)> {
        let len = self.captured.len();
        if len == 0 || hosts < 2 || !self.rng.random_bool(0.8) {
            return Vec::new();
        }
        // Half the time one of the last 64 packets, else any.
        let back = if self.rng.random_bool(0.5) { len.min(64) } else { len };
        let (to, hb) = self.captured[len - 1 - self.rng.random_range(0..back)].clone();
        let delay = 1 + self.rng.random_range(0..2_000);
        vec![(delay, to, hb)]
    }
}
