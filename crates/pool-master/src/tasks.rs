//! The master's tasks: what an `Async.<Class>.<method>` call is doing.
//!
//! A task is created pending when the call is accepted, and ends once with
//! `success` (its result) or `failure` (its error). Tasks live in the
//! master's memory, as XAPI's do in its non-persistent tables: a master
//! failover forgets them. At most [`MAX_TASKS`] exist; a task that ended
//! more than [`KEEP_ENDED`] ago and was never destroyed is dropped when a
//! new one is made.
//!
//! Every change of a task is an event of class `task` (`add` when made,
//! `mod` when it ends, `del` when destroyed or dropped), kept in a log of
//! its own ([`crate::events::Events`], its "generation" a counter of task
//! changes), since tasks are not in the pool database. The counter's high
//! half is the master *term*: a random number drawn when the process
//! starts and again whenever this host becomes master or stops being one
//! ([`Tasks::new_term`]); the low half counts the term's task changes. A
//! token from an earlier master (or an earlier run or term of this one)
//! is outside the log, and its client learns that it lost the tasks'
//! events; `event.from` also reads the term to tell whose history a
//! token's generation belongs to (`crate::events::Lineage`).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::watch;

use crate::events::{Change, Events, Lost, Op};

/// The most tasks kept at once.
pub const MAX_TASKS: usize = 4096;

/// How long an ended task is kept for a client that never destroys it.
pub const KEEP_ENDED: Duration = Duration::from_secs(3600);

/// Where a task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pending,
    Success,
    Failure,
}

impl Status {
    /// XAPI's name.
    pub fn name(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Success => "success",
            Status::Failure => "failure",
        }
    }
}

/// One task.
#[derive(Debug, Clone)]
pub struct Task {
    pub uuid: String,
    /// The method it runs (`Async.VM.start`).
    pub name_label: String,
    pub status: Status,
    /// The result in XAPI's form: empty, or the value as XML-RPC.
    pub result: String,
    pub error_info: Vec<String>,
    /// Unix times, in ms.
    pub created: u64,
    pub finished: Option<u64>,
    /// The host it runs on.
    pub resident_on: String,
    ended_at: Option<Instant>,
}

/// Why no task was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{MAX_TASKS} tasks exist; destroy finished ones first")]
pub struct TooMany;

#[derive(Debug)]
struct Inner {
    tasks: BTreeMap<String, Task>,
    /// The counter of task changes: the last one's number.
    seq: u64,
}

/// The task table of this host.
#[derive(Debug)]
pub struct Tasks {
    inner: Mutex<Inner>,
    /// The task changes.
    log: Events,
    /// The counter, for waiting calls.
    changed: watch::Sender<u64>,
}

/// The term of a task counter (or of a token's task part).
pub fn term_of(counter: u64) -> u64 {
    counter >> 32
}

/// A fresh term, other than `not`, as the start of its counter: 31 random
/// bits (so counters stay below 2^63, which XAPI's clients parse as int64).
fn fresh_start(not: u64) -> u64 {
    loop {
        let term = u64::from(rand::random::<u32>() & 0x7FFF_FFFF);
        if term != 0 && term != not {
            return term << 32;
        }
    }
}

impl Default for Tasks {
    fn default() -> Self {
        let start = fresh_start(0);
        Tasks {
            inner: Mutex::new(Inner {
                tasks: BTreeMap::new(),
                seq: start,
            }),
            log: Events::new(start),
            changed: watch::Sender::new(start),
        }
    }
}

/// The fields of a task's record.
pub const FIELDS: &[&str] = &[
    "uuid",
    "name_label",
    "name_description",
    "status",
    "progress",
    "result",
    "error_info",
    "created",
    "finished",
    "resident_on",
    "allowed_operations",
    "current_operations",
    "type",
    "other_config",
    "subtask_of",
    "subtasks",
];

impl Task {
    /// The names of [`Task::record`]'s fields.
    pub fn fields() -> &'static [&'static str] {
        FIELDS
    }

    /// The task's record as the API shows it (XAPI's `task` fields).
    pub fn record(&self) -> Value {
        json!({
            "uuid": self.uuid,
            "name_label": self.name_label,
            "name_description": "",
            "status": self.status.name(),
            "progress": if self.status == Status::Pending { 0.0 } else { 1.0 },
            "result": self.result,
            "error_info": self.error_info,
            "created": crate::clock::wire(self.created),
            "finished": crate::clock::wire(self.finished.unwrap_or(0)),
            "resident_on": self.resident_on,
            "allowed_operations": [],
            "current_operations": {},
            "type": "",
            "other_config": {},
            "subtask_of": "OpaqueRef:NULL",
            "subtasks": [],
        })
    }
}

