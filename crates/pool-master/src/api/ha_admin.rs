//! Turning HA on and off, and the emergency commands.
//!
//! - `pool.enable_ha(heartbeat_srs, configuration)`: checks everything
//!   first (HA off, every host live, a shared SR every host has plugged,
//!   a valid timeout), prepares the statefile with a new generation in
//!   state `init`, then arms every host in parallel and waits until each
//!   is in the liveset and the master holds the master lock. Only then is
//!   `ha-enabled` set. If anything fails, every host is disarmed again and
//!   the statefile says `invalid`: a failed enable leaves nothing armed.
//! - `pool.disable_ha`: the pool state `invalid` goes through the master's
//!   statefile access, so every engine stops by itself; then every host is
//!   told to disarm (the way without the statefile).
//! - `host.emergency_ha_disable`, `pool.emergency_transition_to_master`,
//!   `pool.emergency_reset_master`: run on the host itself, even in
//!   emergency mode.
//! - `host.ha_join_liveset`, `host.ha_disarm`: what the master asks of each
//!   host during enable and disable.

use std::sync::Arc;
use std::time::Duration;

use ha_liveness::{Event, Global, PoolState, Timeouts, DEFAULT_TIMEOUT_S};
use serde_json::{json, Value};
use xapi_proto::records::{HostRecord, PoolRecord, SrRecord, VdiRecord};
use xapi_proto::{codes, ApiError};

use super::Args;
use crate::daemon::{Daemon, Role};
use crate::failover;
use crate::ha::local::HaLocal;
use crate::ha::{self, statefile};
use pool_db::model::{new_ref, new_uuid, Txn};

/// Marks an enable or disable as running; cleared when dropped.
struct Busy<'a>(&'a Daemon);

