//! What this machine offers the tests: network namespaces, programs,
//! and interactive shells in tmux.

use std::process::Command;
use std::time::{Duration, Instant};

use super::xe_bin;

/// Why this machine cannot run a `--netns` lab, if it cannot: not root,
/// no iproute2 or nftables, or namespaces refused (a container).
#[allow(dead_code)] // used by tests/netns
pub fn netns_unusable() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("network namespaces need root".into());
    }
    for tool in ["ip", "nft"] {
        if !installed(tool) {
            return Some(format!("{tool} is not installed (iproute2, nftables)"));
        }
    }
    let probe = format!("pha-probe-{}", std::process::id());
    let made = Command::new("ip").args(["netns", "add", &probe]).output();
    let _ = Command::new("ip").args(["netns", "del", &probe]).output();
    match made {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "cannot create a network namespace: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Some(format!("cannot run ip: {e}")),
    }
}

/// Whether `program` is on PATH.
pub fn installed(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// An interactive shell in a detached tmux session, killed on drop.
pub struct Session {
    name: String,
}

impl Session {
    pub fn start(shell: &[&str], home: &std::path::Path, extra_args: &str) -> Session {
        // Unique per session: tests of one process run side by side.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let name = format!("xe-complete-{}-{}-{n}", shell[0], std::process::id());
        let path = format!(
            "{}:{}",
            xe_bin().parent().unwrap().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        // The environment goes through env(1): tmux keeps its own PATH.
        let status = Command::new("tmux")
            .args(["new-session", "-d", "-s", &name, "-x", "200", "-y", "50", "env"])
            .arg(format!("PATH={path}"))
            .arg(format!("HOME={}", home.display()))
            .arg(format!("XE_EXTRA_ARGS={extra_args}"))
            .arg("PS1=$ ")
            .args(shell)
            .status()
            .unwrap();
        assert!(status.success(), "tmux new-session");
        Session { name }
    }

    pub fn keys(&self, keys: &[&str]) {
        let status = Command::new("tmux")
            .args(["send-keys", "-t", &self.name])
            .args(keys)
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Copy everything the pane shows from now on into `file` (tmux
    /// `pipe-pane`): what was drawn and overwritten between two looks at
    /// the screen is kept, however loaded the machine.
    #[allow(dead_code)] // used by terminal.rs, not by every test binary
    pub fn record_to(&self, file: &std::path::Path) {
        let status = Command::new("tmux")
            .args(["pipe-pane", "-o", "-t", &self.name])
            .arg(format!("cat >> '{}'", file.display()))
            .status()
            .unwrap();
        assert!(status.success(), "tmux pipe-pane");
    }

    pub fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.name])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Wait (at most 15 s) until the screen shows `text`.
    pub fn wait_for(&self, text: &str) -> bool {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(15) {
            if self.screen().contains(text) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// Abandon the line being typed (C-c) and wait until the shell shows a
    /// fresh prompt: keys typed before it is drawn may reach the old line
    /// (zsh, on a loaded machine).
    #[allow(dead_code)] // used by completion.rs, not by every test binary
    pub fn new_line(&self) {
        self.keys(&["C-c"]);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(15) {
            // A prompt with nothing typed: `$` (PS1 of bash and zsh) or
            // fish's own, ending in `#` or `>`.
            let screen = self.screen();
            let last = screen
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim_end();
            if !last.contains("xe ") && (last.ends_with('$') || last.ends_with('#') || last.ends_with('>')) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("no fresh prompt after C-c:\n{}", self.screen());
    }

    /// Type `typed`, then TAB, and wait until the screen shows `expect`.
    pub fn tab(&self, typed: &str, expect: &str) {
        if !typed.is_empty() {
            self.keys(&["-l", typed]);
        }
        self.keys(&["Tab"]);
        assert!(
            self.wait_for(expect),
            "after typing {typed:?} and TAB, the screen does not show {expect:?}:\n{}",
            self.screen()
        );
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = Command::new("tmux").args(["kill-session", "-t", &self.name]).status();
    }
}

/// A free TCP port on loopback (closed again at once: the server that is
/// given it binds it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on loopback")
}
