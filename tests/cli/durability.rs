//! Nothing committed is lost: across restarts of every host, and on a member
//! killed while the master commits.

use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use pool_db::store::Store;
use xapi_proto::records::VmRecord;

use crate::util::{wait_for, xapid_bin, Lab};

#[test]
fn settings_survive_a_restart_of_every_xapid() {
    let mut lab = Lab::start(3, 1);
    let vm = lab.xe_min(&["vm-list"]);
    lab.xe_ok(&[
        "vm-param-set",
        &format!("uuid={vm}"),
        "ha-restart-priority=restart",
        "order=1",
    ]);
    lab.restart();
    assert_eq!(
        lab.xe_min(&["vm-param-get", &format!("uuid={vm}"), "param-name=ha-restart-priority"]),
        "restart"
    );
    assert_eq!(
        lab.xe_min(&["vm-param-get", &format!("uuid={vm}"), "param-name=order"]),
        "1"
    );
    assert_eq!(lab.xe_min(&["host-list"]).split(',').count(), 3);
}

/// The `order` of the VM in a host's database file.
fn order_in(db: &std::path::Path, vm_uuid: &str) -> Option<i64> {
    let store = Store::open(db).ok()?;
    assert_eq!(store.integrity_check().ok()?, "ok", "{} is damaged", db.display());
    let model = store.load().ok()?;
    let r = model.vm.ref_of_uuid(vm_uuid)?;
    model.get::<VmRecord>(r).map(|v| v.order)
}

#[test]
fn a_member_killed_during_writes_keeps_a_sound_replica_and_catches_up() {
    let lab = Lab::start(3, 1);
    let vm = lab.xe_min(&["vm-list"]);
    let db = lab.host_data_dir(3).join("pool.db");
    let pid = lab.host_pid(3);
    let mut killed = false;
    for i in 1..=60 {
        lab.xe_ok(&["vm-param-set", &format!("uuid={vm}"), &format!("order={i}")]);
        if i == 30 {
            kill(Pid::from_raw(pid as i32), Signal::SIGKILL).expect("SIGKILL host3");
            killed = true;
        }
    }
    assert!(killed);
    // The killed member's file is readable and holds some committed state.
    let seen = order_in(&db, &vm).expect("host3's database is readable");
    assert!((0..=60).contains(&seen), "order {seen}");
    // Restarted, it catches up to every committed write.
    let mut host3 = Command::new(xapid_bin())
        .arg("serve")
        .arg("--data-dir")
        .arg(lab.host_data_dir(3))
        .args(["--address", &lab.host_address(3), "--port", &lab.port.to_string()])
        // A lab host: its one port takes both, as the lab started it.
        .args(["--lab", "--config", "/dev/null"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("restart host3");
    let caught_up = wait_for(Duration::from_secs(20), || order_in(&db, &vm) == Some(60));
    let _ = kill(Pid::from_raw(host3.id() as i32), Signal::SIGTERM);
    let _ = host3.wait();
    assert!(caught_up, "host3 has order {:?}, the master 60", order_in(&db, &vm));
    assert_eq!(
        lab.xe_min(&["vm-param-get", &format!("uuid={vm}"), "param-name=order"]),
        "60"
    );
}
