//! Overcommit protection and the pool's plan status (XAPI's
//! `assert_configuration_change_preserves_ha_plan` and
//! `update_pool_status`).
//!
//! [`check`] is the one gate for every call that changes protection or the
//! plan: VM starts and migrations (`ops::vm`), host disable and evacuation
//! (`api/maintenance`), and every setter of a VM or the pool
//! (`api/generic`: restart priority, `ha_always_run`, order, memory,
//! vCPUs, failures to tolerate, overcommit allowed, the planner mode). Each
//! describes its [`Change`]; the gate decides what it means for the plan.
//!
//! While HA is on and `ha_allow_overcommit` is false, a change that
//! affects the plan (a VM arriving on a host, a host disabled, a VM
//! becoming protected, a protected VM's footprint, the planner mode) is
//! first re-planned with the change applied. If a plan for
//! `ha_plan_exists_for` failures exists now and would not after, the call
//! is refused with `HA_OPERATION_WOULD_BREAK_FAILOVER_PLAN`; so is a change
//! after which the planner can neither prove nor refute that plan (the
//! error then carries one parameter saying so: the pool refuses what it
//! cannot prove). The re-plan is incremental: the pool compiled once per
//! generation ([`PlanCache`], `ha_planner::Compiled`) and the change
//! applied as deltas ([`deltas`], checked against [`apply`] in debug
//! builds). When no plan
//! exists now the call is allowed: it cannot get worse, and refusing would
//! lock the pool after several failures. A VM a setter asks to protect must
//! be agile first (`HA_CONSTRAINT_VIOLATION_SR_NOT_SHARED`).
//!
//! The master keeps `ha_plan_exists_for` and `ha_overcommitted` true
//! ([`pool_status`]), raising `HA_POOL_DROP_IN_PLAN_EXISTS_FOR` and
//! `HA_POOL_OVERCOMMITTED` when they get worse.

use std::sync::{Arc, Mutex};

use ha_planner::{Check, Compiled, Delta, Pool, Verdict};
use xapi_proto::records::{HostRecord, PoolRecord, VmRecord};
use xapi_proto::{codes, ApiError};

use crate::{memory, planning};
use pool_db::model::Model;

/// A change to a pool's placement, protection or planning, to check before
/// it is made.
#[derive(Debug, Default)]
pub struct Change<'a> {
    /// VMs that will run on hosts (start, migrate): `(vm_ref, host_ref)`.
    /// A migrating VM counts on both hosts, as in XAPI.
    pub arriving: Vec<(&'a str, &'a str)>,
    /// Hosts that will stop taking VMs and be emptied.
    pub disabling: Vec<&'a str>,
    /// VMs that will become protected.
    pub protecting: Vec<&'a str>,
    /// VMs a setter rewrites, each as it will be: their protection,
    /// footprint and placement are taken from the new record.
    pub updating: Vec<(&'a str, &'a VmRecord)>,
    /// The pool record as a setter will leave it (planner mode, overcommit
    /// allowed, failures to tolerate).
    pub pool: Option<&'a PoolRecord>,
    /// A new `ha_host_failures_to_tolerate`: the pool must be able to plan
    /// for it, unless overcommit is allowed (XAPI's
    /// `assert_nfailures_change_preserves_ha_plan`).
    pub to_tolerate: Option<u32>,
}

/// The pool when overcommit protection applies: HA on, no overcommit allowed.
fn protected_pool(m: &Model) -> Option<&PoolRecord> {
    m.pool()
        .map(|(_, p)| p)
        .filter(|p| p.ha_enabled && !p.ha_allow_overcommit)
}

/// The gate: refuse `change` if it would lose the failover plan the pool
/// has now (or, for a new number of failures to tolerate, if the pool
/// cannot plan for it), or protect a VM that is not agile. Compiles the
/// pool afresh; [`check_cached`] keeps the compiled pool per generation.
pub fn check(m: &Model, change: &Change) -> Result<(), ApiError> {
    check_with(None, m, change)
}

/// [`check`] with the master's [`PlanCache`]: the pool is described and
/// compiled once per database generation, and each change is checked as
/// deltas against it (issue 27: under a millisecond on 64 hosts and 1,600
/// protected VMs).
pub fn check_cached(cache: &PlanCache, m: &Model, change: &Change) -> Result<(), ApiError> {
    check_with(Some(cache), m, change)
}

