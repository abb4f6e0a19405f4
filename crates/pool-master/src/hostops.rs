//! The master's hands on a host's VMs: start or stop a guest on a host, this
//! one (the driver directly) or a member (`host.local_vm_*` over the API).

use std::path::PathBuf;

use serde_json::json;
use xapi_client::ClientError;
use xapi_proto::records::{HostRecord, PbdRecord, SrRecord, VbdRecord, VdiRecord, VmRecord};
use xapi_proto::{codes, ApiError};

use crate::daemon::Daemon;
use crate::driver::{DriverError, GuestSpec, KernelBoot, StopMode};
use crate::peers::{PeerAuth, PEER_TIMEOUT};
use pool_db::model::Txn;

/// A host to act on.
#[derive(Debug, Clone)]
pub struct Target {
    pub host_ref: String,
    pub uuid: String,
    pub address: String,
}

impl Target {
    pub fn new(host_ref: &str, host: &HostRecord) -> Self {
        Target {
            host_ref: host_ref.to_string(),
            uuid: host.uuid.clone(),
            address: host.address.clone(),
        }
    }
}

/// This host's credentials for calls to the other hosts.
pub(crate) fn auth(d: &Daemon) -> PeerAuth {
    PeerAuth {
        host_uuid: d.host_uuid().to_string(),
        secret: d.pool_secret(),
    }
}

/// A failed call to `target` as an API error: its own error, else
/// `HOST_OFFLINE` when it did not answer.
pub(crate) fn peer_error(target: &Target, e: ClientError) -> ApiError {
    match e {
        ClientError::Api(api) => api,
        ClientError::Unreachable { .. } => ApiError::new(codes::HOST_OFFLINE, vec![target.host_ref.clone()]),
        other => ApiError::internal(other.to_string()),
    }
}

/// Call `method` on the host `target` (never this one).
pub async fn call(
    d: &Daemon,
    target: &Target,
    method: &str,
    params: Vec<serde_json::Value>,
    timeout: std::time::Duration,
) -> Result<serde_json::Value, ApiError> {
    d.peers()
        .call(&auth(d), &target.address, d.config().port, method, params, timeout)
        .await
        .map_err(|e| peer_error(target, e))
}

/// The other-config keys a VM names its kernel by (qemu driver): a path
/// on every host, an initrd beside it, and extra kernel arguments.
pub const KERNEL_KEY: &str = "pool-ha-kernel";
pub const INITRD_KEY: &str = "pool-ha-initrd";
pub const KERNEL_ARGS_KEY: &str = "pool-ha-kernel-args";

/// What a guest of `vm` needs to start, writing to `disks`.
pub fn guest_spec(vm: &VmRecord, disks: Vec<PathBuf>, first_seq: Option<u64>) -> GuestSpec {
    let kernel = vm
        .other_config
        .get(KERNEL_KEY)
        .filter(|k| !k.is_empty())
        .map(|k| KernelBoot {
            kernel: PathBuf::from(k),
            initrd: vm
                .other_config
                .get(INITRD_KEY)
                .filter(|i| !i.is_empty())
                .map(PathBuf::from),
            args: vm.other_config.get(KERNEL_ARGS_KEY).cloned().unwrap_or_default(),
        });
    GuestSpec {
        memory: vm.memory_static_max,
        vcpus: vm.vcpus_max,
        kernel,
        ..GuestSpec::new(&vm.uuid, disks, first_seq)
    }
}

/// Start a guest of `spec` on `target`: its domain id.
pub async fn start_guest(d: &Daemon, target: &Target, spec: GuestSpec) -> Result<i64, ApiError> {
    if target.uuid == d.host_uuid() {
        return d.driver().start(spec).await.map_err(|e| e.to_api());
    }
    let disks: Vec<String> = spec.disks.iter().map(|p| p.display().to_string()).collect();
    let seq = spec.first_seq.map_or(-1, |s| s as i64);
    let extra = json!({ "memory": spec.memory, "vcpus": spec.vcpus, "kernel": spec.kernel });
    d.peers()
        .call(
            &auth(d),
            &target.address,
            d.config().port,
            "host.local_vm_start",
            vec![json!(spec.vm_uuid), json!(disks), json!(seq), extra],
            // The host may first wait for the VM's lease (its old owner's
            // host lease expiring in that host's eyes).
            PEER_TIMEOUT + d.leases().acquire_wait(),
        )
        .await
        .map_err(|e| peer_error(target, e))?
        .as_i64()
        .ok_or_else(|| ApiError::internal(format!("host {} did not say the guest's domain id", target.uuid)))
}

/// How long the master waits for a member's live migration (the driver
/// gives up at two minutes).
const MIGRATE_CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(150);

