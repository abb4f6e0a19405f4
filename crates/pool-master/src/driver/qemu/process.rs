//! The qemu driver's side of the host's processes and files: the guests'
//! pids and how they are killed (the fence, the lab's power switch), the
//! accelerator check, the domain id counter and the disk files.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::unavailable;
use crate::driver::DriverError;

/// The size of a disk file the driver creates for a VDI that has none yet
/// (the SR creates no file at `VDI.create`): room for hours of the test
/// guest's records, sparse on the SR.
pub const NEW_DISK_SIZE: u64 = 32 << 20;

/// The pids of every guest process this process started and that has not
/// been seen to end: what the fence kills, from any thread, without the
/// daemon.
static GUEST_PIDS: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// Kill every guest process of this host (SIGKILL) and return once each is
/// gone or a zombie (no longer running, nothing left to write with), or
/// after 10 s: whether none runs. Called by the fence before the process
/// exits.
pub fn kill_every_guest() -> bool {
    let pids: Vec<i32> = {
        let pids = GUEST_PIDS.lock().unwrap_or_else(|p| p.into_inner());
        // From here on a guest that starts is killed as it registers (its
        // start passed the gate just before the fence shut it).
        FENCING.store(true, std::sync::atomic::Ordering::SeqCst);
        pids.clone()
    };
    kill_and_wait(&pids);
    !pids.iter().any(|&p| process_runs(p))
}

/// The fence has begun: no guest may start any more.
static FENCING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Why this host's guests are stopped: they run only while neither holds
/// them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// This host's lease was not renewed in time (the lease keeper).
    Lease,
    /// The lab cut this host's storage: the guests' disk I/O hangs (the
    /// lab stops them itself, at once; `xapid` notes it here).
    Storage,
}

/// The holds in force: (lease, storage).
static HOLDS: Mutex<(bool, bool)> = Mutex::new((false, false));

fn hold_flag(holds: &mut (bool, bool), hold: Hold) -> &mut bool {
    match hold {
        Hold::Lease => &mut holds.0,
        Hold::Storage => &mut holds.1,
    }
}

/// Stop every guest for `hold` (SIGSTOP).
pub fn hold_guests(hold: Hold) {
    let mut holds = HOLDS.lock().unwrap_or_else(|p| p.into_inner());
    *hold_flag(&mut holds, hold) = true;
    signal_every_guest(nix::sys::signal::Signal::SIGSTOP);
}

/// Lift `hold`; the guests continue (SIGCONT) if no other hold remains.
/// Under one lock with [`hold_guests`]: the lab's storage coming back never
/// lets run a guest this host's lease keeps paused.
pub fn release_guests(hold: Hold) {
    let mut holds = HOLDS.lock().unwrap_or_else(|p| p.into_inner());
    *hold_flag(&mut holds, hold) = false;
    if *holds == (false, false) {
        signal_every_guest(nix::sys::signal::Signal::SIGCONT);
    }
}

/// Continue (SIGCONT) the guests that are stopped while no hold is in
/// force (the lab stopped them for a storage cut this host did not see).
pub fn continue_stopped_guests() {
    let holds = HOLDS.lock().unwrap_or_else(|p| p.into_inner());
    if *holds != (false, false) {
        return;
    }
    let pids: Vec<i32> = GUEST_PIDS.lock().unwrap_or_else(|p| p.into_inner()).clone();
    for pid in pids.into_iter().filter(|&p| process_stopped(p)) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGCONT);
    }
}

/// Is process `pid` stopped by a signal (state `T`)?
fn process_stopped(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| process_state(&stat) == Some("T"))
}

/// The state letter of a `/proc/PID/stat` line: it follows the command
/// name, which is in parentheses (and may hold anything).
fn process_state(stat: &str) -> Option<&str> {
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
}

/// Is `hold` in force?
pub fn held(hold: Hold) -> bool {
    *hold_flag(&mut HOLDS.lock().unwrap_or_else(|p| p.into_inner()), hold)
}

/// Send `signal` to every guest process of this host.
pub fn signal_every_guest(signal: nix::sys::signal::Signal) {
    let pids: Vec<i32> = GUEST_PIDS.lock().unwrap_or_else(|p| p.into_inner()).clone();
    for pid in pids {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
    }
}

