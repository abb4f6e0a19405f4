//! `pool.*`: joining a pool and replicating its database.
//!
//! `pool.join` runs on the joining host (xe `pool-join` names it with `-s`):
//! it checks that the host can join, asks the master to add it
//! (`pool.join_request`), takes the master's database and secret, and turns
//! into a member. `pool.sync_database` is the members' replication long-poll
//! (see [`pool_db::replication`]).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use xapi_client::{Client, ClientError};
use xapi_proto::records::{HostRecord, PbdRecord, PowerState, SrRecord};
use xapi_proto::{codes, ApiError};

use super::Args;
use crate::daemon::Daemon;
use crate::memory;
use crate::sessions::Principal;
use pool_db::model::{new_ref, Record};
use pool_db::replication::{self, Update};

/// The longest a member's sync call waits for a new commit.
const MAX_SYNC_WAIT: Duration = Duration::from_secs(30);

/// The methods served here.
pub const METHODS: &[&str] = &["pool.join", "pool.join_request", "pool.sync_database"];

pub async fn dispatch(d: &Arc<Daemon>, verb: &str, args: &Args) -> Option<Result<Value, ApiError>> {
    Some(match verb {
        "join" => join(d, args).await,
        "join_request" => join_request(d, args).await,
        "sync_database" => sync_database(d, args).await,
        _ => return None,
    })
}

fn joining_error(code: &str) -> ApiError {
    ApiError::bare(code)
}

/// `pool.join(session, master_address, master_username, master_password)`.
async fn join(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    args.exactly(4)?;
    let master_address = args.str(1, "master_address")?.to_string();
    let username = args.str(2, "master_username")?.to_string();
    let password = args.str(3, "master_password")?.to_string();
    let (host, local_srs) = {
        let m = d.model();
        // XAPI's first checks: no HA on the joining host's own pool (and,
        // below, none on the pool it joins).
        if m.pool().is_some_and(|(_, p)| p.ha_enabled) {
            return Err(ApiError::bare(codes::HA_IS_ENABLED));
        }
        if m.host.len() > 1 {
            return Err(joining_error(codes::JOINING_HOST_CANNOT_BE_MASTER_OF_OTHER_HOSTS));
        }
        if m.vm.iter().any(|(_, v)| v.power_state != PowerState::Halted) {
            return Err(joining_error(codes::JOINING_HOST_CANNOT_HAVE_RUNNING_VMS));
        }
        if !m.vm.is_empty() || !m.vdi.is_empty() {
            return Err(ApiError::not_allowed(
                "The host joining the pool has VMs or disks; uninstall them before it joins.",
            ));
        }
        if m.sr.iter().any(|(_, s)| s.shared) {
            return Err(joining_error(codes::JOINING_HOST_CANNOT_CONTAIN_SHARED_SRS));
        }
        let host = m
            .host
            .iter()
            .find(|(_, h)| h.uuid == d.host_uuid())
            .map(|(_, h)| h.clone());
        let host = host.ok_or_else(|| ApiError::internal("this host has no record"))?;
        // Bring the local SRs along, each with this host's PBD.
        let local: Vec<Value> =
            m.sr.iter()
                .map(|(sr_ref, sr)| {
                    let pbds: Vec<Value> = sr
                        .pbds
                        .iter()
                        .filter_map(|p| m.get::<PbdRecord>(p).map(|rec| json!([p, rec])))
                        .collect();
                    json!({"ref": sr_ref, "record": sr, "pbds": pbds})
                })
                .collect();
        (host, local)
    };
    if master_address == d.config().address {
        return Err(ApiError::not_allowed("A host cannot join its own pool."));
    }
    let options = crate::peers::peer_options(std::time::Duration::from_secs(120), xapi_client::tls::Trust::Anyone);
    let mut master = Client::with_options(&master_address, d.config().port, &options);
    master.login(&username, &password).await.map_err(join_contact_error)?;
    // HA on the pool joined: its agents would count the new host as a
    // member that never joined their liveset, and declare it failed.
    let ha_there = master
        .call("pool.get_all", vec![])
        .await
        .ok()
        .and_then(|pools| pools.get(0).and_then(Value::as_str).map(str::to_string));
    if let Some(pool) = ha_there {
        if master.call("pool.get_ha_enabled", vec![json!(pool)]).await.ok() == Some(json!(true)) {
            master.logout().await;
            return Err(ApiError::bare(codes::HA_IS_ENABLED));
        }
    }
    let answer = master
        .call("pool.join_request", vec![json!(host), json!(local_srs)])
        .await
        .map_err(join_contact_error);
    master.logout().await;
    let answer = answer?;
    let secret = answer
        .get("pool_secret")
        .and_then(Value::as_str)
        .and_then(crate::secret::Secret::parse)
        .ok_or_else(|| joining_error(codes::JOINING_HOST_SERVICE_FAILED))?;
    let master_address = master.host().to_string();
    // Take the master's database as it is now.
    let mut member = Client::with_options(&master_address, d.config().port, &options).no_redirect();
    let session = member
        .call_raw(
            "session.slave_login",
            vec![json!(d.host_uuid()), json!(secret.expose())],
        )
        .await
        .map_err(join_contact_error)?;
    member.set_session(session.as_str().unwrap_or_default().to_string());
    let copy = member
        .call("pool.sync_database", vec![json!(0), json!(0.0)])
        .await
        .map_err(join_contact_error)?;
    let Ok(Update::Full {
        generation,
        snapshot,
        users,
    }) = replication::decode_update(&copy)
    else {
        return Err(joining_error(codes::JOINING_HOST_SERVICE_FAILED));
    };
    let term = copy.get("term").and_then(Value::as_u64);
    d.become_member(&master_address, secret, *snapshot, users, generation, term)
        .await
        .map_err(ApiError::internal)?;
    // The member loop (running since start-up) follows the new role.
    tracing::info!(master = %master_address, "joined the pool");
    Ok(json!(""))
}

