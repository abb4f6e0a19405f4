//! Hostile input (issue 26), probed as an attacker on the management
//! network would: no pool secret, only what crosses the wire.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::util::{wait_for, wire, Lab, FAILOVER, HA_T as T};

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
