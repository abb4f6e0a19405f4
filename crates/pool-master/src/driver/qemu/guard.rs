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
//! It holds the host lease's deadline too (`crate::lease`): when it
//! passes without a newer one, the guard pauses every guest (SIGSTOP),
//! once per deadline. It never lets them run again: that is `xapid`'s
//! call, after the resume check.
//!
//! One line per update: `DEADLINE_MS PIDS PAUSE_MS`, where `DEADLINE_MS`
//! is the time left to the watchdog's deadline in ms or `-` when disarmed,
//! `PIDS` the guests' pids separated by commas, or `-`, and `PAUSE_MS` the
//! time left to the host lease's deadline, or `-` (leases off; a line
//! without it says the same).

use std::io::{BufRead, Write};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The furthest deadline the guard accepts, in ms from now.
const MAX_DEADLINE_MS: u64 = 3_600_000;

/// What the guard is told: the watchdog's deadline, the guests' pids and
/// the host lease's deadline.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Orders {
    deadline: Option<Instant>,
    pids: Vec<i32>,
    pause: Option<Instant>,
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
        let pause = millis_left(self.pause, now);
        let pids = if self.pids.is_empty() {
            "-".to_string()
        } else {
            self.pids.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
        };
        format!("{left} {pids} {pause}\n")
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
        let pause = match parts.next() {
            Some(word) => parse_left(word, now)?,
            None => None,
        };
        parts.next().is_none().then_some(Orders { deadline, pids, pause })
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
pub fn spawn(exe: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::process::CommandExt;
    // In a process group of its own: a Ctrl-C or a signal to xapid's group
    // must not take the guard with it (it ends when the pipe closes).
    let mut child = std::process::Command::new(exe)
        .arg("guard")
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

/// The host lease's deadline (`None`: leases off).
pub fn set_pause(pause: Option<Instant>) {
    update(|o| o.pause = pause);
}

/// The pids of this host's guests.
pub fn set_guests(pids: Vec<i32>) {
    update(|o| o.pids = pids);
}

/// `xapid guard`: hold the deadline until the pipe on stdin closes.
pub fn run() {
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
    let mut orders = Orders::default();
    // The lease deadline the guests were paused for, once it passed.
    let mut paused_for: Option<Instant> = None;
    loop {
        let pause = orders.pause.filter(|p| paused_for != Some(*p));
        let wake = match (orders.deadline, pause) {
            (Some(d), Some(p)) => Some(d.min(p)),
            (d, p) => d.or(p),
        };
        let next = match wake {
            Some(w) => rx.recv_timeout(w.saturating_duration_since(Instant::now())),
            None => rx.recv().map_err(|_| std::sync::mpsc::RecvTimeoutError::Disconnected),
        };
        match next {
            Ok(line) => match Orders::parse(&line, Instant::now()) {
                Some(o) => orders = o,
                None => eprintln!("xapid guard: ignoring a malformed order {line:?}"),
            },
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                let now = Instant::now();
                if orders.deadline.is_some_and(|d| d <= now) {
                    eprintln!(
                        "xapid guard: xapid missed its watchdog deadline: killing its guests {:?}",
                        orders.pids
                    );
                    crate::driver::qemu::kill_and_wait(&orders.pids);
                    orders = Orders::default();
                } else if let Some(p) = pause.filter(|p| *p <= now) {
                    eprintln!(
                        "xapid guard: the host lease was not renewed in time: pausing its guests {:?}",
                        orders.pids
                    );
                    for &pid in &orders.pids {
                        let _ =
                            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGSTOP);
                    }
                    paused_for = Some(p);
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                if orders.deadline.is_some() && !orders.pids.is_empty() {
                    eprintln!(
                        "xapid guard: xapid ended while armed: killing its guests {:?}",
                        orders.pids
                    );
                    crate::driver::qemu::kill_and_wait(&orders.pids);
                }
                return;
            }
        }
    }
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
            pause: Some(now + Duration::from_millis(700)),
        };
        let back = Orders::parse(&o.line(now), now).unwrap();
        assert_eq!(back, o);
        // A line without the lease deadline: leases off.
        let old = Orders::parse("1500 42", now).unwrap();
        assert_eq!(old.pause, None);
        assert_eq!(old.pids, vec![42]);
        let off = Orders::default();
        assert_eq!(Orders::parse(&off.line(now), now), Some(off));
        for bad in [
            "",
            "x -",
            "10 1",
            "10 a,b",
            "10 5 9 extra",
            "10 5 x",
            "-1 -",
            "10 0",
            "18446744073709551615 -",
        ] {
            assert_eq!(Orders::parse(bad, now), None, "{bad:?}");
        }
    }
}