fn check_with(cache: Option<&PlanCache>, m: &Model, change: &Change) -> Result<(), ApiError> {
    if let Some(n) = change.to_tolerate {
        let allow = change
            .pool
            .or_else(|| m.pool().map(|(_, p)| p))
            .is_some_and(|p| p.ha_allow_overcommit);
        if !allow && !planning::plan_exists_for(m, n)?.exists() {
            return Err(ApiError::bare(codes::HA_OPERATION_WOULD_BREAK_FAILOVER_PLAN));
        }
    }
    let Some(pool) = protected_pool(m) else {
        return Ok(());
    };
    if change.pool.is_some_and(|p| p.ha_allow_overcommit) {
        // Overcommit allowed from now on: nothing left to protect.
        return Ok(());
    }
    for (r, after) in &change.updating {
        if asks_protection(m.get::<VmRecord>(r), after) {
            planning::assert_agile(m, after)?;
        }
    }
    if !affects_plan(m, pool, change) {
        return Ok(());
    }
    let n = u32::try_from(pool.ha_plan_exists_for.max(0)).unwrap_or(0);
    let planner = planning::planner(pool)?;
    let planner_after = planning::planner(change.pool.unwrap_or(pool))?;
    if planner_after != planner {
        // A new planner mode: both states planned afresh, each by its mode.
        let now = planning::describe(m, |_, v| planning::is_protected(v));
        let before = planner.plan_exists(&now, n).map_err(planning::planner_error)?;
        if matches!(before, Verdict::NoPlan(_)) {
            return Ok(());
        }
        return match planner_after
            .plan_exists(&apply(m, change), n)
            .map_err(planning::planner_error)?
        {
            Verdict::NoPlan(_) => Err(ApiError::bare(codes::HA_OPERATION_WOULD_BREAK_FAILOVER_PLAN)),
            Verdict::Unknown if before == Verdict::Unknown => Ok(()),
            Verdict::Unknown => Err(undecided(n, None)),
            Verdict::Exists => Ok(()),
        };
    }
    let compiled = match cache {
        Some(cache) => cache.get(m, planner, n)?,
        None => Arc::new(compile(m, planner, n)?),
    };
    if matches!(compiled.now(), Verdict::NoPlan(_)) {
        return Ok(());
    }
    // The pool's own plan was not proven either (the pool's status counts
    // it as a plan): only a refuted change is refused, as before the
    // incremental check.
    let now_unproven = matches!(compiled.now(), Verdict::Unknown);
    let deltas = deltas(m, change);
    #[cfg(debug_assertions)]
    {
        // The deltas describe the same pool as the full description does
        // (every gate test and debug lab checks it).
        let sorted = |mut p: Pool| {
            p.hosts.sort_by(|a, b| a.uuid.cmp(&b.uuid));
            p.vms.sort_by(|a, b| a.uuid.cmp(&b.uuid));
            p
        };
        let now = planning::describe(m, |_, v| planning::is_protected(v));
        debug_assert_eq!(
            sorted(ha_planner::apply_deltas(&now, &deltas)),
            sorted(apply(m, change)),
            "overcommit deltas disagree with the described change"
        );
    }
    match compiled.check(&deltas).map_err(planning::planner_error)? {
        Check::Exists(_) => Ok(()),
        Check::NoPlan(_) => Err(ApiError::bare(codes::HA_OPERATION_WOULD_BREAK_FAILOVER_PLAN)),
        Check::Undecided { .. } if now_unproven => Ok(()),
        Check::Undecided { at_most } => Err(undecided(n, Some(at_most))),
    }
}

/// The refusal of a change the planner can neither prove nor refute a
/// plan for: XAPI's error, with one more parameter saying why (the rule of
/// `docs/HA.md`, "Overcommit protection").
fn undecided(n: u32, at_most: Option<u32>) -> ApiError {
    let bound = at_most.map_or(String::new(), |m| format!(", at most {m} possible"));
    ApiError::new(
        codes::HA_OPERATION_WOULD_BREAK_FAILOVER_PLAN,
        vec![format!(
            "a plan for {n} host failures can no longer be proven after this change (nor refuted{bound}); \
             the pool refuses what it cannot prove: ha-allow-overcommit=true allows it"
        )],
    )
}

