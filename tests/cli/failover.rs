//! Protected VMs survive the seeds' cable pulls: the restart executor on
//! real processes (T = 5 s), checked on the VMs' disks.

use std::time::Duration;

use crate::util::{
    assert_one_writer_at_a_time, host_field, pull_and_heal, records_of, running_on, vm_uuid, wait_for, Lab, FAILOVER,
    HA_T as T,
};

fn ha_lab(hosts: usize, vms: usize) -> Lab {
    Lab::start_ha(hosts, vms, &[])
}

#[test]
fn the_seeds_cable_pulls_restart_the_protected_vm_on_another_host() {
    let lab = ha_lab(3, 1);
    let vm = vm_uuid(&lab, "vm01");
    lab.xe_ok(&["vm-param-set", &format!("uuid={vm}"), "ha-restart-priority=restart"]);
    lab.xe_ok(&["vm-start", "vm=vm01", "on=host3"]);
    assert_eq!(
        lab.xe_min(&["vm-list", "name-label=vm01", "params=ha-always-run"]),
        "true"
    );
    pull_and_heal(&lab, &vm, "power-off", "power-on");
    assert!(lab
        .xe_any_min(&["message-list", "params=name"])
        .unwrap_or_default()
        .contains("HA_HOST_FAILED"));
    pull_and_heal(&lab, &vm, "cut-storage", "restore-storage");
    pull_and_heal(&lab, &vm, "cut-network", "restore-network");
    lab.check();
}

#[test]
fn order_groups_start_delays_best_effort_and_guest_halts() {
    let lab = ha_lab(3, 3);
    let (a, b, c) = (vm_uuid(&lab, "vm01"), vm_uuid(&lab, "vm02"), vm_uuid(&lab, "vm03"));
    lab.xe_ok(&[
        "vm-param-set",
        &format!("uuid={a}"),
        "ha-restart-priority=restart",
        "order=0",
        "start-delay=3",
    ]);
    lab.xe_ok(&[
        "vm-param-set",
        &format!("uuid={b}"),
        "ha-restart-priority=restart",
        "order=1",
    ]);
    lab.xe_ok(&["vm-param-set", &format!("uuid={c}"), "ha-restart-priority=best-effort"]);
    for v in ["vm01", "vm02", "vm03"] {
        lab.xe_ok(&["vm-start", &format!("vm={v}"), "on=host3"]);
    }
    let host3 = lab.xe_min(&["host-list", "name-label=host3", "params=uuid"]);
    lab.fault("power-off", "host3");
    let all_back = wait_for(FAILOVER, || {
        [&a, &b, &c]
            .iter()
            .all(|v| running_on(&lab, v).is_some_and(|h| h != "host3"))
    });
    assert!(all_back, "not every VM came back:\n{}", lab.output());
    // The first write of each VM on its new host.
    let first_after = |vm: &str| {
        records_of(&lab.sr_dir(), vm)
            .into_iter()
            .find(|r| r.host_uuid != host3)
            .map(|r| r.unix_ms)
            .expect("a write after the failover")
    };
    let (ta, tb, tc) = (first_after(&a), first_after(&b), first_after(&c));
    assert!(
        tb >= ta + 3000 - 200,
        "order 1 started {} ms after order 0, despite start-delay=3",
        tb as i64 - ta as i64
    );
    assert!(tc >= tb, "the best-effort VM starts after the protected ones");
    for v in [&a, &b, &c] {
        assert_one_writer_at_a_time(&lab.sr_dir(), v);
    }

    // A protected VM halted from inside its guest is started again; an
    // unprotected one stays down.
    let b_host = running_on(&lab, &b).unwrap();
    lab.fault_guest_halt("vm02");
    lab.fault_guest_halt("vm03");
    assert!(wait_for(FAILOVER, || lab.xe_min(&[
        "vm-list",
        "name-label=vm03",
        "params=power-state"
    ]) == "halted"));
    let writes = records_of(&lab.sr_dir(), &b).len();
    assert!(
        wait_for(FAILOVER, || records_of(&lab.sr_dir(), &b).len() > writes + 5),
        "vm02 was not restarted"
    );
    assert!(
        running_on(&lab, &b).is_some(),
        "vm02 runs again (on {b_host} or another host)"
    );
    assert_one_writer_at_a_time(&lab.sr_dir(), &b);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        lab.xe_min(&["vm-list", "name-label=vm03", "params=power-state"]),
        "halted"
    );

    // An API shutdown keeps a protected VM down.
    lab.xe_ok(&["vm-shutdown", "vm=vm01", "--force"]);
    assert_eq!(
        lab.xe_min(&["vm-list", "name-label=vm01", "params=ha-always-run"]),
        "false"
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        lab.xe_min(&["vm-list", "name-label=vm01", "params=power-state"]),
        "halted"
    );
}

