//! `VM.*` lifecycle: create, destroy, start, start_on, clean_shutdown,
//! hard_shutdown, pool_migrate.
//!
//! A lifecycle call holds the pool's write lock from its checks to its
//! commit, so no other change can slip in between "this host has room" and
//! "the VM is recorded as running there". The guest is started before the
//! commit and stopped again if the commit fails; a migration stops the source
//! guest before the destination starts, so no two hosts ever write one disk.

use std::sync::Arc;

use serde_json::{json, Value};
use xapi_proto::records::{HostRecord, PowerState, VbdRecord, VdiRecord, VmRecord, NULL_REF};
use xapi_proto::{codes, ApiError};

use super::{generic, Args};
use crate::daemon::Daemon;
use crate::driver::DriverKind;
use crate::hostops::{self, Target};
use crate::{memory, overcommit};
use pool_db::model::{new_ref, new_uuid, Txn};

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

fn bad_power_state(vm_ref: &str, expected: PowerState, actual: PowerState) -> ApiError {
    ApiError::new(
        codes::VM_BAD_POWER_STATE,
        vec![vm_ref.to_string(), expected.cli_name().into(), actual.cli_name().into()],
    )
}

/// `VM.create(session, record)`: the record may be partial. When only
/// `memory_static_max` is given, the other memory fields take its value.
async fn create(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    args.exactly(2)?;
    let given = args.object(1, "args")?.clone();
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

/// `VM.destroy(session, vm)`: a halted VM and its VBDs (its VDIs stay).
async fn destroy(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    args.exactly(2)?;
    d.write(|txn| {
        let (vm_ref, vm) = args.reference::<VmRecord>(1, txn)?;
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
        Ok(())
    })
    .await?;
    Ok(json!(""))
}

/// Can `vm` run on `host` now? The disk paths there when it can.
pub(crate) fn check_host(
    txn: &Txn,
    vm_ref: &str,
    vm: &VmRecord,
    host_ref: &str,
    host: &HostRecord,
) -> Result<Vec<std::path::PathBuf>, ApiError> {
    if !host.live {
        return Err(ApiError::new(codes::HOST_OFFLINE, vec![host_ref.to_string()]));
    }
    if !host.enabled {
        return Err(ApiError::new(codes::HOST_DISABLED, vec![host_ref.to_string()]));
    }
    let disks = hostops::disk_paths(txn, vm_ref, vm, host_ref)?;
    let needed = memory::footprint(vm);
    let available = memory::host_free(txn, host_ref, host);
    if needed > available {
        return Err(ApiError::new(
            codes::HOST_NOT_ENOUGH_FREE_MEMORY,
            vec![needed.to_string(), available.to_string()],
        ));
    }
    Ok(disks)
}

/// Choose a host for `vm`: its affinity host if it fits, else the host with
/// the most free memory (ties to the lowest uuid).
fn choose_host(txn: &Txn, vm_ref: &str, vm: &VmRecord) -> Result<(Target, Vec<std::path::PathBuf>), ApiError> {
    let hosts = txn.all::<HostRecord>();
    if let Some((r, h)) = hosts.iter().find(|(r, _)| *r == vm.affinity) {
        if let Ok(disks) = check_host(txn, vm_ref, vm, r, h) {
            return Ok((Target::new(r, h), disks));
        }
    }
    let mut fits: Vec<(i64, &String, &HostRecord, Vec<std::path::PathBuf>)> = hosts
        .iter()
        .filter_map(|(r, h)| {
            check_host(txn, vm_ref, vm, r, h)
                .ok()
                .map(|disks| (memory::host_free(txn, r, h), r, h, disks))
        })
        .collect();
    fits.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.2.uuid.cmp(&b.2.uuid)));
    fits.into_iter()
        .next()
        .map(|(_, r, h, disks)| (Target::new(r, h), disks))
        .ok_or_else(|| ApiError::bare(codes::NO_HOSTS_AVAILABLE))
}

