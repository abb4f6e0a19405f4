//! HA above the agent, acting on the pool: arming and disarming this host
//! and keeping its agent running, the tie-break values it reports, the
//! monitor (elections, following the master, alerts) and the master's
//! restart executor. The agent itself and its files are `crate::ha`.
//!
//! - [`leases`]: on every armed host, renewing its lease on the heartbeat
//!   SR, pausing and resuming its guests by it.
//! - [`monitor`]: master election, following the master, the statefile
//!   alert.
//! - [`restart`]: on the master, declaring hosts dead and restarting their
//!   protected VMs.
//! - [`tiebreak`]: what this host offers to the tie-break between equal
//!   partitions.
//!
//! The functions here arm a host (start its agent, persist `armed`, keep
//! the agent running across boots and statefile loss) and disarm it.

pub mod leases;
pub mod monitor;
pub mod restart;
pub mod tiebreak;

use std::sync::Arc;
use std::time::Duration;

use ha_liveness::{Event, Exit, Timeouts};
use xapi_proto::{codes, ApiError};

use crate::daemon::Daemon;
use crate::ha::agent::{Agent, AgentView, Setup};
use crate::ha::local::{self, HaLocal};

/// This host's HA configuration, if it has one.
pub async fn local(d: &Daemon) -> Option<HaLocal> {
    d.ha_local().await
}

async fn save_local(d: &Daemon, l: &HaLocal) -> Result<(), ApiError> {
    d.set_local_value(local::KEY, &l.to_json())
        .await
        .map_err(|e| ApiError::internal(format!("cannot record the HA configuration: {e}")))?;
    d.ha().set_armed(l.armed);
    Ok(())
}

/// How long to wait before trying again to join the liveset.
fn retry_pause(l: &HaLocal) -> Duration {
    Duration::from_secs(l.timeout_s.min(10))
}

/// Arm this host with `l`: record it, start the agent and keep it running,
/// and wait (bounded by the enable timeout) until it is online.
pub async fn arm(d: &Arc<Daemon>, l: HaLocal) -> Result<(), ApiError> {
    let timeouts = Timeouts::derive(l.timeout_s, l.lab)
        .map_err(|e| ApiError::invalid_value("ha-config:timeout", format!("{} ({e})", l.timeout_s)))?;
    stop_agent(d).await;
    save_local(d, &HaLocal { armed: true, ..l }).await?;
    keep_armed(d);
    let limit = Duration::from_millis(timeouts.enable_join) + Duration::from_secs(5);
    let mut rx = d.ha().subscribe();
    let online = tokio::time::timeout(limit, async {
        loop {
            if rx.borrow_and_update().online {
                return true;
            }
            if rx.changed().await.is_err() {
                return false;
            }
        }
    })
    .await;
    match online {
        Ok(true) => Ok(()),
        _ => Err(ApiError::bare(codes::HA_FAILED_TO_FORM_LIVESET)),
    }
}

/// Disarm this host: no agent, nothing armed, and not at the next boot
/// either.
pub async fn disarm(d: &Arc<Daemon>) -> Result<(), ApiError> {
    if let Some(l) = local(d).await {
        save_local(d, &HaLocal { armed: false, ..l }).await?;
    }
    if let Some(k) = d.ha().keeper.lock().unwrap_or_else(|p| p.into_inner()).take() {
        k.abort();
    }
    stop_agent(d).await;
    d.ha().watchdog.disarm();
    d.ha().set_emergency(None);
    Ok(())
}

