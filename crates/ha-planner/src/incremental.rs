//! The overcommit check, incrementally (issue 27): the pool master
//! compiles the pool once per database generation ([`Compiled::new`]),
//! proves the plan it has now, and then answers each change it is asked
//! about (a VM start, a migration, a memory change, a host disabled) as a
//! list of [`Delta`]s applied to the compiled state, with no new
//! description of the pool and no new compilation.
//!
//! **What is proven again.** After the deltas, the necessary conditions
//! (`bounds::refute`) and the certificates (`bounds::certify`, the restart
//! policy's among them) are checked on the changed state: each is one pass
//! over the VMs and hosts, well under a millisecond on 64 hosts and 1,600
//! VMs. The game search runs again only where the search is what proved
//! the plan now, or the pool is small ([`SEARCH_AT_MOST_VMS`]): a change to
//! a state proven by a closed-form certificate is re-proven by the
//! closed-form conditions.
//!
//! **Between the bounds.** When the changed state is neither proven nor
//! refuted that way, the answer is [`Check::Undecided`] with what is
//! known (proven before, the upper bound after). The master's rule
//! (`docs/HA.md`, "Overcommit protection") is to refuse such a change
//! unless overcommit is allowed, as XAPI refuses a change its own planner
//! finds no plan for: the pool never takes on a plan it cannot prove.

use std::borrow::Cow;

use crate::bounds::{certify, refute};
use crate::exact::{Outcome, Search};
use crate::model::{PlanError, Pool, Vm, MAX_TOTAL_MEMORY};
use crate::planner::{Mode, Planner, ProvenBy, Verdict, Witness};
use crate::problem::{bit, reach_ids, Problem, State};
use crate::xapi;

/// Pools with at most this many protected VMs get the game search in the
/// overcommit check whatever proved their plan: it costs little there.
pub const SEARCH_AT_MOST_VMS: usize = 64;

/// One change to the pool, in the planner's terms (as [`Pool`] describes
/// it: a host's free memory is given, not derived from its VMs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delta {
    /// A host's free memory changes by `by` bytes (negative: a VM, protected
    /// or not, arrives or grows).
    HostFree { host: String, by: i64 },
    /// A protected VM as it will be: new to the plan, moved (`resident_on`),
    /// resized or given other storage. Its host's free memory is a separate
    /// [`Delta::HostFree`].
    Vm(Vm),
    /// A VM that leaves the plan (no longer protected).
    Unprotect(String),
    /// A host that stops taking VMs (disabled): its protected VMs need a
    /// new host.
    HostDown(String),
}

/// The answer of the overcommit check for one change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// A plan for `r` failures is proven after the change, by this.
    Exists(ProvenBy),
    /// No plan for `r` failures exists after the change.
    NoPlan(Option<Witness>),
    /// Neither proven nor refuted after the change (see the module's doc).
    Undecided {
        /// The most failures the necessary conditions leave possible after
        /// the change (at least `r`).
        at_most: u32,
    },
}

/// A pool compiled once, with what is proven about it now for `r`
/// failures; changes are checked against it.
#[derive(Debug, Clone)]
pub struct Compiled {
    planner: Planner,
    pool: Pool,
    p: Problem,
    st: State,
    down: Vec<u32>,
    r: u32,
    now: Verdict,
    now_by: ProvenBy,
    /// The magnitudes of the pool's memory figures, added up (see
    /// [`MAX_TOTAL_MEMORY`]); deltas may not take it past the limit.
    magnitude: u64,
    /// Pools with at most this many protected VMs get the game search
    /// after a change whatever proved the plan now
    /// ([`SEARCH_AT_MOST_VMS`] unless set).
    search_at_most: usize,
}

impl Compiled {
    /// Compile `pool` and prove (or refute) a plan for `r` failures now.
    pub fn new(planner: Planner, pool: &Pool, r: u32) -> Result<Compiled, PlanError> {
        let (p, st, down) = Problem::compile(pool)?;
        let mut c = Compiled {
            planner,
            pool: pool.clone(),
            p,
            st,
            down,
            r,
            now: Verdict::Unknown,
            now_by: ProvenBy::Nothing,
            magnitude: pool
                .hosts
                .iter()
                .map(|h| h.memory_free.unsigned_abs())
                .chain(pool.vms.iter().map(|v| v.memory.unsigned_abs()))
                .sum(),
            search_at_most: SEARCH_AT_MOST_VMS,
        };
        let (now, now_by) = match c.prove(&c.p, &c.st, &c.down, true) {
            Check::Exists(by) => (Verdict::Exists, by),
            Check::NoPlan(w) => (Verdict::NoPlan(w), ProvenBy::Nothing),
            Check::Undecided { .. } => (Verdict::Unknown, ProvenBy::Nothing),
        };
        c.now = now;
        c.now_by = now_by;
        Ok(c)
    }

