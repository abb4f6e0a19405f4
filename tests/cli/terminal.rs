//! xe on a real terminal (bash in tmux): the evacuation progress bar, and
//! the question before an HA-protected VM is shut down. Skipped with a
//! printed reason where tmux is not installed; `.ci/run` installs it.

use crate::util::{installed, Lab, Session};

#[test]
fn evacuate_draws_progress_and_a_protected_shutdown_asks_first() {
    if !installed("tmux") {
        eprintln!("skipped: tmux is not installed (.ci/run installs it)");
        return;
    }
    let lab = Lab::start_ha(3, 4, &[]);
    for vm in ["vm01", "vm02", "vm03", "vm04"] {
        lab.xe_ok(&["vm-start", &format!("vm={vm}"), "on=host2"]);
    }
    let vm01 = lab.xe_min(&["vm-list", "name-label=vm01", "params=uuid"]);
    lab.xe_ok(&["vm-param-set", &format!("uuid={vm01}"), "ha-restart-priority=restart"]);
    let home = tempfile::tempdir().unwrap();
    let s = Session::start(&["bash", "--norc", "--noprofile", "-i"], home.path(), &lab.extra_args());

    // The bar is drawn while the VMs move, then cleared. Everything the
    // terminal was sent is recorded: the bar may be gone before any look
    // at the screen on a loaded machine.
    let drawn = home.path().join("terminal.log");
    s.record_to(&drawn);
    s.keys(&[
        "-l",
        "xe host-disable host=host2 && xe host-evacuate host=host2; echo evacuated-$?",
    ]);
    s.keys(&["Enter"]);
    let start = std::time::Instant::now();
    while start.elapsed() < std::time::Duration::from_secs(60) && !s.screen().contains("\nevacuated-") {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let screen = s.screen();
    assert!(screen.contains("\nevacuated-0"), "{screen}");
    let sent = std::fs::read_to_string(&drawn).unwrap_or_default();
    assert!(
        sent.contains("Evacuating host2: VMs moved ["),
        "no progress bar was drawn:\n{sent}"
    );
    assert!(
        !screen.contains("VMs moved ["),
        "the bar is cleared at the end:\n{screen}"
    );
    let host2 = lab.xe_min(&["host-list", "name-label=host2", "params=uuid"]);
    assert_eq!(lab.xe_min(&["vm-list", &format!("resident-on={host2}")]), "");

    // Rebooting the host of a protected VM: xe asks on a terminal, and
    // "no" keeps the host up and the VM running.
    let state = || lab.xe_min(&["vm-list", "name-label=vm01", "params=power-state"]);
    // (On host3: rebooting the master would leave the pool without one.)
    let host3 = lab.xe_min(&["host-list", "name-label=host3", "params=uuid"]);
    if lab.xe_min(&["vm-list", "name-label=vm01", "params=resident-on"]) != host3 {
        lab.xe_ok(&["vm-migrate", "vm=vm01", "host=host3"]);
    }
    lab.xe_ok(&["host-disable", "host=host3"]);
    s.keys(&["-l", "clear; xe host-reboot host=host3; echo reboot-$?"]);
    s.keys(&["Enter"]);
    assert!(s.wait_for("runs VMs protected by HA: vm01"), "{}", s.screen());
    s.keys(&["-l", "no"]);
    s.keys(&["Enter"]);
    assert!(s.wait_for("reboot-1"), "{}", s.screen());
    assert_eq!(state(), "running");
    // A script is not asked, as with XAPI's xe; the pool says what
    // happened to the protected VM.
    lab.xe_ok(&["host-reboot", "host=host3"]);
    assert_eq!(state(), "halted");
    let shutdown_msgs = lab.xe_min(&[
        "message-list",
        "name=VM_SHUTDOWN",
        &format!("obj-uuid={vm01}"),
        "params=body",
    ]);
    assert!(shutdown_msgs.contains("protected by HA"), "{shutdown_msgs}");
    lab.xe_ok(&["vm-start", "vm=vm01", "on=host1"]);

    // A protected VM: xe asks; anything but "yes" keeps it running.
    s.keys(&["-l", "clear; xe vm-shutdown vm=vm01; echo shutdown-$?"]);
    s.keys(&["Enter"]);
    assert!(s.wait_for("Type 'yes' to continue"), "{}", s.screen());
    s.keys(&["-l", "no"]);
    s.keys(&["Enter"]);
    assert!(s.wait_for("shutdown-1"), "{}", s.screen());
    assert_eq!(state(), "running");
    s.keys(&["-l", "clear; xe vm-shutdown vm=vm01; echo shutdown-$?"]);
    s.keys(&["Enter"]);
    assert!(s.wait_for("Type 'yes' to continue"), "{}", s.screen());
    s.keys(&["-l", "yes"]);
    s.keys(&["Enter"]);
    assert!(s.wait_for("shutdown-0"), "{}", s.screen());
    assert_eq!(state(), "halted");
}
