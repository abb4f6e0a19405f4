//! VM lifecycle against a lab pool, checked on the VM's disk.

use std::time::Duration;

use crate::util::{records_of, wait_for, Lab};

#[test]
fn a_vm_started_on_host2_writes_there_and_migrates_live_without_a_gap() {
    let lab = Lab::start(3, 1);
    let vm = lab.xe_min(&["vm-list", "name-label=vm01"]);
    let host2 = lab.xe_min(&["host-list", "name-label=host2"]);
    let host3 = lab.xe_min(&["host-list", "name-label=host3"]);
    lab.xe_ok(&["vm-start", "vm=vm01", "on=host2"]);
    assert_eq!(
        lab.xe_min(&["vm-list", "name-label=vm01", "params=power-state"]),
        "running"
    );
    assert_eq!(
        lab.xe_min(&["vm-param-get", &format!("uuid={vm}"), "param-name=resident-on"]),
        host2
    );

    // The disk grows with host2's records.
    assert!(wait_for(Duration::from_secs(10), || records_of(&lab.sr_dir(), &vm)
        .len()
        >= 5));
    let before = records_of(&lab.sr_dir(), &vm);
    assert!(before.iter().all(|r| r.host_uuid == host2), "only host2 writes");

    // Memory is accounted on host2.
    let free2: i64 = lab
        .xe_min(&["host-param-get", &format!("uuid={host2}"), "param-name=memory-free"])
        .parse()
        .unwrap();
    assert!(free2 < 8i64 << 30, "host2 free memory {free2}");

    lab.xe_ok(&["vm-migrate", "vm=vm01", "host=host3", "--live"]);
    assert_eq!(
        lab.xe_min(&["vm-param-get", &format!("uuid={vm}"), "param-name=resident-on"]),
        host3
    );
    let n = records_of(&lab.sr_dir(), &vm).len();
    assert!(wait_for(Duration::from_secs(10), || records_of(&lab.sr_dir(), &vm)
        .len()
        >= n + 5));
    lab.xe_ok(&["vm-shutdown", "vm=vm01"]);
    assert_eq!(
        lab.xe_min(&["vm-list", "name-label=vm01", "params=power-state"]),
        "halted"
    );

    let recs = records_of(&lab.sr_dir(), &vm);
    // One sequence, no repeats, no holes: one writer at a time.
    for w in recs.windows(2) {
        assert_eq!(w[1].seq, w[0].seq + 1, "sequence broken at {:?} -> {:?}", w[0], w[1]);
        let gap = w[1].unix_ms.saturating_sub(w[0].unix_ms);
        assert!(gap < 1000, "a gap of {gap} ms between {:?} and {:?}", w[0], w[1]);
        assert!(w[1].unix_ms >= w[0].unix_ms, "time went backwards");
    }
    // host2 then host3, never interleaved.
    let switch = recs.iter().position(|r| r.host_uuid == host3).expect("host3 wrote");
    assert!(recs[..switch].iter().all(|r| r.host_uuid == host2));
    assert!(recs[switch..].iter().all(|r| r.host_uuid == host3));
    // After the shutdown nothing writes any more.
    let settled = records_of(&lab.sr_dir(), &vm).len();
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(records_of(&lab.sr_dir(), &vm).len(), settled);
}

#[test]
fn vm_install_start_without_host_and_uninstall() {
    let lab = Lab::start(2, 0);
    let uuid = lab
        .xe_ok(&["vm-install", "new-name-label=web", "memory=512MiB"])
        .trim()
        .to_string();
    assert_eq!(lab.xe_min(&["vm-list", "name-label=web"]), uuid);
    assert_eq!(
        lab.xe_min(&["vm-param-get", &format!("uuid={uuid}"), "param-name=memory-static-max"]),
        (512i64 << 20).to_string()
    );
    lab.xe_ok(&["vm-start", &format!("uuid={uuid}")]);
    assert_eq!(
        lab.xe_min(&["vm-list", "name-label=web", "params=power-state"]),
        "running"
    );
    // Scripts must confirm destruction explicitly.
    let refused = lab.xe(&["vm-uninstall", "vm=web"]);
    assert_eq!(refused.code, 1);
    assert!(
        refused.stderr.contains("must be forced (use --force)"),
        "{}",
        refused.stderr
    );
    lab.xe_ok(&["vm-uninstall", "vm=web", "--force"]);
    assert_eq!(lab.xe_min(&["vm-list", "name-label=web"]), "");
}

