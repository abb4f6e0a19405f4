//! The fence guard: a small process beside `xapid` that kills the host's
//! QEMU guests when `xapid` can no longer do it itself.
//!
//! A real guest is a process of its own: it would keep writing its disks
//! while its `xapid` is frozen (SIGSTOP, a stalled kernel thread) past the
//! moment the other hosts may restart its VMs. `xapid` therefore starts
//! `xapid guard` (with the qemu driver) and tells it, through a pipe, the
//! watchdog's deadline and the pids of its guests, every time either
//! changes. The guard holds the deadline with its own clock, as wdmd holds
//! sanlock's for libvirt:
//!
//! - the deadline passes without a new one (xapid is frozen): the guard
//!   kills every guest (SIGKILL) and waits until none runs. When xapid
//!   wakes, its own watchdog has expired and it fences.
//! - the pipe closes while armed (xapid died without fencing): the guard
//!   kills the guests at once, then exits.
//! - the pipe closes while disarmed (HA off, a clean stop): the guard exits
//!   and leaves the guests alone.
//!
//! It holds the host lease's deadlines too (`crate::lease`, docs/LEASES.md,
//! "Real guests"), measured from the issue of the last renewal that
//! counted, and escalates as wdmd does for sanlock:
//!
//! - the pause (D): it stops every guest (SIGSTOP), once per deadline. It
//!   never lets them run again: that is `xapid`'s call, after the resume
//!   check.
//! - the kill (`Timing::kill_after`): the lease is still not renewed; it
//!   kills every guest (SIGKILL). A stopped process does not stop the disk
//!   writes it already handed to the kernel; a process that has exited
//!   has none left (one with a write in flight exits only once the write
//!   ended).
//! - the reset (`Timing::reset_after`): a killed guest still has not
//!   exited (its write hangs on a lost SR): the guard resets the machine
//!   (`--reset-machine`, real servers: sysrq `b`), before any other host
//!   may take the lease. In the lab, where a reset would take the whole
//!   machine, it kills its `xapid` instead and says so.
//!
//! One line per update: `DEADLINE_MS PIDS PAUSE_MS KILL_MS RESET_MS`, where
//! `DEADLINE_MS` is the time left to the watchdog's deadline in ms or `-`
//! when disarmed, `PIDS` the guests' pids separated by commas, or `-`, and
//! the last three the time left to the host lease's pause, kill and reset,
//! or `-` (leases off; a line without them says the same).

use std::io::{BufRead, Write};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The furthest deadline the guard accepts, in ms from now.
const MAX_DEADLINE_MS: u64 = 3_600_000;

/// The host lease's deadlines, for real guests: pause, kill, reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseDeadlines {
    pub pause: Instant,
    pub kill: Instant,
    pub reset: Instant,
}

/// What the guard is told: the watchdog's deadline, the guests' pids and
/// the host lease's deadlines.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Orders {
    deadline: Option<Instant>,
    pids: Vec<i32>,
    lease: Option<LeaseDeadlines>,
}

fn millis_left(at: Option<Instant>, now: Instant) -> String {
    match at {
        Some(d) => d.saturating_duration_since(now).as_millis().to_string(),
        None => "-".into(),
    }
}

/// `-` or ms from `now`, at most [`MAX_DEADLINE_MS`].
fn parse_left(word: &str, now: Instant) -> Option<Option<Instant>> {
    match word {
        "-" => Some(None),
        ms => Some(Some(
            now + Duration::from_millis(ms.parse().ok().filter(|ms| *ms <= MAX_DEADLINE_MS)?),
        )),
    }
}

impl Orders {
    fn line(&self, now: Instant) -> String {
        let left = millis_left(self.deadline, now);
        let pids = if self.pids.is_empty() {
            "-".to_string()
        } else {
            self.pids.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
        };
        let lease = match self.lease {
            Some(l) => [l.pause, l.kill, l.reset].map(|t| millis_left(Some(t), now)).join(" "),
            None => "- - -".to_string(),
        };
        format!("{left} {pids} {lease}\n")
    }

