//! `event.from(session, classes, token, timeout)`: the pool's changes since
//! a token, waiting up to `timeout` seconds for one (XAPI's long poll); and
//! what it shares with the legacy `event.next` ([`super::event_next`]):
//! subscriptions and the event records.
//!
//! `classes` holds XAPI's subscriptions: a class in any case (`vm`, `VM`),
//! an object (`vm/OpaqueRef:...`) or `*` for all. The empty token asks for
//! every object of those classes (each an `add`); any other token is one
//! this host returned: XAPI's form, two 20-digit numbers, the generation of
//! the database it answered from and the counter of task changes (tasks
//! live outside the database, `crate::tasks`), whose high half is the
//! master term that gave the token. A token whose part the host's logs no
//! longer reach, or ahead of them, or whose generation is not a state of
//! this host's history (a term other than this master's own and than the
//! one it replicated before taking over, or a generation of that term it
//! never received: `crate::events::Lineage`) gets `EVENTS_LOST`: the
//! client reads everything again with the empty token. So a token survives
//! a master failover exactly when the new master holds everything the old
//! one had told, and never skips a change. The task part's counter counts
//! only for a call that asks for tasks. A waiting call wakes at the commit
//! or the task change that makes an answer.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};
use xapi_proto::{codes, ApiError};

use super::generic::record_json;
use super::Args;
use crate::daemon::Daemon;
use crate::events::{Change, Lost, Op};
use pool_db::model::Model;

/// The longest a call waits for a change (XAPI clients ask for 30 to 60 s).
pub const MAX_WAIT: Duration = Duration::from_secs(600);

/// One subscription, as XAPI's `Subscription.of_string` reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Sub {
    All,
    /// A class, lowercased.
    Class(String),
    /// One object: its class (lowercased) and reference.
    Object(String, String),
}

impl Sub {
    pub(super) fn parse(text: &str) -> Sub {
        if text == "*" {
            return Sub::All;
        }
        match text.split_once('/') {
            None => Sub::Class(text.to_ascii_lowercase()),
            Some((class, reference)) => Sub::Object(class.to_ascii_lowercase(), reference.to_string()),
        }
    }

    /// The subscription as kept (its canonical text).
    pub(super) fn text(&self) -> String {
        match self {
            Sub::All => "*".into(),
            Sub::Class(c) => c.clone(),
            Sub::Object(c, r) => format!("{c}/{r}"),
        }
    }

    fn class_matches(&self, class: &str) -> bool {
        match self {
            Sub::All => true,
            Sub::Class(c) | Sub::Object(c, _) => c.eq_ignore_ascii_case(class),
        }
    }
}

/// Does one of `subs` select events of `class`?
pub(super) fn table_matches(subs: &[Sub], class: &str) -> bool {
    subs.iter().any(|s| s.class_matches(class))
}

/// Does one of `subs` select events on object `reference` of `class`?
pub(super) fn object_matches(subs: &[Sub], class: &str, reference: &str) -> bool {
    subs.iter().any(|s| match s {
        Sub::Object(_, r) => s.class_matches(class) && r == reference,
        _ => s.class_matches(class),
    })
}

/// A token: the database's generation and the counter of task changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Token {
    generation: u64,
    tasks: u64,
}

impl Token {
    /// XAPI's form: zero-padded, so tokens compare as strings.
    fn text(self) -> String {
        format!("{:020},{:020}", self.generation, self.tasks)
    }

    fn parse(text: &str) -> Result<Token, ApiError> {
        let bad = || ApiError::new(codes::EVENT_FROM_TOKEN_PARSE_FAILURE, vec![text.to_string()]);
        let (g, t) = text.split_once(',').ok_or_else(bad)?;
        Ok(Token {
            generation: g.parse().map_err(|_| bad())?,
            tasks: t.parse().map_err(|_| bad())?,
        })
    }
}

