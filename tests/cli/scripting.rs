//! xe for scripts: `--format json|table`, param-add/-remove/-clear, exit
//! codes, and bad input that is refused before anything reaches the pool.

use std::net::TcpListener;

use serde_json::Value;

use crate::util::{run_xe, Lab};

#[test]
fn list_and_param_list_print_json_and_tables() {
    let lab = Lab::start(2, 2);
    let out = lab.xe_ok(&["vm-list", "--format", "json"]);
    let list: Value = serde_json::from_str(&out).unwrap();
    let vms = list.as_array().unwrap();
    assert_eq!(vms.len(), 2, "{out}");
    for vm in vms {
        let keys: Vec<&str> = vm.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["name-label", "power-state", "uuid"],
            "xe's default fields, keys sorted"
        );
        assert_eq!(vm["power-state"], "halted");
    }
    // The same document with format=json; typed values with params=.
    let out = lab.xe_ok(&[
        "vm-list",
        "name-label=vm01",
        "format=json",
        "params=uuid,memory-static-max,ha-always-run,other-config,resident-on",
    ]);
    let vm = &serde_json::from_str::<Value>(&out).unwrap()[0];
    assert!(vm["memory-static-max"].is_i64(), "{out}");
    assert_eq!(vm["ha-always-run"], Value::Bool(false));
    assert!(vm["other-config"].is_object(), "{out}");
    assert_eq!(vm["resident-on"], Value::Null, "a halted VM lives nowhere");
    let uuid = vm["uuid"].as_str().unwrap().to_string();

    // python3, where there is one, reads it as the check does.
    let home = tempfile::tempdir().unwrap();
    let script = format!(
        "{} vm-list --format json {} | python3 -c 'import json,sys; json.load(sys.stdin)'",
        crate::util::xe_bin().display(),
        lab.extra_args().split(',').collect::<Vec<_>>().join(" ")
    );
    let python = std::process::Command::new("sh")
        .args(["-c", "command -v python3"])
        .output()
        .unwrap();
    if python.status.success() {
        let ok = std::process::Command::new("sh")
            .args(["-c", &script])
            .env("HOME", home.path())
            .status()
            .unwrap();
        assert!(ok.success(), "{script}");
    } else {
        eprintln!("python3 is not installed: the JSON was checked with serde_json only");
    }

    // param-list: one object with every field.
    let out = lab.xe_ok(&["vm-param-list", &format!("uuid={uuid}"), "--format", "json"]);
    let record: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(record["uuid"], uuid.as_str());
    assert!(record.get("ha-restart-priority").is_some(), "{out}");

    // Tables: a header of field names, a row per VM; param-list is field | value.
    let table = lab.xe_ok(&["vm-list", "--format", "table"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[1].contains("uuid") && lines[1].contains("name-label"), "{table}");
    assert!(table.contains("vm01") && table.contains("vm02"), "{table}");
    let table = lab.xe_ok(&[
        "host-param-list",
        &format!("uuid={}", lab.xe_min(&["host-list", "name-label=host1", "params=uuid"])),
        "--format",
        "table",
    ]);
    assert!(
        table.lines().any(|l| l.contains("name-label") && l.contains("host1")),
        "{table}"
    );
    // xe's own output is unchanged without format.
    assert!(lab
        .xe_ok(&["vm-list", "name-label=vm01"])
        .starts_with("uuid ( RO)           : "));
}

#[test]
fn param_add_remove_and_clear_edit_maps_and_fields() {
    let lab = Lab::start(1, 1);
    let vm = lab.xe_min(&["vm-list", "name-label=vm01", "params=uuid"]);
    let u = format!("uuid={vm}");
    lab.xe_ok(&["vm-param-add", &u, "param-name=other-config", "a=1", "b=2"]);
    let get = |key: &str| {
        lab.xe(&[
            "vm-param-get",
            &u,
            "param-name=other-config",
            &format!("param-key={key}"),
        ])
    };
    assert_eq!((get("a").stdout.as_str(), get("b").stdout.as_str()), ("1\n", "2\n"));
    lab.xe_ok(&["vm-param-remove", &u, "param-name=other-config", "param-key=a"]);
    assert_eq!(get("a").stderr, "Error: Key a not found in map\n");
    let missing = lab.xe(&["vm-param-remove", &u, "param-name=other-config", "param-key=zz"]);
    assert_eq!(
        (missing.code, missing.stderr.as_str()),
        (1, "Error: Key zz is not in map\n")
    );
    lab.xe_ok(&["vm-param-clear", &u, "param-name=other-config"]);
    assert_eq!(lab.xe_ok(&["vm-param-get", &u, "param-name=other-config"]), "\n");
    lab.xe_ok(&["vm-param-set", &u, "name-description=hello"]);
    lab.xe_ok(&["vm-param-clear", &u, "param-name=name-description"]);
    assert_eq!(lab.xe_ok(&["vm-param-get", &u, "param-name=name-description"]), "\n");
    let ro = lab.xe(&["vm-param-clear", &u, "param-name=power-state"]);
    assert_eq!(
        (ro.code, ro.stderr.as_str()),
        (1, "Error: Can only clear RW parameters\n")
    );
    let scalar = lab.xe(&["vm-param-add", &u, "param-name=name-label", "x=y"]);
    assert_eq!(scalar.stderr, "Error: Can only add to parameters of type Set or Map\n");
}

