//! Property tests: the planner against the brute-force oracle on small
//! pools (up to 6 hosts and 12 protected VMs).

#![allow(clippy::unwrap_used)]

mod brute;

use std::collections::BTreeSet;

use brute::{Brute, Position};
use ha_planner::{Host, Mode, Placement, Planner, Pool, Proof, Resource, Verdict, Vm};
use proptest::prelude::*;

/// Memory in GiB-like units: small numbers keep the oracle fast.
fn pool_strategy() -> impl Strategy<Value = Pool> {
    (2usize..=6)
        .prop_flat_map(|n| {
            let hosts =
                proptest::collection::vec((0i64..=10, prop::bool::weighted(0.9), prop::bool::weighted(0.85)), n);
            let vms = proptest::collection::vec((1i64..=5, 0..=n, prop::bool::weighted(0.85)), 0..=12);
            (hosts, vms)
        })
        .prop_map(|(hosts, vms)| {
            let n = hosts.len();
            let shared = Resource::Sr("shared".into());
            let partial = Resource::Sr("partial".into());
            let hosts: Vec<Host> = hosts
                .into_iter()
                .enumerate()
                .map(|(i, (free, live, reaches_partial))| {
                    let mut reaches = BTreeSet::from([shared.clone()]);
                    if reaches_partial {
                        reaches.insert(partial.clone());
                    }
                    Host {
                        uuid: format!("h{i}"),
                        memory_free: free,
                        live,
                        reaches,
                    }
                })
                .collect();
            let vms: Vec<Vm> = vms
                .into_iter()
                .enumerate()
                .map(|(i, (mem, at, agile))| Vm {
                    uuid: format!("v{i:02}"),
                    memory: mem,
                    resident_on: (at < n).then(|| format!("h{at}")),
                    needs: BTreeSet::from([if agile { shared.clone() } else { partial.clone() }]),
                })
                .collect();
            // Hosts pay for the VMs resident on them; keep only pools whose
            // live hosts are not over-committed to begin with.
            let mut hosts = hosts;
            for v in &vms {
                if let Some(h) = &v.resident_on {
                    let host = hosts.iter_mut().find(|x| &x.uuid == h).unwrap();
                    host.memory_free -= v.memory;
                }
            }
            Pool { hosts, vms }
        })
        .prop_filter("live hosts within memory", |p| {
            p.hosts.iter().all(|h| !h.live || h.memory_free >= 0)
        })
}

/// Bigger pools with few VMs: enough hosts (7 or 8) for XAPI's planner to
/// switch to its approximation at 5 or more failures.
fn wide_pool_strategy() -> impl Strategy<Value = Pool> {
    (7usize..=8)
        .prop_flat_map(|n| {
            let hosts = proptest::collection::vec(0i64..=8, n);
            let vms = proptest::collection::vec((1i64..=4, 0..n), 0..=6);
            (hosts, vms)
        })
        .prop_map(|(free, vms)| {
            let sr = Resource::Sr("shared".into());
            let mut hosts: Vec<Host> = free
                .into_iter()
                .enumerate()
                .map(|(i, f)| Host {
                    uuid: format!("h{i}"),
                    memory_free: f,
                    live: true,
                    reaches: BTreeSet::from([sr.clone()]),
                })
                .collect();
            let vms: Vec<Vm> = vms
                .into_iter()
                .enumerate()
                .map(|(i, (mem, at))| {
                    hosts[at].memory_free -= mem;
                    Vm {
                        uuid: format!("v{i:02}"),
                        memory: mem,
                        resident_on: Some(format!("h{at}")),
                        needs: BTreeSet::from([sr.clone()]),
                    }
                })
                .collect();
            Pool { hosts, vms }
        })
        .prop_filter("hosts within memory", |p| p.hosts.iter().all(|h| h.memory_free >= 0))
}

/// 400 cases, or `PROPTEST_CASES` for a longer run.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400)
}

