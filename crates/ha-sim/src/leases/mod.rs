//! The lease world (issue 25, `docs/LEASES.md`): hosts that hold VM leases
//! on a shared SR, run the VMs' guests while they hold them, and take the
//! VMs of hosts whose host lease expired, under crashes, frozen `xapid`s,
//! slow and failing SR I/O and clock-rate error. There is no liveset here:
//! every host is its own master and contends for every VM it sees free,
//! which is worse than any split the liveset protocol can make.
//!
//! The checker judges the guests, not the protocol's beliefs: at every step
//! at most one host may have a running, unpaused guest of a VM (a guest
//! writes its disk all the time it runs). [`Broken`] weakens one rule at a
//! time to show the checker catches it.
//!
//! What is modelled: each file of the SR (host lease files, per-VM Disk
//! Paxos blocks and owner files) is written whole and atomically at one
//! instant inside its write's interval, and a read of several files samples
//! each at its own instant inside the read's interval (nothing is read at
//! one moment); a storage cut fails I/O after `io`; writes of a host that
//! crashed still land; each host's clock runs fast or slow by up to ρ; the
//! fence guard pauses a host's guests at its lease deadline on that host's
//! clock whether `xapid` is frozen or not, and a paused guest runs again
//! only after `vm::may_resume`.
//!
//! `storage`: the SR, its files and the I/O; `xapid`: what each host's
//! daemon does; here: the world, its faults, the guard and the checker.

pub mod coupled;
mod disk;
mod storage;
mod xapid;

use ha_lease::host::{Holder, Observer, Timing};
use ha_lease::paxos::{Owner, Round};
use ha_lease::vm::LeaseRecord;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use storage::{Op, Sr};

pub type Millis = u64;

/// The world's step.
const STEP: Millis = 10;
/// How often a host tries to take a VM it does not run (its clock).
const ACQUIRE_EVERY: Millis = 400;
/// About how often a host stops one of its running guests and releases
/// its VM (a clean shutdown or a migration away).
const RELEASE_EVERY: Millis = 8_000;

/// One rule weakened on purpose.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Broken {
    /// Acquirers judge a host lease expired after this long instead of L.
    pub observer_l: Option<Millis>,
    /// The guard pauses guests this long after the lease deadline.
    pub guard_late: Millis,
    /// A paused guest runs again without looking for a later instance.
    pub resume_unchecked: bool,
    /// A decided instance counts without reading the old owner's lease
    /// again (step 4 skipped).
    pub recheck_skipped: bool,
    /// A host marks a VM released before its guest has stopped (the guest
    /// stops once the mark is written).
    pub release_early: bool,
    /// A fencing host writes its fencing mark before its guests are gone
    /// (they die when it goes down).
    pub fence_mark_early: bool,
    /// An acquisition starts its guest though this host's own lease lapsed
    /// since its step 1.
    pub lapse_ignored: bool,
    /// Real guests: the guard pauses them and never kills them. (With the
    /// reset still on, the model's guard resets a host whose paused guest
    /// has a write on its way, which a real guard can learn only from a
    /// killed guest that has not exited; with [`Broken::reset_skipped`]
    /// too, this is the design before real guests: a pause alone.)
    pub kill_skipped: bool,
    /// Real guests: the guard never resets the host.
    pub reset_skipped: bool,
    /// Real guests: the guard resets the host this long after the reset
    /// time.
    pub reset_late: Millis,
}

/// One run's set-up.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    pub hosts: usize,
    pub vms: usize,
    pub millis: Millis,
    pub timing: Timing,
    pub broken: Broken,
    /// Real guests (QEMU processes, `disk.rs`): a write on its way lands
    /// whatever happens to the process, and the guard escalates.
    pub real_guests: bool,
}

/// What a run found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The first time two hosts ran one VM's guest at once.
    pub violation: Option<String>,
    /// Faults injected.
    pub faults: usize,
    /// VMs started by a host that took them from another.
    pub takeovers: usize,
    /// Guests stopped with their VM marked released.
    pub released: usize,
    /// Hosts that fenced and wrote the fencing mark.
    pub fences: usize,
    /// Paused guests that ran again, and paused guests killed.
    pub resumed: usize,
    pub killed: usize,
    /// Real guests: hosts reset because a killed guest had not exited.
    pub resets: usize,
    /// VM-milliseconds with no running guest, of `span_ms`.
    pub down_ms: u64,
    pub span_ms: u64,
    pub lines: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GuestState {
    Running,
    Paused { since: Millis },
}

