//! The pool database on the heartbeat SR, written by the master while HA
//! is on: a full copy when it starts, then every commit before it lands
//! (`crate::ha::metadata` holds the file's format).

use xapi_proto::{codes, ApiError};

use super::Daemon;
use crate::ha::metadata::RedoLog;
use pool_db::model::Changes;

impl Daemon {
    /// Start writing the pool database to the heartbeat SR (HA is on and
    /// this host is the master): a full copy now, then every commit.
    pub async fn start_redo_log(&self) {
        let Some(l) = self.ha_local().await else { return };
        let _writes = self.store.lock().await;
        let mut redo = RedoLog::new(self.io.clone(), l.metadata);
        let (generation, snapshot) = {
            let m = self.model();
            (m.generation, m.snapshot())
        };
        if let Err(e) = redo.write_full(generation, &snapshot, &self.users(), self.tasks.term()) {
            tracing::warn!(
                "cannot write the pool database to the heartbeat SR ({e}): it gets a full copy at the next commit"
            );
        }
        *self.redo.lock().unwrap_or_else(|p| p.into_inner()) = Some(redo);
    }

    pub fn stop_redo_log(&self) {
        self.redo.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    /// Append a commit to the metadata file on the heartbeat SR, before
    /// the commit lands in this host's database (HA on, this host master):
    /// a commit the elected master cannot find there could be lost by a
    /// failover, so when the file cannot take it the write fails and
    /// changes nothing (xapi's redo log is best effort here). A log that
    /// needs a full copy gets one of the committed state first.
    ///
    /// Under survival rule 2 (no live host reaches the statefile) commits
    /// are taken without the file: no host can take the master lock
    /// without the statefile, so no failover can happen before it is back,
    /// and the file gets a full copy at the first commit after that. Those
    /// commits are as safe as the members' replicas.
    pub(super) fn redo_append(&self, generation: u64, changes: &Changes) -> Result<(), ApiError> {
        let mut redo = self.redo.lock().unwrap_or_else(|p| p.into_inner());
        let Some(log) = redo.as_mut() else { return Ok(()) };
        let full = if log.needs_full() {
            log.write_full(
                generation.saturating_sub(1),
                &self.model().snapshot(),
                &self.users(),
                self.tasks.term(),
            )
        } else {
            Ok(())
        };
        let written = full
            .map_err(|e| format!("cannot take a full copy: {e}"))
            .and_then(|()| {
                log.append(generation, changes)
                    .map_err(|e| format!("cannot take it: {e}"))
            });
        let Err(why) = written else { return Ok(()) };
        if self.ha.view().rule2 {
            log.needs_full_copy();
            tracing::debug!("commit {generation} taken without the metadata file (survival rule 2): it {why}");
            return Ok(());
        }
        tracing::warn!("commit {generation} refused: the metadata file on the heartbeat SR {why}");
        Err(ApiError::bare(codes::HA_LOST_STATEFILE))
    }
}
