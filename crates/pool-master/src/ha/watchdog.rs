//! The watchdog: an OS thread, apart from the async runtime, that fences
//! this host when the HA loops stop feeding it.
//!
//! The engine feeds two timers (heartbeat, statefile) through the agent.
//! While armed, the thread checks them every [`CHECK`]; when one has
//! expired, or when the engine orders a fence, [`Watchdog`] calls the fence
//! action once. In `xapid` that action records the reason and ends the
//! process, which kills every sim guest with it. The guests also ask
//! [`Watchdog::may_write`] before each disk write, so a process that
//! freezes past its deadline and wakes up writes nothing more: on real
//! hardware the watchdog would have reset the machine by then.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use ha_liveness::Watchdog as Timer;

use super::device::HardwareWatchdog;

/// How often the thread looks at the timers.
pub const CHECK: Duration = Duration::from_millis(10);

/// What to do on a fence: record the reason and stop the host. Called at
/// most once, on the watchdog thread or the agent's.
pub type FenceAction = Box<dyn Fn(&str) + Send + Sync>;

#[derive(Debug, Default)]
struct State {
    armed: bool,
    /// Expiry of the heartbeat and statefile timers.
    deadlines: [Option<Instant>; 2],
    fired: bool,
}

/// The watchdog of one host.
pub struct Watchdog {
    state: Mutex<State>,
    action: FenceAction,
    /// The machine's watchdog, when asked for: armed, kicked and disarmed
    /// with this one, and no longer kicked once it fired.
    hardware: Mutex<Option<Box<dyn HardwareWatchdog>>>,
}

impl Watchdog {
    /// A disarmed watchdog with its checking thread. The thread ends when
    /// the watchdog is dropped.
    pub fn start(action: FenceAction) -> std::io::Result<Arc<Watchdog>> {
        let w = Arc::new(Watchdog {
            state: Mutex::new(State::default()),
            action,
            hardware: Mutex::new(None),
        });
        let weak = Arc::downgrade(&w);
        std::thread::Builder::new()
            .name("ha-watchdog".into())
            .spawn(move || watch(weak))?;
        Ok(w)
    }

    /// Drive `dog` (a hardware watchdog) with this one from now on.
    pub fn set_hardware(&self, dog: Box<dyn HardwareWatchdog>) {
        *self.hardware.lock().unwrap_or_else(|p| p.into_inner()) = Some(dog);
    }

