//! The one JSON-RPC client of a pool-ha pool.
//!
//! `xe`, the member hosts (talking to their master) and the tests all use
//! [`Client`]. It logs in with `session.login_with_password`, prepends the
//! session to every call, and when it reaches a member host that answers
//! `HOST_IS_SLAVE [master-address]`, it reconnects to the master (same port)
//! and retries, as XAPI's own bindings do. [`Client::no_redirect`] turns that
//! off for calls that must run on the named host.
//!
//! [`Options::trace`] sees every request and answer as one line of text
//! (`xe --debug`), with the session, passwords and the session a login
//! returns replaced by placeholders.

pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use xapi_proto::jsonrpc::{self, ResponseError};
use xapi_proto::{codes, ApiError};

/// How many `HOST_IS_SLAVE` redirections one call follows before giving up.
const MAX_REDIRECTS: usize = 3;

/// What can go wrong with a call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an API error.
    #[error("{0}")]
    Api(ApiError),
    /// No answer: connection refused, timeout, reset.
    #[error("cannot reach {address}: {detail}")]
    Unreachable { address: String, detail: String },
    /// An answer that is not JSON-RPC.
    #[error("protocol error talking to {address}: {detail}")]
    Protocol { address: String, detail: String },
    /// `call` before `login`.
    #[error("not logged in")]
    NotLoggedIn,
    /// The host showed a certificate not pinned for its address.
    #[error("the certificate of {address} (SHA-256 {fingerprint}) is not trusted")]
    Untrusted { address: String, fingerprint: String },
}

impl ClientError {
    /// The API error, if this is one.
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            ClientError::Api(e) => Some(e),
            _ => None,
        }
    }

    /// Is this the API error `code`?
    pub fn is(&self, code: &str) -> bool {
        self.api().is_some_and(|e| e.code == code)
    }
}

/// Connection settings.
#[derive(Debug, Clone)]
pub struct Options {
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// Plain HTTP, or TLS and whom to trust.
    pub trust: tls::Trust,
    /// Told every request and answer, secrets hidden (`xe --debug`).
    pub trace: Option<Trace>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(120),
            trust: tls::Trust::Plain,
            trace: None,
        }
    }
}

/// Where the lines of a call trace go.
#[derive(Clone)]
pub struct Trace(pub Arc<dyn Fn(&str) + Send + Sync>);

impl std::fmt::Debug for Trace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Trace")
    }
}

/// The longest answer a trace line shows whole.
const TRACE_ANSWER_CHARS: usize = 1000;

/// The parameters of `method` as a trace shows them: the session, the
/// login passwords and the join password replaced.
fn redacted_params(method: &str, params: &[Value], session: Option<&str>) -> String {
    let secret_at: &[usize] = match method {
        "session.login_with_password" | "session.slave_local_login_with_password" => &[1],
        "session.change_password" => &[1, 2],
        "pool.join" | "pool.join_force" => &[3],
        // The client gives up its session before it logs out: it is no
        // longer the one to match, and it stays valid if the call fails.
        m if m.starts_with("session.") && m.contains("logout") => &[0],
        _ => &[],
    };
    let shown: Vec<String> = params
        .iter()
        .enumerate()
        .map(|(i, p)| {
            if secret_at.contains(&i) {
                "\"<hidden>\"".to_string()
            } else if session.is_some() && p.as_str() == session {
                "\"<session>\"".to_string()
            } else {
                p.to_string()
            }
        })
        .collect();
    shown.join(", ")
}

/// An answer as a trace shows it: a login's session hidden, long ones cut.
fn redacted_answer(method: &str, answer: &Result<Value, ClientError>) -> String {
    match answer {
        Ok(_) if method.starts_with("session.") && method.contains("login") => "ok \"<session>\"".into(),
        Ok(v) => {
            let text = v.to_string();
            match text.char_indices().nth(TRACE_ANSWER_CHARS) {
                Some((cut, _)) => format!("ok {}... ({} bytes)", &text[..cut], text.len()),
                None => format!("ok {text}"),
            }
        }
        Err(e) => format!("error {e}"),
    }
}

/// A JSON-RPC connection to a pool, with its session.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    host: String,
    port: u16,
    follow_redirects: bool,
    trust: tls::Trust,
    session: Option<String>,
    credentials: Option<(String, String)>,
    next_id: u64,
    trace: Option<Trace>,
}

