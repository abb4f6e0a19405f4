//! A lab pool in a temporary directory: start it, pull its cables, run
//! xe against it, stop it.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::pool::wait_for;
use super::xe::{run_xe, Run};
use super::{xapid_bin, FAILOVER, HA_T, PASSWORD};

/// A running lab pool; stopped (SIGTERM, then waited for) on drop.
pub struct Lab {
    pub dir: tempfile::TempDir,
    pub subnet: String,
    pub port: u16,
    child: Option<Child>,
}

impl Lab {
    /// Start a lab of `hosts` hosts with `vms` VMs.
    pub fn start(hosts: usize, vms: usize) -> Lab {
        Lab::start_with(hosts, vms, &[])
    }

    /// Start a lab with more `xapid lab` options (e.g. `--ha`).
    pub fn start_with(hosts: usize, vms: usize, options: &[&str]) -> Lab {
        let subnet = format!(
            "127.{}.{}",
            rand::random_range(1..=250u8),
            rand::random_range(1..=250u8)
        );
        Lab::start_on(hosts, vms, &subnet, options)
    }

    /// Start a lab on `subnet` (three octets).
    fn start_on(hosts: usize, vms: usize, subnet: &str, options: &[&str]) -> Lab {
        let dir = tempfile::tempdir().expect("tempdir");
        let subnet = subnet.to_string();
        let port = rand::random_range(20000..60000u16);
        let mut lab = Lab {
            dir,
            subnet: subnet.clone(),
            port,
            child: None,
        };
        let (hosts, vms, port) = (hosts.to_string(), vms.to_string(), port.to_string());
        let mut args = vec![
            "--hosts",
            &hosts,
            "--vms",
            &vms,
            "--subnet",
            &subnet,
            "--port",
            &port,
            "--password",
            PASSWORD,
        ];
        args.extend_from_slice(options);
        lab.spawn(&args);
        lab
    }

    /// Start a lab with HA on at [`HA_T`] seconds, with more options.
    pub fn start_ha(hosts: usize, vms: usize, options: &[&str]) -> Lab {
        let t = HA_T.to_string();
        let mut args = vec!["--ha", "--ha-timeout", &t];
        args.extend_from_slice(options);
        Lab::start_with(hosts, vms, &args)
    }

    /// Start a lab with HA on at [`HA_T`] seconds whose hosts live in
    /// network namespaces behind a bridge (`--netns`, on a random private
    /// /24); check [`netns_unusable`] first.
    #[allow(dead_code)] // used by tests/netns
    pub fn start_netns(hosts: usize, vms: usize) -> Lab {
        let subnet = format!(
            "10.{}.{}",
            rand::random_range(200..=254u8),
            rand::random_range(0..=255u8)
        );
        let t = HA_T.to_string();
        Lab::start_on(hosts, vms, &subnet, &["--netns", "--ha", "--ha-timeout", &t])
    }

    /// Run `xapid lab ARGS... --dir DIR`; its output.
    fn lab_command(&self, args: &[&str]) -> Output {
        Command::new(xapid_bin())
            .arg("lab")
            .args(args)
            .arg("--dir")
            .arg(self.dir.path())
            .output()
            .expect("run xapid lab")
    }