impl<'a> Busy<'a> {
    fn take(d: &'a Daemon, code: &str) -> Result<Busy<'a>, ApiError> {
        if !d.begin_ha_change() {
            return Err(ApiError::bare(code));
        }
        Ok(Busy(d))
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.end_ha_change();
    }
}

/// The pool's HA set-up, decided before anything is armed.
struct Plan {
    pool: String,
    sr: String,
    timeout_s: u64,
    timeouts: Timeouts,
    /// Per host, sorted by uuid: its reference and configuration.
    hosts: Vec<(String, HaLocal)>,
}

fn parse_timeout(text: &str) -> Result<u64, ApiError> {
    text.trim()
        .parse::<u64>()
        .map_err(|_| ApiError::invalid_value("ha-config:timeout", text.to_string()))
}

fn plan(
    d: &Daemon,
    txn: &Txn,
    srs: &[String],
    configuration: &xapi_proto::records::StringMap,
) -> Result<Plan, ApiError> {
    let (pool_ref, pool) = txn
        .base()
        .pool()
        .map(|(r, p)| (r.clone(), p.clone()))
        .ok_or_else(|| ApiError::internal("the pool record is missing"))?;
    if pool.ha_enabled {
        return Err(ApiError::bare(codes::HA_IS_ENABLED));
    }
    let mut hosts = txn.all::<HostRecord>();
    hosts.sort_by(|a, b| a.1.uuid.cmp(&b.1.uuid));
    if hosts.len() > ha_liveness::MAX_HOSTS {
        return Err(ApiError::internal(format!(
            "HA supports at most {} hosts",
            ha_liveness::MAX_HOSTS
        )));
    }
    if let Some((r, _)) = hosts.iter().find(|(_, h)| !h.live) {
        return Err(ApiError::new(codes::HOST_OFFLINE, vec![r.clone()]));
    }
    let sr = match srs.first() {
        Some(sr) => {
            txn.get::<SrRecord>(sr)
                .ok_or_else(|| ApiError::handle_invalid("SR", sr))?;
            sr.clone()
        }
        None => {
            let default = Some(pool.default_sr.clone()).filter(|r| txn.get::<SrRecord>(r).is_some_and(|s| s.shared));
            default
                .or_else(|| {
                    txn.all::<SrRecord>()
                        .into_iter()
                        .find(|(_, s)| s.shared)
                        .map(|(r, _)| r)
                })
                .ok_or_else(|| ApiError::bare(codes::CANNOT_CREATE_STATE_FILE))?
        }
    };
    let record = txn
        .get::<SrRecord>(&sr)
        .ok_or_else(|| ApiError::handle_invalid("SR", &sr))?;
    let timeout_s = match configuration.get("timeout") {
        Some(t) => parse_timeout(t)?,
        None => match pool.other_config.get("default_ha_timeout") {
            Some(t) => parse_timeout(t)?,
            None => DEFAULT_TIMEOUT_S,
        },
    };
    let timeouts = Timeouts::derive(timeout_s, d.config().lab)
        .map_err(|e| ApiError::invalid_value("ha-config:timeout", format!("{timeout_s} ({e})")))?;
    let generation: u128 = rand::random();
    let uuids: Vec<String> = hosts.iter().map(|(_, h)| h.uuid.clone()).collect();
    let addresses: Vec<String> = hosts.iter().map(|(_, h)| h.address.clone()).collect();
    let mut planned = Vec::new();
    for (host_ref, _) in &hosts {
        let dir = crate::hostops::sr_path(txn, host_ref, &sr)
            .filter(|_| record.shared)
            .ok_or_else(|| ApiError::new(codes::SR_NO_PBDS, vec![sr.clone()]))?;
        let (statefile, metadata) = ha::sr_files(&dir);
        planned.push((
            host_ref.clone(),
            HaLocal {
                armed: true,
                generation,
                timeout_s,
                lab: d.config().lab,
                hosts: uuids.clone(),
                addresses: addresses.clone(),
                port: d.config().port,
                statefile,
                metadata,
            },
        ));
    }
    Ok(Plan {
        pool: pool_ref,
        sr,
        timeout_s,
        timeouts,
        hosts: planned,
    })
}

/// Call `method` on the host `host_ref` (locally when it is this host).
async fn on_host(
    d: &Arc<Daemon>,
    host_ref: &str,
    method: &str,
    params: Vec<Value>,
    timeout: Duration,
) -> Result<Value, ApiError> {
    let target = {
        let m = d.model();
        let h = m
            .get::<HostRecord>(host_ref)
            .ok_or_else(|| ApiError::handle_invalid("host", host_ref))?;
        crate::hostops::Target::new(host_ref, h)
    };
    if target.uuid == d.host_uuid() {
        return local_call(d, method, &params).await;
    }
    crate::hostops::call(d, &target, method, params, timeout).await
}

async fn local_call(d: &Arc<Daemon>, method: &str, params: &[Value]) -> Result<Value, ApiError> {
    match method {
        "host.ha_join_liveset" => {
            let text = params.first().and_then(Value::as_str).unwrap_or_default();
            join(d, text).await
        }
        "host.ha_disarm" => failover::disarm(d).await.map(|_| json!("")),
        _ => Err(super::unknown(method)),
    }
}

/// `pool.enable_ha(session, heartbeat_srs, configuration)`.
pub async fn enable(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    args.exactly(3)?;
    let srs = args.strings(1, "heartbeat_srs")?;
    let configuration = args.string_map(2, "configuration")?;
    let _busy = Busy::take(d, codes::HA_ENABLE_IN_PROGRESS)?;
    let plan = {
        let m = d.model();
        plan(d, &Txn::new(&m), &srs, &configuration)?
    };
    let me = d.host_ref().unwrap_or_default();
    let my_local = plan
        .hosts
        .iter()
        .find(|(r, _)| *r == me)
        .map(|(_, l)| l.clone())
        .ok_or_else(|| ApiError::internal("the master is not among the pool's hosts"))?;
    let path = my_local.statefile.clone();
    let generation = my_local.generation;
    let io = d.io().clone();
    tokio::task::spawn_blocking(move || statefile::prepare(&io, &path, generation))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| {
            tracing::warn!("cannot create the statefile: {e}");
            ApiError::bare(codes::CANNOT_CREATE_STATE_FILE)
        })?;
    tracing::info!(timeout = plan.timeout_s, "enabling HA");
    let result = arm_everyone(d, &plan).await;
    if let Err(e) = result {
        tracing::warn!("HA enable failed ({e}); disarming every host");
        abandon(d, &plan, &my_local).await;
        return Err(e);
    }
    d.write(|txn| {
        let statefile = ha_vdi(
            txn,
            &plan.sr,
            "statefile",
            statefile::STATEFILE_NAME,
            "Statefile for HA",
        );
        ha_vdi(txn, &plan.sr, "metadata", statefile::METADATA_NAME, "Metadata for HA");
        txn.update::<PoolRecord>(&plan.pool, |p| {
            p.ha_enabled = true;
            p.ha_configuration = [("timeout".to_string(), plan.timeout_s.to_string())].into();
            p.ha_statefiles = vec![statefile.clone()];
        });
        for (host_ref, l) in &plan.hosts {
            let peers: Vec<String> = l
                .addresses
                .iter()
                .zip(&l.hosts)
                .filter(|(_, u)| txn.get::<HostRecord>(host_ref).is_some_and(|h| h.uuid != **u))
                .map(|(a, _)| a.clone())
                .collect();
            txn.update::<HostRecord>(host_ref, |h| {
                h.ha_statefiles = vec![statefile.clone()];
                h.ha_network_peers = peers;
            });
        }
        Ok(())
    })
    .await?;
    d.start_redo_log().await;
    tracing::info!(sr = %plan.sr, "HA is enabled");
    Ok(json!(""))
}