impl Client {
    /// A client for the API at `host:port` (plain HTTP).
    pub fn new(host: &str, port: u16) -> Self {
        Self::with_options(host, port, &Options::default())
    }

    pub fn with_options(host: &str, port: u16, options: &Options) -> Self {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .timeout(options.request_timeout)
            .no_proxy();
        builder = builder.use_preconfigured_tls(tls::client_config(&options.trust));
        let http = builder.build().unwrap_or_default();
        Client {
            http,
            host: host.to_string(),
            port,
            follow_redirects: true,
            trust: options.trust.clone(),
            session: None,
            credentials: None,
            next_id: 1,
            trace: options.trace.clone(),
        }
    }

    /// Do not follow `HOST_IS_SLAVE`: the call must run on this very host.
    pub fn no_redirect(mut self) -> Self {
        self.follow_redirects = false;
        self
    }

    /// The host currently talked to (the master, after a redirection).
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The session reference, once logged in.
    pub fn session(&self) -> Option<&str> {
        self.session.as_deref()
    }

    /// Use an existing session instead of logging in.
    pub fn set_session(&mut self, session: String) {
        self.session = Some(session);
    }

    fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    fn url(&self) -> String {
        let scheme = match self.trust {
            tls::Trust::Plain => "http",
            _ => "https",
        };
        if self.host.contains(':') {
            format!("{scheme}://[{}]:{}/jsonrpc", self.host, self.port)
        } else {
            format!("{scheme}://{}:{}/jsonrpc", self.host, self.port)
        }
    }

    /// A failed request: an untrusted certificate when the pins refused
    /// one, else unreachable.
    fn failed(&self, e: &reqwest::Error) -> ClientError {
        if let tls::Trust::Pinned(pins) = &self.trust {
            if let Some((address, fingerprint)) = pins.refused().filter(|(a, _)| *a == self.host) {
                return ClientError::Untrusted { address, fingerprint };
            }
        }
        ClientError::Unreachable {
            address: self.address(),
            detail: describe(e),
        }
    }

    /// `session.login_with_password`, following the master.
    pub async fn login(&mut self, username: &str, password: &str) -> Result<(), ClientError> {
        let params = vec![json!(username), json!(password), json!("2.21"), json!("xe")];
        self.open_session("session.login_with_password", params).await?;
        self.credentials = Some((username.to_string(), password.to_string()));
        Ok(())
    }

    async fn open_session(&mut self, method: &str, params: Vec<Value>) -> Result<(), ClientError> {
        let session = self.call_following(method, params, false).await?;
        let session = session.as_str().ok_or_else(|| ClientError::Protocol {
            address: self.address(),
            detail: "login returned no session reference".into(),
        })?;
        self.session = Some(session.to_string());
        Ok(())
    }

    /// Log in to this host itself (`session.slave_local_login_with_password`),
    /// master or not, even in HA emergency mode; never follows a redirect.
    pub async fn login_local(&mut self, username: &str, password: &str) -> Result<(), ClientError> {
        self.follow_redirects = false;
        let params = vec![json!(username), json!(password)];
        self.open_session("session.slave_local_login_with_password", params)
            .await
    }

    pub async fn logout(&mut self) {
        if let Some(session) = self.session.take() {
            let _ = self.call_once("session.logout", vec![json!(session)]).await;
        }
    }

    /// Call `method` with the session prepended to `params`.
    pub async fn call(&mut self, method: &str, params: Vec<Value>) -> Result<Value, ClientError> {
        if self.session.is_none() {
            return Err(ClientError::NotLoggedIn);
        }
        self.call_following(method, params, true).await
    }

    /// Call `method` with exactly `params` (no session), without redirection.
    pub async fn call_raw(&mut self, method: &str, params: Vec<Value>) -> Result<Value, ClientError> {
        self.call_once(method, params).await
    }

