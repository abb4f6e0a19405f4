//! Delta leases (`docs/LEASES.md`, "Host leases"): a host holds its lease
//! by rewriting a counter on the SR; every other host judges it by its own
//! monotonic clock, never by the holder's.

use crate::Millis;

/// Parts per million: the clock-rate error bound ρ.
const PPM: u64 = 1_000_000;

/// The lease timing of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Timing {
    /// How long an observer must see a counter unchanged (its clock).
    pub l: Millis,
    /// How long a holder's guests may run after the issue of its last
    /// valid renewal (its clock).
    pub d: Millis,
    /// A renewal or read that takes longer has failed, even if it lands.
    pub io: Millis,
    /// How often a holder renews.
    pub renew_every: Millis,
    /// The clock-rate error bound ρ, in parts per million.
    pub rho_ppm: u64,
}

impl Timing {
    /// The timing for an HA timeout of `t`: L = T, D = T/2, io = T/4,
    /// renewals every T/10, ρ = 1 %.
    pub fn for_timeout(t: Millis) -> Timing {
        Timing {
            l: t,
            d: t / 2,
            io: t / 4,
            renew_every: (t / 10).max(1),
            rho_ppm: 10_000,
        }
    }

    /// The bound the safety argument needs: `D(1+ρ) + io < L(1−ρ)` in real
    /// time (each side scaled by a million to stay in integers).
    pub fn is_safe(&self) -> bool {
        let Some(rho) = PPM.checked_sub(self.rho_ppm) else {
            return false;
        };
        let guests = u128::from(self.d) * u128::from(PPM + self.rho_ppm) + u128::from(self.io) * u128::from(PPM);
        let observer = u128::from(self.l) * u128::from(rho);
        self.renew_every < self.d && guests < observer
    }

    /// Real guests (`docs/LEASES.md`, "Real guests"): how long after the
    /// issue of its last valid renewal (its clock) a host whose lease was
    /// not renewed kills its guests. Pausing a QEMU process does not stop
    /// the disk writes it already handed to the kernel; killing it does,
    /// once it has exited (a process with a write in flight exits only
    /// when the write ended). Halfway from the pause (D) to the reset.
    pub fn kill_after(&self) -> Millis {
        let reset = self.reset_after();
        self.d + reset.saturating_sub(self.d) / 2
    }

    /// Real guests: how long after the issue of its last valid renewal (its
    /// clock) a host whose killed guests have not all exited resets itself,
    /// dropping their writes. The latest time R with `R(1+ρ) + io ≤
    /// L(1−ρ)` in real time: a write on its way at the reset lands within
    /// `io`, before any observer's L has passed since the renewal.
    pub fn reset_after(&self) -> Millis {
        let rho = self.rho_ppm.min(PPM);
        let observer = u128::from(self.l) * u128::from(PPM - rho);
        let room = observer.saturating_sub(u128::from(self.io) * u128::from(PPM));
        Millis::try_from(room / u128::from(PPM + rho)).unwrap_or(Millis::MAX)
    }

    /// The bounds real guests need besides [`Timing::is_safe`]: the kill
    /// comes after the pause and before the reset, with room to exit.
    pub fn is_safe_for_real_guests(&self) -> bool {
        self.is_safe() && self.d < self.kill_after() && self.kill_after() < self.reset_after()
    }
}

/// A host's view of its own lease.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Holder {
    timing: Timing,
    last_valid_issue: Option<Millis>,
    /// The issue of the renewal that ended the last time the lease was not
    /// held (the first valid renewal ends the time before it).
    lapse_end: Option<Millis>,
}

impl Holder {
    pub fn new(timing: Timing) -> Holder {
        Holder {
            timing,
            last_valid_issue: None,
            lapse_end: None,
        }
    }

    /// A renewal issued at `issue` completed at `done`. It is valid only if
    /// it completed within `io`: one that took longer may have landed after
    /// an observer's window closed. Returns whether it counted.
    pub fn renewed(&mut self, issue: Millis, done: Millis) -> bool {
        let valid = done >= issue && done - issue <= self.timing.io;
        if valid && self.last_valid_issue.is_none_or(|t| issue > t) {
            if self
                .last_valid_issue
                .is_none_or(|t| issue >= t.saturating_add(self.timing.d))
            {
                self.lapse_end = Some(issue);
            }
            self.last_valid_issue = Some(issue);
        }
        valid
    }

    /// Until when (this host's clock) its guests may run, if ever.
    pub fn deadline(&self) -> Option<Millis> {
        self.last_valid_issue.map(|t| t.saturating_add(self.timing.d))
    }

    /// The lease is held at `now`.
    pub fn holds(&self, now: Millis) -> bool {
        self.deadline().is_some_and(|d| now < d)
    }

    /// The lease was held all the time from `from` to `now`. A host whose
    /// lease lapsed meanwhile may have had its VMs taken by then: what it
    /// decided before the lapse no longer lets it start a guest.
    pub fn held_since(&self, from: Millis, now: Millis) -> bool {
        self.holds(now) && self.lapse_end.is_some_and(|e| e <= from)
    }
}

/// One observer's judgement of one peer's lease.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Observer {
    timing: Timing,
    /// The counter last read, and the completion of the first read that
    /// showed it: the holder wrote it no later than that.
    current: Option<(u64, Millis)>,
    expired: bool,
}

