//! The master lock on the statefile (rule M): who takes part, who
//! requests and grants, and whether this host holds it.

use super::*;

impl Engine {
    /// The host every online host grants the master lock to, in this host's
    /// latest view of the statefile.
    pub fn lock_holder(&self) -> Option<usize> {
        let takes_part = self.lock_members();
        takes_part
            .iter()
            .find(|&i| self.requesting(i) && takes_part.iter().all(|j| self.counted_grants(j).contains(i)))
    }

    /// Host `j`'s grants as this host counts them: a grant to this host
    /// only from a slot written after `j` read this host's current request
    /// (two sequences past the one read when the request landed). A grant
    /// `j` gave to an earlier request of this host, still in a slot written
    /// before it saw that request withdrawn, must not count for the new
    /// one: it let a host take the lock while the host it had revoked still
    /// held it by that revoked grant (120141319).
    pub(super) fn counted_grants(&self, j: usize) -> HostSet {
        let me = self.cfg.me;
        let grants = self.grants(j);
        if j == me || !grants.contains(me) {
            return grants;
        }
        let fresh = match (self.obs[j].slot, self.lock_baseline.get(j).copied().flatten()) {
            (Some(slot), Some((boot, seq))) => slot.boot == boot && slot.sequence >= seq + 2,
            _ => false,
        };
        if fresh {
            grants
        } else {
            grants.without(me)
        }
    }

    /// Keep [`Engine::lock_baseline`]: set it at the first read showing this
    /// host's request landed, restart a host's entry when it has booted
    /// again, clear it when this host stops requesting.
    fn update_lock_baseline(&mut self) {
        if !self.lock_request {
            self.lock_baseline.clear();
            return;
        }
        let landed = self.own_slot_after(self.lock_request_seq).is_some();
        if self.lock_baseline.is_empty() {
            if landed {
                self.lock_baseline = self.obs.iter().map(|o| o.slot.map(|s| (s.boot, s.sequence))).collect();
            }
            return;
        }
        for (j, o) in self.obs.iter().enumerate() {
            let Some(slot) = o.slot else { continue };
            let entry = &mut self.lock_baseline[j];
            if entry.is_none_or(|(boot, _)| boot != slot.boot) {
                *entry = Some((slot.boot, slot.sequence));
            }
        }
    }

    /// The members whose grants count (rule M in docs/HA.md): those whose
    /// slot is fresh now, this host included only while its own is. A member
    /// without the statefile cannot grant, so it must not hold up the
    /// election of a master; and it cannot hold the lock itself (rule F: any
    /// peer that sees its slot stale, it sees stale first).
    pub(super) fn lock_members(&self) -> HostSet {
        self.current.and(self.fresh_slots.or(self.lock_unjudged))
    }

    /// This host is online and holds the master lock.
    pub fn holds_master_lock(&self) -> bool {
        self.is_online() && self.lock_holder() == Some(self.cfg.me)
    }

    /// This host is online and holds the master lock as far as the members
    /// that take part in the lock can tell ([`crate::lock::confirmed`]):
    /// once it held the lock by every grant, a joiner that has not yet
    /// published its grants does not hold the API up (rule M in
    /// docs/HA.md). The engine's own
    /// [`Engine::lock_holder`] stays strict.
    pub fn master_lock_confirmed(&self) -> bool {
        let requesting: HostSet = (0..self.n).filter(|&i| self.requesting(i)).collect();
        let grants: Vec<HostSet> = (0..self.n).map(|j| self.counted_grants(j)).collect();
        let view = crate::lock::LockView {
            current: self.lock_members(),
            requesting,
            grants: &grants,
            held_with: self.lock_held_with,
        };
        self.is_online() && crate::lock::confirmed(self.cfg.me, &view)
    }

    // ---- master lock ----

    pub(super) fn requesting(&self, i: usize) -> bool {
        if i == self.cfg.me {
            self.lock_request
        } else {
            self.obs[i].slot.is_some_and(|s| s.lock_request)
        }
    }

    pub(super) fn grants(&self, j: usize) -> HostSet {
        if j == self.cfg.me {
            self.lock_grant
        } else {
            self.obs[j].slot.map(|s| s.lock_grant).unwrap_or_default()
        }
    }

    /// One round of xhad's lock manager, after each statefile read.
    pub(super) fn lock_step(&mut self) {
        let me = self.cfg.me;
        if !self.sf_access || !self.current.contains(me) || !self.is_online() {
            return;
        }
        // A request counts only while its slot is fresh (rule M): a host
        // back from a storage outage asks again before anyone grants it.
        let members = self.lock_members();
        for i in 0..self.n {
            if !(self.requesting(i) && members.contains(i)) {
                self.lock_grant.remove(i);
            }
        }
        if self.want_master && !self.lock_request {
            let withdrawn = members
                .iter()
                .filter(|&j| j != me)
                .all(|j| !self.grants(j).contains(me));
            let no_lower = self.lock_grant.iter().all(|i| i <= me);
            if withdrawn && no_lower {
                self.lock_request = true;
                self.lock_baseline.clear();
                self.lock_request_seq = self.sf_sequence;
                self.log("requesting the master lock".into());
            } else {
                // Withdraw grants to lower-priority hosts first.
                self.lock_grant = self.lock_grant.and(HostSet::first(me + 1));
            }
        }
        if !self.want_master && self.lock_request {
            self.lock_request = false;
            self.lock_baseline.clear();
            self.log("master lock request cancelled".into());
        }
        self.update_lock_baseline();
        for i in 0..self.n {
            if self.requesting(i) && members.contains(i) {
                if !self.lock_request || i <= me {
                    self.lock_grant.insert(i);
                } else {
                    self.lock_grant.remove(i);
                }
            }
        }
        if !self.lock_request {
            self.lock_held_with = HostSet::EMPTY;
        } else if self.lock_holder() == Some(me) {
            self.lock_held_with = self.lock_members();
        }
        if let Some(h) = self.lock_holder() {
            if h == me && self.global.is_some_and(|g| g.master != Some(me)) && self.pending_global.is_none() {
                if let Some(g) = self.global {
                    self.pending_global = Some(Global { master: Some(me), ..g });
                }
            }
        }
    }
}
