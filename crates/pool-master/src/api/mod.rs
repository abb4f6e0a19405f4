//! The XAPI methods: routing a `Class.verb` call to its handler.
//!
//! [`dispatch`] checks, in XAPI's order: the method exists; this host is the
//! master (else `HOST_IS_SLAVE`) unless the method is one a member serves; the
//! session is valid (`SESSION_INVALID`); then hands the typed [`Args`] to the
//! class's module. Every handler validates all of its input before it
//! writes, so a rejected call changes nothing.

pub mod args;
mod generic;
mod ha;
mod ha_admin;
mod host;
mod maintenance;
mod message;
mod pool;
mod recovery;
mod session;
pub(crate) mod storage;
mod vm;

use std::sync::Arc;

use serde_json::Value;
use xapi_proto::{codes, ApiError};

pub use args::Args;

use crate::daemon::{host_is_slave, Daemon};
use crate::sessions::Principal;

/// Methods a member host serves itself instead of redirecting to the master.
const MEMBER_METHODS: &[&str] = &[
    "host.local_vm_start",
    "host.local_vm_start_incoming",
    "host.local_vm_migrate",
    "host.local_vm_stop",
    "host.local_vm_list",
    "host.ha_join_liveset",
    "host.ha_disarm",
    "host.prepare_poweroff",
    "host.emergency_ha_disable",
    "pool.emergency_transition_to_master",
    "pool.emergency_reset_master",
];

/// Methods a host in HA emergency mode still serves (xapi's emergency
/// calls, which act on the host itself).
const EMERGENCY_METHODS: &[&str] = &[
    "session.slave_local_login_with_password",
    "session.logout",
    "host.emergency_ha_disable",
    "pool.emergency_transition_to_master",
    "pool.emergency_reset_master",
];

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
fn ha_gate(d: &Daemon, method: &str) -> Result<(), ApiError> {
    if EMERGENCY_METHODS.contains(&method) {
        return Ok(());
    }
    if let Some(e) = d.ha.emergency() {
        return Err(e);
    }
    let served = MEMBER_METHODS.contains(&method) || (is_read(method) && crate::failover::serves_reads_unconfirmed(d));
    if crate::failover::master_unconfirmed(d) && !served {
        return Err(ApiError::bare(codes::HOST_STILL_BOOTING));
    }
    Ok(())
}

/// Methods only other hosts of the pool may call.
const INTERNAL_METHODS: &[&str] = &[
    "host.local_vm_start",
    "host.local_vm_start_incoming",
    "host.local_vm_migrate",
    "host.local_vm_stop",
    "host.local_vm_list",
    "host.member_hello",
    "host.ha_join_liveset",
    "host.ha_disarm",
    "host.guest_halted",
    "host.report_pbd_reachability",
    "host.prepare_poweroff",
    "pool.sync_database",
];

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

/// Handle one call.
pub async fn dispatch(d: &Arc<Daemon>, method: &str, params: Vec<Value>) -> Result<Reply, ApiError> {
    let (class, verb) = method.split_once('.').unwrap_or_default();
    if verb == "get_all_records" && xapi_proto::classes::CLASSES.contains(&class) && d.is_master() {
        ha_gate(d, method)?;
        let args = Args::new(method, params);
        args.session(d)?;
        args.exactly(1)?;
        return generic::all_records_json(d, class).map(Reply::Json);
    }
    route(d, method, params).await.map(Reply::Value)
}

async fn route(d: &Arc<Daemon>, method: &str, params: Vec<Value>) -> Result<Value, ApiError> {
    let args = Args::new(method, params);
    ha_gate(d, method)?;
    match method {
        "session.login_with_password" => return session::login(d, &args),
        "session.slave_login" => return session::slave_login(d, &args),
        "session.slave_local_login_with_password" => return session::local_login(d, &args),
        "session.logout" => return session::logout(d, &args),
        _ => {}
    }
    let (class, verb) = method.split_once('.').ok_or_else(|| unknown(method))?;
    if !xapi_proto::classes::CLASSES.contains(&class) {
        return Err(unknown(method));
    }
    if !d.is_master() && !MEMBER_METHODS.contains(&method) {
        return Err(host_is_slave(&d.master_address()));
    }
    let principal = args.session(d)?;
    if INTERNAL_METHODS.contains(&method) && !matches!(principal, Principal::Member(_)) {
        return Err(ApiError::new(
            codes::PERMISSION_DENIED,
            vec!["only hosts of the pool may call this method".into()],
        ));
    }
    let handled = match class {
        "VM" => match ha::vm(d, verb, &args).await {
            Some(result) => Some(result),
            None => vm::dispatch(d, verb, &args).await,
        },
        "pool" => match verb {
            "enable_ha" => Some(ha_admin::enable(d, &args).await),
            "disable_ha" => Some(ha_admin::disable(d, &args).await),
            "emergency_transition_to_master" => Some(ha_admin::transition_to_master(d, &args).await),
            "emergency_reset_master" => Some(ha_admin::reset_master(d, &args).await),
            _ => match ha::pool(d, verb, &args).await {
                Some(result) => Some(result),
                None => pool::dispatch(d, verb, &args).await,
            },
        },
        "host" => match verb {
            "ha_join_liveset" => Some(ha_admin::join_liveset(d, &args).await),
            "ha_disarm" => Some(ha_admin::disarm(d, &args).await),
            "emergency_ha_disable" => Some(ha_admin::emergency_disable(d, &args).await),
            "guest_halted" => Some(host::guest_halted(d, &args).await),
            _ => match maintenance::dispatch(d, verb, &args).await {
                Some(result) => Some(result),
                None => host::dispatch(d, verb, &args).await,
            },
        },
        "SR" | "VDI" | "VBD" => storage::dispatch(d, class, verb, &args).await,
        "message" => message::dispatch(d, verb, &args).await,
        _ => None,
    };
    match handled {
        Some(result) => result,
        None => generic::dispatch(d, class, verb, &args).await,
    }
}
