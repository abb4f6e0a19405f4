//! The `sim` VM driver: VMs as tasks inside `xapid` that write to their disks.
//!
//! A running sim guest appends one line to each of its disk files every
//! [`TICK`]: `SEQ UNIX_MS HOST_UUID VM_UUID`. Those "guest writes" make the
//! product's central safety property observable: two hosts writing one VM's
//! disk in overlapping time is split brain. A guest stops when asked (clean or
//! hard shutdown, the source side of a migration) and dies with the process.
//!
//! Each guest gets a domain id (XAPI's `domid`) when it starts. Domain ids
//! grow: within one process with every start, and from one process to the
//! next (a process starts counting at its start time in ms, times 1000). So
//! the master can tell which of two facts about a VM on a host is newer: a
//! member's list of running guests (taken before domain id `next`) says
//! nothing about a guest started after it, and a halt report for an earlier
//! guest says nothing about the one running now.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{unix_ms, Driver, DriverError, DriverKind, Gate, GuestRecord, GuestSpec, Halted, Snapshot, StopMode};

/// How often a guest writes.
pub const TICK: Duration = Duration::from_millis(100);

struct Guest {
    domid: i64,
    stop: oneshot::Sender<()>,
    task: JoinHandle<u64>,
}

/// The sim guests running on this host.
pub struct SimDriver {
    host_uuid: String,
    guests: Mutex<Guests>,
    gate: Gate,
    /// Guests that halted from inside.
    halted_tx: mpsc::UnboundedSender<Halted>,
    halted_rx: Mutex<Option<mpsc::UnboundedReceiver<Halted>>>,
}

/// The guests by VM uuid, and the next domain id.
struct Guests {
    by_vm: HashMap<String, Guest>,
    next_domid: i64,
}

impl Guests {
    fn running(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .by_vm
            .iter()
            .filter(|(_, g)| !g.task.is_finished())
            .map(|(k, _)| k.clone())
            .collect();
        v.sort();
        v
    }
}

impl SimDriver {
    /// A driver whose guests always write.
    pub fn new(host_uuid: String) -> Self {
        SimDriver::with_gate(host_uuid, Arc::new(|| Ok(())))
    }

    /// A driver whose guests ask `gate` before each write.
    pub fn with_gate(host_uuid: String, gate: Gate) -> Self {
        let (halted_tx, halted_rx) = mpsc::unbounded_channel();
        SimDriver {
            host_uuid,
            guests: Mutex::new(Guests {
                by_vm: HashMap::new(),
                next_domid: first_domid(),
            }),
            gate,
            halted_tx,
            halted_rx: Mutex::new(Some(halted_rx)),
        }
    }
}

#[async_trait::async_trait]
impl Driver for SimDriver {
    fn kind(&self) -> DriverKind {
        DriverKind::Sim
    }

