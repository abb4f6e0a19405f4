//! Starts in flight: a VM being started holds a reservation on its new
//! host from its checks to its commit, so that the pool's write lock is
//! not held while that host takes the VM's lease and starts the guest
//! (which may take a while, and ran one start at a time under the lock).
//!
//! A reservation counts the VM's memory against its host for every other
//! start's checks, and keeps every other start or destroy of that VM out
//! (`OTHER_OPERATION_IN_PROGRESS`) until it is dropped: after the commit,
//! or with the start's failure.

use std::collections::HashMap;
use std::sync::Mutex;

use xapi_proto::ApiError;

/// Every start in flight on this master: VM ref → (host ref, bytes).
#[derive(Debug, Default)]
pub struct Reservations {
    table: Mutex<HashMap<String, (String, i64)>>,
}

/// One start in flight; dropping it ends the reservation.
#[must_use = "the reservation ends when this is dropped"]
#[derive(Debug)]
pub struct Reservation<'a> {
    table: &'a Reservations,
    vm_ref: String,
}

/// The error of a second operation on a VM whose start is in flight.
pub fn in_progress(vm_ref: &str) -> ApiError {
    ApiError::new(
        "OTHER_OPERATION_IN_PROGRESS",
        vec!["VM".into(), vm_ref.to_string(), "start".into(), String::new()],
    )
}

impl Reservations {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, i64)>> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The memory that starts in flight will take on `host_ref`.
    pub fn reserved_on(&self, host_ref: &str) -> i64 {
        self.lock()
            .values()
            .filter(|(h, _)| h == host_ref)
            .fold(0i64, |acc, (_, bytes)| acc.saturating_add((*bytes).max(0)))
    }

    /// Every start in flight: (VM ref, host ref).
    pub fn all(&self) -> Vec<(String, String)> {
        self.lock()
            .iter()
            .map(|(vm, (host, _))| (vm.clone(), host.clone()))
            .collect()
    }

    /// A start of `vm_ref` is in flight.
    pub fn busy(&self, vm_ref: &str) -> bool {
        self.lock().contains_key(vm_ref)
    }

    /// Reserve `bytes` on `host_ref` for a start of `vm_ref`, unless one is
    /// in flight already.
    pub fn hold(&self, vm_ref: &str, host_ref: &str, bytes: i64) -> Result<Reservation<'_>, ApiError> {
        let mut table = self.lock();
        if table.contains_key(vm_ref) {
            return Err(in_progress(vm_ref));
        }
        table.insert(vm_ref.to_string(), (host_ref.to_string(), bytes));
        Ok(Reservation {
            table: self,
            vm_ref: vm_ref.to_string(),
        })
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.table.lock().remove(&self.vm_ref);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reservation_counts_its_memory_and_keeps_a_second_start_out_until_dropped() {
        let r = Reservations::default();
        let a = r.hold("vm-a", "host-1", 100).unwrap();
        let _b = r.hold("vm-b", "host-1", 50).unwrap();
        let _c = r.hold("vm-c", "host-2", 7).unwrap();
        assert_eq!(
            (
                r.reserved_on("host-1"),
                r.reserved_on("host-2"),
                r.reserved_on("host-3")
            ),
            (150, 7, 0)
        );
        let e = r.hold("vm-a", "host-2", 1).unwrap_err();
        assert_eq!(e.code, "OTHER_OPERATION_IN_PROGRESS");
        assert!(r.busy("vm-a"));
        drop(a);
        assert!(!r.busy("vm-a"));
        assert_eq!(r.reserved_on("host-1"), 50);
        let _again = r.hold("vm-a", "host-2", 1).unwrap();
    }
}
