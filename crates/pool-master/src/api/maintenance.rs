//! Working on a host without HA firing: disable, evacuate, shutdown,
//! reboot, enable.
//!
//! - `host.disable`: no new VMs go there. Refused when it would lose the
//!   failover plan (HA on, no overcommit).
//! - `host.evacuate`: every running VM live-migrates off the host. All the
//!   destinations are chosen first (protected VMs where the planner keeps
//!   a plan for the pool, others where they fit) and nothing moves unless
//!   every VM has one.
//! - `host.shutdown` / `host.reboot`: the host must be disabled. Its
//!   remaining VMs are shut down; with HA on, it must reach the statefile
//!   (else `HA_LOST_STATEFILE`), it leaves the liveset cleanly (excluded,
//!   fencing disarmed) and is recorded as shutting down, so leaving the
//!   liveset raises no `HA_HOST_FAILED` and restarts nothing. It comes back
//!   disabled and enables itself once its PBDs are plugged.
//! - `host.enable`.

use std::sync::Arc;
use std::time::Duration;

use ha_planner::Placement;
use serde_json::{json, Value};
use xapi_proto::records::{HostRecord, PowerState, VmRecord};
use xapi_proto::{codes, ApiError};

use super::Args;
use crate::daemon::Daemon;
use crate::ops::host::{DISABLED_UNTIL_REBOOT_KEY, LEAVING_KEY};
use crate::{memory, overcommit, planning};
use pool_db::model::Txn;

/// The methods served here.
pub const METHODS: &[&str] = &[
    "host.disable",
    "host.enable",
    "host.evacuate",
    "host.shutdown",
    "host.reboot",
    "host.prepare_poweroff",
];

pub async fn dispatch(d: &Arc<Daemon>, verb: &str, args: &Args) -> Option<Result<Value, ApiError>> {
    Some(match verb {
        "disable" => disable(d, args).await,
        "enable" => enable(d, args).await,
        "evacuate" => evacuate(d, args).await,
        "shutdown" => power(d, args, false).await,
        "reboot" => power(d, args, true).await,
        "prepare_poweroff" => prepare_poweroff(d, args).await,
        _ => return None,
    })
}

fn host_arg(d: &Daemon, args: &Args) -> Result<(String, HostRecord), ApiError> {
    let m = d.model();
    args.reference::<HostRecord>(1, &Txn::new(&m))
}

/// `host.disable(session, host)`.
async fn disable(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    args.count(2, 3)?;
    let auto_enable = args.bool_or(2, "auto_enable", true)?;
    let (host_ref, _) = host_arg(d, args)?;
    d.write(|txn| disable_host(txn, &host_ref, auto_enable)).await?;
    Ok(json!(""))
}

/// Disable `host_ref` unless that loses the failover plan. With
/// `auto_enable` (XAPI's default) the host enables itself again when it
/// next starts, after a reboot or a power cycle; without, it stays
/// disabled until `host.enable`.
fn disable_host(txn: &mut pool_db::model::Txn, host_ref: &str, auto_enable: bool) -> Result<(), ApiError> {
    let host = txn
        .get::<HostRecord>(host_ref)
        .ok_or_else(|| ApiError::handle_invalid("host", host_ref))?;
    if host.enabled {
        overcommit::check(
            txn.base(),
            &overcommit::Change {
                disabling: vec![host_ref],
                ..Default::default()
            },
        )?;
    }
    txn.update::<HostRecord>(host_ref, |h| {
        h.enabled = false;
        if auto_enable {
            h.other_config.insert(DISABLED_UNTIL_REBOOT_KEY.into(), "true".into());
        } else {
            h.other_config.remove(DISABLED_UNTIL_REBOOT_KEY);
        }
    });
    Ok(())
}

/// `host.enable(session, host)`.
async fn enable(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    args.exactly(2)?;
    let (host_ref, _) = host_arg(d, args)?;
    d.write(|txn| {
        txn.update::<HostRecord>(&host_ref, |h| {
            h.enabled = true;
            h.other_config.remove(DISABLED_UNTIL_REBOOT_KEY);
        });
        Ok(())
    })
    .await?;
    d.ha().restarts.kick();
    Ok(json!(""))
}

