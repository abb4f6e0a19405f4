//! HA capacity commands: how many host failures the pool tolerates, the
//! What-If machine, the failover plan, and a VM's agility report.

use serde_json::{json, Value};

use super::{make_hidden, make_spec, make_standard, Ctx, Handler, Spec};
use crate::error::XeError;
use crate::fields::scalar_text;

pub fn commands() -> Vec<Spec> {
    vec![
        make_spec(
            "pool-ha-compute-max-host-failures-to-tolerate",
            &[],
            &["explain"],
            "Compute the maximum number of host failures to tolerate under the current Pool configuration. With --explain, also say how the number was proven and which failures would be one too many.",
            Handler::Run(compute_max),
        ),
        make_spec(
            "pool-ha-plan-snapshot",
            &[],
            &["file-name"],
            "Write the failover planner's input (hosts' free memory and what they reach, protected VMs' memory, host and needs) as JSON to file-name, or print it, for planning offline with ha-plan (a pool-ha extra).",
            Handler::Run(plan_snapshot),
        ),
        make_spec(
            "pool-ha-compute-hypothetical-max-host-failures-to-tolerate",
            &[],
            &["vm-uuid", "restart-priority"],
            "Compute the maximum number of host failures to tolerate with the supplied, proposed protected VMs.",
            Handler::Run(hypothetical),
        ),
        make_hidden(make_spec(
            "pool-ha-compute-vm-failover-plan",
            &["host-uuids"],
            &[],
            "Compute a VM failover plan assuming the given set of hosts fail.",
            Handler::Run(failover_plan),
        )),
        make_standard(make_spec(
            "diagnostic-vm-status",
            &["uuid"],
            &[],
            "Query the hosts on which the VM can boot, check the sharing/locking status of all VBDs.",
            Handler::Run(diagnostic_vm_status),
        )),
    ]
}

fn int_text(v: &Value) -> String {
    v.as_i64().map_or_else(|| scalar_text(v), |n| n.to_string())
}

/// `uuid (name-label)` of a reference of `class`.
fn describe(ctx: &mut Ctx, class: &str, r: &str) -> Result<String, XeError> {
    let rec = ctx.records.all(class)?.get(r).cloned();
    Ok(match rec {
        Some(v) => {
            let uuid = v.get("uuid").map(scalar_text).unwrap_or_default();
            let name = v.get("name_label").map(scalar_text).unwrap_or_default();
            format!("{uuid} ({name})")
        }
        None => r.to_string(),
    })
}

/// What each name of `Tolerance::proven_by` means (docs/HA.md, "How an
/// answer is proven").
fn proven_by_text(name: &str) -> &'static str {
    match name {
        "slots" | "headroom" => "a certificate: restarting on the host with the most free memory survives",
        "tiers" => "a certificate: holes kept for the big VMs, the rest in the headroom outside them",
        "policy-fluid" => "a certificate: the fixed restart policy survives every failure sequence, by total memory",
        "policy-hole" => {
            "a certificate: the fixed restart policy survives every failure sequence, with holes for the big VMs"
        }
        "regions" => "a certificate: each group of hosts that reach the same storage and networks proven on its own",
        "search" => "the game search finished",
        "xapi" => "XAPI's planner found a verified plan when the search ran out of its allowance",
        "nothing" => "no plan proven, not even with no host failure",
        _ => "see docs/HA.md",
    }
}

/// `pool-ha-plan-snapshot [file-name=F]`: `pool.ha_planner_snapshot`'s
/// JSON, to the file (created or replaced) or to standard output.
fn plan_snapshot(ctx: &mut Ctx) -> Result<(), XeError> {
    let snapshot = ctx.records.conn.call("pool.ha_planner_snapshot", vec![])?;
    let Some(text) = snapshot.as_str() else {
        return Err(XeError::Cli(
            "the pool answered pool.ha_planner_snapshot with no text".into(),
        ));
    };
    match ctx.param("file-name") {
        Some(path) => {
            std::fs::write(path, text).map_err(|e| XeError::Cli(format!("cannot write the snapshot to {path}: {e}")))?
        }
        None => ctx.out.list(vec![text.trim_end().to_string()]),
    }
    Ok(())
}

