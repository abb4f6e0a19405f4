//! The network side of the engine: heartbeats out, heartbeats in, and
//! the hbdomain (who this host hears, and who hears it).

use super::*;

impl Engine {
    // ---- network heartbeat ----

    pub(super) fn heartbeat(&self) -> Heartbeat {
        Heartbeat {
            generation: self.cfg.generation,
            from: self.cfg.me,
            boot: self.cfg.boot,
            sequence: self.hb_sequence,
            view: self.view(),
            sf_access: self.sf_access,
            sf_corrupted: self.sf_corrupted,
            fence_request: self.fence_request,
            sr2: self.sr2,
            joining: self.join && self.status == Status::Starting,
            tie: self.published_tie(),
        }
    }

    /// The tie-break values this host publishes: during a fault handler,
    /// those it had when the round began.
    pub(super) fn published_tie(&self) -> TieBreak {
        self.fh.as_ref().map_or(self.tie, |f| f.tie)
    }

    /// The views this host publishes, in heartbeats and slots. The
    /// sfdomain leaves out the network peers that say they do not see their
    /// own slot fresh, as this host's decisions do (rule N): a peer across
    /// a split judges this side's partition by these views.
    ///
    /// From the snapshot to the end of the round the published views never
    /// hold a host the snapshot did not (rule V for what peers read): a
    /// non-holder judged storage-lost in the snapshot and then no longer
    /// heard would otherwise come back into the published sfdomain, and a
    /// peer deciding later would agree with views this host did not decide
    /// on (ha-sim 160558320).
    pub(super) fn view(&self) -> View {
        let mut hbdomain = self.hbdomain;
        let mut sfdomain = self.sfdomain.minus(self.nonholder_peers());
        if let Some(snap) = self.fh.as_ref().and_then(|f| f.snapshot.as_ref()) {
            hbdomain = hbdomain.and(snap.hbdomain);
            sfdomain = sfdomain.and(snap.sfdomain);
        }
        View {
            current: self.current,
            proposed: self.proposed,
            hbdomain,
            sfdomain,
            phase: self.phase,
        }
    }

    pub(super) fn send_heartbeat_if_due(&mut self, now: Millis) {
        if now < self.next_hb && self.hb_burst == 0 {
            return;
        }
        self.hb_burst = self.hb_burst.saturating_sub(1);
        self.next_hb = now + self.cfg.timeouts.hb_interval;
        self.hb_sequence += 1;
        let hb = self.heartbeat();
        self.out.push(Command::SendHeartbeat(hb));
        self.feed(now, Watchdog::Heartbeat);
    }

    pub(super) fn on_heartbeat(&mut self, now: Millis, mut hb: Heartbeat) {
        let i = hb.from;
        if i >= self.n || i == self.cfg.me || hb.generation != self.cfg.generation {
            return;
        }
        // Hosts beyond the pool in a view are dropped: only a holder of the
        // pool secret can send one, and the engine indexes by host.
        hb.view = hb.view.within(self.all());
        // Only a heartbeat later than every one accepted from the host,
        // ever: a later boot, or a higher sequence of the same boot. A
        // captured packet replayed after its host died or fell silent is
        // refused, however long the silence (issue 26).
        if self.cfg.replay_guard && self.obs[i].hb_high.is_some_and(|high| (hb.boot, hb.sequence) <= high) {
            return;
        }
        self.obs[i].hb_high = Some((hb.boot, hb.sequence));
        // A host that restarted while we still count it alive is ignored
        // until the fault handler has dropped it.
        if !hb.view.current.contains(i) && self.current.contains(i) && self.is_online() {
            return;
        }
        if hb.fence_request && self.armed && hb.view.current.contains(i) && !hb.view.proposed.contains(self.cfg.me) {
            self.fence(
                FenceCode::FenceRequested,
                format!("host {i} asked this host to fence: it is not in the winners' liveset"),
            );
            return;
        }
        if hb.sr2 && self.is_online() {
            self.sr2 = true;
        }
        // A member starting a fault handler pulls this host in: its
        // early phases, not FhReady alone, as a host with no peer to
        // meet passes FhReady within one tick and never sends it.
        let force = matches!(hb.view.phase, Phase::FhReady | Phase::Fh1 | Phase::Fh1Done | Phase::Fh2)
            && hb.view.current.contains(i);
        let left = hb.view.phase == Phase::Aborted;
        if left {
            self.obs[i].left_boot = self.obs[i].left_boot.max(hb.boot);
        }
        self.obs[i].last_hb = Some(now);
        self.obs[i].peer = Some(Peer { hb });
        self.update_hbdomain(now);
        if force && self.is_online() {
            self.request_fh(now, true, HostSet::single(i));
            // A kept member that starts a new round saw a failure: this
            // round's decision is void too (rule L).
            self.abandon_if_kept_failed(now, HostSet::single(i));
        }
    }

