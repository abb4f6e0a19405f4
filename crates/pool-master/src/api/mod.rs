//! The XAPI methods: routing a `Class.verb` call to its handler.
//!
//! [`dispatch`] checks, in XAPI's order: the method exists; this host is the
//! master (else `HOST_IS_SLAVE`) unless the method is one a member serves; the
//! session is valid (`SESSION_INVALID`); then hands the typed [`Args`] to the
//! class's module. Every handler validates all of its input before it
//! writes, so a rejected call changes nothing.

pub mod args;
mod audit;
pub mod caller;
mod designate;
mod eject;
mod event;
mod event_next;
mod filter;
#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod gate_tests;
mod generic;
mod ha;
mod ha_admin;
mod ha_status;
mod host;
mod maintenance;
mod message;
mod pool;
mod recovery;
mod rotation;
mod session;
pub(crate) mod storage;
mod system;
mod task;
mod vm;

use std::sync::Arc;

use futures::future::BoxFuture;
use serde_json::Value;
use xapi_proto::{codes, ApiError};

pub use args::Args;

use crate::daemon::{host_is_slave, Daemon};
use crate::sessions::Principal;

/// Who may call a method, and where. A method not in [`METHODS`] is served
/// by the master, to any valid session, and not in HA emergency mode.
#[derive(Debug, Clone, Copy, Default)]
struct Access {
    /// Served before and without a session check, on any host (login).
    open: bool,
    /// A member serves it itself instead of answering `HOST_IS_SLAVE`.
    member: bool,
    /// Still served in HA emergency mode (xapi's emergency calls, which act
    /// on the host itself).
    emergency: bool,
    /// Only other hosts of the pool may call it (a member's session).
    internal: bool,
}

/// A handler that takes the call as it is; the others go to their class's
/// module.
type Handler = for<'a> fn(&'a Arc<Daemon>, &'a Args) -> BoxFuture<'a, Result<Value, ApiError>>;

/// An async handler `f(d, args)` as a [`Handler`].
macro_rules! handler {
    ($f:path) => {{
        fn h<'a>(d: &'a Arc<Daemon>, args: &'a Args) -> BoxFuture<'a, Result<Value, ApiError>> {
            Box::pin($f(d, args))
        }
        Some(h as Handler)
    }};
}

/// A synchronous handler `f(d, args)` as a [`Handler`].
macro_rules! sync_handler {
    ($f:path) => {{
        fn h<'a>(d: &'a Arc<Daemon>, args: &'a Args) -> BoxFuture<'a, Result<Value, ApiError>> {
            Box::pin(std::future::ready($f(d, args)))
        }
        Some(h as Handler)
    }};
}

const OPEN: Access = Access {
    open: true,
    member: false,
    emergency: false,
    internal: false,
};
/// A call a host makes on another, served by the host it is made on.
const HOST_TO_HOST: Access = Access {
    open: false,
    member: true,
    emergency: false,
    internal: true,
};
/// A call only hosts make, on the master.
const TO_MASTER: Access = Access {
    open: false,
    member: false,
    emergency: false,
    internal: true,
};
/// An emergency call an admin makes on any host.
const EMERGENCY: Access = Access {
    open: false,
    member: true,
    emergency: true,
    internal: false,
};
const MASTER: Access = Access {
    open: false,
    member: false,
    emergency: false,
    internal: false,
};

