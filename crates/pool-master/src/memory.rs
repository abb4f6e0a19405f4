//! Memory accounting: what a VM costs a host, and what a host has left.
//!
//! As XAPI's `Static_max` policy: a VM's footprint is `memory_static_max`
//! plus its overhead, and a host's free memory is
//! `memory_total - host.memory_overhead - Σ footprint(resident VMs)`, floored
//! at zero. The overhead follows XAPI's HVM formula (`memory.ml`): 1 MiB
//! internal + 1 MiB external + shadow memory of `256 × vCPUs + 2 × static_max
//! in MiB` pages, rounded up to MiB, + 38 pages per vCPU.

use xapi_proto::records::{HostRecord, PowerState, VmRecord};
use xapi_proto::{codes, ApiError};

use pool_db::model::Txn;

const MIB: i64 = 1 << 20;
const PAGE: i64 = 4096;

/// The most memory a VM may have: 16 TiB, what Xen on x86-64 addresses
/// without `CONFIG_BIGMEM`. Beyond it a value is refused
/// (`VALUE_NOT_SUPPORTED`), so a footprint, and any sum of footprints a
/// pool of up to 64 hosts could hold, stays far inside `i64`.
pub const MAX_VM_MEMORY: i64 = 1 << 44;

/// The most vCPUs a VM may have: what the qemu driver starts (it clamps
/// to 64). XAPI itself refuses `VCPUs_max < 1` with `INVALID_VALUE` and
/// checks the host's pCPUs at start; hosts here have no pCPU count.
pub const MAX_VCPUS: i64 = 64;

/// The memory overhead of a VM with `static_max` bytes and `vcpus` vCPUs.
/// Saturating: hostile inputs give a huge overhead, never a wrapped one.
pub fn vm_overhead(static_max: i64, vcpus: i64) -> i64 {
    let vcpus = vcpus.max(1);
    let static_max_mib = ceil_div(static_max.max(0), MIB);
    let shadow_pages = vcpus
        .saturating_mul(256)
        .saturating_add(static_max_mib.saturating_mul(2));
    let shadow_mib = ceil_div(shadow_pages.saturating_mul(PAGE), MIB);
    (2 * MIB)
        .saturating_add(shadow_mib.saturating_mul(MIB))
        .saturating_add(vcpus.saturating_mul(38 * PAGE))
}

/// What the host keeps for itself (as dom0's memory on a XenServer host).
pub const HOST_RESERVE: i64 = 1 << 30;

/// The machine's memory less [`HOST_RESERVE`], from `/proc/meminfo`: what
/// a host running real guests offers to VMs.
pub fn machine_memory_for_guests() -> std::io::Result<i64> {
    let text = std::fs::read_to_string("/proc/meminfo")?;
    let kib = parse_mem_total(&text).ok_or_else(|| std::io::Error::other("/proc/meminfo has no MemTotal line"))?;
    Ok(kib.saturating_mul(1024).saturating_sub(HOST_RESERVE).max(0))
}

/// `MemTotal` in KiB from the text of `/proc/meminfo`.
fn parse_mem_total(meminfo: &str) -> Option<i64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|n| n.trim().parse().ok())
}

/// `ceil(a / b)` for `a >= 0`, `b > 0`, without the overflow of `a + b - 1`.
fn ceil_div(a: i64, b: i64) -> i64 {
    a / b + i64::from(a % b != 0)
}

/// What a VM occupies on the host it runs on: static-max plus overhead,
/// each counted from zero, saturating.
pub fn footprint(vm: &VmRecord) -> i64 {
    vm.memory_static_max.max(0).saturating_add(vm.memory_overhead.max(0))
}

/// A sum of byte amounts, saturating at `i64::MAX` (negative terms count
/// as zero: nothing gives memory back by being odd).
pub fn sum(amounts: impl IntoIterator<Item = i64>) -> i64 {
    amounts.into_iter().fold(0i64, |acc, b| acc.saturating_add(b.max(0)))
}

/// A host's free memory: `total - overhead - used`, never below zero and
/// never above `total` (each term counted from zero, saturating).
pub fn free_of(total: i64, overhead: i64, used: i64) -> i64 {
    let total = total.max(0);
    total
        .saturating_sub(overhead.max(0))
        .saturating_sub(used.max(0))
        .clamp(0, total)
}

/// The same without the floor at zero, for the planner's hypothetical
/// changes (a host may be shown over-full); still never above `total`.
pub fn free_unfloored(total: i64, overhead: i64, used: i64) -> i64 {
    let total = total.max(0);
    total
        .saturating_sub(overhead.max(0))
        .saturating_sub(used.max(0))
        .min(total)
}

/// Check a VM's memory as XAPI's setters do (`set_memory_static_range`,
/// `set_memory_limits`): `static_min <= dynamic_min <= dynamic_max <=
/// static_max` or `MEMORY_CONSTRAINT_VIOLATION_ORDER`; and within what a VM
/// may have here ([`check_vm_limits`]).
pub fn check_vm_setter(vm: &VmRecord) -> Result<(), ApiError> {
    check_vm_limits(vm)?;
    if !in_order(vm) {
        return Err(ApiError::bare(codes::MEMORY_CONSTRAINT_VIOLATION_ORDER));
    }
    Ok(())
}

