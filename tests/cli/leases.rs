//! VM leases on real processes (docs/LEASES.md): the lease follows a
//! protected VM through start, failover and shutdown in the files on the
//! SR, and a host asked directly to start a guest whose lease a live host
//! holds refuses, whatever the pool database or the liveset say.

use std::time::Duration;

use serde_json::{json, Value};

use crate::util::{assert_one_writer_at_a_time, records_of, running_on, vm_uuid, wait_for, Lab, FAILOVER, HA_T};

/// The owner files of `vm`: (host uuid, instance, released) per file.
fn owners(lab: &Lab, vm: &str) -> Vec<(String, u64, bool)> {
    let dir = lab.sr_dir().join("pool-ha-leases").join("vms").join(vm);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, u64, bool)> = entries
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "owner"))
        .filter_map(|e| {
            let v: Value = serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok()?;
            Some((
                v["owner"]["host"].as_str()?.to_string(),
                v["instance"].as_u64()?,
                v["released"].as_bool().unwrap_or(false),
            ))
        })
        .collect();
    out.sort_by_key(|o| std::cmp::Reverse(o.1));
    out
}

/// The owner of the highest instance any file names.
fn owner(lab: &Lab, vm: &str) -> Option<(String, u64, bool)> {
    owners(lab, vm).into_iter().next()
}

/// A 3-host HA lab with vm01 protected and started on `host`.
fn protected_vm_on(host: &str) -> (Lab, String) {
    let lab = Lab::start_ha(3, 1, &[]);
    let vm = vm_uuid(&lab, "vm01");
    lab.xe_ok(&["vm-param-set", &format!("uuid={vm}"), "ha-restart-priority=restart"]);
    lab.xe_ok(&["vm-start", "vm=vm01", &format!("on={host}")]);
    (lab, vm)
}

fn host_uuid(lab: &Lab, name: &str) -> String {
    lab.xe_min(&["host-list", &format!("name-label={name}"), "params=uuid"])
}

#[test]
fn the_lease_follows_a_protected_vm_and_a_live_owner_keeps_it() {
    let (lab, vm) = protected_vm_on("host1");
    let uuids: Vec<String> = (1..=3).map(|i| host_uuid(&lab, &format!("host{i}"))).collect();
    let (host1, host2) = (uuids[0].clone(), uuids[1].clone());
    assert!(
        wait_for(Duration::from_secs(10), || owner(&lab, &vm)
            .is_some_and(|o| o.0 == host1 && !o.2)),
        "no lease for host1: {:?}",
        owners(&lab, &vm)
    );

    // host2, asked directly (as a second master would) to start a guest
    // of the VM host1 runs, refuses: host1 renews its host lease.
    let secret = std::fs::read_to_string(lab.host_data_dir(2).join("pool-secret")).expect("a pool secret");
    let secret = secret.trim_end();
    let session = lab.call(2, "session.slave_login", json!([host2, secret]));
    let session = session["result"].as_str().expect("a member session").to_string();
    assert!(wait_for(Duration::from_secs(5), || !records_of(&lab.sr_dir(), &vm).is_empty()));
    let disk = std::fs::read_dir(lab.sr_dir())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.extension().is_some_and(|x| x == "disk")
                && pool_master::driver::read_records(p)
                    .unwrap_or_default()
                    .iter()
                    .any(|r| r.vm_uuid == vm)
        })
        .expect("the VM's disk");
    let answer = lab.call(
        2,
        "host.local_vm_start",
        json!([session, vm, [disk.display().to_string()], -1]),
    );
    let error = answer["error"].to_string();
    assert!(
        error.contains("VM_LEASE_HELD") && error.contains(&host1),
        "host2 started a guest of a VM whose lease host1 holds: {answer}"
    );
    assert!(records_of(&lab.sr_dir(), &vm).iter().all(|r| r.host_uuid == host1));

    // host1 dies: the VM restarts elsewhere under the next instance.
    lab.fault("power-off", "host1");
    assert!(
        wait_for(FAILOVER, || running_on(&lab, &vm).is_some_and(|h| h != "host1")),
        "the VM did not come back:\n{}",
        lab.output()
    );
    let now_on = running_on(&lab, &vm).unwrap();
    let now_on = uuids[now_on.trim_start_matches("host").parse::<usize>().unwrap() - 1].clone();
    assert!(
        wait_for(Duration::from_secs(5), || owner(&lab, &vm)
            .is_some_and(|o| o.0 == now_on && o.1 >= 2 && !o.2)),
        "the lease did not move with the VM: {:?}",
        owners(&lab, &vm)
    );

    // A shutdown lets it go (through the new master).
    let shutdown = lab.xe_any_min(&["vm-shutdown", "vm=vm01", "--force"]);
    assert!(shutdown.is_some(), "no host took the shutdown:\n{}", lab.output());
    assert!(
        wait_for(Duration::from_secs(5), || owner(&lab, &vm)
            .is_some_and(|o| o.0 == now_on && o.2)),
        "the lease was not released: {:?}",
        owners(&lab, &vm)
    );
    assert_one_writer_at_a_time(&lab.sr_dir(), &vm);
    lab.check();

    // An uninstalled (destroyed) VM's lease files go with it.
    let dir = lab.sr_dir().join("pool-ha-leases").join("vms").join(&vm);
    assert!(dir.exists());
    assert!(
        lab.xe_any_min(&["vm-uninstall", &format!("uuid={vm}"), "--force"])
            .is_some(),
        "no host took the uninstall:\n{}",
        lab.output()
    );
    assert!(
        wait_for(Duration::from_secs(5), || !dir.exists()),
        "the lease files of the destroyed VM stay: {} {:?}\n{}",
        dir.display(),
        std::fs::read_dir(&dir).map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>()),
        lab.output()
    );
}

