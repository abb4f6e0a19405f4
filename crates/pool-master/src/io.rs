//! This host's I/O gate: the one seam where the lab's fault switches act.
//!
//! Every path by which the host reaches its network or its shared storage
//! asks the [`Gate`] first: heartbeats ([`HeartbeatSocket`]), calls to
//! peers, the API server, the tie-break's link evidence, and the files on
//! the heartbeat SR (statefile, metadata, leases) and the guests' disks.
//! A production host's gate is open and reads nothing. A host started with
//! `serve --lab` reads its switches from `DATA_DIR/faults`, which
//! `xapid lab cut-network HOST` and `cut-storage HOST` write:
//! - network cut: heartbeats are neither sent nor taken in, calls to other
//!   hosts fail at once, the API drops requests, and the host has no link
//!   for the tie-break;
//! - storage cut: statefile, metadata and lease I/O fail, and so do the
//!   guests' writes to their disks on shared SRs;
//! - and the power switch: a lab host that shuts down (not a reboot) stays
//!   off until `xapid lab power-on`.
//!
//! The file is read at most every [`REFRESH`], so a switch takes effect
//! within that time and a lab host with no file pays one failed `stat` per
//! period.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The name of the switch file in a lab host's data directory.
pub const FILE: &str = "faults";

/// The lab's power switch in a host's data directory: while it exists the
/// lab does not start the host again.
pub const POWER_OFF: &str = "power-off";

/// How stale a reading of the switch file may be.
pub const REFRESH: Duration = Duration::from_millis(50);

/// One fault switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Network,
    Storage,
}

impl Fault {
    /// The word for this fault in the switch file.
    pub fn word(self) -> &'static str {
        match self {
            Fault::Network => "network",
            Fault::Storage => "storage",
        }
    }
}

/// The I/O a switch refused: the host's network or storage is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("I/O error: the host's {} is cut", .0.word())]
pub struct Cut(pub Fault);

impl From<Cut> for std::io::Error {
    fn from(cut: Cut) -> std::io::Error {
        std::io::Error::other(cut)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Switches {
    network: bool,
    storage: bool,
}

/// The gate every network and shared-storage I/O of this host passes.
#[derive(Debug)]
pub struct Gate {
    /// `None` for a production host: nothing is ever cut.
    lab: Option<LabSwitches>,
}

#[derive(Debug)]
struct LabSwitches {
    path: PathBuf,
    cached: Mutex<Option<(Instant, Switches)>>,
}

impl Gate {
    /// The gate of a production host: always open, reads nothing.
    pub fn open() -> Gate {
        Gate { lab: None }
    }

    /// The gate of a lab host: the switches kept in `data_dir/faults`.
    pub fn lab(data_dir: &Path) -> Gate {
        Gate {
            lab: Some(LabSwitches {
                path: data_dir.join(FILE),
                cached: Mutex::new(None),
            }),
        }
    }

    /// A lab host's gate when `lab`, else an open one.
    pub fn new(data_dir: &Path, lab: bool) -> Gate {
        if lab {
            Gate::lab(data_dir)
        } else {
            Gate::open()
        }
    }

    /// Does this gate read the lab's switches?
    pub fn is_lab(&self) -> bool {
        self.lab.is_some()
    }

    fn read(&self) -> Switches {
        let Some(lab) = &self.lab else {
            return Switches::default();
        };
        let mut cached = lab.cached.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, s)) = *cached {
            if at.elapsed() < REFRESH {
                return s;
            }
        }
        let text = std::fs::read_to_string(&lab.path).unwrap_or_default();
        let s = Switches {
            network: text.split_whitespace().any(|w| w == Fault::Network.word()),
            storage: text.split_whitespace().any(|w| w == Fault::Storage.word()),
        };
        *cached = Some((Instant::now(), s));
        s
    }

    /// May this host use its network now?
    pub fn network(&self) -> Result<(), Cut> {
        match self.read().network {
            true => Err(Cut(Fault::Network)),
            false => Ok(()),
        }
    }

    /// May this host use its shared storage now?
    pub fn storage(&self) -> Result<(), Cut> {
        match self.read().storage {
            true => Err(Cut(Fault::Storage)),
            false => Ok(()),
        }
    }

    /// A planned shutdown (not a reboot) of a lab host turns its power
    /// switch off, so the lab leaves it off until `xapid lab power-on`;
    /// a production host has no such switch.
    pub fn power_off(&self) {
        if let Some(lab) = &self.lab {
            if let Some(dir) = lab.path.parent() {
                let _ = std::fs::write(dir.join(POWER_OFF), b"");
            }
        }
    }

    /// Evidence that this host's network works beyond itself, for the
    /// tie-break: some interface other than loopback under
    /// `sys_class_net` has carrier (or there is none but loopback), and
    /// the network is not cut.
    pub fn link_up(&self, sys_class_net: &Path) -> bool {
        self.network().is_ok() && carrier(sys_class_net)
    }
}