    fn accel(&self) -> &'static str {
        "sim"
    }

    /// The uuids of guests that halt from inside, as they do (once: the
    /// receiver goes to the first caller).
    fn take_halted(&self) -> Option<mpsc::UnboundedReceiver<Halted>> {
        self.halted_rx.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Start a guest writing to `disks`: its domain id. Its first record is
    /// `first_seq`, or when `None` the one after the last record on its
    /// first disk.
    async fn start(&self, spec: GuestSpec) -> Result<i64, DriverError> {
        let GuestSpec {
            vm_uuid,
            disks,
            first_seq,
            ..
        } = spec;
        let vm_uuid = vm_uuid.as_str();
        // A guest whose disks cannot be written would run without a write.
        let unreachable = |why: String| DriverError::DisksUnreachable {
            vm: vm_uuid.to_string(),
            why,
        };
        (self.gate)().map_err(|e| unreachable(e.to_string()))?;
        if let Some(d) = disks.iter().find(|d| !d.parent().is_some_and(Path::is_dir)) {
            return Err(unreachable(format!("no directory for {}", d.display())));
        }
        let mut guests = self.guests.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(g) = guests.by_vm.get(vm_uuid) {
            if !g.task.is_finished() {
                return Err(DriverError::AlreadyRunning(vm_uuid.to_string()));
            }
        }
        let domid = guests.next_domid;
        guests.next_domid += 1;
        let seq = first_seq.unwrap_or_else(|| disks.first().and_then(|d| last_seq(d)).map_or(0, |s| s + 1));
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(run_guest(
            Identity {
                host_uuid: self.host_uuid.clone(),
                vm_uuid: vm_uuid.to_string(),
                domid,
            },
            disks,
            seq,
            stopped,
            (self.gate.clone(), self.halted_tx.clone()),
        ));
        guests.by_vm.insert(vm_uuid.to_string(), Guest { domid, stop, task });
        Ok(domid)
    }

    /// Stop a guest after its current write; returns the last sequence written.
    async fn stop(&self, vm_uuid: &str, _how: StopMode) -> Result<u64, DriverError> {
        let guest = self
            .guests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .by_vm
            .remove(vm_uuid)
            .ok_or_else(|| DriverError::NotRunning(vm_uuid.to_string()))?;
        let _ = guest.stop.send(());
        Ok(guest.task.await.unwrap_or(0))
    }

    /// May this host write to shared storage now (not fenced, storage not
    /// cut in the lab)?
    fn gate(&self) -> Result<(), &'static str> {
        (self.gate)()
    }

    /// The uuids of the guests running here.
    fn running(&self) -> Vec<String> {
        self.guests.lock().unwrap_or_else(|p| p.into_inner()).running()
    }

    /// The running guests and the next domain id, read at one moment.
    fn snapshot(&self) -> Snapshot {
        let guests = self.guests.lock().unwrap_or_else(|p| p.into_inner());
        Snapshot {
            running: guests.running(),
            next_domid: guests.next_domid,
            driver: "sim".into(),
        }
    }

    /// The domain id of the guest of `vm_uuid` running here.
    fn domid(&self, vm_uuid: &str) -> Option<i64> {
        let guests = self.guests.lock().unwrap_or_else(|p| p.into_inner());
        guests
            .by_vm
            .get(vm_uuid)
            .filter(|g| !g.task.is_finished())
            .map(|g| g.domid)
    }

    /// Sim guests are tasks of this process: they die with it. Here they
    /// only stop writing, at once (the gate is shut first by the fence).
    fn kill_all(&self) {
        let guests = std::mem::take(&mut self.guests.lock().unwrap_or_else(|p| p.into_inner()).by_vm);
        for (_, g) in guests {
            g.task.abort();
        }
    }
}

/// The first domain id of this process: its start time in ms, times 1000,
/// so a later process never reuses an earlier one's ids (1000 starts per ms
/// of the gap between two processes).
fn first_domid() -> i64 {
    i64::try_from(unix_ms()).unwrap_or(i64::MAX / 1000) * 1000
}

/// Who writes: the host, the VM and the guest's domain id.
struct Identity {
    host_uuid: String,
    vm_uuid: String,
    domid: i64,
}

async fn run_guest(
    id: Identity,
    disks: Vec<PathBuf>,
    mut seq: u64,
    mut stopped: oneshot::Receiver<()>,
    (gate, halted): (Gate, mpsc::UnboundedSender<Halted>),
) -> u64 {
    let Identity {
        host_uuid,
        vm_uuid,
        domid,
    } = id;
    let halt_marker = halt_marker(&disks, &vm_uuid);
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = seq.saturating_sub(1);
    loop {
        tokio::select! {
            biased;
            _ = &mut stopped => return last,
            _ = ticker.tick() => {
                if let Some(marker) = halt_marker.as_deref().filter(|m| m.exists()) {
                    let _ = std::fs::remove_file(marker);
                    tracing::info!(vm = %vm_uuid, domid, "the guest halted itself");
                    let _ = halted.send(Halted { vm_uuid: vm_uuid.clone(), domid });
                    return last;
                }
                if let Err(why) = gate() {
                    tracing::debug!(vm = %vm_uuid, "guest write refused: {why}");
                    continue;
                }
                let rec = GuestRecord { seq, unix_ms: unix_ms(), host_uuid: host_uuid.clone(), vm_uuid: vm_uuid.clone() };
                let line = rec.to_line();
                for disk in &disks {
                    if let Err(e) = append(disk, line.as_bytes()) {
                        tracing::warn!(vm = %vm_uuid, disk = %disk.display(), "guest write failed: {e}");
                    }
                }
                last = seq;
                seq += 1;
            }
        }
    }
}

