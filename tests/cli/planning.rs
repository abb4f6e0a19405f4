//! HA capacity through xe: host failures to tolerate, the What-If machine,
//! the failover plan, the setters the planner guards, and agility.

use crate::util::{xe_bin, Lab};

fn protect(lab: &Lab, name: &str) -> String {
    let vm = lab.xe_min(&["vm-list", &format!("name-label={name}")]);
    lab.xe_ok(&["vm-param-set", &format!("uuid={vm}"), "ha-restart-priority=restart"]);
    vm
}

#[test]
fn the_seed_example_ram_decides_between_one_and_zero() {
    // Two 8 GiB hosts, one 1 GiB VM: the other host can take it.
    let lab = Lab::start(2, 1);
    lab.xe_ok(&["vm-start", "vm=vm01", "on=host1"]);
    let vm01 = protect(&lab, "vm01");
    assert_eq!(lab.xe_ok(&["pool-ha-compute-max-host-failures-to-tolerate"]), "1\n");

    // A 5 GiB VM on each host: neither can take the other's.
    for (name, host) in [("big1", "host1"), ("big2", "host2")] {
        lab.xe_ok(&[
            "vm-install",
            &format!("new-name-label={name}"),
            "memory=5GiB",
            "disk-size=16MiB",
        ]);
        lab.xe_ok(&["vm-start", &format!("vm={name}"), &format!("on={host}")]);
        protect(&lab, name);
    }
    let explained = lab.xe_ok(&["pool-ha-compute-max-host-failures-to-tolerate", "--explain"]);
    let lines: Vec<&str> = explained.lines().collect();
    assert_eq!(lines[0], "0");
    assert_eq!(lines[1], "protected VMs: 3; planner: exact");
    assert!(lines[2].starts_with("proof: exact"), "{explained}");
    // What proved it (Tolerance::proven_by).
    assert!(lines[3].starts_with("proven by: "), "{explained}");
    assert!(
        lines[4].starts_with("one more is too many: if these hosts fail: "),
        "{explained}"
    );
    assert!(lines[5].contains("(big"), "{explained}");

    // What if only vm01 were protected, and big1 best-effort?
    let big1 = lab.xe_min(&["vm-list", "name-label=big1"]);
    let what_if = lab.xe_ok(&[
        "pool-ha-compute-hypothetical-max-host-failures-to-tolerate",
        &format!("vm-uuid={vm01}"),
        "restart-priority=restart",
        &format!("vm-uuid={big1}"),
        "restart-priority=best-effort",
    ]);
    assert_eq!(what_if, "1\n");
    // Nothing protected: every host may fail.
    let none = lab.xe_ok(&[
        "pool-ha-compute-hypothetical-max-host-failures-to-tolerate",
        &format!("vm-uuid={vm01}"),
        "restart-priority=",
    ]);
    assert_eq!(none, "2\n");

    // The What-If machine checks its input and changes nothing.
    let r = lab.xe(&[
        "pool-ha-compute-hypothetical-max-host-failures-to-tolerate",
        &format!("vm-uuid={vm01}"),
        "restart-priority=sometimes",
    ]);
    assert_eq!(
        (r.code, r.stderr.as_str()),
        (
            1,
            "The value given is invalid\nfield: ha_restart_priority\nvalue: sometimes\n"
        )
    );
    let r = lab.xe(&[
        "pool-ha-compute-hypothetical-max-host-failures-to-tolerate",
        &format!("vm-uuid={vm01}"),
    ]);
    assert_eq!(
        (r.code, r.stderr.as_str()),
        (
            1,
            "Error: Call requires an equal number of vm-uuid and restart-priority arguments\n"
        )
    );
    assert_eq!(
        lab.xe_min(&[
            "vm-param-get",
            &format!("uuid={vm01}"),
            "param-name=ha-restart-priority"
        ]),
        "restart"
    );
}

