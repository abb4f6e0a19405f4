//! The HA agent: one `ha_liveness::Engine` driven by real time, a UDP
//! socket, the statefile on the heartbeat SR and the watchdog.
//!
//! The agent runs on a thread of its own, with a current-thread tokio
//! runtime, so that the API's load never delays a heartbeat, a statefile
//! cycle or a watchdog feed. It ticks the engine every [`TICK`], takes
//! in heartbeats (a packet that fails authentication is dropped and
//! counted, never given to the engine), runs each statefile cycle on the
//! blocking pool, and carries out the engine's commands. What the rest of
//! `xapid` needs to know (online, liveset, lock holder, statefile access)
//! is published as an [`AgentView`] on a watch channel. Its log lines
//! name hosts by their name labels, not by the engine's indexes
//! ([`name_hosts`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ha_liveness::codec::{self, PACKET_SIZE};
use ha_liveness::{Command, Config, Engine, Event, Exit, Status, Timeouts};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};

use super::local::HaLocal;
use super::statefile;
use super::watchdog::Watchdog;
use crate::io::{Gate, HeartbeatSocket};

/// How often the engine gets a tick (it needs one at least every 100 ms).
pub const TICK: Duration = Duration::from_millis(50);

/// Where the engine is in its life, as the rest of the host sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AgentStatus {
    /// No engine ran yet, or it is starting (boot, join).
    #[default]
    Starting,
    Online,
    /// It fenced this host (the process is ending).
    Fenced,
    /// It stopped without fencing ([`AgentView::exit`] says why).
    Stopped,
}

impl AgentStatus {
    /// The engine has ended: it fenced or stopped.
    pub fn ended(self) -> bool {
        matches!(self, AgentStatus::Fenced | AgentStatus::Stopped)
    }
}

/// What this host's agent sees of each host, for the operator
/// (`host.get_ha_status`): refreshed at every event without waking anyone,
/// unlike [`AgentView`], whose watchers act on each change.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// When this was written.
    pub at: Option<Instant>,
    /// The engine's phase (`Started` when no fault handler runs).
    pub phase: String,
    pub hbdomain: Vec<String>,
    pub sfdomain: Vec<String>,
    /// Per other host of the pool: (uuid, ms since its last heartbeat,
    /// ms since its slot last changed).
    pub peers: Vec<(String, Option<u64>, Option<u64>)>,
}

/// What the agent tells the rest of the host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentView {
    /// An engine is running (starting or online).
    pub running: bool,
    pub online: bool,
    pub status: AgentStatus,
    /// Why the engine stopped, when it did.
    pub exit: Option<Exit>,
    /// The uuids of the hosts in the liveset.
    pub liveset: Vec<String>,
    /// The uuid of the host holding the master lock.
    pub lock_holder: Option<String>,
    /// This host holds the master lock as far as the members taking part
    /// in it can tell (a joiner's first cycles do not count: rule M).
    pub master_confirmed: bool,
    /// This engine run has held the master lock (confirmed) at least once.
    pub confirmed_once: bool,
    /// The uuid of the last host to win the master lock (global block).
    pub last_master: Option<String>,
    pub sf_access: bool,
    /// Alive by survival rule 2 (nobody sees the statefile).
    pub rule2: bool,
    /// Kept in the liveset by the others although this host lost the
    /// statefile (it reaches a majority).
    pub storage_lost: bool,
    /// Heartbeat packets refused (bad size, signature, sender, generation).
    pub refused: u64,
}

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("this host ({0}) is not in the HA configuration")]
    NotConfigured(String),
    #[error("invalid HA timeout: {0}")]
    Timeout(#[from] ha_liveness::timeouts::TimeoutError),
    #[error("cannot open the heartbeat socket on {address}: {source}")]
    Socket { address: String, source: std::io::Error },
    #[error("cannot start the HA agent's thread: {0}")]
    Runtime(std::io::Error),
}