#[test]
fn overcommit_protection_capacity_retries_and_best_effort_once() {
    // Three 2 GiB hosts, 768 MiB VMs: two VMs fill a host.
    let lab = Lab::start_ha(3, 5, &["--host-memory", "2147483648", "--vm-memory", "805306368"]);
    let pool = lab.xe_min(&["pool-list", "params=uuid"]);
    for v in ["vm01", "vm02", "vm03"] {
        let u = vm_uuid(&lab, v);
        lab.xe_ok(&["vm-param-set", &format!("uuid={u}"), "ha-restart-priority=restart"]);
    }
    let vm04 = vm_uuid(&lab, "vm04");
    lab.xe_ok(&[
        "vm-param-set",
        &format!("uuid={vm04}"),
        "ha-restart-priority=best-effort",
    ]);
    lab.xe_ok(&[
        "pool-param-set",
        &format!("uuid={pool}"),
        "ha-host-failures-to-tolerate=1",
    ]);
    for (v, h) in [
        ("vm01", "host1"),
        ("vm02", "host2"),
        ("vm03", "host3"),
        ("vm04", "host1"),
    ] {
        lab.xe_ok(&["vm-start", &format!("vm={v}"), &format!("on={h}")]);
    }
    assert!(wait_for(Duration::from_secs(10), || lab
        .xe_min(&["pool-list", "params=ha-plan-exists-for"])
        == "1"));

    // host3 full would leave nowhere for vm02 if host2 failed: refused.
    let refused = lab.xe(&["vm-start", "vm=vm05", "on=host3"]);
    assert_eq!(refused.code, 1);
    assert!(
        refused.stderr.contains("it would invalidate VM failover planning"),
        "{}",
        refused.stderr
    );
    assert_eq!(
        lab.xe_min(&["vm-list", "name-label=vm05", "params=power-state"]),
        "halted"
    );
    lab.xe_ok(&["pool-param-set", &format!("uuid={pool}"), "ha-allow-overcommit=true"]);
    lab.xe_ok(&["vm-start", "vm=vm05", "on=host3"]);
    assert!(wait_for(Duration::from_secs(10), || lab
        .xe_min(&["pool-list", "params=ha-overcommitted"])
        == "true"));
    let names = lab.xe_min(&["message-list", "params=name"]);
    assert!(
        names.contains("HA_POOL_OVERCOMMITTED") && names.contains("HA_POOL_DROP_IN_PLAN_EXISTS_FOR"),
        "{names}"
    );

    // host2 dies: vm02 fits nowhere, is reported once, and starts when
    // host2 is back.
    let vm02 = vm_uuid(&lab, "vm02");
    lab.fault("power-off", "host2");
    let failed = wait_for(FAILOVER, || {
        lab.xe_any_min(&["message-list", "params=name"])
            .is_some_and(|n| n.contains("HA_PROTECTED_VM_RESTART_FAILED"))
    });
    assert!(failed, "no HA_PROTECTED_VM_RESTART_FAILED:\n{}", lab.output());
    assert_eq!(running_on(&lab, &vm02), None);
    lab.fault("power-on", "host2");
    assert!(
        wait_for(FAILOVER, || running_on(&lab, &vm02).as_deref() == Some("host2")),
        "vm02 did not start on the returning host2"
    );
    assert_one_writer_at_a_time(&lab.sr_dir(), &vm02);

    // host1 dies: the protected vm01 takes host2's room; the best-effort
    // vm04 fits nowhere, is tried once, and stays down after host1 returns.
    let vm01 = vm_uuid(&lab, "vm01");
    lab.fault("power-off", "host1");
    assert!(wait_for(FAILOVER, || running_on(&lab, &vm01).as_deref() == Some("host2")));
    lab.fault("power-on", "host1");
    assert!(wait_for(FAILOVER, || host_field(&lab, "host1", "host-metrics-live") == "true"));
    std::thread::sleep(Duration::from_secs(T));
    assert_eq!(running_on(&lab, &vm04), None, "a best-effort VM gets one attempt");
}

