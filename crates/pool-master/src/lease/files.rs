//! The lease files on the heartbeat SR (`docs/LEASES.md`, "What the SR
//! must offer") and their I/O.
//!
//! ```text
//! SR/pool-ha-leases/hosts/HOST.lease        host lease: boot, counter
//! SR/pool-ha-leases/vms/VM/HOST.block       HOST's Disk Paxos block for VM
//! SR/pool-ha-leases/vms/VM/HOST.owner       the owner HOST last saw decided
//! ```
//!
//! Every file is written by one host only, whole: to `NAME.tmp`, synced,
//! then renamed over `NAME`, so a reader sees the old file or the new one.
//! A file that does not parse reads as absent (it can only be foreign: a
//! rename never leaves half a file). Every batch of reads and writes runs
//! on a blocking thread with a time limit: one that has not finished by
//! then failed, even if it lands later (the holder's and the observer's
//! rules count on that).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::io::Gate;

/// The directory of the lease files on an SR.
pub const DIR: &str = "pool-ha-leases";

/// At most this many lease I/O batches of VM leases may be under way on
/// one host at once: a hung NFS mount must not eat a thread per try.
/// Renewals are not counted (one at a time, and never refused).
const MAX_OUTSTANDING: usize = 32;

static OUTSTANDING: AtomicUsize = AtomicUsize::new(0);

/// A host lease file. `fenced`: the fencing mark, written by a host that
/// fences after its guests are gone (`docs/LEASES.md`, "Release"): no
/// guest of this boot runs any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostLease {
    pub boot: u64,
    pub counter: u64,
    #[serde(default)]
    pub fenced: bool,
}

/// An owner, as the files name it: a host's uuid and boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerOnDisk {
    pub host: String,
    pub boot: u64,
}

/// A Disk Paxos block file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockOnDisk {
    pub instance: u64,
    pub mbal: u64,
    pub bal: u64,
    pub value: Option<OwnerOnDisk>,
}

/// An owner file: the highest instance its host saw decided and the
/// value; `released` when its host is that owner and has let the VM go
/// (its guest stopped, or migrated away).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerFile {
    pub instance: u64,
    pub owner: OwnerOnDisk,
    #[serde(default)]
    pub released: bool,
}

/// Where the lease files of one SR are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// The lease files of the SR whose directory is `sr_dir`.
    pub fn new(sr_dir: &Path) -> Layout {
        Layout { root: sr_dir.join(DIR) }
    }

    pub fn host_lease(&self, host: &str) -> PathBuf {
        self.root.join("hosts").join(format!("{host}.lease"))
    }

    pub fn block(&self, vm: &str, host: &str) -> PathBuf {
        self.root.join("vms").join(vm).join(format!("{host}.block"))
    }

    pub fn owner(&self, vm: &str, host: &str) -> PathBuf {
        self.root.join("vms").join(vm).join(format!("{host}.owner"))
    }

    /// The directory of every VM's files, one directory per VM uuid.
    pub fn vms(&self) -> PathBuf {
        self.root.join("vms")
    }
}

/// Remove the lease files of the VMs named `vms` (each a directory of
/// [`Layout::vms`]): their VMs were destroyed, and nobody reads or writes
/// them again. Returns how many went. An entry that is not a VM uuid's
/// directory is left alone.
pub fn forget_vms(layout: &Layout, vms: &[String]) -> Result<usize, IoError> {
    let mut gone = 0;
    for vm in vms {
        if uuid::Uuid::parse_str(vm).is_err() {
            continue;
        }
        let dir = layout.vms().join(vm);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => gone += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(IoError::Io { path: dir, source }),
        }
    }
    Ok(gone)
}

/// The VM uuids that have a directory of lease files.
pub fn vms_with_files(layout: &Layout) -> Result<Vec<String>, IoError> {
    let dir = layout.vms();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(IoError::Io { path: dir, source }),
    };
    Ok(entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|name| uuid::Uuid::parse_str(name).is_ok())
        .collect())
}

/// Why a batch of lease I/O failed.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    #[error("lease I/O did not finish within {0} ms")]
    Timeout(u64),
    #[error("too many lease I/Os hang on this host's storage")]
    Hung,
    #[error("lease I/O failed on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("the lease I/O thread ended: {0}")]
    Join(String),
    #[error("the host's storage is cut")]
    Cut,
}

/// Write `value` to `path` whole: a temporary file, synced, renamed into
/// place.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), IoError> {
    let io = |source| IoError::Io {
        path: path.to_path_buf(),
        source,
    };
    // One write per file at a time: a write that outlived its time limit
    // still runs, and a newer one must not land before it does.
    let _writing =
        Writing::claim(path).ok_or_else(|| io(std::io::Error::other("an earlier write of it is still under way")))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let text = serde_json::to_vec(value).map_err(|e| io(std::io::Error::other(e)))?;
    // `NAME.tmp` beside `NAME`: each file its own temporary.
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(&text).map_err(io)?;
    f.sync_all().map_err(io)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io)
}

