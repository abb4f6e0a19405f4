//! The HTTP side of `xapid`: `POST /jsonrpc` (JSON-RPC), `POST /` (XML-RPC,
//! or JSON-RPC by content type), and the start-up of a host. Both wires
//! call the one dispatch (`crate::api::dispatch`), so every method answers
//! alike on either.
//!
//! Bodies over [`MAX_BODY`] are refused before they are read, and a body
//! that takes over [`BODY_TIMEOUT`] to arrive gets 408; a request that does
//! not say `Content-Type: application/json` (or `text/xml` at `/`) gets 415
//! (a web page cannot send those without the browser asking the server
//! first, and no answer carries CORS headers); a body that is not a call
//! gets a JSON-RPC parse or request error, or an XML-RPC fault; every other
//! answer is the handler's result or its API error, in the dialect of the
//! request. Connections are taken, capped and
//! timed out by [`crate::listener`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use tokio::net::TcpListener;
use xapi_proto::{jsonrpc, xmlrpc};

use crate::api::caller;
use crate::daemon::{Daemon, Role};

/// The largest request body accepted.
pub const MAX_BODY: usize = 1 << 20;

/// How long a request's body may take to arrive once its head has: a
/// client sending it a byte at a time holds its connection no longer.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// The API router of one host: JSON-RPC at `/jsonrpc`, and at `/` XML-RPC
/// (XAPI's first wire, what the `XenAPI` Python package speaks) or
/// JSON-RPC, by the request's content type.
pub fn router(d: Arc<Daemon>) -> Router {
    Router::new()
        .route("/jsonrpc", post(handle_json))
        .route("/", post(handle_root))
        .route("/metrics", axum::routing::get(metrics))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(d)
}

/// The pool's `other-config` key that opens `GET /metrics` to anyone who
/// can reach the port (`open`); without it a scrape authenticates with
/// HTTP Basic as a user of the pool.
pub const METRICS_KEY: &str = "pool-ha-metrics";

/// `GET /metrics`: Prometheus' text format (`scrape`), for a user of the
/// pool (HTTP Basic, checked as a login is, throttle included) or anyone
/// when the pool says `other-config:pool-ha-metrics=open`.
async fn metrics(State(d): State<Arc<Daemon>>, req: Request) -> Response {
    let open = d
        .model()
        .pool()
        .is_some_and(|(_, p)| p.other_config.get(METRICS_KEY).is_some_and(|v| v == "open"));
    if !open {
        let source = req
            .extensions()
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip());
        let credentials = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|b| {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD.decode(b.trim()).ok()
            })
            .and_then(|raw| String::from_utf8(raw).ok())
            .and_then(|text| text.split_once(':').map(|(u, p)| (u.to_string(), p.to_string())));
        let allowed = match credentials {
            Some((user, password)) => caller::from(source, crate::api::check_password(&d, &user, &password))
                .await
                .is_ok(),
            None => false,
        };
        if !allowed {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Basic realm=\"pool-ha metrics\"")],
                "GET /metrics needs a pool user's credentials (HTTP Basic), or other-config:pool-ha-metrics=open on the pool\n",
            )
                .into_response();
        }
    }
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        crate::scrape::render(&d),
    )
        .into_response()
}

/// The wire a request speaks, by its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    Json,
    Xml,
}

/// `application/json` or `text/xml` (`application/xml`), parameters such
/// as a charset allowed. Anything else, a form or `text/plain` above all,
/// is what a web page can send without asking: refused (415), so no page a
/// browser shows can drive the API.
fn wire(headers: &HeaderMap) -> Option<Wire> {
    let t = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())?
        .trim()
        .to_ascii_lowercase();
    match t.as_str() {
        "application/json" => Some(Wire::Json),
        "text/xml" | "application/xml" => Some(Wire::Xml),
        _ => None,
    }
}

async fn handle_json(State(d): State<Arc<Daemon>>, req: Request) -> Response {
    match wire(req.headers()) {
        Some(Wire::Json) => serve_call(d, req, Wire::Json).await,
        _ => (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "JSON-RPC takes Content-Type: application/json\n",
        )
            .into_response(),
    }
}

async fn handle_root(State(d): State<Arc<Daemon>>, req: Request) -> Response {
    match wire(req.headers()) {
        Some(w) => serve_call(d, req, w).await,
        None => (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "XML-RPC takes Content-Type: text/xml (JSON-RPC: application/json)\n",
        )
            .into_response(),
    }
}

async fn serve_call(d: Arc<Daemon>, req: Request, wire: Wire) -> Response {
    if d.io().network().is_err() {
        // The lab's cable pull: nothing gets through.
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let source = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    // `Bytes` as an extractor, with the body limit, under a deadline.
    let body = match tokio::time::timeout(BODY_TIMEOUT, Bytes::from_request(req, &())).await {
        Ok(Ok(body)) => body,
        Ok(Err(rejection)) => return rejection.into_response(),
        Err(_) => return StatusCode::REQUEST_TIMEOUT.into_response(),
    };
    // No CORS header on any answer: a browser keeps other sites' pages
    // from reading them.
    match wire {
        Wire::Json => {
            let bytes = caller::from(source, json_call(&d, &body)).await;
            (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], bytes).into_response()
        }
        Wire::Xml => {
            let bytes = caller::from(source, xml_call(&d, &body)).await;
            (StatusCode::OK, [(header::CONTENT_TYPE, "text/xml")], bytes).into_response()
        }
    }
}

