//! `SR.*`, `VDI.*`, `VBD.*`: storage repositories, disks and attachments.
//!
//! The only SR type is `dir`: a directory that holds the VDIs as files.
//! `device-config:location` names it; a shared `dir` SR must be reachable at
//! that path from every host (on one machine, a shared folder; across
//! machines, an NFS mount at the same path). A shared SR gets a PBD on every
//! host, including hosts that join later.

use std::path::Path;
use std::sync::Arc;

use serde_json::{json, Value};
use xapi_proto::records::{
    HostRecord, PbdRecord, PoolRecord, SrRecord, StringMap, VbdRecord, VdiRecord, VmRecord, NULL_REF,
};
use xapi_proto::{codes, ApiError};

use super::Args;
use crate::daemon::Daemon;
use pool_db::model::{new_ref, new_uuid};

/// The SR types this build can create.
pub const SR_TYPES: &[&str] = &["dir"];

/// The methods served here.
pub const METHODS: &[&str] = &[
    "SR.create",
    "SR.destroy",
    "VDI.create",
    "VDI.destroy",
    "VBD.create",
    "VBD.destroy",
];

pub async fn dispatch(d: &Arc<Daemon>, class: &str, verb: &str, args: &Args) -> Option<Result<Value, ApiError>> {
    Some(match (class, verb) {
        ("SR", "create") => sr_create(d, args).await,
        ("SR", "destroy") => sr_destroy(d, args).await,
        ("VDI", "create") => vdi_create(d, args).await,
        ("VDI", "destroy") => vdi_destroy(d, args).await,
        ("VBD", "create") => vbd_create(d, args).await,
        ("VBD", "destroy") => vbd_destroy(d, args).await,
        _ => return None,
    })
}

fn backend_failure(detail: String) -> ApiError {
    ApiError::new(codes::SR_BACKEND_FAILURE, vec!["1".into(), String::new(), detail])
}

/// `SR.create(session, host, device_config, physical_size, name_label,
/// name_description, type, content_type, shared, sm_config)`.
async fn sr_create(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    args.count(9, 11)?;
    let device_config = args.string_map(2, "device_config")?;
    let physical_size = args.int(3, "physical_size")?;
    let name_label = args.str(4, "name_label")?.to_string();
    let name_description = args.str(5, "name_description")?.to_string();
    let sr_type = args.str(6, "type")?.to_string();
    let content_type = args.str(7, "content_type")?.to_string();
    let shared = args.bool_or(8, "shared", false)?;
    if args.raw(9).is_some() {
        args.string_map(9, "sm_config")?;
    }
    if !SR_TYPES.contains(&sr_type.as_str()) {
        return Err(ApiError::new(codes::SR_UNKNOWN_DRIVER, vec![sr_type]));
    }
    let location = device_config
        .get("location")
        .ok_or_else(|| backend_failure("device-config:location is required: the directory of the SR".into()))?
        .clone();
    let path = Path::new(&location);
    if !path.is_absolute() {
        return Err(backend_failure(format!(
            "device-config:location must be an absolute path, not {location}"
        )));
    }
    if !path.is_dir() {
        return Err(backend_failure(format!("{location} is not a directory")));
    }
    let sr_ref = new_ref();
    d.write(|txn| {
        let (host_ref, _) = args.reference::<HostRecord>(1, txn)?;
        let hosts: Vec<String> = if shared {
            txn.all::<HostRecord>().into_iter().map(|(r, _)| r).collect()
        } else {
            vec![host_ref]
        };
        let mut pbds = Vec::new();
        for h in hosts {
            let pbd_ref = new_ref();
            txn.put(
                &pbd_ref,
                PbdRecord {
                    uuid: new_uuid(),
                    host: h.clone(),
                    sr: sr_ref.clone(),
                    device_config: device_config.clone(),
                    currently_attached: true,
                },
            );
            txn.update::<HostRecord>(&h, |host| host.pbds.push(pbd_ref.clone()));
            pbds.push(pbd_ref);
        }
        txn.put(
            &sr_ref,
            SrRecord {
                uuid: new_uuid(),
                name_label,
                name_description,
                sr_type,
                content_type,
                shared,
                pbds,
                physical_size,
                ..Default::default()
            },
        );
        Ok(())
    })
    .await?;
    Ok(json!(sr_ref))
}

