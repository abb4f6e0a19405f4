//! How the master's database travels to the members.
//!
//! A member long-polls `pool.sync_database(session, since, wait)` with the
//! generation it has. The master answers with the commits after `since`
//! (`{"generation", "commits": [{"generation", "rows"}]}`) while its log holds
//! them, else with a full copy (`{"generation", "full": {"rows", "users"}}`).
//! A row is `[table, ref, record-or-null]`. A member applies each commit in
//! one SQLite transaction, so its replica is always some committed state of
//! the master's.

use serde_json::{json, Value};

use crate::model::{Changes, RowError};

/// Why a `pool.sync_database` answer cannot be applied: the peer sent
/// something this version does not understand, or garbage.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    #[error("{0} must be an array")]
    NotAnArray(&'static str),
    #[error("no {0}")]
    Missing(&'static str),
    #[error("malformed row {0}")]
    MalformedRow(Value),
    #[error("malformed user {0}")]
    MalformedUser(Value),
    #[error(transparent)]
    Row(#[from] RowError),
}

/// Encode a set of changes as rows.
pub fn encode_rows(changes: &Changes) -> Value {
    let mut rows = Vec::new();
    changes.for_each_row(|table, reference, _, record| {
        rows.push(json!([table, reference, record.unwrap_or(Value::Null)]));
    });
    Value::Array(rows)
}

/// Decode rows back into changes.
pub fn decode_rows(rows: &Value) -> Result<Changes, ReplicationError> {
    let mut changes = Changes::default();
    for row in rows.as_array().ok_or(ReplicationError::NotAnArray("rows"))? {
        let (Some(table), Some(reference), Some(record)) = (
            row.get(0).and_then(Value::as_str),
            row.get(1).and_then(Value::as_str),
            row.get(2),
        ) else {
            return Err(ReplicationError::MalformedRow(row.clone()));
        };
        let record = if record.is_null() { None } else { Some(record.clone()) };
        changes.put_row(table, reference, record)?;
    }
    Ok(changes)
}

pub fn encode_users(users: &[(String, String)]) -> Value {
    Value::Array(users.iter().map(|(u, h)| json!([u, h])).collect())
}

pub fn decode_users(v: &Value) -> Result<Vec<(String, String)>, ReplicationError> {
    v.as_array()
        .ok_or(ReplicationError::NotAnArray("users"))?
        .iter()
        .map(
            |p| match (p.get(0).and_then(Value::as_str), p.get(1).and_then(Value::as_str)) {
                (Some(u), Some(h)) => Ok((u.to_string(), h.to_string())),
                _ => Err(ReplicationError::MalformedUser(p.clone())),
            },
        )
        .collect()
}

/// What a sync answer holds.
pub enum Update {
    Commits(Vec<(u64, Changes)>),
    Full {
        generation: u64,
        /// Boxed: a whole database is far larger than the other variant.
        snapshot: Box<Changes>,
        users: Vec<(String, String)>,
    },
}

/// Decode a `pool.sync_database` answer.
pub fn decode_update(v: &Value) -> Result<Update, ReplicationError> {
    use ReplicationError::Missing;
    let generation = v
        .get("generation")
        .and_then(Value::as_u64)
        .ok_or(Missing("generation"))?;
    if let Some(full) = v.get("full") {
        return Ok(Update::Full {
            generation,
            snapshot: Box::new(decode_rows(full.get("rows").ok_or(Missing("rows"))?)?),
            users: decode_users(full.get("users").ok_or(Missing("users"))?)?,
        });
    }
    let commits = v.get("commits").and_then(Value::as_array).ok_or(Missing("commits"))?;
    commits
        .iter()
        .map(|c| {
            let g = c
                .get("generation")
                .and_then(Value::as_u64)
                .ok_or(Missing("a commit's generation"))?;
            Ok((g, decode_rows(c.get("rows").ok_or(Missing("a commit's rows"))?)?))
        })
        .collect::<Result<_, ReplicationError>>()
        .map(Update::Commits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use xapi_proto::records::VmRecord;

    #[test]
    fn rows_round_trip_with_deletes() {
        let mut c = Changes::default();
        c.vm.insert(
            "a".into(),
            Some(VmRecord {
                uuid: "u".into(),
                ..Default::default()
            }),
        );
        c.vm.insert("b".into(), None);
        let back = decode_rows(&encode_rows(&c)).unwrap();
        assert_eq!(back.vm.len(), 2);
        assert!(back.vm["b"].is_none());
        assert!(decode_rows(&json!([["nope", "r", null]])).is_err());
        assert!(decode_rows(&json!([[1]])).is_err());
    }
}
