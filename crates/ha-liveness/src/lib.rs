//! The HA liveness engine, sans I/O: heartbeats and statefile reads in,
//! liveset and fencing decisions out.
//!
//! No sockets, no clock, no async runtime: the caller passes the time with
//! every event, so one seeded simulator (`ha-sim`) drives many engines
//! through thousands of fault schedules, and `xapid`'s agent drives one with
//! real UDP, files and a watchdog thread.
//!
//! - `timeouts`: every interval derived from the HA timeout `T`.
//! - `hostset`: 64-bit host maps.
//! - `message`: heartbeats, statefile slots and the global block.
//! - `codec`: their bytes (HMAC-authenticated packets, checksummed slots).
//! - `rules`: the survival rules, pure.
//! - `lock`: the master lock's confirmation rule, pure.
//! - `engine`: the state machine of one host.

pub mod codec;
pub mod engine;
pub mod hostset;
pub mod lock;
pub mod message;
pub mod rules;
pub mod timeouts;

pub use engine::{Command, Config, Engine, Event, Exit, FenceCode, FenceReason, Status, Watchdog};
pub use hostset::{HostSet, MAX_HOSTS};
pub use message::{Global, Heartbeat, Phase, PoolState, Slot, SlotRead, StatefileRead, TieBreak, View};
pub use timeouts::{effective_timeout_s, Millis, Timeouts, DEFAULT_TIMEOUT_S, MIN_TIMEOUT_S};
