//! `xe pool-ha-status`: HA on one screen, as the host xe talks to sees it
//! (a pool-ha extra, served by `host.get_ha_status`): whether HA is on,
//! the master and its lock, the liveset, what each host's heartbeats and
//! statefile slot look like from here, the plan, each protected VM with
//! where it runs and where it would restart, and the latest HA events.
//! Pointed at a member, it answers with that host's own view, which is
//! what is left to look at when the master is gone. `--format json` prints
//! the whole answer; `--watch` draws it again at every change (`event.from`)
//! until Ctrl-C.

use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{make_formatted, make_local, make_spec, Ctx, Handler, Spec};
use crate::error::XeError;
use crate::fields::scalar_text;
use crate::printer::{Format, Out};

pub fn commands() -> Vec<Spec> {
    vec![make_formatted(make_local(make_spec(
        "pool-ha-status",
        &[],
        &["watch"],
        "Show HA on one screen as the host xe talks to sees it: the liveset, each host's heartbeats and statefile slot, the master, the failover plan, the protected VMs and where they would restart, and the latest HA events (a pool-ha extra; --format json for scripts; --watch draws it again at every change of the pool, at least every 10 s, until Ctrl-C).",
        Handler::Run(status),
    )))]
}

fn status(ctx: &mut Ctx) -> Result<(), XeError> {
    if ctx.flag("watch")? {
        if ctx.format == Format::Json {
            return Err(XeError::cli(
                "--watch draws the screen for people: not with --format json",
            ));
        }
        return watch(ctx);
    }
    let s = ctx.records.conn.call("host.get_ha_status", vec![])?;
    if ctx.format == Format::Json {
        ctx.out.json(&s);
        return Ok(());
    }
    draw(ctx.out, &s);
    Ok(())
}

/// The classes whose changes redraw the screen.
const WATCHED: &[&str] = &["pool", "host", "VM", "message"];

/// The longest wait for a change before the screen is drawn again anyway
/// (heartbeat ages move without events).
const REFRESH: Duration = Duration::from_secs(10);

/// `--watch`: draw, wait for a change of the pool (`event.from`, at most
/// [`REFRESH`]), draw again, until Ctrl-C (or an error). A member, which
/// serves no `event.from`, is polled every 2 s instead. At most two draws
/// a second. On a terminal each draw replaces the last; otherwise draws
/// follow each other.
fn watch(ctx: &mut Ctx) -> Result<(), XeError> {
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut token = String::new();
    let mut events = true;
    loop {
        let s = ctx.records.conn.call("host.get_ha_status", vec![])?;
        let mut out = Out::new(false);
        draw(&mut out, &s);
        let mut stdout = std::io::stdout().lock();
        let clear = if terminal { "\x1b[H\x1b[2J" } else { "" };
        // A closed stdout (the reader went away) ends the watch.
        if writeln!(stdout, "{clear}{}", out.finish())
            .and_then(|()| stdout.flush())
            .is_err()
        {
            return Ok(());
        }
        drop(stdout);
        let since = Instant::now();
        if events {
            let classes: Vec<Value> = WATCHED.iter().map(|c| Value::from(*c)).collect();
            match ctx.records.conn.call(
                "event.from",
                vec![
                    Value::Array(classes),
                    Value::from(token.clone()),
                    Value::from(REFRESH.as_secs_f64()),
                ],
            ) {
                Ok(batch) => token = batch["token"].as_str().unwrap_or_default().to_string(),
                Err(_) => events = false,
            }
        }
        let least = if events {
            Duration::from_millis(500)
        } else {
            Duration::from_secs(2)
        };
        std::thread::sleep(least.saturating_sub(since.elapsed()));
    }
}

