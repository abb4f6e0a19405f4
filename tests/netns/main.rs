//! Real cables: lab pools whose hosts each live in their own network
//! namespace behind one bridge (`xapid lab --netns`), so a pulled cable is
//! a veth port going down and a one-way cut is an nftables rule. HA at
//! T = 5 s. Every scenario ends with `xapid lab check` over the VMs' disks.
//!
//! Needs root, iproute2 and nftables (`.ci/run` installs them); elsewhere
//! each test prints why it is skipped and passes.

#![allow(clippy::unwrap_used)]

#[path = "../cli/util/mod.rs"]
#[allow(dead_code, unused_imports)]
mod util;

use std::time::Duration;

use util::{
    assert_one_writer_at_a_time, host_field, netns_unusable, pull_and_heal, records_of, running_on, vm_uuid, wait_for,
    Lab, FAILOVER, HA_T as T,
};

/// A netns lab with HA on, or `None` (and a printed reason) where this
/// machine cannot create namespaces.
fn netns_lab(hosts: usize, vms: usize) -> Option<Lab> {
    if let Some(why) = netns_unusable() {
        eprintln!("skipped: {why}");
        return None;
    }
    Some(Lab::start_netns(hosts, vms))
}

/// Protect `vm` and start it on `host`.
fn protect_on(lab: &Lab, vm: &str, host: &str) -> String {
    let uuid = vm_uuid(lab, vm);
    lab.xe_ok(&["vm-param-set", &format!("uuid={uuid}"), "ha-restart-priority=restart"]);
    lab.xe_ok(&["vm-start", &format!("vm={vm}"), &format!("on={host}")]);
    uuid
}

fn live(lab: &Lab, name: &str) -> bool {
    host_field(lab, name, "host-metrics-live") == "true"
}

#[test]
fn the_seeds_cable_pulls_on_real_links() {
    let Some(lab) = netns_lab(3, 1) else { return };
    let vm = protect_on(&lab, "vm01", "host3");
    // The network first: a port on the bridge goes down, nothing in or out.
    pull_and_heal(&lab, &vm, "cut-network", "restore-network");
    pull_and_heal(&lab, &vm, "power-off", "power-on");
    pull_and_heal(&lab, &vm, "cut-storage", "restore-storage");
    lab.check();
}

#[test]
fn a_two_host_split_keeps_the_host_with_the_lower_uuid() {
    let Some(lab) = netns_lab(2, 0) else { return };
    let uuid = |h: &str| host_field(&lab, h, "uuid");
    let (keep, lose) = if uuid("host1") < uuid("host2") {
        ("host1", "host2")
    } else {
        ("host2", "host1")
    };
    // Both directions dropped by nftables, the cables stay plugged.
    lab.link("block", "host1", "host2");
    lab.link("block", "host2", "host1");
    lab.wait_fenced(lose);
    std::thread::sleep(Duration::from_secs(2 * T));
    assert_eq!(lab.downs(keep), 0, "{keep} fenced too:\n{}", lab.output());
    lab.link("unblock", "host1", "host2");
    lab.link("unblock", "host2", "host1");
    assert!(
        wait_for(FAILOVER, || live(&lab, lose)),
        "{lose} did not rejoin once the links were back"
    );
    lab.check();
}

#[test]
fn a_two_host_cable_pull_fences_the_pulled_host_in_both_uuid_orders() {
    // A real cable pull: the pulled host sees no carrier, so it loses the
    // tie between the two equal halves whatever the uuids; each host in
    // turn covers both orders.
    let Some(lab) = netns_lab(2, 0) else { return };
    lab.fault("cut-network", "host2");
    lab.wait_fenced("host2");
    std::thread::sleep(Duration::from_secs(2 * T));
    assert_eq!(lab.downs("host1"), 0, "host1 fenced too:\n{}", lab.output());
    lab.fault("restore-network", "host2");
    assert!(wait_for(FAILOVER, || live(&lab, "host2")), "host2 did not rejoin");
    lab.fault("cut-network", "host1");
    lab.wait_fenced("host1");
    std::thread::sleep(Duration::from_secs(2 * T));
    assert_eq!(lab.downs("host2"), 1, "host2 fenced again:\n{}", lab.output());
    lab.fault("restore-network", "host1");
    assert!(wait_for(FAILOVER, || live(&lab, "host1")), "host1 did not rejoin");
    lab.check();
}

