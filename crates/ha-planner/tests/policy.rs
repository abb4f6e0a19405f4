//! The restart policy's certificate (issue 27) against the truth.
//!
//! - Tiny pools ("few big, many small, near the boundary", hosts of mixed
//!   sizes, pending VMs, now and then a VM only some hosts can run): the
//!   planner and the certificate alone are never above the brute-force
//!   oracle (`tests/brute`), the planner equals it when it says "exact",
//!   and the policy survives every failure sequence up to what the
//!   certificate claims.
//! - Medium pools (6 to 8 hosts, up to 45 VMs, tight): the policy,
//!   implemented here again from its definition, is replayed along every
//!   ordered failure sequence of the length the certificate claims.
//! - The same tests run on a deliberately broken certificate (H_j dropped)
//!   and must find a counterexample.

#![allow(clippy::unwrap_used)]

// The shared oracle; this file does not use all of it.
#[allow(dead_code)]
mod brute;

use std::cell::Cell;
use std::collections::BTreeSet;

use brute::Brute;
use ha_planner::{Certificate, Host, Mode, Planner, PolicyCertificate, Pool, Proof, ProvenBy, Resource, Vm};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};

/// A pool from host capacities and VMs `(size, host)`: a VM whose host
/// index is out of range, or that does not fit where it is put, is pending.
/// `restricted` VMs need an SR that only even-numbered hosts reach.
fn build(caps: &[(i64, bool)], vms: &[(i64, usize, bool)]) -> Pool {
    let shared = Resource::Sr("shared".into());
    let partial = Resource::Sr("partial".into());
    let mut hosts: Vec<Host> = caps
        .iter()
        .enumerate()
        .map(|(i, &(cap, live))| {
            let mut reaches = BTreeSet::from([shared.clone()]);
            if i % 2 == 0 {
                reaches.insert(partial.clone());
            }
            Host {
                uuid: format!("h{i}"),
                memory_free: cap,
                live,
                reaches,
            }
        })
        .collect();
    let vms = vms
        .iter()
        .enumerate()
        .map(|(i, &(memory, at, restricted))| {
            let at = hosts
                .get_mut(at)
                .filter(|h| h.memory_free >= memory && (!restricted || h.reaches.contains(&partial)));
            let resident_on = at.map(|h| {
                h.memory_free -= memory;
                h.uuid.clone()
            });
            Vm {
                uuid: format!("v{i:02}"),
                memory,
                resident_on,
                needs: BTreeSet::from([if restricted { partial.clone() } else { shared.clone() }]),
            }
        })
        .collect();
    Pool { hosts, vms }
}

/// 3 to 6 hosts of two or three sizes; one or two big VMs among up to 7
/// small ones; about one VM in eight pending.
fn tiny_strategy() -> impl Strategy<Value = Pool> {
    (3usize..=6)
        .prop_flat_map(|n| {
            let caps = proptest::collection::vec(
                (prop::sample::select(vec![8i64, 11, 16]), prop::bool::weighted(0.93)),
                n,
            );
            let big = proptest::collection::vec((5i64..=9, 0..n + 1), 1..=2);
            let small = proptest::collection::vec((1i64..=3, 0..n + 1, prop::bool::weighted(0.05)), 1..=7);
            (caps, big, small)
        })
        .prop_map(|(caps, big, small)| {
            let n = caps.len();
            // Mostly resident: index n (pending) only one time in n + 1.
            let vms: Vec<(i64, usize, bool)> = big
                .into_iter()
                .map(|(s, at)| (s, at, false))
                .chain(small)
                .map(|(s, at, r)| (s, if at == n && s % 2 == 0 { 0 } else { at }, r))
                .collect();
            build(&caps, &vms)
        })
}

