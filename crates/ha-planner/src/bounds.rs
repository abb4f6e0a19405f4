//! Cheap proofs about a state, used before (and instead of) any search.
//!
//! [`refute`] checks necessary conditions: if one fails it names a set of at
//! most `k` hosts whose simultaneous failure leaves protected VMs with
//! nowhere to go, so no plan for `k` failures exists. [`certify`] checks
//! sufficient conditions: if one holds, some restart policy (named by the
//! condition: the host with the most free memory, reserved holes, or the
//! policy of `policy.rs`) survives every sequence of `k` failures, and the
//! [`Certificate`] it returns says which.
//!
//! `refute`'s conditions: memory, counts per size threshold, memory per
//! size threshold with the room big VMs leave lost ([`fragments`], the idea
//! of Martello and Toth's L2), reachability.
//!
//! Both rest on one fact: only the VMs of failed hosts move, so after a set
//! F of hosts fails, the VMs that were on F (and any VM still waiting for a
//! host) must fit into the free memory of the hosts outside F.

use crate::policy::{self, PolicyProof, Variant};
use crate::problem::{bit, hosts_of, HostSet, Problem, State};

/// A sufficient condition that proved a plan exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Certificate {
    /// Slots of the biggest VM's size: restarting on the host with the most
    /// free memory survives.
    Slots,
    /// A few big VMs in holes reserved on some hosts, the others in the
    /// headroom outside them.
    Tiers,
    /// Headroom (free memory less the biggest VM) on every host: restarting
    /// on the host with the most free memory survives.
    Headroom,
    /// The restart policy of issue 27 (big VM to the most free host, others
    /// onto its host first, then best fit), proven by total memory alone.
    Fluid,
    /// The same policy, proven with holes kept for the big VMs.
    Hole,
    /// VMs that only some hosts can run: each group of hosts that reach the
    /// same SRs and networks proven on its own by the conditions above, every
    /// VM kept in its group.
    Regions,
}

impl Certificate {
    /// A short name for explanations and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Certificate::Slots => "slots",
            Certificate::Tiers => "tiers",
            Certificate::Headroom => "headroom",
            Certificate::Fluid => "policy-fluid",
            Certificate::Hole => "policy-hole",
            Certificate::Regions => "regions",
        }
    }
}

impl From<PolicyProof> for Certificate {
    fn from(p: PolicyProof) -> Self {
        match p {
            PolicyProof::Fluid => Certificate::Fluid,
            PolicyProof::Hole => Certificate::Hole,
        }
    }
}

/// The VMs that may ever need a host: those placed and those pending.
fn all_vms<'a>(st: &'a State, pending: &'a [u32]) -> impl Iterator<Item = u32> + 'a {
    hosts_of(st.alive)
        .flat_map(|h| st.on[h].iter().copied())
        .chain(pending.iter().copied())
}

/// The `k` live hosts with the largest `value` (ties: lower index).
fn top_k(st: &State, k: u32, value: impl Fn(usize) -> i64) -> Vec<usize> {
    let mut hosts: Vec<(i64, usize)> = hosts_of(st.alive).map(|h| (value(h), h)).collect();
    hosts.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    hosts.into_iter().take(k as usize).map(|(_, h)| h).collect()
}

/// Up to this many distinct VM sizes serve as thresholds in [`refute`].
const THRESHOLDS: usize = 12;

