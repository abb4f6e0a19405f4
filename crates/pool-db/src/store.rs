//! Durable storage of the pool database in SQLite.
//!
//! One file per host (`DATA_DIR/pool.db`), WAL mode with `synchronous=FULL`:
//! a commit returns only once it is on disk, so an acknowledged write survives
//! a crash of the process or the machine. Each class has a table of
//! `(ref, uuid, record)` rows, the record as JSON. `meta` holds the
//! generation; `local` holds what belongs to this host alone and is never
//! replicated (its identity, its role, its HA configuration); `user` holds
//! password hashes; `audit` and `delivery` are this host's journal
//! ([`crate::journal`]), never replicated either. The schema version is SQLite's `user_version`, and
//! [`MIGRATIONS`] brings an older file up to date inside one transaction.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};

use crate::model::{Changes, Model, TABLES};

/// Schema migrations; entry `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    r#"
    CREATE TABLE meta  (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE local (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE user  (name TEXT PRIMARY KEY, password_hash TEXT NOT NULL);
    CREATE TABLE pool    (ref TEXT PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, record TEXT NOT NULL);
    CREATE TABLE host    (ref TEXT PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, record TEXT NOT NULL);
    CREATE TABLE vm      (ref TEXT PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, record TEXT NOT NULL);
    CREATE TABLE sr      (ref TEXT PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, record TEXT NOT NULL);
    CREATE TABLE pbd     (ref TEXT PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, record TEXT NOT NULL);
    CREATE TABLE vdi     (ref TEXT PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, record TEXT NOT NULL);
    CREATE TABLE vbd     (ref TEXT PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, record TEXT NOT NULL);
    CREATE TABLE message (ref TEXT PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, record TEXT NOT NULL);
    INSERT INTO meta (key, value) VALUES ('generation', '0');
"#,
    r#"
    CREATE TABLE certificate (ref TEXT PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, record TEXT NOT NULL);
"#,
    // The journal of this host (crate::journal): never replicated.
    r#"
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT, at_ms INTEGER NOT NULL, user TEXT NOT NULL,
        method TEXT NOT NULL, args TEXT NOT NULL, result TEXT NOT NULL);
    CREATE TABLE delivery (
        id INTEGER PRIMARY KEY AUTOINCREMENT, at_ms INTEGER NOT NULL, message_uuid TEXT NOT NULL,
        message_name TEXT NOT NULL, target TEXT NOT NULL, attempt INTEGER NOT NULL,
        outcome TEXT NOT NULL, detail TEXT NOT NULL);
    CREATE INDEX delivery_message ON delivery (message_uuid);
"#,
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: usize = MIGRATIONS.len();

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the database was written by a newer version (schema {found}, this build knows {known})")]
    TooNew { found: usize, known: usize },
    #[error("the database is damaged: {0}")]
    Corrupt(String),
}

/// The SQLite file of one host.
pub struct Store {
    conn: Connection,
}

