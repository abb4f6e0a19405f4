//! What `xapid` does with the agent's view (xapi's HA monitor, the
//! host-side half of it).
//!
//! On every change of the view, and at least every [`PERIOD`]:
//! - master election: a host asks for the statefile master lock when it is
//!   the pool master and nobody else holds it, or when the last master has
//!   left the liveset; the lowest index wins. The winner takes over as pool
//!   master from the newest database (its replica or the metadata file on
//!   the heartbeat SR); every other host, the old master too when it comes
//!   back, follows the lock holder.
//! - on the master: each view wakes the restart executor (`failover::restart`),
//!   and survival rule 2 (every live host lost the statefile) raises
//!   `HA_STATEFILE_LOST` once per loss.
//! - after a fence and a reboot, once this host is back in the liveset,
//!   each recorded fence becomes an `HA_HOST_WAS_FENCED` message.

use std::sync::Arc;
use std::time::Duration;

use ha_liveness::Event;
use serde_json::json;
use xapi_proto::records::{HostRecord, MessageRecord};
use xapi_proto::ApiError;

use crate::daemon::{Daemon, Role};
use crate::ha::agent::AgentView;
use crate::ha::Handover;
use crate::peers::PEER_TIMEOUT;
use pool_db::model::{new_ref, new_uuid};

/// The longest the monitor waits between two looks at the view.
pub const PERIOD: Duration = Duration::from_millis(500);

#[derive(Default)]
struct State {
    /// What we last told the engine about the master lock.
    proposing: Option<bool>,
    /// What this host last wanted, kept while the agent is briefly not
    /// online (a host joining the liveset): a proposal stands until
    /// another host holds the lock.
    wanted: bool,
    /// The statefile-lost alert for the current loss was raised.
    statefile_alerted: bool,
    /// Fences to report once back in the pool.
    fences: Vec<(u64, String)>,
    /// The tie-break values last given to the engine.
    tie: Option<ha_liveness::TieBreak>,
    /// This host holds the master lock and has taken up the master's work.
    acting_master: bool,
    /// The last host the engine reported holding the master lock.
    last_holder: Option<String>,
}

/// Start the monitor; it runs for the life of the process.
pub fn spawn(d: Arc<Daemon>) {
    tokio::spawn(async move {
        let mut rx = d.ha().subscribe();
        let mut state = State {
            fences: crate::ha::take_fence_records(&d.config().data_dir),
            ..State::default()
        };
        loop {
            let _ = tokio::time::timeout(PERIOD, rx.changed()).await;
            let view = rx.borrow_and_update().clone();
            if let Err(e) = step(&d, &view, &mut state).await {
                tracing::warn!("HA monitor: {e}");
            }
        }
    });
}

async fn step(d: &Arc<Daemon>, view: &AgentView, state: &mut State) -> Result<(), ApiError> {
    // Under survival rule 2 nobody reaches the statefile, so nobody can
    // take or grant the lock: the last holder stays the master, as XAPI's
    // does (the engine counts no stale slot, its own included).
    if view.lock_holder.is_some() || !view.online {
        state.last_holder = view.lock_holder.clone();
    }
    let view = &AgentView {
        lock_holder: view
            .lock_holder
            .clone()
            .or_else(|| if view.rule2 { state.last_holder.clone() } else { None }),
        ..view.clone()
    };
    if !view.online {
        state.proposing = None;
        // A new engine (a restart of the agent) starts from the default.
        state.tie = None;
        return Ok(());
    }
    fence_if_storage_lost_under_vms(d, view);
    let tie = super::tiebreak::current(d);
    if state.tie != Some(tie) && d.ha().send(Event::TieBreak(tie)).await {
        tracing::info!(network = tie.network, priority = tie.priority, "HA tie-break values");
        state.tie = Some(tie);
    }
    let Some(local) = super::local(d).await else {
        return Ok(());
    };
    let me = d.host_uuid().to_string();
    let address_of = |uuid: &str| local.index_of(uuid).map(|i| local.addresses[i].clone());
    // Election: one policy, shared with ha-sim (`lock::wants_lock`).
    // The last master: the global block's, else the database's.
    let last = view.last_master.clone().or_else(|| db_master(d));
    let election = ha_liveness::lock::Election {
        me: me.clone(),
        holder: view.lock_holder.clone(),
        sf_access: view.sf_access,
        last_master_live: last.as_ref().is_some_and(|m| view.liveset.contains(m)),
        last_master: last.clone(),
        wanted: state.wanted,
    };
    // A planned move of the master role (`pool.designate_new_master`):
    // the master lets go of the lock while the host it names is in the
    // liveset, and that host asks as if it were the last master; every
    // other host waits, as for a live last master. The lock's own rule
    // keeps one holder whoever asks.
    let handover = d.ha().handover();
    let want = match &handover {
        Some(Handover::Leaving { to }) if view.liveset.contains(to) => false,
        Some(Handover::Arriving) => ha_liveness::lock::wants_lock(&ha_liveness::lock::Election {
            last_master: Some(me.clone()),
            last_master_live: true,
            ..election
        }),
        _ => ha_liveness::lock::wants_lock(&election),
    };
    let done = match &handover {
        Some(Handover::Leaving { to }) => view.lock_holder.as_ref() == Some(to),
        Some(Handover::Arriving) => view.lock_holder.as_ref() == Some(&me),
        None => false,
    };
    if done {
        tracing::info!(holder = ?view.lock_holder, "the planned move of the master role is done");
        d.ha().set_handover(None, Duration::ZERO);
    }
    if want != state.wanted {
        tracing::info!(
            holder = ?view.lock_holder,
            last_master = ?last,
            "{} the master lock",
            if want { "proposing for" } else { "withdrawing from" }
        );
    }
    state.wanted = want;
    if state.proposing != Some(want)
        && d.ha()
            .send(if want {
                Event::ProposeMaster
            } else {
                Event::ReleaseMaster
            })
            .await
    {
        state.proposing = Some(want);
    }
    // Follow the lock.
    match (&view.lock_holder, d.role()) {
        (Some(holder), _) if *holder == me => {
            if !state.acting_master {
                take_over(d, &local.metadata).await?;
            }
            state.acting_master = true;
        }
        (Some(holder), role) => {
            state.acting_master = false;
            if let Some(address) = address_of(holder) {
                if role
                    != (Role::Member {
                        master_address: address.clone(),
                    })
                {
                    tracing::info!(master = %address, "following the master elected by HA");
                    d.follow_master(&address)
                        .await
                        .map_err(|e| ApiError::internal(e.to_string()))?;
                }
            }
        }
        _ => {}
    }
    if d.is_master() && view.lock_holder.as_deref() == Some(me.as_str()) {
        d.ha().restarts.kick();
        // Raised when survival rule 2 is in force: every live host lost
        // the statefile (a host alone without it is only logged, as xapi).
        if view.rule2 && !state.statefile_alerted {
            state.statefile_alerted = true;
            let body = "All live hosts have lost access to the HA statefile: HA keeps them alive while they all see each other, but cannot tell a dead host from an isolated one.";
            alert(d, Alert::StatefileLost, &pool_uuid(d), body.into()).await?;
        } else if !view.rule2 {
            state.statefile_alerted = false;
        }
    }
    report_fences(d, state).await;
    Ok(())
}

