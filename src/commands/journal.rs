//! pool-ha's own commands for the journal of the host xe talks to (the
//! master, unless `-s` names a member): `xe audit-list`, the state-changing
//! calls it served with their user, arguments (secrets masked) and result
//! (`host.get_audit_log`); `xe alert-delivery-list`, every attempt to
//! deliver a pool message by mail or webhook (`host.get_alert_deliveries`).
//! Both print the newest `limit=` rows (default 100), oldest first, after
//! the filters; `--format json` prints them as the API answers.

use serde_json::Value;

use super::{make_formatted, make_spec, Ctx, Handler, Spec};
use crate::error::XeError;
use crate::fields::{rfc3339, scalar_text};
use crate::printer::Format;

pub fn commands() -> Vec<Spec> {
    vec![
        make_formatted(make_spec(
            "audit-list",
            &[],
            &["limit", "user", "method", "result"],
            "List the state-changing API calls the host served, newest last: who (the session's user), the method, its arguments with secrets masked, and the result (success or the error code). limit= caps how many of the newest are read (default 100, at most 10000); user=, method= and result= keep the matching ones (a pool-ha extra; --format json for scripts).",
            Handler::Run(audit),
        )),
        make_formatted(make_spec(
            "alert-delivery-list",
            &[],
            &["limit", "message-uuid", "outcome"],
            "List the attempts to deliver pool messages to the alert targets (mail by other-config:mail-destination and ssmtp-mailhub, the webhook by other-config:pool-ha-webhook-url), newest last: the message, the target, the attempt, the outcome (delivered, retrying, failed, skipped) and the answer or error. limit= caps how many of the newest are read (default 100, at most 10000); message-uuid= and outcome= keep the matching ones (a pool-ha extra; --format json for scripts).",
            Handler::Run(deliveries),
        )),
    ]
}

/// The `limit=` argument, checked here so that bad input sends nothing.
fn limit(ctx: &Ctx) -> Result<Vec<Value>, XeError> {
    match ctx.param("limit") {
        None => Ok(vec![]),
        Some(n) => match n.trim().parse::<i64>() {
            Ok(v) if (1..=10_000).contains(&v) => Ok(vec![Value::from(v)]),
            _ => Err(XeError::cli(format!(
                "Failed to parse parameter 'limit': expecting an integer from 1 to 10000, got '{n}'"
            ))),
        },
    }
}

/// Rows of `method`'s answer kept by the filters (`param` = JSON key).
fn rows(ctx: &mut Ctx, method: &str, filters: &[(&str, &str)]) -> Result<Vec<Value>, XeError> {
    let args = limit(ctx)?;
    let answer = ctx.records.conn.call(method, args)?;
    let wanted: Vec<(String, &str)> = filters
        .iter()
        .filter_map(|(param, key)| ctx.param(param).map(|v| (v.to_string(), *key)))
        .collect();
    Ok(answer
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|row| {
            wanted
                .iter()
                .all(|(v, key)| row.get(*key).map(scalar_text).as_deref() == Some(v))
        })
        .collect())
}

/// Print `rows` as xe's records with `fields` (label, JSON key), or JSON.
fn print(ctx: &mut Ctx, rows: Vec<Value>, fields: &[(&str, &str)]) {
    if ctx.format == Format::Json {
        ctx.out.json(&Value::Array(rows));
        return;
    }
    let records = rows
        .iter()
        .map(|row| {
            fields
                .iter()
                .map(|(label, key)| {
                    let v = row.get(*key).unwrap_or(&Value::Null);
                    let text = match *key {
                        "time" => rfc3339(v.as_str().unwrap_or_default()),
                        "args" => v.to_string(),
                        _ => scalar_text(v),
                    };
                    (format!("{label} ( RO)"), text)
                })
                .collect()
        })
        .collect();
    if ctx.format == Format::Table {
        let header = fields.iter().map(|(l, _)| l.to_string()).collect();
        let grid = rows
            .iter()
            .map(|row| {
                fields
                    .iter()
                    .map(|(_, key)| match *key {
                        "args" => row[*key].to_string(),
                        _ => scalar_text(&row[*key]),
                    })
                    .collect()
            })
            .collect();
        ctx.out.grid(header, grid);
        return;
    }
    ctx.out.table(records);
}

fn audit(ctx: &mut Ctx) -> Result<(), XeError> {
    let rows = rows(
        ctx,
        "host.get_audit_log",
        &[("user", "user"), ("method", "method"), ("result", "result")],
    )?;
    print(
        ctx,
        rows,
        &[
            ("id", "id"),
            ("time", "time"),
            ("user", "user"),
            ("method", "method"),
            ("args", "args"),
            ("result", "result"),
        ],
    );
    Ok(())
}

fn deliveries(ctx: &mut Ctx) -> Result<(), XeError> {
    let rows = rows(
        ctx,
        "host.get_alert_deliveries",
        &[("message-uuid", "message_uuid"), ("outcome", "outcome")],
    )?;
    print(
        ctx,
        rows,
        &[
            ("id", "id"),
            ("time", "time"),
            ("message-uuid", "message_uuid"),
            ("message-name", "message_name"),
            ("target", "target"),
            ("attempt", "attempt"),
            ("outcome", "outcome"),
            ("detail", "detail"),
        ],
    );
    Ok(())
}
