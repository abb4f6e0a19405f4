//! A fixed restart policy ("BF-Hβ") and the closed-form certificate that it
//! survives every sequence of `k` host failures (issue 27).
//!
//! **The policy**, applied to the pending VMs first and then after every
//! failure, each batch biggest first:
//! 1. the *big* VM (the unique largest, size `b`) goes to the live host with
//!    the most free memory;
//! 2. every other VM (size at most `t`, the second-largest size) goes onto
//!    the big VM's current host `β` if it fits there;
//! 3. otherwise to the live host with the least free memory that still fits
//!    (best fit).
//!
//! Every rule places a VM whenever some live host has room for it (the
//! policy is *any-fit*), which the first condition below relies on.
//!
//! **The certificate** holds when every VM may run on every live host and,
//! with `n` live hosts, `L` the protected memory (placed and pending),
//! `cap_h = free_h + load_h` (constant through the game) and `n_j = n - j`:
//! - **S_j** for every `j <= k` (`j = 0` only with pending VMs):
//!   `T_j >= (n_j - 1)·t`, where `T_j` is the least `Σ cap - L` over any
//!   `n_j` live hosts (the adversary removing the largest). A VM of size
//!   `s <= t` fails to place only if every live host has less than `s` free;
//!   the free memory then, at least `T_j` plus the unplaced VM itself, would
//!   be below `n_j·s`, which S_j forbids.
//! - **Fluid**: S_j with `t` the largest VM proves any any-fit policy,
//!   this one included; it needs no big VM.
//! - **H_j** for every `j < k`: the sum of the `n_j` smallest
//!   `val_h = cap_h - hid_h` exceeds `L + (b - t) + B_j - min hid`, where
//!   `hid_h = free_h` if `free_h < b`, else `t`, and `B_j` bounds the free
//!   memory of `β` after step `j` (below). Then after every step some host
//!   other than `β` has at least `b` free (a *hole*), so the big VM has
//!   somewhere to go when `β` fails. Proof: only VMs of size at most `t`
//!   land on hosts other than `β`, and best fit breaks a hole (brings a host
//!   that started with at least `b` free into `[t, b)`) only when no other
//!   such host exists, as that one would fit the VM with less free memory.
//!   So with no hole, every host other than `β` has at most `hid_h` free,
//!   but for one with less than `b`; summing, `Σ cap - L <= Σ hid - hid_β +
//!   (b - t) + B_j`, against H_j.
//! - **B_j**: if `β` ends a step with at least `t` free, every small VM
//!   placed since `β` took the big VM went onto `β` (it fitted, and `β` is
//!   tried first). With `P` the pending small memory and `ℓ` the least
//!   small-VM load any live host starts with: `B_0 = max(t, f_β0 - P)` when
//!   the big VM runs on `β0`, else `max(t, max f - b - P)`; for `j >= 1`,
//!   `B_j = max(t, f_β0 - P - ℓ, max f - b - ℓ)` (the first term only when
//!   the big VM starts placed): the host failed at step 1 (or the previous
//!   `β`) carried at least `ℓ` of small VMs, all of which went to `β`.
//! - **A hole now** when the big VM is pending.
//!
//! VMs that only some hosts can run are not covered: the certificate then
//! does not apply, and the other proofs or the search decide.

use crate::problem::{hosts_of, Problem, State};

/// Which of the policy's certificates proved a question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PolicyProof {
    /// S_j with `t` the largest VM: no hole needed.
    Fluid,
    /// S_j with `t` the second-largest VM, and H_j for the big VM.
    Hole,
}

/// The certificate as written, or a deliberately broken one (H_j dropped)
/// that the tests must catch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Variant {
    Sound,
    WithoutHoles,
}

/// What the conditions need, computed once per state.
struct Aggregates {
    /// Live hosts.
    n: usize,
    /// Protected memory, placed and pending.
    load: i64,
    /// `prefix_cap[i]`: the sum of the `i` smallest capacities.
    prefix_cap: Vec<i64>,
    /// Largest VM, and how many VMs have that size.
    b: i64,
    b_count: usize,
    /// Largest size below `b` (0 if none).
    t: i64,
    /// The big VM's host at the start, if it is placed.
    beta0: Option<usize>,
    pending_small: i64,
    pending_any: bool,
}

impl Aggregates {
    fn new(p: &Problem, st: &State, pending: &[u32]) -> Option<Aggregates> {
        let mut sizes = Vec::new();
        for h in hosts_of(st.alive) {
            for &v in &st.on[h] {
                if p.allowed[v as usize] & st.alive != st.alive {
                    return None;
                }
                sizes.push(p.size[v as usize]);
            }
        }
        for &v in pending {
            if p.allowed[v as usize] & st.alive != st.alive {
                return None;
            }
            sizes.push(p.size[v as usize]);
        }
        let b = sizes.iter().copied().max().unwrap_or(0);
        let b_count = sizes.iter().filter(|&&s| s == b).count();
        let t = sizes.iter().copied().filter(|&s| s < b).max().unwrap_or(0);
        let beta0 = hosts_of(st.alive).find(|&h| st.on[h].iter().any(|&v| p.size[v as usize] == b));
        let mut caps: Vec<i64> = hosts_of(st.alive).map(|h| st.free[h] + st.load(p, h)).collect();
        caps.sort_unstable();
        let prefix_cap = prefix(&caps);
        Some(Aggregates {
            n: caps.len(),
            load: sizes.iter().sum(),
            prefix_cap,
            b,
            b_count,
            t,
            beta0,
            pending_small: pending.iter().map(|&v| p.size[v as usize]).filter(|&s| s < b).sum(),
            pending_any: !pending.is_empty(),
        })
    }

