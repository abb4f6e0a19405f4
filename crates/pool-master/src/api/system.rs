//! What a client asks of the API itself: `system.listMethods` (no session
//! needed, as in XAPI), `session.get_this_host`, `session.get_this_user`
//! and `session.get_all_subject_identifiers`.
//!
//! `system.methodSignature` is not served, as in XAPI: its dispatcher has no
//! such call (it tries an extension of that name and answers
//! `MESSAGE_METHOD_UNKNOWN`).
//!
//! The method list is built from what serves the calls: the generic
//! methods of every class from `xapi_proto::classes`, the rows of the
//! method table, and each class module's `METHODS`; `route` checks in
//! debug builds that every call a module serves is listed there, and a
//! test calls every listed method. Calls only other hosts may make are not
//! listed.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::{json, Value};
use xapi_proto::classes::{self, FieldType};
use xapi_proto::ApiError;

use super::{designate, eject, ha, host, maintenance, message, pool, rotation, storage, task, vm, Args};
use crate::daemon::Daemon;

/// The lists of the class modules.
pub(super) const MODULES: &[&[&str]] = &[
    vm::METHODS,
    ha::METHODS,
    pool::METHODS,
    host::METHODS,
    maintenance::METHODS,
    storage::METHODS,
    message::METHODS,
    task::METHODS,
    rotation::METHODS,
    eject::METHODS,
    designate::METHODS,
];

/// Is `method` in one of the class modules' lists?
pub(super) fn listed_by_a_module(method: &str) -> bool {
    MODULES.iter().any(|l| l.contains(&method))
}

/// Every method a client may call, sorted (the list is fixed at build
/// time: made once).
pub fn methods() -> &'static [String] {
    static METHODS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    METHODS.get_or_init(list)
}

fn list() -> Vec<String> {
    let mut out = BTreeSet::new();
    for &class in classes::CLASSES {
        for verb in [
            "get_all",
            "get_all_records",
            "get_all_records_where",
            "get_record",
            "get_by_uuid",
        ] {
            out.insert(format!("{class}.{verb}"));
        }
        let fields = classes::fields(class).unwrap_or_default();
        if class != "pool" && fields.iter().any(|f| f.name == "name_label") {
            out.insert(format!("{class}.get_by_name_label"));
        }
        for f in fields {
            out.insert(format!("{class}.get_{}", f.name));
            if f.settable {
                out.insert(format!("{class}.set_{}", f.name));
                if f.ty == FieldType::Map {
                    out.insert(format!("{class}.add_to_{}", f.name));
                    out.insert(format!("{class}.remove_from_{}", f.name));
                }
                if f.ty == FieldType::Set {
                    out.insert(format!("{class}.add_{}", f.name));
                    out.insert(format!("{class}.remove_{}", f.name));
                }
            }
        }
    }
    for list in MODULES {
        out.extend(list.iter().map(|m| m.to_string()));
    }
    for (m, access) in super::table() {
        if access.internal {
            out.remove(m);
        } else {
            out.insert(m.to_string());
        }
    }
    out.into_iter().collect()
}

/// `system.listMethods()`: every method and its `Async.` form.
pub fn list_methods(_d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    args.count(0, 1)?;
    let mut all = methods().to_vec();
    all.extend(task::async_methods(methods()));
    all.sort();
    Ok(json!(all))
}

/// Check a session getter's call `(session, self)`: `self` must be the
/// caller's own session (another's is a secret it does not hold).
fn own_session(d: &Arc<Daemon>, args: &Args) -> Result<(), ApiError> {
    args.session(d)?;
    args.exactly(2)?;
    let own = args.str(0, "session_id")?;
    let asked = args.str(1, "self")?;
    if asked != own {
        return Err(super::args::session_invalid(asked));
    }
    Ok(())
}

/// `session.get_this_host(session, self)`: the host this session was made
/// on.
pub fn get_this_host(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    own_session(d, args)?;
    d.host_ref()
        .map(|r| json!(r))
        .ok_or_else(|| ApiError::internal("this host is not in the pool database"))
}

