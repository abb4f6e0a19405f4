//! The master's tasks: what an `Async.<Class>.<method>` call is doing.
//!
//! A task is created pending when the call is accepted, and ends once with
//! `success` (its result) or `failure` (its error). Tasks live in the
//! master's memory, as XAPI's do in its non-persistent tables: a master
//! failover forgets them. At most [`MAX_TASKS`] exist; a task that ended
//! more than [`KEEP_ENDED`] ago and was never destroyed is dropped when a
//! new one is made.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

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

/// The task table of this host.
#[derive(Debug, Default)]
pub struct Tasks {
    map: Mutex<BTreeMap<String, Task>>,
}

impl Task {
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
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Task>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new pending task running `method` on host `resident_on`: its ref.
    pub fn create(&self, method: &str, resident_on: &str) -> Result<String, TooMany> {
        let mut map = self.lock();
        map.retain(|_, t| t.ended_at.is_none_or(|at| at.elapsed() < KEEP_ENDED));
        if map.len() >= MAX_TASKS {
            return Err(TooMany);
        }
        let reference = pool_db::model::new_ref();
        map.insert(
            reference.clone(),
            Task {
                uuid: pool_db::model::new_uuid(),
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
        Ok(reference)
    }

    /// End task `reference` with its outcome (once; a destroyed task is
    /// gone and stays gone).
    pub fn finish(&self, reference: &str, outcome: Result<String, Vec<String>>) {
        if let Some(t) = self.lock().get_mut(reference) {
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
        }
    }

    pub fn get(&self, reference: &str) -> Option<Task> {
        self.lock().get(reference).cloned()
    }

    /// The ref of the task `uuid`.
    pub fn by_uuid(&self, uuid: &str) -> Option<String> {
        self.lock().iter().find(|(_, t)| t.uuid == uuid).map(|(r, _)| r.clone())
    }

    /// Every task, by ref.
    pub fn all(&self) -> Vec<(String, Task)> {
        self.lock().iter().map(|(r, t)| (r.clone(), t.clone())).collect()
    }

    /// How many tasks there are.
    pub fn count(&self) -> usize {
        self.lock().len()
    }

    /// Forget task `reference`: false when there is none.
    pub fn destroy(&self, reference: &str) -> bool {
        self.lock().remove(reference).is_some()
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
    fn the_table_is_bounded() {
        let tasks = Tasks::default();
        for _ in 0..MAX_TASKS {
            tasks.create("Async.VM.start", "h").unwrap();
        }
        assert_eq!(tasks.create("Async.VM.start", "h"), Err(TooMany));
    }
}
