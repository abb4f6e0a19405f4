//! The HA runtime end to end: real xapid processes with HA on (T = 5 s,
//! lab mode), faults pulled with `xapid lab`, the pool read back with xe.

use std::time::Duration;

use serde_json::{json, Value};

use crate::util::{generation, live, running_on, scrape, vm_uuid, wait_for, Lab, FAILOVER, HA_T as T};

fn ha_lab(hosts: usize, vms: usize) -> Lab {
    Lab::start_ha(hosts, vms, &[])
}

fn host_uuid(lab: &Lab, name: &str) -> String {
    lab.xe_min(&["host-list", &format!("name-label={name}"), "params=uuid"])
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.chars().filter(|c| *c == '-').count() == 4
}

fn messages(lab: &Lab, via: usize) -> String {
    lab.xe_on(via, &["message-list", "params=name", "--minimal"]).stdout
}

#[test]
fn enabling_ha_arms_every_host_and_a_network_pull_fences_only_that_host() {
    let lab = Lab::start(3, 1);
    assert_eq!(lab.xe_min(&["pool-list", "params=ha-enabled"]), "false");
    let bad = lab.xe(&["pool-ha-enable", "ha-config:timeout=2"]);
    assert_eq!(bad.code, 1);
    assert!(bad.stderr.contains("The value given is invalid"), "{}", bad.stderr);
    assert_eq!(
        lab.xe_min(&["pool-list", "params=ha-enabled"]),
        "false",
        "a failed enable changes nothing"
    );
    lab.xe_ok(&["pool-ha-enable", &format!("ha-config:timeout={T}")]);
    assert_eq!(lab.xe_min(&["pool-list", "params=ha-enabled"]), "true");
    let config = lab.xe_ok(&[
        "pool-param-get",
        &format!("uuid={}", lab.xe_min(&["pool-list", "params=uuid"])),
        "param-name=ha-configuration",
    ]);
    assert_eq!(config.trim(), format!("timeout: {T}"));
    let statefile = lab.xe_min(&["pool-list", "params=ha-statefiles"]);
    assert!(
        uuid_like(&statefile),
        "ha-statefiles shows the statefile VDI's uuid: {statefile}"
    );
    let peers = lab.xe_min(&["host-list", "name-label=host3", "params=ha-network-peers"]);
    assert_eq!(peers.split("; ").count(), 2, "{peers}");
    let again = lab.xe(&["pool-ha-enable"]);
    assert!(again.stderr.contains("HA is enabled on the Pool"), "{}", again.stderr);

    // A VM on host3, then host3's cable is pulled: it fences, the others stay.
    lab.xe_ok(&["vm-start", "vm=vm01", "on=host3"]);
    lab.fault("cut-network", "host3");
    lab.wait_fenced("host3");
    assert!(
        wait_for(FAILOVER, || live(&lab, 1, "host3") == Some(false)),
        "host1 still does not report host3 dead: {:?}",
        lab.xe_on(1, &["host-list", "params=name-label,host-metrics-live"])
    );
    assert_eq!((lab.downs("host1"), lab.downs("host2")), (0, 0), "{}", lab.output());

    // Plugged back in, it rejoins with no VMs and reports why it fenced.
    lab.fault("restore-network", "host3");
    assert!(
        wait_for(FAILOVER, || live(&lab, 1, "host3") == Some(true)),
        "host3 did not rejoin"
    );
    let halted = || lab.xe_min(&["vm-list", "name-label=vm01", "params=power-state"]) == "halted";
    assert!(
        wait_for(FAILOVER, halted),
        "vm01 still shows as running on the rebooted host3"
    );
    assert!(wait_for(FAILOVER, || messages(&lab, 1).contains("HA_HOST_WAS_FENCED")));
    let body = lab.xe_min(&["message-list", "name=HA_HOST_WAS_FENCED", "params=body"]);
    assert!(body.contains("SM_SURVIVALRULE_FAILED"), "{body}");
    assert_eq!((lab.downs("host1"), lab.downs("host2")), (0, 0));
}

