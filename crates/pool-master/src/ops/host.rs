//! Hosts as the pool records them: a host that (re)started, the guests it
//! must not run, the keys that mark a planned shutdown, and members'
//! liveness without HA.

use std::sync::Arc;
use std::time::{Duration, Instant};

use xapi_proto::records::{CertificateRecord, HostRecord, PoolRecord, PowerState, VmRecord};
use xapi_proto::ApiError;

use crate::daemon::Daemon;
use crate::driver::{Snapshot, StopMode};
use crate::memory;
use crate::tls::Summary;
use pool_db::model::{new_ref, new_uuid, Txn};

/// `other_config` key of a host shut down or rebooted on purpose.
pub const LEAVING_KEY: &str = "pool-ha-shutting-down";

/// `other_config` key of a host disabled until it has rebooted.
pub const DISABLED_UNTIL_REBOOT_KEY: &str = "pool-ha-disabled-until-reboot";

/// The host record's `other-config` key that says what runs its guests.
pub const VM_DRIVER_KEY: &str = "pool-ha-vm-driver";

/// Kill this host's guests of `strays` ([`record_host_start`]) that are
/// the ones `snapshot` saw (a guest started since is not the snapshot's
/// business).
pub async fn stop_strays(d: &Daemon, strays: &[String], snapshot: &Snapshot) {
    for vm in strays {
        if d.driver().domid(vm).is_some_and(|id| id < snapshot.next_domid) {
            tracing::error!(vm = %vm, "a guest runs here that the pool does not place here: killing it");
            if let Err(e) = d.driver().stop(vm, StopMode::Hard).await {
                tracing::error!(vm = %vm, "cannot kill the stray guest: {e}");
            }
        }
    }
}

