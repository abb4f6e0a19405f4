//! The VM driver seam: what runs a host's guests.
//!
//! [`Driver`] is all the rest of `xapid` knows of guests: start one, stop
//! it (clean or hard), list what runs with domain ids, hear of guests that
//! halt from inside, and kill every guest at once when the host fences.
//! Two drivers sit behind it: [`sim::SimDriver`] (guests are tasks inside
//! `xapid`) and [`qemu::QemuDriver`] (each guest a `qemu-system-x86_64`
//! process whose disks are raw files on the SR).
//!
//! Both drivers' guests leave the same evidence on their disks, one
//! [`GuestRecord`] per line, `SEQ UNIX_MS HOST_UUID VM_UUID`: two hosts
//! writing one VM's disk in overlapping time is split brain, and the
//! checkers read it the same way whichever driver wrote it.

pub mod qemu;
pub mod sim;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::mpsc;

pub use sim::{halt_marker, last_seq, SimDriver, TICK};

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("VM {0} is already running on this host")]
    AlreadyRunning(String),
    #[error("VM {0} is not running on this host")]
    NotRunning(String),
    #[error("the disks of VM {vm} cannot be reached from this host: {why}")]
    DisksUnreachable { vm: String, why: String },
    #[error("the VM driver cannot run guests here: {0}")]
    Unavailable(String),
    #[error("cannot control the guest of VM {vm}: {why}")]
    Control { vm: String, why: String },
    #[error("this VM driver does not support {0}")]
    Unsupported(&'static str),
    #[error("VM {vm} may not run here now: {why}")]
    Lease { vm: String, why: String },
}

impl DriverError {
    /// As the API says it: a lease's refusal as `VM_LEASE_HELD [vm,
    /// reason]` (the reason keeps the lease's own words, which the restart
    /// executor reads), anything else as an internal error.
    pub fn to_api(&self) -> xapi_proto::ApiError {
        match self {
            DriverError::Lease { vm, why } => {
                xapi_proto::ApiError::new(xapi_proto::codes::VM_LEASE_HELD, vec![vm.clone(), why.clone()])
            }
            e => xapi_proto::ApiError::internal(e.to_string()),
        }
    }
}

/// One guest write, as a line of a disk file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestRecord {
    pub seq: u64,
    pub unix_ms: u64,
    pub host_uuid: String,
    pub vm_uuid: String,
}

impl GuestRecord {
    pub fn to_line(&self) -> String {
        format!("{} {} {} {}\n", self.seq, self.unix_ms, self.host_uuid, self.vm_uuid)
    }

    /// Parse one line; `None` for a torn or foreign line.
    pub fn parse(line: &str) -> Option<GuestRecord> {
        let mut parts = line.split_whitespace();
        let rec = GuestRecord {
            seq: parts.next()?.parse().ok()?,
            unix_ms: parts.next()?.parse().ok()?,
            host_uuid: parts.next()?.to_string(),
            vm_uuid: parts.next()?.to_string(),
        };
        parts.next().is_none().then_some(rec)
    }
}

/// A guest that halted from inside: its VM and domain id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Halted {
    pub vm_uuid: String,
    pub domid: i64,
}

/// What runs on this host at one moment: the running guests' VMs, and the
/// domain id the next guest started here will get. Every guest started
/// after the moment has a domain id of at least `next_domid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub running: Vec<String>,
    pub next_domid: i64,
    /// What runs the guests: `sim`, `qemu-kvm` or `qemu-tcg` (shown in the
    /// host record, `other-config:pool-ha-vm-driver`).
    pub driver: String,
}

/// Asked before every guest write: `Err(why)` when the host may not write
/// (it is fenced, or its storage is cut).
pub type Gate = Arc<dyn Fn() -> Result<(), &'static str> + Send + Sync>;

/// Which driver a host runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DriverKind {
    /// Guests are tasks inside `xapid` (the lab and the tests).
    Sim,
    /// Guests are QEMU processes (KVM when it works here, TCG otherwise).
    Qemu,
}

/// How to stop a guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Ask the guest to power off (ACPI power button), and wait for it.
    Clean,
    /// Pull the plug.
    Hard,
}

/// What a guest needs to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestSpec {
    pub vm_uuid: String,
    /// Its disk files, as this host reaches them (the first is the boot disk).
    pub disks: Vec<PathBuf>,
    /// The sim guest's first record (`None`: after the last on its first
    /// disk). A real guest continues its disk's sequence itself.
    pub first_seq: Option<u64>,
    /// Memory in bytes (`memory_static_max`).
    pub memory: i64,
    pub vcpus: i64,
    /// A kernel and initrd to boot directly, when the VM names them.
    pub kernel: Option<KernelBoot>,
}

