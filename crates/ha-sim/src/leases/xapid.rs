//! A host's `xapid` in the lease world: renewals, observing peers'
//! leases, taking VMs (steps 1 to 4 of `docs/LEASES.md`), and a paused
//! guest's look for later instances.

use ha_lease::host::Observer;
use ha_lease::paxos::{Next, Outcome, Owner, Round};
use ha_lease::vm::{self, LeaseRecord};
use rand::Rng;

use super::storage::{fenced_of, released_of, split, vm_files, File, Purpose, Value};
use super::{Acquiring, Guest, GuestState, LeaseWorld, Millis, ACQUIRE_EVERY, RELEASE_EVERY};

impl LeaseWorld {
    pub(super) fn host_step(&mut self, h: usize) {
        let host = &self.hosts[h];
        if !host.up || self.now < host.frozen_until {
            return;
        }
        if self.cfg.real_guests {
            self.marks_after_exit(h);
        }
        if !self.hosts[h].up || self.hosts[h].fencing {
            return;
        }
        self.maybe_release(h);
        let local = self.local(h);
        let t = self.cfg.timing;
        let n = self.hosts.len();
        if !self.hosts[h].renewing && local >= self.hosts[h].next_renew {
            let host = &mut self.hosts[h];
            host.renewing = true;
            host.next_renew = local + t.renew_every;
            host.counter += 1;
            let rec = LeaseRecord {
                boot: host.boot,
                counter: host.counter,
            };
            self.issue(
                h,
                Purpose::Renew,
                vec![(File::Lease(h), Value::Lease(Some(rec)))],
                vec![],
            );
        }
        if local >= self.hosts[h].next_observe {
            self.hosts[h].next_observe = local + t.renew_every;
            for p in (0..n).filter(|&p| p != h) {
                if !self.hosts[h].observing[p] {
                    self.hosts[h].observing[p] = true;
                    self.issue(h, Purpose::Observe(p), vec![], vec![File::Lease(p)]);
                }
            }
        }
        // Paused guests whose lease is held again, by a renewal issued
        // after the pause, look for later instances.
        for vm in 0..self.cfg.vms {
            let Some(g) = self.hosts[h].guests[vm] else { continue };
            let GuestState::Paused { since } = g.state else {
                continue;
            };
            let renewed_after = self.hosts[h]
                .holder
                .deadline()
                .is_some_and(|d| d.saturating_sub(t.d) >= since && local < d);
            if renewed_after && !g.checking {
                if let Some(g) = &mut self.hosts[h].guests[vm] {
                    g.checking = true;
                }
                self.issue(h, Purpose::Resume(vm), vec![], vm_files(vm, n));
            }
        }
        if self.hosts[h].acquiring.is_none() && local >= self.hosts[h].next_acquire {
            let jitter = self.rng.random_range(0..ACQUIRE_EVERY);
            let host = &mut self.hosts[h];
            host.next_acquire = local + ACQUIRE_EVERY / 2 + jitter;
            let vm = host.next_vm % self.cfg.vms.max(1);
            host.next_vm += 1;
            let wanted = self
                .driven
                .as_ref()
                .is_none_or(|w| w[h].get(vm).copied().unwrap_or(false));
            // Real guests: not while an earlier guest of it still runs here.
            let exiting = self.cfg.real_guests && self.vm_writing_on(h, vm);
            let host = &mut self.hosts[h];
            if self.cfg.vms > 0 && host.guests[vm].is_none() && wanted && !exiting {
                host.acquiring = Some(Acquiring {
                    from: (0, None),
                    judged: None,
                    round: None,
                    decided: None,
                    released: false,
                    began: local,
                });
                self.issue(h, Purpose::ReadOwner(vm), vec![], vm_files(vm, n));
            }
        }
    }

    /// Now and then a host stops a running guest and marks its VM
    /// released: the guest first, then the mark (`docs/LEASES.md`,
    /// "Release").
    pub(super) fn maybe_release(&mut self, h: usize) {
        if self.cfg.vms == 0 || !self.rng.random_bool(super::STEP as f64 / RELEASE_EVERY as f64) {
            return;
        }
        let vm = self.rng.random_range(0..self.cfg.vms);
        let Some(g) = self.hosts[h].guests[vm] else { return };
        if g.state != GuestState::Running || g.checking {
            return;
        }
        if !self.cfg.broken.release_early {
            self.hosts[h].guests[vm] = None;
        }
        self.report.released += 1;
        let spent = &mut self.hosts[h].released[vm];
        *spent = (*spent).max(g.instance);
        self.note(format!("host {h} stops VM {vm} and releases instance {}", g.instance));
        if self.cfg.real_guests && !self.cfg.broken.release_early {
            // The mark once the process has exited (`disk.rs`).
            self.hosts[h].releasing.push((vm, g.id, g.instance));
        } else {
            self.mark_released(h, vm, g.instance);
        }
    }

