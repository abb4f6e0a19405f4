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

use ha_lease::host::{Holder, Observer, Timing};
use ha_lease::paxos::{Block, Next, Outcome, Owner, Round};
use ha_lease::vm::{self, LeaseRecord};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub type Millis = u64;

/// The world's step.
const STEP: Millis = 10;
/// How often a host tries to take a VM it does not run (its clock).
const ACQUIRE_EVERY: Millis = 400;

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
}

/// One run's set-up.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    pub hosts: usize,
    pub vms: usize,
    pub millis: Millis,
    pub timing: Timing,
    pub broken: Broken,
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
    /// Paused guests that ran again, and paused guests killed.
    pub resumed: usize,
    pub killed: usize,
    /// VM-milliseconds with no running guest, of `span_ms`.
    pub down_ms: u64,
    pub span_ms: u64,
    pub lines: Vec<String>,
}

/// A file of the SR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum File {
    Lease(usize),
    Block { vm: usize, host: usize },
    Owner { vm: usize, host: usize },
}

/// A file's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Value {
    Lease(Option<LeaseRecord>),
    Block(Option<Block>),
    Owner(Option<(u64, Owner)>),
}

struct Sr {
    leases: Vec<Option<LeaseRecord>>,
    blocks: Vec<Vec<Option<Block>>>,
    owners: Vec<Vec<Option<(u64, Owner)>>>,
}

impl Sr {
    fn get(&self, f: File) -> Value {
        match f {
            File::Lease(h) => Value::Lease(self.leases[h]),
            File::Block { vm, host } => Value::Block(self.blocks[vm][host]),
            File::Owner { vm, host } => Value::Owner(self.owners[vm][host]),
        }
    }

    fn put(&mut self, f: File, v: Value) {
        match (f, v) {
            (File::Lease(h), Value::Lease(x)) => self.leases[h] = x,
            (File::Block { vm, host }, Value::Block(x)) => self.blocks[vm][host] = x,
            (File::Owner { vm, host }, Value::Owner(x)) => self.owners[vm][host] = x,
            _ => {}
        }
    }
}

/// Why a host issued an I/O.
#[derive(Debug, Clone)]
enum Purpose {
    Renew,
    Observe(usize),
    /// Step 1: the owner files and blocks of a VM.
    ReadOwner(usize),
    /// A Disk Paxos write and the read of every block after it.
    Paxos(usize),
    /// Step 4: the old owner's lease read again.
    Recheck(usize),
    /// Step 3: the decided owner written to this host's owner file.
    Record,
    /// A paused guest's look for later instances.
    Resume(usize),
}

/// One I/O in flight.
struct Op {
    host: usize,
    boot: u64,
    purpose: Purpose,
    issue_local: Millis,
    done_real: Millis,
    failed: bool,
    /// Writes not yet landed: (real time, file, value).
    writes: Vec<(Millis, File, Value)>,
    /// Reads not yet sampled: (real time, file).
    reads: Vec<(Millis, File)>,
    got: Vec<(File, Value)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GuestState {
    Running,
    Paused { since: Millis },
}

#[derive(Debug, Clone, Copy)]
struct Guest {
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
}

struct Host {
    up: bool,
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
            },
            hosts,
            ops: Vec::new(),
            next_fault: 5_000,
            report: Report::default(),
            trace,
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
    fn local(&self, h: usize) -> Millis {
        let ppm = self.hosts[h].rate_ppm;
        let skew = (self.now as i128 * ppm as i128) / 1_000_000;
        (self.now as i128 + skew).max(0) as Millis
    }

