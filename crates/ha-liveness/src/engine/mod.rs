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

mod boot;
mod decide;
mod fault_handler;
mod fencing;
mod master_lock;
mod network;
mod statefile;

use fault_handler::{Fh, Snapshot};

/// A gap between two events longer than this means the host was stalled:
/// events come at least every 100 ms ([`Event::Tick`]).
const STALL: Millis = 1_000;
/// Rule Z: after a stall, how long peers get to be heard (their
/// heartbeats wait in this host's socket) before silence counts.
const WAKE_GRACE: Millis = 300;
use statefile::Domain;

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
    /// Refuse heartbeats not later than the last one accepted from their
    /// sender, and take a host that says it is a member back into the
    /// liveset only on statefile evidence. Always on, except in tests
    /// that check the simulator catches replays when the guard is off.
    pub replay_guard: bool,
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
            replay_guard: true,
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
    pub code: FenceCode,
    pub message: String,
}

/// Why a host fences itself, by xhad's error names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FenceCode {
    /// The survival test of a fault handler failed for this host.
    SurvivalRuleFailed,
    /// A fault handler did not decide within its budget or a step's limit.
    FaultHandlerTimeout,
    /// A winner asked this host to fence (`fence_request`).
    FenceRequested,
    /// This host's own watchdog deadline passed (it was frozen).
    WatchdogExpired,
}

impl FenceCode {
    /// xhad's name for it, as logs and messages print it.
    pub fn name(self) -> &'static str {
        match self {
            FenceCode::SurvivalRuleFailed => "SM_SURVIVALRULE_FAILED",
            FenceCode::FaultHandlerTimeout => "SM_FAULTHANDLER_TIMEOUT",
            FenceCode::FenceRequested => "HB_FENCEREQUESTED",
            FenceCode::WatchdogExpired => "WD_EXPIRED",
        }
    }
}

impl fmt::Display for FenceCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
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

/// What a host has observed of one host, on both channels.
#[derive(Debug, Clone, Default)]
struct Observed {
    /// When its last heartbeat arrived.
    last_hb: Option<Millis>,
    /// Its last heartbeat.
    peer: Option<Peer>,
    /// The sequence of its slot as last read.
    seen_seq: Option<u64>,
    /// When that sequence was first seen (the slot's age counts from it).
    last_sf: Option<Millis>,
    /// Its slot as last read.
    slot: Option<Slot>,
    /// When the read that gave `slot` completed.
    slot_read_at: Option<Millis>,
    /// Its last slot written by the boot of it in the liveset (any boot
    /// while `member_boot` is 0). A slot of a newer boot does not refresh
    /// the member's freshness, so it does not erase what the member's boot
    /// published either: [`Engine::members_held`] reads this one.
    member_slot: Option<Slot>,
    /// The boot of it taken into the liveset (published in the slot).
    member_boot: u64,
    /// The (boot, sequence) of the latest heartbeat accepted from it,
    /// kept for the engine's life: anything not later is a replay.
    hb_high: Option<(u64, u64)>,
    /// The latest boot of it heard saying it left cleanly (its last
    /// heartbeats after a leave carry phase `Aborted`): as good as its
    /// slot's mark, and heard by hosts that cannot read the statefile.
    left_boot: u64,
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

    /// What this host has seen of each host, itself included.
    obs: Vec<Observed>,

    // Network heartbeat.
    hb_sequence: u64,
    next_hb: Millis,
    /// Heartbeats to send at once (rendezvous and joins accelerate).
    hb_burst: u32,
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
    /// `sf_written_from` before the last successful cycle.
    sf_prev_written_from: Option<Millis>,
    global: Option<Global>,
    pending_global: Option<Global>,
    sfdomain: HostSet,
    excluded: bool,
    starting: bool,
    /// Starting, with every ack needed to arm: published in the slot, and
    /// the host arms only once that slot has landed (rule I).
    arming: bool,
    /// `sf_sequence` when `arming` was set: a read-back slot of ours with a
    /// higher sequence carries it.
    arming_seq: u64,
    /// When a read first showed our `arming` slot landed: ackers' slots
    /// read from then on show whether they began a fault handler.
    intent_at: Option<Millis>,
    /// Ackers seen in a fault handler on the statefile after our intent
    /// landed: no arming on their acks until their slot shows the round
    /// over (else this host's slot would keep saying `arming` to them).
    arm_blocked: HostSet,

