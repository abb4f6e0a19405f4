//! The connection of one xe command to the pool: log in, call, log out.
//!
//! xe logs in once per command, as XAPI's CLI does, and follows
//! `HOST_IS_SLAVE` to the master. Without `-s` it talks to 127.0.0.1; the
//! port defaults to [`DEFAULT_PORT`]. It speaks HTTPS and trusts the hosts
//! whose certificates are pinned ([`crate::trust`]); `--nossl` speaks plain
//! HTTP, to [`DEFAULT_PLAIN_PORT`] unless a port is given (as XAPI's xe),
//! `--no-verify` HTTPS without checking who answers.
//!
//! `--debug` prints every call and its answer on stderr as it happens
//! (`debug: -> URL method(params)`, `debug: <- method in N ms: ok ...`),
//! with the session, passwords and login answers hidden;
//! `--debug-on-fail` keeps those lines and prints them only if the command
//! fails ([`print_kept_debug`]).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use xapi_client::Client;

use crate::argv::Connection;
use crate::error::XeError;
use crate::trust::{decide, KnownHosts};
use xapi_client::tls::Trust;
use xapi_client::{ClientError, Options};

/// The port xe talks to when none is given.
pub const DEFAULT_PORT: u16 = 443;

/// The port xe talks plain HTTP to (`--nossl`) when none is given.
pub const DEFAULT_PLAIN_PORT: u16 = 80;

/// The trace lines `--debug-on-fail` keeps until the command's end: the
/// latest [`KEPT_DEBUG_LINES`], and how many older ones went (a command
/// such as `pool-ha-status --watch` makes calls for hours).
static KEPT_DEBUG: Mutex<(VecDeque<String>, u64)> = Mutex::new((VecDeque::new(), 0));

/// How many trace lines `--debug-on-fail` keeps.
const KEPT_DEBUG_LINES: usize = 2000;

/// Print what `--debug-on-fail` kept (called when the command failed).
pub fn print_kept_debug() {
    let (lines, dropped) = std::mem::take(&mut *KEPT_DEBUG.lock().unwrap_or_else(|e| e.into_inner()));
    if dropped > 0 {
        eprintln!("debug: ({dropped} earlier lines not kept)");
    }
    for line in lines {
        eprintln!("debug: {line}");
    }
}

/// The call trace `--debug` / `--debug-on-fail` ask for.
fn trace(c: &Connection) -> Option<xapi_client::Trace> {
    if c.debug == Some(true) {
        Some(xapi_client::Trace(Arc::new(|line: &str| eprintln!("debug: {line}"))))
    } else if c.debug_on_fail == Some(true) {
        Some(xapi_client::Trace(Arc::new(|line: &str| {
            let mut kept = KEPT_DEBUG.lock().unwrap_or_else(|e| e.into_inner());
            kept.0.push_back(line.to_string());
            if kept.0.len() > KEPT_DEBUG_LINES {
                kept.0.pop_front();
                kept.1 += 1;
            }
        })))
    } else {
        None
    }
}

pub struct Conn {
    runtime: tokio::runtime::Runtime,
    client: Client,
}

/// The username and password, from `-pwf` or `-u`/`-pw`.
fn credentials(c: &Connection) -> Result<(String, String), XeError> {
    if let Some(file) = &c.passwordfile {
        let text = std::fs::read_to_string(file)
            .map_err(|_| XeError::Plain(format!("Error opening password file '{file}'")))?;
        let mut lines = text.lines();
        return match (lines.next(), lines.next()) {
            (Some(u), Some(p)) => Ok((u.to_string(), p.to_string())),
            _ => Err(XeError::Plain(
                "Error: password file format: expecting username on the first line, password on the second line".into(),
            )),
        };
    }
    Ok((
        c.username.clone().unwrap_or_else(|| "root".into()),
        c.password.clone().unwrap_or_default(),
    ))
}

impl Conn {
    /// Connect and log in; `local` commands talk to the host itself, never
    /// to the master (xe's emergency commands).
    pub fn open(c: &Connection, local: bool) -> Result<Conn, XeError> {
        let port = match &c.port {
            None if c.nossl == Some(true) => DEFAULT_PLAIN_PORT,
            None => DEFAULT_PORT,
            Some(p) => p.parse::<u16>().map_err(|_| XeError::BadPort)?,
        };
        let server = c.server.clone().unwrap_or_else(|| "127.0.0.1".into());
        let (user, password) = credentials(c)?;
        if user.is_empty() {
            return Err(XeError::Plain("Username/password must be specified".into()));
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| XeError::Plain(format!("Error: cannot start: {e}")))?;
        let mut known = KnownHosts::load(c.knownhosts.as_deref());
        // Each round may meet one more host to trust: the server, then the
        // master it sends xe to.
        for _ in 0..4 {
            let trust = if c.nossl == Some(true) {
                Trust::Plain
            } else if c.noverify == Some(true) {
                Trust::Anyone
            } else {
                let pins = known.pins();
                if let Some(fp) = &c.fingerprint {
                    pins.pin(&server, fp);
                }
                Trust::Pinned(pins)
            };
            let options = Options {
                trust,
                trace: trace(c),
                ..Options::default()
            };
            let mut client = Client::with_options(&server, port, &options);
            let login = if local {
                runtime.block_on(client.login_local(&user, &password))
            } else {
                runtime.block_on(client.login(&user, &password))
            };
            match login {
                Ok(()) => return Ok(Conn { runtime, client }),
                Err(ClientError::Untrusted { address, fingerprint }) => decide(&mut known, &address, &fingerprint)?,
                Err(e) => return Err(XeError::from_client(e)),
            }
        }
        Err(XeError::cli("too many hosts to trust in one command"))
    }

    /// Call `method` with the session prepended.
    pub fn call(&mut self, method: &str, params: Vec<Value>) -> Result<Value, XeError> {
        self.runtime
            .block_on(self.client.call(method, params))
            .map_err(XeError::from_client)
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.runtime.block_on(self.client.logout());
    }
}