/// `SR.destroy(session, sr)`: an SR with no VDIs, with its PBDs.
async fn sr_destroy(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    args.exactly(2)?;
    d.write(|txn| {
        let (sr_ref, sr) = args.reference::<SrRecord>(1, txn)?;
        if !sr.vdis.is_empty() {
            return Err(ApiError::bare(codes::SR_NOT_EMPTY));
        }
        for pbd_ref in &sr.pbds {
            if let Some(pbd) = txn.get::<PbdRecord>(pbd_ref) {
                txn.update::<HostRecord>(&pbd.host, |h| h.pbds.retain(|p| p != pbd_ref));
            }
            txn.delete::<PbdRecord>(pbd_ref);
        }
        if let Some((pool_ref, pool)) = txn.base().pool().map(|(r, p)| (r.clone(), p.clone())) {
            if pool.default_sr == sr_ref {
                txn.put(
                    &pool_ref,
                    PoolRecord {
                        default_sr: NULL_REF.into(),
                        ..pool
                    },
                );
            }
        }
        txn.delete::<SrRecord>(&sr_ref);
        Ok(())
    })
    .await?;
    Ok(json!(""))
}

/// `VDI.create(session, record)`: `SR` and `virtual_size` are required. The
/// file is created by the first write to it.
async fn vdi_create(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    args.exactly(2)?;
    let given = args.record(1, "args", "VDI")?;
    let mut vdi: VdiRecord = serde_json::from_value(Value::Object(given)).map_err(|_| ApiError::field_type("args"))?;
    if vdi.virtual_size < 0 {
        return Err(ApiError::invalid_value("virtual_size", vdi.virtual_size.to_string()));
    }
    vdi.uuid = new_uuid();
    vdi.location = format!("{}.disk", vdi.uuid);
    vdi.vbds = Vec::new();
    let vdi_ref = new_ref();
    d.write(|txn| {
        if txn.get::<SrRecord>(&vdi.sr).is_none() {
            return Err(ApiError::handle_invalid("SR", &vdi.sr));
        }
        txn.update::<SrRecord>(&vdi.sr, |sr| sr.vdis.push(vdi_ref.clone()));
        txn.put(&vdi_ref, vdi);
        Ok(())
    })
    .await?;
    Ok(json!(vdi_ref))
}

/// `VDI.destroy(session, vdi)`: a VDI no VBD uses; its file is removed.
async fn vdi_destroy(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    args.exactly(2)?;
    let file = d
        .write(|txn| {
            let (vdi_ref, vdi) = args.reference::<VdiRecord>(1, txn)?;
            if !vdi.vbds.is_empty() {
                return Err(ApiError::new("VDI_IN_USE", vec![vdi_ref, "destroy".into()]));
            }
            if vdi.other_config.contains_key(crate::ha::VDI_PURPOSE_KEY)
                && txn.base().pool().is_some_and(|(_, p)| p.ha_enabled)
            {
                return Err(ApiError::new(codes::HA_IS_ENABLED, vec![]));
            }
            let host_ref = txn.base().pool().map(|(_, p)| p.master.clone()).unwrap_or_default();
            let file = crate::hostops::sr_path(txn, &host_ref, &vdi.sr).map(|dir| dir.join(&vdi.location));
            txn.update::<SrRecord>(&vdi.sr, |sr| sr.vdis.retain(|v| *v != vdi_ref));
            txn.delete::<VdiRecord>(&vdi_ref);
            Ok(file)
        })
        .await?;
    if let Some(file) = file {
        if let Err(e) = std::fs::remove_file(&file) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(file = %file.display(), "cannot remove the disk file: {e}");
            }
        }
    }
    Ok(json!(""))
}

