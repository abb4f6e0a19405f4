//! Host maintenance: host-disable, host-enable, host-evacuate,
//! host-shutdown, host-reboot, host-declare-dead, host-forget.

use std::io::IsTerminal;

use serde_json::json;

use super::{make_spec, make_with_selectors, Ctx, Handler, Selectors, Spec};
use crate::error::XeError;
use crate::fields::{scalar_text, HOST};

pub fn commands() -> Vec<Spec> {
    let host_op = |name: &str, optn: &[&str], help: &str, f: fn(&mut Ctx) -> Result<(), XeError>| {
        make_with_selectors(make_spec(name, &[], optn, help, Handler::Run(f)), Selectors::Host)
    };
    vec![
        host_op(
            "host-disable",
            &["auto-enable", "lower-ntol"],
            "Disable the XE host. Setting auto-enable=false will keep the host persistently disabled until manually re-enabled with Host.enable. With HA on, when disabling would break the failover plan and ha-host-failures-to-tolerate is above 1, xe offers to lower it by one until the host is back; lower-ntol=true accepts without asking.",
            disable,
        ),
        host_op("host-enable", &[], "Enable the XE host.", enable),
        host_op(
            "host-evacuate",
            &["network-uuid", "batch-size"],
            "Migrate all VMs off a host.",
            evacuate,
        ),
        host_op("host-shutdown", &[], "Shutdown the XE host.", shutdown),
        host_op("host-reboot", &[], "Reboot the XE host.", reboot),
        make_spec(
            "host-forget",
            &["uuid"],
            &[],
            "Forget about the host without contacting it explicitly. WARNING: this call is useful if the host to 'forget' is dead; however, if the host is live and part of the pool, you should consider using pool-eject instead.",
            Handler::Run(forget),
        ),
        make_spec(
            "host-declare-dead",
            &["uuid"],
            &[],
            "Declare that the the host is dead without contacting it explicitly. WARNING: This call is dangerous and can cause data loss if the host is not actually dead",
            Handler::Run(declare_dead),
        ),
    ]
}

/// Call `method(host)` on every selected host.
fn each_host(ctx: &mut Ctx, method: &str) -> Result<(), XeError> {
    super::each_selected(ctx, &HOST, |ctx, host, _| {
        ctx.records.conn.call(method, vec![json!(host)]).map(|_| ())
    })
}

/// The pool `other_config` key the master reads to restore the number of
/// host failures to tolerate once the host is back (`N:<host-uuid>`).
const RESTORE_NTOL_KEY: &str = "pool-ha-restore-ntol";

/// `host-disable`. When disabling would break the failover plan and the
/// pool tolerates more than one failure, offer what XenCenter offers: lower
/// ha-host-failures-to-tolerate by one until the host is back (asked on a
/// terminal; `lower-ntol=true` answers yes for scripts).
fn disable(ctx: &mut Ctx) -> Result<(), XeError> {
    let auto_enable = match ctx.param("auto-enable") {
        Some(v) => crate::params::parse_bool("auto-enable", v).map_err(XeError::Cli)?,
        None => true,
    };
    let lower = ctx.flag("lower-ntol")?;
    let consumed = ctx.consumed();
    let hosts = ctx.records.select_for_op(&HOST, ctx.params, &consumed)?;
    let [(host, record)] = hosts.as_slice() else {
        return super::each_selected(ctx, &HOST, |ctx, host, _| {
            ctx.records
                .conn
                .call("host.disable", vec![json!(host), json!(auto_enable)])
                .map(|_| ())
        });
    };
    let err = match ctx
        .records
        .conn
        .call("host.disable", vec![json!(host), json!(auto_enable)])
    {
        Ok(_) => return Ok(()),
        Err(XeError::Api(e)) if e.code == xapi_proto::codes::HA_OPERATION_WOULD_BREAK_FAILOVER_PLAN => XeError::Api(e),
        Err(e) => return Err(e),
    };
    let pools = ctx.records.all("pool")?;
    let Some((pool, p)) = pools.iter().next().map(|(r, p)| (r.clone(), p.clone())) else {
        return Err(err);
    };
    let n = p
        .get("ha_host_failures_to_tolerate")
        .and_then(serde_json::Value::as_i64)
        .unwrap_or(0);
    if n <= 1 {
        return Err(err);
    }
    let name = record.get("name_label").map(scalar_text).unwrap_or_default();
    if !lower {
        if !std::io::stdin().is_terminal() {
            return Err(err);
        }
        super::vm::ask(&format!(
            "Disabling {name} would break the failover plan for {n} host failures. Lower ha-host-failures-to-tolerate to {} until {name} is back?",
            n - 1
        ))?;
    }
    ctx.records
        .conn
        .call("pool.set_ha_host_failures_to_tolerate", vec![json!(pool), json!(n - 1)])?;
    ctx.records
        .conn
        .call("host.disable", vec![json!(host), json!(auto_enable)])?;
    // The note that restores the number once the host is back goes in only
    // now: written while the host was still enabled, the master (which
    // looks at every commit) took the host for back and restored it at once.
    let uuid = record.get("uuid").map(scalar_text).unwrap_or_default();
    let _ = ctx.records.conn.call(
        "pool.remove_from_other_config",
        vec![json!(pool), json!(RESTORE_NTOL_KEY)],
    );
    ctx.records.conn.call(
        "pool.add_to_other_config",
        vec![json!(pool), json!(RESTORE_NTOL_KEY), json!(format!("{n}:{uuid}"))],
    )?;
    eprintln!("ha-host-failures-to-tolerate is {} until {name} is back.", n - 1);
    Ok(())
}

