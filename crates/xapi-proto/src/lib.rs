//! The API boundary of pool-ha: everything that crosses the wire.
//!
//! - [`jsonrpc`]: the JSON-RPC envelope (versions 1.0 and 2.0) as XAPI speaks it.
//! - [`xmlrpc`]: XAPI's XML-RPC wire (`POST /`), onto the same methods.
//! - [`error`]: API errors, their codes, parameter names and doc text.
//! - [`records`]: the typed records of the pool database.
//! - [`classes`]: which fields each class has, their types, which are settable.
//!
//! This is the only crate that derives `serde` traits: a change here is a
//! change of the wire format, seen by every client and every member host.

pub mod classes;
pub mod error;
pub mod jsonrpc;
pub mod records;
pub mod xmlrpc;

pub use error::{codes, ApiError};
