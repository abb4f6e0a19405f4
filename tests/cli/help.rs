//! `xe help` against XAPI's own command table.
//!
//! `tests/fixtures/xapi-help.json` holds XAPI's entries (name, required and
//! optional parameters, help text, flags) for every command xe has,
//! extracted from xen-api's `cli_frontend.ml` and `cli_operations.ml` by
//! `scripts/xapi-help.py`. Each `xe help <cmd>` must print exactly the
//! record XAPI's `xe help <cmd>` prints, except for the few commands named
//! in [`EXTENSIONS`], which add parameters after XAPI's and a sentence after
//! XAPI's description. No pool is needed: help never connects.

use serde_json::Value;

use crate::util::run_xe;

/// Commands where this pool adds parameters, each with its reason.
/// Commands of pool-ha's own, not in XAPI's table.
const OURS: &[&str] = &[
    "pool-ha-status",
    "pool-ha-plan-snapshot",
    "audit-list",
    "alert-delivery-list",
];

const EXTENSIONS: &[(&str, &[&str], &str)] = &[
    (
        "host-disable",
        &["lower-ntol"],
        "the scripted answer to XenCenter's offer to lower failures-to-tolerate",
    ),
    (
        "vm-install",
        &["memory", "disk-size"],
        "no templates: the VM's size is given",
    ),
    (
        "pool-ha-compute-max-host-failures-to-tolerate",
        &["explain"],
        "how the number was proven",
    ),
];

const VM_SELECTORS: &str = " VMs can be specified by filtering the full list of VMs on the values of zero or more fields. For example, specifying 'uuid=<some_uuid>' will select only the VM with that uuid, and 'power-state=halted' will select only VMs whose 'power-state' field is equal to 'halted'. The special pseudo-field 'vm' matches either of name-label or uuid. Where multiple VMs are matching, the option '--multiple' must be specified to perform the operation. The full list of fields that can be matched can be obtained by the command 'xe vm-list params=all'. If no parameters to select VMs are given, the operation will be performed on all VMs.";
const HOST_SELECTORS: &str = " Hosts can be specified by filtering the full list of hosts on the values of zero or more fields. For example, specifying 'uuid=<some_uuid>' will select only the host with that uuid, and 'enabled=true' will select only hosts whose 'enabled' field is equal to 'true'. The special pseudo-field 'host' matches any of hostname, name-label or uuid. Where multiple hosts are matching, and the operation can be performed on multiple hosts, the option '--multiple' must be specified to perform the operation. The full list of fields that can be matched can be obtained by the command 'xe host-list params=all'. If no parameters to select hosts are given, the operation will be performed on all hosts.";

fn xapi_table() -> serde_json::Map<String, Value> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/xapi-help.json");
    let text = std::fs::read_to_string(path).unwrap();
    serde_json::from_str::<Value>(&text)
        .unwrap()
        .as_object()
        .unwrap()
        .clone()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// XAPI's `xe help <cmd>` record for a command of its table.
fn xapi_record(entry: &Value, extra: &[&str]) -> (String, String, String) {
    let flags = strings(&entry["flags"]);
    let mut optn = strings(&entry["optn"]);
    optn.extend(extra.iter().map(|s| s.to_string()));
    let mut help = entry["help"].as_str().unwrap().to_string();
    if flags.iter().any(|f| f == "Vm_selectors") {
        optn.push("<vm-selectors>".into());
        help += VM_SELECTORS;
    }
    if flags.iter().any(|f| f == "Host_selectors") {
        optn.push("<host-selectors>".into());
        help += HOST_SELECTORS;
    }
    (strings(&entry["reqd"]).join(", "), optn.join(", "), help)
}

/// The record of a generated `<class>-*` command, for class `cli`.
fn generated_record(entry: &Value, cli: &str, ours: &(String, String, String)) -> (String, String, String) {
    let help = entry["help"]
        .as_str()
        .unwrap()
        .replace("{plural}", &format!("{cli}s"))
        // The list of clearable fields depends on the fields of the class:
        // take ours, check the sentence around it.
        .replace(
            "{clearable}",
            ours.2
                .strip_prefix("Clears the specified parameter (param-name can be ")
                .and_then(|s| s.strip_suffix(")."))
                .unwrap_or("?"),
        );
    // Parameter lists of generated commands come from the class's fields.
    (strings(&entry["reqd"]).join(", "), ours.1.clone(), help)
}

fn xe(args: &[&str]) -> String {
    let home = tempfile::tempdir().unwrap();
    let r = run_xe(args, &[], home.path());
    assert_eq!(r.code, 0, "xe {args:?}: {}", r.stderr);
    r.stdout
}

