//! What the benchmarks share: a running `xapid lab`.

use std::process::Child;

/// The lab process and its directory; the lab is stopped (SIGTERM, then
/// waited for) and the directory removed when this is dropped.
// The directory is held for its removal on drop; not every bench reads it.
pub struct Lab(pub Child, #[allow(dead_code)] pub tempfile::TempDir);

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.0.wait();
    }
}