    async fn call_following(
        &mut self,
        method: &str,
        params: Vec<Value>,
        with_session: bool,
    ) -> Result<Value, ClientError> {
        for _ in 0..=MAX_REDIRECTS {
            let mut full = Vec::with_capacity(params.len() + 1);
            if with_session {
                full.push(json!(self.session.clone().unwrap_or_default()));
            }
            full.extend(params.iter().cloned());
            match self.call_once(method, full).await {
                Err(ClientError::Api(e)) if e.code == codes::HOST_IS_SLAVE && self.follow_redirects => {
                    let master = e.params.first().cloned().unwrap_or_default();
                    if master.is_empty() || master == self.host {
                        return Err(ClientError::Api(e));
                    }
                    self.host = master;
                    if with_session {
                        // A member issued no session; log in on the master.
                        let (user, pass) = self.credentials.clone().ok_or(ClientError::NotLoggedIn)?;
                        self.session = None;
                        Box::pin(self.login(&user, &pass)).await?;
                    }
                }
                other => return other,
            }
        }
        Err(ClientError::Protocol {
            address: self.address(),
            detail: "too many HOST_IS_SLAVE redirections".into(),
        })
    }

    async fn call_once(&mut self, method: &str, params: Vec<Value>) -> Result<Value, ClientError> {
        let Some(trace) = self.trace.clone() else {
            return self.call_untraced(method, params).await;
        };
        (trace.0)(&format!(
            "-> {} {method}({})",
            self.url(),
            redacted_params(method, &params, self.session.as_deref())
        ));
        let started = std::time::Instant::now();
        let answer = self.call_untraced(method, params).await;
        (trace.0)(&format!(
            "<- {method} in {} ms: {}",
            started.elapsed().as_millis(),
            redacted_answer(method, &answer)
        ));
        answer
    }

    async fn call_untraced(&mut self, method: &str, params: Vec<Value>) -> Result<Value, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let body = jsonrpc::encode_request(method, params, id);
        let response = self
            .http
            .post(self.url())
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| self.failed(&e))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| ClientError::Unreachable {
            address: self.address(),
            detail: describe(&e),
        })?;
        jsonrpc::decode_response(&bytes).map_err(|e| match e {
            ResponseError::Api(api) => ClientError::Api(api),
            // A host that refuses the call at the HTTP level (a cut network
            // answers 503 with no body) did not serve it: as XAPI's clients
            // say, it could not be contacted.
            ResponseError::Malformed(detail) if !status.is_success() => ClientError::Unreachable {
                address: self.address(),
                detail: format!("HTTP {status}: {detail}"),
            },
            ResponseError::Malformed(detail) => ClientError::Protocol {
                address: self.address(),
                detail,
            },
        })
    }
}

fn describe(e: &reqwest::Error) -> String {
    use std::error::Error;
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Helpers to read typed values out of JSON results.
pub mod value {
    use super::ClientError;
    use serde_json::Value;

    fn protocol(what: &str) -> ClientError {
        ClientError::Protocol {
            address: String::new(),
            detail: format!("expected {what}"),
        }
    }

    pub fn string(v: &Value) -> Result<String, ClientError> {
        v.as_str().map(str::to_string).ok_or_else(|| protocol("a string"))
    }

    pub fn strings(v: &Value) -> Result<Vec<String>, ClientError> {
        v.as_array()
            .ok_or_else(|| protocol("an array"))?
            .iter()
            .map(string)
            .collect()
    }
}

#[cfg(test)]
mod trace_tests {
    use super::*;

    #[test]
    fn a_trace_hides_sessions_and_passwords() {
        let login = [json!("root"), json!("s3cret"), json!("2.21"), json!("xe")];
        let shown = redacted_params("session.login_with_password", &login, None);
        assert!(!shown.contains("s3cret") && shown.contains("\"root\""), "{shown}");
        let join = [json!("OpaqueRef:s"), json!("10.0.0.1"), json!("root"), json!("pw")];
        let shown = redacted_params("pool.join", &join, Some("OpaqueRef:s"));
        assert_eq!(shown, "\"<session>\", \"10.0.0.1\", \"root\", \"<hidden>\"");
        let logout = redacted_params("session.logout", &[json!("OpaqueRef:s")], None);
        assert_eq!(logout, "\"<hidden>\"");
        let answer = redacted_answer("session.login_with_password", &Ok(json!("OpaqueRef:s")));
        assert!(!answer.contains("OpaqueRef:s"), "{answer}");
        let long = redacted_answer("VM.get_all_records", &Ok(json!("x".repeat(5000))));
        assert!(long.len() < 1100 && long.ends_with("(5002 bytes)"), "{long}");
    }
}