fn join_contact_error(e: ClientError) -> ApiError {
    match e {
        ClientError::Api(api) => api,
        ClientError::Unreachable { .. } => joining_error(codes::JOINING_HOST_CONNECTION_FAILED),
        _ => joining_error(codes::JOINING_HOST_SERVICE_FAILED),
    }
}

/// `pool.join_request(session, host_record, local_srs)`, on the master:
/// add the joining host, its local SRs, and a PBD for every shared SR.
async fn join_request(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    args.exactly(3)?;
    if !matches!(args.session(d)?, Principal::User(_)) {
        return Err(ApiError::new(
            codes::PERMISSION_DENIED,
            vec!["pool.join_request needs a user session".into()],
        ));
    }
    if d.model().pool().is_some_and(|(_, p)| p.ha_enabled) {
        return Err(ApiError::bare(codes::HA_IS_ENABLED));
    }
    // The joiner would learn one secret of the pair, and miss the rest.
    if d.secrets().rotation().is_some() {
        return Err(ApiError::not_allowed(
            "A pool secret rotation is unfinished: run pool-secret-rotate again to finish it, then join.",
        ));
    }
    let mut host: HostRecord =
        serde_json::from_value(args.raw(1).cloned().unwrap_or_default()).map_err(|_| ApiError::field_type("host"))?;
    let local = args
        .raw(2)
        .and_then(Value::as_array)
        .cloned()
        .ok_or_else(|| ApiError::field_type("srs"))?;
    let host_ref = new_ref();
    d.write(|txn| {
        // Again under the write lock: HA may have been enabled meanwhile.
        if txn.base().pool().is_some_and(|(_, p)| p.ha_enabled) {
            return Err(ApiError::bare(codes::HA_IS_ENABLED));
        }
        if txn.base().host.ref_of_uuid(&host.uuid).is_some() {
            return Err(ApiError::not_allowed(format!(
                "A host with uuid {} is already in the pool.",
                host.uuid
            )));
        }
        if txn.all::<HostRecord>().iter().any(|(_, h)| h.address == host.address) {
            return Err(ApiError::not_allowed(format!(
                "A host with address {} is already in the pool.",
                host.address
            )));
        }
        host.pbds = Vec::new();
        host.resident_vms = Vec::new();
        host.live = true;
        host.enabled = true;
        txn.put(&host_ref, host.clone());
        let mut pbds = crate::api::storage::shared_pbds_for(txn, &host_ref);
        for sr in &local {
            let sr_ref = sr
                .get("ref")
                .and_then(Value::as_str)
                .ok_or_else(|| ApiError::field_type("srs"))?;
            let record: SrRecord = serde_json::from_value(sr.get("record").cloned().unwrap_or_default())
                .map_err(|_| ApiError::field_type("srs"))?;
            if txn.get::<SrRecord>(sr_ref).is_some() || txn.base().sr.ref_of_uuid(record.uuid()).is_some() {
                return Err(ApiError::not_allowed(format!(
                    "SR {} is already in the pool.",
                    record.uuid
                )));
            }
            for pbd in sr.get("pbds").and_then(Value::as_array).into_iter().flatten() {
                let pbd_ref = pbd
                    .get(0)
                    .and_then(Value::as_str)
                    .ok_or_else(|| ApiError::field_type("srs"))?;
                let mut rec: PbdRecord = serde_json::from_value(pbd.get(1).cloned().unwrap_or_default())
                    .map_err(|_| ApiError::field_type("srs"))?;
                rec.host = host_ref.clone();
                txn.put(pbd_ref, rec);
                pbds.push(pbd_ref.to_string());
            }
            txn.put(sr_ref, record);
        }
        txn.update::<HostRecord>(&host_ref, |h| h.pbds = pbds);
        memory::refresh_host(txn, &host_ref);
        Ok(())
    })
    .await?;
    d.note_seen(&host.uuid);
    Ok(json!({"pool_secret": d.pool_secret(), "host_ref": host_ref}))
}

