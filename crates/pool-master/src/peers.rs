//! Calls from one host of the pool to another.
//!
//! The master drives VMs on members (`host.local_vm_start` and friends) and
//! members talk to the master (`pool.sync_database`, `host.member_hello`).
//! These calls log in with `session.slave_login(host_uuid, pool_secret)`, never
//! follow `HOST_IS_SLAVE`, and re-login once when the peer restarted and
//! forgot the session.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use xapi_client::tls::{Pins, Trust};
use xapi_client::{Client, ClientError, Options};
use xapi_proto::codes;

use crate::io::Gate;

/// How long one call between hosts may take before the peer counts as gone.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(10);

/// Who is calling: this host and the pool secret.
#[derive(Clone)]
pub struct PeerAuth {
    pub host_uuid: String,
    pub secret: String,
}

impl std::fmt::Debug for PeerAuth {
    /// The secret is never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerAuth")
            .field("host_uuid", &self.host_uuid)
            .finish_non_exhaustive()
    }
}

/// Logged-in clients to the other hosts, by address, and the certificates
/// they must show.
pub struct Peers {
    clients: tokio::sync::Mutex<HashMap<String, Client>>,
    io: Arc<Gate>,
    pins: Arc<Pins>,
}

impl Peers {
    /// Clients that fail at once while this host's network is cut.
    pub fn new(io: Arc<Gate>) -> Peers {
        Peers {
            clients: tokio::sync::Mutex::new(HashMap::new()),
            io,
            pins: Arc::new(Pins::for_peers()),
        }
    }

    /// Pin each address to the certificates the pool records for the host
    /// there (replacing every earlier pin).
    pub fn pin_all(&self, pins: HashMap<String, Vec<String>>) {
        self.pins.pin_all(pins);
    }

    /// Call `method` on the host at `address:port` with a member session.
    pub async fn call(
        &self,
        auth: &PeerAuth,
        address: &str,
        port: u16,
        method: &str,
        params: Vec<Value>,
        timeout: Duration,
    ) -> Result<Value, ClientError> {
        if let Err(cut) = self.io.network() {
            return Err(ClientError::Unreachable {
                address: format!("{address}:{port}"),
                detail: cut.to_string(),
            });
        }
        let cached = self.clients.lock().await.get(address).cloned();
        let fresh = cached.is_none();
        let mut client = match cached {
            Some(c) => c,
            None => login(auth, address, port, timeout, &self.pins).await?,
        };
        let result = client.call(method, params.clone()).await;
        let result = match result {
            Err(e) if e.is(codes::SESSION_INVALID) && !fresh => {
                client = login(auth, address, port, timeout, &self.pins).await?;
                client.call(method, params).await
            }
            other => other,
        };
        if matches!(result, Err(ClientError::Unreachable { .. })) {
            self.clients.lock().await.remove(address);
        } else {
            self.clients.lock().await.insert(address.to_string(), client);
        }
        result
    }

    /// Forget every cached session (the pool secret or the master changed).
    pub async fn forget(&self) {
        self.clients.lock().await.clear();
    }
}

/// How hosts reach each other: over TLS, so the pool secret and the
/// database never cross the network in clear, trusting `trust`: the
/// certificates the pool records for its hosts ([`Peers`]), or, for the
/// first contact of a joining host with the master it was given, anyone
/// (the joiner learns the master's certificate with the database; the
/// admin's credentials are what that contact rests on, as in XAPI).
pub fn peer_options(request_timeout: Duration, trust: Trust) -> Options {
    Options {
        connect_timeout: Duration::from_secs(2),
        request_timeout,
        trust,
    }
}

async fn login(
    auth: &PeerAuth,
    address: &str,
    port: u16,
    timeout: Duration,
    pins: &Arc<Pins>,
) -> Result<Client, ClientError> {
    let options = peer_options(timeout, Trust::Pinned(pins.clone()));
    let mut client = Client::with_options(address, port, &options).no_redirect();
    let session = client
        .call_raw("session.slave_login", vec![json!(auth.host_uuid), json!(auth.secret)])
        .await?;
    client.set_session(xapi_client::value::string(&session)?);
    Ok(client)
}
