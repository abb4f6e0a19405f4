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

/// This host's tie-break values now.
pub fn current(d: &Daemon) -> TieBreak {
    TieBreak {
        network: d.io().link_up(Path::new("/sys/class/net")),
        priority: protected_running(d),
    }
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