/// HA on one screen.
fn draw(out: &mut Out, s: &Value) {
    let text = |v: &Value| match v {
        Value::Null => "-".to_string(),
        other => scalar_text(other),
    };
    let yes = |v: &Value| if v.as_bool() == Some(true) { "yes" } else { "no" }.to_string();
    let by = &s["answered_by"];
    let mut lines = Vec::new();
    let whose = if by["view"] == "pool" {
        "the pool's view".to_string()
    } else {
        "its own view; its copy of the pool database may lag the master's".to_string()
    };
    lines.push(format!(
        "Answered by {} ({}, {whose}){}",
        text(&by["name"]),
        text(&by["role"]),
        match by["emergency"].as_str() {
            Some(code) => format!("; in HA emergency mode: {code}"),
            None => String::new(),
        }
    ));
    if s["ha_enabled"] != Value::Bool(true) {
        lines.push("HA: disabled".into());
    } else {
        lines.push(format!("HA: enabled, timeout {} s", text(&s["timeout_s"])));
    }
    let agent = &s["agent"];
    lines.push(format!(
        "Master: {}; master lock held by {}{}",
        text(&s["master"]),
        text(&agent["lock_holder"]),
        if agent["master_confirmed"] == Value::Bool(true) {
            " (confirmed by this host)"
        } else {
            ""
        }
    ));
    let mut agent_line = format!("This host's HA agent: {}", text(&agent["status"]));
    if let Some(why) = agent["stopped_because"].as_str() {
        agent_line.push_str(&format!(" ({why})"));
    }
    if agent["status"] == "online" || agent["status"] == "starting" {
        agent_line.push_str(&format!(
            ", phase {}, statefile {}",
            text(&agent["phase"]),
            if agent["statefile_access"] == Value::Bool(true) {
                "reachable"
            } else {
                "NOT reachable"
            }
        ));
        if agent["storage_lost"] == Value::Bool(true) {
            agent_line.push_str(", kept in the liveset without the statefile");
        }
        if agent["rule2"] == Value::Bool(true) {
            agent_line.push_str(", alive by survival rule 2");
        }
    }
    lines.push(agent_line);
    let names = |v: &Value| -> String {
        let list: Vec<String> = v.as_array().map(|a| a.iter().map(text).collect()).unwrap_or_default();
        if list.is_empty() {
            "-".into()
        } else {
            list.join(", ")
        }
    };
    lines.push(format!("Liveset: {}", names(&s["liveset"])));
    lines.push(format!(
        "Failures to tolerate: {}; plan exists for: {}; {}",
        text(&s["failures_to_tolerate"]),
        text(&s["plan_exists_for"]),
        if s["overcommitted"] == Value::Bool(true) {
            "OVERCOMMITTED"
        } else {
            "not overcommitted"
        }
    ));
    out.list(lines);

    let age = |v: &Value| {
        v.as_u64()
            .map_or("-".to_string(), |ms| format!("{:.1} s", ms as f64 / 1000.0))
    };
    let hosts: Vec<Vec<String>> = s["hosts"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|h| {
                    let mut notes = Vec::new();
                    if h["enabled"] != Value::Bool(true) {
                        notes.push("disabled");
                    }
                    if h["maintenance"] == Value::Bool(true) {
                        notes.push("maintenance");
                    }
                    vec![
                        text(&h["name"]),
                        yes(&h["live"]),
                        yes(&h["in_liveset"]),
                        yes(&h["heard"]),
                        age(&h["heartbeat_age_ms"]),
                        yes(&h["on_statefile"]),
                        age(&h["slot_age_ms"]),
                        notes.join(", "),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    out.list(vec![
        String::new(),
        "Hosts (heartbeats and slots as this host sees them):".into(),
    ]);
    out.grid(
        [
            "host",
            "live",
            "in liveset",
            "heard",
            "last heartbeat",
            "on statefile",
            "slot changed",
            "notes",
        ]
        .map(str::to_string)
        .to_vec(),
        hosts,
    );
    let vms: Vec<Vec<String>> = s["protected_vms"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| {
                    vec![
                        text(&v["name"]),
                        text(&v["priority"]),
                        text(&v["order"]),
                        text(&v["power_state"]),
                        text(&v["runs_on"]),
                        text(&v["restart_on"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    out.list(vec![String::new(), "Protected VMs:".into()]);
    if vms.is_empty() {
        out.list(vec!["  none".into()]);
    } else {
        out.grid(
            [
                "VM",
                "priority",
                "order",
                "power state",
                "runs on",
                "restarts on if its host fails",
            ]
            .map(str::to_string)
            .to_vec(),
            vms,
        );
    }
    let recent: Vec<String> = s["recent"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|m| {
                    format!(
                        "  {} {} {}: {}",
                        text(&m["time"]),
                        text(&m["name"]),
                        text(&m["host"]),
                        text(&m["body"])
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    out.list(vec![String::new(), "Latest HA events:".into()]);
    out.list(if recent.is_empty() {
        vec!["  none".into()]
    } else {
        recent
    });
}
