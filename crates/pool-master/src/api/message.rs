//! `message.*`: the pool's alerts.

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
pub const METHODS: &[&str] = &["message.create", "message.destroy", "message.get_since"];

pub async fn dispatch(d: &Arc<Daemon>, verb: &str, args: &Args) -> Option<Result<Value, ApiError>> {
    Some(match verb {
        "create" => create(d, args).await,
        "destroy" => destroy(d, args).await,
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
}
