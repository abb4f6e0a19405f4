//! The survival rules, as pure functions of the views a host holds when its
//! fault handler reaches phase 3.
//!
//! - Rule 1: win outright when every host still writing the statefile is
//!   reachable on the network (`sfd ⊆ hbd`, `sfd` not empty); else the
//!   largest partition, computed from each host's statefile-published
//!   views, wins; ties go to the lowest index (lowest host UUID), weights
//!   bias it by `0x100` each. Unlike xhad, only liveset members count, as
//!   candidates and as partition members: this host's liveset and the
//!   hosts its members publish in theirs (`Views::members`).
//! - Links that do not work both ways between every pair of hosts are
//!   reduced to clean partitions before these rules run: in the fault
//!   handler a host keeps in its hbdomain only the best fully connected set
//!   around it ([`best_clique`]), so the largest fully connected set is
//!   the one that survives.
//! - Rule 2: nobody on the network can reach the statefile and every host
//!   off the network is excluded: everyone stays.
//! - Storage-lost hosts (the seeds' "lost storage but not network"): a host
//!   that cannot reach the statefile but reaches a strict majority of the
//!   liveset on the network is kept by the winners, instead of dropped as
//!   xhad does. It cannot write VM disks, so keeping it harms no data.

use crate::hostset::HostSet;
use crate::message::TieBreak;

/// What a host knows when it decides whether it survives.
#[derive(Debug, Clone)]
pub struct Views<'a> {
    pub me: usize,
    /// Configured hosts.
    pub hosts: usize,
    pub current: HostSet,
    /// My hbdomain and sfdomain.
    pub hbdomain: HostSet,
    pub sfdomain: HostSet,
    /// I can reach the statefile.
    pub sf_access: bool,
    /// Peers whose heartbeat shows them in their own sfdomain (they reach
    /// the statefile).
    pub peers_with_sf: HostSet,
    /// Each host's published (sfdomain, hbdomain) from its statefile slot.
    pub published: &'a [Option<(HostSet, HostSet)>],
    /// Each host's tie-break values (missing: the default, which leaves
    /// the tie to the lowest index).
    pub ties: &'a [Option<TieBreak>],
    /// Hosts whose slot says they are starting: a joiner's published views
    /// are not a partition's (it may count as a member of one).
    pub joiners: HostSet,
    /// Unheard holders outside `members` that hold this host in their
    /// liveset (a join completed on other members only): rule 1 needs them
    /// heard, and the largest-partition rule counts them as members.
    pub claimants: HostSet,
    /// Hosts whose slot says they left cleanly.
    pub excluded: HostSet,
    /// Hosts heard on the network whose heartbeat says they are in no
    /// liveset (starting, or stopping): not armed, whatever they reach.
    pub heard_unarmed: HostSet,
    /// The hosts the largest-partition rule counts: `current`, and the
    /// hosts its members publish in their livesets (a joiner one member took
    /// in while another was cut off before it saw the last ack).
    pub members: HostSet,
    pub weights: &'a [u32],
}

/// How a host came out of the survival test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every host on storage is reachable on the network.
    WonOutright,
    /// This host is in the largest partition.
    LargestPartition,
    /// Survival rule 2: the statefile is gone for everyone, the network is whole.
    Rule2,
    /// This host lost the statefile but reaches a majority that does not:
    /// it survives if the winners keep it.
    StorageLost,
    Lost,
}

impl Outcome {
    pub fn survives(self) -> bool {
        !matches!(self, Outcome::Lost)
    }
}

fn size(sf: HostSet, hb: HostSet, weights: &[u32]) -> u64 {
    if sf.is_empty() {
        return 0;
    }
    sf.and(hb)
        .iter()
        .map(|i| 1 + 0x100 * u64::from(weights.get(i).copied().unwrap_or(0)))
        .sum()
}