/// A port with a listener that counts connections: xe must never connect.
fn silent_pool() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    (listener, port)
}

#[test]
fn bad_input_says_what_is_wrong_and_sends_nothing() {
    let (listener, port) = silent_pool();
    let home = tempfile::tempdir().unwrap();
    let xe = |args: &[&str]| {
        let mut a = args.to_vec();
        a.extend(["-s", "127.0.0.1", "-p", &port]);
        run_xe(&a, &[], home.path())
    };
    let cases: &[(&[&str], &str)] = &[
        (&["no-such-command"], "Unknown command: no-such-command\nFor usage run: 'xe help'\n"),
        (&["vm-param-get", "uuid=x"], "Required parameter not found: param-name\nFor usage run: 'xe help'\n"),
        (&["vm-list", "=halted"], "Syntax error: '=halted' has no parameter name: write key=value\nFor usage run: 'xe help'\n"),
        (&["vm-list", "-q"], "Syntax error: unknown option -q\nFor usage run: 'xe help'\n"),
        (
            &["vm-start", "vm=a", "--force=perhaps"],
            "Error: Failed to parse parameter 'force': Expected 'true','t','yes','y','1','false','f','no','n','0' got perhaps\nFor usage run: 'xe help vm-start'\n",
        ),
        (
            &["vm-param-set", "uuid=x", "order=first"],
            "Error: Failed to parse parameter 'order': expecting an integer\nFor usage run: 'xe help vm-param-set'\n",
        ),
        (
            &["vm-param-set", "uuid=x", "memory-static-max=lots"],
            "Error: Failed to parse field 'memory-static-max': expecting an integer (possibly with suffix KiB, MiB, GiB, TiB), got 'lots'\nFor usage run: 'xe help vm-param-set'\n",
        ),
        (
            &["vm-param-set", "uuid=x", "colour=blue"],
            "Error: Unknown field 'colour'\nFor usage run: 'xe help vm-param-set'\n",
        ),
        (
            &["vm-list", "format=yaml"],
            "Error: Failed to parse parameter 'format': expected 'json' or 'table', got 'yaml'\nFor usage run: 'xe help vm-list'\n",
        ),
        (
            &["host-evacuate", "host=h", "batch-size=many"],
            "Error: Failed to parse parameter 'batch-size': expecting an integer\nFor usage run: 'xe help host-evacuate'\n",
        ),
    ];
    for (args, stderr) in cases {
        let r = xe(args);
        assert_eq!(
            (r.code, r.stdout.as_str(), r.stderr.as_str()),
            (1, "", *stderr),
            "xe {args:?}"
        );
    }
    assert!(
        listener.accept().is_err(),
        "bad input must be refused before xe connects"
    );
    // Usage and help exit 0, as xe does.
    assert_eq!(xe(&["--help"]).code, 0);
    assert_eq!(xe(&["help", "vm-start"]).code, 0);
}

#[test]
fn ignored_parameters_are_named_only_when_asked() {
    let lab = Lab::start(1, 1);
    // xe ignores a parameter a command does not take; with
    // report-ignored-params=warn it names it on stderr.
    let max = "pool-ha-compute-max-host-failures-to-tolerate";
    let r = lab.xe(&[max, "verbose=true"]);
    assert_eq!((r.code, r.stderr.as_str()), (0, ""), "xe keeps stderr clean by default");
    let r = lab.xe(&[max, "verbose=true", "report-ignored-params=warn"]);
    assert_eq!((r.code, r.stderr.as_str()), (0, "Ignored parameter: verbose\n"));
    // Filters and the command's own parameters are not ignored.
    let r = lab.xe(&[
        "vm-start",
        "vm=vm01",
        "power-state=halted",
        "report-ignored-params=warn",
    ]);
    assert_eq!((r.code, r.stderr.as_str()), (0, ""));
}