fn truth(pool: &Pool) -> (u32, bool) {
    let (mut brute, start) = Brute::new(pool);
    brute.max(&start)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn exact_mode_agrees_with_brute_force(pool in pool_strategy()) {
        let (max, now) = truth(&pool);
        let t = Planner::new(Mode::Exact).max_host_failures_to_tolerate(&pool).unwrap();
        prop_assert!(t.failures <= max, "unsound: planner {} > truth {}", t.failures, max);
        match t.proof {
            Proof::Exact => prop_assert_eq!(t.failures, max),
            Proof::LowerBound { at_most } => prop_assert!(max <= at_most),
            Proof::Reference => prop_assert!(false, "exact mode gave a reference answer"),
        }
        prop_assert_eq!(t.restartable_now, now);
        if let Some(w) = &t.witness {
            prop_assert!(w.failed_hosts.len() as u32 <= t.failures + 1);
            prop_assert!(!w.unplaced_vms.is_empty());
        }
    }

    #[test]
    fn xapi_mode_is_safe_and_never_beats_exact(pool in pool_strategy()) {
        let (max, _) = truth(&pool);
        let x = Planner::new(Mode::Xapi).max_host_failures_to_tolerate(&pool).unwrap();
        let e = Planner::new(Mode::Exact).max_host_failures_to_tolerate(&pool).unwrap();
        prop_assert!(x.failures <= max, "xapi {} > truth {}", x.failures, max);
        prop_assert!(e.failures >= x.failures, "exact {} < xapi {}", e.failures, x.failures);
    }

    #[test]
    fn both_modes_are_safe_on_wider_pools(pool in wide_pool_strategy()) {
        let (max, _) = truth(&pool);
        let x = Planner::new(Mode::Xapi).max_host_failures_to_tolerate(&pool).unwrap();
        let e = Planner::new(Mode::Exact).max_host_failures_to_tolerate(&pool).unwrap();
        prop_assert!(x.failures <= max, "xapi {} > truth {}", x.failures, max);
        prop_assert!(e.failures <= max && e.failures >= x.failures);
        if e.proof == Proof::Exact {
            prop_assert_eq!(e.failures, max);
        }
    }

    #[test]
    fn plan_exists_agrees_with_brute_force(pool in pool_strategy(), r in 0u32..4) {
        let (max, now) = truth(&pool);
        let truly = now && r <= max;
        match Planner::new(Mode::Exact).plan_exists(&pool, r).unwrap() {
            Verdict::Exists => prop_assert!(truly, "claimed a plan for {} but truth is {} (now {})", r, max, now),
            Verdict::NoPlan(_) => prop_assert!(!truly),
            Verdict::Unknown => {}
        }
    }

    #[test]
    fn restart_plans_are_valid_and_keep_what_they_claim(pool in pool_strategy(), failed in 0usize..6, keep in 0u32..3) {
        let live: Vec<String> = pool.hosts.iter().filter(|h| h.live).map(|h| h.uuid.clone()).collect();
        prop_assume!(!live.is_empty());
        let failed_host = live[failed % live.len()].clone();
        let plan = Planner::new(Mode::Exact).restart_plan(&pool, std::slice::from_ref(&failed_host), keep).unwrap();
        // Apply it to a copy of the pool and check memory and reachability.
        let mut after = pool.clone();
        after.hosts.iter_mut().filter(|h| h.uuid == failed_host).for_each(|h| h.live = false);
        for (vm, placement) in &plan.placements {
            let v = after.vms.iter_mut().find(|v| &v.uuid == vm).unwrap();
            if let Placement::Host(h) = placement {
                let host = after.hosts.iter_mut().find(|x| &x.uuid == h).unwrap();
                prop_assert!(host.live, "placed on a dead host");
                prop_assert!(v.needs.iter().all(|n| host.reaches.contains(n)), "placed where its SR is not");
                host.memory_free -= v.memory;
                prop_assert!(host.memory_free >= 0, "over-committed {}", h);
                v.resident_on = Some(h.clone());
            } else {
                v.resident_on = None;
            }
        }
        if let Some(k) = plan.tolerates_after {
            prop_assert!(k <= keep);
            prop_assert!(plan.placements.iter().all(|(_, p)| matches!(p, Placement::Host(_))));
            let (mut brute, start) = Brute::new(&after);
            prop_assert!(brute.valid(&start, &start));
            prop_assert!(brute.win(&start, &start, k), "the plan does not keep {} failures", k);
        }
    }
}

