//! The HA failover planner: how many host failures a pool tolerates, and
//! where each protected VM restarts.
//!
//! Pure by design: no I/O, no clock, no async runtime, deterministic. The
//! pool master hands it a description of hosts and protected VMs and acts on
//! the answer. The planning algorithms arrive with the planner work; this
//! crate holds the input model they share.

/// A host as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub uuid: String,
    /// Memory available to protected VMs, in bytes.
    pub memory_free: i64,
}

/// A protected VM as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vm {
    pub uuid: String,
    /// Memory footprint (static-max plus overhead), in bytes.
    pub memory: i64,
    /// The host it runs on.
    pub resident_on: String,
}

/// Does `vm` fit on `host` by memory alone?
pub fn fits(host: &Host, vm: &Vm) -> bool {
    vm.memory <= host.memory_free
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vm_fits_when_memory_allows() {
        let h = Host {
            uuid: "h".into(),
            memory_free: 10,
        };
        assert!(fits(
            &h,
            &Vm {
                uuid: "v".into(),
                memory: 10,
                resident_on: "x".into()
            }
        ));
        assert!(!fits(
            &h,
            &Vm {
                uuid: "v".into(),
                memory: 11,
                resident_on: "x".into()
            }
        ));
    }
}
