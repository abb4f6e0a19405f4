//! `xapid`, the pool-ha host daemon, as a library.
//!
//! # Layout
//! - [`daemon`]: one host's state and the serialized, durable write path.
//! - the pool database in memory, on disk and on the wire is crate
//!   `pool-db` (the layer below everything here).
//! - [`api`]: the XAPI methods, by class.
//! - [`server`]: `POST /jsonrpc` and a host's start-up; [`listener`]: the
//!   API's connections (caps per source and in all, header and idle timeouts).
//! - [`member`]: the master's database on every member.
//! - [`peers`], [`hostops`]: calls between hosts; the master acting on a host's VMs.
//! - [`driver`]: the `sim` VM driver (guests that write to their disks);
//!   [`guests`]: guests that halt from inside; [`storage_probe`]: which
//!   SRs each host reaches, recorded in its PBDs.
//! - [`lease`]: VM leases on the heartbeat SR, and the driver that takes
//!   one before every start.
//! - [`ha`]: the HA agent, watchdog, statefile and election; [`io`]: the
//!   gate all network and shared-storage I/O passes, where the lab's
//!   fault switches act (crate `pool-lab` pulls them; `serve --lab` only).
//! - [`events`]: the database's changes as XAPI events (`event.from`);
//!   [`tasks`]: what `Async.` calls are doing.
//! - [`memory`]: what VMs cost hosts; [`overcommit`]: calls that would lose
//!   the failover plan are refused.
//! - [`tls`]: this host's certificate (made on first start).
//! - [`secret`]: the pool secret's file (`DATA_DIR/pool-secret`).
//! - [`auth`], [`sessions`]: passwords and sessions; [`throttle`]: the
//!   throttle on password guessing; [`logging`]: log
//!   output of xapid and xapid-lab.
//! - [`alerts`]: pool messages delivered by mail and webhook (on the
//!   master); [`journal`]: this host's audit log and delivery record;
//!   [`secrets`]: sealed secret settings, and secrets masked in the audit.

pub mod alerts;
pub mod api;
pub mod auth;
pub mod clock;
pub mod config_file;
pub mod daemon;
pub mod driver;
pub mod events;
pub mod failover;
pub mod files;
pub mod guests;
pub mod ha;
pub mod hostops;
pub mod io;
pub mod journal;
pub mod lease;
pub mod listener;
pub mod logging;
pub mod member;
pub mod memory;
pub mod metrics;
pub mod ops;
pub mod overcommit;
pub mod peers;
pub mod planning;
pub mod reserve;
pub mod scrape;
pub mod secret;
pub mod secrets;
pub mod server;
pub mod sessions;
pub mod storage_probe;
pub mod tasks;
pub mod throttle;
pub mod tls;
