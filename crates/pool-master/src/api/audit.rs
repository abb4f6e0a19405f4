//! The audit log: every state-changing call an admin makes, with the
//! session's user, the method, its arguments (secrets masked by
//! `crate::secrets::mask_call`) and the result (`success` or the error
//! code), in the host log (target `audit`) and in this host's journal
//! (`crate::journal`: the `audit` table, newest 10,000 rows). And the
//! pool-ha extras that read the journal: `host.get_audit_log` and
//! `host.get_alert_deliveries`, answered by any host from its own.
//!
//! Not audited: reads (`get_*`, `get_all*`, `event.*`, `system.*`,
//! `session.get_*`, the HA planner's questions and checks, which change
//! nothing); `Async.` forms (the call the task runs is audited, with its
//! result); calls between hosts (a member's session: the pool's own
//! doing, each caused by an audited call or by HA); and calls without a
//! valid session (refused before they change anything). Logins are
//! audited, failed ones too, their passwords masked.

use std::sync::Arc;

use serde_json::{json, Value};
use xapi_proto::ApiError;

use super::Args;
use crate::daemon::Daemon;
use crate::journal::AuditRow;
use crate::sessions::Principal;

/// Calls that change nothing though their verb is not a getter's.
const READS: &[&str] = &[
    "pool.ha_compute_max_host_failures_to_tolerate",
    "pool.ha_compute_hypothetical_max_host_failures_to_tolerate",
    "pool.ha_explain_max_host_failures_to_tolerate",
    "pool.ha_failover_plan_exists",
    "pool.ha_compute_vm_failover_plan",
    "pool.ha_planner_snapshot",
    "VM.assert_agile",
    "VM.assert_can_boot_here",
    "pool.sync_database",
    "host.local_vm_list",
];

/// Logins: the user is their first argument, not a session.
const LOGINS: &[&str] = &["session.login_with_password", "session.slave_local_login_with_password"];

/// Does a call of `method` change state (and so get audited)?
pub fn audited(method: &str) -> bool {
    let Some((class, verb)) = method.split_once('.') else {
        return false;
    };
    !(class == "Async"
        || class == "event"
        || class == "system"
        || verb.starts_with("get_")
        || method == "session.slave_login"
        || READS.contains(&method))
}

/// A call to be audited once it has its result.
pub struct Pending {
    user: String,
    method: String,
    args: Value,
}

/// What to record of a call of `method` with `params`, taken before it
/// runs (a logout ends its session); `None` when it is not audited.
pub fn begin(d: &Daemon, method: &str, params: &[Value]) -> Option<Pending> {
    if !audited(method) {
        return None;
    }
    let login = LOGINS.contains(&method);
    let user = if login {
        params.first().and_then(Value::as_str).unwrap_or_default().to_string()
    } else {
        match d.sessions().check(params.first()?.as_str()?)? {
            Principal::User(name) => name,
            Principal::Member(_) => return None,
        }
    };
    Some(Pending {
        user,
        // A made-up method is refused, but its name is recorded: bounded.
        method: method.chars().take(256).collect(),
        args: crate::secrets::mask_call(method, params, !login),
    })
}

impl Pending {
    /// Log and journal the call with its result.
    pub fn finish(self, d: &Daemon, error: Option<&ApiError>) {
        let result = error.map_or("success", |e| e.code.as_str()).to_string();
        let args = self.args.to_string();
        tracing::info!(target: "audit", user = %self.user, method = %self.method, args = %args, result = %result, "API call");
        d.journal().audit(AuditRow {
            id: 0,
            at_ms: i64::try_from(crate::clock::unix_ms()).unwrap_or(i64::MAX),
            user: self.user,
            method: self.method,
            args,
            result,
        });
    }
}

/// The most rows one read answers.
const MAX_ROWS: i64 = 10_000;

/// The `limit` argument (1 to 10,000; 100 when not given).
fn limit(args: &Args) -> Result<i64, ApiError> {
    args.count(1, 2)?;
    if args.raw(1).is_none() {
        return Ok(100);
    }
    let n = args.int(1, "limit")?;
    if !(1..=MAX_ROWS).contains(&n) {
        return Err(ApiError::invalid_value("limit", n.to_string()));
    }
    Ok(n)
}

fn journal_error(e: pool_db::store::StoreError) -> ApiError {
    ApiError::internal(format!("cannot read the journal: {e}"))
}

/// `host.get_audit_log(session, [limit])`: this host's newest audited
/// calls, oldest first (a pool-ha extra).
pub async fn get_audit_log(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    let limit = limit(args)?;
    // The caller's own earlier calls are in it.
    d.journal().flush(std::time::Duration::from_secs(2)).await;
    let rows = d.journal().audit_rows(limit).await.map_err(journal_error)?;
    Ok(Value::Array(
        rows.into_iter()
            .map(|r| {
                json!({
                    "id": r.id,
                    "time": crate::clock::wire(u64::try_from(r.at_ms).unwrap_or(0)),
                    "user": r.user,
                    "method": r.method,
                    "args": serde_json::from_str::<Value>(&r.args).unwrap_or(Value::String(r.args)),
                    "result": r.result,
                })
            })
            .collect(),
    ))
}

