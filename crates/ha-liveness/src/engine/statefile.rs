//! The statefile side of the engine: this host's slot, the cycle that
//! writes it and reads every slot, the sfdomain and the age of slots
//! (rules D and F in docs/HA.md), and the global block.

use super::*;

/// How long past its statefile interval a read may take and still count as
/// timely when peers' slots are aged (see [`Engine::sf_age`]).
pub(super) const READ_ALLOWANCE: Millis = 250;

impl Engine {
    // ---- statefile ----

    /// This host's slot as it should be written now.
    pub fn my_slot(&self) -> Slot {
        let mut member_boots = [0; MAX_HOSTS];
        for i in self.current.iter() {
            if let Some(b) = member_boots.get_mut(i) {
                *b = self.obs[i].member_boot;
            }
        }
        Slot {
            sequence: self.sf_sequence,
            index: self.cfg.me,
            boot: self.cfg.boot,
            member_boots,
            excluded: self.excluded,
            starting: self.starting,
            arming: self.starting && self.arming,
            view: self.view(),
            lock_request: self.lock_request,
            lock_grant: self.lock_grant,
            weight: self.cfg.weights.get(self.cfg.me).copied().unwrap_or(0),
            tie: self.published_tie(),
        }
    }

    pub(super) fn statefile_if_due(&mut self, now: Millis) {
        if self.sf_in_flight || now < self.next_sf {
            return;
        }
        self.sf_in_flight = true;
        self.sf_issued_at = now;
        self.sf_sequence += 1;
        let interval = if self.sf_accelerate || self.want_master != self.lock_request {
            (self.cfg.timeouts.sf_interval / 4).max(100)
        } else {
            self.cfg.timeouts.sf_interval
        };
        self.next_sf = now + interval;
        let slot = self.my_slot();
        self.out.push(Command::StatefileCycle {
            slot,
            global: self.pending_global,
        });
    }

    pub(super) fn on_statefile(&mut self, now: Millis, result: Result<StatefileRead, String>) {
        self.sf_in_flight = false;
        let read = match result {
            Ok(read) => self.within_pool_read(read),
            Err(e) => {
                if self.sf_access {
                    self.log(format!("statefile I/O failed: {e}"));
                }
                self.sf_access = false;
                if self.boot == Boot::FirstRead && self.status == Status::Starting {
                    self.stop(Exit::CannotAccessStatefile);
                }
                return;
            }
        };
        if !self.sf_access {
            self.log("statefile access".into());
        }
        self.sf_access = true;
        self.sf_ok_at = Some(now);
        self.sf_prev_written_from = self.sf_written_from;
        self.sf_written_from = Some(self.sf_issued_at);
        self.sf_corrupted = read.global.is_none() || read.slots.contains(&SlotRead::Corrupt);
        if let Some(g) = read.global {
            if g.generation != self.cfg.generation && g.pool_state != PoolState::None {
                if self.pending_global.is_none() {
                    self.stop(Exit::GenerationMismatch);
                    return;
                }
            } else {
                self.global = Some(g);
            }
            // Our pending global write landed when the read shows it. Other
            // hosts write the block too (the pool state): only the master
            // field this host claims for itself must be ours.
            if self.pending_global.is_some_and(|p| landed(&p, &g, self.cfg.me)) {
                self.pending_global = None;
            }
        }
        for (i, s) in read.slots.iter().enumerate().take(self.n) {
            if let SlotRead::Valid(slot) = s {
                if slot.index != i {
                    continue;
                }
                if self.obs[i].seen_seq != Some(slot.sequence) {
                    self.obs[i].seen_seq = Some(slot.sequence);
                    // A member that restarted writes its slot, but is not
                    // the boot of it we hold: it ages out of the sfdomain,
                    // and the fault handler drops it before it may join.
                    let restarted = i != self.cfg.me
                        && self.is_online()
                        && self.current.contains(i)
                        && self.obs[i].member_boot != 0
                        && slot.boot != self.obs[i].member_boot;
                    if !restarted {
                        self.obs[i].last_sf = Some(now);
                    }
                }
                self.obs[i].slot = Some(*slot);
                self.obs[i].slot_read_at = Some(now);
                if self.obs[i].member_boot == 0 || slot.boot == self.obs[i].member_boot {
                    self.obs[i].member_slot = Some(*slot);
                }
            }
        }
        self.feed(now, Watchdog::Statefile);
        self.note_intent(now, &read);
        self.drop_excluded();
        if let Some(g) = self.global {
            if g.pool_state == PoolState::Invalid && self.pending_global.is_none() {
                self.log("the pool state is INVALID: HA was disabled".into());
                self.stop(Exit::InvalidPoolState);
                return;
            }
            if g.pool_state == PoolState::Init && self.status == Status::Online && self.pending_global.is_none() {
                self.stop(Exit::InvalidPoolState);
                return;
            }
        }
        self.update_sfdomain(now);
        self.lock_step();
    }

