//! What this host offers to the HA tie-break between partitions of equal
//! size: evidence that its network works beyond itself, and the priority
//! of what it runs (`ha_liveness::TieBreak`).
//!
//! - Network: a host whose cable was pulled sees no carrier on any of its
//!   interfaces (in the lab's network namespaces, the host side of its
//!   veth), or has its lab network switch off. A host that has only the
//!   loopback interface (the loopback lab) counts as linked unless the
//!   switch is off. A pulled host so loses the tie to the side whose link
//!   is up, whatever the UUIDs.
//! - Priority: how many protected VMs (`ha-restart-priority=restart`) run
//!   on this host.

use std::path::Path;

use ha_liveness::TieBreak;
use xapi_proto::records::VmRecord;

use crate::daemon::Daemon;
use crate::faults::Faults;

/// This host's tie-break values now.
pub fn current(d: &Daemon) -> TieBreak {
    TieBreak {
        network: network_evidence(&d.ha().faults, Path::new("/sys/class/net")),
        priority: protected_running(d),
    }
}

/// Some interface other than loopback has carrier (or there is none but
/// loopback), and the lab's network switch is on.
fn network_evidence(faults: &Faults, sys_class_net: &Path) -> bool {
    if faults.network_cut() {
        return false;
    }
    link_up(sys_class_net)
}

/// Reads `<dir>/<iface>/carrier` for every interface but `lo`. Unreadable
/// entries count as up: only a positive "no carrier" loses the tie.
fn link_up(sys_class_net: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(sys_class_net) else {
        return true;
    };
    let mut any = false;
    for e in entries.flatten() {
        if e.file_name() == "lo" {
            continue;
        }
        any = true;
        match std::fs::read_to_string(e.path().join("carrier")) {
            Ok(c) if c.trim() == "0" => {}
            _ => return true,
        }
    }
    !any
}

fn protected_running(d: &Daemon) -> u32 {
    let running = d.driver().running();
    let m = d.model();
    let n =
        m.vm.iter()
            .filter(|(_, v): &(_, &VmRecord)| v.ha_restart_priority == "restart" && running.contains(&v.uuid))
            .count();
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(dir: &Path, name: &str, carrier: Option<&str>) {
        let p = dir.join(name);
        std::fs::create_dir_all(&p).unwrap();
        if let Some(c) = carrier {
            std::fs::write(p.join("carrier"), c).unwrap();
        }
    }

    #[test]
    fn carrier_decides_and_loopback_alone_counts_as_linked() {
        let dir = tempfile::tempdir().unwrap();
        iface(dir.path(), "lo", Some("1\n"));
        assert!(link_up(dir.path()), "loopback only: linked");
        iface(dir.path(), "eth0", Some("0\n"));
        assert!(!link_up(dir.path()), "the one cable pulled");
        iface(dir.path(), "eth1", Some("1\n"));
        assert!(link_up(dir.path()), "another link is up");
        let none = dir.path().join("missing");
        assert!(link_up(&none), "no sysfs: no evidence against the link");
    }

    #[test]
    fn the_lab_switch_off_is_no_network() {
        let dir = tempfile::tempdir().unwrap();
        let faults = Faults::new(dir.path());
        let sys = dir.path().join("sys");
        assert!(network_evidence(&faults, &sys));
        crate::faults::set(dir.path(), crate::faults::Fault::Network, true).unwrap();
        std::thread::sleep(crate::faults::REFRESH + std::time::Duration::from_millis(10));
        assert!(!network_evidence(&faults, &sys));
    }
}