/// 6 to 8 hosts of 40 to 69 units; one big VM of 18 to 37 (two, one time
/// in four); small VMs of 1 to 8 up to a load near what the hosts hold.
fn medium_strategy() -> impl Strategy<Value = Pool> {
    (6usize..=8)
        .prop_flat_map(|n| {
            let caps = proptest::collection::vec(40i64..=69, n);
            let bigs = proptest::collection::vec(18i64..=37, 1..=2);
            let bigs = prop_oneof![
                bigs.clone().prop_map(|b| b[..1].to_vec()),
                proptest::collection::vec(18i64..=37, 2..=3)
            ];
            let small = proptest::collection::vec((1i64..=8, 0..n + 4), 10..=44);
            let fill = 30u32..=95;
            (caps, bigs, small, fill, 0..n)
        })
        .prop_map(|(caps, bigs, small, fill, big_at)| {
            let n = caps.len();
            let total: i64 = caps.iter().sum();
            let target = total * i64::from(fill) / 100;
            let mut vms: Vec<(i64, usize, bool)> = bigs.iter().map(|&b| (b, big_at, false)).collect();
            let mut load: i64 = bigs.iter().sum();
            for (s, at) in small {
                if load + s > target {
                    break;
                }
                load += s;
                // Indexes past the hosts: pending one time in three of those.
                let at = if at >= n && at != n + 3 { at % n } else { at };
                vms.push((s, at, false));
            }
            let caps: Vec<(i64, bool)> = caps.into_iter().map(|c| (c, true)).collect();
            build(&caps, &vms)
        })
}

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn truth(pool: &Pool) -> u32 {
    let (mut brute, start) = Brute::new(pool);
    brute.max(&start).0
}

/// The policy, written again from its definition on dense arrays.
#[derive(Clone)]
struct Game {
    free: Vec<i64>,
    alive: Vec<bool>,
    size: Vec<i64>,
    /// `allowed[v][h]`
    allowed: Vec<Vec<bool>>,
    at: Vec<Option<usize>>,
    /// VMs larger than this are big.
    big_above: i64,
    /// Holes the proof keeps after every step (hosts without a big VM that
    /// have the largest VM's size free): the most big VMs one host carries
    /// at the start, at least 1; 0 when no VM is big.
    holes: usize,
}

impl Game {
    fn new(pool: &Pool, big_above: i64) -> Game {
        let alive: Vec<bool> = pool.hosts.iter().map(|h| h.live).collect();
        let index = |uuid: &str| pool.hosts.iter().position(|h| h.uuid == uuid);
        let size: Vec<i64> = pool.vms.iter().map(|v| v.memory).collect();
        let holes = if size.iter().any(|&s| s > big_above) {
            let on = |h: &str| {
                pool.vms
                    .iter()
                    .filter(|v| v.memory > big_above && v.resident_on.as_deref() == Some(h))
                    .count()
            };
            pool.hosts
                .iter()
                .filter(|h| h.live)
                .map(|h| on(&h.uuid))
                .max()
                .unwrap_or(0)
                .max(1)
        } else {
            0
        };
        Game {
            holes,
            free: pool.hosts.iter().map(|h| h.memory_free).collect(),
            at: pool
                .vms
                .iter()
                .map(|v| v.resident_on.as_deref().and_then(index).filter(|&h| alive[h]))
                .collect(),
            alive,
            allowed: brute::allowed(pool),
            size,
            big_above,
        }
    }

    /// Place every VM without a host; false if one fits nowhere.
    fn place_all(&mut self) -> bool {
        let mut batch: Vec<usize> = (0..self.size.len()).filter(|&v| self.at[v].is_none()).collect();
        batch.sort_by_key(|&v| std::cmp::Reverse(self.size[v]));
        // The host that took this batch's first big VM.
        let mut receiver = None;
        for v in batch {
            let s = self.size[v];
            let fits: Vec<usize> = (0..self.free.len())
                .filter(|&h| self.alive[h] && self.allowed[v][h] && self.free[h] >= s)
                .collect();
            let beta = |h: usize| (0..self.size.len()).any(|w| self.at[w] == Some(h) && self.size[w] > self.big_above);
            let host = if s > self.big_above {
                let most_free = |hosts: &mut dyn Iterator<Item = usize>| hosts.max_by_key(|&h| self.free[h]);
                let h = most_free(&mut fits.iter().copied().filter(|&h| !beta(h)))
                    .or_else(|| most_free(&mut fits.iter().copied()));
                if receiver.is_none() {
                    receiver = h;
                }
                h
            } else {
                let on_beta = fits.iter().copied().filter(|&h| beta(h)).min_by_key(|&h| self.free[h]);
                receiver
                    .filter(|h| fits.contains(h))
                    .or(on_beta)
                    .or_else(|| fits.iter().copied().min_by_key(|&h| self.free[h]))
            };
            let Some(h) = host else { return false };
            self.free[h] -= s;
            self.at[v] = Some(h);
        }
        true
    }

