//! The `qemu` VM driver: each running guest is a `qemu-system-x86_64`
//! process whose disks are raw files on the SR, controlled over QMP (the
//! `qapi` crate) on a unix socket in the host's data dir.
//!
//! - **Accelerator.** KVM when `/dev/kvm` opens read-write and the CPU
//!   shows hardware virtualization (`vmx` or `svm` in `/proc/cpuinfo`),
//!   else TCG; chosen once when the driver opens, or forced with
//!   `--accel`. A `/dev/kvm` without either flag (some nested or emulated
//!   hosts) hangs guests in early boot, so it does not count.
//! - **Domain ids** are small integers from a counter kept in the data dir
//!   (`qemu/next-domid`, written before a guest gets its id), so they stay
//!   unique and growing across restarts of `xapid`, as the master's
//!   snapshot rule needs (see [`super::Snapshot`]).
//! - **Halts.** A guest that powers itself off (QMP `SHUTDOWN` with
//!   `guest: true`, or its process ending) while nobody asked it to stop is
//!   reported as halted, exactly as a sim guest's halt.
//! - **Fencing.** The fence kills every guest and waits until none runs
//!   ([`kill_every_guest`]) before `xapid` exits. A guest is a process of
//!   its own and outlives `xapid` otherwise: with HA armed the fence guard
//!   beside `xapid` kills the guests when `xapid` freezes past its
//!   watchdog deadline or dies ([`guard`]); with HA off a restarted
//!   `xapid` adopts the guests it finds running ([`Driver::adopt`]), as a
//!   toolstack restart leaves a XenServer host's VMs running.

pub mod guard;
mod process;
mod qmp;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use super::{read_records, Driver, DriverError, DriverKind, Gate, GuestSpec, Halted, KernelBoot, Snapshot, StopMode};
pub use process::{
    continue_stopped_guests, held, hold_guests, kill_and_wait, kill_every_guest, kill_guests_in, kvm_works,
    release_guests, running_guests_in, signal_guests_in, Hold, NEW_DISK_SIZE,
};
use process::{
    ensure_disk, find_program, forget_pid, process_runs, read_counter, remember_pid, runs_guest_of, write_counter,
};
use qmp::{connect, press_key, qmp_error, watch_halt_marker, Qmp};

/// How long a clean shutdown waits for the guest before pulling the plug.
const CLEAN_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a live migration may take before it is cancelled.
const MIGRATE_TIMEOUT: Duration = Duration::from_secs(120);
/// The longest unix socket path the kernel takes (`sun_path`, less the NUL).
const MAX_SOCKET_PATH: usize = 107;

/// Which accelerator runs the guests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Accel {
    /// KVM when it works here, else TCG.
    Auto,
    Kvm,
    Tcg,
}

/// How the qemu driver runs guests.
#[derive(Debug, Clone)]
pub struct QemuConfig {
    /// The QEMU program (found on `PATH` when not a path).
    pub binary: PathBuf,
    pub accel: Accel,
    /// Where the QMP sockets, pid files, consoles and the domain id counter
    /// live (the host's data dir, `qemu/`).
    pub run_dir: PathBuf,
    /// The kernel a VM boots when it names none.
    pub default_kernel: Option<KernelBoot>,
    /// Where the kernels and initrds a VM names must be (as XenServer's
    /// `/boot/guest`): a VM's other-config must not load any file of the
    /// host into a guest.
    pub kernel_dir: PathBuf,
}

impl QemuConfig {
    pub fn new(data_dir: &Path) -> Self {
        QemuConfig {
            binary: PathBuf::from("qemu-system-x86_64"),
            accel: Accel::Auto,
            run_dir: data_dir.join("qemu"),
            default_kernel: None,
            kernel_dir: PathBuf::from("/boot/guest"),
        }
    }
}