fn in_order(vm: &VmRecord) -> bool {
    vm.memory_static_min <= vm.memory_dynamic_min
        && vm.memory_dynamic_min <= vm.memory_dynamic_max
        && vm.memory_dynamic_max <= vm.memory_static_max
}

/// The bounds of each memory and vCPU figure, apart from their order:
/// `VCPUs_max >= 1` (`INVALID_VALUE` with XAPI's text), `VCPUs_max <=`
/// [`MAX_VCPUS`] and `memory_static_max <=` [`MAX_VM_MEMORY`]
/// (`VALUE_NOT_SUPPORTED [field, value, reason]`), `memory_static_max > 0`
/// and `memory_static_min >= 0` (`MEMORY_CONSTRAINT_VIOLATION [constraint]`).
pub fn check_vm_limits(vm: &VmRecord) -> Result<(), ApiError> {
    if vm.vcpus_max < 1 {
        return Err(ApiError::invalid_value(
            "VCPU values must satisfy: 0 < VCPUs_at_startup \u{2264} VCPUs_max",
            vm.vcpus_max.to_string(),
        ));
    }
    if vm.vcpus_max > MAX_VCPUS {
        return Err(not_supported(
            "VCPUs_max",
            vm.vcpus_max,
            &format!("value greater than {MAX_VCPUS}, the most vCPUs a VM may have"),
        ));
    }
    if vm.memory_static_max > MAX_VM_MEMORY {
        return Err(not_supported(
            "memory_static_max",
            vm.memory_static_max,
            &format!("value greater than {MAX_VM_MEMORY} bytes (16 TiB), the most memory a VM may have"),
        ));
    }
    let violation = |c: &str| ApiError::new(codes::MEMORY_CONSTRAINT_VIOLATION, vec![c.to_string()]);
    if vm.memory_static_max <= 0 {
        return Err(violation("memory_static_max > 0"));
    }
    if vm.memory_static_min < 0 {
        return Err(violation("memory_static_min >= 0"));
    }
    Ok(())
}

fn not_supported(field: &str, value: i64, reason: &str) -> ApiError {
    ApiError::new(
        codes::VALUE_NOT_SUPPORTED,
        vec![field.to_string(), value.to_string(), reason.to_string()],
    )
}

/// Check a new VM's memory and vCPUs (`VM.create`): the limits of
/// [`check_vm_limits`], then the order, named as XAPI's
/// `MEMORY_CONSTRAINT_VIOLATION [constraint]` at boot.
pub fn check_vm_constraints(vm: &VmRecord) -> Result<(), ApiError> {
    check_vm_limits(vm)?;
    let violation = |c: &str| ApiError::new(codes::MEMORY_CONSTRAINT_VIOLATION, vec![c.to_string()]);
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
    let mut used = 0i64;
    for (r, vm) in txn.all::<VmRecord>() {
        if vm.resident_on == host_ref && vm.power_state != PowerState::Halted {
            used = used.saturating_add(footprint(&vm));
            refs.push(r);
        }
    }
    (refs, used)
}

/// A host's free memory, counting the VMs resident on it in `txn`.
pub fn host_free(txn: &Txn, host_ref: &str, host: &HostRecord) -> i64 {
    free_of(host.memory_total, host.memory_overhead, residents(txn, host_ref).1)
}

