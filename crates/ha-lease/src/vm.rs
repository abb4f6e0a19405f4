//! The rules around a VM lease (`docs/LEASES.md`, "VM leases" and "Enforced
//! outside `xapid`"): who owns a VM now, when another host may take it,
//! and when a paused guest may run again. [`crate::paxos`] decides each
//! instance; these decide what to make of it.

use crate::host::Observer;
use crate::paxos::{Block, Owner};

/// What a host's lease file holds: the boot that writes it and its
/// counter. Boots are numbered, and a host's numbers only grow (xapid
/// counts its starts in its local database): a reader can tell a later
/// boot from an earlier one it read late. An observer judges the pair as
/// one stamp: a new boot is a change like a new counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LeaseRecord {
    pub boot: u64,
    pub counter: u64,
}

impl LeaseRecord {
    /// The value an [`Observer`] watches: changes whenever the boot or the
    /// counter does (counters stay below 2^32 between reboots: one renewal
    /// a second for 136 years).
    pub fn stamp(self) -> u64 {
        self.boot.wrapping_shl(32) ^ self.counter
    }
}

/// The owner of a VM by the owner files read: the highest decided instance
/// any host recorded, and its value.
pub fn owner_of(owner_files: &[Option<(u64, Owner)>]) -> Option<(u64, Owner)> {
    owner_files.iter().flatten().copied().max_by_key(|&(k, _)| k)
}

/// May a host take a VM whose lease `owner` holds, judging the owner's
/// host lease by `record` (the owner's lease file as last read) and
/// `observer` (this host's judgement of that file)? Yes when the owner's
/// boot is over (its host has booted again since: its guests died with
/// it) or its host lease has expired (its guests are paused by now, and
/// stay so). A file of an *earlier* boot says nothing: it was read before
/// the owner's boot wrote it (ha-sim's lease world took a VM from a live
/// owner on such a read).
pub fn may_take(owner: Owner, record: Option<LeaseRecord>, observer: &Observer) -> bool {
    let rebooted = record.is_some_and(|r| r.boot > owner.boot);
    rebooted || observer.expired()
}

/// May a guest paused at instance `mine` run again? Only if no host has
/// begun a later instance of its VM (a block or an owner file above it):
/// the blocks must have been read after a valid renewal that landed after
/// the pause (the caller's part), so an acquirer that took the VM while
/// this host was away has its phase-2 block in sight by then.
pub fn may_resume(mine: u64, blocks: &[Option<Block>], owner_files: &[Option<(u64, Owner)>]) -> bool {
    let block_above = blocks.iter().flatten().any(|b| b.instance > mine);
    let owner_above = owner_files.iter().flatten().any(|&(k, _)| k > mine);
    !block_above && !owner_above
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::Timing;

    fn owner(host: u16, boot: u64) -> Owner {
        Owner { host, boot }
    }

    #[test]
    fn the_highest_recorded_instance_owns() {
        assert_eq!(owner_of(&[None, None]), None);
        let files = [Some((2, owner(0, 1))), None, Some((3, owner(2, 4)))];
        assert_eq!(owner_of(&files), Some((3, owner(2, 4))));
    }

    #[test]
    fn a_vm_is_taken_only_from_a_dead_boot_or_an_expired_lease() {
        let t = Timing::for_timeout(10_000);
        let mut o = Observer::new(t);
        let alive = LeaseRecord { boot: 4, counter: 9 };
        o.read(0, 10, alive.stamp());
        assert!(!may_take(owner(1, 4), Some(alive), &o));
        // The same boot, silent for L: expired.
        o.read(10_010, 10_020, alive.stamp());
        assert!(may_take(owner(1, 4), Some(alive), &o));
        // A new boot writes the file: the old boot's guests are gone.
        let mut o = Observer::new(t);
        let reborn = LeaseRecord { boot: 5, counter: 1 };
        o.read(0, 10, reborn.stamp());
        assert!(may_take(owner(1, 4), Some(reborn), &o));
        assert!(!may_take(owner(1, 5), Some(reborn), &o));
        // A file of an earlier boot, read late: the owner's boot may live.
        assert!(!may_take(owner(1, 6), Some(reborn), &o));
    }

    #[test]
    fn a_paused_guest_resumes_only_if_nobody_began_a_later_instance() {
        let b = |instance| {
            Some(Block {
                instance,
                mbal: 3,
                bal: 0,
                value: None,
            })
        };
        assert!(may_resume(2, &[b(2), None], &[Some((2, owner(0, 1))), None]));
        assert!(!may_resume(2, &[b(2), b(3)], &[Some((2, owner(0, 1))), None]));
        assert!(!may_resume(2, &[b(2), None], &[Some((3, owner(1, 1))), None]));
    }

    #[test]
    fn stamps_differ_across_boots_and_counters() {
        let a = LeaseRecord { boot: 1, counter: 5 }.stamp();
        assert_ne!(a, LeaseRecord { boot: 2, counter: 5 }.stamp());
        assert_ne!(a, LeaseRecord { boot: 1, counter: 6 }.stamp());
    }
}
