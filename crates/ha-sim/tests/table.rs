//! The failure tables, end to end: real engines in the simulated world, one
//! fault each, checked against the seeds' and the reference's answers.
#![allow(clippy::unwrap_used)]

use ha_liveness::{Event, FenceCode, HostSet, Phase, Status};
use ha_sim::world::FenceCause;
use ha_sim::World;

const T: u64 = 10;

fn set(v: &[usize]) -> HostSet {
    v.iter().copied().collect()
}

/// A pool with HA enabled and its liveset formed.
fn pool(n: usize) -> World {
    let mut w = World::new(n, T, 1).unwrap();
    w.run_until(30_000).unwrap();
    assert_eq!(w.online(), HostSet::first(n), "every host online after enable");
    for i in 0..n {
        assert_eq!(w.hosts[i].engine.liveset(), HostSet::first(n));
    }
    w
}

/// Run for `ms`, printing the trace on a violation.
fn run(w: &mut World, ms: u64) {
    let until = w.now + ms;
    if let Err(v) = w.run_until(until) {
        for line in w.trace.as_deref().unwrap_or_default() {
            eprintln!("{line}");
        }
        panic!("{v}");
    }
}

/// No host fenced; else say which did, and why.
fn assert_nobody_fenced(w: &World) {
    let why: Vec<String> = w
        .hosts
        .iter()
        .enumerate()
        .filter(|(_, h)| !h.fences.is_empty())
        .map(|(i, h)| format!("host {i}: {:?}", h.fences))
        .collect();
    assert_eq!(w.fenced(), HostSet::EMPTY, "{}", why.join("; "));
}

fn livesets(w: &World, hosts: &[usize]) -> Vec<HostSet> {
    hosts.iter().map(|&i| w.hosts[i].engine.liveset()).collect()
}

#[test]
fn lost_both_heartbeats_the_others_drop_it() {
    let mut w = pool(3);
    w.power_off(2);
    run(&mut w, 60_000);
    assert_eq!(livesets(&w, &[0, 1]), vec![set(&[0, 1]); 2]);
    assert_eq!(w.fenced(), HostSet::EMPTY, "nobody fenced: host 2 is simply dead");
}

#[test]
fn lost_storage_only_it_stays_with_the_majority() {
    let mut w = pool(3);
    w.set_storage(2, false);
    run(&mut w, 90_000);
    assert_eq!(w.fenced(), HostSet::EMPTY, "{:?}", w.hosts[2].fences);
    assert_eq!(w.online(), set(&[0, 1, 2]));
    assert_eq!(livesets(&w, &[0, 1, 2]), vec![set(&[0, 1, 2]); 3]);
    assert!(w.hosts[2].engine.storage_lost());
    w.set_storage(2, true);
    run(&mut w, 30_000);
    assert!(!w.hosts[2].engine.storage_lost());
    assert_eq!(w.fenced(), HostSet::EMPTY);
}

#[test]
fn lost_storage_alone_it_fences() {
    let mut w = pool(3);
    w.set_storage(2, false);
    w.set_network(2, false);
    run(&mut w, 90_000);
    assert_eq!(w.fenced(), set(&[2]));
    assert_eq!(livesets(&w, &[0, 1]), vec![set(&[0, 1]); 2]);
}

#[test]
fn lost_network_only_it_fences() {
    let mut w = pool(3);
    w.set_network(2, false);
    run(&mut w, 60_000);
    assert_eq!(w.fenced(), set(&[2]));
    assert!(matches!(
        w.hosts[2].fences[0].cause,
        FenceCause::Engine(FenceCode::SurvivalRuleFailed | FenceCode::FaultHandlerTimeout)
    ));
    assert_eq!(livesets(&w, &[0, 1]), vec![set(&[0, 1]); 2]);
}

#[test]
fn equal_partitions_the_lower_uuid_survives() {
    let mut w = pool(2);
    w.partition(set(&[0]));
    run(&mut w, 60_000);
    assert_eq!(w.fenced(), set(&[1]));
    assert_eq!(w.hosts[0].engine.liveset(), set(&[0]));
    assert!(matches!(w.status(0), Status::Online));
}

#[test]
fn everyone_lost_the_statefile_nobody_fences() {
    let mut w = pool(3);
    for i in 0..3 {
        w.set_storage(i, false);
    }
    run(&mut w, 90_000);
    assert_eq!(w.fenced(), HostSet::EMPTY);
    assert_eq!(w.online(), set(&[0, 1, 2]));
    for i in 0..3 {
        assert!(w.hosts[i].engine.surviving_by_rule2(), "host {i} under rule 2");
    }
    for i in 0..3 {
        w.set_storage(i, true);
    }
    run(&mut w, 30_000);
    for i in 0..3 {
        assert!(!w.hosts[i].engine.surviving_by_rule2(), "host {i} left rule 2");
    }
}