/// `event.from`.
pub async fn from(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    args.exactly(4)?;
    let subs: Vec<Sub> = args.strings(1, "classes")?.iter().map(|c| Sub::parse(c)).collect();
    let token = args.str(2, "token")?.to_string();
    let timeout = args.float_or(3, "timeout", 0.0)?;
    let wait = if timeout.is_finite() && timeout > 0.0 {
        Duration::from_secs_f64(timeout).min(MAX_WAIT)
    } else {
        Duration::ZERO
    };
    if token.is_empty() {
        let m = d.model();
        let (tasks, seq) = d.tasks().all_now();
        let mut changes = everything(&m, &subs);
        if table_matches(&subs, "task") {
            changes.extend(tasks.into_iter().filter(|(r, _)| object_matches(&subs, "task", r)).map(
                |(reference, t)| Change {
                    seq: 0,
                    generation: seq,
                    class: "task",
                    reference,
                    uuid: t.uuid,
                    op: Op::Add,
                    at_ms: 0,
                },
            ));
        }
        let token = Token {
            generation: m.generation,
            tasks: seq,
        };
        return Ok(batch(d, &m, changes, &subs, token));
    }
    let since = Token::parse(&token)?;
    let tasks_wanted = table_matches(&subs, "task");
    let deadline = tokio::time::Instant::now() + wait;
    let mut generation = d.watch_generation();
    let mut tasks = d.tasks().watch();
    loop {
        generation.mark_unchanged();
        tasks.mark_unchanged();
        let last_chance = tokio::time::Instant::now() >= deadline;
        if let Some(answer) = poll(d, since, &subs, last_chance)? {
            return Ok(answer);
        }
        let woken = tokio::time::timeout_at(deadline, async {
            // Task changes wake only a call that asks for tasks.
            tokio::select! {
                _ = generation.changed() => {}
                _ = tasks.changed(), if tasks_wanted => {}
            }
        })
        .await;
        if woken.is_err() {
            // The deadline: answer with whatever there is (nothing, or a
            // change that landed just now).
            return poll(d, since, &subs, true).map(Option::unwrap_or_default);
        }
    }
}

/// `EVENTS_LOST`, logged.
pub(super) fn events_lost(lost: Lost) -> ApiError {
    tracing::debug!(?lost, "events lost");
    ApiError::bare(codes::EVENTS_LOST)
}

/// The answer for the changes after `since`, if there are any or `always`.
fn poll(d: &Daemon, since: Token, subs: &[Sub], always: bool) -> Result<Option<Value>, ApiError> {
    let m = d.model();
    let term = crate::tasks::term_of(since.tasks);
    if term != d.tasks().term() && !d.lineage().holds(term, since.generation) {
        return Err(events_lost(Lost::OtherHistory));
    }
    let wanted = |class: &str, reference: &str| object_matches(subs, class, reference);
    let mut changes = d
        .events()
        .since(since.generation, m.generation, wanted)
        .map_err(events_lost)?;
    let seq = if table_matches(subs, "task") {
        let (tasks, seq) = d.tasks().since(since.tasks).map_err(events_lost)?;
        changes.extend(tasks.into_iter().filter(|c| wanted(c.class, &c.reference)));
        seq
    } else {
        d.tasks().counter()
    };
    let token = Token {
        generation: m.generation,
        tasks: seq,
    };
    Ok((always || !changes.is_empty()).then(|| batch(d, &m, changes, subs, token)))
}

/// `event.inject(session, class, ref)`: a token for now, for a client that
/// reads every record after it and then follows `event.from` from it (Xen
/// Orchestra's start). XAPI also records an event for the object; here the
/// token alone is what the client needs: every change after it is told.
pub async fn inject(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    args.exactly(3)?;
    let class = args.str(1, "class")?;
    let reference = args.str(2, "ref")?;
    let m = d.model();
    let class = xapi_proto::classes::CLASSES
        .iter()
        .find(|c| c.eq_ignore_ascii_case(class))
        .ok_or_else(|| ApiError::invalid_value("class", class))?;
    if !m.has(class, reference) {
        return Err(ApiError::handle_invalid(class, reference));
    }
    let token = Token {
        generation: m.generation,
        tasks: d.tasks().counter(),
    };
    Ok(json!(token.text()))
}