    /// Read one line as the guard, at `now`: `None` for a line that is not
    /// well formed (the guard keeps its last orders).
    fn parse(line: &str, now: Instant) -> Option<Orders> {
        let mut parts = line.split_whitespace();
        // HA's deadlines are seconds to minutes away: one past an hour is
        // not an order.
        let deadline = parse_left(parts.next()?, now)?;
        let pids = match parts.next()? {
            "-" => Vec::new(),
            list => list
                .split(',')
                .map(|p| p.parse::<i32>().ok().filter(|p| *p > 1))
                .collect::<Option<Vec<_>>>()?,
        };
        let lease = match parts.next() {
            None => None,
            Some(pause) => {
                let pause = parse_left(pause, now)?;
                let kill = parse_left(parts.next()?, now)?;
                let reset = parse_left(parts.next()?, now)?;
                match (pause, kill, reset) {
                    (None, None, None) => None,
                    (Some(pause), Some(kill), Some(reset)) if pause <= kill && kill <= reset => {
                        Some(LeaseDeadlines { pause, kill, reset })
                    }
                    _ => return None,
                }
            }
        };
        parts.next().is_none().then_some(Orders { deadline, pids, lease })
    }
}

/// What the guard does at a deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Act {
    /// The watchdog's deadline passed: kill every guest and wait.
    Watchdog(Vec<i32>),
    /// The lease's pause: stop every guest.
    Pause(Vec<i32>),
    /// The lease's kill: kill every guest.
    Kill(Vec<i32>),
    /// The lease's reset: these killed guests have not exited.
    Reset(Vec<i32>),
}

/// Deadlines closer than this are one: each order line says "so many ms
/// from now", so the same deadline read from two lines differs by the
/// lines' delivery (a new renewal moves it by T/10, at least 300 ms).
const SAME: Duration = Duration::from_millis(100);

/// `at` is the deadline `done` already acted on.
fn acted(done: Option<Instant>, at: Instant) -> bool {
    done.is_some_and(|d| d.max(at) - d.min(at) < SAME)
}

/// The guard's rules, apart from its pipe, clock and signals.
#[derive(Debug, Default)]
struct Guard {
    orders: Orders,
    /// The lease deadlines already acted on (each acts once).
    paused_for: Option<Instant>,
    killed_for: Option<Instant>,
    reset_for: Option<Instant>,
    /// The guests killed at the lease's kill.
    killed: Vec<i32>,
}

impl Guard {
    fn order(&mut self, orders: Orders) {
        self.orders = orders;
    }

    /// When the next deadline is due, if any.
    fn wake(&self) -> Option<Instant> {
        let lease = self.orders.lease;
        let pending = [
            lease.map(|l| l.pause).filter(|t| !acted(self.paused_for, *t)),
            lease.map(|l| l.kill).filter(|t| !acted(self.killed_for, *t)),
            lease.map(|l| l.reset).filter(|t| !acted(self.reset_for, *t)),
            self.orders.deadline,
        ];
        pending.into_iter().flatten().min()
    }

    /// What is due at `now`; `runs` says whether a pid still runs.
    fn tick(&mut self, now: Instant, runs: impl Fn(i32) -> bool) -> Option<Act> {
        if self.orders.deadline.is_some_and(|d| d <= now) {
            let pids = std::mem::take(&mut self.orders).pids;
            return Some(Act::Watchdog(pids));
        }
        let lease = self.orders.lease?;
        if lease.pause <= now && !acted(self.paused_for, lease.pause) {
            self.paused_for = Some(lease.pause);
            return Some(Act::Pause(self.orders.pids.clone()));
        }
        if lease.kill <= now && !acted(self.killed_for, lease.kill) {
            self.killed_for = Some(lease.kill);
            self.killed = self.orders.pids.clone();
            return Some(Act::Kill(self.killed.clone()));
        }
        if lease.reset <= now && !acted(self.reset_for, lease.reset) {
            self.reset_for = Some(lease.reset);
            let alive: Vec<i32> = self.killed.iter().copied().filter(|&p| runs(p)).collect();
            if !alive.is_empty() {
                return Some(Act::Reset(alive));
            }
        }
        None
    }
}