/// Where each running VM of `host_ref` goes, or why one cannot go.
fn evacuation_plan(m: &pool_db::model::Model, host_ref: &str) -> Result<Vec<(String, String)>, ApiError> {
    let txn = Txn::new(m);
    let host_uuid = m
        .get::<HostRecord>(host_ref)
        .map(|h| h.uuid.clone())
        .unwrap_or_default();
    let leaving: Vec<(String, VmRecord)> =
        m.vm.iter()
            .filter(|(_, v)| v.resident_on == host_ref && v.power_state == PowerState::Running)
            .map(|(r, v)| (r.clone(), v.clone()))
            .collect();
    // Protected VMs go where the planner keeps the pool's plan.
    let mut planned = std::collections::BTreeMap::new();
    if let Some((_, pool)) = m.pool() {
        let planner = planning::planner(pool)?;
        let mut described = planning::describe(m, |_, v| planning::is_protected(v));
        for h in described.hosts.iter_mut().filter(|h| h.uuid == host_uuid) {
            h.live = false;
        }
        let keep = u32::try_from(pool.ha_plan_exists_for.max(0)).unwrap_or(0);
        if let Ok(plan) = planner.restart_plan(&described, &[], keep) {
            for (vm, p) in plan.placements {
                if let Placement::Host(h) = p {
                    if let Some(r) = m.host.ref_of_uuid(&h) {
                        planned.insert(vm, r.to_string());
                    }
                }
            }
        }
    }
    // Every other VM where it fits best, counting the ones placed before it.
    let mut free: std::collections::BTreeMap<String, i64> = m
        .host
        .iter()
        .filter(|(r, h)| *r != host_ref && h.enabled && h.live)
        .map(|(r, h)| (r.clone(), memory::host_free(&txn, r, h)))
        .collect();
    let mut moves = Vec::new();
    let mut order: Vec<&(String, VmRecord)> = leaving.iter().collect();
    order.sort_by_key(|(r, v)| {
        (
            !planned.contains_key(&v.uuid),
            std::cmp::Reverse(memory::footprint(v)),
            r.clone(),
        )
    });
    for (vm_ref, vm) in order {
        let need = memory::footprint(vm);
        let fits = |h: &String| {
            let host = m.get::<HostRecord>(h);
            host.is_some_and(|host| crate::hostops::disk_paths(&txn, vm_ref, vm, h).is_ok() && host.enabled)
        };
        let dest = planned
            .get(&vm.uuid)
            .filter(|h| free.get(*h).is_some_and(|f| *f >= need) && fits(h))
            .cloned()
            .or_else(|| {
                free.iter()
                    .filter(|(h, f)| **f >= need && fits(h))
                    .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
                    .map(|(h, _)| h.clone())
            })
            .ok_or_else(|| {
                let best = free.values().copied().max().unwrap_or(0);
                ApiError::new(
                    codes::HOST_NOT_ENOUGH_FREE_MEMORY,
                    vec![need.to_string(), best.max(0).to_string()],
                )
            })?;
        if let Some(f) = free.get_mut(&dest) {
            *f -= need;
        }
        moves.push((vm_ref.clone(), dest));
    }
    Ok(moves)
}

/// `host.evacuate(session, host)`.
async fn evacuate(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    args.count(2, 4)?;
    let (host_ref, host) = host_arg(d, args)?;
    let moves = {
        let m = d.model();
        overcommit::check(
            &m,
            &overcommit::Change {
                disabling: vec![&host_ref],
                ..Default::default()
            },
        )?;
        evacuation_plan(&m, &host_ref)?
    };
    // As XAPI's: the host is disabled first, so nothing lands on it again
    // (it enables itself when it next starts, as after `host-disable`).
    if host.enabled {
        d.write(|txn| disable_host(txn, &host_ref, true)).await?;
    }
    for (vm, dest) in &moves {
        crate::ops::vm::migrate_vm(d, vm, dest, false).await?;
    }
    tracing::info!(host = %host_ref, vms = moves.len(), "host evacuated");
    Ok(json!(""))
}