#[test]
fn storage_loss_alone_fences_nobody_and_a_host_without_the_statefile_stays_out() {
    let lab = ha_lab(3, 0);
    lab.fault("cut-storage", "host2");
    std::thread::sleep(Duration::from_secs(3 * T));
    assert_eq!(lab.downs("host2"), 0, "{}", lab.output());
    assert_eq!(live(&lab, 1, "host2"), Some(true));

    // Every host loses the statefile: survival rule 2 keeps them all.
    lab.fault("cut-storage", "host1");
    lab.fault("cut-storage", "host3");
    assert!(wait_for(FAILOVER, || messages(&lab, 1).contains("HA_STATEFILE_LOST")));
    std::thread::sleep(Duration::from_secs(3 * T));
    for h in ["host1", "host2", "host3"] {
        assert_eq!(lab.downs(h), 0, "{h} fenced:\n{}", lab.output());
    }
    for h in ["host1", "host2", "host3"] {
        lab.fault("restore-storage", h);
    }

    // Both heartbeats lost: host3 fences; rebooted without storage it
    // cannot join and says so; with storage back it rejoins.
    std::thread::sleep(Duration::from_secs(T));
    lab.fault("cut-storage", "host3");
    lab.fault("cut-network", "host3");
    lab.wait_fenced("host3");
    lab.fault("restore-network", "host3");
    let refused = wait_for(FAILOVER, || {
        lab.xe_on(3, &["host-list"])
            .stderr
            .contains("The host could not join the liveset because the HA daemon could not access the heartbeat disk.")
    });
    assert!(refused, "host3 did not report the heartbeat disk");
    assert!(wait_for(FAILOVER, || live(&lab, 1, "host3") == Some(false)));
    lab.fault("restore-storage", "host3");
    assert!(
        wait_for(FAILOVER, || live(&lab, 1, "host3") == Some(true)),
        "host3 did not rejoin"
    );
    assert_eq!((lab.downs("host1"), lab.downs("host2")), (0, 0), "{}", lab.output());
}

#[test]
fn killing_the_master_elects_a_new_one_with_the_last_committed_change() {
    let lab = ha_lab(3, 1);
    let old_master = host_uuid(&lab, "host1");
    let vm = lab.xe_min(&["vm-list", "name-label=vm01", "params=uuid"]);
    lab.xe_ok(&[
        "vm-param-set",
        &format!("uuid={vm}"),
        "name-description=written just before the failure",
    ]);
    lab.fault("power-off", "host1");
    let mut last = None;
    let elected = wait_for(FAILOVER, || {
        let r = lab.xe_on(2, &["pool-list", "params=master", "--minimal"]);
        let ok = r.code == 0 && !r.stdout.trim().is_empty() && r.stdout.trim() != old_master;
        last = Some(r);
        ok
    });
    assert!(elected, "no new master ({last:?}):\n{}", lab.output());
    let d = lab.xe_on(
        2,
        &["vm-list", &format!("uuid={vm}"), "params=name-description", "--minimal"],
    );
    assert_eq!(d.stdout.trim(), "written just before the failure");
    assert!(wait_for(FAILOVER, || live(&lab, 3, "host1") == Some(false)));

    // The old master comes back as a member of the new one.
    lab.fault("power-on", "host1");
    assert!(
        wait_for(FAILOVER, || live(&lab, 2, "host1") == Some(true)),
        "host1 did not rejoin"
    );
    let via_old = lab.xe_on(
        1,
        &["vm-list", &format!("uuid={vm}"), "params=name-description", "--minimal"],
    );
    assert_eq!(
        via_old.stdout.trim(),
        "written just before the failure",
        "{}",
        via_old.stderr
    );
    assert_eq!((lab.downs("host2"), lab.downs("host3")), (0, 0));
}