impl Tasks {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Record a change of a task (with the table locked, so that the log's
    /// order is the changes' order).
    fn changed(&self, inner: &mut Inner, reference: &str, uuid: &str, op: Op) {
        inner.seq += 1;
        self.log.push(inner.seq, "task", reference, uuid, op);
        self.changed.send_replace(inner.seq);
    }

    /// A new pending task running `method` on host `resident_on`: its ref.
    pub fn create(&self, method: &str, resident_on: &str) -> Result<String, TooMany> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let expired: Vec<(String, String)> = inner
            .tasks
            .iter()
            .filter(|(_, t)| t.ended_at.is_some_and(|at| at.elapsed() >= KEEP_ENDED))
            .map(|(r, t)| (r.clone(), t.uuid.clone()))
            .collect();
        for (r, uuid) in expired {
            inner.tasks.remove(&r);
            self.changed(inner, &r, &uuid, Op::Del);
        }
        if inner.tasks.len() >= MAX_TASKS {
            return Err(TooMany);
        }
        let reference = pool_db::model::new_ref();
        let uuid = pool_db::model::new_uuid();
        inner.tasks.insert(
            reference.clone(),
            Task {
                uuid: uuid.clone(),
                name_label: method.to_string(),
                status: Status::Pending,
                result: String::new(),
                error_info: Vec::new(),
                created: crate::clock::unix_ms(),
                finished: None,
                resident_on: resident_on.to_string(),
                ended_at: None,
            },
        );
        self.changed(inner, &reference, &uuid, Op::Add);
        Ok(reference)
    }