/// Split `xe help <cmd>` into (reqd, optional, description), checking the
/// layout on the way.
fn our_record(name: &str) -> (String, String, String) {
    let out = xe(&["help", name]);
    let lines: Vec<&str> = out.split('\n').collect();
    assert_eq!(lines.len(), 7, "{out:?}");
    assert_eq!(lines[0], format!("command name            : {name}"));
    let value = |i: usize, label: &str| {
        lines[i]
            .strip_prefix(label)
            .unwrap_or_else(|| panic!("{out:?}"))
            .to_string()
    };
    assert_eq!(&lines[4..], ["", "", ""]);
    (
        value(1, "        reqd params     : "),
        value(2, "        optional params : "),
        value(3, "        description     : "),
    )
}

#[test]
fn help_matches_xapi_for_every_command() {
    let xapi = xapi_table();
    let listed = xe(&["help", "--minimal", "--all"]);
    let names: Vec<&str> = listed.trim_end().split(',').collect();
    assert!(!names.contains(&"help"), "XAPI does not list help itself");
    let mut checked = 0;
    for name in &names {
        let ours = our_record(name);
        let theirs = if let Some(entry) = xapi.get(*name) {
            let flags = strings(&entry["flags"]);
            assert!(!flags.iter().any(|f| f == "Hidden"), "{name} is hidden in XAPI");
            let extra = EXTENSIONS
                .iter()
                .find(|(n, _, _)| n == name)
                .map_or(&[][..], |(_, extra, _)| extra);
            let mut theirs = xapi_record(entry, extra);
            if !extra.is_empty() {
                // An extension adds a sentence after XAPI's own description
                // (before the selectors' explanation).
                let base = entry["help"].as_str().unwrap();
                let selectors = &theirs.2[base.len()..];
                assert!(
                    ours.2.starts_with(base) && ours.2.ends_with(selectors),
                    "{name}: {}",
                    ours.2
                );
                theirs.2 = ours.2.clone();
            }
            theirs
        } else if OURS.contains(name) {
            // A pool-ha extra: its record, laid out as XAPI's are.
            assert!(!ours.2.is_empty(), "{name} has no description");
            ours.clone()
        } else {
            let (cli, op) = name.split_once('-').unwrap();
            let entry = xapi
                .get(&format!("<class>-{op}"))
                .unwrap_or_else(|| panic!("{name} is neither in XAPI's table nor a generated command"));
            generated_record(entry, cli, &ours)
        };
        assert_eq!(ours, theirs, "xe help {name}");
        checked += 1;
    }
    assert!(checked >= 40, "{checked}");
}

#[test]
fn docs_cli_md_is_generated_from_the_command_table() {
    let generated = xe(&["__reference"]);
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/cli.md");
    let file = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        file == generated,
        "docs/cli.md is out of date: run `cargo run -q --bin xe -- __reference > docs/cli.md`"
    );
    // Every command has its section and an example.
    for name in xe(&["help", "--minimal", "--all"]).trim_end().split(',') {
        let section = generated
            .split(&format!("\n### {name}\n"))
            .nth(1)
            .unwrap_or_else(|| panic!("no section for {name}"));
        let example = section.split("```sh\n").nth(1).unwrap_or_default();
        assert!(example.starts_with("xe "), "{name} has no example");
    }
}

#[test]
fn listings_are_xapis() {
    let xapi = xapi_table();
    let listed = xe(&["help", "--minimal", "--all"]);
    let names: Vec<&str> = listed.trim_end().split(',').collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "sorted by name");
    // The standard list: XAPI's Standard flag, and the generated vm-list and sr-list.
    let common = xe(&["help", "--minimal"]);
    let common: Vec<&str> = common.trim_end().split(',').collect();
    let expected: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| match xapi.get(*n) {
            Some(e) => strings(&e["flags"]).iter().any(|f| f == "Standard"),
            None => ["vm-list", "sr-list"].contains(n),
        })
        .collect();
    assert_eq!(common, expected);
    // Hidden commands run but are never listed.
    let help = xe(&["help", "pool-ha-compute-vm-failover-plan"]);
    assert!(help.starts_with("command name            : pool-ha-compute-vm-failover-plan\n"));
    assert!(!names.contains(&"pool-ha-compute-vm-failover-plan"));
    // The full listing: banner, then host-*, vm-*, the rest, wrapped at 74.
    let all = xe(&["help", "--all"]);
    assert!(all.contains("Full command list\n-----------------\n"), "{all}");
    assert!(all.lines().all(|l| l.len() <= 78), "{all}");
    let unknown = xe(&["help", "no-such-command"]);
    assert_eq!(unknown, "Unknown command 'no-such-command'\n");
}