/// Recompute `memory_free` and `resident_VMs` of a host after VMs moved.
pub fn refresh_host(txn: &mut Txn, host_ref: &str) {
    let Some(mut host) = txn.get::<HostRecord>(host_ref) else {
        return;
    };
    let (refs, used) = residents(txn, host_ref);
    host.memory_free = free_of(host.memory_total, host.memory_overhead, used);
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
        assert_eq!(
            check_vm_setter(&vm).unwrap_err(),
            ApiError::bare(codes::MEMORY_CONSTRAINT_VIOLATION_ORDER)
        );
    }

    fn vm(static_max: i64, vcpus: i64) -> VmRecord {
        VmRecord {
            memory_static_min: 0,
            memory_dynamic_min: static_max,
            memory_dynamic_max: static_max,
            memory_static_max: static_max,
            vcpus_max: vcpus,
            ..Default::default()
        }
    }

    #[test]
    fn the_issues_values_are_refused_with_xapis_errors() {
        // Issue 26, defect 2: near i64::MAX, and 2^62 vCPUs.
        let e = check_vm_setter(&vm(9_223_372_036_854_775_000, 1)).unwrap_err();
        assert_eq!(e.code, codes::VALUE_NOT_SUPPORTED);
        assert_eq!(e.params[..2], ["memory_static_max", "9223372036854775000"]);
        let e = check_vm_constraints(&vm(1 << 30, 1 << 62)).unwrap_err();
        assert_eq!(e.code, codes::VALUE_NOT_SUPPORTED);
        assert_eq!(e.params[..2], ["VCPUs_max", "4611686018427387904"]);
        let e = check_vm_constraints(&vm(1 << 30, 0)).unwrap_err();
        assert_eq!(e.code, codes::INVALID_VALUE);
        let mut negative = vm(1 << 30, 1);
        negative.memory_static_min = -1;
        assert_eq!(
            check_vm_setter(&negative).unwrap_err().code,
            codes::MEMORY_CONSTRAINT_VIOLATION
        );
        // The largest VM allowed is fine, and so is its footprint.
        assert!(check_vm_setter(&vm(MAX_VM_MEMORY, MAX_VCPUS)).is_ok());
        assert!(vm_overhead(MAX_VM_MEMORY, MAX_VCPUS) < MAX_VM_MEMORY / 100);
    }

    #[test]
    fn hostile_records_saturate_instead_of_wrapping() {
        assert_eq!(vm_overhead(i64::MAX, i64::MAX), i64::MAX);
        assert!(vm_overhead(i64::MIN, i64::MIN) > 0);
        let huge = VmRecord {
            memory_static_max: i64::MAX,
            memory_overhead: i64::MAX,
            ..Default::default()
        };
        assert_eq!(footprint(&huge), i64::MAX);
        // The issue's host: 8 GiB, a VM of near i64::MAX on it.
        let total = 8 << 30;
        assert_eq!(free_of(total, 0, footprint(&huge)), 0);
        assert_eq!(free_unfloored(total, 0, footprint(&huge)), total - i64::MAX);
        assert_eq!(sum([i64::MAX, i64::MAX, -5]), i64::MAX);
        assert_eq!(
            free_of(total, -(1 << 40), -(1 << 40)),
            total,
            "negative terms give nothing back"
        );
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        fn any_bytes() -> impl Strategy<Value = i64> {
            prop_oneof![any::<i64>(), 0i64..=(1 << 40), Just(i64::MAX), Just(i64::MIN)]
        }

        proptest! {
            /// Whatever the figures, nothing panics (overflow checks are on
            /// in tests), free memory lies in `[0, total]`, and the
            /// unfloored figure is never above total.
            #[test]
            fn free_memory_stays_within_the_host(
                total in any_bytes(),
                overhead in any_bytes(),
                vms in proptest::collection::vec((any_bytes(), any::<i64>()), 0..40),
            ) {
                let footprints: Vec<i64> = vms
                    .iter()
                    .map(|&(m, c)| footprint(&VmRecord {
                        memory_static_max: m,
                        memory_overhead: vm_overhead(m, c),
                        ..Default::default()
                    }))
                    .collect();
                prop_assert!(footprints.iter().all(|&f| f >= 0));
                let used = sum(footprints.iter().copied());
                let free = free_of(total, overhead, used);
                prop_assert!((0..=total.max(0)).contains(&free));
                prop_assert!(free_unfloored(total, overhead, used) <= total.max(0));
                prop_assert!(free_unfloored(total, overhead, used) <= free);
            }

            /// Within the limits the setters enforce, the arithmetic is
            /// exact: the sum is the true sum and free is total less it.
            #[test]
            fn within_the_limits_sums_are_exact(
                total in 0i64..=(1 << 46),
                overhead in 0i64..=(1 << 32),
                vms in proptest::collection::vec((1i64..=MAX_VM_MEMORY, 1i64..=MAX_VCPUS), 0..64),
            ) {
                let footprints: Vec<i64> = vms
                    .iter()
                    .map(|&(m, c)| m + vm_overhead(m, c))
                    .collect();
                let exact: i128 = footprints.iter().map(|&f| i128::from(f)).sum();
                let used = sum(footprints.iter().copied());
                prop_assert_eq!(i128::from(used), exact);
                let free = free_of(total, overhead, used);
                let truth = (i128::from(total) - i128::from(overhead) - exact).max(0);
                prop_assert_eq!(i128::from(free), truth);
                prop_assert_eq!(
                    i128::from(free_unfloored(total, overhead, used)),
                    i128::from(total) - i128::from(overhead) - exact
                );
            }

            /// A VM the checks accept has a footprint that 65,536 of could
            /// not overflow.
            #[test]
            fn accepted_vms_have_bounded_footprints(m in any_bytes(), c in any::<i64>()) {
                let v = VmRecord {
                    memory_static_min: 0,
                    memory_dynamic_min: m,
                    memory_dynamic_max: m,
                    memory_static_max: m,
                    vcpus_max: c,
                    memory_overhead: vm_overhead(m, c),
                    ..Default::default()
                };
                if check_vm_setter(&v).is_ok() {
                    prop_assert!(check_vm_constraints(&v).is_ok());
                    prop_assert!(footprint(&v) <= MAX_VM_MEMORY + MAX_VM_MEMORY / 100);
                    prop_assert!(i128::from(footprint(&v)) * (1 << 16) < i128::from(i64::MAX));
                }
            }
        }
    }
}
