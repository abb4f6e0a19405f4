//! `pool.eject` (xe `pool-eject`): a live member leaves the pool and
//! becomes a one-host pool of its own, with XAPI's checks (`xapi_pool.ml`,
//! `eject` and `eject_self`).
//!
//! On the master, under the write lock from the checks to the commit: not
//! while HA is on (`HA_IS_ENABLED`), never the master itself, not while a
//! VM runs on the host or a start there is in flight (XAPI's
//! `OPERATION_NOT_ALLOWED [VM resident on host]`), only a live host
//! (`HOST_OFFLINE`; a dead one is forgotten with `host-forget`). The host
//! is told first (`pool.eject_self`, a call between hosts): it checks the
//! same on its side, takes a new database of its own (a new pool, itself,
//! its local SRs) and a fresh pool secret, and is master from then on.
//! Only then the master removes it: its record, its PBDs, its
//! certificate, and its local SRs with their disks (and the VBDs of
//! halted VMs on them). XAPI answers an eject of the master with an
//! uncaught exception (`INTERNAL_ERROR [Xapi_pool.Cannot_eject_master]`);
//! here it is `OPERATION_NOT_ALLOWED` with the reason.

use std::sync::Arc;

use serde_json::{json, Value};
use xapi_proto::records::{
    CertificateRecord, HostRecord, PbdRecord, PowerState, SrRecord, VbdRecord, VdiRecord, VmRecord,
};
use xapi_proto::{codes, ApiError};

use super::Args;
use crate::daemon::Daemon;
use crate::hostops::{self, Target};
use crate::peers::PEER_TIMEOUT;
use pool_db::model::Txn;

/// The methods served here.
pub const METHODS: &[&str] = &["pool.eject", "pool.eject_self"];

const MASTER_REFUSED: &str =
    "The pool master cannot be ejected: make another host the master first (pool-designate-new-master).";

/// XAPI's refusal while VMs run on the host.
fn resident() -> ApiError {
    ApiError::not_allowed("VM resident on host")
}

/// `pool.eject(session, host)`, on the master.
pub async fn eject(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    args.exactly(2)?;
    let mut w = d.writer().await;
    let (host_ref, host) = w.read(|txn| {
        let (host_ref, host) = args.reference::<HostRecord>(1, txn)?;
        if txn.base().pool().is_some_and(|(_, p)| p.ha_enabled) {
            return Err(ApiError::bare(codes::HA_IS_ENABLED));
        }
        if host.uuid == d.host_uuid() {
            return Err(ApiError::not_allowed(MASTER_REFUSED));
        }
        let running = txn
            .all::<VmRecord>()
            .iter()
            .any(|(_, v)| v.resident_on == host_ref && !v.is_control_domain && v.power_state != PowerState::Halted);
        if running || d.starting().all().iter().any(|(_, h)| *h == host_ref) {
            return Err(resident());
        }
        if !host.live {
            return Err(ApiError::new(codes::HOST_OFFLINE, vec![host_ref.clone()]));
        }
        Ok((host_ref, host))
    })?;
    let target = Target::new(&host_ref, &host);
    hostops::call(d, &target, "pool.eject_self", vec![json!(host_ref)], PEER_TIMEOUT).await?;
    w.commit(|txn| {
        forget(txn, &host_ref);
        Ok(())
    })?;
    drop(w);
    tracing::info!(host = %host.uuid, name = %host.name_label, "host ejected from the pool");
    Ok(json!(""))
}

/// Remove `host_ref` and what is its alone from the pool database.
fn forget(txn: &mut Txn, host_ref: &str) {
    for (pbd_ref, pbd) in txn.all::<PbdRecord>() {
        if pbd.host != host_ref {
            continue;
        }
        txn.delete::<PbdRecord>(&pbd_ref);
        let Some(sr) = txn.get::<SrRecord>(&pbd.sr) else {
            continue;
        };
        let others = sr.pbds.iter().any(|p| *p != pbd_ref);
        if sr.shared || others {
            txn.update::<SrRecord>(&pbd.sr, |s| s.pbds.retain(|p| *p != pbd_ref));
            continue;
        }
        // Its local SR goes, with its disks and their VBDs.
        for vdi_ref in &sr.vdis {
            let vbds = txn.get::<VdiRecord>(vdi_ref).map(|v| v.vbds).unwrap_or_default();
            for vbd_ref in &vbds {
                if let Some(vbd) = txn.get::<VbdRecord>(vbd_ref) {
                    txn.update::<VmRecord>(&vbd.vm, |v| v.vbds.retain(|b| b != vbd_ref));
                }
                txn.delete::<VbdRecord>(vbd_ref);
            }
            txn.delete::<VdiRecord>(vdi_ref);
        }
        txn.delete::<SrRecord>(&pbd.sr);
    }
    for (cert_ref, cert) in txn.all::<CertificateRecord>() {
        if cert.host == host_ref {
            txn.delete::<CertificateRecord>(&cert_ref);
        }
    }
    for (vm_ref, vm) in txn.all::<VmRecord>() {
        if vm.resident_on == host_ref || vm.affinity == host_ref {
            txn.update::<VmRecord>(&vm_ref, |v| {
                if v.affinity == host_ref {
                    v.affinity = xapi_proto::records::NULL_REF.into();
                }
            });
            if vm.resident_on == host_ref {
                crate::ops::vm::set_residence(txn, &vm_ref, None);
            }
        }
    }
    txn.delete::<HostRecord>(host_ref);
}

/// `pool.eject_self(session, host)`: on the host being ejected, for the
/// master.
pub async fn eject_self(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    args.exactly(2)?;
    if d.host_ref().as_deref() != Some(args.str(1, "host")?) {
        return Err(ApiError::invalid_value("host", "not this host"));
    }
    if d.is_master() {
        return Err(ApiError::not_allowed(MASTER_REFUSED));
    }
    if d.ha_enabled() || d.ha().armed() {
        return Err(ApiError::bare(codes::HA_IS_ENABLED));
    }
    if !d.driver().running().is_empty() {
        return Err(resident());
    }
    d.leave_pool().await.map_err(|e| {
        tracing::error!("cannot leave the pool: {e}");
        ApiError::internal(format!("cannot leave the pool: {e}"))
    })?;
    tracing::info!("ejected from the pool: this host is now the master of a pool of its own");
    Ok(json!(""))
}