/// The file whose appearance beside a guest's first disk makes the guest
/// halt itself (`xapid lab guest-halt`): `<dir>/<vm-uuid>.halt`.
pub fn halt_marker(disks: &[PathBuf], vm_uuid: &str) -> Option<PathBuf> {
    Some(disks.first()?.parent()?.join(format!("{vm_uuid}.halt")))
}

fn append(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    // One write(2) on an O_APPEND file: lines never interleave.
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?
        .write_all(bytes)
}

/// The sequence number of the last whole record of a disk file.
pub fn last_seq(path: &Path) -> Option<u64> {
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    let tail = len.min(512);
    f.seek(SeekFrom::Start(len - tail)).ok()?;
    let mut buf = String::new();
    f.read_to_string(&mut buf).ok()?;
    buf.lines().rev().find_map(GuestRecord::parse).map(|r| r.seq)
}

#[cfg(test)]
mod tests {
    use super::super::read_records;
    use super::*;

    #[test]
    fn records_parse_back() {
        let r = GuestRecord {
            seq: 7,
            unix_ms: 9,
            host_uuid: "h".into(),
            vm_uuid: "v".into(),
        };
        assert_eq!(GuestRecord::parse(&r.to_line()), Some(r));
        assert_eq!(GuestRecord::parse("7 9 h"), None);
        assert_eq!(GuestRecord::parse("7 9 h v extra"), None);
    }

    #[tokio::test]
    async fn a_guest_writes_until_stopped_and_continues_its_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("d.disk");
        let driver = SimDriver::new("host-a".into());
        let before = driver.snapshot();
        assert!(before.running.is_empty());
        let first = driver
            .start(GuestSpec::new("vm-1", vec![disk.clone()], None))
            .await
            .unwrap();
        assert!(first >= before.next_domid);
        assert!(driver
            .start(GuestSpec::new("vm-1", vec![disk.clone()], None))
            .await
            .is_err());
        assert_eq!(driver.domid("vm-1"), Some(first));
        assert_eq!(driver.snapshot().running, vec!["vm-1".to_string()]);
        tokio::time::sleep(Duration::from_millis(350)).await;
        let last = driver.stop("vm-1", StopMode::Clean).await.unwrap();
        let recs = read_records(&disk).unwrap();
        assert!(recs.len() >= 3, "{} records", recs.len());
        assert_eq!(recs.last().map(|r| r.seq), Some(last));
        assert!(recs.iter().all(|r| r.host_uuid == "host-a" && r.vm_uuid == "vm-1"));
        assert!(driver.running().is_empty());
        assert_eq!(driver.domid("vm-1"), None);
        let second = driver
            .start(GuestSpec::new("vm-1", vec![disk.clone()], None))
            .await
            .unwrap();
        assert!(second > first, "domain ids grow: {first} then {second}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        driver.stop("vm-1", StopMode::Clean).await.unwrap();
        let recs = read_records(&disk).unwrap();
        let seqs: Vec<u64> = recs.iter().map(|r| r.seq).collect();
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0] + 1),
            "sequence continues: {seqs:?}"
        );
    }

    #[tokio::test]
    async fn a_later_process_never_reuses_an_earlier_ones_domain_ids() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("d.disk");
        let earlier = SimDriver::new("host-a".into());
        let mut last = 0;
        for _ in 0..5 {
            last = earlier
                .start(GuestSpec::new("vm-1", vec![disk.clone()], None))
                .await
                .unwrap();
            earlier.stop("vm-1", StopMode::Clean).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
        let later = SimDriver::new("host-a".into());
        assert!(later.snapshot().next_domid > last);
    }

    #[tokio::test]
    async fn a_guest_that_halts_itself_reports_its_domain_id() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("d.disk");
        let driver = SimDriver::new("host-a".into());
        let mut halted = driver.take_halted().unwrap();
        let domid = driver
            .start(GuestSpec::new("vm-1", vec![disk.clone()], None))
            .await
            .unwrap();
        std::fs::write(halt_marker(&[disk], "vm-1").unwrap(), "").unwrap();
        let report = tokio::time::timeout(Duration::from_secs(5), halted.recv())
            .await
            .unwrap();
        assert_eq!(
            report,
            Some(Halted {
                vm_uuid: "vm-1".into(),
                domid
            })
        );
        assert!(driver.running().is_empty());
    }
}