/// The xapid side: the orders to send, and whether they changed.
struct Client {
    orders: Mutex<(Orders, bool)>,
    changed: Condvar,
}

static CLIENT: OnceLock<Client> = OnceLock::new();

/// Start `xapid guard` (the program `exe`) beside this process, and a
/// thread that keeps it told. Its stderr is this process's.
/// `reset_machine`: its reset resets the machine (a real server).
pub fn spawn(exe: &std::path::Path, reset_machine: bool) -> std::io::Result<()> {
    use std::os::unix::process::CommandExt;
    // In a process group of its own: a Ctrl-C or a signal to xapid's group
    // must not take the guard with it (it ends when the pipe closes).
    let mut command = std::process::Command::new(exe);
    command.arg("guard");
    if reset_machine {
        command.arg("--reset-machine");
    }
    let mut child = command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .process_group(0)
        .spawn()?;
    let mut pipe = child
        .stdin
        .take()
        .ok_or_else(|| std::io::Error::other("no pipe to the guard"))?;
    let client = CLIENT.get_or_init(|| Client {
        orders: Mutex::new((Orders::default(), true)),
        changed: Condvar::new(),
    });
    std::thread::Builder::new()
        .name("fence-guard".into())
        .spawn(move || loop {
            let line = {
                let mut o = client.orders.lock().unwrap_or_else(|p| p.into_inner());
                while !o.1 {
                    o = client.changed.wait(o).unwrap_or_else(|p| p.into_inner());
                }
                o.1 = false;
                o.0.line(Instant::now())
            };
            if let Err(e) = pipe.write_all(line.as_bytes()).and_then(|_| pipe.flush()) {
                tracing::error!("the fence guard is gone: {e}");
                return;
            }
        })?;
    // Reap the guard if it ends (it should not while xapid runs).
    std::thread::Builder::new()
        .name("fence-guard-wait".into())
        .spawn(move || {
            if let Ok(status) = child.wait() {
                tracing::error!(%status, "the fence guard ended");
            }
        })?;
    Ok(())
}

fn update(f: impl FnOnce(&mut Orders)) {
    let Some(client) = CLIENT.get() else { return };
    let mut o = client.orders.lock().unwrap_or_else(|p| p.into_inner());
    let before = o.0.clone();
    f(&mut o.0);
    if o.0 != before {
        o.1 = true;
        client.changed.notify_one();
    }
}

/// The watchdog's deadline (`None`: disarmed).
pub fn set_deadline(deadline: Option<Instant>) {
    update(|o| o.deadline = deadline);
}

/// The host lease's deadlines (`None`: leases off).
pub fn set_lease(lease: Option<LeaseDeadlines>) {
    update(|o| o.lease = lease);
}

/// The pids of this host's guests.
pub fn set_guests(pids: Vec<i32>) {
    update(|o| o.pids = pids);
}

/// `xapid guard`: hold the deadlines until the pipe on stdin closes.
/// `reset_machine`: a reset resets this machine (real servers), else it
/// kills the guard's `xapid` (the lab).
pub fn run(reset_machine: bool) {
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut guard = Guard::default();
    loop {
        let next = match guard.wake() {
            Some(w) => rx.recv_timeout(w.saturating_duration_since(Instant::now())),
            None => rx.recv().map_err(|_| std::sync::mpsc::RecvTimeoutError::Disconnected),
        };
        match next {
            Ok(line) => match Orders::parse(&line, Instant::now()) {
                Some(o) => guard.order(o),
                None => eprintln!("xapid guard: ignoring a malformed order {line:?}"),
            },
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                while let Some(act) = guard.tick(Instant::now(), super::process::process_runs) {
                    act_on(act, reset_machine);
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                if guard.orders.deadline.is_some() && !guard.orders.pids.is_empty() {
                    eprintln!(
                        "xapid guard: xapid ended while armed: killing its guests {:?}",
                        guard.orders.pids
                    );
                    crate::driver::qemu::kill_and_wait(&guard.orders.pids);
                }
                return;
            }
        }
    }
}

