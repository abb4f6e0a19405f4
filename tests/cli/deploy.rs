//! `docs/deploy.md`, run as written (issue 21): every `xe` and `xapid`
//! command of the page, in order, in one shell state, against three
//! `xapid serve` hosts started here from the page's settings, on loopback
//! addresses and the real API port 443 (so as root only; skipped with the
//! reason otherwise). Each host runs the packaged unit's command line
//! (`dist/xapid.service`'s `ExecStart` with `dist/xapid.default`'s
//! arguments), this build's xapid standing for `/usr/sbin/xapid`.
//!
//! The page's blocks are of three kinds: `sh` blocks, run by bash with the
//! variables the earlier blocks set; a `toml` block, the settings every
//! host is started with (`POOL_HA_*` variables give each host its address,
//! name, data directory and the sim driver: they beat the file, as the
//! page says); and `sh` blocks whose first line is `# system: …`, the
//! machine's part, which the test does its own way ([`system`]). The
//! example addresses block is replaced by the test's own values.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{xapid_bin, xe_bin};

const PAGE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/deploy.md");
const UNIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/dist/xapid.service");
const DEFAULTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/dist/xapid.default");

/// The packaged unit's command line: `ExecStart=` of `unit` (the
/// `xapid.service` file) with `$XAPID_ARGS` from `defaults` (the
/// `/etc/default/xapid` file), split on white space as systemd splits an
/// unbraced `$VAR`; the program first.
pub(crate) fn unit_command_line(unit: &Path, defaults: &Path) -> Vec<String> {
    let unit = std::fs::read_to_string(unit).unwrap();
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("the unit has an ExecStart");
    let defaults = std::fs::read_to_string(defaults).unwrap();
    let xapid_args = defaults
        .lines()
        .find_map(|l| l.strip_prefix("XAPID_ARGS="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_default();
    let words: Vec<String> = exec
        .split_whitespace()
        .flat_map(|w| match w {
            "$XAPID_ARGS" => xapid_args.split_whitespace().map(str::to_string).collect(),
            w => vec![w.to_string()],
        })
        .collect();
    assert_eq!(words.first().map(String::as_str), Some("/usr/sbin/xapid"), "{exec}");
    words
}
const PASSWORD: &str = "deploy-guide-password";

/// One fenced block of the page.
#[derive(Debug)]
struct Block {
    lang: String,
    text: String,
}

fn blocks(page: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut cur: Option<Block> = None;
    for line in page.lines() {
        if let Some(rest) = line.strip_prefix("```") {
            match cur.take() {
                Some(b) => out.push(b),
                None => {
                    cur = Some(Block {
                        lang: rest.trim().to_string(),
                        text: String::new(),
                    })
                }
            }
        } else if let Some(b) = &mut cur {
            b.text.push_str(line);
            b.text.push('\n');
        }
    }
    out
}

/// The names the page's shell blocks assign (`NAME=` or `export NAME=` at
/// the start of a line), carried from block to block.
fn assigned(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim_start().strip_prefix("export ").unwrap_or(l.trim_start());
            let name: String = l
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            (!name.is_empty() && l[name.len()..].starts_with('=') && name.chars().all(|c| !c.is_ascii_lowercase()))
                .then_some(name)
        })
        .collect()
}

struct Host {
    name: String,
    address: String,
    data_dir: PathBuf,
    child: Option<Child>,
}

struct Site {
    dir: tempfile::TempDir,
    hosts: Vec<Host>,
    settings: Option<PathBuf>,
}

impl Site {
    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    fn password_file(&self) -> PathBuf {
        self.dir.path().join("root-password")
    }

    fn sr_path(&self) -> PathBuf {
        self.dir.path().join("pool-sr")
    }

