//! The state of one `xapid` process and the write path of the pool database.
//!
//! [`Daemon`] owns the committed [`Model`] (behind a read/write lock), the
//! SQLite [`Store`] (behind an async mutex that serializes every write), the
//! sessions, the VM driver and this host's role. A write runs as
//! [`Daemon::write`] or, when it must wait on another host in between (a VM
//! start on a member), through a [`Writer`] held across those awaits: either
//! way the whole operation is one serial step of the pool's history.
//! Every commit bumps the generation, lands in the replication log and wakes
//! the members' long-polls.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use xapi_proto::{codes, ApiError};

use crate::auth::Verifier;
use crate::driver::qemu::{Accel, QemuConfig};
use crate::driver::{Driver, DriverError, DriverKind, KernelBoot};
use crate::ha::metadata::RedoLog;
use crate::sessions::Sessions;
use pool_db::model::{Changes, Model, Txn};
use pool_db::store::{Store, StoreError};

mod first_start;
mod leave;
mod redo;
mod writer;

pub use writer::{PoolOperation, Writer};

use first_start::{first_start, load_secret, next_boot};

/// How many commits the master keeps for members to catch up from; a member
/// further behind gets a full copy.
const REPLICATION_LOG_LEN: usize = 4096;

/// How `xapid` runs on this host.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    /// The address the pool and its clients know this host by.
    pub address: String,
    /// The address its API and HA heartbeats listen on (the same, unless
    /// `--bind-address` says otherwise: a wildcard, or a local address
    /// behind NAT).
    pub bind_address: String,
    /// The API port; every host of a pool uses the same one.
    pub port: u16,
    /// Needed at first start only.
    pub root_password: Option<String>,
    /// Memory the host offers to VMs, in bytes.
    pub memory_total: i64,
    pub name_label: Option<String>,
    pub session_idle_timeout: Duration,
    /// Lab mode: the HA timeout may go down to 3 s, for tests.
    pub lab: bool,
    /// What runs this host's guests.
    pub driver: DriverKind,
    /// The qemu driver's accelerator and default guest kernel.
    pub accel: Accel,
    pub guest_kernel: Option<KernelBoot>,
    /// Where the kernels VMs name must be (default /boot/guest).
    pub guest_kernel_dir: Option<PathBuf>,
    /// The machine's watchdog device, driven with HA (real servers).
    pub watchdog_device: Option<PathBuf>,
}

