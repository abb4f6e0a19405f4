//! The bridge from the pool database to the failover planner: which VMs are
//! protected, what each host has free and reaches, which planner mode the
//! pool chose, and what "agile" means for one VM.
//!
//! Memory is counted as XAPI's HA planner counts it (`Static_max`): a VM's
//! footprint is static-max plus overhead, a host's free memory is its total
//! less its own overhead and every resident VM's footprint.

use std::collections::BTreeSet;

use ha_planner::{Host, Mode, Planner, Pool, Resource, Verdict, Vm};
use xapi_proto::records::{HostRecord, PbdRecord, PoolRecord, PowerState, SrRecord, VbdRecord, VdiRecord, VmRecord};
use xapi_proto::{codes, ApiError};

use crate::memory;
use pool_db::model::Model;

/// The pool `other-config` key that chooses the planner mode.
pub const MODE_KEY: &str = "ha-planner";

/// The planner the pool asked for (`other-config:ha-planner=exact|xapi`,
/// exact when unset).
pub fn planner(pool: &PoolRecord) -> Result<Planner, ApiError> {
    match pool.other_config.get(MODE_KEY) {
        None => Ok(Planner::default()),
        Some(v) => v
            .parse::<Mode>()
            .map(Planner::new)
            .map_err(|_| ApiError::invalid_value(format!("other-config:{MODE_KEY}"), v.clone())),
    }
}

/// XAPI's "should always run": protected (`restart`) and meant to be up. A
/// protected VM that is running counts too, whatever `ha_always_run` says.
pub fn is_protected(vm: &VmRecord) -> bool {
    vm.ha_restart_priority == "restart" && (vm.ha_always_run || vm.power_state != PowerState::Halted)
}

/// A protected VM that should run and does not: the restart executor's
/// work (its queue, as `/metrics` reports it).
pub fn awaits_restart(vm: &VmRecord) -> bool {
    vm.ha_restart_priority == "restart" && vm.ha_always_run && vm.power_state == PowerState::Halted && !vm.is_a_template
}

/// The SRs a host has a plugged PBD to.
pub fn host_reaches(m: &Model, host_ref: &str) -> BTreeSet<Resource> {
    m.pbd
        .iter()
        .filter(|(_, p)| p.host == host_ref && p.currently_attached)
        .filter_map(|(_, p)| m.get::<SrRecord>(&p.sr).map(|sr| Resource::Sr(sr.uuid.clone())))
        .collect()
}

/// The SRs a VM's disks are on, by reference.
pub fn vm_srs(m: &Model, vm: &VmRecord) -> BTreeSet<String> {
    vm.vbds
        .iter()
        .filter_map(|r| m.get::<VbdRecord>(r))
        .filter_map(|vbd| m.get::<VdiRecord>(&vbd.vdi))
        .map(|vdi| vdi.sr.clone())
        .collect()
}

/// What a VM needs a host to reach: the SRs its disks are on.
pub fn vm_needs(m: &Model, vm: &VmRecord) -> BTreeSet<Resource> {
    vm_srs(m, vm)
        .iter()
        .filter_map(|sr| m.get::<SrRecord>(sr))
        .map(|sr| Resource::Sr(sr.uuid.clone()))
        .collect()
}

/// A host that can take VMs: enabled and live.
pub fn host_usable(host: &HostRecord) -> bool {
    host.enabled && host.live
}

/// A host's free memory for the planner (not floored: a hypothetical
/// change may push it below zero). Saturating, never above the total.
pub fn host_free(m: &Model, host_ref: &str, host: &HostRecord) -> i64 {
    let used = memory::sum(
        m.vm.iter()
            .filter(|(_, v)| v.resident_on == host_ref && v.power_state != PowerState::Halted)
            .map(|(_, v)| memory::footprint(v)),
    );
    memory::free_unfloored(host.memory_total, host.memory_overhead, used)
}

/// Describe the pool to the planner, with `protected` choosing the VMs.
pub fn describe(m: &Model, protected: impl Fn(&str, &VmRecord) -> bool) -> Pool {
    let hosts = m
        .host
        .iter()
        .map(|(r, h)| Host {
            uuid: h.uuid.clone(),
            memory_free: host_free(m, r, h),
            live: host_usable(h),
            reaches: host_reaches(m, r),
        })
        .collect();
    let vms =
        m.vm.iter()
            .filter(|(r, v)| protected(r, v))
            .map(|(_, v)| describe_vm(m, v))
            .collect();
    Pool { hosts, vms }
}

/// One protected VM as the planner sees it.
pub fn describe_vm(m: &Model, v: &VmRecord) -> Vm {
    Vm {
        uuid: v.uuid.clone(),
        memory: memory::footprint(v).max(1),
        resident_on: (v.power_state != PowerState::Halted)
            .then(|| m.get::<HostRecord>(&v.resident_on).map(|h| h.uuid.clone()))
            .flatten(),
        needs: vm_needs(m, v),
    }
}

/// XAPI's agility check (`VM.assert_agile`): every SR the VM's disks are on
/// is shared and plugged on every host. The error names the first SR that
/// is not.
pub fn assert_agile(m: &Model, vm: &VmRecord) -> Result<(), ApiError> {
    for sr_ref in vm_srs(m, vm) {
        assert_sr_shared(m, &sr_ref)?;
    }
    Ok(())
}

/// `HA_CONSTRAINT_VIOLATION_SR_NOT_SHARED [sr]` unless the SR is shared and
/// plugged on every host.
pub fn assert_sr_shared(m: &Model, sr_ref: &str) -> Result<(), ApiError> {
    let Some(sr) = m.get::<SrRecord>(sr_ref) else {
        return Ok(());
    };
    let plugged_everywhere = m.host.iter().all(|(h, _)| {
        sr.pbds
            .iter()
            .filter_map(|p| m.get::<PbdRecord>(p))
            .any(|p| &p.host == h && p.currently_attached)
    });
    if !sr.shared || !plugged_everywhere {
        return Err(ApiError::new(
            codes::HA_CONSTRAINT_VIOLATION_SR_NOT_SHARED,
            vec![sr_ref.to_string()],
        ));
    }
    Ok(())
}

/// HA's constraints apply to this pool now: HA on and no overcommit.
pub fn constraints_apply(m: &Model) -> bool {
    m.pool().is_some_and(|(_, p)| p.ha_enabled && !p.ha_allow_overcommit)
}

pub fn planner_error(e: ha_planner::PlanError) -> ApiError {
    ApiError::internal(format!("failover planner: {e}"))
}

pub fn pool_record(m: &Model) -> Result<&PoolRecord, ApiError> {
    m.pool()
        .map(|(_, p)| p)
        .ok_or_else(|| ApiError::internal("the pool record is missing"))
}

/// The pool's planner and its description with the protected VMs.
pub fn setup(m: &Model) -> Result<(Planner, Pool), ApiError> {
    let planner = planner(pool_record(m)?)?;
    Ok((planner, describe(m, |_, v| is_protected(v))))
}

/// Whether the pool can plan for `n` failures (used by the setter of
/// `ha_host_failures_to_tolerate`).
pub fn plan_exists_for(m: &Model, n: u32) -> Result<Verdict, ApiError> {
    let (planner, pool) = setup(m)?;
    planner.plan_exists(&pool, n).map_err(planner_error)
}