    /// Live hosts without a big VM that have the largest VM's size free.
    fn hole_count(&self) -> usize {
        let b = self.size.iter().copied().max().unwrap_or(0);
        (0..self.free.len())
            .filter(|&h| self.alive[h] && self.free[h] >= b)
            .filter(|&h| !(0..self.size.len()).any(|v| self.at[v] == Some(h) && self.size[v] > self.big_above))
            .count()
    }

    fn fail(&mut self, h: usize) {
        self.alive[h] = false;
        for v in 0..self.size.len() {
            if self.at[v] == Some(h) {
                self.at[v] = None;
                self.free[h] += self.size[v];
            }
        }
    }

    /// Does the policy survive every ordered sequence of `k` failures? The
    /// first sequence that loses, and how, if not; counts the sequences
    /// replayed.
    fn survives(&self, k: u32, sequences: &mut u64) -> Result<(), (Vec<usize>, &'static str)> {
        if k == 0 {
            *sequences += 1;
            return Ok(());
        }
        // What the proof of the hole certificate claims before every
        // failure, not only what it needs when a big VM's host fails: it
        // catches a wrong bound long before the policy loses.
        if self.hole_count() < self.holes {
            return Err((vec![], "too few holes after"));
        }
        for h in (0..self.free.len()).filter(|&h| self.alive[h]) {
            let mut next = self.clone();
            next.fail(h);
            if !next.place_all() {
                return Err((vec![h], "a VM fits nowhere after"));
            }
            next.survives(k - 1, sequences).map_err(|(mut seq, how)| {
                seq.insert(0, h);
                (seq, how)
            })?;
        }
        Ok(())
    }
}

/// The policy from `pool`: pending VMs placed, then every sequence of `k`.
fn replay(pool: &Pool, k: u32, big_above: i64, sequences: &mut u64) -> Result<(), String> {
    let mut game = Game::new(pool, big_above);
    if !game.place_all() {
        return Err("the pending VMs do not place".into());
    }
    game.survives(k, sequences)
        .map_err(|(seq, how)| format!("{how} failures {seq:?}"))
}

type Cert = fn(&Pool) -> Result<Option<PolicyCertificate>, ha_planner::PlanError>;

/// The certificate never claims more than the truth, and the policy wins
/// what it claims.
fn tiny_property(pool: &Pool, cert: Cert) -> Result<(), TestCaseError> {
    let max = truth(pool);
    if let Some(c) = cert(pool).unwrap() {
        let k = c.failures;
        prop_assert!(k <= max, "{:?} claims {} > truth {}", c, k, max);
        replay(pool, k, c.big_above, &mut 0).map_err(|e| TestCaseError::fail(format!("{c:?}: {e}")))?;
    }
    Ok(())
}

fn medium_property(pool: &Pool, cert: Cert, sequences: &Cell<u64>) -> Result<(), TestCaseError> {
    if let Some(c) = cert(pool).unwrap() {
        let mut count = 0;
        let result = replay(pool, c.failures, c.big_above, &mut count);
        sequences.set(sequences.get() + count);
        result.map_err(|e| TestCaseError::fail(format!("{c:?}: {e}")))?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(400), ..ProptestConfig::default() })]

    #[test]
    fn planner_and_certificate_agree_with_brute_force_on_skewed_pools(pool in tiny_strategy()) {
        let max = truth(&pool);
        let t = Planner::new(Mode::Exact).max_host_failures_to_tolerate(&pool).unwrap();
        prop_assert!(t.failures <= max, "unsound: planner {} ({:?}) > truth {}", t.failures, t.proven_by, max);
        match t.proof {
            Proof::Exact => prop_assert_eq!(t.failures, max),
            Proof::LowerBound { at_most } => prop_assert!(max <= at_most),
            Proof::Reference => prop_assert!(false, "exact mode gave a reference answer"),
        }
        tiny_property(&pool, ha_planner::policy_certificate)?;
    }
}