/// Reads `<dir>/<iface>/carrier` for every interface but `lo`. Unreadable
/// entries count as up: only a positive "no carrier" loses the tie.
fn carrier(sys_class_net: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(sys_class_net) else {
        return true;
    };
    let mut any = false;
    for e in entries.flatten() {
        if e.file_name() == "lo" {
            continue;
        }
        any = true;
        match std::fs::read_to_string(e.path().join("carrier")) {
            Ok(c) if c.trim() == "0" => {}
            _ => return true,
        }
    }
    !any
}

/// The heartbeat socket behind the gate: nothing leaves or arrives while
/// the network is cut (a packet that arrives then is read and dropped, as
/// a pulled cable would have lost it).
pub struct HeartbeatSocket {
    socket: tokio::net::UdpSocket,
    gate: std::sync::Arc<Gate>,
}

impl HeartbeatSocket {
    pub fn new(socket: tokio::net::UdpSocket, gate: std::sync::Arc<Gate>) -> HeartbeatSocket {
        HeartbeatSocket { socket, gate }
    }

    /// Send one datagram to `peer`.
    pub async fn send_to(&self, bytes: &[u8], peer: SocketAddr) -> std::io::Result<()> {
        self.gate.network()?;
        self.socket.send_to(bytes, peer).await.map(drop)
    }

    /// The next datagram that gets through: its length.
    pub async fn recv(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let (n, _) = self.socket.recv_from(buf).await?;
            if self.gate.network().is_ok() {
                return Ok(n);
            }
        }
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }
}

/// Turn one switch of the lab host whose data directory is `data_dir` on
/// or off.
pub fn set(data_dir: &Path, fault: Fault, on: bool) -> std::io::Result<()> {
    let path = data_dir.join(FILE);
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let mut words: Vec<&str> = text.split_whitespace().filter(|w| *w != fault.word()).collect();
    if on {
        words.push(fault.word());
    }
    crate::files::replace(&path, (words.join("\n") + "\n").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settle() {
        std::thread::sleep(REFRESH + Duration::from_millis(10));
    }

    #[test]
    fn switches_go_on_and_off_independently() {
        let dir = tempfile::tempdir().unwrap();
        let g = Gate::lab(dir.path());
        assert!(g.network().is_ok() && g.storage().is_ok());
        set(dir.path(), Fault::Network, true).unwrap();
        set(dir.path(), Fault::Storage, true).unwrap();
        settle();
        assert_eq!(g.network(), Err(Cut(Fault::Network)));
        assert_eq!(g.storage(), Err(Cut(Fault::Storage)));
        set(dir.path(), Fault::Network, false).unwrap();
        settle();
        assert!(g.network().is_ok() && g.storage().is_err());
        let e = std::io::Error::from(g.storage().unwrap_err());
        assert_eq!(e.to_string(), "I/O error: the host's storage is cut");
        set(dir.path(), Fault::Storage, false).unwrap();
        settle();
        assert!(g.storage().is_ok());
    }

    #[test]
    fn only_a_lab_host_has_a_power_switch() {
        let dir = tempfile::tempdir().unwrap();
        Gate::open().power_off();
        Gate::new(dir.path(), false).power_off();
        assert!(!dir.path().join(POWER_OFF).exists());
        Gate::lab(dir.path()).power_off();
        assert!(dir.path().join(POWER_OFF).exists());
    }

    #[test]
    fn a_production_gate_ignores_the_switch_file() {
        let dir = tempfile::tempdir().unwrap();
        set(dir.path(), Fault::Network, true).unwrap();
        set(dir.path(), Fault::Storage, true).unwrap();
        let g = Gate::new(dir.path(), false);
        assert!(!g.is_lab());
        assert!(g.network().is_ok() && g.storage().is_ok());
        assert!(Gate::new(dir.path(), true).storage().is_err());
    }

    fn iface(dir: &Path, name: &str, carrier: Option<&str>) {
        let p = dir.join(name);
        std::fs::create_dir_all(&p).unwrap();
        if let Some(c) = carrier {
            std::fs::write(p.join("carrier"), c).unwrap();
        }
    }

    #[test]
    fn carrier_decides_and_loopback_alone_counts_as_linked() {
        let dir = tempfile::tempdir().unwrap();
        iface(dir.path(), "lo", Some("1\n"));
        assert!(carrier(dir.path()), "loopback only: linked");
        iface(dir.path(), "eth0", Some("0\n"));
        assert!(!carrier(dir.path()), "the one cable pulled");
        iface(dir.path(), "eth1", Some("1\n"));
        assert!(carrier(dir.path()), "another link is up");
        let none = dir.path().join("missing");
        assert!(carrier(&none), "no sysfs: no evidence against the link");
    }

    #[test]
    fn the_lab_switch_off_is_no_link() {
        let dir = tempfile::tempdir().unwrap();
        let g = Gate::lab(dir.path());
        let sys = dir.path().join("sys");
        assert!(g.link_up(&sys));
        set(dir.path(), Fault::Network, true).unwrap();
        settle();
        assert!(!g.link_up(&sys));
    }
}
