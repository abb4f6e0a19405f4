//! HA on one host, below the pool: the agent and the files and devices
//! it uses. Nothing here knows the daemon (`crate::failover` is HA's side
//! that acts on the pool).
//!
//! - [`agent`]: the `ha_liveness` engine on a real clock, UDP socket and
//!   statefile.
//! - [`watchdog`], [`device`]: the OS thread that fences when the loops
//!   stall, and the hardware watchdog.
//! - [`statefile`], [`metadata`]: the files on the heartbeat SR.
//! - [`local`]: this host's HA configuration (`ha_armed` and the peers).
//!
//! [`Ha`] holds this host's HA state: the agent, its view, the watchdog,
//! the fault switches and the emergency error.

pub mod agent;
pub mod device;
pub mod local;
pub mod metadata;
pub mod statefile;
pub mod watchdog;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use ha_liveness::Event;
use tokio::sync::{watch, Notify};
use xapi_proto::ApiError;

use agent::{Agent, AgentView};
use watchdog::Watchdog;

/// The file in the data directory where a fence records its reason.
pub const FENCE_RECORD: &str = "ha-fenced";

/// The exit status of a process that fenced.
pub const FENCE_EXIT: i32 = 86;

/// This host's HA state.
pub struct Ha {
    pub watchdog: Arc<Watchdog>,
    pub(crate) view: watch::Sender<AgentView>,
    pub(crate) agent: tokio::sync::Mutex<Option<Agent>>,
    /// The task that keeps the agent of an armed host running.
    pub(crate) keeper: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The error every call gets while the host cannot join the liveset.
    emergency: Mutex<Option<ApiError>>,
    /// The local configuration says armed (cached from the store).
    armed: AtomicBool,
    /// Wakes the restart executor.
    pub restarts: Kick,
    /// What the agent sees of each host (for the operator).
    pub(crate) seen: Arc<Mutex<agent::Seen>>,
    /// A planned move of the master role under way, and until when it
    /// may take.
    handover: Mutex<Option<(Handover, std::time::Instant)>>,
}

/// A planned move of the master role while HA is on
/// (`pool.designate_new_master`): the election's inputs for a while.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handover {
    /// This master lets go of the master lock for host `to` (a uuid).
    Leaving { to: String },
    /// This host asks for the master lock as soon as nobody holds it.
    Arriving,
}

/// Wakes the restart executor (`crate::failover::restart`): a guest
/// halted, a host came back, the plan changed.
#[derive(Default)]
pub struct Kick(Notify);

impl Kick {
    pub fn kick(&self) {
        self.0.notify_one();
    }

    /// Wait for the next kick.
    pub async fn notified(&self) {
        self.0.notified().await;
    }
}

impl Ha {
    /// The HA state of the host whose data directory is `data_dir`, with
    /// its watchdog thread. A fence records its reason in the data
    /// directory and ends the process.
    pub fn new(data_dir: &Path) -> std::io::Result<Ha> {
        let record = data_dir.join(FENCE_RECORD);
        let watchdog = Watchdog::start(Box::new(move |reason| fence_and_exit(&record, reason)))?;
        Ok(Ha {
            watchdog,
            view: watch::Sender::new(AgentView::default()),
            agent: tokio::sync::Mutex::new(None),
            keeper: Mutex::new(None),
            emergency: Mutex::new(None),
            armed: AtomicBool::new(false),
            restarts: Kick::default(),
            seen: Arc::default(),
            handover: Mutex::new(None),
        })
    }

    /// The planned move of the master role under way, if its time has
    /// not run out.
    pub fn handover(&self) -> Option<Handover> {
        let mut h = self.handover.lock().unwrap_or_else(|p| p.into_inner());
        if h.as_ref().is_some_and(|(_, until)| std::time::Instant::now() >= *until) {
            *h = None;
        }
        h.as_ref().map(|(h, _)| h.clone())
    }

    /// Plan (`Some`, for at most `limit`) or end (`None`) a move of the
    /// master role.
    pub fn set_handover(&self, handover: Option<Handover>, limit: std::time::Duration) {
        *self.handover.lock().unwrap_or_else(|p| p.into_inner()) =
            handover.map(|h| (h, std::time::Instant::now() + limit));
    }

    /// Is this host armed for HA (by its local configuration)?
    pub fn armed(&self) -> bool {
        self.armed.load(Ordering::SeqCst)
    }

    /// Cache what the local configuration says about arming.
    pub(crate) fn set_armed(&self, armed: bool) {
        self.armed.store(armed, Ordering::SeqCst);
    }

    /// The agent's latest view.
    pub fn view(&self) -> AgentView {
        self.view.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<AgentView> {
        self.view.subscribe()
    }

    /// The error calls get while this host is in HA emergency mode.
    pub fn emergency(&self) -> Option<ApiError> {
        self.emergency.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn set_emergency(&self, e: Option<ApiError>) {
        *self.emergency.lock().unwrap_or_else(|p| p.into_inner()) = e;
    }

    /// Hand the running agent an event; false when none runs.
    pub async fn send(&self, event: Event) -> bool {
        match self.agent.lock().await.as_ref() {
            Some(a) if !a.finished() => {
                a.send(event);
                true
            }
            _ => false,
        }
    }
}

/// Record why this host fenced, then end the process at once. Sim guests
/// die with it; real guests are killed first, and the fence waits until
/// none runs (they would otherwise write their disks after other hosts
/// restarted them).
fn fence_and_exit(record: &Path, reason: &str) -> ! {
    let guests_gone = crate::driver::qemu::kill_every_guest();
    // The fencing mark tells the other hosts at once that this boot's
    // guests are gone (`crate::lease`): after the qemu guests died, and
    // after any sim guest write that passed the (now shut) gate ended. Not
    // when a guest would not die, nor when a watchdog expired: that fence
    // is due now, not 300 ms later.
    if guests_gone && !reason.starts_with("WATCHDOG_EXPIRED") {
        std::thread::sleep(std::time::Duration::from_millis(20));
        crate::lease::write_fence_mark(std::time::Duration::from_millis(300));
    }
    let line = format!("{} {reason}\n", crate::driver::unix_ms());
    eprintln!("HA FENCE: {reason}");
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(record) {
        use std::io::Write;
        let _ = f.write_all(line.as_bytes());
        let _ = f.sync_all();
    }
    std::process::exit(FENCE_EXIT)
}

/// The fences recorded since the last report, oldest first, each
/// `(unix_ms, reason)`; the record is removed once read.
pub fn take_fence_records(data_dir: &Path) -> Vec<(u64, String)> {
    let path = data_dir.join(FENCE_RECORD);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Vec::new();
    };
    let _ = std::fs::remove_file(&path);
    text.lines()
        .filter_map(|l| {
            let (ms, reason) = l.split_once(' ')?;
            Some((ms.parse().ok()?, reason.to_string()))
        })
        .collect()
}

/// The `other-config` key marking the statefile and metadata VDIs
/// (`statefile`, `metadata`); HA re-uses them at the next enable.
pub const VDI_PURPOSE_KEY: &str = "pool-ha-purpose";

/// Each host's statefile and metadata paths: the heartbeat SR's directory
/// as that host reaches it.
pub fn sr_files(sr_dir: &Path) -> (PathBuf, PathBuf) {
    (
        sr_dir.join(statefile::STATEFILE_NAME),
        sr_dir.join(statefile::METADATA_NAME),
    )
}