fn enable(ctx: &mut Ctx) -> Result<(), XeError> {
    each_host(ctx, "host.enable")
}

/// The running VMs resident on `host`, through `conn`.
fn resident(conn: &mut crate::conn::Conn, host: &str) -> Option<u64> {
    let vms = conn.call("VM.get_all_records", vec![]).ok()?;
    let count = vms
        .as_object()?
        .values()
        .filter(|v| v.get("resident_on").and_then(serde_json::Value::as_str) == Some(host))
        .filter(|v| v.get("power_state").and_then(serde_json::Value::as_str) == Some("Running"))
        .count();
    Some(count as u64)
}

/// `host-evacuate`: on a terminal, a bar of the VMs moved so far.
fn evacuate(ctx: &mut Ctx) -> Result<(), XeError> {
    super::each_selected(ctx, &HOST, |ctx, host, record| {
        let name = record.get("name_label").map(scalar_text).unwrap_or_default();
        let total = resident(ctx.records.conn, host).unwrap_or(0);
        let watched = host.to_string();
        ctx.with_progress(
            format!("Evacuating {name}: VMs moved"),
            move |conn| resident(conn, &watched).map(|left| (total.saturating_sub(left), total)),
            |ctx| ctx.records.conn.call("host.evacuate", vec![json!(host)]).map(|_| ()),
        )
    })
}

fn shutdown(ctx: &mut Ctx) -> Result<(), XeError> {
    power(ctx, "host.shutdown", "Shutting it down")
}

fn reboot(ctx: &mut Ctx) -> Result<(), XeError> {
    power(ctx, "host.reboot", "Rebooting it")
}

/// `host-shutdown` and `host-reboot`. The host's running VMs are shut down
/// and stay down; with HA on, a terminal is asked first when some of them
/// are protected (scripts, and `--force`, go on as with XAPI's xe).
fn power(ctx: &mut Ctx, method: &str, doing: &str) -> Result<(), XeError> {
    let ask = !ctx.flag("force")? && std::io::stdin().is_terminal();
    let ha_on = ask
        && ctx
            .records
            .all("pool")?
            .values()
            .any(|p| p.get("ha_enabled").and_then(serde_json::Value::as_bool) == Some(true));
    let vms = if ha_on {
        ctx.records.all("VM")?.clone()
    } else {
        Default::default()
    };
    super::each_selected(ctx, &HOST, |ctx, host, record| {
        let protected: Vec<String> = vms
            .values()
            .filter(|v| v.get("resident_on").and_then(serde_json::Value::as_str) == Some(host))
            .filter(|v| v.get("power_state").and_then(serde_json::Value::as_str) == Some("Running"))
            .filter(|v| v.get("ha_restart_priority").and_then(serde_json::Value::as_str) == Some("restart"))
            .map(|v| v.get("name_label").map(scalar_text).unwrap_or_default())
            .collect();
        if !protected.is_empty() {
            let name = record.get("name_label").map(scalar_text).unwrap_or_default();
            super::vm::ask(&format!(
                "Host {name} runs VMs protected by HA: {}. {doing} shuts them down, and HA does not restart them: evacuate the host first (xe host-evacuate) to keep them running.",
                protected.join(", ")
            ))?;
        }
        ctx.records.conn.call(method, vec![json!(host)]).map(|_| ())
    })
}

/// `host-forget uuid=...`: xe's warnings and a `yes` on a terminal,
/// `--force` in scripts.
fn forget(ctx: &mut Ctx) -> Result<(), XeError> {
    careful(
        ctx,
        "host.destroy",
        "WARNING: A host should only be forgotten if it is physically unrecoverable;\n\
         WARNING: if possible, Hosts should be 'ejected' from the Pool instead.\n\
         WARNING: Once a host has been forgotten it will have to be re-installed.\n\
         WARNING: This operation is irreversible.",
    )
}

/// A host operation XAPI's xe guards with warnings: asked on a terminal,
/// `--force` in scripts.
fn careful(ctx: &mut Ctx, method: &str, warnings: &str) -> Result<(), XeError> {
    let uuid = ctx.param("uuid").unwrap_or_default().to_string();
    let host = ctx.records.conn.call("host.get_by_uuid", vec![json!(uuid)])?;
    if !ctx.flag("force")? {
        if !std::io::stdin().is_terminal() {
            return Err(XeError::cli(super::vm::NO_FORCE));
        }
        super::vm::ask(warnings)?;
    }
    ctx.records.conn.call(method, vec![host]).map(|_| ())
}

/// `host-declare-dead uuid=...`: xe's warnings and a `yes` on a terminal,
/// `--force` in scripts (not listed in its parameters, as in XAPI's xe).
fn declare_dead(ctx: &mut Ctx) -> Result<(), XeError> {
    careful(
        ctx,
        "host.declare_dead",
        "WARNING: A host should only be declared dead if it is verified offline.\n\
         WARNING: Performing this operation if the host is still online and has any\n\
         WARNING: running VMs may lead to possible data loss and/or corruption.",
    )
}
