//! Recovering a dead host's VMs by hand, with HA off or before HA acts:
//! `VM.power_state_reset` and `host.declare_dead`, with XAPI's checks.
//!
//! Both only change the database: the admin asserts that the host is dead,
//! and the VMs it ran are recorded halted so that they can be started
//! elsewhere. Each refuses (`HOST_IS_LIVE`) while the host is alive: it
//! answers a call, or, with HA on, it is still in the liveset (XAPI asks the
//! host only; a host cut off from the master but alive in the liveset still
//! writes its disks, and starting its VMs elsewhere would give them two
//! writers).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use xapi_proto::records::{
    CertificateRecord, HostRecord, PbdRecord, PowerState, SrRecord, VbdRecord, VmRecord, NULL_REF,
};
use xapi_proto::{codes, ApiError};

use super::Args;
use crate::daemon::Daemon;
use crate::hostops::{self, Target};
use pool_db::model::Txn;

/// How long a host has to answer before it counts as dead.
const ALIVE_TIMEOUT: Duration = Duration::from_secs(3);

/// `VM.power_state_reset(session, vm)`: record the VM halted.
pub async fn power_state_reset(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    args.exactly(2)?;
    let (vm_ref, vm) = {
        let m = d.model();
        args.reference::<VmRecord>(1, &Txn::new(&m))?
    };
    check_resettable(d, &vm_ref, &vm).await?;
    d.write(|txn| {
        reset(txn, &vm_ref);
        Ok(())
    })
    .await?;
    Ok(json!(""))
}

/// `host.declare_dead(session, host)`: record every VM the host ran
/// halted, and disable the host.
pub async fn declare_dead(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    let (host_ref, _) = dead_host(d, args).await?;
    d.write(|txn| {
        let resident: Vec<String> = txn
            .all::<VmRecord>()
            .into_iter()
            .filter(|(_, vm)| vm.resident_on == host_ref && !vm.is_control_domain)
            .map(|(r, _)| r)
            .collect();
        for vm_ref in &resident {
            reset(txn, vm_ref);
        }
        txn.update::<HostRecord>(&host_ref, |h| h.enabled = false);
        Ok(())
    })
    .await?;
    Ok(json!(""))
}

/// `host.destroy(session, host)` (`xe host-forget`): forget a dead host,
/// with XAPI's checks: not while it is alive (or is this host), not while
/// HA is on, not while the pool places VMs on it. Its PBDs and its
/// certificate go with it; its SRs stay (a shared one has other hosts'
/// PBDs; a local one is reported by `sr-list` without a host, as XAPI's).
pub async fn destroy(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    let (host_ref, host) = dead_host(d, args).await?;
    if d.ha_enabled() {
        return Err(ApiError::bare(codes::HA_IS_ENABLED));
    }
    d.write(|txn| {
        if txn.base().pool().is_some_and(|(_, p)| p.ha_enabled) {
            return Err(ApiError::bare(codes::HA_IS_ENABLED));
        }
        let resident = txn
            .all::<VmRecord>()
            .into_iter()
            .any(|(_, vm)| vm.resident_on == host_ref && !vm.is_control_domain && vm.power_state != PowerState::Halted);
        if resident {
            return Err(ApiError::new(codes::HOST_HAS_RESIDENT_VMS, vec![host_ref.clone()]));
        }
        for (pbd_ref, pbd) in txn.all::<PbdRecord>() {
            if pbd.host == host_ref {
                txn.update::<SrRecord>(&pbd.sr, |sr| sr.pbds.retain(|p| *p != pbd_ref));
                txn.delete::<PbdRecord>(&pbd_ref);
            }
        }
        for (cert_ref, cert) in txn.all::<CertificateRecord>() {
            if cert.host == host_ref {
                txn.delete::<CertificateRecord>(&cert_ref);
            }
        }
        for (vm_ref, vm) in txn.all::<VmRecord>() {
            if vm.resident_on == host_ref {
                crate::ops::vm::set_residence(txn, &vm_ref, None);
            }
        }
        txn.delete::<HostRecord>(&host_ref);
        Ok(())
    })
    .await?;
    tracing::warn!(host = %host.uuid, name = %host.name_label, "host forgotten");
    Ok(json!(""))
}

/// The host a `(session, host)` call names, refused with `HOST_IS_LIVE`
/// while it is alive (or is this host): what `declare_dead` and `destroy`
/// both ask first.
async fn dead_host(d: &Daemon, args: &Args) -> Result<(String, HostRecord), ApiError> {
    args.exactly(2)?;
    let (host_ref, host) = {
        let m = d.model();
        args.reference::<HostRecord>(1, &Txn::new(&m))?
    };
    if alive(d, &host_ref, &host).await {
        return Err(ApiError::new(codes::HOST_IS_LIVE, vec![host_ref]));
    }
    Ok((host_ref, host))
}

/// XAPI's checks before a reset: never a control domain; a running or
/// paused VM only if no guest of it runs here and its host is dead.
async fn check_resettable(d: &Daemon, vm_ref: &str, vm: &VmRecord) -> Result<(), ApiError> {
    if vm.is_control_domain {
        return Err(ApiError::new(
            codes::CANNOT_RESET_CONTROL_DOMAIN,
            vec![vm_ref.to_string()],
        ));
    }
    if !matches!(vm.power_state, PowerState::Running | PowerState::Paused) {
        return Ok(());
    }
    let host = d.model().host.get(&vm.resident_on).cloned();
    let mine = d.host_ref().is_some_and(|me| me == vm.resident_on);
    if mine {
        if d.driver().running().contains(&vm.uuid) {
            return Err(ApiError::new(
                codes::DOMAIN_EXISTS,
                vec![vm_ref.to_string(), vm.domid.to_string()],
            ));
        }
        return Ok(());
    }
    match host {
        Some(h) if alive(d, &vm.resident_on, &h).await => {
            Err(ApiError::new(codes::HOST_IS_LIVE, vec![vm.resident_on.clone()]))
        }
        _ => Ok(()),
    }
}

/// Is `host` alive? This host always is; with HA on, a host the liveset
/// holds is; else a host marked live that answers a call.
async fn alive(d: &Daemon, host_ref: &str, host: &HostRecord) -> bool {
    if d.host_ref().is_some_and(|me| me == host_ref) {
        return true;
    }
    if !host.live {
        return false;
    }
    let ha = d.ha_enabled();
    if ha {
        return true;
    }
    let target = Target::new(host_ref, host);
    match hostops::call(d, &target, "host.local_vm_list", vec![], ALIVE_TIMEOUT).await {
        Ok(_) => true,
        Err(e) => e.code != codes::HOST_OFFLINE,
    }
}

/// Record `vm_ref` halted, its disks detached (XAPI's force_state_reset).
fn reset(txn: &mut Txn, vm_ref: &str) {
    crate::ops::vm::set_residence(txn, vm_ref, None);
    let vbds = txn.get::<VmRecord>(vm_ref).map(|v| v.vbds).unwrap_or_default();
    for vbd in vbds.iter().filter(|v| *v != NULL_REF) {
        txn.update::<VbdRecord>(vbd, |b| b.currently_attached = false);
    }
}
