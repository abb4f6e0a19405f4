//! Starting and joining: the start criteria, forming a liveset (rules J
//! and Q), joining an existing one (rule K), going online (rule O), and
//! taking joiners in.

use super::*;

impl Engine {
    // ---- start and join ----

    pub(super) fn boot_limit(&self) -> Millis {
        let t = &self.cfg.timeouts;
        match self.global.map(|g| g.pool_state) {
            Some(PoolState::Init) => t.enable_join,
            _ => t.boot_join,
        }
    }

    pub(super) fn all(&self) -> HostSet {
        HostSet::first(self.n)
    }

    pub(super) fn boot_step(&mut self, now: Millis) {
        let since = now - self.start_time;
        let t = self.cfg.timeouts;
        match self.boot {
            Boot::FirstRead => {
                if self.sf_ok_at.is_none() {
                    return;
                }
                match self.global.map(|g| g.pool_state) {
                    Some(PoolState::Init) | Some(PoolState::Active) => self.boot = Boot::Discover,
                    Some(PoolState::Invalid) => self.stop(Exit::InvalidPoolState),
                    _ => self.stop(Exit::CannotAccessStatefile),
                }
            }
            Boot::Discover => {
                let hb_up = self.hbdomain == self.all() || since >= t.hb_timeout;
                let sf_up = self.sfdomain == self.all() || since >= t.sf_timeout;
                if hb_up && sf_up {
                    self.boot = Boot::Recognized;
                }
            }
            Boot::Recognized => {
                let me = self.cfg.me;
                let still = (0..self.n).filter(|&i| i != me).any(|i| {
                    (self.hbdomain.contains(i)
                        && self.obs[i]
                            .peer
                            .as_ref()
                            .is_some_and(|p| p.hb.view.current.contains(me)))
                        || (self.sfdomain.contains(i) && self.obs[i].slot.is_some_and(|s| s.view.current.contains(me)))
                });
                if !still {
                    self.log(format!(
                        "no host holds this one in its liveset: hbdomain {} sfdomain {}",
                        self.hbdomain, self.sfdomain
                    ));
                    self.boot = Boot::Criteria;
                } else if since >= self.boot_limit() {
                    self.log("this host is still online from other hosts' perspectives".into());
                    self.stop(Exit::BootJoinTimeout);
                }
            }
            Boot::Criteria => self.start_criteria(now),
            Boot::AllBooted { deadline } => {
                let me = self.cfg.me;
                // Every host of the proposal must ack it freshly: a host
                // that left the hbdomain meanwhile has not booted with us
                // (counting it made a host frozen while forming come back
                // online in a liveset the others had shrunk).
                // And propose exactly the same liveset: hosts that reach
                // different hosts (a one-way cut, a majority formed
                // without a host) must not each form their own.
                // And no acker may be in a fault handler (rule K, as for a
                // join): one that formed first may be deciding across a
                // split on this host's slot, which says it is starting.
                let booted = self.proposed.iter().filter(|&i| i != me).all(|i| {
                    self.fresh_ack(now, i)
                        && self.obs[i]
                            .peer
                            .as_ref()
                            .is_some_and(|p| p.hb.view.proposed == self.proposed && !p.hb.view.phase.in_fault_handler())
                });
                if self.arm_gate(now, booted, self.proposed) {
                    let liveset = self.proposed;
                    self.form_liveset(now, liveset);
                    if self.global.map(|g| g.pool_state) == Some(PoolState::Init) {
                        self.set_pool_state(PoolState::Active);
                    }
                } else if now >= deadline {
                    self.stop(Exit::BootJoinTimeout);
                }
            }
            Boot::Join { deadline } => {
                let me = self.cfg.me;
                // The members may have taken in other hosts, acked other
                // joiners, or dropped hosts since we began to join: we join
                // the liveset the members we hear hold and propose now, and
                // each host in it must ack us. Else two hosts joining at
                // once would each join a liveset without the other, or we
                // would wait for the ack of a host the members dropped
                // while they count us in.
                // A host only some members propose is a join in progress
                // that may never complete (a member that cannot hear it
                // never acks it): it is taken in only once every member
                // heard proposes it, as members take a joiner into their
                // own liveset (`process_join_requests`).
                let members: Vec<&View> = self
                    .current
                    .iter()
                    .filter(|&i| self.hbdomain.contains(i))
                    .filter_map(|i| {
                        self.obs[i]
                            .peer
                            .as_ref()
                            .filter(|p| p.hb.view.current.contains(i))
                            .map(|p| &p.hb.view)
                    })
                    .collect();
                let held = if members.is_empty() {
                    HostSet::EMPTY
                } else {
                    let current = members.iter().fold(HostSet::EMPTY, |acc, v| acc.or(v.current));
                    let proposed = members.iter().fold(self.all(), |acc, v| acc.and(v.proposed));
                    current.or(proposed).without(me)
                };
                if !held.is_empty() && held != self.current {
                    self.log(format!("the liveset changed while joining: now {held}"));
                    self.current = held;
                    self.proposed = held.with(me);
                }
                let member = |i: usize| self.obs[i].peer.as_ref().is_some_and(|p| p.hb.view.current.contains(i));
                // No acker may be in a fault handler (rule K): it may be
                // deciding on this host's slot, which says it is starting,
                // and drop it as a joiner once cut off from it.
                let in_fh = |i: usize| {
                    self.obs[i]
                        .peer
                        .as_ref()
                        .is_some_and(|p| p.hb.view.phase.in_fault_handler())
                };
                let joined = self
                    .current
                    .iter()
                    .filter(|&i| i != me)
                    .all(|i| self.fresh_ack(now, i) && !in_fh(i))
                    && self.current.iter().any(|i| i != me && member(i));
                if self.arm_gate(now, joined, self.current) {
                    self.current.insert(me);
                    self.note_members(self.current);
                    self.log(format!("joined the liveset {}", self.current));
                    self.online(now);
                } else if now >= deadline {
                    self.proposed.remove(me);
                    self.stop(Exit::CannotJoin);
                }
            }
        }
    }