/// `VBD.create(session, record)`: attach a VDI to a halted VM.
async fn vbd_create(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    args.exactly(2)?;
    let given = args.record(1, "args", "VBD")?;
    let mut vbd: VbdRecord = serde_json::from_value(Value::Object(given)).map_err(|_| ApiError::field_type("args"))?;
    vbd.uuid = new_uuid();
    vbd.currently_attached = false;
    let vbd_ref = new_ref();
    d.write(|txn| {
        let vm = txn
            .get::<VmRecord>(&vbd.vm)
            .ok_or_else(|| ApiError::handle_invalid("VM", &vbd.vm))?;
        let Some(vdi) = txn.get::<VdiRecord>(&vbd.vdi) else {
            return Err(ApiError::handle_invalid("VDI", &vbd.vdi));
        };
        // A protected VM must stay agile.
        if vm.ha_restart_priority == "restart" && crate::planning::constraints_apply(txn.base()) {
            crate::planning::assert_sr_shared(txn.base(), &vdi.sr)?;
        }
        if vm.power_state != xapi_proto::records::PowerState::Halted {
            return Err(ApiError::new(
                codes::VM_BAD_POWER_STATE,
                vec![vbd.vm.clone(), "halted".into(), vm.power_state.cli_name().into()],
            ));
        }
        txn.update::<VmRecord>(&vbd.vm, |v| v.vbds.push(vbd_ref.clone()));
        txn.update::<VdiRecord>(&vbd.vdi, |v| v.vbds.push(vbd_ref.clone()));
        txn.put(&vbd_ref, vbd);
        Ok(())
    })
    .await?;
    Ok(json!(vbd_ref))
}

/// `VBD.destroy(session, vbd)`: detach from a halted VM.
async fn vbd_destroy(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    args.exactly(2)?;
    d.write(|txn| {
        let (vbd_ref, vbd) = args.reference::<VbdRecord>(1, txn)?;
        if let Some(vm) = txn.get::<VmRecord>(&vbd.vm) {
            if vm.power_state != xapi_proto::records::PowerState::Halted {
                return Err(ApiError::new(
                    codes::VM_BAD_POWER_STATE,
                    vec![vbd.vm.clone(), "halted".into(), vm.power_state.cli_name().into()],
                ));
            }
        }
        txn.update::<VmRecord>(&vbd.vm, |v| v.vbds.retain(|r| *r != vbd_ref));
        txn.update::<VdiRecord>(&vbd.vdi, |v| v.vbds.retain(|r| *r != vbd_ref));
        txn.delete::<VbdRecord>(&vbd_ref);
        Ok(())
    })
    .await?;
    Ok(json!(""))
}

/// PBDs for a host joining the pool: one for every shared SR.
pub fn shared_pbds_for(txn: &mut pool_db::model::Txn, host_ref: &str) -> Vec<String> {
    let mut created = Vec::new();
    for (sr_ref, sr) in txn.all::<SrRecord>() {
        if !sr.shared {
            continue;
        }
        let config: StringMap = sr
            .pbds
            .iter()
            .filter_map(|p| txn.get::<PbdRecord>(p))
            .map(|p| p.device_config)
            .next()
            .unwrap_or_default();
        let pbd_ref = new_ref();
        txn.put(
            &pbd_ref,
            PbdRecord {
                uuid: new_uuid(),
                host: host_ref.to_string(),
                sr: sr_ref.clone(),
                device_config: config,
                currently_attached: true,
            },
        );
        txn.update::<SrRecord>(&sr_ref, |s| s.pbds.push(pbd_ref.clone()));
        created.push(pbd_ref);
    }
    created
}
