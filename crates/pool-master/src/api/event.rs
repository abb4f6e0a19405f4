//! `event.from(session, classes, token, timeout)`: the pool's changes since
//! a token, waiting up to `timeout` seconds for one (XAPI's long poll).
//!
//! `classes` names classes in any case (`vm`, `VM`) or `*` for all. The
//! empty token asks for every object of those classes (each an `add`);
//! any other token is one this call returned, the generation of the
//! database it answered from. A token the host's event log no longer
//! reaches, or one ahead of its database, gets `EVENTS_LOST`: the client
//! reads everything again with the empty token. A waiting call wakes at
//! the commit that makes an answer.

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

/// `event.from`.
pub async fn from(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    args.exactly(4)?;
    let classes: Vec<String> = args
        .strings(1, "classes")?
        .iter()
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let token = args.str(2, "token")?.to_string();
    let timeout = args.float_or(3, "timeout", 0.0)?;
    let wait = if timeout.is_finite() && timeout > 0.0 {
        Duration::from_secs_f64(timeout).min(MAX_WAIT)
    } else {
        Duration::ZERO
    };
    let wanted = |class: &str| classes.iter().any(|c| c == "*" || c.eq_ignore_ascii_case(class));
    if token.is_empty() {
        let m = d.model();
        return Ok(batch(&m, everything(&m, &wanted), &wanted, d.tasks().count()));
    }
    let since: u64 = token
        .parse()
        .map_err(|_| ApiError::new(codes::EVENT_FROM_TOKEN_PARSE_FAILURE, vec![token.clone()]))?;
    let deadline = tokio::time::Instant::now() + wait;
    let mut generation = d.watch_generation();
    loop {
        generation.mark_unchanged();
        let last_chance = tokio::time::Instant::now() >= deadline;
        if let Some(answer) = poll(d, since, &wanted, last_chance)? {
            return Ok(answer);
        }
        if tokio::time::timeout_at(deadline, generation.changed()).await.is_err() {
            // The deadline: answer with whatever there is (nothing, or a
            // commit that landed just now).
            return poll(d, since, &wanted, true).map(Option::unwrap_or_default);
        }
    }
}

/// The answer for the changes after `since`, if there are any or `always`.
fn poll(d: &Daemon, since: u64, wanted: &impl Fn(&str) -> bool, always: bool) -> Result<Option<Value>, ApiError> {
    let m = d.model();
    let changes = d.events().since(since, m.generation, wanted).map_err(|lost: Lost| {
        tracing::debug!(since, ?lost, "event.from: events lost");
        ApiError::bare(codes::EVENTS_LOST)
    })?;
    Ok((always || !changes.is_empty()).then(|| batch(&m, changes, wanted, d.tasks().count())))
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
    Ok(json!(m.generation.to_string()))
}

/// Every object of the wanted classes, as `add` events.
fn everything(m: &Model, wanted: &impl Fn(&str) -> bool) -> Vec<Change> {
    let mut out = Vec::new();
    for &class in xapi_proto::classes::CLASSES {
        if !wanted(class) {
            continue;
        }
        for (reference, uuid) in rows(m, class) {
            out.push(Change {
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

/// The answer: the events, the new token and the count of each wanted
/// class's objects.
fn batch(m: &Model, changes: Vec<Change>, wanted: &impl Fn(&str) -> bool, tasks: usize) -> Value {
    let events: Vec<Value> = changes
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let mut e = Map::new();
            e.insert(
                "id".into(),
                json!(m.generation.saturating_mul(1 << 16).saturating_add(i as u64)),
            );
            e.insert("timestamp".into(), json!(crate::clock::wire(c.at_ms)));
            e.insert("class".into(), json!(c.class.to_ascii_lowercase()));
            e.insert("operation".into(), json!(c.op.name()));
            e.insert("ref".into(), json!(c.reference));
            e.insert("obj_uuid".into(), json!(c.uuid));
            if c.op != Op::Del {
                if let Some(snapshot) = record_json(m, c.class, &c.reference) {
                    e.insert("snapshot".into(), snapshot);
                }
            }
            Value::Object(e)
        })
        .collect();
    let mut counts: Map<String, Value> = xapi_proto::classes::CLASSES
        .iter()
        .filter(|c| wanted(c))
        .map(|c| (c.to_ascii_lowercase(), json!(count(m, c))))
        .collect();
    if wanted("task") {
        // Tasks are not in the database: no events, but their count, so a
        // client sees when to read them again (Xen Orchestra does).
        counts.insert("task".into(), json!(tasks));
    }
    json!({
        "events": events,
        "valid_ref_counts": counts,
        "token": m.generation.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sessions::Principal;
    use std::time::Instant;

    async fn call(d: &Arc<Daemon>, method: &str, params: Vec<Value>) -> Result<Value, ApiError> {
        match super::super::dispatch(d, method, params).await? {
            super::super::Reply::Value(v) => Ok(v),
            super::super::Reply::Json(t) => Ok(serde_json::from_str(&t).unwrap()),
        }
    }

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
        let vm = call(
            &d,
            "VM.create",
            vec![s.clone(), json!({"name_label": "a", "memory_static_max": 1i64 << 30})],
        )
        .await
        .unwrap();
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
        let bad = call(&d, "event.from", vec![s.clone(), json!(["vm"]), json!("x,y"), json!(0)]).await;
        assert_eq!(bad.unwrap_err().code, codes::EVENT_FROM_TOKEN_PARSE_FAILURE);
        let ahead = call(
            &d,
            "event.from",
            vec![s.clone(), json!(["vm"]), json!("999999"), json!(0)],
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
}