    /// Write host `h`'s released mark for `vm` at `instance`.
    pub(super) fn mark_released(&mut self, h: usize, vm: usize, instance: u64) {
        let mark = Some((instance, self.hosts[h].boot));
        self.issue(
            h,
            Purpose::Release(vm),
            vec![(File::Released { vm, host: h }, Value::Released(mark))],
            vec![],
        );
    }

    /// A released mark landed (or failed): with [`super::Broken::release_early`],
    /// the guest stops only now.
    pub(super) fn on_release(&mut self, h: usize, vm: usize) {
        if self.cfg.broken.release_early {
            self.hosts[h].guests[vm] = None;
        }
    }

    /// Step 1: whose is the VM, and may this host take it?
    pub(super) fn on_read_owner(&mut self, h: usize, vm: usize, ok: bool, got: &[(File, Value)]) {
        let n = self.hosts.len();
        let (blocks, owners) = split(got, n);
        let boot = self.hosts[h].boot;
        // An instance this host released is spent, even if the owner
        // files lag behind it (the owner-file write failed): running a
        // guest under it again would make this host's own mark a lie
        // (seed 3062093 of the lease world's first sweep with releases).
        let spent = self.hosts[h].released[vm];
        let current = match vm::owner_of(&owners) {
            Some((k, o)) if k >= spent => Some((k, o)),
            _ if spent > 0 => Some((spent, Owner { host: h as u16, boot })),
            none => none,
        };
        let seen = blocks.iter().flatten().map(|b| b.mbal).max().unwrap_or(0);
        self.hosts[h].seen[vm] = self.hosts[h].seen[vm].max(seen);
        let marks = released_of(got, n);
        let fenced = fenced_of(got, n);
        // Released by its owner, or its owner's boot fenced: its guest is
        // gone, and that boot never runs it again.
        let released = current.is_some_and(|(k, o)| {
            marks[o.host as usize] == Some((k, o.boot)) || fenced[o.host as usize] == Some(o.boot)
        });
        let free = ok
            && match current {
                None => true,
                // This host owns it but runs no guest of it (it never
                // started, or its guest was killed): it acquires the next
                // instance from itself, and Paxos settles it with anyone
                // who took the VM meanwhile.
                Some((_, o)) if o.host as usize == h => true,
                Some(_) if released => true,
                Some((_, o)) => {
                    let p = o.host as usize;
                    vm::may_take(o, self.hosts[h].records[p], self.observer_for(h, p))
                }
            };
        if !free {
            self.hosts[h].acquiring = None;
            return;
        }
        let (k, from) = current.map_or((0, None), |(k, o)| (k, Some(o)));
        let judged = from.and_then(|o| self.hosts[h].records[o.host as usize]);
        let me = Owner { host: h as u16, boot };
        let own = self.sr.blocks[vm][h].unwrap_or_default();
        let (round, next) = Round::start(h, n, k + 1, me, own, self.hosts[h].seen[vm]);
        if let Some(a) = &mut self.hosts[h].acquiring {
            a.from = (k, from);
            a.judged = judged;
            a.round = Some(round);
            a.released = released;
        }
        self.paxos_next(h, vm, next);
    }

    /// The observer this host judges peer `p` by: its own, or a broken one
    /// that waits a shorter time.
    pub(super) fn observer_for(&self, h: usize, p: usize) -> &Observer {
        match self.cfg.broken.observer_l {
            None => &self.hosts[h].observers[p],
            Some(_) => &self.hosts[h].short_observers[p],
        }
    }

    pub(super) fn paxos_next(&mut self, h: usize, vm: usize, next: Next) {
        let n = self.hosts.len();
        match next {
            Next::Write(b) => {
                let writes = vec![(File::Block { vm, host: h }, Value::Block(Some(b)))];
                let reads = (0..n).map(|host| File::Block { vm, host }).collect();
                self.issue(h, Purpose::Paxos(vm), writes, reads);
            }
            Next::Done(Outcome::Decided(v)) => {
                if let Some(a) = &mut self.hosts[h].acquiring {
                    a.decided = Some(v);
                }
                // Step 4, for any value decided (this host's or one it
                // adopted): read the old owner's lease again.
                let from = self.hosts[h].acquiring.as_ref().and_then(|a| a.from.1);
                let reads = from.map(|o| vec![File::Lease(o.host as usize)]).unwrap_or_default();
                self.issue(h, Purpose::Recheck(vm), vec![], reads);
            }
            Next::Done(Outcome::Aborted { seen, .. }) => {
                self.hosts[h].seen[vm] = self.hosts[h].seen[vm].max(seen);
                self.hosts[h].acquiring = None;
            }
        }
    }

    /// Write the decided owner of the instance this host's acquisition
    /// ran into its owner file.
    pub(super) fn record_owner(&mut self, h: usize, vm: usize) {
        let Some(a) = &self.hosts[h].acquiring else { return };
        let Some(v) = a.decided else { return };
        let k = a.from.0 + 1;
        let writes = vec![(File::Owner { vm, host: h }, Value::Owner(Some((k, v))))];
        self.issue(h, Purpose::Record, writes, vec![]);
    }