    /// Run `xapid lab ARGS... --dir DIR`, which must succeed.
    fn lab_ok(&self, args: &[&str]) {
        let out = self.lab_command(args);
        assert!(
            out.status.success(),
            "xapid lab {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `xapid lab block|unblock FROM TO --dir DIR`: a one-way cut.
    #[allow(dead_code)] // used by tests/netns
    pub fn link(&self, action: &str, from: &str, to: &str) {
        self.lab_ok(&[action, from, to]);
    }

    /// `xapid lab check --dir DIR` must find nothing.
    pub fn check(&self) -> String {
        let out = self.lab_command(&["check"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "the checker found a violation:\n{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    }

    /// One JSON-RPC call to host `i`, over plain HTTP (the API port serves
    /// both): the whole answer.
    pub fn call(&self, i: usize, method: &str, params: serde_json::Value) -> serde_json::Value {
        use std::io::{Read, Write};
        let body = serde_json::json!({"jsonrpc": "2.0", "method": method, "params": params, "id": 1}).to_string();
        let mut s = std::net::TcpStream::connect((self.host_address(i).as_str(), self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        write!(
            s,
            "POST /jsonrpc HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let (_, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
        serde_json::from_str(body).expect("a JSON-RPC answer")
    }

    /// Run `xapid lab ACTION HOST --dir DIR` (power-off, cut-network...).
    pub fn fault(&self, action: &str, host: &str) {
        self.lab_ok(&[action, host]);
    }

    /// `xapid lab guest-halt VM --dir DIR`.
    pub fn fault_guest_halt(&self, vm: &str) {
        self.fault("guest-halt", vm);
    }

    /// The trimmed `--minimal` output of a command through the first host
    /// that answers it (the lab's master may be down).
    pub fn xe_any_min(&self, args: &[&str]) -> Option<String> {
        let mut a = args.to_vec();
        a.push("--minimal");
        let hosts = std::fs::read_dir(self.dir.path().join("hosts")).map_or(0, |d| d.count());
        (1..=hosts).find_map(|i| {
            let r = self.xe_on(i, &a);
            (r.code == 0).then(|| r.stdout.trim_end().to_string())
        })
    }

    /// What `xapid lab status` prints for this lab (it must succeed).
    pub fn status(&self) -> String {
        let out = Command::new(xapid_bin())
            .args(["lab", "status", "--dir"])
            .arg(self.dir.path())
            .output()
            .expect("xapid lab status");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "xapid lab status failed: {text}");
        text
    }

    /// What the lab printed (boots and crashes of hosts).
    pub fn output(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("lab.out")).unwrap_or_default()
    }

    /// What a failed test prints: the lab's own output and the last lines
    /// of every host's log, so that a failure on a machine nobody can log
    /// into can still be read.
    pub fn post_mortem(&self) -> String {
        const TAIL: usize = 60;
        let mut out = format!("---- lab.out ----\n{}", self.output());
        let mut hosts: Vec<_> = std::fs::read_dir(self.dir.path().join("hosts"))
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        hosts.sort();
        for host in hosts {
            let log = std::fs::read_to_string(host.join("xapid.log")).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(TAIL)..].join("\n");
            out += &format!("\n---- {} (last {TAIL} lines) ----\n{tail}\n", host.display());
        }
        out
    }

    /// How many times host `name` went down (fenced or crashed).
    pub fn downs(&self, name: &str) -> usize {
        self.output().matches(&format!("{name} went down")).count()
    }

    /// Wait (up to [`FAILOVER`]) until host `name` has gone down at least
    /// once; the lab's output otherwise.
    pub fn wait_fenced(&self, name: &str) {
        assert!(
            wait_for(FAILOVER, || self.downs(name) >= 1),
            "{name} did not fence:\n{}",
            self.output()
        );
    }

    /// Run xe against host `i` itself (not following the lab's master).
    pub fn xe_on(&self, i: usize, args: &[&str]) -> Run {
        let extra = format!(
            "server={},port={},username=root,password={PASSWORD}",
            self.host_address(i),
            self.port
        );
        run_xe(args, &[("XE_EXTRA_ARGS", &extra)], self.dir.path())
    }

    /// Start (or restart) the lab process on this directory.
    fn spawn(&mut self, extra: &[&str]) {
        let out = self.dir.path().join("lab.out");
        let log = std::fs::File::create(&out).expect("lab.out");
        let child = Command::new(xapid_bin())
            .args(["lab", "--dir"])
            .arg(self.dir.path())
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start xapid lab");
        self.child = Some(child);
        let start = Instant::now();
        loop {
            let text = std::fs::read_to_string(&out).unwrap_or_default();
            if text.contains("The lab pool is up") {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("the lab exited ({status}):\n{text}");
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the lab did not come up:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stop every host cleanly.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(30);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start the stopped lab again on the same directory.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn(&[]);
    }

    pub fn master(&self) -> String {
        self.host_address(1)
    }

    pub fn host_address(&self, i: usize) -> String {
        format!("{}.{i}", self.subnet)
    }

    pub fn host_data_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join("hosts").join(format!("host{i}"))
    }

    pub fn sr_dir(&self) -> PathBuf {
        self.dir.path().join("sr")
    }

    /// The pid of host `i` from `lab.json`.
    pub fn host_pid(&self, i: usize) -> u32 {
        self.host_pid_now(i).expect("pid")
    }

    /// The pid of host `i` from `lab.json`, `None` while it is down.
    pub fn host_pid_now(&self, i: usize) -> Option<u32> {
        let text = std::fs::read_to_string(self.dir.path().join("lab.json")).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        v["hosts"][i - 1]["pid"].as_u64().map(|p| p as u32)
    }

    /// The `XE_EXTRA_ARGS` the lab wrote to `DIR/env`.
    pub fn extra_args(&self) -> String {
        let env = std::fs::read_to_string(self.dir.path().join("env")).expect("DIR/env");
        env.trim()
            .strip_prefix("XE_EXTRA_ARGS=")
            .expect("one XE_EXTRA_ARGS line")
            .to_string()
    }

    /// Run xe the way the README says: with the lab's `XE_EXTRA_ARGS`.
    pub fn xe(&self, args: &[&str]) -> Run {
        run_xe(args, &[("XE_EXTRA_ARGS", &self.extra_args())], self.dir.path())
    }

    /// The trimmed `--minimal` output of a command that must succeed.
    pub fn xe_min(&self, args: &[&str]) -> String {
        let mut a = args.to_vec();
        a.push("--minimal");
        let r = self.xe(&a);
        assert_eq!(r.code, 0, "xe {args:?} failed: {}", r.stderr);
        r.stdout.trim_end().to_string()
    }

    /// Run xe and require success; its stdout.
    pub fn xe_ok(&self, args: &[&str]) -> String {
        let r = self.xe(args);
        assert_eq!(r.code, 0, "xe {args:?} failed: {}", r.stderr);
        assert!(
            r.stderr.is_empty(),
            "a successful xe writes nothing to stderr: {}",
            r.stderr
        );
        r.stdout
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("{}", self.post_mortem());
        }
        if std::thread::panicking() && std::env::var_os("KEEP_FAILED_LABS").is_some() {
            let kept = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir")).keep();
            eprintln!("the failed test's lab is kept in {}", kept.display());
        }
    }
}
