//! Disk Paxos for one instance of one VM lease (`docs/LEASES.md`, "VM
//! leases"), after Gafni and Lamport with a single disk: every host has one
//! block per VM on the SR, writes only its own, and reads everyone's. Each
//! block write and each block read is atomic (a whole file renamed into
//! place); nothing else is assumed, not even that a host reads all blocks
//! at one instant.
//!
//! A [`Round`] is one ballot of one host: write its block, read every
//! block, and again for phase 2. It ends [`Outcome::Decided`] with the
//! instance's value (maybe another host's proposal, which it must then
//! respect) or [`Outcome::Aborted`] when a higher ballot or a newer
//! instance is in sight; the caller retries with [`Round::start`] above the
//! highest ballot it saw.

/// Who owns a VM lease: a host (by pool index) in one boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Owner {
    pub host: u16,
    pub boot: u64,
}

/// One host's block for one VM: its last ballot in `instance` (`mbal`),
/// and the last value it accepted there with the ballot it accepted it in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Block {
    pub instance: u64,
    pub mbal: u64,
    pub bal: u64,
    pub value: Option<Owner>,
}

/// What a round asks its caller to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Write this host's block, then read every host's block and hand them
    /// to [`Round::on_read`].
    Write(Block),
    Done(Outcome),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The instance's value is decided: nobody can decide another.
    Decided(Owner),
    /// A higher ballot (`seen`) or a newer instance is in sight: nothing
    /// was decided by this round.
    Aborted { seen: u64, newer_instance: bool },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Phase {
    One,
    Two,
    Done,
}

/// One ballot of one host in one instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Round {
    me: usize,
    proposal: Owner,
    block: Block,
    phase: Phase,
}

/// The smallest ballot above `seen` that belongs to host `me` of `hosts`:
/// ballots of different hosts never collide.
pub fn ballot_above(seen: u64, me: usize, hosts: usize) -> u64 {
    let n = hosts.max(1) as u64;
    let me = (me as u64) % n;
    let k = seen / n + 1;
    // Saturating: a ballot near u64::MAX can only come from a damaged
    // file, and the round it starts aborts rather than wraps below `seen`.
    let b = k.saturating_mul(n).saturating_add(me);
    if b > seen {
        b
    } else {
        b.saturating_add(n)
    }
}

impl Round {
    /// Start a ballot above `seen` in `instance`, proposing `proposal`.
    /// `own` is this host's current block: what it accepted in this
    /// instance before (a value accepted must be carried, as Paxos asks).
    pub fn start(me: usize, hosts: usize, instance: u64, proposal: Owner, own: Block, seen: u64) -> (Round, Next) {
        let (bal, value) = if own.instance == instance {
            (own.bal, own.value)
        } else {
            (0, None)
        };
        let seen = if own.instance == instance {
            seen.max(own.mbal)
        } else {
            seen
        };
        let block = Block {
            instance,
            mbal: ballot_above(seen, me, hosts),
            bal,
            value,
        };
        let round = Round {
            me,
            proposal,
            block,
            phase: Phase::One,
        };
        (round, Next::Write(block))
    }

    /// This round's ballot.
    pub fn ballot(&self) -> u64 {
        self.block.mbal
    }