/// Medium pools: 128 by default, from a fixed seed (`PROPTEST_CASES` for more). Prints how many
/// pools the certificate proved something on, and the sequences replayed.
#[test]
fn the_certified_policy_survives_every_failure_sequence_on_medium_pools() {
    let mut runner = fixed_runner(cases(128));
    let sequences = Cell::new(0u64);
    let certified = Cell::new(0u32);
    let tight = Cell::new(0u32);
    // Fluid, one big VM, several big VMs.
    let kinds = Cell::new([0u32; 3]);
    let result = runner.run(&medium_strategy(), |pool| {
        let before = sequences.get();
        medium_property(&pool, ha_planner::policy_certificate, &sequences)?;
        if let Some(c) = ha_planner::policy_certificate(&pool)
            .unwrap()
            .filter(|c| c.failures > 0)
        {
            let big = pool.vms.iter().filter(|v| v.memory > c.big_above).count();
            let mut k = kinds.get();
            k[big.min(2)] += 1;
            kinds.set(k);
        }
        if sequences.get() > before {
            certified.set(certified.get() + 1);
            // Tight: the certificate reaches the planner's upper bound.
            let t = Planner::new(Mode::Exact).max_host_failures_to_tolerate(&pool).unwrap();
            let upper = match t.proof {
                Proof::LowerBound { at_most } => at_most,
                _ => t.failures,
            };
            let c = ha_planner::policy_certificate(&pool).unwrap().unwrap();
            if c.failures == upper {
                tight.set(tight.get() + 1);
            }
        }
        Ok(())
    });
    let [fluid, one, several] = kinds.get();
    println!(
        "medium pools: {} certified, {} of them at the upper bound; {} sequences replayed; \
         k > 0 proven by fluid {fluid}, one big VM {one}, several {several}",
        certified.get(),
        tight.get(),
        sequences.get()
    );
    result.unwrap();
    assert!(
        one > 0 && several > 0,
        "the strategy never exercised both hole certificates"
    );
}

/// The planner says which certificate proved it, and on these pools the
/// policy's certificate does prove answers.
#[test]
fn the_planner_records_the_policy_certificate() {
    let mut runner = fixed_runner(64);
    let by_policy = Cell::new(0);
    runner
        .run(&medium_strategy(), |pool| {
            let t = Planner::new(Mode::Exact).max_host_failures_to_tolerate(&pool).unwrap();
            if let ProvenBy::Certificate(c @ (Certificate::Hole | Certificate::Fluid)) = t.proven_by {
                by_policy.set(by_policy.get() + 1);
                let p = ha_planner::policy_certificate(&pool).unwrap().unwrap();
                prop_assert_eq!(p.failures, t.failures);
                prop_assert_eq!(p.certificate, c);
            }
            Ok(())
        })
        .unwrap();
    assert!(by_policy.get() > 0);
}

/// A runner with a fixed seed and no regression file.
fn fixed_runner(cases: u32) -> TestRunner {
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha))
}

/// Dropping H_j makes the certificate unsound, and both tests above say so.
#[test]
fn a_certificate_without_the_hole_condition_is_caught() {
    let mut runner = fixed_runner(2_000);
    let tiny = runner.run(&tiny_strategy(), |pool| {
        tiny_property(&pool, ha_planner::policy_certificate_without_holes)
    });
    let err = tiny.expect_err("the tiny-pool test did not catch the broken certificate");
    println!("tiny pools caught it: {err}");

    let mut runner = fixed_runner(2_000);
    let medium = runner.run(&medium_strategy(), |pool| {
        medium_property(&pool, ha_planner::policy_certificate_without_holes, &Cell::new(0))
    });
    let err = medium.expect_err("the medium-pool replay did not catch the broken certificate");
    println!("medium pools caught it: {err}");
}