#[derive(Debug, Clone, Copy)]
struct Guest {
    /// Guests are numbered in the order they start (the disk checker).
    id: u64,
    instance: u64,
    state: GuestState,
    /// A look for later instances is in flight.
    checking: bool,
}

/// An acquisition in progress.
#[derive(Debug, Clone)]
struct Acquiring {
    /// The instance the old owner holds, and the old owner.
    from: (u64, Option<Owner>),
    /// The old owner's lease file when it was judged free.
    judged: Option<LeaseRecord>,
    round: Option<Round>,
    decided: Option<Owner>,
    /// The old owner had marked the VM released: no recheck is needed
    /// (it takes the VM again only through Paxos).
    released: bool,
    /// When step 1 was issued (this host's clock).
    began: Millis,
}

struct Host {
    up: bool,
    /// Deciding to fence: its guests are gone, its mark on the way.
    fencing: bool,
    boot: u64,
    down_until: Millis,
    frozen_until: Millis,
    /// Clock-rate error, parts per million.
    rate_ppm: i64,
    slow_until: Millis,
    cut_until: Millis,
    holder: Holder,
    counter: u64,
    renewing: bool,
    next_renew: Millis,
    observers: Vec<Observer>,
    /// The same reads judged with [`Broken::observer_l`].
    short_observers: Vec<Observer>,
    records: Vec<Option<LeaseRecord>>,
    observing: Vec<bool>,
    next_observe: Millis,
    guests: Vec<Option<Guest>>,
    acquiring: Option<Acquiring>,
    next_acquire: Millis,
    next_vm: usize,
    /// Highest ballot seen per VM.
    seen: Vec<u64>,
    /// Real guests: guests killed for a release, waiting to exit before
    /// the mark: (VM, guest, instance).
    releasing: Vec<(usize, u64, u64)>,
    /// Real guests: a fencing host waiting (since, its clock) for its
    /// guests to exit before its mark.
    fence_began: Option<Millis>,
    /// The highest instance of each VM this boot marked released: spent,
    /// whatever the owner files (which may lag) say.
    released: Vec<u64>,
}

/// The world.
pub struct LeaseWorld {
    cfg: Config,
    rng: StdRng,
    now: Millis,
    sr: Sr,
    hosts: Vec<Host>,
    ops: Vec<Op>,
    next_fault: Millis,
    pub report: Report,
    trace: bool,
    /// Driven by the liveset world (`coupled`): no faults of its own, and
    /// a host takes VM `v` only while `wanted[host][v]`.
    driven: Option<Vec<Vec<bool>>>,
    /// Real guests' writes on their way, the newest guest whose write
    /// landed per VM, and the next guest's number.
    disk: Vec<disk::DiskWrite>,
    newest_write: Vec<u64>,
    next_guest: u64,
}

