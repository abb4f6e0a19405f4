//! The explorer's fault alphabet: what may happen at a decision point, which
//! faults a world's state enables, how a fault is applied, and the text form
//! of a schedule (`31000 net-cut 1; 33000 freeze 1 8000`) that replays it.

use std::fmt;
use std::str::FromStr;

use ha_liveness::{Event, Millis};

use crate::world::{Power, World};
use crate::Violation;

/// How long a planned leave runs before the host powers off, as the random
/// schedules do it.
pub const LEAVE_MS: Millis = 200;

/// One fault, or the undoing of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    PowerOff(usize),
    PowerOn(usize),
    /// Cut every link of a host, both ways.
    NetCut(usize),
    /// Restore every link of a host.
    NetRestore(usize),
    /// Cut one direction: (from, to).
    LinkCut(usize, usize),
    LinkHeal(usize, usize),
    StorageCut(usize),
    StorageRestore(usize),
    /// Statefile I/O of a host takes this long (the normal latency undoes).
    Latency(usize, Millis),
    /// The host stops for this long.
    Freeze(usize, Millis),
    /// The host's statefile slot reads as corrupt until it is rewritten.
    Corrupt(usize),
    /// A planned shutdown: leave cleanly, then power off [`LEAVE_MS`] later.
    Leave(usize),
}

/// The parameters the alphabet depends on.
#[derive(Debug, Clone)]
pub struct Alphabet {
    /// Slow statefile latencies to choose from.
    pub latencies: Vec<Millis>,
    /// Freeze lengths to choose from.
    pub freezes: Vec<Millis>,
    /// The latency a host has when nothing is wrong.
    pub normal_latency: Millis,
}

fn net_cut(w: &World, i: usize) -> bool {
    (0..w.hosts.len())
        .filter(|&j| j != i)
        .all(|j| w.net.cut.contains(&(i, j)) && w.net.cut.contains(&(j, i)))
}

impl Alphabet {
    /// The faults that change something in `w`, in a fixed order.
    pub fn enabled(&self, w: &World) -> Vec<Fault> {
        let n = w.hosts.len();
        let mut out = Vec::new();
        for i in 0..n {
            let h = &w.hosts[i];
            match h.power {
                Power::On => out.push(Fault::PowerOff(i)),
                Power::Off { until: None } => out.push(Fault::PowerOn(i)),
                Power::Off { until: Some(_) } => {}
            }
            if net_cut(w, i) {
                out.push(Fault::NetRestore(i));
            } else {
                out.push(Fault::NetCut(i));
            }
            for j in (0..n).filter(|&j| j != i) {
                if w.net.cut.contains(&(i, j)) {
                    out.push(Fault::LinkHeal(i, j));
                } else {
                    out.push(Fault::LinkCut(i, j));
                }
            }
            out.push(if h.storage_cut {
                Fault::StorageRestore(i)
            } else {
                Fault::StorageCut(i)
            });
            if h.sf_latency == self.normal_latency {
                out.extend(self.latencies.iter().map(|&l| Fault::Latency(i, l)));
            } else {
                out.push(Fault::Latency(i, self.normal_latency));
            }
            if h.power == Power::On && !h.frozen(w.now) {
                out.extend(self.freezes.iter().map(|&d| Fault::Freeze(i, d)));
            }
            out.push(Fault::Corrupt(i));
            if h.running() && !h.frozen(w.now) {
                out.push(Fault::Leave(i));
            }
        }
        out
    }
}

impl Fault {
    /// Every host the fault names is below `n`.
    pub fn fits(self, n: usize) -> bool {
        match self {
            Fault::LinkCut(a, b) | Fault::LinkHeal(a, b) => a < n && b < n && a != b,
            Fault::PowerOff(i)
            | Fault::PowerOn(i)
            | Fault::NetCut(i)
            | Fault::NetRestore(i)
            | Fault::StorageCut(i)
            | Fault::StorageRestore(i)
            | Fault::Latency(i, _)
            | Fault::Freeze(i, _)
            | Fault::Corrupt(i)
            | Fault::Leave(i) => i < n,
        }
    }

