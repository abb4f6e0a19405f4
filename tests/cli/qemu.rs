//! Real VMs: the qemu driver in a lab pool, with the test guest that
//! guest/build.sh builds from Debian's packages. Protected real guests
//! fail over when their host loses power or its xapid freezes, never two
//! writers on a disk, and `xe vm-migrate` moves a guest live.
//! Skipped, with the reason, where QEMU or the guest's packages are missing.

use std::time::Duration;

use crate::util::{
    assert_one_writer_at_a_time, host_field, records_of, running_on, vm_uuid, wait_for, Lab, FAILOVER, HA_T as T,
};

/// Why this machine cannot run QEMU test guests, if it cannot.
pub fn qemu_unusable() -> Option<String> {
    let qemu = std::process::Command::new("qemu-system-x86_64")
        .arg("--version")
        .output();
    if !qemu.is_ok_and(|o| o.status.success()) {
        return Some("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)".into());
    }
    let out = tempfile::tempdir().expect("tempdir");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("guest/build.sh");
    match std::process::Command::new("sh").arg(script).arg(out.path()).output() {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "guest/build.sh failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Some(format!("cannot run guest/build.sh: {e}")),
    }
}

/// One real-VM lab at a time: TCG guests take whole cores, and two such
/// labs beside the other lab tests starve the hosts' HA loops on a 2-core
/// machine (a host whose loop misses its watchdog deadline fences, as it
/// must).
static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A lab holding the real-VM turn until it is dropped (the lab first).
struct QemuLab {
    lab: Lab,
    _turn: std::sync::MutexGuard<'static, ()>,
}

impl std::ops::Deref for QemuLab {
    type Target = Lab;
    fn deref(&self) -> &Lab {
        &self.lab
    }
}

/// A lab of `hosts` hosts and `vms` VMs run by QEMU test guests of
/// 128 MiB (HA on at T when `ha`); `None`, with the reason printed, where
/// this machine cannot run them.
fn qemu_lab(hosts: usize, vms: usize, ha: bool) -> Option<QemuLab> {
    if let Some(why) = qemu_unusable() {
        eprintln!("skipped: {why}");
        return None;
    }
    let turn = TURN.lock().unwrap_or_else(|p| p.into_inner());
    let memory = (128i64 << 20).to_string();
    let options = ["--driver", "qemu", "--vm-memory", &memory];
    let lab = if ha {
        Lab::start_ha(hosts, vms, &options)
    } else {
        Lab::start_with(hosts, vms, &options)
    };
    Some(QemuLab { lab, _turn: turn })
}

/// The pids of the QEMU guests a lab host started that still run.
fn guest_processes(lab: &Lab, host: &str) -> Vec<i32> {
    pool_master::driver::qemu::running_guests_in(&lab.dir.path().join("hosts").join(host).join("qemu"))
}

/// Wait (up to 2 minutes: TCG boots slowly on a loaded machine) until
/// `vm`'s guest on the host `host_uuid` has written `n` records.
fn booted_on(lab: &Lab, vm: &str, host_uuid: &str, n: usize) -> bool {
    wait_for(Duration::from_secs(120), || {
        records_of(&lab.sr_dir(), vm)
            .iter()
            .filter(|r| r.host_uuid == host_uuid)
            .count()
            >= n
    })
}

/// Wait (up to 2 minutes) until the guest restarted on `new_host` writes a
/// record after `since_ms`, then check that the old guest on `old_host`
/// wrote its last record before the new one's first: one writer.
fn new_guest_took_over(lab: &Lab, vm: &str, old_host: &str, new_host: &str, since_ms: u64, what: &str) {
    let first_new = || {
        records_of(&lab.sr_dir(), vm)
            .iter()
            .filter(|r| r.host_uuid == new_host && r.unix_ms > since_ms)
            .map(|r| r.unix_ms)
            .min()
    };
    let writes = wait_for(Duration::from_secs(120), || first_new().is_some());
    assert!(writes, "{what}: the restarted guest wrote nothing:\n{}", lab.output());
    let last_old = records_of(&lab.sr_dir(), vm)
        .iter()
        .filter(|r| r.host_uuid == old_host)
        .map(|r| r.unix_ms)
        .max()
        .unwrap_or(0);
    let first_new = first_new().unwrap_or(0);
    assert!(
        last_old < first_new,
        "{what}: the old guest wrote at {last_old}, after the new one began at {first_new}"
    );
}