/// `pool.sync_database(session, since, wait_seconds)`: the commits after
/// `since`, waiting up to `wait_seconds` for one when there is none yet,
/// and this master's term (`crate::tasks`), so that a member that becomes
/// master knows whose event tokens its database continues.
async fn sync_database(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    args.exactly(3)?;
    let since = u64::try_from(args.int(1, "since")?).map_err(|_| ApiError::invalid_value("since", "negative"))?;
    let wait = Duration::try_from_secs_f64(args.float_or(2, "wait", 0.0)?.max(0.0))
        .unwrap_or(MAX_SYNC_WAIT)
        .min(MAX_SYNC_WAIT);
    if let Principal::Member(uuid) = args.session(d)? {
        d.note_seen(&uuid);
    }
    let mut watch = d.watch_generation();
    if since != 0 && *watch.borrow_and_update() == since && !wait.is_zero() {
        let _ = tokio::time::timeout(wait, watch.changed()).await;
    }
    let current = d.model().generation;
    if since != 0 {
        if let Some(commits) = d.changes_since(since) {
            let commits: Vec<Value> = commits
                .iter()
                .map(|(g, c)| json!({"generation": g, "rows": replication::encode_rows(c)}))
                .collect();
            let generation = commits.last().and_then(|c| c["generation"].as_u64()).unwrap_or(current);
            return Ok(json!({"generation": generation, "commits": commits, "term": d.tasks().term()}));
        }
    }
    let (generation, snapshot) = {
        let m = d.model();
        (m.generation, m.snapshot())
    };
    Ok(json!({
        "generation": generation,
        "full": {"rows": replication::encode_rows(&snapshot), "users": replication::encode_users(&d.users())},
        "term": d.tasks().term(),
    }))
}
