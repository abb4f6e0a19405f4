//! The HA liveness engine, sans I/O: heartbeats and statefile views in,
//! liveset and fencing decisions out.
//!
//! No sockets, no clock, no async runtime: the caller passes the time with
//! every event, which lets one seeded simulator drive many engines through
//! thousands of fault schedules. The engine arrives with the HA runtime work;
//! this crate holds the timeouts it derives from the HA timeout `T`.

/// The smallest HA timeout outside lab mode, in seconds.
pub const MIN_TIMEOUT_S: u64 = 10;

/// The HA timeout `T` XAPI uses when none is configured, in seconds.
pub const DEFAULT_TIMEOUT_S: u64 = 60;

/// The HA timeout to use: the configured one, else the default; below the
/// minimum only in lab mode.
pub fn effective_timeout_s(configured: Option<u64>, lab_mode: bool) -> u64 {
    let t = configured.unwrap_or(DEFAULT_TIMEOUT_S);
    if lab_mode {
        t.max(1)
    } else {
        t.max(MIN_TIMEOUT_S)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_defaults_and_floors() {
        assert_eq!(effective_timeout_s(None, false), 60);
        assert_eq!(effective_timeout_s(Some(3), false), 10);
        assert_eq!(effective_timeout_s(Some(3), true), 3);
    }
}
