//! The HA state machine of one host: xhad's heartbeat, statefile, state
//! manager and lock manager threads folded into one sans-IO engine.
//!
//! The caller feeds [`Event`]s with the time (milliseconds on its monotonic
//! clock) and carries out the [`Command`]s that come back: send this
//! heartbeat, run this statefile cycle, feed or stop the watchdog, fence.
//! [`Event::Tick`] must come at least every 100 ms.
//!
//! Life of a host: `Starting` (start criteria, join) → `Online` (fencing
//! armed, fault handler ready) → `Fenced` or `Stopped`. A fault (a liveset
//! host missing from the hbdomain or sfdomain) runs the fault handler, whose
//! phases meet in rendezvous with the peers still seen; phase 3 applies the
//! survival rules (`rules`), phase 4 pushes `fence_request` and waits until
//! the losers' watchdogs must have fired before shrinking the liveset.
//!
//! One rule is ours, not xhad's: a host that has noticed a fault must pass
//! the survival test within [`Engine::fh_budget`] of noticing it, else it
//! fences. The budget is shorter than the winners' wait, so a loser that is
//! slow or stuck in a rendezvous is dead before the winners drop it.

use std::fmt;

use crate::hostset::{HostSet, MAX_HOSTS};
use crate::message::{Global, Heartbeat, Phase, PoolState, Slot, SlotRead, StatefileRead, TieBreak, View};
use crate::rules::{self, Outcome, Views};
use crate::timeouts::{Millis, Timeouts};

/// How one host's engine is set up; identical on every host but `me`.
#[derive(Debug, Clone)]
pub struct Config {
    /// Host UUIDs, sorted: the index of a host is its position here.
    pub hosts: Vec<String>,
    pub me: usize,
    pub timeouts: Timeouts,
    /// New each time HA is enabled.
    pub generation: u128,
    /// This host's boot: new (and not 0) each time its daemon starts.
    pub boot: u64,
    /// Per host, 0 unless configured.
    pub weights: Vec<u32>,
    /// The survival test; [`rules::survival`] except in tests that check
    /// the simulator catches a broken rule.
    pub survival: fn(&Views) -> Outcome,
}

impl Config {
    /// A configuration with no weights and the real survival rules, for the
    /// boot `boot` of this host.
    pub fn new(hosts: Vec<String>, me: usize, timeouts: Timeouts, generation: u128, boot: u64) -> Config {
        let weights = vec![0; hosts.len()];
        Config {
            hosts,
            me,
            timeouts,
            generation,
            boot,
            weights,
            survival: rules::survival,
        }
    }
}

/// Which watchdog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watchdog {
    /// Fed by the heartbeat loop, expires after Wh.
    Heartbeat,
    /// Fed by the statefile loop, expires after Ws.
    Statefile,
}

/// Why a host fenced itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FenceReason {
    /// xhad's error name, e.g. `SM_SURVIVALRULE_FAILED`.
    pub code: &'static str,
    pub message: String,
}

impl fmt::Display for FenceReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// Why the engine stopped without fencing (xhad's exit codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Asked to stop.
    Requested,
    /// The statefile cannot be read (8).
    CannotAccessStatefile,
    /// HA was disabled, or the pool state is wrong for a start (11).
    InvalidPoolState,
    /// Another enable happened while this host was away (10).
    GenerationMismatch,
    /// Not every host came up in time to form the first liveset (12).
    BootJoinTimeout,
    /// An existing liveset did not take this host in time (13).
    CannotJoin,
    /// This host left cleanly and others are not excluded (18).
    BootBlockedByExcluded,
    /// Not in the largest partition at a whole-pool start.
    BootFailed,
}

impl Exit {
    /// xhad's script exit code.
    pub fn code(self) -> i32 {
        match self {
            Exit::Requested => 0,
            Exit::CannotAccessStatefile => 8,
            Exit::GenerationMismatch => 10,
            Exit::InvalidPoolState => 11,
            Exit::BootJoinTimeout => 12,
            Exit::CannotJoin => 13,
            Exit::BootBlockedByExcluded => 18,
            Exit::BootFailed => 13,
        }
    }

    /// xhad's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Exit::Requested => "SUCCESS",
            Exit::CannotAccessStatefile => "CAN_NOT_ACCESS_STATEFILE",
            Exit::GenerationMismatch => "GENERATION_UUID_MISMATCH",
            Exit::InvalidPoolState => "INVALID_POOL_STATE",
            Exit::BootJoinTimeout => "BOOTJOIN_TIMEOUT",
            Exit::CannotJoin | Exit::BootFailed => "CAN_NOT_JOIN_EXISTING_LIVESET",
            Exit::BootBlockedByExcluded => "BOOT_BLOCKED_BY_EXCLUDED",
        }
    }
}

/// Where the host is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Starting,
    Online,
    Fenced(FenceReason),
    Stopped(Exit),
}

/// What happens to the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Tick,
    /// A heartbeat that passed authentication.
    Heartbeat(Heartbeat),
    /// The outcome of the last [`Command::StatefileCycle`]: the read, or
    /// `Err` when the write or read failed.
    Statefile(Result<StatefileRead, String>),
    /// Ask for the master lock (xapi's `ha_propose_master`).
    ProposeMaster,
    /// Give up asking for, or holding, the master lock.
    ReleaseMaster,
    /// Write this pool state in the global block (`init` before enable,
    /// `invalid` to disable HA).
    SetPoolState(PoolState),
    /// Stop fencing (xapi's `ha_disarm_fencing`).
    Disarm,
    /// Leave cleanly: mark this host excluded, disarm, stop.
    Leave,
    /// What this host offers to the tie-break between equal partitions
    /// now (its link or witness, the protected VMs it runs). The caller
    /// reports it when it changes; until then the old tie-break by UUID.
    TieBreak(TieBreak),
    /// Stop the engine (disarms).
    Stop,
}

/// What the caller must do. (A statefile cycle carries the slot, about
/// 600 bytes, once per cycle: boxing it would buy nothing.)
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Send this heartbeat to every other host.
    SendHeartbeat(Heartbeat),
    /// Write `slot` into this host's slot (and `global`, if any, into the
    /// global block), then read the whole statefile and answer with
    /// [`Event::Statefile`].
    StatefileCycle { slot: Slot, global: Option<Global> },
    /// Push this watchdog's expiry to `timeout` from now.
    Feed(Watchdog, Millis),
    /// Start enforcing the watchdogs.
    Arm,
    /// Stop enforcing the watchdogs.
    Disarm,
    /// Kill this host's VMs at once and stop the host.
    Fence(FenceReason),
    /// The agreed liveset changed.
    Liveset(HostSet),
    /// The engine stopped without fencing.
    Exited(Exit),
    /// A line for the host's log.
    Log(String),
}

/// A peer's last heartbeat (its arrival time is in `Engine::last_hb`).
#[derive(Debug, Clone)]
struct Peer {
    hb: Heartbeat,
}

/// Progress of the start sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Boot {
    /// Waiting for the first statefile read.
    FirstRead,
    /// Waiting (up to T1/T2) for every host on both channels.
    Discover,
    /// Waiting until no host still has this host in its liveset.
    Recognized,
    /// Testing the start criteria.
    Criteria,
    /// A new liveset of every host: waiting until all of them proposed it.
    AllBooted { deadline: Millis },
    /// Asking the existing liveset to take this host in.
    Join { deadline: Millis },
}

/// One step of the fault handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Publish `set`, then wait until every peer seen is in `set` or `next`.
    Rendezvous {
        set: Phase,
        next: Phase,
        on_sf: bool,
    },
    /// Wait until no host in the domains is stale but not yet timed out.
    Stable,
    /// Wait until every peer seen has the same views.
    Consistent,
    Survival,
    /// Push the losers out and wait for their watchdogs.
    Degrade,
}

/// How long past its statefile interval a read may take and still count as
/// timely when peers' slots are aged (see [`Engine::sf_age`]).
const READ_ALLOWANCE: Millis = 250;

const FH_STEPS: [Step; 14] = [
    Step::Rendezvous {
        set: Phase::FhReady,
        next: Phase::Fh1,
        on_sf: false,
    },
    Step::Rendezvous {
        set: Phase::Fh1,
        next: Phase::Fh1Done,
        on_sf: false,
    },
    Step::Stable,
    Step::Rendezvous {
        set: Phase::Fh1Done,
        next: Phase::Fh2,
        on_sf: true,
    },
    Step::Rendezvous {
        set: Phase::Fh2,
        next: Phase::Fh2Done,
        on_sf: true,
    },
    Step::Consistent,
    Step::Rendezvous {
        set: Phase::Fh2Done,
        next: Phase::Fh3,
        on_sf: false,
    },
    Step::Rendezvous {
        set: Phase::Fh3,
        next: Phase::Fh3Done,
        on_sf: false,
    },
    Step::Survival,
    Step::Rendezvous {
        set: Phase::Fh3Done,
        next: Phase::Fh4,
        on_sf: false,
    },
    Step::Rendezvous {
        set: Phase::Fh4,
        next: Phase::Fh4Done,
        on_sf: false,
    },
    Step::Degrade,
    Step::Rendezvous {
        set: Phase::Fh4Done,
        next: Phase::Started,
        on_sf: false,
    },
    Step::Rendezvous {
        set: Phase::Started,
        next: Phase::FhReady,
        on_sf: false,
    },
];

/// A running fault handler.
#[derive(Debug, Clone)]
struct Fh {
    step: usize,
    /// When the current step began.
    step_start: Millis,
    started: Millis,
    /// When phase 3 began.
    p3: Millis,
    /// When phase 4's wait began, once it did.
    p4: Option<Millis>,
    /// The views frozen when they became consistent.
    snapshot: Option<Snapshot>,
    outcome: Option<Outcome>,
    /// A host this round drops was, by its slot, past the survival test of
    /// a round of its own: maybe an earlier one, which it must finish
    /// before it judges this fault, so it may fence later than usual.
    late_loser: bool,
    /// Members this round has seen fail (out of a domain, or silent on the
    /// network for [`Engine::suspect_after`]): a member failing anew before
    /// phase 2 restarts the round's clock, once per member.
    failed: HostSet,
    /// This round has seen a liveset member on the statefile only (across
    /// a network split): from then on a second failure past phase 2 does
    /// not extend the budget.
    split_seen: bool,
    /// This round has seen a liveset member on the statefile only, written
    /// lately or not (the conservative form of `split_seen`).
    sf_only_seen: bool,
    /// Members this round took back into a domain (`may_regrow`).
    regrown_hb: HostSet,
    regrown_sf: HostSet,
    /// The tie-break values this host publishes during the round: those it
    /// had when the round began.
    tie: TieBreak,
    /// When a fault was first noticed after the views were frozen.
    after_snapshot: Option<Millis>,
    /// A member the survival test kept failed since: end the round
    /// without its decision.
    abandon: bool,
}

