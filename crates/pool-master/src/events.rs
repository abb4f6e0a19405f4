//! The pool database's changes as XAPI events: what `event.from` reads.
//!
//! Every commit, on the master as it commits and on a member as it applies
//! the master's commits, adds one entry per changed row: its generation,
//! class, reference, and whether the commit added, modified or deleted the
//! row (known from the database just before the commit). The log keeps the
//! last [`KEEP`] entries; a token (a generation) older than what it still
//! covers has lost events, and the caller says so (`EVENTS_LOST`). Since
//! members keep the same log from the same commits, a client's token stays
//! good across a master failover.
//!
//! `event.from` answers one event per object changed since the token, as
//! XAPI does (not one per commit): `add` when the object was created after
//! the token, `del` when it is gone, else `mod` ([`Events::since`]).
//! `event.next` reads every entry in order from a cursor, an entry's place
//! in the log ([`Events::after`]).
//!
//! The same log, fed by [`Events::push`] with a counter of its own for
//! "generation", holds the master's task changes (`crate::tasks`).
//!
//! A generation alone does not name a state of the pool: a master that
//! dies with commits its successor never received (taken under survival
//! rule 2, or with HA off before an emergency transition) leaves
//! generations that the successor reuses for other commits. So a token
//! also names the master *term* that gave it (the high half of its task
//! counter, `crate::tasks`), and a host answers a token only from its own
//! term, or from the one term whose history it holds ([`Lineage`]: the
//! master it replicated, up to the last generation it took from it).
//! Any other token has lost its events.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use pool_db::model::{Changes, Model};

/// How many row changes the log keeps.
pub const KEEP: usize = 65_536;

/// What a commit did to a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Add,
    Mod,
    Del,
}

impl Op {
    /// XAPI's name of the operation.
    pub fn name(self) -> &'static str {
        match self {
            Op::Add => "add",
            Op::Mod => "mod",
            Op::Del => "del",
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    /// Its place in the log: one more than the entry before.
    seq: u64,
    generation: u64,
    class: &'static str,
    reference: String,
    uuid: String,
    op: Op,
    /// Unix time of the commit, in ms.
    at_ms: u64,
}

/// One object changed since a token, as `event.from` reports it, or one
/// entry of the log, as `event.next` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The place in the log of the (last) entry told.
    pub seq: u64,
    /// The generation of the last commit that touched it.
    pub generation: u64,
    pub class: &'static str,
    pub reference: String,
    pub uuid: String,
    pub op: Op,
    pub at_ms: u64,
}

impl Change {
    fn of(e: &Entry, op: Op) -> Change {
        Change {
            seq: e.seq,
            generation: e.generation,
            class: e.class,
            reference: e.reference.clone(),
            uuid: e.uuid.clone(),
            op,
            at_ms: e.at_ms,
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    entries: VecDeque<Entry>,
    /// The log covers every change after this generation.
    covers_after: u64,
    /// The place of the next entry.
    next_seq: u64,
    /// Entries before this place are gone.
    kept_from: u64,
}

impl Inner {
    /// Append a change as the next entry.
    fn append(&mut self, generation: u64, class: &'static str, reference: &str, uuid: &str, op: Op, at_ms: u64) {
        self.entries.push_back(Entry {
            seq: self.next_seq,
            generation,
            class,
            reference: reference.to_string(),
            uuid: uuid.to_string(),
            op,
            at_ms,
        });
        self.next_seq += 1;
        while self.entries.len() > KEEP {
            if let Some(e) = self.entries.pop_front() {
                // Everything up to this entry's generation may be lost now.
                self.covers_after = self.covers_after.max(e.generation);
                self.kept_from = e.seq + 1;
            }
        }
    }
}

/// The event log of one host.
#[derive(Debug, Default)]
pub struct Events {
    inner: Mutex<Inner>,
}

/// Why the changes since a token cannot be told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lost {
    /// The log no longer reaches back to the token.
    TooOld,
    /// The token is ahead of this host's database.
    Ahead,
    /// The token comes from a master term whose history this host does
    /// not hold at the token's generation ([`Lineage`]).
    OtherHistory,
}

/// Whose tokens, besides its own term's, name states of this host's
/// database: the master term whose commits it holds, and the last
/// generation it holds of that term's history. A member sets it from its
/// master's full copy and extends it with each commit it applies; a
/// member that becomes master keeps it, frozen at the generation it took
/// over at, so its clients' tokens continue; a database from anywhere else
/// (the HA metadata file, a master of another term) leaves none.
#[derive(Debug, Default)]
pub struct Lineage {
    inner: Mutex<Option<(u64, u64)>>,
}

impl Lineage {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(u64, u64)>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// This host's database is term `term`'s history up to `generation`
    /// (or, `None`, no term's but this host's own).
    pub fn set(&self, lineage: Option<(u64, u64)>) {
        *self.lock() = lineage;
    }

