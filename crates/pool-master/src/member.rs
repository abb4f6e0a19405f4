//! The background work of a host: a member following its master, and the
//! master watching its members.
//!
//! A member says hello to the master (so VMs that died with its previous run
//! are marked halted), then long-polls `pool.sync_database` and applies what
//! comes back. The master marks members that stopped calling as not live.
//! Both loops run until the process ends (each does nothing while the host
//! has the other role); each wait is bounded.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::daemon::{Daemon, Role};
use crate::peers::{PeerAuth, PEER_TIMEOUT};
use pool_db::replication::{self, Update};

/// How long a member's sync call waits for a new commit.
const SYNC_WAIT: Duration = Duration::from_secs(5);
/// Pause after a failed call to the master.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// Start the member loop in the background.
pub fn spawn(d: Arc<Daemon>) {
    tokio::spawn(async move { run(d).await });
}

async fn run(d: Arc<Daemon>) {
    let mut said_hello_to = None;
    let mut synced_with: Option<String> = None;
    let mut failures = 0u64;
    let mut role = d.watch_role();
    loop {
        let Role::Member { master_address } = d.role() else {
            // The master has nothing to follow; wait for a change of role.
            let _ = role.changed().await;
            continue;
        };
        if d.ha().emergency().is_some() || armed_but_not_online(&d).await {
            // An armed host joins the pool only through the liveset.
            tokio::time::sleep(RETRY_PAUSE).await;
            continue;
        }
        let auth = PeerAuth {
            host_uuid: d.host_uuid().to_string(),
            secret: d.pool_secret(),
        };
        if said_hello_to.as_ref() != Some(&master_address) {
            let snapshot = d.driver().snapshot();
            let params = vec![
                json!(d.host_uuid()),
                json!(d.config().address),
                json!(d.config().memory_total),
                json!(snapshot.running),
                json!(snapshot.next_domid),
                json!(snapshot.driver),
                json!(d.identity().summary()),
            ];
            match d
                .peers()
                .call(
                    &auth,
                    &master_address,
                    d.config().port,
                    "host.member_hello",
                    params,
                    PEER_TIMEOUT,
                )
                .await
            {
                Ok(strays) => {
                    said_hello_to = Some(master_address.clone());
                    let strays: Vec<String> = serde_json::from_value(strays).unwrap_or_default();
                    crate::ops::host::stop_strays(&d, &strays, &snapshot).await;
                }
                Err(e) => {
                    tracing::warn!(master = %master_address, "cannot reach the master: {e}");
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
            }
        }
        // A new master gets asked for a full copy (since 0): this replica
        // may have diverged from it (an old master coming back).
        let since = if synced_with.as_ref() == Some(&master_address) {
            d.model().generation
        } else {
            0
        };
        let params = vec![json!(since), json!(SYNC_WAIT.as_secs_f64())];
        let timeout = SYNC_WAIT + PEER_TIMEOUT;
        let sync = d.peers().call(
            &auth,
            &master_address,
            d.config().port,
            "pool.sync_database",
            params,
            timeout,
        );
        role.borrow_and_update();
        let answer = tokio::select! {
            a = sync => a,
            _ = role.changed() => continue,
        };
        match answer {
            Ok(answer) => match apply(&d, &answer).await {
                Ok(()) => {
                    failures = 0;
                    synced_with = Some(master_address);
                }
                Err(e) => {
                    tracing::error!("cannot apply the master's update: {e}");
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            },
            // The master role moved (`pool.designate_new_master`) and this
            // host was not told: the old master names the new one. With
            // HA on, the master lock says who leads instead.
            Err(xapi_client::ClientError::Api(e))
                if e.code == xapi_proto::codes::HOST_IS_SLAVE && !d.ha().armed() && !e.params.is_empty() =>
            {
                let to = e.params[0].clone();
                if d.model().host.iter().any(|(_, h)| h.address == to) && to != master_address {
                    tracing::info!(master = %to, "the master moved: following it");
                    if let Err(e) = d.follow_master(&to).await {
                        tracing::warn!("cannot record the new master: {e}");
                    }
                } else {
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
            Err(e) => {
                failures += 1;
                // Say it once, then every 20th time (10 s), not twice a second.
                if failures % 20 == 1 {
                    tracing::warn!(master = %master_address, failures, "sync failed: {e}");
                }
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }
}

/// Is this host armed for HA but not (yet) in the liveset?
async fn armed_but_not_online(d: &Daemon) -> bool {
    crate::failover::local(d).await.is_some_and(|l| l.armed) && !d.ha().view().online
}

/// Why a member could not apply what its master sent.
#[derive(Debug, thiserror::Error)]
enum ApplyError {
    #[error("the answer does not parse: {0}")]
    Decode(#[from] pool_db::replication::ReplicationError),
    #[error("the replica cannot take it: {0}")]
    Store(#[from] pool_db::store::StoreError),
}

async fn apply(d: &Daemon, answer: &serde_json::Value) -> Result<(), ApplyError> {
    // The master's term, for the event tokens of its clients.
    let term = answer.get("term").and_then(serde_json::Value::as_u64);
    match replication::decode_update(answer)? {
        Update::Commits(commits) => Ok(d.apply_replica(commits, term).await?),
        Update::Full {
            generation,
            snapshot,
            users,
        } => Ok(d.replace_replica(*snapshot, users, generation, term).await?),
    }
}

/// How often the master reviews its members' liveness.
const LIVENESS_PERIOD: Duration = Duration::from_secs(2);

/// Start the master's liveness watch in the background.
pub fn spawn_master_watch(d: Arc<Daemon>) {
    tokio::spawn(async move {
        {
            // Members get a full silence period of grace after a master start.
            let uuids: Vec<String> = d.model().host.iter().map(|(_, h)| h.uuid.clone()).collect();
            d.note_seen_if_unknown(uuids);
        }
        loop {
            tokio::time::sleep(LIVENESS_PERIOD).await;
            // With HA on, the liveset says who is live (`failover::monitor`).
            if !d.is_master() || d.ha_enabled() {
                continue;
            }
            if let Err(e) = crate::ops::host::refresh_liveness(&d).await {
                tracing::warn!("cannot record host liveness: {e}");
            }
        }
    });
}
