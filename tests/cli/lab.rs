//! A new user's first minutes: the lab is up, xe sees three hosts.

use crate::util::Lab;

#[test]
fn the_lab_brings_up_three_hosts_in_one_pool() {
    let lab = Lab::start(3, 2);
    let hosts = lab.xe_min(&["host-list"]);
    assert_eq!(hosts.split(',').count(), 3, "host-list --minimal: {hosts}");
    assert!(hosts.split(',').all(|u| u.len() == 36), "uuids: {hosts}");

    // The pool's master is host1, and its default SR is the shared one.
    let master = lab.xe_min(&["pool-list", "params=master"]);
    let host1 = lab.xe_min(&["host-list", "name-label=host1"]);
    assert_eq!(master, host1);
    let shared = lab.xe_min(&["sr-list", "shared=true"]);
    assert_eq!(lab.xe_min(&["pool-list", "params=default-SR"]), shared);
    let listing = lab.xe_ok(&["sr-list", &format!("uuid={shared}")]);
    assert!(listing.contains("                host ( RO): <shared>\n"), "{listing}");

    // Two VMs, halted, in xe's record format.
    let vms = lab.xe_ok(&["vm-list"]);
    assert_eq!(vms.matches("    power-state ( RO): halted\n").count(), 2, "{vms}");
    assert!(vms.starts_with("uuid ( RO)           : "), "{vms}");
    assert!(vms.ends_with("\n\n\n"));

    // Every host is live and has the memory it was given.
    let live = lab.xe_min(&["host-list", "host-metrics-live=true"]);
    assert_eq!(live.split(',').count(), 3);
    let total = lab.xe_min(&["host-param-get", &format!("uuid={host1}"), "param-name=memory-total"]);
    assert_eq!(total, (8i64 << 30).to_string());

    // What holds a secret is root's alone: each host's data directory,
    // database and certificate key, and the lab's files with the password.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    for i in 1..=3 {
        let data = lab.host_data_dir(i);
        assert_eq!(mode(&data), 0o700, "{}", data.display());
        for name in ["pool.db", "xapi-ssl.pem"] {
            assert_eq!(mode(&data.join(name)), 0o600, "{name} of host{i}");
        }
    }
    for name in ["root-password", "env", "lab.json"] {
        assert_eq!(mode(&lab.dir.path().join(name)), 0o600, "{name}");
    }

    // The lab prints the exact line that points xe at it (the README's
    // tour says to paste it; a glob over /tmp once picked whichever lab
    // sorted last), and that line works as printed.
    let printed = std::fs::read_to_string(lab.dir.path().join("lab.out")).unwrap();
    let export = printed
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("export $(cat "))
        .unwrap_or_else(|| panic!("no export line: {printed}"));
    assert_eq!(
        export,
        format!("export $(cat {})", lab.dir.path().join("env").display()),
        "{printed}"
    );
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!("{export} && xe host-list --minimal"))
        .env(
            "PATH",
            format!(
                "{}:{}",
                crate::util::xe_bin().parent().unwrap().display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env("HOME", lab.dir.path())
        .env_remove("XE_EXTRA_ARGS")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), hosts, "{out:?}");
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    assert!(
        readme.contains("export $(cat /tmp/pool-ha-lab-") && !readme.contains("pool-ha-lab-*"),
        "the README's tour uses the path the lab printed, not a glob"
    );
}

#[test]
fn lab_status_lists_hosts_and_roles() {
    let lab = Lab::start(2, 0);
    let text = lab.status();
    assert!(text.contains("host1") && text.contains("host2"), "{text}");
    assert_eq!(text.matches("running").count(), 2, "{text}");
    assert!(text.contains("master"), "{text}");
    assert!(text.contains(&format!("member of {}", lab.master())), "{text}");
}

#[test]
fn xe_pointed_at_a_member_follows_it_to_the_master() {
    let lab = Lab::start(2, 1);
    let extra = format!(
        "server={},port={},username=root,password={}",
        lab.host_address(2),
        lab.port,
        crate::util::PASSWORD
    );
    let r = crate::util::run_xe(&["vm-list", "--minimal"], &[("XE_EXTRA_ARGS", &extra)], lab.dir.path());
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout.trim_end(), lab.xe_min(&["vm-list"]));
    // Writes through a member land on the master.
    let vm = lab.xe_min(&["vm-list"]);
    let r = crate::util::run_xe(
        &["vm-param-set", &format!("uuid={vm}"), "name-label=renamed"],
        &[("XE_EXTRA_ARGS", &extra)],
        lab.dir.path(),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(lab.xe_min(&["vm-list", "params=name-label"]), "renamed");
    // The pool has no alerts yet; message-list prints nothing and succeeds.
    assert_eq!(lab.xe_ok(&["message-list"]), "");
}
