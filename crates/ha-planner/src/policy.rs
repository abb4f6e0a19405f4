//! A fixed restart policy ("BF-Hβ") and the closed-form certificates that
//! it survives every sequence of `k` host failures (issue 27).
//!
//! **The policy**, with a threshold `t`: VMs larger than `t` are *big*, the
//! hosts carrying a big VM are the *β hosts*. Applied to the pending VMs
//! first and then after every failure, each batch biggest first:
//! 1. a big VM goes to the live host *without* a big VM that has the most
//!    free memory (the host with the most free memory if none fits);
//! 2. any other VM goes onto the host that took this batch's first big VM
//!    if there is one and it fits, else onto a β host if one has room (the
//!    fullest that fits);
//! 3. otherwise to the live host with the least free memory that still fits
//!    (best fit).
//!
//! Every rule places a VM whenever some live host has room for it (the
//! policy is *any-fit*), which the first condition below relies on.
//!
//! **The certificates** need every VM to be allowed on every live host.
//! With `n` live hosts, `L` the protected memory (placed and pending),
//! `cap_h = free_h + load_h` (constant through the game), `n_j = n - j`,
//! `f_h` the free memory now, `b` the largest VM and `m` the number of big
//! VMs:
//! - **S_j** for every `j <= k` (`j = 0` only with pending VMs):
//!   `T_j >= (n_j - 1)·t`, where `T_j` is the least `Σ cap - L` over any
//!   `n_j` live hosts (the adversary removing the largest). A VM of size
//!   `s <= t` fails to place only if every live host has less than `s` free;
//!   the free memory then, at least `T_j` plus the unplaced VM itself, would
//!   be below `n_j·s`, which S_j forbids.
//! - **Fluid**: S_j with `t` the largest VM (no VM is big) proves any
//!   any-fit policy, this one included.
//! - **Holes**: S_j for the small VMs, and for every `j < k` the condition
//!   H_j below, which makes sure that after every step at least `c` hosts
//!   other than the β hosts have `b` free (*holes*), `c` being the most big
//!   VMs one host carries now (at least 1): a host takes a big VM only while
//!   it carries none, so no host ever carries more, and the big VMs of
//!   whichever β host fails next each find a hole of their own. Pending big
//!   VMs need as many hosts without a big VM and with `b` free now. Why H_j
//!   does it:
//!   - only small VMs land on non-β hosts (a host taking a big VM becomes a
//!     β host until it fails), and best fit brings a non-β host from at least
//!     `b` free into `[t, b)` only when no other non-β host is in `[t, b)`
//!     having started with at least `b`: that one would fit the VM with less
//!     free memory. So at most one such host exists at any time;
//!   - with `hid_h = f_h` if `f_h < b`, else `t`, a non-β host that is no
//!     hole has at most `hid_h` free, but for that one host, with less than
//!     `b`; a hole at most `f_h = hid_h + (f_h - t)`; a β host at most
//!     `hid_h + d_h` (below);
//!   - so with fewer than `c` holes, `Σ cap - L = Σ free <= Σ hid + (b - t)
//!     + (the c - 1 largest f_h - t) + (the m largest d_h)`, and H_j says the
//!     sum of the `n_j` smallest `val_h = cap_h - hid_h` is larger (there
//!     are at most `m` β hosts).
//!
//!   A β host that carries a big VM now holds at most `f_h`. One that takes
//!   a big VM (at least `b'`, the smallest big VM) after a failure also
//!   takes every small VM of that batch first unless it ends below `t`: the
//!   failed host carried at least `ℓ` of them, `ℓ` being the least small-VM
//!   load any live host starts with; so it holds at most `max(t, f_h - b' -
//!   ℓ)`. With pending big VMs, or a host carrying several, a host may take
//!   a big VM without those small ones: then at most `f_h - b'`. `d_h` is
//!   the bound that applies less `hid_h`.
//! - **One big VM** (`m = 1`): the bound on `β` is sharper still. If `β` ends a
//!   step with at least `t` free, every small VM placed since `β` took the
//!   big VM went onto `β` (it fitted, and `β` is tried first). With `P` the
//!   pending small memory and `ℓ` the least small-VM load any live host
//!   starts with, `β` has at most `B_0 = max(t, f_β0 - P)` after the pending
//!   VMs when the big VM runs on `β0`, else `max(t, max f - b - P)`; and for
//!   `j >= 1`, `B_j = max(t, f_β0 - P - ℓ, max f - b - ℓ)` (the first term
//!   only when the big VM starts placed): the host failed at step 1 (or the
//!   previous `β`) carried at least `ℓ` of small VMs, all of which went to
//!   `β`. H_j is then `Σ_{n_j smallest} val > L + (b - t) + B_j - min hid`.
//!
//! VMs that only some hosts can run are not covered here: `bounds::regions`
//! confines each VM to its group of hosts and applies these certificates
//! to each group alone; otherwise the other proofs or the search decide.

