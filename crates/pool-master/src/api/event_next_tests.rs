//! Tests of the legacy event API: register, next (waiting, waking, per
//! change, classes and objects, tasks), unregister, the errors, and the
//! subscription going with its session.

use super::*;
use crate::sessions::Principal;
use std::time::Instant;

use crate::api::call;

fn ops(events: &Value) -> Vec<(String, String)> {
    events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["class"].as_str().unwrap().to_string(),
                e["operation"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_tells_each_change_after_register_and_waits_for_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::open(crate::daemon::tests::config(dir.path())).unwrap();
    let s = json!(d.sessions().open(Principal::User("root".into())));

    // Not registered yet.
    let e = call(&d, "event.next", vec![s.clone()]).await.unwrap_err();
    assert_eq!(e.code, codes::SESSION_NOT_REGISTERED);
    assert!(e.params[0].len() < 20, "the handle is shortened: {e:?}");

    // A change before register is not told.
    let before = crate::api::new_vm(&d, &s, "old").await;
    assert_eq!(
        call(&d, "event.register", vec![s.clone(), json!(["VM"])])
            .await
            .unwrap(),
        ""
    );
    // Registering again adds, without repeats.
    call(&d, "event.register", vec![s.clone(), json!(["vm", "task"])])
        .await
        .unwrap();
    let handle = s.as_str().unwrap();
    let classes = d
        .sessions()
        .with_subscription(handle, |sub| sub.as_ref().unwrap().classes.clone())
        .unwrap();
    assert_eq!(classes, ["vm", "task"]);

    // A waiting call wakes at the commit; each change is one event.
    let waiter = {
        let (d, s) = (d.clone(), s.clone());
        tokio::spawn(async move {
            let t = Instant::now();
            (call(&d, "event.next", vec![s]).await, t.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let vm = crate::api::new_vm(&d, &s, "a").await;
    let (out, took) = waiter.await.unwrap();
    let out = out.unwrap();
    assert!(took < Duration::from_secs(3), "woke after {took:?}");
    assert_eq!(ops(&out), pairs(&[("vm", "add")]));
    assert_eq!(out[0]["ref"], vm);
    assert_eq!(out[0]["snapshot"]["name_label"], "a");

    // Two changes of one object are two events; a host change is not
    // asked for; a destroy is a del without a snapshot.
    call(&d, "VM.set_name_label", vec![s.clone(), vm.clone(), json!("b")])
        .await
        .unwrap();
    call(&d, "VM.set_name_label", vec![s.clone(), before.clone(), json!("c")])
        .await
        .unwrap();
    let host = d.host_ref().unwrap();
    call(&d, "host.set_name_label", vec![s.clone(), json!(host), json!("h")])
        .await
        .unwrap();
    call(&d, "VM.destroy", vec![s.clone(), vm.clone()]).await.unwrap();
    let out = call(&d, "event.next", vec![s.clone()]).await.unwrap();
    assert_eq!(ops(&out), pairs(&[("vm", "mod"), ("vm", "mod"), ("vm", "del")]));
    assert!(out[2].get("snapshot").is_none());
    let ids: Vec<u64> = out
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_u64().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");

    // Task changes, for a session registered for tasks.
    let task = call(
        &d,
        "Async.VM.create",
        vec![s.clone(), json!({"name_label": "t", "memory_static_max": 1i64 << 30})],
    )
    .await
    .unwrap();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !seen.contains(&("task".to_string(), "mod".to_string())) && Instant::now() < deadline {
        let out = call(&d, "event.next", vec![s.clone()]).await.unwrap();
        for e in out.as_array().unwrap() {
            if e["class"] == "task" {
                assert_eq!(e["ref"], task);
            }
        }
        seen.extend(ops(&out));
    }
    assert!(seen.contains(&("task".into(), "add".into())), "{seen:?}");
    assert!(seen.contains(&("task".into(), "mod".into())), "{seen:?}");
    assert!(seen.contains(&("vm".into(), "add".into())), "{seen:?}");

    // Unregistering a class stops its events: only the object asked for is told.
    call(&d, "event.unregister", vec![s.clone(), json!(["VM", "task"])])
        .await
        .unwrap();
    call(
        &d,
        "event.register",
        vec![s.clone(), json!([format!("vm/{}", before.as_str().unwrap())])],
    )
    .await
    .unwrap();
    call(&d, "VM.set_name_label", vec![s.clone(), before.clone(), json!("d")])
        .await
        .unwrap();
    let out = call(&d, "event.next", vec![s.clone()]).await.unwrap();
    assert_eq!(ops(&out), pairs(&[("vm", "mod")]));
    assert_eq!(out[0]["ref"], before);

    // Logging out ends a waiting call with SESSION_INVALID.
    let waiter = {
        let (d, s) = (d.clone(), s.clone());
        tokio::spawn(async move { call(&d, "event.next", vec![s]).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    call(&d, "session.logout", vec![s.clone()]).await.unwrap();
    let ended = tokio::time::timeout(RECHECK * 2, waiter).await.unwrap().unwrap();
    assert_eq!(ended.unwrap_err().code, codes::SESSION_INVALID);
    assert!(d.sessions().with_subscription(handle, |_| ()).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_the_log_dropped_is_events_lost_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::open(crate::daemon::tests::config(dir.path())).unwrap();
    let s = json!(d.sessions().open(Principal::User("root".into())));
    call(&d, "event.register", vec![s.clone(), json!(["*"])]).await.unwrap();
    crate::api::new_vm(&d, &s, "x").await;
    // The log is replaced whole (as a member's full copy does) before the
    // session read that change.
    d.events().reset(d.model().generation);
    let e = call(&d, "event.next", vec![s.clone()]).await.unwrap_err();
    assert_eq!(e.code, codes::EVENTS_LOST);
    // The cursor moved to the end: the next call tells what follows.
    crate::api::new_vm(&d, &s, "a").await;
    let out = call(&d, "event.next", vec![s.clone()]).await.unwrap();
    assert_eq!(ops(&out), pairs(&[("vm", "add")]));
}

#[tokio::test]
async fn bad_calls_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::open(crate::daemon::tests::config(dir.path())).unwrap();
    let s = json!(d.sessions().open(Principal::User("root".into())));
    let handle = s.as_str().unwrap();
    let e = call(&d, "event.register", vec![s.clone(), json!("vm")])
        .await
        .unwrap_err();
    assert_eq!(e.code, codes::FIELD_TYPE_ERROR);
    let many: Vec<String> = (0..=MAX_SUBSCRIPTIONS).map(|i| format!("vm/OpaqueRef:{i}")).collect();
    let e = call(&d, "event.register", vec![s.clone(), json!(many)])
        .await
        .unwrap_err();
    assert_eq!(e.code, codes::INVALID_VALUE);
    let long = "x".repeat(MAX_SUBSCRIPTION_LEN + 1);
    let e = call(&d, "event.register", vec![s.clone(), json!(["vm", long])])
        .await
        .unwrap_err();
    assert_eq!(e.code, codes::INVALID_VALUE);
    assert_eq!(d.sessions().with_subscription(handle, |sub| sub.clone()), Some(None));
    let e = call(&d, "event.register", vec![json!("OpaqueRef:forged"), json!(["vm"])])
        .await
        .unwrap_err();
    assert_eq!(e.code, codes::SESSION_INVALID);
    // XAPI's quirk: unregister makes an empty subscription.
    call(&d, "event.unregister", vec![s.clone(), json!(["vm"])])
        .await
        .unwrap();
    let sub = d.sessions().with_subscription(handle, |sub| sub.clone()).unwrap();
    assert_eq!(sub.map(|x| x.classes), Some(vec![]));
}
