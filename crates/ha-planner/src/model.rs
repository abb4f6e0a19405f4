//! The planner's input: hosts, protected VMs and the storage and networks
//! that tie VMs to hosts.
//!
//! This is the only shape callers build. It is checked once
//! ([`Pool::validate`]) and compiled into the dense, index-based form the
//! algorithms work on (`problem.rs`).

use std::collections::BTreeSet;
use std::fmt;

/// The most hosts a pool may have (XenServer's limit, and the width of the
/// planner's host sets).
pub const MAX_HOSTS: usize = 64;

/// The most the magnitudes of a pool's memory figures may add up to:
/// every host's free memory (as an absolute value) plus every VM's
/// footprint. The algorithms add and subtract these figures (a host's load
/// plus its free memory, free memory less the VMs placed on it, sums over
/// sets of hosts), and every such expression is bounded by three times this
/// sum, so with it at most `i64::MAX / 4` none of them can overflow. Real pools
/// are nowhere near: 2^61 bytes is two exbibytes.
pub const MAX_TOTAL_MEMORY: i64 = i64::MAX / 4;

/// Something a VM needs and a host may or may not reach.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    /// A storage repository, by uuid: the host has a plugged PBD to it.
    Sr(String),
    /// A network, by uuid: the host has a plugged PIF on it.
    Network(String),
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resource::Sr(uuid) => write!(f, "SR {uuid}"),
            Resource::Network(uuid) => write!(f, "network {uuid}"),
        }
    }
}

/// A host as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub uuid: String,
    /// Free memory in bytes, counted as XAPI's HA planner counts it: total
    /// memory less the host's own overhead and the static-max footprint of
    /// every VM resident on it (protected or not). May be negative after a
    /// hypothetical change.
    pub memory_free: i64,
    /// Enabled, metrics live and in the liveset: a host that can take VMs.
    pub live: bool,
    /// The SRs and networks this host reaches.
    pub reaches: BTreeSet<Resource>,
}

/// A protected VM as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vm {
    pub uuid: String,
    /// Memory footprint in bytes: static-max plus overhead.
    pub memory: i64,
    /// The host it runs on; `None` (or a host that is not live) means the VM
    /// is down and needs a restart.
    pub resident_on: Option<String>,
    /// The SRs and networks it cannot run without.
    pub needs: BTreeSet<Resource>,
}

/// Everything the planner needs to know about a pool.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pool {
    /// Every host of the pool, live or not.
    pub hosts: Vec<Host>,
    /// The protected VMs (restart priority `restart`).
    pub vms: Vec<Vm>,
}

/// Input the planner refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("the pool has {0} hosts; the planner handles at most {MAX_HOSTS}")]
    TooManyHosts(usize),
    #[error("host {0} is listed twice")]
    DuplicateHost(String),
    #[error("VM {0} is listed twice")]
    DuplicateVm(String),
    #[error("VM {vm} has a memory footprint of {memory} bytes; it must be positive")]
    BadVmMemory { vm: String, memory: i64 },
    #[error("VM {vm} is resident on {host}, which is not a host of the pool")]
    UnknownResidentHost { vm: String, host: String },
    #[error("{0} is not a host of the pool")]
    UnknownHost(String),
    #[error(
        "the pool's memory figures add up past {MAX_TOTAL_MEMORY} bytes; the planner refuses them rather than overflow"
    )]
    MemoryOutOfRange,
}

impl Pool {
    /// Check the pool description: unique uuids, positive VM footprints,
    /// resident hosts that exist, at most [`MAX_HOSTS`] hosts, memory
    /// figures whose magnitudes add up to at most [`MAX_TOTAL_MEMORY`].
    pub fn validate(&self) -> Result<(), PlanError> {
        if self.hosts.len() > MAX_HOSTS {
            return Err(PlanError::TooManyHosts(self.hosts.len()));
        }
        let mut hosts = BTreeSet::new();
        for h in &self.hosts {
            if !hosts.insert(h.uuid.as_str()) {
                return Err(PlanError::DuplicateHost(h.uuid.clone()));
            }
        }
        let mut vms = BTreeSet::new();
        for v in &self.vms {
            if !vms.insert(v.uuid.as_str()) {
                return Err(PlanError::DuplicateVm(v.uuid.clone()));
            }
            if v.memory <= 0 {
                return Err(PlanError::BadVmMemory {
                    vm: v.uuid.clone(),
                    memory: v.memory,
                });
            }
            if let Some(h) = &v.resident_on {
                if !hosts.contains(h.as_str()) {
                    return Err(PlanError::UnknownResidentHost {
                        vm: v.uuid.clone(),
                        host: h.clone(),
                    });
                }
            }
        }
        let magnitudes = self
            .hosts
            .iter()
            .map(|h| h.memory_free.unsigned_abs())
            .chain(self.vms.iter().map(|v| v.memory.unsigned_abs()))
            .try_fold(0u64, u64::checked_add);
        if magnitudes.is_none_or(|total| total > MAX_TOTAL_MEMORY as u64) {
            return Err(PlanError::MemoryOutOfRange);
        }
        Ok(())
    }

    /// The host with this uuid.
    pub fn host(&self, uuid: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.uuid == uuid)
    }
}

/// Why a protected VM cannot be placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// No live host reaches everything the VM needs; `missing` lists what
    /// the best candidate lacks (empty when no host is live at all).
    Unreachable { missing: Vec<Resource> },
    /// Hosts reach the VM's storage and networks but none has the memory
    /// left: `needed` bytes, at most `available` free on any of them.
    NotEnoughMemory { needed: i64, available: i64 },
    /// Not agile: XAPI's planner (mode `xapi`) pins such VMs to one host and
    /// cannot restart them elsewhere.
    NotAgile,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Unreachable { missing } if missing.is_empty() => write!(f, "no live host"),
            Reason::Unreachable { missing } => {
                let list: Vec<String> = missing.iter().map(|r| r.to_string()).collect();
                write!(f, "no live host reaches {}", list.join(", "))
            }
            Reason::NotEnoughMemory { needed, available } => write!(
                f,
                "not enough free memory: needs {}, at most {} free on a host that can run it",
                human(*needed),
                human(*available)
            ),
            Reason::NotAgile => write!(f, "not agile: the xapi planner pins it to one host"),
        }
    }
}

/// Bytes for people: MiB below 1 GiB, else GiB with one decimal.
pub fn human(bytes: i64) -> String {
    const MIB: i64 = 1 << 20;
    const GIB: i64 = 1 << 30;
    if bytes.unsigned_abs() < GIB as u64 {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{:.1} GiB", bytes as f64 / GIB as f64)
    }
}