    // Membership.
    current: HostSet,
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
    /// Per host, the (boot, sequence) of its slot in the first read that
    /// showed this host's request landed: its grant counts for this host
    /// only from a slot two sequences later, written after it read the
    /// request (rule M). Empty while this host does not request.
    lock_baseline: Vec<Option<(u64, u64)>>,
    /// `sf_sequence` when this host last requested: a read-back slot with a
    /// higher sequence carries the request.
    lock_request_seq: u64,
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
    /// When the last event was handled: a longer gap than [`STALL`] means
    /// this host was stalled (frozen, or its shell was).
    last_event: Option<Millis>,
    /// When this host last woke from a stall: for [`WAKE_GRACE`] silence
    /// does not count against peers (rule Z: what they sent meanwhile
    /// waits in this host's queue), and heartbeats received soon after
    /// were sent before it, so their acks are old (rule J).
    woke_at: Option<Millis>,
    out: Vec<Command>,
    /// The tie-break values the caller last reported.
    tie: TieBreak,
}

impl Engine {
    pub fn new(cfg: Config) -> Engine {
        let n = cfg.hosts.len();
        Engine {
            n,
            obs: vec![Observed::default(); n],
            status: Status::Starting,
            armed: false,
            start_time: 0,
            phase: Phase::Starting,
            boot: Boot::FirstRead,
            join: true,
            hb_sequence: 0,
            next_hb: 0,
            hb_burst: 0,
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
            sf_prev_written_from: None,
            global: None,
            pending_global: None,
            sfdomain: HostSet::EMPTY,
            excluded: false,
            starting: true,
            arming: false,
            arming_seq: 0,
            intent_at: None,
            arm_blocked: HostSet::EMPTY,
            current: HostSet::EMPTY,
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
            lock_baseline: Vec::new(),
            lock_request_seq: 0,
            lock_grant: HostSet::EMPTY,
            lock_held_with: HostSet::EMPTY,
            fresh_slots: HostSet::EMPTY,
            lock_resumed_at: None,
            lock_unjudged: HostSet::EMPTY,
            fed: [None, None],
            tie: TieBreak::default(),
            fed_at: [None, None],
            last_event: None,
            woke_at: None,
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
        if self.last_event.is_some_and(|t| now.saturating_sub(t) > STALL) {
            self.woke_at = Some(now);
        }
        self.last_event = Some(now);
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
                    // Say so on the network too, twice against a lost
                    // packet: a peer without the statefile cannot read the
                    // mark, and needs it for rule 2 (ha-sim 240200071).
                    for _ in 0..2 {
                        self.hb_sequence += 1;
                        let hb = self.heartbeat();
                        self.out.push(Command::SendHeartbeat(hb));
                    }
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

    /// When host `i`'s last heartbeat arrived (engine time), if ever.
    pub fn last_heard(&self, i: usize) -> Option<Millis> {
        self.obs.get(i).and_then(|o| o.last_hb)
    }

    /// When host `i`'s slot was last seen to change (engine time), if ever.
    pub fn slot_changed(&self, i: usize) -> Option<Millis> {
        self.obs.get(i).and_then(|o| o.last_sf)
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

    /// The latest global block read.
    pub fn global(&self) -> Option<Global> {
        self.global
    }

    /// Hosts whose latest slot says they left cleanly, in the newest boot
    /// of theirs this host knows of (rule X in docs/HA.md): a host heard
    /// in a later boot has come back, whatever its old slot says.
    pub fn excluded_hosts(&self) -> HostSet {
        (0..self.n)
            .filter(|&i| {
                self.obs[i]
                    .slot
                    .is_some_and(|s| s.excluded && s.boot >= self.latest_boot(i))
                    || (self.obs[i].left_boot != 0 && self.obs[i].left_boot >= self.latest_boot(i))
            })
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
}

#[cfg(test)]
mod tests;
