//! `message.*`: the pool's alerts: `create`, `destroy`, XAPI's
//! `destroy_many` (every message named, all or nothing) and `destroy_all`
//! (those matching filters `before`, `after`, `priority`), `get_since`.
//! New messages are delivered to the pool's alert targets by
//! `crate::alerts`.

use std::sync::Arc;

use serde_json::{json, Value};
use xapi_proto::records::MessageRecord;
use xapi_proto::ApiError;

use super::Args;
use crate::daemon::Daemon;
use pool_db::model::{new_ref, new_uuid};

/// Classes a message may be about.
const MESSAGE_CLASSES: &[&str] = &[
    "VM",
    "Host",
    "SR",
    "Pool",
    "VMPP",
    "VMSS",
    "PVS_proxy",
    "VDI",
    "Certificate",
];

/// The methods [`dispatch`] serves.
pub const METHODS: &[&str] = &[
    "message.create",
    "message.destroy",
    "message.destroy_many",
    "message.destroy_all",
    "message.get_since",
];

pub async fn dispatch(d: &Arc<Daemon>, verb: &str, args: &Args) -> Option<Result<Value, ApiError>> {
    Some(match verb {
        "create" => create(d, args).await,
        "destroy" => destroy(d, args).await,
        "destroy_many" => destroy_many(d, args).await,
        "destroy_all" => destroy_all(d, args).await,
        "get_since" => get_since(d, args),
        _ => return None,
    })
}

/// `message.get_since(session, since)`: the messages stamped after `since`
/// (a wire datetime), as a map from reference to record. Our stamps are to
/// the second (XAPI's to a fraction), so a message of the second `since`
/// names is not after it.
fn get_since(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    args.exactly(2)?;
    let since = crate::clock::parse_wire(args.str(1, "since")?).ok_or_else(|| ApiError::field_type("since"))?;
    let m = d.model();
    let newer: serde_json::Map<String, Value> = m
        .message
        .iter()
        .filter(|(_, msg)| crate::clock::parse_wire(&msg.timestamp).is_some_and(|t| t > since))
        .map(|(r, msg)| (r.clone(), serde_json::to_value(msg).unwrap_or(Value::Null)))
        .collect();
    Ok(Value::Object(newer))
}

/// `message.create(session, name, priority, cls, obj_uuid, body)`.
async fn create(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    args.exactly(6)?;
    let name = args.str(1, "name")?.to_string();
    let priority = args.int(2, "priority")?;
    let cls = args.str(3, "cls")?.to_string();
    let obj_uuid = args.str(4, "obj_uuid")?.to_string();
    let body = args.str(5, "body")?.to_string();
    if !MESSAGE_CLASSES.contains(&cls.as_str()) {
        return Err(ApiError::invalid_value("cls", cls));
    }
    let r = new_ref();
    let record = MessageRecord {
        uuid: new_uuid(),
        name,
        priority,
        cls,
        obj_uuid,
        timestamp: crate::ops::now_wire(),
        body,
    };
    d.write(|txn| {
        txn.put(&r, record);
        Ok(())
    })
    .await?;
    Ok(json!(r))
}

/// `message.destroy(session, message)`.
async fn destroy(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    args.exactly(2)?;
    d.write(|txn| {
        let (r, _) = args.reference::<MessageRecord>(1, txn)?;
        txn.delete::<MessageRecord>(&r);
        Ok(())
    })
    .await?;
    Ok(json!(""))
}

/// `message.destroy_many(session, messages)`: every one must exist
/// (`HANDLE_INVALID` otherwise, and none is destroyed).
async fn destroy_many(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    args.exactly(2)?;
    let refs = args.strings(1, "messages")?;
    d.write(|txn| {
        for r in &refs {
            if txn.get::<MessageRecord>(r).is_none() {
                return Err(ApiError::handle_invalid("message", r));
            }
        }
        for r in &refs {
            txn.delete::<MessageRecord>(r);
        }
        Ok(())
    })
    .await?;
    Ok(json!(""))
}