/// Every method whose access differs from a plain master call, or whose
/// handler is not its class module's: one row each.
const METHODS: &[(&str, Access, Option<Handler>)] = &[
    ("system.listMethods", OPEN, sync_handler!(system::list_methods)),
    ("session.get_this_host", OPEN, sync_handler!(system::get_this_host)),
    ("session.get_this_user", OPEN, sync_handler!(system::get_this_user)),
    (
        "session.get_all_subject_identifiers",
        MASTER,
        sync_handler!(system::get_all_subject_identifiers),
    ),
    ("session.login_with_password", OPEN, handler!(session::login)),
    ("session.slave_login", OPEN, sync_handler!(session::slave_login)),
    (
        "session.slave_local_login_with_password",
        Access {
            emergency: true,
            ..OPEN
        },
        handler!(session::local_login),
    ),
    (
        "session.logout",
        Access {
            emergency: true,
            ..OPEN
        },
        sync_handler!(session::logout),
    ),
    ("host.local_vm_start", HOST_TO_HOST, None),
    ("host.local_vm_start_incoming", HOST_TO_HOST, None),
    ("host.local_vm_migrate", HOST_TO_HOST, None),
    ("host.local_vm_stop", HOST_TO_HOST, None),
    ("host.local_vm_list", HOST_TO_HOST, None),
    ("host.ha_join_liveset", HOST_TO_HOST, handler!(ha_admin::join_liveset)),
    ("host.ha_disarm", HOST_TO_HOST, handler!(ha_admin::disarm)),
    ("host.prepare_poweroff", HOST_TO_HOST, None),
    ("host.member_hello", TO_MASTER, None),
    (
        "host.prove_certificate",
        Access {
            open: true,
            member: true,
            emergency: true,
            internal: false,
        },
        sync_handler!(host::prove_certificate),
    ),
    ("host.guest_halted", TO_MASTER, handler!(host::guest_halted)),
    ("host.report_pbd_reachability", TO_MASTER, None),
    ("pool.sync_database", TO_MASTER, None),
    ("host.get_ha_status", EMERGENCY, handler!(ha_status::get)),
    ("host.get_audit_log", EMERGENCY, handler!(audit::get_audit_log)),
    (
        "host.get_alert_deliveries",
        EMERGENCY,
        handler!(audit::get_alert_deliveries),
    ),
    (
        "host.emergency_ha_disable",
        EMERGENCY,
        handler!(ha_admin::emergency_disable),
    ),
    (
        "pool.emergency_transition_to_master",
        EMERGENCY,
        handler!(ha_admin::transition_to_master),
    ),
    (
        "pool.emergency_reset_master",
        EMERGENCY,
        handler!(ha_admin::reset_master),
    ),
    ("event.from", MASTER, handler!(event::from)),
    ("event.inject", MASTER, handler!(event::inject)),
    ("event.register", MASTER, sync_handler!(event_next::register)),
    ("event.unregister", MASTER, sync_handler!(event_next::unregister)),
    ("event.next", MASTER, handler!(event_next::next)),
    ("pool.rotate_secret", MASTER, handler!(rotation::rotate)),
    ("pool.eject", MASTER, handler!(eject::eject)),
    ("pool.designate_new_master", MASTER, handler!(designate::designate)),
    (
        "host.become_new_master",
        HOST_TO_HOST,
        handler!(designate::become_new_master),
    ),
    (
        "host.follow_new_master",
        HOST_TO_HOST,
        handler!(designate::follow_new_master),
    ),
    ("pool.eject_self", HOST_TO_HOST, handler!(eject::eject_self)),
    (
        "host.notify_accept_new_pool_secret",
        HOST_TO_HOST,
        handler!(rotation::notify),
    ),
    (
        "host.notify_send_new_pool_secret",
        HOST_TO_HOST,
        handler!(rotation::notify),
    ),
    ("host.cleanup_pool_secret", HOST_TO_HOST, handler!(rotation::notify)),
    ("pool.enable_ha", MASTER, handler!(ha_admin::enable)),
    ("pool.disable_ha", MASTER, handler!(ha_admin::disable)),
];

/// Each row of [`METHODS`]: the method and its access.
fn table() -> impl Iterator<Item = (&'static str, Access)> {
    METHODS.iter().map(|&(m, access, _)| (m, access))
}

/// A method's row in [`METHODS`], or the plain master call.
fn method(name: &str) -> (Access, Option<Handler>) {
    METHODS
        .iter()
        .find(|(m, _, _)| *m == name)
        .map_or((MASTER, None), |&(_, access, handler)| (access, handler))
}