#[derive(Debug, Clone)]
struct Snapshot {
    /// This host reached the statefile and saw its own slot fresh.
    sf_access: bool,
    hbdomain: HostSet,
    sfdomain: HostSet,
    peers_with_sf: HostSet,
    published: Vec<Option<(HostSet, HostSet)>>,
    /// Per host, its tie-break values: ours as we publish them, a network
    /// peer's from its heartbeat, another's from its slot.
    ties: Vec<Option<TieBreak>>,
    /// Hosts whose slot says they are starting (booting or joining).
    joiners: HostSet,
    /// See [`Engine::claimants`].
    claimants: HostSet,
    excluded: HostSet,
    members: HostSet,
}

/// One host's HA engine.
#[derive(Debug, Clone)]
pub struct Engine {
    cfg: Config,
    n: usize,
    status: Status,
    armed: bool,
    start_time: Millis,
    phase: Phase,
    boot: Boot,
    /// Joining an existing liveset (xhad's `ctl.join`).
    join: bool,

    // Network heartbeat.
    hb_sequence: u64,
    next_hb: Millis,
    /// Heartbeats to send at once (rendezvous and joins accelerate).
    hb_burst: u32,
    last_hb: Vec<Option<Millis>>,
    peers: Vec<Option<Peer>>,
    hbdomain: HostSet,

    // Statefile.
    sf_sequence: u64,
    /// `sf_sequence` when `phase` last changed: a slot of ours read back
    /// with a higher sequence was written in the current phase.
    phase_seq: u64,
    sf_in_flight: bool,
    next_sf: Millis,
    sf_accelerate: bool,
    sf_access: bool,
    sf_corrupted: bool,
    /// Time of the last successful cycle.
    sf_ok_at: Option<Millis>,
    /// When the cycle in flight was issued.
    sf_issued_at: Millis,
    /// When the last successful cycle was issued: its write may have
    /// landed as early as this, so peers may see this host's slot stale
    /// from this time plus T2 on, however late the cycle completed.
    sf_written_from: Option<Millis>,
    seen_seq: Vec<Option<u64>>,
    last_sf: Vec<Option<Millis>>,
    slots: Vec<Option<Slot>>,
    global: Option<Global>,
    pending_global: Option<Global>,
    sfdomain: HostSet,
    excluded: bool,
    starting: bool,

    // Membership.
    current: HostSet,
    /// Per host, the boot of it taken into `current` (published in the slot).
    member_boot: Vec<u64>,
    proposed: HostSet,
    last_hbdomain: HostSet,
    last_sfdomain: HostSet,
    join_block: bool,
    need_fh: bool,
    /// When an unresolved fault was first noticed.
    trouble_since: Option<Millis>,
    sr2: bool,
    /// Kept in the liveset without statefile access.
    storage_lost: bool,
    fence_request: bool,
    fh: Option<Fh>,

    // Master lock.
    want_master: bool,
    lock_request: bool,
    lock_grant: HostSet,
    /// The members when this host last held the master lock by every
    /// member's grant (observation only: see `master_lock_confirmed`).
    lock_held_with: HostSet,
    /// The hosts whose slot is fresh now (rule D), whatever the views of a
    /// fault handler hold: the master lock counts these.
    fresh_slots: HostSet,
    /// When this host's own slot last became fresh again after being stale.
    lock_resumed_at: Option<Millis>,
    /// Peers that take part in the lock although their slot looks stale:
    /// all of them for T2 after `lock_resumed_at`.
    lock_unjudged: HostSet,

    // Watchdog feeding, as last commanded.
    fed: [Option<Millis>; 2],
    /// When each watchdog was last fed.
    fed_at: [Option<Millis>; 2],
    out: Vec<Command>,
    /// The tie-break values the caller last reported.
    tie: TieBreak,
}

impl Engine {
    pub fn new(cfg: Config) -> Engine {
        let n = cfg.hosts.len();
        Engine {
            n,
            status: Status::Starting,
            armed: false,
            start_time: 0,
            phase: Phase::Starting,
            boot: Boot::FirstRead,
            join: true,
            hb_sequence: 0,
            next_hb: 0,
            hb_burst: 0,
            last_hb: vec![None; n],
            peers: vec![None; n],
            hbdomain: HostSet::single(cfg.me),
            sf_sequence: 0,
            phase_seq: 0,
            sf_in_flight: false,
            next_sf: 0,
            sf_accelerate: false,
            sf_access: false,
            sf_corrupted: false,
            sf_ok_at: None,
            sf_issued_at: 0,
            sf_written_from: None,
            seen_seq: vec![None; n],
            last_sf: vec![None; n],
            slots: vec![None; n],
            global: None,
            pending_global: None,
            sfdomain: HostSet::EMPTY,
            excluded: false,
            starting: true,
            current: HostSet::EMPTY,
            member_boot: vec![0; n],
            proposed: HostSet::EMPTY,
            last_hbdomain: HostSet::EMPTY,
            last_sfdomain: HostSet::EMPTY,
            join_block: false,
            need_fh: false,
            trouble_since: None,
            sr2: false,
            storage_lost: false,
            fence_request: false,
            fh: None,
            want_master: false,
            lock_request: false,
            lock_grant: HostSet::EMPTY,
            lock_held_with: HostSet::EMPTY,
            fresh_slots: HostSet::EMPTY,
            lock_resumed_at: None,
            lock_unjudged: HostSet::EMPTY,
            fed: [None, None],
            tie: TieBreak::default(),
            fed_at: [None, None],
            out: Vec::new(),
            cfg,
        }
    }

    /// Start the engine at `now`.
    pub fn start(&mut self, now: Millis) -> Vec<Command> {
        self.start_time = now;
        self.next_hb = now;
        self.next_sf = now;
        self.log(format!(
            "starting as host {} ({}) of {}; T={} ms",
            self.cfg.me,
            self.cfg.hosts.get(self.cfg.me).map(String::as_str).unwrap_or("?"),
            self.n,
            self.cfg.timeouts.t
        ));
        self.tick(now);
        std::mem::take(&mut self.out)
    }

    /// Handle one event at `now`.
    pub fn handle(&mut self, now: Millis, event: Event) -> Vec<Command> {
        if self.is_running() {
            self.check_own_watchdogs(now);
        }
        if self.is_running() {
            match event {
                Event::Tick => {}
                Event::Heartbeat(hb) => self.on_heartbeat(now, hb),
                Event::Statefile(r) => self.on_statefile(now, r),
                Event::ProposeMaster => self.want_master = true,
                Event::ReleaseMaster => self.want_master = false,
                Event::SetPoolState(state) => self.set_pool_state(state),
                Event::Disarm => self.disarm(),
                Event::Leave => {
                    self.excluded = true;
                    self.disarm();
                    self.phase = Phase::Aborted;
                    self.out.push(Command::StatefileCycle {
                        slot: self.my_slot(),
                        global: None,
                    });
                    self.stop(Exit::Requested);
                }
                Event::Stop => self.stop(Exit::Requested),
                Event::TieBreak(t) => self.tie = t,
            }
        }
        if self.is_running() {
            self.tick(now);
        }
        std::mem::take(&mut self.out)
    }

    // ---- queries ----

    pub fn status(&self) -> &Status {
        &self.status
    }