/// What a newcomer tripped on (issue 21), each gone: `params=` with a name
/// that is no field, `vm-start paused=true`, `--debug` and
/// `--debug-on-fail`, `vm-destroy` (which `xe help vm-uninstall` names),
/// and one password file for both `xe -pwf` and xapid.
#[test]
fn what_a_newcomer_tripped_on_is_gone() {
    let lab = Lab::start(1, 1);
    let vm = lab.xe_min(&["vm-list", "name-label=vm01", "params=uuid"]);

    // A field that does not exist is named, and nothing is printed.
    let r = lab.xe(&["vm-list", "params=name-label,nosuch"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.is_empty(), "{r:?}");
    assert!(
        r.stderr.contains("Unknown field 'nosuch' in params=") && r.stderr.contains("xe vm-list params=all"),
        "{r:?}"
    );

    // A paused start is refused, not run as a plain start.
    let r = lab.xe(&["vm-start", "vm=vm01", "paused=true"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("You attempted an operation that was not allowed.") && r.stderr.contains("paused=true"),
        "{r:?}"
    );
    assert_eq!(
        lab.xe_min(&["vm-list", "name-label=vm01", "params=power-state"]),
        "halted"
    );

    // --debug: every call and answer on stderr, without the password or
    // the session; the output itself unchanged.
    let r = lab.xe(&["vm-list", "params=uuid", "--minimal", "--debug"]);
    assert_eq!((r.code, r.stdout.trim()), (0, vm.as_str()), "{r:?}");
    for part in [
        "debug: -> https://",
        "session.login_with_password(\"root\", \"<hidden>\"",
        "debug: <- session.login_with_password in ",
        "ok \"<session>\"",
        "VM.get_all_records(\"<session>\")",
        "debug: <- VM.get_all_records in ",
        // The session is the client's no longer as it logs out, and
        // stays valid if the logout fails: hidden all the same.
        "session.logout(\"<hidden>\")",
    ] {
        assert!(r.stderr.contains(part), "--debug lacks {part:?}: {}", r.stderr);
    }
    assert!(!r.stderr.contains(crate::util::PASSWORD), "{}", r.stderr);
    // --debug-on-fail: silent on success, the calls before the error.
    let r = lab.xe(&["vm-list", "--minimal", "--debug-on-fail"]);
    assert_eq!((r.code, r.stderr.as_str()), (0, ""), "{r:?}");
    let r = lab.xe(&["vm-shutdown", "vm=vm01", "--debug-on-fail"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("debug: -> ") && r.stderr.contains("VM.clean_shutdown"),
        "{r:?}"
    );

    // The lab's root password file is in xe's -pwf layout, and the lab's
    // hosts read their root password from it.
    let pwf = lab.dir.path().join("root-password");
    let text = std::fs::read_to_string(&pwf).unwrap();
    assert_eq!(text, format!("root\n{}\n", crate::util::PASSWORD));
    let without_password: Vec<String> = lab
        .extra_args()
        .split(',')
        .filter(|a| !a.starts_with("password=") && !a.starts_with("username="))
        .map(str::to_string)
        .collect();
    let r = crate::util::run_xe(
        &["host-list", "--minimal", "-pwf", pwf.to_str().unwrap()],
        &[("XE_EXTRA_ARGS", &without_password.join(","))],
        lab.dir.path(),
    );
    assert_eq!(r.code, 0, "xe -pwf with the file xapid read: {r:?}");

    // xe help vm-uninstall points to vm-destroy, which removes the record
    // and leaves the disks.
    let help = lab.xe_ok(&["help", "vm-uninstall"]);
    assert!(help.contains("use vm-destroy"), "{help}");
    let disks = || {
        std::fs::read_dir(lab.dir.path().join("sr"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "disk"))
            .count()
    };
    // (A VM's disk file is made when it first runs.)
    lab.xe_ok(&["vm-start", "vm=vm01"]);
    lab.xe_ok(&["vm-shutdown", "vm=vm01", "--force"]);
    let before = disks();
    assert!(before >= 1, "the lab's VM has a disk file");
    lab.xe_ok(&["vm-destroy", &format!("uuid={vm}")]);
    assert_eq!(lab.xe_min(&["vm-list", "name-label=vm01"]), "");
    assert_eq!(disks(), before, "vm-destroy leaves the disks");
}