#[test]
fn a_host_cut_from_storage_stays_and_its_protected_vm_restarts_elsewhere_at_once() {
    // host2 loses the SR but reaches every host: the liveset keeps it, its
    // guest pauses when its lease lapses, and the master restarts the VM
    // elsewhere then, without waiting for a liveset change that never
    // comes. With storage back, host2's resume check finds the VM taken
    // and kills its paused guest.
    let (lab, vm) = protected_vm_on("host2");
    let host2 = host_uuid(&lab, "host2");
    assert!(wait_for(Duration::from_secs(10), || owner(&lab, &vm)
        .is_some_and(|o| o.0 == host2)));
    lab.fault("cut-storage", "host2");
    assert!(
        wait_for(FAILOVER, || running_on(&lab, &vm).is_some_and(|h| h != "host2")),
        "the VM did not restart away from host2:\n{}",
        lab.output()
    );
    assert_eq!(lab.downs("host2"), 0, "host2 fenced:\n{}", lab.output());
    assert_eq!(
        lab.xe_min(&["host-list", "name-label=host2", "params=host-metrics-live"]),
        "true",
        "host2 left the pool"
    );
    let now_on = host_uuid(&lab, &running_on(&lab, &vm).unwrap());
    assert!(
        wait_for(Duration::from_secs(10), || records_of(&lab.sr_dir(), &vm)
            .last()
            .is_some_and(|r| r.host_uuid == now_on)),
        "the new host does not write the VM's disk"
    );
    // Long enough for the liveset to keep host2 without the statefile
    // and for host2 to see it: a member under leases does not fence for
    // paused guests (SM_STORAGE_LOST_UNDER_VMS is the master's only).
    std::thread::sleep(Duration::from_secs(4 * HA_T));
    assert_eq!(lab.downs("host2"), 0, "host2 fenced:\n{}", lab.output());
    lab.fault("restore-storage", "host2");
    let n = records_of(&lab.sr_dir(), &vm).len();
    assert!(wait_for(Duration::from_secs(10), || records_of(&lab.sr_dir(), &vm)
        .len()
        > n + 20));
    assert!(
        records_of(&lab.sr_dir(), &vm)[n..]
            .iter()
            .all(|r| r.host_uuid == now_on),
        "host2's guest wrote after its storage came back"
    );
    assert_eq!(
        lab.xe_min(&["host-list", "name-label=host2", "params=resident-vms"]),
        ""
    );
    assert_eq!(lab.downs("host2"), 0, "host2 fenced:\n{}", lab.output());
    assert_one_writer_at_a_time(&lab.sr_dir(), &vm);
    lab.check();
}

#[test]
fn a_host_that_fences_leaves_the_fencing_mark_and_its_vm_is_taken_from_it() {
    // host2 loses its network: it fences (the others hold the majority),
    // and with its storage still there it marks its lease fenced after its
    // guests are gone, so its VM's next host takes the lease from a boot
    // that fenced instead of waiting for it to expire.
    let (lab, vm) = protected_vm_on("host2");
    let host2 = host_uuid(&lab, "host2");
    let lease = lab
        .sr_dir()
        .join("pool-ha-leases")
        .join("hosts")
        .join(format!("{host2}.lease"));
    let read = || -> Option<Value> { serde_json::from_slice(&std::fs::read(&lease).ok()?).ok() };
    assert!(
        wait_for(Duration::from_secs(10), || read().is_some()),
        "host2 has no lease file"
    );
    let boot = read().unwrap()["boot"].as_u64().unwrap();
    lab.fault("cut-network", "host2");
    let marked = wait_for(FAILOVER, || {
        read().is_some_and(|l| l["fenced"] == json!(true) && l["boot"].as_u64() == Some(boot))
    });
    assert!(marked, "host2's lease file shows no fencing mark:\n{}", lab.output());
    lab.wait_fenced("host2");
    assert!(
        wait_for(FAILOVER, || running_on(&lab, &vm).is_some_and(|h| h != "host2")),
        "the VM did not restart away from host2:\n{}",
        lab.output()
    );
    lab.fault("restore-network", "host2");
    assert_one_writer_at_a_time(&lab.sr_dir(), &vm);
    lab.check();
}
