//! The fault handler's frame: noticing a fault, the budget and its
//! extensions (rules B and E), and the steps a round goes through, with
//! their rendezvous. What it decides is in `decide`.

use super::*;

/// One step of the fault handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// Publish `set`, then wait until every peer seen is in `set` or `next`.
    Rendezvous {
        set: Phase,
        next: Phase,
        on_sf: bool,
    },
    /// Wait until no host in the domains is stale but not yet timed out.
    Stable,
    /// Wait until every peer seen has the same views.
    Consistent,
    Survival,
    /// Push the losers out and wait for their watchdogs.
    Degrade,
}

pub(super) const FH_STEPS: [Step; 14] = [
    Step::Rendezvous {
        set: Phase::FhReady,
        next: Phase::Fh1,
        on_sf: false,
    },
    Step::Rendezvous {
        set: Phase::Fh1,
        next: Phase::Fh1Done,
        on_sf: false,
    },
    Step::Stable,
    Step::Rendezvous {
        set: Phase::Fh1Done,
        next: Phase::Fh2,
        on_sf: true,
    },
    Step::Rendezvous {
        set: Phase::Fh2,
        next: Phase::Fh2Done,
        on_sf: true,
    },
    Step::Consistent,
    Step::Rendezvous {
        set: Phase::Fh2Done,
        next: Phase::Fh3,
        on_sf: false,
    },
    Step::Rendezvous {
        set: Phase::Fh3,
        next: Phase::Fh3Done,
        on_sf: false,
    },
    Step::Survival,
    Step::Rendezvous {
        set: Phase::Fh3Done,
        next: Phase::Fh4,
        on_sf: false,
    },
    Step::Rendezvous {
        set: Phase::Fh4,
        next: Phase::Fh4Done,
        on_sf: false,
    },
    Step::Degrade,
    Step::Rendezvous {
        set: Phase::Fh4Done,
        next: Phase::Started,
        on_sf: false,
    },
    Step::Rendezvous {
        set: Phase::Started,
        next: Phase::FhReady,
        on_sf: false,
    },
];

/// A running fault handler.
#[derive(Debug, Clone)]
pub(super) struct Fh {
    pub(super) step: usize,
    /// When the current step began.
    pub(super) step_start: Millis,
    pub(super) started: Millis,
    /// When phase 3 began.
    pub(super) p3: Millis,
    /// When phase 4's wait began, once it did.
    pub(super) p4: Option<Millis>,
    /// The views frozen when they became consistent.
    pub(super) snapshot: Option<Snapshot>,
    pub(super) outcome: Option<Outcome>,
    /// A host this round drops was, by its slot, past the survival test of
    /// a round of its own: maybe an earlier one, which it must finish
    /// before it judges this fault, so it may fence later than usual.
    pub(super) late_loser: bool,
    /// A host this round drops was last heard alive without the statefile
    /// (kept by the holders it heard): nothing on the statefile says when
    /// it stopped hearing this host, so it may notice up to T1 later than
    /// this host did (rule W).
    pub(super) unheard_nonholder: bool,
    /// Members this round has seen fail (out of a domain, or silent on the
    /// network for [`Engine::suspect_after`]): a member failing anew before
    /// phase 2 restarts the round's clock, once per member.
    pub(super) failed: HostSet,
    /// This round has seen a liveset member on the statefile only (across
    /// a network split): from then on a second failure past phase 2 does
    /// not extend the budget.
    pub(super) split_seen: bool,
    /// This round has seen a liveset member on the statefile only, written
    /// lately or not (the conservative form of `split_seen`).
    pub(super) sf_only_seen: bool,
    /// Members this round took back into a domain (`may_regrow`).
    pub(super) regrown_hb: HostSet,
    pub(super) regrown_sf: HostSet,
    /// The members `keep_fully_connected` last left out of the hbdomain
    /// (for its log: they grow back when heard, and are cut again).
    pub(super) not_fully_connected: HostSet,
    /// The tie-break values this host publishes during the round: those it
    /// had when the round began.
    pub(super) tie: TieBreak,
    /// `sf_sequence` when the round began: a read-back slot of ours with a
    /// higher sequence and a fault-handler phase shows the round on the
    /// statefile (rule I).
    pub(super) sf_seq_at_start: u64,
    /// When a fault was first noticed after the views were frozen.
    pub(super) after_snapshot: Option<Millis>,
    /// The members whose failure was noticed after the views were frozen.
    pub(super) failed_after_snapshot: HostSet,
    /// A member the survival test kept failed since: end the round
    /// without its decision.
    pub(super) abandon: bool,
    /// The budget ran out once in this round and its clock started again
    /// (`Engine::extend_at_budget_end`).
    pub(super) extended_at_end: bool,
}

