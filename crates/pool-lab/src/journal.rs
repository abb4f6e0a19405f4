//! The chaos journal: what a chaos run did and saw, one JSON event per line
//! in `DIR/chaos.jsonl`, read back by the checker.
//!
//! The run appends an event the moment it acts (a fault injected or healed,
//! a guest halted), when a commit is acknowledged, and once a second with
//! the hosts the master reports live. Every event carries the wall-clock
//! time in milliseconds since the Unix epoch, the clock the guests stamp
//! their disk records with.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The journal's file name inside the lab directory.
pub const FILE: &str = "chaos.jsonl";

/// The journal of the lab in `dir`.
pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// A fault the chaos run injects into one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// The host's process is killed and stays down until healed.
    Power,
    /// The host's network cable is pulled.
    Network,
    /// The shared storage is taken away from the host.
    Storage,
    /// The host's process is frozen (SIGSTOP) until healed (SIGCONT).
    Pause,
}

impl FaultKind {
    pub const ALL: [FaultKind; 4] = [
        FaultKind::Power,
        FaultKind::Network,
        FaultKind::Storage,
        FaultKind::Pause,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Power => "power",
            FaultKind::Network => "network",
            FaultKind::Storage => "storage",
            FaultKind::Pause => "pause",
        }
    }
}

/// Where the master showed a VM running.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resident {
    pub host_uuid: String,
    /// The host's name in the lab.
    pub host: String,
}

/// One line of the journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// The run began: what the checker needs to judge it.
    Start {
        at: u64,
        seed: u64,
        /// The HA timeout T, in milliseconds.
        ha_timeout_ms: u64,
        /// The pool's failures to tolerate, kept during the run.
        ntol: u64,
        /// How long a protected VM may be down while a plan covers the
        /// failures in force.
        budget_ms: u64,
        /// The uuids of the protected VMs.
        protected: Vec<String>,
        /// The lab's host names.
        hosts: Vec<String>,
    },
    Fault {
        at: u64,
        host: String,
        fault: FaultKind,
    },
    Heal {
        at: u64,
        host: String,
        fault: FaultKind,
    },
    /// A protected VM's guest halted itself.
    GuestHalt {
        at: u64,
        vm: String,
    },
    /// The master acknowledged a commit of the pool's counter.
    Commit {
        at: u64,
        value: u64,
    },
    /// The counter read back just before the next commit.
    Read {
        at: u64,
        value: u64,
    },
    /// The hosts the master reported live, and where it showed each
    /// running VM (VM uuid to host uuid).
    Live {
        at: u64,
        hosts: Vec<String>,
        #[serde(default)]
        running: BTreeMap<String, Resident>,
    },
    /// Every fault was healed and the run stopped injecting.
    End {
        at: u64,
    },
}

impl Event {
    pub fn at(&self) -> u64 {
        match self {
            Event::Start { at, .. }
            | Event::Fault { at, .. }
            | Event::Heal { at, .. }
            | Event::GuestHalt { at, .. }
            | Event::Commit { at, .. }
            | Event::Read { at, .. }
            | Event::Live { at, .. }
            | Event::End { at } => *at,
        }
    }
}

/// Appends events to the journal, one write per line.
pub struct Writer {
    file: std::fs::File,
}

impl Writer {
    /// Start a new journal in `dir` (an old one is replaced).
    pub fn create(dir: &Path) -> std::io::Result<Writer> {
        Ok(Writer {
            file: std::fs::File::create(path(dir))?,
        })
    }

    pub fn append(&mut self, event: &Event) -> std::io::Result<()> {
        let mut line = serde_json::to_string(event).map_err(std::io::Error::other)?;
        line.push('\n');
        self.file.write_all(line.as_bytes())
    }
}

/// Every event of the journal in `dir`. A torn last line (the run was
/// killed mid-write) is ignored; any other bad line is an error.
pub fn read(dir: &Path) -> Result<Vec<Event>, String> {
    let p = path(dir);
    let text = std::fs::read_to_string(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
    let lines: Vec<&str> = text.lines().collect();
    let mut events = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        match serde_json::from_str(line) {
            Ok(e) => events.push(e),
            Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => {}
            Err(e) => return Err(format!("{} line {}: {e}", p.display(), i + 1)),
        }
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_and_a_torn_tail_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Writer::create(dir.path()).unwrap();
        let events = vec![
            Event::Fault {
                at: 5,
                host: "host2".into(),
                fault: FaultKind::Pause,
            },
            Event::Commit { at: 6, value: 3 },
            Event::Live {
                at: 7,
                hosts: vec!["host1".into()],
                running: BTreeMap::from([(
                    "vm-uuid".into(),
                    Resident {
                        host_uuid: "host-uuid".into(),
                        host: "host1".into(),
                    },
                )]),
            },
        ];
        for e in &events {
            w.append(e).unwrap();
        }
        assert_eq!(read(dir.path()).unwrap(), events);
        std::fs::OpenOptions::new()
            .append(true)
            .open(path(dir.path()))
            .unwrap()
            .write_all(b"{\"event\":\"comm")
            .unwrap();
        assert_eq!(read(dir.path()).unwrap(), events);
        std::fs::write(path(dir.path()), "nonsense\n{}\n").unwrap();
        assert!(read(dir.path()).unwrap_err().contains("line 1"));
    }
}
