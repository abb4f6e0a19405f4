//! The incremental overcommit check (`Compiled::check`) against the
//! planner asked afresh about the changed pool: on small pools (where the
//! check always searches) the answers must be the same, whatever the
//! deltas: VMs arriving, moving, resized, new to the plan, leaving it, and
//! hosts going down.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use ha_planner::{apply_deltas, Check, Compiled, Delta, Host, Mode, Planner, Pool, Resource, Verdict, Vm};
use proptest::prelude::*;

fn pool_strategy() -> impl Strategy<Value = Pool> {
    (2usize..=5)
        .prop_flat_map(|n| {
            let hosts = proptest::collection::vec((0i64..=10, prop::bool::weighted(0.9), prop::bool::weighted(0.8)), n);
            let vms = proptest::collection::vec((1i64..=5, 0..=n, prop::bool::weighted(0.85)), 0..=9);
            (hosts, vms)
        })
        .prop_map(|(hosts, vms)| {
            let n = hosts.len();
            let shared = Resource::Sr("shared".into());
            let partial = Resource::Sr("partial".into());
            let mut hosts: Vec<Host> = hosts
                .into_iter()
                .enumerate()
                .map(|(i, (free, live, reaches_partial))| Host {
                    uuid: format!("h{i}"),
                    memory_free: free + 6,
                    live,
                    reaches: if reaches_partial {
                        BTreeSet::from([shared.clone(), partial.clone()])
                    } else {
                        BTreeSet::from([shared.clone()])
                    },
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
            for v in &vms {
                if let Some(h) = &v.resident_on {
                    hosts.iter_mut().find(|x| &x.uuid == h).unwrap().memory_free -= v.memory;
                }
            }
            Pool { hosts, vms }
        })
}

/// Up to three deltas drawn against the pool.
fn deltas(pool: &Pool, picks: &[(u8, u8, u8, i64)]) -> Vec<Delta> {
    let n = pool.hosts.len();
    let host = |i: u8| pool.hosts[i as usize % n].uuid.clone();
    picks
        .iter()
        .map(|&(kind, a, b, size)| match kind % 5 {
            0 => Delta::HostFree {
                host: host(a),
                by: -size,
            },
            1 => Delta::HostDown(host(a)),
            2 if !pool.vms.is_empty() => {
                // A protected VM moves, or is resized.
                let mut vm = pool.vms[b as usize % pool.vms.len()].clone();
                if a % 2 == 0 {
                    vm.resident_on = Some(host(a / 2));
                } else {
                    vm.memory = size;
                }
                Delta::Vm(vm)
            }
            3 if !pool.vms.is_empty() => Delta::Unprotect(pool.vms[b as usize % pool.vms.len()].uuid.clone()),
            _ => Delta::Vm(Vm {
                uuid: format!("new{a}"),
                memory: size,
                resident_on: (b % 3 != 0).then(|| host(b)),
                needs: BTreeSet::from([Resource::Sr(if b % 4 == 1 { "partial" } else { "shared" }.into())]),
            }),
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(600))]

    #[test]
    fn the_incremental_check_agrees_with_a_fresh_plan(
        pool in pool_strategy(),
        picks in proptest::collection::vec((0u8..5, 0u8..16, 0u8..16, 1i64..=6), 0..=3),
        r in 0u32..=3,
        xapi in prop::bool::weighted(0.2),
    ) {
        let planner = Planner::new(if xapi { Mode::Xapi } else { Mode::Exact });
        let deltas = deltas(&pool, &picks);
        let compiled = Compiled::new(planner, &pool, r).unwrap();
        prop_assert_eq!(
            compiled.now().exists(),
            planner.plan_exists(&pool, r).unwrap().exists()
        );
        let after = apply_deltas(&pool, &deltas);
        let fresh = planner.plan_exists(&after, r).unwrap();
        let check = compiled.check(&deltas).unwrap();
        let same = matches!(
            (&check, &fresh),
            (Check::Exists(_), Verdict::Exists)
                | (Check::NoPlan(_), Verdict::NoPlan(_))
                | (Check::Undecided { .. }, Verdict::Unknown)
        );
        prop_assert!(same, "incremental {:?}, afresh {:?}, deltas {:?}", check, fresh, deltas);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(600))]

    /// The path large pools take: after a change, the necessary
    /// conditions and the certificates only, no search. What they answer
    /// must never contradict a fresh plan.
    #[test]
    fn without_the_search_the_check_is_still_sound(
        pool in pool_strategy(),
        picks in proptest::collection::vec((0u8..5, 0u8..16, 0u8..16, 1i64..=6), 0..=3),
        r in 0u32..=3,
    ) {
        let planner = Planner::new(Mode::Exact);
        let deltas = deltas(&pool, &picks);
        let compiled = Compiled::new(planner, &pool, r).unwrap().with_search_at_most(0);
        let fresh = planner.plan_exists(&apply_deltas(&pool, &deltas), r).unwrap();
        let check = compiled.check(&deltas).unwrap();
        let contradicts = matches!(
            (&check, &fresh),
            (Check::Exists(_), Verdict::NoPlan(_)) | (Check::NoPlan(_), Verdict::Exists)
        );
        prop_assert!(!contradicts, "incremental {:?}, afresh {:?}, deltas {:?}", check, fresh, deltas);
    }
}

/// A delta naming a host the pool does not have is an error, not a panic.
#[test]
fn an_unknown_host_is_an_error() {
    let pool = Pool {
        hosts: vec![Host {
            uuid: "h0".into(),
            memory_free: 10,
            live: true,
            reaches: BTreeSet::new(),
        }],
        vms: vec![],
    };
    let c = Compiled::new(Planner::default(), &pool, 0).unwrap();
    assert!(c
        .check(&[Delta::HostFree {
            host: "nope".into(),
            by: -1
        }])
        .is_err());
    assert!(c
        .check(&[Delta::HostFree {
            host: "h0".into(),
            by: i64::MIN
        }])
        .is_err());
}
