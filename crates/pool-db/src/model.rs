//! The pool database held in memory, and transactions over it.
//!
//! [`Model`] is the committed state: one [`Table`] per class plus the
//! generation, which every commit bumps. Readers take it behind a read lock.
//! A write builds a [`Txn`]: an overlay of changed rows over the model, read
//! through as if applied. Nothing touches the model until the store has made
//! the transaction durable; a rejected write simply drops its `Txn`, so the
//! database stays as it was.

use std::collections::{BTreeMap, HashMap};

use serde::de::DeserializeOwned;
use serde::Serialize;
pub use xapi_proto::records::{
    CertificateRecord, HostRecord, MessageRecord, PbdRecord, PoolRecord, SrRecord, VbdRecord, VdiRecord, VmRecord,
};

/// Why a row (from replication or the store) cannot become a change.
#[derive(Debug, thiserror::Error)]
pub enum RowError {
    #[error("unknown table {0}")]
    UnknownTable(String),
    #[error("{table}: {source}")]
    Record {
        table: &'static str,
        source: serde_json::Error,
    },
}

/// A record type of the pool database.
pub trait Record: Clone + Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The API class name (`VM`).
    const CLASS: &'static str;
    /// The SQL table name (`vm`).
    const TABLE: &'static str;
    fn uuid(&self) -> &str;
    /// The name label, for classes that have one.
    fn name_label(&self) -> Option<&str>;
    fn table(model: &Model) -> &Table<Self>;
    fn table_mut(model: &mut Model) -> &mut Table<Self>;
    fn delta(changes: &Changes) -> &Delta<Self>;
    fn delta_mut(changes: &mut Changes) -> &mut Delta<Self>;
}

/// Changed rows of one class: `Some` is an insert or update, `None` a delete.
pub type Delta<T> = BTreeMap<String, Option<T>>;

/// The rows of one class, by reference, with a uuid index.
#[derive(Debug, Clone)]
pub struct Table<T> {
    rows: HashMap<String, T>,
    by_uuid: HashMap<String, String>,
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Table {
            rows: HashMap::new(),
            by_uuid: HashMap::new(),
        }
    }
}

impl<T: Record> Table<T> {
    pub fn get(&self, reference: &str) -> Option<&T> {
        self.rows.get(reference)
    }

