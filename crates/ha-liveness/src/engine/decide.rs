//! The fault handler's decision: consistent views (rule C), the
//! snapshot, the survival test (rules S, N, G), and dropping the losers
//! after the fence wait (rule W).

use super::*;

impl Engine {
    /// The views are settled enough to decide on. A peer on the network
    /// must hold the same hbdomain (and sfdomain, when both reach the
    /// statefile) and publish the same views in its slot. A peer seen only on
    /// the statefile, across a network split, must have reached phase 2 of
    /// its own fault handler, agree that we are split, and see the same hosts
    /// on the statefile; its partition then counts by its published views.
    pub(super) fn consistent(&self) -> bool {
        self.inconsistent_peers().is_empty()
    }

    /// The peers whose views keep [`Engine::consistent`] false.
    pub(super) fn inconsistent_peers(&self) -> HostSet {
        let me = self.cfg.me;
        // Compare the domains on every host the survival test counts (the
        // members its peers publish too), not only on our liveset.
        // Statefile views are compared without the network peers that say
        // they do not see their own slot fresh: hosts read such a peer's
        // late writes at different times, and it is judged as storage-lost
        // by all (`Engine::nonholder_peers`).
        let cur = self.members_held();
        let cur_sf = cur.minus(self.nonholder_peers());
        let mut waiting: HostSet = self
            .current
            .iter()
            .filter(|&i| i != me && !self.consistent_with(i, cur, cur_sf))
            .collect();
        // Rule I: a starting host about to arm may be arming on our acks
        // from before this round; wait until it arms (then it is judged as
        // the member or claimant it is) or gives up. And a starting host
        // counts as a joiner only on a slot read after our round showed
        // on the statefile.
        for i in self.sfdomain.without(me).iter() {
            let Some(slot) = self.obs[i].slot else { continue };
            if slot.starting && (slot.arming || !self.fh_phase_landed()) {
                waiting.insert(i);
            }
        }
        waiting
    }

    /// This round's fault-handler phase has landed on the statefile: a
    /// read-back slot of ours written during the round shows it, so every
    /// slot read since was read after it (rule I). A host that does not
    /// hold its own slot fresh decides nothing from the statefile: it
    /// keeps only what the holders it hears keep, and they judge joiners.
    pub(super) fn fh_phase_landed(&self) -> bool {
        let me = self.cfg.me;
        let holder = self.sf_access && self.sfdomain.contains(me);
        let Some(fh) = &self.fh else { return true };
        !holder
            || self
                .own_slot_after(fh.sf_seq_at_start)
                .is_some_and(|s| s.view.phase.in_fault_handler())
    }

    /// Peer `i`'s views agree with ours, as [`Engine::consistent`] asks:
    /// network views on the hosts `cur`, statefile views on `cur_sf`.
    pub(super) fn consistent_with(&self, i: usize, cur: HostSet, cur_sf: HostSet) -> bool {
        let me = self.cfg.me;
        // A holder as the snapshot counts one: its statefile I/O works and
        // it sees its own slot fresh. A host whose I/O fails decides
        // nothing from the statefile (rule F), and the slots it read
        // before will not change again: comparing them would wait for
        // ever (ha-sim 241400377: storage cut during the round, the peers
        // had taken their snapshots, all three hosts fenced).
        let holder = self.sf_access && self.sfdomain.contains(me);
        let my_hbd = self.hbdomain.and(cur);
        let my_sfd = self.sfdomain.and(cur_sf);
        let slot = self.obs[i].slot;
        if my_hbd.contains(i) {
            let Some(p) = &self.obs[i].peer else { return false };
            if p.hb.view.hbdomain.and(cur) != my_hbd {
                return false;
            }
            let both_on_sf = holder && p.hb.view.sfdomain.contains(i);
            if both_on_sf && p.hb.view.sfdomain.and(cur_sf) != my_sfd {
                return false;
            }
            // A peer that does not see its own slot fresh (slow I/O)
            // publishes views that lag: its heartbeat speaks for it.
            // So does this host's, which then decides nothing from
            // the statefile (it is kept without it, or not).
            if my_sfd.contains(i) && p.hb.view.sfdomain.contains(i) && holder {
                let Some(slot) = slot else { return false };
                if slot.view.sfdomain.and(cur_sf) != my_sfd || slot.view.hbdomain.and(cur) != my_hbd {
                    return false;
                }
            }
            true
        } else if holder && my_sfd.contains(i) {
            let Some(slot) = slot else { return false };
            // A host that is not a member in its own eyes (booting, or
            // joining) decides nothing and is not armed: nothing to
            // agree with. Unless this host heard that boot of it online:
            // then the slot is late (slow I/O), not the host (rule G).
            if slot.starting && !slot.view.current.contains(i) && !self.heard_online(i, slot.boot) {
                return true;
            }
            slot.view.phase >= Phase::Fh2
                && !slot.view.hbdomain.contains(me)
                && slot.view.sfdomain.and(cur_sf) == my_sfd
        } else {
            true
        }
    }