#[derive(Debug, Clone)]
pub(super) struct Snapshot {
    /// This host reached the statefile and saw its own slot fresh.
    pub(super) sf_access: bool,
    pub(super) hbdomain: HostSet,
    pub(super) sfdomain: HostSet,
    pub(super) peers_with_sf: HostSet,
    pub(super) published: Vec<Option<(HostSet, HostSet)>>,
    /// Per host, its tie-break values: ours as we publish them, a network
    /// peer's from its heartbeat, another's from its slot.
    pub(super) ties: Vec<Option<TieBreak>>,
    /// Hosts whose slot says they are starting (booting or joining).
    pub(super) joiners: HostSet,
    /// See [`Engine::claimants`].
    pub(super) claimants: HostSet,
    pub(super) excluded: HostSet,
    /// See [`crate::rules::Views::heard_unarmed`].
    pub(super) heard_unarmed: HostSet,
    pub(super) members: HostSet,
}

impl Engine {
    // ---- fault detection ----

    pub(super) fn detect_degrade(&mut self, now: Millis) {
        let mut hb_out = HostSet::EMPTY;
        let mut sf_out = HostSet::EMPTY;
        for i in 0..self.n {
            if self.hbdomain.contains(i) {
                self.last_hbdomain.insert(i);
            } else if self.last_hbdomain.contains(i) {
                self.last_hbdomain.remove(i);
                hb_out.set(i, self.current.contains(i));
            }
            if self.sfdomain.contains(i) {
                self.last_sfdomain.insert(i);
            } else if self.last_sfdomain.contains(i) {
                self.last_sfdomain.remove(i);
                sf_out.set(i, self.current.contains(i));
            }
        }
        if self.sr2 || self.storage_lost {
            sf_out = HostSet::EMPTY;
        }
        let mut failed = hb_out.or(sf_out);
        // Rule Y: a host outside the network partition of this round's
        // frozen views is dropped by the round whatever else happens to it
        // (a winner keeps only hosts of its hbdomain; a loser fences). Its
        // later failures are no new fault: counting one started a clock
        // that this round's fence wait outlasted (ha-sim 240200787).
        if let Some(snap) = self.fh.as_ref().and_then(|f| f.snapshot.as_ref()) {
            failed = failed.and(snap.hbdomain);
        }
        if !failed.is_empty() && self.is_online() {
            self.request_fh(now, false, failed);
            self.abandon_if_kept_failed(now, failed);
        }
    }

    /// A member this round's survival test kept fails, or starts a new
    /// round, before this round ends (rule L in docs/HA.md): the budget's
    /// clock starts now, and the round ends at its next step without
    /// dropping anyone, so that the next round decides within the budget. Waiting out this round (its
    /// winners wait `fence_wait` before dropping) would start the clock
    /// only when it ends, later than peers that noticed the same failure
    /// may drop this host.
    pub(super) fn abandon_if_kept_failed(&mut self, now: Millis, failed: HostSet) {
        let Some(fh) = &mut self.fh else { return };
        if fh.outcome.is_none() || failed.and(self.proposed).is_empty() {
            return;
        }
        fh.abandon = true;
        self.need_fh = true;
        if self.armed && self.trouble_since.is_none() {
            self.start_clock(now, now);
        }
    }