#[test]
fn storage_lost_everywhere_and_a_partition_everyone_fences() {
    let mut w = pool(3);
    for i in 0..3 {
        w.set_storage(i, false);
    }
    w.partition(set(&[2]));
    run(&mut w, 90_000);
    assert_eq!(w.fenced(), set(&[0, 1, 2]));
}

#[test]
fn a_frozen_host_that_wakes_up_fences_before_acting() {
    let mut w = pool(3);
    w.freeze(2, 4 * T * 1000);
    // Dropped once its watchdog must have fired, before it wakes up...
    run(&mut w, 4 * T * 1000 - 1_000);
    assert_eq!(livesets(&w, &[0, 1]), vec![set(&[0, 1]); 2]);
    // ...and on waking it goes down instead of acting.
    run(&mut w, 3_000);
    assert_eq!(w.fenced(), set(&[2]));
}

#[test]
fn the_master_lock_moves_when_the_master_dies() {
    let mut w = pool(3);
    run(&mut w, 10_000);
    assert_eq!(w.hosts[0].engine.lock_holder(), Some(0));
    assert!(w.hosts[0].engine.holds_master_lock());
    // Every host reads the holder in the global block, even though they
    // all wrote the block when the pool state went active.
    for h in &w.hosts {
        assert_eq!(h.engine.global().and_then(|g| g.master), Some(0));
    }
    w.power_off(0);
    run(&mut w, 60_000);
    assert_eq!(w.hosts[1].engine.lock_holder(), Some(1));
    assert_eq!(w.hosts[2].engine.lock_holder(), Some(1));
}

#[test]
fn the_master_lock_moves_when_the_master_dies_while_a_member_has_no_storage() {
    // Host 2 cannot write its slot, so it cannot grant: it must not hold
    // up the election (issue 28: no master, no restarts).
    let mut w = pool(3);
    run(&mut w, 10_000);
    w.set_storage(2, false);
    run(&mut w, 30_000);
    assert!(w.hosts[2].engine.storage_lost(), "host 2 is kept without storage");
    assert!(!w.hosts[2].engine.holds_master_lock());
    w.power_off(0);
    run(&mut w, 60_000);
    assert_eq!(w.hosts[1].engine.lock_holder(), Some(1));
    assert!(w.hosts[1].engine.holds_master_lock());
    assert!(!w.hosts[2].engine.holds_master_lock());
    // Its storage back, host 2 grants the master it finds.
    w.set_storage(2, true);
    run(&mut w, 20_000);
    assert_eq!(w.hosts[2].engine.lock_holder(), Some(1));
    assert_nobody_fenced(&w);
}

#[test]
fn a_fenced_host_rejoins_after_reboot() {
    let mut w = pool(3);
    w.set_network(2, false);
    run(&mut w, 40_000);
    assert_eq!(w.fenced(), set(&[2]));
    w.set_network(2, true);
    run(&mut w, 60_000);
    assert_eq!(w.online(), set(&[0, 1, 2]));
    assert_eq!(livesets(&w, &[0, 1, 2]), vec![set(&[0, 1, 2]); 3]);
}

#[test]
fn disabling_ha_stops_every_engine() {
    let mut w = pool(3);
    w.send(0, ha_liveness::Event::SetPoolState(ha_liveness::PoolState::Invalid));
    run(&mut w, 20_000);
    for i in 0..3 {
        assert!(!w.hosts[i].engine.is_running(), "host {i} stopped");
        assert!(!w.hosts[i].armed, "host {i} disarmed");
    }
}

#[test]
fn the_checkers_catch_a_broken_survival_rule() {
    // Everyone believes it wins: a network split must show up as a violation.
    let mut w = World::with_config(3, T, 1, |c| c.survival = |_| ha_liveness::rules::Outcome::WonOutright).unwrap();
    w.run_until(30_000).unwrap();
    w.partition(set(&[2]));
    let err = w.run_until(120_000).unwrap_err();
    assert!(
        err.what.contains("dropped") || err.what.contains("split brain") || err.what.contains("master"),
        "{err}"
    );
}