/// A set of at most `k` live hosts whose failure no plan survives, if the
/// necessary conditions find one.
pub(crate) fn refute(p: &Problem, st: &State, pending: &[u32], k: u32) -> Option<Vec<usize>> {
    if st.alive_count() < k {
        // There are not that many hosts left to fail.
        return Some(hosts_of(st.alive).collect());
    }
    let vms: Vec<u32> = all_vms(st, pending).collect();
    if vms.is_empty() {
        return None;
    }
    if st.alive_count() <= k {
        return Some(hosts_of(st.alive).collect());
    }
    // Every VM needs a live host that reaches its storage and networks.
    let mut host_of = vec![None; p.size.len()];
    for h in hosts_of(st.alive) {
        for &v in &st.on[h] {
            host_of[v as usize] = Some(h);
        }
    }
    for &v in &vms {
        // A pending VM has nowhere to go once its allowed hosts fail; a
        // placed VM once its own host fails too.
        let mut set = p.allowed[v as usize] & st.alive;
        if let Some(h) = host_of[v as usize] {
            set |= bit(h);
        }
        if set.count_ones() <= k {
            return Some(hosts_of(set).collect());
        }
    }
    let free = |h: usize| st.free[h].max(0);
    let pending_mem: i64 = pending.iter().map(|&v| p.size[v as usize]).sum();
    let total_free: i64 = hosts_of(st.alive).map(free).sum();
    // Memory: what the failed hosts held must fit in what the rest have free.
    let f = top_k(st, k, |h| st.load(p, h) + free(h));
    let lost: i64 = f.iter().map(|&h| st.load(p, h) + free(h)).sum();
    if pending_mem + lost > total_free {
        return Some(f);
    }
    // Counting: at most free/t VMs of size >= t fit into `free`.
    let mut sizes: Vec<i64> = vms.iter().map(|&v| p.size[v as usize]).collect();
    sizes.sort_unstable_by(|a, b| b.cmp(a));
    sizes.dedup();
    let mut thresholds: Vec<i64> = sizes.iter().take(THRESHOLDS).copied().collect();
    if let Some(&smallest) = sizes.last() {
        thresholds.push(smallest);
    }
    // Every VM size, largest first, with how many VMs have it.
    let mut counted: Vec<(i64, u32)> = Vec::new();
    let mut all: Vec<i64> = vms.iter().map(|&v| p.size[v as usize]).collect();
    all.sort_unstable_by(|a, b| b.cmp(a));
    for s in all {
        match counted.last_mut() {
            Some((x, n)) if *x == s => *n += 1,
            _ => counted.push((s, 1)),
        }
    }
    for &t in &thresholds {
        let at_least_t = counted.partition_point(|&(s, _)| s >= t);
        if let Some(f) = fragments(p, st, pending, k, &counted[..at_least_t], t) {
            return Some(f);
        }
    }
    for t in thresholds {
        let count = |h: usize| st.on[h].iter().filter(|&&v| p.size[v as usize] >= t).count() as i64;
        let slots = |h: usize| free(h) / t;
        let pending_count = pending.iter().filter(|&&v| p.size[v as usize] >= t).count() as i64;
        let total_slots: i64 = hosts_of(st.alive).map(slots).sum();
        let f = top_k(st, k, |h| count(h) + slots(h));
        let lost: i64 = f.iter().map(|&h| count(h) + slots(h)).sum();
        if pending_count + lost > total_slots {
            return Some(f);
        }
    }
    None
}

/// The idea of Martello and Toth's bound L2, per size threshold `t`, for
/// hosts of different sizes: a host with less than `3t` free takes at most
/// two VMs of size `t` or more, so those VMs fill at most the largest sum
/// of one or two of their sizes that fits (L2's point: a big item leaves
/// room no other item of size `t` fits in, and that room is lost). A host
/// with `3t` or more is credited all its free memory. With `cap_h` that
/// credit, the VMs of size `t` or more on failed hosts (and pending ones)
/// must fit into `Σ cap` of the survivors; the adversary fails the `k` hosts
/// with the most `carried + cap`. Sizes are those of every VM (a superset
/// of those that move, so `cap` is never too small): a necessary
/// condition, like the others here.
/// `sizes`: the sizes of `t` or more, largest first, with how many VMs
/// have each.
fn fragments(p: &Problem, st: &State, pending: &[u32], k: u32, sizes: &[(i64, u32)], t: i64) -> Option<Vec<usize>> {
    let cap = |h: usize| -> i64 {
        let f = st.free[h].max(0);
        if f < t {
            return 0;
        }
        if f / 3 >= t {
            return f;
        }
        // One VM: the largest that fits.
        let first = sizes.iter().position(|&(s, _)| s <= f);
        let mut best = first.map_or(0, |i| sizes[i].0);
        if f / 2 >= t {
            // Two VMs: each size with the largest partner that still fits.
            for (i, &(s, n)) in sizes.iter().enumerate().skip(first.unwrap_or(sizes.len())) {
                let room = f - s;
                let partner = sizes
                    .iter()
                    .enumerate()
                    .skip(i)
                    .find(|&(j, &(x, _))| x <= room && (j != i || n >= 2))
                    .map(|(_, &(x, _))| x);
                if let Some(x) = partner {
                    best = best.max(s + x);
                }
            }
        }
        best
    };
    let caps: Vec<i64> = (0..st.free.len())
        .map(|h| if st.alive & bit(h) != 0 { cap(h) } else { 0 })
        .collect();
    let carried = |h: usize| st.load_of(p, h, |v| p.size[v as usize] >= t);
    let pending_t: i64 = pending.iter().map(|&v| p.size[v as usize]).filter(|&s| s >= t).sum();
    let total: i64 = caps.iter().sum();
    let f = top_k(st, k, |h| carried(h) + caps[h]);
    let lost: i64 = f.iter().map(|&h| carried(h) + caps[h]).sum();
    (pending_t + lost > total).then_some(f)
}