#[test]
fn an_isolated_master_is_replaced_and_rejoins_as_a_member() {
    let Some(lab) = netns_lab(3, 1) else { return };
    let vm = protect_on(&lab, "vm01", "host1");
    lab.fault("cut-network", "host1");
    lab.wait_fenced("host1");
    // A new master, elected among host2 and host3, restarts the VM.
    assert!(
        wait_for(FAILOVER, || running_on(&lab, &vm).is_some_and(|h| h != "host1")),
        "vm01 did not come back:\n{}",
        lab.output()
    );
    let master = lab.xe_any_min(&["pool-list", "params=master"]).unwrap();
    assert_ne!(master, host_field(&lab, "host1", "uuid"));
    lab.fault("restore-network", "host1");
    assert!(wait_for(FAILOVER, || live(&lab, "host1")), "host1 did not rejoin");
    // It follows the new master: xe on host1 is sent there.
    assert_eq!(
        lab.xe_on(1, &["pool-list", "params=master", "--minimal"]).stdout.trim(),
        master
    );
    assert_eq!(host_field(&lab, "host1", "resident-vms"), "");
    assert_eq!((lab.downs("host2"), lab.downs("host3")), (0, 0), "{}", lab.output());
    lab.check();
}

#[test]
fn an_asymmetric_partition_keeps_the_largest_fully_connected_set() {
    // host1 and host3 stop hearing each other; host2 hears both. {host1,
    // host2} and {host2, host3} are the largest fully connected sets: one
    // of host1 and host3 fences (the tie goes to the lower uuid's side),
    // host2 never does.
    let Some(lab) = netns_lab(3, 1) else { return };
    let vm = protect_on(&lab, "vm01", "host2");
    lab.link("block", "host1", "host3");
    lab.link("block", "host3", "host1");
    assert!(
        wait_for(FAILOVER, || lab.downs("host1") + lab.downs("host3") >= 1),
        "neither host1 nor host3 fenced:\n{}",
        lab.output()
    );
    std::thread::sleep(Duration::from_secs(2 * T));
    let uuid = |h: &str| host_field(&lab, h, "uuid");
    let (keep, lose) = if uuid("host1") < uuid("host3") {
        ("host1", "host3")
    } else {
        ("host3", "host1")
    };
    assert_eq!(
        (lab.downs("host2"), lab.downs(keep)),
        (0, 0),
        "only {lose} may fence:\n{}",
        lab.output()
    );
    assert!(lab.downs(lose) >= 1);
    // When the loser was the master, the pool reports again once a new one
    // is elected; vm01 must still be on host2.
    assert!(
        wait_for(FAILOVER, || running_on(&lab, &vm).as_deref() == Some("host2")),
        "vm01 is not reported running on host2:\n{}",
        lab.output()
    );
    assert_one_writer_at_a_time(&lab.sr_dir(), &vm);
    lab.link("unblock", "host1", "host3");
    lab.link("unblock", "host3", "host1");
    assert!(
        wait_for(FAILOVER, || (1..=3).all(|i| live(&lab, &format!("host{i}")))),
        "{lose} did not rejoin:\n{}",
        lab.post_mortem()
    );
    lab.check();
}

#[test]
fn a_cold_start_with_the_network_down_starts_every_protected_vm_once() {
    let Some(lab) = netns_lab(3, 3) else { return };
    let vms: Vec<String> = ["vm01", "vm02", "vm03"]
        .iter()
        .zip(["host1", "host2", "host3"])
        .map(|(vm, host)| protect_on(&lab, vm, host))
        .collect();
    // The whole pool loses power; it boots with every cable pulled.
    for i in 1..=3 {
        lab.fault("power-off", &format!("host{i}"));
    }
    for i in 1..=3 {
        lab.fault("cut-network", &format!("host{i}"));
    }
    let before: Vec<usize> = vms.iter().map(|vm| records_of(&lab.sr_dir(), vm).len()).collect();
    for i in 1..=3 {
        lab.fault("power-on", &format!("host{i}"));
    }
    std::thread::sleep(Duration::from_secs(3 * T));
    // Nobody may start a VM without the pool: no guest wrote meanwhile.
    for (vm, n) in vms.iter().zip(&before) {
        assert_eq!(
            records_of(&lab.sr_dir(), vm).len(),
            *n,
            "{vm} ran with the network down"
        );
    }
    for i in 1..=3 {
        lab.fault("restore-network", &format!("host{i}"));
    }
    assert!(
        wait_for(3 * FAILOVER, || vms.iter().all(|vm| running_on(&lab, vm).is_some())),
        "the protected VMs did not all start:\n{}",
        lab.post_mortem()
    );
    std::thread::sleep(Duration::from_secs(2));
    // Exactly once: after the cold start each disk has one writer, and it
    // is where the pool says the VM runs.
    for (vm, n) in vms.iter().zip(&before) {
        let recs = records_of(&lab.sr_dir(), vm);
        let writers: std::collections::BTreeSet<&str> = recs[*n..].iter().map(|r| r.host_uuid.as_str()).collect();
        let host = running_on(&lab, vm).unwrap();
        assert_eq!(
            writers.into_iter().collect::<Vec<_>>(),
            vec![host_field(&lab, &host, "uuid").as_str()],
            "{vm}"
        );
    }
    lab.check();
}