    /// Every host's block as read after this round's last write (`None`
    /// for a host that has none). The entry of this host is ignored: it
    /// knows its own block.
    pub fn on_read(&mut self, blocks: &[Option<Block>]) -> Next {
        let others = || {
            blocks
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != self.me)
                .filter_map(|(_, b)| *b)
        };
        let instance = self.block.instance;
        if let Some(newer) = others().filter(|b| b.instance > instance).map(|b| b.mbal).max() {
            self.phase = Phase::Done;
            return Next::Done(Outcome::Aborted {
                seen: newer,
                newer_instance: true,
            });
        }
        let here = || others().filter(|b| b.instance == instance);
        let highest = here().map(|b| b.mbal).max().unwrap_or(0);
        // An equal ballot of another host aborts too: ballots are unique
        // per host only while every host numbers them from the same pool
        // size and its own index, and a block left by an earlier HA
        // configuration (other indices) may repeat one.
        if highest >= self.block.mbal {
            self.phase = Phase::Done;
            return Next::Done(Outcome::Aborted {
                seen: highest,
                newer_instance: false,
            });
        }
        match self.phase {
            Phase::One => {
                // The value accepted in the highest ballot, ours included,
                // else our own proposal.
                let accepted = here()
                    .chain(std::iter::once(self.block))
                    .filter(|b| b.bal > 0 && b.value.is_some())
                    .max_by_key(|b| b.bal)
                    .and_then(|b| b.value);
                self.block.bal = self.block.mbal;
                self.block.value = Some(accepted.unwrap_or(self.proposal));
                self.phase = Phase::Two;
                Next::Write(self.block)
            }
            Phase::Two => {
                self.phase = Phase::Done;
                match self.block.value {
                    Some(v) => Next::Done(Outcome::Decided(v)),
                    None => Next::Done(Outcome::Aborted {
                        seen: highest,
                        newer_instance: false,
                    }),
                }
            }
            Phase::Done => Next::Done(Outcome::Aborted {
                seen: highest,
                newer_instance: false,
            }),
        }
    }

    /// This host's block as the round left it (to carry into a retry).
    pub fn block(&self) -> Block {
        self.block
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(host: u16) -> Owner {
        Owner { host, boot: 1 }
    }

    #[test]
    fn ballots_are_unique_per_host_and_above_what_was_seen() {
        for hosts in 1..6 {
            for seen in 0..40 {
                let all: Vec<u64> = (0..hosts).map(|me| ballot_above(seen, me, hosts)).collect();
                for (me, &b) in all.iter().enumerate() {
                    assert!(b > seen);
                    assert_eq!(b % hosts as u64, me as u64 % hosts as u64);
                }
            }
        }
    }

    #[test]
    fn alone_a_host_decides_its_own_proposal_in_two_writes() {
        let (mut r, next) = Round::start(1, 3, 1, owner(1), Block::default(), 0);
        let Next::Write(b1) = next else { panic!() };
        assert_eq!(b1.bal, 0);
        let Next::Write(b2) = r.on_read(&[None, Some(b1), None]) else {
            panic!()
        };
        assert_eq!((b2.bal, b2.value), (b2.mbal, Some(owner(1))));
        assert_eq!(
            r.on_read(&[None, Some(b2), None]),
            Next::Done(Outcome::Decided(owner(1)))
        );
    }

    #[test]
    fn a_later_ballot_adopts_a_value_accepted_before() {
        // Host 0 accepted its value in ballot 3 and crashed.
        let accepted = Block {
            instance: 1,
            mbal: 3,
            bal: 3,
            value: Some(owner(0)),
        };
        let (mut r, _) = Round::start(1, 3, 1, owner(1), Block::default(), 3);
        let Next::Write(b) = r.on_read(&[Some(accepted), None, None]) else {
            panic!()
        };
        assert_eq!(b.value, Some(owner(0)));
        assert_eq!(
            r.on_read(&[Some(accepted), None, None]),
            Next::Done(Outcome::Decided(owner(0)))
        );
    }

    #[test]
    fn a_ballot_near_the_top_does_not_wrap() {
        for seen in [u64::MAX, u64::MAX - 1, u64::MAX - 5] {
            let b = ballot_above(seen, 1, 3);
            assert!(b >= seen, "{b} below {seen}");
        }
    }

    #[test]
    fn an_equal_ballot_of_another_host_aborts() {
        let (mut r, next) = Round::start(0, 2, 1, owner(0), Block::default(), 0);
        let Next::Write(mine) = next else { panic!() };
        let twin = Block {
            value: Some(owner(1)),
            bal: mine.mbal,
            ..mine
        };
        assert!(matches!(
            r.on_read(&[Some(mine), Some(twin)]),
            Next::Done(Outcome::Aborted { .. })
        ));
    }

    #[test]
    fn a_higher_ballot_or_a_newer_instance_aborts() {
        let (mut r, _) = Round::start(0, 2, 1, owner(0), Block::default(), 0);
        let higher = Block {
            instance: 1,
            mbal: 99,
            bal: 0,
            value: None,
        };
        assert_eq!(
            r.on_read(&[None, Some(higher)]),
            Next::Done(Outcome::Aborted {
                seen: 99,
                newer_instance: false
            })
        );
        let (mut r, _) = Round::start(0, 2, 1, owner(0), Block::default(), 0);
        let newer = Block {
            instance: 2,
            mbal: 1,
            bal: 1,
            value: Some(owner(1)),
        };
        assert!(matches!(
            r.on_read(&[None, Some(newer)]),
            Next::Done(Outcome::Aborted {
                newer_instance: true,
                ..
            })
        ));
    }
}
