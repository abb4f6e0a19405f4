//! `VM.*` lifecycle calls: create, destroy, start, start_on,
//! clean_shutdown, hard_shutdown, pool_migrate. Each checks its arguments
//! and calls the operation in `ops::vm`, which holds the write lock.

use std::sync::Arc;

use serde_json::{json, Value};
use xapi_proto::records::{HostRecord, PowerState, VbdRecord, VdiRecord, VmRecord, NULL_REF};
use xapi_proto::ApiError;

use super::{generic, Args};
use crate::daemon::Daemon;
use crate::memory;
use crate::ops::vm::{bad_power_state, migrate_vm, shutdown_vm, start_vm};
use pool_db::model::{new_ref, new_uuid, Txn};

/// The methods [`dispatch`] serves.
pub const METHODS: &[&str] = &[
    "VM.create",
    "VM.destroy",
    "VM.start",
    "VM.start_on",
    "VM.clean_shutdown",
    "VM.hard_shutdown",
    "VM.pool_migrate",
    "VM.power_state_reset",
];

pub async fn dispatch(d: &Arc<Daemon>, verb: &str, args: &Args) -> Option<Result<Value, ApiError>> {
    Some(match verb {
        "create" => create(d, args).await,
        "destroy" => destroy(d, args).await,
        "start" => start(d, args, false).await,
        "start_on" => start(d, args, true).await,
        "clean_shutdown" | "hard_shutdown" => shutdown(d, args).await,
        "pool_migrate" => migrate(d, args).await,
        "power_state_reset" => super::recovery::power_state_reset(d, args).await,
        _ => return None,
    })
}

/// `VM.create(session, record)`: the record may be partial. When only
/// `memory_static_max` is given, the other memory fields take its value.
async fn create(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    args.exactly(2)?;
    let given = args.record(1, "args", "VM")?;
    let mut vm: VmRecord =
        serde_json::from_value(Value::Object(given.clone())).map_err(|_| ApiError::field_type("args"))?;
    if !given.contains_key("memory_dynamic_max") {
        vm.memory_dynamic_max = vm.memory_static_max;
    }
    if !given.contains_key("memory_dynamic_min") {
        vm.memory_dynamic_min = vm.memory_dynamic_max;
    }
    if !given.contains_key("memory_static_min") {
        vm.memory_static_min = vm.memory_dynamic_min;
    }
    memory::check_vm_constraints(&vm)?;
    generic::check_restart_priority(&vm.ha_restart_priority)?;
    generic::check_non_negative("order", vm.order)?;
    generic::check_non_negative("start_delay", vm.start_delay)?;
    generic::check_non_negative("shutdown_delay", vm.shutdown_delay)?;
    vm.uuid = new_uuid();
    vm.power_state = PowerState::Halted;
    vm.resident_on = NULL_REF.into();
    vm.domid = -1;
    vm.vbds = Vec::new();
    vm.ha_always_run = false;
    vm.is_control_domain = false;
    // Kept by the server, not given (XAPI ignores them in a create too).
    vm.allowed_operations = Vec::new();
    vm.current_operations = Default::default();
    vm.blocked_operations = Default::default();
    vm.memory_overhead = memory::vm_overhead(vm.memory_static_max, vm.vcpus_max);
    let r = new_ref();
    d.write(|txn| {
        if vm.affinity != NULL_REF && txn.get::<HostRecord>(&vm.affinity).is_none() {
            return Err(ApiError::handle_invalid("host", &vm.affinity));
        }
        txn.put(&r, vm);
        Ok(())
    })
    .await?;
    Ok(json!(r))
}

/// `VM.destroy(session, vm)`: a halted VM and its VBDs (its VDIs stay),
/// and its lease files on the heartbeat SR.
async fn destroy(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    args.exactly(2)?;
    let uuid = d
        .write(|txn| {
            let (vm_ref, vm) = args.reference::<VmRecord>(1, txn)?;
            if d.starting().busy(&vm_ref) {
                return Err(crate::reserve::in_progress(&vm_ref));
            }
            if vm.power_state != PowerState::Halted {
                return Err(bad_power_state(&vm_ref, PowerState::Halted, vm.power_state));
            }
            for vbd_ref in &vm.vbds {
                if let Some(vbd) = txn.get::<VbdRecord>(vbd_ref) {
                    txn.update::<VdiRecord>(&vbd.vdi, |vdi| vdi.vbds.retain(|v| v != vbd_ref));
                }
                txn.delete::<VbdRecord>(vbd_ref);
            }
            txn.delete::<VmRecord>(&vm_ref);
            Ok(vm.uuid)
        })
        .await?;
    crate::failover::leases::forget_vm_leases(d, vec![uuid]);
    Ok(json!(""))
}

/// `VM.start(session, vm, start_paused, force)` and
/// `VM.start_on(session, vm, host, start_paused, force)`; `start_paused`
/// true is refused (`OPERATION_NOT_ALLOWED`): there is no paused state.
async fn start(d: &Arc<Daemon>, args: &Args, on: bool) -> Result<Value, ApiError> {
    if on {
        args.count(3, 5)?;
    } else {
        args.count(2, 4)?;
    }
    let flags_at = if on { 3 } else { 2 };
    if args.bool_or(flags_at, "start_paused", false)? {
        // Refused rather than ignored: no driver here keeps a guest paused
        // (there is no VM.unpause), and a VM that runs when asked to stay
        // paused would surprise.
        return Err(ApiError::not_allowed(
            "start_paused: this pool starts VMs running only; start it without paused=true",
        ));
    }
    args.bool_or(flags_at + 1, "force", false)?;
    let (vm_ref, host_ref) = {
        let m = d.model();
        let txn = Txn::new(&m);
        let (vm_ref, _) = args.reference::<VmRecord>(1, &txn)?;
        let host = if on {
            Some(args.reference::<HostRecord>(2, &txn)?.0)
        } else {
            None
        };
        (vm_ref, host)
    };
    start_vm(d, &vm_ref, host_ref.as_deref(), true).await?;
    Ok(json!(""))
}

/// `VM.clean_shutdown(session, vm)` / `VM.hard_shutdown(session, vm)`. An
/// API shutdown clears `ha_always_run`: the admin wants the VM down.
async fn shutdown(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    args.exactly(2)?;
    let vm_ref = {
        let m = d.model();
        args.reference::<VmRecord>(1, &Txn::new(&m))?.0
    };
    shutdown_vm(d, &vm_ref).await?;
    Ok(json!(""))
}

/// `VM.pool_migrate(session, vm, host, options)`: a live migration. The
/// source guest stops after its last write and the destination continues
/// the sequence, so the disk sees one writer at a time and the gap is one
/// round trip between hosts.
async fn migrate(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    args.count(3, 4)?;
    if args.raw(3).is_some() {
        args.string_map(3, "options")?;
    }
    let (vm_ref, host_ref) = {
        let m = d.model();
        let txn = Txn::new(&m);
        (
            args.reference::<VmRecord>(1, &txn)?.0,
            args.reference::<HostRecord>(2, &txn)?.0,
        )
    };
    migrate_vm(d, &vm_ref, &host_ref, true).await?;
    Ok(json!(""))
}