async fn json_call(d: &Arc<Daemon>, body: &[u8]) -> Vec<u8> {
    match jsonrpc::parse_request(body) {
        Err(e) => jsonrpc::encode_envelope_error(&e),
        Ok(req) => match crate::api::dispatch(d, &req.method, req.params).await {
            Ok(crate::api::Reply::Value(result)) => jsonrpc::encode_result(req.version, &req.id, result),
            Ok(crate::api::Reply::Json(text)) => jsonrpc::encode_result_json(req.version, &req.id, &text),
            Err(err) => {
                tracing::debug!(method = %req.method, "{err}");
                jsonrpc::encode_error(req.version, &req.id, &err)
            }
        },
    }
}

async fn xml_call(d: &Arc<Daemon>, body: &[u8]) -> Vec<u8> {
    let call = match xmlrpc::parse_call(body) {
        Ok(call) => call,
        Err(e) => return xmlrpc::encode_fault(&e),
    };
    match crate::api::dispatch(d, &call.method, call.params).await {
        Ok(crate::api::Reply::Value(result)) => xmlrpc::encode_success(&result),
        Ok(crate::api::Reply::Json(text)) => match serde_json::from_str(&text) {
            Ok(result) => xmlrpc::encode_success(&result),
            Err(e) => xmlrpc::encode_failure(&xapi_proto::ApiError::internal(e.to_string())),
        },
        Err(err) => {
            tracing::debug!(method = %call.method, "{err}");
            xmlrpc::encode_failure(&err)
        }
    }
}

/// Bring the database in line with a fresh process: this host is live at its
/// configured address with its certificate, and only the guests its driver
/// runs (none with sim; with qemu, those it adopted) run here.
pub async fn reconcile_at_start(d: &Arc<Daemon>) -> Result<(), xapi_proto::ApiError> {
    if d.role() != Role::Master {
        return Ok(());
    }
    let (uuid, address, memory_total) = (d.host_uuid(), &d.config().address, d.config().memory_total);
    let snapshot = d.driver().snapshot();
    let cert = d.identity().summary();
    let strays = d
        .write(|txn| {
            crate::ops::host::record_certificate(txn, uuid, &cert)?;
            crate::ops::host::record_host_start(txn, uuid, address, memory_total, &snapshot)
        })
        .await?;
    crate::ops::host::stop_strays(d, &strays, &snapshot).await;
    Ok(())
}

/// Where a host serves its API, as XAPI does: HTTPS on its API port
/// (443), and plain HTTP on XAPI's port 80 (the same API in clear, for
/// `xe --nossl` and old clients) unless the host is HTTPS-only. The lab's
/// hosts take both on their one port instead.
pub struct Listeners {
    pub https: TcpListener,
    /// The HTTPS port takes plain HTTP too (the lab).
    pub plain_on_https: bool,
    pub http: Option<TcpListener>,
}

/// What a plain-HTTP request on the HTTPS port is told.
fn https_only_text(http: Option<u16>) -> String {
    match http {
        Some(port) => {
            format!("This port speaks HTTPS: use https:// (xe without --nossl); plain HTTP is on port {port}.\n")
        }
        None => {
            "This port speaks HTTPS: use https:// (xe without --nossl); this host serves no plain HTTP (https-only).\n"
                .to_string()
        }
    }
}

/// Serve the API of `d` on `listeners` until `shutdown` resolves, with
/// the host's background work running.
pub async fn serve(
    d: Arc<Daemon>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let adopted = d.driver().adopt().await;
    if !adopted.is_empty() {
        tracing::info!(vms = ?adopted, "took over the guests the previous xapid left running");
    }
    crate::failover::boot(&d).await;
    // An armed master records its start once it holds the master lock
    // (`failover::monitor`): until then another host may be the master.
    if !d.ha().armed() {
        if let Err(e) = reconcile_at_start(&d).await {
            tracing::error!("cannot record this host's start: {e}");
        }
    }
    crate::member::spawn_master_watch(d.clone());
    crate::member::spawn(d.clone());
    crate::failover::monitor::spawn(d.clone());
    crate::failover::restart::spawn(d.clone());
    crate::failover::leases::spawn(d.clone());
    crate::failover::leases::spawn_lab_storage_watch(d.clone());
    crate::guests::spawn(d.clone());
    crate::storage_probe::spawn(d.clone());
    crate::alerts::spawn(d.clone());
    let (limits, nofile) = crate::listener::Limits::for_this_process();
    tracing::info!(
        total = limits.total,
        per_source = limits.per_source,
        header_timeout = ?limits.header_read_timeout,
        open_file_limit = ?nofile,
        "API connections capped"
    );
    let tls = d
        .identity()
        .server_config()
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let http_port = match &listeners.http {
        Some(l) => Some(l.local_addr()?.port()),
        None => None,
    };
    let https_port = listeners.https.local_addr()?.port();
    tracing::info!(
        fingerprint = %d.identity().fingerprint(),
        https = https_port,
        http = ?http_port,
        plain_on_https = listeners.plain_on_https,
        "API served over TLS (and plain HTTP where shown); certificate SHA-256 fingerprint"
    );
    let mut ports = vec![crate::listener::Port {
        listener: listeners.https,
        tls: Some(tls),
        plain: if listeners.plain_on_https {
            crate::listener::Plain::Serve
        } else {
            crate::listener::Plain::Refuse(https_only_text(http_port))
        },
    }];
    if let Some(listener) = listeners.http {
        ports.push(crate::listener::Port {
            listener,
            tls: None,
            plain: crate::listener::Plain::Serve,
        });
    }
    crate::listener::serve(ports, router(d), limits, shutdown).await
}