use crate::problem::{bit, hosts_of, HostSet, Problem, State};

/// Which of the policy's certificates proved a question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PolicyProof {
    /// S_j with `t` the largest VM: no hole needed.
    Fluid,
    /// S_j with `t` below the big VMs, and H_j for them.
    Hole,
}

/// A proof, and the threshold the policy must use: VMs larger than
/// `big_above` are big.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Proven {
    pub kind: PolicyProof,
    pub big_above: i64,
}

/// The certificate as written, or a deliberately broken one (H_j dropped)
/// that the tests must catch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Variant {
    Sound,
    WithoutHoles,
}

/// Up to this many of the largest distinct sizes are tried as the smallest
/// big VM.
const SPLITS: usize = 3;

/// What the conditions need, computed once per state.
struct Aggregates {
    /// Live hosts.
    n: usize,
    /// Protected memory, placed and pending.
    load: i64,
    /// `prefix_cap[i]`: the sum of the `i` smallest capacities.
    prefix_cap: Vec<i64>,
    /// The `SPLITS + 1` largest distinct VM sizes, largest first.
    sizes: Vec<i64>,
    pending_any: bool,
    max_free: i64,
}

impl Aggregates {
    fn new(p: &Problem, st: &State, pending: &[u32]) -> Option<Aggregates> {
        // The largest distinct sizes, without sorting every VM: the search
        // asks this at every node.
        let mut sizes: Vec<i64> = Vec::with_capacity(SPLITS + 2);
        let mut load = 0;
        for v in hosts_of(st.alive).flat_map(|h| st.on[h].iter()).chain(pending) {
            if p.allowed[*v as usize] & st.alive != st.alive {
                return None;
            }
            let s = p.size[*v as usize];
            load += s;
            if sizes.len() <= SPLITS || s > sizes[SPLITS] {
                if let Err(at) = sizes.binary_search_by(|x| s.cmp(x)) {
                    sizes.insert(at, s);
                    sizes.truncate(SPLITS + 1);
                }
            }
        }
        let mut caps: Vec<i64> = hosts_of(st.alive).map(|h| st.free[h] + st.load(p, h)).collect();
        caps.sort_unstable();
        Some(Aggregates {
            n: caps.len(),
            load,
            prefix_cap: prefix(&caps),
            sizes,
            pending_any: !pending.is_empty(),
            max_free: hosts_of(st.alive).map(|h| st.free[h]).max().unwrap_or(0),
        })
    }

