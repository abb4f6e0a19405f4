//! Single-fault runs (`ha-sim --single`): one fault on one host per seed,
//! nothing else, to see whether it makes another host fence.
//!
//! The fault starts at 40–50 s and lasts 5–60 s (freezes 5–30 s, slow
//! statefile latency 0.5–30 s per cycle); a corrupt slot is instant.

use ha_liveness::{Event, Millis};
use rand::Rng;

use crate::world::World;

/// The kinds of single fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    PowerOff,
    Shutdown,
    CorruptSlot,
    NetworkCut,
    OneWayCut,
    StorageCut,
    Freeze,
    SlowStatefile,
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::PowerOff,
        Kind::Shutdown,
        Kind::CorruptSlot,
        Kind::NetworkCut,
        Kind::OneWayCut,
        Kind::StorageCut,
        Kind::Freeze,
        Kind::SlowStatefile,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::PowerOff => "power-off",
            Kind::Shutdown => "planned shutdown",
            Kind::CorruptSlot => "corrupt slot",
            Kind::NetworkCut => "network cut",
            Kind::OneWayCut => "one-way cut",
            Kind::StorageCut => "storage cut",
            Kind::Freeze => "freeze",
            Kind::SlowStatefile => "slow statefile",
        }
    }
}

/// One fault on one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SingleFault {
    pub kind: Kind,
    pub host: usize,
    /// The far end of a one-way cut (`host` → `other`).
    pub other: usize,
    pub at: Millis,
    /// How long it lasts (a freeze's length).
    pub lasts: Millis,
    /// Statefile latency per cycle, for slow statefile.
    pub latency: Millis,
}

impl SingleFault {
    /// Draw a fault for a pool of `n` hosts (at least 1).
    pub fn draw(r: &mut impl Rng, n: usize) -> SingleFault {
        let n = n.max(1);
        let kind = Kind::ALL[r.random_range(0..Kind::ALL.len())];
        let host = r.random_range(0..n);
        let other = if n > 1 {
            (host + 1 + r.random_range(0..n - 1)) % n
        } else {
            host
        };
        let at = 40_000 + r.random_range(0..10_000);
        let lasts = match kind {
            Kind::Freeze => r.random_range(5_000..=30_000),
            _ => r.random_range(5_000..=60_000),
        };
        let latency = r.random_range(500..=30_000);
        SingleFault {
            kind,
            host,
            other,
            at,
            lasts,
            latency,
        }
    }

    /// Inject it now.
    pub fn start(&self, w: &mut World) {
        let h = self.host;
        match self.kind {
            Kind::PowerOff => w.power_off(h),
            Kind::Shutdown => {
                w.send(h, Event::Leave);
                let _ = w.run_until(w.now + 200);
                w.power_off(h);
            }
            Kind::CorruptSlot => w.corrupt_slot(h),
            Kind::NetworkCut => w.set_network(h, false),
            Kind::OneWayCut => {
                if self.other != h {
                    w.cut_link(h, self.other);
                }
            }
            Kind::StorageCut => w.set_storage(h, false),
            Kind::Freeze => w.freeze(h, self.lasts),
            Kind::SlowStatefile => w.set_latency(h, self.latency),
        }
    }

    /// Undo it now.
    pub fn end(&self, w: &mut World) {
        let h = self.host;
        match self.kind {
            Kind::PowerOff | Kind::Shutdown => w.power_on(h),
            Kind::NetworkCut => w.set_network(h, true),
            Kind::OneWayCut => w.heal_network(),
            Kind::StorageCut => w.set_storage(h, true),
            Kind::SlowStatefile => w.set_latency(h, 5),
            Kind::CorruptSlot | Kind::Freeze => {}
        }
    }

    /// What it is, for a log line.
    pub fn describe(&self) -> String {
        match self.kind {
            Kind::OneWayCut => format!("one-way cut {} -> {} for {} ms", self.host, self.other, self.lasts),
            Kind::SlowStatefile => format!(
                "statefile of host {} at {} ms per cycle for {} ms",
                self.host, self.latency, self.lasts
            ),
            Kind::CorruptSlot => format!("corrupt slot of host {}", self.host),
            k => format!("{} of host {} for {} ms", k.name(), self.host, self.lasts),
        }
    }
}