/// The uuid of the master in this host's copy of the database.
fn db_master(d: &Daemon) -> Option<String> {
    let m = d.model();
    let (_, pool) = m.pool()?;
    m.get::<HostRecord>(&pool.master).map(|h| h.uuid.clone())
}

/// A host kept alive without the heartbeat SR may stay only while that
/// harms nobody: its VMs cannot reach their disks, so when it runs any it
/// fences, and HA restarts them on hosts that have the storage. (Without
/// VMs it stays, as the seeds' table says; xhad would fence it anyway.)
///
/// Not a member under leases (`crate::lease`): its guests are paused
/// from its lease's deadline (real guests are killed a little later, and
/// the host reset if one does not exit: `driver::qemu::guard`), and the
/// master restarts their VMs elsewhere once the lease lapses. The member
/// stays in the pool, and its paused guests are killed or run again when
/// its storage comes back: a storage fault costs its VMs a restart at
/// most, not the host a fence. The master still fences: nobody else would
/// restart its own VMs while it holds the master's role.
fn fence_if_storage_lost_under_vms(d: &Daemon, view: &AgentView) {
    if !view.storage_lost || view.rule2 || !d.ha().watchdog.armed() {
        return;
    }
    if d.leases().active() && !d.is_master() {
        return;
    }
    let mut vms = d.driver().running();
    // The master also counts the VMs the pool places on it: its fence
    // guard may have killed their guests already (real guests die a
    // little after the lease's deadline), and while it is master with the
    // SR out of reach nobody can record them halted or restart them.
    if d.is_master() {
        let m = d.model();
        if let Some(me) = m.host.ref_of_uuid(d.host_uuid()) {
            for (_, v) in m.vm.iter() {
                if v.resident_on == me
                    && v.power_state != xapi_proto::records::PowerState::Halted
                    && !vms.contains(&v.uuid)
                {
                    vms.push(v.uuid.clone());
                }
            }
        }
    }
    if vms.is_empty() {
        return;
    }
    d.ha().watchdog.fence(&format!(
        "SM_STORAGE_LOST_UNDER_VMS: this host lost the heartbeat SR and runs {} VM(s) that cannot reach their disks; fencing so that HA restarts them on hosts with the storage",
        vms.len()
    ));
}

fn pool_uuid(d: &Daemon) -> String {
    d.model().pool().map(|(_, p)| p.uuid.clone()).unwrap_or_default()
}

/// The pool messages HA raises, with XAPI's names; each is about one
/// object of one class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alert {
    /// A host left the liveset and is declared dead.
    HostFailed,
    /// A host fenced itself (reported once it is back).
    HostWasFenced,
    /// Every live host lost the statefile (survival rule 2).
    StatefileLost,
    /// The pool can no longer tolerate its configured failures.
    PoolOvercommitted,
    /// The failures the pool can plan for dropped.
    PoolDropInPlanExistsFor,
    /// A protected VM could not be restarted.
    ProtectedVmRestartFailed,
}