    /// S_j for every `j <= k` with VMs of size at most `t`.
    fn small_vms_place(&self, k: u32, t: i64) -> bool {
        let first = if self.pending_any { 0 } else { 1 };
        (first..=k as usize).all(|j| {
            let alive = self.n - j;
            // The adversary keeps the `alive` smallest capacities. In i128:
            // `(alive - 1)·t` may pass `i64::MAX` on hostile input.
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

/// The sum of the `count` largest values (0 for none).
fn top_sum(mut values: Vec<i64>, count: usize) -> i128 {
    values.sort_unstable_by(|a, b| b.cmp(a));
    values.into_iter().take(count).map(i128::from).sum()
}

/// Does the policy survive every sequence of `k` failures from `st`, with
/// `pending` placed first? Which certificate says so, and with which
/// threshold.
pub(crate) fn certify(p: &Problem, st: &State, pending: &[u32], k: u32, variant: Variant) -> Option<Proven> {
    let agg = Aggregates::new(p, st, pending)?;
    if agg.n < k as usize {
        return None;
    }
    let Some(&b) = agg.sizes.first() else {
        return Some(Proven {
            kind: PolicyProof::Fluid,
            big_above: 0,
        });
    };
    if agg.n <= k as usize {
        return None;
    }
    if agg.small_vms_place(k, b) {
        return Some(Proven {
            kind: PolicyProof::Fluid,
            big_above: b,
        });
    }
    (0..SPLITS.min(agg.sizes.len() - 1)).find_map(|i| {
        let t = agg.sizes[i + 1];
        holes(p, st, pending, k, variant, &agg, t).then_some(Proven {
            kind: PolicyProof::Hole,
            big_above: t,
        })
    })
}

/// The hole certificate with VMs larger than `t` big.
fn holes(p: &Problem, st: &State, pending: &[u32], k: u32, variant: Variant, agg: &Aggregates, t: i64) -> bool {
    let b = agg.sizes[0];
    let is_big = |v: u32| p.size[v as usize] > t;
    let big_on = |h: usize| st.on[h].iter().filter(|&&v| is_big(v)).count();
    let pending_big = pending.iter().filter(|&&v| is_big(v)).count();
    let m = hosts_of(st.alive).map(big_on).sum::<usize>() + pending_big;
    // Holes needed at every step: the most big VMs one host carries (a
    // host takes a big VM only while it carries none).
    let c = hosts_of(st.alive).map(big_on).max().unwrap_or(0).max(1);
    // Pending big VMs, each onto its own host without a big VM.
    let open = hosts_of(st.alive)
        .filter(|&h| big_on(h) == 0 && st.free[h] >= b)
        .count();
    if pending_big > open {
        return false;
    }
    if !agg.small_vms_place(k, t) {
        return false;
    }
    if variant == Variant::WithoutHoles || k == 0 {
        return true;
    }
    let hid = |h: usize| if st.free[h] < b { st.free[h] } else { t };
    let mut vals: Vec<i64> = hosts_of(st.alive)
        .map(|h| st.free[h] + st.load(p, h) - hid(h))
        .collect();
    vals.sort_unstable();
    let prefix_val = prefix(&vals);
    let slack = i128::from(agg.load) + i128::from(b - t);
    let small_load = |h: usize| st.load_of(p, h, |v| !is_big(v));
    // ℓ: every host carries at least this much of small VMs while it lives.
    let least_small = hosts_of(st.alive).map(small_load).min().unwrap_or(0);
    let bound: Box<dyn Fn(usize) -> i128> = if m == 1 {
        let pending_small: i64 = pending
            .iter()
            .filter(|&&v| !is_big(v))
            .map(|&v| p.size[v as usize])
            .sum();
        let hid_min = hosts_of(st.alive).map(hid).min().unwrap_or(0);
        let beta0 = hosts_of(st.alive).find(|&h| big_on(h) > 0);
        let after_start = match beta0 {
            Some(h) => st.free[h] - pending_small,
            None => agg.max_free - b - pending_small,
        };
        let mut after_failure = agg.max_free - b - least_small;
        if let Some(h) = beta0 {
            after_failure = after_failure.max(st.free[h] - pending_small - least_small);
        }
        Box::new(move |j| {
            let beta_free = t.max(if j == 0 { after_start } else { after_failure });
            slack + i128::from(beta_free) - i128::from(hid_min)
        })
    } else {
        let smallest_big = hosts_of(st.alive)
            .flat_map(|h| st.on[h].iter())
            .chain(pending)
            .map(|&v| p.size[v as usize])
            .filter(|&s| s > t)
            .min()
            .unwrap_or(b);
        // A host that takes a big VM after a failure also takes every small
        // VM of that batch first, at least ℓ, unless it ends below `t`; a
        // host taking a pending big VM, or one of several from one host, is
        // only sure to lose the big VM.
        let plain_receivers = pending_big > 0 || c > 1;
        // What a hole (a non-β host with `b` free), and a β host, may hold
        // beyond hid.
        let holes: Vec<i64> = hosts_of(st.alive)
            .filter(|&h| st.free[h] >= b)
            .map(|h| st.free[h] - t)
            .collect();
        let betas: Vec<i64> = hosts_of(st.alive)
            .map(|h| {
                let most = if big_on(h) > 0 {
                    st.free[h]
                } else {
                    let after_failure = t.max(st.free[h] - smallest_big - least_small);
                    if plain_receivers {
                        after_failure.max(st.free[h] - smallest_big)
                    } else {
                        after_failure
                    }
                };
                (most - hid(h)).max(0)
            })
            .collect();
        let fixed = slack + top_sum(holes, c - 1) + top_sum(betas, m);
        Box::new(move |_| fixed)
    };
    (0..k as usize).all(|j| i128::from(prefix_val[agg.n - j]) > bound(j))
}

/// The largest `k` (up to `limit`) the certificate proves, if any.
pub(crate) fn max_certified(
    p: &Problem,
    st: &State,
    pending: &[u32],
    limit: u32,
    variant: Variant,
) -> Option<(u32, Proven)> {
    // For each threshold the conditions for `k` include those for every
    // smaller `k`: once no threshold proves `k`, none proves more.
    let mut best = None;
    for k in 0..=limit {
        match certify(p, st, pending, k, variant) {
            Some(proof) => best = Some((k, proof)),
            None => break,
        }
    }
    best
}

/// The policy's placement of `batch` from `st`, VMs larger than `big_above`
/// being big; `None` if a VM fits nowhere.
pub(crate) fn place(p: &Problem, st: &State, batch: &[u32], big_above: i64) -> Option<Vec<(u32, usize)>> {
    let is_big = |v: u32| p.size[v as usize] > big_above;
    let mut beta: HostSet = hosts_of(st.alive)
        .filter(|&h| st.on[h].iter().any(|&v| is_big(v)))
        .fold(0, |acc, h| acc | bit(h));
    let mut receiver: Option<usize> = None;
    let mut free = st.free.clone();
    let mut plan = Vec::with_capacity(batch.len());
    for vm in crate::pack::decreasing(p, batch) {
        let size = p.size[vm as usize];
        let fits = hosts_of(p.allowed[vm as usize] & st.alive)
            .filter(|&h| free[h] >= size)
            .fold(0, |acc, h| acc | bit(h));
        let most_free = |set: HostSet| hosts_of(set).max_by(|a, b| free[*a].cmp(&free[*b]).then(b.cmp(a)));
        let fullest = |set: HostSet| hosts_of(set).min_by(|a, b| free[*a].cmp(&free[*b]).then(a.cmp(b)));
        let host = if is_big(vm) {
            let h = most_free(fits & !beta).or_else(|| most_free(fits))?;
            beta |= bit(h);
            receiver.get_or_insert(h);
            h
        } else {
            match receiver.filter(|&h| fits & bit(h) != 0) {
                Some(h) => h,
                None => fullest(fits & beta).or_else(|| fullest(fits))?,
            }
        };
        free[host] -= size;
        plan.push((vm, host));
    }
    Some(plan)
}

/// Where the policy puts `pending` and then the VMs of `failed` (failing
/// one after another) from `st`: the final host of each VM that moved, or
/// `None` if one fits nowhere.
pub(crate) fn replay(
    p: &Problem,
    st: &State,
    pending: &[u32],
    failed: &[usize],
    big_above: i64,
) -> Option<Vec<(u32, usize)>> {
    let mut st = st.clone();
    let mut moved: Vec<u32> = pending.to_vec();
    let mut batch = pending.to_vec();
    let mut failed = failed.iter();
    loop {
        for (vm, h) in place(p, &st, &batch, big_above)? {
            st.place(p, vm, h);
        }
        let Some(&h) = failed.next() else { break };
        batch = st.fail(h);
        moved.extend(&batch);
    }
    moved.sort_unstable();
    moved.dedup();
    let mut out = Vec::with_capacity(moved.len());
    for h in hosts_of(st.alive) {
        out.extend(
            st.on[h]
                .iter()
                .filter(|v| moved.binary_search(v).is_ok())
                .map(|&v| (v, h)),
        );
    }
    Some(out)
}
