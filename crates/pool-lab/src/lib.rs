//! The lab: a pool of several `xapid` processes on this machine, outside
//! the daemon (program `xapid-lab`, which `xapid lab` runs).
//!
//! `xapid lab --hosts N --dir DIR` gives each host its own loopback address
//! (`127.A.B.1`, `127.A.B.2`, ... on one port), its own data directory under
//! `DIR/hosts/`, and one shared SR folder `DIR/sr`. On the first run it joins
//! the hosts into one pool, creates the shared SR (the pool's default) and a
//! few VMs; a later run on the same DIR restarts the same pool. It writes
//! `DIR/env` (an `XE_EXTRA_ARGS=` line pointing xe at the master),
//! `DIR/root-password` (0600, xe's `-pwf` layout, which xapid reads too) and
//! `DIR/lab.json` (addresses and process ids, read by `xapid lab status`),
//! then stays in the foreground as the hosts' power supply until Ctrl-C, when
//! it stops every host cleanly.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use tokio::process::Child;
use xapi_client::Client;

pub mod chaos;
pub mod check;
mod hosts;
pub mod journal;
pub mod netns;

use hosts::{serve_args, spawn_host};
pub use hosts::{wait_until_up, xapid_exe};

/// What `xapid lab` was asked for.
#[derive(Debug, Clone)]
pub struct LabOptions {
    pub hosts: usize,
    pub dir: Option<PathBuf>,
    pub port: u16,
    /// The first three octets of the hosts' addresses (`127.A.B`); random
    /// when not given.
    pub subnet: Option<String>,
    pub password: Option<String>,
    pub vms: usize,
    pub host_memory: i64,
    pub vm_memory: i64,
    /// Enable HA on a new lab pool with this timeout, in seconds.
    pub ha_timeout: Option<u64>,
    /// Put each host in its own network namespace (root only).
    pub netns: bool,
    /// What runs the hosts' guests.
    pub driver: pool_master::driver::DriverKind,
    /// The kernel and initrd of the VMs with the qemu driver (default: the
    /// test guest, built into DIR/guest by guest/build.sh).
    pub guest_kernel: Option<PathBuf>,
    pub guest_initrd: Option<PathBuf>,
}

/// How long a fenced or crashed host stays down before the lab boots it.
pub const REBOOT_DELAY: Duration = Duration::from_secs(2);

/// The marker file of a host whose power is off.
use pool_master::io::POWER_OFF;

/// The lab's description on disk (`DIR/lab.json`).
#[derive(Debug, Clone)]
pub struct LabState {
    pub dir: PathBuf,
    pub port: u16,
    pub password: String,
    pub hosts: Vec<LabHost>,
    /// The switch of a lab whose hosts live in network namespaces.
    pub netns: Option<netns::Net>,
}

#[derive(Debug, Clone)]
pub struct LabHost {
    pub name: String,
    pub address: String,
    pub data_dir: PathBuf,
    pub pid: Option<u32>,
}

/// The file in the lab's directory that pins its hosts' certificates (named as
/// xe's own, so xe run with `HOME` set to the lab's directory finds it too).
pub const KNOWN_HOSTS: &str = ".xe_known_hosts";

impl LabState {
    pub fn master(&self) -> &LabHost {
        &self.hosts[0]
    }

    /// The `XE_EXTRA_ARGS` value pointing xe at the master, trusting the
    /// lab's hosts' certificates (`DIR/known_hosts`).
    pub fn xe_extra_args(&self) -> String {
        format!(
            "server={},port={},username=root,password={},knownhosts={}",
            self.master().address,
            self.port,
            self.password,
            self.dir.join(KNOWN_HOSTS).display()
        )
    }

