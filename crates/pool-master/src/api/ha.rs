//! HA capacity questions and agility checks: the planner's answers over the
//! API.
//!
//! - `pool.ha_compute_max_host_failures_to_tolerate`,
//!   `pool.ha_compute_hypothetical_max_host_failures_to_tolerate` (the
//!   What-If machine), `pool.ha_failover_plan_exists`,
//!   `pool.ha_compute_vm_failover_plan` as XAPI has them;
//! - `pool.ha_explain_max_host_failures_to_tolerate` (ours): the answer with
//!   its proof and a witness;
//! - `pool.ha_planner_snapshot` (ours): the planner's input as JSON text,
//!   exactly the snapshot `ha-plan` reads (issue 27; `xe
//!   pool-ha-plan-snapshot`);
//! - `VM.assert_agile`, `VM.assert_can_boot_here`, `VM.get_possible_hosts`.
//!
//! Every question is answered from one read of the model, by the planner
//! mode the pool chose (`other-config:ha-planner`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use ha_planner::{Placement, Proof, Reason, Resource};
use serde_json::{json, Map, Value};
use xapi_proto::records::{HostRecord, PowerState, VmRecord};
use xapi_proto::{codes, ApiError};

use super::generic::check_restart_priority;
use super::Args;
use crate::daemon::Daemon;
use crate::planning::{self, planner_error, pool_record, setup};
use pool_db::model::Txn;

/// The methods served here.
pub const METHODS: &[&str] = &[
    "pool.ha_compute_max_host_failures_to_tolerate",
    "pool.ha_compute_hypothetical_max_host_failures_to_tolerate",
    "pool.ha_explain_max_host_failures_to_tolerate",
    "pool.ha_failover_plan_exists",
    "pool.ha_compute_vm_failover_plan",
    "pool.ha_planner_snapshot",
    "VM.assert_agile",
    "VM.assert_can_boot_here",
    "VM.get_possible_hosts",
];

pub async fn pool(d: &Arc<Daemon>, verb: &str, args: &Args) -> Option<Result<Value, ApiError>> {
    Some(match verb {
        "ha_compute_max_host_failures_to_tolerate" => compute_max(d, args),
        "ha_compute_hypothetical_max_host_failures_to_tolerate" => hypothetical(d, args),
        "ha_explain_max_host_failures_to_tolerate" => explain(d, args),
        "ha_failover_plan_exists" => plan_exists(d, args),
        "ha_compute_vm_failover_plan" => failover_plan(d, args),
        "ha_planner_snapshot" => snapshot(d, args),
        _ => return None,
    })
}

pub async fn vm(d: &Arc<Daemon>, verb: &str, args: &Args) -> Option<Result<Value, ApiError>> {
    Some(match verb {
        "assert_agile" => assert_agile(d, args),
        "assert_can_boot_here" => assert_can_boot_here(d, args),
        "get_possible_hosts" => possible_hosts(d, args),
        _ => return None,
    })
}

fn compute_max(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    args.exactly(1)?;
    let m = d.model();
    let (planner, pool) = setup(&m)?;
    let t = planner.max_host_failures_to_tolerate(&pool).map_err(planner_error)?;
    Ok(json!(t.failures))
}

/// `configuration`: VM ref -> `restart` | `best-effort` | `""`. Only the
/// `restart` VMs are planned for, running or not.
fn hypothetical(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    args.exactly(2)?;
    let configuration = args.string_map(1, "configuration")?;
    let m = d.model();
    for (vm, priority) in &configuration {
        if m.get::<VmRecord>(vm).is_none() {
            return Err(ApiError::handle_invalid("VM", vm));
        }
        check_restart_priority(priority)?;
    }
    let planner = planning::planner(pool_record(&m)?)?;
    let pool = planning::describe(&m, |r, _| configuration.get(r).is_some_and(|p| p == "restart"));
    let t = planner.max_host_failures_to_tolerate(&pool).map_err(planner_error)?;
    Ok(json!(t.failures))
}

fn explain(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    args.exactly(1)?;
    let m = d.model();
    let (planner, pool) = setup(&m)?;
    let t = planner.max_host_failures_to_tolerate(&pool).map_err(planner_error)?;
    let (proof, at_most) = match t.proof {
        Proof::Exact => ("exact", t.failures),
        Proof::LowerBound { at_most } => ("lower-bound", at_most),
        Proof::Reference => ("reference", t.failures),
    };
    let (hosts, vms) = match &t.witness {
        Some(w) => (
            w.failed_hosts.iter().filter_map(|u| m.host.ref_of_uuid(u)).collect(),
            w.unplaced_vms.iter().filter_map(|u| m.vm.ref_of_uuid(u)).collect(),
        ),
        None => (Vec::new(), Vec::new()),
    };
    Ok(json!({
        "failures": t.failures,
        "planner": planner.mode.to_string(),
        "proof": proof,
        "at_most": at_most,
        "restartable_now": t.restartable_now,
        "proven_by": t.proven_by.name(),
        "protected_vms": pool.vms.len(),
        "witness_hosts": hosts,
        "witness_vms": vms,
    }))
}