/// The pool does what was proven: along random failure sequences as long
/// as the planner's answer, `restart_plan` (asked to keep the rest) places
/// every protected VM within memory at every step, when the answer was
/// proven by the restart policy's certificate. Answers the search proved
/// are replayed too, but not asserted: `restart_plan` searches again with a
/// fresh budget and, when that runs out, places greedily (it keeps no
/// record of the earlier proof); the test prints how often that left a VM
/// without a host.
#[test]
fn restart_plans_place_every_vm_up_to_the_proven_number() {
    let mut runner = fixed_runner(cases(48));
    let steps = Cell::new(0u32);
    let unproven = Cell::new(0u32);
    let search_lost = Cell::new(0u32);
    runner
        .run(&(medium_strategy(), any::<u64>()), |(mut pool, seed)| {
            let planner = Planner::new(Mode::Exact);
            let t = planner.max_host_failures_to_tolerate(&pool).unwrap();
            let by_policy = matches!(
                t.proven_by,
                ProvenBy::Certificate(Certificate::Fluid | Certificate::Hole)
            );
            let mut rng = seed | 1;
            for step in 0..t.failures {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let live: Vec<String> = pool.hosts.iter().filter(|h| h.live).map(|h| h.uuid.clone()).collect();
                let failed = live[(rng % live.len() as u64) as usize].clone();
                let keep = t.failures - step - 1;
                let plan = planner
                    .restart_plan(&pool, std::slice::from_ref(&failed), keep)
                    .unwrap();
                if by_policy {
                    steps.set(steps.get() + 1);
                    if plan.tolerates_after != Some(keep) {
                        unproven.set(unproven.get() + 1);
                    }
                }
                pool.hosts
                    .iter_mut()
                    .filter(|h| h.uuid == failed)
                    .for_each(|h| h.live = false);
                for (vm, placement) in &plan.placements {
                    let ha_planner::Placement::Host(h) = placement else {
                        if !by_policy {
                            search_lost.set(search_lost.get() + 1);
                            return Ok(());
                        }
                        return Err(TestCaseError::fail(format!(
                            "step {step} of {} (fail {failed}): {vm} unplaced: {placement:?}",
                            t.failures
                        )));
                    };
                    let v = pool.vms.iter_mut().find(|v| &v.uuid == vm).unwrap();
                    let host = pool.hosts.iter_mut().find(|x| &x.uuid == h).unwrap();
                    prop_assert!(host.live);
                    host.memory_free -= v.memory;
                    prop_assert!(host.memory_free >= 0, "over-committed {}", h);
                    v.resident_on = Some(h.clone());
                }
            }
            Ok(())
        })
        .unwrap();
    println!(
        "restart plans: {} steps after policy-proven answers ({} without the full proof); {} search-proven sequences left a VM unplaced",
        steps.get(),
        unproven.get(),
        search_lost.get()
    );
    assert!(steps.get() > 0);
}

/// A pool made to sit where the bound on the big VM's host after the
/// pending VMs (`B_0` in `policy.rs`) decides: the big VM's host keeps all
/// its free memory through step 0, and no other host can take the big VM,
/// so no failure is tolerated. A bound that took `ℓ` off `B_0` too (no host
/// has failed yet) would certify 1; the random pools did not find this.
#[test]
fn the_big_vms_host_keeps_its_free_memory_until_a_host_fails() {
    // Host 0: the big VM (10) and ten VMs of 1, 11 free; hosts 1 to 3: ten
    // VMs of 1 each, 9 free. Failing host 0 leaves the big VM nowhere.
    let mut caps = vec![(10 + 10 + 11, true)];
    caps.extend([(10 + 9, true); 3]);
    let mut vms = vec![(10, 0, false)];
    for h in 0..4 {
        vms.extend([(1, h, false); 10]);
    }
    let pool = build(&caps, &vms);
    assert_eq!(truth(&pool), 0);
    let c = ha_planner::policy_certificate(&pool).unwrap();
    assert!(c.is_none_or(|c| c.failures == 0), "{c:?}");
    tiny_property(&pool, ha_planner::policy_certificate).unwrap();
}