/// The files being written now, by this process.
static WRITING: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

/// A claim on writing one file, given back when dropped.
struct Writing(PathBuf);

impl Writing {
    fn claim(path: &Path) -> Option<Writing> {
        let mut w = WRITING.lock().unwrap_or_else(|p| p.into_inner());
        if w.iter().any(|p| p == path) {
            return None;
        }
        w.push(path.to_path_buf());
        Some(Writing(path.to_path_buf()))
    }
}

impl Drop for Writing {
    fn drop(&mut self) {
        WRITING
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|p| *p != self.0);
    }
}

/// Read `path`: `None` when it is absent or not one of ours.
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, IoError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(IoError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Run `job` (blocking file I/O) on a blocking thread, failing it when it
/// has not finished within `limit`.
pub async fn with_limit<T: Send + 'static>(
    io: &Gate,
    limit: Duration,
    job: impl FnOnce() -> Result<T, IoError> + Send + 'static,
) -> Result<T, IoError> {
    if io.storage().is_err() {
        return Err(IoError::Cut);
    }
    if OUTSTANDING.fetch_add(1, Ordering::SeqCst) >= MAX_OUTSTANDING {
        OUTSTANDING.fetch_sub(1, Ordering::SeqCst);
        return Err(IoError::Hung);
    }
    run(limit, move || {
        let out = job();
        OUTSTANDING.fetch_sub(1, Ordering::SeqCst);
        out
    })
    .await
}

/// [`with_limit`] for the host lease's renewal, which the cap on VM lease
/// I/O never refuses.
pub async fn renewal_with_limit<T: Send + 'static>(
    limit: Duration,
    job: impl FnOnce() -> Result<T, IoError> + Send + 'static,
) -> Result<T, IoError> {
    run(limit, job).await
}

async fn run<T: Send + 'static>(
    limit: Duration,
    job: impl FnOnce() -> Result<T, IoError> + Send + 'static,
) -> Result<T, IoError> {
    let task = tokio::task::spawn_blocking(job);
    match tokio::time::timeout(limit, task).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => Err(IoError::Join(e.to_string())),
        Err(_) => Err(IoError::Timeout(limit.as_millis() as u64)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_files_of_destroyed_vms_go_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        let (gone, kept) = (uuid::Uuid::new_v4().to_string(), uuid::Uuid::new_v4().to_string());
        for vm in [&gone, &kept] {
            write_json(&layout.block(vm, "host-a"), &1u32).unwrap();
            write_json(&layout.owner(vm, "host-b"), &2u32).unwrap();
        }
        std::fs::create_dir_all(layout.vms().join("not-a-vm")).unwrap();
        let mut listed = vms_with_files(&layout).unwrap();
        listed.sort();
        let mut both = vec![gone.clone(), kept.clone()];
        both.sort();
        assert_eq!(listed, both, "only VM directories are listed");
        let asked = vec![gone.clone(), "not-a-vm".to_string(), "../hosts".to_string()];
        assert_eq!(forget_vms(&layout, &asked).unwrap(), 1);
        assert!(!layout.vms().join(&gone).exists());
        assert!(layout.block(&kept, "host-a").exists());
        assert!(layout.vms().join("not-a-vm").exists());
        // Again: nothing left to remove, no error.
        assert_eq!(forget_vms(&layout, &[gone]).unwrap(), 0);
        // No lease area at all: nothing listed.
        let empty = tempfile::tempdir().unwrap();
        assert!(vms_with_files(&Layout::new(empty.path())).unwrap().is_empty());
    }

    #[test]
    fn files_read_back_and_foreign_or_missing_ones_read_as_absent() {
        let dir = tempfile::tempdir().unwrap();
        let l = Layout::new(dir.path());
        let path = l.owner("vm-1", "host-a");
        assert_eq!(read_json::<OwnerFile>(&path).unwrap(), None);
        let f = OwnerFile {
            instance: 3,
            owner: OwnerOnDisk {
                host: "host-a".into(),
                boot: 7,
            },
            released: false,
        };
        write_json(&path, &f).unwrap();
        assert_eq!(read_json::<OwnerFile>(&path).unwrap(), Some(f));
        assert!(!dir.path().join("pool-ha-leases/vms/vm-1/host-a.owner.tmp").exists());
        std::fs::write(&path, b"{\"instance\": 3").unwrap();
        assert_eq!(read_json::<OwnerFile>(&path).unwrap(), None);
    }

    #[tokio::test]
    async fn a_batch_that_takes_too_long_fails() {
        let gate = Gate::open();
        let slow = with_limit(&gate, Duration::from_millis(20), || {
            std::thread::sleep(Duration::from_millis(200));
            Ok(())
        });
        assert!(matches!(slow.await, Err(IoError::Timeout(20))));
        let quick = with_limit(&gate, Duration::from_secs(5), || Ok(5));
        assert_eq!(quick.await.unwrap(), 5);
    }
}