    /// A fault was noticed: `failed`, the members that failed.
    pub(super) fn request_fh(&mut self, now: Millis, forced: bool, failed: HostSet) {
        if forced && self.phase != Phase::Started {
            return;
        }
        let early = matches!(
            self.phase,
            Phase::FhReady | Phase::Fh1 | Phase::Fh1Done | Phase::Fh2 | Phase::Fh2Done
        );
        // A fault noticed after this round's survival test waits for the
        // next round; its clock starts when this round ends.
        let decided = self.fh.as_ref().is_some_and(|f| f.outcome.is_some());
        if self.trouble_since.is_none() && self.armed && !decided {
            self.start_clock(now, now);
        }
        if !early {
            self.need_fh = true;
        }
        // This round decides on views frozen before the fault: the next
        // round handles it, on the clock started now.
        if let Some(f) = &mut self.fh {
            if f.snapshot.is_some() && f.outcome.is_none() {
                self.need_fh = true;
                f.after_snapshot.get_or_insert(now);
                f.failed_after_snapshot = f.failed_after_snapshot.or(failed);
            }
        }
    }

    // ---- fault handler ----

    pub(super) fn set_phase(&mut self, phase: Phase) {
        if self.phase != phase {
            self.phase = phase;
            self.phase_seq = self.sf_sequence;
            self.hb_burst = self.hb_burst.max(2);
        }
    }

    /// Rule E at phase 2: a holder whose round has seen no member on the
    /// statefile only restarts its budget's clock as it publishes phase
    /// 2; every winner that could drop it decides after seeing that
    /// phase (docs/HA.md).
    pub(super) fn restart_clock_at_phase2(&mut self, now: Millis) {
        let holder = self.extending_holder();
        let Some(fh) = &self.fh else { return };
        if self.phase == Phase::Fh2
            && holder
            && self.armed
            && !fh.split_seen
            && !fh.sf_only_seen
            && self.trouble_since.is_some()
        {
            self.start_clock(now, now);
        }
    }

