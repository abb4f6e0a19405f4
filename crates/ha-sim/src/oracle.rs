//! The availability oracle: was each fence necessary?
//!
//! [`keeps`] applies the project's own survival rules (`ha_liveness::rules`)
//! to the ground truth (`truth`) at one instant, from one host's point of
//! view. [`judge`] classifies a fence by the decisions over the instants
//! before it:
//!
//! - **Justified**: the host was dropped at every instant of a run lasting
//!   at least `P` = T1 − 2·t1 (6 s at T = 10 s) that ended after `t − L`,
//!   with `L` = T1 + the fault-handler budget + t1 (10 + 12 + 2 = 24 s).
//! - **Ambiguous** (loss, slow I/O): not justified, but some instant of
//!   `[t − L, t)` is ambiguous. Not charged.
//! - **Unnecessary**: every other fence.
//! - **Unnecessary, clean**: unnecessary, and throughout `[t − L, t)` the
//!   host was up, had `Ok` statefile I/O and links both ways to every up
//!   host, with no packet loss.
//!
//! Only instants of the fenced host's current boot count for the runs.

use ha_liveness::rules::best_clique;
use ha_liveness::{HostSet, Millis, Timeouts};

use crate::truth::{FenceRecord, Io, Recorder, Truth};

/// The ideal decision for one host at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Keep,
    Drop,
    /// Keep or drop depending on flaky links under packet loss.
    AmbiguousLoss,
    /// Keep or drop depending on `Slow` statefile I/O.
    AmbiguousSlow,
}

/// How a fence is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class {
    Justified,
    AmbiguousLoss,
    AmbiguousSlow,
    Unnecessary,
    UnnecessaryClean,
}

impl Class {
    pub const ALL: [Class; 5] = [
        Class::Justified,
        Class::AmbiguousLoss,
        Class::AmbiguousSlow,
        Class::Unnecessary,
        Class::UnnecessaryClean,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Class::Justified => "JUSTIFIED",
            Class::AmbiguousLoss => "AMBIGUOUS_LOSS",
            Class::AmbiguousSlow => "AMBIGUOUS_SLOW",
            Class::Unnecessary => "UNNECESSARY",
            Class::UnnecessaryClean => "UNNECESSARY_CLEAN",
        }
    }

    /// Charged as a fence the rules would not have made.
    pub fn unnecessary(self) -> bool {
        matches!(self, Class::Unnecessary | Class::UnnecessaryClean)
    }
}

/// The oracle's windows, in ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    /// P = T1 − 2·t1: the shortest condition that may be acted on.
    pub p: Millis,
    /// L = T1 + budget + t1: how late a correct engine may act on it.
    pub l: Millis,
    /// T + budget: the fences that make one whole-pool burst.
    pub burst: Millis,
}

impl Windows {
    /// From the timeouts and the fault-handler budget (`Engine::fh_budget`).
    pub fn new(t: &Timeouts, budget: Millis) -> Windows {
        Windows {
            p: t.hb_timeout.saturating_sub(2 * t.hb_interval),
            l: t.hb_timeout + budget + t.hb_interval,
            burst: t.t + budget,
        }
    }
}