/// `host.shutdown(session, host)` / `host.reboot(session, host)`.
async fn power(d: &Arc<Daemon>, args: &Args, reboot: bool) -> Result<Value, ApiError> {
    args.exactly(2)?;
    let (host_ref, host) = host_arg(d, args)?;
    if host.enabled {
        return Err(ApiError::bare(codes::HOST_NOT_DISABLED));
    }
    let ha_on = d.ha_enabled();
    // VMs still there are shut down (and stay down). A protected one says
    // so in a pool message: HA does not restart a VM of a host taken down
    // on purpose, and the admin may not have meant that.
    let remaining: Vec<(String, VmRecord)> = d
        .model()
        .vm
        .iter()
        .filter(|(_, v)| v.resident_on == host_ref && v.power_state == PowerState::Running)
        .map(|(r, v)| (r.clone(), v.clone()))
        .collect();
    for (vm, record) in &remaining {
        crate::ops::vm::shutdown_vm(d, vm).await?;
        if ha_on && record.ha_restart_priority == "restart" {
            let body = format!(
                "VM {} is protected by HA and was shut down because its host {} {} on request. It stays down until it is started again: evacuate a host before a planned {} to keep its VMs running.",
                record.name_label,
                host.name_label,
                if reboot { "reboots" } else { "shuts down" },
                if reboot { "reboot" } else { "shutdown" },
            );
            crate::failover::monitor::message(d, "VM_SHUTDOWN", 5, "VM", &record.uuid, body).await?;
        }
    }
    d.write(|txn| {
        txn.update::<HostRecord>(&host_ref, |h| {
            h.other_config.insert(LEAVING_KEY.into(), "true".into());
            h.other_config.insert(DISABLED_UNTIL_REBOOT_KEY.into(), "true".into());
        });
        Ok(())
    })
    .await?;
    let params = vec![json!(reboot)];
    let prepared = if host.uuid == d.host_uuid() {
        prepare(d, reboot).await
    } else {
        let auth = crate::peers::PeerAuth {
            host_uuid: d.host_uuid().to_string(),
            secret: d.pool_secret(),
        };
        d.peers()
            .call(
                &auth,
                &host.address,
                d.config().port,
                "host.prepare_poweroff",
                params,
                crate::peers::PEER_TIMEOUT,
            )
            .await
            .map(|_| ())
            .map_err(|e| match e {
                xapi_client::ClientError::Api(a) => a,
                other => ApiError::internal(other.to_string()),
            })
    };
    if let Err(e) = prepared {
        d.write(|txn| {
            txn.update::<HostRecord>(&host_ref, |h| {
                h.other_config.remove(LEAVING_KEY);
            });
            Ok(())
        })
        .await?;
        return Err(e);
    }
    if ha_on || host.uuid != d.host_uuid() {
        d.write(|txn| {
            txn.update::<HostRecord>(&host_ref, |h| h.live = false);
            Ok(())
        })
        .await?;
    }
    tracing::info!(host = %host.uuid, reboot, "host goes down on request");
    Ok(json!(""))
}

/// `host.prepare_poweroff(session, reboot)`: on the host itself.
async fn prepare_poweroff(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    args.exactly(2)?;
    let reboot = args.bool_or(1, "reboot", false)?;
    prepare(d, reboot).await?;
    Ok(json!(""))
}

/// Leave the liveset cleanly (when armed), then stop this process shortly.
async fn prepare(d: &Arc<Daemon>, reboot: bool) -> Result<(), ApiError> {
    if d.ha().armed() {
        let view = d.ha().view();
        if view.online && !view.sf_access {
            return Err(ApiError::bare(codes::HA_LOST_STATEFILE));
        }
        crate::failover::leave(d).await;
    }
    if !reboot {
        d.io().power_off();
    }
    tokio::spawn(async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        tracing::info!("stopping for a requested shutdown or reboot");
        std::process::exit(0);
    });
    Ok(())
}
