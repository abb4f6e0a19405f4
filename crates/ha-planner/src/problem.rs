//! The dense form of a [`Pool`]: hosts and VMs by index, host sets as bit
//! masks, and the mutable [`State`] the searches walk through.
//!
//! Hosts and VMs are sorted by uuid, so every answer is deterministic and
//! independent of the order the caller listed them in.

use std::collections::BTreeMap;

use crate::model::{PlanError, Pool, Reason, Resource};

/// A set of hosts, one bit per host index.
pub(crate) type HostSet = u64;

pub(crate) fn bit(h: usize) -> HostSet {
    1u64 << h
}

pub(crate) fn hosts_of(set: HostSet) -> impl Iterator<Item = usize> {
    (0..64).filter(move |h| set & bit(*h) != 0)
}

/// A pool compiled for the algorithms.
#[derive(Debug, Clone)]
pub(crate) struct Problem {
    pub host_uuid: Vec<String>,
    pub vm_uuid: Vec<String>,
    /// Footprint of each VM.
    pub size: Vec<i64>,
    /// Hosts (live or not) that reach everything the VM needs.
    pub allowed: Vec<HostSet>,
    /// VMs with the same size and the same allowed hosts share a class:
    /// they are interchangeable for feasibility.
    pub class: Vec<u32>,
    /// Hosts that the same classes allow share a reach id: together with
    /// capacity it makes hosts interchangeable.
    pub reach_id: Vec<u32>,
    /// Every host of the pool.
    pub all_hosts: HostSet,
    /// What each VM needs (kept for explanations).
    pub needs: Vec<Vec<Resource>>,
    /// What each host reaches (kept for explanations).
    pub reaches: Vec<Vec<Resource>>,
}

/// Hosts' free memory and where each protected VM is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct State {
    /// Hosts that are up and may take VMs.
    pub alive: HostSet,
    /// Free memory per host (dead hosts keep a value nobody reads).
    pub free: Vec<i64>,
    /// The VMs on each host.
    pub on: Vec<Vec<u32>>,
}

/// Hosts are told apart by which VM classes may run on them: hosts with
/// the same answer for every allowed set share a reach id.
pub(crate) fn reach_ids(allowed: impl Iterator<Item = HostSet> + Clone, hosts: usize) -> Vec<u32> {
    let mut ids: BTreeMap<Vec<bool>, u32> = BTreeMap::new();
    (0..hosts)
        .map(|h| {
            let sig: Vec<bool> = allowed.clone().map(|a| a & bit(h) != 0).collect();
            let next = ids.len() as u32;
            *ids.entry(sig).or_insert(next)
        })
        .collect()
}

impl Problem {
    /// Compile `pool`: returns the problem, the starting state, and the
    /// protected VMs that are down (resident nowhere live).
    pub fn compile(pool: &Pool) -> Result<(Problem, State, Vec<u32>), PlanError> {
        pool.validate()?;
        let mut hosts: Vec<&crate::model::Host> = pool.hosts.iter().collect();
        hosts.sort_by(|a, b| a.uuid.cmp(&b.uuid));
        let mut vms: Vec<&crate::model::Vm> = pool.vms.iter().collect();
        vms.sort_by(|a, b| a.uuid.cmp(&b.uuid));
        let index: BTreeMap<&str, usize> = hosts.iter().enumerate().map(|(i, h)| (h.uuid.as_str(), i)).collect();
        let all_hosts = if hosts.len() == 64 {
            u64::MAX
        } else {
            (1u64 << hosts.len()) - 1
        };

        let allowed: Vec<HostSet> = vms
            .iter()
            .map(|v| {
                hosts
                    .iter()
                    .enumerate()
                    .filter(|(_, h)| v.needs.iter().all(|n| h.reaches.contains(n)))
                    .fold(0, |acc, (i, _)| acc | bit(i))
            })
            .collect();
        let mut classes: BTreeMap<(i64, HostSet), u32> = BTreeMap::new();
        let class = vms
            .iter()
            .zip(&allowed)
            .map(|(v, a)| {
                let next = classes.len() as u32;
                *classes.entry((v.memory, *a)).or_insert(next)
            })
            .collect();
        let reach_id = reach_ids(classes.keys().map(|&(_, a)| a), hosts.len());

        let mut state = State {
            alive: hosts
                .iter()
                .enumerate()
                .filter(|(_, h)| h.live)
                .fold(0, |acc, (i, _)| acc | bit(i)),
            free: hosts.iter().map(|h| h.memory_free).collect(),
            on: vec![Vec::new(); hosts.len()],
        };
        let mut down = Vec::new();
        for (i, v) in vms.iter().enumerate() {
            match v.resident_on.as_deref().and_then(|h| index.get(h)) {
                Some(&h) if state.alive & bit(h) != 0 => state.on[h].push(i as u32),
                _ => down.push(i as u32),
            }
        }
        let problem = Problem {
            host_uuid: hosts.iter().map(|h| h.uuid.clone()).collect(),
            vm_uuid: vms.iter().map(|v| v.uuid.clone()).collect(),
            size: vms.iter().map(|v| v.memory).collect(),
            allowed,
            class,
            reach_id,
            all_hosts,
            needs: vms.iter().map(|v| v.needs.iter().cloned().collect()).collect(),
            reaches: hosts.iter().map(|h| h.reaches.iter().cloned().collect()).collect(),
        };
        Ok((problem, state, down))
    }

