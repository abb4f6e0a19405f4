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
//! for the first that is not), one rotation at a time (and none beside an
//! HA change or a move of the master). A step that fails on a host stops
//! the rotation with XAPI's message (`CANNOT_CONTACT_HOST` when the host
//! does not answer); the
//! hosts keep accepting both secrets, and running `pool-secret-rotate`
//! again finishes it with the same pair (every step is idempotent). A
//! host the pool has forgotten meanwhile keeps the old secret, which the
//! pool no longer accepts once the rotation is done: it must be set up
//! again and joined. XAPI refuses a rotation while HA is on; here HA's
//! heartbeats take both secrets during the window, so it runs with HA on.

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
    // One at a time, and not beside an HA change or a move of the master.
    let Some(_busy) = d.pool_operation() else {
        return Err(ApiError::not_allowed(
            "Another pool operation (HA on or off, a move of the master, a secret rotation) is in progress.",
        ));
    };
    run(d).await.map(|()| json!(""))
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
    reseal_settings(d, &old, &new).await?;
    tokio::time::sleep(WINDOW).await;
    for host in members.iter().chain(&me) {
        tell(d, host, Step::Cleanup, &old, &new).await?;
    }
    tracing::info!("pool secret rotation: done; only the new secret is accepted");
    Ok(())
}

/// The pool's sealed settings (`secrets::SECRET_KEYS`: the webhook key,
/// the SMTP password) sealed again under the new secret, in one commit,
/// once every host signs with it: they were sealed under a key derived
/// from the old one, which no host keeps after the rotation.
async fn reseal_settings(d: &Daemon, old: &Secret, new: &Secret) -> Result<(), ApiError> {
    let (old, new) = (old.expose().to_string(), new.expose().to_string());
    d.write(|txn| {
        let Some((pool_ref, pool)) = txn.base().pool().map(|(r, p)| (r.clone(), p.clone())) else {
            return Ok(());
        };
        let again: Vec<(String, String)> = pool
            .other_config
            .iter()
            .filter(|(k, _)| crate::secrets::SECRET_KEYS.contains(&k.as_str()))
            .filter_map(|(k, v)| crate::secrets::reseal(&old, &new, k, v).map(|s| (k.clone(), s)))
            .collect();
        if !again.is_empty() {
            txn.update::<xapi_proto::records::PoolRecord>(&pool_ref, |p| p.other_config.extend(again));
        }
        Ok(())
    })
    .await
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
        .map_err(|e| {
            let offline = e.code == codes::HOST_OFFLINE;
            let e = failed(format!("{}: {}", e.code, e.params.join(" ")));
            // A host that does not answer: XAPI's code for it.
            if offline {
                ApiError::new(codes::CANNOT_CONTACT_HOST, vec![host_ref.clone()])
            } else {
                e
            }
        })
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

#[cfg(test)]
mod tests {
    use crate::api::call;
    use crate::daemon::Daemon;
    use crate::sessions::Principal;
    use serde_json::json;

    /// A one-host pool rotates again and again; each time only the newest
    /// secret is accepted.
    #[tokio::test]
    async fn a_pool_of_one_rotates_again_and_again() {
        let dir = tempfile::tempdir().unwrap();
        let d = Daemon::open(crate::daemon::tests::config(dir.path())).unwrap();
        let s = json!(d.sessions().open(Principal::User("root".into())));
        let mut seen = vec![d.pool_secret()];
        for _ in 0..3 {
            call(&d, "pool.rotate_secret", vec![s.clone()]).await.unwrap();
            let now = d.pool_secret();
            assert!(!seen.contains(&now));
            assert!(seen.iter().all(|old| !d.secrets().accepts(old)));
            assert_eq!(d.secrets().rotation(), None);
            seen.push(now);
        }
    }

    /// XAPI's precondition (every host live), and a host that does not
    /// answer half-way: the rotation stops with both secrets accepted, and
    /// once the host is gone from the pool, running it again finishes the
    /// same rotation.
    #[tokio::test]
    async fn a_host_down_stops_the_rotation_and_a_second_run_finishes_it() {
        use xapi_proto::records::HostRecord;
        let dir = tempfile::tempdir().unwrap();
        let d = Daemon::open(crate::daemon::tests::config(dir.path())).unwrap();
        let s = json!(d.sessions().open(Principal::User("root".into())));
        let ghost = pool_db::model::new_ref();
        let put = |live: bool| {
            let ghost = ghost.clone();
            move |txn: &mut pool_db::model::Txn| {
                txn.put(
                    &ghost,
                    HostRecord {
                        uuid: "ffffffff-0000-4000-8000-000000000009".into(),
                        name_label: "ghost".into(),
                        address: "127.0.0.1".into(),
                        live,
                        ..Default::default()
                    },
                );
                Ok(())
            }
        };
        d.write(put(false)).await.unwrap();
        let old = d.pool_secret();
        let e = call(&d, "pool.rotate_secret", vec![s.clone()]).await.unwrap_err();
        assert_eq!(
            (e.code.as_str(), e.params.clone()),
            ("CANNOT_CONTACT_HOST", vec![ghost.clone()])
        );
        assert_eq!((d.pool_secret(), d.secrets().rotation()), (old.clone(), None));
        // Marked live but not answering (nothing listens on its port).
        d.write(put(true)).await.unwrap();
        let e = call(&d, "pool.rotate_secret", vec![s.clone()]).await.unwrap_err();
        assert_eq!(e.code, "CANNOT_CONTACT_HOST");
        let (pending_old, pending_new) = d.secrets().rotation().expect("a rotation left pending");
        assert_eq!(pending_old.expose(), old);
        assert!(d.secrets().accepts(&old) && d.secrets().accepts(pending_new.expose()));
        // A join would learn half of it.
        let join = call(&d, "pool.join_request", vec![s.clone(), json!({}), json!([])])
            .await
            .unwrap_err();
        assert_eq!(join.code, "OPERATION_NOT_ALLOWED");
        // The host is forgotten; the second run finishes the same rotation.
        d.write(|txn| {
            txn.delete::<HostRecord>(&ghost);
            Ok(())
        })
        .await
        .unwrap();
        call(&d, "pool.rotate_secret", vec![s.clone()]).await.unwrap();
        assert_eq!(d.pool_secret(), pending_new.expose());
        assert!(!d.secrets().accepts(&old));
        assert_eq!(d.secrets().rotation(), None);
    }
}
