//! The packages on three hosts with real links (issue 21): the `.deb`s
//! `cargo deb` builds are installed by dpkg into one fresh root per host,
//! and each host runs in its own network namespace from what the package
//! installed only: the unit's `ExecStart` (with `/etc/default/xapid`'s
//! `XAPID_ARGS`), the installed `/usr/sbin/xapid`, and the installed
//! `/etc/pool-ha/xapid.toml` edited as `docs/deploy.md` says (plus what a
//! scratch root and this machine need: the data directory inside the root,
//! the sim driver, no watchdog device). No lab.
//!
//! The network is the test's own: a switch namespace holding a bridge and
//! one veth port per host, each host's other end `eth0` in its namespace,
//! all on a private /24 that exists nowhere else; the installed `xe` runs
//! in the switch namespace. Nothing is added to this machine's own
//! namespace, and every namespace goes on drop, also after a panic.
//!
//! The run: servers 2 and 3 join server 1 with `xe pool-join`, a shared
//! `dir` SR, a protected VM on server 2, HA on (T = 10 s, the smallest a
//! non-lab host takes); server 2's port on the switch goes down, server 2
//! fences itself (exit status 86), the master raises `HA_HOST_FAILED`,
//! marks it dead and restarts the VM on another host, whose guest writes
//! the VM's disk after server 2's last write. Then with HA off,
//! `host-forget` and `pool-eject` leave `xe host-list` right, and a join
//! while HA is on is refused with `HA_IS_ENABLED`, changing nothing.
//!
//! Needs root, iproute2, cargo-deb and dpkg; skipped with the reason
//! printed elsewhere.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::deploy::unit_command_line;
use crate::package::{build_debs, install};
use crate::util::{assert_one_writer_at_a_time, netns_unusable, records_of, wait_for};

const PASSWORD: &str = "deb-netns-password";
/// The HA timeout: the smallest `xapid serve` accepts outside the lab.
const T: u64 = 10;
/// The hosts' /24, in namespaces of the test's own only.
const SUBNET: &str = "10.77.0";

/// Run `ip ARGS`, which must succeed.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// The test's network: a switch namespace with a bridge, and one namespace
/// per host cabled to it by a veth pair. Removed on drop.
struct Net {
    /// `phd` and four random hex digits: the namespaces' prefix.
    id: String,
    /// The namespaces this test made (and only these go on drop).
    made: Vec<String>,
}

impl Net {
    fn switch(&self) -> String {
        format!("{}-sw", self.id)
    }

    fn namespace(&self, i: usize) -> String {
        format!("{}-h{i}", self.id)
    }

    fn address(i: usize) -> String {
        format!("{SUBNET}.{i}")
    }

    fn new(hosts: usize) -> Net {
        let mut net = Net {
            id: format!("phd{:04x}", rand::random::<u16>()),
            made: Vec::new(),
        };
        let sw = net.switch();
        ip(&["netns", "add", &sw]);
        net.made.push(sw.clone());
        ip(&["-n", &sw, "link", "set", "lo", "up"]);
        ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &sw, "addr", "add", &format!("{SUBNET}.254/24"), "dev", "br0"]);
        ip(&["-n", &sw, "link", "set", "br0", "up"]);
        for i in 1..=hosts {
            let (ns, port) = (net.namespace(i), format!("port{i}"));
            ip(&["netns", "add", &ns]);
            net.made.push(ns.clone());
            ip(&[
                "-n", &sw, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ]);
            ip(&["-n", &sw, "link", "set", &port, "master", "br0"]);
            ip(&["-n", &sw, "link", "set", &port, "up"]);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", Net::address(i)),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        net
    }

    /// Pull host `i`'s cable: its port on the switch goes down, so its
    /// `eth0` loses carrier and nothing gets in or out.
    fn pull(&self, i: usize) {
        ip(&["-n", &self.switch(), "link", "set", &format!("port{i}"), "down"]);
    }

    /// `program` run inside namespace `ns`.
    fn exec(ns: &str, program: &Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).arg(program);
        c
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // The veth pairs and the bridge go with their namespaces.
        for ns in self.made.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// Set `key` in a TOML settings text as an admin's editor would: the line
/// `key = …` or its commented-out form `# key = …` replaced, else appended.
fn set(text: &str, key: &str, value: &str) -> String {
    let line = format!("{key} = {value}");
    let is_key = |l: &str| {
        let l = l.trim_start().trim_start_matches('#').trim_start();
        l.strip_prefix(key).is_some_and(|r| r.trim_start().starts_with('='))
    };
    let mut found = false;
    let mut out: Vec<String> = text
        .lines()
        .map(|l| {
            if !found && is_key(l) {
                found = true;
                line.clone()
            } else if is_key(l) && !l.trim_start().starts_with('#') {
                format!("# {l}")
            } else {
                l.to_string()
            }
        })
        .collect();
    if !found {
        out.push(line);
    }
    out.join("\n") + "\n"
}

