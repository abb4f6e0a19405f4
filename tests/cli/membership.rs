//! Pool membership (issue 21): a host cannot join a pool with HA on, nor
//! join anything while HA is on in its own pool (XAPI's `HA_IS_ENABLED`),
//! and a refused join changes neither pool.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::util::{run_xe, wait_for, xapid_bin, Lab, PASSWORD};

/// A one-host pool of its own at `address:port`, killed on drop.
struct Standalone {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Standalone {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn standalone(address: &str, port: u16) -> Standalone {
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new(xapid_bin())
        .args([
            "serve",
            "--config",
            "/dev/null",
            "--lab",
            "--name",
            "newhost",
            "--root-password",
            "new-secret",
        ])
        .args(["--address", address, "--port", &port.to_string()])
        .arg("--data-dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        wait_for(Duration::from_secs(20), || std::net::TcpStream::connect((
            address, port
        ))
        .is_ok()),
        "the standalone host did not start"
    );
    Standalone { child, _dir: dir }
}

#[test]
fn a_host_cannot_join_a_pool_with_ha_on() {
    let lab = Lab::start_ha(2, 0, &[]);
    let address = format!("{}.9", lab.subnet);
    let _new = standalone(&address, lab.port);
    let on_new = format!("server={address},port={},username=root,password=new-secret", lab.port);
    let home = tempfile::tempdir().unwrap();
    let r = run_xe(
        &[
            "pool-join",
            &format!("master-address={}", lab.master()),
            "master-username=root",
            &format!("master-password={PASSWORD}"),
            "--no-verify",
        ],
        &[("XE_EXTRA_ARGS", &on_new)],
        home.path(),
    );
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("HA is enabled"), "{}", r.stderr);
    // Neither pool changed: the lab keeps its two hosts, the new host its
    // own pool of one.
    assert_eq!(lab.xe_min(&["host-list"]).split(',').count(), 2);
    let r = run_xe(
        &["host-list", "--minimal", "--no-verify"],
        &[("XE_EXTRA_ARGS", &on_new)],
        home.path(),
    );
    assert_eq!((r.code, r.stdout.trim().split(',').count()), (0, 1), "{r:?}");
}

/// `xe pool-eject` (issue 21), with XAPI's checks: never the master, not
/// while a VM runs on the host, only `--force` in a script; the ejected
/// host is gone from the pool database and is the master of a new pool of
/// one with its own secret, and can join again.
#[test]
fn an_ejected_host_becomes_a_pool_of_its_own() {
    let lab = Lab::start(2, 1);
    let uuid = |name: &str| lab.xe_min(&["host-list", &format!("name-label={name}"), "params=uuid"]);
    let (master, host2) = (uuid("host1"), uuid("host2"));
    let old_pool = lab.xe_min(&["pool-list", "params=uuid"]);
    let secret = |i: usize| std::fs::read_to_string(lab.host_data_dir(i).join("pool-secret")).unwrap();
    let old_secret = secret(2);

    let r = lab.xe(&["pool-eject", &format!("host-uuid={master}"), "--force"]);
    assert!(
        r.code != 0 && r.stderr.contains("The pool master cannot be ejected"),
        "{r:?}"
    );
    lab.xe_ok(&["vm-start", "vm=vm01", "on=host2"]);
    let r = lab.xe(&["pool-eject", &format!("host-uuid={host2}"), "--force"]);
    assert!(r.code != 0 && r.stderr.contains("VM resident on host"), "{r:?}");
    lab.xe_ok(&["vm-shutdown", "vm=vm01"]);
    let r = lab.xe(&["pool-eject", &format!("host-uuid={host2}")]);
    assert!(r.code != 0 && r.stderr.contains("--force"), "{r:?}");
    assert_eq!(
        lab.xe_min(&["host-list"]).split(',').count(),
        2,
        "a refused eject changed the pool"
    );

    let out = lab.xe_ok(&["pool-eject", &format!("host-uuid={host2}"), "--force"]);
    assert!(out.contains("master of a new pool"), "{out}");
    // The pool: one host, no PBD or local SR of host2's left.
    assert_eq!(lab.xe_min(&["host-list", "params=uuid"]), master);
    assert_eq!(lab.xe_min(&["pbd-list", &format!("host-uuid={host2}")]), "");
    assert_eq!(
        lab.xe_min(&["vm-list", "name-label=vm01", "params=power-state"]),
        "halted"
    );
    // host2: the master of a pool of its own, with a new secret.
    let on2 = |args: &[&str]| {
        let mut a = args.to_vec();
        a.push("--minimal");
        let r = lab.xe_on(2, &a);
        assert_eq!(r.code, 0, "xe {args:?} on host2: {}", r.stderr);
        r.stdout.trim().to_string()
    };
    assert_eq!(on2(&["host-list", "params=uuid"]), host2);
    let new_pool = on2(&["pool-list", "params=uuid"]);
    assert_ne!(new_pool, old_pool);
    assert_eq!(on2(&["pool-list", "params=master"]), host2);
    assert_eq!(on2(&["vm-list", "is-control-domain=false"]), "");
    assert_eq!(on2(&["sr-list", "name-label=Local storage"]).split(',').count(), 1);
    assert_ne!(secret(2), old_secret);
    let mode = std::fs::metadata(lab.host_data_dir(2).join("pool-secret"))
        .unwrap()
        .permissions();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);

    // And it can join the pool again.
    let r = lab.xe_on(
        2,
        &[
            "pool-join",
            &format!("master-address={}", lab.master()),
            "master-username=root",
            &format!("master-password={PASSWORD}"),
        ],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        wait_for(Duration::from_secs(30), || lab
            .xe_min(&["host-list"])
            .split(',')
            .count()
            == 2
            && lab.xe(&["vm-start", "vm=vm01", "on=host2"]).code == 0),
        "the ejected host did not join again:\n{}",
        lab.post_mortem()
    );
    assert_eq!(secret(2), secret(1));
}
