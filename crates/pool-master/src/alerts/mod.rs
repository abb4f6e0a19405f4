//! Alerts: pool messages delivered to people and programs, on the master.
//!
//! A message whose priority is at most a target's threshold goes to that
//! target (XAPI's priorities: 1 is the most urgent, 5 information):
//!
//! - **mail**, as XenServer's `mail-alarm` configures it through the pool's
//!   `other_config`: `mail-destination` (one or more addresses, comma
//!   separated), `ssmtp-mailhub` (`host[:port]`, port 25 by default),
//!   `mail-min-priority` (default 3), `mail-sender` (default
//!   `noreply@<this host's name>`), and ssmtp's macro keys
//!   `ssmtp-usetls` / `ssmtp-usestarttls` (`YES`) and `ssmtp-authuser` /
//!   `ssmtp-authpass` (sealed, `crate::secrets`). Sent by `lettre` over
//!   rustls ([`mail`]).
//! - **a webhook**, pool-ha's own keys: `pool-ha-webhook-url` (`http://`
//!   or `https://`), `pool-ha-webhook-secret` (sealed; required: nothing is
//!   sent unsigned), `pool-ha-webhook-min-priority` (default 3). A JSON
//!   POST signed with HMAC-SHA256 ([`webhook`]).
//!
//! The sender follows the event log (`crate::events`) for new `message`
//! rows, woken by every commit: it reads the database's committed state
//! and never takes the write lock, and each delivery runs as a task of its
//! own, so a slow or absent target delays neither commits nor other
//! deliveries. A delivery makes at most [`ATTEMPTS`] attempts, waiting
//! 1, 2, 4, 8 s between them (a permanent refusal ends it at once), each
//! attempt bounded by the target's time limits; at most [`MAX_PENDING`]
//! deliveries are under way at once (more are recorded as `skipped`). Every
//! attempt is recorded in this host's journal (`crate::journal`, `xe
//! alert-delivery-list`) and logged, never with a secret: targets are
//! named by scheme, host and port only.
//!
//! Only the master sends. A host that becomes master (at its start, or
//! elected by HA) also sends the messages of the last [`BACKLOG`] that it
//! has no attempt of: a message the old master raised just before it
//! failed is not lost, at the price of a possible second copy.

pub mod mail;
pub mod webhook;

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use xapi_proto::records::MessageRecord;

use crate::daemon::Daemon;
use crate::journal::DeliveryRow;

/// Attempts per delivery, at most.
pub const ATTEMPTS: u32 = 5;
/// Deliveries under way at once, at most.
pub const MAX_PENDING: usize = 256;
/// How far back a new master looks for messages to send.
pub const BACKLOG: Duration = Duration::from_secs(60);
/// The default threshold of both targets (XAPI's `mail-min-priority`).
pub const DEFAULT_MIN_PRIORITY: i64 = 3;
/// Message uuids remembered as sent, against sending one twice.
const SEEN: usize = 4096;

/// Why an attempt failed, and whether another may succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub detail: String,
    pub retry: bool,
}

impl Failure {
    pub fn transient(detail: impl Into<String>) -> Failure {
        Failure {
            detail: detail.into(),
            retry: true,
        }
    }

    pub fn permanent(detail: impl Into<String>) -> Failure {
        Failure {
            detail: detail.into(),
            retry: false,
        }
    }
}

/// A message as the targets send it, with the pool it came from.
#[derive(Debug, Clone)]
pub struct Alert {
    pub message: MessageRecord,
    pub pool_uuid: String,
    pub pool_name: String,
}

/// Where alerts go, read from the pool's `other_config`.
#[derive(Debug, Clone)]
pub enum Target {
    Mail(mail::Mail),
    Webhook(webhook::Webhook),
}

impl Target {
    /// The target as the journal and the log name it (no secrets).
    pub fn label(&self) -> String {
        match self {
            Target::Mail(m) => m.label(),
            Target::Webhook(w) => w.label(),
        }
    }

    async fn attempt(&self, alert: &Alert, attempt: u32) -> Result<String, Failure> {
        match self {
            Target::Mail(m) => m.send(alert).await,
            Target::Webhook(w) => w.send(alert, attempt).await,
        }
    }
}