fn compile(m: &Model, planner: ha_planner::Planner, n: u32) -> Result<Compiled, ApiError> {
    let now = planning::describe(m, |_, v| planning::is_protected(v));
    Compiled::new(planner, &now, n).map_err(planning::planner_error)
}

/// The master's compiled pool for the overcommit gate: one per database
/// generation, number of failures and planner mode, built on the first
/// check of a generation (or by [`PlanCache::prepare`] after a commit).
#[derive(Debug, Default)]
pub struct PlanCache {
    entry: Mutex<Option<(u64, Arc<Compiled>)>>,
}

impl PlanCache {
    fn get(&self, m: &Model, planner: ha_planner::Planner, n: u32) -> Result<Arc<Compiled>, ApiError> {
        let fresh = |c: &Compiled| c.planner() == planner && c.failures() == n;
        {
            let entry = self.entry.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((g, c)) = entry.as_ref() {
                if *g == m.generation && fresh(c) {
                    return Ok(Arc::clone(c));
                }
            }
        }
        let compiled = Arc::new(compile(m, planner, n)?);
        *self.entry.lock().unwrap_or_else(|p| p.into_inner()) = Some((m.generation, Arc::clone(&compiled)));
        Ok(compiled)
    }

    /// Compile the pool of this generation now (the restart executor does
    /// after each change), so the next gate check only applies its deltas.
    pub fn prepare(&self, m: &Model) -> Result<(), ApiError> {
        let Some(pool) = protected_pool(m) else {
            return Ok(());
        };
        let n = u32::try_from(pool.ha_plan_exists_for.max(0)).unwrap_or(0);
        self.get(m, planning::planner(pool)?, n).map(|_| ())
    }
}

/// `change` as the planner's deltas: the same pool as [`apply`] describes.
fn deltas(m: &Model, change: &Change) -> Vec<Delta> {
    let updated = |r: &str| change.updating.iter().find(|(u, _)| *u == r).map(|(_, v)| *v);
    let in_plan = |r: &str, v: &VmRecord| {
        updated(r).map_or_else(|| planning::is_protected(v), planning::is_protected) || change.protecting.contains(&r)
    };
    let host_uuid = |r: &str| m.get::<HostRecord>(r).map(|h| h.uuid.clone());
    let mut out = Vec::new();
    for (vm_ref, after) in &change.updating {
        let Some(before) = m.get::<VmRecord>(vm_ref) else {
            continue;
        };
        if in_plan(vm_ref, before) {
            out.push(Delta::Vm(planning::describe_vm(m, after)));
        } else if planning::is_protected(before) {
            out.push(Delta::Unprotect(before.uuid.clone()));
        }
        if before.power_state != xapi_proto::records::PowerState::Halted {
            if let Some(host) = host_uuid(&before.resident_on) {
                let by = memory::footprint(before).saturating_sub(memory::footprint(after));
                if by != 0 {
                    out.push(Delta::HostFree { host, by });
                }
            }
        }
    }
    for vm_ref in &change.protecting {
        if let Some(vm) = m.get::<VmRecord>(vm_ref) {
            if updated(vm_ref).is_none() && !planning::is_protected(vm) {
                out.push(Delta::Vm(planning::describe_vm(m, vm)));
            }
        }
    }
    for (vm_ref, host_ref) in &change.arriving {
        let (Some(vm), Some(host)) = (m.get::<VmRecord>(vm_ref), host_uuid(host_ref)) else {
            continue;
        };
        out.push(Delta::HostFree {
            host: host.clone(),
            by: -memory::footprint(vm),
        });
        if in_plan(vm_ref, vm) {
            let mut described = planning::describe_vm(m, updated(vm_ref).unwrap_or(vm));
            described.resident_on = Some(host);
            out.push(Delta::Vm(described));
        }
    }
    for host_ref in &change.disabling {
        if let Some(host) = host_uuid(host_ref) {
            out.push(Delta::HostDown(host));
        }
    }
    out
}

/// A setter asks for protection: the priority turns to `restart`, or the
/// VM turns protected.
fn asks_protection(before: Option<&VmRecord>, after: &VmRecord) -> bool {
    let was_restart = before.is_some_and(|v| v.ha_restart_priority == "restart");
    let was_protected = before.is_some_and(planning::is_protected);
    (after.ha_restart_priority == "restart" && !was_restart) || (planning::is_protected(after) && !was_protected)
}