    pub fn ref_of_uuid(&self, uuid: &str) -> Option<&str> {
        self.by_uuid.get(uuid).map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &T)> {
        self.rows.iter()
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn upsert(&mut self, reference: String, record: T) {
        if let Some(old) = self.rows.get(&reference) {
            if old.uuid() != record.uuid() {
                self.by_uuid.remove(old.uuid());
            }
        }
        self.by_uuid.insert(record.uuid().to_string(), reference.clone());
        self.rows.insert(reference, record);
    }

    pub fn remove(&mut self, reference: &str) {
        if let Some(old) = self.rows.remove(reference) {
            self.by_uuid.remove(old.uuid());
        }
    }
}

/// Everything that is per class, generated from the one list below. `$d`
/// is a `$` token, for the macro this one defines.
macro_rules! classes {
    ($d:tt; $($field:ident : $ty:ident => $class:literal, $table:literal, $name:expr;)*) => {
        /// Evaluate `body` with `T` bound to the record type of the API
        /// class named by `class` (a `&str`), or `other` when the pool
        /// database has no such class:
        /// `with_record_type!(class, T => f::<T>(), _ => None)`.
        #[macro_export]
        macro_rules! with_record_type {
            ($d class:expr, $d t:ident => $d body:expr, _ => $d other:expr) => {
                match $d class {
                    $($class => {
                        type $d t = $d crate::model::$ty;
                        $d body
                    })*
                    _ => $d other,
                }
            };
        }

        /// The committed pool database.
        #[derive(Debug, Clone, Default)]
        pub struct Model {
            /// Bumped by every commit; replication and the HA metadata file
            /// use it to tell which copy of the database is newest.
            pub generation: u64,
            $(pub $field: Table<$ty>,)*
        }

        /// The changed rows of a transaction, per class.
        #[derive(Debug, Clone, Default)]
        pub struct Changes {
            $(pub $field: Delta<$ty>,)*
        }

        impl Changes {
            pub fn is_empty(&self) -> bool {
                true $(&& self.$field.is_empty())*
            }

            /// Visit every change as (SQL table, ref, record JSON or None).
            pub fn for_each_row(
                &self,
                mut f: impl FnMut(&'static str, &str, &str, Option<serde_json::Value>),
            ) {
                $(for (r, row) in &self.$field {
                    match row {
                        Some(rec) => f($table, r, rec.uuid(), Some(serde_json::to_value(rec).unwrap_or_default())),
                        None => f($table, r, "", None),
                    }
                })*
            }

            /// Visit every changed row as (API class, ref, the uuid of a
            /// row written, `None` for a row deleted), without serializing
            /// anything.
            pub fn for_each_ref(&self, mut f: impl FnMut(&'static str, &str, Option<&str>)) {
                $(for (r, row) in &self.$field {
                    f($class, r, row.as_ref().map(|rec| rec.uuid()));
                })*
            }

            /// Record a change given as (SQL table, ref, record JSON or None),
            /// as replication and the store's loader deliver it.
            pub fn put_row(
                &mut self,
                table: &str,
                reference: &str,
                record: Option<serde_json::Value>,
            ) -> Result<(), RowError> {
                match table {
                    $($table => {
                        let row = match record {
                            Some(v) => Some(
                                serde_json::from_value::<$ty>(v)
                                    .map_err(|source| RowError::Record { table: $table, source })?,
                            ),
                            None => None,
                        };
                        self.$field.insert(reference.to_string(), row);
                    })*
                    other => return Err(RowError::UnknownTable(other.to_string())),
                }
                Ok(())
            }
        }

        impl Model {
            /// Does the row `reference` of API class `class` exist?
            pub fn has(&self, class: &str, reference: &str) -> bool {
                match class {
                    $($class => self.$field.get(reference).is_some(),)*
                    _ => false,
                }
            }

            /// Apply committed changes.
            pub fn apply(&mut self, changes: Changes) {
                $(for (r, row) in changes.$field {
                    match row {
                        Some(rec) => self.$field.upsert(r, rec),
                        None => self.$field.remove(&r),
                    }
                })*
            }

            /// Every row as a change, for a full copy of the database.
            pub fn snapshot(&self) -> Changes {
                Changes {
                    $($field: self.$field.iter().map(|(r, v)| (r.clone(), Some(v.clone()))).collect(),)*
                }
            }
        }

        /// The SQL tables of the record classes.
        pub const TABLES: &[&str] = &[$($table),*];

        $(impl Record for $ty {
            const CLASS: &'static str = $class;
            const TABLE: &'static str = $table;
            fn uuid(&self) -> &str { &self.uuid }
            fn name_label(&self) -> Option<&str> {
                let f: fn(&$ty) -> Option<&str> = $name;
                f(self)
            }
            fn table(model: &Model) -> &Table<Self> { &model.$field }
            fn table_mut(model: &mut Model) -> &mut Table<Self> { &mut model.$field }
            fn delta(changes: &Changes) -> &Delta<Self> { &changes.$field }
            fn delta_mut(changes: &mut Changes) -> &mut Delta<Self> { &mut changes.$field }
        })*
    };
}

classes! {
    $;
    pool: PoolRecord => "pool", "pool", |r| Some(&r.name_label);
    host: HostRecord => "host", "host", |r| Some(&r.name_label);
    vm: VmRecord => "VM", "vm", |r| Some(&r.name_label);
    sr: SrRecord => "SR", "sr", |r| Some(&r.name_label);
    pbd: PbdRecord => "PBD", "pbd", |_| None;
    vdi: VdiRecord => "VDI", "vdi", |r| Some(&r.name_label);
    vbd: VbdRecord => "VBD", "vbd", |_| None;
    message: MessageRecord => "message", "message", |_| None;
    certificate: CertificateRecord => "Certificate", "certificate", |_| None;
}

impl Model {
    pub fn get<T: Record>(&self, reference: &str) -> Option<&T> {
        T::table(self).get(reference)
    }

    /// The pool record and its reference (there is exactly one once the
    /// database is initialised).
    pub fn pool(&self) -> Option<(&String, &PoolRecord)> {
        self.pool.iter().next()
    }
}

/// A write in progress: changes layered over the committed model.
pub struct Txn<'a> {
    base: &'a Model,
    pub changes: Changes,
}

impl<'a> Txn<'a> {
    pub fn new(base: &'a Model) -> Self {
        Txn {
            base,
            changes: Changes::default(),
        }
    }

    pub fn base(&self) -> &Model {
        self.base
    }

    /// The row as this transaction sees it.
    pub fn get<T: Record>(&self, reference: &str) -> Option<T> {
        match T::delta(&self.changes).get(reference) {
            Some(row) => row.clone(),
            None => T::table(self.base).get(reference).cloned(),
        }
    }

    /// All rows of a class as this transaction sees them, sorted by reference.
    pub fn all<T: Record>(&self) -> Vec<(String, T)> {
        let delta = T::delta(&self.changes);
        let mut rows: BTreeMap<String, T> = T::table(self.base)
            .iter()
            .filter(|(r, _)| !delta.contains_key(*r))
            .map(|(r, v)| (r.clone(), v.clone()))
            .collect();
        for (r, row) in delta {
            if let Some(v) = row {
                rows.insert(r.clone(), v.clone());
            }
        }
        rows.into_iter().collect()
    }

    pub fn put<T: Record>(&mut self, reference: &str, record: T) {
        T::delta_mut(&mut self.changes).insert(reference.to_string(), Some(record));
    }

    pub fn delete<T: Record>(&mut self, reference: &str) {
        T::delta_mut(&mut self.changes).insert(reference.to_string(), None);
    }

    /// Read-modify-write of one row; `false` when the row does not exist.
    pub fn update<T: Record>(&mut self, reference: &str, f: impl FnOnce(&mut T)) -> bool {
        match self.get::<T>(reference) {
            Some(mut rec) => {
                f(&mut rec);
                self.put(reference, rec);
                true
            }
            None => false,
        }
    }

    pub fn into_changes(self) -> Changes {
        self.changes
    }
}

/// A fresh `OpaqueRef:` reference.
pub fn new_ref() -> String {
    format!("OpaqueRef:{}", uuid::Uuid::new_v4())
}

/// A fresh uuid.
pub fn new_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(uuid: &str, name: &str) -> VmRecord {
        VmRecord {
            uuid: uuid.into(),
            name_label: name.into(),
            ..Default::default()
        }
    }

    /// The database's classes are the API's (`xapi_proto::classes`), each
    /// with its fields: the two lists cannot drift apart unnoticed.
    #[test]
    fn the_database_has_exactly_the_api_classes() {
        fn class_of<T: Record>() -> &'static str {
            T::CLASS
        }
        let api = xapi_proto::classes::CLASSES;
        assert_eq!(TABLES.len(), api.len());
        for &c in api {
            assert_eq!(with_record_type!(c, T => class_of::<T>(), _ => "none"), c);
            assert!(xapi_proto::classes::fields(c).is_some(), "{c} has no fields");
        }
        assert_eq!(with_record_type!("Bond", T => class_of::<T>(), _ => "none"), "none");
    }

