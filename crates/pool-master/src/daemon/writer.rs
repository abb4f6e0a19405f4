//! The write path: [`Writer`], the held write lock of the pool database
//! (commit, read, demote), and [`PoolOperation`], one pool-wide operation
//! at a time.

use xapi_proto::ApiError;

use super::{host_is_slave, Daemon, Role};
use pool_db::model::Txn;
use pool_db::store::{Store, StoreError};

/// A pool-wide operation under way ([`Daemon::pool_operation`]).
pub struct PoolOperation<'a>(pub(super) &'a Daemon);

impl Drop for PoolOperation<'_> {
    fn drop(&mut self) {
        self.0.end_ha_change();
    }
}

/// The held write lock of the pool database.
pub struct Writer<'a> {
    pub(super) daemon: &'a Daemon,
    pub(super) store: tokio::sync::MutexGuard<'a, Store>,
}

impl Writer<'_> {
    /// Run `f` over a transaction and commit what it changed. When `f`
    /// fails, or the commit does, nothing changes.
    pub fn commit<R>(&mut self, f: impl FnOnce(&mut Txn) -> Result<R, ApiError>) -> Result<R, ApiError> {
        // A write that waited for the lock while this host handed the
        // master role on (`pool.designate_new_master`) must not land in
        // what is now a replica.
        if !self.daemon.is_master() {
            return Err(host_is_slave(&self.daemon.master_address()));
        }
        let (result, changes, generation) = {
            let model = self.daemon.model();
            let mut txn = Txn::new(&model);
            let result = f(&mut txn)?;
            (result, txn.into_changes(), model.generation + 1)
        };
        if changes.is_empty() {
            return Ok(result);
        }
        let daemon = self.daemon;
        self.store
            .commit_with(&changes, generation, || daemon.redo_append(generation, &changes))
            .map_err(|e| ApiError::internal(format!("database commit failed: {e}")))??;
        {
            let mut model = self.daemon.model.write().unwrap_or_else(|p| p.into_inner());
            self.daemon.events.record(generation, &model, &changes);
            model.apply(changes.clone());
            model.generation = generation;
        }
        self.daemon.publish(generation, changes);
        Ok(result)
    }

    /// Become a member following `master_address`, with the write lock
    /// held: no write queued behind it commits here any more.
    pub fn demote(&mut self, master_address: &str) -> Result<(), StoreError> {
        self.store
            .set_local(&[("role", "member"), ("master_address", master_address)])?;
        self.daemon.stop_redo_log();
        self.daemon.set_role(Role::Member {
            master_address: master_address.to_string(),
        });
        Ok(())
    }

    /// Read the committed model while holding the write lock.
    pub fn read<R>(&self, f: impl FnOnce(&Txn) -> Result<R, ApiError>) -> Result<R, ApiError> {
        let model = self.daemon.model();
        let txn = Txn::new(&model);
        f(&txn)
    }
}