#[test]
fn a_two_host_network_pull_fences_the_pulled_host_in_both_uuid_orders() {
    // The seeds' two-host story: whichever host's cable is pulled, that
    // host fences and the other keeps the pool (the side with its network
    // wins the tie, before the uuid). Both hosts in turn cover both uuid
    // orders.
    let lab = ha_lab(2, 0);
    lab.fault("cut-network", "host2");
    lab.wait_fenced("host2");
    std::thread::sleep(Duration::from_secs(2 * T));
    assert_eq!(lab.downs("host1"), 0, "host1 fenced too:\n{}", lab.output());
    lab.fault("restore-network", "host2");
    assert!(
        wait_for(FAILOVER, || live(&lab, 1, "host2") == Some(true)),
        "host2 did not rejoin:\n{}",
        lab.output()
    );
    lab.fault("cut-network", "host1");
    lab.wait_fenced("host1");
    std::thread::sleep(Duration::from_secs(2 * T));
    assert_eq!(lab.downs("host2"), 1, "host2 fenced again:\n{}", lab.output());
}

#[test]
fn after_ha_disable_no_host_fences() {
    let lab = ha_lab(3, 0);
    let no_force = lab.xe_on(3, &["host-emergency-ha-disable"]);
    assert_eq!(no_force.code, 1);
    assert!(
        no_force.stderr.contains("must be forced (use --force)"),
        "{}",
        no_force.stderr
    );
    lab.xe_ok(&["pool-ha-disable"]);
    assert_eq!(lab.xe_min(&["pool-list", "params=ha-enabled"]), "false");
    assert!(lab.xe(&["pool-ha-disable"]).stderr.contains("HA is not enabled"));
    lab.fault("cut-network", "host3");
    lab.fault("cut-storage", "host2");
    std::thread::sleep(Duration::from_secs(4 * T));
    for h in ["host1", "host2", "host3"] {
        assert_eq!(lab.downs(h), 0, "{h} fenced after HA was disabled:\n{}", lab.output());
    }
    let soft = lab.xe_on(1, &["host-emergency-ha-disable", "--force"]);
    assert!(soft.stderr.contains("HA is not enabled"), "{}", soft.stderr);
}