/// Which sufficient condition, if any, proves that every sequence of up to
/// `k` failures can be absorbed, with `pending` placed first: slots, tiers
/// and headroom ([`classic`]), the restart policy's certificates
/// (`policy.rs`), then the same per group of hosts ([`regions`]).
pub(crate) fn certify(p: &Problem, st: &State, pending: &[u32], k: u32) -> Option<Certificate> {
    whole(p, st, pending, k).or_else(|| regions(p, st, pending, k).then_some(Certificate::Regions))
}

/// The conditions that need every VM to be allowed on every live host.
fn whole(p: &Problem, st: &State, pending: &[u32], k: u32) -> Option<Certificate> {
    if let Some(c) = classic(p, st, pending, k) {
        return Some(c);
    }
    policy::certify(p, st, pending, k, Variant::Sound).map(|proof| proof.kind.into())
}

/// VMs that only some hosts can run, treated conservatively: live hosts
/// are grouped by what they reach (hosts in one group are allowed by the
/// same VMs), and each VM is confined to one group: its host's, or for a
/// pending VM the allowed group with the most free memory. Confining VMs
/// only takes choices away, and the groups then play independent games:
/// the adversary's failures split among them, so each group holding VMs
/// must survive `k` failures on its own.
fn regions(p: &Problem, st: &State, pending: &[u32], k: u32) -> bool {
    let mut groups: Vec<(u32, HostSet)> = Vec::new();
    for h in hosts_of(st.alive) {
        match groups.iter_mut().find(|(id, _)| *id == p.reach_id[h]) {
            Some((_, set)) => *set |= bit(h),
            None => groups.push((p.reach_id[h], bit(h))),
        }
    }
    if groups.len() < 2 {
        // One group is the whole pool: nothing to add to `whole`.
        return false;
    }
    let free_of = |set: HostSet| hosts_of(set).map(|h| st.free[h]).sum::<i64>();
    let mut pending_of: Vec<Vec<u32>> = vec![Vec::new(); groups.len()];
    for &v in pending {
        let allowed = p.allowed[v as usize];
        let Some(g) = (0..groups.len())
            .filter(|&g| groups[g].1 & allowed == groups[g].1)
            .max_by_key(|&g| (free_of(groups[g].1), std::cmp::Reverse(g)))
        else {
            return false;
        };
        pending_of[g].push(v);
    }
    groups.iter().zip(&pending_of).all(|(&(_, set), pend)| {
        let holds_vms = !pend.is_empty() || hosts_of(set).any(|h| !st.on[h].is_empty());
        if !holds_vms {
            return true;
        }
        let sub = State {
            alive: set,
            free: st.free.clone(),
            on: st.on.clone(),
        };
        whole(p, &sub, pend, k).is_some()
    })
}