    /// The latest heartbeat heard from boot `boot` of host `i` said it was
    /// online (a member in its own eyes): whatever an older slot of that
    /// boot says, it is armed, or was until it fenced.
    pub(super) fn heard_online(&self, i: usize, boot: u64) -> bool {
        self.obs[i]
            .peer
            .as_ref()
            .is_some_and(|p| p.hb.boot == boot && p.hb.view.phase != Phase::Starting && p.hb.view.current.contains(i))
    }

    /// Network peers whose latest heartbeat says they do not see their
    /// own slot fresh (lost or slow statefile I/O): they decide nothing
    /// from the statefile, so their slot, fresh to some readers and stale
    /// to others, does not count in this host's sfdomain for the decision.
    pub(super) fn nonholder_peers(&self) -> HostSet {
        self.hbdomain
            .and(self.current)
            .without(self.cfg.me)
            .iter()
            .filter(|&i| {
                self.obs[i]
                    .peer
                    .as_ref()
                    .is_some_and(|p| !p.hb.view.sfdomain.contains(i))
            })
            .collect()
    }

    /// Across a network split (in the views of `snap`), our slot on the
    /// statefile shows the phase we are in. A host leaves phase 2 only once
    /// the peers it sees only on the statefile can read that it reached it:
    /// else a loser that decides and fences within one statefile interval
    /// leaves the winners waiting for its slot to age out, and maybe timing
    /// out themselves. Peers on the network read our phase from heartbeats,
    /// and a host that does not see its own slot fresh has no one to show
    /// it to.
    pub(super) fn phase_published(&self, snap: &Snapshot) -> bool {
        let me = self.cfg.me;
        let sf_only = self.current.and(snap.sfdomain).minus(snap.hbdomain).without(me);
        sf_only.is_empty()
            || !self.sf_access
            || !self.sfdomain.contains(me)
            || self.own_slot_after(self.phase_seq).is_some()
    }

    pub(super) fn peers_with_sf(&self) -> HostSet {
        (0..self.n)
            .filter(|&i| {
                i != self.cfg.me
                    && self.obs[i]
                        .peer
                        .as_ref()
                        .is_some_and(|p| p.hb.view.sfdomain.contains(i))
            })
            .collect()
    }

