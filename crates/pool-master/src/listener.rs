//! The API's TCP side: which connections `xapid` takes, and how long it
//! keeps them (issue 26: 1,100 idle connections without credentials once
//! took every descriptor of a member, whose statefile I/O then failed with
//! "Too many open files", and it fenced).
//!
//! - **Caps.** At most [`Limits::total`] connections at once, and
//!   [`Limits::per_source`] from one IP address. A connection over its
//!   source's cap is closed at once. At the total cap, the new connection
//!   takes the place of an idle one (no request in progress; the oldest of
//!   the source with the most connections), which is closed: idle
//!   connections from many addresses cannot keep `xe` out. With every
//!   connection busy, the new one is closed at once. Refusals and
//!   evictions are counted and logged at most once per [`LOG_EVERY`].
//! - **Timeouts.** hyper's HTTP/1 header read timeout
//!   ([`Limits::header_read_timeout`]): a request head must arrive whole
//!   within it. hyper (1.12) starts that clock whenever the connection waits
//!   for a head: after accept and again after each response, so it is also
//!   the idle timeout of a kept-alive connection (the tests here pin that
//!   down). A body must arrive within `server::BODY_TIMEOUT` of its head.
//! - **Headroom.** [`Limits::for_open_files`] keeps the caps to a quarter
//!   of the open-file limit, so that API load leaves three quarters of the
//!   descriptors to HA (statefile, heartbeats, leases), the database and
//!   the guests; the total cap follows the limit as it is at each accept.
//!
//! Hand-written rather than `axum::serve` with hyper-util's
//! `GracefulShutdown`: that one owns each connection, so no connection can
//! be closed alone (an eviction); the stop here is the same scheme (a watch
//! channel every connection holds, closed when the last one ends).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tower::ServiceExt;

/// The most API connections at once, whatever the open-file limit: room
/// for the long polls of `event.from` (each waiting client holds one; 1,000
/// waiters cost the master about 13 MB, docs/benchmarks.md), while the
/// quarter of the open-file limit keeps HA's descriptors.
pub const MAX_TOTAL: usize = 2048;
/// The most API connections from one IP address.
pub const MAX_PER_SOURCE: usize = 64;
/// How long a request head may take, and a kept-alive connection may idle.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Refusals, evictions and accept errors are logged at most this often.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// The caps and timeouts of the API's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub total: usize,
    pub per_source: usize,
    pub header_read_timeout: Duration,
}

impl Limits {
    /// The limits of a process allowed `nofile` open files: at most a
    /// quarter of them for API connections (and never over [`MAX_TOTAL`]).
    ///
    /// Why a quarter: everything else `xapid` does needs descriptors too,
    /// and HA's need it most: each statefile cycle opens the statefile, the
    /// lease files and heartbeat sockets are open for good, SQLite holds its
    /// files, a qemu guest holds several. A host that cannot open its
    /// statefile loses it and may fence, so API load must never take the
    /// last descriptors: with 1,024 files the API gets 256 and the rest keep
    /// 768; each accepted connection over a cap holds one more only until it
    /// is closed, at once.
    pub fn for_open_files(nofile: u64) -> Limits {
        let total = usize::try_from(nofile / 4).unwrap_or(usize::MAX).clamp(1, MAX_TOTAL);
        Limits {
            total,
            per_source: MAX_PER_SOURCE.min(total),
            header_read_timeout: HEADER_READ_TIMEOUT,
        }
    }

    /// The limits for this process's open-file limit (its soft limit, which
    /// `xapid serve` raised to the hard one at start).
    pub fn for_this_process() -> (Limits, Option<u64>) {
        use nix::sys::resource::{getrlimit, Resource};
        match getrlimit(Resource::RLIMIT_NOFILE) {
            Ok((soft, _)) => (Limits::for_open_files(soft), Some(soft)),
            Err(_) => (Limits::for_open_files(1024), None),
        }
    }
}

