//! The exact planner: a search of the failure game.
//!
//! The adversary fails one live host at a time; after each failure we
//! choose where that host's VMs restart, knowing only the failures so far.
//! A plan for `k` failures exists when we have an answer to every sequence
//! of `k` failures. Simultaneous failures are covered too: a set of hosts
//! failing at once is handled as if they failed one after another, and the
//! VMs that would have passed through a host of the set go straight to
//! where they end up.
//!
//! The search proves what it claims. At every node it first tries the cheap
//! proofs of `bounds.rs`, then greedy placements, then every placement up
//! to symmetry. States equal up to interchangeable hosts and VMs share one
//! memo entry. When the budget runs out the answer is `Unknown`, never a
//! guess.

use std::collections::HashMap;

use crate::bounds::{certify, refute};
use crate::pack::{decreasing, greedy, Budget, Rule};
use crate::policy::{self, Variant};
use crate::problem::{bit, hosts_of, Problem, State};

/// A failure sequence no plan survives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Witness {
    /// Hosts, in failure order (hosts failing at once are listed together
    /// in any order).
    pub failed: Vec<usize>,
    /// The VMs left without a host at the end.
    pub unplaced: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    Yes,
    No(Witness),
    Unknown,
}

/// What is proven about one state.
#[derive(Debug, Default)]
struct Known {
    /// Every sequence of this many failures is absorbed.
    yes: Option<u32>,
    /// Some sequence of this many failures is not.
    no: Option<(u32, Witness)>,
}

/// Batches bigger than this are only placed greedily: enumerating their
/// placements would spend any budget on one node.
const ENUMERATE_AT_MOST: usize = 12;

pub(crate) struct Search<'p> {
    p: &'p Problem,
    memo: HashMap<Vec<u64>, Known>,
    pub budget: Budget,
}

impl<'p> Search<'p> {
    pub fn new(p: &'p Problem, steps: u64) -> Self {
        Search {
            p,
            memo: HashMap::new(),
            budget: Budget::new(steps),
        }
    }

    /// Can every sequence of `k` failures from `st` be absorbed?
    pub fn win(&mut self, st: &State, k: u32) -> Outcome {
        if k == 0 {
            return Outcome::Yes;
        }
        if let Some(f) = refute(self.p, st, &[], k) {
            return Outcome::No(self.witness(st, &[], &f));
        }
        if certify(self.p, st, &[], k).is_some() {
            return Outcome::Yes;
        }
        let key = st.key(self.p);
        if let Some(known) = self.memo.get(&key) {
            if known.yes.is_some_and(|y| y >= k) {
                return Outcome::Yes;
            }
            if let Some((n, w)) = &known.no {
                if *n <= k {
                    return Outcome::No(w.clone());
                }
            }
        }
        if !self.budget.spend() {
            return Outcome::Unknown;
        }
        // The most loaded hosts first: they are the likeliest to refute.
        let mut hosts: Vec<usize> = hosts_of(st.alive).collect();
        hosts.sort_by_key(|&h| (std::cmp::Reverse(st.load(self.p, h)), h));
        let mut unknown = false;
        let mut seen: Vec<usize> = Vec::new();
        for h in hosts {
            if seen.iter().any(|&s| st.same_host(self.p, s, h)) {
                continue;
            }
            seen.push(h);
            let mut child = st.clone();
            let batch = child.fail(h);
            match self.place_then_win(&child, &batch, k - 1).0 {
                Outcome::Yes => {}
                Outcome::No(mut w) => {
                    w.failed.insert(0, h);
                    let entry = self.memo.entry(key).or_default();
                    if entry.no.as_ref().is_none_or(|(n, _)| k < *n) {
                        entry.no = Some((k, w.clone()));
                    }
                    return Outcome::No(w);
                }
                Outcome::Unknown => {
                    unknown = true;
                    if self.budget.is_spent() {
                        return Outcome::Unknown;
                    }
                }
            }
        }
        if unknown {
            return Outcome::Unknown;
        }
        let entry = self.memo.entry(key).or_default();
        entry.yes = Some(entry.yes.map_or(k, |y| y.max(k)));
        Outcome::Yes
    }

