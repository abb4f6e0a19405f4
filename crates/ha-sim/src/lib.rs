//! Deterministic simulation of the HA engines.
//!
//! `world` runs N `ha-liveness` engines under one seeded clock with a
//! simulated network (cuts, one-way cuts, partitions, loss, delay), a shared
//! statefile (per-host access loss, slow I/O, corrupt slots), crashes,
//! reboots and freezes. `check` verifies the safety properties after every
//! step. `schedule` draws random fault schedules from a seed, so any failure
//! replays with `cargo run -p ha-sim -- --seed S`.

pub mod check;
pub mod explore;
pub mod schedule;
pub mod world;

pub use check::Violation;
pub use world::World;
