//! `pool.rotate_secret` (xe `pool-secret-rotate`): a new pool secret,
//! handed to every host without a moment where one refuses another, as
//! XAPI's pool secret rotation does (`xapi_psr.ml`).
//!
//! The master makes the new secret and tells every host (itself first)
//! to accept it beside the old one (`host.notify_accept_new_pool_secret`),
//! then to prove itself with it (`host.notify_send_new_pool_secret`),
//! then, after [`WINDOW`], every member and last itself to accept only the
//! new one (`host.cleanup_pool_secret`). The calls go over the hosts' TLS
//! with pinned certificates, in member sessions. While the steps run
//! every host accepts what every other sends, so no call between hosts
//! and no HA heartbeat is refused (HA's agents check heartbeats against
//! every accepted secret).
//!
//! XAPI's checks: the master only, every host live (`CANNOT_CONTACT_HOST`
//! for the first that is not), one rotation at a time. A step that fails
//! on a host (it went down) stops the rotation with XAPI's message; the
//! hosts keep accepting both secrets, and running `pool-secret-rotate`
//! again finishes it with the same pair (every step is idempotent). A
//! host the pool has forgotten meanwhile keeps the old secret, which the
//! pool no longer accepts once the rotation is done: it must be set up
//! again and joined. XAPI refuses a rotation while HA is on; here HA's
//! heartbeats take both secrets during the window, so it runs with HA on.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use xapi_proto::records::HostRecord;
use xapi_proto::{codes, ApiError};

use super::Args;
use crate::daemon::Daemon;
use crate::hostops::Target;
use crate::peers::PEER_TIMEOUT;
use crate::secret::{Secret, SecretError};

/// The methods served here.
pub const METHODS: &[&str] = &[
    "pool.rotate_secret",
    "host.notify_accept_new_pool_secret",
    "host.notify_send_new_pool_secret",
    "host.cleanup_pool_secret",
];

/// How long every host sends the new secret while all still accept the
/// old one: a heartbeat or call signed before a host switched has arrived.
pub const WINDOW: Duration = Duration::from_secs(1);

/// A rotation is running on this master.
static RUNNING: AtomicBool = AtomicBool::new(false);

#[derive(Clone, Copy, Debug)]
enum Step {
    Accept,
    Send,
    Cleanup,
}

impl Step {
    fn method(self) -> &'static str {
        match self {
            Step::Accept => "host.notify_accept_new_pool_secret",
            Step::Send => "host.notify_send_new_pool_secret",
            Step::Cleanup => "host.cleanup_pool_secret",
        }
    }

    /// XAPI's message when the step failed on host `name`.
    fn failed(self, name: &str) -> String {
        match self {
            Step::Accept => format!("Operation to tell {name} to begin accepting new pool secret failed."),
            Step::Send => format!("Operation to tell {name} to begin sending new pool secret failed."),
            Step::Cleanup => {
                format!("{name} encountered an error whilst cleaning up after a pool secret rotation.")
            }
        }
    }

    fn run(self, d: &Daemon, old: &Secret, new: &Secret) -> Result<(), SecretError> {
        let s = d.secrets();
        match self {
            Step::Accept => s.accept_new(old, new),
            Step::Send => s.send_new(old, new),
            Step::Cleanup => s.cleanup(old, new),
        }
    }
}

/// `pool.rotate_secret(session)`, on the master.
pub async fn rotate(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    args.exactly(1)?;
    if RUNNING.swap(true, Ordering::SeqCst) {
        return Err(ApiError::internal("pool secret rotation already running"));
    }
    let result = run(d).await;
    RUNNING.store(false, Ordering::SeqCst);
    result.map(|()| json!(""))
}

async fn run(d: &Arc<Daemon>) -> Result<(), ApiError> {
    // Every host live (XAPI's check), the master first.
    let (me, members) = {
        let m = d.model();
        let mut hosts: Vec<(String, HostRecord)> = m.host.iter().map(|(r, h)| (r.to_string(), h.clone())).collect();
        hosts.sort_by(|a, b| a.1.uuid.cmp(&b.1.uuid));
        if let Some((r, _)) = hosts.iter().find(|(_, h)| !h.live) {
            return Err(ApiError::new(codes::CANNOT_CONTACT_HOST, vec![r.clone()]));
        }
        let (me, members): (Vec<_>, Vec<_>) = hosts.into_iter().partition(|(_, h)| h.uuid == d.host_uuid());
        (me, members)
    };
    // An unfinished rotation's pair, else a new one.
    let (old, new) = d
        .secrets()
        .rotation()
        .unwrap_or_else(|| (d.secrets().current(), Secret::fresh()));
    tracing::info!(hosts = me.len() + members.len(), "pool secret rotation: begins");
    for step in [Step::Accept, Step::Send] {
        for host in me.iter().chain(&members) {
            tell(d, host, step, &old, &new).await?;
        }
    }
    tokio::time::sleep(WINDOW).await;
    for host in members.iter().chain(&me) {
        tell(d, host, Step::Cleanup, &old, &new).await?;
    }
    tracing::info!("pool secret rotation: done; only the new secret is accepted");
    Ok(())
}

/// Run `step` on `host`: here directly, on a member by a call.
async fn tell(
    d: &Daemon,
    (host_ref, host): &(String, HostRecord),
    step: Step,
    old: &Secret,
    new: &Secret,
) -> Result<(), ApiError> {
    let failed = |detail: String| {
        tracing::error!(host = %host.name_label, "pool secret rotation: {detail}");
        ApiError::internal(step.failed(&host.name_label))
    };
    if host.uuid == d.host_uuid() {
        return step.run(d, old, new).map_err(|e| failed(e.to_string()));
    }
    let target = Target::new(host_ref, host);
    let params = vec![json!(host_ref), json!(old.expose()), json!(new.expose())];
    crate::hostops::call(d, &target, step.method(), params, PEER_TIMEOUT)
        .await
        .map(|_| ())
        .map_err(|e| failed(format!("{}: {}", e.code, e.params.join(" "))))
}

/// `host.notify_accept_new_pool_secret`, `host.notify_send_new_pool_secret`,
/// `host.cleanup_pool_secret` `(session, host, old_ps, new_ps)`: a step on
/// this host, for the master.
pub async fn notify(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    args.exactly(4)?;
    let step = match args.method().rsplit('.').next() {
        Some("notify_accept_new_pool_secret") => Step::Accept,
        Some("notify_send_new_pool_secret") => Step::Send,
        _ => Step::Cleanup,
    };
    let host = args.str(1, "host")?;
    if d.host_ref().as_deref() != Some(host) {
        return Err(ApiError::invalid_value("host", "not this host"));
    }
    let secret = |i: usize, name: &str| {
        args.str(i, name)
            .and_then(|t| Secret::parse(t).ok_or_else(|| ApiError::invalid_value(name, "not a pool secret")))
    };
    let (old, new) = (secret(2, "old_ps")?, secret(3, "new_ps")?);
    step.run(d, &old, &new).map_err(|e| {
        tracing::error!("pool secret rotation: {e}");
        ApiError::internal(e.to_string())
    })?;
    tracing::info!(step = ?step, "pool secret rotation: step done on this host");
    Ok(json!(""))
}