    /// Rule I (intent): a starting host arms only on acks that no acker
    /// can still take back without seeing it. `ready` says whether the
    /// acks it needs hold now; `ackers` are the hosts they come from. The
    /// host first publishes `arming` in its slot, and arms once that slot
    /// has landed and a read from then on shows every acker whose slot is
    /// fresh outside a fault handler. An acker deciding in a fault handler
    /// treats this host as a joiner it may drop only on a slot without
    /// `arming`, read after its own fault-handler phase landed: of two
    /// hosts that each write, then read, at least one sees the other's
    /// write, so they cannot both go ahead (140124492's heartbeat form of
    /// this race left a window of T/2: 170162212). What this host reads
    /// after its intent landed shows the acker's fault handler, or its
    /// outcome: the host must still be in the acker's proposal there.
    pub(super) fn arm_gate(&mut self, now: Millis, ready: bool, ackers: HostSet) -> bool {
        let me = self.cfg.me;
        let ackers = ackers.without(me);
        let blocked = ackers.and(self.arm_blocked);
        if !ready || !blocked.is_empty() {
            if self.arming {
                self.arming = false;
                self.intent_at = None;
                if !blocked.is_empty() {
                    self.log(format!(
                        "not arming: hosts {blocked} are in a fault handler on the statefile"
                    ));
                }
            }
            return false;
        }
        if !self.arming {
            self.arming = true;
            self.arming_seq = self.sf_sequence;
            self.intent_at = None;
            self.next_sf = self.next_sf.min(now);
            return false;
        }
        let Some(at) = self.intent_at else { return false };
        let mut waiting = false;
        for i in ackers.iter().filter(|&i| self.sfdomain.contains(i)) {
            let read_since = self.obs[i].slot_read_at.is_some_and(|t| t >= at);
            let slot = self.obs[i].slot;
            let in_fh = slot.is_some_and(|s| s.view.phase.in_fault_handler());
            // The ack must still stand in a slot read since the intent
            // landed: an acker whose fault handler ended before then may
            // have decided to drop this host without seeing the intent
            // (its slot was stale to it: 240020372). Such a slot shows
            // the decision: this host out of its proposal.
            let still_acks = slot.is_some_and(|s| s.view.proposed.contains(me));
            if read_since && in_fh {
                self.arm_blocked.insert(i);
            } else if !read_since || !still_acks {
                waiting = true;
            }
        }
        let blocked = ackers.and(self.arm_blocked);
        if !blocked.is_empty() {
            self.arming = false;
            self.intent_at = None;
            self.log(format!(
                "not arming: hosts {blocked} are in a fault handler on the statefile"
            ));
            return false;
        }
        !waiting
    }

