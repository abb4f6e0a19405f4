//! Pool operations: what the API and HA both do to the pool (start, stop
//! and move VMs, record a host that (re)started, find a record by uuid).
//!
//! The layer between the daemon's state (`daemon`, `hostops`, `driver`)
//! and its two callers: the API (`api`) checks a call's arguments and
//! calls down here; HA (`ha`), the members' sync (`member`) and guest
//! halts (`guests`) call here too. Nothing here imports `api` or `ha`
//! (`tests/layers.rs` checks it).

pub mod host;
pub mod vm;

use xapi_proto::ApiError;

/// The reference of the `T` whose uuid is `uuid` in the committed model, or
/// `UUID_INVALID [class, uuid]`.
pub fn ref_by_uuid<T: pool_db::model::Record>(txn: &pool_db::model::Txn, uuid: &str) -> Result<String, ApiError> {
    T::table(txn.base())
        .ref_of_uuid(uuid)
        .map(str::to_string)
        .ok_or_else(|| ApiError::uuid_invalid(T::CLASS, uuid))
}

/// XAPI's wire datetime of now, `20240420T12:00:00Z`.
pub fn now_wire() -> String {
    crate::clock::wire(crate::clock::unix_ms())
}