fn signal_all(pids: &[i32], signal: nix::sys::signal::Signal) {
    for &pid in pids {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
    }
}

fn act_on(act: Act, reset_machine: bool) {
    use nix::sys::signal::Signal;
    match act {
        Act::Watchdog(pids) => {
            eprintln!("xapid guard: xapid missed its watchdog deadline: killing its guests {pids:?}");
            crate::driver::qemu::kill_and_wait(&pids);
        }
        Act::Pause(pids) | Act::Kill(pids) if pids.is_empty() => {}
        Act::Pause(pids) => {
            eprintln!("xapid guard: the host lease was not renewed in time: pausing its guests {pids:?}");
            signal_all(&pids, Signal::SIGSTOP);
        }
        Act::Kill(pids) => {
            eprintln!(
                "xapid guard: the host lease is still not renewed: killing its guests {pids:?} (their VMs may restart elsewhere soon)"
            );
            signal_all(&pids, Signal::SIGKILL);
        }
        Act::Reset(pids) => reset(&pids, reset_machine),
    }
}

/// Killed guests that have not exited may still write their disks after
/// another host takes their VMs: only a reset of the machine drops their
/// writes.
fn reset(pids: &[i32], reset_machine: bool) {
    if reset_machine {
        eprintln!("xapid guard: killed guests {pids:?} have not exited (their storage hangs): resetting this machine");
        match std::fs::write("/proc/sysrq-trigger", b"b") {
            Ok(()) => std::thread::sleep(std::time::Duration::from_secs(60)),
            Err(e) => eprintln!("xapid guard: cannot reset this machine through /proc/sysrq-trigger: {e}"),
        }
        return;
    }
    let xapid = nix::unistd::getppid();
    eprintln!(
        "xapid guard: killed guests {pids:?} have not exited (their storage hangs): a real server resets here (--reset-machine); in the lab, killing xapid ({xapid}) instead"
    );
    let _ = nix::sys::signal::kill(xapid, nix::sys::signal::Signal::SIGKILL);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_read_back_and_bad_lines_are_refused() {
        let now = Instant::now();
        let o = Orders {
            deadline: Some(now + Duration::from_millis(1500)),
            pids: vec![42, 4242],
            lease: Some(LeaseDeadlines {
                pause: now + Duration::from_millis(700),
                kill: now + Duration::from_millis(900),
                reset: now + Duration::from_millis(1100),
            }),
        };
        let back = Orders::parse(&o.line(now), now).unwrap();
        assert_eq!(back, o);
        // A line without the lease deadlines: leases off.
        let old = Orders::parse("1500 42", now).unwrap();
        assert_eq!(old.lease, None);
        assert_eq!(old.pids, vec![42]);
        let off = Orders::default();
        assert_eq!(Orders::parse(&off.line(now), now), Some(off));
        for bad in [
            "",
            "x -",
            "10 1",
            "10 a,b",
            "10 5 9 10 11 extra",
            "10 5 x - -",
            "10 5 9",
            "10 5 9 10",
            "10 5 9 - 11",
            "10 5 9 8 11",
            "10 5 9 10 9",
            "-1 -",
            "10 0",
            "18446744073709551615 -",
        ] {
            assert_eq!(Orders::parse(bad, now), None, "{bad:?}");
        }
    }

    fn lease_at(now: Instant, pause: u64, kill: u64, reset: u64) -> Option<LeaseDeadlines> {
        let at = |ms| now + Duration::from_millis(ms);
        Some(LeaseDeadlines {
            pause: at(pause),
            kill: at(kill),
            reset: at(reset),
        })
    }

    #[test]
    fn the_guard_pauses_then_kills_then_resets_only_for_guests_that_did_not_exit() {
        let now = Instant::now();
        let at = |ms| now + Duration::from_millis(ms);
        let mut g = Guard::default();
        g.order(Orders {
            deadline: Some(at(60_000)),
            pids: vec![10, 11],
            lease: lease_at(now, 5_000, 6_163, 7_326),
        });
        assert_eq!(g.wake(), Some(at(5_000)));
        assert_eq!(g.tick(at(4_999), |_| true), None);
        assert_eq!(g.tick(at(5_000), |_| true), Some(Act::Pause(vec![10, 11])));
        // Once per deadline.
        assert_eq!(g.tick(at(5_500), |_| true), None);
        assert_eq!(g.wake(), Some(at(6_163)));
        assert_eq!(g.tick(at(6_163), |_| true), Some(Act::Kill(vec![10, 11])));
        // Guest 10 exited, 11 hangs: the reset, for 11 alone, once.
        assert_eq!(g.tick(at(7_326), |p| p == 11), Some(Act::Reset(vec![11])));
        assert_eq!(g.tick(at(7_400), |p| p == 11), None);
        assert_eq!(g.wake(), Some(at(60_000)));
    }

    #[test]
    fn the_same_deadlines_sent_again_act_once() {
        let now = Instant::now();
        let at = |ms| now + Duration::from_millis(ms);
        let mut g = Guard::default();
        let orders = |jitter: u64| Orders {
            deadline: None,
            pids: vec![10],
            lease: lease_at(now, 5_000 + jitter, 6_000 + jitter, 7_000 + jitter),
        };
        g.order(orders(0));
        assert_eq!(g.tick(at(5_000), |_| true), Some(Act::Pause(vec![10])));
        // The same deadlines, read from a later line a few ms apart.
        g.order(orders(3));
        assert_eq!(g.tick(at(5_100), |_| true), None);
        assert_eq!(g.tick(at(6_003), |_| true), Some(Act::Kill(vec![10])));
        g.order(orders(1));
        assert_eq!(g.tick(at(6_500), |_| true), None);
    }

    #[test]
    fn the_guard_resets_nothing_when_the_killed_guests_exited() {
        let now = Instant::now();
        let at = |ms| now + Duration::from_millis(ms);
        let mut g = Guard::default();
        g.order(Orders {
            deadline: None,
            pids: vec![10],
            lease: lease_at(now, 5_000, 6_000, 7_000),
        });
        let mut acts = Vec::new();
        for ms in (0..8_000).step_by(100) {
            while let Some(a) = g.tick(at(ms), |_| false) {
                acts.push(a);
            }
        }
        assert_eq!(acts, vec![Act::Pause(vec![10]), Act::Kill(vec![10])]);
    }

    #[test]
    fn a_renewal_in_time_moves_every_lease_deadline() {
        let now = Instant::now();
        let at = |ms| now + Duration::from_millis(ms);
        let mut g = Guard::default();
        let mut orders = Orders {
            deadline: None,
            pids: vec![10],
            lease: lease_at(now, 5_000, 6_000, 7_000),
        };
        g.order(orders.clone());
        assert_eq!(g.tick(at(5_000), |_| true), Some(Act::Pause(vec![10])));
        // Renewed at 5.5 s: the kill and the reset move with the pause.
        orders.lease = lease_at(now, 10_500, 11_500, 12_500);
        g.order(orders);
        assert_eq!(g.tick(at(7_000), |_| true), None);
        assert_eq!(g.wake(), Some(at(10_500)));
    }

    #[test]
    fn the_watchdog_deadline_kills_everything_and_clears_the_orders() {
        let now = Instant::now();
        let at = |ms| now + Duration::from_millis(ms);
        let mut g = Guard::default();
        g.order(Orders {
            deadline: Some(at(3_000)),
            pids: vec![10, 12],
            lease: lease_at(now, 5_000, 6_000, 7_000),
        });
        assert_eq!(g.tick(at(3_000), |_| true), Some(Act::Watchdog(vec![10, 12])));
        assert_eq!(g.wake(), None);
    }
}
