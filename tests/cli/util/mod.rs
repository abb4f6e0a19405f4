//! Test harness: a lab pool in a temporary directory, and xe run against
//! it. `lab`: the pool and its cables; `xe`: running xe; `pool`: what
//! tests ask of a running pool; `machine`: what this machine offers.

mod lab;
mod machine;
mod pool;
pub mod wire;
mod xe;

use std::path::PathBuf;
use std::time::Duration;

pub use lab::Lab;
pub use machine::*;
pub use pool::*;
pub use xe::*;

pub const PASSWORD: &str = "lab-secret";

/// The HA timeout of the HA tests, in seconds (lab mode).
pub const HA_T: u64 = 5;

/// Long enough for any failover at [`HA_T`] (detection, fault handler,
/// fence wait, reboot), with room for a loaded machine.
pub const FAILOVER: Duration = Duration::from_secs(12 * HA_T);

/// The built `xe`.
pub fn xe_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_xe"))
}

/// The built `xapid`, beside `xe`.
pub fn xapid_bin() -> PathBuf {
    let p = xe_bin().with_file_name("xapid");
    assert!(
        p.exists(),
        "{} is missing: build the workspace (cargo test --workspace builds it)",
        p.display()
    );
    p
}
