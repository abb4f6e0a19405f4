//! The legacy event API (XAPI's `Xapi_event.Next`): `event.register(session,
//! classes)`, `event.unregister(session, classes)` and `event.next(session)`.
//!
//! A session holds at most one subscription (`crate::sessions`, so it goes
//! with the session): the subscriptions it registered (XAPI's forms: `*`, a
//! class, `class/ref`), at most [`MAX_SUBSCRIPTIONS`] of them of at most
//! [`MAX_SUBSCRIPTION_LEN`] bytes each, and a cursor
//! into the pool database's event log and the task log, placed at the end
//! of both when the session first registers. `event.next` answers every
//! change after the cursor, one event per change (not one per object, as
//! `event.from`), in commit order, database changes before task changes,
//! at most [`BATCH`] at a time, and moves the cursor past what it read;
//! with nothing to tell it waits, as long as it takes (XAPI's call has no
//! timeout), waking at a commit or a task change and every
//! [`RECHECK`] to see that its session still exists (`SESSION_INVALID`
//! once it is gone). Without `register` first, `SESSION_NOT_REGISTERED`.
//! When the logs no longer hold the cursor's place the call answers
//! `EVENTS_LOST` and the cursor moves to the end, so the next call goes
//! on from there (the client reads its objects again meanwhile), as in
//! XAPI.
//!
//! As XAPI, `unregister` on a session that never registered gives it an
//! empty subscription (so `next` then waits instead of refusing).
//! Departure: a `del` event carries no snapshot (XAPI's carries the
//! deleted record), since the log keeps no records.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use xapi_proto::{codes, ApiError};

use super::event::{event_json, events_lost, object_matches, table_matches, Sub};
use super::Args;
use crate::daemon::Daemon;
use crate::events::Change;
use crate::sessions::Subscription;

/// The most subscriptions one session holds.
pub const MAX_SUBSCRIPTIONS: usize = 128;

/// The longest subscription taken, in bytes (a class and a reference fit
/// many times over).
pub const MAX_SUBSCRIPTION_LEN: usize = 128;

/// The most events one `event.next` answers.
pub const BATCH: usize = 4096;

/// How often a waiting call checks that its session still exists.
pub const RECHECK: Duration = Duration::from_secs(2);

/// The session of the call (parameter 0), checked.
fn session(d: &Daemon, args: &Args) -> Result<String, ApiError> {
    args.session(d)?;
    Ok(args.str(0, "session_id")?.to_string())
}

/// The cursor that reads only what comes after now.
fn end(d: &Daemon) -> (u64, u64) {
    (d.events().end(), d.tasks().log().end())
}

/// The call's subscriptions (parameter 1), as kept.
fn given(args: &Args) -> Result<Vec<String>, ApiError> {
    let given: Vec<String> = args
        .strings(1, "classes")?
        .iter()
        .map(|c| Sub::parse(c).text())
        .collect();
    if let Some(long) = given.iter().find(|c| c.len() > MAX_SUBSCRIPTION_LEN) {
        return Err(ApiError::invalid_value(
            "classes",
            format!(
                "a subscription of {} bytes (at most {MAX_SUBSCRIPTION_LEN})",
                long.len()
            ),
        ));
    }
    Ok(given)
}

/// Change the subscriptions of the call's session with `f`, which sees
/// them (none yet for a session that never registered) and may refuse;
/// only then is the session's subscription made (its cursor at the end of
/// the logs) or changed.
fn edit(d: &Daemon, args: &Args, f: impl FnOnce(&mut Vec<String>) -> Result<(), ApiError>) -> Result<Value, ApiError> {
    let handle = session(d, args)?;
    let start = end(d);
    d.sessions()
        .with_subscription(&handle, |sub| {
            let mut classes = sub.as_ref().map(|s| s.classes.clone()).unwrap_or_default();
            f(&mut classes)?;
            sub.get_or_insert_with(|| Subscription {
                classes: Vec::new(),
                cursor: start,
            })
            .classes = classes;
            Ok(())
        })
        .ok_or_else(|| super::args::session_invalid(&handle))??;
    Ok(json!(""))
}

/// `event.register(session, classes)`.
pub fn register(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    args.exactly(2)?;
    let given = given(args)?;
    edit(d, args, |classes| {
        for c in given {
            if !classes.contains(&c) {
                classes.push(c);
            }
        }
        if classes.len() > MAX_SUBSCRIPTIONS {
            return Err(ApiError::invalid_value(
                "classes",
                format!("{} subscriptions (at most {MAX_SUBSCRIPTIONS})", classes.len()),
            ));
        }
        Ok(())
    })
}

/// `event.unregister(session, classes)`.
pub fn unregister(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    args.exactly(2)?;
    let gone = given(args)?;
    edit(d, args, |classes| {
        classes.retain(|c| !gone.contains(c));
        Ok(())
    })
}

/// Read what the subscription selects after its cursor and move it on;
/// and whether it asks for tasks.
fn grab(d: &Daemon, handle: &str, sub: &mut Option<Subscription>) -> Result<(Vec<Change>, bool), ApiError> {
    let sub = sub.as_mut().ok_or_else(|| {
        let shown = super::args::session_invalid(handle).params;
        ApiError::new(codes::SESSION_NOT_REGISTERED, shown)
    })?;
    let subs: Vec<Sub> = sub.classes.iter().map(|c| Sub::parse(c)).collect();
    let wanted = |class: &str, reference: &str| object_matches(&subs, class, reference);
    let read = d
        .events()
        .after(sub.cursor.0, BATCH, wanted)
        .and_then(|(mut changes, db)| {
            let room = BATCH - changes.len();
            let (tasks, t) = d.tasks().log().after(sub.cursor.1, room, wanted)?;
            changes.extend(tasks);
            Ok((changes, (db, t)))
        });
    match read {
        Ok((changes, cursor)) => {
            sub.cursor = cursor;
            Ok((changes, table_matches(&subs, "task")))
        }
        Err(lost) => {
            sub.cursor = end(d);
            Err(events_lost(lost))
        }
    }
}

/// `event.next(session)`.
pub async fn next(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    args.exactly(1)?;
    let handle = session(d, args)?;
    let mut generation = d.watch_generation();
    let mut tasks = d.tasks().watch();
    loop {
        generation.mark_unchanged();
        tasks.mark_unchanged();
        let (changes, tasks_wanted) = d
            .sessions()
            .with_subscription(&handle, |sub| grab(d, &handle, sub))
            .ok_or_else(|| super::args::session_invalid(&handle))??;
        if !changes.is_empty() {
            let m = d.model();
            let events: Vec<Value> = changes
                .iter()
                .map(|c| {
                    // An entry's place in the database's log; a task
                    // change's number, far above any such place.
                    let id = if c.class == "task" { c.generation } else { c.seq };
                    event_json(d, &m, id, c)
                })
                .collect();
            return Ok(Value::Array(events));
        }
        let _ = tokio::time::timeout(RECHECK, async {
            tokio::select! {
                _ = generation.changed() => {}
                _ = tasks.changed(), if tasks_wanted => {}
            }
        })
        .await;
        if d.sessions().check(&handle).is_none() {
            return Err(super::args::session_invalid(&handle));
        }
    }
}

#[cfg(test)]
#[path = "event_next_tests.rs"]
mod tests;