    pub(super) fn on_paxos(&mut self, h: usize, vm: usize, ok: bool, got: &[(File, Value)]) {
        let n = self.hosts.len();
        if !ok {
            self.hosts[h].acquiring = None;
            return;
        }
        let (blocks, _) = split(got, n);
        let Some(round) = self.hosts[h].acquiring.as_mut().and_then(|a| a.round.as_mut()) else {
            return;
        };
        let next = round.on_read(&blocks);
        self.paxos_next(h, vm, next);
    }

    /// Step 4: record the decided owner, and start the guest if it is this
    /// host, only if the old owner's lease did not move since it was judged
    /// free. If it moved, the owner came back and may run its guest again
    /// (its look for later instances may have come before any block of
    /// this instance landed): nobody may treat this instance as owned, or a
    /// later acquirer would take the VM from its new owner while the old
    /// one runs it. The owner files keep naming the old owner, whose lease
    /// is alive; the instance is decided again (the same value) once the
    /// old owner is really gone. This holds for a value adopted from
    /// another host as much as for this host's own (ha-sim's lease world
    /// found both).
    pub(super) fn on_recheck(&mut self, h: usize, vm: usize, ok: bool, got: &[(File, Value)]) {
        let Some(a) = self.hosts[h].acquiring.clone() else {
            return;
        };
        let me = Owner {
            host: h as u16,
            boot: self.hosts[h].boot,
        };
        let now_rec = got.iter().find_map(|(_, v)| match v {
            Value::Lease(r) => Some(*r),
            _ => None,
        });
        let unchanged = ok
            && (self.cfg.broken.recheck_skipped
                || a.released
                || match a.from.1 {
                    None => true,
                    Some(o) if o.host as usize == h => true,
                    Some(o) => {
                        let dead_boot = now_rec.flatten().is_some_and(|r| r.boot > o.boot);
                        dead_boot || now_rec.flatten() == a.judged
                    }
                });
        if !unchanged {
            if ok {
                self.note(format!(
                    "host {h} decided VM {vm} instance {} for {:?} but the old owner's lease moved: not recording it",
                    a.from.0 + 1,
                    a.decided
                ));
            }
            self.hosts[h].acquiring = None;
            return;
        }
        self.record_owner(h, vm);
        self.hosts[h].acquiring = None;
        if a.decided != Some(me) {
            return;
        }
        // A host that decided to fence starts nothing: its guests are gone
        // and stay so (in `xapid`, the gate is shut from the fence on; a
        // lease world without this rule broke on seed 5191772).
        if self.hosts[h].fencing {
            return;
        }
        // Nor one whose own lease lapsed since step 1: others may have
        // taken the VM from it meanwhile, from an instance above the one
        // it decided (seed 5228502). It tries again later, from itself.
        let local = self.local(h);
        if !self.cfg.broken.lapse_ignored && !self.hosts[h].holder.held_since(a.began, local) {
            self.note(format!(
                "host {h} decided VM {vm} instance {} but its own lease lapsed meanwhile: not starting it",
                a.from.0 + 1
            ));
            return;
        }
        if self.cfg.real_guests && self.vm_writing_on(h, vm) {
            self.note(format!(
                "host {h} decided VM {vm} instance {} but an earlier guest of it has not exited here: not starting it",
                a.from.0 + 1
            ));
            return;
        }
        let held = self.hosts[h].holder.holds(local);
        let id = self.next_guest;
        self.next_guest += 1;
        self.hosts[h].guests[vm] = Some(Guest {
            id,
            instance: a.from.0 + 1,
            state: if held {
                GuestState::Running
            } else {
                GuestState::Paused { since: self.local(h) }
            },
            checking: false,
        });
        self.report.takeovers += 1;
        self.note(format!(
            "host {h} starts VM {vm} (instance {}, from {:?})",
            a.from.0 + 1,
            a.from.1
        ));
    }

    pub(super) fn on_resume(&mut self, h: usize, vm: usize, ok: bool, got: &[(File, Value)], issued: Millis) {
        let n = self.hosts.len();
        let Some(g) = self.hosts[h].guests[vm] else { return };
        if let Some(g) = &mut self.hosts[h].guests[vm] {
            g.checking = false;
        }
        let GuestState::Paused { since } = g.state else { return };
        if !ok || issued < since {
            return;
        }
        let (blocks, owners) = split(got, n);
        let later = !vm::may_resume(g.instance, &blocks, &owners);
        let local = self.local(h);
        if later && !self.cfg.broken.resume_unchecked {
            self.hosts[h].guests[vm] = None;
            self.report.killed += 1;
            self.note(format!(
                "host {h} kills its paused guest of VM {vm}: a later instance exists"
            ));
        } else if self.hosts[h].holder.holds(local) {
            if let Some(g) = &mut self.hosts[h].guests[vm] {
                g.state = GuestState::Running;
            }
            self.report.resumed += 1;
            self.note(format!("host {h} resumes VM {vm}"));
        }
    }
}
