//! Calls from one host of the pool to another.
//!
//! The master drives VMs on members (`host.local_vm_start` and friends) and
//! members talk to the master (`pool.sync_database`, `host.member_hello`).
//! These calls log in with `session.slave_login(host_uuid, pool_secret)`, never
//! follow `HOST_IS_SLAVE`, and re-login once when the peer restarted and
//! forgot the session.
//!
//! A peer that shows a certificate other than the one pinned for it (its
//! certificate was made again) is asked to prove the new one with the
//! pool secret before anything else is sent: over a connection that
//! trusts only the certificate it just showed, this host sends a fresh
//! nonce (`host.prove_certificate`) and pins the certificate if the answer
//! is the HMAC of that nonce and that certificate's fingerprint under the
//! secret's proof key (`crate::tls::certificate_proof`). An impostor
//! without the secret gets the nonce and nothing more; an old answer is
//! worthless for a new nonce; a proof made by the real host for its own
//! certificate pins only that certificate, whose key an impostor lacks.

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
            None => self.login(auth, address, port, timeout).await?,
        };
        let result = client.call(method, params.clone()).await;
        let result = match result {
            Err(e) if e.is(codes::SESSION_INVALID) && !fresh => {
                client = self.login(auth, address, port, timeout).await?;
                client.call(method, params).await
            }
            other => other,
        };
        // A peer that is gone, or shows another certificate now (the next
        // call logs in again, through the proof).
        if matches!(
            result,
            Err(ClientError::Unreachable { .. } | ClientError::Untrusted { .. })
        ) {
            self.clients.lock().await.remove(address);
        } else {
            self.clients.lock().await.insert(address.to_string(), client);
        }
        result
    }

    /// Log in at `address`; if the host there shows a certificate other
    /// than its pin, have it prove that one with the pool secret first.
    async fn login(&self, auth: &PeerAuth, address: &str, port: u16, timeout: Duration) -> Result<Client, ClientError> {
        match login(auth, address, port, timeout, &self.pins).await {
            Err(ClientError::Untrusted {
                address: dialled,
                fingerprint,
            }) => match prove(auth, address, port, &fingerprint, timeout).await {
                Ok(()) => {
                    tracing::warn!(
                        %address,
                        %fingerprint,
                        "the host's certificate is not the one the pool records; it proved it with the pool secret, so it is trusted"
                    );
                    self.pins.prove(address, &fingerprint);
                    login(auth, address, port, timeout, &self.pins).await
                }
                Err(why) => {
                    tracing::debug!(%address, %fingerprint, "certificate refused: {why}");
                    Err(ClientError::Untrusted {
                        address: dialled,
                        fingerprint,
                    })
                }
            },
            other => other,
        }
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
        trace: None,
    }
}

/// How long a certificate proof may take.
const PROOF_TIMEOUT: Duration = Duration::from_secs(5);

/// Ask the host at `address` to prove, with the pool secret, the
/// certificate `shown` it just showed: only that certificate is trusted on
/// the connection, and only a fresh nonce is sent over it.
async fn prove(auth: &PeerAuth, address: &str, port: u16, shown: &str, timeout: Duration) -> Result<(), String> {
    let only = Arc::new(Pins::new());
    only.pin_all(HashMap::from([(address.to_string(), vec![shown.to_string()])]));
    let options = peer_options(timeout.min(PROOF_TIMEOUT), Trust::Pinned(only));
    let mut client = Client::with_options(address, port, &options).no_redirect();
    let nonce = crate::tls::nonce();
    let answer = client
        .call_raw("host.prove_certificate", vec![json!(nonce)])
        .await
        .map_err(|e| e.to_string())?;
    let field = |name: &str| answer.get(name).and_then(Value::as_str).unwrap_or_default().to_string();
    if xapi_client::tls::normalize(&field("fingerprint")) != xapi_client::tls::normalize(shown) {
        return Err("it vouches for another certificate".into());
    }
    if !crate::tls::proof_holds(&auth.secret, &nonce, shown, &field("proof")) {
        return Err("its proof does not hold under the pool secret".into());
    }
    Ok(())
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