impl LeaseWorld {
    pub fn new(seed: u64, cfg: Config, trace: bool) -> LeaseWorld {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x1ea5e);
        let n = cfg.hosts;
        let rho = cfg.timing.rho_ppm as i64;
        let hosts = (0..n)
            .map(|h| {
                let mut host = Host::fresh(&cfg, 1, 0);
                host.rate_ppm = rng.random_range(-rho..=rho);
                // Each VM starts on host vm % n, instance 1, running.
                for vm in 0..cfg.vms {
                    if vm % n == h {
                        host.guests[vm] = Some(Guest {
                            id: vm as u64 + 1,
                            instance: 1,
                            state: GuestState::Running,
                            checking: false,
                        });
                    }
                }
                host
            })
            .collect();
        let owners = (0..cfg.vms)
            .map(|vm| {
                (0..n)
                    .map(|_| {
                        Some((
                            1,
                            Owner {
                                host: (vm % n) as u16,
                                boot: 1,
                            },
                        ))
                    })
                    .collect()
            })
            .collect();
        let mut w = LeaseWorld {
            cfg,
            rng,
            now: 0,
            sr: Sr {
                leases: vec![None; n],
                blocks: vec![vec![None; n]; cfg.vms],
                owners,
                released: vec![vec![None; n]; cfg.vms],
                fenced: vec![None; n],
            },
            hosts,
            ops: Vec::new(),
            next_fault: 5_000,
            report: Report::default(),
            trace,
            driven: None,
            disk: Vec::new(),
            newest_write: vec![0; cfg.vms],
            next_guest: cfg.vms as u64 + 1,
        };
        // The hosts held their leases before the run began.
        for h in 0..n {
            let local = w.local(h);
            w.hosts[h].holder.renewed(local, local);
            w.sr.leases[h] = Some(LeaseRecord { boot: 1, counter: 0 });
        }
        w
    }

    /// Host `h`'s clock now.
    pub(super) fn local(&self, h: usize) -> Millis {
        let ppm = self.hosts[h].rate_ppm;
        let skew = (self.now as i128 * ppm as i128) / 1_000_000;
        (self.now as i128 + skew).max(0) as Millis
    }

    pub(super) fn note(&mut self, line: String) {
        if self.trace {
            println!("{:>9} {line}", self.now);
        }
        self.report.lines.push(line);
        if self.report.lines.len() > 200 {
            self.report.lines.remove(0);
        }
    }

    /// Run to the end or the first violation.
    pub fn run(mut self) -> Report {
        while self.now < self.cfg.millis && self.report.violation.is_none() {
            self.step();
        }
        self.report
    }

    fn step(&mut self) {
        self.now += STEP;
        self.faults();
        self.io();
        if self.cfg.real_guests {
            self.land_disk_writes();
        }
        for h in 0..self.hosts.len() {
            self.host_step(h);
        }
        self.guard();
        if self.cfg.real_guests {
            self.guest_writes();
        }
        self.check();
    }

    // ---- faults ----

    fn faults(&mut self) {
        for h in 0..self.hosts.len() {
            if !self.hosts[h].up && self.now >= self.hosts[h].down_until {
                let boot = self.hosts[h].boot + 1;
                let rate = self.hosts[h].rate_ppm;
                let local = self.local(h);
                self.hosts[h] = Host::fresh(&self.cfg, boot, local);
                self.hosts[h].rate_ppm = rate;
                self.note(format!("host {h} boots (boot {boot})"));
            }
        }
        if self.driven.is_some() || self.now < self.next_fault || self.now + 20_000 > self.cfg.millis {
            return;
        }
        self.next_fault = self.now + self.rng.random_range(3_000..12_000);
        let h = self.rng.random_range(0..self.hosts.len());
        if !self.hosts[h].up {
            return;
        }
        self.report.faults += 1;
        let io = self.cfg.timing.io;
        if self.hosts[h].fencing || self.now < self.hosts[h].frozen_until {
            return;
        }
        match self.rng.random_range(0..5) {
            0 => {
                let down = self.rng.random_range(2 * io + 1_000..15_000);
                self.go_down(h, self.now + down);
                self.note(format!("FAULT host {h} powered off for {down} ms"));
            }
            1 => {
                let d = self.rng.random_range(1_000..15_000);
                self.hosts[h].frozen_until = self.now + d;
                self.note(format!("FAULT host {h}'s xapid frozen for {d} ms"));
            }
            2 => {
                let d = self.rng.random_range(2_000..20_000);
                self.hosts[h].slow_until = self.now + d;
                self.note(format!("FAULT host {h}'s storage slow for {d} ms"));
            }
            3 => {
                let d = self.rng.random_range(2_000..20_000);
                self.hosts[h].cut_until = self.now + d;
                self.note(format!("FAULT host {h}'s storage cut for {d} ms"));
            }
            _ => self.fence(h),
        }
    }

    /// Host `h` goes down now until `until` (its power, or a reset): its
    /// guests die, its I/O in flight fails (its lease-file writes on their
    /// way still land, real guests' disk writes as `disk.rs` says).
    pub(super) fn go_down(&mut self, h: usize, until: Millis) {
        let host = &mut self.hosts[h];
        host.up = false;
        host.fencing = false;
        host.down_until = until;
        host.guests.iter_mut().for_each(|g| *g = None);
        for op in self.ops.iter_mut().filter(|o| o.host == h) {
            op.reads.clear();
            op.failed = true;
        }
        self.drop_disk_writes(h);
    }

    /// Host `h` decides to fence (the liveset told it to): it kills its
    /// guests, writes its fencing mark, and goes down once the write ended.
    /// Real guests must have exited first (`disk.rs`).
    fn fence(&mut self, h: usize) {
        self.hosts[h].fencing = true;
        if !self.cfg.broken.fence_mark_early {
            self.hosts[h].guests.iter_mut().for_each(|g| *g = None);
        }
        let boot = self.hosts[h].boot;
        self.note(format!("FAULT host {h} fences (boot {boot})"));
        if self.cfg.real_guests && !self.cfg.broken.fence_mark_early {
            self.hosts[h].fence_began = Some(self.local(h));
        } else {
            self.fence_mark(h);
        }
    }

    /// Write host `h`'s fencing mark (its guests are gone).
    fn fence_mark(&mut self, h: usize) {
        let boot = self.hosts[h].boot;
        self.issue(
            h,
            storage::Purpose::FenceMark,
            vec![(storage::File::Fenced(h), storage::Value::Fenced(Some(boot)))],
            vec![],
        );
    }

    /// The fencing mark's write ended (landed or failed): the host goes down.
    pub(super) fn on_fence_mark(&mut self, h: usize) {
        self.report.fences += 1;
        let down = self.rng.random_range(2 * self.cfg.timing.io + 1_000..15_000);
        let driven = self.driven.is_some();
        let host = &mut self.hosts[h];
        host.up = false;
        host.fencing = false;
        // Driven, it boots when its host in the liveset world does.
        host.down_until = if driven { Millis::MAX } else { self.now + down };
        host.guests.iter_mut().for_each(|g| *g = None);
        self.drop_disk_writes(h);
        self.note(format!("host {h} is down after its fencing mark, for {down} ms"));
    }

    // ---- the fence guard and the checker ----

    /// Each host's guard pauses its guests past the lease deadline, on its
    /// own clock, frozen `xapid` or not.
    fn guard(&mut self) {
        let late = self.cfg.broken.guard_late;
        for h in 0..self.hosts.len() {
            if !self.hosts[h].up {
                continue;
            }
            let local = self.local(h);
            let deadline = self.hosts[h].holder.deadline().map(|d| d + late);
            let held = deadline.is_some_and(|d| local < d);
            let mut paused = Vec::new();
            for (vm, g) in self.hosts[h].guests.iter_mut().enumerate() {
                if let Some(g) = g {
                    if g.state == GuestState::Running && !held {
                        g.state = GuestState::Paused { since: local };
                        paused.push(vm);
                    }
                }
            }
            for vm in paused {
                self.note(format!("host {h}'s guard pauses VM {vm}"));
            }
            if self.cfg.real_guests {
                self.escalate(h);
            }
        }
    }

    fn check(&mut self) {
        for vm in 0..self.cfg.vms {
            let writers: Vec<usize> = (0..self.hosts.len())
                .filter(|&h| {
                    self.hosts[h].up && self.hosts[h].guests[vm].is_some_and(|g| g.state == GuestState::Running)
                })
                .collect();
            self.report.span_ms += STEP;
            if writers.is_empty() {
                self.report.down_ms += STEP;
            }
            if writers.len() > 1 && self.report.violation.is_none() {
                let v = format!("at {} ms VM {vm} runs on hosts {writers:?} at once", self.now);
                self.note(format!("VIOLATION {v}"));
                self.report.violation = Some(v);
            }
        }
    }
}