/// SIGKILL each of `pids`, then wait (up to 10 s) until none runs.
pub fn kill_and_wait(pids: &[i32]) {
    for &pid in pids {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|&p| process_runs(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Kill every guest whose pid file is in `run_dir` and that still runs
/// QEMU for a VM (the lab's power switch, and its teardown).
pub fn kill_guests_in(run_dir: &Path) {
    kill_and_wait(&running_guests_in(run_dir));
}

/// Send `signal` to every guest whose pid file is in `run_dir` (the lab's
/// storage switch stops and continues them).
pub fn signal_guests_in(run_dir: &Path, signal: nix::sys::signal::Signal) {
    for pid in running_guests_in(run_dir) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
    }
}

/// The pids in `run_dir`'s pid files that run QEMU for a VM (a guest
/// that has ended, a zombie included, is not there).
pub fn running_guests_in(run_dir: &Path) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir(run_dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "pid"))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok()?.trim().parse().ok())
        .filter(|&p: &i32| p > 1 && runs_any_guest(p))
        .collect()
}

/// Does process `pid` run QEMU for some VM (`-name pool-ha-...`)?
fn runs_any_guest(pid: i32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| c.split(|b| *b == 0).any(|arg| arg.starts_with(b"pool-ha-")))
        .unwrap_or(false)
}

/// Is process `pid` still running (present and not a zombie)?
pub(super) fn process_runs(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => process_state(&stat).is_some_and(|state| state != "Z" && state != "X"),
        // Only a process that is not there has ended; any other error
        // (out of file descriptors, say) says nothing.
        Err(e) => e.kind() != std::io::ErrorKind::NotFound,
    }
}

pub(super) fn forget_pid(pid: i32) {
    let mut pids = GUEST_PIDS.lock().unwrap_or_else(|p| p.into_inner());
    pids.retain(|&p| p != pid);
    crate::driver::qemu::guard::set_guests(pids.clone());
}

pub(super) fn remember_pid(pid: i32) {
    let mut pids = GUEST_PIDS.lock().unwrap_or_else(|p| p.into_inner());
    if FENCING.load(std::sync::atomic::Ordering::SeqCst) {
        kill_and_wait(&[pid]);
        return;
    }
    pids.push(pid);
    crate::driver::qemu::guard::set_guests(pids.clone());
}

/// Can KVM run guests here?
pub fn kvm_works() -> bool {
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    let flags = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let hw = flags
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    dev && hw
}

/// Find `program` on `PATH` (or take it as given when it is a path).
pub(super) fn find_program(program: &Path) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return program.is_file().then(|| program.to_path_buf());
    }
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|p| p.is_file())
}

pub(super) fn read_counter(path: &Path) -> Result<i64, DriverError> {
    match std::fs::read_to_string(path) {
        Ok(s) => s
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| unavailable(format!("{} does not hold a domain id", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(1),
        Err(e) => Err(unavailable(format!("cannot read {}: {e}", path.display()))),
    }
}

pub(super) fn write_counter(path: &Path, value: i64) -> Result<(), DriverError> {
    crate::files::replace(path, format!("{value}\n").as_bytes())
        .map_err(|e| unavailable(format!("cannot save the domain id counter {}: {e}", path.display())))
}

/// The disk file exists, or is created (sparse, [`NEW_DISK_SIZE`]) when
/// its SR directory is there: a VDI gets its file at its first start.
pub(super) fn ensure_disk(disk: &Path) -> Result<(), DiskError> {
    if disk.is_file() {
        return Ok(());
    }
    if !disk.parent().is_some_and(Path::is_dir) {
        return Err(DiskError::NoSr(disk.to_path_buf()));
    }
    let io = |source| DiskError::Io {
        path: disk.to_path_buf(),
        source,
    };
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(disk)
        .or_else(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => std::fs::OpenOptions::new().write(true).open(disk),
            _ => Err(e),
        })
        .map_err(io)?;
    if f.metadata().map(|m| m.len()).unwrap_or(0) == 0 {
        f.set_len(NEW_DISK_SIZE).map_err(io)?;
    }
    Ok(())
}

/// Why a guest's disk file is not there for it.
#[derive(Debug, thiserror::Error)]
pub(super) enum DiskError {
    #[error("{} is not a disk file, and its SR directory is not there", .0.display())]
    NoSr(PathBuf),
    #[error("cannot create or size {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
}

/// Does process `pid` run QEMU for the VM `vm_uuid` (`-name pool-ha-VM`)?
pub(super) fn runs_guest_of(pid: i32, vm_uuid: &str) -> bool {
    let name = format!("pool-ha-{vm_uuid}");
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| c.split(|b| *b == 0).any(|arg| arg == name.as_bytes()))
        .unwrap_or(false)
}
