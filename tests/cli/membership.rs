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