    /// `read` with every host set and index it carries clipped to this
    /// pool: a slot is only checksummed, so whatever can write the SR
    /// (or a disk returning garbage) could name hosts that do not exist,
    /// and the engine indexes its tables by host (`tests/fuzz.rs`).
    fn within_pool_read(&self, mut read: StatefileRead) -> StatefileRead {
        let all = self.all();
        if let Some(g) = &mut read.global {
            g.master = g.master.filter(|&m| m < self.n);
        }
        for s in &mut read.slots {
            if let SlotRead::Valid(slot) = s {
                slot.view = slot.view.within(all);
                slot.lock_grant = slot.lock_grant.and(all);
            }
        }
        read
    }

    /// Our slot as last read back, if this boot wrote it after its
    /// sequence `seq`: what that write carried has landed, and every slot
    /// read since was read after it.
    pub(super) fn own_slot_after(&self, seq: u64) -> Option<Slot> {
        self.obs[self.cfg.me]
            .slot
            .filter(|s| s.boot == self.cfg.boot && s.sequence > seq)
    }

    /// Rule I, the starting side: note when our `arming` slot landed, and
    /// which ackers a read from then on shows in a fault handler.
    fn note_intent(&mut self, now: Millis, read: &StatefileRead) {
        let fresh_read = |i: usize| match read.slots.get(i) {
            Some(SlotRead::Valid(s)) if s.index == i => Some(*s),
            _ => None,
        };
        // An acker whose slot shows its round over may be armed on again.
        let blocked = self.arm_blocked;
        for i in blocked.iter() {
            if fresh_read(i).is_some_and(|s| !s.view.phase.in_fault_handler()) {
                self.arm_blocked.remove(i);
            }
        }
        if self.arming && self.intent_at.is_none() {
            let landed = self.own_slot_after(self.arming_seq).is_some_and(|s| s.arming);
            if landed {
                self.intent_at = Some(now);
            }
        }
    }

    /// Peers whose slot says they left cleanly (they disarmed before
    /// writing it: a planned shutdown or reboot) leave the liveset at once,
    /// without a fault.
    pub(super) fn drop_excluded(&mut self) {
        if self.status != Status::Online || self.fh.is_some() {
            return;
        }
        let leaving = self.current.and(self.excluded_hosts()).without(self.cfg.me);
        if leaving.is_empty() {
            return;
        }
        let before = self.current;
        self.current = self.current.minus(leaving);
        self.proposed = self.proposed.minus(leaving);
        // Forget its last heartbeat: it must not vouch for the host later,
        // and the host counts its sequence from 0 when it comes back.
        for i in leaving.iter() {
            self.obs[i].peer = None;
            self.obs[i].last_hb = None;
            self.hbdomain.remove(i);
        }
        self.last_hbdomain = self.last_hbdomain.minus(leaving);
        self.last_sfdomain = self.last_sfdomain.minus(leaving);
        self.log(format!(
            "hosts {leaving} left cleanly (excluded): liveset {before} -> {}",
            self.current
        ));
        self.out.push(Command::Liveset(self.current));
    }