#[test]
fn failures_to_tolerate_priorities_and_the_planner_mode_are_checked() {
    let lab = Lab::start(3, 2);
    lab.xe_ok(&["vm-start", "vm=vm01", "on=host1"]);
    lab.xe_ok(&["vm-start", "vm=vm02", "on=host2"]);
    let vm01 = protect(&lab, "vm01");
    protect(&lab, "vm02");
    let pool = lab.xe_min(&["pool-list"]);
    let uuid = format!("uuid={pool}");
    // Three 8 GiB hosts, two 1 GiB VMs: any two hosts may fail.
    assert_eq!(lab.xe_ok(&["pool-ha-compute-max-host-failures-to-tolerate"]), "2\n");

    lab.xe_ok(&["pool-param-set", &uuid, "ha-host-failures-to-tolerate=2"]);
    let r = lab.xe(&["pool-param-set", &uuid, "ha-host-failures-to-tolerate=3"]);
    assert_eq!(
        (r.code, r.stderr.as_str()),
        (
            1,
            "This operation cannot be performed because it would invalidate VM failover planning such that the system would be unable to guarantee to restart protected VMs after a Host failure.\n"
        )
    );
    let r = lab.xe(&["pool-param-set", &uuid, "ha-host-failures-to-tolerate=-1"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.starts_with("The value given is invalid\n"), "{}", r.stderr);
    assert_eq!(
        lab.xe_min(&["pool-param-get", &uuid, "param-name=ha-host-failures-to-tolerate"]),
        "2"
    );
    // Allowed when the admin allows overcommit.
    lab.xe_ok(&["pool-param-set", &uuid, "ha-allow-overcommit=true"]);
    lab.xe_ok(&["pool-param-set", &uuid, "ha-host-failures-to-tolerate=3"]);

    // Restart priority, order and start delay.
    let vm = format!("uuid={vm01}");
    let r = lab.xe(&["vm-param-set", &vm, "ha-restart-priority=always"]);
    assert_eq!(
        (r.code, r.stderr.as_str()),
        (
            1,
            "The value given is invalid\nfield: ha_restart_priority\nvalue: always\n"
        )
    );
    lab.xe_ok(&[
        "vm-param-set",
        &vm,
        "ha-restart-priority=best-effort",
        "order=3",
        "start-delay=10",
    ]);
    for (param, value) in [
        ("ha-restart-priority", "best-effort"),
        ("order", "3"),
        ("start-delay", "10"),
    ] {
        assert_eq!(
            lab.xe_min(&["vm-param-get", &vm, &format!("param-name={param}")]),
            value
        );
    }
    let r = lab.xe(&["vm-param-set", &vm, "order=-1"]);
    assert_eq!(r.code, 1);
    lab.xe_ok(&["vm-param-set", &vm, "ha-restart-priority="]);

    // The planner mode: exact by default, xapi on request, nothing else.
    lab.xe_ok(&["pool-param-set", &uuid, "other-config:ha-planner=xapi"]);
    let explained = lab.xe_ok(&["pool-ha-compute-max-host-failures-to-tolerate", "--explain"]);
    assert!(explained.contains("planner: xapi"), "{explained}");
    let r = lab.xe(&["pool-param-set", &uuid, "other-config:ha-planner=fast"]);
    assert_eq!(
        (r.code, r.stderr.as_str()),
        (
            1,
            "The value given is invalid\nfield: other-config:ha-planner\nvalue: fast\n"
        )
    );
}

#[test]
fn the_failover_plan_and_agility_explain_themselves() {
    let lab = Lab::start(2, 2);
    lab.xe_ok(&["vm-start", "vm=vm01", "on=host1"]);
    lab.xe_ok(&["vm-start", "vm=vm02", "on=host1"]);
    protect(&lab, "vm01");
    let vm02 = lab.xe_min(&["vm-list", "name-label=vm02"]);
    lab.xe_ok(&[
        "vm-param-set",
        &format!("uuid={vm02}"),
        "ha-restart-priority=best-effort",
        "order=2",
    ]);
    let host1 = lab.xe_min(&["host-list", "name-label=host1"]);
    let host2 = lab.xe_min(&["host-list", "name-label=host2"]);

    let plan = lab.xe_ok(&["pool-ha-compute-vm-failover-plan", &format!("host-uuids={host1}")]);
    let records: Vec<&str> = plan.split("\n\n\n").filter(|r| !r.trim().is_empty()).collect();
    assert_eq!(records.len(), 2, "{plan}");
    assert!(
        records[0].contains("(vm01)") && records[0].contains("restart-priority ( RO): restart"),
        "{plan}"
    );
    assert!(
        records[0].contains(&format!("destination ( RO): {host2} (host2)")),
        "{plan}"
    );
    assert!(
        records[1].contains("(vm02)") && records[1].contains("order ( RO): 2"),
        "{plan}"
    );
    assert!(
        records[1].contains(&format!("destination ( RO): {host2} (host2)")),
        "{plan}"
    );

    // Every host failing: nowhere to go, and the plan says why.
    let plan = lab.xe_ok(&[
        "pool-ha-compute-vm-failover-plan",
        &format!("host-uuids={host1},{host2}"),
    ]);
    assert!(plan.contains("not-restarted ( RO): HA_NO_PLAN: no live host"), "{plan}");

    // A VM on one host's local storage is not agile, and pins the answer to 0.
    let locals = lab.xe_min(&["sr-list", "name-label=Local storage"]);
    let local = locals.split(',').next().unwrap().to_string();
    lab.xe_ok(&[
        "vm-install",
        "new-name-label=pinned",
        &format!("sr-uuid={local}"),
        "memory=512MiB",
        "disk-size=16MiB",
    ]);
    lab.xe_ok(&["vm-start", "vm=pinned"]);
    let pinned = protect(&lab, "pinned");
    let own = lab.xe_min(&["vm-param-get", &format!("uuid={pinned}"), "param-name=resident-on"]);
    let (own_name, other, other_name) = if own == host1 {
        ("host1", &host2, "host2")
    } else {
        ("host2", &host1, "host1")
    };
    let report = lab.xe_ok(&["diagnostic-vm-status", &format!("uuid={pinned}")]);
    assert!(
        report.contains("Checking to see whether VM can boot on each host"),
        "{report}"
    );
    assert!(report.contains(&format!("{own} ({own_name}): OK")), "{report}");
    assert!(
        report.contains(&format!("{other} ({other_name}): Cannot start here [")),
        "{report}"
    );
    assert!(
        report.contains("VM is not agile because: This operation cannot be performed because the referenced SR is not properly shared."),
        "{report}"
    );
    let vm01 = lab.xe_min(&["vm-list", "name-label=vm01", "params=uuid"]);
    let agile = lab.xe_ok(&["diagnostic-vm-status", &format!("uuid={vm01}")]);
    assert!(agile.ends_with("VM is agile.\n"), "{agile}");
    let explained = lab.xe_ok(&["pool-ha-compute-max-host-failures-to-tolerate", "--explain"]);
    assert!(explained.starts_with("0\n"), "{explained}");
    assert!(
        explained.contains(&format!("if these hosts fail: {own} ({own_name})")),
        "{explained}"
    );
    assert!(explained.contains("(pinned)"), "{explained}");
}

/// Issue 27: `xe pool-ha-plan-snapshot` writes the planner's input, and
/// `ha-plan max-failures` on it agrees with the pool's own answer (number,
/// proof and what proved it).
#[test]
fn a_snapshot_planned_offline_agrees_with_the_pool() {
    let ha_plan = xe_bin().with_file_name("ha-plan");
    assert!(
        ha_plan.exists(),
        "{} is missing: build the workspace (cargo build -p ha-plan)",
        ha_plan.display()
    );
    // Three 8 GiB hosts; a 3 GiB VM and a 1 GiB one on host1, a 2 GiB one
    // on host2; all protected.
    let lab = Lab::start(3, 1);
    lab.xe_ok(&["vm-start", "vm=vm01", "on=host1"]);
    protect(&lab, "vm01");
    for (name, size, host) in [("db", "3GiB", "host1"), ("app", "2GiB", "host2")] {
        lab.xe_ok(&[
            "vm-install",
            &format!("new-name-label={name}"),
            &format!("memory={size}"),
            "disk-size=16MiB",
        ]);
        lab.xe_ok(&["vm-start", &format!("vm={name}"), &format!("on={host}")]);
        protect(&lab, name);
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pool.json");
    let file = file.to_str().unwrap();
    assert_eq!(lab.xe_ok(&["pool-ha-plan-snapshot", &format!("file-name={file}")]), "");
    let text = std::fs::read_to_string(file).unwrap();
    let snapshot: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(snapshot["hosts"].as_array().unwrap().len(), 3, "{text}");
    assert_eq!(snapshot["vms"].as_array().unwrap().len(), 3, "{text}");
    // Printed without file-name: the same document.
    let printed: serde_json::Value = serde_json::from_str(&lab.xe_ok(&["pool-ha-plan-snapshot"])).unwrap();
    assert_eq!(printed, snapshot);

    let out = std::process::Command::new(&ha_plan)
        .args(["max-failures", file, "--format", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let offline: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let pool = lab.xe_ok(&["pool-ha-compute-max-host-failures-to-tolerate"]);
    assert_eq!(offline["max_failures"].to_string(), pool.trim(), "{offline} vs {pool}");
    let explained = lab.xe_ok(&["pool-ha-compute-max-host-failures-to-tolerate", "--explain"]);
    let proven_by = offline["proven_by"].as_str().unwrap();
    assert!(
        explained.contains(&format!("proven by: {proven_by}:")),
        "{offline} vs {explained}"
    );
    assert_eq!(offline["proof"], "exact", "{offline}");
    assert!(
        explained.lines().nth(2).unwrap().starts_with("proof: exact"),
        "{explained}"
    );
}
