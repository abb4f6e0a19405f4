//! `pool.designate_new_master` (xe `pool-designate-new-master`): a
//! planned move of the master role to a live member, with the pool
//! database whole and, with HA on, without a fence.
//!
//! The master holds the write lock while it records the new master in
//! the pool record and tells the host (`host.become_new_master`, a call
//! between hosts, with that generation), so nothing commits in between.
//! - Without HA, that host waits until its replica has the generation,
//!   becomes master (recording its start as a failover's new master
//!   does), and the old master becomes its member under the lock; writes
//!   queued behind the lock get `HOST_IS_SLAVE`. The other members are
//!   told (`host.follow_new_master`, best effort) and otherwise learn it
//!   from the old master's `HOST_IS_SLAVE` at their next sync.
//! - With HA on, the master role follows the statefile's master lock: the
//!   named host will ask for it as soon as nobody holds it
//!   ([`Handover::Arriving`]), the master lets go of it
//!   ([`Handover::Leaving`]), every other host waits, and the lock's rule
//!   keeps one holder throughout. The new master takes over as after a
//!   failover (from its replica or the newer metadata file on the SR,
//!   which holds every commit of the old master), the old one follows it
//!   (`failover::monitor`). No host leaves the
//!   liveset, so nobody fences and no VM restarts. XAPI refuses this
//!   with `HA_IS_ENABLED`.
//!
//! If the host does not take over in time, the master records itself
//! again and stays master. Naming the master itself does nothing, as in
//! XAPI; a host that is not live gets `HOST_OFFLINE`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use xapi_proto::records::{HostRecord, PoolRecord};
use xapi_proto::{codes, ApiError};

use super::Args;
use crate::daemon::{Daemon, Role};
use crate::ha::Handover;
use crate::hostops::{self, Target};
use crate::peers::PEER_TIMEOUT;

/// The methods served here.
pub const METHODS: &[&str] = &[
    "pool.designate_new_master",
    "host.become_new_master",
    "host.follow_new_master",
];

/// How long the new master may take to have the database (no HA).
const CATCH_UP: Duration = Duration::from_secs(10);

/// How long the move may take with HA on: the lock changes hands in a few
/// statefile cycles.
async fn ha_limit(d: &Daemon) -> Duration {
    let t = crate::failover::local(d).await.map_or(30, |l| l.timeout_s).max(3);
    Duration::from_secs(6 * t)
}

/// `pool.designate_new_master(session, host)`, on the master.
pub async fn designate(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    args.exactly(2)?;
    let (host_ref, host) = {
        let m = d.model();
        args.reference::<HostRecord>(1, &pool_db::model::Txn::new(&m))?
    };
    if host.uuid == d.host_uuid() {
        return Ok(json!(""));
    }
    let ha = d.ha_enabled();
    let in_liveset = d.ha().view().online && d.ha().view().liveset.contains(&host.uuid);
    if !host.live || (ha && !in_liveset) {
        return Err(ApiError::new(codes::HOST_OFFLINE, vec![host_ref]));
    }
    let Some(_busy) = d.pool_operation() else {
        return Err(ApiError::not_allowed(
            "Another pool operation (HA on or off, a move of the master, a secret rotation) is in progress.",
        ));
    };
    handover(d, &host_ref, &host, ha).await.map(|()| json!(""))
}