#[test]
fn planned_maintenance_moves_nothing_and_fences_nobody() {
    let lab = ha_lab(3, 2);
    let vm01 = vm_uuid(&lab, "vm01");
    lab.xe_ok(&["vm-param-set", &format!("uuid={vm01}"), "ha-restart-priority=restart"]);
    lab.xe_ok(&["vm-start", "vm=vm01", "on=host3"]);
    lab.xe_ok(&["vm-start", "vm=vm02", "on=host3"]);
    let enabled_first = lab.xe(&["host-reboot", "host=host3"]);
    assert_eq!(enabled_first.code, 1);
    assert!(
        enabled_first.stderr.contains("the host is not disabled"),
        "{}",
        enabled_first.stderr
    );

    lab.xe_ok(&["host-disable", "host=host3"]);
    lab.xe_ok(&["host-evacuate", "host=host3"]);
    assert_eq!(
        lab.xe_min(&["host-list", "name-label=host3", "params=resident-vms"]),
        ""
    );
    for vm in ["vm01", "vm02"] {
        assert_eq!(
            lab.xe_min(&["vm-list", &format!("name-label={vm}"), "params=power-state"]),
            "running"
        );
    }
    let (where01, writes) = (running_on(&lab, &vm01).unwrap(), records_of(&lab.sr_dir(), &vm01).len());
    lab.xe_ok(&["host-reboot", "host=host3"]);
    lab.wait_fenced("host3");
    let back = wait_for(FAILOVER, || {
        host_field(&lab, "host3", "host-metrics-live") == "true" && host_field(&lab, "host3", "enabled") == "true"
    });
    assert!(back, "host3 did not come back enabled");
    std::thread::sleep(Duration::from_secs(T));
    assert_eq!(
        lab.output().matches("exit status: 86").count(),
        0,
        "nobody fenced:\n{}",
        lab.output()
    );
    let names = lab.xe_any_min(&["message-list", "params=name"]).unwrap_or_default();
    assert!(
        !names.contains("HA_HOST_FAILED"),
        "a planned reboot is no failure: {names}"
    );
    assert_eq!(running_on(&lab, &vm01), Some(where01), "the VM did not move");
    assert!(records_of(&lab.sr_dir(), &vm01).len() > writes);
    assert_one_writer_at_a_time(&lab.sr_dir(), &vm01);
}

#[test]
fn a_reboot_that_breaks_the_plan_lowers_failures_to_tolerate_until_the_host_is_back() {
    let lab = ha_lab(3, 1);
    let pool = lab.xe_min(&["pool-list", "params=uuid"]);
    let vm = vm_uuid(&lab, "vm01");
    lab.xe_ok(&["vm-param-set", &format!("uuid={vm}"), "ha-restart-priority=restart"]);
    lab.xe_ok(&["vm-start", "vm=vm01", "on=host1"]);
    lab.xe_ok(&[
        "pool-param-set",
        &format!("uuid={pool}"),
        "ha-host-failures-to-tolerate=2",
    ]);
    // With host3 out, two more failures leave no host: the plan breaks.
    let refused = lab.xe(&["host-disable", "host=host3"]);
    assert_eq!(refused.code, 1, "{}", refused.stdout);
    assert!(
        refused.stderr.contains("invalidate VM failover planning"),
        "{}",
        refused.stderr
    );
    let lowered = lab.xe(&["host-disable", "host=host3", "lower-ntol=true"]);
    assert_eq!(lowered.code, 0, "{}", lowered.stderr);
    assert!(lowered
        .stderr
        .contains("ha-host-failures-to-tolerate is 1 until host3 is back"));
    assert_eq!(lab.xe_min(&["pool-list", "params=ha-host-failures-to-tolerate"]), "1");
    lab.xe_ok(&["host-reboot", "host=host3"]);
    let restored = wait_for(FAILOVER, || {
        lab.xe_any_min(&["pool-list", "params=ha-host-failures-to-tolerate"])
            .as_deref()
            == Some("2")
    });
    assert!(restored, "ha-host-failures-to-tolerate was not restored");
    assert_eq!(host_field(&lab, "host3", "enabled"), "true");
    assert_eq!(lab.output().matches("exit status: 86").count(), 0, "{}", lab.output());
}