#[test]
fn the_seeds_cable_pulls_restart_a_real_guest_elsewhere_with_one_writer() {
    let Some(lab) = qemu_lab(3, 1, true) else {
        return;
    };
    let vm = vm_uuid(&lab, "vm01");
    lab.xe_ok(&["vm-param-set", &format!("uuid={vm}"), "ha-restart-priority=restart"]);
    lab.xe_ok(&["vm-start", "vm=vm01", "on=host3"]);
    for (cut, heal) in [
        ("power-off", "power-on"),
        ("cut-storage", "restore-storage"),
        ("cut-network", "restore-network"),
    ] {
        let victim = running_on(&lab, &vm).expect("the VM runs");
        let victim_uuid = host_field(&lab, &victim, "uuid");
        // A real guest boots (TCG here), then writes every 100 ms.
        let booted = wait_for(Duration::from_secs(120), || {
            records_of(&lab.sr_dir(), &vm)
                .iter()
                .rev()
                .take(10)
                .filter(|r| r.host_uuid == victim_uuid)
                .count()
                >= 10
        });
        assert!(booted, "the guest on {victim} wrote no records:\n{}", lab.output());
        assert_eq!(guest_processes(&lab, &victim).len(), 1, "one QEMU process on {victim}");
        let t_fault = pool_master::driver::unix_ms();
        lab.fault(cut, &victim);
        if cut == "power-off" {
            // The power is off: the guest died with its host at once.
            assert!(
                wait_for(Duration::from_secs(2), || guest_processes(&lab, &victim).is_empty()),
                "{victim}'s guest outlived its host"
            );
        }
        let mut after = None;
        let moved = wait_for(FAILOVER, || {
            after = running_on(&lab, &vm).filter(|h| *h != victim);
            after.is_some()
        });
        assert!(
            moved,
            "vm01 did not restart away from {victim} after {cut}:\n{}",
            lab.output()
        );
        assert!(
            guest_processes(&lab, &victim).is_empty(),
            "{victim}'s guest still runs after {cut}, with the VM restarted elsewhere"
        );
        let after = after.expect("the VM runs");
        let new_host = host_field(&lab, &after, "uuid");
        new_guest_took_over(
            &lab,
            &vm,
            &victim_uuid,
            &new_host,
            t_fault,
            &format!("after {cut} on {victim}"),
        );
        assert_one_writer_at_a_time(&lab.sr_dir(), &vm);
        lab.fault(heal, &victim);
        let back = wait_for(FAILOVER, || host_field(&lab, &victim, "host-metrics-live") == "true");
        assert!(back, "{victim} did not rejoin after {heal}:\n{}", lab.output());
        assert_eq!(
            host_field(&lab, &victim, "resident-vms"),
            "",
            "{victim} came back with VMs"
        );
        assert!(
            guest_processes(&lab, &victim).is_empty(),
            "{victim} came back with guest processes"
        );
        assert_one_writer_at_a_time(&lab.sr_dir(), &vm);
    }
    lab.check();
}

/// Protect vm01, start it on `host` and wait until its guest has written
/// ten records: (the VM's uuid, the host's uuid).
fn protected_guest_on(lab: &Lab, host: &str) -> (String, String) {
    let vm = vm_uuid(lab, "vm01");
    lab.xe_ok(&["vm-param-set", &format!("uuid={vm}"), "ha-restart-priority=restart"]);
    lab.xe_ok(&["vm-start", "vm=vm01", &format!("on={host}")]);
    let host_uuid = host_field(lab, host, "uuid");
    let booted = booted_on(lab, &vm, &host_uuid, 10);
    assert!(booted, "the guest on {host} wrote no records:\n{}", lab.output());
    (vm, host_uuid)
}

