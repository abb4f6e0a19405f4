//! `Async.<Class>.<method>` and the `task` class.
//!
//! An `Async.` call is checked as its plain method would be up to the
//! method's own arguments (a session, this host the master, a method that
//! exists), then answered at once with a pending task's ref while the
//! plain method runs; the task ends with its result (`result` holds it as
//! XAPI does: empty for a method that returns nothing, else the value as an
//! XML-RPC `<value>`) or its error (`error_info`). Clients poll
//! `task.get_status` and destroy the task when done.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::{json, Map, Value};
use xapi_proto::{codes, ApiError};

use super::{unknown, Args, Reply};
use crate::daemon::Daemon;
use crate::tasks::Status;

/// The `task` methods.
pub const METHODS: &[&str] = &[
    "task.get_all",
    "task.get_all_records",
    "task.get_all_records_where",
    "task.get_record",
    "task.get_by_uuid",
    "task.get_uuid",
    "task.get_name_label",
    "task.get_name_description",
    "task.get_status",
    "task.get_progress",
    "task.get_result",
    "task.get_error_info",
    "task.get_created",
    "task.get_finished",
    "task.get_resident_on",
    "task.get_allowed_operations",
    "task.get_current_operations",
    "task.get_other_config",
    "task.destroy",
    "task.cancel",
];

/// Does `method` (listed, so not internal) have an `Async.` form? As in
/// XAPI, the operations do (`VM.start`, `host.evacuate`, `pool.enable_ha`,
/// ...), the generated getters and setters, logins, events and tasks do
/// not (a client that lists `*.get_all_records` to learn the classes must
/// not find `Async.VM.get_all_records`).
fn has_async_form(method: &str) -> bool {
    // Session-only in XAPI's datamodel (`~flags:[`Session]`).
    const SYNC_ONLY: &[&str] = &["message.get_since"];
    !method.starts_with("task.")
        && !SYNC_ONLY.contains(&method)
        && (super::system::listed_by_a_module(method) || ["pool.enable_ha", "pool.disable_ha"].contains(&method))
}

/// The `Async.` forms of the listed methods.
pub fn async_methods(listed: &[String]) -> Vec<String> {
    listed
        .iter()
        .filter(|m| has_async_form(m))
        .map(|m| format!("Async.{m}"))
        .collect()
}

type Dispatch = Pin<Box<dyn Future<Output = Result<Reply, ApiError>> + Send>>;

/// The plain call, boxed: a task's future holds this, not the dispatch's
/// own future type (which holds the task's: a cycle the compiler cannot
/// prove `Send` through).
fn boxed_dispatch(d: Arc<Daemon>, method: String, params: Vec<Value>) -> Dispatch {
    Box::pin(async move { super::dispatch(&d, &method, params).await })
}

/// `Async.<method>(session, ...)`: a task running `<method>`.
pub async fn run_async(d: &Arc<Daemon>, args: Args) -> Result<Value, ApiError> {
    let method = args.method().to_string();
    let inner = method.strip_prefix("Async.").unwrap_or_default().to_string();
    if !has_async_form(&inner) || !super::system::methods().contains(&inner) {
        return Err(unknown(&method));
    }
    args.session(d)?;
    let host = d.host_ref().unwrap_or_default();
    let task = d
        .tasks()
        .create(&method, &host)
        .map_err(|e| ApiError::new(codes::OPERATION_NOT_ALLOWED, vec![e.to_string()]))?;
    let (d2, task2) = (d.clone(), task.clone());
    let params = args.into_params();
    tokio::spawn(async move {
        let outcome = match boxed_dispatch(d2.clone(), inner, params).await {
            Ok(Reply::Value(v)) => Ok(result_text(&v)),
            Ok(Reply::Json(text)) => Ok(serde_json::from_str(&text)
                .map(|v: Value| result_text(&v))
                .unwrap_or_default()),
            Err(e) => Err(e.to_strings()),
        };
        d2.tasks().finish(&task2, outcome);
    });
    Ok(json!(task))
}

/// A method's result as a task keeps it.
fn result_text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) if s.is_empty() => String::new(),
        v => xapi_proto::xmlrpc::encode_value(v),
    }
}