    fn hardware(&self, f: impl FnOnce(&dyn HardwareWatchdog)) {
        if let Some(dog) = self.hardware.lock().unwrap_or_else(|p| p.into_inner()).as_deref() {
            f(dog);
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Push `timer`'s expiry to `ms` from now. A feed that comes after an
    /// armed timer expired is too late: the host fences, as it would have
    /// at the next check (the fence guard may already have killed the
    /// guests at that deadline).
    pub fn feed(&self, timer: Timer, ms: u64) {
        if self.check() {
            return;
        }
        let now = Instant::now();
        let at = now.checked_add(Duration::from_millis(ms)).unwrap_or(now);
        let k = match timer {
            Timer::Heartbeat => 0,
            Timer::Statefile => 1,
        };
        let mut s = self.state();
        s.deadlines[k] = Some(at);
        tell_guard(&s);
        if s.armed && !s.fired {
            self.hardware(|d| d.kick());
        }
    }

    pub fn arm(&self) {
        let mut s = self.state();
        s.armed = true;
        tell_guard(&s);
        // Under the state lock: an arm and a disarm reach the device in the
        // order they happened.
        self.hardware(|d| {
            if let Err(e) = d.arm() {
                tracing::error!("cannot arm the hardware watchdog: {e}");
            }
        });
    }

    /// Stop enforcing the timers (HA disabled, a clean leave).
    pub fn disarm(&self) {
        let mut s = self.state();
        s.armed = false;
        s.deadlines = [None, None];
        tell_guard(&s);
        self.hardware(|d| d.disarm());
    }

    pub fn armed(&self) -> bool {
        self.state().armed
    }

    /// May this host still write to shared disks? No once fenced, or once
    /// an armed timer has expired even if the thread has not run yet.
    pub fn may_write(&self) -> bool {
        let s = self.state();
        !(s.fired || s.armed && expired(&s, Instant::now()).is_some())
    }

    /// Fence now, for `reason`.
    pub fn fence(&self, reason: &str) {
        let first = {
            let mut s = self.state();
            !std::mem::replace(&mut s.fired, true)
        };
        if first {
            (self.action)(reason);
        }
    }

    /// Fence if armed and a timer has expired; true when it fenced.
    fn check(&self) -> bool {
        let reason = {
            let s = self.state();
            if !s.armed || s.fired {
                return false;
            }
            expired(&s, Instant::now())
        };
        match reason {
            Some(which) => {
                self.fence(&format!(
                    "WATCHDOG_EXPIRED: the {which} watchdog was not fed in time (the {which} loop stalled)"
                ));
                true
            }
            None => false,
        }
    }
}

/// The fence guard holds the same deadline, for the guests that are
/// processes of their own (crate::driver::qemu::guard): the earliest armed timer.
fn tell_guard(s: &State) {
    // Once fired, the guard keeps the deadline it has: the fence kills the
    // guests itself, and if it cannot finish, the guard still will.
    if s.fired {
        return;
    }
    let deadline = if s.armed {
        s.deadlines.iter().flatten().min().copied()
    } else {
        None
    };
    crate::driver::qemu::guard::set_deadline(deadline);
}

fn expired(s: &State, now: Instant) -> Option<&'static str> {
    let names = ["heartbeat", "statefile"];
    s.deadlines
        .iter()
        .zip(names)
        .find(|(d, _)| d.is_some_and(|d| now > d))
        .map(|(_, n)| n)
}

fn watch(w: Weak<Watchdog>) {
    loop {
        std::thread::sleep(CHECK);
        let Some(w) = w.upgrade() else { return };
        if w.check() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn counting() -> (Arc<Watchdog>, Arc<AtomicUsize>, Arc<Mutex<String>>) {
        let n = Arc::new(AtomicUsize::new(0));
        let why = Arc::new(Mutex::new(String::new()));
        let (n2, why2) = (n.clone(), why.clone());
        let w = Watchdog::start(Box::new(move |r| {
            n2.fetch_add(1, Ordering::SeqCst);
            *why2.lock().unwrap() = r.to_string();
        }))
        .unwrap();
        (w, n, why)
    }

    #[test]
    fn an_unfed_armed_watchdog_fences_once_and_blocks_writes() {
        let (w, n, why) = counting();
        w.feed(Timer::Heartbeat, 30);
        w.feed(Timer::Statefile, 10_000);
        w.arm();
        assert!(w.may_write());
        std::thread::sleep(Duration::from_millis(150));
        assert_eq!(n.load(Ordering::SeqCst), 1);
        assert!(why.lock().unwrap().contains("heartbeat watchdog"));
        assert!(!w.may_write());
        w.fence("again");
        assert_eq!(n.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn the_hardware_watchdog_is_kicked_while_armed_and_left_running_by_a_fence() {
        use crate::ha::device::DeviceWatchdog;
        let dir = tempfile::tempdir().unwrap();
        let (path, fenced) = (dir.path().join("dev1"), dir.path().join("dev2"));
        std::fs::write(&path, b"").unwrap();
        std::fs::write(&fenced, b"").unwrap();
        // Fed, then disarmed: kicks, then the magic close.
        let (w, _, _) = counting();
        w.set_hardware(Box::new(DeviceWatchdog::new(&path).unwrap()));
        w.feed(Timer::Heartbeat, 10_000);
        w.arm();
        w.feed(Timer::Statefile, 10_000);
        w.disarm();
        w.feed(Timer::Statefile, 10_000);
        assert_eq!(std::fs::read(&path).unwrap(), b"\0\0V");
        // Fenced: no magic close, no more kicks (the device resets the host).
        let (w, n, _) = counting();
        w.set_hardware(Box::new(DeviceWatchdog::new(&fenced).unwrap()));
        w.feed(Timer::Heartbeat, 20);
        w.arm();
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(n.load(Ordering::SeqCst), 1);
        w.feed(Timer::Heartbeat, 10_000);
        assert_eq!(std::fs::read(&fenced).unwrap(), b"\0");
    }

    #[test]
    fn a_feed_after_the_deadline_fences() {
        let (w, n, why) = counting();
        w.feed(Timer::Heartbeat, 20);
        w.feed(Timer::Statefile, 10_000);
        w.arm();
        // The check thread may fence first (every 10 ms); either way the
        // late feed does not save the host.
        std::thread::sleep(Duration::from_millis(25));
        w.feed(Timer::Heartbeat, 10_000);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(n.load(Ordering::SeqCst), 1);
        assert!(why.lock().unwrap().contains("heartbeat watchdog"));
    }

    #[test]
    fn a_disarmed_or_fed_watchdog_does_nothing() {
        let (w, n, _) = counting();
        w.feed(Timer::Heartbeat, 20);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(n.load(Ordering::SeqCst), 0, "not armed");
        // Armed with fresh timers (an expired one would fence at the next
        // feed or check).
        w.feed(Timer::Heartbeat, 60);
        w.feed(Timer::Statefile, 60);
        w.arm();
        for _ in 0..10 {
            w.feed(Timer::Heartbeat, 60);
            w.feed(Timer::Statefile, 60);
            std::thread::sleep(Duration::from_millis(10));
        }
        w.disarm();
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(n.load(Ordering::SeqCst), 0);
        assert!(w.may_write());
    }
}