fn compute_max(ctx: &mut Ctx) -> Result<(), XeError> {
    if !ctx.flag("explain")? {
        let n = ctx
            .records
            .conn
            .call("pool.ha_compute_max_host_failures_to_tolerate", vec![])?;
        ctx.out.list(vec![int_text(&n)]);
        return Ok(());
    }
    let e = ctx
        .records
        .conn
        .call("pool.ha_explain_max_host_failures_to_tolerate", vec![])?;
    let failures = e.get("failures").and_then(Value::as_i64).unwrap_or(0);
    let planner = e.get("planner").map(scalar_text).unwrap_or_default();
    let mut lines = vec![failures.to_string()];
    let protected = e.get("protected_vms").and_then(Value::as_i64).unwrap_or(0);
    lines.push(format!("protected VMs: {protected}; planner: {planner}"));
    lines.push(match e.get("proof").and_then(Value::as_str) {
        Some("exact") => {
            format!("proof: exact: {failures} is the largest number of host failures every protected VM survives")
        }
        Some("lower-bound") => format!(
            "proof: lower bound: at least {failures}, at most {} (the search stopped early)",
            e.get("at_most").map(int_text).unwrap_or_default()
        ),
        _ => "proof: XAPI's planner (a safe answer, not necessarily the largest)".to_string(),
    });
    if let Some(by) = e.get("proven_by").and_then(Value::as_str).filter(|_| planner != "xapi") {
        lines.push(format!("proven by: {by}: {}", proven_by_text(by)));
    }
    if e.get("restartable_now") == Some(&Value::Bool(false)) {
        lines.push(if planner == "xapi" {
            "warning: XAPI's planner finds no plan even with no host failure (it counts any non-agile protected VM as no plan)".into()
        } else {
            "warning: some protected VMs cannot be started even with no host failure".into()
        });
    }
    let refs = |key: &str| -> Vec<String> {
        e.get(key)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
            .unwrap_or_default()
    };
    let (hosts, vms) = (refs("witness_hosts"), refs("witness_vms"));
    if !hosts.is_empty() {
        let hosts = hosts
            .iter()
            .map(|h| describe(ctx, "host", h))
            .collect::<Result<Vec<_>, _>>()?;
        let vms = vms
            .iter()
            .map(|v| describe(ctx, "VM", v))
            .collect::<Result<Vec<_>, _>>()?;
        lines.push(format!(
            "one more is too many: if these hosts fail: {}",
            hosts.join(", ")
        ));
        lines.push(format!("these protected VMs cannot be restarted: {}", vms.join(", ")));
    }
    ctx.out.list(lines);
    Ok(())
}

fn hypothetical(ctx: &mut Ctx) -> Result<(), XeError> {
    let vms: Vec<String> = ctx
        .params
        .iter()
        .filter(|(k, _)| *k == "vm-uuid")
        .map(|(_, v)| v.to_string())
        .collect();
    let priorities: Vec<String> = ctx
        .params
        .iter()
        .filter(|(k, _)| *k == "restart-priority")
        .map(|(_, v)| v.to_string())
        .collect();
    if vms.len() != priorities.len() {
        return Err(XeError::cli(
            "Call requires an equal number of vm-uuid and restart-priority arguments",
        ));
    }
    let mut configuration = serde_json::Map::new();
    for (uuid, priority) in vms.iter().zip(priorities) {
        let vm = ctx.records.conn.call("VM.get_by_uuid", vec![json!(uuid)])?;
        configuration.insert(scalar_text(&vm), json!(priority));
    }
    let n = ctx.records.conn.call(
        "pool.ha_compute_hypothetical_max_host_failures_to_tolerate",
        vec![Value::Object(configuration)],
    )?;
    ctx.out.list(vec![int_text(&n)]);
    Ok(())
}

fn failover_plan(ctx: &mut Ctx) -> Result<(), XeError> {
    let uuids: Vec<String> = ctx
        .param("host-uuids")
        .unwrap_or_default()
        .split(',')
        .filter(|u| !u.is_empty())
        .map(str::to_string)
        .collect();
    let mut hosts = Vec::new();
    for uuid in &uuids {
        hosts.push(ctx.records.conn.call("host.get_by_uuid", vec![json!(uuid)])?);
    }
    let plan = ctx
        .records
        .conn
        .call("pool.ha_compute_vm_failover_plan", vec![json!(hosts), json!([])])?;
    let mut rows: Vec<(i64, String, Value)> = Vec::new();
    for (vm, entry) in plan.as_object().into_iter().flatten() {
        let order = entry.get("order").and_then(Value::as_i64).unwrap_or(0);
        rows.push((order, describe(ctx, "VM", vm)?, entry.clone()));
    }
    // Protected VMs first (by order group), then best-effort, then the rest.
    let rank = |e: &Value| match e.get("restart_priority").and_then(Value::as_str) {
        Some("restart") => 0,
        Some("best-effort") => 1,
        _ => 2,
    };
    rows.sort_by(|a, b| rank(&a.2).cmp(&rank(&b.2)).then(a.0.cmp(&b.0)).then(a.1.cmp(&b.1)));
    let mut records = Vec::new();
    for (order, vm, entry) in rows {
        let priority = entry.get("restart_priority").map(scalar_text).unwrap_or_default();
        let destination = match entry.get("host").and_then(Value::as_str) {
            Some(h) => describe(ctx, "host", h)?,
            None => String::new(),
        };
        let mut record = vec![
            ("vm ( RO)".to_string(), vm),
            ("restart-priority ( RO)".to_string(), priority),
            ("order ( RO)".to_string(), order.to_string()),
            ("destination ( RO)".to_string(), destination),
        ];
        if entry.get("host").is_none() {
            let reason = entry.get("reason").map(scalar_text).unwrap_or_default();
            let why = match entry.get("error_code").and_then(Value::as_str) {
                Some(code) => format!("{code}: {reason}"),
                None => reason,
            };
            record.push(("not-restarted ( RO)".to_string(), why));
        }
        records.push(record);
    }
    ctx.out.table(records);
    Ok(())
}

