//! Memory accounting: what a VM costs a host, and what a host has left.
//!
//! As XAPI's `Static_max` policy: a VM's footprint is `memory_static_max`
//! plus its overhead, and a host's free memory is
//! `memory_total - host.memory_overhead - Σ footprint(resident VMs)`, floored
//! at zero. The overhead follows XAPI's HVM formula (`memory.ml`): 1 MiB
//! internal + 1 MiB external + shadow memory of `256 × vCPUs + 2 × static_max
//! in MiB` pages, rounded up to MiB, + 38 pages per vCPU.

use xapi_proto::records::{HostRecord, PowerState, VmRecord};
use xapi_proto::ApiError;

use pool_db::model::Txn;

const MIB: i64 = 1 << 20;
const PAGE: i64 = 4096;

/// The memory overhead of a VM with `static_max` bytes and `vcpus` vCPUs.
pub fn vm_overhead(static_max: i64, vcpus: i64) -> i64 {
    let vcpus = vcpus.max(1);
    let static_max_mib = ceil_div(static_max.max(0), MIB);
    let shadow_pages = 256 * vcpus + 2 * static_max_mib;
    let shadow_mib = ceil_div(shadow_pages * PAGE, MIB);
    2 * MIB + shadow_mib * MIB + 38 * vcpus * PAGE
}

/// What the host keeps for itself (as dom0's memory on a XenServer host).
pub const HOST_RESERVE: i64 = 1 << 30;

/// The machine's memory less [`HOST_RESERVE`], from `/proc/meminfo`: what
/// a host running real guests offers to VMs.
pub fn machine_memory_for_guests() -> std::io::Result<i64> {
    let text = std::fs::read_to_string("/proc/meminfo")?;
    let kib = parse_mem_total(&text).ok_or_else(|| std::io::Error::other("/proc/meminfo has no MemTotal line"))?;
    Ok((kib.saturating_mul(1024) - HOST_RESERVE).max(0))
}

/// `MemTotal` in KiB from the text of `/proc/meminfo`.
fn parse_mem_total(meminfo: &str) -> Option<i64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|n| n.trim().parse().ok())
}

fn ceil_div(a: i64, b: i64) -> i64 {
    (a + b - 1) / b
}

/// What a VM occupies on the host it runs on.
pub fn footprint(vm: &VmRecord) -> i64 {
    vm.memory_static_max + vm.memory_overhead
}

/// Check `static_min <= dynamic_min <= dynamic_max <= static_max`, all positive.
pub fn check_vm_constraints(vm: &VmRecord) -> Result<(), ApiError> {
    let violation = |c: &str| ApiError::new("MEMORY_CONSTRAINT_VIOLATION", vec![c.to_string()]);
    if vm.memory_static_max <= 0 {
        return Err(violation("memory_static_max > 0"));
    }
    if vm.memory_static_min > vm.memory_dynamic_min {
        return Err(violation("memory_static_min <= memory_dynamic_min"));
    }
    if vm.memory_dynamic_min > vm.memory_dynamic_max {
        return Err(violation("memory_dynamic_min <= memory_dynamic_max"));
    }
    if vm.memory_dynamic_max > vm.memory_static_max {
        return Err(violation("memory_dynamic_max <= memory_static_max"));
    }
    Ok(())
}

/// The VMs running on `host_ref` in `txn`, and the memory they occupy.
fn residents(txn: &Txn, host_ref: &str) -> (Vec<String>, i64) {
    let mut refs = Vec::new();
    let mut used = 0;
    for (r, vm) in txn.all::<VmRecord>() {
        if vm.resident_on == host_ref && vm.power_state != PowerState::Halted {
            used += footprint(&vm);
            refs.push(r);
        }
    }
    (refs, used)
}

/// A host's free memory, counting the VMs resident on it in `txn`.
pub fn host_free(txn: &Txn, host_ref: &str, host: &HostRecord) -> i64 {
    (host.memory_total - host.memory_overhead - residents(txn, host_ref).1).max(0)
}

/// Recompute `memory_free` and `resident_VMs` of a host after VMs moved.
pub fn refresh_host(txn: &mut Txn, host_ref: &str) {
    let Some(mut host) = txn.get::<HostRecord>(host_ref) else {
        return;
    };
    let (refs, used) = residents(txn, host_ref);
    host.memory_free = (host.memory_total - host.memory_overhead - used).max(0);
    host.resident_vms = refs;
    txn.put(host_ref, host);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_machine_memory_comes_from_meminfo() {
        let text = "MemTotal:       24591268 kB\nMemFree:        1000 kB\n";
        assert_eq!(parse_mem_total(text), Some(24_591_268));
        assert_eq!(parse_mem_total("MemFree: 1 kB\n"), None);
        assert_eq!(parse_mem_total("MemTotal: lots kB\n"), None);
        assert!(machine_memory_for_guests().unwrap() > 0);
    }

    #[test]
    fn overhead_grows_with_memory_and_vcpus() {
        let one_gib = vm_overhead(1 << 30, 1);
        // 2 MiB + shadow (256 + 2048 pages = 9 MiB) + 38 pages.
        assert_eq!(one_gib, 2 * MIB + 9 * MIB + 38 * PAGE);
        assert!(vm_overhead(2 << 30, 1) > one_gib);
        assert!(vm_overhead(1 << 30, 4) > one_gib);
    }

    #[test]
    fn constraints_are_checked_in_order() {
        let mut vm = VmRecord {
            memory_static_min: 1,
            memory_dynamic_min: 2,
            memory_dynamic_max: 3,
            memory_static_max: 4,
            ..Default::default()
        };
        assert!(check_vm_constraints(&vm).is_ok());
        vm.memory_dynamic_max = 5;
        let e = check_vm_constraints(&vm).unwrap_err();
        assert_eq!(e.params, vec!["memory_dynamic_max <= memory_static_max"]);
    }
}