    /// Commits of term `term` were applied up to `generation`: the
    /// lineage of that term grows; one of another term ends (its commits
    /// continue a history this host cannot vouch for).
    pub fn extend(&self, term: u64, generation: u64) {
        let mut l = self.lock();
        *l = match *l {
            Some((t, upto)) if t == term => Some((t, upto.max(generation))),
            _ => None,
        };
    }

    /// The term and last generation held, if any.
    pub fn get(&self) -> Option<(u64, u64)> {
        *self.lock()
    }

    /// Is generation `generation` of term `term`'s history a state of this
    /// host's database?
    pub fn holds(&self, term: u64, generation: u64) -> bool {
        matches!(*self.lock(), Some((t, upto)) if t == term && generation <= upto)
    }
}

impl Events {
    /// A log that covers every change after `generation` (the database as
    /// this host loaded it).
    pub fn new(generation: u64) -> Events {
        Events {
            inner: Mutex::new(Inner {
                covers_after: generation,
                ..Inner::default()
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Record commit `generation`, whose `changes` apply to `before`.
    pub fn record(&self, generation: u64, before: &Model, changes: &Changes) {
        let at_ms = crate::clock::unix_ms();
        let mut inner = self.lock();
        changes.for_each_ref(|class, reference, uuid| {
            let op = match uuid {
                None => Op::Del,
                Some(_) if before.has(class, reference) => Op::Mod,
                Some(_) => Op::Add,
            };
            inner.append(generation, class, reference, uuid.unwrap_or_default(), op, at_ms);
        });
    }

    /// Record one change at `generation` (which must not go back).
    pub fn push(&self, generation: u64, class: &'static str, reference: &str, uuid: &str, op: Op) {
        self.lock()
            .append(generation, class, reference, uuid, op, crate::clock::unix_ms());
    }

    /// The place the next entry will take: a cursor that reads only what
    /// comes after now.
    pub fn end(&self) -> u64 {
        self.lock().next_seq
    }

    /// Up to `limit` entries `wanted` accepts (by class and reference),
    /// read in order from place `cursor`, and the cursor after the last
    /// entry read (entries `wanted` refuses are read past). `Lost` when the
    /// log no longer holds the entry at `cursor`.
    pub fn after(
        &self,
        cursor: u64,
        limit: usize,
        wanted: impl Fn(&str, &str) -> bool,
    ) -> Result<(Vec<Change>, u64), Lost> {
        let inner = self.lock();
        if cursor < inner.kept_from {
            return Err(Lost::TooOld);
        }
        if cursor > inner.next_seq {
            return Err(Lost::Ahead);
        }
        let start = usize::try_from(cursor - inner.kept_from).unwrap_or(usize::MAX);
        let mut out = Vec::new();
        let mut next = cursor;
        for e in inner.entries.iter().skip(start) {
            if out.len() >= limit {
                break;
            }
            next = e.seq + 1;
            if wanted(e.class, &e.reference) {
                out.push(Change::of(e, e.op));
            }
        }
        Ok((out, next))
    }

    /// The database was replaced whole at `generation`: nothing before it
    /// can be told.
    pub fn reset(&self, generation: u64) {
        let mut inner = self.lock();
        inner.entries.clear();
        inner.covers_after = generation;
        inner.kept_from = inner.next_seq;
    }

    /// Every object `wanted` accepts (by class and reference) changed
    /// after generation `since`, up to `current` (this host's database
    /// now), in commit order of their last change.
    pub fn since(&self, since: u64, current: u64, wanted: impl Fn(&str, &str) -> bool) -> Result<Vec<Change>, Lost> {
        let inner = self.lock();
        if since > current {
            return Err(Lost::Ahead);
        }
        if since < inner.covers_after {
            return Err(Lost::TooOld);
        }
        // Per object: the first op after `since` and the last entry.
        let mut objects: BTreeMap<(&'static str, &str), (Op, &Entry)> = BTreeMap::new();
        for e in inner
            .entries
            .iter()
            .filter(|e| e.generation > since && e.generation <= current)
        {
            if !wanted(e.class, &e.reference) {
                continue;
            }
            objects
                .entry((e.class, e.reference.as_str()))
                .and_modify(|(_, last)| *last = e)
                .or_insert((e.op, e));
        }
        let mut out: Vec<Change> = objects
            .into_values()
            .map(|(first, last)| {
                let op = match (first, last.op) {
                    (_, Op::Del) => Op::Del,
                    (Op::Add, _) => Op::Add,
                    _ => Op::Mod,
                };
                Change::of(last, op)
            })
            .collect();
        out.sort_by_key(|c| c.generation);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pool_db::model::Txn;
    use xapi_proto::records::VmRecord;

    fn vm(uuid: &str) -> VmRecord {
        VmRecord {
            uuid: uuid.into(),
            ..Default::default()
        }
    }

    /// Commit `f` on `model`, recording it in `events`.
    fn commit(model: &mut Model, events: &Events, f: impl FnOnce(&mut Txn)) {
        let changes = {
            let mut txn = Txn::new(model);
            f(&mut txn);
            txn.into_changes()
        };
        let g = model.generation + 1;
        events.record(g, model, &changes);
        model.apply(changes);
        model.generation = g;
    }

    #[test]
    fn one_event_per_object_add_mod_del_as_seen_from_the_token() {
        let mut m = Model::default();
        let e = Events::new(0);
        commit(&mut m, &e, |t| t.put("a", vm("ua")));
        commit(&mut m, &e, |t| t.put("b", vm("ub")));
        commit(&mut m, &e, |t| {
            t.update::<VmRecord>("a", |v| v.name_label = "x".into());
        });
        commit(&mut m, &e, |t| t.delete::<VmRecord>("b"));
        let all = |_: &str, _: &str| true;
        let ops = |since| {
            e.since(since, m.generation, all)
                .unwrap()
                .into_iter()
                .map(|c| (c.reference, c.op))
                .collect::<Vec<_>>()
        };
        // From the start: a was added (and modified since), b added then gone.
        assert_eq!(ops(0), vec![("a".to_string(), Op::Add), ("b".to_string(), Op::Del)]);
        // From after both adds: a modified, b deleted.
        assert_eq!(ops(2), vec![("a".to_string(), Op::Mod), ("b".to_string(), Op::Del)]);
        assert_eq!(ops(4), vec![]);
        assert_eq!(e.since(5, 4, all), Err(Lost::Ahead));
        // The uuid of a deleted row is the one it had.
        let c = e.since(3, 4, all).unwrap();
        assert_eq!((c[0].reference.as_str(), c[0].uuid.as_str()), ("b", ""));
        // A class filter.
        assert!(e.since(0, 4, |c, _| c == "host").unwrap().is_empty());
    }

    #[test]
    fn a_token_the_log_no_longer_reaches_has_lost_events() {
        let mut m = Model::default();
        let e = Events::new(0);
        for i in 0..(KEEP + 10) {
            let r = format!("r{}", i % 3);
            commit(&mut m, &e, |t| t.put(&r, vm(&r)));
        }
        let now = m.generation;
        assert_eq!(e.since(0, now, |_, _| true), Err(Lost::TooOld));
        assert_eq!(e.since(now - 5, now, |_, _| true).unwrap().len(), 3);
        e.reset(now);
        assert_eq!(e.since(now - 1, now, |_, _| true), Err(Lost::TooOld));
        assert_eq!(e.since(now, now, |_, _| true), Ok(vec![]));
    }

    #[test]
    fn a_lineage_holds_its_terms_generations_up_to_where_it_was_taken() {
        let l = Lineage::default();
        assert!(!l.holds(7, 1));
        l.set(Some((7, 10)));
        assert!(l.holds(7, 10) && l.holds(7, 3));
        // A generation the term reached later (commits this host never
        // received) and another term's token are not this history.
        assert!(!l.holds(7, 11) && !l.holds(8, 10));
        l.extend(7, 12);
        assert!(l.holds(7, 12));
        // Commits of another term end it.
        l.extend(9, 13);
        assert_eq!(l.get(), None);
        assert!(!l.holds(9, 13));
    }

    #[test]
    fn a_cursor_reads_every_entry_in_order_once_until_the_log_drops_it() {
        let mut m = Model::default();
        let e = Events::new(0);
        let start = e.end();
        commit(&mut m, &e, |t| t.put("a", vm("ua")));
        commit(&mut m, &e, |t| {
            t.update::<VmRecord>("a", |v| v.name_label = "x".into());
        });
        commit(&mut m, &e, |t| t.delete::<VmRecord>("a"));
        let all = |_: &str, _: &str| true;
        let (read, next) = e.after(start, 10, all).unwrap();
        let ops: Vec<Op> = read.iter().map(|c| c.op).collect();
        assert_eq!(ops, [Op::Add, Op::Mod, Op::Del]);
        assert_eq!((next, e.after(next, 10, all).unwrap().0.len()), (e.end(), 0));
        // A limit stops the read; the cursor continues from there.
        let (two, mid) = e.after(start, 2, all).unwrap();
        assert_eq!((two.len(), e.after(mid, 10, all).unwrap().0[0].op), (2, Op::Del));
        // Entries not wanted are read past.
        let (none, past) = e.after(start, 10, |_, r| r == "b").unwrap();
        assert_eq!((none.len(), past), (0, e.end()));
        assert_eq!(e.after(e.end() + 1, 10, all), Err(Lost::Ahead));
        // The log's own entries, pushed.
        e.push(7, "task", "t", "ut", Op::Add);
        assert_eq!(e.after(past, 10, all).unwrap().0[0].reference, "t");
        e.reset(m.generation);
        assert_eq!(e.after(past, 10, all), Err(Lost::TooOld));
        for _ in 0..=KEEP {
            e.push(8, "task", "t", "ut", Op::Mod);
        }
        assert_eq!(e.after(e.end() - 1, 10, all).unwrap().0.len(), 1);
        assert_eq!(e.after(e.end() - KEEP as u64 - 1, 10, all), Err(Lost::TooOld));
    }
}
