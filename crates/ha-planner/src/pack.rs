//! Placing a batch of VMs onto live hosts: the greedy rules the searches try
//! first, and a complete enumeration for when they are not enough.

use crate::problem::{hosts_of, Problem, State};

/// A deterministic work allowance, counted in search steps. Searches stop
/// when it is spent and report that their answer is incomplete.
#[derive(Debug, Clone)]
pub(crate) struct Budget {
    left: u64,
}

impl Budget {
    pub fn new(steps: u64) -> Self {
        Budget { left: steps }
    }

    /// Take one step; false once the allowance is gone.
    pub fn spend(&mut self) -> bool {
        if self.left == 0 {
            return false;
        }
        self.left -= 1;
        true
    }

    pub fn is_spent(&self) -> bool {
        self.left == 0
    }
}

/// Which host a greedy rule picks among those a VM fits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rule {
    /// The host with the most free memory (spreads load, keeps big holes
    /// nowhere; XAPI's choice).
    MostFree,
    /// The host with the least free memory that still fits (keeps big holes).
    LeastFree,
}

/// The batch, biggest VMs first; VMs of one class side by side; ties by
/// index, so the order is fixed.
pub(crate) fn decreasing(p: &Problem, batch: &[u32]) -> Vec<u32> {
    let mut order = batch.to_vec();
    order.sort_by(|a, b| {
        let (x, y) = (*a as usize, *b as usize);
        p.size[y]
            .cmp(&p.size[x])
            .then(p.class[x].cmp(&p.class[y]))
            .then(a.cmp(b))
    });
    order
}

/// Place `batch` greedily, biggest first. Returns the placement and the VMs
/// that fit nowhere.
pub(crate) fn greedy(p: &Problem, state: &State, batch: &[u32], rule: Rule) -> (Vec<(u32, usize)>, Vec<u32>) {
    let mut free = state.free.clone();
    let mut plan = Vec::with_capacity(batch.len());
    let mut left = Vec::new();
    for vm in decreasing(p, batch) {
        let size = p.size[vm as usize];
        let fits = hosts_of(p.allowed[vm as usize] & state.alive).filter(|&h| free[h] >= size);
        let pick = match rule {
            Rule::MostFree => fits.max_by(|a, b| free[*a].cmp(&free[*b]).then(b.cmp(a))),
            Rule::LeastFree => fits.min_by(|a, b| free[*a].cmp(&free[*b]).then(a.cmp(b))),
        };
        match pick {
            Some(h) => {
                free[h] -= size;
                plan.push((vm, h));
            }
            None => left.push(vm),
        }
    }
    (plan, left)
}
