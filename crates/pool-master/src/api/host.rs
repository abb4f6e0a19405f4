//! `host.*`: the calls hosts make on each other.
//!
//! - `host.local_vm_start / local_vm_stop / local_vm_list`: served by every
//!   host for the master, acting on this host's VM driver.
//! - `host.member_hello`: a member tells the master it is up and which VMs
//!   it runs; VMs the database places there but that died with a previous
//!   run of the member are marked halted.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};
use xapi_proto::records::{HostRecord, PowerState, VmRecord, NULL_REF};
use xapi_proto::{codes, ApiError};

use super::Args;
use crate::daemon::Daemon;
use crate::driver::DriverError;
use crate::memory;
use crate::model::Txn;

pub async fn dispatch(d: &Arc<Daemon>, verb: &str, args: &Args) -> Option<Result<Value, ApiError>> {
    Some(match verb {
        "local_vm_start" => local_start(d, args),
        "local_vm_stop" => local_stop(d, args).await,
        "local_vm_list" => args.exactly(1).map(|_| json!(d.driver.running())),
        "member_hello" => member_hello(d, args).await,
        _ => return None,
    })
}

/// `host.local_vm_start(session, vm_uuid, disk_paths, first_seq)`; a
/// negative `first_seq` continues the disk's own sequence.
fn local_start(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    args.exactly(4)?;
    let vm = args.str(1, "vm")?;
    let disks: Vec<PathBuf> = args.strings(2, "disks")?.into_iter().map(PathBuf::from).collect();
    let seq = args.int(3, "first_seq")?;
    let first = u64::try_from(seq).ok();
    d.driver
        .start(vm, disks, first)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(json!(""))
}

/// `host.local_vm_stop(session, vm_uuid)`: the last sequence written.
async fn local_stop(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    args.exactly(2)?;
    let vm = args.str(1, "vm")?;
    match d.driver.stop(vm).await {
        Ok(seq) => Ok(json!(seq)),
        Err(DriverError::NotRunning(_)) => Err(ApiError::new(
            codes::VM_NOT_RESIDENT_HERE,
            vec![vm.to_string(), d.host_uuid.clone()],
        )),
        Err(e) => Err(ApiError::internal(e.to_string())),
    }
}

/// Record that the host `uuid` (re)started: it is live at `address` with
/// `memory_total`, and of the VMs the database places on it only `running`
/// still run (the others died with its previous process).
pub(crate) fn record_host_start(
    txn: &mut Txn,
    uuid: &str,
    address: &str,
    memory_total: i64,
    running: &[String],
) -> Result<(), ApiError> {
    let host_ref = txn
        .base()
        .host
        .ref_of_uuid(uuid)
        .map(str::to_string)
        .ok_or_else(|| ApiError::uuid_invalid("host", uuid))?;
    for (vm_ref, vm) in txn.all::<VmRecord>() {
        if vm.resident_on == host_ref && vm.power_state != PowerState::Halted && !running.contains(&vm.uuid) {
            txn.update::<VmRecord>(&vm_ref, |v| {
                v.power_state = PowerState::Halted;
                v.resident_on = NULL_REF.into();
            });
        }
    }
    // A host back from a planned shutdown or reboot re-enables itself once
    // its PBDs are plugged (XAPI's `consider_enabling_host`).
    let pbds_plugged = txn.get::<HostRecord>(&host_ref).is_some_and(|h| {
        h.pbds.iter().all(|p| {
            txn.get::<xapi_proto::records::PbdRecord>(p)
                .is_some_and(|p| p.currently_attached)
        })
    });
    txn.update::<HostRecord>(&host_ref, |h| {
        h.live = true;
        h.address = address.to_string();
        h.memory_total = memory_total;
        h.other_config.remove(super::LEAVING_KEY);
        if pbds_plugged && h.other_config.remove(super::DISABLED_UNTIL_REBOOT_KEY).is_some() {
            h.enabled = true;
        }
    });
    memory::refresh_host(txn, &host_ref);
    Ok(())
}

/// `host.member_hello(session, host_uuid, address, memory_total, running)`.
async fn member_hello(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    args.exactly(5)?;
    let uuid = args.str(1, "host")?.to_string();
    let address = args.str(2, "address")?.to_string();
    let memory_total = args.int(3, "memory_total")?;
    let running = args.strings(4, "running")?;
    d.write(|txn| record_host_start(txn, &uuid, &address, memory_total, &running))
        .await?;
    d.last_seen
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(uuid, Instant::now());
    Ok(json!(""))
}