/// Slots, tiers and headroom.
///
/// Each needs every VM to be allowed on every live host. With `t` the
/// biggest VM, a host with at least `t` free takes any VM.
/// - Slots: a host has `free / t` slots and each placement uses at most one.
/// - Headroom: a host has `free - t + 1` bytes of headroom (if positive) and
///   a placement of `s` bytes uses at most `s` of it.
///
/// Placements onto hosts that later fail use up only those hosts' slots or
/// headroom, which are lost with them anyway; so the worst case is the `k`
/// hosts that carry the most VMs plus slots (or memory plus headroom), and
/// the condition is that what they carry fits into what the rest offer.
fn classic(p: &Problem, st: &State, pending: &[u32], k: u32) -> Option<Certificate> {
    if st.alive_count() < k {
        return None;
    }
    let mut t = 0;
    for v in all_vms(st, pending) {
        if p.allowed[v as usize] & st.alive != st.alive {
            return None;
        }
        t = t.max(p.size[v as usize]);
    }
    if t == 0 {
        return Some(Certificate::Slots);
    }
    if st.alive_count() <= k {
        return None;
    }
    let free = |h: usize| st.free[h].max(0);

    let slots = |h: usize| free(h) / t;
    let total_slots: i64 = hosts_of(st.alive).map(slots).sum();
    let count = |h: usize| st.on[h].len() as i64;
    let lost: i64 = top_k(st, k, |h| count(h) + slots(h))
        .iter()
        .map(|&h| count(h) + slots(h))
        .sum();
    if pending.len() as i64 + lost <= total_slots {
        return Some(Certificate::Slots);
    }

    if tiers(p, st, pending, k) {
        return Some(Certificate::Tiers);
    }

    let room = |h: usize| (free(h) - t + 1).max(0);
    let total_room: i64 = hosts_of(st.alive).map(room).sum();
    let smallest = all_vms(st, pending).map(|v| p.size[v as usize]).min().unwrap_or(0);
    let pending_mem: i64 = pending.iter().map(|&v| p.size[v as usize]).sum();
    let lost: i64 = top_k(st, k, |h| st.load(p, h) + room(h))
        .iter()
        .map(|&h| st.load(p, h) + room(h))
        .sum();
    // The last VM placed needs only some room to be left before it.
    (pending_mem + lost < total_room + smallest).then_some(Certificate::Headroom)
}

/// Up to this many of the largest distinct VM sizes are tried as the
/// lower edge of the "big" tier in [`tiers`].
const TIER_SPLITS: usize = 3;