#[test]
fn a_host_that_leaves_cleanly_is_dropped_without_a_fault() {
    let mut w = pool(3);
    run(&mut w, 10_000);
    w.send(2, Event::Leave);
    run(&mut w, 200);
    w.power_off(2);
    run(&mut w, 2_000);
    assert_eq!(w.hosts[0].engine.liveset(), set(&[0, 1]));
    // A quick reboot, well within T.
    w.power_on(2);
    run(&mut w, 30_000);
    assert_eq!(w.fenced(), set(&[]), "a quick reboot after a clean leave");
    assert_eq!(w.hosts[0].engine.liveset(), set(&[0, 1, 2]));
    w.send(2, Event::Leave);
    run(&mut w, 200);
    w.power_off(2);
    run(&mut w, 30_000);
    assert_eq!(w.fenced(), set(&[]), "nobody fences for a planned departure");
    assert_eq!(w.hosts[0].engine.liveset(), set(&[0, 1]));
    assert_eq!(w.hosts[1].engine.liveset(), set(&[0, 1]));
    // It comes back and rejoins.
    w.power_on(2);
    run(&mut w, 30_000);
    assert_eq!(w.hosts[0].engine.liveset(), set(&[0, 1, 2]));
    assert_eq!(w.fenced(), set(&[]));
}

#[test]
fn an_asymmetric_partition_keeps_the_largest_fully_connected_set() {
    // 0 and 2 stop hearing each other; 1 still hears both. {0,1} and {1,2}
    // are the largest fully connected sets; the tie goes to the lower index.
    let mut w = pool(3);
    w.cut_link(0, 2);
    w.cut_link(2, 0);
    run(&mut w, 90_000);
    assert_eq!(w.fenced(), set(&[2]), "only host 2 fences: {:?}", w.hosts[0].fences);
    assert_eq!(livesets(&w, &[0, 1]), vec![set(&[0, 1]); 2]);
}

#[test]
fn a_one_way_cut_fences_the_side_that_cannot_hear() {
    // 2 no longer hears 0; 0 still hears 2.
    let mut w = pool(3);
    w.cut_link(0, 2);
    run(&mut w, 90_000);
    assert_eq!(w.fenced(), set(&[2]), "only host 2 fences");
    assert_eq!(livesets(&w, &[0, 1]), vec![set(&[0, 1]); 2]);
}

#[test]
fn the_largest_fully_connected_set_survives_in_a_larger_pool() {
    // 0 hears only 1; 1, 2 and 3 all hear each other.
    let mut w = pool(4);
    for j in [2, 3] {
        w.cut_link(0, j);
        w.cut_link(j, 0);
    }
    run(&mut w, 90_000);
    assert_eq!(w.fenced(), set(&[0]));
    assert_eq!(livesets(&w, &[1, 2, 3]), vec![set(&[1, 2, 3]); 3]);
}

#[test]
fn an_equal_split_fences_only_the_loser_when_it_notices_late() {
    // A 2-host split at the lab's T = 5 s, where host 1 still hears host 0
    // for a while after host 0 stopped hearing it. The loser notices the
    // split late, decides within one statefile interval and fences; the
    // winner, waiting in phase 2 for it, must still see it reach phase 2 (or
    // age out of the sfdomain) before its own wait gives up.
    for lag in (0..3_000).step_by(100) {
        let mut w = World::new(2, 5, 1).unwrap();
        w.run_until(20_000).unwrap();
        assert_eq!(w.online(), HostSet::first(2), "every host online after enable");
        w.cut_link(1, 0);
        run(&mut w, lag);
        w.cut_link(0, 1);
        run(&mut w, 40_000);
        assert_eq!(
            w.fenced(),
            set(&[1]),
            "host 1 deaf {lag} ms after host 0: host 0 {:?}, host 1 {:?}",
            w.hosts[0].fences,
            w.hosts[1].fences
        );
        assert_eq!(
            w.hosts[1].fences[0].cause,
            FenceCause::Engine(FenceCode::SurvivalRuleFailed),
            "{:?}",
            w.hosts[1].fences
        );
        assert_eq!(w.hosts[0].engine.liveset(), set(&[0]));
    }
}