    fn start(&mut self, i: usize) {
        let settings = self
            .settings
            .clone()
            .expect("the page shows the settings before the start");
        let password = self.password_file();
        let h = &mut self.hosts[i];
        let log = std::fs::File::create(h.data_dir.with_extension("log")).unwrap();
        // The packaged unit's command line, with this build's xapid for
        // /usr/sbin/xapid (package.rs installs the package itself).
        let line = unit_command_line(Path::new(UNIT), Path::new(DEFAULTS));
        let mut cmd = Command::new(xapid_bin());
        cmd.args(&line[1..]);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("POOL_HA_") {
                cmd.env_remove(&key);
            }
        }
        let child = cmd
            .env("POOL_HA_CONFIG", &settings)
            .env("POOL_HA_DATA_DIR", &h.data_dir)
            .env("POOL_HA_ADDRESS", &h.address)
            .env("POOL_HA_NAME", &h.name)
            .env("POOL_HA_ROOT_PASSWORD_FILE", &password)
            .env("POOL_HA_DRIVER", "sim")
            .env("POOL_HA_MEMORY", (16u64 << 30).to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        h.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect((h.address.as_str(), 443)).is_err() {
            assert!(Instant::now() < deadline, "{} did not come up", h.name);
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn stop(&mut self, i: usize, signal: nix::sys::signal::Signal) {
        if let Some(mut child) = self.hosts[i].child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, signal);
            let deadline = Instant::now() + Duration::from_secs(60);
            while child.try_wait().ok().flatten().is_none() {
                assert!(Instant::now() < deadline, "{} did not stop", self.hosts[i].name);
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// What the page's `# system: …` block `what` asks of the machine.
    fn system(&mut self, what: &str) {
        use nix::sys::signal::Signal;
        let server = |what: &str| -> usize {
            let n: usize = what
                .split("server")
                .nth(1)
                .and_then(|s| s.chars().next())
                .and_then(|c| c.to_digit(10))
                .unwrap_or_else(|| panic!("which server: {what}")) as usize;
            n - 1
        };
        match what {
            // tests/cli/package.rs installs the packages with dpkg.
            w if w.starts_with("install the packages") => {}
            w if w.starts_with("mount the share and write the settings") => {
                std::fs::create_dir_all(self.sr_path()).unwrap();
                std::fs::write(self.password_file(), format!("{PASSWORD}\n")).unwrap();
            }
            w if w.starts_with("start xapid on every server") => {
                for i in 0..self.hosts.len() {
                    self.start(i);
                }
            }
            w if w.starts_with("trust the servers' certificates") => {
                let mut text = String::new();
                for h in &self.hosts {
                    let id = pool_master::tls::Identity::load_or_create(&h.data_dir, std::slice::from_ref(&h.address))
                        .unwrap();
                    text.push_str(&format!("{} {}\n", h.address, id.fingerprint()));
                }
                std::fs::write(self.home().join(".xe_known_hosts"), text).unwrap();
            }
            w if w.starts_with("upgrade server") => {
                let i = server(w);
                self.stop(i, Signal::SIGTERM);
                self.start(i);
            }
            w if w.contains("loses power for good") => {
                let i = server(w);
                self.stop(i, Signal::SIGKILL);
            }
            other => panic!("docs/deploy.md asks the machine for something the test does not know: {other}"),
        }
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        for i in 0..self.hosts.len() {
            self.stop(i, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

#[test]
fn the_deployment_guide_runs_as_written() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: the guide's hosts listen on port 443, which needs root");
        return;
    }
    let page = std::fs::read_to_string(PAGE).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let hosts = (1..=3)
        .map(|n| Host {
            name: format!("server{n}"),
            address: format!("127.0.77.{}", 10 + n),
            data_dir: dir.path().join(format!("server{n}")),
            child: None,
        })
        .collect();
    let mut site = Site {
        dir,
        hosts,
        settings: None,
    };
    std::fs::create_dir_all(site.home()).unwrap();
    let state = site.dir.path().join("state.sh");
    let bin_dir = xe_bin().parent().map(Path::to_path_buf).unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());

    let mut names = BTreeSet::new();
    let mut ran = 0;
    for block in blocks(&page) {
        let first = block.text.lines().next().unwrap_or_default();
        match block.lang.as_str() {
            "toml" => {
                let file = site.dir.path().join("xapid.toml");
                std::fs::write(&file, &block.text).unwrap();
                site.settings = Some(file);
            }
            "sh" if first.starts_with("# example values") => {
                // The test's own values, for the same names.
                let ours = format!(
                    "SERVER1={}\nSERVER2={}\nSERVER3={}\nROOT_PASSWORD='{PASSWORD}'\nSR_PATH={}\n",
                    site.hosts[0].address,
                    site.hosts[1].address,
                    site.hosts[2].address,
                    site.sr_path().display()
                );
                assert_eq!(assigned(&block.text), assigned(&ours), "the example values block names");
                std::fs::write(&state, &ours).unwrap();
                names.extend(assigned(&ours));
            }
            "sh" if first.starts_with("# system: ") => {
                site.system(first.trim_start_matches("# system: ").trim());
            }
            "sh" => {
                names.extend(assigned(&block.text));
                let vars: Vec<&str> = names.iter().map(String::as_str).collect();
                let script = format!(
                    "set -euo pipefail\nsource {state}\n{}\ndeclare -p {} > {state}.new 2>/dev/null || true\n",
                    block.text,
                    vars.join(" "),
                    state = state.display()
                );
                let h = &site.hosts[0];
                let out = Command::new("bash")
                    .arg("-c")
                    .arg(&script)
                    .env("PATH", &path)
                    .env("HOME", site.home())
                    .env_remove("XE_EXTRA_ARGS")
                    // `xapid serve --check-config` checks server 1's settings.
                    .env("POOL_HA_CONFIG", site.settings.as_ref().unwrap())
                    .env("POOL_HA_DATA_DIR", &h.data_dir)
                    .env("POOL_HA_ADDRESS", &h.address)
                    .env("POOL_HA_NAME", &h.name)
                    .env("POOL_HA_ROOT_PASSWORD_FILE", site.password_file())
                    .env("POOL_HA_DRIVER", "sim")
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "docs/deploy.md block failed:\n{}\nstdout:\n{}\nstderr:\n{}",
                    block.text,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                // declare -p prints `declare -x NAME="…"`: sourced back as is.
                let next = std::fs::read_to_string(state.with_extension("sh.new")).unwrap_or_default();
                let mut carried = std::fs::read_to_string(&state).unwrap_or_default();
                carried.push_str(&next);
                std::fs::write(&state, carried).unwrap();
                ran += 1;
            }
            other => panic!("docs/deploy.md has a block of an unknown kind: {other:?}"),
        }
    }
    assert!(ran >= 8, "only {ran} blocks ran");

    // Where the page leaves the pool: server 1, master of a pool of one
    // with HA on again (servers 3 and 2 forgotten), and the VM runs there.
    let xe = |args: &[&str]| {
        let out = Command::new(xe_bin())
            .args(args)
            .args(["-s", &site.hosts[0].address, "-u", "root", "-pw", PASSWORD])
            .env("HOME", site.home())
            .env_remove("XE_EXTRA_ARGS")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "xe {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let mut hosts: Vec<String> = xe(&["host-list", "params=name-label", "--minimal"])
        .split(',')
        .map(str::to_string)
        .collect();
    hosts.sort();
    assert_eq!(hosts, ["server1"]);
    let pool = xe(&["pool-list", "--minimal"]);
    let master = xe(&["pool-param-get", &format!("uuid={pool}"), "param-name=master"]);
    assert_eq!(master, xe(&["host-list", "name-label=server1", "--minimal"]));
    assert_eq!(
        xe(&["pool-param-get", &format!("uuid={pool}"), "param-name=ha-enabled"]),
        "true"
    );
    assert_eq!(
        xe(&["vm-list", "name-label=web01", "params=ha-restart-priority", "--minimal"]),
        "restart"
    );
    assert_eq!(
        xe(&["vm-list", "name-label=web01", "params=power-state", "--minimal"]),
        "running"
    );
}
