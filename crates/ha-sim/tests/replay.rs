//! An attacker on the management network replays captured heartbeats
//! (issue 26): it has no key, so it can only send packets it saw, to the
//! host they were sent to, late and in any order. The engine refuses any
//! heartbeat not later than the last it accepted from that sender, and
//! takes a host back into the liveset only on statefile evidence.

use ha_sim::schedule::{self, Options};

fn attacked() -> Options {
    Options {
        replay: true,
        ..Options::default()
    }
}

#[test]
fn replayed_heartbeats_break_nothing() {
    for seed in 9_100_000..9_100_150 {
        let r = schedule::run_opts(seed, None, 300_000, attacked(), |_| {}).expect("valid timeout");
        assert_eq!(
            r.violation, None,
            "seed {seed} under replay: ha-sim --seed {seed} --replay --trace"
        );
    }
}

/// Power host 2 of 3 off at 30 s with the attacker replaying from the
/// start. How long host 2 stays in an online host's liveset (the last
/// moment one holds it, over two minutes: a replay may bring it back),
/// and how many times the two healthy hosts fenced.
fn after_power_off(guard: bool, attack: bool) -> (u64, usize) {
    let mut w = ha_sim::World::with_config(3, schedule::T_S, 7, |c| c.replay_guard = guard).expect("valid timeout");
    if attack {
        w.replayer = Some(ha_sim::world::Replayer::new(7));
    }
    w.run_until(30_000).expect("formed");
    assert_eq!(w.hosts[0].engine.liveset(), ha_liveness::HostSet::first(3));
    w.power_off(2);
    let off = w.now;
    let mut last_held = off;
    while w.now < off + 120_000 {
        w.run_until(w.now + 500).expect("no violation");
        if (0..2).any(|i| w.hosts[i].engine.is_online() && w.hosts[i].engine.liveset().contains(2)) {
            last_held = w.now;
        }
    }
    (last_held - off, w.hosts[0].fences.len() + w.hosts[1].fences.len())
}

#[test]
fn a_dead_host_leaves_at_the_normal_time_however_its_heartbeats_are_replayed() {
    let (normal, fences) = after_power_off(true, false);
    assert!(
        normal < 60_000 && fences == 0,
        "without an attack: dropped after {normal} ms, {fences} fences"
    );
    let (attacked, fences) = after_power_off(true, true);
    assert_eq!(fences, 0, "a healthy host fenced under replay");
    assert!(
        attacked <= normal + 2_000,
        "dropped after {attacked} ms under replay, {normal} ms without"
    );
    // The same attack on an engine without the guard: the dead host's
    // replayed heartbeats keep it in the hbdomain while its slot ages,
    // and the healthy hosts' rounds never agree: they fence.
    let (unguarded, fences) = after_power_off(false, true);
    assert!(
        fences > 0 || unguarded > normal + 10_000,
        "unguarded: dropped after {unguarded} ms and {fences} fences, {normal} ms without an attack"
    );
}
