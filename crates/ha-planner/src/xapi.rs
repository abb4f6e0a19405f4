//! XAPI's planner, re-implemented as faithfully as we can read it
//! (`ocaml/xapi/binpack.ml`, `xapi_ha_vm_failover.ml`): the reference the
//! exact planner is measured against, and the `xapi` planner mode.
//!
//! - Protected VMs that are not agile are pinned to the first host (by
//!   uuid) that reaches their storage; they never count as planned for, so
//!   any of them makes the answer 0.
//! - Down agile VMs are placed by biggest-fit-decreasing: each VM, biggest
//!   first, goes to the host with the most free memory or nowhere.
//! - For `r` failures: if `C(n, r) * r! < 3500` and `n <= 32` (n = every
//!   host of the pool, live or not), every ordered sequence of `r` live
//!   hosts is simulated with biggest-fit-decreasing; otherwise the
//!   worst-case approximation (every VM as big as the biggest, the `r`
//!   biggest hosts fail, the `r` fullest hosts' VMs move).
//! - The maximum is found by XAPI's bisection between 0 and `n`.
//!
//! List orders follow XAPI's, so ties break the same way.

use crate::problem::{bit, hosts_of, Problem, State};

/// XAPI's `plan_status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    AllVms,
    ExcludingNonAgile,
    NoPlan,
}

/// Binpack's configuration: live hosts with free memory (in host uuid
/// order), agile VMs with sizes, and where the placed ones are (in XAPI's
/// list order).
#[derive(Debug, Clone)]
struct Config {
    hosts: Vec<(usize, i64)>,
    placement: Vec<(u32, usize)>,
    total_hosts: usize,
}

/// Biggest-fit-decreasing exactly as binpack.ml: stable sorts, the host
/// re-inserted before the first host with no more free memory than it.
fn biggest_fit_decreasing(p: &Problem, things: &[u32], bins: &[(usize, i64)]) -> Vec<(u32, usize)> {
    let mut things: Vec<u32> = things.to_vec();
    things.sort_by(|a, b| p.size[*b as usize].cmp(&p.size[*a as usize]));
    let mut bins: Vec<(usize, i64)> = bins.to_vec();
    bins.sort_by_key(|b| std::cmp::Reverse(b.1));
    let mut mapping = Vec::new();
    for vm in things {
        let Some(&(host, free)) = bins.first() else { break };
        let remaining = free - p.size[vm as usize];
        if remaining < 0 {
            continue;
        }
        bins.remove(0);
        let at = bins.iter().position(|&(_, f)| f <= remaining).unwrap_or(bins.len());
        bins.insert(at, (host, remaining));
        // XAPI conses onto the mapping: the newest assignment comes first.
        mapping.insert(0, (vm, host));
    }
    mapping
}

/// Subtract the plan's VMs from their hosts.
fn account(p: &Problem, hosts: &mut [(usize, i64)], plan: &[(u32, usize)]) {
    for (h, free) in hosts.iter_mut() {
        *free -= plan
            .iter()
            .filter(|(_, ph)| ph == h)
            .map(|(vm, _)| p.size[*vm as usize])
            .sum::<i64>();
    }
}

/// `simulate_failure`: the dead host's VMs repacked onto the rest, or None.
fn simulate_failure(p: &Problem, config: &Config, dead: usize) -> Option<Config> {
    let failed: Vec<u32> = config
        .placement
        .iter()
        .filter(|(_, h)| *h == dead)
        .map(|(vm, _)| *vm)
        .collect();
    let mut hosts: Vec<(usize, i64)> = config.hosts.iter().copied().filter(|(h, _)| *h != dead).collect();
    let plan = biggest_fit_decreasing(p, &failed, &hosts);
    if plan.len() != failed.len() {
        return None;
    }
    account(p, &mut hosts, &plan);
    let mut moved = vec![None; p.vm_uuid.len()];
    for &(vm, h) in &plan {
        moved[vm as usize] = Some(h);
    }
    let placement = config
        .placement
        .iter()
        .map(|&(vm, h)| (vm, moved[vm as usize].unwrap_or(h)))
        .collect();
    Some(Config {
        hosts,
        placement,
        total_hosts: config.total_hosts,
    })
}

fn trivially_never_possible(config: &Config, vms: usize, r: usize) -> bool {
    config.hosts.len() < r || (config.hosts.len() == r && vms > 0)
}

/// XAPI's overflow checks: a wrapped result is caught only when negative.
fn mul(a: i64, b: i64) -> Option<i64> {
    let x = a.wrapping_mul(b);
    (x >= 0).then_some(x)
}

fn binomial(n: usize, r: usize) -> Option<i64> {
    // Pascal's triangle with XAPI's addition check.
    let mut row = vec![Some(1i64)];
    for _ in 0..n {
        let mut next = vec![Some(1i64); row.len() + 1];
        for i in 1..row.len() {
            next[i] = match (row[i - 1], row[i]) {
                (Some(a), Some(b)) => {
                    let x = a.wrapping_add(b);
                    (x >= 0).then_some(x)
                }
                _ => None,
            };
        }
        row = next;
    }
    row.get(r).copied().flatten()
}