    /// End task `reference` with its outcome (once; a destroyed task is
    /// gone and stays gone).
    pub fn finish(&self, reference: &str, outcome: Result<String, Vec<String>>) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        if let Some(t) = inner.tasks.get_mut(reference) {
            if t.status != Status::Pending {
                return;
            }
            match outcome {
                Ok(result) => {
                    t.status = Status::Success;
                    t.result = result;
                }
                Err(error_info) => {
                    t.status = Status::Failure;
                    t.error_info = error_info;
                }
            }
            t.finished = Some(crate::clock::unix_ms());
            t.ended_at = Some(Instant::now());
            let uuid = t.uuid.clone();
            self.changed(inner, reference, &uuid, Op::Mod);
        }
    }

    pub fn get(&self, reference: &str) -> Option<Task> {
        self.lock().tasks.get(reference).cloned()
    }

    /// The ref of the task `uuid`.
    pub fn by_uuid(&self, uuid: &str) -> Option<String> {
        self.lock()
            .tasks
            .iter()
            .find(|(_, t)| t.uuid == uuid)
            .map(|(r, _)| r.clone())
    }

    /// Every task, by ref.
    pub fn all(&self) -> Vec<(String, Task)> {
        self.all_now().0
    }

    /// Every task, by ref, and the counter of task changes they are as of.
    pub fn all_now(&self) -> (Vec<(String, Task)>, u64) {
        let inner = self.lock();
        let all = inner.tasks.iter().map(|(r, t)| (r.clone(), t.clone())).collect();
        (all, inner.seq)
    }

    /// The counter of task changes now.
    pub fn counter(&self) -> u64 {
        self.lock().seq
    }

    /// This host's master term now.
    pub fn term(&self) -> u64 {
        term_of(self.counter())
    }

    /// Start a new term (this host became master, or stopped being one):
    /// tokens and cursors of the term before lose the tasks' events; the
    /// tasks themselves stay.
    pub fn new_term(&self) {
        let mut inner = self.lock();
        inner.seq = fresh_start(term_of(inner.seq));
        self.log.reset(inner.seq);
        self.changed.send_replace(inner.seq);
    }

    /// How many tasks there are.
    pub fn count(&self) -> usize {
        self.lock().tasks.len()
    }

    /// Forget task `reference`: false when there is none.
    pub fn destroy(&self, reference: &str) -> bool {
        let mut guard = self.lock();
        let inner = &mut *guard;
        match inner.tasks.remove(reference) {
            Some(t) => {
                self.changed(inner, reference, &t.uuid, Op::Del);
                true
            }
            None => false,
        }
    }

    /// The tasks changed after change `since` (one event per task, as
    /// [`Events::since`]), and the counter now.
    pub fn since(&self, since: u64) -> Result<(Vec<Change>, u64), Lost> {
        let inner = self.lock();
        let changes = self.log.since(since, inner.seq, |_, _| true)?;
        Ok((changes, inner.seq))
    }

    /// The log of task changes (for `event.next`'s cursors).
    pub fn log(&self) -> &Events {
        &self.log
    }

    /// Wait for task changes.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_ends_once_and_is_gone_when_destroyed() {
        let tasks = Tasks::default();
        let r = tasks.create("Async.VM.start", "OpaqueRef:h").unwrap();
        let t = tasks.get(&r).unwrap();
        assert_eq!(
            (t.status, t.record()["progress"].clone()),
            (Status::Pending, json!(0.0))
        );
        assert_eq!(tasks.by_uuid(&t.uuid), Some(r.clone()));
        tasks.finish(&r, Err(vec!["VM_BAD_POWER_STATE".into()]));
        tasks.finish(&r, Ok("late".into()));
        let t = tasks.get(&r).unwrap();
        assert_eq!(t.status, Status::Failure);
        assert_eq!(t.record()["error_info"], json!(["VM_BAD_POWER_STATE"]));
        assert_eq!(t.record()["result"], "");
        assert!(t.record()["finished"].as_str().unwrap().ends_with('Z'));
        assert!(tasks.destroy(&r) && !tasks.destroy(&r));
        tasks.finish(&r, Ok(String::new()));
        assert!(tasks.get(&r).is_none());
    }

    #[test]
    fn every_change_of_a_task_is_an_event() {
        let tasks = Tasks::default();
        let (_, start) = tasks.all_now();
        let a = tasks.create("Async.VM.start", "h").unwrap();
        let b = tasks.create("Async.VM.start", "h").unwrap();
        let (changes, now) = tasks.since(start).unwrap();
        let ops: Vec<(&str, Op)> = changes.iter().map(|c| (c.reference.as_str(), c.op)).collect();
        assert_eq!(ops, [(a.as_str(), Op::Add), (b.as_str(), Op::Add)]);
        assert!(changes.iter().all(|c| c.class == "task" && !c.uuid.is_empty()));
        tasks.finish(&a, Ok(String::new()));
        tasks.destroy(&b);
        let (changes, later) = tasks.since(now).unwrap();
        let ops: Vec<(&str, Op)> = changes.iter().map(|c| (c.reference.as_str(), c.op)).collect();
        assert_eq!(ops, [(a.as_str(), Op::Mod), (b.as_str(), Op::Del)]);
        assert_eq!(*tasks.watch().borrow(), later);
        // A counter from an earlier run is older than the log.
        assert_eq!(tasks.since(start - 1).unwrap_err(), Lost::TooOld);
        assert_eq!(tasks.since(later + 1).unwrap_err(), Lost::Ahead);
        let record = tasks.get(&a).unwrap().record();
        let mut keys: Vec<&str> = record.as_object().unwrap().keys().map(String::as_str).collect();
        let mut fields = Task::fields().to_vec();
        keys.sort_unstable();
        fields.sort_unstable();
        assert_eq!(keys, fields);
    }

    #[test]
    fn a_new_term_loses_the_old_terms_task_events_but_keeps_the_tasks() {
        let tasks = Tasks::default();
        let before = tasks.counter();
        let term = tasks.term();
        assert!(term > 0 && before < 1 << 63);
        let a = tasks.create("Async.VM.start", "h").unwrap();
        assert_eq!(tasks.since(before).unwrap().0.len(), 1);
        tasks.new_term();
        assert_ne!(tasks.term(), term);
        assert!(tasks.since(before).is_err());
        let now = tasks.counter();
        assert_eq!(tasks.since(now).unwrap().0, vec![]);
        tasks.finish(&a, Ok(String::new()));
        let (changes, _) = tasks.since(now).unwrap();
        assert_eq!((changes[0].reference.as_str(), changes[0].op), (a.as_str(), Op::Mod));
    }

    #[test]
    fn the_table_is_bounded() {
        let tasks = Tasks::default();
        for _ in 0..MAX_TASKS {
            tasks.create("Async.VM.start", "h").unwrap();
        }
        assert_eq!(tasks.create("Async.VM.start", "h"), Err(TooMany));
    }
}