/// The planner's input, as the pool describes it now (protected VMs, every
/// host), serialised as `ha-plan` reads it: memory in bytes, `resident_on`
/// null for a VM that is down, resources `sr:UUID` / `network:UUID`; hosts
/// and VMs by uuid. JSON text rather than a struct, so that XML-RPC clients
/// get the same bytes (its int64s travel as strings).
fn snapshot(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    args.exactly(1)?;
    let m = d.model();
    let (_, mut pool) = setup(&m)?;
    pool.hosts.sort_by(|a, b| a.uuid.cmp(&b.uuid));
    pool.vms.sort_by(|a, b| a.uuid.cmp(&b.uuid));
    let resources = |set: &BTreeSet<Resource>| -> Vec<String> {
        set.iter()
            .map(|r| match r {
                Resource::Sr(u) => format!("sr:{u}"),
                Resource::Network(u) => format!("network:{u}"),
            })
            .collect()
    };
    // In the issue's field order (`json!` objects sort their keys); every
    // string goes through `json!`, which escapes it.
    let hosts: Vec<String> = pool
        .hosts
        .iter()
        .map(|h| {
            format!(
                r#"{{"uuid":{},"memory_free":{},"live":{},"reaches":{}}}"#,
                json!(h.uuid),
                h.memory_free,
                h.live,
                json!(resources(&h.reaches))
            )
        })
        .collect();
    let vms: Vec<String> = pool
        .vms
        .iter()
        .map(|v| {
            format!(
                r#"{{"uuid":{},"memory":{},"resident_on":{},"needs":{}}}"#,
                json!(v.uuid),
                v.memory,
                json!(v.resident_on),
                json!(resources(&v.needs))
            )
        })
        .collect();
    Ok(json!(format!(
        "{{\"hosts\":[{}],\"vms\":[{}]}}\n",
        hosts.join(",\n  "),
        vms.join(",\n  ")
    )))
}

fn plan_exists(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    args.exactly(2)?;
    let n = args.int(1, "n")?;
    let r = u32::try_from(n).map_err(|_| ApiError::invalid_value("n", n.to_string()))?;
    let m = d.model();
    let (planner, pool) = setup(&m)?;
    let verdict = planner.plan_exists(&pool, r).map_err(planner_error)?;
    Ok(json!(verdict.exists()))
}

/// The error code XAPI gives for a VM that cannot be placed.
fn error_code(reason: &Reason, live_hosts: usize) -> &'static str {
    match reason {
        Reason::Unreachable { .. } if live_hosts == 0 => "HA_NO_PLAN",
        Reason::Unreachable { .. } => codes::VM_REQUIRES_SR,
        Reason::NotEnoughMemory { .. } => codes::HOST_NOT_ENOUGH_FREE_MEMORY,
        Reason::NotAgile => codes::HA_CONSTRAINT_VIOLATION_SR_NOT_SHARED,
    }
}

/// A plan entry for a VM that cannot be placed.
fn unplaced(reason: &Reason, live_hosts: usize) -> Value {
    json!({ "error_code": error_code(reason, live_hosts), "reason": reason.to_string() })
}