/// Record `vm_ref` as running on `host_ref` as the guest `domid`, or
/// halted when `None`.
pub(crate) fn set_residence(txn: &mut Txn, vm_ref: &str, running: Option<(&str, i64)>) {
    let old = txn.get::<VmRecord>(vm_ref).map(|v| v.resident_on).unwrap_or_default();
    txn.update::<VmRecord>(vm_ref, |vm| match running {
        Some((h, domid)) => {
            vm.power_state = PowerState::Running;
            vm.resident_on = h.to_string();
            vm.domid = domid;
        }
        None => {
            vm.power_state = PowerState::Halted;
            vm.resident_on = NULL_REF.into();
            vm.domid = -1;
        }
    });
    let host_ref = running.map(|(h, _)| h);
    for h in [Some(old.as_str()), host_ref].into_iter().flatten() {
        if h != NULL_REF {
            memory::refresh_host(txn, h);
        }
    }
}

/// `VM.start(session, vm, start_paused, force)` and
/// `VM.start_on(session, vm, host, start_paused, force)`.
async fn start(d: &Arc<Daemon>, args: &Args, on: bool) -> Result<Value, ApiError> {
    if on {
        args.count(3, 5)?;
    } else {
        args.count(2, 4)?;
    }
    let flags_at = if on { 3 } else { 2 };
    args.bool_or(flags_at, "start_paused", false)?;
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

/// Start a halted VM on `host_ref`, or on the host the chooser picks.
/// Starting a protected VM sets `ha_always_run`. The checks and the commit
/// happen under the write lock, with the guest started in between. With
/// `protect_plan`, a start that would lose the failover plan is refused
/// (HA's own restarts skip that check, as XAPI's do).
pub(crate) async fn start_vm(
    d: &Daemon,
    vm_ref: &str,
    host_ref: Option<&str>,
    protect_plan: bool,
) -> Result<(), ApiError> {
    let mut w = d.writer().await;
    let (vm, target, disks) = w.read(|txn| {
        let vm = txn
            .get::<VmRecord>(vm_ref)
            .ok_or_else(|| ApiError::handle_invalid("VM", vm_ref))?;
        if vm.is_a_template {
            return Err(ApiError::new("VM_IS_TEMPLATE", vec![vm_ref.to_string()]));
        }
        if vm.power_state != PowerState::Halted {
            return Err(bad_power_state(vm_ref, PowerState::Halted, vm.power_state));
        }
        let (target, disks) = match host_ref {
            Some(h) => {
                let host = txn
                    .get::<HostRecord>(h)
                    .ok_or_else(|| ApiError::handle_invalid("host", h))?;
                let disks = check_host(txn, vm_ref, &vm, h, &host)?;
                (Target::new(h, &host), disks)
            }
            None => choose_host(txn, vm_ref, &vm)?,
        };
        if protect_plan {
            let becomes_protected = vm.ha_restart_priority == "restart" && !vm.ha_always_run;
            let change = overcommit::Change {
                arriving: vec![(vm_ref, &target.host_ref)],
                protecting: if becomes_protected { vec![vm_ref] } else { Vec::new() },
                ..Default::default()
            };
            overcommit::check(txn.base(), &change)?;
        }
        Ok((vm, target, disks))
    })?;
    let domid = hostops::start_guest(d, &target, hostops::guest_spec(&vm, disks, None)).await?;
    let committed = w.commit(|txn| {
        set_residence(txn, vm_ref, Some((&target.host_ref, domid)));
        txn.update::<VmRecord>(vm_ref, |v| v.ha_always_run = v.ha_restart_priority == "restart");
        Ok(())
    });
    if let Err(e) = committed {
        let _ = hostops::stop_guest(d, &target, &vm.uuid).await;
        return Err(e);
    }
    Ok(())
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

/// Stop a running VM and record it halted, not to be restarted by HA.
pub(crate) async fn shutdown_vm(d: &Daemon, vm_ref: &str) -> Result<(), ApiError> {
    let mut w = d.writer().await;
    let (vm, target) = w.read(|txn| {
        let vm = txn
            .get::<VmRecord>(vm_ref)
            .ok_or_else(|| ApiError::handle_invalid("VM", vm_ref))?;
        if vm.power_state != PowerState::Running {
            return Err(bad_power_state(vm_ref, PowerState::Running, vm.power_state));
        }
        let host = txn
            .get::<HostRecord>(&vm.resident_on)
            .ok_or_else(|| ApiError::internal(format!("VM {} is resident on an unknown host", vm.uuid)))?;
        let target = Target::new(&vm.resident_on, &host);
        Ok((vm, target))
    })?;
    hostops::stop_guest(d, &target, &vm.uuid).await?;
    w.commit(|txn| {
        set_residence(txn, vm_ref, None);
        txn.update::<VmRecord>(vm_ref, |v| v.ha_always_run = false);
        Ok(())
    })?;
    Ok(())
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

/// Live-migrate a running VM to `host_ref`. With `protect_plan`, a move
/// that would lose the failover plan is refused (an evacuation checks its
/// whole plan first).
pub(crate) async fn migrate_vm(d: &Daemon, vm_ref: &str, host_ref: &str, protect_plan: bool) -> Result<(), ApiError> {
    let mut w = d.writer().await;
    let (vm, source, dest, disks) = w.read(|txn| {
        let vm = txn
            .get::<VmRecord>(vm_ref)
            .ok_or_else(|| ApiError::handle_invalid("VM", vm_ref))?;
        let host = txn
            .get::<HostRecord>(host_ref)
            .ok_or_else(|| ApiError::handle_invalid("host", host_ref))?;
        if vm.power_state != PowerState::Running {
            return Err(bad_power_state(vm_ref, PowerState::Running, vm.power_state));
        }
        if vm.resident_on == host_ref {
            return Err(ApiError::not_allowed(
                "The VM is already resident on the destination host.",
            ));
        }
        let source_host = txn
            .get::<HostRecord>(&vm.resident_on)
            .ok_or_else(|| ApiError::internal(format!("VM {} is resident on an unknown host", vm.uuid)))?;
        let disks = check_host(txn, vm_ref, &vm, host_ref, &host)?;
        if protect_plan {
            let change = overcommit::Change {
                arriving: vec![(vm_ref, host_ref)],
                ..Default::default()
            };
            overcommit::check(txn.base(), &change)?;
        }
        Ok((
            vm.clone(),
            Target::new(&vm.resident_on, &source_host),
            Target::new(host_ref, &host),
            disks,
        ))
    })?;
    if d.driver.kind() == DriverKind::Qemu {
        // Live: the destination waits for the guest's state, the source
        // sends it; the disk stays on the shared SR. A failure leaves the
        // guest running on the source, and no guest on the destination.
        let (domid, uri) = hostops::start_incoming(d, &dest, hostops::guest_spec(&vm, disks, None)).await?;
        if let Err(e) = hostops::migrate_out(d, &source, &vm.uuid, &uri).await {
            if let Err(k) = hostops::kill_guest(d, &dest, &vm.uuid).await {
                tracing::error!(vm = %vm.uuid, "cannot stop the incoming guest of a failed migration: {k}");
            }
            return Err(ApiError::new(
                codes::VM_MIGRATE_FAILED,
                vec![vm_ref.to_string(), source.host_ref, dest.host_ref, e.to_string()],
            ));
        }
        w.commit(|txn| {
            set_residence(txn, vm_ref, Some((&dest.host_ref, domid)));
            Ok(())
        })?;
        return Ok(());
    }
    let last = hostops::stop_guest(d, &source, &vm.uuid).await?;
    let next = last.map(|s| s + 1);
    let (resident, domid, failed) = match hostops::start_guest(d, &dest, hostops::guest_spec(&vm, disks, next)).await {
        Ok(domid) => (&dest, domid, None),
        Err(e) => {
            // Put the guest back where it was; the VM never left the source,
            // but it runs there as a new guest.
            let back = w.read(|txn| hostops::disk_paths(txn, vm_ref, &vm, &source.host_ref))?;
            let domid = hostops::start_guest(d, &source, hostops::guest_spec(&vm, back, next)).await?;
            (&source, domid, Some(e))
        }
    };
    w.commit(|txn| {
        set_residence(txn, vm_ref, Some((&resident.host_ref, domid)));
        Ok(())
    })?;
    match failed {
        None => Ok(()),
        Some(e) => Err(ApiError::new(
            codes::VM_MIGRATE_FAILED,
            vec![vm_ref.to_string(), source.host_ref, dest.host_ref, e.to_string()],
        )),
    }
}