impl Alert {
    /// XAPI's message name.
    pub fn name(self) -> &'static str {
        match self {
            Alert::HostFailed => "HA_HOST_FAILED",
            Alert::HostWasFenced => "HA_HOST_WAS_FENCED",
            Alert::StatefileLost => "HA_STATEFILE_LOST",
            Alert::PoolOvercommitted => "HA_POOL_OVERCOMMITTED",
            Alert::PoolDropInPlanExistsFor => "HA_POOL_DROP_IN_PLAN_EXISTS_FOR",
            Alert::ProtectedVmRestartFailed => "HA_PROTECTED_VM_RESTART_FAILED",
        }
    }

    /// The class of the object the message is about.
    pub fn class(self) -> &'static str {
        match self {
            Alert::HostFailed | Alert::HostWasFenced => "Host",
            Alert::StatefileLost | Alert::PoolOvercommitted | Alert::PoolDropInPlanExistsFor => "Pool",
            Alert::ProtectedVmRestartFailed => "VM",
        }
    }

    /// XAPI's priority: every HA alert is 1, the most urgent.
    pub fn priority(self) -> i64 {
        1
    }
}

/// Raise `alert` about the object `obj_uuid` as a pool message on the
/// master.
pub async fn alert(d: &Daemon, alert: Alert, obj_uuid: &str, body: String) -> Result<(), ApiError> {
    message(d, alert.name(), alert.priority(), alert.class(), obj_uuid, body).await
}

/// A pool message of any priority (XAPI's: 1 is the most urgent, 5 is
/// information).
pub async fn message(
    d: &Daemon,
    name: &str,
    priority: i64,
    cls: &str,
    obj_uuid: &str,
    body: String,
) -> Result<(), ApiError> {
    let record = MessageRecord {
        uuid: new_uuid(),
        name: name.to_string(),
        priority,
        cls: cls.to_string(),
        obj_uuid: obj_uuid.to_string(),
        timestamp: crate::ops::now_wire(),
        body,
    };
    d.write(|txn| {
        txn.put(&new_ref(), record);
        Ok(())
    })
    .await
}

async fn report_fences(d: &Arc<Daemon>, state: &mut State) {
    while let Some((ms, reason)) = state.fences.first().cloned() {
        let body = format!("This host fenced itself at {}: {reason}", utc(ms));
        let done = match d.role() {
            // A fenced former master is back with its old database and
            // role: until HA confirms it as master, another host may be,
            // and a message written here would be lost when it follows.
            Role::Master if super::master_unconfirmed(d) => false,
            Role::Master => alert(d, Alert::HostWasFenced, d.host_uuid(), body).await.is_ok(),
            Role::Member { master_address } => {
                let auth = crate::hostops::auth(d);
                let a = Alert::HostWasFenced;
                let params = vec![
                    json!(a.name()),
                    json!(a.priority()),
                    json!(a.class()),
                    json!(d.host_uuid()),
                    json!(body),
                ];
                d.peers()
                    .call(
                        &auth,
                        &master_address,
                        d.config().port,
                        "message.create",
                        params,
                        PEER_TIMEOUT,
                    )
                    .await
                    .is_ok()
            }
        };
        if !done {
            return;
        }
        tracing::info!("reported an earlier fence: {reason}");
        state.fences.remove(0);
    }
}

/// `2026-11-21 21:15:05.497 UTC` for milliseconds since the epoch.
fn utc(ms: u64) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second].[subsecond digits:3] UTC");
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| format!("unix time {ms} ms"))
}

/// Act as the pool master after winning the lock: start from the newest
/// database, record this host as master and live, and keep the metadata
/// file from now on.
async fn take_over(d: &Arc<Daemon>, metadata: &std::path::Path) -> Result<(), ApiError> {
    if d.is_master() {
        tracing::info!("this host holds the master lock");
    } else {
        tracing::warn!("this host won the master lock: taking over as pool master");
    }
    let path = metadata.to_path_buf();
    let io = d.io().clone();
    let read = tokio::task::spawn_blocking(move || crate::ha::metadata::read(&io, &path))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let enabled = |m: &crate::ha::metadata::Metadata| m.snapshot.pool.values().flatten().any(|p| p.ha_enabled);
    match read {
        Ok(Some(m)) if m.generation > d.model().generation && enabled(&m) => {
            let replica = d.model().generation;
            tracing::info!(
                generation = m.generation,
                replica,
                "the metadata file is newer than this host's replica"
            );
            d.adopt_metadata(m)
                .await
                .map_err(|e| ApiError::internal(e.to_string()))?;
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("cannot read the HA metadata file: {e}; starting from this host's replica"),
    }
    d.become_master().await.map_err(|e| ApiError::internal(e.to_string()))?;
    crate::ops::host::record_master_start(d).await?;
    if d.ha_enabled() {
        d.start_redo_log().await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn fence_times_read_as_utc() {
        assert_eq!(super::utc(1_795_295_705_497), "2026-11-21 21:15:05.497 UTC");
    }
}