/// `task.<verb>`.
pub fn dispatch(d: &Arc<Daemon>, verb: &str, args: &Args) -> Result<Value, ApiError> {
    let tasks = d.tasks();
    let task_of = |i: usize| {
        let r = args.str(i, "self")?;
        tasks.get(r).ok_or_else(|| ApiError::handle_invalid("task", r))
    };
    match verb {
        "get_all" => {
            args.exactly(1)?;
            Ok(json!(tasks.all().into_iter().map(|(r, _)| r).collect::<Vec<_>>()))
        }
        "get_all_records" => {
            args.exactly(1)?;
            let all: Map<String, Value> = tasks.all().into_iter().map(|(r, t)| (r, t.record())).collect();
            Ok(Value::Object(all))
        }
        "get_all_records_where" => {
            args.exactly(2)?;
            let fields = crate::tasks::Task::fields();
            let expr = super::filter::compile(args.str(1, "expr")?, |f| fields.contains(&f))?;
            let matching: Map<String, Value> = tasks
                .all()
                .into_iter()
                .map(|(r, t)| (r, t.record()))
                .filter(|(_, record)| super::filter::matches(&expr, record))
                .collect();
            Ok(Value::Object(matching))
        }
        "get_by_uuid" => {
            args.exactly(2)?;
            let uuid = args.str(1, "uuid")?;
            tasks
                .by_uuid(uuid)
                .map(|r| json!(r))
                .ok_or_else(|| ApiError::uuid_invalid("task", uuid))
        }
        "get_record" => {
            args.exactly(2)?;
            Ok(task_of(1)?.record())
        }
        "destroy" => {
            args.exactly(2)?;
            let r = args.str(1, "self")?;
            match tasks.destroy(r) {
                true => Ok(json!("")),
                false => Err(ApiError::handle_invalid("task", r)),
            }
        }
        "cancel" => {
            args.exactly(2)?;
            match task_of(1)?.status {
                // No operation here stops half-way safely: it runs to its end.
                Status::Pending => Err(ApiError::new(
                    codes::OPERATION_NOT_ALLOWED,
                    vec!["this task's operation cannot be cancelled".into()],
                )),
                _ => Ok(json!("")),
            }
        }
        _ => {
            let field = verb.strip_prefix("get_").ok_or_else(|| unknown(args.method()))?;
            args.exactly(2)?;
            let record = task_of(1)?.record();
            record.get(field).cloned().ok_or_else(|| unknown(args.method()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sessions::Principal;

    use crate::api::call;

    async fn until_done(d: &Arc<Daemon>, s: &Value, task: &Value) -> Value {
        for _ in 0..200 {
            let r = call(d, "task.get_record", vec![s.clone(), task.clone()]).await.unwrap();
            if r["status"] != "pending" {
                return r;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("the task did not end");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_async_call_answers_a_task_that_ends_with_the_result_or_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let d = Daemon::open(crate::daemon::tests::config(dir.path())).unwrap();
        let s = json!(d.sessions().open(Principal::User("root".into())));
        let record = json!({"name_label": "a", "memory_static_max": 1i64 << 30});
        let task = call(&d, "Async.VM.create", vec![s.clone(), record]).await.unwrap();
        assert!(task.as_str().unwrap().starts_with("OpaqueRef:"));
        let done = until_done(&d, &s, &task).await;
        assert_eq!(done["status"], "success");
        assert_eq!(done["progress"], 1.0);
        let result = done["result"].as_str().unwrap();
        let vm = result
            .strip_prefix("<value>")
            .and_then(|r| r.strip_suffix("</value>"))
            .unwrap();
        assert_eq!(
            call(&d, "VM.get_name_label", vec![s.clone(), json!(vm)]).await.unwrap(),
            "a"
        );
        assert_eq!(
            call(&d, "task.get_status", vec![s.clone(), task.clone()])
                .await
                .unwrap(),
            "success"
        );
        assert_eq!(
            call(&d, "task.get_all", vec![s.clone()]).await.unwrap(),
            json!([task.clone()])
        );
        call(&d, "task.destroy", vec![s.clone(), task.clone()]).await.unwrap();
        assert_eq!(
            call(&d, "task.get_status", vec![s.clone(), task.clone()])
                .await
                .unwrap_err()
                .code,
            codes::HANDLE_INVALID
        );

        // The method's own error ends the task.
        let task = call(
            &d,
            "Async.VM.start",
            vec![s.clone(), json!("OpaqueRef:nonesuch"), json!(false), json!(false)],
        )
        .await
        .unwrap();
        let done = until_done(&d, &s, &task).await;
        assert_eq!(done["status"], "failure");
        assert_eq!(done["error_info"][0], codes::HANDLE_INVALID);

        // No task for a method that does not exist, one without an Async
        // form, or a bad session.
        for (method, code) in [
            ("Async.VM.frobnicate", codes::MESSAGE_METHOD_UNKNOWN),
            ("Async.session.logout", codes::MESSAGE_METHOD_UNKNOWN),
            ("Async.host.local_vm_start", codes::MESSAGE_METHOD_UNKNOWN),
            ("Async.VM.get_all_records", codes::MESSAGE_METHOD_UNKNOWN),
        ] {
            assert_eq!(
                call(&d, method, vec![s.clone()]).await.unwrap_err().code,
                code,
                "{method}"
            );
        }
        assert_eq!(
            call(&d, "Async.VM.start", vec![json!("OpaqueRef:forged")])
                .await
                .unwrap_err()
                .code,
            codes::SESSION_INVALID
        );
        // Listed: the operations' Async forms, never a generated getter's
        // or setter's.
        let listed = call(&d, "system.listMethods", vec![]).await.unwrap();
        let listed: Vec<&str> = listed.as_array().unwrap().iter().map(|m| m.as_str().unwrap()).collect();
        assert!(listed.contains(&"Async.VM.start") && listed.contains(&"Async.pool.enable_ha"));
        for generated in [
            "Async.VM.get_all_records",
            "Async.VM.get_power_state",
            "Async.VM.set_name_label",
        ] {
            assert!(!listed.contains(&generated), "{generated}");
        }
        assert_eq!(call(&d, "task.get_all", vec![s.clone()]).await.unwrap(), json!([task]));
    }
}