/// The VDI of the heartbeat SR that holds `purpose` (`statefile` or
/// `metadata`) in the file `location`: the one from an earlier enable, or
/// a new record. Its reference.
fn ha_vdi(txn: &mut Txn, sr: &str, purpose: &str, location: &str, name: &str) -> String {
    let existing = txn.all::<VdiRecord>().into_iter().find(|(_, v)| {
        v.sr == sr
            && v.location == location
            && v.other_config.get(ha::VDI_PURPOSE_KEY).map(String::as_str) == Some(purpose)
    });
    if let Some((r, _)) = existing {
        return r;
    }
    let r = new_ref();
    let size = if purpose == "statefile" { 4 << 20 } else { 256 << 20 };
    txn.put(
        &r,
        VdiRecord {
            uuid: new_uuid(),
            name_label: name.to_string(),
            name_description: "Used by the pool's high availability; do not remove while HA is enabled".to_string(),
            sr: sr.to_string(),
            virtual_size: size,
            vbds: Vec::new(),
            location: location.to_string(),
            other_config: [(ha::VDI_PURPOSE_KEY.to_string(), purpose.to_string())].into(),
        },
    );
    txn.update::<SrRecord>(sr, |s| s.vdis.push(r.clone()));
    r
}

/// Arm every host at once; then wait for the master lock.
async fn arm_everyone(d: &Arc<Daemon>, plan: &Plan) -> Result<(), ApiError> {
    let limit = Duration::from_millis(plan.timeouts.enable_join) + Duration::from_secs(10);
    let joins = plan.hosts.iter().map(|(host_ref, l)| {
        let d = d.clone();
        let (host_ref, text) = (host_ref.clone(), l.to_json());
        tokio::spawn(async move { on_host(&d, &host_ref, "host.ha_join_liveset", vec![json!(text)], limit).await })
    });
    let mut first_error = None;
    for j in joins.collect::<Vec<_>>() {
        let r = j.await.map_err(|e| ApiError::internal(e.to_string())).and_then(|r| r);
        if let Err(e) = r {
            first_error.get_or_insert(e);
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    let mut rx = d.ha().subscribe();
    let me = d.host_uuid().to_string();
    tokio::time::timeout(limit, async {
        loop {
            if rx.borrow_and_update().lock_holder.as_deref() == Some(me.as_str()) {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    })
    .await
    .map_err(|_| ApiError::bare(codes::HA_FAILED_TO_FORM_LIVESET))
}

/// Undo a failed enable: the statefile says `invalid`, every host disarms.
async fn abandon(d: &Arc<Daemon>, plan: &Plan, l: &HaLocal) {
    let invalid = Global {
        pool_state: PoolState::Invalid,
        generation: l.generation,
        master: None,
    };
    let path = l.statefile.clone();
    let io = d.io().clone();
    let _ = tokio::task::spawn_blocking(move || statefile::write_global(&io, &path, &invalid)).await;
    disarm_everyone(d, plan.hosts.iter().map(|(r, _)| r.clone()).collect()).await;
}

async fn disarm_everyone(d: &Arc<Daemon>, hosts: Vec<String>) -> Vec<String> {
    let calls = hosts.into_iter().map(|host_ref| {
        let d = d.clone();
        tokio::spawn(async move {
            let r = on_host(&d, &host_ref, "host.ha_disarm", vec![], crate::peers::PEER_TIMEOUT).await;
            (host_ref, r)
        })
    });
    let mut failed = Vec::new();
    for c in calls.collect::<Vec<_>>() {
        if let Ok((host_ref, Err(e))) = c.await {
            tracing::warn!(host = %host_ref, "could not disarm: {e}");
            failed.push(host_ref);
        }
    }
    failed
}

/// `host.ha_join_liveset(session, configuration)`: arm this host.
pub async fn join_liveset(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    args.exactly(2)?;
    join(d, args.str(1, "configuration")?).await
}

async fn join(d: &Arc<Daemon>, text: &str) -> Result<Value, ApiError> {
    let l = HaLocal::from_json(text).map_err(|e| ApiError::invalid_value("configuration", e.to_string()))?;
    if l.index_of(d.host_uuid()).is_none() {
        return Err(ApiError::invalid_value(
            "configuration",
            "this host is not in it".to_string(),
        ));
    }
    failover::arm(d, l).await?;
    Ok(json!(""))
}

/// `host.ha_disarm(session)`: stop this host's agent and never fence.
pub async fn disarm(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    args.exactly(1)?;
    failover::disarm(d).await?;
    Ok(json!(""))
}

/// `pool.disable_ha(session)`.
pub async fn disable(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    args.exactly(1)?;
    let _busy = Busy::take(d, codes::HA_DISABLE_IN_PROGRESS)?;
    let pool = {
        let m = d.model();
        let (r, p) = m
            .pool()
            .ok_or_else(|| ApiError::internal("the pool record is missing"))?;
        if !p.ha_enabled {
            return Err(ApiError::bare(codes::HA_NOT_ENABLED));
        }
        r.clone()
    };
    let view = d.ha().view();
    if view.online && view.sf_access {
        // Through the statefile: every engine reads `invalid` and stops.
        let t = failover::local(d).await.map_or(DEFAULT_TIMEOUT_S, |l| l.timeout_s);
        d.ha().send(Event::SetPoolState(PoolState::Invalid)).await;
        let mut rx = d.ha().subscribe();
        let stopped = tokio::time::timeout(Duration::from_secs(t), async {
            loop {
                if !rx.borrow_and_update().running {
                    return;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        if stopped.is_err() {
            tracing::warn!("the pool state did not reach the statefile in time; disarming every host directly");
        }
    }
    d.write(|txn| {
        txn.update::<PoolRecord>(&pool, |p| {
            p.ha_enabled = false;
            p.ha_statefiles.clear();
            p.ha_plan_exists_for = 0;
        });
        for (r, _) in txn.all::<HostRecord>() {
            txn.update::<HostRecord>(&r, |h| {
                h.ha_statefiles.clear();
                h.ha_network_peers.clear();
            });
        }
        Ok(())
    })
    .await?;
    d.stop_redo_log();
    if let Some(l) = failover::local(d).await {
        // A later master must not mistake this copy for a newer database.
        let _ = std::fs::remove_file(&l.metadata);
    }
    let hosts: Vec<String> = {
        let m = d.model();
        m.host.iter().filter(|(_, h)| h.live).map(|(r, _)| r.clone()).collect()
    };
    let failed = disarm_everyone(d, hosts).await;
    if !failed.is_empty() {
        tracing::warn!(
            "{} hosts could not be told to disarm; they disarm when they read the pool state",
            failed.len()
        );
    }
    tracing::info!("HA is disabled");
    Ok(json!(""))
}

/// `host.emergency_ha_disable(session, soft)`: on this host, whatever the
/// pool says.
pub async fn emergency_disable(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    args.count(1, 2)?;
    let soft = args.bool_or(1, "soft", false)?;
    let armed = failover::local(d).await.is_some_and(|l| l.armed);
    if !armed {
        return if soft {
            Ok(json!(""))
        } else {
            Err(ApiError::bare(codes::HA_NOT_ENABLED))
        };
    }
    tracing::warn!("emergency HA disable on this host");
    d.ha().watchdog.disarm();
    if d.ha().send(Event::Leave).await {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    failover::disarm(d).await?;
    Ok(json!(""))
}

async fn refuse_when_armed(d: &Daemon) -> Result<(), ApiError> {
    if failover::local(d).await.is_some_and(|l| l.armed) {
        return Err(ApiError::bare(codes::HA_IS_ENABLED));
    }
    Ok(())
}

/// `pool.emergency_transition_to_master(session)`.
pub async fn transition_to_master(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    args.exactly(1)?;
    refuse_when_armed(d).await?;
    if d.role() == Role::Master {
        return Ok(json!(""));
    }
    d.become_master().await.map_err(|e| ApiError::internal(e.to_string()))?;
    crate::ops::host::record_master_start(d).await?;
    Ok(json!(""))
}

/// `pool.emergency_reset_master(session, master_address)`.
pub async fn reset_master(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    args.exactly(2)?;
    let address = args.str(1, "master_address")?.trim().to_string();
    if address.is_empty() || address.contains(char::is_whitespace) {
        return Err(ApiError::invalid_value("master_address", address));
    }
    refuse_when_armed(d).await?;
    d.follow_master(&address)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(json!(""))
}
