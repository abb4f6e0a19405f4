//! `host.get_ha_status(session)`: what HA looks like from the host asked,
//! on one screen (`xe pool-ha-status`, a pool-ha extra; issue 22).
//!
//! Any host answers, from its own HA agent and its copy of the pool
//! database: the master with the pool's view, a member with its local
//! view (its replica may lag the master's), and a host in HA emergency
//! mode too, as xhad's query answers on a host cut off from the rest. The
//! answer is one JSON object; `docs/cli.md` lists its fields and
//! `tests/cli/ha.rs` checks their types.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{json, Value};
use xapi_proto::records::{HostRecord, MessageRecord, PowerState};
use xapi_proto::ApiError;

use super::Args;
use crate::daemon::{Daemon, Role};
use crate::ha::agent::AgentStatus;
use crate::planning;

/// How many of the latest HA messages the answer carries.
const RECENT: usize = 10;

/// `host.get_ha_status(session)`.
pub async fn get(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    args.exactly(1)?;
    // The planner's work, outside the database's lock and off the async
    // workers (a search may take a while on a large pool).
    let input = restart_inputs(&d.model());
    let restart_on = match input {
        Some(input) => tokio::task::spawn_blocking(move || restart_targets(input))
            .await
            .unwrap_or_default(),
        None => BTreeMap::new(),
    };
    let view = d.ha().view();
    let seen = d.ha().seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let m = d.model();
    let pool = planning::pool_record(&m)?;
    let name_of = |uuid: &str| {
        m.host
            .iter()
            .find(|(_, h)| h.uuid == uuid)
            .map(|(_, h)| h.name_label.clone())
            .unwrap_or_else(|| uuid.to_string())
    };
    let host_by_ref = |r: &str| m.get::<HostRecord>(r);
    let me = m.host.iter().find(|(_, h)| h.uuid == d.host_uuid()).map(|(_, h)| h);
    let (role, view_kind) = match d.role() {
        Role::Master => ("master", "pool"),
        Role::Member { .. } => ("member", "local"),
    };
    let peer_seen: BTreeMap<&str, (Option<u64>, Option<u64>)> = seen
        .peers
        .iter()
        .map(|(uuid, hb, sf)| (uuid.as_str(), (*hb, *sf)))
        .collect();
    let mut by_name: Vec<&HostRecord> = m.host.iter().map(|(_, h)| h).collect();
    by_name.sort_by(|a, b| a.name_label.cmp(&b.name_label));
    let hosts: Vec<Value> = by_name
        .into_iter()
        .map(|h| {
            let (heard, slot) = peer_seen.get(h.uuid.as_str()).copied().unwrap_or((None, None));
            let this = h.uuid == d.host_uuid();
            json!({
                "uuid": h.uuid,
                "name": h.name_label,
                "address": h.address,
                "live": h.live,
                "enabled": h.enabled,
                "in_liveset": view.liveset.contains(&h.uuid),
                "heard": this || seen.hbdomain.contains(&h.uuid),
                "on_statefile": seen.sfdomain.contains(&h.uuid),
                "heartbeat_age_ms": if this { Some(0) } else { heard },
                "slot_age_ms": if this { None } else { slot },
                "maintenance": h.other_config.contains_key(crate::ops::host::LEAVING_KEY)
                    || h.other_config.contains_key(crate::ops::host::DISABLED_UNTIL_REBOOT_KEY),
            })
        })
        .collect();
    let mut vms: Vec<(i64, String, Value)> =
        m.vm.iter()
            .filter(|(_, v)| planning::is_protected(v))
            .map(|(r, v)| {
                let runs_on = host_by_ref(&v.resident_on)
                    .filter(|_| v.power_state != PowerState::Halted)
                    .map(|h| h.name_label.clone());
                let entry = json!({
                    "uuid": v.uuid,
                    "name": v.name_label,
                    "priority": v.ha_restart_priority,
                    "order": v.order,
                    "power_state": v.power_state,
                    "runs_on": runs_on,
                    "restart_on": restart_on.get(r).cloned().flatten(),
                });
                (v.order, v.name_label.clone(), entry)
            })
            .collect();
    vms.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    let mut recent: Vec<&MessageRecord> = m
        .message
        .iter()
        .map(|(_, msg)| msg)
        .filter(|msg| msg.name.starts_with("HA_"))
        .collect();
    recent.sort_by(|a, b| b.timestamp.cmp(&a.timestamp));
    let recent: Vec<Value> = recent
        .into_iter()
        .take(RECENT)
        .map(|msg| {
            json!({
                "time": msg.timestamp,
                "name": msg.name,
                "host": m.host.iter().find(|(_, h)| h.uuid == msg.obj_uuid).map(|(_, h)| h.name_label.clone()),
                "body": msg.body,
            })
        })
        .collect();
    let status = match view.status {
        AgentStatus::Starting if !view.running => "off",
        AgentStatus::Starting => "starting",
        AgentStatus::Online => "online",
        AgentStatus::Fenced => "fenced",
        AgentStatus::Stopped => "stopped",
    };
    let mut liveset: Vec<String> = view.liveset.iter().map(|u| name_of(u)).collect();
    liveset.sort();
    Ok(json!({
        "answered_by": {
            "uuid": d.host_uuid(),
            "name": me.map(|h| h.name_label.clone()).unwrap_or_default(),
            "role": role,
            "view": view_kind,
            "emergency": d.ha().emergency().map(|e| e.code),
        },
        "ha_enabled": pool.ha_enabled,
        "timeout_s": pool.ha_configuration.get("timeout").and_then(|t| t.parse::<i64>().ok()),
        "master": host_by_ref(&pool.master).map(|h| h.name_label.clone()),
        "agent": {
            "status": status,
            "stopped_because": view.exit.map(|x| x.name()),
            "phase": seen.phase,
            "lock_holder": view.lock_holder.as_deref().map(name_of),
            "master_confirmed": view.master_confirmed,
            "statefile_access": view.sf_access,
            "storage_lost": view.storage_lost,
            "rule2": view.rule2,
            "refused_packets": view.refused,
        },
        "liveset": liveset,
        "failures_to_tolerate": pool.ha_host_failures_to_tolerate,
        "plan_exists_for": pool.ha_plan_exists_for,
        "overcommitted": pool.ha_overcommitted,
        "allow_overcommit": pool.ha_allow_overcommit,
        "hosts": hosts,
        "protected_vms": vms.into_iter().map(|(_, _, v)| v).collect::<Vec<_>>(),
        "recent": recent,
    }))
}