fn factorial(r: usize) -> Option<i64> {
    (1..=r as i64).try_fold(1i64, |acc, x| mul(x, acc))
}

/// `choose_heuristic`: true for the exhaustive heuristic.
pub(crate) fn exhaustive(total_hosts: usize, r: usize) -> bool {
    if total_hosts > 32 || r > total_hosts {
        return false;
    }
    match (binomial(total_hosts, r), factorial(r)) {
        (Some(c), Some(f)) => mul(c, f).is_some_and(|x| x < 3500),
        _ => false,
    }
}

/// Every ordered sequence of `r` of the live hosts survives.
fn every_permutation(p: &Problem, config: &Config, r: usize) -> bool {
    fn go(p: &Problem, config: &Config, r: usize, used: u64) -> bool {
        if r == 0 {
            return true;
        }
        config.hosts.iter().all(|&(h, _)| {
            if used & bit(h) != 0 {
                return true;
            }
            match simulate_failure(p, config, h) {
                Some(next) => go(p, &next, r - 1, used | bit(h)),
                None => false,
            }
        })
    }
    go(p, config, r, 0)
}

/// The worst-case approximation.
fn approximation(p: &Problem, config: &Config, r: usize) -> bool {
    let Some(max_vm) = config.placement.iter().map(|(vm, _)| p.size[*vm as usize]).max() else {
        return true;
    };
    if max_vm == 0 {
        // XAPI divides by zero here and reports no plan.
        return false;
    }
    let mut capacity: Vec<i64> = config.hosts.iter().map(|(_, free)| free / max_vm).collect();
    capacity.sort_by(|a, b| b.cmp(a));
    let left: i64 = capacity.iter().skip(r).sum();
    let mut counts: Vec<i64> = config
        .hosts
        .iter()
        .map(|(h, _)| config.placement.iter().filter(|(_, ph)| ph == h).count() as i64)
        .collect();
    counts.sort_by(|a, b| b.cmp(a));
    let to_move: i64 = counts.iter().take(r).sum();
    to_move <= left
}

/// `compute_restart_plan`: the config after down VMs are placed, the plan,
/// the protected VMs left down, and whether non-agile VMs exist.
struct RestartPlan {
    config: Config,
    plan: Vec<(u32, usize)>,
    not_restarted: Vec<u32>,
    non_agile: bool,
}

fn compute_restart_plan(p: &Problem, st: &State, down: &[u32]) -> RestartPlan {
    let n_hosts = p.host_uuid.len();
    let mut free = st.free.clone();
    let agile = |vm: u32| p.agile(vm);
    let non_agile = (0..p.vm_uuid.len() as u32).any(|v| !agile(v));
    // Down non-agile VMs restart on their pinned host (first by uuid that
    // reaches their storage, live or not); that host's memory pays for it.
    for &vm in down {
        if agile(vm) {
            continue;
        }
        if let Some(h) = hosts_of(p.allowed[vm as usize]).next() {
            if st.alive & bit(h) != 0 {
                free[h] -= p.size[vm as usize];
            }
        }
    }
    let hosts: Vec<(usize, i64)> = hosts_of(st.alive).map(|h| (h, free[h])).collect();
    // Placed agile VMs in VM uuid order.
    let mut at: Vec<Option<usize>> = vec![None; p.vm_uuid.len()];
    for h in hosts_of(st.alive) {
        for &vm in &st.on[h] {
            at[vm as usize] = Some(h);
        }
    }
    let placement: Vec<(u32, usize)> = (0..p.vm_uuid.len() as u32)
        .filter(|&v| agile(v))
        .filter_map(|v| at[v as usize].map(|h| (v, h)))
        .collect();
    let failed: Vec<u32> = down.iter().copied().filter(|&v| agile(v)).collect();
    let agile_plan = biggest_fit_decreasing(p, &failed, &hosts);
    let not_restarted: Vec<u32> = down
        .iter()
        .copied()
        .filter(|v| !agile_plan.iter().any(|(pv, _)| pv == v))
        .collect();
    let mut config = Config {
        hosts,
        placement,
        total_hosts: n_hosts,
    };
    account(p, &mut config.hosts, &agile_plan);
    let untouched: Vec<(u32, usize)> = config
        .placement
        .iter()
        .copied()
        .filter(|(vm, _)| !agile_plan.iter().any(|(pv, _)| pv == vm))
        .collect();
    config.placement = agile_plan.iter().copied().chain(untouched).collect();
    RestartPlan {
        config,
        plan: agile_plan,
        not_restarted,
        non_agile,
    }
}

