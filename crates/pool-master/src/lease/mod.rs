//! VM leases in `xapid` (`docs/LEASES.md`): while HA is on, a guest runs
//! on this host only under a lease on the heartbeat SR that no other host
//! can take while this host renews its own.
//!
//! The rules are `ha_lease`'s, sans I/O; this module is their shell:
//! - [`Leases`]: this host's lease state (its host lease as holder, its
//!   judgement of every peer's, the VM leases it holds) and the *gate*
//!   every guest write asks.
//! - [`files`]: the files on the SR and their I/O with time limits.
//! - [`acquire`]: taking a VM's lease (Disk Paxos), releasing it, and the
//!   check a paused guest passes before it runs again.
//! - [`driver`]: [`LeasedDriver`], the VM driver that takes a lease before
//!   every start and lets it go after every stop.
//!
//! The task that renews, observes, pauses and resumes runs above the
//! daemon (`crate::failover::leases`).

pub mod acquire;
pub mod driver;
pub mod files;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ha_lease::host::{Holder, Observer, Timing};
use ha_lease::paxos::Owner;
use ha_lease::vm::LeaseRecord;
use ha_lease::Millis;

use crate::io::Gate;
pub use driver::LeasedDriver;
use files::{HostLease, Layout};

/// The words of a [`LeaseError::Busy`] as it reaches the master inside a
/// start's error: the restart executor tries such a start again soon (the
/// new host's observer may lag the master's).
pub const BUSY: &str = "whose host lease is alive";

/// Why a lease could not be had.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("the lease of VM {vm} is held by host {owner}, whose host lease is alive")]
    Busy { vm: String, owner: String },
    #[error("the lease of VM {vm} was decided for host {owner}")]
    Lost { vm: String, owner: String },
    #[error("cannot take the lease of VM {vm}: {why}")]
    Failed { vm: String, why: String },
}

/// What a lease operation needs to know of the pool, read at one moment.
#[derive(Debug, Clone)]
pub struct View {
    pub layout: Layout,
    /// The HA configuration's hosts: a host's index is its Paxos index.
    pub hosts: Vec<String>,
    pub me: usize,
    pub boot: u64,
    pub timing: Timing,
    /// The gate every lease file I/O passes.
    pub gate: Arc<Gate>,
}

impl View {
    pub fn me(&self) -> Owner {
        Owner {
            host: self.me as u16,
            boot: self.boot,
        }
    }

    pub fn io(&self) -> Duration {
        Duration::from_millis(self.timing.io)
    }

    pub fn index_of(&self, host: &str) -> Option<usize> {
        self.hosts.iter().position(|h| h == host)
    }
}

/// Leases of one HA configuration.
struct Active {
    generation: u128,
    view: View,
    /// When this configuration began here (the guests may run for D
    /// before a first renewal must have counted).
    since: Millis,
    holder: Holder,
    counter: u64,
    observers: Vec<Observer>,
    records: Vec<Option<LeaseRecord>>,
    /// Each peer's lease file, as last read, carried the fencing mark.
    fenced: Vec<bool>,
    /// The VM leases this host holds: the instance of each.
    owned: HashMap<String, u64>,
    /// The highest ballot seen per VM.
    seen: HashMap<String, u64>,
}

#[derive(Default)]
struct Inner {
    active: Option<Active>,
    /// The guests are paused (the host lease's deadline passed, at that
    /// time): they run again only after the resume check.
    paused: Option<Millis>,
    /// The highest instance of each VM this boot marked released: spent,
    /// even when the owner files lag behind it (kept across HA
    /// configurations).
    released: HashMap<String, u64>,
}

