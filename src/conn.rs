//! The connection of one xe command to the pool: log in, call, log out.
//!
//! xe logs in once per command, as XAPI's CLI does, and follows
//! `HOST_IS_SLAVE` to the master. Without `-s` it talks to 127.0.0.1; the
//! port defaults to [`DEFAULT_PORT`], where `xapid` serves plain HTTP
//! (`--nossl` is accepted and changes nothing).

use serde_json::Value;
use xapi_client::Client;

use crate::argv::Connection;
use crate::error::XeError;

/// The port xe talks to when none is given.
pub const DEFAULT_PORT: u16 = 8090;

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
        let mut client = Client::new(&server, port);
        let login = if local {
            runtime.block_on(client.login_local(&user, &password))
        } else {
            runtime.block_on(client.login(&user, &password))
        };
        login.map_err(XeError::from_client)?;
        Ok(Conn { runtime, client })
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