impl Store {
    /// Open (creating if needed) and migrate the database at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let mut store = Store { conn };
        store.migrate()?;
        Ok(store)
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let found: usize = self.conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::TooNew {
                found,
                known: SCHEMA_VERSION,
            });
        }
        let tx = self.conn.transaction()?;
        for sql in &MIGRATIONS[found..] {
            tx.execute_batch(sql)?;
        }
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        tx.commit()?;
        Ok(())
    }

    /// Read the whole database into memory.
    pub fn load(&self) -> Result<Model, StoreError> {
        let mut changes = Changes::default();
        for table in TABLES {
            let mut stmt = self.conn.prepare(&format!("SELECT ref, record FROM {table}"))?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let reference: String = row.get(0)?;
                let text: String = row.get(1)?;
                let value: serde_json::Value = serde_json::from_str(&text)
                    .map_err(|e| StoreError::Corrupt(format!("{table} {reference}: {e}")))?;
                changes
                    .put_row(table, &reference, Some(value))
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            }
        }
        let mut model = Model {
            generation: self.generation()?,
            ..Model::default()
        };
        model.apply(changes);
        Ok(model)
    }

    /// The generation of the last commit.
    pub fn generation(&self) -> Result<u64, StoreError> {
        let text: String = self
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'generation'", [], |r| r.get(0))?;
        text.parse()
            .map_err(|_| StoreError::Corrupt(format!("generation {text:?}")))
    }

    /// Make `changes` durable as generation `generation`, all or nothing.
    pub fn commit(&mut self, changes: &Changes, generation: u64) -> Result<(), StoreError> {
        self.commit_with(changes, generation, || Ok::<(), StoreError>(()))?
    }

    /// Like [`Store::commit`], calling `before` once the rows are written
    /// and before SQLite commits them: when `before` fails, the transaction
    /// rolls back and nothing changes (its error is the inner one).
    pub fn commit_with<E>(
        &mut self,
        changes: &Changes,
        generation: u64,
        before: impl FnOnce() -> Result<(), E>,
    ) -> Result<Result<(), E>, StoreError> {
        let tx = self.conn.transaction()?;
        write_changes(&tx, changes)?;
        tx.execute(
            "UPDATE meta SET value = ?1 WHERE key = 'generation'",
            [generation.to_string()],
        )?;
        if let Err(e) = before() {
            tx.rollback()?;
            return Ok(Err(e));
        }
        tx.commit()?;
        Ok(Ok(()))
    }

    /// Replace every replicated row with `snapshot` (a member taking the
    /// master's copy), all or nothing.
    pub fn replace_all(
        &mut self,
        snapshot: &Changes,
        users: &[(String, String)],
        generation: u64,
    ) -> Result<(), StoreError> {
        self.replace_all_with_local(snapshot, users, generation, &[], &[])
    }

    /// [`Store::replace_all`], and in the same transaction set the local
    /// settings `set` and remove those named in `remove` (a host leaving
    /// its pool: the new database and its new role at once).
    pub fn replace_all_with_local(
        &mut self,
        snapshot: &Changes,
        users: &[(String, String)],
        generation: u64,
        set: &[(&str, &str)],
        remove: &[&str],
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        for (k, v) in set {
            tx.execute(
                "INSERT INTO local (key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                params![k, v],
            )?;
        }
        for k in remove {
            tx.execute("DELETE FROM local WHERE key = ?1", [k])?;
        }
        for table in TABLES {
            tx.execute(&format!("DELETE FROM {table}"), [])?;
        }
        tx.execute("DELETE FROM user", [])?;
        for (name, hash) in users {
            tx.execute(
                "INSERT INTO user (name, password_hash) VALUES (?1, ?2)",
                params![name, hash],
            )?;
        }
        write_changes(&tx, snapshot)?;
        tx.execute(
            "UPDATE meta SET value = ?1 WHERE key = 'generation'",
            [generation.to_string()],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// A value of this host's own settings.
    pub fn local(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT value FROM local WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    /// Set several of this host's own settings in one transaction.
    pub fn set_local(&mut self, pairs: &[(&str, &str)]) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        for (k, v) in pairs {
            tx.execute(
                "INSERT INTO local (key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                params![k, v],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Remove one of this host's settings, overwriting its bytes in the
    /// file (SQLite's `secure_delete`) and checkpointing the WAL, so that
    /// no copy of the value stays behind (a secret moved out).
    pub fn remove_local(&mut self, key: &str) -> Result<(), StoreError> {
        self.conn.pragma_update(None, "secure_delete", true)?;
        let removed = self.conn.execute("DELETE FROM local WHERE key = ?1", [key]);
        self.conn.pragma_update(None, "secure_delete", false)?;
        removed?;
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .optional()?;
        Ok(())
    }

    /// Every user and password hash.
    pub fn users(&self) -> Result<Vec<(String, String)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT name, password_hash FROM user ORDER BY name")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn set_user(&mut self, name: &str, password_hash: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO user (name, password_hash) VALUES (?1, ?2)
             ON CONFLICT(name) DO UPDATE SET password_hash = excluded.password_hash",
            params![name, password_hash],
        )?;
        Ok(())
    }

    /// SQLite's own consistency check; `ok` when the file is sound.
    pub fn integrity_check(&self) -> Result<String, StoreError> {
        Ok(self.conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?)
    }
}

fn write_changes(tx: &rusqlite::Transaction<'_>, changes: &Changes) -> Result<(), StoreError> {
    let mut result = Ok(());
    changes.for_each_row(|table, reference, uuid, record| {
        if result.is_err() {
            return;
        }
        result = match record {
            Some(value) => tx
                .prepare_cached(&format!(
                    "INSERT INTO {table} (ref, uuid, record) VALUES (?1, ?2, ?3)
                     ON CONFLICT(ref) DO UPDATE SET uuid = excluded.uuid, record = excluded.record"
                ))
                .and_then(|mut s| s.execute(params![reference, uuid, value.to_string()])),
            None => tx
                .prepare_cached(&format!("DELETE FROM {table} WHERE ref = ?1"))
                .and_then(|mut s| s.execute([reference])),
        }
        .map(|_| ());
    });
    result.map_err(StoreError::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use xapi_proto::records::VmRecord;

    #[test]
    fn commit_then_reopen_restores_rows_and_generation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pool.db");
        {
            let mut store = Store::open(&path).unwrap();
            let mut changes = Changes::default();
            let vm = VmRecord {
                uuid: "u1".into(),
                order: 3,
                ..Default::default()
            };
            changes.vm.insert("OpaqueRef:1".into(), Some(vm));
            store.commit(&changes, 1).unwrap();
            store.set_local(&[("host_uuid", "h")]).unwrap();
        }
        let store = Store::open(&path).unwrap();
        let model = store.load().unwrap();
        assert_eq!(model.generation, 1);
        assert_eq!(model.vm.get("OpaqueRef:1").map(|v| v.order), Some(3));
        assert_eq!(store.local("host_uuid").unwrap().as_deref(), Some("h"));
        assert_eq!(store.integrity_check().unwrap(), "ok");
    }

    #[test]
    fn a_removed_setting_leaves_no_copy_in_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pool.db");
        let value = "5ec7e75ec7e75ec7e75ec7e75ec7e7aa";
        let mut store = Store::open(&path).unwrap();
        store.set_local(&[("pool_secret", value), ("role", "master")]).unwrap();
        store.remove_local("pool_secret").unwrap();
        assert_eq!(store.local("pool_secret").unwrap(), None);
        assert_eq!(store.local("role").unwrap().as_deref(), Some("master"));
        for name in ["pool.db", "pool.db-wal"] {
            let bytes = std::fs::read(dir.path().join(name)).unwrap_or_default();
            assert!(
                !bytes.windows(value.len()).any(|w| w == value.as_bytes()),
                "{name} still holds the value"
            );
        }
    }

    #[test]
    fn a_failed_commit_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("pool.db")).unwrap();
        let mut changes = Changes::default();
        changes.vm.insert(
            "OpaqueRef:1".into(),
            Some(VmRecord {
                uuid: "same".into(),
                ..Default::default()
            }),
        );
        changes.vm.insert(
            "OpaqueRef:2".into(),
            Some(VmRecord {
                uuid: "same".into(),
                ..Default::default()
            }),
        );
        assert!(store.commit(&changes, 1).is_err(), "duplicate uuid must fail");
        assert_eq!(store.generation().unwrap(), 0);
        assert!(store.load().unwrap().vm.is_empty());
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pool.db");
        drop(Store::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
        drop(conn);
        assert!(matches!(Store::open(&path), Err(StoreError::TooNew { .. })));
    }
}
