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
//! One line per update: `DEADLINE_MS PIDS`, where `DEADLINE_MS` is the time
//! left to the deadline in ms or `-` when disarmed, and `PIDS` the guests'
//! pids separated by commas, or `-`.

use std::io::{BufRead, Write};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The furthest deadline the guard accepts, in ms from now.
const MAX_DEADLINE_MS: u64 = 3_600_000;

/// What the guard is told: the watchdog's deadline and the guests' pids.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Orders {
    deadline: Option<Instant>,
    pids: Vec<i32>,
}

impl Orders {
    fn line(&self, now: Instant) -> String {
        let left = match self.deadline {
            Some(d) => d.saturating_duration_since(now).as_millis().to_string(),
            None => "-".into(),
        };
        let pids = if self.pids.is_empty() {
            "-".to_string()
        } else {
            self.pids.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
        };
        format!("{left} {pids}\n")
    }

    /// Read one line as the guard, at `now`: `None` for a line that is not
    /// well formed (the guard keeps its last orders).
    fn parse(line: &str, now: Instant) -> Option<Orders> {
        let mut parts = line.split_whitespace();
        // HA's deadlines are seconds to minutes away: one past an hour is
        // not an order.
        let deadline = match parts.next()? {
            "-" => None,
            ms => Some(now + Duration::from_millis(ms.parse().ok().filter(|ms| *ms <= MAX_DEADLINE_MS)?)),
        };
        let pids = match parts.next()? {
            "-" => Vec::new(),
            list => list
                .split(',')
                .map(|p| p.parse::<i32>().ok().filter(|p| *p > 1))
                .collect::<Option<Vec<_>>>()?,
        };
        parts.next().is_none().then_some(Orders { deadline, pids })
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
    loop {
        let next = match orders.deadline {
            Some(d) => rx.recv_timeout(d.saturating_duration_since(Instant::now())),
            None => rx.recv().map_err(|_| std::sync::mpsc::RecvTimeoutError::Disconnected),
        };
        match next {
            Ok(line) => match Orders::parse(&line, Instant::now()) {
                Some(o) => orders = o,
                None => eprintln!("xapid guard: ignoring a malformed order {line:?}"),
            },
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                eprintln!(
                    "xapid guard: xapid missed its watchdog deadline: killing its guests {:?}",
                    orders.pids
                );
                crate::driver::qemu::kill_and_wait(&orders.pids);
                orders = Orders::default();
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
        };
        let back = Orders::parse(&o.line(now), now).unwrap();
        assert_eq!(back, o);
        let off = Orders::default();
        assert_eq!(Orders::parse(&off.line(now), now), Some(off));
        for bad in [
            "",
            "x -",
            "10 1",
            "10 a,b",
            "10 5 extra",
            "-1 -",
            "10 0",
            "18446744073709551615 -",
        ] {
            assert_eq!(Orders::parse(bad, now), None, "{bad:?}");
        }
    }
}