/// Start a guest of `spec` on `target` that waits for a live migration:
/// its domain id and the URI to migrate to.
pub async fn start_incoming(d: &Daemon, target: &Target, spec: GuestSpec) -> Result<(i64, String), ApiError> {
    if target.uuid == d.host_uuid() {
        return d
            .driver()
            .start_incoming(spec, &d.config().bind_address, &d.config().address)
            .await
            .map_err(|e| ApiError::internal(e.to_string()));
    }
    let disks: Vec<String> = spec.disks.iter().map(|p| p.display().to_string()).collect();
    let extra = json!({ "memory": spec.memory, "vcpus": spec.vcpus, "kernel": spec.kernel });
    let v = call(
        d,
        target,
        "host.local_vm_start_incoming",
        vec![json!(spec.vm_uuid), json!(disks), json!(-1), extra],
        PEER_TIMEOUT,
    )
    .await?;
    match (
        v.get(0).and_then(serde_json::Value::as_i64),
        v.get(1).and_then(serde_json::Value::as_str),
    ) {
        (Some(domid), Some(uri)) => Ok((domid, uri.to_string())),
        _ => Err(ApiError::internal(format!(
            "host {} did not say where to migrate to: {v}",
            target.uuid
        ))),
    }
}

/// Migrate the guest of `vm_uuid` on `target` live to `uri`.
pub async fn migrate_out(d: &Daemon, target: &Target, vm_uuid: &str, uri: &str) -> Result<(), ApiError> {
    if target.uuid == d.host_uuid() {
        return d
            .driver()
            .migrate_out(vm_uuid, uri)
            .await
            .map(|_| ())
            .map_err(|e| ApiError::internal(e.to_string()));
    }
    call(
        d,
        target,
        "host.local_vm_migrate",
        vec![json!(vm_uuid), json!(uri)],
        MIGRATE_CALL_TIMEOUT,
    )
    .await
    .map(|_| ())
}

/// Pull the plug on the guest of `vm_uuid` on `target` (an incoming guest
/// whose migration failed).
pub async fn kill_guest(d: &Daemon, target: &Target, vm_uuid: &str) -> Result<(), ApiError> {
    if target.uuid == d.host_uuid() {
        return match d.driver().stop(vm_uuid, StopMode::Hard).await {
            Ok(_) | Err(DriverError::NotRunning(_)) => Ok(()),
            Err(e) => Err(ApiError::internal(e.to_string())),
        };
    }
    match call(
        d,
        target,
        "host.local_vm_stop",
        vec![json!(vm_uuid), json!(true)],
        PEER_TIMEOUT,
    )
    .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.code == codes::VM_NOT_RESIDENT_HERE => Ok(()),
        Err(e) => Err(e),
    }
}

/// Stop the guest of `vm_uuid` on `target`: the last sequence it wrote, or
/// `None` when it was not running there.
pub async fn stop_guest(d: &Daemon, target: &Target, vm_uuid: &str) -> Result<Option<u64>, ApiError> {
    if target.uuid == d.host_uuid() {
        return match d.driver().stop(vm_uuid, StopMode::Clean).await {
            Ok(seq) => Ok(Some(seq)),
            Err(DriverError::NotRunning(_)) => Ok(None),
            Err(e) => Err(ApiError::internal(e.to_string())),
        };
    }
    let result = d
        .peers()
        .call(
            &auth(d),
            &target.address,
            d.config().port,
            "host.local_vm_stop",
            vec![json!(vm_uuid)],
            PEER_TIMEOUT,
        )
        .await;
    match result {
        Ok(v) => Ok(v.as_i64().and_then(|s| u64::try_from(s).ok())),
        Err(e) if e.is(codes::VM_NOT_RESIDENT_HERE) => Ok(None),
        Err(e) => Err(peer_error(target, e)),
    }
}

/// The directory through which `host_ref` reaches `sr_ref`, if it has an
/// attached PBD for it.
pub fn sr_path(txn: &Txn, host_ref: &str, sr_ref: &str) -> Option<PathBuf> {
    let sr = txn.get::<SrRecord>(sr_ref)?;
    sr.pbds
        .iter()
        .filter_map(|p| txn.get::<PbdRecord>(p))
        .find(|p| p.host == host_ref && p.currently_attached)
        .and_then(|p| p.device_config.get("location").map(PathBuf::from))
}

/// The disk files of `vm` as `host_ref` reaches them, or the first SR it
/// cannot reach (`VM_REQUIRES_SR [vm, sr]`).
pub fn disk_paths(txn: &Txn, vm_ref: &str, vm: &VmRecord, host_ref: &str) -> Result<Vec<PathBuf>, ApiError> {
    let mut paths = Vec::new();
    for vbd in vm.vbds.iter().filter_map(|r| txn.get::<VbdRecord>(r)) {
        let Some(vdi) = txn.get::<VdiRecord>(&vbd.vdi) else {
            continue;
        };
        let dir = sr_path(txn, host_ref, &vdi.sr)
            .ok_or_else(|| ApiError::new(codes::VM_REQUIRES_SR, vec![vm_ref.to_string(), vdi.sr.clone()]))?;
        paths.push(dir.join(&vdi.location));
    }
    Ok(paths)
}