/// What [`restart_targets`] needs, taken from the database at once: the
/// planner and its pool, the failures left to keep, each running
/// protected VM (ref, uuid, host uuid), and host names by uuid.
struct RestartInputs {
    planner: ha_planner::Planner,
    pool: ha_planner::Pool,
    keep: u32,
    vms: Vec<(String, String, String)>,
    names: BTreeMap<String, String>,
}

fn restart_inputs(m: &pool_db::model::Model) -> Option<RestartInputs> {
    let (planner, pool) = planning::setup(m).ok()?;
    let record = planning::pool_record(m).ok()?;
    let keep = if record.ha_enabled {
        (record.ha_host_failures_to_tolerate.max(1) - 1) as u32
    } else {
        0
    };
    let vms =
        m.vm.iter()
            .filter(|(_, v)| v.power_state != PowerState::Halted && planning::is_protected(v))
            .filter_map(|(r, v)| {
                m.get::<HostRecord>(&v.resident_on)
                    .map(|h| (r.clone(), v.uuid.clone(), h.uuid.clone()))
            })
            .collect();
    let names = m
        .host
        .iter()
        .map(|(_, h)| (h.uuid.clone(), h.name_label.clone()))
        .collect();
    Some(RestartInputs {
        planner,
        pool,
        keep,
        vms,
        names,
    })
}

/// For each protected VM that runs, the name of the host the planner
/// would restart it on if its host failed alone (`None`: no place, or no
/// plan can be made).
fn restart_targets(input: RestartInputs) -> BTreeMap<String, Option<String>> {
    let mut out = BTreeMap::new();
    let hosts: std::collections::BTreeSet<&String> = input.vms.iter().map(|(_, _, h)| h).collect();
    for host in hosts {
        let plan = input
            .planner
            .restart_plan(&input.pool, std::slice::from_ref(host), input.keep);
        for (r, uuid, _) in input.vms.iter().filter(|(_, _, h)| h == host) {
            let target = plan.as_ref().ok().and_then(|p| {
                p.placements
                    .iter()
                    .find(|(u, _)| u == uuid)
                    .and_then(|(_, placement)| match placement {
                        ha_planner::Placement::Host(h) => input.names.get(h).cloned(),
                        ha_planner::Placement::Unplaced(_) => None,
                    })
            });
            out.insert(r.clone(), target);
        }
    }
    out
}
