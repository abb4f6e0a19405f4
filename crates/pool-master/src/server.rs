//! The HTTP side of `xapid`: `POST /jsonrpc`, and the start-up of a host.
//!
//! Bodies over [`MAX_BODY`] are refused before they are read, and a body
//! that takes over [`BODY_TIMEOUT`] to arrive gets 408; a request that does
//! not say `Content-Type: application/json` gets 415 (a web page cannot
//! send that without the browser asking the server first, and no answer
//! carries CORS headers); a body that is not JSON-RPC gets a JSON-RPC parse
//! or request error; every other answer is the handler's result or its API
//! error, in the dialect of the request. Connections are taken, capped and
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
use xapi_proto::jsonrpc;

use crate::daemon::{Daemon, Role};

/// The largest request body accepted.
pub const MAX_BODY: usize = 1 << 20;

/// How long a request's body may take to arrive once its head has: a
/// client sending it a byte at a time holds its connection no longer.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// The API router of one host.
pub fn router(d: Arc<Daemon>) -> Router {
    Router::new()
        .route("/jsonrpc", post(handle))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(d)
}

async fn handle(State(d): State<Arc<Daemon>>, req: Request) -> Response {
    if d.io().network().is_err() {
        // The lab's cable pull: nothing gets through.
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    if !is_json(req.headers()) {
        // A form or `text/plain` POST is what a web page can send without
        // asking: refused, so no page a browser shows can drive the API.
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "JSON-RPC takes Content-Type: application/json\n",
        )
            .into_response();
    }
    // `Bytes` as an extractor, with the body limit, under a deadline.
    let body = match tokio::time::timeout(BODY_TIMEOUT, Bytes::from_request(req, &())).await {
        Ok(Ok(body)) => body,
        Ok(Err(rejection)) => return rejection.into_response(),
        Err(_) => return StatusCode::REQUEST_TIMEOUT.into_response(),
    };
    let bytes = match jsonrpc::parse_request(&body) {
        Err(e) => jsonrpc::encode_envelope_error(&e),
        Ok(req) => match crate::api::dispatch(&d, &req.method, req.params).await {
            Ok(crate::api::Reply::Value(result)) => jsonrpc::encode_result(req.version, &req.id, result),
            Ok(crate::api::Reply::Json(text)) => jsonrpc::encode_result_json(req.version, &req.id, &text),
            Err(err) => {
                tracing::debug!(method = %req.method, "{err}");
                jsonrpc::encode_error(req.version, &req.id, &err)
            }
        },
    };
    // No CORS header: a browser keeps other sites' pages from reading
    // the answers.
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], bytes).into_response()
}

/// The request says its body is JSON (`application/json`, parameters
/// such as a charset allowed).
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
}

/// Bring the database in line with a fresh process: this host is live at its
/// configured address, and only the guests its driver runs (none with sim;
/// with qemu, those it adopted) run here.
pub async fn reconcile_at_start(d: &Arc<Daemon>) -> Result<(), xapi_proto::ApiError> {
    if d.role() != Role::Master {
        return Ok(());
    }
    let (uuid, address, memory_total) = (d.host_uuid(), &d.config().address, d.config().memory_total);
    let snapshot = d.driver().snapshot();
    let strays = d
        .write(|txn| crate::ops::host::record_host_start(txn, uuid, address, memory_total, &snapshot))
        .await?;
    crate::ops::host::stop_strays(d, &strays, &snapshot).await;
    Ok(())
}

/// Serve the API of `d` on `listener` until `shutdown` resolves, with the
/// host's background work running.
pub async fn serve(
    d: Arc<Daemon>,
    listener: TcpListener,
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
    let (limits, nofile) = crate::listener::Limits::for_this_process();
    tracing::info!(
        total = limits.total,
        per_source = limits.per_source,
        header_timeout = ?limits.header_read_timeout,
        open_file_limit = ?nofile,
        "API connections capped"
    );
    crate::listener::serve(listener, router(d), limits, shutdown).await
}
