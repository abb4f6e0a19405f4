//! [`LeasedDriver`]: the VM driver `xapid` uses, which wraps the real one
//! (`sim` or `qemu`) with the VM leases. While leases are on, a guest
//! starts only once this host holds its VM's lease, and a guest that ends
//! here (stopped, halted, migrated away) lets its lease go. Everything
//! above the driver seam gets this for free: the restart executor, the
//! admin's `vm-start`, maintenance and the chaos checker do not know it is
//! there.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::acquire::{acquire, release};
use super::Leases;
use crate::driver::{Driver, DriverError, DriverKind, GuestSpec, Halted, Snapshot, StopMode};

/// How long a guest that arrived by live migration keeps trying for its
/// lease (its source lets the lease go once the migration is over).
const INCOMING_TRIES_FOR: Duration = Duration::from_secs(180);

pub struct LeasedDriver {
    inner: Arc<dyn Driver>,
    leases: Arc<Leases>,
}

impl LeasedDriver {
    pub fn new(inner: Arc<dyn Driver>, leases: Arc<Leases>) -> LeasedDriver {
        LeasedDriver { inner, leases }
    }
}

fn lease_error(vm: &str, e: super::LeaseError) -> DriverError {
    DriverError::Lease {
        vm: vm.to_string(),
        why: e.to_string(),
    }
}

#[async_trait::async_trait]
impl Driver for LeasedDriver {
    fn kind(&self) -> DriverKind {
        self.inner.kind()
    }

    fn accel(&self) -> &'static str {
        self.inner.accel()
    }

    async fn start(&self, spec: GuestSpec) -> Result<i64, DriverError> {
        let vm = spec.vm_uuid.clone();
        // Held until the guest runs or the lease is let go again; if this
        // call is dropped half way, the keeper lets go of a lease held for
        // no guest.
        let _hold = self.leases.lock_vm(&vm).await;
        let result = async {
            self.leases.settle().await;
            acquire(&self.leases, &vm).await.map_err(|e| lease_error(&vm, e))?;
            // A guest of this VM already runs here, under this host's lease:
            // an earlier start whose caller stopped waiting (the master's
            // call timed out while this host waited for the lease). It is
            // the guest the pool asks for; a second would be refused.
            // Not while paused: the resume check may yet kill it.
            let runs = self.leases.paused_since().is_none() && self.inner.running().contains(&vm);
            if let Some(domid) = self.inner.domid(&vm).filter(|_| runs) {
                tracing::info!(vm = %vm, domid, "asked to start a guest that already runs here: it is that one");
                return Ok(domid);
            }
            self.inner.start(spec).await
        }
        .await;
        if result.is_err() && !self.inner.running().contains(&vm) {
            release(&self.leases, &vm).await;
        }
        result
    }

    async fn start_incoming(&self, spec: GuestSpec, listen: &str, reach: &str) -> Result<(i64, String), DriverError> {
        let vm = spec.vm_uuid.clone();
        self.leases.settle().await;
        let out = self.inner.start_incoming(spec, listen, reach).await?;
        // The source holds the lease until its guest is gone: take it
        // then, while the guest here runs (docs/LEASES.md, "Release").
        let (leases, inner) = (self.leases.clone(), self.inner.clone());
        tokio::spawn(async move {
            let until = tokio::time::Instant::now() + INCOMING_TRIES_FOR;
            // Held throughout: the keeper must not judge this guest, which
            // runs without a lease until the source lets it go.
            let _hold = leases.lock_vm(&vm).await;
            while tokio::time::Instant::now() < until && leases.active() && inner.running().contains(&vm) {
                match acquire(&leases, &vm).await {
                    Ok(_) => return,
                    Err(e) => tracing::debug!(vm = %vm, "the migrated guest's lease is not free yet: {e}"),
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Ok(out)
    }

    async fn migrate_out(&self, vm_uuid: &str, uri: &str) -> Result<u64, DriverError> {
        let seq = self.inner.migrate_out(vm_uuid, uri).await?;
        let _hold = self.leases.lock_vm(vm_uuid).await;
        release(&self.leases, vm_uuid).await;
        Ok(seq)
    }

    async fn stop(&self, vm_uuid: &str, how: StopMode) -> Result<u64, DriverError> {
        let out = self.inner.stop(vm_uuid, how).await;
        if !self.inner.running().contains(&vm_uuid.to_string()) {
            let _hold = self.leases.lock_vm(vm_uuid).await;
            release(&self.leases, vm_uuid).await;
        }
        out
    }

    fn running(&self) -> Vec<String> {
        self.inner.running()
    }

    fn snapshot(&self) -> Snapshot {
        self.inner.snapshot()
    }

    fn domid(&self, vm_uuid: &str) -> Option<i64> {
        self.inner.domid(vm_uuid)
    }

    fn take_halted(&self) -> Option<mpsc::UnboundedReceiver<Halted>> {
        let mut from = self.inner.take_halted()?;
        let (tx, rx) = mpsc::unbounded_channel();
        let leases = self.leases.clone();
        tokio::spawn(async move {
            while let Some(h) = from.recv().await {
                let hold = leases.lock_vm(&h.vm_uuid).await;
                release(&leases, &h.vm_uuid).await;
                drop(hold);
                if tx.send(h).is_err() {
                    return;
                }
            }
        });
        Some(rx)
    }

    fn gate(&self) -> Result<(), &'static str> {
        self.inner.gate()
    }

    async fn adopt(&self) -> Vec<String> {
        self.inner.adopt().await
    }

    fn pause_all(&self) {
        self.inner.pause_all();
    }

    fn resume_all(&self) {
        self.inner.resume_all();
    }

    fn kill_all(&self) {
        self.inner.kill_all();
    }
}