/// A call that changes nothing in the pool: a master serves these even
/// while its master lock is unconfirmed (a fault handler, a join), as XAPI
/// keeps answering reads during a failover.
fn is_read(method: &str) -> bool {
    let verb = method.split_once('.').map_or("", |(_, v)| v);
    method == "session.login_with_password" || verb.starts_with("get_")
}

/// What HA allows this host to serve: nothing but the emergency calls in
/// an emergency; as an unconfirmed master (rule M), the members' calls and,
/// while the statefile still names it the lock holder, reads.
fn ha_gate(d: &Daemon, method: &str, access: Access) -> Result<(), ApiError> {
    if access.emergency {
        return Ok(());
    }
    if let Some(e) = d.ha().emergency() {
        return Err(e);
    }
    let served = access.member || (is_read(method) && crate::failover::serves_reads_unconfirmed(d));
    if crate::failover::master_unconfirmed(d) && !served {
        return Err(ApiError::bare(codes::HOST_STILL_BOOTING));
    }
    Ok(())
}

/// `MESSAGE_METHOD_UNKNOWN [method]`.
pub fn unknown(method: &str) -> ApiError {
    ApiError::new(codes::MESSAGE_METHOD_UNKNOWN, vec![method.to_string()])
}

/// A call's result: a JSON value, or JSON text serialized straight from
/// records (for large results such as `get_all_records`).
pub enum Reply {
    Value(Value),
    Json(String),
}

/// A call as a client makes it, its result as JSON (for the tests).
#[cfg(test)]
pub(crate) async fn call(d: &Arc<Daemon>, method: &str, params: Vec<Value>) -> Result<Value, ApiError> {
    match dispatch(d, method, params).await? {
        Reply::Value(v) => Ok(v),
        Reply::Json(t) => serde_json::from_str(&t).map_err(|e| ApiError::internal(e.to_string())),
    }
}

/// A halted VM of 1 GiB named `name`, made with `VM.create` in session
/// `s` (for the tests): its ref.
#[cfg(test)]
pub(crate) async fn new_vm(d: &Arc<Daemon>, s: &Value, name: &str) -> Value {
    let record = serde_json::json!({"name_label": name, "memory_static_max": 1i64 << 30});
    call(d, "VM.create", vec![s.clone(), record]).await.expect("VM.create")
}

/// The longest string a call may carry in any parameter (a field, a map
/// key or value, a list item): records hold names, descriptions and
/// settings, not files.
pub const MAX_STRING: usize = 64 * 1024;