impl Observer {
    pub fn new(timing: Timing) -> Observer {
        Observer {
            timing,
            current: None,
            expired: false,
        }
    }

    /// A read issued at `issue` and completed at `done` showed `counter`.
    /// Expiry needs a read *issued* at least L after the counter was first
    /// seen: a read completing late may have sampled the file early.
    pub fn read(&mut self, issue: Millis, done: Millis, counter: u64) {
        match self.current {
            Some((c, first_seen)) if c == counter => {
                if issue >= first_seen.saturating_add(self.timing.l) {
                    self.expired = true;
                }
            }
            _ => {
                self.current = Some((counter, done));
                self.expired = false;
            }
        }
    }

    /// The counter this observer last read, if any.
    pub fn counter(&self) -> Option<u64> {
        self.current.map(|(c, _)| c)
    }

    /// The peer's lease has expired in this observer's eyes.
    pub fn expired(&self) -> bool {
        self.expired
    }

    /// How long (to `now`, this observer's clock) the counter last read
    /// has been seen unchanged, if any was read.
    pub fn unchanged_for(&self, now: Millis) -> Option<Millis> {
        self.current.map(|(_, first_seen)| now.saturating_sub(first_seen))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_timing_is_safe_and_a_wrong_one_is_not() {
        for t in [3_000, 10_000, 60_000, 86_400_000] {
            assert!(Timing::for_timeout(t).is_safe(), "T = {t}");
        }
        // An observer waiting no longer than the holder's own deadline.
        let t = Timing::for_timeout(10_000);
        assert!(!Timing { l: t.d, ..t }.is_safe());
        // Or a clock-rate error the margin does not cover.
        assert!(!Timing { rho_ppm: 200_000, ..t }.is_safe());
    }

    #[test]
    fn real_guests_are_killed_after_the_pause_and_reset_in_time() {
        for t in [3_000, 10_000, 60_000, 86_400_000] {
            let timing = Timing::for_timeout(t);
            assert!(timing.is_safe_for_real_guests(), "T = {t}");
            // The reset bound, in real time: R(1+ρ) + io <= L(1−ρ).
            let r = u128::from(timing.reset_after());
            let real = r * u128::from(PPM + timing.rho_ppm) + u128::from(timing.io) * u128::from(PPM);
            assert!(
                real <= u128::from(timing.l) * u128::from(PPM - timing.rho_ppm),
                "T = {t}"
            );
            // And the latest such: one more millisecond breaks it.
            let over = (r + 1) * u128::from(PPM + timing.rho_ppm) + u128::from(timing.io) * u128::from(PPM);
            assert!(
                over > u128::from(timing.l) * u128::from(PPM - timing.rho_ppm),
                "T = {t}"
            );
        }
        // At T = 10 s: paused at 5 s, killed at 6.16 s, reset at 7.33 s.
        let t = Timing::for_timeout(10_000);
        assert_eq!((t.d, t.kill_after(), t.reset_after()), (5_000, 6_163, 7_326));
        // An I/O bound so long that the reset would come before the pause.
        assert!(!Timing { io: 5_000, ..t }.is_safe_for_real_guests());
    }

    #[test]
    fn a_holder_counts_only_renewals_that_completed_in_time() {
        let t = Timing::for_timeout(10_000);
        let mut h = Holder::new(t);
        assert!(!h.holds(0));
        assert!(h.renewed(1_000, 1_100));
        assert_eq!(h.deadline(), Some(6_000));
        // Landed, but too late to count.
        assert!(!h.renewed(2_000, 2_000 + t.io + 1));
        assert_eq!(h.deadline(), Some(6_000));
        assert!(h.holds(5_999) && !h.holds(6_000));
        // An older renewal completing now does not move the deadline back.
        assert!(h.renewed(3_000, 3_100));
        assert!(h.renewed(2_500, 3_200));
        assert_eq!(h.deadline(), Some(8_000));
    }

    #[test]
    fn a_lapse_between_two_renewals_is_remembered() {
        let t = Timing::for_timeout(10_000);
        let mut h = Holder::new(t);
        assert!(!h.held_since(0, 0));
        assert!(h.renewed(1_000, 1_010));
        assert!(h.held_since(1_000, 2_000));
        assert!(!h.held_since(999, 2_000), "not held before the first renewal");
        // Renewed within D: no lapse.
        assert!(h.renewed(5_000, 5_010));
        assert!(h.held_since(1_000, 9_000));
        // Next renewal only after the deadline (10,000): a lapse until 10,500.
        assert!(h.renewed(10_500, 10_510));
        assert!(!h.held_since(1_000, 11_000));
        assert!(!h.held_since(10_499, 11_000));
        assert!(h.held_since(10_500, 11_000));
    }

    #[test]
    fn an_observer_waits_l_from_the_first_read_by_the_issue_of_the_last() {
        let t = Timing::for_timeout(10_000);
        let mut o = Observer::new(t);
        o.read(0, 100, 7);
        // Issued before first_seen + L: not enough, however late it ends.
        o.read(10_000, 20_000, 7);
        assert!(!o.expired());
        o.read(10_100, 10_200, 7);
        assert!(o.expired());
        // The counter moves: alive again, the clock restarts.
        o.read(10_300, 10_400, 8);
        assert!(!o.expired());
        o.read(20_300, 20_350, 8);
        assert!(!o.expired());
        o.read(20_400, 20_450, 8);
        assert!(o.expired());
    }
}