    /// One `ADDRESS FINGERPRINT` line per host: each host's certificate is
    /// made here if the host has not made it yet (the host loads it).
    fn known_hosts(&self) -> Result<String> {
        let mut text = String::from("# The lab's hosts and their certificates (xe: knownhosts=THIS FILE).\n");
        for h in &self.hosts {
            std::fs::create_dir_all(&h.data_dir)?;
            let id = pool_master::tls::Identity::load_or_create(&h.data_dir, &[h.address.clone(), h.name.clone()])?;
            text.push_str(&format!("{} {}\n", h.address, id.fingerprint()));
        }
        Ok(text)
    }

    fn to_json(&self) -> Value {
        json!({
            "port": self.port,
            "password": self.password,
            "hosts": self.hosts.iter().map(|h| json!({
                "name": h.name, "address": h.address, "data_dir": h.data_dir, "pid": h.pid,
            })).collect::<Vec<_>>(),
            "netns": self.netns.as_ref().map(|n| json!({"id": n.id, "subnet": n.subnet})),
        })
    }

    pub fn save(&self) -> Result<()> {
        write_replacing(&self.dir.join(KNOWN_HOSTS), &self.known_hosts()?)?;
        write_replacing(
            &self.dir.join("lab.json"),
            &serde_json::to_string_pretty(&self.to_json())?,
        )?;
        // Written whole and renamed into place: a test or a shell reading
        // `DIR/env` while the lab saves never sees it empty.
        write_replacing(
            &self.dir.join("env"),
            &format!("XE_EXTRA_ARGS={}\n", self.xe_extra_args()),
        )
    }

