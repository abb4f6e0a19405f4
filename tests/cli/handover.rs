//! `xe pool-designate-new-master` (issue 21): the master role moved to a
//! live member by hand, without HA and with HA on, the database whole,
//! nobody fenced, the old master a member that redirects clients.

use std::time::Duration;

use serde_json::json;

use crate::util::{live, wait_for, Lab, HA_T, PASSWORD};

fn uuid(lab: &Lab, name: &str) -> String {
    lab.xe_min(&["host-list", &format!("name-label={name}"), "params=uuid"])
}

/// What a client that logs in to host `i` is told: `HOST_IS_SLAVE` and the
/// master's address, or `None` when host `i` serves it.
fn redirect(lab: &Lab, i: usize) -> Option<String> {
    let answer = lab.call(i, "session.login_with_password", json!(["root", PASSWORD]));
    (answer["error"]["message"] == "HOST_IS_SLAVE")
        .then(|| answer["error"]["data"][0].as_str().unwrap_or("").to_string())
}

/// The pool's objects, as a sorted list of uuids per class: what must
/// come through a move of the master whole.
fn contents(lab: &Lab) -> Vec<String> {
    ["host-list", "vm-list", "sr-list", "pbd-list", "pool-list"]
        .iter()
        .map(|c| {
            let mut v: Vec<String> = lab.xe_min(&[c, "params=uuid"]).split(',').map(str::to_string).collect();
            v.sort();
            v.join(",")
        })
        .collect()
}

#[test]
fn the_master_role_moves_to_a_member_and_the_old_master_follows() {
    let lab = Lab::start(3, 1);
    lab.xe_ok(&["vm-start", "vm=vm01", "on=host3"]);
    let before = contents(&lab);
    let host2 = uuid(&lab, "host2");
    let r = lab.xe(&["pool-designate-new-master", &format!("host-uuid={host2}")]);
    assert_eq!(
        (r.code, r.stdout.as_str(), r.stderr.as_str()),
        (0, "", ""),
        "{}",
        lab.post_mortem()
    );
    // The old master redirects clients to the new one, which serves.
    assert_eq!(redirect(&lab, 1), Some(lab.host_address(2)));
    assert_eq!(redirect(&lab, 2), None);
    assert_eq!(lab.xe_min(&["pool-list", "params=master"]), host2);
    assert_eq!(contents(&lab), before, "the database changed in the move");
    assert_eq!(
        lab.xe_min(&["vm-list", "name-label=vm01", "params=resident-on"]),
        uuid(&lab, "host3")
    );
    // Every host follows it: the new master drives guests on the old one
    // and on the other member, and sees both live.
    lab.xe_ok(&["vm-shutdown", "vm=vm01"]);
    lab.xe_ok(&["vm-start", "vm=vm01", "on=host1"]);
    lab.xe_ok(&["vm-migrate", "vm=vm01", "host=host3"]);
    assert!(
        wait_for(Duration::from_secs(30), || live(&lab, 2, "host1") == Some(true)
            && live(&lab, 2, "host3") == Some(true)),
        "{}",
        lab.post_mortem()
    );
    // Naming the master itself does nothing; an unknown host is refused.
    lab.xe_ok(&["pool-designate-new-master", &format!("host-uuid={host2}")]);
    let r = lab.xe(&[
        "pool-designate-new-master",
        "host-uuid=00000000-0000-4000-8000-000000000000",
    ]);
    assert_ne!(r.code, 0);
    assert_eq!(redirect(&lab, 3), Some(lab.host_address(2)));
}

/// With HA on the master lock changes hands: the new master serves, no
/// host leaves the liveset or fences, HA stays on. And `pool-eject` is
/// refused while HA is on (XAPI's `HA_IS_ENABLED`).
#[test]
fn with_ha_on_the_master_moves_without_a_fence() {
    let lab = Lab::start_ha(3, 1, &[]);
    let host2 = uuid(&lab, "host2");
    let r = lab.xe(&["pool-eject", &format!("host-uuid={host2}"), "--force"]);
    assert!(r.code != 0 && r.stderr.contains("HA is enabled"), "{r:?}");
    lab.xe_ok(&["vm-start", "vm=vm01", "on=host3"]);
    let before = contents(&lab);

    let r = lab.xe(&["pool-designate-new-master", &format!("host-uuid={host2}")]);
    assert_eq!((r.code, r.stderr.as_str()), (0, ""), "{}", lab.post_mortem());
    assert_eq!(redirect(&lab, 1), Some(lab.host_address(2)));
    assert_eq!(lab.xe_min(&["pool-list", "params=master"]), host2);
    assert_eq!(lab.xe_min(&["pool-list", "params=ha-enabled"]), "true");
    assert_eq!(contents(&lab), before, "the database changed in the move");
    // The new master writes, and drives guests on the old master.
    lab.xe_ok(&["vm-shutdown", "vm=vm01"]);
    lab.xe_ok(&["vm-start", "vm=vm01", "on=host1"]);
    // A while later: every host live, none went down.
    std::thread::sleep(Duration::from_secs(2 * HA_T));
    for i in 1..=3 {
        let name = format!("host{i}");
        assert_eq!(live(&lab, 2, &name), Some(true), "{name}");
        assert_eq!(lab.downs(&name), 0, "{name} went down:\n{}", lab.output());
    }
    assert_eq!(
        lab.xe_min(&["vm-list", "name-label=vm01", "params=power-state"]),
        "running"
    );
}