#[test]
fn a_member_that_reboots_during_a_fault_handler_does_not_stall_the_next() {
    // Host 3 dies; after the others have judged that, but before they drop
    // it, host 0 dies and boots again. Its new boot writes its slot but is
    // not the member the liveset holds: the survivors must drop it in their
    // next fault handler, not wait for it to reach phase 2 and time out.
    let mut w = pool(4);
    w.power_off(3);
    run(&mut w, 15_000);
    assert!(
        w.hosts[1].engine.phase() >= Phase::Fh3,
        "{:?}",
        w.hosts[1].engine.phase()
    );
    w.power_off(0);
    run(&mut w, 2_000);
    w.power_on(0);
    run(&mut w, 60_000);
    assert_nobody_fenced(&w);
    assert!(livesets(&w, &[1, 2])
        .iter()
        .all(|l| l.contains(1) && l.contains(2) && !l.contains(3)));
    run(&mut w, 60_000);
    assert_eq!(w.online(), set(&[0, 1, 2]), "host 0's new boot joins");
}

#[test]
fn two_hosts_lost_and_back_in_turn_rejoin_without_fencing_the_others() {
    // The chaos run's opening (seed 2028): host 1 dies, host 2 dies 15 s
    // later; host 2 boots 7 s after that, host 1 11 s after host 2. Hosts 0
    // and 3 must drop both, take both back, and fence never.
    let mut w = pool(4);
    w.power_off(1);
    run(&mut w, 14_800);
    w.power_off(2);
    run(&mut w, 7_000);
    w.power_on(2);
    run(&mut w, 10_600);
    w.power_on(1);
    run(&mut w, 120_000);
    assert_nobody_fenced(&w);
    assert_eq!(w.online(), HostSet::first(4), "both came back");
}

/// The hosts that fenced, other than `faulty`.
fn others_fenced(w: &World, faulty: usize) -> Vec<String> {
    w.hosts
        .iter()
        .enumerate()
        .filter(|&(i, h)| i != faulty && !h.fences.is_empty())
        .map(|(i, h)| format!("host {i}: {:?}", h.fences))
        .collect()
}

#[test]
fn a_second_power_off_during_the_fault_handler_fences_no_survivor() {
    // Issue 24's rack failing host by host: 5 hosts, host 4 powered off,
    // host 1 twelve seconds later, while the survivors still handle the
    // first failure. The survivors extend the handler and drop both.
    let mut w = pool(5);
    w.power_off(4);
    run(&mut w, 12_000);
    w.power_off(1);
    run(&mut w, 90_000);
    assert_nobody_fenced(&w);
    assert_eq!(livesets(&w, &[0, 2, 3]), vec![set(&[0, 2, 3]); 3]);
}

#[test]
fn a_storage_stall_shorter_than_t_fences_nobody() {
    // Issue 24: an NFS server that stalls for 6 to 9 s for one host is an
    // ordinary event. Storage cut on host 2, restored 6..=9 s later, on 4
    // and 5 hosts: no host fences, the cut one included.
    for n in [4, 5] {
        for secs in 6..=9 {
            let mut w = pool(n);
            w.set_storage(2, false);
            run(&mut w, secs * 1000);
            w.set_storage(2, true);
            run(&mut w, 60_000);
            let fenced = others_fenced(&w, usize::MAX);
            assert!(fenced.is_empty(), "{n} hosts, {secs} s: {}", fenced.join("; "));
            assert_eq!(w.online(), HostSet::first(n), "{n} hosts, {secs} s");
        }
    }
}

#[test]
fn slow_statefile_io_on_one_host_fences_no_other_host() {
    // One host's statefile cycles take 8 s for a minute: whatever happens
    // to it, the other hosts stay.
    for n in [3, 4, 5] {
        let mut w = pool(n);
        w.hosts[1].sf_latency = 8_000;
        run(&mut w, 60_000);
        w.hosts[1].sf_latency = 5;
        run(&mut w, 60_000);
        let fenced = others_fenced(&w, 1);
        assert!(fenced.is_empty(), "{n} hosts: {}", fenced.join("; "));
    }
}

#[test]
fn a_freeze_just_under_t_fences_no_other_host() {
    // A host frozen (SIGSTOP) for 7.5 to 10 s: it may fence as it wakes,
    // the others never.
    for ms in [7_500, 8_500, 9_500] {
        let mut w = pool(4);
        w.freeze(3, ms);
        run(&mut w, 60_000);
        let fenced = others_fenced(&w, 3);
        assert!(fenced.is_empty(), "frozen {ms} ms: {}", fenced.join("; "));
    }
}

#[test]
fn a_two_host_cable_pull_fences_the_host_whose_cable_was_pulled() {
    // Issue 16: the seeds' two-host story. Whichever host's cable is
    // pulled, that host fences and the other keeps the pool: the side with
    // its link up wins the tie between equal partitions, before the UUID.
    for pulled in [0, 1] {
        let mut w = pool(2);
        w.set_network(pulled, false);
        run(&mut w, 60_000);
        assert_eq!(w.fenced(), set(&[pulled]), "host {pulled}'s cable pulled");
        let other = 1 - pulled;
        assert_eq!(w.hosts[other].engine.liveset(), set(&[other]));
        assert!(matches!(w.status(other), Status::Online));
    }
}