/// Comment out `key` in a TOML settings text.
fn unset(text: &str, key: &str) -> String {
    text.lines()
        .map(|l| {
            let t = l.trim_start();
            if t.strip_prefix(key).is_some_and(|r| r.trim_start().starts_with('=')) {
                format!("# {l}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// One host: its scratch root with both packages installed, and its
/// xapid once started.
struct Host {
    name: String,
    address: String,
    root: PathBuf,
    child: Option<Child>,
}

impl Host {
    fn data_dir(&self) -> PathBuf {
        self.root.join("var/lib/xapid")
    }

    fn settings(&self) -> PathBuf {
        self.root.join("etc/pool-ha/xapid.toml")
    }

    /// `/etc/pool-ha/xapid.toml` and `/etc/default/xapid` as installed,
    /// edited for this host.
    fn configure(&self, password_file: &Path) {
        let shipped = std::fs::read_to_string(self.settings()).unwrap();
        let quoted = |s: &str| format!("{s:?}");
        let mut text = set(&shipped, "address", &quoted(&self.address));
        text = set(&text, "name", &quoted(&self.name));
        text = set(
            &text,
            "root-password-file",
            &quoted(&password_file.display().to_string()),
        );
        // A scratch root is not a chroot: its data directory by full path.
        text = set(&text, "data-dir", &quoted(&self.data_dir().display().to_string()));
        // No KVM guests and no machine reset on this machine.
        text = set(&text, "driver", "\"sim\"");
        text = unset(&text, "watchdog-device");
        std::fs::write(self.settings(), text).unwrap();
        // The root's settings file, not the machine's /etc/pool-ha.
        let defaults = self.root.join("etc/default/xapid");
        let shipped = std::fs::read_to_string(&defaults).unwrap();
        let edited: Vec<String> = shipped
            .lines()
            .map(|l| match l.starts_with("XAPID_ARGS=") {
                true => format!("XAPID_ARGS=\"--config {}\"", self.settings().display()),
                false => l.to_string(),
            })
            .collect();
        std::fs::write(&defaults, edited.join("\n") + "\n").unwrap();
    }
}

/// The three hosts, their network and the files xe needs; every xapid
/// killed and every namespace removed on drop.
struct Site {
    dir: tempfile::TempDir,
    hosts: Vec<Host>,
    net: Net,
}

impl Site {
    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    fn xe_bin(&self) -> PathBuf {
        self.hosts[0].root.join("usr/bin/xe")
    }

    /// Start host `i` (from 0) as systemd would: the installed unit's
    /// command line in the host's namespace, no `POOL_HA_*` variables, and
    /// ready when it says `READY=1` on `NOTIFY_SOCKET`.
    fn start(&mut self, i: usize) {
        let h = &self.hosts[i];
        let line = unit_command_line(
            &h.root.join("usr/lib/systemd/system/xapid.service"),
            &h.root.join("etc/default/xapid"),
        );
        let program = h.root.join(line[0].trim_start_matches('/'));
        let socket_path = self.dir.path().join(format!("notify-{}", h.name));
        let socket = UnixDatagram::bind(&socket_path).unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let log = std::fs::File::create(self.dir.path().join(format!("{}.log", h.name))).unwrap();
        let mut cmd = Net::exec(&self.net.namespace(i + 1), &program);
        cmd.args(&line[1..]);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("POOL_HA_") {
                cmd.env_remove(&key);
            }
        }
        let child = cmd
            .env("NOTIFY_SOCKET", &socket_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.hosts[i].child = Some(child);
        let mut buf = [0u8; 512];
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let n = socket
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("{} sent no READY=1: {e}\n{}", self.hosts[i].name, self.logs()));
            if String::from_utf8_lossy(&buf[..n]).lines().any(|l| l == "READY=1") {
                break;
            }
            assert!(Instant::now() < deadline, "{} not ready", self.hosts[i].name);
        }
    }

    /// The installed xe, in the switch namespace, against `server`.
    fn xe(&self, server: usize, args: &[&str]) -> (bool, String, String) {
        let out = Net::exec(&self.net.switch(), &self.xe_bin())
            .args(args)
            .args(["-s", &self.hosts[server].address, "-u", "root", "-pw", PASSWORD])
            .env("HOME", self.home())
            .env_remove("XE_EXTRA_ARGS")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        )
    }

    /// `xe ARGS` against `server`, which must succeed; its output.
    fn xe_ok(&self, server: usize, args: &[&str]) -> String {
        let (ok, stdout, stderr) = self.xe(server, args);
        assert!(
            ok,
            "xe {args:?} on {}: {stderr}\n{}",
            self.hosts[server].name,
            self.logs()
        );
        stdout
    }

    /// The sorted name-labels `xe host-list` gives on `server`.
    fn host_names(&self, server: usize) -> Vec<String> {
        let mut names: Vec<String> = self
            .xe_ok(server, &["host-list", "params=name-label", "--minimal"])
            .split(',')
            .map(str::to_string)
            .collect();
        names.sort();
        names
    }

    /// The tails of the hosts' logs, for a failure message.
    fn logs(&self) -> String {
        let mut out = String::new();
        for h in &self.hosts {
            let text = std::fs::read_to_string(self.dir.path().join(format!("{}.log", h.name))).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            out += &format!("--- {} ---\n", h.name);
            for l in tail.into_iter().rev() {
                out += l;
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        for h in &mut self.hosts {
            if let Some(mut child) = h.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        // Then `self.net` drops: the namespaces go once empty of xapids.
    }
}

#[test]
fn the_installed_packages_fail_over_on_real_links() {
    if let Some(why) = netns_unusable() {
        eprintln!("skipped: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (xe_deb, host_deb) = match build_debs(dir.path()) {
        Ok(debs) => debs,
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    let started = Instant::now();
    let password_file = dir.path().join("root-password");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
    let sr_path = dir.path().join("pool-sr");
    std::fs::create_dir_all(&sr_path).unwrap();
    let hosts: Vec<Host> = (1..=3)
        .map(|n| {
            let h = Host {
                name: format!("server{n}"),
                address: Net::address(n),
                root: dir.path().join(format!("root{n}")),
                child: None,
            };
            install(&h.root, &[&xe_deb, &host_deb]);
            h.configure(&password_file);
            h
        })
        .collect();
    std::fs::create_dir_all(dir.path().join("home")).unwrap();
    let mut site = Site {
        dir,
        hosts,
        net: Net::new(3),
    };
    for i in 0..3 {
        site.start(i);
    }
    // Pin each host's certificate where xe runs (deploy.md, section 3).
    let mut known = String::new();
    for h in &site.hosts {
        let id = pool_master::tls::Identity::load_or_create(&h.data_dir(), std::slice::from_ref(&h.address)).unwrap();
        known += &format!("{} {}\n", h.address, id.fingerprint());
    }
    std::fs::write(site.home().join(".xe_known_hosts"), known).unwrap();

    // The pool: servers 2 and 3 join server 1.
    let master = site.hosts[0].address.clone();
    for s in [1, 2] {
        site.xe_ok(
            s,
            &[
                "pool-join",
                &format!("master-address={master}"),
                "master-username=root",
                &format!("master-password={PASSWORD}"),
            ],
        );
    }
    assert!(
        wait_for(Duration::from_secs(30), || site
            .xe(0, &["host-list", "params=name-label", "--minimal"])
            .1
            .split(',')
            .count()
            == 3),
        "the joins did not complete:\n{}",
        site.logs()
    );
    let host_uuid = |site: &Site, name: &str| site.xe_ok(0, &["host-list", &format!("name-label={name}"), "--minimal"]);
    let h2 = host_uuid(&site, "server2");

    // A shared SR on the shared folder, a protected VM on server 2, HA on.
    let sr = site.xe_ok(
        0,
        &[
            "sr-create",
            "name-label=pool-sr",
            "type=dir",
            "shared=true",
            &format!("device-config:location={}", sr_path.display()),
        ],
    );
    let vm = site.xe_ok(
        0,
        &[
            "vm-install",
            "new-name-label=web01",
            "memory=1GiB",
            "disk-size=1GiB",
            &format!("sr-uuid={sr}"),
        ],
    );
    site.xe_ok(
        0,
        &["vm-param-set", &format!("uuid={vm}"), "ha-restart-priority=restart"],
    );
    site.xe_ok(0, &["vm-start", &format!("uuid={vm}"), "on=server2"]);
    site.xe_ok(
        0,
        &[
            "pool-ha-enable",
            &format!("heartbeat-sr-uuids={sr}"),
            &format!("ha-config:timeout={T}"),
        ],
    );
    let vm_field = |site: &Site, field: &str| {
        site.xe_ok(
            0,
            &[
                "vm-list",
                &format!("uuid={vm}"),
                &format!("params={field}"),
                "--minimal",
            ],
        )
    };
    assert_eq!(vm_field(&site, "resident-on"), h2);

    // Pull server 2's cable. It fences itself; the master marks it dead,
    // says so, and runs the VM elsewhere.
    let pulled = Instant::now();
    site.net.pull(2);
    let limit = Duration::from_secs(12 * T);
    let fenced = wait_for(limit, || {
        site.hosts[1]
            .child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_some())
    });
    assert!(fenced, "server2 did not fence:\n{}", site.logs());
    let status = site.hosts[1].child.take().unwrap().wait().unwrap();
    assert_eq!(status.code(), Some(86), "server2 did not exit as a fenced host does");
    let restarted = wait_for(limit, || {
        let (_, state, _) = site.xe(0, &["vm-param-get", &format!("uuid={vm}"), "param-name=power-state"]);
        let (_, on, _) = site.xe(0, &["vm-param-get", &format!("uuid={vm}"), "param-name=resident-on"]);
        state == "running" && on != h2 && on.len() == h2.len()
    });
    assert!(restarted, "web01 did not restart:\n{}", site.logs());
    let failover = pulled.elapsed();
    // On the VM's disk: server 2's guest wrote before the pull, the new
    // host's guest writes after it, never both at once.
    let new_host = vm_field(&site, "resident-on");
    assert!(
        wait_for(Duration::from_secs(30), || records_of(&sr_path, &vm)
            .iter()
            .any(|r| r.host_uuid == new_host)),
        "the restarted guest never wrote its disk"
    );
    let records = records_of(&sr_path, &vm);
    assert!(
        records.iter().any(|r| r.host_uuid == h2),
        "server2's guest never wrote its disk"
    );
    assert_one_writer_at_a_time(&sr_path, &vm);
    // The liveset without server 2, as the master records it once the
    // fence wait is over (the VM restarted earlier: server 2's fencing
    // mark on the heartbeat SR released its lease), and the alert.
    let dead = wait_for(Duration::from_secs(6 * T), || {
        let live = site.xe(
            0,
            &["host-param-get", &format!("uuid={h2}"), "param-name=host-metrics-live"],
        );
        let failed = site.xe(
            0,
            &["message-list", "name=HA_HOST_FAILED", "params=obj-uuid", "--minimal"],
        );
        live.1 == "false" && failed.1.split(',').any(|u| u == h2)
    });
    assert!(dead, "server2 is still live, or no HA_HOST_FAILED:\n{}", site.logs());
    let pulled_to_dead = pulled.elapsed();

    // Membership, with HA off as XAPI wants: forget the dead host, eject
    // server 3 (its VMs moved off first), and host-list follows.
    site.xe_ok(0, &["pool-ha-disable"]);
    site.xe_ok(0, &["host-forget", &format!("uuid={h2}"), "--force"]);
    assert_eq!(site.host_names(0), ["server1", "server3"]);
    let h3 = host_uuid(&site, "server3");
    if vm_field(&site, "resident-on") == h3 {
        site.xe_ok(0, &["vm-migrate", &format!("uuid={vm}"), "host=server1"]);
    }
    site.xe_ok(0, &["pool-eject", &format!("host-uuid={h3}"), "--force"]);
    assert_eq!(site.host_names(0), ["server1"]);
    assert!(
        wait_for(Duration::from_secs(30), || site
            .xe(2, &["host-list", "params=name-label", "--minimal"])
            .1
            == "server3"),
        "server3 is not a pool of its own after the eject:\n{}",
        site.logs()
    );

    // HA on again: a join is refused with HA_IS_ENABLED and changes nothing.
    site.xe_ok(
        0,
        &[
            "pool-ha-enable",
            &format!("heartbeat-sr-uuids={sr}"),
            &format!("ha-config:timeout={T}"),
        ],
    );
    let (ok, _, stderr) = site.xe(
        2,
        &[
            "pool-join",
            &format!("master-address={master}"),
            "master-username=root",
            &format!("master-password={PASSWORD}"),
        ],
    );
    assert!(
        !ok && stderr.contains("HA is enabled"),
        "pool-join with HA on: {stderr}"
    );
    assert_eq!(site.host_names(0), ["server1"]);
    assert_eq!(site.host_names(2), ["server3"]);
    assert_eq!(vm_field(&site, "power-state"), "running");
    eprintln!(
        "after the pull: VM running elsewhere {failover:.0?}, server2 dead {pulled_to_dead:.0?}; whole run: {:.0?}",
        started.elapsed()
    );
}
