//! Real guests in the lease world (`--real-guests`, `docs/LEASES.md`,
//! "Real guests"): a QEMU process hands its disk writes to its host's
//! kernel, and a write on its way lands whatever happens to the process
//! after that. Pausing the process (SIGSTOP) stops new writes, not the one
//! on its way; on a cut SR that write hangs (an NFS hard mount) and lands
//! when the SR is back, however late. Killing the process ends it only
//! once its write ended; a reset of the host drops the write, unless it was
//! already on the wire (it lands within `io`).
//!
//! So the fence guard escalates (`Timing::kill_after`,
//! `Timing::reset_after`): it pauses the guests at the lease deadline, kills
//! them if the lease is still not renewed at the kill time, and resets the
//! host if one of them has not exited by the reset time. A host that
//! releases a VM or fences writes its mark only once the guest has exited,
//! and starts no guest of a VM while an earlier one of it still runs there.
//!
//! The checker judges the writes as they land on the disk: once a write of
//! a newer guest of a VM landed, a write of an older one may not (guests
//! are numbered in the order they start).

use rand::Rng;

use super::{GuestState, LeaseWorld, Millis};

/// A real guest's disk write on its way.
pub(super) struct DiskWrite {
    /// The host whose guest wrote it; `None` once that host went down
    /// (the write was on the wire).
    pub(super) host: Option<usize>,
    pub(super) vm: usize,
    /// The guest that wrote it (numbered in start order).
    pub(super) guest: u64,
    /// When it lands (real time), or `None` while it hangs on a cut SR.
    pub(super) lands: Option<Millis>,
}

impl LeaseWorld {
    /// Each running (not paused) real guest with no write on its way
    /// issues one.
    pub(super) fn guest_writes(&mut self) {
        let io = self.cfg.timing.io;
        for h in 0..self.hosts.len() {
            if !self.hosts[h].up {
                continue;
            }
            for vm in 0..self.cfg.vms {
                let Some(g) = self.hosts[h].guests[vm] else { continue };
                if g.state != GuestState::Running || self.writing(g.id) {
                    continue;
                }
                let host = &self.hosts[h];
                let lands = if self.now < host.cut_until {
                    None
                } else if self.now < host.slow_until {
                    Some(self.now + self.rng.random_range(io / 2..=2 * io))
                } else {
                    Some(self.now + self.rng.random_range(2..30))
                };
                self.disk.push(DiskWrite {
                    host: Some(h),
                    vm,
                    guest: g.id,
                    lands,
                });
            }
        }
    }

    /// Guest `id` has a write on its way: its process has not exited.
    pub(super) fn writing(&self, id: u64) -> bool {
        self.disk.iter().any(|w| w.guest == id)
    }

    /// Host `h` (this boot) has a guest process that has not exited.
    pub(super) fn host_writing(&self, h: usize) -> bool {
        self.disk.iter().any(|w| w.host == Some(h))
    }

    /// Host `h` (this boot) has a guest process of VM `vm` that has not
    /// exited: it starts no new guest of it until then.
    pub(super) fn vm_writing_on(&self, h: usize, vm: usize) -> bool {
        self.disk.iter().any(|w| w.host == Some(h) && w.vm == vm)
    }

    /// Land the writes that are due, and check their order per VM.
    pub(super) fn land_disk_writes(&mut self) {
        let now = self.now;
        for i in (0..self.disk.len()).rev() {
            let w = &mut self.disk[i];
            let cut = w.host.is_some_and(|h| now < self.hosts[h].cut_until);
            if w.lands.is_none() && !cut {
                // The SR is back: the hung write goes out again.
                w.lands = Some(now + self.rng.random_range(2..30));
            }
            if w.lands.is_none_or(|t| t > now) {
                continue;
            }
            let w = self.disk.swap_remove(i);
            let newest = self.newest_write[w.vm];
            if w.guest < newest && self.report.violation.is_none() {
                let v = format!(
                    "at {now} ms a write of VM {}'s guest #{} (host {:?}) landed after a write of its newer guest #{newest}",
                    w.vm, w.guest, w.host
                );
                self.note(format!("VIOLATION {v}"));
                self.report.violation = Some(v);
            }
            self.newest_write[w.vm] = newest.max(w.guest);
        }
    }

    /// Host `h` goes down now (power, reset, fence): a write of its guests
    /// that hangs, or would land later than `io` from now, never lands.
    pub(super) fn drop_disk_writes(&mut self, h: usize) {
        let last = self.now + self.cfg.timing.io;
        self.disk
            .retain(|w| w.host != Some(h) || w.lands.is_some_and(|t| t <= last));
        // Those that stay are on the wire: no longer the host's.
        for w in self.disk.iter_mut().filter(|w| w.host == Some(h)) {
            w.host = None;
        }
    }

    /// The fence guard's escalation for real guests on host `h` (its clock,
    /// frozen `xapid` or not): kill the guests once the lease has not been
    /// renewed for the kill time, reset the host if one has not exited by
    /// the reset time.
    pub(super) fn escalate(&mut self, h: usize) {
        let t = self.cfg.timing;
        let Some(deadline) = self.hosts[h].holder.deadline() else {
            return;
        };
        let issue = deadline.saturating_sub(t.d);
        let local = self.local(h);
        if local >= issue + t.kill_after() && !self.cfg.broken.kill_skipped {
            let mut killed = Vec::new();
            for (vm, g) in self.hosts[h].guests.iter_mut().enumerate() {
                if g.take().is_some() {
                    killed.push(vm);
                }
            }
            if !killed.is_empty() {
                self.report.killed += killed.len();
                self.note(format!("host {h}'s guard kills its guests of VMs {killed:?}"));
            }
        }
        let reset_at = issue + t.reset_after() + self.cfg.broken.reset_late;
        if local >= reset_at && !self.cfg.broken.reset_skipped && self.host_writing(h) {
            self.note(format!(
                "host {h}'s guard resets the host: a killed guest has not exited"
            ));
            self.report.resets += 1;
            self.reset(h);
        }
    }

    /// A reset (the guard's, or a fence whose guests would not exit): the
    /// host goes down at once, its guests and their hung writes with it.
    pub(super) fn reset(&mut self, h: usize) {
        let down = self.rng.random_range(2 * self.cfg.timing.io + 1_000..15_000);
        self.go_down(h, self.now + down);
    }

    /// Releases and a fence waiting for their guests to exit (real
    /// guests): write the released marks of guests gone; a fencing host
    /// writes its mark once all are gone, or goes down without one after
    /// `io`.
    pub(super) fn marks_after_exit(&mut self, h: usize) {
        let waiting = std::mem::take(&mut self.hosts[h].releasing);
        for (vm, id, instance) in waiting {
            if self.writing(id) {
                self.hosts[h].releasing.push((vm, id, instance));
            } else {
                self.mark_released(h, vm, instance);
            }
        }
        let Some(began) = self.hosts[h].fence_began else {
            return;
        };
        if !self.host_writing(h) {
            self.hosts[h].fence_began = None;
            self.fence_mark(h);
        } else if self.local(h) >= began + self.cfg.timing.io {
            self.note(format!("host {h} fences without its mark: a guest has not exited"));
            self.report.resets += 1;
            self.reset(h);
            if self.driven.is_some() {
                // Driven, it boots when its host in the liveset world does.
                self.hosts[h].down_until = Millis::MAX;
            }
        }
    }
}