    pub fn me(&self) -> usize {
        self.cfg.me
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn is_running(&self) -> bool {
        matches!(self.status, Status::Starting | Status::Online)
    }

    pub fn is_online(&self) -> bool {
        self.status == Status::Online
    }

    pub fn armed(&self) -> bool {
        self.armed
    }

    pub fn liveset(&self) -> HostSet {
        self.current
    }

    pub fn proposed(&self) -> HostSet {
        self.proposed
    }

    pub fn hbdomain(&self) -> HostSet {
        self.hbdomain
    }

    pub fn sfdomain(&self) -> HostSet {
        self.sfdomain
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    pub fn sf_access(&self) -> bool {
        self.sf_access
    }

    /// Surviving by rule 2 (the statefile is lost for everyone).
    pub fn surviving_by_rule2(&self) -> bool {
        self.sr2
    }

    /// Kept in the liveset by the others while this host has no statefile.
    pub fn storage_lost(&self) -> bool {
        self.storage_lost
    }

    /// The host every online host grants the master lock to, in this host's
    /// latest view of the statefile.
    pub fn lock_holder(&self) -> Option<usize> {
        let takes_part = self.lock_members();
        takes_part
            .iter()
            .find(|&i| self.requesting(i) && takes_part.iter().all(|j| self.grants(j).contains(i)))
    }

    /// The members whose grants count (rule M in docs/HA.md): those whose
    /// slot is fresh now, this host included only while its own is. A member
    /// without the statefile cannot grant, so it must not hold up the
    /// election of a master; and it cannot hold the lock itself (rule F: any
    /// peer that sees its slot stale, it sees stale first).
    fn lock_members(&self) -> HostSet {
        self.current.and(self.fresh_slots.or(self.lock_unjudged))
    }

    /// This host is online and holds the master lock.
    pub fn holds_master_lock(&self) -> bool {
        self.is_online() && self.lock_holder() == Some(self.cfg.me)
    }

    /// This host is online and holds the master lock as far as the members
    /// that take part in the lock can tell ([`crate::lock::confirmed`]):
    /// once it held the lock by every grant, a joiner that has not yet
    /// published its grants does not hold the API up (rule M in
    /// docs/HA.md). The engine's own
    /// [`Engine::lock_holder`] stays strict.
    pub fn master_lock_confirmed(&self) -> bool {
        let requesting: HostSet = (0..self.n).filter(|&i| self.requesting(i)).collect();
        let grants: Vec<HostSet> = (0..self.n).map(|j| self.grants(j)).collect();
        let view = crate::lock::LockView {
            current: self.lock_members(),
            requesting,
            grants: &grants,
            held_with: self.lock_held_with,
        };
        self.is_online() && crate::lock::confirmed(self.cfg.me, &view)
    }

    /// The latest global block read.
    pub fn global(&self) -> Option<Global> {
        self.global
    }

    /// Hosts whose latest slot says they left cleanly, in the newest boot
    /// of theirs this host knows of (rule X in docs/HA.md): a host heard
    /// in a later boot has come back, whatever its old slot says.
    pub fn excluded_hosts(&self) -> HostSet {
        (0..self.n)
            .filter(|&i| self.slots[i].is_some_and(|s| s.excluded && s.boot >= self.latest_boot(i)))
            .collect()
    }

    /// When the watchdogs, as fed so far, expire: (heartbeat, statefile).
    pub fn watchdog_deadlines(&self) -> (Option<Millis>, Option<Millis>) {
        (self.fed[0], self.fed[1])
    }

    /// How long a host may take from noticing a fault to passing the
    /// survival test: the winners' shortest wait, less two intervals (one
    /// for detection skew, one for delivery), less a second of margin.
    pub fn fh_budget(&self) -> Millis {
        let t = &self.cfg.timeouts;
        let wait = t.fence_wait(false);
        wait.saturating_sub(2 * t.hb_interval.max(t.sf_interval) + 1000)
            .max(t.hb_interval)
    }

    // ---- the loop ----

    fn tick(&mut self, now: Millis) {
        self.update_hbdomain(now);
        self.update_sfdomain(now);
        self.check_trouble(now);
        if !self.is_running() {
            return;
        }
        match self.status {
            Status::Starting => self.boot_step(now),
            Status::Online => {
                self.process_join_requests();
                if self.sr2 {
                    self.check_leave_rule2();
                }
                if self.storage_lost && self.sf_access {
                    self.storage_lost = false;
                    self.log("statefile access is back".into());
                }
                self.fault_handler(now);
            }
            _ => {}
        }
        if !self.is_running() {
            return;
        }
        self.send_heartbeat_if_due(now);
        self.statefile_if_due(now);
        if self.sr2 || self.storage_lost {
            // No statefile I/O succeeds: the state manager feeds it.
            self.feed(now, Watchdog::Statefile);
        }
    }

    fn log(&mut self, line: String) {
        self.out.push(Command::Log(line));
    }

    fn feed(&mut self, now: Millis, w: Watchdog) {
        let (slot, timeout) = match w {
            Watchdog::Heartbeat => (0, self.cfg.timeouts.hb_watchdog),
            Watchdog::Statefile => (1, self.cfg.timeouts.sf_watchdog),
        };
        // With a fault unresolved, the watchdog enforces the budget: a host
        // that freezes before its budget ends is dead when it ends.
        let mut timeout = timeout;
        if let (true, Some(since)) = (self.armed, self.trouble_since) {
            let cap = (since + self.fh_budget() + 500).saturating_sub(now).max(1);
            timeout = timeout.min(cap);
        }
        self.fed[slot] = Some(now + timeout);
        self.fed_at[slot] = Some(now);
        self.out.push(Command::Feed(w, timeout));
    }

    /// The fault is resolved: the watchdogs get back their full timeout
    /// from their last feed.
    fn uncap_watchdogs(&mut self, now: Millis) {
        let t = self.cfg.timeouts;
        for (slot, w, full) in [
            (0, Watchdog::Heartbeat, t.hb_watchdog),
            (1, Watchdog::Statefile, t.sf_watchdog),
        ] {
            if let Some(f) = self.fed_at[slot] {
                let d = f + full;
                if d > now && self.fed[slot].is_some_and(|x| x < d) {
                    self.fed[slot] = Some(d);
                    self.out.push(Command::Feed(w, d - now));
                }
            }
        }
    }

    /// A host that was frozen past its watchdog must not act on waking.
    fn check_own_watchdogs(&mut self, now: Millis) {
        if !self.armed {
            return;
        }
        let (hb, sf) = self.watchdog_deadlines();
        if hb.is_some_and(|d| now > d) {
            self.fence(
                "WD_EXPIRED",
                format!(
                    "the heartbeat watchdog expired {} ms ago (was this host frozen?)",
                    now - hb.unwrap_or(now)
                ),
            );
        } else if sf.is_some_and(|d| now > d) {
            self.fence(
                "WD_EXPIRED",
                format!(
                    "the statefile watchdog expired {} ms ago (was this host frozen?)",
                    now - sf.unwrap_or(now)
                ),
            );
        }
    }

    fn check_trouble(&mut self, now: Millis) {
        if !self.armed {
            return;
        }
        if self.fh.is_some() {
            self.extend_for_new_failures(now);
        }
        if let Some(since) = self.trouble_since {
            let budget = self.fh_budget();
            if now.saturating_sub(since) > budget {
                self.fence(
                    "SM_FAULTHANDLER_TIMEOUT",
                    format!(
                        "a fault noticed {} ms ago is not resolved (budget {budget} ms)",
                        now - since
                    ),
                );
            }
        }
    }

    fn fence(&mut self, code: &'static str, message: String) {
        if !self.armed {
            self.log(format!("would fence ({code}: {message}), but fencing is not armed"));
            return;
        }
        let reason = FenceReason { code, message };
        self.log(format!("self-fence: {reason}"));
        self.status = Status::Fenced(reason.clone());
        self.out.push(Command::Fence(reason));
    }

    fn stop(&mut self, exit: Exit) {
        self.disarm();
        self.log(format!("stopping: {}", exit.name()));
        self.status = Status::Stopped(exit);
        self.out.push(Command::Exited(exit));
    }

    fn disarm(&mut self) {
        if self.armed {
            self.armed = false;
            self.trouble_since = None;
            self.out.push(Command::Disarm);
            self.log("fencing disarmed".into());
        }
    }

    fn set_pool_state(&mut self, state: PoolState) {
        let base = self.pending_global.or(self.global).unwrap_or(Global {
            pool_state: PoolState::None,
            generation: self.cfg.generation,
            master: None,
        });
        self.pending_global = Some(Global {
            pool_state: state,
            generation: self.cfg.generation,
            ..base
        });
        self.next_sf = 0;
    }

    // ---- network heartbeat ----

    fn heartbeat(&self) -> Heartbeat {
        Heartbeat {
            generation: self.cfg.generation,
            from: self.cfg.me,
            boot: self.cfg.boot,
            sequence: self.hb_sequence,
            view: self.view(),
            sf_access: self.sf_access,
            sf_corrupted: self.sf_corrupted,
            fence_request: self.fence_request,
            sr2: self.sr2,
            joining: self.join && self.status == Status::Starting,
            tie: self.published_tie(),
        }
    }

    /// The tie-break values this host publishes: during a fault handler,
    /// those it had when the round began.
    fn published_tie(&self) -> TieBreak {
        self.fh.as_ref().map_or(self.tie, |f| f.tie)
    }

    /// The views this host publishes, in heartbeats and slots. The
    /// sfdomain leaves out the network peers that say they do not see their
    /// own slot fresh, as this host's decisions do (rule N): a peer across
    /// a split judges this side's partition by these views.
    fn view(&self) -> View {
        View {
            current: self.current,
            proposed: self.proposed,
            hbdomain: self.hbdomain,
            sfdomain: self.sfdomain.minus(self.nonholder_peers()),
            phase: self.phase,
        }
    }

    fn send_heartbeat_if_due(&mut self, now: Millis) {
        if now < self.next_hb && self.hb_burst == 0 {
            return;
        }
        self.hb_burst = self.hb_burst.saturating_sub(1);
        self.next_hb = now + self.cfg.timeouts.hb_interval;
        self.hb_sequence += 1;
        let hb = self.heartbeat();
        self.out.push(Command::SendHeartbeat(hb));
        self.feed(now, Watchdog::Heartbeat);
    }

    fn on_heartbeat(&mut self, now: Millis, hb: Heartbeat) {
        let i = hb.from;
        if i >= self.n || i == self.cfg.me || hb.generation != self.cfg.generation {
            return;
        }
        if let Some(p) = &self.peers[i] {
            if hb.sequence <= p.hb.sequence && p.hb.sequence != 0 {
                return;
            }
        }
        // A host that restarted while we still count it alive is ignored
        // until the fault handler has dropped it.
        if !hb.view.current.contains(i) && self.current.contains(i) && self.is_online() {
            if let Some(p) = &mut self.peers[i] {
                p.hb.sequence = hb.sequence;
            }
            return;
        }
        if hb.fence_request && self.armed && hb.view.current.contains(i) && !hb.view.proposed.contains(self.cfg.me) {
            self.fence(
                "HB_FENCEREQUESTED",
                format!("host {i} asked this host to fence: it is not in the winners' liveset"),
            );
            return;
        }
        if hb.sr2 && self.is_online() {
            self.sr2 = true;
        }
        // A member starting a fault handler pulls this host in: its
        // early phases, not FhReady alone, as a host with no peer to
        // meet passes FhReady within one tick and never sends it.
        let force = matches!(hb.view.phase, Phase::FhReady | Phase::Fh1 | Phase::Fh1Done | Phase::Fh2)
            && hb.view.current.contains(i);
        self.last_hb[i] = Some(now);
        self.peers[i] = Some(Peer { hb });
        self.update_hbdomain(now);
        if force && self.is_online() {
            self.request_fh(now, true);
            // A kept member that starts a new round saw a failure: this
            // round's decision is void too (rule L).
            self.abandon_if_kept_failed(now, HostSet::single(i));
        }
    }

    fn update_hbdomain(&mut self, now: Millis) {
        let me = self.cfg.me;
        let t1 = self.cfg.timeouts.hb_timeout;
        let in_fh = self.phase.in_fault_handler();
        for i in 0..self.n {
            if i == me {
                self.hbdomain.insert(i);
                continue;
            }
            let fresh = self.last_hb[i].is_some_and(|t| now.saturating_sub(t) < t1);
            if fresh {
                if self.hbdomain.contains(i) {
                    let asym = self.peers[i].as_ref().is_some_and(|p| {
                        p.hb.view.phase.in_fault_handler() && in_fh && !p.hb.view.hbdomain.contains(me)
                    });
                    if asym {
                        self.hbdomain.remove(i);
                    }
                } else if !self.join_block {
                    self.hbdomain.insert(i);
                } else if self.may_regrow(i) && self.hears_me(i) {
                    self.hbdomain.insert(i);
                    if let Some(f) = &mut self.fh {
                        f.regrown_hb.insert(i);
                    }
                }
            } else {
                self.hbdomain.remove(i);
                // A host silent for T1 may come back rebooted, counting from 0.
                if let Some(p) = &mut self.peers[i] {
                    p.hb.sequence = 0;
                }
            }
        }
        if in_fh {
            self.keep_fully_connected();
        }
        self.detect_degrade(now);
    }

    /// In the fault handler, when the hosts this host hears do not all hear
    /// each other (A hears B, B hears C, A and C do not), keep only the
    /// best fully connected set around this host, by the hbdomains its
    /// peers' heartbeats carry. The hosts left out drop this host in turn
    /// (their view no longer holds it), so the pool splits into clean
    /// partitions that the survival rules can judge; the largest fully
    /// connected set is the one that survives. Waits until every peer
    /// heard is in the fault handler, as their views are only then final.
    fn keep_fully_connected(&mut self) {
        let me = self.cfg.me;
        // Only members judge: a joiner heard meanwhile never enters the
        // fault handler, and waiting for it would stall the reduction.
        let heard = self.hbdomain.and(self.current.with(me));
        let mut edge = vec![HostSet::EMPTY; self.n];
        for i in heard.iter() {
            let view_i = if i == me {
                Some(heard)
            } else {
                match self.peers[i].as_ref() {
                    Some(p) if p.hb.view.phase.in_fault_handler() => Some(p.hb.view.hbdomain),
                    _ => return,
                }
            };
            edge[i] = view_i.unwrap_or_default().and(heard).without(i);
        }
        // Both ways.
        for i in heard.iter() {
            edge[i] = edge[i].iter().filter(|&j| edge[j].contains(i)).collect();
        }
        if heard.iter().all(|i| edge[i].with(i) == heard) {
            return;
        }
        let keep = rules::best_clique(heard, &edge, me, &self.cfg.weights);
        if keep != heard {
            self.log(format!(
                "hosts {} do not all hear each other: keeping the fully connected {keep}",
                heard
            ));
            self.hbdomain = self.hbdomain.minus(heard.minus(keep));
        }
    }

    // ---- statefile ----

    /// This host's slot as it should be written now.
    pub fn my_slot(&self) -> Slot {
        let mut member_boots = [0; MAX_HOSTS];
        for i in self.current.iter() {
            if let Some(b) = member_boots.get_mut(i) {
                *b = self.member_boot[i];
            }
        }
        Slot {
            sequence: self.sf_sequence,
            index: self.cfg.me,
            boot: self.cfg.boot,
            member_boots,
            excluded: self.excluded,
            starting: self.starting,
            view: self.view(),
            lock_request: self.lock_request,
            lock_grant: self.lock_grant,
            weight: self.cfg.weights.get(self.cfg.me).copied().unwrap_or(0),
            tie: self.published_tie(),
        }
    }

    fn statefile_if_due(&mut self, now: Millis) {
        if self.sf_in_flight || now < self.next_sf {
            return;
        }
        self.sf_in_flight = true;
        self.sf_issued_at = now;
        self.sf_sequence += 1;
        let interval = if self.sf_accelerate || self.want_master != self.lock_request {
            (self.cfg.timeouts.sf_interval / 4).max(100)
        } else {
            self.cfg.timeouts.sf_interval
        };
        self.next_sf = now + interval;
        let slot = self.my_slot();
        self.out.push(Command::StatefileCycle {
            slot,
            global: self.pending_global,
        });
    }

    fn on_statefile(&mut self, now: Millis, result: Result<StatefileRead, String>) {
        self.sf_in_flight = false;
        let read = match result {
            Ok(read) => read,
            Err(e) => {
                if self.sf_access {
                    self.log(format!("statefile I/O failed: {e}"));
                }
                self.sf_access = false;
                if self.boot == Boot::FirstRead && self.status == Status::Starting {
                    self.stop(Exit::CannotAccessStatefile);
                }
                return;
            }
        };
        if !self.sf_access {
            self.log("statefile access".into());
        }
        self.sf_access = true;
        self.sf_ok_at = Some(now);
        self.sf_written_from = Some(self.sf_issued_at);
        self.sf_corrupted = read.global.is_none() || read.slots.contains(&SlotRead::Corrupt);
        if let Some(g) = read.global {
            if g.generation != self.cfg.generation && g.pool_state != PoolState::None {
                if self.pending_global.is_none() {
                    self.stop(Exit::GenerationMismatch);
                    return;
                }
            } else {
                self.global = Some(g);
            }
            // Our pending global write landed when the read shows it. Other
            // hosts write the block too (the pool state): only the master
            // field this host claims for itself must be ours.
            if self.pending_global.is_some_and(|p| landed(&p, &g, self.cfg.me)) {
                self.pending_global = None;
            }
        }
        for (i, s) in read.slots.iter().enumerate().take(self.n) {
            if let SlotRead::Valid(slot) = s {
                if slot.index != i {
                    continue;
                }
                if self.seen_seq[i] != Some(slot.sequence) {
                    self.seen_seq[i] = Some(slot.sequence);
                    // A member that restarted writes its slot, but is not
                    // the boot of it we hold: it ages out of the sfdomain,
                    // and the fault handler drops it before it may join.
                    let restarted = i != self.cfg.me
                        && self.is_online()
                        && self.current.contains(i)
                        && self.member_boot[i] != 0
                        && slot.boot != self.member_boot[i];
                    if !restarted {
                        self.last_sf[i] = Some(now);
                    }
                }
                self.slots[i] = Some(*slot);
            }
        }
        self.feed(now, Watchdog::Statefile);
        self.drop_excluded();
        if let Some(g) = self.global {
            if g.pool_state == PoolState::Invalid && self.pending_global.is_none() {
                self.log("the pool state is INVALID: HA was disabled".into());
                self.stop(Exit::InvalidPoolState);
                return;
            }
            if g.pool_state == PoolState::Init && self.status == Status::Online && self.pending_global.is_none() {
                self.stop(Exit::InvalidPoolState);
                return;
            }
        }
        self.update_sfdomain(now);
        self.lock_step();
    }

    /// Peers whose slot says they left cleanly (they disarmed before
    /// writing it: a planned shutdown or reboot) leave the liveset at once,
    /// without a fault.
    fn drop_excluded(&mut self) {
        if self.status != Status::Online || self.fh.is_some() {
            return;
        }
        let leaving = self.current.and(self.excluded_hosts()).without(self.cfg.me);
        if leaving.is_empty() {
            return;
        }
        let before = self.current;
        self.current = self.current.minus(leaving);
        self.proposed = self.proposed.minus(leaving);
        // Forget its last heartbeat: it must not vouch for the host later,
        // and the host counts its sequence from 0 when it comes back.
        for i in leaving.iter() {
            self.peers[i] = None;
            self.last_hb[i] = None;
            self.hbdomain.remove(i);
        }
        self.last_hbdomain = self.last_hbdomain.minus(leaving);
        self.last_sfdomain = self.last_sfdomain.minus(leaving);
        self.log(format!(
            "hosts {leaving} left cleanly (excluded): liveset {before} -> {}",
            self.current
        ));
        self.out.push(Command::Liveset(self.current));
    }

    fn update_sfdomain(&mut self, now: Millis) {
        let t2 = self.cfg.timeouts.sf_timeout;
        for i in 0..self.n {
            let fresh = self.sf_age(now, i).is_some_and(|age| age < t2)
                && (i != self.cfg.me || self.sf_written_from.is_some_and(|t| now.saturating_sub(t) < t2));
            if i == self.cfg.me && fresh && !self.fresh_slots.contains(i) {
                // Back from a stale slot: this host's reads have said
                // nothing about its peers for a while, and a slot it could
                // not read (corrupt, or not yet read again) is no evidence
                // that its owner stopped. For T2 every peer takes part in
                // the lock (rule M), as in xhad.
                self.lock_resumed_at = Some(now);
            }
            self.fresh_slots.set(i, fresh);
            if i == self.cfg.me && !fresh && self.lock_request {
                // Rule M: a host whose own slot is stale gives up its
                // request; back, it asks again only once every grant to it
                // is withdrawn, so grants given before cannot make it a
                // holder beside one that took the lock meanwhile.
                self.lock_request = false;
                self.lock_grant = HostSet::EMPTY;
                self.log("master lock request cancelled: this host's slot is stale".into());
            }
            if fresh {
                if !self.sfdomain.contains(i) && !self.join_block {
                    self.sfdomain.insert(i);
                } else if !self.sfdomain.contains(i) && self.may_regrow(i) {
                    self.sfdomain.insert(i);
                    if let Some(f) = &mut self.fh {
                        f.regrown_sf.insert(i);
                    }
                }
            } else {
                self.sfdomain.remove(i);
            }
        }
        self.lock_unjudged = match self.lock_resumed_at {
            Some(at) if now.saturating_sub(at) < t2 => self.all().without(self.cfg.me),
            _ => HostSet::EMPTY,
        };
        self.detect_degrade(now);
    }

    /// How long slot `i` is taken not to have changed (rule D in
    /// docs/HA.md): from the read that first showed its current sequence.
    /// While this host's own slot is fresh, the age runs on the wall clock
    /// only up to one statefile interval (and a read's normal latency) past
    /// the issue of its latest completed read, as it would with timely
    /// reads; a read stalled in the SR then stops the clock, so it never
    /// ages a peer that kept writing. Once its own slot is stale the host
    /// holds no statefile evidence at all (rule F) and the wall clock ages
    /// every slot.
    fn sf_age(&self, now: Millis, i: usize) -> Option<Millis> {
        let seen = self.last_sf[i]?;
        let t = &self.cfg.timeouts;
        let clock = match self.sf_written_from {
            Some(read) if i != self.cfg.me && now.saturating_sub(read) < t.sf_timeout => {
                now.min(read + t.sf_interval + READ_ALLOWANCE)
            }
            _ => now,
        };
        Some(clock.saturating_sub(seen))
    }

    /// Peer `i`'s latest heartbeat holds this host in its hbdomain.
    fn hears_me(&self, i: usize) -> bool {
        self.peers[i]
            .as_ref()
            .is_some_and(|p| p.hb.view.hbdomain.contains(self.cfg.me))
    }

    /// During the fault handler, before this host has taken the snapshot
    /// it decides on, a liveset member (or this host) whose slot is fresh
    /// again comes back into the sfdomain. Views only more accurate than
    /// before are published, so hosts that disagreed about a short stall
    /// converge instead of waiting out the consistent-view step; after the
    /// snapshot the views no longer matter. Joiners stay out (`join_block`).
    /// Views stop growing back once a network peer has taken its snapshot
    /// (it publishes phase 2-done or later): its views no longer grow, and
    /// ours must come to equal them.
    ///
    /// Nor past phase 2 in a round that has seen a peer across a network
    /// split: that peer may have decided on the views this host published
    /// with phase 2, and they must stay the ones it decides on (ha-sim
    /// 40690261: a host regained its own slot after publishing phase 2
    /// without it, and both sides of a 2-host split won).
    fn may_regrow(&self, i: usize) -> bool {
        self.current.contains(i)
            && self
                .fh
                .as_ref()
                .is_some_and(|f| f.snapshot.is_none() && !(self.phase >= Phase::Fh2 && f.sf_only_seen))
            && self.snapshotted_peers().is_empty()
    }

    /// Network peers in the fault handler that have taken their snapshot.
    fn snapshotted_peers(&self) -> HostSet {
        let me = self.cfg.me;
        self.hbdomain
            .and(self.current)
            .without(me)
            .iter()
            .filter(|&i| self.peer_phase_hb(i).is_some_and(|ph| ph >= Phase::Fh2Done))
            .collect()
    }

    /// A host that grew a view back just before a peer took its snapshot
    /// without it takes it out again: the peer's views are final, and
    /// waiting for them to grow would time out the consistent-view step.
    fn undo_regrowth(&mut self) {
        let done = self.snapshotted_peers();
        let Some(fh) = &self.fh else { return };
        if done.is_empty() || fh.snapshot.is_some() {
            return;
        }
        let (mut hb_out, mut sf_out) = (HostSet::EMPTY, HostSet::EMPTY);
        for j in done.iter() {
            let Some(p) = &self.peers[j] else { continue };
            hb_out = hb_out.or(fh.regrown_hb.minus(p.hb.view.hbdomain));
            sf_out = sf_out.or(fh.regrown_sf.minus(p.hb.view.sfdomain));
        }
        let hb_out = hb_out.and(self.hbdomain);
        let sf_out = sf_out.and(self.sfdomain);
        if hb_out.is_empty() && sf_out.is_empty() {
            return;
        }
        self.log(format!(
            "peers {done} decided without hosts {} (network) {} (statefile) this host took back: out again",
            hb_out, sf_out
        ));
        self.hbdomain = self.hbdomain.minus(hb_out);
        self.sfdomain = self.sfdomain.minus(sf_out);
    }

    // ---- fault detection ----

    fn detect_degrade(&mut self, now: Millis) {
        let mut hb_out = HostSet::EMPTY;
        let mut sf_out = HostSet::EMPTY;
        for i in 0..self.n {
            if self.hbdomain.contains(i) {
                self.last_hbdomain.insert(i);
            } else if self.last_hbdomain.contains(i) {
                self.last_hbdomain.remove(i);
                hb_out.set(i, self.current.contains(i));
            }
            if self.sfdomain.contains(i) {
                self.last_sfdomain.insert(i);
            } else if self.last_sfdomain.contains(i) {
                self.last_sfdomain.remove(i);
                sf_out.set(i, self.current.contains(i));
            }
        }
        if self.sr2 || self.storage_lost {
            sf_out = HostSet::EMPTY;
        }
        let failed = hb_out.or(sf_out);
        if !failed.is_empty() && self.is_online() {
            self.request_fh(now, false);
            self.abandon_if_kept_failed(now, failed);
        }
    }

    /// A member this round's survival test kept fails, or starts a new
    /// round, before this round ends (rule L in docs/HA.md): the budget's
    /// clock starts now, and the round ends at its next step without
    /// dropping anyone, so that the next round decides within the budget. Waiting out this round (its
    /// winners wait `fence_wait` before dropping) would start the clock
    /// only when it ends, later than peers that noticed the same failure
    /// may drop this host.
    fn abandon_if_kept_failed(&mut self, now: Millis, failed: HostSet) {
        let Some(fh) = &mut self.fh else { return };
        if fh.outcome.is_none() || failed.and(self.proposed).is_empty() {
            return;
        }
        fh.abandon = true;
        self.need_fh = true;
        if self.armed && self.trouble_since.is_none() {
            self.trouble_since = Some(now);
        }
    }

    fn request_fh(&mut self, now: Millis, forced: bool) {
        if forced && self.phase != Phase::Started {
            return;
        }
        let early = matches!(
            self.phase,
            Phase::FhReady | Phase::Fh1 | Phase::Fh1Done | Phase::Fh2 | Phase::Fh2Done
        );
        // A fault noticed after this round's survival test waits for the
        // next round; its clock starts when this round ends.
        let decided = self.fh.as_ref().is_some_and(|f| f.outcome.is_some());
        if self.trouble_since.is_none() && self.armed && !decided {
            self.trouble_since = Some(now);
        }
        if !early {
            self.need_fh = true;
        }
        // This round decides on views frozen before the fault: the next
        // round handles it, on the clock started now.
        if let Some(f) = &mut self.fh {
            if f.snapshot.is_some() && f.outcome.is_none() {
                self.need_fh = true;
                f.after_snapshot.get_or_insert(now);
            }
        }
    }

    // ---- fault handler ----

    fn set_phase(&mut self, phase: Phase) {
        if self.phase != phase {
            self.phase = phase;
            self.phase_seq = self.sf_sequence;
            self.hb_burst = self.hb_burst.max(2);
        }
    }

    fn fault_handler(&mut self, now: Millis) {
        if self.fh.is_none() {
            if !self.need_fh || self.phase != Phase::Started {
                return;
            }
            self.need_fh = false;
            self.join_block = true;
            self.log(format!(
                "fault handler starts: liveset {} hbdomain {} sfdomain {}",
                self.current, self.hbdomain, self.sfdomain
            ));
            self.fh = Some(Fh {
                step: 0,
                step_start: now,
                started: now,
                p3: now,
                p4: None,
                snapshot: None,
                outcome: None,
                late_loser: false,
                failed: self.failed_members(now),
                split_seen: false,
                sf_only_seen: false,
                regrown_hb: HostSet::EMPTY,
                regrown_sf: HostSet::EMPTY,
                tie: self.tie,
                after_snapshot: None,
                abandon: false,
            });
        }
        // Run as many steps as complete now.
        for _ in 0..FH_STEPS.len() + 1 {
            let Some(fh) = self.fh.clone() else { return };
            if !self.is_running() {
                return;
            }
            if fh.abandon {
                self.fh = None;
                self.join_block = false;
                self.sf_accelerate = false;
                self.fence_request = false;
                // Undo the decision: the next round decides again.
                self.proposed = self.proposed.or(self.current);
                self.set_phase(Phase::Started);
                let took = now - fh.started;
                self.log(format!(
                    "fault handler ends after {took} ms without its decision: a host it kept failed; liveset {}",
                    self.current
                ));
                return;
            }
            let Some(&step) = FH_STEPS.get(fh.step) else {
                self.fh = None;
                self.join_block = false;
                self.sf_accelerate = false;
                let took = now - fh.started;
                self.log(format!("fault handler ends after {took} ms: liveset {}", self.current));
                if self.need_fh && self.armed && self.trouble_since.is_none() {
                    self.trouble_since = Some(now);
                }
                return;
            };
            let done = match step {
                Step::Rendezvous { set, next, on_sf } => {
                    self.set_phase(set);
                    self.sf_accelerate = on_sf;
                    self.rendezvous(now, set, next, on_sf)
                }
                Step::Stable => self.stable(now, fh.started),
                Step::Consistent => {
                    self.undo_regrowth();
                    // Decide on the views as they were when they first
                    // agreed, even if we then wait to publish our phase.
                    let snap = match fh.snapshot {
                        Some(snap) => Some(snap),
                        None if self.consistent() => Some(self.snapshot()),
                        None => None,
                    };
                    let published = snap.as_ref().is_some_and(|s| self.phase_published(s));
                    let have_snap = snap.is_some();
                    if let (Some(f), Some(snap)) = (&mut self.fh, snap) {
                        f.snapshot = Some(snap);
                    }
                    if published {
                        true
                    } else {
                        // The step's clock restarts with the budget's when
                        // a second failure extends the handler.
                        let t = &self.cfg.timeouts;
                        let since = fh.step_start.max(self.trouble_since.unwrap_or(0));
                        if now - since >= t.hb_timeout.max(t.sf_timeout) {
                            let waiting = if have_snap {
                                "its own slot to show phase 2".to_string()
                            } else {
                                format!("hosts {}", self.inconsistent_peers())
                            };
                            self.fence(
                                "SM_FAULTHANDLER_TIMEOUT",
                                format!("FH: cannot get consistent view within timeout (waiting for {waiting})"),
                            );
                            return;
                        }
                        false
                    }
                }
                Step::Survival => {
                    self.survival(now);
                    true
                }
                Step::Degrade => self.degrade(now),
            };
            if !done {
                return;
            }
            if let Some(f) = &mut self.fh {
                f.step += 1;
                f.step_start = now;
            }
        }
    }

    /// How long a member may be silent on the network before the fault
    /// handler counts it as failed, though it is still in the hbdomain:
    /// two heartbeat intervals and a second of margin.
    fn suspect_after(&self) -> Millis {
        2 * self.cfg.timeouts.hb_interval + 1000
    }

    /// Liveset members, other than this host, out of a domain or silent
    /// on the network for [`Engine::suspect_after`].
    fn failed_members(&self, now: Millis) -> HostSet {
        let quiet = self.suspect_after();
        self.current
            .without(self.cfg.me)
            .iter()
            .filter(|&i| {
                !self.hbdomain.contains(i)
                    || !self.sfdomain.contains(i)
                    || self.last_hb[i].is_none_or(|t| now.saturating_sub(t) >= quiet)
            })
            .collect()
    }

    /// A second failure during the fault handler extends it instead of
    /// fencing the survivors: a member that fails anew before this host
    /// has published phase 2 restarts the clock of the fault-handler
    /// budget. Only a host holding the statefile (its own slot fresh, not
    /// kept without storage) extends. Safety (`docs/HA.md`, rule E): a
    /// winner that drops this host decides only after it saw this host in
    /// phase 2 or later (on the network, in the rendezvous before its
    /// survival test; on the statefile, in its consistent-view step), so
    /// the extended deadline still ends within the winner's wait.
    fn extend_for_new_failures(&mut self, now: Millis) {
        let me = self.cfg.me;
        let holder = self.sf_access && self.sfdomain.contains(me) && !self.storage_lost && !self.sr2;
        // Past phase 2 only in a round that never saw a peer across a
        // network split: such a peer may have decided on this host's
        // published phase and views (even one that later looks stale).
        // A peer across a split is one seen writing its slot during this
        // round while not heard: a host that died before the round began
        // stays in the sfdomain for a while but decides nothing.
        let started = self.fh.as_ref().map_or(now, |f| f.started);
        let split = self
            .current
            .and(self.sfdomain)
            .minus(self.hbdomain)
            .iter()
            .any(|i| self.last_sf[i].is_some_and(|t| t >= started));
        let failed = self.failed_members(now);
        let phase = self.phase;
        let armed = self.armed && self.trouble_since.is_some();
        let sf_only = !self.current.and(self.sfdomain).is_subset(self.hbdomain);
        let Some(fh) = &mut self.fh else { return };
        fh.split_seen |= split;
        fh.sf_only_seen |= sf_only;
        if !armed || !holder || fh.snapshot.is_some() || (phase >= Phase::Fh2 && fh.split_seen) {
            return;
        }
        let new = failed.minus(fh.failed);
        if new.is_empty() {
            return;
        }
        fh.failed = fh.failed.or(new);
        self.trouble_since = Some(now);
        self.log(format!(
            "hosts {new} failed during the fault handler: its budget starts again"
        ));
    }

    fn peer_phase_hb(&self, i: usize) -> Option<Phase> {
        self.peers[i].as_ref().map(|p| p.hb.view.phase)
    }

    /// Every peer seen on the network publishes `p1` or `p2`; with `on_sf`,
    /// every peer seen on the statefile has reached `p1` (peers across a
    /// network split run their own rendezvous and may be ahead) or is not
    /// in a fault handler yet.
    ///
    /// A peer silent on the network for [`Engine::suspect_after`] whose
    /// slot is still fresh is not waited for: it died or its packets stopped
    /// during this round, this round keeps it (it is in both domains of the
    /// snapshot or will be), and the next round judges it on the clock of
    /// its own notice.
    fn rendezvous(&self, now: Millis, p1: Phase, p2: Phase, on_sf: bool) -> bool {
        let exact = |ph: Option<Phase>| ph.is_some_and(|ph| ph == p1 || ph == p2);
        let reached = |ph: Option<Phase>| ph.is_some_and(|ph| ph >= p1 || !ph.in_fault_handler());
        // The statefile speaks only for peers across a network split (the
        // network speaks for the others), and only to a host that sees its
        // own slot fresh: a host with slow I/O reads old phases.
        let holder = self.sfdomain.contains(self.cfg.me);
        self.current.iter().filter(|&i| i != self.cfg.me).all(|i| {
            let silent = self.sfdomain.contains(i)
                && self.last_hb[i].is_none_or(|t| now.saturating_sub(t) >= self.suspect_after());
            let hb_ok = !self.hbdomain.contains(i) || silent || exact(self.peer_phase_hb(i));
            let sf_only = self.sfdomain.contains(i) && !self.hbdomain.contains(i);
            let sf_ok = !on_sf || !sf_only || !holder || reached(self.slots[i].map(|s| s.view.phase));
            hb_ok && sf_ok
        })
    }

    /// No host in a domain is stale (older than T/4) unless it has been
    /// since the fault handler started.
    fn stable(&self, now: Millis, started: Millis) -> bool {
        let t = &self.cfg.timeouts;
        let since_start = now - started;
        (0..self.n).filter(|&i| i != self.cfg.me).all(|i| {
            let hb_stale = self.hbdomain.contains(i)
                && self.last_hb[i].is_some_and(|l| {
                    let age = now.saturating_sub(l);
                    age > t.hb_timeout / 4 && age > since_start
                });
            let sf_stale = self.sfdomain.contains(i)
                && self.last_sf[i].is_some_and(|l| {
                    let age = now.saturating_sub(l);
                    age > t.sf_timeout / 4 && age > since_start
                });
            !hb_stale && !sf_stale
        })
    }

    /// The views are settled enough to decide on. A peer on the network
    /// must hold the same hbdomain (and sfdomain, when both reach the
    /// statefile) and publish the same views in its slot. A peer seen only on
    /// the statefile, across a network split, must have reached phase 2 of
    /// its own fault handler, agree that we are split, and see the same hosts
    /// on the statefile; its partition then counts by its published views.
    fn consistent(&self) -> bool {
        self.inconsistent_peers().is_empty()
    }

    /// The peers whose views keep [`Engine::consistent`] false.
    fn inconsistent_peers(&self) -> HostSet {
        let me = self.cfg.me;
        // Compare the domains on every host the survival test counts (the
        // members its peers publish too), not only on our liveset.
        // Statefile views are compared without the network peers that say
        // they do not see their own slot fresh: hosts read such a peer's
        // late writes at different times, and it is judged as storage-lost
        // by all (`Engine::nonholder_peers`).
        let cur = self.members_held();
        let cur_sf = cur.minus(self.nonholder_peers());
        self.current
            .iter()
            .filter(|&i| i != me && !self.consistent_with(i, cur, cur_sf))
            .collect()
    }

    /// Peer `i`'s views agree with ours, as [`Engine::consistent`] asks:
    /// network views on the hosts `cur`, statefile views on `cur_sf`.
    fn consistent_with(&self, i: usize, cur: HostSet, cur_sf: HostSet) -> bool {
        let me = self.cfg.me;
        let my_hbd = self.hbdomain.and(cur);
        let my_sfd = self.sfdomain.and(cur_sf);
        let slot = self.slots[i];
        if my_hbd.contains(i) {
            let Some(p) = &self.peers[i] else { return false };
            if p.hb.view.hbdomain.and(cur) != my_hbd {
                return false;
            }
            let both_on_sf = self.sfdomain.contains(me) && p.hb.view.sfdomain.contains(i);
            if both_on_sf && p.hb.view.sfdomain.and(cur_sf) != my_sfd {
                return false;
            }
            // A peer that does not see its own slot fresh (slow I/O)
            // publishes views that lag: its heartbeat speaks for it.
            // So does this host's, which then decides nothing from
            // the statefile (it is kept without it, or not).
            if my_sfd.contains(i) && p.hb.view.sfdomain.contains(i) && self.sfdomain.contains(me) {
                let Some(slot) = slot else { return false };
                if slot.view.sfdomain.and(cur_sf) != my_sfd || slot.view.hbdomain.and(cur) != my_hbd {
                    return false;
                }
            }
            true
        } else if my_sfd.contains(i) {
            let Some(slot) = slot else { return false };
            // A host that is not a member in its own eyes (booting, or
            // joining) decides nothing and is not armed: nothing to
            // agree with. Unless this host heard that boot of it online:
            // then the slot is late (slow I/O), not the host (rule G).
            if slot.starting && !slot.view.current.contains(i) && !self.heard_online(i, slot.boot) {
                return true;
            }
            slot.view.phase >= Phase::Fh2
                && !slot.view.hbdomain.contains(me)
                && slot.view.sfdomain.and(cur_sf) == my_sfd
        } else {
            true
        }
    }

    /// The latest heartbeat heard from boot `boot` of host `i` said it was
    /// online (a member in its own eyes): whatever an older slot of that
    /// boot says, it is armed, or was until it fenced.
    fn heard_online(&self, i: usize, boot: u64) -> bool {
        self.peers[i]
            .as_ref()
            .is_some_and(|p| p.hb.boot == boot && p.hb.view.phase != Phase::Starting && p.hb.view.current.contains(i))
    }

    /// Network peers whose latest heartbeat says they do not see their
    /// own slot fresh (lost or slow statefile I/O): they decide nothing
    /// from the statefile, so their slot, fresh to some readers and stale
    /// to others, does not count in this host's sfdomain for the decision.
    fn nonholder_peers(&self) -> HostSet {
        self.hbdomain
            .and(self.current)
            .without(self.cfg.me)
            .iter()
            .filter(|&i| self.peers[i].as_ref().is_some_and(|p| !p.hb.view.sfdomain.contains(i)))
            .collect()
    }

    /// Across a network split (in the views of `snap`), our slot on the
    /// statefile shows the phase we are in. A host leaves phase 2 only once
    /// the peers it sees only on the statefile can read that it reached it:
    /// else a loser that decides and fences within one statefile interval
    /// leaves the winners waiting for its slot to age out, and maybe timing
    /// out themselves. Peers on the network read our phase from heartbeats,
    /// and a host that does not see its own slot fresh has no one to show
    /// it to.
    fn phase_published(&self, snap: &Snapshot) -> bool {
        let me = self.cfg.me;
        let sf_only = self.current.and(snap.sfdomain).minus(snap.hbdomain).without(me);
        sf_only.is_empty()
            || !self.sf_access
            || !self.sfdomain.contains(me)
            || self.slots[me].is_some_and(|s| s.boot == self.cfg.boot && s.sequence > self.phase_seq)
    }

    fn peers_with_sf(&self) -> HostSet {
        (0..self.n)
            .filter(|&i| i != self.cfg.me && self.peers[i].as_ref().is_some_and(|p| p.hb.view.sfdomain.contains(i)))
            .collect()
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            sf_access: self.sf_access && self.sfdomain.contains(self.cfg.me),
            hbdomain: self.hbdomain,
            sfdomain: self.sfdomain.minus(self.nonholder_peers()),
            peers_with_sf: self.peers_with_sf(),
            published: self
                .slots
                .iter()
                .map(|s| s.map(|s| (s.view.sfdomain, s.view.hbdomain)))
                .collect(),
            ties: (0..self.n)
                .map(|i| {
                    if i == self.cfg.me {
                        Some(self.published_tie())
                    } else if self.hbdomain.contains(i) {
                        self.peers[i].as_ref().map(|p| p.hb.tie)
                    } else {
                        self.slots[i].map(|s| s.tie)
                    }
                })
                .collect(),
            joiners: (0..self.n)
                .filter(|&i| i != self.cfg.me && self.slots[i].is_some_and(|s| s.starting))
                .collect(),
            claimants: self.claimants().minus(self.hbdomain),
            excluded: self.excluded_hosts(),
            members: self.members_held(),
        }
    }

    /// Our liveset and every host that a member of it still writing the
    /// statefile holds in the liveset its slot publishes. Members disagree
    /// for a moment when one of them took in a joiner that another acked
    /// but was cut off before it saw the last ack; counting the union keeps
    /// their survival tests alike. Only fresh slots count (a stale one may
    /// list hosts dropped since), and only the boot of a host that is
    /// running now (a slot may list a boot that has died and restarted).
    fn members_held(&self) -> HostSet {
        let me = self.cfg.me;
        let mut members = self.current;
        for i in self.current.and(self.sfdomain).iter().filter(|&i| i != me) {
            let Some(slot) = self.slots[i] else { continue };
            let ours = self.member_boot[i] == 0 || slot.boot == self.member_boot[i];
            if !ours || !slot.view.current.contains(i) {
                continue;
            }
            for j in slot.view.current.iter().filter(|&j| j < self.n) {
                if slot.member_boots.get(j).copied() == Some(self.latest_boot(j)) {
                    members.insert(j);
                }
            }
        }
        members
    }

    /// Hosts writing the statefile, not in [`Engine::members_held`], that
    /// hold themselves and this boot of this host in their liveset: a
    /// joiner that completed its join on other members while this one was
    /// cut off before taking it in. This host cannot win outright while
    /// such a holder is unheard, and an unheard one counts in the
    /// largest-partition rule as the member it is on its side (ha-sim
    /// 20513635). One this host hears is not counted: a host that joined as
    /// the fault handler began may hear both sides of a split, and its
    /// views would put each side in its partition (30015296).
    fn claimants(&self) -> HostSet {
        let me = self.cfg.me;
        let members = self.members_held();
        self.sfdomain
            .minus(members)
            .iter()
            .filter(|&i| i != me)
            .filter(|&i| {
                self.slots[i].is_some_and(|slot| {
                    slot.view.current.contains(me)
                        && slot.member_boots.get(me) == Some(&self.cfg.boot)
                        && slot.view.current.contains(i)
                        && !slot.starting
                        && slot.boot == self.latest_boot(i)
                })
            })
            .collect()
    }

    /// The newest boot of host `i` heard on the network or seen in its slot
    /// (0 when none is known).
    fn latest_boot(&self, i: usize) -> u64 {
        if i == self.cfg.me {
            return self.cfg.boot;
        }
        let heard = self.peers[i].as_ref().map_or(0, |p| p.hb.boot);
        let seen = self.slots[i].map_or(0, |s| s.boot);
        heard.max(seen)
    }

    fn survival(&mut self, now: Millis) {
        let snap = self
            .fh
            .as_ref()
            .and_then(|f| f.snapshot.clone())
            .unwrap_or_else(|| self.snapshot());
        let weights = self.cfg.weights.clone();
        let views = Views {
            me: self.cfg.me,
            hosts: self.n,
            current: self.current,
            hbdomain: snap.hbdomain,
            sfdomain: snap.sfdomain,
            sf_access: snap.sf_access,
            peers_with_sf: snap.peers_with_sf,
            published: &snap.published,
            ties: &snap.ties,
            joiners: snap.joiners,
            claimants: snap.claimants,
            excluded: snap.excluded,
            members: snap.members,
            weights: &weights,
        };
        let outcome = (self.cfg.survival)(&views);
        self.log(format!(
            "FH3: liveset {} hbdomain {} sfdomain {} statefile {}: {:?}",
            self.current,
            snap.hbdomain,
            snap.sfdomain,
            if snap.sf_access { "reachable" } else { "unreachable" },
            outcome
        ));
        match outcome {
            Outcome::Lost => {
                self.fence("SM_SURVIVALRULE_FAILED", survival_explanation(&views));
                return;
            }
            Outcome::StorageLost => {}
            _ => {
                self.trouble_since = self.fh.as_ref().and_then(|f| f.after_snapshot);
                if self.trouble_since.is_none() {
                    self.uncap_watchdogs(now);
                }
                if outcome == Outcome::Rule2 && !self.sr2 {
                    self.sr2 = true;
                    self.log("surviving by rule 2: no host reaches the statefile, the network is whole".into());
                }
                if self.armed {
                    let keep = rules::keep(&views, outcome);
                    for i in 0..self.n {
                        if self.proposed.contains(i) && !keep.contains(i) {
                            self.log(format!("host {i} will be removed from the liveset"));
                            self.proposed.remove(i);
                            let decided = self.slots[i].is_some_and(|s| s.view.phase >= Phase::Fh3);
                            if decided && !snap.hbdomain.contains(i) {
                                self.log(format!(
                                    "host {i} is past the survival test of a fault handler of its own: waiting longer for it"
                                ));
                                if let Some(f) = &mut self.fh {
                                    f.late_loser = true;
                                }
                            }
                        }
                    }
                }
            }
        }
        if let Some(f) = &mut self.fh {
            f.p3 = now;
            f.outcome = Some(outcome);
        }
    }

    fn degrade(&mut self, now: Millis) -> bool {
        let Some(fh) = self.fh.clone() else { return true };
        if fh.outcome == Some(Outcome::StorageLost) && fh.p4.is_none() {
            // Kept only if every host with storage that we see won and kept us.
            let me = self.cfg.me;
            let judges: Vec<usize> = self
                .hbdomain
                .and(self.peers_with_sf())
                .and(self.current)
                .iter()
                .collect();
            let kept = !judges.is_empty()
                && judges.iter().all(|&j| {
                    self.peers[j]
                        .as_ref()
                        .is_some_and(|p| p.hb.view.phase >= Phase::Fh3Done && p.hb.view.proposed.contains(me))
                });
            if !kept {
                self.fence(
                    "SM_SURVIVALRULE_FAILED",
                    "this host cannot reach the statefile and the hosts that can did not keep it".into(),
                );
                return false;
            }
            // Drop only the hosts every judge drops: judges whose livesets
            // differ (a join completed on some members only) propose
            // differently, and a host one of them keeps may be armed.
            let kept_by_any = judges
                .iter()
                .filter_map(|&j| self.peers[j].as_ref())
                .fold(HostSet::EMPTY, |acc, p| acc.or(p.hb.view.proposed));
            self.proposed = kept_by_any.and(self.current);
            self.storage_lost = true;
            self.trouble_since = fh.after_snapshot;
            if self.trouble_since.is_none() {
                self.uncap_watchdogs(now);
            }
            // The proposal comes from judges that decided by now: the wait
            // before dropping anyone counts from here.
            if let Some(f) = &mut self.fh {
                f.p3 = now;
            }
            self.log("kept in the liveset without statefile access".into());
        }
        let degrading = !self.current.is_subset(self.proposed);
        if !degrading {
            return true;
        }
        let p4 = match fh.p4 {
            Some(p4) => p4,
            None => {
                if self.armed && fh.outcome != Some(Outcome::StorageLost) {
                    self.fence_request = true;
                    self.hb_burst = self.hb_burst.max(3);
                }
                if let Some(f) = &mut self.fh {
                    f.p4 = Some(now);
                }
                now
            }
        };
        // xhad sleeps max(base - (p4 - p3) + extend, floor) from p4.
        let t = &self.cfg.timeouts;
        let floor = if t.t >= 10_000 { 10_000 } else { 2_000 };
        // xhad adds T when the survival test shrank a domain, for losers that
        // noticed late; the fault-handler budget bounds those already.
        // A loser still finishing an earlier round (up to T1 for its
        // rendezvous, its own wait) judges this fault only in its next one.
        let late = if fh.late_loser {
            t.hb_timeout + t.fence_wait(false)
        } else {
            0
        };
        let wake = (fh.p3 + t.fence_wait(false) + late).max(p4 + floor);
        if now < wake {
            return false;
        }
        if self.armed {
            let before = self.current;
            self.current = self.current.and(self.proposed);
            self.log(format!("Liveset has been updated: {} -> {}", before, self.current));
            self.out.push(Command::Liveset(self.current));
        }
        self.fence_request = false;
        true
    }

    fn check_leave_rule2(&mut self) {
        let me = self.cfg.me;
        let excluded = self.excluded_hosts();
        let recovered = self.sf_access
            && (0..self.n).filter(|&i| i != me).all(|i| {
                if self.hbdomain.contains(i) {
                    self.peers[i].as_ref().is_some_and(|p| p.hb.view.sfdomain.contains(i))
                } else {
                    excluded.contains(i)
                }
            });
        if recovered {
            self.sr2 = false;
            self.log("leaving survival rule 2: the statefile is back".into());
        }
    }

    // ---- start and join ----

    fn boot_limit(&self) -> Millis {
        let t = &self.cfg.timeouts;
        match self.global.map(|g| g.pool_state) {
            Some(PoolState::Init) => t.enable_join,
            _ => t.boot_join,
        }
    }

    fn all(&self) -> HostSet {
        HostSet::first(self.n)
    }

    fn boot_step(&mut self, now: Millis) {
        let since = now - self.start_time;
        let t = self.cfg.timeouts;
        match self.boot {
            Boot::FirstRead => {
                if self.sf_ok_at.is_none() {
                    return;
                }
                match self.global.map(|g| g.pool_state) {
                    Some(PoolState::Init) | Some(PoolState::Active) => self.boot = Boot::Discover,
                    Some(PoolState::Invalid) => self.stop(Exit::InvalidPoolState),
                    _ => self.stop(Exit::CannotAccessStatefile),
                }
            }
            Boot::Discover => {
                let hb_up = self.hbdomain == self.all() || since >= t.hb_timeout;
                let sf_up = self.sfdomain == self.all() || since >= t.sf_timeout;
                if hb_up && sf_up {
                    self.boot = Boot::Recognized;
                }
            }
            Boot::Recognized => {
                let me = self.cfg.me;
                let still = (0..self.n).filter(|&i| i != me).any(|i| {
                    (self.hbdomain.contains(i)
                        && self.peers[i].as_ref().is_some_and(|p| p.hb.view.current.contains(me)))
                        || (self.sfdomain.contains(i) && self.slots[i].is_some_and(|s| s.view.current.contains(me)))
                });
                if !still {
                    self.log(format!(
                        "no host holds this one in its liveset: hbdomain {} sfdomain {}",
                        self.hbdomain, self.sfdomain
                    ));
                    self.boot = Boot::Criteria;
                } else if since >= self.boot_limit() {
                    self.log("this host is still online from other hosts' perspectives".into());
                    self.stop(Exit::BootJoinTimeout);
                }
            }
            Boot::Criteria => self.start_criteria(now),
            Boot::AllBooted { deadline } => {
                let me = self.cfg.me;
                // Every host of the proposal must ack it freshly: a host
                // that left the hbdomain meanwhile has not booted with us
                // (counting it made a host frozen while forming come back
                // online in a liveset the others had shrunk).
                // And propose exactly the same liveset: hosts that reach
                // different hosts (a one-way cut, a majority formed
                // without a host) must not each form their own.
                let booted = self.proposed.iter().filter(|&i| i != me).all(|i| {
                    self.fresh_ack(now, i)
                        && self.peers[i]
                            .as_ref()
                            .is_some_and(|p| p.hb.view.proposed == self.proposed)
                });
                if booted {
                    let liveset = self.proposed;
                    self.form_liveset(now, liveset);
                    if self.global.map(|g| g.pool_state) == Some(PoolState::Init) {
                        self.set_pool_state(PoolState::Active);
                    }
                } else if now >= deadline {
                    self.stop(Exit::BootJoinTimeout);
                }
            }
            Boot::Join { deadline } => {
                let me = self.cfg.me;
                // The members may have taken in other hosts, acked other
                // joiners, or dropped hosts since we began to join: we join
                // the liveset the members we hear hold and propose now, and
                // each host in it must ack us. Else two hosts joining at
                // once would each join a liveset without the other, or we
                // would wait for the ack of a host the members dropped
                // while they count us in.
                let held = self
                    .current
                    .iter()
                    .filter(|&i| self.hbdomain.contains(i))
                    .filter_map(|i| self.peers[i].as_ref().filter(|p| p.hb.view.current.contains(i)))
                    .fold(HostSet::EMPTY, |acc, p| {
                        acc.or(p.hb.view.current).or(p.hb.view.proposed)
                    })
                    .without(me);
                if !held.is_empty() && held != self.current {
                    self.log(format!("the liveset changed while joining: now {held}"));
                    self.current = held;
                    self.proposed = held.with(me);
                }
                let member = |i: usize| self.peers[i].as_ref().is_some_and(|p| p.hb.view.current.contains(i));
                let joined = self.current.iter().filter(|&i| i != me).all(|i| self.fresh_ack(now, i))
                    && self.current.iter().any(|i| i != me && member(i));
                if joined {
                    self.current.insert(me);
                    self.note_members(self.current);
                    self.log(format!("joined the liveset {}", self.current));
                    self.online(now);
                } else if now >= deadline {
                    self.proposed.remove(me);
                    self.stop(Exit::CannotJoin);
                }
            }
        }
    }

    /// Host `i` proposes this host in its latest heartbeat, and that
    /// heartbeat is recent: after this host was frozen, the acks it read
    /// before may be withdrawn already.
    fn fresh_ack(&self, now: Millis, i: usize) -> bool {
        let recent = self.last_hb[i].is_some_and(|t| now.saturating_sub(t) < self.cfg.timeouts.hb_timeout / 2);
        recent
            && self.peers[i]
                .as_ref()
                .is_some_and(|p| p.hb.view.proposed.contains(self.cfg.me))
    }

    fn start_criteria(&mut self, now: Millis) {
        let since = now - self.start_time;
        let limit = self.boot_limit();
        let state = self.global.map(|g| g.pool_state).unwrap_or(PoolState::None);
        if !self.sf_access {
            self.stop(Exit::CannotAccessStatefile);
            return;
        }
        let starting: HostSet = (0..self.n)
            .filter(|&i| self.slots[i].is_some_and(|s| s.starting))
            .collect();
        let excluded = self.excluded_hosts();
        let nonstarting = self.sfdomain.minus(starting).minus(HostSet::single(self.cfg.me));
        let exists = !nonstarting.is_empty() || (self.sr2 && self.hbdomain.or(excluded) == self.all());
        match (state, exists) {
            (PoolState::Init, true) => self.stop(Exit::InvalidPoolState),
            (PoolState::Init | PoolState::Active, false) => {
                if self.hbdomain == self.all() && self.sfdomain == self.all() {
                    self.proposed = self.hbdomain;
                    self.log(format!("forming a new liveset with all hosts {}", self.proposed));
                    let t = &self.cfg.timeouts;
                    self.boot = Boot::AllBooted {
                        deadline: self.start_time + limit + 3 * t.hb_interval.max(t.sf_interval),
                    };
                    self.hb_burst = 3;
                } else if since >= limit {
                    if let (PoolState::Active, Some(majority)) = (state, self.majority_reached()) {
                        if since >= self.majority_wait() {
                            self.proposed = majority;
                            self.log(format!(
                                "forming a new liveset with the hosts it reaches, a majority of the pool: {majority}"
                            ));
                            self.boot = Boot::AllBooted { deadline: now + limit };
                            self.hb_burst = 3;
                        }
                    } else if state == PoolState::Init {
                        self.stop(Exit::BootJoinTimeout);
                    } else if self.excluded && excluded != self.all() {
                        self.stop(Exit::BootBlockedByExcluded);
                    } else {
                        self.stop(Exit::BootFailed);
                    }
                }
            }
            (PoolState::Active, true) => {
                if let Some(first) = nonstarting.lowest() {
                    if let Some(s) = self.slots[first] {
                        // Only a liveset formed with this host in it: one
                        // that still lists it from before it rebooted (the
                        // holder's slot was out of sight while this host
                        // waited to be forgotten) is being shrunk, and
                        // says so in `proposed` or its phase.
                        // And it must list this boot of this host: a slot
                        // written late (slow I/O) can list an earlier one.
                        let me = self.cfg.me;
                        if s.view.current.contains(me)
                            && s.view.proposed.contains(me)
                            && !s.view.phase.in_fault_handler()
                            && s.member_boots.get(me) == Some(&self.cfg.boot)
                        {
                            self.form_liveset(now, s.view.current);
                            return;
                        }
                    }
                }
                if self.sfdomain.is_subset(self.hbdomain) {
                    // The liveset as its members publish it: it may hold
                    // hosts kept without the statefile, seen only there.
                    let published = self
                        .hbdomain
                        .iter()
                        .filter(|&i| i != self.cfg.me)
                        .filter_map(|i| self.peers[i].as_ref())
                        .filter(|p| p.hb.view.current.contains(p.hb.from))
                        .fold(HostSet::EMPTY, |acc, p| acc.or(p.hb.view.current));
                    self.current = self.sfdomain.minus(starting).or(published).without(self.cfg.me);
                    self.proposed = self.current.with(self.cfg.me);
                    self.log(format!("joining the existing liveset {}", self.current));
                    self.hb_burst = 3;
                    self.boot = Boot::Join {
                        deadline: now + self.cfg.timeouts.boot_join,
                    };
                } else if since >= limit {
                    self.log(format!(
                        "cannot join: hosts {nonstarting} write member slots, and hosts {} are seen only on the statefile",
                        self.sfdomain.minus(self.hbdomain)
                    ));
                    self.stop(Exit::CannotJoin);
                }
            }
            _ => self.stop(Exit::InvalidPoolState),
        }
    }

    /// The hosts to form a liveset with when not all of them came up
    /// (rule Q in docs/HA.md): with the pool active and nobody online, the
    /// hosts this one reaches on both channels, if they are a strict
    /// majority of the pool and none of them is heard online. Two strict
    /// majorities share a host, and a host forms at most one liveset a
    /// boot, so two such livesets cannot both form.
    fn majority_reached(&self) -> Option<HostSet> {
        let me = self.cfg.me;
        let reached = self.hbdomain.and(self.sfdomain).with(me);
        let heard_online = self
            .hbdomain
            .iter()
            .filter(|&i| i != me)
            .any(|i| self.peers[i].as_ref().is_some_and(|p| p.hb.view.current.contains(i)));
        (reached.len() * 2 > self.n && !heard_online && self.sf_access).then_some(reached)
    }

    /// How long after its start a host waits before it forms a majority
    /// liveset: the boot limit, and at least a full detection and fence
    /// wait, so that a host still armed from before, out of reach, has
    /// fenced by then (unless it writes a slot that says it is a member:
    /// then this host joins it instead).
    fn majority_wait(&self) -> Millis {
        let t = &self.cfg.timeouts;
        self.boot_limit()
            .max(t.hb_timeout.max(t.sf_timeout) + t.fence_wait(true))
    }

    fn form_liveset(&mut self, now: Millis, liveset: HostSet) {
        self.proposed = liveset;
        self.current = liveset;
        self.note_members(liveset);
        self.join = false;
        self.log(format!("formed the liveset {liveset}"));
        self.online(now);
    }

    /// Record which boot of each of `hosts` is now in the liveset: the
    /// newer of the one heard on the network and the one seen in its slot
    /// (a host's boots only grow).
    fn note_members(&mut self, hosts: HostSet) {
        for i in hosts.iter().filter(|&i| i < self.n) {
            self.member_boot[i] = self.latest_boot(i);
        }
    }

    fn online(&mut self, now: Millis) {
        self.starting = false;
        self.excluded = false;
        self.join = false;
        self.status = Status::Online;
        self.phase = Phase::Started;
        // Every liveset member counts as heard until shown otherwise: one
        // this host does not hear as it goes online (it formed the liveset
        // from a slot, or a member fell silent as it joined) leaves the
        // hbdomain at the next tick, and the fault handler judges it.
        self.last_hbdomain = self.hbdomain.or(self.current);
        self.last_sfdomain = self.sfdomain;
        self.armed = true;
        self.feed(now, Watchdog::Heartbeat);
        if self.sf_access {
            self.feed(now, Watchdog::Statefile);
        }
        self.out.push(Command::Arm);
        self.out.push(Command::Liveset(self.current));
        self.hb_burst = 3;
        self.next_sf = now;
        self.log(format!("online, fencing armed; liveset {}", self.current));
    }

    /// Members ack and take in joining hosts (xhad's `process_join_request`).
    fn process_join_requests(&mut self) {
        if self.current.is_empty() {
            return;
        }
        let me = self.cfg.me;
        let mut joining = HostSet::EMPTY;
        // A host whose slot still says it left is not back yet.
        let left = self.excluded_hosts();
        for i in 0..self.n {
            if i == me || !self.hbdomain.contains(i) || left.contains(i) {
                continue;
            }
            let Some(p) = &self.peers[i] else { continue };
            let (pc, pp) = (p.hb.view.current, p.hb.view.proposed);
            if !pc.contains(i) && pp.contains(i) {
                if !self.join_block && (self.sfdomain.contains(i) || self.sr2) && !self.proposed.contains(i) {
                    self.proposed.insert(i);
                    self.out.push(Command::Log(format!("ack the join request of host {i}")));
                }
                if !self.current.contains(i) {
                    let allowed = self.current.iter().all(|j| {
                        if j == me {
                            self.proposed.contains(i)
                        } else {
                            self.peers[j].as_ref().is_some_and(|q| q.hb.view.proposed.contains(i))
                        }
                    });
                    if allowed {
                        joining.insert(i);
                    }
                }
            } else if pc.contains(i) && !self.current.contains(i) && !self.join_block {
                self.proposed.insert(i);
                joining.insert(i);
            }
        }
        if !joining.is_empty() {
            self.current = self.current.or(joining);
            self.note_members(joining);
            self.last_hbdomain = self.last_hbdomain.or(joining.and(self.hbdomain));
            self.last_sfdomain = self.last_sfdomain.or(joining.and(self.sfdomain));
            self.log(format!(
                "Liveset has been updated: {joining} joined, now {}",
                self.current
            ));
            self.out.push(Command::Liveset(self.current));
            self.hb_burst = self.hb_burst.max(2);
        }
    }

    // ---- master lock ----

    fn requesting(&self, i: usize) -> bool {
        if i == self.cfg.me {
            self.lock_request
        } else {
            self.slots[i].is_some_and(|s| s.lock_request)
        }
    }

    fn grants(&self, j: usize) -> HostSet {
        if j == self.cfg.me {
            self.lock_grant
        } else {
            self.slots[j].map(|s| s.lock_grant).unwrap_or_default()
        }
    }

    /// One round of xhad's lock manager, after each statefile read.
    fn lock_step(&mut self) {
        let me = self.cfg.me;
        if !self.sf_access || !self.current.contains(me) || !self.is_online() {
            return;
        }
        // A request counts only while its slot is fresh (rule M): a host
        // back from a storage outage asks again before anyone grants it.
        let members = self.lock_members();
        for i in 0..self.n {
            if !(self.requesting(i) && members.contains(i)) {
                self.lock_grant.remove(i);
            }
        }
        if self.want_master && !self.lock_request {
            let withdrawn = members
                .iter()
                .filter(|&j| j != me)
                .all(|j| !self.grants(j).contains(me));
            let no_lower = self.lock_grant.iter().all(|i| i <= me);
            if withdrawn && no_lower {
                self.lock_request = true;
                self.log("requesting the master lock".into());
            } else {
                // Withdraw grants to lower-priority hosts first.
                self.lock_grant = self.lock_grant.and(HostSet::first(me + 1));
            }
        }
        if !self.want_master && self.lock_request {
            self.lock_request = false;
            self.log("master lock request cancelled".into());
        }
        for i in 0..self.n {
            if self.requesting(i) && members.contains(i) {
                if !self.lock_request || i <= me {
                    self.lock_grant.insert(i);
                } else {
                    self.lock_grant.remove(i);
                }
            }
        }
        if !self.lock_request {
            self.lock_held_with = HostSet::EMPTY;
        } else if self.lock_holder() == Some(me) {
            self.lock_held_with = self.lock_members();
        }
        if let Some(h) = self.lock_holder() {
            if h == me && self.global.is_some_and(|g| g.master != Some(me)) && self.pending_global.is_none() {
                if let Some(g) = self.global {
                    self.pending_global = Some(Global { master: Some(me), ..g });
                }
            }
        }
    }
}

/// Does the global block read `g` carry the pending write `p` of host `me`?
fn landed(p: &Global, g: &Global, me: usize) -> bool {
    p.pool_state == g.pool_state && p.generation == g.generation && (p.master != Some(me) || g.master == Some(me))
}

fn survival_explanation(v: &Views) -> String {
    let hbd = v.hbdomain.and(v.current);
    let sfd = v.sfdomain.and(v.current);
    let mut why = format!(
        "Survival Rule is not met for the local host: liveset {}, reachable on the network {}, seen on the statefile {}",
        v.current, hbd, sfd
    );
    if !v.sf_access {
        why.push_str(", this host cannot reach the statefile");
    }
    if let Some(w) = rules::largest_partition(v) {
        if w != v.me {
            why.push_str(&format!(", host {w} is in the largest partition"));
        }
    }
    why
}