/// The targets a message of `priority` goes to, from the pool's settings:
/// each target, or why it is configured but cannot be used (as the label
/// and the reason).
pub fn targets(
    other_config: &std::collections::BTreeMap<String, String>,
    pool_secret: &str,
    priority: i64,
) -> Vec<Result<Target, (String, String)>> {
    let threshold = |key: &str| {
        other_config
            .get(key)
            .and_then(|v| v.trim().parse::<i64>().ok())
            .unwrap_or(DEFAULT_MIN_PRIORITY)
    };
    let mut out = Vec::new();
    if other_config.contains_key("mail-destination") && priority <= threshold("mail-min-priority") {
        out.push(mail::Mail::from_settings(other_config, pool_secret).map(Target::Mail));
    }
    if other_config.contains_key("pool-ha-webhook-url") && priority <= threshold("pool-ha-webhook-min-priority") {
        out.push(webhook::Webhook::from_settings(other_config, pool_secret).map(Target::Webhook));
    }
    out
}

/// Start the sender (every host runs it; it acts only as master).
pub fn spawn(d: Arc<Daemon>) {
    tokio::spawn(async move {
        let pending = Arc::new(AtomicUsize::new(0));
        let mut commits = d.watch_generation();
        let mut roles = d.watch_role();
        let mut cursor: Option<u64> = None;
        let mut seen = Seen::default();
        loop {
            if !d.is_master() {
                cursor = None;
            } else {
                let from = match cursor {
                    Some(c) => c,
                    None => {
                        let c = d.events().end();
                        for m in backlog(&d).await {
                            send(&d, m, &pending, &mut seen);
                        }
                        c
                    }
                };
                cursor = Some(match d.events().after(from, 4096, |class, _| class == "message") {
                    Ok((changes, next)) => {
                        for c in changes.iter().filter(|c| c.op == crate::events::Op::Add) {
                            let message = d.model().message.get(&c.reference).cloned();
                            if let Some(m) = message {
                                send(&d, m, &pending, &mut seen);
                            }
                        }
                        next
                    }
                    Err(lost) => {
                        tracing::warn!(
                            ?lost,
                            "the alert sender lost its place in the event log; going on from now"
                        );
                        d.events().end()
                    }
                });
            }
            // A commit, a change of role, or at least every 2 s.
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                tokio::select! {
                    _ = commits.changed() => {}
                    _ = roles.changed() => {}
                }
            })
            .await;
        }
    });
}

/// Messages stamped in the last [`BACKLOG`] that this host never tried.
async fn backlog(d: &Daemon) -> Vec<MessageRecord> {
    let now_s = i64::try_from(crate::clock::unix_ms() / 1000).unwrap_or(i64::MAX);
    let recent: Vec<MessageRecord> = d
        .model()
        .message
        .iter()
        .filter(|(_, m)| {
            crate::clock::parse_wire(&m.timestamp).is_some_and(|t| now_s.saturating_sub(t) <= BACKLOG.as_secs() as i64)
        })
        .map(|(_, m)| m.clone())
        .collect();
    let mut out = Vec::new();
    for m in recent {
        match d.journal().attempted(m.uuid.clone()).await {
            Ok(false) => out.push(m),
            Ok(true) => {}
            Err(e) => tracing::warn!("cannot read the delivery record: {e}"),
        }
    }
    out
}

/// The message uuids sent lately.
#[derive(Default)]
struct Seen {
    order: VecDeque<String>,
    set: HashSet<String>,
}