/// Leave the liveset cleanly before a planned shutdown or reboot: this
/// host is marked excluded and disarmed, so the others neither fault nor
/// wait for it; it stays armed and rejoins at its next start.
pub async fn leave(d: &Arc<Daemon>) {
    if let Some(k) = d.ha().keeper.lock().unwrap_or_else(|p| p.into_inner()).take() {
        k.abort();
    }
    let mut rx = d.ha().subscribe();
    if d.ha().send(Event::Leave).await {
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while rx.borrow_and_update().running {
                if rx.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
    }
    stop_agent(d).await;
    d.ha().watchdog.disarm();
}

async fn stop_agent(d: &Daemon) {
    let agent = d.ha().agent.lock().await.take();
    if let Some(a) = agent {
        a.stop().await;
    }
}

/// At start-up: read whether this host is armed, and if so start its agent.
pub async fn boot(d: &Arc<Daemon>) {
    let armed = local(d).await.is_some_and(|l| l.armed);
    d.ha().set_armed(armed);
    if armed {
        keep_armed(d);
    }
}

/// Is this host an armed pool master that does not (yet) hold the master
/// lock? It must not change anything as master then: another host may have
/// been elected while it was away. A member that joins or is being removed
/// does not take the lock away (rule M in docs/HA.md). Under survival rule
/// 2 nobody reaches the statefile, so nobody can take or grant the lock:
/// the master stays the master, as XAPI's does.
pub fn master_unconfirmed(d: &Daemon) -> bool {
    let view = d.ha().view();
    d.ha().armed() && d.is_master() && !view.master_confirmed && !view.rule2
}

/// May an unconfirmed master still answer reads? Only while it is in a
/// liveset and has held the master lock since its engine started: the
/// master of a fault handler or a join, whose database is the pool's. A
/// master that has just booted (it may have been fenced, and another host
/// elected while it was away) has not, and its database may be stale.
pub fn serves_reads_unconfirmed(d: &Daemon) -> bool {
    let view = d.ha().view();
    view.online && view.confirmed_once
}

/// Keep the agent of an armed host running: at boot, after the statefile
/// came back, until HA is disabled. Starts the keeper unless it runs.
pub fn keep_armed(d: &Arc<Daemon>) {
    let mut keeper = d.ha().keeper.lock().unwrap_or_else(|p| p.into_inner());
    if keeper.as_ref().is_some_and(|k| !k.is_finished()) {
        return;
    }
    let d = d.clone();
    *keeper = Some(tokio::spawn(async move { keep(d).await }));
}

/// How the HA agent's log lines name a host: its name label, which any
/// pool admin sets and need not be unique, with control characters
/// replaced (a newline in a label must not forge a log line), and the
/// start of its uuid.
fn log_label(name: &str, uuid: &str) -> String {
    let name: String = name.chars().map(|c| if c.is_control() { '?' } else { c }).collect();
    let short: String = uuid.chars().take(8).collect();
    format!("{name} ({short})")
}

async fn keep(d: Arc<Daemon>) {
    loop {
        let Some(l) = local(&d).await.filter(|l| l.armed) else {
            return;
        };
        let names = {
            let m = d.model();
            let hosts = pool_db::model::Txn::new(&m).all::<xapi_proto::records::HostRecord>();
            l.hosts
                .iter()
                .map(|uuid| {
                    hosts
                        .iter()
                        .find(|(_, h)| &h.uuid == uuid && !h.name_label.is_empty())
                        .map_or_else(|| uuid.clone(), |(_, h)| log_label(&h.name_label, uuid))
                })
                .collect()
        };
        let setup = Setup {
            names,
            local: l.clone(),
            me: d.host_uuid().to_string(),
            daemon_boot: d.leases().boot(),
            secret: d.secrets().clone(),
            bind: Some(d.config().bind_address.clone()),
            io: d.io().clone(),
            watchdog: d.ha().watchdog.clone(),
            view: d.ha().view.clone(),
            seen: d.ha().seen.clone(),
        };
        d.ha().view.send_replace(AgentView::default());
        let mut rx = d.ha().subscribe();
        match Agent::start(setup).await {
            Ok(a) => *d.ha().agent.lock().await = Some(a),
            Err(e) => {
                tracing::error!("cannot start the HA agent: {e}");
                d.ha()
                    .set_emergency(Some(ApiError::bare(codes::HA_HEARTBEAT_DAEMON_STARTUP_FAILED)));
                tokio::time::sleep(retry_pause(&l)).await;
                continue;
            }
        }
        // Wait for the engine to stop (it may run for months).
        let exit = loop {
            {
                let v = rx.borrow_and_update();
                if v.online {
                    d.ha().set_emergency(None);
                }
                if v.status.ended() {
                    break v.exit;
                }
            }
            if rx.changed().await.is_err() {
                return;
            }
        };
        d.ha().agent.lock().await.take();
        match exit {
            Some(Exit::CannotAccessStatefile) => {
                tracing::warn!("cannot reach the statefile: this host stays out of the pool and tries again");
                d.ha()
                    .set_emergency(Some(ApiError::bare(codes::HA_HOST_CANNOT_ACCESS_STATEFILE)));
            }
            Some(Exit::InvalidPoolState) | Some(Exit::GenerationMismatch) => {
                tracing::info!("HA was disabled in this pool: this host disarms");
                let _ = save_local(&d, &HaLocal { armed: false, ..l }).await;
                d.ha().watchdog.disarm();
                d.ha().set_emergency(None);
                return;
            }
            Some(Exit::Requested) | None => return,
            Some(other) => {
                tracing::warn!("the HA agent could not join the liveset: {}", other.name());
                d.ha()
                    .set_emergency(Some(ApiError::bare(codes::HA_HEARTBEAT_DAEMON_STARTUP_FAILED)));
            }
        }
        tokio::time::sleep(retry_pause(&l)).await;
    }
}

#[cfg(test)]
mod log_label_tests {
    #[test]
    fn a_label_cannot_forge_a_log_line_and_names_its_host() {
        let l = super::log_label("web\nHA: liveset {}", "0123abcd-0000-4000-8000-000000000001");
        assert_eq!(l, "web?HA: liveset {} (0123abcd)");
        assert_eq!(super::log_label("server1", "ab"), "server1 (ab)");
    }
}
