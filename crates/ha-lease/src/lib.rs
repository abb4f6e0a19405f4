//! Host and VM leases on the shared SR, sans I/O (design: `docs/LEASES.md`).
//!
//! - [`host`]: delta leases. A holder's own deadline from its valid
//!   renewals, and an observer's judgement of a peer's lease from the reads
//!   it issued, on its own clock.
//! - [`paxos`]: Disk Paxos for one VM lease instance, over one block per
//!   host: each host writes only its own block and reads everyone's.
//! - [`vm`]: who owns a VM, when another host may take it, when a paused
//!   guest may run again.
//!
//! Nothing here reads a file or a clock: callers feed times and read
//! results in and carry the commands out, so ha-sim, the explorer in
//! `tests/` and `xapid` run the same code. `ha-sim`'s lease world
//! (`ha_sim::leases`) drives it; not wired into `xapid` yet.

pub mod host;
pub mod paxos;
pub mod vm;

/// Milliseconds on one host's monotonic clock.
pub type Millis = u64;