/// `ha_compute_vm_failover_plan(failed_hosts, failed_vms)`: for each VM of
/// the failed hosts (all of their running VMs when `failed_vms` is empty)
/// and each protected VM that is down: `host`, or `error_code` and a
/// readable `reason`; with `restart_priority` and `order`. Protected VMs
/// are placed by the planner, keeping a plan for the remaining failures to
/// tolerate where it can; best-effort VMs are then tried once, biggest
/// first, in the memory left; unprotected VMs are not restarted.
fn failover_plan(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    args.exactly(3)?;
    let failed_hosts = args.strings(1, "failed_hosts")?;
    let failed_vms = args.strings(2, "failed_vms")?;
    let m = d.model();
    for h in &failed_hosts {
        if m.get::<HostRecord>(h).is_none() {
            return Err(ApiError::handle_invalid("host", h));
        }
    }
    for v in &failed_vms {
        if m.get::<VmRecord>(v).is_none() {
            return Err(ApiError::handle_invalid("VM", v));
        }
    }
    let (planner, pool) = setup(&m)?;
    let to_tolerate = pool_record(&m)?.ha_host_failures_to_tolerate.max(0) as usize;
    let keep = to_tolerate.saturating_sub(failed_hosts.len()) as u32;
    let failed_uuids: Vec<String> = failed_hosts
        .iter()
        .filter_map(|h| m.get::<HostRecord>(h))
        .map(|h| h.uuid.clone())
        .collect();
    let plan = planner
        .restart_plan(&pool, &failed_uuids, keep)
        .map_err(planner_error)?;

    // The VMs to report: the ones asked about, else every VM running on a
    // failed host; plus protected VMs the planner had to place anyway.
    let mut vms: BTreeSet<String> = if failed_vms.is_empty() {
        m.vm.iter()
            .filter(|(_, v)| failed_hosts.contains(&v.resident_on) && v.power_state != PowerState::Halted)
            .map(|(r, _)| r.clone())
            .collect()
    } else {
        failed_vms.into_iter().collect()
    };
    vms.extend(
        plan.placements
            .iter()
            .filter_map(|(u, _)| m.vm.ref_of_uuid(u).map(str::to_string)),
    );

    // Free memory left on each surviving host once protected VMs are placed.
    let mut free: BTreeMap<String, i64> = m
        .host
        .iter()
        .filter(|(r, h)| planning::host_usable(h) && !failed_hosts.contains(r))
        .map(|(r, h)| (r.clone(), planning::host_free(&m, r, h)))
        .collect();
    let live_hosts = free.len();
    let mut result = Map::new();
    for (uuid, placement) in &plan.placements {
        let Some(r) = m.vm.ref_of_uuid(uuid) else { continue };
        let entry = match placement {
            Placement::Host(h) => {
                let host = m.host.ref_of_uuid(h).unwrap_or_default().to_string();
                if let (Some(f), Some(v)) = (free.get_mut(&host), m.get::<VmRecord>(r)) {
                    *f = f.saturating_sub(crate::memory::footprint(v));
                }
                json!({ "host": host })
            }
            Placement::Unplaced(reason) => unplaced(reason, live_hosts),
        };
        result.insert(r.to_string(), entry);
    }
    // Best-effort VMs: one attempt each, biggest first, on the hosts that
    // reach their SRs (as described to the planner).
    let reaches: BTreeMap<&str, &BTreeSet<Resource>> = pool
        .hosts
        .iter()
        .filter_map(|h| m.host.ref_of_uuid(&h.uuid).map(|r| (r, &h.reaches)))
        .collect();
    let mut best_effort: Vec<(&String, &VmRecord)> = vms
        .iter()
        .filter_map(|r| m.vm.iter().find(|(x, _)| *x == r))
        .filter(|(r, v)| v.ha_restart_priority == "best-effort" && !result.contains_key(r.as_str()))
        .collect();
    best_effort.sort_by_key(|(r, v)| (std::cmp::Reverse(crate::memory::footprint(v)), (*r).clone()));
    for (r, v) in best_effort {
        let needed = crate::memory::footprint(v);
        let needs = planning::vm_needs(&m, v);
        let best = free
            .iter()
            .filter(|(h, _)| reaches.get(h.as_str()).is_some_and(|have| needs.is_subset(have)))
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
            .map(|(h, f)| (h.clone(), *f));
        let entry = match best {
            Some((h, f)) if f >= needed => {
                free.insert(h.clone(), f - needed);
                json!({ "host": h })
            }
            Some((_, f)) => unplaced(
                &Reason::NotEnoughMemory {
                    needed,
                    available: f.max(0),
                },
                live_hosts,
            ),
            None => {
                // What the live host closest to qualifying lacks.
                let missing = free
                    .keys()
                    .filter_map(|h| reaches.get(h.as_str()))
                    .map(|have| needs.difference(have).cloned().collect::<Vec<_>>())
                    .min_by_key(Vec::len)
                    .unwrap_or_default();
                unplaced(&Reason::Unreachable { missing }, live_hosts)
            }
        };
        result.insert(r.clone(), entry);
    }
    for r in &vms {
        if !result.contains_key(r) {
            result.insert(r.clone(), json!({ "reason": "not protected: not restarted" }));
        }
    }
    for (r, entry) in result.iter_mut() {
        if let (Some(v), Some(obj)) = (m.get::<VmRecord>(r), entry.as_object_mut()) {
            obj.insert("restart_priority".into(), json!(v.ha_restart_priority));
            obj.insert("order".into(), json!(v.order));
        }
    }
    Ok(Value::Object(result))
}

fn assert_agile(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    args.exactly(2)?;
    let m = d.model();
    let (_, vm) = args.reference::<VmRecord>(1, &Txn::new(&m))?;
    planning::assert_agile(&m, &vm)?;
    Ok(json!(""))
}

fn assert_can_boot_here(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    args.exactly(3)?;
    let m = d.model();
    let txn = Txn::new(&m);
    let (vm_ref, vm) = args.reference::<VmRecord>(1, &txn)?;
    let (host_ref, host) = args.reference::<HostRecord>(2, &txn)?;
    crate::ops::vm::check_host(&txn, &vm_ref, &vm, &host_ref, &host)?;
    Ok(json!(""))
}

fn possible_hosts(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    args.exactly(2)?;
    let m = d.model();
    let txn = Txn::new(&m);
    let (vm_ref, vm) = args.reference::<VmRecord>(1, &txn)?;
    let hosts: Vec<&String> = m
        .host
        .iter()
        .filter(|(r, h)| crate::ops::vm::check_host(&txn, &vm_ref, &vm, r, h).is_ok())
        .map(|(r, _)| r)
        .collect();
    Ok(json!(hosts))
}
