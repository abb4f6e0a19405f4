//! Every interval and timeout of the HA agent, derived from the one HA
//! timeout `T` as XAPI's `Timeouts.derive` does.
//!
//! For `T >= 10 s` the values are XAPI's exactly (t1 = min((T+10)/10, 3),
//! t2 = max(2, T/20), T1 = T2 = Wh = T, Ws = T+15, Tboot = Tenable = T+60).
//! Lab mode accepts `T` from 3 s for tests; below 10 s the intervals shrink
//! with `T` (t1 = t2 = T/6, at least 200 ms), the statefile watchdog allows
//! 8 s of slow I/O instead of 15 (so that a loaded test machine finishes
//! the fault handler within its budget), and the boot/enable limits are T+20 s.

/// Milliseconds on the caller's monotonic clock.
pub type Millis = u64;

/// The smallest HA timeout outside lab mode, in seconds.
pub const MIN_TIMEOUT_S: u64 = 10;
/// The smallest HA timeout in lab mode, in seconds.
pub const MIN_LAB_TIMEOUT_S: u64 = 3;
/// The HA timeout XAPI uses when none is configured, in seconds.
pub const DEFAULT_TIMEOUT_S: u64 = 60;

/// Why a timeout cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeoutError {
    #[error("constraint violation: timeout >= {min}")]
    TooSmall { min: u64 },
    #[error("constraint violation: timeout <= 86400")]
    TooLarge,
}

/// The agent's timing, all in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// The HA timeout `T`.
    pub t: Millis,
    /// Heartbeat interval (t1).
    pub hb_interval: Millis,
    /// Heartbeat timeout (T1): a host silent this long leaves the hbdomain.
    pub hb_timeout: Millis,
    /// Statefile interval (t2).
    pub sf_interval: Millis,
    /// Statefile timeout (T2): a slot unchanged this long leaves the sfdomain.
    pub sf_timeout: Millis,
    /// Heartbeat watchdog (Wh).
    pub hb_watchdog: Millis,
    /// Statefile watchdog (Ws).
    pub sf_watchdog: Millis,
    /// How long a booting host may take to join (Tboot).
    pub boot_join: Millis,
    /// How long hosts may take to form the first liveset at enable (Tenable).
    pub enable_join: Millis,
}

impl Timeouts {
    /// Derive every value from `T` in seconds.
    pub fn derive(t_s: u64, lab_mode: bool) -> Result<Timeouts, TimeoutError> {
        let min = if lab_mode { MIN_LAB_TIMEOUT_S } else { MIN_TIMEOUT_S };
        if t_s < min {
            return Err(TimeoutError::TooSmall { min });
        }
        if t_s > 86_400 {
            return Err(TimeoutError::TooLarge);
        }
        let s = 1000;
        if t_s >= MIN_TIMEOUT_S {
            let t1 = ((t_s + 10) / 10).min(3);
            let t2 = (t_s / 20).max(2);
            return Ok(Timeouts {
                t: t_s * s,
                hb_interval: t1 * s,
                hb_timeout: t_s * s,
                sf_interval: t2 * s,
                sf_timeout: t_s * s,
                hb_watchdog: t_s * s,
                sf_watchdog: (t_s + 15) * s,
                boot_join: (t_s + 60) * s,
                enable_join: (t_s + 60) * s,
            });
        }
        let t = t_s * s;
        let interval = (t / 6).max(200);
        Ok(Timeouts {
            t,
            hb_interval: interval,
            hb_timeout: t,
            sf_interval: interval,
            sf_timeout: t,
            hb_watchdog: t,
            sf_watchdog: t + 8 * s,
            boot_join: t + 20 * s,
            enable_join: t + 20 * s,
        })
    }

    /// How long winners wait after FH3 before dropping losers from the
    /// liveset, so that the losers' watchdogs must have fired:
    /// `max(max(Wh,Ws) - min(T1,T2) + max(t1,t2), 10 s)`, plus `min(T1,T2)`
    /// when the survival test shrank a domain (xhad's `fh_sleep_extend`).
    /// The 10 s floor becomes 2 s in lab mode (`T < 10 s`).
    pub fn fence_wait(&self, extend: bool) -> Millis {
        let base = self.hb_watchdog.max(self.sf_watchdog) - self.hb_timeout.min(self.sf_timeout)
            + self.hb_interval.max(self.sf_interval);
        let floor = if self.t >= MIN_TIMEOUT_S * 1000 { 10_000 } else { 2_000 };
        base.max(floor)
            + if extend {
                self.hb_timeout.min(self.sf_timeout)
            } else {
                0
            }
    }
}

/// The HA timeout to use, in seconds: the configured one, else the default.
pub fn effective_timeout_s(configured: Option<u64>) -> u64 {
    configured.unwrap_or(DEFAULT_TIMEOUT_S)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xapi_table() {
        // (T, t1, t2, Ws, Tboot) from XAPI's Timeouts.derive.
        for (t, t1, t2, ws, boot) in [
            (10, 2, 2, 25, 70),
            (30, 3, 2, 45, 90),
            (60, 3, 3, 75, 120),
            (120, 3, 6, 135, 180),
        ] {
            let d = Timeouts::derive(t, false).unwrap();
            assert_eq!(d.hb_interval, t1 * 1000, "t1 for T={t}");
            assert_eq!(d.sf_interval, t2 * 1000, "t2 for T={t}");
            assert_eq!(
                (d.hb_timeout, d.sf_timeout, d.hb_watchdog),
                (t * 1000, t * 1000, t * 1000)
            );
            assert_eq!(d.sf_watchdog, ws * 1000);
            assert_eq!(d.boot_join, boot * 1000);
        }
    }

    #[test]
    fn fence_wait_is_18_s_at_the_default() {
        let d = Timeouts::derive(60, false).unwrap();
        assert_eq!(d.fence_wait(false), 18_000);
        assert_eq!(d.fence_wait(true), 78_000);
    }

    #[test]
    fn small_timeouts_only_in_the_lab() {
        assert_eq!(Timeouts::derive(9, false), Err(TimeoutError::TooSmall { min: 10 }));
        assert_eq!(
            Timeouts::derive(9, false).unwrap_err().to_string(),
            "constraint violation: timeout >= 10"
        );
        let lab = Timeouts::derive(3, true).unwrap();
        assert_eq!(lab.hb_interval, 500);
        assert!(lab.fence_wait(false) >= 2_000);
        assert!(Timeouts::derive(2, true).is_err());
        assert_eq!(effective_timeout_s(None), 60);
    }
}