impl Host {
    fn fresh(cfg: &Config, boot: u64, local: Millis) -> Host {
        let short = Timing {
            l: cfg.broken.observer_l.unwrap_or(cfg.timing.l),
            ..cfg.timing
        };
        Host {
            up: true,
            fencing: false,
            boot,
            down_until: 0,
            frozen_until: 0,
            rate_ppm: 0,
            slow_until: 0,
            cut_until: 0,
            holder: Holder::new(cfg.timing),
            counter: 0,
            renewing: false,
            next_renew: local,
            observers: vec![Observer::new(cfg.timing); cfg.hosts],
            short_observers: vec![Observer::new(short); cfg.hosts],
            records: vec![None; cfg.hosts],
            observing: vec![false; cfg.hosts],
            next_observe: local,
            guests: vec![None; cfg.vms],
            acquiring: None,
            next_acquire: local + ACQUIRE_EVERY,
            next_vm: 0,
            seen: vec![0; cfg.vms],
            released: vec![0; cfg.vms],
            releasing: Vec::new(),
            fence_began: None,
        }
    }
}

/// Run one seed: 2 to 5 hosts and 1 to 6 VMs by the seed unless given.
pub fn run(seed: u64, hosts: Option<usize>, millis: Millis, timing: Timing, broken: Broken, trace: bool) -> Report {
    run_guests(seed, hosts, millis, timing, broken, false, trace)
}

/// [`run`], with real guests (`disk.rs`) when `real_guests`.
pub fn run_guests(
    seed: u64,
    hosts: Option<usize>,
    millis: Millis,
    timing: Timing,
    broken: Broken,
    real_guests: bool,
    trace: bool,
) -> Report {
    let mut rng = StdRng::seed_from_u64(seed);
    let hosts = hosts.unwrap_or_else(|| rng.random_range(2..=5));
    let vms = rng.random_range(1..=6);
    let cfg = Config {
        hosts,
        vms,
        millis,
        timing,
        broken,
        real_guests,
    };
    LeaseWorld::new(seed, cfg, trace).run()
}