/// Every object `subs` select, as `add` events.
fn everything(m: &Model, subs: &[Sub]) -> Vec<Change> {
    let mut out = Vec::new();
    for &class in xapi_proto::classes::CLASSES {
        if !table_matches(subs, class) {
            continue;
        }
        for (reference, uuid) in rows(m, class) {
            if !object_matches(subs, class, &reference) {
                continue;
            }
            out.push(Change {
                seq: 0,
                generation: m.generation,
                class,
                reference,
                uuid,
                op: Op::Add,
                at_ms: 0,
            });
        }
    }
    out
}

/// (ref, uuid) of every row of `class`.
fn rows(m: &Model, class: &str) -> Vec<(String, String)> {
    use pool_db::model::Record;
    fn of<T: Record>(m: &Model) -> Vec<(String, String)> {
        T::table(m)
            .iter()
            .map(|(r, v)| (r.clone(), v.uuid().to_string()))
            .collect()
    }
    pool_db::with_record_type!(class, T => of::<T>(m), _ => Vec::new())
}

/// How many rows `class` has.
fn count(m: &Model, class: &str) -> usize {
    use pool_db::model::Record;
    pool_db::with_record_type!(class, T => T::table(m).len(), _ => 0)
}

/// One event record: XAPI's fields (`id`, `timestamp`, `class`,
/// `operation`, `ref`, and `snapshot` unless deleted), with `obj_uuid`.
/// The snapshot is the object as it is now (a task's from the task table).
pub(super) fn event_json(d: &Daemon, m: &Model, id: u64, c: &Change) -> Value {
    let mut e = Map::new();
    e.insert("id".into(), json!(id));
    e.insert("timestamp".into(), json!(crate::clock::wire(c.at_ms)));
    e.insert("class".into(), json!(c.class.to_ascii_lowercase()));
    e.insert("operation".into(), json!(c.op.name()));
    e.insert("ref".into(), json!(c.reference));
    e.insert("obj_uuid".into(), json!(c.uuid));
    if c.op != Op::Del {
        let snapshot = match c.class {
            "task" => d.tasks().get(&c.reference).map(|t| t.record()),
            class => record_json(m, class, &c.reference),
        };
        if let Some(snapshot) = snapshot {
            e.insert("snapshot".into(), snapshot);
        }
    }
    Value::Object(e)
}