impl Seen {
    /// Remember `uuid`; false if it was already there.
    fn insert(&mut self, uuid: &str) -> bool {
        if !self.set.insert(uuid.to_string()) {
            return false;
        }
        self.order.push_back(uuid.to_string());
        while self.order.len() > SEEN {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }
}

/// Start delivering `message` to every target its priority reaches.
fn send(d: &Arc<Daemon>, message: MessageRecord, pending: &Arc<AtomicUsize>, seen: &mut Seen) {
    if !seen.insert(&message.uuid) {
        return;
    }
    let (other_config, pool_uuid, pool_name) = match d.model().pool() {
        Some((_, p)) => (p.other_config.clone(), p.uuid.clone(), p.name_label.clone()),
        None => return,
    };
    let found = targets(&other_config, &d.pool_secret(), message.priority);
    let alert = Arc::new(Alert {
        message,
        pool_uuid,
        pool_name,
    });
    for target in found {
        let target = match target {
            Ok(t) => t,
            Err((label, why)) => {
                record(d, &alert, &label, 1, "failed", &why);
                continue;
            }
        };
        if pending.fetch_add(1, Ordering::SeqCst) >= MAX_PENDING {
            pending.fetch_sub(1, Ordering::SeqCst);
            record(
                d,
                &alert,
                &target.label(),
                0,
                "skipped",
                &format!("{MAX_PENDING} deliveries are under way already"),
            );
            continue;
        }
        let (d, alert, pending) = (d.clone(), alert.clone(), pending.clone());
        tokio::spawn(async move {
            deliver(&d, &target, &alert).await;
            pending.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// The wait before attempt `n + 1` (after attempt `n` failed).
pub fn backoff(n: u32) -> Duration {
    Duration::from_secs(1u64 << n.saturating_sub(1).min(4)).min(Duration::from_secs(30))
}

/// Up to [`ATTEMPTS`] attempts, each recorded.
async fn deliver(d: &Daemon, target: &Target, alert: &Alert) {
    let label = target.label();
    for n in 1..=ATTEMPTS {
        match target.attempt(alert, n).await {
            Ok(answer) => {
                record(d, alert, &label, n, "delivered", &answer);
                return;
            }
            Err(f) if f.retry && n < ATTEMPTS => {
                let wait = backoff(n);
                record(
                    d,
                    alert,
                    &label,
                    n,
                    "retrying",
                    &format!("{} (next attempt in {} s)", f.detail, wait.as_secs()),
                );
                tokio::time::sleep(wait).await;
            }
            Err(f) => {
                record(d, alert, &label, n, "failed", &f.detail);
                return;
            }
        }
    }
}

/// Journal and log one attempt.
fn record(d: &Daemon, alert: &Alert, target: &str, attempt: u32, outcome: &str, detail: &str) {
    let m = &alert.message;
    if outcome == "delivered" {
        tracing::info!(message = %m.name, uuid = %m.uuid, target, attempt, "alert delivered");
    } else {
        tracing::warn!(message = %m.name, uuid = %m.uuid, target, attempt, outcome, detail, "alert not delivered");
    }
    d.journal().delivery(DeliveryRow {
        id: 0,
        at_ms: i64::try_from(crate::clock::unix_ms()).unwrap_or(i64::MAX),
        message_uuid: m.uuid.clone(),
        message_name: m.name.clone(),
        target: target.to_string(),
        attempt: i64::from(attempt),
        outcome: outcome.to_string(),
        detail: detail.to_string(),
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn config(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn thresholds_pick_the_targets_as_xapi_does() {
        let secret = crate::secrets::seal("s", "pool-ha-webhook-secret", "k");
        let c = config(&[
            ("mail-destination", "root@localhost"),
            ("ssmtp-mailhub", "127.0.0.1:2525"),
            ("pool-ha-webhook-url", "http://127.0.0.1:9/hook"),
            ("pool-ha-webhook-secret", &secret),
            ("pool-ha-webhook-min-priority", "1"),
        ]);
        let labels = |p: i64| -> Vec<String> {
            targets(&c, "s", p)
                .into_iter()
                .map(|t| t.map(|t| t.label()).unwrap_or_else(|(l, why)| format!("{l}: {why}")))
                .collect()
        };
        assert_eq!(
            labels(1),
            ["smtp 127.0.0.1:2525 to root@localhost", "webhook http://127.0.0.1:9"]
        );
        // mail-min-priority defaults to 3, as in mail-alarm.
        assert_eq!(labels(3), ["smtp 127.0.0.1:2525 to root@localhost"]);
        assert!(labels(4).is_empty());
        // Nothing configured, nothing sent.
        assert!(targets(&BTreeMap::new(), "s", 1).is_empty());
        // Configured but unusable: the reason, never the secret.
        let bad = config(&[
            ("mail-destination", "root@localhost"),
            ("pool-ha-webhook-url", "ftp://x"),
            ("pool-ha-webhook-secret", "plain"),
        ]);
        let why: Vec<String> = targets(&bad, "s", 1)
            .into_iter()
            .map(|t| t.map(|t| t.label()).unwrap_err().1)
            .collect();
        assert!(why[0].contains("ssmtp-mailhub"), "{why:?}");
        assert!(why[1].contains("http"), "{why:?}");
    }

    #[test]
    fn backoff_doubles_and_is_bounded() {
        let waits: Vec<u64> = (1..ATTEMPTS).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8]);
        assert_eq!(backoff(40), Duration::from_secs(16));
    }

    #[test]
    fn a_message_is_sent_once() {
        let mut s = Seen::default();
        assert!(s.insert("a"));
        assert!(!s.insert("a"));
        for i in 0..SEEN {
            s.insert(&i.to_string());
        }
        assert!(s.insert("a"), "forgotten after SEEN others");
        assert!(s.order.len() <= SEEN);
    }
}
