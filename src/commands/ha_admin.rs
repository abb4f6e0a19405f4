//! Turning HA on and off, and the emergency commands that act on the host
//! xe talks to (never forwarded to the master).

use serde_json::json;

use super::{make_local, make_spec, Ctx, Handler, Spec};
use crate::error::XeError;

/// xe's answer when a dangerous command lacks `--force`.
const NO_FORCE: &str =
    "This operation is dangerous and may cause data loss. This operation must be forced (use --force).";

pub fn commands() -> Vec<Spec> {
    vec![
        make_spec(
            "pool-ha-enable",
            &[],
            &["heartbeat-sr-uuids", "ha-config:"],
            "Enable HA on this Pool.",
            Handler::Run(enable),
        ),
        make_spec(
            "pool-ha-disable",
            &[],
            &[],
            "Disable HA on this Pool.",
            Handler::Run(disable),
        ),
        make_local(make_spec(
            "host-emergency-ha-disable",
            &[],
            &["force", "soft"],
            "Disable HA on the local host. Only to be used to recover a pool with a broken HA setup.",
            Handler::Run(emergency_disable),
        )),
        make_local(make_spec(
            "pool-emergency-transition-to-master",
            &[],
            &["force"],
            "Instruct slave to become pool master. The operation will be ignored if this host is already master; the optional parameter '--force' will force the operation.",
            Handler::Run(transition_to_master),
        )),
        make_local(make_spec(
            "pool-emergency-reset-master",
            &["master-address"],
            &[],
            "Instruct slave to reset master address.",
            Handler::Run(reset_master),
        )),
    ]
}

fn enable(ctx: &mut Ctx) -> Result<(), XeError> {
    let configuration: std::collections::BTreeMap<String, String> =
        ctx.params.map_entries("ha-config").into_iter().collect();
    let uuids: Vec<String> = ctx
        .param("heartbeat-sr-uuids")
        .map(|t| t.split(',').map(str::to_string).collect())
        .unwrap_or_default();
    let mut srs = Vec::new();
    for uuid in uuids {
        srs.push(ctx.records.conn.call("SR.get_by_uuid", vec![json!(uuid)])?);
    }
    ctx.with_progress(
        "Enabling HA: arming every host and forming the liveset".to_string(),
        |_| None,
        |ctx| {
            ctx.records
                .conn
                .call("pool.enable_ha", vec![json!(srs), json!(configuration)])
        },
    )?;
    Ok(())
}

fn disable(ctx: &mut Ctx) -> Result<(), XeError> {
    ctx.records.conn.call("pool.disable_ha", vec![])?;
    Ok(())
}

fn emergency_disable(ctx: &mut Ctx) -> Result<(), XeError> {
    let soft = ctx.flag("soft")?;
    if !ctx.flag("force")? {
        return Err(XeError::Plain(NO_FORCE.into()));
    }
    ctx.records.conn.call("host.emergency_ha_disable", vec![json!(soft)])?;
    Ok(())
}

fn transition_to_master(ctx: &mut Ctx) -> Result<(), XeError> {
    ctx.records.conn.call("pool.emergency_transition_to_master", vec![])?;
    ctx.out
        .list(vec!["Host agent will restart and transition to master.".to_string()]);
    Ok(())
}

fn reset_master(ctx: &mut Ctx) -> Result<(), XeError> {
    let address = ctx.param("master-address").unwrap_or_default().to_string();
    ctx.records
        .conn
        .call("pool.emergency_reset_master", vec![json!(address)])?;
    Ok(())
}