    pub(super) fn snapshot(&self) -> Snapshot {
        Snapshot {
            sf_access: self.sf_access && self.sfdomain.contains(self.cfg.me),
            hbdomain: self.hbdomain,
            sfdomain: self.sfdomain.minus(self.nonholder_peers()),
            peers_with_sf: self.peers_with_sf(),
            published: self
                .obs
                .iter()
                .map(|o| o.slot.map(|s| (s.view.sfdomain, s.view.hbdomain)))
                .collect(),
            ties: (0..self.n)
                .map(|i| {
                    if i == self.cfg.me {
                        Some(self.published_tie())
                    } else if self.hbdomain.contains(i) {
                        self.obs[i].peer.as_ref().map(|p| p.hb.tie)
                    } else {
                        self.obs[i].slot.map(|s| s.tie)
                    }
                })
                .collect(),
            joiners: (0..self.n)
                .filter(|&i| i != self.cfg.me && self.obs[i].slot.is_some_and(|s| s.starting))
                .collect(),
            claimants: self.claimants().minus(self.hbdomain),
            excluded: self.excluded_hosts(),
            heard_unarmed: self
                .hbdomain
                .without(self.cfg.me)
                .iter()
                .filter(|&i| {
                    self.obs[i]
                        .peer
                        .as_ref()
                        .is_some_and(|p| !p.hb.view.current.contains(i))
                })
                .collect(),
            members: self.members_held(),
        }
    }

    /// Our liveset and every host that a member of it still writing the
    /// statefile holds in the liveset its slot publishes. Members disagree
    /// for a moment when one of them took in a joiner that another acked
    /// but was cut off before it saw the last ack; counting the union keeps
    /// their survival tests alike. Only fresh slots count (a stale one may
    /// list hosts dropped since), and only the boot of a host that is
    /// running now (a slot may list a boot that has died and restarted).
    /// A member's slot is the last one its member boot wrote, for as long
    /// as that boot stays in the sfdomain: when it restarts, its new boot's
    /// slot neither keeps it fresh nor erases what it published, so hosts
    /// deciding before and after the restart count the same members (rule
    /// H, ha-sim 150079909).
    pub(super) fn members_held(&self) -> HostSet {
        let me = self.cfg.me;
        // A member whose later boot writes its slot has stopped (rule U):
        // hosts that saw it leave cleanly before it restarted hold only
        // the new boot, a joiner, and so does this host's count.
        let mut members: HostSet = self
            .current
            .iter()
            .filter(|&i| i == me || self.obs[i].member_boot == 0 || self.latest_boot(i) <= self.obs[i].member_boot)
            .collect();
        for i in self.current.and(self.sfdomain).iter().filter(|&i| i != me) {
            let Some(slot) = self.obs[i].member_slot else { continue };
            let ours = self.obs[i].member_boot == 0 || slot.boot == self.obs[i].member_boot;
            if !ours || !slot.view.current.contains(i) {
                continue;
            }
            for j in slot.view.current.iter().filter(|&j| j < self.n) {
                if slot.member_boots.get(j).copied() == Some(self.latest_boot(j)) {
                    members.insert(j);
                }
            }
        }
        members
    }

    /// Hosts writing the statefile, not in [`Engine::members_held`], that
    /// hold themselves and this boot of this host in their liveset: a
    /// joiner that completed its join on other members while this one was
    /// cut off before taking it in. This host cannot win outright while
    /// such a holder is unheard, and an unheard one counts in the
    /// largest-partition rule as the member it is on its side (ha-sim
    /// 20513635). One this host hears is not counted: a host that joined as
    /// the fault handler began may hear both sides of a split, and its
    /// views would put each side in its partition (30015296).
    pub(super) fn claimants(&self) -> HostSet {
        let me = self.cfg.me;
        let members = self.members_held();
        self.sfdomain
            .minus(members)
            .iter()
            .filter(|&i| i != me)
            .filter(|&i| {
                self.obs[i].slot.is_some_and(|slot| {
                    slot.view.current.contains(me)
                        && slot.member_boots.get(me) == Some(&self.cfg.boot)
                        && slot.view.current.contains(i)
                        && !slot.starting
                        && slot.boot == self.latest_boot(i)
                })
            })
            .collect()
    }