/// `plan_for_n_failures`.
pub(crate) fn plan_status(p: &Problem, st: &State, down: &[u32], r: usize) -> Status {
    let rp = compute_restart_plan(p, st, down);
    if !rp.not_restarted.is_empty() || r > rp.config.total_hosts {
        return Status::NoPlan;
    }
    let agile_vms = (0..p.vm_uuid.len() as u32).filter(|&v| p.agile(v)).count();
    let possible = !trivially_never_possible(&rp.config, agile_vms, r)
        && if exhaustive(rp.config.total_hosts, r) {
            every_permutation(p, &rp.config, r)
        } else {
            agile_vms == 0 || approximation(p, &rp.config, r)
        };
    match (possible, rp.non_agile) {
        (true, false) => Status::AllVms,
        (true, true) => Status::ExcludingNonAgile,
        (false, _) => Status::NoPlan,
    }
}

/// `compute_max_host_failures_to_tolerate`: XAPI's bisection over 0..=n.
pub(crate) fn max_failures(p: &Problem, st: &State, down: &[u32]) -> u32 {
    let f = |r: i64| plan_status(p, st, down, r as usize) == Status::AllVms;
    let (mut lower, mut upper) = (0i64, p.host_uuid.len() as i64);
    loop {
        if upper - lower < 2 {
            return if f(upper) { upper as u32 } else { lower as u32 };
        }
        let mid = (upper + lower) / 2;
        if f(mid) {
            lower = mid;
        } else {
            upper = mid;
        }
    }
}

/// The placement XAPI would use for the down VMs (after the failed hosts
/// are taken out of `st`): biggest-fit-decreasing; non-agile VMs only on
/// their pinned host.
pub(crate) fn restart_plan(p: &Problem, st: &State, down: &[u32]) -> Vec<(u32, usize)> {
    let rp = compute_restart_plan(p, st, down);
    let mut plan = rp.plan;
    let mut free = st.free.clone();
    for &(vm, h) in &plan {
        free[h] -= p.size[vm as usize];
    }
    for &vm in down {
        if p.agile(vm) {
            continue;
        }
        if let Some(h) = hosts_of(p.allowed[vm as usize]).next() {
            if st.alive & bit(h) != 0 && free[h] >= p.size[vm as usize] {
                free[h] -= p.size[vm as usize];
                plan.push((vm, h));
            }
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::model::{Host, Pool, Vm};

    fn problem(hosts: &[(&str, i64)], vms: &[(&str, i64)]) -> (Problem, State, Vec<u32>) {
        let pool = Pool {
            hosts: hosts
                .iter()
                .map(|(u, f)| Host {
                    uuid: u.to_string(),
                    memory_free: *f,
                    live: true,
                    reaches: Default::default(),
                })
                .collect(),
            vms: vms
                .iter()
                .map(|(u, m)| Vm {
                    uuid: u.to_string(),
                    memory: *m,
                    resident_on: None,
                    needs: Default::default(),
                })
                .collect(),
        };
        Problem::compile(&pool).expect("valid pool")
    }

    #[test]
    fn biggest_fit_decreasing_breaks_ties_as_binpack_ml() {
        // Equal VMs go to the host with the most free memory; a host that
        // ties after an allocation is re-inserted before its equals.
        let (p, _, _) = problem(
            &[("x", 5), ("y", 5), ("z", 4)],
            &[("a", 3), ("b", 3), ("c", 2), ("d", 9)],
        );
        let bins = vec![(0, 5), (1, 5), (2, 4)];
        let plan = biggest_fit_decreasing(&p, &[0, 1, 2, 3], &bins);
        // d (9) fits nowhere and is left out; a -> x (2 left), b -> y (2
        // left), c -> z (2 left). Newest first, as XAPI conses.
        assert_eq!(plan, vec![(2, 2), (1, 1), (0, 0)]);
    }

    #[test]
    fn down_vms_are_packed_first_and_a_vm_that_fits_nowhere_means_no_plan() {
        let (p, st, down) = problem(&[("x", 8), ("y", 4)], &[("a", 6), ("b", 4)]);
        assert_eq!(restart_plan(&p, &st, &down).len(), 2);
        assert_eq!(plan_status(&p, &st, &down, 0), Status::AllVms);
        // After a -> x and b -> y nothing has room for a second move.
        assert_eq!(plan_status(&p, &st, &down, 1), Status::NoPlan);
        assert_eq!(max_failures(&p, &st, &down), 0);
        let (p, st, down) = problem(&[("x", 3)], &[("a", 6)]);
        assert_eq!(plan_status(&p, &st, &down, 0), Status::NoPlan);
    }

    #[test]
    fn heuristic_choice_matches_the_reference_examples() {
        // C(n,r) * r! < 3500 and n <= 32.
        assert!(exhaustive(16, 1));
        assert!(exhaustive(16, 2));
        assert!(exhaustive(16, 3)); // 560 * 6 = 3360
        assert!(!exhaustive(16, 4)); // 1820 * 24 = 43680
        assert!(exhaustive(32, 2)); // 992
        assert!(exhaustive(8, 4)); // 1680
        assert!(!exhaustive(33, 1));
        assert!(!exhaustive(32, 20)); // factorial overflows: approximate
        assert_eq!(binomial(16, 3), Some(560));
        assert_eq!(factorial(4), Some(24));
    }
}