/// This host's place in the pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Master,
    Member { master_address: String },
}

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("this host has no pool database yet: give the root password for the first start (--root-password-file FILE or --root-password PASS)")]
    NoRootPassword,
    #[error("cannot hash the root password: {0}")]
    Hash(argon2::password_hash::Error),
    #[error("cannot create {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("the pool database is inconsistent: {0}")]
    Inconsistent(String),
    #[error(transparent)]
    Driver(#[from] DriverError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error(transparent)]
    Secret(#[from] crate::secret::SecretError),
}

/// One `xapid`: its database, sessions, VMs and role.
pub struct Daemon {
    config: Config,
    host_uuid: String,
    model: RwLock<Model>,
    store: tokio::sync::Mutex<Store>,
    users: RwLock<HashMap<String, String>>,
    role: RwLock<Role>,
    pool_secret: Arc<crate::secret::PoolSecret>,
    sessions: Sessions,
    verifier: Verifier,
    throttle: crate::throttle::Throttle,
    driver: Arc<dyn Driver>,
    generation: watch::Sender<u64>,
    log: Mutex<VecDeque<(u64, Changes)>>,
    /// The database's changes as XAPI events (`event.from`).
    events: crate::events::Events,
    /// Whose tokens, besides this host's own term's, continue here.
    lineage: crate::events::Lineage,
    /// What `Async.` calls are doing (on the master).
    tasks: crate::tasks::Tasks,
    /// The certificate this host's API serves.
    identity: crate::tls::Identity,
    /// An HA enable or disable, a move of the master or a secret
    /// rotation is running (one pool-wide operation at a time).
    ha_busy: std::sync::atomic::AtomicBool,
    /// The overcommit gate's compiled pool, one per generation (master).
    plan_cache: crate::overcommit::PlanCache,
    /// When each member last asked the master for updates.
    last_seen: Mutex<HashMap<String, Instant>>,
    /// Clients to the other hosts, for calls between hosts.
    peers: crate::peers::Peers,
    /// HA on this host: the agent, the watchdog.
    ha: crate::ha::Ha,
    /// The gate this host's network and shared-storage I/O passes.
    io: Arc<crate::io::Gate>,
    /// The pool database on the heartbeat SR, written by the master while
    /// HA is on.
    redo: Mutex<Option<RedoLog>>,
    /// Bumped at every change of role.
    role_epoch: watch::Sender<u64>,
    /// The VM leases this host holds, and its host lease.
    leases: Arc<crate::lease::Leases>,
    /// VM starts in flight (on the master).
    starting: crate::reserve::Reservations,
    /// The audit log and the alert deliveries of this host.
    journal: crate::journal::Journal,
}

impl Daemon {
    /// How this host was started.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// This host's uuid.
    pub fn host_uuid(&self) -> &str {
        &self.host_uuid
    }

    /// The API sessions of this host.
    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// The password checker (with its cache of recent successes).
    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// Failed logins per user name (see [`crate::throttle::Throttle`]).
    pub fn throttle(&self) -> &crate::throttle::Throttle {
        &self.throttle
    }

    /// What runs this host's guests.
    pub fn driver(&self) -> &Arc<dyn Driver> {
        &self.driver
    }

    /// Clients to the other hosts.
    pub fn peers(&self) -> &crate::peers::Peers {
        &self.peers
    }

    /// The database's changes as XAPI events.
    pub fn events(&self) -> &crate::events::Events {
        &self.events
    }

    /// Whose tokens, besides this host's own term's, continue here.
    pub fn lineage(&self) -> &crate::events::Lineage {
        &self.lineage
    }

    /// The certificate this host's API serves.
    pub fn identity(&self) -> &crate::tls::Identity {
        &self.identity
    }

    /// The tasks of `Async.` calls.
    pub fn tasks(&self) -> &crate::tasks::Tasks {
        &self.tasks
    }

    /// HA on this host.
    pub fn ha(&self) -> &crate::ha::Ha {
        &self.ha
    }

    /// The gate this host's network and shared-storage I/O passes (the
    /// lab's fault switches act there, and only under `serve --lab`).
    pub fn io(&self) -> &Arc<crate::io::Gate> {
        &self.io
    }

    /// This host's leases on the heartbeat SR.
    pub fn leases(&self) -> &Arc<crate::lease::Leases> {
        &self.leases
    }

    /// The audit log and the alert deliveries of this host.
    pub fn journal(&self) -> &crate::journal::Journal {
        &self.journal
    }

    /// The VM starts in flight on this master.
    /// The overcommit gate's compiled pool (`overcommit::check_cached`).
    pub fn plan_cache(&self) -> &crate::overcommit::PlanCache {
        &self.plan_cache
    }

    pub fn starting(&self) -> &crate::reserve::Reservations {
        &self.starting
    }

    /// Mark an HA enable or disable as running; false if one already is.
    pub fn begin_ha_change(&self) -> bool {
        !self.ha_busy.swap(true, std::sync::atomic::Ordering::SeqCst)
    }

    /// The HA enable or disable that [`Daemon::begin_ha_change`] began is over.
    pub fn end_ha_change(&self) {
        self.ha_busy.store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// [`Daemon::begin_ha_change`] for a pool-wide operation, ended when
    /// the guard drops (also when the call is dropped half-way).
    pub fn pool_operation(&self) -> Option<PoolOperation<'_>> {
        self.begin_ha_change().then_some(PoolOperation(self))
    }

    /// Member `uuid` called the master just now.
    pub fn note_seen(&self, uuid: &str) {
        self.last_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(uuid.to_string(), Instant::now());
    }

    /// Give every host of `uuids` not heard from yet a full silence period
    /// from now (a master that just started).
    pub fn note_seen_if_unknown(&self, uuids: impl IntoIterator<Item = String>) {
        let now = Instant::now();
        let mut seen = self.last_seen.lock().unwrap_or_else(|p| p.into_inner());
        for u in uuids {
            seen.entry(u).or_insert(now);
        }
    }

    /// When member `uuid` last called the master.
    pub fn last_seen(&self, uuid: &str) -> Option<Instant> {
        self.last_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(uuid)
            .copied()
    }

    /// Open this host's database, creating a one-host pool at first start.
    pub fn open(config: Config) -> Result<Arc<Daemon>, StartError> {
        // The data directory holds the pool secret's file, and the
        // database the password hashes: root's alone (0700, 0600; SQLite's
        // WAL and shared-memory files take the database's mode).
        let private = |path: &std::path::Path, tightened: std::io::Result<bool>| match tightened {
            Ok(true) => {
                tracing::warn!(path = %path.display(), "was readable by others: now its owner's only");
                Ok(())
            }
            Ok(false) => Ok(()),
            Err(source) => Err(StartError::Io {
                path: path.to_path_buf(),
                source,
            }),
        };
        private(&config.data_dir, crate::files::private_dir(&config.data_dir))?;
        for name in ["pool.db", "pool.db-wal", "pool.db-shm"] {
            let path = config.data_dir.join(name);
            if name == "pool.db" || path.exists() {
                private(&path, crate::files::private_file(&path))?;
            }
        }
        let mut store = Store::open(&config.data_dir.join("pool.db"))?;
        let journal = crate::journal::Journal::open(&config.data_dir.join("pool.db"))?;
        let (host_uuid, first) = match store.local("host_uuid")? {
            Some(u) => (u, false),
            None => (first_start(&mut store, &config)?, true),
        };
        let secret = Arc::new(load_secret(&mut store, &config.data_dir, first)?);
        let role = match (store.local("role")?.as_deref(), store.local("master_address")?) {
            (Some("member"), Some(master_address)) => Role::Member { master_address },
            _ => Role::Master,
        };
        let model = store.load()?;
        let generation_at_open = model.generation;
        let names: Vec<String> = std::iter::once(config.address.clone())
            .chain(config.name_label.clone())
            .collect();
        let identity = crate::tls::Identity::load_or_create(&config.data_dir, &names)?;
        if role == Role::Master && model.pool().is_none() {
            return Err(StartError::Inconsistent("no pool record".into()));
        }
        let users = store.users()?.into_iter().collect();
        let (generation, _) = watch::channel(model.generation);
        let ha = crate::ha::Ha::new(&config.data_dir).map_err(|source| StartError::Io {
            path: config.data_dir.clone(),
            source,
        })?;
        if let Some(path) = &config.watchdog_device {
            let dog = crate::ha::device::DeviceWatchdog::new(path).map_err(|source| StartError::Io {
                path: path.clone(),
                source,
            })?;
            ha.watchdog.set_hardware(Box::new(dog));
        }
        let boot = next_boot(&mut store)?;
        let io = Arc::new(crate::io::Gate::new(&config.data_dir, config.lab));
        let leases = Arc::new(crate::lease::Leases::new(&host_uuid, boot, io.clone()));
        let gate = {
            let (io, watchdog, leases) = (io.clone(), ha.watchdog.clone(), leases.clone());
            Arc::new(move || {
                if !watchdog.may_write() {
                    Err("this host is fenced")
                } else if io.storage().is_err() {
                    Err("I/O error: the host's storage is cut")
                } else {
                    leases.gate()
                }
            })
        };
        let mut qemu = QemuConfig {
            accel: config.accel,
            default_kernel: config.guest_kernel.clone(),
            ..QemuConfig::new(&config.data_dir)
        };
        if let Some(dir) = &config.guest_kernel_dir {
            qemu.kernel_dir = dir.clone();
        }
        let driver: Arc<dyn Driver> = Arc::new(crate::lease::LeasedDriver::new(
            crate::driver::open(config.driver, &host_uuid, gate, qemu)?,
            leases.clone(),
        ));
        let daemon = Arc::new(Daemon {
            sessions: Sessions::new(config.session_idle_timeout),
            peers: crate::peers::Peers::new(io.clone()),
            ha,
            io,
            redo: Mutex::new(None),
            role_epoch: watch::Sender::new(0),
            config,
            driver,
            host_uuid,
            model: RwLock::new(model),
            store: tokio::sync::Mutex::new(store),
            users: RwLock::new(users),
            role: RwLock::new(role),
            pool_secret: secret,
            verifier: Verifier::default(),
            throttle: crate::throttle::Throttle::default(),
            generation,
            log: Mutex::new(VecDeque::new()),
            events: crate::events::Events::new(generation_at_open),
            lineage: crate::events::Lineage::default(),
            tasks: crate::tasks::Tasks::default(),
            identity,
            last_seen: Mutex::new(HashMap::new()),
            ha_busy: std::sync::atomic::AtomicBool::new(false),
            plan_cache: crate::overcommit::PlanCache::default(),
            leases,
            starting: Default::default(),
            journal,
        });
        daemon.repin();
        Ok(daemon)
    }

    /// Pin, for calls to the pool's other hosts, the certificate the
    /// database records for each (`Certificate` rows by host address):
    /// after every change of the model, so a host that reported a new
    /// certificate is trusted under it, and the old one no longer.
    fn repin(&self) {
        let model = self.model();
        let mut pins: HashMap<String, Vec<String>> = HashMap::new();
        for (_, cert) in model.certificate.iter() {
            if let Some(host) = model.get::<xapi_proto::records::HostRecord>(&cert.host) {
                pins.entry(host.address.clone())
                    .or_default()
                    .push(cert.fingerprint_sha256.clone());
            }
        }
        // A member that joined by the master's name (not the address the
        // pool records) dials that name: it must show the master's
        // certificate too.
        if let Role::Member { master_address } = self.role() {
            let master = model
                .pool()
                .and_then(|(_, p)| model.get::<xapi_proto::records::HostRecord>(&p.master));
            if let Some(master) = master.filter(|m| m.address != master_address) {
                if let Some(fps) = pins.get(&master.address).cloned() {
                    pins.insert(master_address, fps);
                }
            }
        }
        drop(model);
        self.peers.pin_all(pins);
    }

    /// The committed model, for reading.
    pub fn model(&self) -> RwLockReadGuard<'_, Model> {
        self.model.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn role(&self) -> Role {
        self.role.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn is_master(&self) -> bool {
        self.role() == Role::Master
    }

    /// The pool secret this host proves itself with, as text for a call.
    pub fn pool_secret(&self) -> String {
        self.pool_secret.current().expose().to_string()
    }

    /// This host's pool secret (its file, what it accepts).
    pub fn secrets(&self) -> &Arc<crate::secret::PoolSecret> {
        &self.pool_secret
    }

    /// The password hash of `user`.
    pub fn password_hash(&self, user: &str) -> Option<String> {
        self.users.read().unwrap_or_else(|p| p.into_inner()).get(user).cloned()
    }

    pub fn users(&self) -> Vec<(String, String)> {
        let users = self.users.read().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<_> = users.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        v.sort();
        v
    }

    /// HA is enabled in this host's copy of the pool database.
    pub fn ha_enabled(&self) -> bool {
        self.model().pool().is_some_and(|(_, p)| p.ha_enabled)
    }

    /// This host's reference in the pool database.
    pub fn host_ref(&self) -> Option<String> {
        self.model().host.ref_of_uuid(&self.host_uuid).map(str::to_string)
    }

    /// Subscribe to generation changes.
    pub fn watch_generation(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Take the write lock; hold it across an operation's awaits.
    pub async fn writer(&self) -> Writer<'_> {
        Writer {
            daemon: self,
            store: self.store.lock().await,
        }
    }

    /// Validate and commit one transaction.
    pub async fn write<R>(&self, f: impl FnOnce(&mut Txn) -> Result<R, ApiError>) -> Result<R, ApiError> {
        self.writer().await.commit(f)
    }

    /// The commits after `since`, if the log still holds all of them.
    pub fn changes_since(&self, since: u64) -> Option<Vec<(u64, Changes)>> {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.model().generation;
        if since == current {
            return Some(Vec::new());
        }
        let first = log.front()?.0;
        if since + 1 < first || since > current {
            return None;
        }
        Some(log.iter().filter(|(g, _)| *g > since).cloned().collect())
    }

    fn publish(&self, generation: u64, changes: Changes) {
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.push_back((generation, changes));
        while log.len() > REPLICATION_LOG_LEN {
            log.pop_front();
        }
        drop(log);
        self.repin();
        self.generation.send_replace(generation);
    }

    /// Become a member of the pool whose master is `master_address`, taking
    /// its database (`snapshot` at `generation`) and its secret.
    pub async fn become_member(
        &self,
        master_address: &str,
        secret: crate::secret::Secret,
        snapshot: Changes,
        users: Vec<(String, String)>,
        generation: u64,
        term: Option<u64>,
    ) -> Result<(), String> {
        self.pool_secret.replace(secret).map_err(|e| e.to_string())?;
        self.replace_replica(snapshot, users, generation, term)
            .await
            .map_err(|e| e.to_string())?;
        self.store
            .lock()
            .await
            .set_local(&[("role", "member"), ("master_address", master_address)])
            .map_err(|e| e.to_string())?;
        self.set_role(Role::Member {
            master_address: master_address.to_string(),
        });
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clear();
        Ok(())
    }

    /// Apply replicated commits from the master (a member's side), whose
    /// term is `term` (`None` from a master that does not say).
    pub async fn apply_replica(&self, commits: Vec<(u64, Changes)>, term: Option<u64>) -> Result<(), StoreError> {
        let mut store = self.store.lock().await;
        for (generation, changes) in commits {
            if generation <= self.model().generation {
                continue;
            }
            store.commit(&changes, generation)?;
            let mut model = self.model.write().unwrap_or_else(|p| p.into_inner());
            self.events.record(generation, &model, &changes);
            model.apply(changes);
            model.generation = generation;
        }
        let g = self.model().generation;
        match term {
            Some(term) => self.lineage.extend(term, g),
            None => self.lineage.set(None),
        }
        self.repin();
        self.generation.send_replace(g);
        Ok(())
    }

    /// Replace the whole replica (a member too far behind the master's log,
    /// or a new master starting from the HA metadata file): a copy of
    /// master term `term`'s history, if it came from a master.
    pub async fn replace_replica(
        &self,
        snapshot: Changes,
        users: Vec<(String, String)>,
        generation: u64,
        term: Option<u64>,
    ) -> Result<(), StoreError> {
        let mut store = self.store.lock().await;
        store.replace_all(&snapshot, &users, generation)?;
        // A later copy of the history this replica is a prefix of (the
        // same master term): its differences are this host's events, so
        // tokens continue; any other copy starts the log afresh.
        let continues = {
            let current = self.model();
            term.is_some_and(|t| self.lineage.get().is_some_and(|(l, _)| l == t)) && generation >= current.generation
        };
        let differences = if continues {
            differences(&self.model(), &snapshot)
        } else {
            None
        };
        let mut model = Model {
            generation,
            ..Model::default()
        };
        model.apply(snapshot);
        {
            let mut current = self.model.write().unwrap_or_else(|p| p.into_inner());
            match differences {
                Some(changes) => self.events.record(generation, &current, &changes),
                None => self.events.reset(generation),
            }
            *current = model;
        }
        self.lineage.set(term.map(|t| (t, generation)));
        *self.users.write().unwrap_or_else(|p| p.into_inner()) = users.into_iter().collect();
        self.repin();
        self.generation.send_replace(generation);
        Ok(())
    }

    /// Start from the HA metadata file `m`, newer than this replica (a new
    /// master). Written by the master term this host replicated, with
    /// every commit after the replica, its commits are applied as if
    /// replicated, so that master's clients' tokens continue (true); else
    /// it replaces the replica whole and the lineage ends: their tokens
    /// get EVENTS_LOST and the clients read everything again (false).
    pub async fn adopt_metadata(&self, m: crate::ha::metadata::Metadata) -> Result<bool, StoreError> {
        let replica = self.model().generation;
        let continues = m.term.is_some_and(|t| self.lineage.get() == Some((t, replica))) && m.base <= replica;
        if continues {
            let after: Vec<_> = m.commits.into_iter().filter(|(g, _)| *g > replica).collect();
            self.apply_replica(after, m.term).await?;
        } else {
            self.replace_replica(m.snapshot, m.users, m.generation, None).await?;
        }
        Ok(continues)
    }

    /// The master's address, or this host's when it is the master.
    pub fn master_address(&self) -> String {
        match self.role() {
            Role::Master => self.config.address.clone(),
            Role::Member { master_address } => master_address,
        }
    }

    /// A value of this host's local database.
    /// This host's HA configuration, if it has one.
    pub async fn ha_local(&self) -> Option<crate::ha::local::HaLocal> {
        let text = self.local_value(crate::ha::local::KEY).await?;
        match crate::ha::local::HaLocal::from_json(&text) {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::error!("the local HA configuration is damaged ({e}); HA stays off on this host");
                None
            }
        }
    }

    pub async fn local_value(&self, key: &str) -> Option<String> {
        match self.store.lock().await.local(key) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!("cannot read {key} from the local database: {e}");
                None
            }
        }
    }

    pub async fn set_local_value(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.store.lock().await.set_local(&[(key, value)])
    }

    fn set_role(&self, role: Role) {
        *self.role.write().unwrap_or_else(|p| p.into_inner()) = role;
        self.role_epoch.send_modify(|e| *e += 1);
    }

    /// Subscribe to changes of role.
    pub fn watch_role(&self) -> watch::Receiver<u64> {
        self.role_epoch.subscribe()
    }

    /// Follow the master at `address` (elected by HA) from now on.
    pub async fn follow_master(&self, address: &str) -> Result<(), StoreError> {
        self.store
            .lock()
            .await
            .set_local(&[("role", "member"), ("master_address", address)])?;
        self.stop_redo_log();
        self.peers.forget().await;
        if self.is_master() {
            // Its own clients' tokens stay good on this database until a
            // copy of the new master's replaces it.
            self.lineage.set(Some((self.tasks.term(), self.model().generation)));
            self.tasks.new_term();
        }
        self.set_role(Role::Member {
            master_address: address.to_string(),
        });
        Ok(())
    }

    /// Become the pool master (this host won the HA master lock).
    pub async fn become_master(&self) -> Result<(), StoreError> {
        self.store.lock().await.set_local(&[("role", "master")])?;
        self.peers.forget().await;
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clear();
        if !self.is_master() {
            // A term of its own; the lineage (the master it replicated, up
            // to here) keeps that master's clients' tokens good.
            self.tasks.new_term();
        }
        self.set_role(Role::Master);
        Ok(())
    }

    /// SQLite's integrity check of this host's database file.
    pub async fn integrity_check(&self) -> Result<String, StoreError> {
        self.store.lock().await.integrity_check()
    }
}