#[test]
fn between_equal_partitions_with_links_up_the_more_important_vms_win() {
    // A switch splits a 2-host pool (both links up): host 1 runs the
    // protected VMs, so it keeps the pool although host 0 has the lower
    // UUID (as Pacemaker's priority fencing delay).
    let mut w = pool(2);
    w.hosts[1].priority = 3;
    run(&mut w, 1_000);
    w.partition(set(&[0]));
    run(&mut w, 60_000);
    assert_eq!(w.fenced(), set(&[0]));
    assert_eq!(w.hosts[1].engine.liveset(), set(&[1]));
}

/// A formed pool of `n` hosts that loses power as a whole: `at_boot` runs
/// on the world while every host is off, then every host boots.
fn whole_pool_restart(n: usize, at_boot: impl FnOnce(&mut World)) -> World {
    let mut w = pool(n);
    for i in 0..n {
        w.power_off(i);
    }
    run(&mut w, 1_000);
    at_boot(&mut w);
    for i in 0..n {
        w.power_on(i);
    }
    w
}

#[test]
fn a_host_lost_while_the_pool_forms_is_detected_and_dropped() {
    // Issue 28: every host reboots (a whole-pool restart with HA on), and
    // host 2's network is cut 100 ms after they boot. The others must not
    // keep it in their liveset unheard: they judge it within T and drop it.
    let mut w = whole_pool_restart(3, |_| {});
    run(&mut w, 100);
    w.set_network(2, false);
    run(&mut w, 150_000);
    let online = w.online();
    assert!(online.contains(0) && online.contains(1), "{online}");
    for i in [0, 1] {
        assert_eq!(w.hosts[i].engine.liveset(), set(&[0, 1]), "host {i}");
    }
    assert!(!online.contains(2), "host 2, unheard, is online");
    assert_nobody_fenced(&w);
}

#[test]
fn a_pool_that_restarts_without_one_host_forms_its_liveset_from_the_majority() {
    // Issue 28: every host reboots, and host 2's network is cut before
    // they come up, so it never answers. Hosts 0 and 1, a majority, form
    // the liveset without it once the boot limit and a fence wait have
    // passed (rule Q); host 2 alone forms nothing, and joins when its
    // cable is back.
    let mut w = whole_pool_restart(3, |w| w.set_network(2, false));
    run(&mut w, 150_000);
    for i in [0, 1] {
        assert_eq!(w.hosts[i].engine.liveset(), set(&[0, 1]), "host {i}");
    }
    assert_eq!(w.online(), set(&[0, 1]), "host 2 alone must not go online");
    w.set_network(2, true);
    run(&mut w, 60_000);
    assert_eq!(w.online(), set(&[0, 1, 2]), "host 2 joins once its cable is back");
    assert_nobody_fenced(&w);
}

#[test]
fn a_two_host_pool_that_restarts_without_one_host_forms_nothing() {
    // One host of two is no majority: forming alone could split the pool
    // with a host that is only cut off.
    let mut w = whole_pool_restart(2, |w| w.set_network(1, false));
    run(&mut w, 150_000);
    assert_eq!(w.online(), HostSet::EMPTY);
    w.set_network(1, true);
    run(&mut w, 120_000);
    assert_eq!(
        w.online(),
        set(&[0, 1]),
        "the pool forms once both hosts hear each other"
    );
}

#[test]
fn the_stale_member_check_catches_engines_that_never_judge_a_dead_host() {
    // A deliberately broken detection rule (D): the engines wait ten times
    // too long before a silent host leaves their domains. The checker must
    // report the dead host kept in the livesets of a calm pool.
    let mut w = World::with_config(3, T, 1, |c| {
        c.timeouts.hb_timeout *= 10;
        c.timeouts.sf_timeout *= 10;
    })
    .unwrap();
    w.run_until(30_000).unwrap();
    assert_eq!(w.online(), set(&[0, 1, 2]));
    w.power_off(2);
    let v = w.run_until(w.now + 120_000).expect_err("the stale-member check fires");
    assert!(v.what.contains("host 2 has been down"), "{v}");
    let bound = w.checker.stale_bound;
    assert!(v.at > 30_000 + bound && v.at <= 30_000 + bound + 2_000, "{v}");
}