    #[test]
    fn txn_reads_its_own_writes_and_leaves_model_alone() {
        let mut model = Model::default();
        model.vm.upsert("r1".into(), vm("u1", "a"));
        let mut txn = Txn::new(&model);
        txn.update::<VmRecord>("r1", |v| v.name_label = "b".into());
        txn.put("r2", vm("u2", "c"));
        txn.delete::<VmRecord>("r1");
        assert!(txn.get::<VmRecord>("r1").is_none());
        assert_eq!(txn.all::<VmRecord>().len(), 1);
        assert_eq!(model.get::<VmRecord>("r1").map(|v| v.name_label.as_str()), Some("a"));
        let changes = txn.into_changes();
        model.apply(changes);
        assert!(model.get::<VmRecord>("r1").is_none());
        assert_eq!(model.vm.ref_of_uuid("u2"), Some("r2"));
        assert_eq!(model.vm.ref_of_uuid("u1"), None);
    }

    #[test]
    fn rows_round_trip_through_put_row() {
        let mut changes = Changes::default();
        changes.vm.insert("r".into(), Some(vm("u", "n")));
        let mut copy = Changes::default();
        changes.for_each_row(|t, r, _, v| copy.put_row(t, r, v).unwrap());
        assert_eq!(
            copy.vm.get("r").cloned().flatten().map(|v| v.name_label),
            Some("n".into())
        );
        assert!(copy.put_row("nope", "r", None).is_err());
    }
}