/// Keeps `Position` in use for readers of the oracle.
#[test]
fn oracle_agrees_on_the_seed_example() {
    let sr = Resource::Sr("s".into());
    let host = |uuid: &str, free| Host {
        uuid: uuid.into(),
        memory_free: free,
        live: true,
        reaches: BTreeSet::from([sr.clone()]),
    };
    let vm = Vm {
        uuid: "vm".into(),
        memory: 4,
        resident_on: Some("a".into()),
        needs: BTreeSet::from([sr.clone()]),
    };
    let roomy = Pool {
        hosts: vec![host("a", 4), host("b", 8)],
        vms: vec![vm.clone()],
    };
    let tight = Pool {
        hosts: vec![host("a", 4), host("b", 2)],
        vms: vec![vm],
    };
    assert_eq!(truth(&roomy), (1, true));
    assert_eq!(truth(&tight), (0, true));
    let (_, start): (Brute, Position) = Brute::new(&roomy);
    assert_eq!(start.alive, vec![true, true]);
}

/// Hostile memory figures: any `i64` for hosts' free memory and VMs'
/// footprints, on up to 5 hosts and 8 VMs, some of them near the limits.
fn hostile_pool_strategy() -> impl Strategy<Value = Pool> {
    let bytes = prop_oneof![
        any::<i64>(),
        Just(i64::MAX),
        Just(i64::MIN),
        Just(ha_planner::MAX_TOTAL_MEMORY / 8),
        Just(-ha_planner::MAX_TOTAL_MEMORY / 8),
        1i64..=16,
    ];
    (1usize..=5)
        .prop_flat_map(move |n| {
            let hosts = proptest::collection::vec((bytes.clone(), prop::bool::weighted(0.9)), n);
            let vms = proptest::collection::vec((bytes.clone(), 0..=n), 0..=8);
            (hosts, vms)
        })
        .prop_map(|(hosts, vms)| {
            let n = hosts.len();
            let sr = Resource::Sr("shared".into());
            Pool {
                hosts: hosts
                    .into_iter()
                    .enumerate()
                    .map(|(i, (free, live))| Host {
                        uuid: format!("h{i}"),
                        memory_free: free,
                        live,
                        reaches: BTreeSet::from([sr.clone()]),
                    })
                    .collect(),
                vms: vms
                    .into_iter()
                    .enumerate()
                    .map(|(i, (mem, at))| Vm {
                        uuid: format!("v{i:02}"),
                        memory: mem,
                        resident_on: (at < n).then(|| format!("h{at}")),
                        needs: BTreeSet::from([sr.clone()]),
                    })
                    .collect(),
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    /// Issue 26: whatever the memory figures, no mode of the planner
    /// overflows (tests run with overflow checks) or panics; figures past
    /// `MAX_TOTAL_MEMORY` are refused with `MemoryOutOfRange`, others
    /// answered.
    #[test]
    fn hostile_memory_figures_never_overflow(pool in hostile_pool_strategy()) {
        let total = pool
            .hosts
            .iter()
            .map(|h| i128::from(h.memory_free).abs())
            .chain(pool.vms.iter().map(|v| i128::from(v.memory).abs()))
            .sum::<i128>();
        let positive = pool.vms.iter().all(|v| v.memory > 0);
        for mode in [Mode::Exact, Mode::Xapi] {
            let planner = Planner::new(mode);
            let max = planner.max_host_failures_to_tolerate(&pool);
            let exists = planner.plan_exists(&pool, 1);
            let failed: Vec<String> = pool.hosts.iter().take(1).map(|h| h.uuid.clone()).collect();
            let plan = planner.restart_plan(&pool, &failed, 1);
            if !positive {
                prop_assert!(max.is_err());
            } else if total > i128::from(ha_planner::MAX_TOTAL_MEMORY) {
                prop_assert_eq!(max.unwrap_err(), ha_planner::PlanError::MemoryOutOfRange);
                prop_assert_eq!(exists.unwrap_err(), ha_planner::PlanError::MemoryOutOfRange);
                prop_assert_eq!(plan.unwrap_err(), ha_planner::PlanError::MemoryOutOfRange);
            } else {
                prop_assert!(max.is_ok());
                prop_assert!(exists.is_ok());
                prop_assert!(plan.is_ok());
            }
        }
    }
}

#[test]
fn human_prints_the_extremes() {
    assert_eq!(ha_planner::human(i64::MIN), "-8589934592.0 GiB");
    assert_eq!(ha_planner::human(-(1 << 20)), "-1 MiB");
}