    pub(super) fn update_sfdomain(&mut self, now: Millis) {
        let t2 = self.cfg.timeouts.sf_timeout;
        for i in 0..self.n {
            let fresh = self.sf_age(now, i).is_some_and(|age| age < t2)
                && (i != self.cfg.me || self.sf_written_from.is_some_and(|t| now.saturating_sub(t) < t2));
            // For the lock, this host's own slot counts only while every
            // peer surely sees it fresh (rule M).
            let fresh_lock = fresh && (i != self.cfg.me || self.own_slot_surely_fresh(now));
            if i == self.cfg.me && fresh_lock && !self.fresh_slots.contains(i) {
                // Back from a stale slot: this host's reads have said
                // nothing about its peers for a while, and a slot it could
                // not read (corrupt, or not yet read again) is no evidence
                // that its owner stopped. For T2 every peer takes part in
                // the lock (rule M), as in xhad.
                self.lock_resumed_at = Some(now);
            }
            self.fresh_slots.set(i, fresh_lock);
            if i == self.cfg.me && !fresh_lock && self.lock_request {
                // Rule M: a host whose own slot is stale gives up its
                // request; back, it asks again only once every grant to it
                // is withdrawn, so grants given before cannot make it a
                // holder beside one that took the lock meanwhile.
                self.lock_request = false;
                self.lock_grant = HostSet::EMPTY;
                self.lock_baseline.clear();
                self.log("master lock request cancelled: this host's slot is stale".into());
            }
            if fresh {
                if !self.sfdomain.contains(i) && !self.join_block {
                    self.sfdomain.insert(i);
                } else if !self.sfdomain.contains(i) && self.may_regrow(i, Domain::Statefile) {
                    self.sfdomain.insert(i);
                    if let Some(f) = &mut self.fh {
                        f.regrown_sf.insert(i);
                    }
                }
            } else {
                self.sfdomain.remove(i);
            }
        }
        self.lock_unjudged = match self.lock_resumed_at {
            Some(at) if now.saturating_sub(at) < t2 => self.all().without(self.cfg.me),
            _ => HostSet::EMPTY,
        };
        self.detect_degrade(now);
    }

    /// Every peer sees this host's slot fresh now, whatever its reads'
    /// timing (rule M). A peer that has not yet read our latest write
    /// ages the one before, from no earlier than that one's issue; one
    /// that has read the latest ages it from no earlier than its issue. A
    /// peer has surely read the latest write one statefile interval and a
    /// read's allowance after it completed (a peer whose reads are late
    /// stops its aging clock there, `sf_age`). So the slot is surely
    /// fresh while the previous write is younger than T2, or once peers
    /// have read the latest and it is younger than T2. After a freeze or
    /// a stalled cycle the latest write may land just before the previous
    /// one ages out in a peer's eyes, and be read only after: a holder
    /// frozen 9.7 s woke, completed a cycle 50 ms before its old slot aged
    /// out, and held the lock beside the host that took it when that
    /// slot aged out in its eyes 350 ms later (210066561).
    pub(super) fn own_slot_surely_fresh(&self, now: Millis) -> bool {
        let t = &self.cfg.timeouts;
        let latest = self
            .sf_written_from
            .is_some_and(|w| now.saturating_sub(w) < t.sf_timeout);
        let previous = self
            .sf_prev_written_from
            .is_some_and(|w| now.saturating_sub(w) < t.sf_timeout);
        let read_by_peers = self
            .sf_ok_at
            .is_some_and(|c| now.saturating_sub(c) >= t.sf_interval + READ_ALLOWANCE);
        previous || (latest && read_by_peers)
    }

    /// How long slot `i` is taken not to have changed (rule D in
    /// docs/HA.md): from the read that first showed its current sequence.
    /// While this host's own slot is fresh, the age runs on the wall clock
    /// only up to one statefile interval (and a read's normal latency) past
    /// the issue of its latest completed read, as it would with timely
    /// reads; a read stalled in the SR then stops the clock, so it never
    /// ages a peer that kept writing. Once its own slot is stale the host
    /// holds no statefile evidence at all (rule F) and the wall clock ages
    /// every slot.
    pub(super) fn sf_age(&self, now: Millis, i: usize) -> Option<Millis> {
        let seen = self.obs[i].last_sf?;
        let t = &self.cfg.timeouts;
        let clock = match self.sf_written_from {
            Some(read) if i != self.cfg.me && now.saturating_sub(read) < t.sf_timeout => {
                now.min(read + t.sf_interval + READ_ALLOWANCE)
            }
            _ => now,
        };
        Some(clock.saturating_sub(seen))
    }