/// The answer: the events, the new token and the count of each wanted
/// class's objects.
fn batch(d: &Daemon, m: &Model, changes: Vec<Change>, subs: &[Sub], token: Token) -> Value {
    let events: Vec<Value> = changes
        .iter()
        .enumerate()
        .map(|(i, c)| event_json(d, m, m.generation.saturating_mul(1 << 16).saturating_add(i as u64), c))
        .collect();
    let mut counts: Map<String, Value> = xapi_proto::classes::CLASSES
        .iter()
        .filter(|c| table_matches(subs, c))
        .map(|c| (c.to_ascii_lowercase(), json!(count(m, c))))
        .collect();
    if table_matches(subs, "task") {
        counts.insert("task".into(), json!(d.tasks().count()));
    }
    json!({
        "events": events,
        "valid_ref_counts": counts,
        "token": token.text(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sessions::Principal;
    use std::time::Instant;

    use crate::api::call;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_waiting_call_wakes_at_the_commit_and_tokens_follow_on() {
        let dir = tempfile::tempdir().unwrap();
        let d = Daemon::open(crate::daemon::tests::config(dir.path())).unwrap();
        let s = json!(d.sessions().open(Principal::User("root".into())));

        // The empty token: every object of the classes asked for, as adds.
        let all = call(
            &d,
            "event.from",
            vec![s.clone(), json!(["host", "Pool"]), json!(""), json!(0)],
        )
        .await
        .unwrap();
        let classes: Vec<&str> = all["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["class"].as_str().unwrap())
            .collect();
        assert_eq!(classes, ["pool", "host"]);
        assert!(all["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["operation"] == "add"));
        assert_eq!(all["events"][1]["snapshot"]["uuid"], json!(d.host_uuid()));
        assert_eq!(all["valid_ref_counts"], json!({"host": 1, "pool": 1}));
        let token = all["token"].clone();

        // Nothing new: a call with no wait answers at once, empty.
        let none = call(
            &d,
            "event.from",
            vec![s.clone(), json!(["*"]), token.clone(), json!(0.0)],
        )
        .await
        .unwrap();
        assert_eq!(none["events"], json!([]));
        assert_eq!(none["token"], token);

        // A call waiting 20 s wakes at the VM's creation.
        let waiter = {
            let (d, s, token) = (d.clone(), s.clone(), token.clone());
            tokio::spawn(async move {
                let t = Instant::now();
                let out = call(&d, "event.from", vec![s, json!(["vm"]), token, json!(20)]).await;
                (out, t.elapsed())
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        let vm = crate::api::new_vm(&d, &s, "a").await;
        let (out, took) = waiter.await.unwrap();
        let out = out.unwrap();
        assert!(took < Duration::from_secs(5), "woke after {took:?}");
        assert_eq!(out["events"].as_array().unwrap().len(), 1, "{out}");
        assert_eq!(out["events"][0]["operation"], "add");
        assert_eq!(out["events"][0]["ref"], vm);
        assert_eq!(out["events"][0]["snapshot"]["name_label"], "a");

        // From that token: the rename is a mod, the destroy a del.
        let after_add = out["token"].clone();
        call(&d, "VM.set_name_label", vec![s.clone(), vm.clone(), json!("b")])
            .await
            .unwrap();
        let modified = call(
            &d,
            "event.from",
            vec![s.clone(), json!(["vm"]), after_add.clone(), json!(1)],
        )
        .await
        .unwrap();
        assert_eq!(modified["events"][0]["operation"], "mod");
        assert_eq!(modified["events"][0]["snapshot"]["name_label"], "b");
        call(&d, "VM.destroy", vec![s.clone(), vm.clone()]).await.unwrap();
        let gone = call(&d, "event.from", vec![s.clone(), json!(["vm"]), after_add, json!(1)])
            .await
            .unwrap();
        assert_eq!(gone["events"][0]["operation"], "del");
        assert!(gone["events"][0].get("snapshot").is_none());

        // Tokens that are not ours, or ahead of the database.
        for bad in ["x,y", "12", "1,2,3"] {
            let bad = call(&d, "event.from", vec![s.clone(), json!(["vm"]), json!(bad), json!(0)]).await;
            assert_eq!(bad.unwrap_err().code, codes::EVENT_FROM_TOKEN_PARSE_FAILURE);
        }
        let ahead = call(
            &d,
            "event.from",
            vec![s.clone(), json!(["vm"]), json!("999999,0"), json!(0)],
        )
        .await;
        assert_eq!(ahead.unwrap_err().code, codes::EVENTS_LOST);
        // A wait of a second with nothing to tell ends empty after it.
        let t = Instant::now();
        let idle = call(
            &d,
            "event.from",
            vec![s, json!(["vm"]), gone["token"].clone(), json!(1)],
        )
        .await
        .unwrap();
        assert_eq!(idle["events"], json!([]));
        assert!(t.elapsed() >= Duration::from_millis(900));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_new_master_continues_its_predecessors_tokens_through_the_metadata_file_it_wrote() {
        use crate::ha::metadata::Metadata;
        use pool_db::model::Changes;
        let dir = tempfile::tempdir().unwrap();
        let d = Daemon::open(crate::daemon::tests::config(dir.path())).unwrap();
        let s = json!(d.sessions().open(Principal::User("root".into())));
        // This host replicated term 77 up to now; the metadata file holds
        // that term's next commit, which never reached the replica.
        let g = d.model().generation;
        d.lineage().set(Some((77, g)));
        let token = json!(format!("{g:020},{:020}", 77u64 << 32));
        let file = |d: &Daemon, term: u64, name: &str| {
            let g = d.model().generation;
            let mut commit = Changes::default();
            commit.vm.insert(
                format!("OpaqueRef:{name}"),
                Some(xapi_proto::records::VmRecord {
                    uuid: format!("uuid-{name}"),
                    name_label: name.into(),
                    ..Default::default()
                }),
            );
            let mut snapshot = d.model().snapshot();
            snapshot.vm.extend(commit.vm.clone());
            Metadata {
                generation: g + 1,
                snapshot,
                users: d.users(),
                term: Some(term),
                base: g,
                commits: vec![(g + 1, commit)],
            }
        };
        assert!(d.adopt_metadata(file(&d, 77, "late")).await.unwrap());
        let out = call(
            &d,
            "event.from",
            vec![s.clone(), json!(["vm"]), token.clone(), json!(0)],
        )
        .await
        .unwrap();
        assert_eq!(out["events"].as_array().unwrap().len(), 1, "{out}");
        assert_eq!(out["events"][0]["ref"], "OpaqueRef:late");
        assert_eq!(out["events"][0]["operation"], "add");
        assert_eq!(d.lineage().get(), Some((77, g + 1)));
        // A file another term wrote replaces the replica whole: the token
        // has lost its events.
        assert!(!d.adopt_metadata(file(&d, 78, "other")).await.unwrap());
        assert!(d.model().has("VM", "OpaqueRef:other"));
        let lost = call(&d, "event.from", vec![s, json!(["vm"]), token, json!(0)]).await;
        assert_eq!(lost.unwrap_err().code, codes::EVENTS_LOST);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_copy_from_the_same_master_term_keeps_its_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let d = Daemon::open(crate::daemon::tests::config(dir.path())).unwrap();
        let s = json!(d.sessions().open(Principal::User("root".into())));
        let gone = crate::api::new_vm(&d, &s, "gone").await;
        let g = d.model().generation;
        d.lineage().set(Some((77, g)));
        let token = json!(format!("{g:020},{:020}", 77u64 << 32));
        // Term 77's database two commits later: a VM added, one renamed
        // (the pool), one gone.
        let copy = |name: &str| {
            let mut snapshot = d.model().snapshot();
            snapshot.vm.insert(
                format!("OpaqueRef:{name}"),
                Some(xapi_proto::records::VmRecord {
                    uuid: format!("uuid-{name}"),
                    name_label: name.into(),
                    ..Default::default()
                }),
            );
            snapshot.vm.remove(gone.as_str().unwrap());
            if let Some(Some(pool)) = snapshot.pool.values_mut().next() {
                pool.name_label = format!("renamed for {name}");
            }
            snapshot
        };
        d.replace_replica(copy("late"), d.users(), g + 2, Some(77))
            .await
            .unwrap();
        let out = call(
            &d,
            "event.from",
            vec![s.clone(), json!(["vm", "pool"]), token.clone(), json!(0)],
        )
        .await
        .unwrap();
        let mut seen: Vec<(String, String)> = out["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["ref"].as_str().unwrap().to_string(),
                    e["operation"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        seen.sort();
        let pool = d.model().pool().unwrap().0.clone();
        let mut want = vec![
            ("OpaqueRef:late".to_string(), "add".to_string()),
            (gone.as_str().unwrap().to_string(), "del".to_string()),
            (pool, "mod".to_string()),
        ];
        want.sort();
        assert_eq!(seen, want, "{out}");
        // A copy from another term starts afresh: the token is lost.
        d.replace_replica(copy("other"), d.users(), g + 3, Some(78))
            .await
            .unwrap();
        let lost = call(&d, "event.from", vec![s, json!(["vm"]), token, json!(0)]).await;
        assert_eq!(lost.unwrap_err().code, codes::EVENTS_LOST);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tasks_have_events_and_their_part_of_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let d = Daemon::open(crate::daemon::tests::config(dir.path())).unwrap();
        let s = json!(d.sessions().open(Principal::User("root".into())));
        let from = |classes: Value, token: Value, timeout: f64| {
            let (d, s) = (d.clone(), s.clone());
            async move { call(&d, "event.from", vec![s, classes, token, json!(timeout)]).await }
        };
        let start = from(json!(["task"]), json!(""), 0.0).await.unwrap();
        assert_eq!(start["events"], json!([]));
        assert_eq!(start["valid_ref_counts"], json!({"task": 0}));
        let token = start["token"].clone();
        let (g, t) = token.as_str().unwrap().split_once(',').unwrap();
        assert_eq!((g.len(), t.len()), (20, 20), "XAPI's form: {token}");

        // A waiting call wakes at the task's creation.
        let waiter = tokio::spawn(from(json!(["task"]), token.clone(), 20.0));
        tokio::time::sleep(Duration::from_millis(200)).await;
        let task = call(
            &d,
            "Async.VM.create",
            vec![s.clone(), json!({"name_label": "a", "memory_static_max": 1i64 << 30})],
        )
        .await
        .unwrap();
        let woke = waiter.await.unwrap().unwrap();
        assert_eq!(woke["events"][0]["class"], "task");
        assert_eq!(woke["events"][0]["operation"], "add");
        assert_eq!(woke["events"][0]["ref"], task);
        assert_eq!(woke["events"][0]["snapshot"]["name_label"], "Async.VM.create");

        // Its end is a mod with the result; its destroy a del.
        let mut token = woke["token"].clone();
        loop {
            let out = from(json!(["task"]), token.clone(), 5.0).await.unwrap();
            token = out["token"].clone();
            if out["events"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["snapshot"]["status"] == "success")
            {
                assert_eq!(out["events"][0]["operation"], "mod");
                break;
            }
        }
        call(&d, "task.destroy", vec![s.clone(), task.clone()]).await.unwrap();
        let gone = from(json!(["*"]), token.clone(), 5.0).await.unwrap();
        let ops: Vec<(&str, &str)> = gone["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["class"].as_str().unwrap(), e["operation"].as_str().unwrap()))
            .collect();
        assert_eq!(ops, [("task", "del")]);

        // Everything from the empty token, tasks included, and object
        // subscriptions.
        let other = call(&d, "Async.VM.create", vec![s.clone(), json!({"name_label": "b"})])
            .await
            .unwrap();
        let all = from(json!(["*"]), json!(""), 0.0).await.unwrap();
        assert!(all["events"].as_array().unwrap().iter().any(|e| e["ref"] == other));
        let one = from(json!([format!("task/{}", other.as_str().unwrap())]), json!(""), 0.0)
            .await
            .unwrap();
        assert_eq!(one["events"].as_array().unwrap().len(), 1);
        assert_eq!(one["events"][0]["ref"], other);

        // A token of another master term (another run of this master, or
        // a master whose history this host does not hold): lost, for tasks
        // and for the database alike.
        let stale = json!(format!("{g},{:020}", 5));
        let lost = from(json!(["task"]), stale.clone(), 0.0).await.unwrap_err();
        assert_eq!(lost.code, codes::EVENTS_LOST);
        let lost = from(json!(["host"]), stale, 0.0).await.unwrap_err();
        assert_eq!(lost.code, codes::EVENTS_LOST);
        // The term this host replicated, up to where it took over: its
        // tokens continue (the database part; its tasks are gone).
        let theirs = 77u64 << 32;
        let now = d.model().generation;
        d.lineage().set(Some((77, now)));
        let continued = from(json!(["host"]), json!(format!("{now:020},{theirs:020}")), 0.0)
            .await
            .unwrap();
        assert_eq!(continued["events"], json!([]));
        let beyond = from(json!(["host"]), json!(format!("{:020},{theirs:020}", now + 1)), 0.0).await;
        assert_eq!(beyond.unwrap_err().code, codes::EVENTS_LOST);
        let tasks_gone = from(json!(["task"]), json!(format!("{now:020},{theirs:020}")), 0.0).await;
        assert_eq!(tasks_gone.unwrap_err().code, codes::EVENTS_LOST);
        let injected = call(
            &d,
            "event.inject",
            vec![s.clone(), json!("host"), json!(d.host_ref().unwrap())],
        )
        .await
        .unwrap();
        assert!(injected.as_str().unwrap().contains(','), "{injected}");
    }
}
