//! `session.*`: logging in and out.

use std::sync::Arc;

use serde_json::{json, Value};
use xapi_proto::{codes, ApiError};

use super::Args;
use crate::daemon::{host_is_slave, secrets_equal, Daemon};
use crate::sessions::Principal;

/// `session.login_with_password(uname, pwd[, version, originator])`.
pub fn login(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    args.count(2, 4)?;
    let user = args.str(0, "uname")?;
    let password = args.str(1, "pwd")?;
    if !d.is_master() {
        return Err(host_is_slave(&d.master_address()));
    }
    check_password(d, user, password)?;
    Ok(json!(d.sessions().open(Principal::User(user.to_string()))))
}

/// `session.slave_local_login_with_password(uname, pwd)`: a session on
/// this host itself, master or not, for the emergency commands.
pub fn local_login(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    args.exactly(2)?;
    let user = args.str(0, "uname")?;
    let password = args.str(1, "pwd")?;
    check_password(d, user, password)?;
    Ok(json!(d.sessions().open(Principal::User(user.to_string()))))
}

fn check_password(d: &Daemon, user: &str, password: &str) -> Result<(), ApiError> {
    let ok = d
        .password_hash(user)
        .is_some_and(|hash| d.verifier().verify(user, password, &hash));
    if !ok {
        return Err(ApiError::new(
            codes::SESSION_AUTHENTICATION_FAILED,
            vec![user.to_string(), "Authentication failure".into()],
        ));
    }
    Ok(())
}

/// `session.slave_login(host_uuid, pool_secret)`: a host of the pool.
pub fn slave_login(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    args.exactly(2)?;
    let host = args.str(0, "host")?;
    let secret = args.str(1, "psecret")?;
    let known = d.pool_secret();
    if known.is_empty() || !secrets_equal(secret, &known) {
        return Err(ApiError::new(
            codes::SESSION_AUTHENTICATION_FAILED,
            vec![host.to_string(), "Authentication failure".into()],
        ));
    }
    Ok(json!(d.sessions().open(Principal::Member(host.to_string()))))
}

/// `session.logout(session)`.
pub fn logout(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    args.exactly(1)?;
    let handle = args.str(0, "session")?;
    if !d.sessions().close(handle) {
        return Err(super::args::session_invalid(handle));
    }
    Ok(json!(""))
}