    /// Search after a change only on pools of at most `vms` protected VMs
    /// (or where the search proved the plan now): the tests set 0 to
    /// check the certificates alone on small pools.
    pub fn with_search_at_most(mut self, vms: usize) -> Compiled {
        self.search_at_most = vms;
        self
    }

    /// The planner this was compiled for.
    pub fn planner(&self) -> Planner {
        self.planner
    }

    /// The number of failures this was compiled for.
    pub fn failures(&self) -> u32 {
        self.r
    }

    /// Does a plan for `r` failures exist now (before any change)?
    pub fn now(&self) -> &Verdict {
        &self.now
    }

    /// What proved the plan now.
    pub fn now_proven_by(&self) -> ProvenBy {
        self.now_by
    }

    /// Is there a plan for `r` failures after `deltas`?
    pub fn check(&self, deltas: &[Delta]) -> Result<Check, PlanError> {
        // Every sum the algorithms form stays inside i64 (as `Pool::validate`
        // makes sure for a whole pool).
        let moved = deltas.iter().try_fold(self.magnitude, |acc, d| match d {
            Delta::HostFree { by, .. } => acc.checked_add(by.unsigned_abs()),
            Delta::Vm(vm) => acc.checked_add(vm.memory.unsigned_abs()),
            _ => Some(acc),
        });
        if moved.is_none_or(|m| m > MAX_TOTAL_MEMORY as u64) {
            return Err(PlanError::MemoryOutOfRange);
        }
        if self.planner.mode == Mode::Xapi || deltas.iter().any(|d| matches!(d, Delta::Unprotect(_))) {
            // XAPI's planner reads every VM of the problem, protected now or
            // not: it gets the changed pool compiled afresh.
            return self.check_afresh(deltas);
        }
        let mut p = Cow::Borrowed(&self.p);
        let mut st = self.st.clone();
        let mut down = self.down.clone();
        for d in deltas {
            match d {
                Delta::HostFree { host, by } => {
                    let h = host_of(&p, host)?;
                    st.free[h] = st.free[h].saturating_add(*by);
                }
                Delta::HostDown(host) => {
                    let h = host_of(&p, host)?;
                    if st.alive & bit(h) != 0 {
                        down.extend(st.fail(h));
                    }
                }
                Delta::Vm(vm) => {
                    if vm.memory <= 0 {
                        return Err(PlanError::BadVmMemory {
                            vm: vm.uuid.clone(),
                            memory: vm.memory,
                        });
                    }
                    let i = upsert(&mut p, vm);
                    take_out(&mut st, &mut down, i);
                    let at = match &vm.resident_on {
                        Some(host) => Some(host_of(&p, host).map_err(|_| PlanError::UnknownResidentHost {
                            vm: vm.uuid.clone(),
                            host: host.clone(),
                        })?),
                        None => None,
                    };
                    match at.filter(|&h| st.alive & bit(h) != 0) {
                        Some(h) => st.on[h].push(i),
                        None => down.push(i),
                    }
                }
                Delta::Unprotect(_) => unreachable!("handled above"),
            }
        }
        down.sort_unstable();
        let search = self.now_by == ProvenBy::Search
            || self.now_by == ProvenBy::Xapi
            || self.now == Verdict::Unknown
            || p.size.len() <= self.search_at_most;
        Ok(self.prove(&p, &st, &down, search))
    }

    /// The necessary conditions, the certificates, then (if `search`) the
    /// game search, on one state.
    fn prove(&self, p: &Problem, st: &State, down: &[u32], search: bool) -> Check {
        let r = self.r;
        if self.planner.mode == Mode::Xapi {
            return if xapi::plan_status(p, st, down, r as usize) == xapi::Status::AllVms {
                Check::Exists(ProvenBy::Xapi)
            } else {
                Check::NoPlan(None)
            };
        }
        let mut s = Search::new(p, self.planner.budget);
        if let Some(f) = refute(p, st, down, r) {
            return Check::NoPlan(Some(self.planner.named(p, s.witness(st, down, &f))));
        }
        if let Some(c) = certify(p, st, down, r) {
            return Check::Exists(ProvenBy::Certificate(c));
        }
        let at_most = || {
            (r..=st.alive_count())
                .take_while(|&j| refute(p, st, down, j).is_none())
                .last()
                .unwrap_or(r)
        };
        if !search {
            return Check::Undecided { at_most: at_most() };
        }
        match s.place_then_win(st, down, r).0 {
            Outcome::Yes => Check::Exists(ProvenBy::Search),
            Outcome::No(w) => Check::NoPlan(Some(self.planner.named(p, w))),
            Outcome::Unknown if xapi::plan_status(p, st, down, r as usize) == xapi::Status::AllVms => {
                Check::Exists(ProvenBy::Xapi)
            }
            Outcome::Unknown => Check::Undecided { at_most: at_most() },
        }
    }