#[test]
fn a_start_that_does_not_fit_fails_with_the_memory_needed_and_available() {
    let lab = Lab::start(1, 0);
    let uuid = lab
        .xe_ok(&["vm-install", "new-name-label=huge", "memory=9GiB"])
        .trim()
        .to_string();
    let r = lab.xe(&[
        "vm-start",
        &format!("uuid={uuid}"),
        &format!("on={}", lab.xe_min(&["host-list"])),
    ]);
    assert_eq!(r.code, 1);
    let mut lines = r.stderr.lines();
    assert_eq!(
        lines.next(),
        Some("Not enough server memory is available to perform this operation.")
    );
    let needed = lines.next().unwrap_or_default();
    let available = lines.next().unwrap_or_default();
    // 9 GiB plus the VM's overhead (tens of MiB).
    let needed: i64 = needed
        .strip_prefix("needed: ")
        .and_then(|n| n.parse().ok())
        .expect("needed: N");
    assert!(
        needed > 9i64 << 30 && needed < (9i64 << 30) + (128 << 20),
        "needed {needed}"
    );
    assert_eq!(available, format!("available: {}", 8i64 << 30));
    // Without on=, no host fits at all.
    let r = lab.xe(&["vm-start", "vm=huge"]);
    assert_eq!(
        r.stderr.trim(),
        "There were no servers available to complete the specified operation."
    );
    assert_eq!(
        lab.xe_min(&["vm-list", "name-label=huge", "params=power-state"]),
        "halted"
    );
}

#[test]
fn an_evacuated_host_takes_no_vms_and_auto_enable_survives_a_power_cycle() {
    // Issue 28: host-evacuate left the host enabled, so VMs could land on
    // it again; and a host disabled with auto-enable (the default) stayed
    // disabled after an unplanned power cycle.
    use crate::util::{host_field, running_on, vm_uuid};
    let lab = Lab::start(3, 1);
    let vm = vm_uuid(&lab, "vm01");
    lab.xe_ok(&["vm-start", "vm=vm01", "on=host2"]);
    lab.xe_ok(&["host-evacuate", "host=host2"]);
    assert_eq!(host_field(&lab, "host2", "enabled"), "false");
    assert_ne!(running_on(&lab, &vm).as_deref(), Some("host2"));
    let r = lab.xe(&["vm-migrate", "vm=vm01", "host=host2", "--live"]);
    assert_ne!(r.code, 0, "a VM migrated onto the evacuated host");
    assert!(r.stderr.contains("disabled"), "{}", r.stderr);

    // host3 is disabled for good, host2 only until it next starts; both
    // lose power and come back.
    lab.xe_ok(&["host-disable", "host=host3", "auto-enable=false"]);
    for h in ["host2", "host3"] {
        lab.fault("power-off", h);
    }
    for h in ["host2", "host3"] {
        lab.fault("power-on", h);
    }
    assert!(
        wait_for(Duration::from_secs(30), || host_field(&lab, "host2", "enabled")
            == "true"),
        "host2 stayed disabled after a power cycle:\n{}",
        lab.output()
    );
    // host3 booted with host2; give its hello the same time again.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(host_field(&lab, "host3", "enabled"), "false");
    lab.xe_ok(&["host-enable", "host=host3"]);
    assert_eq!(host_field(&lab, "host3", "enabled"), "true");
}
