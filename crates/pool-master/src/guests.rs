//! Guests that halt from inside: the VM is recorded as halted.
//!
//! A member tells the master (`host.guest_halted`), naming the guest by its
//! domain id; the master records the VM halted if the database still has
//! that guest running there (a report can arrive late, after the VM was
//! started again: it must not mark the new guest halted). When the pool's
//! `ha-reboot-vm-on-internal-shutdown` is false it also clears
//! `ha_always_run` (XAPI's rule); otherwise a protected VM keeps
//! `ha_always_run` and the restart executor starts it again.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use xapi_proto::records::{PowerState, VmRecord};
use xapi_proto::ApiError;

use crate::daemon::{Daemon, Role};
use crate::driver::Halted;
use crate::peers::PEER_TIMEOUT;

/// How many times a member tries to tell the master, one second apart.
const TRIES: u32 = 30;

/// Start the task that reports this host's halted guests.
pub fn spawn(d: Arc<Daemon>) {
    let Some(mut halted) = d.driver().take_halted() else {
        return;
    };
    tokio::spawn(async move {
        while let Some(guest) = halted.recv().await {
            let mut tries = 0;
            loop {
                // While the report waited (the master was away), the VM may
                // have been started here again: the halt is then old news.
                // (The master would ignore it too; this saves the call.)
                if d.driver().domid(&guest.vm_uuid).is_some() {
                    tracing::info!(vm = %guest.vm_uuid, "not reporting an earlier guest's halt: the VM runs here again");
                    break;
                }
                let Err(e) = report(&d, &guest).await else { break };
                tries += 1;
                if tries >= TRIES {
                    tracing::error!(vm = %guest.vm_uuid, "could not record that the guest halted: {e}");
                    break;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    });
}

async fn report(d: &Arc<Daemon>, guest: &Halted) -> Result<(), ApiError> {
    match d.role() {
        Role::Master => record(d, d.host_uuid(), guest).await,
        Role::Member { master_address } => {
            let auth = crate::hostops::auth(d);
            d.peers()
                .call(
                    &auth,
                    &master_address,
                    d.config().port,
                    "host.guest_halted",
                    vec![json!(d.host_uuid()), json!(guest.vm_uuid), json!(guest.domid)],
                    PEER_TIMEOUT,
                )
                .await
                .map(|_| ())
                .map_err(|e| ApiError::internal(e.to_string()))
        }
    }
}

/// On the master: the guest `guest` on host `host_uuid` halted itself.
pub async fn record(d: &Daemon, host_uuid: &str, guest: &Halted) -> Result<(), ApiError> {
    let vm_uuid = guest.vm_uuid.as_str();
    let recorded = d
        .write(|txn| {
            let host_ref = txn.base().host.ref_of_uuid(host_uuid).map(str::to_string);
            let vm_ref = crate::ops::ref_by_uuid::<VmRecord>(txn, vm_uuid)?;
            let vm = txn
                .get::<VmRecord>(&vm_ref)
                .ok_or_else(|| ApiError::uuid_invalid("VM", vm_uuid))?;
            // Only if the database still has this guest running there (the VM
            // was not moved or started again since).
            if vm.power_state == PowerState::Halted
                || Some(&vm.resident_on) != host_ref.as_ref()
                || vm.domid != guest.domid
            {
                return Ok(false);
            }
            let reboot = txn
                .base()
                .pool()
                .is_none_or(|(_, p)| p.ha_reboot_vm_on_internal_shutdown);
            crate::ops::vm::set_residence(txn, &vm_ref, None);
            if !reboot {
                txn.update::<VmRecord>(&vm_ref, |v| v.ha_always_run = false);
            }
            Ok(true)
        })
        .await?;
    if recorded {
        tracing::info!(vm = %vm_uuid, host = %host_uuid, domid = guest.domid, "a guest halted from inside");
        d.ha().restarts.kick();
    } else {
        tracing::info!(vm = %vm_uuid, host = %host_uuid, domid = guest.domid, "ignoring the halt of a guest that is no longer the VM's");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use xapi_proto::records::{PowerState, VmRecord};

    use super::record;
    use crate::daemon::Daemon;
    use crate::driver::Halted;
    use pool_db::model::new_ref;

    #[tokio::test]
    async fn the_master_ignores_the_halt_of_a_guest_that_is_no_longer_the_vms() {
        let dir = tempfile::tempdir().unwrap();
        let d = Daemon::open(crate::daemon::tests::config(dir.path())).unwrap();
        let host = d.host_ref().unwrap();
        let vm = new_ref();
        let record_vm = VmRecord {
            uuid: "vm-1".into(),
            power_state: PowerState::Running,
            resident_on: host.clone(),
            domid: 7,
            ha_restart_priority: "restart".into(),
            ha_always_run: true,
            ..Default::default()
        };
        d.write(|txn| {
            txn.put(&vm, record_vm);
            Ok(())
        })
        .await
        .unwrap();
        let state = |d: &Daemon| d.model().get::<VmRecord>(&vm).map(|v| (v.power_state, v.domid));

        // A late report about guest 6, the VM's previous run: old news.
        let earlier = Halted {
            vm_uuid: "vm-1".into(),
            domid: 6,
        };
        record(&d, d.host_uuid(), &earlier).await.unwrap();
        assert_eq!(state(&d), Some((PowerState::Running, 7)));

        // The running guest halts: the VM is halted, still protected.
        let current = Halted {
            vm_uuid: "vm-1".into(),
            domid: 7,
        };
        record(&d, d.host_uuid(), &current).await.unwrap();
        assert_eq!(state(&d), Some((PowerState::Halted, -1)));
        assert!(d.model().get::<VmRecord>(&vm).is_some_and(|v| v.ha_always_run));
    }
}