    /// Host `i` proposes this host in its latest heartbeat, and that
    /// heartbeat is recent: after this host was frozen, the acks it read
    /// before may be withdrawn already.
    pub(super) fn fresh_ack(&self, now: Millis, i: usize) -> bool {
        // After a stall, the heartbeats that waited in the socket come
        // first: an ack counts only from one received a heartbeat interval
        // past the wake's grace, sent after this host woke. A joiner frozen
        // 69 s right after its ack woke to its acker's queued heartbeats
        // and armed, while the acker, cut off since, had dropped it (ha-sim
        // --timeout 60, 242512975).
        let since_wake = self
            .woke_at
            .map_or(0, |w| w + WAKE_GRACE + self.cfg.timeouts.hb_interval);
        let recent = self.obs[i]
            .last_hb
            .is_some_and(|t| now.saturating_sub(t) < self.cfg.timeouts.hb_timeout / 2 && t >= since_wake);
        recent
            && self.obs[i]
                .peer
                .as_ref()
                .is_some_and(|p| p.hb.view.proposed.contains(self.cfg.me))
    }

    pub(super) fn start_criteria(&mut self, now: Millis) {
        let since = now - self.start_time;
        let limit = self.boot_limit();
        let state = self.global.map(|g| g.pool_state).unwrap_or(PoolState::None);
        if !self.sf_access {
            self.stop(Exit::CannotAccessStatefile);
            return;
        }
        let starting: HostSet = (0..self.n)
            .filter(|&i| self.obs[i].slot.is_some_and(|s| s.starting))
            .collect();
        let excluded = self.excluded_hosts();
        let nonstarting = self.sfdomain.minus(starting).minus(HostSet::single(self.cfg.me));
        let exists = !nonstarting.is_empty() || (self.sr2 && self.hbdomain.or(excluded) == self.all());
        match (state, exists) {
            (PoolState::Init, true) => self.stop(Exit::InvalidPoolState),
            (PoolState::Init | PoolState::Active, false) => {
                if self.hbdomain == self.all() && self.sfdomain == self.all() {
                    self.proposed = self.hbdomain;
                    self.log(format!("forming a new liveset with all hosts {}", self.proposed));
                    let t = &self.cfg.timeouts;
                    self.boot = Boot::AllBooted {
                        deadline: self.start_time + limit + 3 * t.hb_interval.max(t.sf_interval),
                    };
                    self.hb_burst = 3;
                } else if since >= limit {
                    if let (PoolState::Active, Some(majority)) = (state, self.majority_reached()) {
                        if since >= self.majority_wait() {
                            self.proposed = majority;
                            self.log(format!(
                                "forming a new liveset with the hosts it reaches, a majority of the pool: {majority}"
                            ));
                            self.boot = Boot::AllBooted { deadline: now + limit };
                            self.hb_burst = 3;
                        }
                    } else if state == PoolState::Init {
                        self.stop(Exit::BootJoinTimeout);
                    } else if self.excluded && excluded != self.all() {
                        self.stop(Exit::BootBlockedByExcluded);
                    } else {
                        self.stop(Exit::BootFailed);
                    }
                }
            }
            (PoolState::Active, true) => {
                if let Some(first) = nonstarting.lowest() {
                    if let Some(s) = self.obs[first].slot {
                        // Only a liveset formed with this host in it: one
                        // that still lists it from before it rebooted (the
                        // holder's slot was out of sight while this host
                        // waited to be forgotten) is being shrunk, and
                        // says so in `proposed` or its phase.
                        // And it must list this boot of this host: a slot
                        // written late (slow I/O) can list an earlier one.
                        let me = self.cfg.me;
                        let listed = s.view.current.contains(me)
                            && s.view.proposed.contains(me)
                            && !s.view.phase.in_fault_handler()
                            && s.member_boots.get(me) == Some(&self.cfg.boot);
                        if self.arm_gate(now, listed, HostSet::single(first)) {
                            self.form_liveset(now, s.view.current);
                            return;
                        }
                        if listed {
                            return;
                        }
                    }
                }
                if self.sfdomain.is_subset(self.hbdomain) {
                    // The liveset as its members publish it: it may hold
                    // hosts kept without the statefile, seen only there.
                    let published = self
                        .hbdomain
                        .iter()
                        .filter(|&i| i != self.cfg.me)
                        .filter_map(|i| self.obs[i].peer.as_ref())
                        .filter(|p| p.hb.view.current.contains(p.hb.from))
                        .fold(HostSet::EMPTY, |acc, p| acc.or(p.hb.view.current));
                    self.current = self.sfdomain.minus(starting).or(published).without(self.cfg.me);
                    self.proposed = self.current.with(self.cfg.me);
                    self.log(format!("joining the existing liveset {}", self.current));
                    self.hb_burst = 3;
                    self.boot = Boot::Join {
                        deadline: now + self.cfg.timeouts.boot_join,
                    };
                } else if since >= limit {
                    self.log(format!(
                        "cannot join: hosts {nonstarting} write member slots, and hosts {} are seen only on the statefile",
                        self.sfdomain.minus(self.hbdomain)
                    ));
                    self.stop(Exit::CannotJoin);
                }
            }
            _ => self.stop(Exit::InvalidPoolState),
        }
    }

