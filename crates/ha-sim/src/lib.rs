//! Deterministic simulation of the HA engines.
//!
//! `world` runs N `ha-liveness` engines under one seeded clock with a
//! simulated network (cuts, one-way cuts, partitions, loss, delay), a shared
//! statefile (per-host access loss, slow I/O, corrupt slots), crashes,
//! reboots and freezes. `check` verifies the safety properties after every
//! step. `schedule` draws random fault schedules from a seed, so any failure
//! replays with `cargo run -p ha-sim -- --seed S`. With `--avail`, `truth`
//! records what the world really was, `oracle` judges every fence against
//! the survival rules applied to it, and `avail` counts the verdicts;
//! `single` runs one fault per seed. `leases` is the lease world of issue
//! 25: VM leases on the SR under the same kinds of faults, with a checker
//! on the guests.

pub mod avail;
pub mod check;
pub mod explore;
pub mod leases;
pub mod oracle;
pub mod schedule;
pub mod single;
pub mod truth;
pub mod world;

pub use check::Violation;
pub use world::World;
