//! What hosts tell each other: heartbeat packets on the network, and the
//! global block and per-host slots of the statefile on the heartbeat SR.
//!
//! These are the decoded forms; `codec` turns them into authenticated,
//! checksummed bytes.

use crate::hostset::{HostSet, MAX_HOSTS};

/// The state-manager phase a host publishes, in xhad's order. The fault
/// handler walks FhReady..Fh4Done with a rendezvous between phases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    Starting = 0,
    Started = 1,
    Aborted = 2,
    FhReady = 3,
    Fh1 = 4,
    Fh1Done = 5,
    Fh2 = 6,
    Fh2Done = 7,
    Fh3 = 8,
    Fh3Done = 9,
    Fh4 = 10,
    Fh4Done = 11,
}

impl Phase {
    pub fn from_u8(v: u8) -> Option<Phase> {
        use Phase::*;
        Some(match v {
            0 => Starting,
            1 => Started,
            2 => Aborted,
            3 => FhReady,
            4 => Fh1,
            5 => Fh1Done,
            6 => Fh2,
            7 => Fh2Done,
            8 => Fh3,
            9 => Fh3Done,
            10 => Fh4,
            11 => Fh4Done,
            _ => return None,
        })
    }

    /// True while the fault handler runs.
    pub fn in_fault_handler(self) -> bool {
        self >= Phase::FhReady
    }
}

/// The membership views every host publishes, both on the network and in
/// its statefile slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct View {
    /// The agreed liveset, as this host knows it.
    pub current: HostSet,
    /// This host's proposal (joins it acks, losers it drops).
    pub proposed: HostSet,
    /// Hosts heard on the network within T1.
    pub hbdomain: HostSet,
    /// Hosts seen updating the statefile within T2.
    pub sfdomain: HostSet,
    pub phase: Phase,
}

impl View {
    /// The view with every set limited to `hosts`.
    pub fn within(self, hosts: HostSet) -> View {
        View {
            current: self.current.and(hosts),
            proposed: self.proposed.and(hosts),
            hbdomain: self.hbdomain.and(hosts),
            sfdomain: self.sfdomain.and(hosts),
            phase: self.phase,
        }
    }
}

impl Default for View {
    fn default() -> Self {
        View {
            current: HostSet::EMPTY,
            proposed: HostSet::EMPTY,
            hbdomain: HostSet::EMPTY,
            sfdomain: HostSet::EMPTY,
            phase: Phase::Starting,
        }
    }
}

/// One network heartbeat, sent to every peer every t1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    /// Changes each time HA is enabled; a stale host is refused.
    pub generation: u128,
    /// The sender's index.
    pub from: usize,
    /// The sender's boot: new each time its daemon starts.
    pub boot: u64,
    /// Increases with every packet the sender sends.
    pub sequence: u64,
    pub view: View,
    /// The sender can read and write the statefile.
    pub sf_access: bool,
    /// The sender read a corrupt statefile block.
    pub sf_corrupted: bool,
    /// Winners ask the hosts missing from `view.proposed` to fence now.
    pub fence_request: bool,
    /// The sender survives by survival rule 2.
    pub sr2: bool,
    /// The sender is starting and asks to join.
    pub joining: bool,
    /// What the sender offers to the tie-break between equal partitions.
    pub tie: TieBreak,
}

/// What a host offers to the tie-break between partitions of equal size
/// (after weights): evidence of a working network beyond itself first,
/// then the importance of what it runs, then the lowest host UUID. A host
/// publishes the values it had when its fault handler began, so every
/// host judges a partition by the same values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TieBreak {
    /// The host's link is up, or it reaches its witness address.
    pub network: bool,
    /// The protected VMs the host runs (more wins).
    pub priority: u32,
}

impl Default for TieBreak {
    /// What a host that reports nothing offers: the old tie-break by UUID.
    fn default() -> Self {
        TieBreak {
            network: true,
            priority: 0,
        }
    }
}

/// The pool state in the statefile's global block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolState {
    /// Never written.
    None = 0,
    /// HA is being enabled.
    Init = 1,
    /// HA is on.
    Active = 2,
    /// HA was disabled: every daemon that reads this stops.
    Invalid = 3,
}

impl PoolState {
    pub fn from_u8(v: u8) -> Option<PoolState> {
        Some(match v {
            0 => PoolState::None,
            1 => PoolState::Init,
            2 => PoolState::Active,
            3 => PoolState::Invalid,
            _ => return None,
        })
    }
}

/// The statefile's global block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Global {
    pub pool_state: PoolState,
    pub generation: u128,
    /// The index of the host that last won the master lock.
    pub master: Option<usize>,
}

/// One host's slot in the statefile; each host writes only its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub sequence: u64,
    pub index: usize,
    /// The writer's boot.
    pub boot: u64,
    /// Per host of `view.current`, the boot of it that the writer took into
    /// the liveset (0 for the others): a host that rebooted reads whether it
    /// is listed, or an earlier boot of it.
    pub member_boots: [u64; MAX_HOSTS],
    /// The host left cleanly (shutdown, HA disabled on it).
    pub excluded: bool,
    /// The host is starting and not yet in the liveset.
    pub starting: bool,
    /// The starting host has every ack it needs and will arm once this
    /// slot has landed and a read after it shows none of its ackers in a
    /// fault handler (rule I in docs/HA.md).
    pub arming: bool,
    pub view: View,
    /// The host asks for the master lock.
    pub lock_request: bool,
    /// The hosts this host grants the master lock to.
    pub lock_grant: HostSet,
    /// Bias for the largest-partition rule (0 unless configured).
    pub weight: u32,
    /// The writer's tie-break values (see [`TieBreak`]).
    pub tie: TieBreak,
}

/// What reading one slot gave. (A slot is about 600 bytes, read once per
/// host and statefile cycle: boxing it would buy nothing.)
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotRead {
    /// Never written (all zeros).
    Empty,
    Valid(Slot),
    /// Bad signature or checksum.
    Corrupt,
}

/// One read of the whole statefile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatefileRead {
    /// `None` when the global block is corrupt.
    pub global: Option<Global>,
    /// One entry per configured host.
    pub slots: Vec<SlotRead>,
}