impl GuestSpec {
    /// A spec with the defaults the sim driver needs nothing more than.
    pub fn new(vm_uuid: &str, disks: Vec<PathBuf>, first_seq: Option<u64>) -> Self {
        GuestSpec {
            vm_uuid: vm_uuid.to_string(),
            disks,
            first_seq,
            memory: 256 << 20,
            vcpus: 1,
            kernel: None,
        }
    }
}

/// A kernel to boot directly (QEMU's `-kernel`, `-initrd`, `-append`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KernelBoot {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    /// Extra kernel arguments.
    pub args: String,
}

/// What runs a host's guests.
#[async_trait::async_trait]
pub trait Driver: Send + Sync {
    fn kind(&self) -> DriverKind;
    /// What runs the guests, shown in the host record: `sim`, `kvm` or `tcg`.
    fn accel(&self) -> &'static str;
    /// Start a guest: its domain id.
    async fn start(&self, spec: GuestSpec) -> Result<i64, DriverError>;
    /// Start a guest of `spec` that waits for a live migration, listening
    /// on `listen` (this host's bind address): its domain id and the URI
    /// the source migrates to, which names `reach` (the address the pool
    /// knows this host by).
    async fn start_incoming(&self, spec: GuestSpec, listen: &str, reach: &str) -> Result<(i64, String), DriverError> {
        let _ = (spec, listen, reach);
        Err(DriverError::Unsupported("live migration"))
    }
    /// Migrate the guest of `vm_uuid` live to `uri`: the last sequence it
    /// wrote here. On failure the guest still runs here.
    async fn migrate_out(&self, vm_uuid: &str, uri: &str) -> Result<u64, DriverError> {
        let _ = (vm_uuid, uri);
        Err(DriverError::Unsupported("live migration"))
    }
    /// Stop a guest: the last sequence it wrote (0 when the driver cannot
    /// tell: a real guest's records are on its disk).
    async fn stop(&self, vm_uuid: &str, how: StopMode) -> Result<u64, DriverError>;
    /// The uuids of the guests running here, sorted.
    fn running(&self) -> Vec<String>;
    /// The running guests and the next domain id, read at one moment.
    fn snapshot(&self) -> Snapshot;
    /// The domain id of the guest of `vm_uuid` running here.
    fn domid(&self, vm_uuid: &str) -> Option<i64>;
    /// The guests that halt from inside, as they do (once: the receiver
    /// goes to the first caller).
    fn take_halted(&self) -> Option<mpsc::UnboundedReceiver<Halted>>;
    /// May this host write to shared storage now (not fenced, storage not
    /// cut in the lab)?
    fn gate(&self) -> Result<(), &'static str>;
    /// Take over the guests an earlier process of this host left running:
    /// the uuids of their VMs (at start, before the host reports what runs).
    async fn adopt(&self) -> Vec<String> {
        Vec::new()
    }
    /// Pause every guest of this host (its host lease was not renewed in
    /// time, `crate::lease`). The sim driver's guests need nothing: they
    /// ask the gate before every write.
    fn pause_all(&self) {}
    /// Let paused guests run again (the resume check passed).
    fn resume_all(&self) {}
    /// The fence: kill every guest of this host at once, and return only
    /// once they are gone. Blocking, and safe to call from any thread.
    fn kill_all(&self);
}

/// The driver for `kind`, with `gate` asked before guests start (and by
/// the sim driver's guests before every write).
pub fn open(
    kind: DriverKind,
    host_uuid: &str,
    gate: Gate,
    qemu: qemu::QemuConfig,
) -> Result<Arc<dyn Driver>, DriverError> {
    Ok(match kind {
        DriverKind::Sim => Arc::new(SimDriver::with_gate(host_uuid.to_string(), gate)),
        DriverKind::Qemu => Arc::new(qemu::QemuDriver::open(host_uuid, gate, qemu)?),
    })
}

pub use crate::clock::unix_ms;

/// Every whole record of a disk file, in file order.
pub fn read_records(path: &Path) -> std::io::Result<Vec<GuestRecord>> {
    Ok(std::fs::read_to_string(path)?
        .lines()
        .filter_map(GuestRecord::parse)
        .collect())
}