/// Record that the host `uuid` (re)started: it is live at `address` with
/// `memory_total` (with HA on, once the liveset takes it in: the restart
/// executor's `live` follows the liveset, and a host that booted but has
/// not joined must get no VM), and of the VMs the database places on it, those its
/// driver `snapshot` does not list died with its previous process or halted
/// since. Returns the *strays*: guests the snapshot lists that the pool
/// does not place on this host (a guest an earlier `xapid` left running
/// whose VM was reset or restarted elsewhere meanwhile); the host must
/// kill them ([`stop_strays`]). A VM whose guest started after the snapshot (its domain id is not
/// below the snapshot's next one) is not the snapshot's business: the master
/// started it there while the snapshot was on its way.
pub fn record_host_start(
    txn: &mut Txn,
    uuid: &str,
    address: &str,
    memory_total: i64,
    snapshot: &Snapshot,
) -> Result<Vec<String>, ApiError> {
    let host_ref = crate::ops::ref_by_uuid::<HostRecord>(txn, uuid)?;
    // Guests the snapshot lists that the pool does not place here.
    let mut strays: Vec<String> = snapshot.running.clone();
    for (vm_ref, vm) in txn.all::<VmRecord>() {
        let gone = !snapshot.running.contains(&vm.uuid) && vm.domid < snapshot.next_domid;
        if vm.resident_on == host_ref && vm.power_state != PowerState::Halted {
            strays.retain(|s| *s != vm.uuid);
            if gone {
                crate::ops::vm::set_residence(txn, &vm_ref, None);
            }
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
    let ha_on = txn.base().pool().is_some_and(|(_, p)| p.ha_enabled);
    txn.update::<HostRecord>(&host_ref, |h| {
        if !snapshot.driver.is_empty() {
            h.other_config.insert(VM_DRIVER_KEY.into(), snapshot.driver.clone());
        }
        if !ha_on {
            h.live = true;
        }
        h.address = address.to_string();
        h.memory_total = memory_total;
        h.other_config.remove(LEAVING_KEY);
        if pbds_plugged && h.other_config.remove(DISABLED_UNTIL_REBOOT_KEY).is_some() {
            h.enabled = true;
        }
    });
    memory::refresh_host(txn, &host_ref);
    Ok(strays)
}

/// Keep the pool's record of host `uuid`'s certificate (XAPI's
/// `Certificate`, type `host`) equal to `cert`: the fingerprint the other
/// hosts pin when they call it. A host given a new certificate (its file
/// moved away, a new one made) says so when it starts; the old record goes.
pub fn record_certificate(txn: &mut Txn, uuid: &str, cert: &Summary) -> Result<(), ApiError> {
    let host_ref = crate::ops::ref_by_uuid::<HostRecord>(txn, uuid)?;
    let mine: Vec<(String, CertificateRecord)> = txn
        .all::<CertificateRecord>()
        .into_iter()
        .filter(|(_, c)| c.host == host_ref)
        .collect();
    let same = |c: &CertificateRecord| {
        c.fingerprint_sha256 == cert.fingerprint && c.not_before == cert.not_before && c.not_after == cert.not_after
    };
    if let [(_, only)] = mine.as_slice() {
        if same(only) {
            return Ok(());
        }
    }
    for (r, old) in &mine {
        if old.fingerprint_sha256 != cert.fingerprint {
            tracing::warn!(
                host = %uuid,
                old = %old.fingerprint_sha256,
                new = %cert.fingerprint,
                "the host's certificate changed: its peers pin the new one"
            );
        }
        txn.delete::<CertificateRecord>(r);
    }
    txn.put(
        &new_ref(),
        CertificateRecord {
            uuid: new_uuid(),
            name: String::new(),
            kind: "host".into(),
            host: host_ref,
            not_before: cert.not_before.clone(),
            not_after: cert.not_after.clone(),
            fingerprint: cert.fingerprint.clone(),
            fingerprint_sha256: cert.fingerprint.clone(),
        },
    );
    Ok(())
}

/// Record this host, which has just become the master, as the pool's
/// master and as (re)started, and kill the strays its driver runs (see
/// [`record_host_start`]). The restart executor may already be starting
/// guests here: those have domain ids past the snapshot's and stay
/// recorded as running.
pub async fn record_master_start(d: &Daemon) -> Result<(), ApiError> {
    let (uuid, address, memory) = (
        d.host_uuid().to_string(),
        d.config().address.clone(),
        d.config().memory_total,
    );
    let snapshot = d.driver().snapshot();
    let cert = d.identity().summary();
    let strays = d
        .write(|txn| {
            let host = crate::ops::ref_by_uuid::<HostRecord>(txn, &uuid)?;
            let pool = txn
                .base()
                .pool()
                .map(|(r, _)| r.clone())
                .ok_or_else(|| ApiError::internal("the pool record is missing"))?;
            txn.update::<PoolRecord>(&pool, |p| p.master = host);
            record_certificate(txn, &uuid, &cert)?;
            record_host_start(txn, &uuid, &address, memory, &snapshot)
        })
        .await?;
    stop_strays(d, &strays, &snapshot).await;
    Ok(())
}

/// Hosts are marked not live when they have not called for this long.
pub const MEMBER_SILENCE_LIMIT: Duration = Duration::from_secs(20);

/// Keep each member's `live` flag true to its recent calls (master only).
pub async fn refresh_liveness(d: &Arc<Daemon>) -> Result<(), ApiError> {
    let now = Instant::now();
    let changes: Vec<(String, bool)> = {
        let m = d.model();
        m.host
            .iter()
            .filter(|(_, h)| h.uuid != d.host_uuid())
            .filter_map(|(r, h)| {
                let live = d
                    .last_seen(&h.uuid)
                    .is_some_and(|t| now.duration_since(t) < MEMBER_SILENCE_LIMIT);
                (live != h.live).then(|| (r.clone(), live))
            })
            .collect()
    };
    if changes.is_empty() {
        return Ok(());
    }
    d.write(|txn| {
        for (r, live) in &changes {
            txn.update::<HostRecord>(r, |h| h.live = *live);
        }
        Ok(())
    })
    .await
}