    /// The hosts to form a liveset with when not all of them came up
    /// (rule Q in docs/HA.md): with the pool active and nobody online, the
    /// hosts this one reaches on both channels, if they are a strict
    /// majority of the pool and none of them is heard online. Two strict
    /// majorities share a host, and a host forms at most one liveset a
    /// boot, so two such livesets cannot both form.
    pub(super) fn majority_reached(&self) -> Option<HostSet> {
        let me = self.cfg.me;
        let reached = self.hbdomain.and(self.sfdomain).with(me);
        let heard_online = self
            .hbdomain
            .iter()
            .filter(|&i| i != me)
            .any(|i| self.obs[i].peer.as_ref().is_some_and(|p| p.hb.view.current.contains(i)));
        (reached.len() * 2 > self.n && !heard_online && self.sf_access).then_some(reached)
    }

    /// How long after its start a host waits before it forms a majority
    /// liveset: the boot limit, and at least a full detection and fence
    /// wait, so that a host still armed from before, out of reach, has
    /// fenced by then (unless it writes a slot that says it is a member:
    /// then this host joins it instead).
    pub(super) fn majority_wait(&self) -> Millis {
        let t = &self.cfg.timeouts;
        self.boot_limit()
            .max(t.hb_timeout.max(t.sf_timeout) + t.fence_wait(true))
    }

    pub(super) fn form_liveset(&mut self, now: Millis, liveset: HostSet) {
        self.proposed = liveset;
        self.current = liveset;
        self.note_members(liveset);
        self.join = false;
        self.log(format!("formed the liveset {liveset}"));
        self.online(now);
    }

