//! The lab's fault switches, enforced by this host's own I/O layer.
//!
//! `xapid lab cut-network HOST` and `cut-storage HOST` write a word into the
//! file `faults` in the host's data directory; every I/O path of the host
//! asks [`Faults`] before it acts:
//! - network cut: heartbeats are neither sent nor taken in, calls to other
//!   hosts fail at once, and the API drops requests;
//! - storage cut: statefile and metadata I/O fail, and so do the guests'
//!   writes to their disks on shared SRs.
//!
//! The file is read at most every [`REFRESH`], so a switch takes effect
//! within that time and a host with no file pays one failed `stat` per
//! period.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The name of the switch file in a host's data directory.
pub const FILE: &str = "faults";

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

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Switches {
    network: bool,
    storage: bool,
}

/// The fault switches of one host.
#[derive(Debug)]
pub struct Faults {
    path: PathBuf,
    cached: Mutex<Option<(Instant, Switches)>>,
}

impl Faults {
    /// The switches kept in `data_dir/faults`.
    pub fn new(data_dir: &Path) -> Faults {
        Faults {
            path: data_dir.join(FILE),
            cached: Mutex::new(None),
        }
    }

    fn read(&self) -> Switches {
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, s)) = *cached {
            if at.elapsed() < REFRESH {
                return s;
            }
        }
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        let s = Switches {
            network: text.split_whitespace().any(|w| w == Fault::Network.word()),
            storage: text.split_whitespace().any(|w| w == Fault::Storage.word()),
        };
        *cached = Some((Instant::now(), s));
        s
    }

    /// Is this host's network cut?
    pub fn network_cut(&self) -> bool {
        self.read().network
    }

    /// Is this host's storage cut?
    pub fn storage_cut(&self) -> bool {
        self.read().storage
    }
}

/// Turn one switch of the host whose data directory is `data_dir` on or off.
pub fn set(data_dir: &Path, fault: Fault, on: bool) -> std::io::Result<()> {
    let path = data_dir.join(FILE);
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let mut words: Vec<&str> = text.split_whitespace().filter(|w| *w != fault.word()).collect();
    if on {
        words.push(fault.word());
    }
    crate::files::replace(&path, (words.join("\n") + "\n").as_bytes())
}

/// Turn every switch off (a host that powers on has its cables back in).
pub fn clear(data_dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(data_dir.join(FILE)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switches_go_on_and_off_independently() {
        let dir = tempfile::tempdir().unwrap();
        let f = Faults::new(dir.path());
        assert!(!f.network_cut() && !f.storage_cut());
        set(dir.path(), Fault::Network, true).unwrap();
        set(dir.path(), Fault::Storage, true).unwrap();
        std::thread::sleep(REFRESH + Duration::from_millis(10));
        assert!(f.network_cut() && f.storage_cut());
        set(dir.path(), Fault::Network, false).unwrap();
        std::thread::sleep(REFRESH + Duration::from_millis(10));
        assert!(!f.network_cut() && f.storage_cut());
        clear(dir.path()).unwrap();
        clear(dir.path()).unwrap();
        std::thread::sleep(REFRESH + Duration::from_millis(10));
        assert!(!f.storage_cut());
    }
}
