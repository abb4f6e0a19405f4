//! The clients admins already use, unmodified: the official `XenAPI`
//! Python package from PyPI, installed into a venv the test makes, talking
//! XML-RPC over verified HTTPS to a lab pool (issue 19): login, lists,
//! setters and their errors, the planner, `Async.` calls polled through
//! their tasks, `event.from` across a VM start, `event.register`/`next`
//! and `VM.get_all_records_where`; and Xen Orchestra's `xen-api` client from
//! npm over HTTPS with its event loop. Each is skipped, with the reason,
//! where pip or npm cannot install the package.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{Lab, PASSWORD};

/// Host `i`'s certificate (PEM), from the file it keeps with its key.
fn certificate_of(lab: &Lab, i: usize) -> String {
    let pem = std::fs::read_to_string(lab.host_data_dir(i).join("xapi-ssl.pem")).unwrap();
    let begin = pem.find("-----BEGIN CERTIFICATE-----").expect("a certificate");
    pem[begin..].to_string()
}

/// Run a client script: the JSON object it printed last.
fn script_output(command: &mut Command) -> serde_json::Value {
    let run = command.output().unwrap();
    assert!(
        run.status.success(),
        "the script failed:\n{}\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let text = String::from_utf8_lossy(&run.stdout);
    serde_json::from_str(text.lines().last().unwrap_or_default()).unwrap()
}

/// The VMs' names as xe lists them, sorted.
fn vm_names(lab: &Lab) -> Vec<String> {
    let names = lab.xe_ok(&["vm-list", "params=name-label", "--minimal"]);
    let mut names: Vec<String> = names.trim().split(',').map(str::to_string).collect();
    names.sort();
    names
}

/// A venv in `dir` with the `XenAPI` package: its python, or why not.
fn xenapi_python(dir: &Path) -> Result<PathBuf, String> {
    let venv = dir.join("venv");
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .output()
        .map_err(|e| format!("no python3: {e}"))?;
    if !made.status.success() {
        return Err(format!(
            "python3 -m venv failed: {}",
            String::from_utf8_lossy(&made.stderr).trim()
        ));
    }
    let pip = Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check", "XenAPI"])
        .output()
        .map_err(|e| format!("no pip in the venv: {e}"))?;
    if !pip.status.success() {
        return Err(format!(
            "pip cannot install XenAPI: {}",
            String::from_utf8_lossy(&pip.stderr).trim()
        ));
    }
    Ok(venv.join("bin/python"))
}

/// What the script does, as an admin's script would, printing one JSON
/// object of what it saw.
const SCRIPT: &str = r#"
import json, ssl, sys, time, urllib.request, xmlrpc.client
import XenAPI

url, password, cafile = sys.argv[1], sys.argv[2], sys.argv[3]
# The host's own certificate as the one trusted root: a verified TLS
# connection (its address is in the certificate).
tls = ssl.create_default_context(cafile=cafile)
s = XenAPI.Session(url, transport=xmlrpc.client.SafeTransport(context=tls))
s.xenapi.login_with_password("root", password, "2.21", "pool-ha clients test")
x = s.xenapi
out = {}
vms = x.VM.get_all_records()
out["vms"] = sorted(v["name_label"] for v in vms.values() if not v["is_control_domain"])
out["hosts"] = sorted(x.host.get_record(h)["name_label"] for h in x.host.get_all())
out["version"] = s.API_version
vm = sorted(vms, key=lambda r: vms[r]["name_label"])[0]
x.VM.set_ha_restart_priority(vm, "best-effort")
out["priority"] = x.VM.get_ha_restart_priority(vm)
try:
    x.VM.set_ha_restart_priority(vm, "sometimes")
    out["bad_priority"] = None
except XenAPI.Failure as f:
    out["bad_priority"] = f.details
x.VM.set_memory_static_max(vm, str(x.VM.get_memory_static_max(vm)))
out["memory"] = x.VM.get_memory_static_max(vm)
out["ntol"] = x.pool.ha_compute_max_host_failures_to_tolerate()
# Start and stop with Async calls and task polling, following event.from.
event_from = getattr(x.event, "from")
token = event_from(["vm"], "", 0.0)["token"]

def run(task):
    for _ in range(600):
        if x.task.get_status(task) != "pending":
            break
        time.sleep(0.05)
    done = [x.task.get_status(task), x.task.get_result(task), x.task.get_error_info(task)]
    x.task.destroy(task)
    return done

out["start_task"] = run(x.Async.VM.start(vm, False, False))
out["started"] = x.VM.get_power_state(vm)
seen = event_from(["vm"], token, 10.0)
out["start_events"] = [[e["operation"], e["snapshot"]["power_state"]] for e in seen["events"] if e["ref"] == vm]
out["stop_task"] = run(x.Async.VM.clean_shutdown(vm))
out["stopped"] = x.VM.get_power_state(vm)
out["bad_task"] = run(x.Async.VM.clean_shutdown(vm))
# The legacy event API: register, a change, next.
x.event.register(["vm"])
x.VM.set_name_description(vm, "watched")
out["next"] = [[e["class"], e["operation"], e["snapshot"]["name_description"]] for e in x.event.next() if e["ref"] == vm]
x.event.unregister(["vm"])
# XAPI's expression language.
name = vms[vm]["name_label"]
where = x.VM.get_all_records_where('field "name__label" = "%s" and field "power_state" = "Halted"' % name)
out["where"] = [[ref == vm, r["name_label"] == name] for ref, r in where.items()]
out["where_running"] = len(x.VM.get_all_records_where('field "name__label" = "%s" and not (field "power_state" = "Halted")' % name))
try:
    x.VM.get_all_records_where('field "name__label" =')
    out["bad_where"] = None
except XenAPI.Failure as f:
    out["bad_where"] = f.details
try:
    x.VM.get_record("OpaqueRef:nonesuch")
except XenAPI.Failure as f:
    out["bad_ref"] = f.details
out["listed"] = [m for m in s.system.listMethods()["Value"] if m in ("VM.start", "host.get_API_version_major")]

# The same record over JSON-RPC: equal, once XML-RPC's strings for int64s
# are taken into account.
def as_xmlrpc(v):
    if isinstance(v, bool):
        return v
    if isinstance(v, int):
        return str(v)
    if v is None:
        return ""
    if isinstance(v, list):
        return [as_xmlrpc(i) for i in v]
    if isinstance(v, dict):
        return {k: as_xmlrpc(i) for k, i in v.items()}
    return v

def jsonrpc(method, params):
    body = json.dumps({"jsonrpc": "2.0", "method": method, "params": params, "id": 1}).encode()
    req = urllib.request.Request(url + "jsonrpc", body, {"Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(req, context=tls))["result"]

session = s._session
out["same_vm"] = as_xmlrpc(jsonrpc("VM.get_record", [session, vm])) == x.VM.get_record(vm)
host = x.host.get_all()[0]
out["same_host"] = as_xmlrpc(jsonrpc("host.get_record", [session, host])) == x.host.get_record(host)
s.xenapi.session.logout()
print(json.dumps(out))
"#;

#[test]
fn the_official_xenapi_python_package_drives_the_pool() {
    let dir = tempfile::tempdir().unwrap();
    let python = match xenapi_python(dir.path()) {
        Ok(p) => p,
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    let lab = Lab::start(2, 2);
    let script = dir.path().join("drive.py");
    std::fs::write(&script, SCRIPT).unwrap();
    // Over HTTPS, verified against host1's certificate.
    let cafile = dir.path().join("host1.pem");
    std::fs::write(&cafile, certificate_of(&lab, 1)).unwrap();
    let url = format!("https://{}:{}/", lab.master(), lab.port);
    let out = script_output(Command::new(&python).arg(&script).arg(&url).arg(PASSWORD).arg(&cafile));
    assert_eq!(out["vms"], serde_json::json!(vm_names(&lab)));
    assert_eq!(out["hosts"], serde_json::json!(["host1", "host2"]));
    assert_eq!(out["version"], "2.21");
    assert_eq!(out["priority"], "best-effort");
    assert_eq!(
        out["bad_priority"],
        serde_json::json!(["INVALID_VALUE", "ha_restart_priority", "sometimes"])
    );
    // int64s travel as strings, as XAPI sends them.
    let memory = out["memory"].as_str().expect("memory_static_max as a string");
    assert!(memory.parse::<i64>().unwrap() > 0, "{memory}");
    assert!(out["ntol"].as_str().unwrap().parse::<i64>().is_ok(), "{}", out["ntol"]);
    assert_eq!(out["start_task"], serde_json::json!(["success", "", []]));
    assert_eq!(out["started"], "Running");
    assert_eq!(out["start_events"], serde_json::json!([["mod", "Running"]]));
    assert_eq!(out["stop_task"], serde_json::json!(["success", "", []]));
    assert_eq!(out["stopped"], "Halted");
    // A task whose call fails carries XAPI's error.
    assert_eq!(out["bad_task"][0], "failure");
    assert_eq!(out["bad_task"][2][0], "VM_BAD_POWER_STATE");
    assert_eq!(out["bad_ref"][0], "HANDLE_INVALID");
    assert_eq!(out["next"], serde_json::json!([["vm", "mod", "watched"]]));
    assert_eq!(out["where"], serde_json::json!([[true, true]]));
    assert_eq!(out["where_running"], 0);
    assert_eq!(
        out["bad_where"],
        serde_json::json!(["INVALID_VALUE", "field \"name__label\" =", "Stdlib.Parsing.Parse_error"])
    );
    assert_eq!(
        out["listed"],
        serde_json::json!(["VM.start", "host.get_API_version_major"])
    );
    assert_eq!(out["same_vm"], true, "VM.get_record differs between the wires");
    assert_eq!(out["same_host"], true, "host.get_record differs between the wires");
}

/// Xen Orchestra's `xen-api` client from npm in `dir`, or why not.
fn xen_api_package(dir: &Path) -> Result<(), String> {
    let npm = Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--silent", "xen-api@4"])
        .current_dir(dir)
        .output()
        .map_err(|e| format!("no npm: {e}"))?;
    if !npm.status.success() {
        return Err(format!(
            "npm cannot install xen-api: {}",
            String::from_utf8_lossy(&npm.stderr).trim()
        ));
    }
    Ok(())
}

/// What Xen Orchestra does when it connects a pool (session, pool record,
/// `system.listMethods` to learn the classes, `event.inject` for a token,
/// every class's records, then `event.from` in a loop), and then the calls
/// an admin makes from it; one JSON object of what it saw.
const XO_SCRIPT: &str = r#"
import { createClient } from 'xen-api'

const [url, password] = process.argv.slice(2)
const xapi = createClient({ url, auth: { user: 'root', password }, allowUnauthorized: true })
await xapi.connect()
await xapi.objectsFetched
const all = Object.values(xapi.objects.all)
const vms = all.filter(o => o.$type === 'VM' && !o.is_control_domain).sort((a, b) => a.name_label < b.name_label ? -1 : 1)
const out = {
  vms: vms.map(v => v.name_label),
  hosts: all.filter(o => o.$type === 'host').map(h => h.name_label).sort(),
  pool: xapi.pool.$type,
}
const vm = vms[0]
let startReturned
const seen = new Promise((resolve, reject) => {
  const timer = setTimeout(() => reject(new Error('no power_state change seen within 10 s')), 10000)
  xapi.objects.on('update', objects => {
    for (const o of Object.values(objects)) {
      if (o.$ref === vm.$ref && o.power_state === 'Running') {
        clearTimeout(timer)
        resolve(Date.now())
      }
    }
  })
})
await xapi.call('VM.start', vm.$ref, false, false)
startReturned = Date.now()
const seenAt = await seen
out.event_after_ms = Math.max(0, seenAt - startReturned)
await xapi.call('VM.set_ha_restart_priority', vm.$ref, 'best-effort')
out.priority = await xapi.call('VM.get_ha_restart_priority', vm.$ref)
try {
  await xapi.call('VM.set_ha_restart_priority', vm.$ref, 'sometimes')
} catch (error) {
  out.bad_priority = error.code
}
out.ntol = await xapi.call('pool.ha_compute_max_host_failures_to_tolerate')
await xapi.call('VM.clean_shutdown', vm.$ref)
await xapi.disconnect()
console.log(JSON.stringify(out))
"#;

#[test]
fn xen_orchestras_xen_api_client_connects_with_events_on() {
    let dir = tempfile::tempdir().unwrap();
    if let Err(why) = xen_api_package(dir.path()) {
        eprintln!("skipped: {why}");
        return;
    }
    let lab = Lab::start(2, 2);
    let script = dir.path().join("drive.mjs");
    std::fs::write(&script, XO_SCRIPT).unwrap();
    // Over HTTPS with a self-signed certificate, as Xen Orchestra's users
    // connect pools (`allowUnauthorized`).
    let url = format!("https://{}:{}", lab.master(), lab.port);
    let out = script_output(
        Command::new("node")
            .arg(&script)
            .arg(&url)
            .arg(PASSWORD)
            .current_dir(dir.path()),
    );
    assert_eq!(out["vms"], serde_json::json!(vm_names(&lab)));
    assert_eq!(out["hosts"], serde_json::json!(["host1", "host2"]));
    assert_eq!(out["pool"], "pool");
    // The client sees the VM running through its event loop within 1 s of
    // the start call's answer (its loop waits 200 ms between calls).
    eprintln!("what xen-api saw: {out}");
    let after = out["event_after_ms"].as_u64().unwrap();
    assert!(after < 1000, "the event came {after} ms after the call returned");
    assert_eq!(out["priority"], "best-effort");
    assert_eq!(out["bad_priority"], "INVALID_VALUE");
    assert!(out["ntol"].as_i64().is_some(), "{}", out["ntol"]);
}