/// Does `change` touch anything the planner sees?
fn affects_plan(m: &Model, pool: &PoolRecord, change: &Change) -> bool {
    let vm_changes = change.updating.iter().any(|(r, after)| {
        let Some(before) = m.get::<VmRecord>(r) else {
            return true;
        };
        planning::is_protected(before) != planning::is_protected(after)
            || memory::footprint(before) != memory::footprint(after)
            || before.resident_on != after.resident_on
            || before.power_state != after.power_state
    });
    let mode_changes = change
        .pool
        .is_some_and(|p| p.other_config.get(planning::MODE_KEY) != pool.other_config.get(planning::MODE_KEY));
    !change.arriving.is_empty()
        || !change.disabling.is_empty()
        || !change.protecting.is_empty()
        || vm_changes
        || mode_changes
}

/// The planner's view of the pool with `change` made.
fn apply(m: &Model, change: &Change) -> Pool {
    let updated = |r: &str| change.updating.iter().find(|(u, _)| *u == r).map(|(_, v)| *v);
    let mut pool = planning::describe(m, |r, v| {
        updated(r).map_or_else(|| planning::is_protected(v), planning::is_protected) || change.protecting.contains(&r)
    });
    for (vm_ref, after) in &change.updating {
        let Some(before) = m.get::<VmRecord>(vm_ref) else {
            continue;
        };
        // The VM as it will be, if it is (or stays) in the plan.
        if let Some(v) = pool.vms.iter_mut().find(|v| v.uuid == before.uuid) {
            *v = planning::describe_vm(m, after);
        }
        // A resident VM whose footprint changes changes its host's room.
        if before.power_state != xapi_proto::records::PowerState::Halted {
            if let Some(host) = m.get::<HostRecord>(&before.resident_on) {
                if let Some(h) = pool.hosts.iter_mut().find(|h| h.uuid == host.uuid) {
                    h.memory_free = h
                        .memory_free
                        .saturating_add(memory::footprint(before))
                        .saturating_sub(memory::footprint(after));
                }
            }
        }
    }
    for (vm_ref, host_ref) in &change.arriving {
        let (Some(vm), Some(host)) = (m.get::<VmRecord>(vm_ref), m.get::<HostRecord>(host_ref)) else {
            continue;
        };
        if let Some(h) = pool.hosts.iter_mut().find(|h| h.uuid == host.uuid) {
            h.memory_free = h.memory_free.saturating_sub(memory::footprint(vm));
        }
        if let Some(v) = pool.vms.iter_mut().find(|v| v.uuid == vm.uuid) {
            v.resident_on = Some(host.uuid.clone());
        }
    }
    for host_ref in &change.disabling {
        if let Some(host) = m.get::<HostRecord>(host_ref) {
            if let Some(h) = pool.hosts.iter_mut().find(|h| h.uuid == host.uuid) {
                h.live = false;
            }
        }
    }
    pool
}

/// What the pool's plan status should be now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    pub plan_exists_for: i64,
    pub overcommitted: bool,
}

/// The plan status of the pool (HA on): a plan for
/// `ha_host_failures_to_tolerate` failures, or else for how many.
pub fn pool_status(m: &Model) -> Result<Option<Status>, ApiError> {
    let Some(pool) = m.pool().map(|(_, p)| p).filter(|p| p.ha_enabled) else {
        return Ok(None);
    };
    let to_tolerate = pool.ha_host_failures_to_tolerate.max(0);
    let planner = planning::planner(pool)?;
    let described = planning::describe(m, |_, v| planning::is_protected(v));
    let n = u32::try_from(to_tolerate).unwrap_or(u32::MAX);
    if !matches!(
        planner.plan_exists(&described, n).map_err(planning::planner_error)?,
        Verdict::NoPlan(_)
    ) {
        return Ok(Some(Status {
            plan_exists_for: to_tolerate,
            overcommitted: false,
        }));
    }
    let max = planner
        .max_host_failures_to_tolerate(&described)
        .map_err(planning::planner_error)?
        .failures;
    Ok(Some(Status {
        plan_exists_for: to_tolerate.min(i64::from(max)),
        overcommitted: true,
    }))
}
