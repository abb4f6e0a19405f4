//! Guests that halt from inside: the VM is recorded as halted.
//!
//! A member tells the master (`host.guest_halted`); the master records the
//! VM halted and, when the pool's `ha-reboot-vm-on-internal-shutdown` is
//! false, clears `ha_always_run` (XAPI's rule). Otherwise a protected VM
//! keeps `ha_always_run` and the restart executor starts it again.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use xapi_proto::records::{PowerState, VmRecord};
use xapi_proto::ApiError;

use crate::daemon::{Daemon, Role};
use crate::peers::PEER_TIMEOUT;

/// How many times a member tries to tell the master, one second apart.
const TRIES: u32 = 30;

/// Start the task that reports this host's halted guests.
pub fn spawn(d: Arc<Daemon>) {
    let Some(mut halted) = d.driver.take_halted() else {
        return;
    };
    tokio::spawn(async move {
        while let Some(vm) = halted.recv().await {
            let mut tries = 0;
            loop {
                // While the report waited (the master was away), the VM may
                // have been started here again: the halt is then old news,
                // and recording it would mark the new guest halted.
                if d.driver.running().contains(&vm) {
                    tracing::info!(%vm, "not reporting an earlier guest's halt: the VM runs here again");
                    break;
                }
                let Err(e) = report(&d, &vm).await else { break };
                tries += 1;
                if tries >= TRIES {
                    tracing::error!(%vm, "could not record that the guest halted: {e}");
                    break;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    });
}

async fn report(d: &Arc<Daemon>, vm_uuid: &str) -> Result<(), ApiError> {
    match d.role() {
        Role::Master => record(d, &d.host_uuid, vm_uuid).await,
        Role::Member { master_address } => {
            let auth = crate::hostops::auth(d);
            d.peers
                .call(
                    &auth,
                    &master_address,
                    d.config.port,
                    "host.guest_halted",
                    vec![json!(d.host_uuid), json!(vm_uuid)],
                    PEER_TIMEOUT,
                )
                .await
                .map(|_| ())
                .map_err(|e| ApiError::internal(e.to_string()))
        }
    }
}

/// On the master: the guest of `vm_uuid` on host `host_uuid` halted itself.
pub async fn record(d: &Daemon, host_uuid: &str, vm_uuid: &str) -> Result<(), ApiError> {
    d.write(|txn| {
        let host_ref = txn.base().host.ref_of_uuid(host_uuid).map(str::to_string);
        let vm_ref = txn
            .base()
            .vm
            .ref_of_uuid(vm_uuid)
            .map(str::to_string)
            .ok_or_else(|| ApiError::uuid_invalid("VM", vm_uuid))?;
        let vm = txn
            .get::<VmRecord>(&vm_ref)
            .ok_or_else(|| ApiError::uuid_invalid("VM", vm_uuid))?;
        // Only if the database still places it there (not already moved).
        if vm.power_state == PowerState::Halted || Some(&vm.resident_on) != host_ref.as_ref() {
            return Ok(());
        }
        let reboot = txn
            .base()
            .pool()
            .is_none_or(|(_, p)| p.ha_reboot_vm_on_internal_shutdown);
        crate::api::set_residence(txn, &vm_ref, None);
        if !reboot {
            txn.update::<VmRecord>(&vm_ref, |v| v.ha_always_run = false);
        }
        Ok(())
    })
    .await?;
    tracing::info!(vm = %vm_uuid, host = %host_uuid, "a guest halted from inside");
    d.ha.restarts.kick();
    Ok(())
}

/// `host.guest_halted(session, host_uuid, vm_uuid)`: a member reports it.
pub async fn guest_halted(d: &Arc<Daemon>, args: &crate::api::Args) -> Result<Value, ApiError> {
    args.exactly(3)?;
    let host = args.str(1, "host")?.to_string();
    let vm = args.str(2, "vm")?.to_string();
    record(d, &host, &vm).await?;
    Ok(json!(""))
}
