//! Storage reachability as pool state: every host probes the SRs it has a
//! PBD for, and the master records the answer in the PBD's
//! `currently_attached` (false as XAPI's is after a failed plug).
//!
//! Restart placement, migration, `check_host` and the failover planner
//! already count a host only for the SRs it has an attached PBD for, so a
//! host that lost an SR is skipped by all of them until its probe succeeds
//! again. A probe writes, syncs and removes a small file in the SR's
//! directory through this host's I/O gate (a fenced host or, in the lab, a
//! cut storage fails it at once); a probe that does not finish in
//! [`PROBE_TIMEOUT`] (a hung NFS server) counts as failed, and a PBD whose
//! probe still hangs is not probed again until it returns.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use xapi_proto::records::PbdRecord;
use xapi_proto::ApiError;

use crate::daemon::Daemon;
use crate::peers::PEER_TIMEOUT;

/// How often each PBD is probed.
pub const PROBE_PERIOD: Duration = Duration::from_secs(2);
/// How long a probe may take before the SR counts as unreachable.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Start probing this host's PBDs in the background, for as long as the
/// process runs.
pub fn spawn(d: Arc<Daemon>) {
    tokio::spawn(async move {
        let in_flight: Arc<Mutex<HashSet<String>>> = Arc::default();
        let mut seen = HashMap::new();
        loop {
            tokio::time::sleep(PROBE_PERIOD).await;
            probe_all(&d, &in_flight, &mut seen).await;
        }
    });
}

/// This host's PBDs: (reference, record).
fn my_pbds(d: &Daemon) -> Vec<(String, PbdRecord)> {
    let Some(me) = d.host_ref() else { return Vec::new() };
    d.model()
        .pbd
        .iter()
        .filter(|(_, p)| p.host == me)
        .map(|(r, p)| (r.clone(), p.clone()))
        .collect()
}

/// Probe every PBD of this host; report to the master each answer its
/// database does not hold yet (again at every round until it does). The
/// log says each change once (`seen`: the last answer per PBD).
async fn probe_all(d: &Arc<Daemon>, in_flight: &Arc<Mutex<HashSet<String>>>, seen: &mut HashMap<String, bool>) {
    for (pbd_ref, pbd) in my_pbds(d) {
        let Some(location) = pbd.device_config.get("location").map(PathBuf::from) else {
            continue;
        };
        let reachable = probe(d, &pbd_ref, &location, in_flight).await;
        if seen.insert(pbd_ref.clone(), reachable) != Some(reachable) && reachable != pbd.currently_attached {
            if reachable {
                tracing::info!(sr = %location.display(), "the SR is reachable again");
            } else {
                tracing::warn!(sr = %location.display(), "the SR cannot be reached: its PBD is unplugged");
            }
        }
        if reachable == pbd.currently_attached {
            continue;
        }
        if let Err(e) = report(d, &pbd_ref, reachable).await {
            tracing::debug!("cannot record the SR's reachability with the master yet: {e}");
        }
    }
}

/// Can this host write to the SR at `location` now?
async fn probe(d: &Daemon, pbd_ref: &str, location: &Path, in_flight: &Arc<Mutex<HashSet<String>>>) -> bool {
    if d.driver().gate().is_err() {
        return false;
    }
    if !in_flight
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(pbd_ref.to_string())
    {
        return false;
    }
    let file = location.join(format!(".pool-ha-probe-{}", d.host_uuid()));
    let (in_flight, key) = (in_flight.clone(), pbd_ref.to_string());
    let task = tokio::task::spawn_blocking(move || {
        let ok = write_and_remove(&file).is_ok();
        in_flight.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
        ok
    });
    matches!(tokio::time::timeout(PROBE_TIMEOUT, task).await, Ok(Ok(true)))
}

fn write_and_remove(file: &Path) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(file)?;
    f.write_all(b"probe\n")?;
    f.sync_all()?;
    std::fs::remove_file(file)
}

/// Record the answer: on the master directly, else through it.
async fn report(d: &Arc<Daemon>, pbd_ref: &str, reachable: bool) -> Result<(), ApiError> {
    if d.is_master() {
        return set_attached(d, d.host_uuid(), pbd_ref, reachable).await;
    }
    d.peers()
        .call(
            &crate::hostops::auth(d),
            &d.master_address(),
            d.config().port,
            "host.report_pbd_reachability",
            vec![json!(pbd_ref), json!(reachable)],
            PEER_TIMEOUT,
        )
        .await
        .map(|_| ())
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// Set `currently_attached` of the PBD `pbd_ref`, which must belong to the
/// host `host_uuid` (a host reports its own PBDs only).
pub async fn set_attached(d: &Daemon, host_uuid: &str, pbd_ref: &str, reachable: bool) -> Result<(), ApiError> {
    d.write(|txn| {
        let pbd = txn
            .get::<PbdRecord>(pbd_ref)
            .ok_or_else(|| ApiError::handle_invalid("PBD", pbd_ref))?;
        let owner = txn
            .get::<xapi_proto::records::HostRecord>(&pbd.host)
            .map(|h| h.uuid)
            .unwrap_or_default();
        if owner != host_uuid {
            return Err(ApiError::new(
                xapi_proto::codes::PERMISSION_DENIED,
                vec!["a host reports the reachability of its own PBDs only".into()],
            ));
        }
        if pbd.currently_attached != reachable {
            txn.update::<PbdRecord>(pbd_ref, |p| p.currently_attached = reachable);
        }
        Ok(())
    })
    .await
}
