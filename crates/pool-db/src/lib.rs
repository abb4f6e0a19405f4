//! The pool database, the bottom layer of `xapid`: it knows records and
//! bytes, nothing of hosts, HA or the API.
//!
//! - [`model`]: the pool database in memory and transactions over it.
//! - [`store`]: the database on disk (SQLite, WAL, `synchronous=FULL`).
//! - [`journal`]: this host's bounded audit and alert-delivery tables in
//!   the same file.
//! - [`replication`]: how committed changes travel from the master to the
//!   members (`pool.sync_database`).
//!
//! Nothing here imports `pool-master`; Cargo keeps it that way.

pub mod journal;
pub mod model;
pub mod replication;
pub mod store;
