//! This host's journal: the audit log of the API calls it served and the
//! record of every alert delivery attempt, in `pool.db`'s `audit` and
//! `delivery` tables (`pool_db::journal`, bounded there).
//!
//! Appends never wait: they go into a bounded queue ([`QUEUE`] rows) that a
//! thread of its own writes in batches through its own SQLite connection,
//! so neither an API call nor a commit waits for the journal, and the
//! store's lock (held across a VM start's call to a member) never delays
//! it. A row the full queue cannot take is dropped and counted, with a
//! warning at most every 10 s; the audit line in the host log (written by
//! the caller) is there either way. Reads run on a blocking thread.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use pool_db::journal::{AuditRow, DeliveryRow};
use pool_db::store::StoreError;

/// The rows waiting to be written, at most.
pub const QUEUE: usize = 4096;

/// Rows written in one transaction, at most.
const BATCH: usize = 256;

enum Row {
    Audit(AuditRow),
    Delivery(DeliveryRow),
}

/// The journal of one host.
pub struct Journal {
    queue: SyncSender<Row>,
    db: Arc<Mutex<pool_db::journal::Journal>>,
    dropped: Mutex<(u64, Option<Instant>)>,
    /// Rows queued and rows written (or failed) so far.
    counts: Arc<(AtomicU64, AtomicU64)>,
}

impl Journal {
    /// Open the journal tables of the (migrated) database at `path` and
    /// start its writer thread.
    pub fn open(path: &Path) -> Result<Journal, StoreError> {
        let db = Arc::new(Mutex::new(pool_db::journal::Journal::open(path)?));
        let (queue, rx) = sync_channel(QUEUE);
        let writer = db.clone();
        let counts = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
        let written = counts.clone();
        std::thread::Builder::new()
            .name("journal".into())
            .spawn(move || write_loop(&writer, &rx, &written.1))
            .map_err(|e| StoreError::Corrupt(format!("cannot start the journal's thread: {e}")))?;
        Ok(Journal {
            queue,
            db,
            dropped: Mutex::new((0, None)),
            counts,
        })
    }

    /// Record an audited call (never waits).
    pub fn audit(&self, row: AuditRow) {
        self.push(Row::Audit(row));
    }

    /// Record a delivery attempt (never waits).
    pub fn delivery(&self, row: DeliveryRow) {
        self.push(Row::Delivery(row));
    }

    fn push(&self, row: Row) {
        self.counts.0.fetch_add(1, Ordering::SeqCst);
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.queue.try_send(row) {
            self.counts.1.fetch_add(1, Ordering::SeqCst);
            let mut d = self.dropped.lock().unwrap_or_else(|p| p.into_inner());
            d.0 += 1;
            if d.1.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                d.1 = Some(Instant::now());
                tracing::warn!(dropped = d.0, "the journal's queue is full: rows dropped");
            }
        }
    }

    /// The newest `limit` audit rows, oldest first.
    pub async fn audit_rows(&self, limit: i64) -> Result<Vec<AuditRow>, StoreError> {
        let db = self.db.clone();
        blocking(move || db.lock().unwrap_or_else(|p| p.into_inner()).audit(limit)).await
    }

    /// The newest `limit` delivery rows, oldest first.
    pub async fn delivery_rows(&self, limit: i64) -> Result<Vec<DeliveryRow>, StoreError> {
        let db = self.db.clone();
        blocking(move || db.lock().unwrap_or_else(|p| p.into_inner()).deliveries(limit)).await
    }

    /// Did this host try to deliver message `uuid` before?
    pub async fn attempted(&self, uuid: String) -> Result<bool, StoreError> {
        let db = self.db.clone();
        blocking(move || db.lock().unwrap_or_else(|p| p.into_inner()).attempted(&uuid)).await
    }

    /// Wait until every row queued before now is written, at most
    /// `limit` (for tests, and readers that must see their own rows).
    pub async fn flush(&self, limit: Duration) {
        let queued = self.counts.0.load(Ordering::SeqCst);
        let start = Instant::now();
        while self.counts.1.load(Ordering::SeqCst) < queued && start.elapsed() < limit {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Corrupt(format!("journal read: {e}")))?
}

/// Write what arrives, a batch at a time, until every sender is gone.
fn write_loop(db: &Mutex<pool_db::journal::Journal>, rx: &Receiver<Row>, written: &AtomicU64) {
    while let Ok(first) = rx.recv() {
        let mut audit = Vec::new();
        let mut deliveries = Vec::new();
        let mut take = |row: Row| match row {
            Row::Audit(r) => audit.push(r),
            Row::Delivery(r) => deliveries.push(r),
        };
        take(first);
        for _ in 1..BATCH {
            match rx.try_recv() {
                Ok(row) => take(row),
                Err(_) => break,
            }
        }
        let mut j = db.lock().unwrap_or_else(|p| p.into_inner());
        if !audit.is_empty() {
            if let Err(e) = j.append_audit(&audit) {
                tracing::error!(rows = audit.len(), "cannot write the audit log: {e}");
            }
        }
        if !deliveries.is_empty() {
            if let Err(e) = j.append_deliveries(&deliveries) {
                tracing::error!(rows = deliveries.len(), "cannot record alert deliveries: {e}");
            }
        }
        drop(j);
        written.fetch_add((audit.len() + deliveries.len()) as u64, Ordering::SeqCst);
    }
}