    /// The changed pool described in full and compiled (XAPI's mode, and a
    /// VM leaving the plan).
    fn check_afresh(&self, deltas: &[Delta]) -> Result<Check, PlanError> {
        let pool = apply(&self.pool, deltas);
        let (p, st, down) = Problem::compile(&pool)?;
        Ok(self.prove(&p, &st, &down, true))
    }
}

/// `deltas` applied to a [`Pool`]: the meaning [`Compiled::check`] must
/// agree with (the tests compare the two).
pub fn apply(pool: &Pool, deltas: &[Delta]) -> Pool {
    let mut pool = pool.clone();
    for d in deltas {
        match d {
            Delta::HostFree { host, by } => {
                if let Some(h) = pool.hosts.iter_mut().find(|h| &h.uuid == host) {
                    h.memory_free = h.memory_free.saturating_add(*by);
                }
            }
            Delta::HostDown(host) => {
                if let Some(h) = pool.hosts.iter_mut().find(|h| &h.uuid == host) {
                    h.live = false;
                }
            }
            Delta::Vm(vm) => match pool.vms.iter_mut().find(|v| v.uuid == vm.uuid) {
                Some(v) => *v = vm.clone(),
                None => pool.vms.push(vm.clone()),
            },
            Delta::Unprotect(uuid) => pool.vms.retain(|v| &v.uuid != uuid),
        }
    }
    pool
}

fn host_of(p: &Problem, uuid: &str) -> Result<usize, PlanError> {
    p.host_uuid
        .binary_search_by(|h| h.as_str().cmp(uuid))
        .map_err(|_| PlanError::UnknownHost(uuid.to_string()))
}

/// Remove VM `i` from wherever the state has it.
fn take_out(st: &mut State, down: &mut Vec<u32>, i: u32) {
    for on in st.on.iter_mut() {
        if let Some(at) = on.iter().position(|&v| v == i) {
            on.swap_remove(at);
            return;
        }
    }
    down.retain(|&v| v != i);
}

/// The index of `vm` in the problem, added or updated (size, allowed hosts,
/// class) as it will be; classes and hosts' reach ids are kept right, so
/// the search's symmetries stay sound.
fn upsert(p: &mut Cow<'_, Problem>, vm: &Vm) -> u32 {
    let allowed = (0..p.host_uuid.len())
        .filter(|&h| vm.needs.iter().all(|n| p.reaches[h].contains(n)))
        .fold(0, |acc, h| acc | bit(h));
    let needs: Vec<_> = vm.needs.iter().cloned().collect();
    let existing = p.vm_uuid.binary_search(&vm.uuid).ok().or_else(|| {
        // A VM added by an earlier delta sits at the end, out of order.
        p.vm_uuid.iter().rposition(|u| u == &vm.uuid)
    });
    if let Some(i) = existing {
        if p.size[i] == vm.memory && p.allowed[i] == allowed {
            return i as u32;
        }
    }
    let class = (0..p.size.len())
        .find(|&j| Some(j) != existing && p.size[j] == vm.memory && p.allowed[j] == allowed)
        .map(|j| p.class[j]);
    let known_allowed = (0..p.size.len()).any(|j| Some(j) != existing && p.allowed[j] == allowed);
    let p = p.to_mut();
    let class = class.unwrap_or_else(|| p.class.iter().max().map_or(0, |c| c + 1));
    let i = match existing {
        Some(i) => {
            p.size[i] = vm.memory;
            p.allowed[i] = allowed;
            p.class[i] = class;
            p.needs[i] = needs;
            i
        }
        None => {
            p.vm_uuid.push(vm.uuid.clone());
            p.size.push(vm.memory);
            p.allowed.push(allowed);
            p.class.push(class);
            p.needs.push(needs);
            p.vm_uuid.len() - 1
        }
    };
    if !known_allowed {
        // A new allowed set may tell hosts apart that were interchangeable.
        let sets: Vec<u64> = p.allowed.clone();
        p.reach_id = reach_ids(sets.iter().copied(), p.host_uuid.len());
    }
    i as u32
}