/// Why a connection was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Its source already has [`Limits::per_source`] connections.
    PerSource,
    /// [`Limits::total`] connections, every one with a request in progress.
    Total,
}

/// The connections being served, by source.
#[derive(Debug)]
pub struct Conns {
    limits: Limits,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    next: u64,
    per_source: HashMap<IpAddr, usize>,
    /// By age (ids grow).
    open: BTreeMap<u64, Entry>,
}

#[derive(Debug)]
struct Entry {
    source: IpAddr,
    busy: Arc<AtomicUsize>,
    leave: Arc<Notify>,
}

/// One taken connection: counted until dropped.
#[derive(Debug)]
pub struct Slot {
    conns: Arc<Conns>,
    id: u64,
    source: IpAddr,
    /// Requests in progress on the connection.
    pub busy: Arc<AtomicUsize>,
    /// Notified when the connection must make room for a new one.
    pub leave: Arc<Notify>,
}

/// What [`Conns::admit`] did.
#[derive(Debug)]
pub struct Admitted {
    pub slot: Slot,
    /// An idle connection had to make room (it is told to leave).
    pub evicted: bool,
}

impl Conns {
    pub fn new(limits: Limits) -> Arc<Conns> {
        Arc::new(Conns {
            limits,
            state: Mutex::new(State::default()),
        })
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Connections counted now.
    pub fn open(&self) -> usize {
        self.state().open.len()
    }

    /// Connections counted now from `source`.
    pub fn from_source(&self, source: IpAddr) -> usize {
        self.state()
            .per_source
            .get(&source.to_canonical())
            .copied()
            .unwrap_or(0)
    }

    /// Take a connection from `source`, or say why not. At the total cap,
    /// an idle connection is told to leave and stops counting at once (it
    /// holds no request, so it closes as soon as its task runs).
    pub fn admit(self: &Arc<Self>, source: IpAddr) -> Result<Admitted, Refused> {
        let source = source.to_canonical();
        let mut st = self.state();
        let mine = st.per_source.get(&source).copied().unwrap_or(0);
        if mine >= self.limits.per_source {
            return Err(Refused::PerSource);
        }
        let mut evicted = false;
        // The open-file limit as it is now (an admin may lower it with
        // prlimit while xapid runs): never more than a quarter of it.
        let total = self.limits.total.min(Limits::for_this_process().0.total);
        if st.open.len() >= total {
            let victim = st
                .open
                .iter()
                .filter(|(_, e)| e.busy.load(Ordering::SeqCst) == 0)
                // The most connections first, then the oldest (max_by_key
                // keeps the last of equals, so compare the id reversed).
                .max_by_key(|(id, e)| {
                    (
                        st.per_source.get(&e.source).copied().unwrap_or(0),
                        std::cmp::Reverse(**id),
                    )
                })
                .map(|(id, _)| *id);
            let Some(victim) = victim else {
                return Err(Refused::Total);
            };
            if let Some(e) = st.open.remove(&victim) {
                forget_source(&mut st.per_source, e.source);
                e.leave.notify_one();
            }
            evicted = true;
        }
        let id = st.next;
        st.next += 1;
        let (busy, leave) = (Arc::new(AtomicUsize::new(0)), Arc::new(Notify::new()));
        st.open.insert(
            id,
            Entry {
                source,
                busy: busy.clone(),
                leave: leave.clone(),
            },
        );
        *st.per_source.entry(source).or_default() += 1;
        Ok(Admitted {
            slot: Slot {
                conns: self.clone(),
                id,
                source,
                busy,
                leave,
            },
            evicted,
        })
    }
}

fn forget_source(per_source: &mut HashMap<IpAddr, usize>, source: IpAddr) {
    if let Some(n) = per_source.get_mut(&source) {
        *n -= 1;
        if *n == 0 {
            per_source.remove(&source);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut st = self.conns.state();
        // An evicted connection stopped counting when it was told to leave.
        if st.open.remove(&self.id).is_some() {
            forget_source(&mut st.per_source, self.source);
        }
    }
}

/// A request in progress: the connection is busy until it is dropped.
struct Busy(Arc<AtomicUsize>);

impl Busy {
    fn new(count: &Arc<AtomicUsize>) -> Busy {
        count.fetch_add(1, Ordering::SeqCst);
        Busy(count.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Counts of what the accept loop turned away, logged at most once per
/// [`LOG_EVERY`] (one line per connection would let a flood fill the disk).
#[derive(Debug, Default)]
struct Tally {
    per_source: u64,
    total: u64,
    evicted: u64,
    accept_errors: u64,
    last_error: Option<String>,
    since: Option<Instant>,
    logged: Option<Instant>,
}

impl Tally {
    fn note(&mut self, limits: Limits) {
        let now = Instant::now();
        self.since.get_or_insert(now);
        if self.logged.is_some_and(|at| now.duration_since(at) < LOG_EVERY) {
            return;
        }
        let over = self.since.map(|s| now.duration_since(s)).unwrap_or_default();
        tracing::warn!(
            over_per_source_cap = self.per_source,
            over_total_cap = self.total,
            idle_closed_for_room = self.evicted,
            accept_errors = self.accept_errors,
            last_accept_error = self.last_error.as_deref().unwrap_or(""),
            per_source_cap = limits.per_source,
            total_cap = limits.total,
            "API connections refused or closed in the last {:.0?}",
            over
        );
        *self = Tally {
            logged: Some(now),
            ..Tally::default()
        };
    }
}

/// How a connection speaks, told from its first byte: a TLS handshake
/// record starts with 0x16 (no HTTP method does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Speaks {
    Tls,
    Plain,
}

/// Wait for the connection's first byte (without taking it), at most
/// `within`: `None` when the client closed or sent nothing in time.
async fn first_byte(stream: &tokio::net::TcpStream, within: Duration) -> Option<Speaks> {
    let mut byte = [0u8; 1];
    match tokio::time::timeout(within, stream.peek(&mut byte)).await {
        Ok(Ok(1)) if byte[0] == 0x16 => Some(Speaks::Tls),
        Ok(Ok(1)) => Some(Speaks::Plain),
        _ => None,
    }
}

/// What a port does with a connection that opens with plain HTTP.
#[derive(Debug, Clone)]
pub enum Plain {
    /// Serve it.
    Serve,
    /// Answer each of its requests with 400 and this text (a TLS-only
    /// port telling a plain client where to go).
    Refuse(String),
}

/// One listening socket and what it speaks: TLS with `tls`, plain HTTP as
/// `plain` says (a TLS handshake on a port without `tls` is closed).
pub struct Port {
    pub listener: TcpListener,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub plain: Plain,
}

/// Accept the next connection on any of `ports`: it and its port's index.
async fn accept_any(ports: &[Port]) -> (std::io::Result<(tokio::net::TcpStream, std::net::SocketAddr)>, usize) {
    let accepts = ports
        .iter()
        .enumerate()
        .map(|(i, p)| Box::pin(async move { (p.listener.accept().await, i) }));
    futures::future::select_all(accepts).await.0
}

/// Serve `router` on `ports` under `limits` (one set of caps for all of
/// them) until `shutdown` resolves; then stop accepting, let requests in
/// progress finish (idle connections close at once) and return when every
/// connection is closed. On a port with TLS, a connection that opens with
/// a TLS handshake is served over TLS (the handshake must end within the
/// header timeout); one that opens with plain HTTP is served or refused as
/// the port says.
pub async fn serve(
    ports: Vec<Port>,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if ports.is_empty() {
        return Err(std::io::Error::other("no port to serve"));
    }
    let conns = Conns::new(limits);
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let acceptors: Vec<Option<tokio_rustls::TlsAcceptor>> = ports
        .iter()
        .map(|p| p.tls.clone().map(tokio_rustls::TlsAcceptor::from))
        .collect();
    let plain_routers: Vec<Router> = ports
        .iter()
        .map(|p| match &p.plain {
            Plain::Serve => router.clone(),
            Plain::Refuse(why) => {
                let why = why.clone();
                Router::new().fallback(move || {
                    let why = why.clone();
                    async move { (axum::http::StatusCode::BAD_REQUEST, why) }
                })
            }
        })
        .collect();
    let (stop_tx, stop_rx) = watch::channel(());
    let mut tally = Tally::default();
    tokio::pin!(shutdown);
    loop {
        let (accepted, port) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = accept_any(&ports) => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tally.accept_errors += 1;
                tally.last_error = Some(e.to_string());
                tally.note(limits);
                // Out of descriptors (EMFILE), say: do not spin on it.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let slot = match conns.admit(peer.ip()) {
            Ok(Admitted { slot, evicted }) => {
                if evicted {
                    tally.evicted += 1;
                    tally.note(limits);
                }
                slot
            }
            Err(why) => {
                match why {
                    Refused::PerSource => tally.per_source += 1,
                    Refused::Total => tally.total += 1,
                }
                tally.note(limits);
                drop(stream);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = |router: Router| {
            let busy = slot.busy.clone();
            hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                let busy = Busy::new(&busy);
                // The handlers learn where a call came from (the login
                // throttle counts failures per source).
                req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
                let call = router.clone().oneshot(req.map(axum::body::Body::new));
                async move {
                    let response = call.await;
                    drop(busy);
                    response
                }
            })
        };
        let (tls_service, plain_service) = (service(router.clone()), service(plain_routers[port].clone()));
        let (http, acceptor, mut stop) = (http.clone(), acceptors[port].clone(), stop_rx.clone());
        let within = limits.header_read_timeout;
        tokio::spawn(async move {
            let leave = slot.leave.clone();
            // Until a request can start, the connection is idle: told to
            // leave, or the server stopping, closes it.
            let speaks = tokio::select! {
                s = first_byte(&stream, within) => s,
                () = leave.notified() => return,
                _ = stop.changed() => return,
            };
            match (speaks, acceptor) {
                (Some(Speaks::Tls), Some(acceptor)) => {
                    let handshake = tokio::select! {
                        h = tokio::time::timeout(within, acceptor.accept(stream)) => h,
                        () = leave.notified() => return,
                        _ = stop.changed() => return,
                    };
                    match handshake {
                        Ok(Ok(tls)) => {
                            drive(http.serve_connection(TokioIo::new(tls), tls_service), slot, stop, peer).await
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, "API TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!(%peer, "API TLS handshake timed out"),
                    }
                }
                (Some(Speaks::Plain), _) => {
                    drive(
                        http.serve_connection(TokioIo::new(stream), plain_service),
                        slot,
                        stop,
                        peer,
                    )
                    .await
                }
                // TLS on a plain-only server, or nothing said in time.
                _ => {}
            }
        });
    }
    drop(ports);
    let _ = stop_tx.send(());
    drop(stop_rx);
    // Every connection's task holds a receiver until it ends.
    stop_tx.closed().await;
    Ok(())
}

/// Run one connection to its end: closed by the client, told to leave
/// (its place taken while idle), or shut down gracefully with the server.
async fn drive<C>(conn: C, slot: Slot, mut stop: watch::Receiver<()>, peer: std::net::SocketAddr)
where
    C: Future<Output = Result<(), hyper::Error>> + GracefulConnection,
{
    let leave = slot.leave.clone();
    tokio::pin!(conn);
    tokio::select! {
        done = conn.as_mut() => {
            if let Err(e) = done {
                tracing::debug!(%peer, "API connection: {e}");
            }
            return;
        }
        // Idle, and its place is taken: close it now.
        () = leave.notified() => return,
        _ = stop.changed() => conn.as_mut().graceful(),
    }
    let _ = conn.await;
    drop(slot);
}

/// A hyper connection that can be asked to finish gracefully.
trait GracefulConnection {
    fn graceful(self: std::pin::Pin<&mut Self>);
}

impl<I, S> GracefulConnection for http1::Connection<I, S>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    S: hyper::service::HttpService<Incoming>,
    S::ResBody: hyper::body::Body + 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn graceful(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{Ipv4Addr, TcpStream};

    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
    }

    fn limits(total: usize, per_source: usize) -> Limits {
        Limits {
            total,
            per_source,
            header_read_timeout: Duration::from_millis(300),
        }
    }

    #[test]
    fn a_quarter_of_the_open_files_and_never_over_the_maxima() {
        assert_eq!(Limits::for_open_files(1024).total, 256);
        assert_eq!(Limits::for_open_files(1024).per_source, 64);
        assert_eq!(Limits::for_open_files(1 << 20).total, MAX_TOTAL);
        assert_eq!(Limits::for_open_files(100).total, 25);
        assert_eq!(Limits::for_open_files(100).per_source, 25);
        assert_eq!(Limits::for_open_files(0).total, 1);
    }

    #[test]
    fn a_source_over_its_cap_is_refused_and_others_are_not() {
        let conns = Conns::new(limits(10, 3));
        let mine: Vec<_> = (0..3).map(|_| conns.admit(ip(1)).unwrap().slot).collect();
        assert_eq!(conns.admit(ip(1)).unwrap_err(), Refused::PerSource);
        let other = conns.admit(ip(2)).unwrap();
        assert!(!other.evicted);
        assert_eq!(conns.from_source(ip(1)), 3);
        drop(mine);
        assert_eq!(conns.from_source(ip(1)), 0);
        assert_eq!(conns.open(), 1);
        assert!(conns.admit(ip(1)).is_ok());
    }

    #[test]
    fn ipv4_mapped_addresses_count_as_their_ipv4_source() {
        let conns = Conns::new(limits(10, 1));
        let _a = conns.admit(ip(1)).unwrap();
        let mapped = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped());
        assert_eq!(conns.admit(mapped).unwrap_err(), Refused::PerSource);
    }

    #[test]
    fn at_the_total_cap_the_oldest_idle_of_the_biggest_source_makes_room() {
        let conns = Conns::new(limits(4, 3));
        let a1 = conns.admit(ip(1)).unwrap().slot;
        let b1 = conns.admit(ip(2)).unwrap().slot;
        let b2 = conns.admit(ip(2)).unwrap().slot;
        let b3 = conns.admit(ip(2)).unwrap().slot;
        // b1 is busy: b2, the oldest idle one of the biggest source, goes.
        let _req = Busy::new(&b1.busy);
        let c = conns.admit(ip(3)).unwrap();
        assert!(c.evicted);
        assert_eq!(conns.open(), 4);
        assert_eq!(conns.from_source(ip(2)), 2);
        // Told to leave: a permit is waiting for b2's task.
        assert!(futures::FutureExt::now_or_never(b2.leave.notified()).is_some());
        assert!(futures::FutureExt::now_or_never(b3.leave.notified()).is_none());
        // Its drop does not count it off twice.
        drop(b2);
        assert_eq!(conns.open(), 4);
        assert_eq!(conns.from_source(ip(2)), 2);
        drop((a1, b3));
        assert_eq!(conns.open(), 2);
    }

    #[test]
    fn at_the_total_cap_with_every_connection_busy_the_new_one_is_refused() {
        let conns = Conns::new(limits(2, 2));
        let a = conns.admit(ip(1)).unwrap().slot;
        let b = conns.admit(ip(2)).unwrap().slot;
        let _ra = Busy::new(&a.busy);
        let rb = Busy::new(&b.busy);
        assert_eq!(conns.admit(ip(3)).unwrap_err(), Refused::Total);
        drop(rb);
        assert!(conns.admit(ip(3)).unwrap().evicted);
        assert_eq!(conns.from_source(ip(2)), 0);
    }

    /// A test identity for 127.0.0.1, made once per process.
    fn identity() -> &'static crate::tls::Identity {
        static ID: std::sync::OnceLock<(tempfile::TempDir, crate::tls::Identity)> = std::sync::OnceLock::new();
        let (_, id) = ID.get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let id = crate::tls::Identity::load_or_create(dir.path(), &["127.0.0.1".into()]).unwrap();
            (dir, id)
        });
        id
    }

    /// A server on a loopback port with `limits`, speaking TLS and plain
    /// HTTP; its address.
    fn server(
        rt: &tokio::runtime::Runtime,
        limits: Limits,
    ) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let router = Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let tls = identity().server_config().unwrap();
        let port = Port {
            listener,
            tls: Some(tls),
            plain: Plain::Serve,
        };
        rt.spawn(serve(vec![port], router, limits, async {
            let _ = rx.await;
        }));
        (addr, tx)
    }

    #[test]
    fn one_port_serves_tls_and_plain_http_and_a_stalled_handshake_is_cut() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (addr, _stop) = server(&rt, limits(16, 16));
        // Plain HTTP.
        let mut plain = TcpStream::connect(addr).unwrap();
        assert!(get(&mut plain).ends_with("ok"));
        // TLS, the server's certificate trusted as the one root.
        let answer = rt.block_on(async {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut roots = rustls::RootCertStore::empty();
            roots.add(identity().cert.clone()).unwrap();
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
            let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
            let mut tls = connector.connect(name, tcp).await.unwrap();
            tls.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut out = Vec::new();
            let _ = tls.read_to_end(&mut out).await;
            String::from_utf8_lossy(&out).into_owned()
        });
        assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok"), "{answer}");
        // A handshake that starts and stalls is closed after the header
        // timeout, as a silent connection is.
        let mut stalled = TcpStream::connect(addr).unwrap();
        stalled.write_all(&[0x16, 0x03, 0x01]).unwrap();
        let t = closed_after(&mut stalled, Duration::from_secs(3)).expect("a stalled handshake is closed");
        assert!(t >= Duration::from_millis(250), "closed after {t:?}");
        // Garbage after the TLS byte: closed at once, the server goes on.
        let mut bad = TcpStream::connect(addr).unwrap();
        bad.write_all(&[0x16; 64]).unwrap();
        assert!(closed_after(&mut bad, Duration::from_secs(3)).is_some());
        let mut plain = TcpStream::connect(addr).unwrap();
        assert!(get(&mut plain).ends_with("ok"));
    }

    #[test]
    fn a_tls_port_refuses_plain_http_with_the_reason_and_a_plain_port_closes_tls() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (tls_port, plain_port) = rt.block_on(async {
            (
                TcpListener::bind("127.0.0.1:0").await.unwrap(),
                TcpListener::bind("127.0.0.1:0").await.unwrap(),
            )
        });
        let (tls_addr, plain_addr) = (tls_port.local_addr().unwrap(), plain_port.local_addr().unwrap());
        let ports = vec![
            Port {
                listener: tls_port,
                tls: Some(identity().server_config().unwrap()),
                plain: Plain::Refuse("this port speaks HTTPS\n".into()),
            },
            Port {
                listener: plain_port,
                tls: None,
                plain: Plain::Serve,
            },
        ];
        let router = Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let (_stop, rx) = tokio::sync::oneshot::channel::<()>();
        rt.spawn(serve(ports, router, limits(16, 16), async {
            let _ = rx.await;
        }));
        let refused = get(&mut TcpStream::connect(tls_addr).unwrap());
        assert!(
            refused.starts_with("HTTP/1.1 400") && refused.ends_with("this port speaks HTTPS\n"),
            "{refused}"
        );
        assert!(get(&mut TcpStream::connect(plain_addr).unwrap()).ends_with("ok"));
        let mut hello = TcpStream::connect(plain_addr).unwrap();
        hello.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05]).unwrap();
        assert!(closed_after(&mut hello, Duration::from_secs(3)).is_some());
        // Both ports share the caps: the plain one still serves.
        assert!(get(&mut TcpStream::connect(plain_addr).unwrap()).ends_with("ok"));
    }

    /// How long until the server closes `s` (reading and dropping what
    /// comes), at most `max`.
    fn closed_after(s: &mut TcpStream, max: Duration) -> Option<Duration> {
        let start = Instant::now();
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let mut buf = [0u8; 1024];
        while start.elapsed() < max {
            match s.read(&mut buf) {
                Ok(0) => return Some(start.elapsed()),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => return Some(start.elapsed()),
            }
        }
        None
    }

    fn get(s: &mut TcpStream) -> String {
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn silent_slow_and_kept_alive_idle_connections_are_closed_after_the_header_timeout() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (addr, _stop) = server(&rt, limits(16, 16));
        let max = Duration::from_secs(3);
        // Silent from the start.
        let mut silent = TcpStream::connect(addr).unwrap();
        let t = closed_after(&mut silent, max).expect("a silent connection is closed");
        assert!(t >= Duration::from_millis(250), "closed after {t:?}");
        // A head sent a byte at a time, never finished.
        let mut slow = TcpStream::connect(addr).unwrap();
        let start = Instant::now();
        let mut closed = false;
        for b in b"GET / HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
            if slow.write_all(&[*b]).is_err() {
                closed = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(closed || closed_after(&mut slow, max).is_some(), "a slow head is cut");
        // Cut long before the head's 2.8 s of bytes were all sent.
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "cut after {:?}",
            start.elapsed()
        );
        // Kept alive after a request, then idle.
        let mut kept = TcpStream::connect(addr).unwrap();
        assert!(get(&mut kept).starts_with("HTTP/1.1 200"));
        assert!(get(&mut kept).ends_with("ok"), "kept alive");
        assert!(
            closed_after(&mut kept, max).is_some(),
            "an idle kept-alive connection is closed"
        );
    }

    #[test]
    fn the_server_caps_a_source_and_makes_room_for_a_new_source_by_closing_idle_ones() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let mut l = limits(4, 3);
        l.header_read_timeout = Duration::from_secs(30);
        let (addr, stop) = server(&rt, l);
        let mut idle: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
        // Over 127.0.0.1's cap: closed at once.
        let mut over = TcpStream::connect(addr).unwrap();
        assert!(closed_after(&mut over, Duration::from_secs(2)).is_some());
        // Another loopback address: one free place, then an idle one of
        // 127.0.0.1 makes room.
        let other = |n: u8| {
            let s = tokio::net::TcpSocket::new_v4().unwrap();
            s.bind((Ipv4Addr::new(127, 0, 0, n), 0).into()).unwrap();
            rt.block_on(s.connect(addr)).unwrap().into_std().unwrap()
        };
        let mut b = other(2);
        b.set_nonblocking(false).unwrap();
        assert!(get(&mut b).ends_with("ok"));
        let mut c = other(3);
        c.set_nonblocking(false).unwrap();
        assert!(get(&mut c).ends_with("ok"));
        // Wait for one to close (a loaded machine may take a while), then
        // a little longer for a second one that should not.
        let mut closed = vec![false; idle.len()];
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) && !closed.contains(&true) {
            for (k, s) in idle.iter_mut().enumerate() {
                closed[k] |= closed_after(s, Duration::from_millis(20)).is_some();
            }
        }
        std::thread::sleep(Duration::from_millis(200));
        for (k, s) in idle.iter_mut().enumerate() {
            closed[k] |= closed_after(s, Duration::from_millis(20)).is_some();
        }
        assert_eq!(
            closed.iter().filter(|c| **c).count(),
            1,
            "one idle connection of the biggest source made room"
        );
        // Stopping closes the idle ones and returns.
        let _ = stop.send(());
        for s in &mut idle {
            assert!(closed_after(s, Duration::from_secs(2)).is_some());
        }
    }
}