/// What changed from `before` to the database `after` (a whole copy): a
/// row for each object added or changed, a deletion for each one gone
/// (`None` if a row would not go back into changes: then nothing can be
/// told).
fn differences(before: &Model, after: &Changes) -> Option<Changes> {
    use pool_db::replication::encode_rows;
    use serde_json::Value;
    let rows = |c: &Changes| -> HashMap<(String, String), Value> {
        let Value::Array(rows) = encode_rows(c) else {
            return HashMap::new();
        };
        rows.into_iter()
            .filter_map(|r| {
                let table = r.get(0)?.as_str()?.to_string();
                let reference = r.get(1)?.as_str()?.to_string();
                Some(((table, reference), r.get(2)?.clone()))
            })
            .collect()
    };
    let (old, new) = (rows(&before.snapshot()), rows(after));
    let mut changes = Changes::default();
    for (key, record) in &new {
        if old.get(key) != Some(record) {
            changes.put_row(&key.0, &key.1, Some(record.clone())).ok()?;
        }
    }
    for key in old.keys().filter(|k| !new.contains_key(*k)) {
        changes.put_row(&key.0, &key.1, None).ok()?;
    }
    Some(changes)
}

/// Create the one-host pool of a fresh host: pool, host, local SR, root user.
/// The local-database key counting this host's starts.
/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `HOST_IS_SLAVE [master]`, the answer of a member to ordinary calls.
pub fn host_is_slave(master_address: &str) -> ApiError {
    ApiError::new(codes::HOST_IS_SLAVE, vec![master_address.to_string()])
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use xapi_proto::records::HostRecord;
    use xapi_proto::records::VmRecord;

    /// The configuration of a one-host pool kept in `dir`, for unit tests.
    pub(crate) fn config(dir: &std::path::Path) -> Config {
        Config {
            data_dir: dir.to_path_buf(),
            address: "127.0.0.1".into(),
            bind_address: "127.0.0.1".into(),
            port: 0,
            root_password: Some("pw".into()),
            memory_total: 1 << 30,
            name_label: None,
            session_idle_timeout: Duration::from_secs(60),
            lab: false,
            driver: DriverKind::Sim,
            accel: Accel::Auto,
            guest_kernel: None,
            guest_kernel_dir: None,
            watchdog_device: None,
        }
    }

    /// The data directory and the database files are root's alone, made
    /// so at first start and tightened on an install that left them open.
    #[test]
    fn the_data_dir_and_database_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("xapid");
        let d = Daemon::open(config(&dir)).unwrap();
        drop(d);
        assert_eq!(mode(&dir), 0o700);
        for name in ["pool.db", "pool.db-wal", "pool.db-shm"] {
            let path = dir.join(name);
            if path.exists() {
                assert_eq!(mode(&path), 0o600, "{name}");
            }
        }
        // An older install: everything world-readable.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(dir.join("pool.db"), std::fs::Permissions::from_mode(0o644)).unwrap();
        let d = Daemon::open(config(&dir)).unwrap();
        assert!(d.host_ref().is_some(), "the same pool, opened again");
        drop(d);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("pool.db")), 0o600);
    }

    #[tokio::test]
    async fn first_start_makes_a_one_host_pool_that_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let d = Daemon::open(config(dir.path())).unwrap();
        let uuid = d.host_uuid.clone();
        {
            let m = d.model();
            let (_, pool) = m.pool().unwrap();
            assert_eq!(
                m.get::<HostRecord>(&pool.master).map(|h| h.uuid.clone()),
                Some(uuid.clone())
            );
            assert_eq!(m.sr.len(), 1);
        }
        drop(d);
        let mut cfg = config(dir.path());
        cfg.root_password = None;
        let d = Daemon::open(cfg).unwrap();
        assert_eq!(d.host_uuid, uuid);
        assert!(d.password_hash("root").is_some());
    }

    #[tokio::test]
    async fn rejected_writes_change_nothing_and_commits_bump_the_generation() {
        let dir = tempfile::tempdir().unwrap();
        let d = Daemon::open(config(dir.path())).unwrap();
        let g0 = d.model().generation;
        let err = d
            .write(|txn| {
                txn.put(
                    "OpaqueRef:x",
                    VmRecord {
                        uuid: "u".into(),
                        ..Default::default()
                    },
                );
                Err::<(), _>(ApiError::bare("NOPE"))
            })
            .await;
        assert!(err.is_err());
        assert_eq!(d.model().generation, g0);
        assert!(d.model().vm.is_empty());
        d.write(|txn| {
            txn.put(
                "OpaqueRef:x",
                VmRecord {
                    uuid: "u".into(),
                    ..Default::default()
                },
            );
            Ok(())
        })
        .await
        .unwrap();
        assert_eq!(d.model().generation, g0 + 1);
        assert_eq!(d.changes_since(g0).map(|c| c.len()), Some(1));
        assert!(d.changes_since(g0 + 5).is_none());
    }

    #[test]
    fn first_start_without_password_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path());
        cfg.root_password = None;
        assert!(matches!(Daemon::open(cfg), Err(StartError::NoRootPassword)));
    }
}
