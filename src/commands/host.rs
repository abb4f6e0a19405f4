//! Host maintenance: host-disable, host-enable, host-evacuate,
//! host-shutdown, host-reboot.

use serde_json::json;

use super::{make_spec, make_standard, make_with_selectors, Ctx, Handler, Selectors, Spec};
use crate::error::XeError;
use crate::fields::{scalar_text, HOST};

pub fn commands() -> Vec<Spec> {
    let host_op = |name: &str, optn: &[&str], help: &str, f: fn(&mut Ctx) -> Result<(), XeError>| {
        make_standard(make_with_selectors(
            make_spec(name, &[], optn, help, Handler::Run(f)),
            Selectors::Host,
        ))
    };
    vec![
        host_op(
            "host-disable",
            &["auto-enable"],
            "Disable the XE host. Setting auto-enable=false will keep the host persistently disabled until manually re-enabled with Host.enable.",
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
    ]
}

/// Run `method(host)` on every selected host; with several, failures are
/// reported per host and the command fails at the end.
fn each_host(ctx: &mut Ctx, method: &str) -> Result<(), XeError> {
    let consumed = ctx.consumed();
    let hosts = ctx.records.select_for_op(&HOST, ctx.params, &consumed)?;
    if let [(r, _)] = hosts.as_slice() {
        ctx.records.conn.call(method, vec![json!(r)])?;
        return Ok(());
    }
    let mut failed = false;
    for (r, record) in &hosts {
        if let Err(e) = ctx.records.conn.call(method, vec![json!(r)]) {
            failed = true;
            let uuid = record.get("uuid").map(scalar_text).unwrap_or_default();
            let records = &mut ctx.records;
            let text = e.render(&mut |r| records.describe(r));
            ctx.out.list(vec![format!("operation failed on {uuid}: {text}")]);
        }
    }
    if failed {
        return Err(XeError::Plain(String::new()));
    }
    Ok(())
}

fn disable(ctx: &mut Ctx) -> Result<(), XeError> {
    if let Some(v) = ctx.param("auto-enable") {
        crate::params::parse_bool("auto-enable", v).map_err(XeError::Cli)?;
    }
    each_host(ctx, "host.disable")
}

fn enable(ctx: &mut Ctx) -> Result<(), XeError> {
    each_host(ctx, "host.enable")
}

fn evacuate(ctx: &mut Ctx) -> Result<(), XeError> {
    each_host(ctx, "host.evacuate")
}

fn shutdown(ctx: &mut Ctx) -> Result<(), XeError> {
    each_host(ctx, "host.shutdown")
}

fn reboot(ctx: &mut Ctx) -> Result<(), XeError> {
    each_host(ctx, "host.reboot")
}
