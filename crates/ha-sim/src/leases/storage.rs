//! The lease world's SR and I/O: its files, whole-file writes landing at
//! one instant inside their interval, multi-file reads sampling each file
//! at its own instant, latency, slow episodes and cuts, and completion
//! handed to a host's `xapid`.

use ha_lease::paxos::{Block, Owner};
use ha_lease::vm::LeaseRecord;
use rand::Rng;

use super::{LeaseWorld, Millis};

/// A file of the SR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum File {
    Lease(usize),
    Block {
        vm: usize,
        host: usize,
    },
    Owner {
        vm: usize,
        host: usize,
    },
    /// A host's released mark for a VM (in `xapid`, a flag of its owner
    /// file).
    Released {
        vm: usize,
        host: usize,
    },
    /// A host's fencing mark (in `xapid`, a flag of its host lease file).
    Fenced(usize),
}

/// A file's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Value {
    Lease(Option<LeaseRecord>),
    Block(Option<Block>),
    Owner(Option<(u64, Owner)>),
    /// The instance released and the boot that released it.
    Released(Option<(u64, u64)>),
    /// The boot that fenced, its guests gone.
    Fenced(Option<u64>),
}

pub(super) struct Sr {
    pub(super) leases: Vec<Option<LeaseRecord>>,
    pub(super) blocks: Vec<Vec<Option<Block>>>,
    pub(super) owners: Vec<Vec<Option<(u64, Owner)>>>,
    pub(super) released: Vec<Vec<Option<(u64, u64)>>>,
    pub(super) fenced: Vec<Option<u64>>,
}

impl Sr {
    pub(super) fn get(&self, f: File) -> Value {
        match f {
            File::Lease(h) => Value::Lease(self.leases[h]),
            File::Block { vm, host } => Value::Block(self.blocks[vm][host]),
            File::Owner { vm, host } => Value::Owner(self.owners[vm][host]),
            File::Released { vm, host } => Value::Released(self.released[vm][host]),
            File::Fenced(h) => Value::Fenced(self.fenced[h]),
        }
    }

    pub(super) fn put(&mut self, f: File, v: Value) {
        match (f, v) {
            (File::Lease(h), Value::Lease(x)) => self.leases[h] = x,
            (File::Block { vm, host }, Value::Block(x)) => self.blocks[vm][host] = x,
            (File::Owner { vm, host }, Value::Owner(x)) => self.owners[vm][host] = x,
            (File::Released { vm, host }, Value::Released(x)) => self.released[vm][host] = x,
            (File::Fenced(h), Value::Fenced(x)) => self.fenced[h] = x,
            _ => {}
        }
    }
}

/// Why a host issued an I/O.
#[derive(Debug, Clone)]
pub(super) enum Purpose {
    Renew,
    Observe(usize),
    /// Step 1: the owner files and blocks of a VM.
    ReadOwner(usize),
    /// A Disk Paxos write and the read of every block after it.
    Paxos(usize),
    /// Step 4: the old owner's lease read again.
    Recheck(usize),
    /// Step 3: the decided owner written to this host's owner file.
    Record,
    /// A paused guest's look for later instances.
    Resume(usize),
    /// A released mark written after the guest stopped.
    Release(usize),
    /// A fencing host's mark: the host goes down once it is written.
    FenceMark,
}

/// One I/O in flight.
pub(super) struct Op {
    pub(super) host: usize,
    pub(super) boot: u64,
    pub(super) purpose: Purpose,
    pub(super) issue_local: Millis,
    pub(super) done_real: Millis,
    pub(super) failed: bool,
    /// Writes not yet landed: (real time, file, value).
    pub(super) writes: Vec<(Millis, File, Value)>,
    /// Reads not yet sampled: (real time, file).
    pub(super) reads: Vec<(Millis, File)>,
    pub(super) got: Vec<(File, Value)>,
}

impl LeaseWorld {
    // ---- I/O ----

    /// Issue an I/O for host `h` now.
    pub(super) fn issue(&mut self, h: usize, purpose: Purpose, writes: Vec<(File, Value)>, reads: Vec<File>) {
        let io = self.cfg.timing.io;
        let (cut_until, slow_until, boot) = {
            let host = &self.hosts[h];
            (host.cut_until, host.slow_until, host.boot)
        };
        let (latency, failed) = if self.now < cut_until {
            (io + 1, true)
        } else if self.now < slow_until {
            (self.rng.random_range(io / 2..=2 * io), false)
        } else {
            (self.rng.random_range(2..30), false)
        };
        let done_real = self.now + latency;
        let (writes, reads) = if failed {
            (Vec::new(), Vec::new())
        } else {
            // A write lands before the reads that follow it in the same
            // I/O; each file is sampled at its own instant.
            let land = if writes.is_empty() {
                self.now
            } else {
                self.rng.random_range(self.now..=done_real)
            };
            let w: Vec<(Millis, File, Value)> = writes.into_iter().map(|(f, v)| (land, f, v)).collect();
            let r: Vec<(Millis, File)> = reads
                .into_iter()
                .map(|f| (self.rng.random_range(land..=done_real), f))
                .collect();
            (w, r)
        };
        let op = Op {
            host: h,
            boot,
            purpose,
            issue_local: self.local(h),
            done_real,
            failed,
            writes,
            reads,
            got: Vec::new(),
        };
        self.ops.push(op);
    }

