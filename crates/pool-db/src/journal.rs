//! This host's journal in its pool database file: the `audit` table (the
//! state-changing API calls it served) and the `delivery` table (each
//! attempt to deliver a pool message to an alert target). Neither is
//! replicated: each host keeps what it did. Both are bounded: every
//! append drops the rows older than the newest [`AUDIT_KEEP`] or
//! [`DELIVERY_KEEP`].
//!
//! A [`Journal`] is a connection of its own to `pool.db` (the store's
//! schema, migrated by [`crate::store::Store::open`] first), so writing it
//! never waits for the store's lock; SQLite serializes the two writers.

use std::path::Path;

use rusqlite::{params, Connection};

use crate::store::StoreError;

/// The audit rows kept.
pub const AUDIT_KEEP: i64 = 10_000;
/// The delivery rows kept.
pub const DELIVERY_KEEP: i64 = 2_000;

/// One audited call.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuditRow {
    /// Its place in the table (0 before it is written).
    pub id: i64,
    pub at_ms: i64,
    /// The session's user name (`root`), or the name a login gave.
    pub user: String,
    pub method: String,
    /// The arguments as JSON, secrets masked, the session left out.
    pub args: String,
    /// `success`, or the XAPI error code.
    pub result: String,
}

/// One attempt to deliver a message to a target.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeliveryRow {
    pub id: i64,
    pub at_ms: i64,
    pub message_uuid: String,
    pub message_name: String,
    /// Where to, without credentials (`webhook http://127.0.0.1:8080`,
    /// `smtp 127.0.0.1:2525 to root@localhost`).
    pub target: String,
    /// 1 for the first attempt.
    pub attempt: i64,
    /// `delivered`, `retrying`, `failed` (given up) or `skipped`.
    pub outcome: String,
    /// What went wrong, or the target's answer.
    pub detail: String,
}

/// The journal tables through a connection of their own.
pub struct Journal {
    conn: Connection,
}

impl Journal {
    /// Open the journal of the (already migrated) database at `path`.
    pub fn open(path: &Path) -> Result<Journal, StoreError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(Journal { conn })
    }

    /// Append audit rows in one transaction, keeping the newest [`AUDIT_KEEP`].
    pub fn append_audit(&mut self, rows: &[AuditRow]) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        for r in rows {
            tx.prepare_cached("INSERT INTO audit (at_ms, user, method, args, result) VALUES (?1, ?2, ?3, ?4, ?5)")?
                .execute(params![r.at_ms, r.user, r.method, r.args, r.result])?;
        }
        tx.execute(
            "DELETE FROM audit WHERE id <= (SELECT MAX(id) FROM audit) - ?1",
            [AUDIT_KEEP],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Append delivery rows in one transaction, keeping the newest [`DELIVERY_KEEP`].
    pub fn append_deliveries(&mut self, rows: &[DeliveryRow]) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        for r in rows {
            tx.prepare_cached(
                "INSERT INTO delivery (at_ms, message_uuid, message_name, target, attempt, outcome, detail)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                r.at_ms,
                r.message_uuid,
                r.message_name,
                r.target,
                r.attempt,
                r.outcome,
                r.detail
            ])?;
        }
        tx.execute(
            "DELETE FROM delivery WHERE id <= (SELECT MAX(id) FROM delivery) - ?1",
            [DELIVERY_KEEP],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The newest `limit` audit rows, oldest first.
    pub fn audit(&self, limit: i64) -> Result<Vec<AuditRow>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT id, at_ms, user, method, args, result FROM
               (SELECT * FROM audit ORDER BY id DESC LIMIT ?1) ORDER BY id",
        )?;
        let rows = stmt.query_map([limit], |r| {
            Ok(AuditRow {
                id: r.get(0)?,
                at_ms: r.get(1)?,
                user: r.get(2)?,
                method: r.get(3)?,
                args: r.get(4)?,
                result: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The newest `limit` delivery rows, oldest first.
    pub fn deliveries(&self, limit: i64) -> Result<Vec<DeliveryRow>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT id, at_ms, message_uuid, message_name, target, attempt, outcome, detail FROM
               (SELECT * FROM delivery ORDER BY id DESC LIMIT ?1) ORDER BY id",
        )?;
        let rows = stmt.query_map([limit], |r| {
            Ok(DeliveryRow {
                id: r.get(0)?,
                at_ms: r.get(1)?,
                message_uuid: r.get(2)?,
                message_name: r.get(3)?,
                target: r.get(4)?,
                attempt: r.get(5)?,
                outcome: r.get(6)?,
                detail: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Has this host recorded any attempt for message `uuid`?
    pub fn attempted(&self, message_uuid: &str) -> Result<bool, StoreError> {
        Ok(self.conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM delivery WHERE message_uuid = ?1)",
            [message_uuid],
            |r| r.get(0),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[test]
    fn the_tables_keep_the_newest_rows_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pool.db");
        drop(Store::open(&path).unwrap());
        let mut j = Journal::open(&path).unwrap();
        let rows: Vec<AuditRow> = (0..AUDIT_KEEP + 5)
            .map(|i| AuditRow {
                at_ms: i,
                user: "root".into(),
                method: format!("VM.m{i}"),
                args: "[]".into(),
                result: "success".into(),
                ..Default::default()
            })
            .collect();
        j.append_audit(&rows[..10]).unwrap();
        j.append_audit(&rows[10..]).unwrap();
        let all = j.audit(AUDIT_KEEP * 2).unwrap();
        assert_eq!(all.len() as i64, AUDIT_KEEP);
        assert_eq!(all[0].method, "VM.m5", "the oldest five are gone");
        assert_eq!(
            j.audit(2).unwrap().last().unwrap().method,
            format!("VM.m{}", AUDIT_KEEP + 4)
        );
        let d = DeliveryRow {
            message_uuid: "m1".into(),
            message_name: "HA_HOST_FAILED".into(),
            target: "webhook http://127.0.0.1:1".into(),
            attempt: 1,
            outcome: "retrying".into(),
            ..Default::default()
        };
        j.append_deliveries(std::slice::from_ref(&d)).unwrap();
        drop(j);
        let j = Journal::open(&path).unwrap();
        assert!(j.attempted("m1").unwrap());
        assert!(!j.attempted("m2").unwrap());
        let got = j.deliveries(10).unwrap();
        assert_eq!((got.len(), got[0].outcome.as_str()), (1, "retrying"));
        // A member taking a full copy of the master's database keeps its journal.
        let mut store = Store::open(&path).unwrap();
        store.replace_all(&Default::default(), &[], 7).unwrap();
        assert_eq!(j.audit(1).unwrap().len(), 1);
    }
}