/// Poll a cancelled migration (up to 10 s) until it reaches a final state.
async fn settle(qmp: &Qmp) -> Option<qapi::qmp::MigrationStatus> {
    use qapi::qmp::MigrationStatus as S;
    for _ in 0..200 {
        let status = qmp.execute(qapi::qmp::query_migrate {}).await.ok()?.status;
        if matches!(status, Some(S::completed | S::failed | S::cancelled)) {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// What the driver records beside a guest (`DOMID.guest`) for a later
/// `xapid` to adopt it.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct GuestFile {
    vm_uuid: String,
    domid: i64,
    disks: Vec<PathBuf>,
}

/// How a guest's end is seen: its process is our child, or a process an
/// earlier `xapid` started (polled).
enum Ending {
    Child(tokio::process::Child),
    Adopted,
}

/// One running guest.
struct Guest {
    domid: i64,
    pid: i32,
    disks: Vec<PathBuf>,
    qmp: Option<Arc<Qmp>>,
    /// Set once a stop was asked for: its end is then no halt.
    stopping: Arc<std::sync::atomic::AtomicBool>,
    /// Becomes true when the process has ended.
    ended: watch::Receiver<bool>,
}

/// The QEMU guests of this host.
pub struct QemuDriver {
    host_uuid: String,
    config: QemuConfig,
    accel: &'static str,
    gate: Gate,
    guests: Arc<Mutex<HashMap<String, Guest>>>,
    /// Serializes domain id allocation (the counter file).
    next_domid: Mutex<i64>,
    halted_tx: mpsc::UnboundedSender<Halted>,
    halted_rx: Mutex<Option<mpsc::UnboundedReceiver<Halted>>>,
}

/// Where an incoming guest listens and where the source sends it: QEMU's
/// `-incoming tcp:LISTEN:PORT` on this host's bind address (a free port
/// found there) and the URI `tcp:REACH:PORT` on the address the pool knows
/// the host by. IPv6 addresses go in brackets.
fn incoming_endpoint(listen: &str, reach: &str) -> Result<(String, String), DriverError> {
    let port = std::net::TcpListener::bind((listen, 0))
        .and_then(|l| l.local_addr())
        .map_err(|e| unavailable(format!("no free port on {listen} for a migration: {e}")))?
        .port();
    let host = |a: &str| {
        if a.contains(':') && !a.starts_with('[') {
            format!("[{a}]")
        } else {
            a.to_string()
        }
    };
    Ok((
        format!("tcp:{}:{port}", host(listen)),
        format!("tcp:{}:{port}", host(reach)),
    ))
}

fn unavailable(why: String) -> DriverError {
    DriverError::Unavailable(why)
}

impl QemuDriver {
    /// Open the driver: find QEMU, choose the accelerator, read the domain
    /// id counter.
    pub fn open(host_uuid: &str, gate: Gate, mut config: QemuConfig) -> Result<Self, DriverError> {
        config.binary = find_program(&config.binary).ok_or_else(|| {
            unavailable(format!(
                "{} was not found: install QEMU (Debian: apt-get install qemu-system-x86)",
                config.binary.display()
            ))
        })?;
        let accel = match config.accel {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
            Accel::Auto if kvm_works() => "kvm",
            Accel::Auto => "tcg",
        };
        std::fs::create_dir_all(&config.run_dir)
            .map_err(|e| unavailable(format!("cannot create {}: {e}", config.run_dir.display())))?;
        let next = read_counter(&config.run_dir.join("next-domid"))?;
        let (halted_tx, halted_rx) = mpsc::unbounded_channel();
        tracing::info!(accel, qemu = %config.binary.display(), "qemu driver ready");
        Ok(QemuDriver {
            host_uuid: host_uuid.to_string(),
            config,
            accel,
            gate,
            guests: Arc::new(Mutex::new(HashMap::new())),
            next_domid: Mutex::new(next),
            halted_tx,
            halted_rx: Mutex::new(Some(halted_rx)),
        })
    }

    fn guests(&self) -> std::sync::MutexGuard<'_, HashMap<String, Guest>> {
        self.guests.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Take the next domain id, the counter saved before it is used.
    fn allocate_domid(&self) -> Result<i64, DriverError> {
        let mut next = self.next_domid.lock().unwrap_or_else(|p| p.into_inner());
        let domid = *next;
        write_counter(&self.config.run_dir.join("next-domid"), domid + 1)?;
        *next = domid + 1;
        Ok(domid)
    }

    /// A kernel or initrd a VM names must be a file under the kernel
    /// directory (symbolic links resolved).
    fn check_kernel_paths(&self, vm: &str, k: &KernelBoot) -> Result<(), DriverError> {
        let dir = self.config.kernel_dir.canonicalize().ok();
        for path in std::iter::once(&k.kernel).chain(k.initrd.iter()) {
            let inside = match (&dir, path.canonicalize()) {
                (Some(dir), Ok(p)) => p.starts_with(dir) && p.is_file(),
                _ => false,
            };
            if !inside {
                return Err(DriverError::Control {
                    vm: vm.to_string(),
                    why: format!(
                        "{} is not a file under {}, where the kernels VMs name must be",
                        path.display(),
                        self.config.kernel_dir.display()
                    ),
                });
            }
        }
        Ok(())
    }

    /// Record beside a new guest what a later `xapid` needs to adopt it.
    fn write_guest_file(&self, vm: &str, domid: i64, disks: &[PathBuf]) {
        let file = GuestFile {
            vm_uuid: vm.to_string(),
            domid,
            disks: disks.to_vec(),
        };
        let path = self.config.run_dir.join(format!("{domid}.guest"));
        let text = serde_json::to_string(&file).unwrap_or_default();
        if let Err(e) = std::fs::write(&path, text) {
            tracing::warn!(path = %path.display(), "cannot record the guest for a later xapid: {e}");
        }
    }

    /// Watch a guest's process until it ends: then forget it, remove its
    /// files, and report a halt nobody asked for.
    fn watch_end(
        &self,
        vm: String,
        domid: i64,
        pid: i32,
        stopping: Arc<std::sync::atomic::AtomicBool>,
        ended_tx: watch::Sender<bool>,
        ending: Ending,
    ) {
        let (guests, halted, dir) = (self.guests.clone(), self.halted_tx.clone(), self.config.run_dir.clone());
        let gate = self.gate.clone();
        tokio::spawn(async move {
            let why = match ending {
                Ending::Child(mut child) => {
                    let status = child.wait().await;
                    let log = tokio::fs::read_to_string(dir.join(format!("{domid}.log")))
                        .await
                        .unwrap_or_default();
                    format!("{status:?} {}", log.trim())
                }
                Ending::Adopted => {
                    while process_runs(pid) {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    "the adopted process ended".to_string()
                }
            };
            forget_pid(pid);
            for ext in ["guest", "pid", "qmp", "log"] {
                let _ = std::fs::remove_file(dir.join(format!("{domid}.{ext}")));
            }
            let mine = {
                let mut g = guests.lock().unwrap_or_else(|p| p.into_inner());
                let mine = g.get(&vm).is_some_and(|g| g.domid == domid);
                if mine {
                    g.remove(&vm);
                }
                mine
            };
            let _ = ended_tx.send(true);
            // A guest that ends while this host may not write (fenced, or
            // frozen past its deadline and killed by the fence guard) did
            // not halt itself: no halt report, which the master would take
            // for a shutdown from inside.
            if mine && !stopping.load(std::sync::atomic::Ordering::SeqCst) && gate().is_ok() {
                tracing::info!(vm = %vm, domid, why = %why, "the guest halted");
                let _ = halted.send(Halted { vm_uuid: vm, domid });
            }
        });
    }

    /// Take over the guests an earlier `xapid` of this host left running
    /// (HA off: a restart of `xapid` does not stop its VMs): each one whose
    /// process still runs QEMU for its VM is reconnected over QMP; the
    /// files of the others are removed. The uuids of the VMs adopted.
    async fn adopt_guests(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.config.run_dir) else {
            return Vec::new();
        };
        let mut adopted = Vec::new();
        for path in entries.flatten().map(|e| e.path()) {
            if path.extension().is_none_or(|x| x != "guest") {
                continue;
            }
            let Some(file) = std::fs::read_to_string(&path)
                .ok()
                .and_then(|t| serde_json::from_str::<GuestFile>(&t).ok())
            else {
                let _ = std::fs::remove_file(&path);
                continue;
            };
            let domid = file.domid;
            let pid = std::fs::read_to_string(self.config.run_dir.join(format!("{domid}.pid")))
                .ok()
                .and_then(|p| p.trim().parse::<i32>().ok())
                .filter(|p| *p > 1);
            let ours = pid.is_some_and(|p| process_runs(p) && runs_guest_of(p, &file.vm_uuid));
            let (Some(pid), true) = (pid, ours) else {
                for ext in ["guest", "pid", "qmp"] {
                    let _ = std::fs::remove_file(self.config.run_dir.join(format!("{domid}.{ext}")));
                }
                continue;
            };
            let (ended_tx, ended) = watch::channel(false);
            let socket = self.config.run_dir.join(format!("{domid}.qmp"));
            let qmp = match connect(&socket, ended.clone()).await {
                Ok(q) => Arc::new(q),
                Err(why) => {
                    // A guest nobody can control must not write on.
                    tracing::error!(vm = %file.vm_uuid, domid, pid, "cannot adopt the guest ({why}): killing it");
                    let _ = tokio::task::spawn_blocking(move || kill_and_wait(&[pid])).await;
                    continue;
                }
            };
            let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
            remember_pid(pid);
            self.guests().insert(
                file.vm_uuid.clone(),
                Guest {
                    domid,
                    pid,
                    disks: file.disks.clone(),
                    qmp: Some(qmp.clone()),
                    stopping: stopping.clone(),
                    ended: ended.clone(),
                },
            );
            self.watch_end(file.vm_uuid.clone(), domid, pid, stopping, ended_tx, Ending::Adopted);
            if let Some(marker) = super::halt_marker(&file.disks, &file.vm_uuid) {
                tokio::spawn(watch_halt_marker(marker, qmp, ended));
            }
            tracing::info!(vm = %file.vm_uuid, domid, pid, "adopted a running guest");
            adopted.push(file.vm_uuid);
        }
        adopted.sort();
        adopted
    }

    /// Press a key in the guest's keyboard (QMP `send-key`): the test guest
    /// powers itself off on any input, which is how the tests and the lab
    /// make a real guest halt from inside.
    pub async fn send_key(&self, vm_uuid: &str) -> Result<(), DriverError> {
        let qmp = self.qmp(vm_uuid)?;
        press_key(&qmp).await.map_err(|e| qmp_error(vm_uuid, e))
    }

    fn qmp(&self, vm_uuid: &str) -> Result<Arc<Qmp>, DriverError> {
        self.guests()
            .get(vm_uuid)
            .ok_or_else(|| DriverError::NotRunning(vm_uuid.to_string()))?
            .qmp
            .clone()
            .ok_or_else(|| DriverError::Control {
                vm: vm_uuid.to_string(),
                why: "its QMP socket is not connected".into(),
            })
    }

    fn command(
        &self,
        spec: &GuestSpec,
        kernel: &KernelBoot,
        domid: i64,
        incoming: Option<&str>,
    ) -> Result<tokio::process::Command, DriverError> {
        let dir = &self.config.run_dir;
        let socket = dir.join(format!("{domid}.qmp"));
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(unavailable(format!(
                "the QMP socket path {} is longer than {MAX_SOCKET_PATH} bytes: use a shorter --data-dir",
                socket.display()
            )));
        }
        let _ = std::fs::remove_file(&socket);
        let mib = spec.memory.max(1 << 20).saturating_add((1 << 20) - 1) >> 20;
        // QEMU's own messages, read back when it ends (a pipe nobody
        // reads could fill up and stall it).
        let log = std::fs::File::create(dir.join(format!("{domid}.log")))
            .map_err(|e| unavailable(format!("cannot create QEMU's log in {}: {e}", dir.display())))?;
        let mut cmdline = format!(
            "console=ttyS0 quiet pool_ha.vm={} pool_ha.host={} pool_ha.t0={}",
            spec.vm_uuid,
            self.host_uuid,
            super::unix_ms()
        );
        if !kernel.args.is_empty() {
            cmdline.push(' ');
            cmdline.push_str(&kernel.args);
        }
        let mut cmd = tokio::process::Command::new(&self.config.binary);
        cmd.arg("-name")
            .arg(format!("pool-ha-{}", spec.vm_uuid))
            .args([
                "-accel",
                self.accel,
                "-nodefaults",
                "-display",
                "none",
                "-no-user-config",
            ])
            .arg("-m")
            .arg(format!("{mib}M"))
            .arg("-smp")
            .arg(spec.vcpus.clamp(1, 64).to_string())
            .arg("-serial")
            .arg(format!("file:{}", dir.join(format!("{domid}.console")).display()))
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", socket.display()))
            .arg("-pidfile")
            .arg(dir.join(format!("{domid}.pid")))
            .arg("-kernel")
            .arg(&kernel.kernel)
            .arg("-append")
            .arg(cmdline);
        if let Some(initrd) = &kernel.initrd {
            cmd.arg("-initrd").arg(initrd);
        }
        // The host the guest runs on, read by the test guest for each record:
        // after a live migration the destination's value is the one it sees.
        cmd.arg("-fw_cfg")
            .arg(format!("name=opt/pool-ha/host,string={}", self.host_uuid));
        if let Some(uri) = incoming {
            cmd.arg("-incoming").arg(uri);
        }
        for disk in &spec.disks {
            // QEMU's -drive option takes commas doubled.
            let file = disk.display().to_string().replace(',', ",,");
            cmd.arg("-drive")
                .arg(format!("file={file},format=raw,if=virtio,cache=directsync"));
        }
        cmd.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .kill_on_drop(false);
        Ok(cmd)
    }

    /// Start a guest of `spec`, or (with `incoming`, a migration URI) one
    /// that waits for the state of a guest migrating in.
    async fn launch(&self, spec: GuestSpec, incoming: Option<String>) -> Result<i64, DriverError> {
        let vm = spec.vm_uuid.clone();
        (self.gate)().map_err(|e| DriverError::DisksUnreachable {
            vm: vm.clone(),
            why: e.to_string(),
        })?;
        // On the SR, which may hang: not on the runtime's threads.
        let disks = spec.disks.clone();
        tokio::task::spawn_blocking(move || disks.iter().try_for_each(|d| ensure_disk(d)))
            .await
            .map_err(|e| unavailable(format!("the disk check failed: {e}")))?
            .map_err(|e| DriverError::DisksUnreachable {
                vm: vm.clone(),
                why: e.to_string(),
            })?;
        if let Some(k) = &spec.kernel {
            self.check_kernel_paths(&vm, k)?;
        }
        let kernel = spec
            .kernel
            .clone()
            .or_else(|| self.config.default_kernel.clone())
            .ok_or_else(|| DriverError::Control {
                vm: vm.clone(),
                why: "the VM names no kernel to boot (other-config:pool-ha-kernel) and xapid has no --guest-kernel"
                    .into(),
            })?;
        if self.guests().contains_key(&vm) {
            return Err(DriverError::AlreadyRunning(vm));
        }
        let domid = self.allocate_domid()?;
        let mut child = self
            .command(&spec, &kernel, domid, incoming.as_deref())?
            .spawn()
            .map_err(|e| unavailable(format!("cannot run {}: {e}", self.config.binary.display())))?;
        let pid = child.id().and_then(|p| i32::try_from(p).ok()).unwrap_or(0);
        remember_pid(pid);
        let (ended_tx, ended) = watch::channel(false);
        let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
        {
            let mut guests = self.guests();
            if guests.contains_key(&vm) {
                drop(guests);
                let _ = child.start_kill();
                forget_pid(pid);
                return Err(DriverError::AlreadyRunning(vm));
            }
            guests.insert(
                vm.clone(),
                Guest {
                    domid,
                    pid,
                    disks: spec.disks.clone(),
                    qmp: None,
                    stopping: stopping.clone(),
                    ended: ended.clone(),
                },
            );
        }
        self.write_guest_file(&vm, domid, &spec.disks);
        self.watch_end(vm.clone(), domid, pid, stopping.clone(), ended_tx, Ending::Child(child));
        let socket = self.config.run_dir.join(format!("{domid}.qmp"));
        match connect(&socket, ended.clone()).await {
            Ok(qmp) => {
                let qmp = Arc::new(qmp);
                if let Some(g) = self.guests().get_mut(&vm).filter(|g| g.domid == domid) {
                    g.qmp = Some(qmp.clone());
                }
                if let Some(marker) = super::halt_marker(&spec.disks, &vm) {
                    tokio::spawn(watch_halt_marker(marker, qmp, ended.clone()));
                }
            }
            Err(e) => {
                stopping.store(true, std::sync::atomic::Ordering::SeqCst);
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
                return Err(DriverError::Control { vm, why: e.to_string() });
            }
        }
        tracing::info!(vm = %vm, domid, pid, accel = self.accel, incoming = ?incoming, "guest started");
        Ok(domid)
    }
}

#[async_trait::async_trait]
impl Driver for QemuDriver {
    fn kind(&self) -> DriverKind {
        DriverKind::Qemu
    }

    fn accel(&self) -> &'static str {
        self.accel
    }

    async fn start(&self, spec: GuestSpec) -> Result<i64, DriverError> {
        self.launch(spec, None).await
    }

    async fn start_incoming(&self, spec: GuestSpec, listen: &str, reach: &str) -> Result<(i64, String), DriverError> {
        let (incoming, uri) = incoming_endpoint(listen, reach)?;
        let domid = self.launch(spec, Some(incoming)).await?;
        Ok((domid, uri))
    }

    async fn migrate_out(&self, vm_uuid: &str, uri: &str) -> Result<u64, DriverError> {
        let qmp = self.qmp(vm_uuid)?;
        let failed = |why: String| DriverError::Control {
            vm: vm_uuid.to_string(),
            why: format!("live migration to {uri} failed: {why}"),
        };
        qmp.execute(qapi::qmp::migrate {
            uri: Some(uri.to_string()),
            channels: None,
            detach: None,
            resume: None,
        })
        .await
        .map_err(|e| failed(e.to_string()))?;
        let deadline = Instant::now() + MIGRATE_TIMEOUT;
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let info = qmp
                .execute(qapi::qmp::query_migrate {})
                .await
                .map_err(|e| failed(e.to_string()))?;
            use qapi::qmp::MigrationStatus as S;
            match info.status {
                Some(S::completed) => break,
                Some(S::failed) | Some(S::cancelled) => {
                    return Err(failed(info.error_desc.unwrap_or_else(|| "QEMU gave no reason".into())));
                }
                _ if Instant::now() >= deadline => {
                    let _ = qmp.execute(qapi::qmp::migrate_cancel {}).await;
                    // The cancel may come too late: only a final state
                    // says where the guest runs.
                    if settle(&qmp).await == Some(S::completed) {
                        break;
                    }
                    return Err(failed(format!("not done in {MIGRATE_TIMEOUT:?}: cancelled")));
                }
                _ => {}
            }
        }
        // The guest runs on the destination now: this one is a shell.
        self.stop(vm_uuid, StopMode::Hard).await
    }

    async fn stop(&self, vm_uuid: &str, how: StopMode) -> Result<u64, DriverError> {
        let (pid, qmp, mut ended, disks) = {
            let guests = self.guests();
            let g = guests
                .get(vm_uuid)
                .ok_or_else(|| DriverError::NotRunning(vm_uuid.to_string()))?;
            g.stopping.store(true, std::sync::atomic::Ordering::SeqCst);
            (g.pid, g.qmp.clone(), g.ended.clone(), g.disks.clone())
        };
        if how == StopMode::Clean {
            if let Some(qmp) = &qmp {
                if let Err(e) = qmp.execute(qapi::qmp::system_powerdown {}).await {
                    tracing::warn!(vm = %vm_uuid, "system_powerdown failed: {e}");
                }
            }
            if tokio::time::timeout(CLEAN_TIMEOUT, ended.wait_for(|e| *e))
                .await
                .is_err()
            {
                tracing::warn!(vm = %vm_uuid, "the guest did not power off in {CLEAN_TIMEOUT:?}: pulling the plug");
            }
        }
        if !*ended.borrow() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            let _ = ended.wait_for(|e| *e).await;
        }
        let first: Option<PathBuf> = disks.first().cloned();
        let last = match first {
            Some(disk) => tokio::task::spawn_blocking(move || last_disk_seq(&disk))
                .await
                .ok()
                .flatten(),
            None => None,
        };
        Ok(last.unwrap_or(0))
    }

    fn running(&self) -> Vec<String> {
        let mut v: Vec<String> = self.guests().keys().cloned().collect();
        v.sort();
        v
    }

    fn snapshot(&self) -> Snapshot {
        // The counter first: a guest started after this read has a domain id
        // at or above it, whether or not it is in the list.
        let next_domid = *self.next_domid.lock().unwrap_or_else(|p| p.into_inner());
        Snapshot {
            running: self.running(),
            next_domid,
            driver: format!("qemu-{}", self.accel),
        }
    }

    fn domid(&self, vm_uuid: &str) -> Option<i64> {
        self.guests().get(vm_uuid).map(|g| g.domid)
    }

    fn take_halted(&self) -> Option<mpsc::UnboundedReceiver<Halted>> {
        self.halted_rx.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    fn gate(&self) -> Result<(), &'static str> {
        (self.gate)()
    }

    async fn adopt(&self) -> Vec<String> {
        self.adopt_guests().await
    }

    fn pause_all(&self) {
        process::hold_guests(process::Hold::Lease);
    }

    fn resume_all(&self) {
        process::release_guests(process::Hold::Lease);
    }

    fn kill_all(&self) {
        let pids: Vec<i32> = self
            .guests()
            .values()
            .map(|g| {
                g.stopping.store(true, std::sync::atomic::Ordering::SeqCst);
                g.pid
            })
            .collect();
        kill_and_wait(&pids);
    }
}