    /// Land writes and take read samples that are due; hand completed I/O
    /// to hosts that can take it (up, same boot, not frozen).
    pub(super) fn io(&mut self) {
        let now = self.now;
        for op in &mut self.ops {
            for (t, f, v) in std::mem::take(&mut op.writes) {
                if t <= now {
                    self.sr.put(f, v);
                } else {
                    op.writes.push((t, f, v));
                }
            }
            for (t, f) in std::mem::take(&mut op.reads) {
                if t <= now {
                    op.got.push((f, self.sr.get(f)));
                } else {
                    op.reads.push((t, f));
                }
            }
        }
        let mut i = 0;
        while i < self.ops.len() {
            let op = &self.ops[i];
            let host = &self.hosts[op.host];
            let dead = !host.up || host.boot != op.boot;
            if dead && op.writes.is_empty() {
                self.ops.swap_remove(i);
                continue;
            }
            let ready = !dead && op.done_real <= now && op.reads.is_empty() && op.writes.is_empty();
            if ready && now >= host.frozen_until {
                let op = self.ops.swap_remove(i);
                self.complete(op);
                continue;
            }
            i += 1;
        }
    }

    pub(super) fn complete(&mut self, op: Op) {
        let h = op.host;
        let done = self.local(h);
        let ok = !op.failed && done.saturating_sub(op.issue_local) <= self.cfg.timing.io;
        match op.purpose {
            Purpose::Renew => {
                self.hosts[h].renewing = false;
                if !op.failed {
                    self.hosts[h].holder.renewed(op.issue_local, done);
                }
            }
            Purpose::Observe(p) => {
                self.hosts[h].observing[p] = false;
                if let (false, Some((_, Value::Lease(Some(r))))) = (op.failed, op.got.first()) {
                    let host = &mut self.hosts[h];
                    host.records[p] = Some(*r);
                    host.observers[p].read(op.issue_local, done, r.stamp());
                    host.short_observers[p].read(op.issue_local, done, r.stamp());
                }
            }
            Purpose::ReadOwner(vm) => self.on_read_owner(h, vm, ok, &op.got),
            Purpose::Paxos(vm) => self.on_paxos(h, vm, ok, &op.got),
            Purpose::Recheck(vm) => self.on_recheck(h, vm, ok, &op.got),
            Purpose::Record => {}
            Purpose::Release(vm) => self.on_release(h, vm),
            Purpose::FenceMark => self.on_fence_mark(h),
            Purpose::Resume(vm) => self.on_resume(h, vm, ok, &op.got, op.issue_local),
        }
    }
}

/// Every block and owner file of `vm`: what step 1 and a resume read.
pub(super) fn vm_files(vm: usize, n: usize) -> Vec<File> {
    (0..n)
        .map(|host| File::Block { vm, host })
        .chain((0..n).map(|host| File::Owner { vm, host }))
        .chain((0..n).map(|host| File::Released { vm, host }))
        .chain((0..n).map(File::Fenced))
        .collect()
}

/// The fencing marks a read returned, by host.
pub(super) fn fenced_of(got: &[(File, Value)], n: usize) -> Vec<Option<u64>> {
    let mut out = vec![None; n];
    for (f, v) in got {
        if let (File::Fenced(h), Value::Fenced(b)) = (f, v) {
            out[*h] = *b;
        }
    }
    out
}

/// The released marks a read returned, by host.
pub(super) fn released_of(got: &[(File, Value)], n: usize) -> Vec<Option<(u64, u64)>> {
    let mut out = vec![None; n];
    for (f, v) in got {
        if let (File::Released { host, .. }, Value::Released(r)) = (f, v) {
            out[*host] = *r;
        }
    }
    out
}

/// Every host's owner file of one VM, as read.
pub(super) type OwnerFiles = Vec<Option<(u64, Owner)>>;

/// The blocks and owner files a read returned, by host.
pub(super) fn split(got: &[(File, Value)], n: usize) -> (Vec<Option<Block>>, OwnerFiles) {
    let mut blocks = vec![None; n];
    let mut owners = vec![None; n];
    for (f, v) in got {
        match (f, v) {
            (File::Block { host, .. }, Value::Block(b)) => blocks[*host] = *b,
            (File::Owner { host, .. }, Value::Owner(o)) => owners[*host] = *o,
            _ => {}
        }
    }
    (blocks, owners)
}