    /// The newest boot of host `i` heard on the network or seen in its slot
    /// (0 when none is known).
    pub(super) fn latest_boot(&self, i: usize) -> u64 {
        if i == self.cfg.me {
            return self.cfg.boot;
        }
        let heard = self.obs[i].peer.as_ref().map_or(0, |p| p.hb.boot);
        let seen = self.obs[i].slot.map_or(0, |s| s.boot);
        heard.max(seen)
    }

    pub(super) fn survival(&mut self, now: Millis) {
        let snap = self
            .fh
            .as_ref()
            .and_then(|f| f.snapshot.clone())
            .unwrap_or_else(|| self.snapshot());
        let weights = self.cfg.weights.clone();
        let views = Views {
            me: self.cfg.me,
            hosts: self.n,
            current: self.current,
            hbdomain: snap.hbdomain,
            sfdomain: snap.sfdomain,
            sf_access: snap.sf_access,
            peers_with_sf: snap.peers_with_sf,
            published: &snap.published,
            ties: &snap.ties,
            joiners: snap.joiners,
            claimants: snap.claimants,
            excluded: snap.excluded,
            heard_unarmed: snap.heard_unarmed,
            members: snap.members,
            weights: &weights,
        };
        let outcome = (self.cfg.survival)(&views);
        self.log(format!(
            "FH3: liveset {} hbdomain {} sfdomain {} statefile {}: {:?}",
            self.current,
            snap.hbdomain,
            snap.sfdomain,
            if snap.sf_access { "reachable" } else { "unreachable" },
            outcome
        ));
        match outcome {
            Outcome::Lost => {
                self.fence(FenceCode::SurvivalRuleFailed, survival_explanation(&views));
                return;
            }
            Outcome::StorageLost => {}
            _ => {
                // Rule Y after the test: a late failure of a host this
                // round drops anyway is no new fault (its budget would run
                // out in this round's fence wait: 241404195).
                let keep = rules::keep(&views, outcome);
                let late = self
                    .fh
                    .as_ref()
                    .filter(|f| !f.failed_after_snapshot.and(keep).is_empty())
                    .and_then(|f| f.after_snapshot);
                self.set_clock(late, now);
                if outcome == Outcome::Rule2 && !self.sr2 {
                    self.sr2 = true;
                    self.log("surviving by rule 2: no host reaches the statefile, the network is whole".into());
                }
                if self.armed {
                    for i in 0..self.n {
                        if self.proposed.contains(i) && !keep.contains(i) {
                            self.log(format!("host {i} will be removed from the liveset"));
                            self.proposed.remove(i);
                            let nonholder = self.obs[i]
                                .peer
                                .as_ref()
                                .is_some_and(|p| p.hb.view.current.contains(i) && !p.hb.view.sfdomain.contains(i));
                            if nonholder && !snap.hbdomain.contains(i) && !snap.sfdomain.contains(i) {
                                self.log(format!(
                                    "host {i} was last heard alive without the statefile: waiting T1 longer for it"
                                ));
                                if let Some(f) = &mut self.fh {
                                    f.unheard_nonholder = true;
                                }
                            }
                            let decided = self.obs[i].slot.is_some_and(|s| s.view.phase >= Phase::Fh3);
                            if decided && !snap.hbdomain.contains(i) {
                                self.log(format!(
                                    "host {i} is past the survival test of a fault handler of its own: waiting longer for it"
                                ));
                                if let Some(f) = &mut self.fh {
                                    f.late_loser = true;
                                }
                            }
                        }
                    }
                }
            }
        }
        if let Some(f) = &mut self.fh {
            f.p3 = now;
            f.outcome = Some(outcome);
        }
    }

