//! `GET /metrics`: this host's view of HA and the API's counters in
//! Prometheus' text format (issue 22), through the prometheus-client crate.
//!
//! The gauges are read from the host's state at each scrape (its HA agent,
//! its copy of the pool database), so a member answers for itself as
//! `xe pool-ha-status` does. Who may scrape is the server's business
//! (`server::metrics`).

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use xapi_proto::records::PowerState;

use crate::daemon::{Daemon, Role};

type Labels = Vec<(String, String)>;
/// What the agent saw of one peer: (uuid, ms since its heartbeat, ms since
/// its slot changed).
type PeerSeen = (String, Option<u64>, Option<u64>);

/// The reasons a host fences (xhad's names, as fence messages give
/// them), the labels of `pool_ha_recorded_fences` with `other`.
const FENCE_CODES: &[&str] = &[
    "SM_SURVIVALRULE_FAILED",
    "SM_FAULTHANDLER_TIMEOUT",
    "HB_FENCEREQUESTED",
    "WD_EXPIRED",
    "other",
];

/// The text a scrape gets.
pub fn render(d: &Daemon) -> String {
    let mut r = Registry::default();
    let view = d.ha().view();
    let seen = d.ha().seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let gauge = |r: &mut Registry, name: &str, help: &str, value: i64| {
        let g: Gauge = Gauge::default();
        g.set(value);
        r.register(name, help, g);
    };
    let m = d.model();
    let pool = m.pool().map(|(_, p)| p.clone()).unwrap_or_default();
    gauge(
        &mut r,
        "pool_ha_enabled",
        "HA is enabled on the pool",
        pool.ha_enabled.into(),
    );
    gauge(
        &mut r,
        "pool_ha_master",
        "This host is the pool's master",
        (d.role() == Role::Master).into(),
    );
    gauge(
        &mut r,
        "pool_ha_agent_online",
        "This host's HA agent is online (armed)",
        view.online.into(),
    );
    gauge(
        &mut r,
        "pool_ha_liveset_hosts",
        "Hosts in the liveset, as this host's agent holds it",
        view.liveset.len() as i64,
    );
    gauge(
        &mut r,
        "pool_ha_statefile_access",
        "This host reads and writes the statefile",
        view.sf_access.into(),
    );
    gauge(
        &mut r,
        "pool_ha_storage_lost",
        "This host is kept in the liveset without the statefile",
        view.storage_lost.into(),
    );
    let ages = |name: &str, help: &str, pick: fn(&PeerSeen) -> Option<u64>| {
        let family: Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>> = Family::default();
        for peer in &seen.peers {
            if let Some(ms) = pick(peer) {
                // Labelled by uuid: a host's name is any text a pool user
                // chose, and this crate writes label values unescaped.
                family
                    .get_or_create(&vec![("host_uuid".into(), peer.0.clone())])
                    .set(ms as f64 / 1000.0);
            }
        }
        (name.to_string(), help.to_string(), family)
    };
    for (name, help, family) in [
        ages(
            "pool_ha_peer_heartbeat_age_seconds",
            "Time since this host last heard each other host's heartbeat",
            |p| p.1,
        ),
        ages(
            "pool_ha_peer_slot_age_seconds",
            "Time since this host last saw each other host's statefile slot change",
            |p| p.2,
        ),
    ] {
        r.register(name, help, family);
    }
    let refused: Counter = Counter::default();
    refused.inc_by(view.refused);
    r.register(
        "pool_ha_refused_heartbeats",
        "Heartbeat packets refused (size, signature, sender, generation)",
        refused,
    );
    gauge(
        &mut r,
        "pool_ha_failures_to_tolerate",
        "The host failures the pool is configured to tolerate",
        pool.ha_host_failures_to_tolerate,
    );
    gauge(
        &mut r,
        "pool_ha_plan_exists_for",
        "The host failures the current failover plan survives",
        pool.ha_plan_exists_for,
    );
    gauge(
        &mut r,
        "pool_ha_overcommitted",
        "The pool is overcommitted",
        pool.ha_overcommitted.into(),
    );
    let protected: Family<Labels, Gauge> = Family::default();
    for state in ["running", "down"] {
        let _ = protected.get_or_create(&vec![("state".into(), state.into())]);
    }
    for (_, vm) in m.vm.iter().filter(|(_, v)| crate::planning::is_protected(v)) {
        let state = if vm.power_state == PowerState::Halted {
            "down"
        } else {
            "running"
        };
        protected.get_or_create(&vec![("state".into(), state.into())]).inc();
    }
    r.register("pool_ha_protected_vms", "Protected VMs by state", protected);
    gauge(
        &mut r,
        "pool_ha_database_generation",
        "The generation of this host's copy of the pool database (replication lag: the master's less a member's)",
        i64::try_from(m.generation).unwrap_or(i64::MAX),
    );
    // The restart executor's queue: protected VMs that should run and
    // do not (the master restarts them as capacity allows).
    let queue = m.vm.iter().filter(|(_, v)| crate::planning::awaits_restart(v)).count();
    gauge(
        &mut r,
        "pool_ha_restart_queue",
        "Protected VMs that should run and do not, waiting for the restart executor",
        queue as i64,
    );
    // Fences by reason: the HA_HOST_WAS_FENCED messages the pool keeps
    // (each host reports its own fence and reason once it is back).
    let fences: Family<Labels, Gauge> = Family::default();
    for code in FENCE_CODES {
        let _ = fences.get_or_create(&vec![("code".into(), (*code).into())]);
    }
    for (_, msg) in m.message.iter().filter(|(_, msg)| msg.name == "HA_HOST_WAS_FENCED") {
        let code = FENCE_CODES
            .iter()
            .find(|c| msg.body.contains(*c))
            .copied()
            .unwrap_or("other");
        fences.get_or_create(&vec![("code".into(), code.into())]).inc();
    }
    r.register(
        "pool_ha_recorded_fences",
        "Fences the pool's HA_HOST_WAS_FENCED messages record, by reason",
        fences,
    );
    drop(m);
    crate::metrics::api().register(&mut r);
    crate::metrics::ha().register(&mut r);
    let mut text = String::new();
    if encode(&mut text, &r).is_err() {
        text.clear();
    }
    text
}