    /// Apply the fault to `w` now (a leave also runs [`LEAVE_MS`]). The
    /// hosts it names must fit `w` ([`Fault::fits`]).
    pub fn apply(self, w: &mut World) -> Result<(), Violation> {
        let now = w.now;
        let note = |w: &mut World, line: String| {
            if let Some(t) = &mut w.trace {
                t.push(format!("{now:>8} FAULT {line}"));
            }
        };
        match self {
            Fault::PowerOff(i) => w.power_off(i),
            Fault::PowerOn(i) => w.power_on(i),
            Fault::NetCut(i) => w.set_network(i, false),
            Fault::NetRestore(i) => w.set_network(i, true),
            Fault::LinkCut(a, b) => w.cut_link(a, b),
            Fault::LinkHeal(a, b) => {
                note(w, format!("one-way link {a} -> {b} healed"));
                w.net.cut.remove(&(a, b));
            }
            Fault::StorageCut(i) => w.set_storage(i, false),
            Fault::StorageRestore(i) => w.set_storage(i, true),
            Fault::Latency(i, ms) => {
                note(w, format!("statefile latency of host {i} is {ms} ms"));
                w.hosts[i].sf_latency = ms;
            }
            Fault::Freeze(i, ms) => w.freeze(i, ms),
            Fault::Corrupt(i) => w.corrupt_slot(i),
            Fault::Leave(i) => {
                note(w, format!("host {i} leaves (planned shutdown)"));
                w.send(i, Event::Leave);
                w.run_until(now + LEAVE_MS)?;
                w.power_off(i);
            }
        }
        Ok(())
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Fault::PowerOff(i) => write!(f, "power-off {i}"),
            Fault::PowerOn(i) => write!(f, "power-on {i}"),
            Fault::NetCut(i) => write!(f, "net-cut {i}"),
            Fault::NetRestore(i) => write!(f, "net-restore {i}"),
            Fault::LinkCut(a, b) => write!(f, "link-cut {a} {b}"),
            Fault::LinkHeal(a, b) => write!(f, "link-heal {a} {b}"),
            Fault::StorageCut(i) => write!(f, "storage-cut {i}"),
            Fault::StorageRestore(i) => write!(f, "storage-restore {i}"),
            Fault::Latency(i, ms) => write!(f, "latency {i} {ms}"),
            Fault::Freeze(i, ms) => write!(f, "freeze {i} {ms}"),
            Fault::Corrupt(i) => write!(f, "corrupt {i}"),
            Fault::Leave(i) => write!(f, "leave {i}"),
        }
    }
}

/// A fault or schedule that does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot parse {:?}", self.0)
    }
}

impl std::error::Error for ParseError {}

impl FromStr for Fault {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Fault, ParseError> {
        let bad = || ParseError(s.to_string());
        let words: Vec<&str> = s.split_whitespace().collect();
        let num = |k: usize| -> Result<u64, ParseError> { words.get(k).and_then(|w| w.parse().ok()).ok_or_else(bad) };
        let host =
            |k: usize| -> Result<usize, ParseError> { words.get(k).and_then(|w| w.parse().ok()).ok_or_else(bad) };
        let arity = match words.first().copied() {
            Some("link-cut" | "link-heal" | "latency" | "freeze") => 3,
            Some(_) => 2,
            None => return Err(bad()),
        };
        if words.len() != arity {
            return Err(bad());
        }
        Ok(match words[0] {
            "power-off" => Fault::PowerOff(host(1)?),
            "power-on" => Fault::PowerOn(host(1)?),
            "net-cut" => Fault::NetCut(host(1)?),
            "net-restore" => Fault::NetRestore(host(1)?),
            "link-cut" => Fault::LinkCut(host(1)?, host(2)?),
            "link-heal" => Fault::LinkHeal(host(1)?, host(2)?),
            "storage-cut" => Fault::StorageCut(host(1)?),
            "storage-restore" => Fault::StorageRestore(host(1)?),
            "latency" => Fault::Latency(host(1)?, num(2)?),
            "freeze" => Fault::Freeze(host(1)?, num(2)?),
            "corrupt" => Fault::Corrupt(host(1)?),
            "leave" => Fault::Leave(host(1)?),
            _ => return Err(bad()),
        })
    }
}

/// Faults with the simulated time (ms) each is applied at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Schedule(pub Vec<(Millis, Fault)>);

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return write!(f, "(no faults)");
        }
        for (k, (t, fault)) in self.0.iter().enumerate() {
            if k > 0 {
                write!(f, "; ")?;
            }
            write!(f, "{t} {fault}")?;
        }
        Ok(())
    }
}

impl FromStr for Schedule {
    type Err = ParseError;

    /// `31000 net-cut 1; 33000 freeze 1 8000`, or `(no faults)`.
    fn from_str(s: &str) -> Result<Schedule, ParseError> {
        let s = s.trim();
        if s.is_empty() || s == "(no faults)" {
            return Ok(Schedule::default());
        }
        s.split(';')
            .map(|part| {
                let part = part.trim();
                let (t, fault) = part.split_once(' ').ok_or_else(|| ParseError(part.to_string()))?;
                let t = t.parse().map_err(|_| ParseError(part.to_string()))?;
                Ok((t, fault.parse()?))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Schedule)
    }
}