/// A running agent.
pub struct Agent {
    control: mpsc::UnboundedSender<Event>,
    finished: Arc<AtomicBool>,
    done: oneshot::Receiver<()>,
}

/// What the agent works with.
pub struct Setup {
    pub local: HaLocal,
    pub me: String,
    /// This start of the daemon (its boot count, never lower than an
    /// earlier start's): the engine's boots are numbered from it.
    pub daemon_boot: u64,
    /// The pool secret: heartbeats are signed with the current one and
    /// checked against every one accepted (both during a rotation).
    pub secret: Arc<crate::secret::PoolSecret>,
    /// The address to bind the heartbeat socket to, when not the one the
    /// pool knows this host by (`serve --bind-address`).
    pub bind: Option<String>,
    pub io: Arc<Gate>,
    pub watchdog: Arc<Watchdog>,
    pub view: watch::Sender<AgentView>,
    pub seen: Arc<std::sync::Mutex<Seen>>,
    /// Each host's name label in the order of `local.hosts` (its uuid
    /// where it has none), for log lines.
    pub names: Vec<String>,
}

/// An engine log line with the host indexes in it (sets such as `{0,2}`,
/// and `host 1`) replaced by the hosts' names; what names no host is left.
pub fn name_hosts(line: &str, names: &[String]) -> String {
    let name = |digits: &str| digits.parse::<usize>().ok().and_then(|i| names.get(i)).cloned();
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(c) = rest.chars().next() {
        if let Some(after) = rest.strip_prefix('{') {
            if let Some(end) = after.find('}') {
                let inner = &after[..end];
                let parts: Vec<&str> = inner.split(',').filter(|p| !p.is_empty()).collect();
                let named: Option<Vec<String>> = parts.iter().map(|p| name(p)).collect();
                if let Some(named) = named.filter(|_| inner.chars().all(|c| c.is_ascii_digit() || c == ',')) {
                    out.push('{');
                    out.push_str(&named.join(", "));
                    out.push('}');
                    rest = &after[end + 1..];
                    continue;
                }
            }
        }
        let at_word = !out.chars().last().is_some_and(|p| p.is_alphanumeric());
        if let (true, Some(after)) = (at_word, rest.strip_prefix("host ")) {
            let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
            if let Some(n) = name(&digits) {
                out.push_str("host ");
                out.push_str(&n);
                rest = &after[digits.len()..];
                continue;
            }
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// The engine's boot for an agent started now in daemon start
/// `daemon_boot`: later than every earlier one, across agent restarts in
/// this process (the count below) and across daemon restarts (the boot
/// count in the high bits), whatever the wall clock does. Peers refuse a
/// heartbeat that is not later than the last they accepted (a replay), so
/// a boot must never go back.
fn engine_boot(daemon_boot: u64) -> u64 {
    static STARTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let start = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    daemon_boot
        .saturating_mul(1 << 24)
        .saturating_add(start.min((1 << 24) - 1))
}

impl Agent {
    /// Bind the heartbeat socket and start the engine, on a thread and
    /// runtime of its own: heartbeats, the statefile loop and the watchdog
    /// feeds never wait behind the API's work (a flood of calls or logins
    /// keeps the main runtime's workers busy; issue 26).
    pub async fn start(setup: Setup) -> Result<Agent, AgentError> {
        let (control, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = oneshot::channel();
        let (done_tx, done) = oneshot::channel();
        let finished = Arc::new(AtomicBool::new(false));
        let flag = finished.clone();
        std::thread::Builder::new()
            .name("ha-agent".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(source) => {
                        let _ = ready_tx.send(Err(AgentError::Runtime(source)));
                        flag.store(true, Ordering::SeqCst);
                        return;
                    }
                };
                rt.block_on(async move {
                    match Run::new(setup).await {
                        Ok(run) => {
                            let _ = ready_tx.send(Ok(()));
                            run.run(rx).await;
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    }
                });
                flag.store(true, Ordering::SeqCst);
                let _ = done_tx.send(());
            })
            .map_err(AgentError::Runtime)?;
        match ready_rx.await {
            Ok(Ok(())) => Ok(Agent {
                control,
                finished,
                done,
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(AgentError::Runtime(std::io::Error::other(
                "the HA agent's thread ended at start",
            ))),
        }
    }

    /// Hand the engine an event (propose master, disarm, stop...).
    pub fn send(&self, event: Event) {
        let _ = self.control.send(event);
    }

    /// Has the engine stopped?
    pub fn finished(&self) -> bool {
        self.finished.load(Ordering::SeqCst)
    }

    /// Stop the engine (it disarms) and wait for its thread to end.
    pub async fn stop(self) {
        self.send(Event::Stop);
        let _ = self.done.await;
    }
}

struct Run {
    engine: Engine,
    socket: HeartbeatSocket,
    /// This host's index in the pool.
    me: usize,
    /// Each peer's index and heartbeat address.
    peers: Vec<(usize, SocketAddr)>,
    setup: Setup,
    started: Instant,
    refused: u64,
    confirmed_once: bool,
    statefile_tx: Option<mpsc::UnboundedSender<Result<ha_liveness::StatefileRead, String>>>,
    /// The statefile, open across cycles.
    statefile: statefile::Held,
    /// The engine was in a fault handler at the last publish (to count the
    /// rounds it begins).
    in_fault_handler: bool,
}

impl Run {
    /// Bind the heartbeat socket and make the engine.
    async fn new(setup: Setup) -> Result<Run, AgentError> {
        let me = setup
            .local
            .index_of(&setup.me)
            .ok_or_else(|| AgentError::NotConfigured(setup.me.clone()))?;
        let timeouts = Timeouts::derive(setup.local.timeout_s, setup.local.lab)?;
        let address = setup.bind.clone().unwrap_or_else(|| setup.local.addresses[me].clone());
        let socket = UdpSocket::bind((address.as_str(), setup.local.port))
            .await
            .map_err(|source| AgentError::Socket {
                address: format!("{address}:{}", setup.local.port),
                source,
            })?;
        let socket = HeartbeatSocket::new(socket, setup.io.clone());
        let boot = engine_boot(setup.daemon_boot);
        let config = Config::new(setup.local.hosts.clone(), me, timeouts, setup.local.generation, boot);
        let peers = setup
            .local
            .addresses
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != me)
            .filter_map(|(i, a)| format!("{a}:{}", setup.local.port).parse().ok().map(|addr| (i, addr)))
            .collect();
        Ok(Run {
            engine: Engine::new(config),
            me,
            socket,
            peers,
            setup,
            started: Instant::now(),
            refused: 0,
            confirmed_once: false,
            statefile_tx: None,
            statefile: statefile::Held::default(),
            in_fault_handler: false,
        })
    }

    fn now(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    async fn run(mut self, mut control: mpsc::UnboundedReceiver<Event>) {
        let (sf_tx, mut sf_rx) = mpsc::unbounded_channel();
        self.statefile_tx = Some(sf_tx);
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut buf = vec![0u8; PACKET_SIZE * 2];
        let commands = self.engine.start(self.now());
        self.execute(commands).await;
        let mut control_open = true;
        while self.engine.is_running() {
            let event = tokio::select! {
                _ = ticker.tick() => Event::Tick,
                Some(read) = sf_rx.recv() => Event::Statefile(read),
                c = control.recv(), if control_open => match c {
                    Some(e) => e,
                    None => { control_open = false; Event::Stop }
                },
                r = self.socket.recv(&mut buf) => match r {
                    Ok(n) => match self.packet(&buf[..n]) {
                        Some(e) => e,
                        None => continue,
                    },
                    Err(e) => {
                        tracing::debug!("heartbeat socket: {e}");
                        continue;
                    }
                },
            };
            let commands = self.engine.handle(self.now(), event);
            self.execute(commands).await;
        }
        self.publish();
    }

    /// A received packet as an event, or `None` when it is dropped.
    fn packet(&mut self, bytes: &[u8]) -> Option<Event> {
        let local = &self.setup.local;
        let decode = |key: &crate::secret::Secret| {
            codec::decode_heartbeat(bytes, &local.hosts, self.me, local.generation, key.expose().as_bytes())
        };
        let keys = self.setup.secret.keys();
        let mut decoded = decode(&keys[0]);
        for key in &keys[1..] {
            if decoded.is_ok() {
                break;
            }
            if let Ok(hb) = decode(key) {
                decoded = Ok(hb);
            }
        }
        match decoded {
            Ok(hb) => Some(Event::Heartbeat(hb)),
            Err(e) => {
                self.refused += 1;
                if self.refused.is_power_of_two() {
                    tracing::warn!(refused = self.refused, "refused a heartbeat packet: {e}");
                }
                self.publish();
                None
            }
        }
    }

    async fn execute(&mut self, commands: Vec<Command>) {
        for c in commands {
            match c {
                Command::SendHeartbeat(hb) => {
                    let key = self.setup.secret.current();
                    for &(to, peer) in &self.peers {
                        let bytes = codec::encode_heartbeat(&hb, &self.setup.me, to, key.expose().as_bytes());
                        if let Err(e) = self.socket.send_to(&bytes, peer).await {
                            tracing::debug!(%peer, "heartbeat not sent: {e}");
                        }
                    }
                }
                Command::StatefileCycle { slot, global } => self.statefile_cycle(slot, global),
                Command::Feed(w, ms) => self.setup.watchdog.feed(w, ms),
                Command::Arm => {
                    self.setup.watchdog.arm();
                    tracing::info!("HA fencing armed");
                }
                Command::Disarm => {
                    self.setup.watchdog.disarm();
                    tracing::info!("HA fencing disarmed");
                }
                Command::Fence(reason) => {
                    tracing::error!(
                        "HA fences this host: {}",
                        name_hosts(&reason.to_string(), &self.setup.names)
                    );
                    self.setup.watchdog.fence(&reason.to_string());
                }
                Command::Liveset(set) => {
                    tracing::info!("HA liveset: {}", name_hosts(&set.to_string(), &self.setup.names))
                }
                Command::Exited(exit) => tracing::info!("HA stopped: {} ({})", exit.name(), exit.code()),
                Command::Log(line) => tracing::info!("HA: {}", name_hosts(&line, &self.setup.names)),
            }
        }
        self.publish();
    }

    fn statefile_cycle(&self, slot: ha_liveness::Slot, global: Option<ha_liveness::Global>) {
        let Some(tx) = self.statefile_tx.clone() else {
            return;
        };
        let path = self.setup.local.statefile.clone();
        let hosts = self.setup.local.hosts.len();
        let io = self.setup.io.clone();
        let held = self.statefile.clone();
        tokio::task::spawn_blocking(move || {
            let began = Instant::now();
            let read = held
                .cycle(&io, &path, &slot, global.as_ref(), hosts)
                .map_err(|e| e.to_string());
            crate::metrics::ha().statefile_cycle(began.elapsed(), read.is_ok());
            let _ = tx.send(read);
        });
    }

    fn publish(&mut self) {
        let in_fh = self.engine.phase().in_fault_handler();
        if in_fh && !self.in_fault_handler {
            crate::metrics::ha().fault_handler_round();
        }
        self.in_fault_handler = in_fh;
        let e = &self.engine;
        self.confirmed_once |= e.master_lock_confirmed();
        let uuid = |i: usize| self.setup.local.hosts.get(i).cloned();
        let (status, exit) = match e.status() {
            Status::Starting => (AgentStatus::Starting, None),
            Status::Online => (AgentStatus::Online, None),
            Status::Fenced(_) => (AgentStatus::Fenced, None),
            Status::Stopped(x) => (AgentStatus::Stopped, Some(*x)),
        };
        let view = AgentView {
            running: e.is_running(),
            online: e.is_online(),
            status,
            exit,
            liveset: e.liveset().iter().filter_map(uuid).collect(),
            lock_holder: e.lock_holder().and_then(uuid),
            master_confirmed: e.master_lock_confirmed(),
            confirmed_once: self.confirmed_once,
            last_master: e.global().and_then(|g| g.master).and_then(uuid),
            sf_access: e.sf_access(),
            rule2: e.surviving_by_rule2(),
            storage_lost: e.storage_lost(),
            refused: self.refused,
        };
        let now = self.now();
        let me = self.me;
        let hosts = &self.setup.local.hosts;
        let seen = Seen {
            at: Some(Instant::now()),
            phase: format!("{:?}", e.phase()),
            hbdomain: e.hbdomain().iter().filter_map(uuid).collect(),
            sfdomain: e.sfdomain().iter().filter_map(uuid).collect(),
            peers: (0..hosts.len())
                .filter(|&i| i != me)
                .map(|i| {
                    let age = |t: Option<u64>| t.map(|t| now.saturating_sub(t));
                    (hosts[i].clone(), age(e.last_heard(i)), age(e.slot_changed(i)))
                })
                .collect(),
        };
        *self.setup.seen.lock().unwrap_or_else(|p| p.into_inner()) = seen;
        self.setup.view.send_if_modified(|v| {
            let changed = *v != view;
            *v = view;
            changed
        });
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn log_lines_name_hosts_instead_of_indexes() {
        let names: Vec<String> = ["server1", "server2", "server3"].map(String::from).into();
        let n = |l: &str| super::name_hosts(l, &names);
        assert_eq!(
            n("Liveset has been updated: {0,1,2} -> {0,2}"),
            "Liveset has been updated: {server1, server2, server3} -> {server1, server3}"
        );
        assert_eq!(
            n("host 1 will be removed from the liveset"),
            "host server2 will be removed from the liveset"
        );
        assert_eq!(
            n("ack the join request of host 2"),
            "ack the join request of host server3"
        );
        assert_eq!(n("{}"), "{}");
        // Not a host: left as it is.
        assert_eq!(n("ghost 1, host 7, {5}, {a}"), "ghost 1, host 7, {5}, {a}");
        assert_eq!(n("fault handler ends after 120 ms"), "fault handler ends after 120 ms");
    }

    use super::*;
    use crate::secret::{PoolSecret, Secret};
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Host {
        agent: Agent,
        view: watch::Receiver<AgentView>,
        fences: Arc<AtomicUsize>,
    }

    fn start_host(
        local: &HaLocal,
        me: &str,
        dir: &std::path::Path,
        secret: &Arc<PoolSecret>,
    ) -> impl std::future::Future<Output = Host> {
        let fences = Arc::new(AtomicUsize::new(0));
        let f = fences.clone();
        let watchdog = Watchdog::start(Box::new(move |_| {
            f.fetch_add(1, Ordering::SeqCst);
        }))
        .unwrap();
        let (tx, view) = watch::channel(AgentView::default());
        let setup = Setup {
            local: local.clone(),
            me: me.to_string(),
            daemon_boot: 1,
            secret: secret.clone(),
            bind: None,
            io: Arc::new(Gate::lab(dir)),
            watchdog,
            view: tx,
            seen: Arc::default(),
            names: local.hosts.clone(),
        };
        async move {
            Host {
                agent: Agent::start(setup).await.unwrap(),
                view,
                fences,
            }
        }
    }

    async fn until(rx: &mut watch::Receiver<AgentView>, f: impl Fn(&AgentView) -> bool) -> bool {
        tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                if f(&rx.borrow_and_update()) {
                    return;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        })
        .await
        .is_ok()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_agents_form_a_liveset_and_refuse_forged_packets() {
        let dir = tempfile::tempdir().unwrap();
        let sf = dir.path().join("statefile");
        statefile::prepare(&Gate::open(), &sf, 42).unwrap();
        let port = rand::random_range(20000..60000u16);
        let b = rand::random_range(1..250u8);
        let local = HaLocal {
            armed: true,
            generation: 42,
            timeout_s: 3,
            lab: true,
            hosts: vec![
                "aaaaaaaa-0000-4000-8000-000000000001".into(),
                "bbbbbbbb-0000-4000-8000-000000000002".into(),
            ],
            addresses: vec![format!("127.77.{b}.1"), format!("127.77.{b}.2")],
            port,
            statefile: sf.clone(),
            metadata: dir.path().join("metadata"),
        };
        let (da, db) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::create_dir_all(&da).unwrap();
        std::fs::create_dir_all(&db).unwrap();
        let key = Secret::parse("pool-secret").unwrap();
        let sa = Arc::new(PoolSecret::create(&da, key.clone()).unwrap());
        let sb = Arc::new(PoolSecret::create(&db, key.clone()).unwrap());
        let mut a = start_host(&local, &local.hosts[0], &da, &sa).await;
        let mut b_host = start_host(&local, &local.hosts[1], &db, &sb).await;
        assert!(
            until(&mut a.view, |v| v.online && v.liveset.len() == 2).await,
            "{:?}",
            a.view.borrow()
        );
        assert!(until(&mut b_host.view, |v| v.online && v.liveset.len() == 2).await);

        // Garbage and a packet signed with another key: dropped, counted.
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = format!("{}:{port}", local.addresses[0]);
        socket.send_to(b"not a heartbeat", &to).await.unwrap();
        let hb = ha_liveness::Heartbeat {
            generation: 42,
            from: 1,
            boot: 1,
            sequence: 1,
            view: Default::default(),
            sf_access: true,
            sf_corrupted: false,
            fence_request: true,
            sr2: false,
            joining: false,
            tie: Default::default(),
        };
        let forged = codec::encode_heartbeat(&hb, &local.hosts[1], 0, b"wrong secret");
        socket.send_to(&forged, &to).await.unwrap();
        assert!(until(&mut a.view, |v| v.refused >= 2).await, "{:?}", a.view.borrow());
        assert!(a.view.borrow().online);

        // A rotation of the pool secret, step by step on each host as the
        // master runs it, with heartbeats between the steps: none refused.
        let new = Secret::fresh();
        let refused = |h: &Host| h.view.borrow().refused;
        let before = (refused(&a), refused(&b_host));
        let beat = || tokio::time::sleep(Duration::from_millis(1500));
        for step in 0..3 {
            for s in [&sa, &sb] {
                match step {
                    0 => s.accept_new(&key, &new).unwrap(),
                    1 => s.send_new(&key, &new).unwrap(),
                    _ => s.cleanup(&key, &new).unwrap(),
                }
                beat().await;
            }
        }
        assert_eq!(
            (refused(&a), refused(&b_host)),
            before,
            "heartbeats refused during the rotation"
        );
        assert!(a.view.borrow().online && a.view.borrow().liveset.len() == 2);
        // After it, a heartbeat under the old secret is refused.
        let old = codec::encode_heartbeat(&hb, &local.hosts[1], 0, key.expose().as_bytes());
        socket.send_to(&old, &to).await.unwrap();
        assert!(until(&mut a.view, |v| v.refused > before.0).await);
        assert!(a.view.borrow().online);

        a.agent.stop().await;
        b_host.agent.stop().await;
        assert_eq!(
            a.fences.load(Ordering::SeqCst) + b_host.fences.load(Ordering::SeqCst),
            0
        );
    }
}
