//! A brute-force oracle for the failure game, written from the definition
//! with nothing clever in it: after each failure every assignment of the
//! failed host's VMs to the live hosts is tried. Only for tiny pools.

use std::collections::HashMap;

use ha_planner::Pool;

/// Live hosts, where each VM is, failures still to come.
type Key = (Vec<bool>, Vec<Option<usize>>, u32);

/// `allowed[v][h]`: host `h` reaches everything VM `v` needs (pool order).
pub fn allowed(pool: &Pool) -> Vec<Vec<bool>> {
    pool.vms
        .iter()
        .map(|v| {
            pool.hosts
                .iter()
                .map(|h| v.needs.iter().all(|n| h.reaches.contains(n)))
                .collect()
        })
        .collect()
}

pub struct Brute {
    free: Vec<i64>,
    size: Vec<i64>,
    /// allowed[v][h]
    allowed: Vec<Vec<bool>>,
    memo: HashMap<Key, bool>,
}

/// A game position: live hosts and where each VM is.
#[derive(Clone)]
pub struct Position {
    pub alive: Vec<bool>,
    pub at: Vec<Option<usize>>,
}

impl Brute {
    /// The oracle and the starting position for `pool` (hosts and VMs in
    /// the caller's order).
    pub fn new(pool: &Pool) -> (Brute, Position) {
        let index = |uuid: &str| pool.hosts.iter().position(|h| h.uuid == uuid);
        let alive: Vec<bool> = pool.hosts.iter().map(|h| h.live).collect();
        let at = pool
            .vms
            .iter()
            .map(|v| v.resident_on.as_deref().and_then(index).filter(|&h| alive[h]))
            .collect();
        let brute = Brute {
            free: pool.hosts.iter().map(|h| h.memory_free).collect(),
            size: pool.vms.iter().map(|v| v.memory).collect(),
            allowed: allowed(pool),
            memo: HashMap::new(),
        };
        (brute, Position { alive, at })
    }

    fn free_of(&self, pos: &Position, h: usize, start: &Position) -> i64 {
        // Free memory = initial free + VMs that left h - VMs that arrived.
        let mut free = self.free[h];
        for v in 0..self.size.len() {
            let was = start.at[v] == Some(h);
            let is = pos.at[v] == Some(h);
            if was && !is {
                free += self.size[v];
            }
            if is && !was {
                free -= self.size[v];
            }
        }
        free
    }

    /// Is the position valid (no host over its memory)?
    pub fn valid(&self, pos: &Position, start: &Position) -> bool {
        (0..self.free.len())
            .all(|h| !pos.alive[h] || self.free_of(pos, h, start) >= 0 || !self.moved_onto(pos, h, start))
    }

    fn moved_onto(&self, pos: &Position, h: usize, start: &Position) -> bool {
        (0..self.size.len()).any(|v| pos.at[v] == Some(h) && start.at[v] != Some(h))
    }

    /// Every VM without a host, assigned in every possible way; true if one
    /// assignment wins the game for `k` more failures.
    pub fn place_then_win(&mut self, pos: &Position, start: &Position, k: u32) -> bool {
        let pending: Vec<usize> = (0..self.size.len()).filter(|&v| pos.at[v].is_none()).collect();
        self.assign(pos.clone(), start, &pending, 0, k)
    }

    fn assign(&mut self, pos: Position, start: &Position, pending: &[usize], i: usize, k: u32) -> bool {
        let Some(&v) = pending.get(i) else {
            return self.win(&pos, start, k);
        };
        for h in 0..self.free.len() {
            if !pos.alive[h] || !self.allowed[v][h] {
                continue;
            }
            let mut next = pos.clone();
            next.at[v] = Some(h);
            if self.free_of(&next, h, start) < 0 {
                continue;
            }
            if self.assign(next, start, pending, i + 1, k) {
                return true;
            }
        }
        false
    }

    /// Every sequence of `k` failures can be answered.
    pub fn win(&mut self, pos: &Position, start: &Position, k: u32) -> bool {
        if k == 0 {
            return true;
        }
        let key = (pos.alive.clone(), pos.at.clone(), k);
        if let Some(&r) = self.memo.get(&key) {
            return r;
        }
        let mut result = true;
        for h in 0..self.free.len() {
            if !pos.alive[h] {
                continue;
            }
            let mut next = pos.clone();
            next.alive[h] = false;
            for a in next.at.iter_mut() {
                if *a == Some(h) {
                    *a = None;
                }
            }
            if !self.place_then_win(&next, start, k - 1) {
                result = false;
                break;
            }
        }
        self.memo.insert(key, result);
        result
    }

    /// The true maximum, and whether a plan exists for 0 failures.
    pub fn max(&mut self, start: &Position) -> (u32, bool) {
        let alive = start.alive.iter().filter(|a| **a).count() as u32;
        let mut best = None;
        for k in 0..=alive {
            if self.place_then_win(start, start, k) {
                best = Some(k);
            } else {
                break;
            }
        }
        (best.unwrap_or(0), best.is_some())
    }
}