    pub fn host_index(&self, uuid: &str) -> Option<usize> {
        self.host_uuid.iter().position(|h| h == uuid)
    }

    /// Is the VM agile: does every host of the pool reach what it needs?
    pub fn agile(&self, vm: u32) -> bool {
        self.allowed[vm as usize] == self.all_hosts
    }

    /// Why `vm` cannot be placed in `state`.
    pub fn reason(&self, state: &State, vm: u32) -> Reason {
        let v = vm as usize;
        let candidates = self.allowed[v] & state.alive;
        if candidates == 0 {
            // Report what the live host closest to qualifying lacks.
            let missing = hosts_of(state.alive)
                .map(|h| {
                    self.needs[v]
                        .iter()
                        .filter(|n| !self.reaches[h].contains(n))
                        .cloned()
                        .collect::<Vec<_>>()
                })
                .min_by_key(|m| m.len())
                .unwrap_or_default();
            return Reason::Unreachable { missing };
        }
        let available = hosts_of(candidates).map(|h| state.free[h]).max().unwrap_or(0);
        Reason::NotEnoughMemory {
            needed: self.size[v],
            available: available.max(0),
        }
    }
}

impl State {
    pub fn alive_count(&self) -> u32 {
        self.alive.count_ones()
    }

    /// Protected memory on host `h`.
    pub fn load(&self, p: &Problem, h: usize) -> i64 {
        self.load_of(p, h, |_| true)
    }

    /// Memory of the VMs on host `h` that `keep` picks.
    pub fn load_of(&self, p: &Problem, h: usize, keep: impl Fn(u32) -> bool) -> i64 {
        self.on[h]
            .iter()
            .filter(|&&v| keep(v))
            .map(|&v| p.size[v as usize])
            .sum()
    }

    /// Take host `h` out; returns its VMs, now needing a new host.
    pub fn fail(&mut self, h: usize) -> Vec<u32> {
        self.alive &= !bit(h);
        std::mem::take(&mut self.on[h])
    }

    pub fn place(&mut self, p: &Problem, vm: u32, h: usize) {
        self.free[h] -= p.size[vm as usize];
        self.on[h].push(vm);
    }

    /// A key equal for states that are the same up to swapping
    /// interchangeable hosts and interchangeable VMs.
    pub fn key(&self, p: &Problem) -> Vec<u64> {
        let mut per_host: Vec<Vec<u64>> = hosts_of(self.alive)
            .map(|h| {
                let cap = self.free[h] + self.load(p, h);
                let mut classes: Vec<u64> = self.on[h].iter().map(|&v| u64::from(p.class[v as usize])).collect();
                classes.sort_unstable();
                let mut d = Vec::with_capacity(classes.len() + 3);
                d.push(u64::from(p.reach_id[h]));
                d.push(cap as u64);
                d.push(classes.len() as u64);
                d.extend(classes);
                d
            })
            .collect();
        per_host.sort_unstable();
        per_host.concat()
    }

    /// Two alive hosts are interchangeable right now.
    pub fn same_host(&self, p: &Problem, a: usize, b: usize) -> bool {
        if p.reach_id[a] != p.reach_id[b] || self.free[a] != self.free[b] || self.on[a].len() != self.on[b].len() {
            return false;
        }
        let mut x: Vec<u32> = self.on[a].iter().map(|&v| p.class[v as usize]).collect();
        let mut y: Vec<u32> = self.on[b].iter().map(|&v| p.class[v as usize]).collect();
        x.sort_unstable();
        y.sort_unstable();
        x == y
    }
}