/// `session.get_this_user(session, self)`: XAPI's deprecated `user` of the
/// session, which XAPI always sets to the null reference
/// (`xapi_session.ml`: "always return a null reference to the deprecated
/// user object").
pub fn get_this_user(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    own_session(d, args)?;
    Ok(json!(xapi_proto::records::NULL_REF))
}

/// `session.get_all_subject_identifiers(session)`: the subject identifiers
/// of the externally authenticated sessions. Every session here is a local
/// user's or a host's (no external directory), so none, as XAPI answers
/// for a pool without one.
pub fn get_all_subject_identifiers(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    args.session(d)?;
    args.exactly(1)?;
    Ok(json!([]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sessions::Principal;
    use xapi_proto::codes;

    #[test]
    fn the_list_has_every_kind_of_method_and_no_internal_one() {
        let m = methods();
        for want in [
            "system.listMethods",
            "session.login_with_password",
            "session.get_this_host",
            "session.get_this_user",
            "session.get_all_subject_identifiers",
            "event.register",
            "event.next",
            "event.unregister",
            "message.get_since",
            "VM.get_all_records_where",
            "task.get_all_records_where",
            "VM.start",
            "VM.get_power_state",
            "VM.set_ha_restart_priority",
            "VM.add_to_other_config",
            "VM.add_tags",
            "SR.remove_tags",
            "host.set_tags",
            "pool.get_allowed_operations",
            "VM.get_blocked_operations",
            "VM.get_by_name_label",
            "host.get_API_version_major",
            "pool.ha_compute_max_host_failures_to_tolerate",
            "SR.create",
        ] {
            assert!(m.iter().any(|x| x == want), "{want} missing");
        }
        for internal in ["host.local_vm_start", "pool.sync_database", "host.member_hello"] {
            assert!(!m.iter().any(|x| x == internal), "{internal} listed");
        }
        assert!(!m.iter().any(|x| x == "pool.get_by_name_label"));
        assert!(
            !m.iter().any(|x| x == "system.methodSignature"),
            "XAPI does not serve it"
        );
    }

    /// Every listed method reaches a handler: called with a session and
    /// nothing else, none answers `MESSAGE_METHOD_UNKNOWN`, and none changes
    /// the database.
    #[tokio::test]
    async fn every_listed_method_is_served() {
        let dir = tempfile::tempdir().unwrap();
        let d = Daemon::open(crate::daemon::tests::config(dir.path())).unwrap();
        let session = d.sessions().open(Principal::User("root".into()));
        let generation = d.model().generation;
        for m in methods() {
            if m.starts_with("session.log") || m == "host.shutdown" || m == "host.reboot" {
                continue;
            }
            if let Err(e) = super::super::dispatch(&d, m, vec![json!(session)]).await {
                assert_ne!(e.code, codes::MESSAGE_METHOD_UNKNOWN, "{m}");
            }
        }
        assert_eq!(d.model().generation, generation, "a call with no arguments wrote");
    }

    #[tokio::test]
    async fn the_session_getters_answer_as_xapi_for_a_local_session() {
        let dir = tempfile::tempdir().unwrap();
        let d = Daemon::open(crate::daemon::tests::config(dir.path())).unwrap();
        let s = json!(d.sessions().open(Principal::User("root".into())));
        let call = |m: &'static str, params: Vec<Value>| {
            let d = d.clone();
            async move {
                match super::super::dispatch(&d, m, params).await? {
                    super::super::Reply::Value(v) => Ok::<Value, ApiError>(v),
                    super::super::Reply::Json(t) => Ok(serde_json::from_str(&t).unwrap()),
                }
            }
        };
        let user = call("session.get_this_user", vec![s.clone(), s.clone()]).await.unwrap();
        assert_eq!(user, "OpaqueRef:NULL");
        let other = call("session.get_this_user", vec![s.clone(), json!("OpaqueRef:x")]).await;
        assert_eq!(other.unwrap_err().code, codes::SESSION_INVALID);
        let sids = call("session.get_all_subject_identifiers", vec![s.clone()])
            .await
            .unwrap();
        assert_eq!(sids, json!([]));
        let sig = call("system.methodSignature", vec![json!("VM.start")]).await;
        assert_eq!(sig.unwrap_err().code, codes::MESSAGE_METHOD_UNKNOWN);
    }
}
