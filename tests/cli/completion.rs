//! Shell completion in real shells: bash, zsh and fish run interactively in
//! tmux, load the script the README's one line loads, and complete
//! `xe vm-sta<TAB> v<TAB> w<TAB>` to a VM's real name from a lab pool.
//! A shell (or tmux) that is not installed is skipped with a printed
//! reason; `.ci/run` installs them.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::util::{xe_bin, Lab};

fn installed(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// An interactive shell in a detached tmux session, killed on drop.
struct Session {
    name: String,
}

impl Session {
    fn start(shell: &[&str], home: &std::path::Path, extra_args: &str) -> Session {
        let name = format!("xe-complete-{}-{}", shell[0], std::process::id());
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

    fn keys(&self, keys: &[&str]) {
        let status = Command::new("tmux")
            .args(["send-keys", "-t", &self.name])
            .args(keys)
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.name])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Wait (at most 15 s) until the screen shows `text`.
    fn wait_for(&self, text: &str) -> bool {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(15) {
            if self.screen().contains(text) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// Type `typed`, then TAB, and wait until the screen shows `expect`.
    fn tab(&self, typed: &str, expect: &str) {
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

#[test]
fn bash_zsh_and_fish_complete_live_vm_names() {
    if !installed("tmux") {
        eprintln!("skipped: tmux is not installed (.ci/run installs it)");
        return;
    }
    let lab = Lab::start(2, 2);
    let vm02 = lab.xe_min(&["vm-list", "name-label=vm02", "params=uuid"]);
    lab.xe_ok(&["vm-param-set", &format!("uuid={vm02}"), "name-label=web-server"]);
    let shells: &[(&[&str], &str)] = &[
        (
            &["bash", "--norc", "--noprofile", "-i"],
            "source <(xe --completions bash)",
        ),
        (
            &["zsh", "-f", "-i"],
            "autoload -Uz compinit && compinit -u; source <(xe --completions zsh)",
        ),
        (&["fish", "--no-config", "-i"], "xe --completions fish | source"),
    ];
    let mut tried = 0;
    for (shell, install) in shells {
        if !installed(shell[0]) {
            eprintln!("skipped {}: not installed (.ci/run installs it)", shell[0]);
            continue;
        }
        let home = tempfile::tempdir().unwrap();
        let s = Session::start(shell, home.path(), &lab.extra_args());
        s.keys(&["-l", install]);
        s.keys(&["Enter"]);
        s.keys(&["-l", "echo loaded"]);
        s.keys(&["Enter"]);
        assert!(s.wait_for("\nloaded"), "{}: {}", shell[0], s.screen());
        // (tmux trims trailing blanks: the next word typed shows the space.)
        s.tab("xe vm-sta", "xe vm-start");
        s.tab("v", "xe vm-start vm=");
        // A live value: bash splits the word at '=', the script puts it back.
        s.tab("w", "xe vm-start vm=web-server");
        s.keys(&["-l", "#"]);
        assert!(
            s.wait_for("xe vm-start vm=web-server #"),
            "{}: {}",
            shell[0],
            s.screen()
        );
        s.keys(&["C-c"]);
        // Parameter names of another command, and a map parameter.
        s.tab("xe pool-ha-enable ha-c", "xe pool-ha-enable ha-config:");
        s.keys(&["C-c"]);
        tried += 1;
    }
    eprintln!("completion checked in {tried} shells");
}
