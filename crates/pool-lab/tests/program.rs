//! The `xapid-lab` program itself: what it says when there is no lab, and
//! that its help names the way users run it (`xapid lab`).

use std::process::Command;

fn lab() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_xapid-lab"));
    c.env_remove("RUST_BACKTRACE");
    c
}

#[test]
fn a_directory_without_a_lab_is_named_and_nothing_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    for args in [&["check"][..], &["status"], &["power-off", "host2"]] {
        let out = lab().args(args).arg("--dir").arg(dir.path()).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("no lab in"), "{args:?}: {err}");
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing was written");
}

#[test]
fn its_help_is_the_xapid_lab_command() {
    let out = lab().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Usage: xapid lab [OPTIONS]"), "{text}");
    for command in ["status", "power-off", "chaos", "check"] {
        assert!(text.contains(command), "{command} missing from:\n{text}");
    }
}