fn diagnostic_vm_status(ctx: &mut Ctx) -> Result<(), XeError> {
    let uuid = ctx.param("uuid").unwrap_or_default().to_string();
    let vm = ctx.records.conn.call("VM.get_by_uuid", vec![json!(uuid)])?;
    let record = ctx.records.conn.call("VM.get_record", vec![vm.clone()])?;
    let vm = scalar_text(&vm);
    {
        let possible = ctx.records.conn.call("VM.get_possible_hosts", vec![json!(vm)])?;
        let mut possible_uuids = Vec::new();
        for h in possible.as_array().into_iter().flatten() {
            possible_uuids.push(ctx.records.uuid_of("host", &scalar_text(h))?);
        }
        let text = |k: &str| record.get(k).map(scalar_text).unwrap_or_default();
        ctx.out.table(vec![vec![
            ("uuid ( RO)".into(), text("uuid")),
            ("name-label ( RW)".into(), text("name_label")),
            ("power-state ( RO)".into(), text("power_state").to_lowercase()),
            ("possible-hosts ( RO)".into(), possible_uuids.join("; ")),
        ]]);
        ctx.out
            .list(vec!["Checking to see whether disks are attachable".into()]);
        let mut vbds = Vec::new();
        for vbd_ref in record.get("VBDs").and_then(Value::as_array).into_iter().flatten() {
            let vbd = ctx.records.conn.call("VBD.get_record", vec![vbd_ref.clone()])?;
            let vdi_ref = vbd.get("VDI").map(scalar_text).unwrap_or_default();
            let vdi = ctx.records.conn.call("VDI.get_record", vec![json!(vdi_ref)])?;
            let sr_ref = vdi.get("SR").map(scalar_text).unwrap_or_default();
            let sr = describe(ctx, "SR", &sr_ref)?;
            let field = |v: &Value, k: &str| v.get(k).map(scalar_text).unwrap_or_default();
            vbds.push(vec![
                ("uuid ( RO)".into(), field(&vbd, "uuid")),
                ("userdevice ( RW)".into(), field(&vbd, "userdevice")),
                ("vdi-uuid ( RO)".into(), field(&vdi, "uuid")),
                ("sr ( RO)".into(), sr),
                ("mode ( RW)".into(), field(&vbd, "mode")),
                ("type ( RW)".into(), field(&vbd, "type")),
            ]);
        }
        ctx.out.table(vbds);
        ctx.out
            .list(vec!["Checking to see whether VM can boot on each host".into()]);
        let hosts: Vec<String> = ctx.records.all("host")?.keys().cloned().collect();
        let mut lines = Vec::new();
        for h in hosts {
            let name = describe(ctx, "host", &h)?;
            let verdict = match ctx
                .records
                .conn
                .call("VM.assert_can_boot_here", vec![json!(vm), json!(h)])
            {
                Ok(_) => "OK".to_string(),
                Err(e) => format!("Cannot start here [{}]", one_line(ctx, &e)),
            };
            lines.push(format!("{name}: {verdict}"));
        }
        ctx.out.list(lines);
        let agile = match ctx.records.conn.call("VM.assert_agile", vec![json!(vm)]) {
            Ok(_) => "VM is agile.".to_string(),
            Err(e) => format!("VM is not agile because: {}", one_line(ctx, &e)),
        };
        ctx.out.list(vec![agile]);
    }
    Ok(())
}

/// An error on one line: its text with references described.
fn one_line(ctx: &mut Ctx, e: &XeError) -> String {
    e.render(&mut |r| ctx.records.describe(r)).replace('\n', "; ")
}