    pub(super) fn degrade(&mut self, now: Millis) -> bool {
        let Some(fh) = self.fh.clone() else { return true };
        if fh.outcome == Some(Outcome::StorageLost) && fh.p4.is_none() {
            // Kept only if every host with storage that we see won and kept us.
            let me = self.cfg.me;
            let judges: Vec<usize> = self
                .hbdomain
                .and(self.peers_with_sf())
                .and(self.current)
                .iter()
                .collect();
            let kept = !judges.is_empty()
                && judges.iter().all(|&j| {
                    self.obs[j]
                        .peer
                        .as_ref()
                        .is_some_and(|p| p.hb.view.phase >= Phase::Fh3Done && p.hb.view.proposed.contains(me))
                });
            if !kept {
                self.fence(
                    FenceCode::SurvivalRuleFailed,
                    "this host cannot reach the statefile and the hosts that can did not keep it".into(),
                );
                return false;
            }
            // Drop only the hosts every judge drops: judges whose livesets
            // differ (a join completed on some members only) propose
            // differently, and a host one of them keeps may be armed.
            let kept_by_any = judges
                .iter()
                .filter_map(|&j| self.obs[j].peer.as_ref())
                .fold(HostSet::EMPTY, |acc, p| acc.or(p.hb.view.proposed));
            self.proposed = kept_by_any.and(self.current);
            self.storage_lost = true;
            self.set_clock(fh.after_snapshot, now);
            // The proposal comes from judges that decided by now: the wait
            // before dropping anyone counts from here.
            if let Some(f) = &mut self.fh {
                f.p3 = now;
            }
            self.log("kept in the liveset without statefile access".into());
        }
        let degrading = !self.current.is_subset(self.proposed);
        if !degrading {
            return true;
        }
        let p4 = match fh.p4 {
            Some(p4) => p4,
            None => {
                if self.armed && fh.outcome != Some(Outcome::StorageLost) {
                    self.fence_request = true;
                    self.hb_burst = self.hb_burst.max(3);
                }
                if let Some(f) = &mut self.fh {
                    f.p4 = Some(now);
                }
                now
            }
        };
        // xhad sleeps max(base - (p4 - p3) + extend, floor) from p4.
        let t = &self.cfg.timeouts;
        let floor = if t.t >= 10_000 { 10_000 } else { 2_000 };
        // xhad adds T when the survival test shrank a domain, for losers that
        // noticed late; the fault-handler budget bounds those already.
        // A loser still finishing an earlier round (up to T1 for its
        // rendezvous, its own wait) judges this fault only in its next one.
        let late = if fh.late_loser {
            t.hb_timeout + t.fence_wait(false)
        } else {
            0
        } + if fh.unheard_nonholder { t.hb_timeout } else { 0 };
        let wake = (fh.p3 + t.fence_wait(false) + late).max(p4 + floor);
        if now < wake {
            return false;
        }
        if self.armed {
            let before = self.current;
            self.current = self.current.and(self.proposed);
            self.log(format!("Liveset has been updated: {} -> {}", before, self.current));
            self.out.push(Command::Liveset(self.current));
        }
        self.fence_request = false;
        true
    }

    pub(super) fn check_leave_rule2(&mut self) {
        let me = self.cfg.me;
        let excluded = self.excluded_hosts();
        let recovered = self.sf_access
            && (0..self.n).filter(|&i| i != me).all(|i| {
                if self.hbdomain.contains(i) {
                    self.obs[i]
                        .peer
                        .as_ref()
                        .is_some_and(|p| p.hb.view.sfdomain.contains(i))
                } else {
                    excluded.contains(i)
                }
            });
        if recovered {
            self.sr2 = false;
            self.log("leaving survival rule 2: the statefile is back".into());
        }
    }
}

pub(super) fn survival_explanation(v: &Views) -> String {
    let hbd = v.hbdomain.and(v.current);
    let sfd = v.sfdomain.and(v.current);
    let mut why = format!(
        "Survival Rule is not met for the local host: liveset {}, reachable on the network {}, seen on the statefile {}",
        v.current, hbd, sfd
    );
    if !v.sf_access {
        why.push_str(", this host cannot reach the statefile");
    }
    if let Some(w) = rules::largest_partition(v) {
        if w != v.me {
            why.push_str(&format!(", host {w} is in the largest partition"));
        }
    }
    why
}
