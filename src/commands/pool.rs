//! Pool and storage commands: pool-join, pool-eject,
//! pool-designate-new-master, pool-secret-rotate, sr-create.

use std::io::IsTerminal;

use serde_json::{json, Value};

use super::{make_spec, Ctx, Handler, Spec};
use crate::error::XeError;
use crate::fields::scalar_text;

pub fn commands() -> Vec<Spec> {
    vec![
        make_spec(
            "pool-join",
            &["master-address", "master-username", "master-password"],
            &["force"],
            "Instruct host to join an existing pool.",
            Handler::Run(join),
        ),
        make_spec(
            "pool-eject",
            &["host-uuid"],
            &[],
            "Instruct host to leave an existing pool.",
            Handler::Run(eject),
        ),
        make_spec(
            "pool-designate-new-master",
            &["host-uuid"],
            &[],
            "Request an orderly handover of the role of master to another host.",
            Handler::Run(designate_new_master),
        ),
        make_spec(
            "pool-secret-rotate",
            &[],
            &[],
            "Change the pool secret",
            Handler::Run(rotate_secret),
        ),
        make_spec(
            "sr-create",
            &["name-label", "type"],
            &["name-description", "host-uuid", "device-config:", "shared", "physical-size", "content-type", "sm-config:"],
            "Create an SR, also a PBD. The device-config parameters can be specified by device-config:foo=baa, for example.",
            Handler::Run(sr_create),
        ),
    ]
}

fn join(ctx: &mut Ctx) -> Result<(), XeError> {
    let address = ctx.param("master-address").unwrap_or_default().to_string();
    let user = ctx.param("master-username").unwrap_or_default().to_string();
    let password = ctx.param("master-password").unwrap_or_default().to_string();
    ctx.records
        .conn
        .call("pool.join", vec![json!(address), json!(user), json!(password)])?;
    Ok(())
}

/// `pool-eject host-uuid=...`: XAPI's warnings (the host's local SRs are
/// reinitialised; the disks on them named) and a `yes` on a terminal,
/// `--force` in scripts.
fn eject(ctx: &mut Ctx) -> Result<(), XeError> {
    let uuid = ctx.param("host-uuid").unwrap_or_default().to_string();
    let host = ctx.records.conn.call("host.get_by_uuid", vec![json!(uuid)])?;
    if !ctx.flag("force")? {
        if !std::io::stdin().is_terminal() {
            return Err(XeError::cli(super::vm::NO_FORCE));
        }
        let mut warning = "WARNING: Ejecting a host from the pool will reinitialise that host's local SRs.\n\
                           WARNING: Any data contained with the local SRs will be lost."
            .to_string();
        let disks = local_disks(ctx, &host).unwrap_or_default();
        if !disks.is_empty() {
            warning += "\nThe following VDI objects will be destroyed:";
            for d in disks {
                warning += &format!("\n{d}");
            }
        }
        super::vm::ask(&warning)?;
    }
    ctx.records.conn.call("pool.eject", vec![host])?;
    ctx.out
        .list(vec!["Specified host is now the master of a new pool of its own.".into()]);
    Ok(())
}

/// `VDI: uuid (name)` for each disk on an SR only `host` has, as XAPI's xe
/// lists them (best effort).
fn local_disks(ctx: &mut Ctx, host: &Value) -> Result<Vec<String>, XeError> {
    let conn = &mut ctx.records.conn;
    let mut out = Vec::new();
    let pbds = conn.call("host.get_PBDs", vec![host.clone()])?;
    for pbd in pbds.as_array().into_iter().flatten() {
        let sr = conn.call("PBD.get_SR", vec![pbd.clone()])?;
        let others = conn.call("SR.get_PBDs", vec![sr.clone()])?;
        if others.as_array().is_some_and(|o| o.len() > 1) {
            continue;
        }
        for vdi in conn.call("SR.get_VDIs", vec![sr])?.as_array().into_iter().flatten() {
            let uuid = conn.call("VDI.get_uuid", vec![vdi.clone()])?;
            let name = conn.call("VDI.get_name_label", vec![vdi.clone()])?;
            out.push(format!("VDI: {} ({})", scalar_text(&uuid), scalar_text(&name)));
        }
    }
    Ok(out)
}

/// `pool-designate-new-master host-uuid=...`: prints nothing, as XAPI's.
fn designate_new_master(ctx: &mut Ctx) -> Result<(), XeError> {
    let uuid = ctx.param("host-uuid").unwrap_or_default().to_string();
    let host = ctx.records.conn.call("host.get_by_uuid", vec![json!(uuid)])?;
    ctx.records.conn.call("pool.designate_new_master", vec![host])?;
    Ok(())
}

/// `pool-secret-rotate`: `pool.rotate_secret`, which prints nothing.
fn rotate_secret(ctx: &mut Ctx) -> Result<(), XeError> {
    ctx.records.conn.call("pool.rotate_secret", vec![])?;
    Ok(())
}

fn sr_create(ctx: &mut Ctx) -> Result<(), XeError> {
    let host = match ctx.param("host-uuid") {
        Some(u) => ctx.records.conn.call("host.get_by_uuid", vec![json!(u)])?,
        None => {
            let pools = ctx.records.all("pool")?;
            pools
                .values()
                .next()
                .and_then(|p| p.get("master"))
                .cloned()
                .unwrap_or_default()
        }
    };
    let shared = ctx.flag("shared")?;
    let size = match ctx.param("physical-size") {
        None => 0,
        Some(t) => t
            .parse::<i64>()
            .map_err(|_| XeError::cli("Failed to parse parameter 'physical-size': expecting an integer"))?,
    };
    let map = |prefix: &str| -> std::collections::BTreeMap<String, String> {
        ctx.params.map_entries(prefix).into_iter().collect()
    };
    let (device_config, sm_config) = (map("device-config"), map("sm-config"));
    let sr = ctx.records.conn.call(
        "SR.create",
        vec![
            host,
            json!(device_config),
            json!(size),
            json!(ctx.param("name-label").unwrap_or_default()),
            json!(ctx.param("name-description").unwrap_or_default()),
            json!(ctx.param("type").unwrap_or_default()),
            json!(ctx.param("content-type").unwrap_or("user")),
            json!(shared),
            json!(sm_config),
        ],
    )?;
    let uuid = ctx.records.conn.call("SR.get_uuid", vec![sr])?;
    ctx.out.list(vec![scalar_text(&uuid)]);
    Ok(())
}