    fn note(&mut self, line: String) {
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
        for h in 0..self.hosts.len() {
            self.host_step(h);
        }
        self.guard();
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
        if self.now < self.next_fault || self.now + 20_000 > self.cfg.millis {
            return;
        }
        self.next_fault = self.now + self.rng.random_range(3_000..12_000);
        let h = self.rng.random_range(0..self.hosts.len());
        if !self.hosts[h].up {
            return;
        }
        self.report.faults += 1;
        let io = self.cfg.timing.io;
        match self.rng.random_range(0..4) {
            0 => {
                let down = self.rng.random_range(2 * io + 1_000..15_000);
                let host = &mut self.hosts[h];
                host.up = false;
                host.down_until = self.now + down;
                host.guests.iter_mut().for_each(|g| *g = None);
                // Its I/O dies with it; writes on their way still land.
                for op in self.ops.iter_mut().filter(|o| o.host == h) {
                    op.reads.clear();
                    op.failed = true;
                }
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
            _ => {
                let d = self.rng.random_range(2_000..20_000);
                self.hosts[h].cut_until = self.now + d;
                self.note(format!("FAULT host {h}'s storage cut for {d} ms"));
            }
        }
    }

    // ---- I/O ----

    /// Issue an I/O for host `h` now.
    fn issue(&mut self, h: usize, purpose: Purpose, writes: Vec<(File, Value)>, reads: Vec<File>) {
        let io = self.cfg.timing.io;
        let (cut_until, slow_until, boot) = {
            let host = &self.hosts[h];
            (host.cut_until, host.slow_until, host.boot)
        };
        let (latency, failed) = if self.now < cut_until {
            (io + 1, true)
        } else if self.now < slow_until {
            (self.rng.random_range(io / 2..=2 * io), false)
        } else {
            (self.rng.random_range(2..30), false)
        };
        let done_real = self.now + latency;
        let (writes, reads) = if failed {
            (Vec::new(), Vec::new())
        } else {
            // A write lands before the reads that follow it in the same
            // I/O; each file is sampled at its own instant.
            let land = if writes.is_empty() {
                self.now
            } else {
                self.rng.random_range(self.now..=done_real)
            };
            let w: Vec<(Millis, File, Value)> = writes.into_iter().map(|(f, v)| (land, f, v)).collect();
            let r: Vec<(Millis, File)> = reads
                .into_iter()
                .map(|f| (self.rng.random_range(land..=done_real), f))
                .collect();
            (w, r)
        };
        let op = Op {
            host: h,
            boot,
            purpose,
            issue_local: self.local(h),
            done_real,
            failed,
            writes,
            reads,
            got: Vec::new(),
        };
        self.ops.push(op);
    }

    /// Land writes and take read samples that are due; hand completed I/O
    /// to hosts that can take it (up, same boot, not frozen).
    fn io(&mut self) {
        let now = self.now;
        for op in &mut self.ops {
            for (t, f, v) in std::mem::take(&mut op.writes) {
                if t <= now {
                    self.sr.put(f, v);
                } else {
                    op.writes.push((t, f, v));
                }
            }
            for (t, f) in std::mem::take(&mut op.reads) {
                if t <= now {
                    op.got.push((f, self.sr.get(f)));
                } else {
                    op.reads.push((t, f));
                }
            }
        }
        let mut i = 0;
        while i < self.ops.len() {
            let op = &self.ops[i];
            let host = &self.hosts[op.host];
            let dead = !host.up || host.boot != op.boot;
            if dead && op.writes.is_empty() {
                self.ops.swap_remove(i);
                continue;
            }
            let ready = !dead && op.done_real <= now && op.reads.is_empty() && op.writes.is_empty();
            if ready && now >= host.frozen_until {
                let op = self.ops.swap_remove(i);
                self.complete(op);
                continue;
            }
            i += 1;
        }
    }

    fn complete(&mut self, op: Op) {
        let h = op.host;
        let done = self.local(h);
        let ok = !op.failed && done.saturating_sub(op.issue_local) <= self.cfg.timing.io;
        match op.purpose {
            Purpose::Renew => {
                self.hosts[h].renewing = false;
                if !op.failed {
                    self.hosts[h].holder.renewed(op.issue_local, done);
                }
            }
            Purpose::Observe(p) => {
                self.hosts[h].observing[p] = false;
                if let (false, Some((_, Value::Lease(Some(r))))) = (op.failed, op.got.first()) {
                    let host = &mut self.hosts[h];
                    host.records[p] = Some(*r);
                    host.observers[p].read(op.issue_local, done, r.stamp());
                    host.short_observers[p].read(op.issue_local, done, r.stamp());
                }
            }
            Purpose::ReadOwner(vm) => self.on_read_owner(h, vm, ok, &op.got),
            Purpose::Paxos(vm) => self.on_paxos(h, vm, ok, &op.got),
            Purpose::Recheck(vm) => self.on_recheck(h, vm, ok, &op.got),
            Purpose::Record => {}
            Purpose::Resume(vm) => self.on_resume(h, vm, ok, &op.got, op.issue_local),
        }
    }

    // ---- a host's xapid ----

    fn host_step(&mut self, h: usize) {
        let host = &self.hosts[h];
        if !host.up || self.now < host.frozen_until {
            return;
        }
        let local = self.local(h);
        let t = self.cfg.timing;
        let n = self.hosts.len();
        if !self.hosts[h].renewing && local >= self.hosts[h].next_renew {
            let host = &mut self.hosts[h];
            host.renewing = true;
            host.next_renew = local + t.renew_every;
            host.counter += 1;
            let rec = LeaseRecord {
                boot: host.boot,
                counter: host.counter,
            };
            self.issue(
                h,
                Purpose::Renew,
                vec![(File::Lease(h), Value::Lease(Some(rec)))],
                vec![],
            );
        }
        if local >= self.hosts[h].next_observe {
            self.hosts[h].next_observe = local + t.renew_every;
            for p in (0..n).filter(|&p| p != h) {
                if !self.hosts[h].observing[p] {
                    self.hosts[h].observing[p] = true;
                    self.issue(h, Purpose::Observe(p), vec![], vec![File::Lease(p)]);
                }
            }
        }
        // Paused guests whose lease is held again, by a renewal issued
        // after the pause, look for later instances.
        for vm in 0..self.cfg.vms {
            let Some(g) = self.hosts[h].guests[vm] else { continue };
            let GuestState::Paused { since } = g.state else {
                continue;
            };
            let renewed_after = self.hosts[h]
                .holder
                .deadline()
                .is_some_and(|d| d.saturating_sub(t.d) >= since && local < d);
            if renewed_after && !g.checking {
                if let Some(g) = &mut self.hosts[h].guests[vm] {
                    g.checking = true;
                }
                self.issue(h, Purpose::Resume(vm), vec![], vm_files(vm, n));
            }
        }
        if self.hosts[h].acquiring.is_none() && local >= self.hosts[h].next_acquire {
            let jitter = self.rng.random_range(0..ACQUIRE_EVERY);
            let host = &mut self.hosts[h];
            host.next_acquire = local + ACQUIRE_EVERY / 2 + jitter;
            let vm = host.next_vm % self.cfg.vms.max(1);
            host.next_vm += 1;
            if self.cfg.vms > 0 && host.guests[vm].is_none() {
                host.acquiring = Some(Acquiring {
                    from: (0, None),
                    judged: None,
                    round: None,
                    decided: None,
                });
                self.issue(h, Purpose::ReadOwner(vm), vec![], vm_files(vm, n));
            }
        }
    }

    /// Step 1: whose is the VM, and may this host take it?
    fn on_read_owner(&mut self, h: usize, vm: usize, ok: bool, got: &[(File, Value)]) {
        let n = self.hosts.len();
        let (blocks, owners) = split(got, n);
        let current = vm::owner_of(&owners);
        let boot = self.hosts[h].boot;
        let seen = blocks.iter().flatten().map(|b| b.mbal).max().unwrap_or(0);
        self.hosts[h].seen[vm] = self.hosts[h].seen[vm].max(seen);
        let free = ok
            && match current {
                None => true,
                // This host owns it but runs no guest of it (it never
                // started, or its guest was killed): it acquires the next
                // instance from itself, and Paxos settles it with anyone
                // who took the VM meanwhile.
                Some((_, o)) if o.host as usize == h => true,
                Some((_, o)) => {
                    let p = o.host as usize;
                    vm::may_take(o, self.hosts[h].records[p], self.observer_for(h, p))
                }
            };
        if !free {
            self.hosts[h].acquiring = None;
            return;
        }
        let (k, from) = current.map_or((0, None), |(k, o)| (k, Some(o)));
        let judged = from.and_then(|o| self.hosts[h].records[o.host as usize]);
        let me = Owner { host: h as u16, boot };
        let own = self.sr.blocks[vm][h].unwrap_or_default();
        let (round, next) = Round::start(h, n, k + 1, me, own, self.hosts[h].seen[vm]);
        if let Some(a) = &mut self.hosts[h].acquiring {
            a.from = (k, from);
            a.judged = judged;
            a.round = Some(round);
        }
        self.paxos_next(h, vm, next);
    }

    /// The observer this host judges peer `p` by: its own, or a broken one
    /// that waits a shorter time.
    fn observer_for(&self, h: usize, p: usize) -> &Observer {
        match self.cfg.broken.observer_l {
            None => &self.hosts[h].observers[p],
            Some(_) => &self.hosts[h].short_observers[p],
        }
    }

    fn paxos_next(&mut self, h: usize, vm: usize, next: Next) {
        let n = self.hosts.len();
        match next {
            Next::Write(b) => {
                let writes = vec![(File::Block { vm, host: h }, Value::Block(Some(b)))];
                let reads = (0..n).map(|host| File::Block { vm, host }).collect();
                self.issue(h, Purpose::Paxos(vm), writes, reads);
            }
            Next::Done(Outcome::Decided(v)) => {
                if let Some(a) = &mut self.hosts[h].acquiring {
                    a.decided = Some(v);
                }
                // Step 4, for any value decided (this host's or one it
                // adopted): read the old owner's lease again.
                let from = self.hosts[h].acquiring.as_ref().and_then(|a| a.from.1);
                let reads = from.map(|o| vec![File::Lease(o.host as usize)]).unwrap_or_default();
                self.issue(h, Purpose::Recheck(vm), vec![], reads);
            }
            Next::Done(Outcome::Aborted { seen, .. }) => {
                self.hosts[h].seen[vm] = self.hosts[h].seen[vm].max(seen);
                self.hosts[h].acquiring = None;
            }
        }
    }

    /// Write the decided owner of the instance this host's acquisition
    /// ran into its owner file.
    fn record_owner(&mut self, h: usize, vm: usize) {
        let Some(a) = &self.hosts[h].acquiring else { return };
        let Some(v) = a.decided else { return };
        let k = a.from.0 + 1;
        let writes = vec![(File::Owner { vm, host: h }, Value::Owner(Some((k, v))))];
        self.issue(h, Purpose::Record, writes, vec![]);
    }

    fn on_paxos(&mut self, h: usize, vm: usize, ok: bool, got: &[(File, Value)]) {
        let n = self.hosts.len();
        if !ok {
            self.hosts[h].acquiring = None;
            return;
        }
        let (blocks, _) = split(got, n);
        let Some(round) = self.hosts[h].acquiring.as_mut().and_then(|a| a.round.as_mut()) else {
            return;
        };
        let next = round.on_read(&blocks);
        self.paxos_next(h, vm, next);
    }

    /// Step 4: record the decided owner, and start the guest if it is this
    /// host, only if the old owner's lease did not move since it was judged
    /// free. If it moved, the owner came back and may run its guest again
    /// (its look for later instances may have come before any block of
    /// this instance landed): nobody may treat this instance as owned, or a
    /// later acquirer would take the VM from its new owner while the old
    /// one runs it. The owner files keep naming the old owner, whose lease
    /// is alive; the instance is decided again (the same value) once the
    /// old owner is really gone. This holds for a value adopted from
    /// another host as much as for this host's own (ha-sim's lease world
    /// found both).
    fn on_recheck(&mut self, h: usize, vm: usize, ok: bool, got: &[(File, Value)]) {
        let Some(a) = self.hosts[h].acquiring.clone() else {
            return;
        };
        let me = Owner {
            host: h as u16,
            boot: self.hosts[h].boot,
        };
        let now_rec = got.iter().find_map(|(_, v)| match v {
            Value::Lease(r) => Some(*r),
            _ => None,
        });
        let unchanged = ok
            && (self.cfg.broken.recheck_skipped
                || match a.from.1 {
                    None => true,
                    Some(o) if o.host as usize == h => true,
                    Some(o) => {
                        let dead_boot = now_rec.flatten().is_some_and(|r| r.boot > o.boot);
                        dead_boot || now_rec.flatten() == a.judged
                    }
                });
        if !unchanged {
            if ok {
                self.note(format!(
                    "host {h} decided VM {vm} instance {} for {:?} but the old owner's lease moved: not recording it",
                    a.from.0 + 1,
                    a.decided
                ));
            }
            self.hosts[h].acquiring = None;
            return;
        }
        self.record_owner(h, vm);
        self.hosts[h].acquiring = None;
        if a.decided != Some(me) {
            return;
        }
        let held = self.hosts[h].holder.holds(self.local(h));
        self.hosts[h].guests[vm] = Some(Guest {
            instance: a.from.0 + 1,
            state: if held {
                GuestState::Running
            } else {
                GuestState::Paused { since: self.local(h) }
            },
            checking: false,
        });
        self.report.takeovers += 1;
        self.note(format!(
            "host {h} starts VM {vm} (instance {}, from {:?})",
            a.from.0 + 1,
            a.from.1
        ));
    }

    fn on_resume(&mut self, h: usize, vm: usize, ok: bool, got: &[(File, Value)], issued: Millis) {
        let n = self.hosts.len();
        let Some(g) = self.hosts[h].guests[vm] else { return };
        if let Some(g) = &mut self.hosts[h].guests[vm] {
            g.checking = false;
        }
        let GuestState::Paused { since } = g.state else { return };
        if !ok || issued < since {
            return;
        }
        let (blocks, owners) = split(got, n);
        let later = !vm::may_resume(g.instance, &blocks, &owners);
        let local = self.local(h);
        if later && !self.cfg.broken.resume_unchecked {
            self.hosts[h].guests[vm] = None;
            self.report.killed += 1;
            self.note(format!(
                "host {h} kills its paused guest of VM {vm}: a later instance exists"
            ));
        } else if self.hosts[h].holder.holds(local) {
            if let Some(g) = &mut self.hosts[h].guests[vm] {
                g.state = GuestState::Running;
            }
            self.report.resumed += 1;
            self.note(format!("host {h} resumes VM {vm}"));
        }
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
        }
    }
}

