//! Fencing: the engine's two watchdogs (fed, capped at the fault
//! handler's budget while a fault is unresolved, uncapped when it is), the
//! checks that fence a host (a watchdog it outlived, a fault over budget),
//! and the fence, stop and disarm themselves.

use super::{Command, Engine, Exit, FenceCode, FenceReason, Status, Watchdog};
use crate::Millis;

impl Engine {
    pub(super) fn feed(&mut self, now: Millis, w: Watchdog) {
        let (slot, timeout) = match w {
            Watchdog::Heartbeat => (0, self.cfg.timeouts.hb_watchdog),
            Watchdog::Statefile => (1, self.cfg.timeouts.sf_watchdog),
        };
        // With a fault unresolved, the watchdog enforces the budget: a host
        // that freezes before its budget ends is dead when it ends.
        let mut timeout = timeout;
        if let (true, Some(since)) = (self.armed, self.trouble_since) {
            let cap = (since + self.fh_budget() + 500).saturating_sub(now).max(1);
            timeout = timeout.min(cap);
        }
        self.fed[slot] = Some(now + timeout);
        self.fed_at[slot] = Some(now);
        self.out.push(Command::Feed(w, timeout));
    }

    /// The fault is resolved: the watchdogs get back their full timeout
    /// from their last feed.
    pub(super) fn uncap_watchdogs(&mut self, now: Millis) {
        let t = self.cfg.timeouts;
        for (slot, w, full) in [
            (0, Watchdog::Heartbeat, t.hb_watchdog),
            (1, Watchdog::Statefile, t.sf_watchdog),
        ] {
            if let Some(f) = self.fed_at[slot] {
                let d = f + full;
                if d > now && self.fed[slot].is_some_and(|x| x < d) {
                    self.fed[slot] = Some(d);
                    self.out.push(Command::Feed(w, d - now));
                }
            }
        }
    }

    /// A host that was frozen past its watchdog must not act on waking.
    pub(super) fn check_own_watchdogs(&mut self, now: Millis) {
        if !self.armed {
            return;
        }
        let (hb, sf) = self.watchdog_deadlines();
        if hb.is_some_and(|d| now > d) {
            self.fence(
                FenceCode::WatchdogExpired,
                format!(
                    "the heartbeat watchdog expired {} ms ago (was this host frozen?)",
                    now - hb.unwrap_or(now)
                ),
            );
        } else if sf.is_some_and(|d| now > d) {
            self.fence(
                FenceCode::WatchdogExpired,
                format!(
                    "the statefile watchdog expired {} ms ago (was this host frozen?)",
                    now - sf.unwrap_or(now)
                ),
            );
        }
    }

    pub(super) fn check_trouble(&mut self, now: Millis) {
        if !self.armed {
            return;
        }
        if self.fh.is_some() {
            self.extend_for_new_failures(now);
        }
        if let Some(since) = self.trouble_since {
            let budget = self.fh_budget();
            if now.saturating_sub(since) > budget && !self.extend_at_budget_end(now) {
                self.fence(
                    FenceCode::FaultHandlerTimeout,
                    format!(
                        "a fault noticed {} ms ago is not resolved (budget {budget} ms){}",
                        now - since,
                        self.fh_stuck_at()
                    ),
                );
            }
        }
    }

    /// The budget's clock starts (or starts again) at `since`: the
    /// watchdogs, as last fed, are capped at its end at once, in both
    /// directions. A feed under an older cap may expire before the next
    /// feed comes; a full feed from before the fault would let a host that
    /// freezes before its next feed outlive its budget (rule B).
    pub(super) fn start_clock(&mut self, since: Millis, now: Millis) {
        self.trouble_since = Some(since);
        self.recap_watchdogs(now);
    }

    /// The budget's clock runs from `since`, or, with none, the fault is
    /// resolved and the watchdogs get their full timeouts back.
    pub(super) fn set_clock(&mut self, since: Option<Millis>, now: Millis) {
        match since {
            Some(since) => self.start_clock(since, now),
            None => {
                self.trouble_since = None;
                self.uncap_watchdogs(now);
            }
        }
    }

    /// Every watchdog as last fed, capped at the running budget's end.
    pub(super) fn recap_watchdogs(&mut self, now: Millis) {
        let Some(since) = self.trouble_since else { return };
        if !self.armed {
            return;
        }
        let t = self.cfg.timeouts;
        let cap = since + self.fh_budget() + 500;
        for (slot, w, full) in [
            (0, Watchdog::Heartbeat, t.hb_watchdog),
            (1, Watchdog::Statefile, t.sf_watchdog),
        ] {
            if let Some(f) = self.fed_at[slot] {
                let d = (f + full).min(cap);
                // An expired watchdog stays expired.
                if d > now && self.fed[slot] != Some(d) {
                    self.fed[slot] = Some(d);
                    self.out.push(Command::Feed(w, d - now));
                }
            }
        }
    }

    pub(super) fn fence(&mut self, code: FenceCode, message: String) {
        if !self.armed {
            self.log(format!("would fence ({code}: {message}), but fencing is not armed"));
            return;
        }
        let reason = FenceReason { code, message };
        self.log(format!("self-fence: {reason}"));
        self.status = Status::Fenced(reason.clone());
        self.out.push(Command::Fence(reason));
    }

    pub(super) fn stop(&mut self, exit: Exit) {
        self.disarm();
        self.log(format!("stopping: {}", exit.name()));
        self.status = Status::Stopped(exit);
        self.out.push(Command::Exited(exit));
    }

    pub(super) fn disarm(&mut self) {
        if self.armed {
            self.armed = false;
            self.trouble_since = None;
            self.out.push(Command::Disarm);
            self.log("fencing disarmed".into());
        }
    }
}