    /// Peer `i`'s latest heartbeat holds this host in its hbdomain.
    pub(super) fn hears_me(&self, i: usize) -> bool {
        self.obs[i]
            .peer
            .as_ref()
            .is_some_and(|p| p.hb.view.hbdomain.contains(self.cfg.me))
    }

    /// During the fault handler, before this host has taken the snapshot
    /// it decides on, a liveset member (or this host) whose slot is fresh
    /// again comes back into the sfdomain. Views only more accurate than
    /// before are published, so hosts that disagreed about a short stall
    /// converge instead of waiting out the consistent-view step; after the
    /// snapshot the views no longer matter. Joiners stay out (`join_block`).
    /// Views stop growing back once a network peer has taken its snapshot
    /// (it publishes phase 2-done or later): its views no longer grow, and
    /// ours must come to equal them.
    ///
    /// Nor past phase 2 in a round that has seen a peer across a network
    /// split: that peer may have decided on the views this host published
    /// with phase 2, and they must stay the ones it decides on (ha-sim
    /// 40690261: a host regained its own slot after publishing phase 2
    /// without it, and both sides of a 2-host split won).
    ///
    /// The sfdomain stops growing back only for peers that hold their own
    /// slot fresh: a non-holder decides nothing from the statefile (rule
    /// N), so its snapshot's sfdomain is no view anyone must come to equal.
    /// A member whose storage came back just as another lost its own was
    /// taken out again because the storage-lost host decided without it;
    /// the member itself saw its slot fresh, the others waited for it to
    /// agree, and all of them fenced (ha-sim 178000006).
    pub(super) fn may_regrow(&self, i: usize, domain: Domain) -> bool {
        let blockers = match domain {
            Domain::Network => self.snapshotted_peers(),
            Domain::Statefile => self.snapshotted_peers().and(self.peers_with_sf()),
        };
        self.current.contains(i)
            && self
                .fh
                .as_ref()
                .is_some_and(|f| f.snapshot.is_none() && !(self.phase >= Phase::Fh2 && f.sf_only_seen))
            && blockers.is_empty()
    }

    /// Network peers in the fault handler that have taken their snapshot.
    pub(super) fn snapshotted_peers(&self) -> HostSet {
        let me = self.cfg.me;
        self.hbdomain
            .and(self.current)
            .without(me)
            .iter()
            .filter(|&i| self.peer_phase_hb(i).is_some_and(|ph| ph >= Phase::Fh2Done))
            .collect()
    }

    /// A host that grew a view back just before a peer took its snapshot
    /// without it takes it out again: the peer's views are final, and
    /// waiting for them to grow would time out the consistent-view step.
    pub(super) fn undo_regrowth(&mut self) {
        let done = self.snapshotted_peers();
        let Some(fh) = &self.fh else { return };
        if done.is_empty() || fh.snapshot.is_some() {
            return;
        }
        let (mut hb_out, mut sf_out) = (HostSet::EMPTY, HostSet::EMPTY);
        for j in done.iter() {
            let Some(p) = &self.obs[j].peer else { continue };
            hb_out = hb_out.or(fh.regrown_hb.minus(p.hb.view.hbdomain));
            // A non-holder's statefile views decide nothing (rule N).
            if p.hb.view.sfdomain.contains(j) {
                sf_out = sf_out.or(fh.regrown_sf.minus(p.hb.view.sfdomain));
            }
        }
        let hb_out = hb_out.and(self.hbdomain);
        let sf_out = sf_out.and(self.sfdomain);
        if hb_out.is_empty() && sf_out.is_empty() {
            return;
        }
        self.log(format!(
            "peers {done} decided without hosts {} (network) {} (statefile) this host took back: out again",
            hb_out, sf_out
        ));
        self.hbdomain = self.hbdomain.minus(hb_out);
        self.sfdomain = self.sfdomain.minus(sf_out);
    }
}

/// The two ways a host sees its peers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Domain {
    /// Heartbeats (the hbdomain).
    Network,
    /// Slots on the statefile (the sfdomain).
    Statefile,
}

/// Does the global block read `g` carry the pending write `p` of host `me`?
pub(super) fn landed(p: &Global, g: &Global, me: usize) -> bool {
    p.pool_state == g.pool_state && p.generation == g.generation && (p.master != Some(me) || g.master == Some(me))
}