/// The ideal decision for host `h` at the instant of `truth`: the survival
/// rules applied to the real world. `Slow` storage and flaky links are
/// evaluated both ways; when the answers differ the instant is ambiguous.
pub fn keeps(truth: &Truth, h: usize) -> Decision {
    let Some(me) = truth.hosts.get(h) else {
        return Decision::Drop;
    };
    // Down, frozen or hung: the watchdog's job.
    if !me.up || me.frozen || me.io == Io::Hung {
        return Decision::Drop;
    }
    let online: HostSet = (0..truth.hosts.len()).filter(|&i| truth.hosts[i].online).collect();
    // A host still joining is judged against the pool's liveset.
    let liveset = if me.live {
        me.liveset
    } else {
        online.iter().fold(HostSet::EMPTY, |s, i| s.or(truth.hosts[i].liveset))
    }
    .with(h);
    let members = liveset.and(online).with(h);
    let slow = members.iter().any(|i| truth.hosts[i].io == Io::Slow);
    let flaky = truth.loss && truth.any_flaky(members);
    let slow_ways: &[bool] = if slow { &[true, false] } else { &[true] };
    let loss_ways: &[bool] = if flaky { &[false, true] } else { &[false] };
    let mut answers = Vec::new();
    for &slow_ok in slow_ways {
        let row: Vec<bool> = loss_ways
            .iter()
            .map(|&flaky_broken| decide(truth, h, members, liveset, slow_ok, flaky_broken))
            .collect();
        answers.push(row);
    }
    let first = answers[0][0];
    if answers.iter().flatten().all(|&a| a == first) {
        return if first { Decision::Keep } else { Decision::Drop };
    }
    if answers.iter().any(|row| row.iter().any(|&a| a != row[0])) {
        Decision::AmbiguousLoss
    } else {
        Decision::AmbiguousSlow
    }
}

/// One reading of the rules: `Slow` storage counts as working when
/// `slow_ok`, flaky links as broken when `flaky_broken`.
fn decide(t: &Truth, h: usize, members: HostSet, liveset: HostSet, slow_ok: bool, flaky_broken: bool) -> bool {
    let has_sf = |i: usize| match t.hosts[i].io {
        Io::Ok => true,
        Io::Slow => slow_ok,
        Io::Hung | Io::Cut => false,
    };
    let holders: HostSet = members.iter().filter(|&i| has_sf(i)).collect();
    let parts = partitions(t, members, flaky_broken);
    let mine = parts
        .iter()
        .copied()
        .find(|p| p.contains(h))
        .unwrap_or(HostSet::single(h));
    let wins = winner(t, &parts, holders) == Some(mine);
    if has_sf(h) {
        // Rule 1: won outright, or the largest partition.
        return wins;
    }
    let rule2 = mine.and(holders).is_empty() && (0..t.hosts.len()).all(|i| mine.contains(i) || t.excluded.contains(i));
    let majority = mine.and(liveset).len() * 2 > liveset.len();
    rule2 || (majority && wins)
}

/// The members cut into clean partitions as `rules::best_clique` does:
/// the best fully connected set (most hosts, then the lowest index where
/// two differ), then the best of the rest, and so on. Weights are not
/// modelled (the simulator configures none).
pub fn partitions(t: &Truth, members: HostSet, flaky_broken: bool) -> Vec<HostSet> {
    let n = t.hosts.len();
    let edge: Vec<HostSet> = (0..n)
        .map(|i| (0..n).filter(|&j| j != i && t.linked(i, j, flaky_broken)).collect())
        .collect();
    let zero = vec![0u32; n];
    let mut rest = members;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let best = rest
            .iter()
            .map(|i| best_clique(rest, &edge, i, &zero))
            .reduce(|a, b| if better(b, a) { b } else { a });
        let Some(best) = best.filter(|b| !b.is_empty()) else {
            break;
        };
        out.push(best);
        rest = rest.minus(best);
    }
    out
}

fn better(a: HostSet, b: HostSet) -> bool {
    match a.len().cmp(&b.len()) {
        std::cmp::Ordering::Equal => a.minus(b).or(b.minus(a)).lowest().is_some_and(|i| a.contains(i)),
        o => o.is_gt(),
    }
}