/// The host whose partition is strictly largest, scanning from index 0,
/// by the statefile-published views (this host's own for itself). Only the
/// liveset's members count: a host joining during the fault handler may
/// hear both sides of a split, and its views would make each side think it
/// is the joiner's partition.
pub fn largest_partition(v: &Views) -> Option<usize> {
    let members = v.members.or(v.current).or(v.claimants);
    // Size first; between equal sizes the candidate's tie-break values
    // (network evidence, then priority); then the lowest index, as the
    // scan goes from index 0 and only a strictly better key replaces.
    let mut best: Option<(usize, (u64, TieBreak))> = None;
    for i in members.iter() {
        if !v.sfdomain.contains(i) || (i != v.me && v.joiners.contains(i)) {
            continue;
        }
        let (sf, hb) = if i == v.me {
            (v.sfdomain, v.hbdomain)
        } else {
            match v.published.get(i).copied().flatten() {
                Some(views) => views,
                None => continue,
            }
        };
        // A joiner counts in no partition: it is not armed and decides
        // nothing, and the heartbeats that put it on one side are read at
        // different moments by each side (rule S, 150079909).
        let counted = members.minus(v.joiners);
        let s = size(sf.and(counted), hb.and(counted), v.weights);
        if s == 0 {
            continue;
        }
        let key = (s, v.ties.get(i).copied().flatten().unwrap_or_default());
        if best.is_none_or(|b| key > b.1) {
            best = Some((i, key));
        }
    }
    best.map(|b| b.0)
}

fn in_largest_partition(v: &Views) -> bool {
    // A host without its own slot fresh decides nothing: the hosts that
    // have the statefile keep it or not (storage-lost).
    if !v.sf_access {
        return false;
    }
    let Some(w) = largest_partition(v) else {
        return false;
    };
    if w == v.me {
        return true;
    }
    let Some((wsf, whb)) = v.published.get(w).copied().flatten() else {
        return false;
    };
    wsf.contains(v.me) && whb.contains(v.me) && v.sfdomain.contains(w) && v.hbdomain.contains(w)
}

/// How many search steps the clique search may take. Pools are small and
/// nearly fully connected, so this is never reached in practice; the
/// search is deterministic, so hosts with the same views stop alike.
const CLIQUE_STEPS: u32 = 100_000;

/// The best fully connected set holding `me` among `hosts`, where
/// `edge[i]` is the set of hosts `i` is connected to both ways: the
/// highest weight, then the most hosts, then the set holding the lowest
/// index where two differ.
pub fn best_clique(hosts: HostSet, edge: &[HostSet], me: usize, weights: &[u32]) -> HostSet {
    let mut best = HostSet::single(me);
    let mut steps = 0;
    let start = hosts.and(edge.get(me).copied().unwrap_or_default()).without(me);
    grow(HostSet::single(me), start, edge, weights, &mut best, &mut steps);
    best
}

fn better(a: HostSet, b: HostSet, weights: &[u32]) -> bool {
    let score = |s: HostSet| size(s, s, weights);
    match score(a).cmp(&score(b)) {
        std::cmp::Ordering::Equal => HostSet(a.0 ^ b.0).lowest().is_some_and(|i| a.contains(i)),
        o => o.is_gt(),
    }
}

/// Bron–Kerbosch without pivoting, candidates in index order.
fn grow(clique: HostSet, candidates: HostSet, edge: &[HostSet], weights: &[u32], best: &mut HostSet, steps: &mut u32) {
    *steps += 1;
    if better(clique, *best, weights) {
        *best = clique;
    }
    if *steps > CLIQUE_STEPS {
        return;
    }
    let mut rest = candidates;
    for i in candidates.iter() {
        let nb = edge.get(i).copied().unwrap_or_default();
        grow(clique.with(i), rest.and(nb), edge, weights, best, steps);
        rest.remove(i);
    }
}

/// Survival rule 2 holds: no host this host hears reaches the statefile,
/// and every host it does not hear left cleanly, as in xhad: all the
/// pool's hosts, not only the liveset's (counting members only let a lone
/// member without the statefile survive beside a host it had dropped, and
/// two masters followed: ha-sim 190028636).
///
/// A host heard that is in no liveset (starting or stopping) counts as
/// heard, as in xhad, not as one that must have left cleanly: a host
/// booting without storage while the whole SR was down made every member
/// fail rule 2 (ha-sim 240200103). It is not armed and cannot arm without
/// the statefile, and its heartbeat says whether it reaches it.
pub fn rule2(v: &Views) -> bool {
    let hbd = v.hbdomain.and(v.current.or(v.heard_unarmed));
    (0..v.hosts).all(|i| {
        let sf = if i == v.me {
            v.sf_access
        } else {
            v.peers_with_sf.contains(i)
        };
        if hbd.contains(i) {
            !sf
        } else {
            v.excluded.contains(i)
        }
    })
}

