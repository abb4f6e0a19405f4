//! Shell completion in real shells: bash, zsh and fish run interactively in
//! tmux, load the script the README's one line loads, and complete
//! `xe vm-sta<TAB> v<TAB> w<TAB>` to a VM's real name from a lab pool,
//! and complete right after a `=` or `:` without doubling it.
//! A shell (or tmux) that is not installed is skipped with a printed
//! reason; `.ci/run` installs them.

use crate::util::{installed, Lab, Session};

#[test]
fn bash_zsh_and_fish_complete_live_vm_names() {
    if !installed("tmux") {
        eprintln!("skipped: tmux is not installed (.ci/run installs it)");
        return;
    }
    let lab = Lab::start(2, 2);
    let vm02 = lab.xe_min(&["vm-list", "name-label=vm02", "params=uuid"]);
    lab.xe_ok(&["vm-param-set", &format!("uuid={vm02}"), "name-label=web-server"]);
    let pool = lab.xe_min(&["pool-list"]);
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
        s.new_line();
        // Parameter names of another command, and a map parameter.
        s.tab("xe pool-ha-enable ha-c", "xe pool-ha-enable ha-config:");
        s.new_line();
        // Right after the '=' or ':' where bash splits words, nothing is
        // doubled (`vm=<TAB>` once gave `vm==`, `ha-config:<TAB>`
        // `ha-config::`): a unique value, a map's key, and two values
        // with nothing in common (the line stays as typed).
        let typed_then = |typed: &str, tabs: usize, expect: &str| {
            s.keys(&["-l", typed]);
            for _ in 0..tabs {
                s.keys(&["Tab"]);
            }
            s.keys(&["-l", "#"]);
            assert!(
                s.wait_for(&format!("{expect}#")),
                "{}: {typed:?} and TAB gave:\n{}",
                shell[0],
                s.screen()
            );
            s.new_line();
        };
        typed_then(
            "xe pool-param-list uuid=",
            1,
            &format!("xe pool-param-list uuid={pool} "),
        );
        typed_then(
            "xe pool-ha-enable ha-config:",
            1,
            "xe pool-ha-enable ha-config:timeout=",
        );
        typed_then("xe vm-start vm=", 1, "xe vm-start vm=");
        tried += 1;
    }
    eprintln!("completion checked in {tried} shells");
}