/// The sequence of the last record a real guest wrote on `disk` (its
/// records start at the disk's first byte).
pub fn last_disk_seq(disk: &Path) -> Option<u64> {
    read_records(disk).ok()?.last().map(|r| r.seq)
}

#[cfg(test)]
mod tests {
    use super::incoming_endpoint;

    /// The guest waiting for a migration listens on the bind address
    /// (`serve --bind-address`), and the source is sent to the address
    /// the pool knows the host by.
    #[test]
    fn an_incoming_guest_listens_on_the_bind_address() {
        let (incoming, uri) = incoming_endpoint("0.0.0.0", "192.0.2.11").unwrap();
        let port = incoming.strip_prefix("tcp:0.0.0.0:").expect(&incoming);
        assert_eq!(uri, format!("tcp:192.0.2.11:{port}"));
        let (incoming, uri) = incoming_endpoint("127.0.0.1", "127.0.0.1").unwrap();
        assert!(
            incoming.starts_with("tcp:127.0.0.1:") && incoming == uri,
            "{incoming} {uri}"
        );
        if std::net::TcpListener::bind("[::1]:0").is_ok() {
            let (incoming, uri) = incoming_endpoint("::1", "::1").unwrap();
            assert!(incoming.starts_with("tcp:[::1]:") && incoming == uri, "{incoming}");
        }
        // An address this machine does not have: a clear error.
        assert!(incoming_endpoint("192.0.2.99", "192.0.2.99").is_err());
    }
}
