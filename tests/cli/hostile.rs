//! Hostile input (issue 26), probed as an attacker on the management
//! network would: no pool secret, only what crosses the wire.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::util::{vm_uuid, wait_for, wire, Lab, FAILOVER, HA_T as T};

/// Host `name`'s liveness as the pool reports it, through host `via`.
fn live(lab: &Lab, via: usize, name: &str) -> Option<bool> {
    let r = lab.xe_on(
        via,
        &[
            "host-list",
            &format!("name-label={name}"),
            "params=host-metrics-live",
            "--minimal",
        ],
    );
    (r.code == 0).then(|| r.stdout.trim() == "true")
}

/// Host `i`'s log (its `xapid`'s output).
fn log(lab: &Lab, i: usize) -> String {
    std::fs::read_to_string(lab.host_data_dir(i).join("xapid.log")).unwrap_or_default()
}

/// Host `i`'s index in the HA engine (hosts sorted by UUID), from its log.
fn ha_index(lab: &Lab, i: usize) -> usize {
    let text = log(lab, i);
    let line = text
        .lines()
        .find(|l| l.contains("HA: starting as host "))
        .expect("the agent started");
    let rest = &line[line.find("starting as host ").unwrap() + "starting as host ".len()..];
    rest.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn replayed_heartbeats_of_a_powered_off_host_do_not_bring_it_back() {
    let lab = Lab::start_ha(3, 0, &[]);
    let host3: Ipv4Addr = lab.host_address(3).parse().unwrap();
    // Record host3's heartbeats to its peers for a while, as they cross
    // the loopback interface.
    let packets = match wire::capture_udp(host3, lab.port, Duration::from_secs(3 * T)) {
        Ok(p) => p,
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    assert!(
        packets.len() >= 4,
        "captured only {} heartbeats of host3",
        packets.len()
    );
    let index3 = ha_index(&lab, 3);
    let logged: Vec<usize> = [1, 2].iter().map(|&i| log(&lab, i).len()).collect();
    lab.fault("power-off", "host3");
    let off = Instant::now();
    // Send them again, every one every second or so, for the whole test.
    let gap = Duration::from_millis((1000 / packets.len() as u64).clamp(5, 250));
    let attacker = std::thread::spawn(move || wire::replay(&packets, FAILOVER, gap));
    assert!(
        wait_for(FAILOVER, || live(&lab, 1, "host3") == Some(false)),
        "host3 still live {:?} after its power-off under replay:\n{}",
        off.elapsed(),
        lab.output()
    );
    let dead_after = off.elapsed();
    // And it stays dead while the attacker keeps sending.
    let mut back_at = None;
    while !attacker.is_finished() {
        if live(&lab, 1, "host3") == Some(true) {
            back_at.get_or_insert(off.elapsed());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let sent = attacker.join().unwrap();
    eprintln!("host3 dead after {dead_after:?}; {sent} captured heartbeats sent again");
    assert!(sent > 50, "the attacker sent only {sent} packets");
    assert_eq!(back_at, None, "host3 came back under replay:\n{}", lab.output());
    // Nor does it come back into any host's liveset.
    let joined = format!("{{{index3}}} joined");
    for (k, i) in [1, 2].into_iter().enumerate() {
        let since = log(&lab, i).split_off(logged[k]);
        assert!(
            !since.contains(&joined),
            "host{i} took powered-off host3 back into its liveset on replayed heartbeats:\n{since}"
        );
    }
    // The normal detection and fence wait at T = 5 s take about 20 s.
    assert!(
        dead_after < Duration::from_secs(8 * T),
        "host3 was dropped only after {dead_after:?}"
    );
    assert_eq!(lab.downs("host1") + lab.downs("host2"), 0, "{}", lab.output());
    lab.check();
}

/// The refusal xe prints for `HA_OPERATION_WOULD_BREAK_FAILOVER_PLAN`.
const WOULD_BREAK: &str = "This operation cannot be performed because it would invalidate VM failover planning such that the system would be unable to guarantee to restart protected VMs after a Host failure.\n";

/// Issue 26, defects 2 and 4, replayed with the real `xe`: a memory size
/// near `i64::MAX` and 2^62 vCPUs are refused with XAPI's errors and
/// change nothing (they used to be taken, and the host's `memory_free`
/// wrapped), and `ha-always-run=true` goes through the same overcommit
/// check as `ha-restart-priority=restart` (it used to protect a VM
/// unchecked, leaving the pool overcommitted at `ha-plan-exists-for=0`).
#[test]
fn hostile_memory_sizes_and_unchecked_protection_are_refused() {
    // Two 2 GiB hosts, 768 MiB VMs. host1: vm01 (protected) and vm03;
    // host2: vm02; vm04 halted. If host1 fails, vm01 fits on host2; if
    // vm02 were protected and host2 failed, it would fit nowhere.
    let lab = Lab::start_ha(2, 4, &["--host-memory", "2147483648", "--vm-memory", "805306368"]);
    let pool = lab.xe_min(&["pool-list", "params=uuid"]);
    let vm01 = vm_uuid(&lab, "vm01");
    lab.xe_ok(&["vm-param-set", &format!("uuid={vm01}"), "ha-restart-priority=restart"]);
    lab.xe_ok(&[
        "pool-param-set",
        &format!("uuid={pool}"),
        "ha-host-failures-to-tolerate=1",
    ]);
    for (v, h) in [("vm01", "host1"), ("vm03", "host1"), ("vm02", "host2")] {
        lab.xe_ok(&["vm-start", &format!("vm={v}"), &format!("on={h}")]);
    }
    assert!(wait_for(Duration::from_secs(10), || lab
        .xe_min(&["pool-list", "params=ha-plan-exists-for"])
        == "1"));
    let state = |lab: &Lab| {
        let vms = lab.xe_min(&[
            "vm-list",
            "params=name-label,memory-static-max,VCPUs-max,memory-overhead,ha-always-run,ha-restart-priority,power-state",
        ]);
        let hosts = lab.xe_min(&["host-list", "params=name-label,memory-free"]);
        let pool = lab.xe_min(&["pool-list", "params=ha-plan-exists-for,ha-overcommitted"]);
        format!("{vms}\n{hosts}\n{pool}")
    };
    let before = state(&lab);

    // Defect 2: the probes on the halted VM.
    let vm04 = vm_uuid(&lab, "vm04");
    let r = lab.xe(&[
        "vm-param-set",
        &format!("uuid={vm04}"),
        "memory-static-max=9223372036854775000",
    ]);
    assert_eq!(
        (r.code, r.stderr.as_str()),
        (
            1,
            "You attempted to set a value that is not supported by this implementation. The fully-qualified field name and the value that you tried to set are returned. Also returned is a developer-only diagnostic reason.\n\
             field: memory_static_max\n\
             value: 9223372036854775000\n\
             reason: value greater than 17592186044416 bytes (16 TiB), the most memory a VM may have\n"
        )
    );
    let r = lab.xe(&["vm-param-set", &format!("uuid={vm04}"), "VCPUs-max=4611686018427387904"]);
    assert_eq!(
        (r.code, r.stderr.as_str()),
        (
            1,
            "You attempted to set a value that is not supported by this implementation. The fully-qualified field name and the value that you tried to set are returned. Also returned is a developer-only diagnostic reason.\n\
             field: VCPUs_max\n\
             value: 4611686018427387904\n\
             reason: value greater than 64, the most vCPUs a VM may have\n"
        )
    );
    let r = lab.xe(&["vm-param-set", &format!("uuid={vm04}"), "VCPUs-max=0"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.starts_with("The value given is invalid\n"), "{}", r.stderr);

    // Defect 4: protecting vm02 would leave it nowhere to go: refused
    // both ways, the deprecated field as the priority.
    let vm02 = vm_uuid(&lab, "vm02");
    for set in ["ha-always-run=true", "ha-restart-priority=restart"] {
        let r = lab.xe(&["vm-param-set", &format!("uuid={vm02}"), set]);
        assert_eq!((r.code, r.stderr.as_str()), (1, WOULD_BREAK), "{set}");
    }
    // Nothing changed, and the plan still holds.
    assert_eq!(state(&lab), before);
    assert_eq!(lab.xe_min(&["pool-list", "params=ha-plan-exists-for"]), "1");
    // A sane size is still taken.
    lab.xe_ok(&["vm-param-set", &format!("uuid={vm04}"), "VCPUs-max=2"]);
    assert_eq!(
        lab.xe_min(&["vm-param-get", &format!("uuid={vm04}"), "param-name=VCPUs-max"]),
        "2"
    );
}