    /// S_j for every `j <= k` with VMs of size at most `t`.
    fn small_vms_place(&self, k: u32, t: i64) -> bool {
        let first = if self.pending_any { 0 } else { 1 };
        (first..=k as usize).all(|j| {
            let alive = self.n - j;
            // The adversary keeps the `alive` smallest capacities.
            // In i128: `(alive - 1)·t` may pass `i64::MAX` on hostile input.
            i128::from(self.prefix_cap[alive] - self.load) >= (alive as i128 - 1) * i128::from(t)
        })
    }
}

fn prefix(sorted: &[i64]) -> Vec<i64> {
    let mut out = Vec::with_capacity(sorted.len() + 1);
    out.push(0);
    let mut sum = 0;
    for &x in sorted {
        sum += x;
        out.push(sum);
    }
    out
}

/// Does the policy survive every sequence of `k` failures from `st`, with
/// `pending` placed first? Which certificate says so.
pub(crate) fn certify(p: &Problem, st: &State, pending: &[u32], k: u32, variant: Variant) -> Option<PolicyProof> {
    let agg = Aggregates::new(p, st, pending)?;
    if agg.n < k as usize {
        return None;
    }
    if agg.b == 0 {
        return Some(PolicyProof::Fluid);
    }
    if agg.n <= k as usize {
        return None;
    }
    if agg.small_vms_place(k, agg.b) {
        return Some(PolicyProof::Fluid);
    }
    if agg.b_count != 1 {
        return None;
    }
    let (b, t) = (agg.b, agg.t);
    let max_free = hosts_of(st.alive).map(|h| st.free[h]).max()?;
    if agg.beta0.is_none() && max_free < b {
        // The big VM is pending and fits nowhere.
        return None;
    }
    if !agg.small_vms_place(k, t) {
        return None;
    }
    if variant == Variant::WithoutHoles || k == 0 {
        return Some(PolicyProof::Hole);
    }
    let hid = |h: usize| if st.free[h] < b { st.free[h] } else { t };
    let hid_min = hosts_of(st.alive).map(hid).min()?;
    let mut vals: Vec<i64> = hosts_of(st.alive)
        .map(|h| st.free[h] + st.load(p, h) - hid(h))
        .collect();
    vals.sort_unstable();
    let prefix_val = prefix(&vals);
    let small_load = |h: usize| {
        st.on[h]
            .iter()
            .map(|&v| p.size[v as usize])
            .filter(|&s| s < b)
            .sum::<i64>()
    };
    let least_small = hosts_of(st.alive).map(small_load).min()?;
    let after_start = match agg.beta0 {
        Some(h) => st.free[h] - agg.pending_small,
        None => max_free - b - agg.pending_small,
    };
    let mut after_failure = max_free - b - least_small;
    if let Some(h) = agg.beta0 {
        after_failure = after_failure.max(st.free[h] - agg.pending_small - least_small);
    }
    (0..k as usize)
        .all(|j| {
            let beta_free = t.max(if j == 0 { after_start } else { after_failure });
            let bound = i128::from(agg.load) + i128::from(b - t) + i128::from(beta_free) - i128::from(hid_min);
            i128::from(prefix_val[agg.n - j]) > bound
        })
        .then_some(PolicyProof::Hole)
}

/// The largest `k` (up to `limit`) the certificate proves, if any.
pub(crate) fn max_certified(
    p: &Problem,
    st: &State,
    pending: &[u32],
    limit: u32,
    variant: Variant,
) -> Option<(u32, PolicyProof)> {
    // The conditions for `k` include those for every smaller `k`.
    let mut best = None;
    for k in 0..=limit {
        match certify(p, st, pending, k, variant) {
            Some(proof) => best = Some((k, proof)),
            None => break,
        }
    }
    best
}

/// The policy's placement of `batch` from `st`, or `None` if a VM fits
/// nowhere. The big VM is the unique largest of every VM in play (placed on
/// a live host or in the batch); with no unique largest, every VM is placed
/// by best fit.
pub(crate) fn place(p: &Problem, st: &State, batch: &[u32]) -> Option<Vec<(u32, usize)>> {
    let placed = hosts_of(st.alive).flat_map(|h| st.on[h].iter().map(move |&v| (v, Some(h))));
    let all: Vec<(u32, Option<usize>)> = placed.chain(batch.iter().map(|&v| (v, None))).collect();
    let b = all.iter().map(|&(v, _)| p.size[v as usize]).max().unwrap_or(0);
    let mut biggest = all.iter().filter(|&&(v, _)| p.size[v as usize] == b);
    let big = match (biggest.next(), biggest.next()) {
        (Some(&(v, h)), None) => Some((v, h)),
        _ => None,
    };
    let mut beta = big.and_then(|(_, h)| h);
    let mut free = st.free.clone();
    let mut plan = Vec::with_capacity(batch.len());
    for vm in crate::pack::decreasing(p, batch) {
        let size = p.size[vm as usize];
        let fits: Vec<usize> = hosts_of(p.allowed[vm as usize] & st.alive)
            .filter(|&h| free[h] >= size)
            .collect();
        let host = if big.is_some_and(|(v, _)| v == vm) {
            let h = fits
                .iter()
                .copied()
                .max_by(|a, b| free[*a].cmp(&free[*b]).then(b.cmp(a)))?;
            beta = Some(h);
            h
        } else {
            match beta {
                Some(h) if fits.contains(&h) => h,
                _ => fits
                    .iter()
                    .copied()
                    .min_by(|a, b| free[*a].cmp(&free[*b]).then(a.cmp(b)))?,
            }
        };
        free[host] -= size;
        plan.push((vm, host));
    }
    Some(plan)
}
