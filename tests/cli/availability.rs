//! A fault of one host costs at most that host (T = 5 s): a second power-off
//! while the survivors handle the first, a storage stall and a freeze of
//! `xapid` just shorter than T. Before the fault-handler rules were fixed,
//! each of these could fence healthy hosts, or the whole pool.

use std::time::Duration;

use crate::util::{host_field, wait_for, Lab, FAILOVER, HA_T as T};

fn vm_uuid(lab: &Lab, name: &str) -> String {
    lab.xe_min(&["vm-list", &format!("name-label={name}"), "params=uuid"])
}

fn host_uuid(lab: &Lab, name: &str) -> String {
    lab.xe_min(&["host-list", &format!("name-label={name}"), "params=uuid"])
}

/// The host `vm` runs on, by the pool (any host that answers).
fn resident(lab: &Lab, vm: &str) -> Option<String> {
    let power = lab.xe_any_min(&["vm-list", &format!("uuid={vm}"), "params=power-state"])?;
    let on = lab.xe_any_min(&["vm-list", &format!("uuid={vm}"), "params=resident-on"])?;
    (power == "running").then_some(on)
}

#[test]
fn a_second_power_off_during_the_failover_fences_no_survivor() {
    // A rack failing host by host: host5 loses power, then host4 one T
    // later, while the survivors are still handling the first failure.
    // Both protected VMs come back on the three survivors; none fences.
    let lab = Lab::start_ha(5, 2, &[]);
    let (a, b) = (vm_uuid(&lab, "vm01"), vm_uuid(&lab, "vm02"));
    for (vm, host) in [(&a, "host4"), (&b, "host5")] {
        lab.xe_ok(&["vm-param-set", &format!("uuid={vm}"), "ha-restart-priority=restart"]);
        lab.xe_ok(&["vm-start", &format!("uuid={vm}"), &format!("on={host}")]);
    }
    let dead = [host_uuid(&lab, "host4"), host_uuid(&lab, "host5")];
    lab.fault("power-off", "host5");
    std::thread::sleep(Duration::from_millis(T * 1000 + 1000));
    lab.fault("power-off", "host4");
    let back = || {
        [&a, &b]
            .iter()
            .all(|vm| resident(&lab, vm).is_some_and(|h| !dead.contains(&h)))
    };
    assert!(
        wait_for(2 * FAILOVER, back),
        "the protected VMs did not come back on the survivors:\n{}",
        lab.output()
    );
    for h in ["host1", "host2", "host3"] {
        assert_eq!(lab.downs(h), 0, "{h} fenced:\n{}", lab.output());
    }
    lab.check();
}

#[test]
fn a_storage_stall_or_a_freeze_shorter_than_t_fences_no_other_host() {
    let lab = Lab::start_ha(4, 0, &[]);
    // Host2's storage stalls for 0.7 T: nobody fences, host2 included (it
    // reaches the others on the network).
    lab.fault("cut-storage", "host2");
    std::thread::sleep(Duration::from_millis(T * 700));
    lab.fault("restore-storage", "host2");
    std::thread::sleep(Duration::from_secs(4 * T));
    for h in ["host1", "host2", "host3", "host4"] {
        assert_eq!(lab.downs(h), 0, "{h} fenced after a storage stall:\n{}", lab.output());
    }
    // Host3's xapid is frozen for 0.9 T: it may fence as it wakes, the
    // others never.
    let pid = nix::unistd::Pid::from_raw(lab.host_pid(3) as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    std::thread::sleep(Duration::from_millis(T * 900));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    std::thread::sleep(Duration::from_secs(4 * T));
    for h in ["host1", "host2", "host4"] {
        assert_eq!(lab.downs(h), 0, "{h} fenced after host3 froze:\n{}", lab.output());
    }
}

/// Call `xe vm-list` and `xe vm-param-set` on the master every 200 ms until
/// `done` holds (at most `limit`), and return the calls that failed.
fn failed_calls(lab: &Lab, vm: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Vec<String> {
    let mut failed = Vec::new();
    let end = std::time::Instant::now() + limit;
    let mut n = 0;
    while std::time::Instant::now() < end && !done() {
        n += 1;
        let description = format!("name-description=call {n}");
        for args in [
            vec!["vm-list", "params=uuid,power-state", "--minimal"],
            vec!["vm-param-set", &format!("uuid={vm}"), &description],
        ] {
            let r = lab.xe(&args);
            if r.code != 0 {
                failed.push(format!("xe {}: {}", args.join(" "), r.stderr.trim()));
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    failed
}

#[test]
fn the_master_answers_reads_and_writes_through_a_failover_and_a_join() {
    // XAPI keeps serving while the pool handles a failure; so does the
    // master here, through host3's failover and its join once it is back.
    let lab = Lab::start_ha(3, 1, &[]);
    let vm = vm_uuid(&lab, "vm01");
    let live = |up: bool| host_field(&lab, "host3", "host-metrics-live") == up.to_string();
    lab.fault("power-off", "host3");
    let failed = failed_calls(&lab, &vm, FAILOVER, || !live(true));
    assert!(live(false), "host3 was not declared dead:\n{}", lab.output());
    assert!(failed.is_empty(), "calls failed during the failover: {failed:#?}");
    lab.fault("power-on", "host3");
    let failed = failed_calls(&lab, &vm, FAILOVER, || live(true));
    assert!(live(true), "host3 did not come back:\n{}", lab.output());
    // A few more calls after the join: the joiner's first statefile cycles.
    let end = std::time::Instant::now() + Duration::from_secs(2 * T);
    let after = failed_calls(&lab, &vm, Duration::from_secs(2 * T), || {
        std::time::Instant::now() > end
    });
    assert!(
        failed.is_empty() && after.is_empty(),
        "calls failed during the join: {failed:#?} {after:#?}"
    );
    for h in ["host1", "host2"] {
        assert_eq!(lab.downs(h), 0, "{h} fenced:\n{}", lab.output());
    }
}