/// Every string in `params` is text a record may hold: at most
/// [`MAX_STRING`] bytes, and no control character but tab, newline and
/// carriage return (a NUL stored in a name was printed raw by `xe`).
/// `INVALID_VALUE [parameter, what is wrong]` otherwise, naming the
/// parameter by position and never echoing the value.
fn check_strings(method: &str, params: &[Value]) -> Result<(), ApiError> {
    fn bad(s: &str) -> Option<String> {
        if s.len() > MAX_STRING {
            return Some(format!("a string of {} bytes (at most {MAX_STRING})", s.len()));
        }
        s.chars()
            .find(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
            .map(|c| format!("a string holding the control character U+{:04X}", u32::from(c)))
    }
    fn walk(v: &Value) -> Option<String> {
        match v {
            Value::String(s) => bad(s),
            Value::Array(items) => items.iter().find_map(walk),
            Value::Object(map) => map.iter().find_map(|(k, v)| bad(k).or_else(|| walk(v))),
            _ => None,
        }
    }
    for (i, p) in params.iter().enumerate() {
        if let Some(what) = walk(p) {
            return Err(ApiError::invalid_value(format!("{method} parameter {}", i + 1), what));
        }
    }
    Ok(())
}

/// Check a user's password as a login does (the throttle, the decoy hash
/// for unknown names, failures counted): for HTTP Basic authentication
/// outside the RPC wire (`GET /metrics`).
pub async fn check_password(d: &Arc<Daemon>, user: &str, password: &str) -> Result<(), ApiError> {
    session::check_password(d, user, password).await
}

/// Handle one call, counted for `GET /metrics` (by method: one the API
/// lists, or `unknown`; and by error code when it fails), and audited when
/// it may change state ([`audit`]).
pub async fn dispatch(d: &Arc<Daemon>, method: &str, params: Vec<Value>) -> Result<Reply, ApiError> {
    let audit = audit::begin(d, method, &params);
    let result = dispatch_uncounted(d, method, params).await;
    if let Some(a) = audit {
        a.finish(d, result.as_ref().err());
    }
    let listed = system::methods().binary_search_by(|m| m.as_str().cmp(method)).is_ok()
        || method
            .strip_prefix("Async.")
            .is_some_and(|m| system::methods().binary_search_by(|x| x.as_str().cmp(m)).is_ok());
    let label = if listed || METHODS.iter().any(|(m, _, _)| *m == method) {
        method
    } else {
        "unknown"
    };
    crate::metrics::api().count(label, result.as_ref().err().map(|e| e.code.as_str()));
    result
}

async fn dispatch_uncounted(d: &Arc<Daemon>, method: &str, params: Vec<Value>) -> Result<Reply, ApiError> {
    check_strings(method, &params)?;
    let (class, verb) = method.split_once('.').unwrap_or_default();
    if verb == "get_all_records" && xapi_proto::classes::CLASSES.contains(&class) && d.is_master() {
        ha_gate(d, method, MASTER)?;
        let args = Args::new(method, params);
        args.session(d)?;
        args.exactly(1)?;
        return generic::all_records_json(d, class).map(Reply::Json);
    }
    route(d, method, params).await.map(Reply::Value)
}

async fn route(d: &Arc<Daemon>, method: &str, params: Vec<Value>) -> Result<Value, ApiError> {
    let args = Args::new(method, params);
    let (access, handler) = self::method(method);
    ha_gate(d, method, access)?;
    if let (true, Some(h)) = (access.open, handler) {
        return h(d, &args).await;
    }
    let (class, verb) = method.split_once('.').ok_or_else(|| unknown(method))?;
    let (is_async, is_task) = (class == "Async", class == "task");
    if handler.is_none() && !is_async && !is_task && !xapi_proto::classes::CLASSES.contains(&class) {
        return Err(unknown(method));
    }
    if !d.is_master() && !access.member {
        return Err(host_is_slave(&d.master_address()));
    }
    let principal = args.session(d)?;
    if access.internal && !matches!(principal, Principal::Member(_)) {
        return Err(ApiError::new(
            codes::PERMISSION_DENIED,
            vec!["only hosts of the pool may call this method".into()],
        ));
    }
    if let Some(h) = handler {
        return h(d, &args).await;
    }
    if is_async {
        return task::run_async(d, args).await;
    }
    if is_task {
        return task::dispatch(d, verb, &args);
    }
    let handled = match class {
        "VM" => match ha::vm(d, verb, &args).await {
            Some(result) => Some(result),
            None => vm::dispatch(d, verb, &args).await,
        },
        "pool" => match ha::pool(d, verb, &args).await {
            Some(result) => Some(result),
            None => pool::dispatch(d, verb, &args).await,
        },
        "host" => match maintenance::dispatch(d, verb, &args).await {
            Some(result) => Some(result),
            None => host::dispatch(d, verb, &args).await,
        },
        "SR" | "VDI" | "VBD" => storage::dispatch(d, class, verb, &args).await,
        "message" => message::dispatch(d, verb, &args).await,
        _ => None,
    };
    match handled {
        Some(result) => {
            debug_assert!(
                system::listed_by_a_module(method),
                "{method} is served but not in its module's METHODS"
            );
            result
        }
        None => generic::dispatch(d, class, verb, &args).await,
    }
}
