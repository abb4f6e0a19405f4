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

use crate::model::Changes;

/// Encode a set of changes as rows.
pub fn encode_rows(changes: &Changes) -> Value {
    let mut rows = Vec::new();
    changes.for_each_row(|table, reference, _, record| {
        rows.push(json!([table, reference, record.unwrap_or(Value::Null)]));
    });
    Value::Array(rows)
}

/// Decode rows back into changes.
pub fn decode_rows(rows: &Value) -> Result<Changes, String> {
    let mut changes = Changes::default();
    for row in rows.as_array().ok_or("rows must be an array")? {
        let (Some(table), Some(reference), Some(record)) = (
            row.get(0).and_then(Value::as_str),
            row.get(1).and_then(Value::as_str),
            row.get(2),
        ) else {
            return Err(format!("malformed row {row}"));
        };
        let record = if record.is_null() { None } else { Some(record.clone()) };
        changes.put_row(table, reference, record)?;
    }
    Ok(changes)
}

pub fn encode_users(users: &[(String, String)]) -> Value {
    Value::Array(users.iter().map(|(u, h)| json!([u, h])).collect())
}

pub fn decode_users(v: &Value) -> Result<Vec<(String, String)>, String> {
    v.as_array()
        .ok_or("users must be an array")?
        .iter()
        .map(
            |p| match (p.get(0).and_then(Value::as_str), p.get(1).and_then(Value::as_str)) {
                (Some(u), Some(h)) => Ok((u.to_string(), h.to_string())),
                _ => Err(format!("malformed user {p}")),
            },
        )
        .collect()
}

/// What a sync answer holds.
pub enum Update {
    Commits(Vec<(u64, Changes)>),
    Full {
        generation: u64,
        snapshot: Changes,
        users: Vec<(String, String)>,
    },
}

/// Decode a `pool.sync_database` answer.
pub fn decode_update(v: &Value) -> Result<Update, String> {
    let generation = v.get("generation").and_then(Value::as_u64).ok_or("no generation")?;
    if let Some(full) = v.get("full") {
        return Ok(Update::Full {
            generation,
            snapshot: decode_rows(full.get("rows").ok_or("no rows")?)?,
            users: decode_users(full.get("users").ok_or("no users")?)?,
        });
    }
    let commits = v.get("commits").and_then(Value::as_array).ok_or("no commits")?;
    commits
        .iter()
        .map(|c| {
            let g = c
                .get("generation")
                .and_then(Value::as_u64)
                .ok_or("commit without generation")?;
            Ok((g, decode_rows(c.get("rows").ok_or("commit without rows")?)?))
        })
        .collect::<Result<_, String>>()
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
