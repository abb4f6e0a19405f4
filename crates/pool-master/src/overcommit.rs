//! Overcommit protection and the pool's plan status (XAPI's
//! `assert_configuration_change_preserves_ha_plan` and
//! `update_pool_status`).
//!
//! While HA is on and `ha_allow_overcommit` is false, a call that changes
//! the plan (a VM arriving on a host, a host disabled, a VM becoming
//! protected) is first re-planned with the change applied. If a plan for
//! `ha_plan_exists_for` failures exists now and would not after, the call
//! is refused with `HA_OPERATION_WOULD_BREAK_FAILOVER_PLAN`. When no plan
//! exists now the call is allowed: it cannot get worse, and refusing would
//! lock the pool after several failures.
//!
//! The master keeps `ha_plan_exists_for` and `ha_overcommitted` true
//! ([`pool_status`]), raising `HA_POOL_DROP_IN_PLAN_EXISTS_FOR` and
//! `HA_POOL_OVERCOMMITTED` when they get worse.

use ha_planner::{Pool, Verdict};
use xapi_proto::records::{HostRecord, PoolRecord, VmRecord};
use xapi_proto::{codes, ApiError};

use crate::{memory, planning};
use pool_db::model::Model;

/// A change to a pool's placement, to check before it is made.
#[derive(Debug, Default)]
pub struct Change<'a> {
    /// VMs that will run on hosts (start, migrate): `(vm_ref, host_ref)`.
    /// A migrating VM counts on both hosts, as in XAPI.
    pub arriving: Vec<(&'a str, &'a str)>,
    /// Hosts that will stop taking VMs and be emptied.
    pub disabling: Vec<&'a str>,
    /// VMs that will become protected.
    pub protecting: Vec<&'a str>,
}

/// The pool when overcommit protection applies: HA on, no overcommit allowed.
fn protected_pool(m: &Model) -> Option<&PoolRecord> {
    m.pool()
        .map(|(_, p)| p)
        .filter(|p| p.ha_enabled && !p.ha_allow_overcommit)
}

/// Refuse `change` if it would lose the failover plan the pool has now.
pub fn check(m: &Model, change: &Change) -> Result<(), ApiError> {
    let Some(pool) = protected_pool(m) else {
        return Ok(());
    };
    let n = u32::try_from(pool.ha_plan_exists_for.max(0)).unwrap_or(0);
    let planner = planning::planner(pool)?;
    let now = planning::describe(m, |_, v| planning::is_protected(v));
    if matches!(
        planner.plan_exists(&now, n).map_err(planning::planner_error)?,
        Verdict::NoPlan(_)
    ) {
        return Ok(());
    }
    let after = apply(m, change);
    match planner.plan_exists(&after, n).map_err(planning::planner_error)? {
        Verdict::NoPlan(_) => Err(ApiError::bare(codes::HA_OPERATION_WOULD_BREAK_FAILOVER_PLAN)),
        _ => Ok(()),
    }
}

/// The planner's view of the pool with `change` made.
fn apply(m: &Model, change: &Change) -> Pool {
    let mut pool = planning::describe(m, |r, v| planning::is_protected(v) || change.protecting.contains(&r));
    for (vm_ref, host_ref) in &change.arriving {
        let (Some(vm), Some(host)) = (m.get::<VmRecord>(vm_ref), m.get::<HostRecord>(host_ref)) else {
            continue;
        };
        if let Some(h) = pool.hosts.iter_mut().find(|h| h.uuid == host.uuid) {
            h.memory_free -= memory::footprint(vm);
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
