//! Hostile input (issue 26), probed as an attacker on the management
//! network would: no pool secret, only what crosses the wire.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::util::{live, vm_uuid, wait_for, wire, Lab, FAILOVER, HA_T as T};

/// Host `i`'s log (its `xapid`'s output).
fn log(lab: &Lab, i: usize) -> String {
    std::fs::read_to_string(lab.host_data_dir(i).join("xapid.log")).unwrap_or_default()
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
    // The agents log hosts by name, not by their index in the engine.
    assert!(
        log(&lab, 3).contains("HA: starting as host host3 ("),
        "{}",
        log(&lab, 3)
    );
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
    let joined = "{host3} joined";
    for (k, i) in [1, 2].into_iter().enumerate() {
        let since = log(&lab, i).split_off(logged[k]);
        assert!(
            !since.contains(joined),
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

/// What the attacker of
/// [`idle_and_slow_connections_neither_fence_a_member_nor_slow_the_api`]
/// saw.
#[derive(Debug, Default)]
struct Flood {
    /// Idle connections opened (again, once the server closed them).
    idle_opened: usize,
    /// Idle connections the server closed (at its caps or after its
    /// header timeout).
    idle_closed: usize,
    /// Connections that could not be made within a second.
    failed: usize,
    /// Slowloris connections made, and how long each lasted before the
    /// server closed it (`None`: still open at the end).
    slow_lasted: Vec<Option<Duration>>,
}

/// Is `s` (non-blocking) closed by its peer?
fn peer_closed(s: &mut std::net::TcpStream) -> bool {
    use std::io::Read;
    let mut buf = [0u8; 512];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

/// Connect to `to` from `from` (a loopback address), within a second.
fn connect_from(rt: &tokio::runtime::Runtime, from: Ipv4Addr, to: std::net::SocketAddr) -> Option<std::net::TcpStream> {
    rt.block_on(async {
        let s = tokio::net::TcpSocket::new_v4().ok()?;
        s.bind((from, 0).into()).ok()?;
        let s = tokio::time::timeout(Duration::from_secs(1), s.connect(to))
            .await
            .ok()?
            .ok()?;
        s.into_std().ok() // non-blocking
    })
}

/// For `length`: `slow` slowloris connections (a request head that never
/// ends, a byte every 2 s) from 10 addresses, then `idle` silent ones from
/// 40 more, each opened again when the server closes it (at most 300 a
/// second). Every address is in 127.253/16 or 127.254/16, which no lab uses.
fn flood(to: std::net::SocketAddr, idle: usize, slow: usize, length: Duration) -> Flood {
    use std::io::Write;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let start = Instant::now();
    let mut out = Flood::default();
    let slow_from = |k: usize| Ipv4Addr::new(127, 254, 0, 1 + (k % 10) as u8);
    let idle_from = |k: usize| Ipv4Addr::new(127, 253, 0, 1 + (k % 40) as u8);
    let mut slows: Vec<(Option<std::net::TcpStream>, Instant)> = Vec::new();
    for k in 0..slow {
        match connect_from(&rt, slow_from(k), to) {
            Some(mut s) => {
                let _ = s.write_all(b"POST /jsonrpc HTTP/1.1\r\nHost: pool\r\nX-Slow: ");
                slows.push((Some(s), Instant::now()));
            }
            None => out.failed += 1,
        }
    }
    out.slow_lasted = vec![None; slows.len()];
    let mut idles: Vec<Option<std::net::TcpStream>> = (0..idle).map(|_| None).collect();
    let mut round = 0u64;
    while start.elapsed() < length {
        // Open again (or for the first time) what the server closed.
        let mut opened = 0;
        for (k, slot) in idles.iter_mut().enumerate() {
            if let Some(s) = slot {
                if peer_closed(s) {
                    *slot = None;
                    out.idle_closed += 1;
                }
            }
            if slot.is_none() && (round == 0 || opened < 300) && start.elapsed() < length {
                *slot = connect_from(&rt, idle_from(k), to);
                match slot {
                    Some(_) => opened += 1,
                    None => out.failed += 1,
                }
            }
        }
        out.idle_opened += opened;
        // A byte more of each slow head, every other second.
        for (k, (slot, since)) in slows.iter_mut().enumerate() {
            if let Some(s) = slot {
                let gone = peer_closed(s) || (round % 2 == 0 && s.write_all(b"a").is_err());
                if gone {
                    out.slow_lasted[k] = Some(since.elapsed());
                    *slot = None;
                }
            }
        }
        round += 1;
        std::thread::sleep(Duration::from_secs(1).min(length.saturating_sub(start.elapsed())));
    }
    out
}

#[test]
fn idle_and_slow_connections_neither_fence_a_member_nor_slow_the_api() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    const FLOOD: Duration = Duration::from_secs(30);
    // This process holds the attacker's end of every connection.
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    let files = getrlimit(Resource::RLIMIT_NOFILE).map_or(soft, |(s, _)| s);
    let (mut idle, slow) = if files >= 2_600 { (2_000, 200) } else { (1_000, 100) };
    // A longer run by hand: HOSTILE_IDLE=5000 (the figure).
    if let Some(n) = std::env::var("HOSTILE_IDLE").ok().and_then(|n| n.parse::<usize>().ok()) {
        idle = n.min((files as usize).saturating_sub(slow + 200));
    }
    let lab = Lab::start_ha(3, 0, &[]);
    let member = 2;
    let pid = lab.host_pid(member);
    // The usual 1,024 open files (xapid raised its soft limit to the hard
    // one at start; its caps follow the limit as it is now: a quarter).
    let lowered = std::process::Command::new("prlimit")
        .args([format!("--pid={pid}"), "--nofile=1024:1024".into()])
        .status()
        .is_ok_and(|s| s.success());
    eprintln!(
        "member's open files: {}",
        if lowered {
            "1024 (prlimit)"
        } else {
            "not lowered (no prlimit)"
        }
    );
    let to: std::net::SocketAddr = format!("{}:{}", lab.host_address(member), lab.port).parse().unwrap();
    let fds = || std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    let fds_before = fds();
    let attacker = std::thread::spawn(move || flood(to, idle, slow, FLOOD));
    let mut took = Vec::new();
    let mut failed = Vec::new();
    let mut fds_max = 0;
    // Bounded twice: by the attacker's end and by a count of calls.
    while !attacker.is_finished() && took.len() < 300 {
        let start = Instant::now();
        let r = lab.xe_on(member, &["host-list", "params=uuid", "--minimal"]);
        took.push(start.elapsed());
        if r.code != 0 {
            failed.push(r.stderr);
        }
        fds_max = fds_max.max(fds());
        std::thread::sleep(Duration::from_millis(200));
    }
    let seen = attacker.join().expect("the attacker");
    took.sort();
    let median = took[took.len() / 2];
    let slow_closed: Vec<Duration> = seen.slow_lasted.iter().flatten().copied().collect();
    eprintln!(
        "xe host-list on the member under the flood: {} calls, median {median:?}, max {:?}, {} failed; \
         member descriptors {fds_before} before, at most {fds_max} during; attacker: {} idle opened, \
         {} closed by the server, {} connects failed; slowloris: {} of {} closed, the last after {:?}",
        took.len(),
        took.last().unwrap(),
        failed.len(),
        seen.idle_opened,
        seen.idle_closed,
        seen.failed,
        slow_closed.len(),
        seen.slow_lasted.len(),
        slow_closed.iter().max(),
    );
    assert!(took.len() >= 20, "only {} calls in the flood", took.len());
    assert!(failed.is_empty(), "xe failed under the flood: {failed:?}");
    // The issue asks < 100 ms; a loaded CI machine gets some slack.
    assert!(median < Duration::from_secs(1), "median xe call {median:?}");
    // The member kept its connections down to its caps: a quarter of its
    // 1,024 files for the API (at most 2,048 when not lowered), the rest as
    // before.
    let cap = if lowered { 256 } else { 2048 };
    assert!(
        fds_max <= fds_before + cap + 64,
        "{fds_max} descriptors open on the member"
    );
    assert!(
        seen.idle_opened >= idle,
        "the attacker opened only {} connections",
        seen.idle_opened
    );
    assert!(seen.idle_closed > 0, "the server closed no idle connection");
    assert!(!seen.slow_lasted.is_empty());
    assert_eq!(
        slow_closed.len(),
        seen.slow_lasted.len(),
        "slowloris connections still open after {FLOOD:?}"
    );
    // Counted, not logged one by one.
    let warned = log(&lab, member).matches("API connections refused or closed").count();
    assert!(
        (1..=(FLOOD.as_secs() / 10 + 2) as usize).contains(&warned),
        "{warned} refusal lines"
    );
    assert_eq!(live(&lab, 1, "host2"), Some(true), "{}", lab.post_mortem());
    for host in ["host1", "host2", "host3"] {
        assert_eq!(lab.downs(host), 0, "{host} went down:\n{}", lab.output());
    }
    lab.check();
}