    pub(super) fn fault_handler(&mut self, now: Millis) {
        if self.fh.is_none() {
            if !self.need_fh || self.phase != Phase::Started {
                return;
            }
            self.need_fh = false;
            self.join_block = true;
            self.log(format!(
                "fault handler starts: liveset {} hbdomain {} sfdomain {}",
                self.current, self.hbdomain, self.sfdomain
            ));
            self.fh = Some(Fh {
                step: 0,
                step_start: now,
                started: now,
                p3: now,
                p4: None,
                snapshot: None,
                outcome: None,
                late_loser: false,
                unheard_nonholder: false,
                failed: self.failed_members(now),
                split_seen: false,
                sf_only_seen: false,
                regrown_hb: HostSet::EMPTY,
                regrown_sf: HostSet::EMPTY,
                not_fully_connected: HostSet::EMPTY,
                tie: self.tie,
                sf_seq_at_start: self.sf_sequence,
                after_snapshot: None,
                failed_after_snapshot: HostSet::EMPTY,
                abandon: false,
                extended_at_end: false,
            });
        }
        // Run as many steps as complete now.
        for _ in 0..FH_STEPS.len() + 1 {
            let Some(fh) = self.fh.clone() else { return };
            if !self.is_running() {
                return;
            }
            if fh.abandon {
                self.fh = None;
                self.join_block = false;
                self.sf_accelerate = false;
                self.fence_request = false;
                // Undo the decision: the next round decides again.
                self.proposed = self.proposed.or(self.current);
                self.set_phase(Phase::Started);
                let took = now - fh.started;
                self.log(format!(
                    "fault handler ends after {took} ms without its decision: a host it kept failed; liveset {}",
                    self.current
                ));
                return;
            }
            let Some(&step) = FH_STEPS.get(fh.step) else {
                self.fh = None;
                self.join_block = false;
                self.sf_accelerate = false;
                let took = now - fh.started;
                self.log(format!("fault handler ends after {took} ms: liveset {}", self.current));
                if self.need_fh && self.armed && self.trouble_since.is_none() {
                    self.start_clock(now, now);
                }
                return;
            };
            let done = match step {
                Step::Rendezvous { set, next, on_sf } => {
                    let entering_phase2 = set == Phase::Fh2 && self.phase != Phase::Fh2;
                    self.set_phase(set);
                    if entering_phase2 {
                        self.restart_clock_at_phase2(now);
                    }
                    self.sf_accelerate = on_sf;
                    self.rendezvous(now, set, next, on_sf)
                }
                Step::Stable => self.stable(now, fh.started),
                Step::Consistent => {
                    self.undo_regrowth();
                    // Decide on the views as they were when they first
                    // agreed, even if we then wait to publish our phase.
                    let snap = match fh.snapshot {
                        Some(snap) => Some(snap),
                        None if self.consistent() => Some(self.snapshot()),
                        None => None,
                    };
                    let published = snap.as_ref().is_some_and(|s| self.phase_published(s));
                    let have_snap = snap.is_some();
                    if let (Some(f), Some(snap)) = (&mut self.fh, snap) {
                        f.snapshot = Some(snap);
                    }
                    if published {
                        true
                    } else {
                        // While the budget runs it bounds the step (rule
                        // B): a limit of the step's own, shorter than an
                        // extended budget, fenced hosts whose views were
                        // about to agree (docs/HA.md, E at the budget's
                        // end). Without a budget, xhad's max(T1, T2).
                        let t = &self.cfg.timeouts;
                        if self.trouble_since.is_none() && now - fh.step_start >= t.hb_timeout.max(t.sf_timeout) {
                            let waiting = if have_snap {
                                "its own slot to show phase 2".to_string()
                            } else {
                                format!("hosts {}", self.inconsistent_peers())
                            };
                            self.fence(
                                FenceCode::FaultHandlerTimeout,
                                format!("FH: cannot get consistent view within timeout (waiting for {waiting})"),
                            );
                            return;
                        }
                        false
                    }
                }
                Step::Survival => {
                    self.survival(now);
                    true
                }
                Step::Degrade => self.degrade(now),
            };
            if !done {
                return;
            }
            if let Some(f) = &mut self.fh {
                f.step += 1;
                f.step_start = now;
            }
        }
    }

    /// How long a member may be silent on the network before the fault
    /// handler counts it as failed, though it is still in the hbdomain:
    /// two heartbeat intervals and a second of margin.
    pub(super) fn suspect_after(&self) -> Millis {
        2 * self.cfg.timeouts.hb_interval + 1000
    }

    /// Liveset members, other than this host, out of a domain or silent
    /// on the network for [`Engine::suspect_after`].
    pub(super) fn failed_members(&self, now: Millis) -> HostSet {
        let quiet = self.suspect_after();
        self.current
            .without(self.cfg.me)
            .iter()
            .filter(|&i| {
                !self.hbdomain.contains(i)
                    || !self.sfdomain.contains(i)
                    || self.obs[i].last_hb.is_none_or(|t| now.saturating_sub(t) >= quiet)
            })
            .collect()
    }

    /// A second failure during the fault handler extends it instead of
    /// fencing the survivors: a member that fails anew before this host
    /// has published phase 2 restarts the clock of the fault-handler
    /// budget. Only a host holding the statefile (its own slot fresh, not
    /// kept without storage) extends. Safety (`docs/HA.md`, rule E): a
    /// winner that drops this host decides only after it saw this host in
    /// phase 2 or later (on the network, in the rendezvous before its
    /// survival test; on the statefile, in its consistent-view step), so
    /// the extended deadline still ends within the winner's wait.
    pub(super) fn extend_for_new_failures(&mut self, now: Millis) {
        let holder = self.extending_holder();
        // Past phase 2 only in a round that never saw a peer across a
        // network split: such a peer may have decided on this host's
        // published phase and views (even one that later looks stale).
        // A peer across a split is one seen writing its slot during this
        // round while not heard: a host that died before the round began
        // stays in the sfdomain for a while but decides nothing.
        let started = self.fh.as_ref().map_or(now, |f| f.started);
        let split = self
            .current
            .and(self.sfdomain)
            .minus(self.hbdomain)
            .iter()
            .any(|i| self.obs[i].last_sf.is_some_and(|t| t >= started));
        let failed = self.failed_members(now);
        let phase = self.phase;
        let armed = self.armed && self.trouble_since.is_some();
        let sf_only = !self.current.and(self.sfdomain).is_subset(self.hbdomain);
        let Some(fh) = &mut self.fh else { return };
        fh.split_seen |= split;
        fh.sf_only_seen |= sf_only;
        if !armed || !holder || fh.snapshot.is_some() || (phase >= Phase::Fh2 && fh.split_seen) {
            return;
        }
        let new = failed.minus(fh.failed);
        if new.is_empty() {
            return;
        }
        fh.failed = fh.failed.or(new);
        self.start_clock(now, now);
        self.log(format!(
            "hosts {new} failed during the fault handler: its budget starts again"
        ));
    }