#[test]
fn a_host_that_lost_its_storage_gets_no_restarts_and_no_migrations() {
    // Issue 28: host3 cannot reach the shared SR; host1 then dies. Both
    // protected VMs of host1 come back on host2, never on host3, and host3
    // takes no migration until its storage is back.
    let lab = ha_lab(3, 3);
    let (a, b, c) = (vm_uuid(&lab, "vm01"), vm_uuid(&lab, "vm02"), vm_uuid(&lab, "vm03"));
    for vm in [&a, &b] {
        lab.xe_ok(&["vm-param-set", &format!("uuid={vm}"), "ha-restart-priority=restart"]);
        lab.xe_ok(&["vm-start", &format!("uuid={vm}"), "on=host1"]);
    }
    lab.xe_ok(&["vm-start", &format!("uuid={c}"), "on=host2"]);
    let host3 = host_field(&lab, "host3", "uuid");
    let detached = || {
        lab.xe_any_min(&["pbd-list", &format!("host-uuid={host3}"), "currently-attached=false"])
            .is_some_and(|l| !l.is_empty())
    };
    lab.fault("cut-storage", "host3");
    assert!(
        wait_for(Duration::from_secs(3 * T), detached),
        "host3's PBDs stayed attached:\n{}",
        lab.output()
    );
    let r = lab.xe(&["vm-migrate", &format!("uuid={c}"), "host=host3", "--live"]);
    assert_ne!(r.code, 0, "a VM migrated to a host without its SR");
    assert!(r.stderr.contains("doesn't have access to an SR"), "{}", r.stderr);

    lab.fault("power-off", "host1");
    let back = || {
        [&a, &b]
            .iter()
            .all(|vm| running_on(&lab, vm).is_some_and(|h| h != "host1"))
    };
    assert!(
        wait_for(2 * FAILOVER, back),
        "the protected VMs did not come back:\n{}",
        lab.output()
    );
    for vm in [&a, &b] {
        assert_eq!(
            running_on(&lab, vm).as_deref(),
            Some("host2"),
            "{vm} restarted on a host without its SR"
        );
        let n = records_of(&lab.sr_dir(), vm).len();
        assert!(
            wait_for(Duration::from_secs(10), || records_of(&lab.sr_dir(), vm).len() > n + 3),
            "{vm} does not write where it runs"
        );
    }
    // Storage back: host3 is attached again and takes a migration.
    lab.fault("restore-storage", "host3");
    assert!(
        wait_for(Duration::from_secs(3 * T), || !detached()),
        "host3's PBDs stayed detached"
    );
    // host1 is down: ask the new master, whichever host it is. host3's
    // return is a join, and while a join runs the master's lock is not
    // confirmed and it refuses writes (HOST_STILL_BOOTING): ask again
    // until one host takes the migration or says something else.
    let migrate = ["vm-migrate", &format!("uuid={c}"), "host=host3", "--live"];
    let mut runs = Vec::new();
    let migrated = wait_for(Duration::from_secs(3 * T), || {
        runs = [2, 3].iter().map(|&i| lab.xe_on(i, &migrate)).collect();
        runs.iter().any(|r| r.code == 0) || !runs.iter().any(|r| r.stderr.contains("still initialising"))
    });
    assert!(migrated && runs.iter().any(|r| r.code == 0), "{runs:?}");
    assert_eq!(running_on(&lab, &c).as_deref(), Some("host3"));
    lab.check();
}
