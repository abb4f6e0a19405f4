//! A hardware watchdog beside the process watchdog: on real servers the
//! host resets itself when `xapid` stops feeding it, whatever state the
//! process or the kernel is in.
//!
//! [`HardwareWatchdog`] is what [`super::watchdog::Watchdog`] drives: armed
//! with HA, kicked at every feed, disarmed with HA. [`DeviceWatchdog`] is
//! the Linux watchdog device (`/dev/watchdog`, `xapid serve
//! --watchdog-device`): opening it starts the countdown, each write resets
//! it, and writing `V` before closing stops it ("magic close"). A fence
//! exits without the magic close, so the device resets the machine when
//! its timeout runs out: on real hardware a fenced host really goes down.
//! The lab keeps its process watchdog alone (a reset would take the whole
//! machine).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// A watchdog that resets the machine unless kicked.
pub trait HardwareWatchdog: Send + Sync {
    /// Start the countdown (HA armed).
    fn arm(&self) -> std::io::Result<()>;
    /// Reset the countdown (every feed of the process watchdog).
    fn kick(&self);
    /// Stop the countdown (HA disarmed, a clean leave).
    fn disarm(&self);
}

/// The Linux watchdog device.
pub struct DeviceWatchdog {
    path: PathBuf,
    open: Mutex<Option<File>>,
}

impl DeviceWatchdog {
    /// The device at `path`; nothing starts until [`HardwareWatchdog::arm`].
    pub fn new(path: &Path) -> std::io::Result<DeviceWatchdog> {
        if !path.exists() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{} does not exist (load the machine's watchdog driver)", path.display()),
            ));
        }
        Ok(DeviceWatchdog {
            path: path.to_path_buf(),
            open: Mutex::new(None),
        })
    }

    /// The device's timeout in seconds, from sysfs, when the kernel says.
    pub fn timeout_s(&self) -> Option<u64> {
        let name = self.path.file_name()?.to_str()?;
        let name = if name == "watchdog" { "watchdog0" } else { name };
        std::fs::read_to_string(format!("/sys/class/watchdog/{name}/timeout"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn file(&self) -> std::sync::MutexGuard<'_, Option<File>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl HardwareWatchdog for DeviceWatchdog {
    fn arm(&self) -> std::io::Result<()> {
        let mut f = self.file();
        if f.is_none() {
            let mut dev = std::fs::OpenOptions::new().write(true).open(&self.path)?;
            dev.write_all(b"\0")?;
            *f = Some(dev);
            tracing::info!(device = %self.path.display(), timeout_s = ?self.timeout_s(), "hardware watchdog armed");
        }
        Ok(())
    }

    fn kick(&self) {
        if let Some(dev) = self.file().as_mut() {
            if let Err(e) = dev.write_all(b"\0") {
                tracing::error!(device = %self.path.display(), "cannot kick the hardware watchdog: {e}");
            }
        }
    }

    fn disarm(&self) {
        if let Some(mut dev) = self.file().take() {
            // The magic close: the driver stops the countdown.
            if let Err(e) = dev.write_all(b"V") {
                tracing::error!(device = %self.path.display(), "cannot disarm the hardware watchdog: {e}");
            }
            tracing::info!(device = %self.path.display(), "hardware watchdog disarmed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file in place of the device: what a driver would receive.
    #[test]
    fn the_device_is_opened_at_arm_kicked_and_closed_with_the_magic_v() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("watchdog");
        assert!(DeviceWatchdog::new(&path).is_err(), "a missing device is refused");
        std::fs::write(&path, b"").unwrap();
        let dog = DeviceWatchdog::new(&path).unwrap();
        dog.kick();
        assert_eq!(std::fs::read(&path).unwrap(), b"", "nothing before it is armed");
        dog.arm().unwrap();
        dog.kick();
        dog.kick();
        dog.disarm();
        dog.kick();
        assert_eq!(std::fs::read(&path).unwrap(), b"\0\0\0V");
        assert_eq!(dog.timeout_s(), None);
    }
}