#[test]
fn a_frozen_xapid_cannot_leave_its_real_guest_writing() {
    let Some(lab) = qemu_lab(3, 1, true) else {
        return;
    };
    let (vm, host3) = protected_guest_on(&lab, "host3");

    // Freeze host3's xapid for 3 T: its guest is a process of its own, and
    // only the fence guard beside xapid can stop it in time.
    let pid = nix::unistd::Pid::from_raw(lab.host_pid(3) as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let mut after = None;
    let moved = wait_for(FAILOVER, || {
        after = running_on(&lab, &vm).filter(|h| h != "host3");
        after.is_some()
    });
    let gone = guest_processes(&lab, "host3").is_empty();
    std::thread::sleep(Duration::from_secs(3 * T).saturating_sub(Duration::from_secs(1)));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    assert!(moved, "vm01 did not restart away from frozen host3:\n{}", lab.output());
    assert!(gone, "host3's guest still ran when the VM restarted elsewhere");
    let new_host = host_field(&lab, &after.expect("the VM runs"), "uuid");
    new_guest_took_over(&lab, &vm, &host3, &new_host, 0, "after host3's freeze");
    assert_one_writer_at_a_time(&lab.sr_dir(), &vm);
    // Woken, host3 finds its watchdog expired, fences, and comes back empty.
    lab.wait_fenced("host3");
    let back = wait_for(FAILOVER, || host_field(&lab, "host3", "host-metrics-live") == "true");
    assert!(back, "host3 did not rejoin:\n{}", lab.output());
    assert_eq!(
        host_field(&lab, "host3", "resident-vms"),
        "",
        "host3 came back with VMs"
    );
    lab.check();
}

/// SIGKILL of an armed host's `xapid`: its fence guard sees the pipe close
/// and kills the guest at once; the VM runs again (wherever the pool puts
/// it: host3 may be back in a new boot by then), and the disk shows one
/// writer: the old guest's last record before the new guest's first.
#[test]
fn a_killed_xapid_cannot_leave_its_real_guest_writing() {
    let Some(lab) = qemu_lab(3, 1, true) else {
        return;
    };
    let (vm, host3) = protected_guest_on(&lab, "host3");
    let old_guest = guest_processes(&lab, "host3");
    assert_eq!(old_guest.len(), 1, "one QEMU process on host3");

    let xapid = nix::unistd::Pid::from_raw(lab.host_pid(3) as i32);
    let killed = pool_master::driver::unix_ms();
    nix::sys::signal::kill(xapid, nix::sys::signal::Signal::SIGKILL).unwrap();
    // The guard acts as soon as the pipe closes: well inside a second.
    let gone = wait_for(Duration::from_secs(2), || {
        let now = guest_processes(&lab, "host3");
        old_guest.iter().all(|p| !now.contains(p))
    });
    assert!(gone, "host3's guest outlived its killed xapid");
    let last_old = records_of(&lab.sr_dir(), &vm)
        .iter()
        .filter(|r| r.host_uuid == host3)
        .map(|r| r.unix_ms)
        .max()
        .unwrap_or(0);
    // The guest died at the kill: nothing of it lands later.
    assert!(
        last_old < killed + 1000,
        "the old guest wrote at {last_old}, {} ms after its xapid was killed",
        last_old.saturating_sub(killed)
    );
    // The VM runs again, in a new guest, writing after the old one.
    let again = wait_for(FAILOVER, || {
        records_of(&lab.sr_dir(), &vm)
            .iter()
            .any(|r| r.unix_ms > last_old + 1000)
    });
    assert!(
        again,
        "vm01 did not run again after host3's xapid was killed:\n{}",
        lab.output()
    );
    assert!(running_on(&lab, &vm).is_some(), "vm01 is not shown running");
    assert_one_writer_at_a_time(&lab.sr_dir(), &vm);
    lab.check();
}

/// The master loses the heartbeat SR under a protected real guest: its
/// fence guard kills the guest a little after the lease's deadline, and
/// the master, which can neither record that nor keep its role without
/// the SR, still fences for the VM the pool places on it
/// (`SM_STORAGE_LOST_UNDER_VMS`), so that a new master restarts it.
#[test]
fn a_master_cut_from_storage_under_a_real_guest_fences_and_the_vm_restarts_elsewhere() {
    let Some(lab) = qemu_lab(3, 1, true) else {
        return;
    };
    let (vm, host1) = protected_guest_on(&lab, "host1");
    let t_cut = pool_master::driver::unix_ms();
    lab.fault("cut-storage", "host1");
    let mut after = None;
    let moved = wait_for(FAILOVER, || {
        after = running_on(&lab, &vm).filter(|h| h != "host1");
        after.is_some()
    });
    assert!(moved, "vm01 did not restart away from host1:\n{}", lab.output());
    let new_host = host_field(&lab, &after.expect("the VM runs"), "uuid");
    new_guest_took_over(&lab, &vm, &host1, &new_host, t_cut, "after host1's storage cut");
    assert_one_writer_at_a_time(&lab.sr_dir(), &vm);
    lab.fault("restore-storage", "host1");
    lab.wait_fenced("host1");
    lab.check();
}

#[test]
fn xe_vm_migrate_moves_a_real_guest_live_with_one_writer() {
    let Some(lab) = qemu_lab(2, 1, false) else {
        return;
    };
    let vm = vm_uuid(&lab, "vm01");
    lab.xe_ok(&["vm-start", "vm=vm01", "on=host1"]);
    let (host1, host2) = (host_field(&lab, "host1", "uuid"), host_field(&lab, "host2", "uuid"));
    let booted = booted_on(&lab, &vm, &host1, 10);
    assert!(booted, "the guest on host1 wrote no records:\n{}", lab.output());
    lab.xe_ok(&["vm-migrate", "vm=vm01", "host=host2", "--live"]);
    assert_eq!(running_on(&lab, &vm).as_deref(), Some("host2"));
    assert!(guest_processes(&lab, "host1").is_empty(), "the source guest is gone");
    assert_eq!(guest_processes(&lab, "host2").len(), 1);
    let moved = wait_for(Duration::from_secs(30), || {
        records_of(&lab.sr_dir(), &vm)
            .iter()
            .filter(|r| r.host_uuid == host2)
            .count()
            >= 10
    });
    assert!(moved, "the migrated guest wrote nothing on host2");
    let recs = records_of(&lab.sr_dir(), &vm);
    let seqs: Vec<u64> = recs.iter().map(|r| r.seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "one writer, nothing lost: {seqs:?}"
    );
    let switch = recs.iter().position(|r| r.host_uuid == host2).unwrap();
    assert!(
        recs[switch..].iter().all(|r| r.host_uuid == host2),
        "host1 wrote after the switch"
    );
    let gap = recs[switch].unix_ms - recs[switch - 1].unix_ms;
    assert!(gap < 1000, "the guest stopped writing for {gap} ms");
    // The same guest goes on: no boot (the sequence continued without a gap).
    lab.xe_ok(&["vm-shutdown", "vm=vm01", "--force"]);
    assert!(wait_for(Duration::from_secs(20), || guest_processes(&lab, "host2").is_empty()));
    lab.check();
}

#[test]
fn a_real_guest_that_powers_off_inside_restarts_when_protected_and_stays_off_when_not() {
    let Some(lab) = qemu_lab(2, 2, true) else {
        return;
    };
    let driver = lab.xe_min(&[
        "host-param-get",
        &format!("uuid={}", host_field(&lab, "host2", "uuid")),
        "param-name=other-config",
        "param-key=pool-ha-vm-driver",
    ]);
    assert!(
        driver.starts_with("qemu-"),
        "the host record says what runs its guests: {driver:?}"
    );
    let (a, b) = (vm_uuid(&lab, "vm01"), vm_uuid(&lab, "vm02"));
    lab.xe_ok(&["vm-param-set", &format!("uuid={a}"), "ha-restart-priority=restart"]);
    lab.xe_ok(&["vm-start", "vm=vm01", "on=host2"]);
    lab.xe_ok(&["vm-start", "vm=vm02", "on=host2"]);
    let host2 = host_field(&lab, "host2", "uuid");
    let booted = booted_on(&lab, &a, &host2, 5) && booted_on(&lab, &b, &host2, 5);
    assert!(booted, "the guests wrote no records:\n{}", lab.output());
    let writes_a = records_of(&lab.sr_dir(), &a).len();
    lab.fault_guest_halt("vm01");
    lab.fault_guest_halt("vm02");
    // vm02 is not protected: halted, and it stays so.
    let halted = wait_for(Duration::from_secs(30), || {
        lab.xe_min(&["vm-list", "name-label=vm02", "params=power-state"]) == "halted"
    });
    assert!(halted, "vm02 is not recorded halted:\n{}", lab.output());
    // vm01 is: it boots again (a new guest continues its disk's sequence).
    let again = wait_for(Duration::from_secs(120), || {
        let recs = records_of(&lab.sr_dir(), &a);
        recs.len() > writes_a + 20
    });
    assert!(again, "vm01 did not run again:\n{}", lab.output());
    assert!(running_on(&lab, &a).is_some());
    std::thread::sleep(Duration::from_secs(T));
    assert_eq!(
        lab.xe_min(&["vm-list", "name-label=vm02", "params=power-state"]),
        "halted"
    );
    assert_eq!(
        guest_processes(&lab, "host2").len() + guest_processes(&lab, "host1").len(),
        1
    );
    assert_one_writer_at_a_time(&lab.sr_dir(), &a);
}

#[test]
fn a_restarted_xapid_adopts_its_running_guests_without_a_restart() {
    // HA off: a toolstack restart leaves the VMs running.
    let Some(lab) = qemu_lab(2, 1, false) else {
        return;
    };
    let vm = vm_uuid(&lab, "vm01");
    lab.xe_ok(&["vm-start", "vm=vm01", "on=host2"]);
    let host2 = host_field(&lab, "host2", "uuid");
    let booted = booted_on(&lab, &vm, &host2, 5);
    assert!(booted, "the guest wrote no records:\n{}", lab.output());
    let guest = guest_processes(&lab, "host2");
    assert_eq!(guest.len(), 1);
    let domid = lab.xe_min(&["vm-list", "name-label=vm01", "params=dom-id"]);

    // xapid dies; the lab boots it again; the guest runs on meanwhile.
    let xapid = nix::unistd::Pid::from_raw(lab.host_pid(2) as i32);
    nix::sys::signal::kill(xapid, nix::sys::signal::Signal::SIGKILL).unwrap();
    let back = wait_for(FAILOVER, || {
        lab.host_pid_now(2).is_some_and(|p| p != xapid.as_raw() as u32)
            && host_field(&lab, "host2", "host-metrics-live") == "true"
    });
    assert!(back, "host2's xapid did not come back:\n{}", lab.output());
    let before = records_of(&lab.sr_dir(), &vm).len();
    assert!(wait_for(Duration::from_secs(10), || records_of(&lab.sr_dir(), &vm)
        .len()
        > before + 10));
    assert_eq!(
        guest_processes(&lab, "host2"),
        guest,
        "the same QEMU process, not a new guest"
    );
    assert_eq!(running_on(&lab, &vm).as_deref(), Some("host2"));
    assert_eq!(lab.xe_min(&["vm-list", "name-label=vm01", "params=dom-id"]), domid);
    // The guest never stopped: no gap of a reboot in its records.
    let recs = records_of(&lab.sr_dir(), &vm);
    let gap = recs.windows(2).map(|w| w[1].unix_ms - w[0].unix_ms).max().unwrap_or(0);
    assert!(gap < 1000, "the guest stopped writing for {gap} ms");
    assert_one_writer_at_a_time(&lab.sr_dir(), &vm);
    // And the adopted guest obeys: a clean shutdown.
    lab.xe_ok(&["vm-shutdown", "vm=vm01"]);
    assert!(wait_for(Duration::from_secs(20), || guest_processes(&lab, "host2").is_empty()));
    assert_eq!(
        lab.xe_min(&["vm-list", "name-label=vm01", "params=power-state"]),
        "halted"
    );
}
