//! The pool secret (issue 21): in a 0600 file of its own outside the pool
//! database, moved there from an older install's database host by host
//! while the pool runs.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use crate::util::{live, wait_for, Lab};

/// Host `i`'s pool secret file: its text and its mode.
fn secret_file(lab: &Lab, i: usize) -> (String, u32) {
    let path = lab.host_data_dir(i).join("pool-secret");
    let text = std::fs::read_to_string(&path).expect("the pool secret file");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    (text.trim_end().to_string(), mode)
}

/// The pool secret host `i`'s database holds (an older install's place).
fn secret_in_database(lab: &Lab, i: usize) -> Option<String> {
    let store = pool_db::store::Store::open(&lab.host_data_dir(i).join("pool.db")).unwrap();
    store.local("pool_secret").unwrap()
}

/// Power host `i` off, give it the layout of an older install (the secret
/// in its database, no file), and power it on again.
fn downgrade_and_restart(lab: &Lab, i: usize) {
    let name = format!("host{i}");
    lab.fault("power-off", &name);
    let (secret, _) = secret_file(lab, i);
    std::fs::remove_file(lab.host_data_dir(i).join("pool-secret")).unwrap();
    let mut store = pool_db::store::Store::open(&lab.host_data_dir(i).join("pool.db")).unwrap();
    store.set_local(&[("pool_secret", &secret)]).unwrap();
    drop(store);
    lab.fault("power-on", &name);
}

#[test]
fn an_old_database_gives_its_secret_to_the_file_host_by_host() {
    let lab = Lab::start(2, 1);
    let (secret, mode) = secret_file(&lab, 1);
    assert_eq!(mode, 0o600);
    assert_eq!(secret_file(&lab, 2).0, secret, "a member learns the secret at join");
    assert_eq!(secret_in_database(&lab, 1), None);

    // A member first: it comes back with the same secret, in its file, and
    // the master reaches it (a VM start on it is a call between hosts).
    downgrade_and_restart(&lab, 2);
    assert!(
        wait_for(Duration::from_secs(30), || live(&lab, 1, "host2") == Some(true)
            && lab.xe(&["vm-start", "vm=vm01", "on=host2"]).code == 0),
        "the member did not come back into the pool:\n{}",
        lab.post_mortem()
    );
    assert_eq!(secret_file(&lab, 2), (secret.clone(), 0o600));
    assert_eq!(secret_in_database(&lab, 2), None);

    // Then the master: the member logs in to it again, and it to the member.
    downgrade_and_restart(&lab, 1);
    assert!(
        wait_for(Duration::from_secs(30), || lab.xe(&["vm-shutdown", "vm=vm01"]).code
            == 0),
        "the master did not come back:\n{}",
        lab.post_mortem()
    );
    assert_eq!(secret_file(&lab, 1), (secret.clone(), 0o600));
    assert_eq!(secret_in_database(&lab, 1), None);
    // The member's own hello reached the new master process.
    assert!(wait_for(Duration::from_secs(30), || live(&lab, 1, "host2") == Some(true)));
    // The secret is nowhere in the logs.
    for i in 1..=2 {
        let log = std::fs::read_to_string(lab.host_data_dir(i).join("xapid.log")).unwrap_or_default();
        assert!(!log.contains(&secret), "host{i}'s log shows the pool secret");
        assert!(
            log.contains("moved the pool secret out of the pool database"),
            "host{i}: {log}"
        );
    }
}