    /// Is there a placement of `batch` (VMs waiting for a host) after which
    /// every sequence of `k` failures is absorbed? With `Yes`, the placement.
    pub fn place_then_win(&mut self, st: &State, batch: &[u32], k: u32) -> (Outcome, Option<Vec<(u32, usize)>>) {
        let p = self.p;
        if batch.is_empty() {
            return (self.win(st, k), Some(Vec::new()));
        }
        if !self.budget.spend() {
            return (Outcome::Unknown, None);
        }
        if let Some(f) = refute(p, st, batch, k) {
            return (Outcome::No(self.witness(st, batch, &f)), None);
        }
        // The restart policy's certificate names its placement: the
        // policy's own, after which the policy wins.
        if let Some(proof) = policy::certify(p, st, batch, k, Variant::Sound) {
            if let Some(plan) = policy::place(p, st, batch, proof.big_above) {
                return (Outcome::Yes, Some(plan));
            }
            debug_assert!(false, "the policy's certificate held but the policy left VMs over");
        }
        // The other certificates prove some placement works, not which one:
        // the greedy candidates below are each checked.
        let mut unknown = false;
        let mut first_no: Option<Witness> = None;
        let mut tried: Vec<Vec<u64>> = Vec::new();
        for rule in [Rule::MostFree, Rule::LeastFree] {
            let (plan, left) = greedy(p, st, batch, rule);
            if !left.is_empty() {
                continue;
            }
            let mut next = st.clone();
            for &(vm, h) in &plan {
                next.place(p, vm, h);
            }
            let key = next.key(p);
            if tried.contains(&key) {
                continue;
            }
            tried.push(key);
            match self.win(&next, k) {
                Outcome::Yes => return (Outcome::Yes, Some(plan)),
                Outcome::No(w) => {
                    first_no.get_or_insert(w);
                }
                Outcome::Unknown => unknown = true,
            }
        }
        // Every placement, up to symmetry, when the batch is small enough for
        // that to be worth trying.
        if batch.len() > ENUMERATE_AT_MOST {
            return (Outcome::Unknown, None);
        }
        let order = decreasing(p, batch);
        let mut walk = Walk {
            k,
            st: st.clone(),
            plan: Vec::with_capacity(order.len()),
            found: None,
            first_no: None,
            unknown: false,
        };
        let complete = self.enumerate(&mut walk, &order, 0);
        if let Some(plan) = walk.found {
            return (Outcome::Yes, Some(plan));
        }
        if !complete || unknown || walk.unknown {
            return (Outcome::Unknown, None);
        }
        let w = match first_no.or(walk.first_no) {
            Some(w) => w,
            // No placement at all: nothing fails, VMs are left over.
            None => self.witness(st, batch, &[]),
        };
        (Outcome::No(w), None)
    }

    /// Depth-first over placements of `order[i..]`; false if the budget ran
    /// out. VMs of one class go to hosts in increasing order, and of hosts
    /// interchangeable at a step only the first is tried.
    fn enumerate(&mut self, walk: &mut Walk, order: &[u32], i: usize) -> bool {
        if walk.found.is_some() {
            return true;
        }
        if !self.budget.spend() {
            return false;
        }
        let p = self.p;
        let Some(&vm) = order.get(i) else {
            match self.win(&walk.st, walk.k) {
                Outcome::Yes => walk.found = Some(walk.plan.clone()),
                Outcome::No(w) => {
                    walk.first_no.get_or_insert(w);
                }
                Outcome::Unknown => walk.unknown = true,
            }
            return true;
        };
        let v = vm as usize;
        let size = p.size[v];
        let from = match i.checked_sub(1).map(|j| order[j]) {
            Some(prev) if p.class[prev as usize] == p.class[v] => walk.plan.last().map_or(0, |&(_, h)| h),
            _ => 0,
        };
        let mut tried: u64 = 0;
        for h in hosts_of(p.allowed[v] & walk.st.alive) {
            if h < from || walk.st.free[h] < size || hosts_of(tried).any(|t| walk.st.same_host(p, t, h)) {
                continue;
            }
            tried |= bit(h);
            walk.st.place(p, vm, h);
            walk.plan.push((vm, h));
            let complete = self.enumerate(walk, order, i + 1);
            walk.plan.pop();
            walk.st.on[h].pop();
            walk.st.free[h] += size;
            if !complete {
                return false;
            }
            if walk.found.is_some() {
                return true;
            }
        }
        true
    }

    /// The witness for hosts `f` failing at once in `st` with `pending`
    pub fn witness(&self, st: &State, pending: &[u32], f: &[usize]) -> Witness {
        let mut rest = st.clone();
        let mut batch = pending.to_vec();
        for &h in f {
            batch.extend(rest.fail(h));
        }
        let (_, a) = greedy(self.p, &rest, &batch, Rule::MostFree);
        let (_, b) = greedy(self.p, &rest, &batch, Rule::LeastFree);
        let mut unplaced = if b.len() < a.len() { b } else { a };
        unplaced.sort_unstable();
        Witness {
            failed: f.to_vec(),
            unplaced,
        }
    }
}

/// The state of one enumeration.
struct Walk {
    k: u32,
    st: State,
    plan: Vec<(u32, usize)>,
    found: Option<Vec<(u32, usize)>>,
    first_no: Option<Witness>,
    unknown: bool,
}