    /// A host that may extend its budget (rule E): it sees its own slot
    /// fresh and its I/O works, and it is not kept without the statefile
    /// nor surviving by rule 2.
    pub(super) fn extending_holder(&self) -> bool {
        self.sf_access && self.sfdomain.contains(self.cfg.me) && !self.storage_lost && !self.sr2
    }

    /// Rule E at the budget's end: a holder whose round has not decided
    /// restarts its budget's clock once per round instead of fencing, if
    /// it has not published phase 3 and, past phase 2, its round has seen
    /// no liveset member on the statefile only. A winner that could drop
    /// it decides only after seeing it in phase 3 on the network (the
    /// rendezvous before its survival test waits for every peer it hears
    /// to reach phase 3), or, across a split, on a slot written after it
    /// saw the split, which this host would have seen too (docs/HA.md).
    /// Returns whether it extended.
    pub(super) fn extend_at_budget_end(&mut self, now: Millis) -> bool {
        let holder = self.extending_holder();
        let phase = self.phase;
        let Some(fh) = &mut self.fh else { return false };
        if !holder
            || fh.outcome.is_some()
            || fh.extended_at_end
            || phase >= Phase::Fh3
            || (phase >= Phase::Fh2 && (fh.split_seen || fh.sf_only_seen))
        {
            return false;
        }
        fh.extended_at_end = true;
        self.start_clock(now, now);
        self.log(format!(
            "the fault handler's budget ran out at phase {phase:?} before any peer could decide on this host: it starts again once"
        ));
        true
    }

    pub(super) fn peer_phase_hb(&self, i: usize) -> Option<Phase> {
        self.obs[i].peer.as_ref().map(|p| p.hb.view.phase)
    }

    /// Every peer seen on the network publishes `p1` or `p2`; with `on_sf`,
    /// every peer seen on the statefile has reached `p1` (peers across a
    /// network split run their own rendezvous and may be ahead) or is not
    /// in a fault handler yet.
    ///
    /// A peer silent on the network for [`Engine::suspect_after`] whose
    /// slot is still fresh is not waited for: it died or its packets stopped
    /// during this round, this round keeps it (it is in both domains of the
    /// snapshot or will be), and the next round judges it on the clock of
    /// its own notice. Once the views are frozen, only a peer they keep
    /// whatever the survival test says is skipped
    /// ([`Engine::skippable_when_silent`]; rule R, ha-sim 242021518).
    pub(super) fn rendezvous(&self, now: Millis, p1: Phase, p2: Phase, on_sf: bool) -> bool {
        let exact = |ph: Option<Phase>| ph.is_some_and(|ph| ph == p1 || ph == p2);
        let reached = |ph: Option<Phase>| ph.is_some_and(|ph| ph >= p1 || !ph.in_fault_handler());
        // The statefile speaks only for peers across a network split (the
        // network speaks for the others), and only to a host that sees its
        // own slot fresh: a host with slow I/O reads old phases.
        let holder = self.sfdomain.contains(self.cfg.me);
        let skippable = self.skippable_when_silent();
        self.current.iter().filter(|&i| i != self.cfg.me).all(|i| {
            let silent = skippable.contains(i)
                && self.obs[i]
                    .last_hb
                    .is_none_or(|t| now.saturating_sub(t) >= self.suspect_after());
            let hb_ok = !self.hbdomain.contains(i) || silent || exact(self.peer_phase_hb(i));
            let sf_only = self.sfdomain.contains(i) && !self.hbdomain.contains(i);
            let sf_ok = !on_sf || !sf_only || !holder || reached(self.obs[i].slot.map(|s| s.view.phase));
            hb_ok && sf_ok
        })
    }