/// `host.get_alert_deliveries(session, [limit])`: this host's newest
/// alert delivery attempts, oldest first (a pool-ha extra).
pub async fn get_alert_deliveries(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    let limit = limit(args)?;
    d.journal().flush(std::time::Duration::from_secs(2)).await;
    let rows = d.journal().delivery_rows(limit).await.map_err(journal_error)?;
    Ok(Value::Array(
        rows.into_iter()
            .map(|r| {
                json!({
                    "id": r.id,
                    "time": crate::clock::wire(u64::try_from(r.at_ms).unwrap_or(0)),
                    "message_uuid": r.message_uuid,
                    "message_name": r.message_name,
                    "target": r.target,
                    "attempt": r.attempt,
                    "outcome": r.outcome,
                    "detail": r.detail,
                })
            })
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::call;
    use xapi_proto::codes;

    #[test]
    fn reads_are_not_audited() {
        for m in [
            "VM.get_record",
            "VM.get_all_records_where",
            "event.from",
            "session.get_this_user",
            "pool.ha_compute_max_host_failures_to_tolerate",
            "Async.VM.start",
            "system.listMethods",
            "host.get_audit_log",
        ] {
            assert!(!audited(m), "{m}");
        }
        for m in [
            "VM.start",
            "pool.add_to_other_config",
            "session.login_with_password",
            "session.logout",
            "message.destroy",
            "pool.enable_ha",
        ] {
            assert!(audited(m), "{m}");
        }
    }

    #[tokio::test]
    async fn changes_and_logins_are_audited_with_their_secrets_masked() {
        let dir = tempfile::tempdir().unwrap();
        let d = Daemon::open(crate::daemon::tests::config(dir.path())).unwrap();
        let s = call(&d, "session.login_with_password", vec![json!("root"), json!("pw")])
            .await
            .unwrap();
        let wrong = call(&d, "session.login_with_password", vec![json!("root"), json!("guess")]).await;
        assert_eq!(wrong.unwrap_err().code, codes::SESSION_AUTHENTICATION_FAILED);
        let pool = call(&d, "pool.get_all", vec![s.clone()]).await.unwrap()[0].clone();
        call(
            &d,
            "pool.add_to_other_config",
            vec![
                s.clone(),
                pool.clone(),
                json!("pool-ha-webhook-secret"),
                json!("hunter2"),
            ],
        )
        .await
        .unwrap();
        call(&d, "pool.set_name_label", vec![s.clone(), pool.clone(), json!("lab")])
            .await
            .unwrap();
        let bad = call(
            &d,
            "VM.start",
            vec![s.clone(), json!("OpaqueRef:nope"), json!(false), json!(false)],
        )
        .await;
        assert_eq!(bad.unwrap_err().code, codes::HANDLE_INVALID);
        let log = call(&d, "host.get_audit_log", vec![s.clone()]).await.unwrap();
        let rows = log.as_array().unwrap();
        let methods: Vec<&str> = rows.iter().map(|r| r["method"].as_str().unwrap()).collect();
        assert_eq!(
            methods,
            [
                "session.login_with_password",
                "session.login_with_password",
                "pool.add_to_other_config",
                "pool.set_name_label",
                "VM.start"
            ],
            "{log:#}"
        );
        assert_eq!(rows[0]["args"], json!(["root", crate::secrets::MASKED]));
        assert_eq!(rows[0]["user"], "root");
        assert_eq!(
            (rows[1]["result"].as_str(), rows[1]["args"][1].as_str()),
            (Some(codes::SESSION_AUTHENTICATION_FAILED), Some(crate::secrets::MASKED))
        );
        assert_eq!(rows[2]["args"][2], crate::secrets::MASKED);
        assert_eq!(
            (rows[3]["user"].as_str(), rows[3]["result"].as_str()),
            (Some("root"), Some("success"))
        );
        assert_eq!(rows[4]["result"], codes::HANDLE_INVALID);
        assert!(!log.to_string().contains("hunter2") && !log.to_string().contains("guess"));
        // The secret itself is kept sealed in the pool's settings.
        let oc = call(&d, "pool.get_other_config", vec![s.clone(), pool]).await.unwrap();
        let sealed = oc["pool-ha-webhook-secret"].as_str().unwrap();
        assert!(sealed.starts_with("sealed1:"), "{oc}");
        assert_eq!(
            crate::secrets::open(&d.pool_secret(), "pool-ha-webhook-secret", sealed).as_deref(),
            Ok("hunter2")
        );
        let e = call(&d, "host.get_audit_log", vec![s, json!(0)]).await.unwrap_err();
        assert_eq!(e.code, codes::INVALID_VALUE);
    }
}
