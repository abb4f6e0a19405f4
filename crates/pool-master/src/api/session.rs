//! `session.*`: logging in and out.

use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};
use xapi_proto::{codes, ApiError};

use super::Args;
use crate::daemon::{host_is_slave, Daemon};
use crate::sessions::Principal;

/// `session.login_with_password(uname, pwd[, version, originator])`.
pub async fn login(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    args.count(2, 4)?;
    let user = args.str(0, "uname")?;
    let password = args.str(1, "pwd")?;
    if !d.is_master() {
        return Err(host_is_slave(&d.master_address()));
    }
    check_password(d, user, password).await?;
    Ok(json!(d.sessions().open(Principal::User(user.to_string()))))
}

/// `session.slave_local_login_with_password(uname, pwd)`: a session on
/// this host itself, master or not, for the emergency commands.
pub async fn local_login(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    args.exactly(2)?;
    let user = args.str(0, "uname")?;
    let password = args.str(1, "pwd")?;
    check_password(d, user, password).await?;
    Ok(json!(d.sessions().open(Principal::User(user.to_string()))))
}

/// Failed logins for one name before the pool gets a message, and every
/// this many more after it.
const BURST: u32 = 10;

/// Check `password` for `user`: after the throttle's wait for this name and
/// the call's network source,
/// on a blocking thread (Argon2 takes tens of milliseconds of CPU, and the
/// async runtime serves every other call), against the decoy hash for an
/// unknown name (the same work: no timing tells which names exist).
pub(super) async fn check_password(d: &Arc<Daemon>, user: &str, password: &str) -> Result<(), ApiError> {
    let refused = || {
        ApiError::new(
            codes::SESSION_AUTHENTICATION_FAILED,
            vec![user.to_string(), "Authentication failure".into()],
        )
    };
    // A name no user can have (long, or with control characters) is
    // refused before it is remembered anywhere: the throttle's table and
    // the log keep bounded, printable names (HTTP Basic names skip the
    // RPC's string checks).
    if user.len() > 256 || user.chars().any(char::is_control) {
        return Err(refused());
    }
    let source = super::caller::source();
    let Some(wait) = d.throttle().admit(user, source, Instant::now()) else {
        return Err(refused());
    };
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
    let (known, hash) = match d.password_hash(user) {
        Some(hash) => (true, hash),
        None => (false, crate::auth::decoy_hash().to_string()),
    };
    let (d2, user2, password2) = (d.clone(), user.to_string(), password.to_string());
    let verified = tokio::task::spawn_blocking(move || d2.verifier().verify(&user2, &password2, &hash))
        .await
        .unwrap_or(false);
    if known && verified {
        d.throttle().succeeded(user);
        return Ok(());
    }
    let failures = d.throttle().failed(user, source, Instant::now());
    let shown: String = user.chars().take(64).collect();
    if failures.is_power_of_two() {
        match source {
            Some(ip) => tracing::warn!(user = %shown, %ip, failures, "failed login"),
            None => tracing::warn!(user = %shown, failures, "failed login"),
        }
    }
    if failures % BURST == 0 && d.is_master() {
        let body = format!("{failures} logins as {shown:?} have failed in a row; later attempts are slowed down");
        let pool = d.model().pool().map(|(_, p)| p.uuid.clone()).unwrap_or_default();
        if let Err(e) = crate::failover::monitor::message(d, "LOGIN_FAILURES", 3, "Pool", &pool, body).await {
            tracing::warn!("cannot record the failed logins as a pool message: {e}");
        }
    }
    Err(refused())
}

/// `session.slave_login(host_uuid, pool_secret)`: a host of the pool.
pub fn slave_login(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    args.exactly(2)?;
    let host = args.str(0, "host")?;
    let secret = args.str(1, "psecret")?;
    if !d.secrets().accepts(secret) {
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