    pub fn load(dir: &Path) -> Result<LabState> {
        let path = dir.join("lab.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("no lab in {} (cannot read {})", dir.display(), path.display()))?;
        let v: Value = serde_json::from_str(&text).with_context(|| format!("{} is damaged", path.display()))?;
        let field = |h: &Value, k: &str| h.get(k).and_then(Value::as_str).map(str::to_string);
        let hosts = v["hosts"]
            .as_array()
            .ok_or_else(|| anyhow!("{}: no hosts", path.display()))?
            .iter()
            .map(|h| {
                Ok(LabHost {
                    name: field(h, "name").ok_or_else(|| anyhow!("host without name"))?,
                    address: field(h, "address").ok_or_else(|| anyhow!("host without address"))?,
                    data_dir: field(h, "data_dir")
                        .map(PathBuf::from)
                        .ok_or_else(|| anyhow!("host without data_dir"))?,
                    pid: h.get("pid").and_then(Value::as_u64).map(|p| p as u32),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if hosts.is_empty() {
            bail!("{}: no hosts", path.display());
        }
        Ok(LabState {
            dir: dir.to_path_buf(),
            port: v["port"]
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .ok_or_else(|| anyhow!("no port"))?,
            password: field(&v, "password").ok_or_else(|| anyhow!("no password"))?,
            hosts,
            netns: match &v["netns"] {
                Value::Null => None,
                n => Some(netns::Net {
                    id: field(n, "id").ok_or_else(|| anyhow!("netns without id"))?,
                    subnet: field(n, "subnet").ok_or_else(|| anyhow!("netns without subnet"))?,
                }),
            },
        })
    }
}

fn random_subnet() -> String {
    let a: u8 = rand::random_range(1..=250);
    let b: u8 = rand::random_range(1..=250);
    format!("127.{a}.{b}")
}

fn random_password() -> String {
    pool_master::daemon::hex(&rand::random::<[u8; 8]>())
}

/// Run the lab in the foreground until Ctrl-C or SIGTERM.
pub async fn run(options: LabOptions) -> Result<()> {
    let dir = match &options.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("pool-ha-lab-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    let existing = dir.join("lab.json").exists();
    let mut state = if existing {
        let s = LabState::load(&dir)?;
        println!(
            "Restarting the lab pool in {} ({} hosts).",
            dir.display(),
            s.hosts.len()
        );
        s
    } else {
        new_state(&options, &dir)?
    };
    std::fs::create_dir_all(dir.join("sr"))?;
    let serve = serve_args(&options, &dir)?;
    // In xe's -pwf layout (user, then password): the hosts read it, and
    // `xe -pwf DIR/root-password` logs in with it.
    let password_file = dir.join("root-password");
    pool_master::files::replace_private(&password_file, format!("root\n{}\n", state.password).as_bytes())
        .with_context(|| format!("writing {}", password_file.display()))?;
    if let Some(net) = &state.netns {
        netns::usable()?;
        net.setup(state.hosts.len())
            .context("building the lab's switch and namespaces")?;
    }
    let mut children = Vec::new();
    for i in 0..state.hosts.len() {
        let _ = std::fs::remove_file(state.hosts[i].data_dir.join(POWER_OFF));
        // A new switch has no one-way cuts.
        let _ = std::fs::remove_file(state.hosts[i].data_dir.join(BLOCKED));
        let child = match spawn_host(&state, i, &password_file, &serve) {
            Ok(c) => c,
            Err(e) => {
                stop_all(&mut children).await;
                teardown(&state);
                return Err(e);
            }
        };
        state.hosts[i].pid = child.id();
        children.push(Some(child));
    }
    state.save()?;
    let ready = async {
        for host in &state.hosts {
            match wait_until_up(&host.address, state.port, Duration::from_secs(20)).await {
                // A pool that exists comes back with the hosts it can reach:
                // a host whose cable is pulled runs, cut off, as it would.
                Err(e) if existing && host.pid.is_some_and(process_alive) => {
                    println!(
                        "{} does not answer (its network may be cut); the lab goes on: {e:#}",
                        host.name
                    );
                }
                r => r?,
            }
        }
        if !existing {
            build_pool(&state, &options).await?;
        }
        Ok::<_, anyhow::Error>(())
    };
    if let Err(e) = ready.await {
        stop_all(&mut children).await;
        teardown(&state);
        return Err(e.context("the lab pool did not come up; see the hosts' logs under DIR/hosts/*/xapid.log"));
    }
    print_welcome(&state);
    supervise(&mut state, &mut children, &password_file, &serve).await;
    println!("Stopping the lab pool...");
    stop_all(&mut children).await;
    teardown(&state);
    for host in &mut state.hosts {
        host.pid = None;
    }
    state.save()?;
    println!("Stopped. Start it again with: xapid lab --dir {}", dir.display());
    Ok(())
}

/// Be the hosts' power supply until Ctrl-C or SIGTERM: a host whose
/// process ended (it fenced, or crashed) boots again after
/// [`REBOOT_DELAY`], unless its power was switched off; a host switched
/// back on boots at once.
async fn supervise(state: &mut LabState, children: &mut [Option<Child>], password_file: &Path, serve: &[String]) {
    let mut down_since: Vec<Option<Instant>> = vec![None; children.len()];
    let signal = wait_for_signal();
    tokio::pin!(signal);
    loop {
        tokio::select! {
            _ = &mut signal => return,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        let mut changed = false;
        for (i, slot) in children.iter_mut().enumerate() {
            if let Some(child) = slot {
                let host = &mut state.hosts[i];
                if let Ok(Some(status)) = child.try_wait() {
                    println!("{} went down ({status}).", host.name);
                    *slot = None;
                    host.pid = None;
                    down_since[i] = Some(Instant::now());
                    changed = true;
                }
                continue;
            }
            if state.hosts[i].data_dir.join(POWER_OFF).exists() {
                continue;
            }
            let due = match down_since[i] {
                Some(t) => t.elapsed() >= REBOOT_DELAY,
                None => true,
            };
            if !due {
                continue;
            }
            match spawn_host(state, i, password_file, serve) {
                Ok(child) => {
                    let host = &mut state.hosts[i];
                    println!("{} boots.", host.name);
                    host.pid = child.id();
                    *slot = Some(child);
                    down_since[i] = None;
                    changed = true;
                }
                Err(e) => eprintln!("cannot boot {}: {e:#}", state.hosts[i].name),
            }
        }
        if changed {
            if let Err(e) = state.save() {
                eprintln!("cannot record the lab's state: {e:#}");
            }
        }
    }
}

/// A fault the lab injects into one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultAction {
    PowerOff,
    PowerOn,
    CutNetwork,
    RestoreNetwork,
    CutStorage,
    RestoreStorage,
    /// SIGSTOP the host's xapid.
    Freeze,
    /// SIGCONT the host's xapid.
    Thaw,
}

/// `xapid lab power-off|power-on|cut-network|... HOST --dir DIR`.
pub async fn fault(dir: &Path, host: &str, action: FaultAction) -> Result<()> {
    let state = LabState::load(dir)?;
    println!("{}", apply(&state, find_host(&state, host)?, action)?);
    Ok(())
}

/// Inject or heal one fault on host `i` (from 0); says what was done.
pub fn apply(state: &LabState, i: usize, action: FaultAction) -> Result<String> {
    use pool_master::io::{self as switches, Fault};
    let h = &state.hosts[i];
    let d = &h.data_dir;
    Ok(match action {
        FaultAction::PowerOff => {
            std::fs::write(d.join(POWER_OFF), b"")?;
            let said = match h.pid.filter(|p| process_alive(*p)) {
                Some(pid) => {
                    kill(Pid::from_raw(pid as i32), Signal::SIGKILL)
                        .with_context(|| format!("cannot stop {} (pid {pid})", h.name))?;
                    format!("{} is off (pid {pid} killed).", h.name)
                }
                None => format!("{} was already off.", h.name),
            };
            // Its real guests lose their power too.
            pool_master::driver::qemu::kill_guests_in(&d.join("qemu"));
            said
        }
        FaultAction::PowerOn => {
            std::fs::remove_file(d.join(POWER_OFF)).ok();
            format!("{} is on; the lab boots it now.", h.name)
        }
        FaultAction::CutNetwork | FaultAction::RestoreNetwork => {
            let on = action == FaultAction::CutNetwork;
            match &state.netns {
                // The host's port on the switch: a real cable.
                Some(net) => net.cable(i + 1, !on)?,
                None => switches::set(d, Fault::Network, on)?,
            }
            format!("{}: network {}.", h.name, if on { "cut" } else { "restored" })
        }
        FaultAction::CutStorage | FaultAction::RestoreStorage => {
            let on = action == FaultAction::CutStorage;
            switches::set(d, Fault::Storage, on)?;
            // Real guests' disk I/O hangs with the storage, as on a hard
            // NFS mount: they are stopped at once. When it is back, their
            // xapid lets them continue (`failover::leases`), unless their
            // host's lease keeps them paused: a guest whose VM another
            // host took meanwhile must not write again.
            if on {
                pool_master::driver::qemu::signal_guests_in(&d.join("qemu"), Signal::SIGSTOP);
            }
            format!("{}: storage {}.", h.name, if on { "cut" } else { "restored" })
        }
        FaultAction::Freeze | FaultAction::Thaw => {
            let (signal, verb, done) = match action {
                FaultAction::Freeze => (Signal::SIGSTOP, "freeze", "frozen"),
                _ => (Signal::SIGCONT, "thaw", "thawed"),
            };
            let pid = h
                .pid
                .filter(|p| process_alive(*p))
                .ok_or_else(|| anyhow!("{} has no process to {verb}", h.name))?;
            kill(Pid::from_raw(pid as i32), signal).with_context(|| format!("cannot signal {} (pid {pid})", h.name))?;
            format!("{}: xapid {done} (pid {pid}).", h.name)
        }
    })
}

/// `xapid lab guest-halt VM --dir DIR`: the VM's guest shuts itself down
/// from inside (VM by name or uuid).
pub async fn guest_halt(dir: &Path, vm: &str) -> Result<()> {
    let state = LabState::load(dir)?;
    let uuid = if uuid::Uuid::parse_str(vm).is_ok() {
        vm.to_string()
    } else {
        vm_uuid_by_name(&state, vm).await?
    };
    let marker = dir.join("sr").join(format!("{uuid}.halt"));
    std::fs::write(&marker, b"").with_context(|| format!("writing {}", marker.display()))?;
    println!("{vm}: the guest halts itself (within 100 ms if it runs).");
    Ok(())
}

/// Ask whichever host answers (following the master) for a VM's uuid.
async fn vm_uuid_by_name(state: &LabState, name: &str) -> Result<String> {
    let mut c = connect_any(state, Duration::from_secs(5)).await?;
    let found = c.call("VM.get_by_name_label", vec![json!(name)]).await?;
    let r = first(&found).map_err(|_| anyhow!("no VM named {name}"))?;
    let uuid = c.call("VM.get_uuid", vec![json!(r)]).await?;
    c.logout().await;
    uuid.as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("unexpected answer {uuid}"))
}

/// A session on the master, through the first host that answers (members
/// send the client on to the master); each try is bounded by `timeout`.
pub async fn connect_any(state: &LabState, timeout: Duration) -> Result<Client> {
    let options = xapi_client::Options {
        trust: xapi_client::tls::Trust::Plain,
        connect_timeout: timeout,
        request_timeout: timeout,
        trace: None,
    };
    let mut last = None;
    for h in &state.hosts {
        let mut c = Client::with_options(&h.address, state.port, &options);
        match c.login("root", &state.password).await {
            Ok(()) => return Ok(c),
            Err(e) => last = Some(e),
        }
    }
    bail!(
        "no host of the lab answers: {}",
        last.map(|e| e.to_string()).unwrap_or_default()
    )
}

/// The index (from 0) of a lab host given by name (`host2`) or by uuid.
pub fn find_host(state: &LabState, key: &str) -> Result<usize> {
    if let Some(i) = state.hosts.iter().position(|h| h.name == key) {
        return Ok(i);
    }
    for (i, h) in state.hosts.iter().enumerate() {
        let db = h.data_dir.join("pool.db");
        if !db.exists() {
            continue;
        }
        if let Ok(store) = pool_db::store::Store::open(&db) {
            if store.local("host_uuid").ok().flatten().as_deref() == Some(key) {
                return Ok(i);
            }
        }
    }
    let names: Vec<&str> = state.hosts.iter().map(|h| h.name.as_str()).collect();
    bail!("no host {key} in this lab (hosts: {})", names.join(", "))
}

/// The file listing the addresses a host's packets may not reach.
const BLOCKED: &str = "blocked";

/// `xapid lab block|unblock FROM TO --dir DIR`: drop (or stop dropping)
/// what host FROM sends to host TO. Needs a lab with `--netns`.
pub async fn block(dir: &Path, from: &str, to: &str, blocked: bool) -> Result<()> {
    let state = LabState::load(dir)?;
    let net = state
        .netns
        .as_ref()
        .ok_or_else(|| anyhow!("one-way cuts need real links: start the lab with --netns (as root)"))?;
    let (f, t) = (find_host(&state, from)?, find_host(&state, to)?);
    if f == t {
        bail!("a host always reaches itself: give two different hosts");
    }
    let file = state.hosts[f].data_dir.join(BLOCKED);
    let mut set: std::collections::BTreeSet<String> = std::fs::read_to_string(&file)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    let to_addr = state.hosts[t].address.clone();
    if blocked {
        set.insert(to_addr);
    } else {
        set.remove(&to_addr);
    }
    net.block(f + 1, &set)?;
    std::fs::write(&file, set.iter().map(|a| format!("{a}\n")).collect::<String>())?;
    println!(
        "{} -> {}: {}.",
        state.hosts[f].name,
        state.hosts[t].name,
        if blocked { "dropped" } else { "delivered" }
    );
    Ok(())
}

/// Remove a netns lab's switch and namespaces.
fn teardown(state: &LabState) {
    // The lab's hosts go, and their real guests with them (a stopped
    // xapid leaves its guests running, as a toolstack restart would).
    for h in &state.hosts {
        pool_master::driver::qemu::kill_guests_in(&h.data_dir.join("qemu"));
    }
    if let Some(net) = &state.netns {
        net.teardown(state.hosts.len());
    }
}

fn new_state(options: &LabOptions, dir: &Path) -> Result<LabState> {
    if options.hosts == 0 || options.hosts > 64 {
        bail!("--hosts must be between 1 and 64");
    }
    let net = if options.netns {
        Some(netns::Net::new(options.subnet.as_deref())?)
    } else {
        None
    };
    let subnet = match &net {
        Some(n) => n.subnet.clone(),
        None => options.subnet.clone().unwrap_or_else(random_subnet),
    };
    let hosts = (1..=options.hosts)
        .map(|i| LabHost {
            name: format!("host{i}"),
            address: format!("{subnet}.{i}"),
            data_dir: dir.join("hosts").join(format!("host{i}")),
            pid: None,
        })
        .collect();
    Ok(LabState {
        dir: dir.to_path_buf(),
        port: options.port,
        password: options.password.clone().unwrap_or_else(random_password),
        hosts,
        netns: net,
    })
}

async fn build_pool(state: &LabState, options: &LabOptions) -> Result<()> {
    let master = state.master();
    for host in &state.hosts[1..] {
        let mut c = Client::new(&host.address, state.port).no_redirect();
        c.login("root", &state.password).await?;
        c.call(
            "pool.join",
            vec![json!(master.address), json!("root"), json!(state.password)],
        )
        .await
        .with_context(|| format!("{} could not join the pool", host.name))?;
        c.logout().await;
    }
    let mut c = Client::new(&master.address, state.port);
    c.login("root", &state.password).await?;
    let pool = first(&c.call("pool.get_all", vec![]).await?)?;
    c.call("pool.set_name_label", vec![json!(pool), json!("lab")]).await?;
    let host = c.call("pool.get_master", vec![json!(pool)]).await?;
    let sr_dir = state.dir.join("sr");
    let sr = c
        .call(
            "SR.create",
            vec![
                json!(host),
                json!({"location": sr_dir.display().to_string()}),
                json!(0),
                json!("Shared lab storage"),
                json!("A folder every lab host reaches"),
                json!("dir"),
                json!("user"),
                json!(true),
                json!({}),
            ],
        )
        .await
        .context("creating the shared SR")?;
    c.call("pool.set_default_SR", vec![json!(pool), sr.clone()]).await?;
    for i in 1..=options.vms {
        let vm = c
            .call(
                "VM.create",
                vec![json!({"name_label": format!("vm{i:02}"), "memory_static_max": options.vm_memory})],
            )
            .await?;
        let vdi = c
            .call(
                "VDI.create",
                vec![json!({"name_label": format!("vm{i:02} disk"), "SR": sr, "virtual_size": 1i64 << 30})],
            )
            .await?;
        c.call("VBD.create", vec![json!({"VM": vm, "VDI": vdi, "userdevice": "0"})])
            .await?;
    }
    if let Some(t) = options.ha_timeout {
        c.call("pool.enable_ha", vec![json!([sr]), json!({ "timeout": t.to_string() })])
            .await
            .context("enabling HA")?;
    }
    c.logout().await;
    Ok(())
}

pub fn first(v: &Value) -> Result<String> {
    v.as_array()
        .and_then(|a| a.first())
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| anyhow!("unexpected answer {v}"))
}

fn print_welcome(state: &LabState) {
    let bin_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf));
    println!(
        "The lab pool is up: {} hosts, master {}:{}.",
        state.hosts.len(),
        state.master().address,
        state.port
    );
    for h in &state.hosts {
        println!(
            "  {:<8} {}:{}  pid {}",
            h.name,
            h.address,
            state.port,
            h.pid.map_or("-".into(), |p| p.to_string())
        );
    }
    println!();
    println!("In another shell:");
    if let Some(bin) = bin_dir {
        println!("  export PATH={}:$PATH", bin.display());
    }
    println!("  export $(cat {})", state.dir.join("env").display());
    println!("  xe host-list");
    println!("  xe vm-list");
    println!("  xe vm-start vm=vm01 on=host2");
    println!("  xe pool-ha-enable ha-config:timeout=10");
    println!();
    println!("Pull a cable (the lab boots a fenced host again after a short delay):");
    println!(
        "  xapid lab power-off|power-on|cut-network|restore-network|cut-storage|restore-storage host2 --dir {}",
        state.dir.display()
    );
    println!("  xapid lab freeze|thaw host2 --dir {}", state.dir.display());
    println!();
    println!("Press Ctrl-C to stop every host.");
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// SIGTERM every host, then SIGKILL those still up after 10 s.
async fn stop_all(children: &mut [Option<Child>]) {
    for child in children.iter().flatten() {
        if let Some(pid) = child.id() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
    }
    for child in children.iter_mut().flatten() {
        if tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
    }
}

/// Is process `pid` alive?
pub fn process_alive(pid: u32) -> bool {
    i32::try_from(pid).is_ok_and(|p| kill(Pid::from_raw(p), None).is_ok())
}

/// `xapid lab status --dir DIR`: the hosts, their processes and roles.
pub async fn status(dir: &Path) -> Result<()> {
    let state = LabState::load(dir)?;
    println!("{:<8} {:<16} {:<8} {:<8} API", "HOST", "ADDRESS", "PID", "PROCESS");
    for h in &state.hosts {
        let alive = h.pid.is_some_and(process_alive);
        let api = api_status(&h.address, state.port).await;
        println!(
            "{:<8} {:<16} {:<8} {:<8} {}",
            h.name,
            format!("{}:{}", h.address, state.port),
            h.pid.map_or("-".into(), |p| p.to_string()),
            if alive { "running" } else { "stopped" },
            api
        );
    }
    Ok(())
}

async fn api_status(address: &str, port: u16) -> String {
    let options = xapi_client::Options {
        trust: xapi_client::tls::Trust::Plain,
        connect_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(2),
        trace: None,
    };
    let mut c = Client::with_options(address, port, &options).no_redirect();
    // A write with no session changes nothing: a master that may change the
    // pool refuses the session; one whose master lock is not confirmed (a
    // fenced former master back in the pool) refuses the call first.
    match c
        .call_raw("pool.set_name_label", vec![json!(""), json!(""), json!("")])
        .await
    {
        Err(e) if e.is(xapi_proto::codes::HOST_IS_SLAVE) => {
            format!(
                "member of {}",
                e.api().and_then(|a| a.params.first().cloned()).unwrap_or_default()
            )
        }
        Err(e) if e.is(xapi_proto::codes::SESSION_INVALID) => "master".into(),
        Ok(_) => "master".into(),
        Err(xapi_client::ClientError::Api(a)) if a.code == xapi_proto::codes::HOST_STILL_BOOTING => {
            "not master yet (HA has not confirmed it)".into()
        }
        Err(xapi_client::ClientError::Api(a)) => a.code,
        Err(_) => "unreachable".into(),
    }
}

/// Replace `path` with `text` whole (`pool_master::files::replace`).
/// Replace a lab file whole, readable by its owner only: `env` and
/// `lab.json` carry the root password.
fn write_replacing(path: &Path, text: &str) -> Result<()> {
    pool_master::files::replace_private(path, text.as_bytes()).with_context(|| format!("writing {}", path.display()))
}