#[test]
fn a_frozen_master_that_wakes_during_the_election_leaves_the_pool_a_master() {
    // Frozen past its watchdog, the master fences as it wakes, reboots at
    // once and is back in the liveset while the others elect its
    // successor: whichever of them wins, the pool must end with a master.
    let lab = ha_lab(3, 0);
    let pid = nix::unistd::Pid::from_raw(lab.host_pid(1) as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    // 2 T: it wakes as the others finish their fault handler.
    std::thread::sleep(Duration::from_secs(2 * T));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    lab.wait_fenced("host1");
    let answered = || {
        lab.xe_any_min(&["pool-list", "params=master"])
            .is_some_and(|m| uuid_like(&m))
    };
    assert!(
        wait_for(FAILOVER, || answered()
            && (1..=3).all(|i| live(&lab, 1, &format!("host{i}")) == Some(true))),
        "no host answers as master, or host1 did not rejoin"
    );
    // And it stays so.
    std::thread::sleep(Duration::from_secs(2 * T));
    assert!(answered(), "the pool lost its master again");
    // Its fence is on record, although it was the master when it fenced
    // (it wrote the message into its old database and lost it).
    let host1 = host_uuid(&lab, "host1");
    let fenced = || {
        lab.xe_any_min(&["message-list", "name=HA_HOST_WAS_FENCED", "params=obj-uuid"])
            .is_some_and(|l| l.split(',').any(|u| u == host1))
    };
    assert!(wait_for(FAILOVER, fenced), "no HA_HOST_WAS_FENCED for host1");
    // `xapid lab status` names one master, not the fenced former one too.
    let text = lab.status();
    assert_eq!(text.lines().filter(|l| l.ends_with(" master")).count(), 1, "{text}");
}

#[test]
fn a_lab_restarts_with_a_host_whose_cable_is_out() {
    // Issue 28: `xapid lab --dir` gave up after 20 s when a host did not
    // answer, and stopped every host. It now comes up without that host,
    // which joins once its cable is back. And the pool's liveset forms
    // without it (rule Q): before, no host went online, and the protected
    // VM it ran stayed down until the cable was back.
    let mut lab = ha_lab(3, 1);
    let vm = lab.xe_min(&["vm-list", "name-label=vm01", "params=uuid"]);
    lab.xe_ok(&["vm-param-set", &format!("uuid={vm}"), "ha-restart-priority=restart"]);
    lab.xe_ok(&["vm-start", "vm=vm01", "on=host3"]);
    lab.stop();
    lab.fault("cut-network", "host3");
    lab.restart();
    assert!(
        lab.output().contains("host3 does not answer"),
        "the lab waited for host3:\n{}",
        lab.output()
    );
    // xe asking the cut-off host itself says what XAPI's xe says, not
    // what the empty answer failed to parse as.
    let r = lab.xe_on(3, &["host-list"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("Unable to contact server"), "{}", r.stderr);
    // Hosts 1 and 2 form the liveset after the boot limit; the master
    // declares host3 dead and restarts the VM on one of them.
    let elsewhere = || crate::util::running_on(&lab, &vm).is_some_and(|h| h != "host3");
    assert!(
        wait_for(2 * FAILOVER, elsewhere),
        "the protected VM did not restart away from the cut-off host3:
{}",
        lab.post_mortem()
    );
    assert_eq!(live(&lab, 1, "host3"), Some(false));
    lab.fault("restore-network", "host3");
    let all_live = || {
        ["host1", "host2", "host3"]
            .iter()
            .all(|h| live(&lab, 1, h) == Some(true))
    };
    assert!(
        wait_for(3 * FAILOVER, all_live),
        "the pool did not come back whole:\n{}",
        lab.output()
    );
    assert_eq!(
        crate::util::host_field(&lab, "host3", "resident-vms"),
        "",
        "host3 came back with VMs"
    );
    crate::util::assert_one_writer_at_a_time(&lab.sr_dir(), &vm);
}

/// With HA on, a commit lands in the metadata file on the heartbeat SR
/// before the master answers: a write the file cannot take fails and
/// changes nothing, so no acknowledged write can be lost by a failover.
#[test]
fn a_write_the_heartbeat_sr_cannot_take_fails_and_changes_nothing() {
    let lab = ha_lab(3, 1);
    let vm = lab.xe_min(&["vm-list", "name-label=vm01", "params=uuid"]);
    let describe = |text: &str| {
        lab.xe(&[
            "vm-param-set",
            &format!("uuid={vm}"),
            &format!("name-description={text}"),
        ])
    };
    let read = || lab.xe_min(&["vm-param-get", &format!("uuid={vm}"), "param-name=name-description"]);
    assert_eq!(describe("before the cut").code, 0);

    lab.fault("cut-storage", "host1");
    // The host reads its lab switches a few times a second.
    std::thread::sleep(Duration::from_secs(1));
    let r = describe("during the cut");
    assert_ne!(r.code, 0, "a write the heartbeat SR could not take was acknowledged");
    assert!(r.stderr.contains("lost access to the HA statefile"), "{}", r.stderr);
    let after = read();
    assert_eq!(after, "before the cut", "a refused write changed the database");

    // Back: writes land again (once HA confirms the master anew).
    lab.fault("restore-storage", "host1");
    let mut last = None;
    let written = wait_for(FAILOVER, || {
        let r = describe("after the cut");
        let ok = r.code == 0;
        last = Some(r);
        ok
    });
    assert!(
        written,
        "no write after the storage came back: {last:?}\n{}",
        lab.output()
    );
    let on_member = lab.xe_on(
        2,
        &[
            "vm-param-get",
            &format!("uuid={vm}"),
            "param-name=name-description",
            "--minimal",
        ],
    );
    assert_eq!(on_member.stdout.trim(), "after the cut");
}

/// A check of a JSON value's type.
type TypeCheck = dyn Fn(&serde_json::Value) -> bool;

/// `xe pool-ha-status` after a power pull (issue 22): the dead host out of
/// the liveset and not heard, why it was declared dead, the protected VM
/// and where it went; the JSON form has every field with its type.
#[test]
fn pool_ha_status_shows_a_power_pull_and_where_the_vm_went() {
    let lab = ha_lab(3, 1);
    let vm = vm_uuid(&lab, "vm01");
    lab.xe_ok(&["vm-param-set", &format!("uuid={vm}"), "ha-restart-priority=restart"]);
    lab.xe_ok(&["vm-start", "vm=vm01", "on=host2"]);
    lab.fault("power-off", "host2");
    assert!(wait_for(FAILOVER, || running_on(&lab, &vm).is_some_and(|h| h != "host2")));
    let home = running_on(&lab, &vm).unwrap();

    let json = |lab: &Lab| -> serde_json::Value {
        serde_json::from_str(&lab.xe_ok(&["pool-ha-status", "--format", "json"])).unwrap()
    };
    assert!(wait_for(Duration::from_secs(10), || json(&lab)["recent"]
        .as_array()
        .is_some_and(|r| r
            .iter()
            .any(|m| m["name"] == "HA_HOST_FAILED" && m["host"] == "host2"))));
    let s = json(&lab);
    // The schema: every field, with its type.
    use serde_json::Value;
    let is_str = |v: &Value| v.is_string();
    let is_bool = |v: &Value| v.is_boolean();
    let is_int = |v: &Value| v.is_i64();
    let str_or_null = |v: &Value| v.is_string() || v.is_null();
    let int_or_null = |v: &Value| v.is_i64() || v.is_null();
    let check = |v: &Value, fields: &[(&str, &TypeCheck)]| {
        let object = v.as_object().unwrap_or_else(|| panic!("not an object: {v}"));
        for (name, ok) in fields {
            assert!(object.get(*name).is_some_and(ok), "{name} in {v}");
        }
        assert_eq!(object.len(), fields.len(), "unexpected fields in {v}");
    };
    check(
        &s,
        &[
            ("answered_by", &|v| v.is_object()),
            ("ha_enabled", &is_bool),
            ("timeout_s", &int_or_null),
            ("master", &str_or_null),
            ("agent", &|v| v.is_object()),
            ("liveset", &|v| {
                v.as_array().is_some_and(|a| a.iter().all(Value::is_string))
            }),
            ("failures_to_tolerate", &is_int),
            ("plan_exists_for", &is_int),
            ("overcommitted", &is_bool),
            ("allow_overcommit", &is_bool),
            ("hosts", &|v| v.is_array()),
            ("protected_vms", &|v| v.is_array()),
            ("recent", &|v| v.is_array()),
        ],
    );
    check(
        &s["answered_by"],
        &[
            ("uuid", &is_str),
            ("name", &is_str),
            ("role", &|v| v == "master" || v == "member"),
            ("view", &|v| v == "pool" || v == "local"),
            ("emergency", &str_or_null),
        ],
    );
    check(
        &s["agent"],
        &[
            ("status", &|v| {
                ["off", "starting", "online", "fenced", "stopped"]
                    .iter()
                    .any(|s| v == s)
            }),
            ("stopped_because", &str_or_null),
            ("phase", &is_str),
            ("lock_holder", &str_or_null),
            ("master_confirmed", &is_bool),
            ("statefile_access", &is_bool),
            ("storage_lost", &is_bool),
            ("rule2", &is_bool),
            ("refused_packets", &is_int),
        ],
    );
    for h in s["hosts"].as_array().unwrap() {
        check(
            h,
            &[
                ("uuid", &is_str),
                ("name", &is_str),
                ("address", &is_str),
                ("live", &is_bool),
                ("enabled", &is_bool),
                ("in_liveset", &is_bool),
                ("heard", &is_bool),
                ("on_statefile", &is_bool),
                ("heartbeat_age_ms", &int_or_null),
                ("slot_age_ms", &int_or_null),
                ("maintenance", &is_bool),
            ],
        );
    }
    for v in s["protected_vms"].as_array().unwrap() {
        check(
            v,
            &[
                ("uuid", &is_str),
                ("name", &is_str),
                ("priority", &is_str),
                ("order", &is_int),
                ("power_state", &is_str),
                ("runs_on", &str_or_null),
                ("restart_on", &str_or_null),
            ],
        );
    }
    for m in s["recent"].as_array().unwrap() {
        check(
            m,
            &[
                ("time", &is_str),
                ("name", &is_str),
                ("host", &str_or_null),
                ("body", &is_str),
            ],
        );
    }

    // What happened, in it: host2 out of the liveset, not live, not heard
    // for longer than T; the VM running on its new host.
    assert_eq!(s["answered_by"]["view"], "pool");
    assert!(!s["liveset"].as_array().unwrap().iter().any(|h| h == "host2"), "{s}");
    let host2 = s["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == "host2")
        .unwrap()
        .clone();
    assert_eq!(
        (
            host2["live"].clone(),
            host2["in_liveset"].clone(),
            host2["heard"].clone()
        ),
        (false.into(), false.into(), false.into())
    );
    assert!(host2["heartbeat_age_ms"].as_u64().unwrap() > T * 1000, "{host2}");
    let vm01 = &s["protected_vms"][0];
    assert_eq!(
        (vm01["name"].as_str(), vm01["runs_on"].as_str()),
        (Some("vm01"), Some(home.as_str()))
    );
    // And on one screen for a person.
    let text = lab.xe_ok(&["pool-ha-status"]);
    assert!(text.contains("HA: enabled"), "{text}");
    assert!(text.contains("HA_HOST_FAILED host2: Host host2"), "{text}");
    assert!(text.lines().any(|l| l.contains("vm01") && l.contains(&home)), "{text}");
    // A member answers with its own view.
    // The one member left is host3 (host1 is the master, host2 is off).
    let member = 3;
    let r = lab.xe_on(member, &["pool-ha-status", "--format", "json"]);
    let mine: serde_json::Value = serde_json::from_str(&r.stdout).unwrap_or_else(|_| panic!("{r:?}"));
    let expected = ("member", "local");
    assert_eq!(
        (
            mine["answered_by"]["role"].as_str(),
            mine["answered_by"]["view"].as_str()
        ),
        (Some(expected.0), Some(expected.1))
    );
    // What the master's /metrics says of it, as a Prometheus server from
    // Debian's packages scrapes it (skipped with the reason without one).
    the_master_metrics_after_a_power_pull(&lab);
}

/// A real Prometheus server scrapes the master (host1) of `lab` after a
/// power pull whose protected VM was restarted: the scrape is healthy, and
/// the HA agent's and restart executor's timings show the round and the
/// restart. `promtool check metrics` parses the same text.
fn the_master_metrics_after_a_power_pull(lab: &Lab) {
    use crate::util::installed;
    let password = crate::util::PASSWORD;
    let (status, body) = scrape(lab, 1, Some(&format!("root:{password}")));
    assert_eq!(status, 200, "{body}");
    for prefix in [
        "pool_ha_statefile_cycle_seconds_count ",
        "pool_ha_fault_handler_rounds_total ",
        "pool_ha_restart_latency_seconds_count ",
        "pool_ha_planning_seconds_count ",
    ] {
        let value: f64 = body
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} in\n{body}"));
        assert!(value >= 1.0, "{prefix}{value}");
    }
    assert!(body.lines().any(|l| l == "pool_ha_restart_queue 0"), "{body}");
    // A power pull fences nobody: no host has a fence to report.
    assert!(
        body.lines()
            .any(|l| l == "pool_ha_recorded_fences{code=\"SM_SURVIVALRULE_FAILED\"} 0"),
        "{body}"
    );
    if installed("promtool") {
        // Exit 3 is lint advice (OpenMetrics puts a counter's HELP on its
        // family name, which promtool's text-format lint looks for on
        // `_total`); 1 would be text it cannot parse.
        let mut child = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            matches!(out.status.code(), Some(0 | 3)),
            "promtool: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    if !installed("prometheus") {
        eprintln!("skipped the Prometheus scrape: no prometheus (Debian's package; .ci/run installs it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = crate::util::free_port();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: pool-ha\n    basic_auth:\n      username: root\n      password: '{password}'\n    static_configs:\n      - targets: ['{}:{}']\n",
            lab.host_address(1),
            lab.port
        ),
    )
    .unwrap();
    let mut server = std::process::Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let query = |q: &str| -> String {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
            return String::new();
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = write!(
            s,
            "GET /api/v1/query?query={q} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        );
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        text
    };
    // Up, and the samples are Prometheus's to query.
    let scraped = wait_for(Duration::from_secs(30), || {
        query("up").contains("\"value\":[")
            && query("up").contains(",\"1\"]")
            && query("pool_ha_restart_latency_seconds_count").contains("\"value\":[")
    });
    let up = query("up");
    let latency = query("pool_ha_restart_latency_seconds_count");
    let _ = server.kill();
    let _ = server.wait();
    assert!(
        scraped,
        "Prometheus did not scrape the master: up = {up}, latency = {latency}"
    );
}

/// `GET /metrics` (issue 22): refused without credentials, served to a
/// pool user over HTTP Basic, open to anyone only when the pool says so;
/// it shows HA's state as the host sees it and the API's calls.
#[test]
fn metrics_are_served_to_pool_users_and_show_ha() {
    let lab = ha_lab(2, 1);
    let (status, _) = scrape(&lab, 1, None);
    assert_eq!(status, 401);
    let (status, _) = scrape(&lab, 1, Some("root:wrong"));
    assert_eq!(status, 401);
    lab.xe_ok(&["vm-list"]);
    let (status, body) = scrape(&lab, 1, Some(&format!("root:{}", crate::util::PASSWORD)));
    assert_eq!(status, 200, "{body}");
    for line in [
        "pool_ha_enabled 1",
        "pool_ha_master 1",
        "pool_ha_liveset_hosts 2",
        "pool_ha_statefile_access 1",
        "pool_ha_protected_vms{state=\"down\"} 0",
    ] {
        assert!(body.lines().any(|l| l == line), "{line} in\n{body}");
    }
    assert!(
        body.contains(&format!(
            "pool_ha_peer_heartbeat_age_seconds{{host_uuid=\"{}\"}}",
            lab.xe_min(&["host-list", "name-label=host2"])
        )),
        "{body}"
    );
    assert!(
        body.lines()
            .any(|l| l.starts_with("pool_ha_api_calls_total{method=\"VM.get_all_records\"}")),
        "{body}"
    );
    // A failed call, counted by its code.
    let master = lab.xe_min(&["host-list", "name-label=host1"]);
    assert_ne!(lab.xe(&["host-forget", &format!("uuid={master}"), "--force"]).code, 0);
    let (_, body) = scrape(&lab, 1, Some(&format!("root:{}", crate::util::PASSWORD)));
    assert!(
        body.lines()
            .any(|l| l.starts_with("pool_ha_api_errors_total{method=\"host.destroy\",code=\"HOST_IS_LIVE\"}")),
        "{body}"
    );
    // A member answers for itself.
    let (status, body) = scrape(&lab, 2, Some(&format!("root:{}", crate::util::PASSWORD)));
    assert_eq!(status, 200, "{body}");
    assert!(body.lines().any(|l| l == "pool_ha_master 0"), "{body}");
    // Opened to anyone by the pool's setting.
    let pool = lab.xe_min(&["pool-list"]);
    lab.xe_ok(&[
        "pool-param-set",
        &format!("uuid={pool}"),
        "other-config:pool-ha-metrics=open",
    ]);
    assert!(wait_for(Duration::from_secs(10), || scrape(&lab, 1, None).0 == 200));
}

/// `event.from(session, classes, token, 0)` on host `i`: its result, or
/// the error's code.
fn event_from(lab: &Lab, i: usize, session: &str, classes: &[&str], token: &str) -> Result<Value, String> {
    let a = lab.call(i, "event.from", json!([session, classes, token, 0]));
    match a.get("result") {
        Some(r) => Ok(r.clone()),
        None => Err(a["error"]["message"].as_str().unwrap_or_default().to_string()),
    }
}

/// Issue 19: a client's `event.from` token across a master failover. The
/// new master holds everything the old one told (its replica, and any
/// later commits from HA's metadata file, written by the same master
/// term), so the token continues there with the change the client had not
/// read yet; a token for a generation the new master never had from the
/// old one (as a commit taken under survival rule 2 and lost with its
/// master would give) gets EVENTS_LOST once the new master has committed
/// past it, not a silent gap (before the token named its master term, that
/// token was answered with the new master's later commits only); the old
/// master's tasks are gone, so a token asking for tasks is lost too.
#[test]
fn an_event_token_continues_on_the_new_master_or_gets_events_lost() {
    let lab = ha_lab(3, 1);
    let vm = vm_uuid(&lab, "vm01");
    let login = |i: usize| {
        let a = lab.call(
            i,
            "session.login_with_password",
            json!(["root", crate::util::PASSWORD, "1.0", "events-test"]),
        );
        a["result"].as_str().map(str::to_string)
    };
    let s1 = login(1).expect("a session on the master");
    let start = event_from(&lab, 1, &s1, &["vm"], "").unwrap();
    let token = start["token"].as_str().unwrap().to_string();

    // A change the client has not read when the master dies.
    lab.xe_ok(&["vm-param-set", &format!("uuid={vm}"), "name-description=not yet read"]);
    // Every member holds it (else the new master starts from the metadata
    // file and the token is lost: right too, but not what this shows), and
    // the pool is quiet.
    let settled = wait_for(Duration::from_secs(30), || {
        let g = generation(&lab, 1);
        g.is_some() && (2..=3).all(|i| generation(&lab, i) == g) && {
            std::thread::sleep(Duration::from_secs(1));
            generation(&lab, 1) == g
        }
    });
    assert!(settled, "the members did not catch up:\n{}", lab.output());

    lab.fault("power-off", "host1");
    let mut new_master = None;
    let elected = wait_for(FAILOVER, || {
        new_master = (2..=3).find_map(|i| login(i).map(|s| (i, s)));
        new_master.is_some()
    });
    assert!(elected, "no new master:\n{}", lab.output());
    let (m, s) = new_master.unwrap();
    // A token the old master would have given after a commit the new one
    // never got from it (the new master holds at most what it has now).
    let handed = generation(&lab, m).unwrap();
    let (_, tasks) = token.split_once(',').unwrap();
    let lost_commits = format!("{:020},{tasks}", handed + 1);

    // The old master's token continues: the unread change, once.
    let next = event_from(&lab, m, &s, &["vm"], &token).expect("the token continues");
    let mine: Vec<&Value> = next["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["obj_uuid"] == json!(vm))
        .collect();
    assert_eq!(mine.len(), 1, "{next}");
    assert_eq!(mine[0]["operation"], "mod");
    assert_eq!(mine[0]["snapshot"]["name_description"], "not yet read");
    // Its tasks' events are gone with the old master.
    assert_eq!(event_from(&lab, m, &s, &["task"], &token).unwrap_err(), "EVENTS_LOST");

    // The new master commits past the generation of the lost commits.
    for i in 0..4 {
        let r = lab.xe_on(
            m,
            &[
                "vm-param-set",
                &format!("uuid={vm}"),
                &format!("name-description=new {i}"),
            ],
        );
        assert_eq!(r.code, 0, "{}", r.stderr);
    }
    assert!(generation(&lab, m).unwrap() > handed + 1);
    assert_eq!(
        event_from(&lab, m, &s, &["vm"], &lost_commits).unwrap_err(),
        "EVENTS_LOST"
    );
    // The continued token goes on with the new master's own changes.
    let after = event_from(&lab, m, &s, &["vm"], next["token"].as_str().unwrap()).unwrap();
    let last = after["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["obj_uuid"] == json!(vm))
        .expect("the new master's change");
    assert_eq!(last["snapshot"]["name_description"], "new 3");
}
