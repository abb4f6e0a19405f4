//! Bad input: one clear message in xe's words, exit 1, nothing changed.

use crate::util::{run_xe, Lab, PASSWORD};

#[test]
fn xe_reports_errors_as_xe_does() {
    let lab = Lab::start(1, 1);
    let port = lab.port.to_string();
    let master = lab.master();

    let r = run_xe(
        &["vm-list", "-s", &master, "-p", &port, "-u", "root", "-pw", "wrong"],
        &[],
        lab.dir.path(),
    );
    assert_eq!(
        (r.code, r.stderr.as_str()),
        (1, "Authentication failed\nFor usage run: 'xe help'\n")
    );
    assert!(r.stdout.is_empty());

    // The right password through -pw (clap would misparse it).
    let r = run_xe(
        &[
            "vm-list",
            "-s",
            &master,
            "-p",
            &port,
            "-u",
            "root",
            "-pw",
            PASSWORD,
            "--minimal",
        ],
        &[],
        lab.dir.path(),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);

    let r = lab.xe(&["vm-start", "vm=nope"]);
    assert_eq!((r.code, r.stderr.as_str()), (1, "Error: No matching VMs found\n"));

    let r = lab.xe(&["no-such-command"]);
    assert_eq!(
        (r.code, r.stderr.as_str()),
        (1, "Unknown command: no-such-command\nFor usage run: 'xe help'\n")
    );

    let r = lab.xe(&["vm-param-get", "param-name=uuid"]);
    assert_eq!(
        (r.code, r.stderr.as_str()),
        (1, "Required parameter not found: uuid\nFor usage run: 'xe help'\n")
    );

    let vm = lab.xe_min(&["vm-list"]);
    let r = lab.xe(&["vm-param-set", &format!("uuid={vm}"), "ha-restart-priority=1"]);
    assert_eq!(
        (r.code, r.stderr.as_str()),
        (1, "The value given is invalid\nfield: ha_restart_priority\nvalue: 1\n")
    );
    let r = lab.xe(&["vm-param-set", &format!("uuid={vm}"), "order=-1"]);
    assert_eq!(
        r.stderr,
        "The value given is invalid\nfield: order must be non-negative\nvalue: -1\n"
    );
    let r = lab.xe(&["vm-param-set", &format!("uuid={vm}"), "power-state=running"]);
    // xe's line, then where the command's parameters are described.
    let hint = "For usage run: 'xe help vm-param-set'\n";
    assert_eq!(r.stderr, format!("Error: Field 'power-state' is read-only.\n{hint}"));
    let r = lab.xe(&["vm-param-set", &format!("uuid={vm}"), "colour=blue"]);
    assert_eq!(r.stderr, format!("Error: Unknown field 'colour'\n{hint}"));
    // A rejected multi-field set changes nothing: every value is checked first.
    let r = lab.xe(&["vm-param-set", &format!("uuid={vm}"), "order=5", "start-delay=soon"]);
    assert_eq!(
        r.stderr,
        format!("Error: Failed to parse parameter 'start-delay': expecting an integer\n{hint}")
    );
    assert_eq!(
        lab.xe_min(&["vm-param-get", &format!("uuid={vm}"), "param-name=order"]),
        "0"
    );

    let r = lab.xe(&["vm-param-list", "uuid=00000000-0000-0000-0000-000000000000"]);
    assert_eq!(
        r.stderr,
        "The uuid you supplied was invalid.\ntype: VM\nuuid: 00000000-0000-0000-0000-000000000000\n"
    );

    // A VM already running: the reference is shown as uuid (name).
    lab.xe_ok(&["vm-start", "vm=vm01"]);
    let r = lab.xe(&["vm-start", "vm=vm01"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .ends_with(&format!("\nvm: {vm} (vm01)\nexpected: halted\nactual: running\n")),
        "{}",
        r.stderr
    );

    let r = lab.xe(&["sr-create", "name-label=x", "type=lvm"]);
    assert_eq!(
        r.stderr,
        "The SR could not be connected because the driver was not recognised.\ndriver: lvm\n"
    );
}

#[test]
fn unreachable_server_and_usage() {
    let home = tempfile::tempdir().unwrap();
    let r = run_xe(&["vm-list", "-s", "127.0.0.1", "-p", "1"], &[], home.path());
    assert_eq!(
        (r.code, r.stderr.as_str()),
        (1, "Unable to contact server. Please check server and port settings.\n")
    );
    let r = run_xe(&[], &[], home.path());
    assert_eq!(r.code, 0);
    assert!(r.stderr.starts_with("Usage:\n  xe <command>\n"), "{}", r.stderr);
    let r = run_xe(&["help", "--minimal", "--all"], &[], home.path());
    assert_eq!(r.code, 0);
    let names: Vec<&str> = r.stdout.trim_end().split(',').collect();
    assert!(
        names.contains(&"vm-start") && names.contains(&"pool-join"),
        "{}",
        r.stdout
    );
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
}

#[test]
fn the_rc_file_and_extra_args_follow_xe_precedence() {
    let lab = Lab::start(1, 1);
    let home = tempfile::tempdir().unwrap();
    // ~/.xe gives the server; a wrong password there is overridden by XE_EXTRA_ARGS.
    std::fs::write(
        home.path().join(".xe"),
        format!(
            "server={}\nport={}\npassword=wrong\nname-label=vm01\nknownhosts={}\n",
            lab.master(),
            lab.port,
            lab.dir.path().join(".xe_known_hosts").display()
        ),
    )
    .unwrap();
    let r = run_xe(
        &["vm-list", "--minimal"],
        &[("XE_EXTRA_ARGS", &format!("password={PASSWORD}"))],
        home.path(),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    // The unknown rc key became a filter for every command.
    assert_eq!(r.stdout.trim_end(), lab.xe_min(&["vm-list", "name-label=vm01"]));
    // And the command line beats both.
    let r = run_xe(
        &["vm-list", "password=also-wrong"],
        &[("XE_EXTRA_ARGS", &format!("password={PASSWORD}"))],
        home.path(),
    );
    assert_eq!(r.stderr, "Authentication failed\nFor usage run: 'xe help'\n");
}