/// The sufficient condition for pools with a few big VMs among small ones.
///
/// Big VMs (size at least the split) only ever go into *holes*: `t_big`
/// bytes reserved on each of `m` hosts. Small VMs only use free memory
/// outside the holes. Over any failure set F, holes are lost by big VMs
/// moving (those pending, and those on F) and by failed hosts that held an
/// intact hole; a big VM moved into a hole consumes it, so a host that
/// fails after taking one loses nothing more. In total at most
/// `pending_big + Σ_F (big_h + [h has a hole])`: when that is at most `m`, a
/// hole is always left for the next big VM. Small VMs then need the
/// headroom condition of [`certify`] on the memory outside the holes
/// (which a big VM taking a hole never shrinks).
fn tiers(p: &Problem, st: &State, pending: &[u32], k: u32) -> bool {
    let vms: Vec<u32> = all_vms(st, pending).collect();
    let mut sizes: Vec<i64> = vms.iter().map(|&v| p.size[v as usize]).collect();
    sizes.sort_unstable_by(|a, b| b.cmp(a));
    sizes.dedup();
    let Some(&t_big) = sizes.first() else { return true };
    let free = |h: usize| st.free[h].max(0);
    for split in sizes.iter().take(TIER_SPLITS).copied() {
        let big = |v: u32| p.size[v as usize] >= split;
        // Counted once per host: the loop below asks for every `m`.
        let mut big_count = vec![0i64; st.free.len()];
        for h in hosts_of(st.alive) {
            big_count[h] = st.on[h].iter().filter(|&&v| big(v)).count() as i64;
        }
        let big_on = |h: usize| big_count[h];
        let pending_big = pending.iter().filter(|&&v| big(v)).count() as i64;
        // Holes on the hosts with the most free memory, as few as will do.
        let mut eligible: Vec<usize> = hosts_of(st.alive).filter(|&h| free(h) >= t_big).collect();
        eligible.sort_by(|a, b| free(*b).cmp(&free(*a)).then(a.cmp(b)));
        let mut holes: u64 = 0;
        let mut found = false;
        for m in 0..=eligible.len() {
            if m > 0 {
                holes |= bit(eligible[m - 1]);
            }
            let value = |h: usize| big_on(h) + i64::from(holes & bit(h) != 0);
            let lost: i64 = top_k(st, k, value).iter().map(|&h| value(h)).sum();
            if pending_big + lost <= m as i64 {
                found = true;
                break;
            }
        }
        if !found {
            continue;
        }
        // Small VMs on the memory outside the holes.
        let small: Vec<u32> = vms.iter().copied().filter(|&v| !big(v)).collect();
        let Some(t_small) = small.iter().map(|&v| p.size[v as usize]).max() else {
            return true;
        };
        let smallest = small.iter().map(|&v| p.size[v as usize]).min().unwrap_or(0);
        let outside = |h: usize| free(h) - if holes & bit(h) != 0 { t_big } else { 0 };
        let room = |h: usize| (outside(h) - t_small + 1).max(0);
        let small_load = |h: usize| st.load_of(p, h, |v| !big(v));
        let pending_small: i64 = pending.iter().filter(|&&v| !big(v)).map(|&v| p.size[v as usize]).sum();
        let total_room: i64 = hosts_of(st.alive).map(room).sum();
        let lost: i64 = top_k(st, k, |h| small_load(h) + room(h))
            .iter()
            .map(|&h| small_load(h) + room(h))
            .sum();
        if pending_small + lost < total_room + smallest {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::model::{Host, Pool, Vm};

    /// Host `a` carries VMs of 6, 3, 3 and 3; `b` and `c` have 8 free
    /// each. 15 fits into 16 by memory and by every count, but each
    /// survivor takes at most 6 of these sizes (6 + 3 > 8, 3 + 3 + 3 > 8).
    fn fragmented() -> Pool {
        let host = |uuid: &str, free: i64| Host {
            uuid: uuid.into(),
            memory_free: free,
            live: true,
            reaches: BTreeSet::new(),
        };
        let vm = |i: usize, memory: i64| Vm {
            uuid: format!("v{i}"),
            memory,
            resident_on: Some("a".into()),
            needs: BTreeSet::new(),
        };
        Pool {
            hosts: vec![host("a", 0), host("b", 8), host("c", 8)],
            vms: vec![vm(0, 6), vm(1, 3), vm(2, 3), vm(3, 3)],
        }
    }

    #[test]
    fn lost_room_refutes_what_memory_and_counts_allow() {
        let (p, st, down) = Problem::compile(&fragmented()).unwrap();
        assert_eq!(fragments(&p, &st, &down, 1, &[(6, 1), (3, 3)], 3), Some(vec![0]));
        assert_eq!(refute(&p, &st, &down, 1), Some(vec![0]));
        // Nothing to refute without failures, nor with a host of 9 free.
        assert_eq!(refute(&p, &st, &down, 0), None);
        let mut roomier = fragmented();
        roomier.hosts[1].memory_free = 9;
        let (p, st, down) = Problem::compile(&roomier).unwrap();
        assert_eq!(fragments(&p, &st, &down, 1, &[(6, 1), (3, 3)], 3), None);
        assert_eq!(refute(&p, &st, &down, 1), None);
    }

    #[test]
    fn a_pair_of_one_size_needs_two_vms_of_it() {
        // One VM of 4 and one of 3 on `a`; `b` has 8 free: 4 + 4 would fit
        // but there is one 4; 4 + 3 = 7 is the most `b` takes, enough.
        let mut pool = fragmented();
        pool.vms = vec![pool.vms[1].clone(), pool.vms[0].clone()];
        pool.vms[0].memory = 3;
        pool.vms[1].memory = 4;
        pool.hosts[2].live = false;
        let (p, st, down) = Problem::compile(&pool).unwrap();
        assert_eq!(fragments(&p, &st, &down, 1, &[(4, 1), (3, 1)], 3), None);
        assert_eq!(fragments(&p, &st, &down, 1, &[(4, 2), (3, 1)], 3), None);
    }
}