    /// Record which boot of each of `hosts` is now in the liveset: the
    /// newer of the one heard on the network and the one seen in its slot
    /// (a host's boots only grow).
    pub(super) fn note_members(&mut self, hosts: HostSet) {
        for i in hosts.iter().filter(|&i| i < self.n) {
            self.obs[i].member_boot = self.latest_boot(i);
        }
    }

    pub(super) fn online(&mut self, now: Millis) {
        self.starting = false;
        self.arming = false;
        self.intent_at = None;
        self.excluded = false;
        self.join = false;
        self.status = Status::Online;
        self.phase = Phase::Started;
        // Every liveset member counts as heard until shown otherwise: one
        // this host does not hear as it goes online (it formed the liveset
        // from a slot, or a member fell silent as it joined) leaves the
        // hbdomain at the next tick, and the fault handler judges it.
        self.last_hbdomain = self.hbdomain.or(self.current);
        self.last_sfdomain = self.sfdomain;
        self.armed = true;
        self.feed(now, Watchdog::Heartbeat);
        if self.sf_access {
            self.feed(now, Watchdog::Statefile);
        }
        self.out.push(Command::Arm);
        self.out.push(Command::Liveset(self.current));
        self.hb_burst = 3;
        self.next_sf = now;
        self.log(format!("online, fencing armed; liveset {}", self.current));
    }

    /// Members ack and take in joining hosts (xhad's `process_join_request`).
    pub(super) fn process_join_requests(&mut self) {
        if self.current.is_empty() {
            return;
        }
        let me = self.cfg.me;
        let mut joining = HostSet::EMPTY;
        // A host whose slot still says it left is not back yet.
        let left = self.excluded_hosts();
        for i in 0..self.n {
            if i == me || !self.hbdomain.contains(i) || left.contains(i) {
                continue;
            }
            let Some(p) = &self.obs[i].peer else { continue };
            let (pc, pp) = (p.hb.view.current, p.hb.view.proposed);
            if !pc.contains(i) && pp.contains(i) {
                if !self.join_block && (self.sfdomain.contains(i) || self.sr2) && !self.proposed.contains(i) {
                    self.proposed.insert(i);
                    self.out.push(Command::Log(format!("ack the join request of host {i}")));
                }
                if !self.current.contains(i) {
                    let allowed = self.current.iter().all(|j| {
                        if j == me {
                            self.proposed.contains(i)
                        } else {
                            self.obs[j]
                                .peer
                                .as_ref()
                                .is_some_and(|q| q.hb.view.proposed.contains(i))
                        }
                    });
                    if allowed {
                        joining.insert(i);
                    }
                }
            } else if pc.contains(i) && !self.current.contains(i) && !self.join_block {
                // A member in its own eyes (its join completed on other
                // members first): taken in on statefile evidence only, its
                // slot fresh and showing this boot of it a member, so that
                // no heartbeat alone, however it got here, brings a host
                // back (issue 26).
                let boot = p.hb.boot;
                let evidence = self.sr2
                    || !self.cfg.replay_guard
                    || (self.sfdomain.contains(i)
                        && self.obs[i]
                            .slot
                            .is_some_and(|s| s.boot == boot && !s.starting && s.view.current.contains(i)));
                if evidence {
                    self.proposed.insert(i);
                    joining.insert(i);
                }
            }
        }
        if !joining.is_empty() {
            self.current = self.current.or(joining);
            self.note_members(joining);
            self.last_hbdomain = self.last_hbdomain.or(joining.and(self.hbdomain));
            self.last_sfdomain = self.last_sfdomain.or(joining.and(self.sfdomain));
            self.log(format!(
                "Liveset has been updated: {joining} joined, now {}",
                self.current
            ));
            self.out.push(Command::Liveset(self.current));
            self.hb_burst = self.hb_burst.max(2);
        }
    }
}
