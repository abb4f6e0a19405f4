//! Recovering a dead host's VMs by hand with HA off: `xe vm-reset-powerstate`
//! and `xe host-declare-dead`, with XAPI's checks (issue 28).

use crate::util::{host_field, running_on, vm_uuid, Lab};

fn power_state(lab: &Lab, vm: &str) -> String {
    lab.xe_min(&["vm-param-get", &format!("uuid={vm}"), "param-name=power-state"])
}

#[test]
fn a_dead_hosts_vms_are_recovered_with_reset_powerstate_and_declare_dead() {
    let lab = Lab::start(3, 2);
    let (a, b) = (vm_uuid(&lab, "vm01"), vm_uuid(&lab, "vm02"));
    lab.xe_ok(&["vm-start", &format!("uuid={a}"), "on=host3"]);
    lab.xe_ok(&["vm-start", &format!("uuid={b}"), "on=host2"]);

    // While host3 is alive, neither verb touches it or its VM.
    let r = lab.xe(&["vm-reset-powerstate", &format!("uuid={a}"), "--force"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("still live"), "{}", r.stderr);
    let host3 = host_field(&lab, "host3", "uuid");
    let r = lab.xe(&["host-declare-dead", &format!("uuid={host3}"), "--force"]);
    assert_ne!(r.code, 0, "declared a live host dead");
    assert!(r.stderr.contains("still live"), "{}", r.stderr);
    assert_eq!(power_state(&lab, &a), "running");
    assert_eq!(host_field(&lab, "host3", "enabled"), "true");

    // host3 dies: its VM cannot be started elsewhere as it stands.
    lab.fault("power-off", "host3");
    let r = lab.xe(&["vm-start", &format!("uuid={a}"), "on=host1"]);
    assert_ne!(r.code, 0, "a VM recorded running started again");
    // Without --force, xe refuses and nothing changes.
    let r = lab.xe(&["vm-reset-powerstate", &format!("uuid={a}")]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("must be forced (use --force)"), "{}", r.stderr);
    assert_eq!(power_state(&lab, &a), "running");
    // With it, the VM is halted in the database and starts on host1.
    lab.xe_ok(&["vm-reset-powerstate", &format!("uuid={a}"), "--force"]);
    assert_eq!(power_state(&lab, &a), "halted");
    lab.xe_ok(&["vm-start", &format!("uuid={a}"), "on=host1"]);
    assert_eq!(running_on(&lab, &a).as_deref(), Some("host1"));

    // host2 dies: declaring it dead halts its VMs and disables it.
    lab.fault("power-off", "host2");
    let host2 = host_field(&lab, "host2", "uuid");
    lab.xe_ok(&["host-declare-dead", &format!("uuid={host2}"), "--force"]);
    assert_eq!(power_state(&lab, &b), "halted");
    assert_eq!(host_field(&lab, "host2", "enabled"), "false");
    lab.xe_ok(&["vm-start", &format!("uuid={b}"), "on=host1"]);
    assert_eq!(running_on(&lab, &b).as_deref(), Some("host1"));

    // The master can never be declared dead, nor reset a VM whose guest
    // it runs.
    let host1 = host_field(&lab, "host1", "uuid");
    let r = lab.xe(&["host-declare-dead", &format!("uuid={host1}"), "--force"]);
    assert!(r.code != 0 && r.stderr.contains("still live"), "{}", r.stderr);
    let r = lab.xe(&["vm-reset-powerstate", &format!("uuid={a}"), "--force"]);
    assert!(r.code != 0 && r.stderr.contains("domain still exists"), "{}", r.stderr);
    assert_eq!(running_on(&lab, &a).as_deref(), Some("host1"));
}

/// `xe host-forget` (issue 21): refused while the host lives, while the
/// pool places a VM on it, and for the master; a dead, empty host goes,
/// with its PBDs and its certificate.
#[test]
fn a_dead_host_is_forgotten_and_a_live_one_is_not() {
    let lab = Lab::start(3, 1);
    let a = vm_uuid(&lab, "vm01");
    let host3 = host_field(&lab, "host3", "uuid");
    let r = lab.xe(&["host-forget", &format!("uuid={host3}"), "--force"]);
    assert!(r.code != 0 && r.stderr.contains("still live"), "{}", r.stderr);
    lab.xe_ok(&["vm-start", &format!("uuid={a}"), "on=host3"]);
    lab.fault("power-off", "host3");
    // Without --force, xe refuses; with a VM recorded on it, the pool does.
    let r = lab.xe(&["host-forget", &format!("uuid={host3}")]);
    assert!(
        r.code != 0 && r.stderr.contains("must be forced (use --force)"),
        "{}",
        r.stderr
    );
    let r = lab.xe(&["host-forget", &format!("uuid={host3}"), "--force"]);
    assert!(
        r.code != 0
            && r.stderr
                .contains("cannot be forgotten because there are user VMs still running"),
        "{}",
        r.stderr
    );
    assert_eq!(lab.xe_min(&["host-list"]).split(',').count(), 3);
    // Its VM reset, it goes.
    lab.xe_ok(&["vm-reset-powerstate", &format!("uuid={a}"), "--force"]);
    lab.xe_ok(&["host-forget", &format!("uuid={host3}"), "--force"]);
    let hosts = lab.xe_min(&["host-list"]);
    assert_eq!(hosts.split(',').count(), 2, "{hosts}");
    assert!(!hosts.contains(&host3));
    assert_eq!(lab.xe_min(&["pbd-list", &format!("host-uuid={host3}")]), "");
    // Its certificate record went with it: one per host left.
    let session = lab.call(
        1,
        "session.login_with_password",
        serde_json::json!(["root", crate::util::PASSWORD]),
    )["result"]
        .clone();
    let certs = lab.call(1, "Certificate.get_all_records", serde_json::json!([session]))["result"].clone();
    let hosts = lab.call(1, "host.get_all", serde_json::json!([session]))["result"].clone();
    let mut of: Vec<&str> = certs
        .as_object()
        .unwrap()
        .values()
        .map(|c| c["host"].as_str().unwrap())
        .collect();
    let mut left: Vec<&str> = hosts.as_array().unwrap().iter().map(|h| h.as_str().unwrap()).collect();
    of.sort();
    left.sort();
    assert_eq!(of, left, "{certs}");
    // The master never.
    let host1 = host_field(&lab, "host1", "uuid");
    let r = lab.xe(&["host-forget", &format!("uuid={host1}"), "--force"]);
    assert!(r.code != 0 && r.stderr.contains("still live"), "{}", r.stderr);
    // And the VM starts on a host that is left.
    lab.xe_ok(&["vm-start", &format!("uuid={a}"), "on=host2"]);
}