/// The partition whose holders win: all of them, else the most; between
/// equal ones, the partition of the holder with the best tie-break values
/// (link up, then priority), then of the lowest-index such holder, as the
/// engine's largest-partition rule.
fn winner(t: &Truth, parts: &[HostSet], holders: HostSet) -> Option<HostSet> {
    let most = parts.iter().map(|p| p.and(holders).len()).max().unwrap_or(0);
    if most == 0 {
        return None;
    }
    let tie = |h: usize| t.hosts.get(h).map(|x| x.tie).unwrap_or_default();
    parts
        .iter()
        .copied()
        .filter(|p| p.and(holders).len() == most)
        .flat_map(|p| p.and(holders).iter().map(move |h| (p, h)))
        .max_by(|&(_, a), &(_, b)| tie(a).cmp(&tie(b)).then(b.cmp(&a)))
        .map(|(p, _)| p)
}

/// Classify fence `f` by the recorded truth.
pub fn judge(rec: &Recorder, f: &FenceRecord, w: &Windows) -> Class {
    let t = f.at;
    let window = t.saturating_sub(w.l);
    let from = window.saturating_sub(w.p).max(f.booted_at);
    let before = spans(rec, from, t);
    let mut run: Option<Millis> = None;
    let (mut loss, mut slow) = (false, false);
    for &(a, b, truth) in &before {
        let d = keeps(truth, f.host);
        if d == Decision::Drop {
            let start = *run.get_or_insert(a);
            if b > window && b - start >= w.p {
                return Class::Justified;
            }
        } else {
            run = None;
        }
        if b > window && a >= f.booted_at {
            loss |= d == Decision::AmbiguousLoss;
            slow |= d == Decision::AmbiguousSlow;
        }
    }
    if loss {
        return Class::AmbiguousLoss;
    }
    if slow {
        return Class::AmbiguousSlow;
    }
    let clean = spans(rec, window, t)
        .iter()
        .all(|&(_, _, truth)| clean_at(truth, f.host));
    if clean {
        Class::UnnecessaryClean
    } else {
        Class::Unnecessary
    }
}

/// The samples in effect over `[from, to)`, each with its span in it.
fn spans(rec: &Recorder, from: Millis, to: Millis) -> Vec<(Millis, Millis, &Truth)> {
    let first = rec.samples.partition_point(|s| s.at <= from).saturating_sub(1);
    let mut out = Vec::new();
    let mut it = rec.samples.iter().skip(first).peekable();
    while let Some(s) = it.next() {
        if s.at >= to {
            break;
        }
        let a = s.at.max(from);
        let b = it.peek().map_or(to, |n| n.at.min(to));
        if b > a {
            out.push((a, b, s));
        }
    }
    out
}

/// Host `h` is up, has `Ok` I/O and links both ways to every up host, and
/// the network loses nothing.
fn clean_at(t: &Truth, h: usize) -> bool {
    let Some(me) = t.hosts.get(h) else {
        return false;
    };
    me.up && me.io == Io::Ok && !t.loss && (0..t.hosts.len()).all(|j| j == h || !t.hosts[j].up || t.linked(h, j, false))
}

/// A whole-pool fence and its burst.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WholePool {
    pub at: Millis,
    /// The fences of the burst: (host, class), the last one included.
    pub burst: Vec<(usize, Class)>,
}

impl WholePool {
    /// At least one fence of the burst was unnecessary.
    pub fn avoidable(&self) -> bool {
        self.burst.iter().any(|(_, c)| c.unnecessary())
    }
}

/// Every fence judged, and the whole-pool fences with their bursts.
pub fn judge_all(rec: &Recorder, w: &Windows) -> (Vec<Class>, Vec<WholePool>) {
    let classes: Vec<Class> = rec.fences.iter().map(|f| judge(rec, f, w)).collect();
    let mut pools = Vec::new();
    for f in rec.fences.iter().filter(|f| f.whole_pool) {
        let since = f.at.saturating_sub(w.burst);
        let burst = rec
            .fences
            .iter()
            .zip(&classes)
            .filter(|(g, _)| g.at > since && g.at <= f.at)
            .map(|(g, c)| (g.host, *c))
            .collect();
        pools.push(WholePool { at: f.at, burst });
    }
    (classes, pools)
}