    /// The members the rendezvous does not wait for once they fall silent
    /// (rule R): before the snapshot, those whose slot is fresh (skipping
    /// one only moves this host on to the consistent-view step, which
    /// still compares views with it); after it, only those the frozen
    /// views keep whatever the survival test says: in both of the
    /// snapshot's domains, or kept there without the statefile. A host
    /// the snapshot left out of its sfdomain as a non-holder may hold its
    /// slot again and still be in the live sfdomain: skipping it let a
    /// winner decide, and drop it, before it reached phase 3, while it
    /// could still extend its budget (found by a review, for T >= 20 s).
    pub(super) fn skippable_when_silent(&self) -> HostSet {
        let Some(snap) = self.fh.as_ref().and_then(|f| f.snapshot.as_ref()) else {
            return self.sfdomain;
        };
        snap.hbdomain
            .and(snap.sfdomain)
            .and(self.current)
            .or(self.kept_storage_lost())
    }

    /// Members this round's frozen views keep whatever the survival test
    /// says, as heard hosts that say they do not hold the statefile: in
    /// the snapshot's hbdomain, not among its peers with the statefile,
    /// the hbdomain a majority of the liveset (`rules::keep`), and heard
    /// saying so still (`Engine::nonholder_peers`). The rendezvous need not wait for
    /// one that falls silent (rule R).
    pub(super) fn kept_storage_lost(&self) -> HostSet {
        let Some(snap) = self.fh.as_ref().and_then(|f| f.snapshot.as_ref()) else {
            return HostSet::EMPTY;
        };
        if !rules::majority(snap.hbdomain, self.current) {
            return HostSet::EMPTY;
        }
        snap.hbdomain.and(self.nonholder_peers()).minus(snap.peers_with_sf)
    }

    /// Where a running round waits, for the budget's fence message: its
    /// step, and the peers the consistent-view step waits for.
    pub(super) fn fh_stuck_at(&self) -> String {
        let Some(fh) = &self.fh else {
            return String::new();
        };
        match FH_STEPS.get(fh.step) {
            Some(Step::Consistent) if fh.snapshot.is_none() => {
                format!(": no consistent views with hosts {}", self.inconsistent_peers())
            }
            Some(Step::Consistent) => ": its own slot does not show phase 2 yet".to_string(),
            Some(Step::Rendezvous { set, .. }) => format!(": waiting for peers at phase {set:?}"),
            Some(Step::Stable) => ": waiting for stable domains".to_string(),
            Some(Step::Degrade) => ": waiting for the losers' watchdogs".to_string(),
            Some(Step::Survival) | None => String::new(),
        }
    }

    /// No host in a domain is stale (older than T/4) unless it has been
    /// since the fault handler started.
    pub(super) fn stable(&self, now: Millis, started: Millis) -> bool {
        let t = &self.cfg.timeouts;
        let since_start = now - started;
        (0..self.n).filter(|&i| i != self.cfg.me).all(|i| {
            let hb_stale = self.hbdomain.contains(i)
                && self.obs[i].last_hb.is_some_and(|l| {
                    let age = now.saturating_sub(l);
                    age > t.hb_timeout / 4 && age > since_start
                });
            let sf_stale = self.sfdomain.contains(i)
                && self.obs[i].last_sf.is_some_and(|l| {
                    let age = now.saturating_sub(l);
                    age > t.sf_timeout / 4 && age > since_start
                });
            !hb_stale && !sf_stale
        })
    }
}