/// This host's leases.
pub struct Leases {
    epoch: Instant,
    host_uuid: String,
    boot: u64,
    /// The gate every lease file I/O passes.
    io: Arc<Gate>,
    inner: Mutex<Inner>,
    /// One lock per VM: see [`Leases::lock_vm`].
    vm_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// The hold [`Leases::lock_vm`] gives.
pub type VmGuard = tokio::sync::OwnedMutexGuard<()>;

/// A renewal's I/O is under way.
static RENEWING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The fencing mark this host's fence writes over its lease file, as of
/// the last renewal (a plain static: the fence runs on the watchdog's
/// thread, with no daemon at hand).
static FENCE_MARK: Mutex<Option<FenceMark>> = Mutex::new(None);

/// Where the fencing mark goes, what it says, and the gate it passes.
type FenceMark = (std::path::PathBuf, HostLease, Arc<Gate>);

/// Write the fencing mark, if leases are on: called by the fence once this
/// host's guests are gone, waiting at most `limit` (a hung SR gets none,
/// and other hosts wait for the lease to expire instead).
pub fn write_fence_mark(limit: Duration) {
    let Some((path, mark, io)) = FENCE_MARK.lock().unwrap_or_else(|p| p.into_inner()).clone() else {
        return;
    };
    if let Err(cut) = io.storage() {
        eprintln!("HA FENCE: no fencing mark: {cut}");
        return;
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new().name("fence-mark".into()).spawn(move || {
        let _ = tx.send(files::write_json(&path, &mark));
    });
    if spawned.is_ok() {
        match rx.recv_timeout(limit) {
            Ok(Ok(())) => eprintln!("HA FENCE: the fencing mark is on the heartbeat SR"),
            Ok(Err(e)) => eprintln!("HA FENCE: no fencing mark: {e}"),
            Err(_) => eprintln!("HA FENCE: no fencing mark within {} ms", limit.as_millis()),
        }
    }
}

/// Why the gate is shut for guests whose lease is not renewed.
pub const PAUSED: &str = "paused: this host's lease on the heartbeat SR is not renewed";

impl Leases {
    /// The leases of host `host_uuid` in its boot number `boot` (numbers
    /// only grow: `xapid` counts its starts).
    /// This start of the daemon (its boot count).
    pub fn boot(&self) -> u64 {
        self.boot
    }

    pub fn new(host_uuid: &str, boot: u64, io: Arc<Gate>) -> Leases {
        Leases {
            epoch: Instant::now(),
            host_uuid: host_uuid.to_string(),
            boot,
            io,
            inner: Mutex::new(Inner::default()),
            vm_locks: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// This host's monotonic clock, in ms.
    pub fn now(&self) -> Millis {
        self.epoch.elapsed().as_millis() as Millis
    }

    /// The instant of `at` on [`Leases::now`]'s clock.
    pub fn instant(&self, at: Millis) -> Instant {
        self.epoch + Duration::from_millis(at)
    }

    /// Turn leases on for the HA configuration `generation` over `hosts`
    /// with timeout `timeout_ms`, on the SR at `sr_dir`; nothing changes
    /// when that configuration is already on. False when this host is not
    /// among `hosts`.
    pub fn activate(&self, generation: u128, hosts: &[String], timeout_ms: u64, sr_dir: &std::path::Path) -> bool {
        let Some(me) = hosts.iter().position(|h| *h == self.host_uuid) else {
            return false;
        };
        let now = self.now();
        let mut inner = self.lock();
        if inner.active.as_ref().is_some_and(|a| a.generation == generation) {
            return true;
        }
        let timing = Timing::for_timeout(timeout_ms);
        inner.active = Some(Active {
            generation,
            view: View {
                layout: Layout::new(sr_dir),
                hosts: hosts.to_vec(),
                me,
                boot: self.boot,
                timing,
                gate: self.io.clone(),
            },
            since: now,
            holder: Holder::new(timing),
            counter: 0,
            observers: vec![Observer::new(timing); hosts.len()],
            records: vec![None; hosts.len()],
            fenced: vec![false; hosts.len()],
            owned: HashMap::new(),
            seen: HashMap::new(),
        });
        // Guests paused under the last configuration stay so until the
        // resume check.
        true
    }

    /// Turn leases off (HA is off here): the VM leases held, to release.
    pub fn deactivate(&self) -> Vec<(String, u64, View)> {
        *FENCE_MARK.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let mut inner = self.lock();
        inner.paused = None;
        let Some(a) = inner.active.take() else {
            return Vec::new();
        };
        for (vm, k) in &a.owned {
            let r = inner.released.entry(vm.clone()).or_default();
            *r = (*r).max(*k);
        }
        a.owned.into_iter().map(|(vm, k)| (vm, k, a.view.clone())).collect()
    }

    /// The configuration in force, if leases are on.
    pub fn view(&self) -> Option<View> {
        self.lock().active.as_ref().map(|a| a.view.clone())
    }

    /// The HA configuration the leases are on for, if they are.
    pub fn generation(&self) -> Option<u128> {
        self.lock().active.as_ref().map(|a| a.generation)
    }

    /// How long a start may wait for its VM's lease (an owner's host
    /// lease expiring): nothing while leases are off.
    pub fn acquire_wait(&self) -> Duration {
        self.view().map_or(Duration::ZERO, |v| {
            Duration::from_millis(acquire::wait_bound(&v.timing))
        })
    }

    pub fn active(&self) -> bool {
        self.lock().active.is_some()
    }

    /// Until when (this clock) the guests may run: the holder's deadline,
    /// or D after leases came on before any renewal counted.
    fn deadline_of(a: &Active) -> Millis {
        a.holder
            .deadline()
            .unwrap_or_else(|| a.since.saturating_add(a.view.timing.d))
    }

    pub fn deadline(&self) -> Option<Millis> {
        self.lock().active.as_ref().map(Self::deadline_of)
    }

    /// Real guests' deadlines (this clock): the pause (the deadline), the
    /// kill and the reset, each from the issue of the last renewal that
    /// counted (`Timing::kill_after`, `Timing::reset_after`).
    pub fn escalation(&self) -> Option<(Millis, Millis, Millis)> {
        let inner = self.lock();
        let a = inner.active.as_ref()?;
        let t = a.view.timing;
        let pause = Self::deadline_of(a);
        let issue = pause.saturating_sub(t.d);
        Some((
            pause,
            issue.saturating_add(t.kill_after()),
            issue.saturating_add(t.reset_after()),
        ))
    }

    /// Asked before every guest write and start: shut while the guests are
    /// paused, and from the moment the host lease's deadline passes (which
    /// pauses them).
    pub fn gate(&self) -> Result<(), &'static str> {
        let now = self.now();
        let mut inner = self.lock();
        if inner.paused.is_some() {
            return Err(PAUSED);
        }
        match &inner.active {
            Some(a) if now >= Self::deadline_of(a) => {
                inner.paused = Some(now);
                tracing::warn!("this host's lease on the heartbeat SR was not renewed in time: its guests pause");
                Err(PAUSED)
            }
            _ => Ok(()),
        }
    }

    /// When the guests were paused, if they are.
    pub fn paused_since(&self) -> Option<Millis> {
        self.lock().paused
    }

    /// Wait (up to two renewals and an I/O) for paused guests to run again:
    /// a start that comes just after storage came back waits for the
    /// keeper's resume check instead of failing.
    pub async fn settle(&self) {
        let Some(view) = self.view() else { return };
        let limit = Duration::from_millis(2 * view.timing.renew_every + view.timing.io);
        let until = Instant::now() + limit;
        while self.paused_since().is_some() && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The guests may run again (the resume check passed).
    pub fn unpause(&self) {
        self.lock().paused = None;
    }

    /// The next renewal: the file, what to write, and this host's boot.
    pub fn next_renewal(&self) -> Option<(std::path::PathBuf, HostLease)> {
        let mut inner = self.lock();
        let a = inner.active.as_mut()?;
        a.counter += 1;
        let rec = HostLease {
            boot: self.boot,
            counter: a.counter,
            fenced: false,
        };
        let path = a.view.layout.host_lease(&self.host_uuid);
        let mark = HostLease {
            counter: a.counter + 1,
            fenced: true,
            ..rec
        };
        *FENCE_MARK.lock().unwrap_or_else(|p| p.into_inner()) = Some((path.clone(), mark, self.io.clone()));
        Some((path, rec))
    }

    /// A renewal issued at `issue` ended at `done` (`ok`: it was written).
    /// Returns whether it counted.
    pub fn renewed(&self, issue: Millis, done: Millis, ok: bool) -> bool {
        let mut inner = self.lock();
        let Some(a) = inner.active.as_mut().filter(|_| ok) else {
            return false;
        };
        let before = Self::deadline_of(a);
        let counted = a.holder.renewed(issue, done);
        // A renewal issued after the deadline ends a lapse: the guests
        // were paused then (the fence guard stops qemu guests on its own),
        // even if no one asked the gate in between.
        if counted && issue >= before && inner.paused.is_none() {
            inner.paused = Some(before);
        }
        counted
    }

    /// Was this host's lease held all the time since `from` (this clock)?
    pub fn held_since(&self, from: Millis) -> bool {
        let now = self.now();
        let inner = self.lock();
        inner.active.as_ref().is_some_and(|a| a.holder.held_since(from, now))
    }

    /// Has a renewal issued at or after `since` counted, and is the lease
    /// held now?
    pub fn renewed_since(&self, since: Millis) -> bool {
        let now = self.now();
        let inner = self.lock();
        inner.active.as_ref().is_some_and(|a| {
            a.holder.holds(now)
                && a.holder
                    .deadline()
                    .is_some_and(|d| d.saturating_sub(a.view.timing.d) >= since)
        })
    }

    /// A read of peer `index`'s lease file issued at `issue` and ended at
    /// `done` showed `rec` (`None`: no file). True when this read found the
    /// peer's lease newly expired.
    pub fn observed(&self, index: usize, issue: Millis, done: Millis, rec: Option<HostLease>) -> bool {
        let mut inner = self.lock();
        let Some(a) = inner.active.as_mut() else { return false };
        let fenced = rec.is_some_and(|r| r.fenced);
        let record = rec.map(|r| LeaseRecord {
            boot: r.boot,
            counter: r.counter,
        });
        if let (Some(o), Some(slot), Some(mark)) = (
            a.observers.get_mut(index),
            a.records.get_mut(index),
            a.fenced.get_mut(index),
        ) {
            let before = o.expired() || *mark;
            o.read(issue, done, record.map_or(0, LeaseRecord::stamp));
            *slot = record;
            *mark = fenced;
            return (o.expired() || fenced) && !before;
        }
        false
    }

    /// The peers whose host lease has expired in this host's eyes, by
    /// uuid: their guests are paused by now and stay so.
    pub fn lapsed(&self) -> Vec<String> {
        let inner = self.lock();
        let Some(a) = inner.active.as_ref() else {
            return Vec::new();
        };
        a.observers
            .iter()
            .enumerate()
            .filter(|&(i, o)| i != a.view.me && (o.expired() || a.fenced.get(i) == Some(&true)))
            .filter_map(|(i, _)| a.view.hosts.get(i).cloned())
            .collect()
    }

    /// Peer `index`'s lease file as last read, this host's judgement of
    /// it, and whether it carried the fencing mark.
    pub fn judge(&self, index: usize) -> Option<(Option<LeaseRecord>, Observer, bool)> {
        let inner = self.lock();
        let a = inner.active.as_ref()?;
        Some((
            *a.records.get(index)?,
            a.observers.get(index)?.clone(),
            *a.fenced.get(index)?,
        ))
    }

    /// The instance of VM `vm`'s lease this host holds.
    pub fn owned(&self, vm: &str) -> Option<u64> {
        self.lock().active.as_ref()?.owned.get(vm).copied()
    }

    /// Every VM lease this host holds.
    pub fn all_owned(&self) -> Vec<(String, u64)> {
        let inner = self.lock();
        inner
            .active
            .as_ref()
            .map(|a| a.owned.iter().map(|(v, k)| (v.clone(), *k)).collect())
            .unwrap_or_default()
    }

    fn set_owned(&self, vm: &str, instance: Option<u64>) {
        let mut inner = self.lock();
        if let Some(a) = inner.active.as_mut() {
            match instance {
                Some(k) => a.owned.insert(vm.to_string(), k),
                None => a.owned.remove(vm),
            };
        }
    }

    /// Instance `k` of VM `vm` is spent here: its guest is gone, and it
    /// is never held again, whatever the owner files say.
    fn note_spent(&self, vm: &str, k: u64) {
        let mut inner = self.lock();
        let r = inner.released.entry(vm.to_string()).or_default();
        *r = (*r).max(k);
    }

    fn spent(&self, vm: &str) -> u64 {
        self.lock().released.get(vm).copied().unwrap_or(0)
    }

    fn seen(&self, vm: &str) -> u64 {
        let inner = self.lock();
        inner.active.as_ref().and_then(|a| a.seen.get(vm).copied()).unwrap_or(0)
    }

    fn note_seen(&self, vm: &str, ballot: u64) {
        let mut inner = self.lock();
        if let Some(a) = inner.active.as_mut() {
            let s = a.seen.entry(vm.to_string()).or_default();
            *s = (*s).max(ballot);
        }
    }

    fn vm_mutex(&self, vm: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.vm_locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(vm.to_string()).or_default().clone()
    }

    /// Hold VM `vm`'s lease work on this host: one taking, starting or
    /// letting go at a time (each writes this host's block and owner file).
    pub async fn lock_vm(&self, vm: &str) -> VmGuard {
        self.vm_mutex(vm).lock_owned().await
    }

    /// [`Leases::lock_vm`], unless another holds it now.
    pub fn try_lock_vm(&self, vm: &str) -> Option<VmGuard> {
        self.vm_mutex(vm).try_lock_owned().ok()
    }
}

/// Renew this host's lease and read every peer's, in one batch: the
/// renewal counts only if the batch ended within `io`. True when a peer's
/// lease lapsed with this read.
pub async fn renew_and_observe(leases: &Leases, view: &View) -> bool {
    let Some((path, rec)) = leases.next_renewal() else {
        return false;
    };
    let peers: Vec<(usize, std::path::PathBuf)> = view
        .hosts
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != view.me)
        .map(|(i, h)| (i, view.layout.host_lease(h)))
        .collect();
    // One renewal at a time: on a hung SR the last one still waits on its
    // thread, and another would only add a thread.
    if RENEWING.swap(true, std::sync::atomic::Ordering::SeqCst) {
        tracing::warn!("the last host lease renewal has not returned yet: no renewal this time");
        return false;
    }
    let issue = leases.now();
    let gate = view.gate.clone();
    let batch = files::renewal_with_limit(view.io(), move || {
        if let Err(cut) = gate.storage() {
            RENEWING.store(false, std::sync::atomic::Ordering::SeqCst);
            return Err(files::IoError::Io {
                path: path.clone(),
                source: cut.into(),
            });
        }
        let out = files::write_json(&path, &rec).map(|()| {
            // A peer's file that cannot be read is skipped this time (no
            // observation), not a failed renewal.
            peers
                .iter()
                .filter_map(|(i, p)| Some((*i, files::read_json::<HostLease>(p).ok()?)))
                .collect::<Vec<_>>()
        });
        RENEWING.store(false, std::sync::atomic::Ordering::SeqCst);
        out
    })
    .await;
    let done = leases.now();
    let mut lapsed = false;
    match batch {
        Ok(read) => {
            if !leases.renewed(issue, done, true) {
                tracing::warn!(took_ms = done - issue, "a host lease renewal took too long to count");
            }
            for (i, r) in read {
                if leases.observed(i, issue, done, r) {
                    tracing::warn!(host = %view.hosts[i], "a host's lease on the heartbeat SR lapsed");
                    lapsed = true;
                }
            }
        }
        Err(e) => tracing::warn!("cannot renew this host's lease: {e}"),
    }
    lapsed
}

#[cfg(test)]
mod tests;