/// A network partition big enough to keep hosts without storage.
pub fn majority(hbd: HostSet, current: HostSet) -> bool {
    hbd.and(current).len() * 2 > current.len()
}

/// The survival test.
pub fn survival(v: &Views) -> Outcome {
    let hbd = v.hbdomain.and(v.current);
    let sfd = v.sfdomain.and(v.current);
    // Every holder the survival test counts (the liveset and the members
    // its peers, or a holder listing this host, publish) must be heard.
    let counted_sfd = v.sfdomain.and(v.members.or(v.current).or(v.claimants));
    if v.sf_access && sfd.contains(v.me) && counted_sfd.is_subset(v.hbdomain) {
        return Outcome::WonOutright;
    }
    if in_largest_partition(v) {
        return Outcome::LargestPartition;
    }
    if rule2(v) {
        return Outcome::Rule2;
    }
    if !v.sf_access && majority(hbd, v.current) && !hbd.without(v.me).and(v.peers_with_sf).is_empty() {
        return Outcome::StorageLost;
    }
    Outcome::Lost
}

/// The hosts a winner keeps: those in both domains (only the network one
/// under rule 2), plus storage-lost hosts of a majority partition.
pub fn keep(v: &Views, outcome: Outcome) -> HostSet {
    let hbd = v.hbdomain.and(v.current);
    let sfd = v.sfdomain.and(v.current);
    let mut keep = if outcome == Outcome::Rule2 { hbd } else { hbd.and(sfd) };
    if majority(hbd, v.current) {
        for i in hbd.iter() {
            if i != v.me && !v.peers_with_sf.contains(i) {
                keep.insert(i);
            }
        }
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: &[usize]) -> HostSet {
        v.iter().copied().collect()
    }

    struct Case {
        name: &'static str,
        me: usize,
        hosts: usize,
        hb: &'static [usize],
        sf: &'static [usize],
        sf_access: bool,
        peers_with_sf: &'static [usize],
        /// Per host: (sfdomain, hbdomain) as published in its slot.
        published: &'static [(&'static [usize], &'static [usize])],
        expect: Outcome,
        keeps: &'static [usize],
    }

    const ALL3: (&[usize], &[usize]) = (&[0, 1, 2], &[0, 1, 2]);

    // The rows of the seeds' table and of the reference's table, seen from
    // each host involved.
    const CASES: &[Case] = &[
        Case {
            name: "host 2 lost both: the others win outright and drop it",
            me: 0,
            hosts: 3,
            hb: &[0, 1],
            sf: &[0, 1],
            sf_access: true,
            peers_with_sf: &[1],
            published: &[(&[0, 1], &[0, 1]), (&[0, 1], &[0, 1]), ALL3],
            expect: Outcome::WonOutright,
            keeps: &[0, 1],
        },
        Case {
            name: "host 2 lost storage only: the others win and keep it (majority)",
            me: 0,
            hosts: 3,
            hb: &[0, 1, 2],
            sf: &[0, 1],
            sf_access: true,
            peers_with_sf: &[1],
            published: &[(&[0, 1], &[0, 1, 2]), (&[0, 1], &[0, 1, 2]), ALL3],
            expect: Outcome::WonOutright,
            keeps: &[0, 1, 2],
        },
        Case {
            name: "host 2 lost storage only, its own view: it survives if kept",
            me: 2,
            hosts: 3,
            hb: &[0, 1, 2],
            sf: &[],
            sf_access: false,
            peers_with_sf: &[0, 1],
            published: &[(&[0, 1], &[0, 1, 2]), (&[0, 1], &[0, 1, 2]), ALL3],
            expect: Outcome::StorageLost,
            keeps: &[],
        },
        Case {
            name: "host 2 lost network only: the pair is the largest partition",
            me: 0,
            hosts: 3,
            hb: &[0, 1],
            sf: &[0, 1, 2],
            sf_access: true,
            peers_with_sf: &[1],
            published: &[(&[0, 1, 2], &[0, 1]), (&[0, 1, 2], &[0, 1]), (&[0, 1, 2], &[2])],
            expect: Outcome::LargestPartition,
            keeps: &[0, 1],
        },
        Case {
            name: "host 1 of the pair also wins through host 0's view",
            me: 1,
            hosts: 3,
            hb: &[0, 1],
            sf: &[0, 1, 2],
            sf_access: true,
            peers_with_sf: &[0],
            published: &[(&[0, 1, 2], &[0, 1]), (&[0, 1, 2], &[0, 1]), (&[0, 1, 2], &[2])],
            expect: Outcome::LargestPartition,
            keeps: &[0, 1],
        },
        Case {
            name: "host 2 lost network only, its own view: it fences",
            me: 2,
            hosts: 3,
            hb: &[2],
            sf: &[0, 1, 2],
            sf_access: true,
            peers_with_sf: &[],
            published: &[(&[0, 1, 2], &[0, 1]), (&[0, 1, 2], &[0, 1]), (&[0, 1, 2], &[2])],
            expect: Outcome::Lost,
            keeps: &[],
        },
        Case {
            name: "equal partitions: the lowest UUID (index 0) wins",
            me: 0,
            hosts: 2,
            hb: &[0],
            sf: &[0, 1],
            sf_access: true,
            peers_with_sf: &[],
            published: &[(&[0, 1], &[0]), (&[0, 1], &[1])],
            expect: Outcome::LargestPartition,
            keeps: &[0],
        },
        Case {
            name: "equal partitions: the higher UUID fences",
            me: 1,
            hosts: 2,
            hb: &[1],
            sf: &[0, 1],
            sf_access: true,
            peers_with_sf: &[],
            published: &[(&[0, 1], &[0]), (&[0, 1], &[1])],
            expect: Outcome::Lost,
            keeps: &[],
        },
        Case {
            name: "everyone lost the statefile: rule 2, everyone stays",
            me: 1,
            hosts: 3,
            hb: &[0, 1, 2],
            sf: &[],
            sf_access: false,
            peers_with_sf: &[],
            published: &[ALL3, ALL3, ALL3],
            expect: Outcome::Rule2,
            keeps: &[0, 1, 2],
        },
        Case {
            name: "statefile lost everywhere and a partition: everyone fences",
            me: 0,
            hosts: 3,
            hb: &[0, 1],
            sf: &[],
            sf_access: false,
            peers_with_sf: &[],
            published: &[ALL3, ALL3, ALL3],
            expect: Outcome::Lost,
            keeps: &[],
        },
        Case {
            name: "statefile lost everywhere and a partition, the lone host fences too",
            me: 2,
            hosts: 3,
            hb: &[2],
            sf: &[],
            sf_access: false,
            peers_with_sf: &[],
            published: &[ALL3, ALL3, ALL3],
            expect: Outcome::Lost,
            keeps: &[],
        },
        Case {
            name: "a lone host without storage in a 3-host pool fences",
            me: 2,
            hosts: 3,
            hb: &[2],
            sf: &[],
            sf_access: false,
            peers_with_sf: &[],
            published: &[(&[0, 1], &[0, 1]), (&[0, 1], &[0, 1]), ALL3],
            expect: Outcome::Lost,
            keeps: &[],
        },
    ];

    #[test]
    fn the_failure_tables() {
        for c in CASES {
            let published: Vec<_> = c.published.iter().map(|(s, h)| Some((set(s), set(h)))).collect();
            let weights = vec![0; c.hosts];
            let v = Views {
                me: c.me,
                hosts: c.hosts,
                current: HostSet::first(c.hosts),
                hbdomain: set(c.hb),
                sfdomain: set(c.sf),
                sf_access: c.sf_access,
                peers_with_sf: set(c.peers_with_sf),
                published: &published,
                excluded: HostSet::EMPTY,
                heard_unarmed: HostSet::EMPTY,
                members: HostSet::EMPTY,
                weights: &weights,
                ties: &[],
                joiners: HostSet::EMPTY,
                claimants: HostSet::EMPTY,
            };
            let got = survival(&v);
            assert_eq!(got, c.expect, "{}", c.name);
            if matches!(got, Outcome::WonOutright | Outcome::LargestPartition | Outcome::Rule2) {
                assert_eq!(keep(&v, got), set(c.keeps), "{}", c.name);
            }
        }
    }

    #[test]
    fn the_best_clique_is_the_heaviest_then_largest_then_lowest() {
        // 0-1, 1-2, 1-3, 2-3: around 1, {1,2,3} beats {0,1}.
        let edge = vec![set(&[1]), set(&[0, 2, 3]), set(&[1, 3]), set(&[1, 2])];
        let all = set(&[0, 1, 2, 3]);
        assert_eq!(best_clique(all, &edge, 1, &[0; 4]), set(&[1, 2, 3]));
        assert_eq!(best_clique(all, &edge, 0, &[0; 4]), set(&[0, 1]));
        // A chain 0-1-2: around 1, the tie goes to the set with host 0.
        let chain = vec![set(&[1]), set(&[0, 2]), set(&[1])];
        assert_eq!(best_clique(set(&[0, 1, 2]), &chain, 1, &[0; 3]), set(&[0, 1]));
        // A weight on 2 turns it.
        assert_eq!(best_clique(set(&[0, 1, 2]), &chain, 1, &[0, 0, 1]), set(&[1, 2]));
        // Only hosts in `hosts` count.
        assert_eq!(best_clique(set(&[1, 2]), &chain, 1, &[0; 3]), set(&[1, 2]));
    }

    #[test]
    fn weight_beats_the_lower_uuid() {
        let published = vec![Some((set(&[0, 1]), set(&[0]))), Some((set(&[0, 1]), set(&[1])))];
        let weights = vec![0, 1];
        let v = Views {
            me: 1,
            hosts: 2,
            current: set(&[0, 1]),
            hbdomain: set(&[1]),
            sfdomain: set(&[0, 1]),
            sf_access: true,
            peers_with_sf: HostSet::EMPTY,
            published: &published,
            excluded: HostSet::EMPTY,
            heard_unarmed: HostSet::EMPTY,
            members: HostSet::EMPTY,
            weights: &weights,
            ties: &[],
            joiners: HostSet::EMPTY,
            claimants: HostSet::EMPTY,
        };
        assert_eq!(survival(&v), Outcome::LargestPartition);
        assert_eq!(largest_partition(&v), Some(1));
    }

    #[test]
    fn a_joiner_that_hears_both_sides_of_a_split_does_not_make_both_win() {
        // Liveset {0,2}; 0 and 2 cannot hear each other; host 1, joining,
        // hears both and publishes a hbdomain of all three (ha-sim seed 2348).
        let published = vec![
            Some((set(&[0, 1, 2]), set(&[0, 1]))),
            Some((set(&[0, 1, 2]), set(&[0, 1, 2]))),
            Some((set(&[0, 1, 2]), set(&[1, 2]))),
        ];
        let weights = vec![0; 3];
        let from = |me: usize, hbdomain: HostSet| Views {
            me,
            hosts: 3,
            current: set(&[0, 2]),
            hbdomain,
            sfdomain: set(&[0, 1, 2]),
            sf_access: true,
            peers_with_sf: set(&[0, 1, 2]).without(me),
            published: &published,
            excluded: HostSet::EMPTY,
            heard_unarmed: HostSet::EMPTY,
            members: HostSet::EMPTY,
            weights: &weights,
            ties: &[],
            joiners: HostSet::EMPTY,
            claimants: HostSet::EMPTY,
        };
        let host0 = from(0, set(&[0, 1]));
        let host2 = from(2, set(&[1, 2]));
        assert_eq!(largest_partition(&host0), Some(0));
        assert_eq!(largest_partition(&host2), Some(0));
        assert_eq!(survival(&host0), Outcome::LargestPartition);
        assert_eq!(keep(&host0, Outcome::LargestPartition), set(&[0]));
        assert_eq!(survival(&host2), Outcome::Lost);
    }

    #[test]
    fn members_that_disagree_on_a_joiner_count_it_alike() {
        // Host 4 joined: hosts 1 and 3 took it in, hosts 0 and 2 acked it
        // but were cut off before they saw the last ack. The split is
        // {0,2} | {1,3,4} (ha-sim seed 8446). Counting only its own liveset,
        // host 0 would see two partitions of two and win on the lower index.
        let both = set(&[0, 1, 2, 3, 4]);
        let published = vec![
            Some((both, set(&[0, 2]))),
            Some((both, set(&[1, 3, 4]))),
            Some((both, set(&[0, 2]))),
            Some((both, set(&[1, 3, 4]))),
            Some((both, set(&[1, 3, 4]))),
        ];
        let weights = vec![0; 5];
        let mut host0 = Views {
            me: 0,
            hosts: 5,
            current: set(&[0, 1, 2, 3]),
            hbdomain: set(&[0, 2]),
            sfdomain: both,
            sf_access: true,
            peers_with_sf: set(&[2]),
            published: &published,
            excluded: HostSet::EMPTY,
            heard_unarmed: HostSet::EMPTY,
            members: HostSet::EMPTY,
            weights: &weights,
            ties: &[],
            joiners: HostSet::EMPTY,
            claimants: HostSet::EMPTY,
        };
        assert_eq!(survival(&host0), Outcome::LargestPartition, "the flaw being fixed");
        // Host 1's slot lists host 4 in its liveset.
        host0.members = both;
        assert_eq!(largest_partition(&host0), Some(1));
        assert_eq!(survival(&host0), Outcome::Lost);
        let host1 = Views {
            me: 1,
            current: both,
            hbdomain: set(&[1, 3, 4]),
            peers_with_sf: set(&[3, 4]),
            members: both,
            ..host0.clone()
        };
        assert_eq!(survival(&host1), Outcome::LargestPartition);
    }

    /// Host 0's views in a pool of `hosts` where no host reaches the
    /// statefile: liveset `current`, hearing `hbdomain`.
    fn storageless(hosts: usize, current: HostSet, hbdomain: HostSet) -> Views<'static> {
        Views {
            me: 0,
            hosts,
            current,
            hbdomain,
            sfdomain: HostSet::EMPTY,
            sf_access: false,
            peers_with_sf: HostSet::EMPTY,
            published: &[],
            excluded: HostSet::EMPTY,
            heard_unarmed: HostSet::EMPTY,
            members: HostSet::EMPTY,
            weights: &[],
            ties: &[],
            joiners: HostSet::EMPTY,
            claimants: HostSet::EMPTY,
        }
    }

    #[test]
    fn rule2_needs_absent_hosts_excluded() {
        let mut v = storageless(3, set(&[0, 1, 2]), set(&[0, 1]));
        assert!(!rule2(&v));
        v.excluded = set(&[2]);
        assert!(rule2(&v));
        // Out of the liveset (dropped earlier), host 2 must still have left
        // cleanly, as in xhad (ha-sim 190028636).
        v.current = set(&[0, 1]);
        v.excluded = HostSet::EMPTY;
        assert!(!rule2(&v));
    }

    #[test]
    fn rule2_counts_a_heard_host_in_no_liveset_as_heard() {
        // The whole SR is down; host 1, out of the liveset, boots without
        // storage and is heard (ha-sim 240200103).
        let mut v = storageless(3, set(&[0, 2]), set(&[0, 1, 2]));
        assert!(!rule2(&v), "a heard host in another liveset is not known to be unarmed");
        v.heard_unarmed = set(&[1]);
        assert!(rule2(&v));
        assert_eq!(survival(&v), Outcome::Rule2);
        // Heard, and reaching the statefile: rule 2 does not hold.
        v.peers_with_sf = set(&[1]);
        assert!(!rule2(&v));
        // Not heard: it must have left cleanly.
        v.peers_with_sf = HostSet::EMPTY;
        v.hbdomain = set(&[0, 2]);
        assert!(!rule2(&v));
    }
}