/// Every block and owner file of `vm`: what step 1 and a resume read.
fn vm_files(vm: usize, n: usize) -> Vec<File> {
    (0..n)
        .map(|host| File::Block { vm, host })
        .chain((0..n).map(|host| File::Owner { vm, host }))
        .collect()
}

/// Every host's owner file of one VM, as read.
type OwnerFiles = Vec<Option<(u64, Owner)>>;

/// The blocks and owner files a read returned, by host.
fn split(got: &[(File, Value)], n: usize) -> (Vec<Option<Block>>, OwnerFiles) {
    let mut blocks = vec![None; n];
    let mut owners = vec![None; n];
    for (f, v) in got {
        match (f, v) {
            (File::Block { host, .. }, Value::Block(b)) => blocks[*host] = *b,
            (File::Owner { host, .. }, Value::Owner(o)) => owners[*host] = *o,
            _ => {}
        }
    }
    (blocks, owners)
}

/// Run one seed: 2 to 5 hosts and 1 to 6 VMs by the seed unless given.
pub fn run(seed: u64, hosts: Option<usize>, millis: Millis, timing: Timing, broken: Broken, trace: bool) -> Report {
    let mut rng = StdRng::seed_from_u64(seed);
    let hosts = hosts.unwrap_or_else(|| rng.random_range(2..=5));
    let vms = rng.random_range(1..=6);
    let cfg = Config {
        hosts,
        vms,
        millis,
        timing,
        broken,
    };
    LeaseWorld::new(seed, cfg, trace).run()
}
