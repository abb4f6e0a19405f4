//! `xe message-destroy` and `xe message-destroy-all`, as XAPI's xe has
//! them (`message.destroy_many`, `message.destroy_all`). `message-list`
//! is the generated list (filters such as `priority=1`), with pool-ha's
//! `since=` (`message.get_since`) in `class`.

use serde_json::{json, Value};

use super::{make_spec, Ctx, Handler, Spec};
use crate::error::XeError;

pub fn commands() -> Vec<Spec> {
    vec![
        make_spec(
            "message-destroy",
            &[],
            &["uuid", "uuids"],
            "Destroy one existing message or many",
            Handler::Run(destroy),
        ),
        make_spec(
            "message-destroy-all",
            &[],
            &["before", "after", "priority"],
            "Destroy all messages matching the given conditions (combined with logical AND). If no conditions are provided, all messages are destroyed.",
            Handler::Run(destroy_all),
        ),
    ]
}

/// `message-destroy uuid=<uuid>` or `uuids=<uuid>,<uuid>`.
fn destroy(ctx: &mut Ctx) -> Result<(), XeError> {
    let uuids: Vec<String> = match (ctx.param("uuid"), ctx.param("uuids")) {
        (Some(u), None) => vec![u.to_string()],
        (None, Some(list)) => list.split(',').map(str::to_string).collect(),
        (Some(_), Some(_)) => return Err(XeError::cli("Ambiguous arguments; need one of uuid, uuids")),
        (None, None) => return Err(XeError::cli("Need one of uuid, uuids")),
    };
    let mut refs = Vec::with_capacity(uuids.len());
    for uuid in uuids {
        refs.push(ctx.records.conn.call("message.get_by_uuid", vec![json!(uuid)])?);
    }
    ctx.records
        .conn
        .call("message.destroy_many", vec![Value::Array(refs)])?;
    Ok(())
}

/// Is `text` an RFC 3339 time as xe's `Date.of_iso8601` reads it?
pub(crate) fn is_time(text: &str) -> bool {
    let Some((date, clock)) = text.split_once('T') else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let date_ok = match date.split('-').collect::<Vec<_>>().as_slice() {
        [y, m, d] => y.len() == 4 && m.len() == 2 && d.len() == 2 && digits(y) && digits(m) && digits(d),
        [ymd] => ymd.len() == 8 && digits(ymd),
        _ => false,
    };
    let clock = clock.trim_end_matches('Z');
    let clock = clock.split(['+', '-']).next().unwrap_or_default();
    let clock = clock.split('.').next().unwrap_or_default();
    let clock_ok = matches!(clock.split(':').collect::<Vec<_>>().as_slice(),
        [h, m, s] if [h, m, s].iter().all(|p| p.len() == 2 && digits(p)));
    date_ok && clock_ok
}

/// `message-destroy-all [before=] [after=] [priority=]`, checked as xe does.
fn destroy_all(ctx: &mut Ctx) -> Result<(), XeError> {
    let mut filters = serde_json::Map::new();
    for key in ["before", "after"] {
        if let Some(t) = ctx.param(key) {
            if !is_time(t) {
                let word = if key == "before" { "invalid" } else { "Invalid" };
                return Err(XeError::cli(format!(
                    "{word} timestamp format for '{key}' (expected RFC3339, for example, 2025-01-01T00:00:00Z)"
                )));
            }
            filters.insert(key.into(), json!(t));
        }
    }
    if let Some(p) = ctx.param("priority") {
        if p.trim().parse::<u64>().is_err() {
            return Err(XeError::cli("Invalid priority format (expected positive integer)"));
        }
        filters.insert("priority".into(), json!(p.trim()));
    }
    ctx.records
        .conn
        .call("message.destroy_all", vec![Value::Object(filters)])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_read_as_xe_reads_them() {
        for t in [
            "2025-01-01T00:00:00Z",
            "20250101T00:00:00Z",
            "2025-01-01T00:00:00.5+02:00",
            "2025-01-01T00:00:00",
        ] {
            assert!(is_time(t), "{t}");
        }
        for t in ["yesterday", "2025-01-01", "2025-1-1T00:00:00Z", "2025-01-01T00:00Z"] {
            assert!(!is_time(t), "{t}");
        }
    }
}