    pub(super) fn update_hbdomain(&mut self, now: Millis) {
        let me = self.cfg.me;
        let t1 = self.cfg.timeouts.hb_timeout;
        let in_fh = self.phase.in_fault_handler();
        for i in 0..self.n {
            if i == me {
                self.hbdomain.insert(i);
                continue;
            }
            let fresh = self.obs[i].last_hb.is_some_and(|t| now.saturating_sub(t) < t1);
            if fresh {
                if self.hbdomain.contains(i) {
                    let asym = self.obs[i].peer.as_ref().is_some_and(|p| {
                        p.hb.view.phase.in_fault_handler() && in_fh && !p.hb.view.hbdomain.contains(me)
                    });
                    if asym {
                        self.hbdomain.remove(i);
                    }
                } else if !self.join_block {
                    self.hbdomain.insert(i);
                } else if self.may_regrow(i, Domain::Network) && self.hears_me(i) {
                    self.hbdomain.insert(i);
                    if let Some(f) = &mut self.fh {
                        f.regrown_hb.insert(i);
                    }
                }
            } else if self.woke_at.is_none_or(|w| now >= w + WAKE_GRACE) || !self.hbdomain.contains(i) {
                self.hbdomain.remove(i);
            }
        }
        if in_fh {
            self.keep_fully_connected();
        }
        self.detect_degrade(now);
    }

    /// In the fault handler, when the hosts this host hears do not all hear
    /// each other (A hears B, B hears C, A and C do not), keep only the
    /// best fully connected set around this host, by the hbdomains its
    /// peers' heartbeats carry. The hosts left out drop this host in turn
    /// (their view no longer holds it), so the pool splits into clean
    /// partitions that the survival rules can judge; the largest fully
    /// connected set is the one that survives. Waits until every peer
    /// heard is in the fault handler, as their views are only then final.
    pub(super) fn keep_fully_connected(&mut self) {
        let me = self.cfg.me;
        // Only members judge: a joiner heard meanwhile never enters the
        // fault handler, and waiting for it would stall the reduction.
        let heard = self.hbdomain.and(self.current.with(me));
        let mut edge = vec![HostSet::EMPTY; self.n];
        for i in heard.iter() {
            let view_i = if i == me {
                Some(heard)
            } else {
                match self.obs[i].peer.as_ref() {
                    Some(p) if p.hb.view.phase.in_fault_handler() => Some(p.hb.view.hbdomain),
                    _ => return,
                }
            };
            edge[i] = view_i.unwrap_or_default().and(heard).without(i);
        }
        // Both ways.
        for i in heard.iter() {
            edge[i] = edge[i].iter().filter(|&j| edge[j].contains(i)).collect();
        }
        if heard.iter().all(|i| edge[i].with(i) == heard) {
            return;
        }
        let keep = rules::best_clique(heard, &edge, me, &self.cfg.weights);
        if keep != heard {
            let cut = heard.minus(keep);
            // A host cut here that is heard again grows back (rule V) and
            // is cut again at once while the links stay as they are: say so
            // once, not at every heartbeat.
            if self.fh.as_ref().is_none_or(|f| f.not_fully_connected != cut) {
                self.log(format!(
                    "hosts {} do not all hear each other: keeping the fully connected {keep}",
                    heard
                ));
            }
            self.hbdomain = self.hbdomain.minus(cut);
            if let Some(f) = &mut self.fh {
                f.not_fully_connected = cut;
            }
        }
    }
}
