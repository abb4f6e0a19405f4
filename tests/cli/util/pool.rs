//! What tests ask of a running pool: where a VM runs, a host's field,
//! the guests' records on the SR, a cable pulled and healed.

use std::path::Path;
use std::time::{Duration, Instant};

use super::lab::Lab;
use super::FAILOVER;

/// Poll `f` until it is true, for at most `limit`.
pub fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Every guest record of `vm` on the SR, in file order.
pub fn records_of(sr: &Path, vm: &str) -> Vec<pool_master::driver::GuestRecord> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(sr).expect("sr dir").flatten() {
        if entry.path().extension().is_some_and(|e| e == "disk") {
            all.extend(
                pool_master::driver::read_records(&entry.path())
                    .expect("read disk")
                    .into_iter()
                    .filter(|r| r.vm_uuid == vm),
            );
        }
    }
    all
}

/// The split-brain check on a VM's disk: every guest continues the
/// sequence of the one before, so in file order the sequence numbers only
/// increase. A host still writing after another took over breaks that.
pub fn assert_one_writer_at_a_time(sr: &Path, vm: &str) {
    let recs = records_of(sr, vm);
    for w in recs.windows(2) {
        assert!(
            w[1].seq > w[0].seq,
            "two hosts wrote VM {vm}'s disk at once: {:?} then {:?}",
            w[0],
            w[1]
        );
    }
}

/// A VM's uuid by name.
pub fn vm_uuid(lab: &Lab, name: &str) -> String {
    lab.xe_min(&["vm-list", &format!("name-label={name}"), "params=uuid"])
}

/// Where `vm` runs, by host name, asking through any host that answers.
pub fn running_on(lab: &Lab, vm: &str) -> Option<String> {
    let state = lab.xe_any_min(&["vm-list", &format!("uuid={vm}"), "params=power-state"])?;
    if state != "running" {
        return None;
    }
    // Read in two calls: the VM may have been reset to halted in between
    // (no host), which is not "running on a host".
    let host = lab
        .xe_any_min(&["vm-list", &format!("uuid={vm}"), "params=resident-on"])
        .filter(|h| h.len() == 36)?;
    lab.xe_any_min(&["host-list", &format!("uuid={host}"), "params=name-label"])
        .filter(|name| !name.is_empty() && !name.contains(','))
}

/// A field of host `name`, through any host that answers.
pub fn host_field(lab: &Lab, name: &str, field: &str) -> String {
    lab.xe_any_min(&["host-list", &format!("name-label={name}"), &format!("params={field}")])
        .unwrap_or_default()
}

/// Pull `fault` on the host running `vm`; the VM must come back on
/// another host, the faulted host must be declared dead (unless the fault
/// is a storage cut, which it survives), and it must rejoin with no VM
/// once healed.
pub fn pull_and_heal(lab: &Lab, vm: &str, cut: &str, heal: &str) {
    let before = running_on(lab, vm).expect("the VM runs");
    let writes_before = records_of(&lab.sr_dir(), vm).len();
    lab.fault(cut, &before);
    let moved = wait_for(FAILOVER, || running_on(lab, vm).is_some_and(|h| h != before));
    assert!(
        moved,
        "{vm} did not restart away from {before} after {cut}:\n{}",
        lab.output()
    );
    let after = running_on(lab, vm).unwrap();
    // The new host writes the disk.
    let host_uuid = host_field(lab, &after, "uuid");
    assert!(wait_for(Duration::from_secs(5), || {
        let recs = records_of(&lab.sr_dir(), vm);
        recs.len() > writes_before && recs.last().is_some_and(|r| r.host_uuid == host_uuid)
    }));
    assert_one_writer_at_a_time(&lab.sr_dir(), vm);
    // A protected VM restarts as soon as its host's lease lapses, before
    // the liveset drops the host: for a fault the host does not survive,
    // wait until it is declared dead, so that the heal is a rejoin.
    if cut != "cut-storage" {
        let dead = wait_for(FAILOVER, || host_field(lab, &before, "host-metrics-live") == "false");
        assert!(dead, "{before} was not declared dead after {cut}:\n{}", lab.output());
    }
    lab.fault(heal, &before);
    let back = wait_for(FAILOVER, || host_field(lab, &before, "host-metrics-live") == "true");
    assert!(back, "{before} did not rejoin after {heal}");
    let resident = host_field(lab, &before, "resident-vms");
    assert_eq!(resident, "", "{before} came back with VMs");
    assert_one_writer_at_a_time(&lab.sr_dir(), vm);
}

/// Whether host `name` is live (`host-metrics-live`) as the pool reports
/// it through host `via` (a member forwards to the master); `None` when
/// that host does not answer.
pub fn live(lab: &Lab, via: usize, name: &str) -> Option<bool> {
    let r = lab.xe_on(
        via,
        &[
            "host-list",
            &format!("name-label={name}"),
            "params=host-metrics-live",
            "--minimal",
        ],
    );
    (r.code == 0).then(|| r.stdout.trim() == "true")
}

/// `GET /metrics` on the lab's port: the status code and the body.
pub fn scrape(lab: &Lab, i: usize, basic: Option<&str>) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect((lab.host_address(i).as_str(), lab.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = basic.map_or(String::new(), |b| {
        format!("Authorization: Basic {}\r\n", base64(b.as_bytes()))
    });
    write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (
        status,
        text.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default(),
    )
}

/// Standard base64, for an `Authorization` header.
pub fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            out.push(if i <= chunk.len() {
                ABC[(n >> (18 - 6 * i) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    out
}

/// This host's copy of the pool database: its generation, from `/metrics`.
pub fn generation(lab: &Lab, i: usize) -> Option<u64> {
    let (_, body) = scrape(lab, i, Some(&format!("root:{}", crate::util::PASSWORD)));
    body.lines()
        .find_map(|l| l.strip_prefix("pool_ha_database_generation "))
        .and_then(|v| v.trim().parse().ok())
}
