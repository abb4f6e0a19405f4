//! Pool and storage commands: pool-join, pool-secret-rotate, sr-create.

use serde_json::json;

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
