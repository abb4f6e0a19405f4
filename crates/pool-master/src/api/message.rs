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
pub const METHODS: &[&str] = &["message.create", "message.destroy"];

pub async fn dispatch(d: &Arc<Daemon>, verb: &str, args: &Args) -> Option<Result<Value, ApiError>> {
    Some(match verb {
        "create" => create(d, args).await,
        "destroy" => destroy(d, args).await,
        _ => return None,
    })
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