async fn handover(d: &Arc<Daemon>, host_ref: &str, host: &HostRecord, ha: bool) -> Result<(), ApiError> {
    let me = d
        .host_ref()
        .ok_or_else(|| ApiError::internal("this host has no record"))?;
    let set_master = |master: String| {
        move |txn: &mut pool_db::model::Txn| {
            let pool = txn
                .base()
                .pool()
                .map(|(r, _)| r.clone())
                .ok_or_else(|| ApiError::internal("the pool record is missing"))?;
            txn.update::<PoolRecord>(&pool, |p| p.master = master);
            Ok(())
        }
    };
    let mut w = d.writer().await;
    if w.read(|txn| Ok(txn.base().pool().is_some_and(|(_, p)| p.ha_enabled)))? != ha {
        return Err(ApiError::not_allowed("HA was turned on or off meanwhile; try again."));
    }
    w.commit(set_master(host_ref.to_string()))?;
    let generation = d.model().generation;
    let target = Target::new(host_ref, host);
    tracing::info!(to = %host.name_label, generation, ha, "handing the master role over");
    let told = hostops::call(
        d,
        &target,
        "host.become_new_master",
        vec![json!(generation)],
        PEER_TIMEOUT,
    )
    .await;
    if let Err(e) = told {
        tracing::warn!("the designated master refused or did not answer: {}", e.code);
        w.commit(set_master(me))?;
        return Err(e);
    }
    if !ha {
        w.demote(&host.address)
            .map_err(|e| ApiError::internal(format!("cannot record the new role: {e}")))?;
        drop(w);
        d.peers().forget().await;
        tell_members(d, host_ref, &host.address).await;
        tracing::info!(master = %host.address, "the master role moved: this host is a member");
        return Ok(());
    }
    // HA: the lock changes hands. The write lock goes first: the monitor
    // reads this host's HA configuration from the store. A write that
    // still lands here before the lock has moved is in the metadata file
    // on the SR, which the new master takes when it is newer than its
    // replica; once this host lets go of the lock it serves no writes.
    drop(w);
    let limit = ha_limit(d).await;
    d.ha()
        .set_handover(Some(Handover::Leaving { to: host.uuid.clone() }), limit);
    let mut view = d.ha().subscribe();
    let moved = tokio::time::timeout(limit, async {
        loop {
            if view.borrow_and_update().lock_holder.as_deref() == Some(host.uuid.as_str()) {
                return;
            }
            if view.changed().await.is_err() {
                return;
            }
        }
    })
    .await
    .is_ok();
    if !moved {
        d.ha().set_handover(None, Duration::ZERO);
        tracing::warn!("the designated master did not take the master lock in time: this host stays the master");
        d.write(set_master(me)).await?;
        return Err(ApiError::internal(format!(
            "{} did not take the master lock in time; this host stays the master",
            host.name_label
        )));
    }
    // The monitor follows the new lock holder; wait for it so that a
    // client sent here next is redirected.
    let mut role = d.watch_role();
    let _ = tokio::time::timeout(limit, async {
        while d.is_master() {
            if role.changed().await.is_err() {
                return;
            }
        }
    })
    .await;
    // And for the new master to have taken over (its database from the
    // newest copy), so that it serves the client sent there next.
    let serving = tokio::time::timeout(limit, async {
        loop {
            let status = hostops::call(d, &target, "host.get_ha_status", vec![], PEER_TIMEOUT).await;
            if status.is_ok_and(|s| s["answered_by"]["role"] == "master") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .is_ok();
    if !serving {
        tracing::warn!(master = %host.address, "the new master holds the lock but has not taken over yet");
    }
    tracing::info!(master = %host.address, "the master role moved under HA: this host is a member");
    Ok(())
}

/// Tell every other member to follow the new master (best effort: a
/// member not told learns it from this host's `HOST_IS_SLAVE`).
async fn tell_members(d: &Daemon, new_master: &str, address: &str) {
    let members: Vec<(String, HostRecord)> = {
        let m = d.model();
        m.host
            .iter()
            .filter(|(r, h)| *r != new_master && h.uuid != d.host_uuid() && h.live)
            .map(|(r, h)| (r.to_string(), h.clone()))
            .collect()
    };
    for (r, h) in members {
        let target = Target::new(&r, &h);
        if let Err(e) = hostops::call(d, &target, "host.follow_new_master", vec![json!(address)], PEER_TIMEOUT).await {
            tracing::warn!(host = %h.name_label, "not told of the new master: {}", e.code);
        }
    }
}

/// `host.become_new_master(session, generation)`: on the designated host.
pub async fn become_new_master(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    args.exactly(2)?;
    let generation =
        u64::try_from(args.int(1, "generation")?).map_err(|_| ApiError::invalid_value("generation", "negative"))?;
    if d.is_master() {
        return Err(ApiError::not_allowed("This host is a master already."));
    }
    if d.ha().armed() {
        d.ha().set_handover(Some(Handover::Arriving), ha_limit(d).await);
        tracing::info!("designated the new master: asking for the master lock");
        return Ok(json!(""));
    }
    // The replica must hold every commit of the old master.
    let mut watch = d.watch_generation();
    let caught_up = tokio::time::timeout(CATCH_UP, async {
        while *watch.borrow_and_update() < generation {
            if watch.changed().await.is_err() {
                return;
            }
        }
    })
    .await
    .is_ok();
    if !caught_up || d.model().generation < generation {
        return Err(ApiError::internal(format!(
            "this host's replica did not reach generation {generation} in time"
        )));
    }
    d.become_master().await.map_err(|e| ApiError::internal(e.to_string()))?;
    d.note_seen_if_unknown(d.model().host.iter().map(|(_, h)| h.uuid.clone()).collect::<Vec<_>>());
    crate::ops::host::record_master_start(d).await?;
    tracing::info!("designated the new master: this host is the pool master");
    Ok(json!(""))
}

/// `host.follow_new_master(session, address)`: a member told of a planned
/// move of the master role (without HA; with HA the lock says who leads).
pub async fn follow_new_master(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    args.exactly(2)?;
    let address = args.str(1, "address")?;
    if d.ha().armed() {
        return Ok(json!(""));
    }
    if !d.model().host.iter().any(|(_, h)| h.address == address) {
        return Err(ApiError::invalid_value("address", "not a host of this pool"));
    }
    if let Role::Member { master_address } = d.role() {
        if master_address != address {
            d.follow_master(address)
                .await
                .map_err(|e| ApiError::internal(e.to_string()))?;
            tracing::info!(master = %address, "following the designated master");
        }
    }
    Ok(json!(""))
}
