//! The pool secret (issue 21): in a 0600 file of its own outside the pool
//! database, moved there from an older install's database host by host
//! while the pool runs; rotated with HA on without a refused heartbeat.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use serde_json::json;

use crate::util::{live, wait_for, Lab, PASSWORD};

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

/// Heartbeats host `i`'s HA agent refused so far (`GET /metrics`).
fn refused_heartbeats(lab: &Lab, i: usize) -> u64 {
    let (status, body) = crate::util::scrape(lab, i, Some(&format!("root:{PASSWORD}")));
    assert_eq!(status, 200, "{body}");
    body.lines()
        .find_map(|l| l.strip_prefix("pool_ha_refused_heartbeats_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no refused-heartbeat count in\n{body}"))
}

/// `session.slave_login` on host `i` as host `uuid` with `secret`: the
/// error code, or `None` when it is accepted.
fn slave_login(lab: &Lab, i: usize, uuid: &str, secret: &str) -> Option<String> {
    let answer = lab.call(i, "session.slave_login", json!([uuid, secret]));
    match answer["result"].as_str() {
        Some(_) => None,
        None => Some(answer["error"]["message"].as_str().unwrap_or("no answer").to_string()),
    }
}

/// `xe pool-secret-rotate` with HA on: every host gets the new secret in a
/// 0600 file, no heartbeat is refused and no host fences, calls between
/// hosts go on, and afterwards the old secret opens no session anywhere.
#[test]
fn a_rotation_with_ha_on_fences_nobody_and_retires_the_old_secret() {
    let lab = Lab::start_ha(3, 1, &[]);
    let hosts = 3;
    let (old, _) = secret_file(&lab, 1);
    let uuid2 = lab.xe_min(&["host-list", "name-label=host2", "params=uuid"]);
    lab.xe_ok(&["vm-start", "vm=vm01", "on=host2"]);
    let refused: Vec<u64> = (1..=hosts).map(|i| refused_heartbeats(&lab, i)).collect();
    // A sealed setting (the webhook's key) is sealed again under the new
    // secret, else no host could open it after the rotation.
    let pool = lab.xe_min(&["pool-list"]);
    lab.xe_ok(&[
        "pool-param-set",
        &format!("uuid={pool}"),
        "other-config:pool-ha-webhook-secret=s3cret-key",
    ]);
    let sealed = |lab: &Lab| {
        lab.xe_ok(&[
            "pool-param-get",
            &format!("uuid={pool}"),
            "param-name=other-config",
            "param-key=pool-ha-webhook-secret",
        ])
        .trim()
        .to_string()
    };
    assert_eq!(
        pool_master::secrets::open(&old, "pool-ha-webhook-secret", &sealed(&lab)).as_deref(),
        Ok("s3cret-key")
    );

    let r = lab.xe(&["pool-secret-rotate"]);
    assert_eq!(
        (r.code, r.stdout.as_str(), r.stderr.as_str()),
        (0, "", ""),
        "{}",
        lab.post_mortem()
    );

    let (new, _) = secret_file(&lab, 1);
    assert_ne!(new, old);
    assert_eq!(
        pool_master::secrets::open(&new, "pool-ha-webhook-secret", &sealed(&lab)).as_deref(),
        Ok("s3cret-key"),
        "the webhook key is not sealed under the new secret"
    );
    for i in 1..=hosts {
        assert_eq!(secret_file(&lab, i), (new.clone(), 0o600), "host{i}");
        assert!(!lab.host_data_dir(i).join("pool-secret.rotation").exists(), "host{i}");
    }
    // HA saw nothing: a few more heartbeat periods, all hosts in, none
    // down, no heartbeat refused.
    std::thread::sleep(Duration::from_secs(2 * crate::util::HA_T));
    for i in 1..=hosts {
        assert_eq!(
            refused_heartbeats(&lab, i),
            refused[i - 1],
            "host{i} refused heartbeats"
        );
        assert_eq!(live(&lab, 1, &format!("host{i}")), Some(true), "host{i}");
        assert_eq!(
            lab.downs(&format!("host{i}")),
            0,
            "host{i} went down:\n{}",
            lab.output()
        );
    }
    // Calls between hosts: the master stops the guest on host2, starts
    // it on host3, migrates it back.
    lab.xe_ok(&["vm-shutdown", "vm=vm01"]);
    lab.xe_ok(&["vm-start", "vm=vm01", "on=host3"]);
    lab.xe_ok(&["vm-migrate", "vm=vm01", "host=host2"]);
    // Only the new secret opens a host-to-host session, on every host.
    for i in 1..=hosts {
        assert_eq!(
            slave_login(&lab, i, &uuid2, &old).as_deref(),
            Some("SESSION_AUTHENTICATION_FAILED"),
            "host{i} took the old secret"
        );
        assert_eq!(
            slave_login(&lab, i, &uuid2, &new),
            None,
            "host{i} refused the new secret"
        );
    }
    let log = std::fs::read_to_string(lab.host_data_dir(1).join("xapid.log")).unwrap_or_default();
    assert!(
        !log.contains(&new) && !log.contains(&old),
        "the master's log shows a secret"
    );
}