/// `message.destroy_all(session, filters)`: destroy the messages stamped
/// before `before` and after `after` (RFC 3339 or XAPI's wire form) of
/// priority `priority`, each filter only when given (none: every message).
/// Other keys are ignored, as XAPI does.
async fn destroy_all(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    args.exactly(2)?;
    let filters = args.string_map(1, "filters")?;
    let time = |key: &str| -> Result<Option<i64>, ApiError> {
        filters
            .get(key)
            .map(|t| crate::clock::parse_wire(t).ok_or_else(|| ApiError::invalid_value(key, t.clone())))
            .transpose()
    };
    let (before, after) = (time("before")?, time("after")?);
    let priority = filters
        .get("priority")
        .map(|p| {
            p.trim()
                .parse::<i64>()
                .map_err(|_| ApiError::invalid_value("priority", p.clone()))
        })
        .transpose()?;
    d.write(|txn| {
        for (r, m) in txn.all::<MessageRecord>() {
            let stamp = crate::clock::parse_wire(&m.timestamp);
            let keep = before.is_some_and(|b| stamp.is_none_or(|t| t >= b))
                || after.is_some_and(|a| stamp.is_none_or(|t| t <= a))
                || priority.is_some_and(|p| m.priority != p);
            if !keep {
                txn.delete::<MessageRecord>(&r);
            }
        }
        Ok(())
    })
    .await?;
    Ok(json!(""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sessions::Principal;
    use xapi_proto::codes;

    #[tokio::test]
    async fn get_since_answers_the_messages_after_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let d = Daemon::open(crate::daemon::tests::config(dir.path())).unwrap();
        let s = json!(d.sessions().open(Principal::User("root".into())));
        let (old, new) = (new_ref(), new_ref());
        d.write(|txn| {
            for (r, stamp) in [(&old, "20240420T12:00:00Z"), (&new, "20240420T12:00:01Z")] {
                txn.put(
                    r,
                    MessageRecord {
                        uuid: new_uuid(),
                        name: "HA_HOST_FAILED".into(),
                        priority: 1,
                        cls: "Host".into(),
                        timestamp: stamp.into(),
                        ..Default::default()
                    },
                );
            }
            Ok(())
        })
        .await
        .unwrap();
        let call = |since: Value| {
            let (d, s) = (d.clone(), s.clone());
            async move {
                dispatch(&d, "get_since", &Args::new("message.get_since", vec![s, since]))
                    .await
                    .unwrap()
            }
        };
        let after = call(json!("20240420T12:00:00Z")).await.unwrap();
        assert_eq!(after.as_object().unwrap().keys().collect::<Vec<_>>(), [&new]);
        assert_eq!(after[&new]["name"], "HA_HOST_FAILED");
        let both = call(json!("2024-04-20T11:59:59Z")).await.unwrap();
        assert_eq!(both.as_object().unwrap().len(), 2);
        // UTC when no zone is given; an offset counts.
        assert_eq!(call(json!("20240420T12:00:01")).await.unwrap(), json!({}));
        assert_eq!(
            call(json!("20240420T13:00:00+01:00"))
                .await
                .unwrap()
                .as_object()
                .unwrap()
                .len(),
            1
        );
        let bad = call(json!("yesterday")).await.unwrap_err();
        assert_eq!(bad.code, codes::FIELD_TYPE_ERROR);
    }

    #[tokio::test]
    async fn destroy_many_is_all_or_nothing_and_destroy_all_filters() {
        let dir = tempfile::tempdir().unwrap();
        let d = Daemon::open(crate::daemon::tests::config(dir.path())).unwrap();
        let s = json!(d.sessions().open(Principal::User("root".into())));
        let refs: Vec<String> = (0..4).map(|_| new_ref()).collect();
        d.write(|txn| {
            for (i, r) in refs.iter().enumerate() {
                txn.put(
                    r,
                    MessageRecord {
                        uuid: new_uuid(),
                        name: format!("M{i}"),
                        priority: if i % 2 == 0 { 1 } else { 5 },
                        cls: "Pool".into(),
                        timestamp: format!("20240420T12:00:0{i}Z"),
                        ..Default::default()
                    },
                );
            }
            Ok(())
        })
        .await
        .unwrap();
        let call = |method: &'static str, arg: Value| {
            let (d, s) = (d.clone(), s.clone());
            async move {
                dispatch(&d, method, &Args::new(&format!("message.{method}"), vec![s, arg]))
                    .await
                    .unwrap()
            }
        };
        let names = |d: &Daemon| {
            let mut n: Vec<String> = d.model().message.iter().map(|(_, m)| m.name.clone()).collect();
            n.sort();
            n
        };
        let e = call("destroy_many", json!([refs[0], "OpaqueRef:nope"]))
            .await
            .unwrap_err();
        assert_eq!(e.code, codes::HANDLE_INVALID);
        assert_eq!(names(&d).len(), 4, "none destroyed");
        call("destroy_many", json!([refs[0]])).await.unwrap();
        assert_eq!(names(&d), ["M1", "M2", "M3"]);
        let e = call("destroy_all", json!({"before": "soon"})).await.unwrap_err();
        assert_eq!(e.code, codes::INVALID_VALUE);
        // Priority 5, after 12:00:01: M3 only.
        call("destroy_all", json!({"priority": "5", "after": "2024-04-20T12:00:01Z"}))
            .await
            .unwrap();
        assert_eq!(names(&d), ["M1", "M2"]);
        call("destroy_all", json!({"before": "2024-04-20T12:00:02Z"}))
            .await
            .unwrap();
        assert_eq!(names(&d), ["M2"]);
        call("destroy_all", json!({})).await.unwrap();
        assert!(names(&d).is_empty());
    }
}
