//! VM lifecycle as the pool does it: check a host can run a VM, choose
//! one, start, stop and live-migrate under the write lock, and record
//! where a VM runs.
//!
//! A start takes the pool's write lock for its checks and leaves a
//! reservation on its host (`reserve`: the VM's memory counts there, and
//! no other start or destroy of the VM runs) while the host starts the
//! guest, then takes the lock again to commit; so no other change can slip
//! in between "this host has room" and "the VM is recorded as running
//! there", and starts run side by side. Stops and migrations hold the
//! write lock from their checks to their commit. The guest is started
//! before the commit and stopped again if the commit fails; a migration
//! stops the source guest before the destination starts, so no two hosts
//! ever write one disk.

use xapi_proto::records::{HostRecord, PowerState, VmRecord, NULL_REF};
use xapi_proto::{codes, ApiError};

use crate::daemon::Daemon;
use crate::driver::DriverKind;
use crate::hostops::{self, Target};
use crate::{memory, overcommit};
use pool_db::model::Txn;

pub fn bad_power_state(vm_ref: &str, expected: PowerState, actual: PowerState) -> ApiError {
    ApiError::new(
        codes::VM_BAD_POWER_STATE,
        vec![vm_ref.to_string(), expected.cli_name().into(), actual.cli_name().into()],
    )
}

/// Can `vm` run on `host` now? The disk paths there when it can.
pub fn check_host(
    txn: &Txn,
    vm_ref: &str,
    vm: &VmRecord,
    host_ref: &str,
    host: &HostRecord,
) -> Result<Vec<std::path::PathBuf>, ApiError> {
    check_host_reserved(txn, vm_ref, vm, host_ref, host, 0)
}

/// [`check_host`], with `reserved` bytes of the host's memory taken by
/// starts in flight.
fn check_host_reserved(
    txn: &Txn,
    vm_ref: &str,
    vm: &VmRecord,
    host_ref: &str,
    host: &HostRecord,
    reserved: i64,
) -> Result<Vec<std::path::PathBuf>, ApiError> {
    if !host.live {
        return Err(ApiError::new(codes::HOST_OFFLINE, vec![host_ref.to_string()]));
    }
    if !host.enabled {
        return Err(ApiError::new(codes::HOST_DISABLED, vec![host_ref.to_string()]));
    }
    let disks = hostops::disk_paths(txn, vm_ref, vm, host_ref)?;
    let needed = memory::footprint(vm);
    let available = memory::host_free(txn, host_ref, host).saturating_sub(reserved).max(0);
    if needed > available {
        return Err(ApiError::new(
            codes::HOST_NOT_ENOUGH_FREE_MEMORY,
            vec![needed.to_string(), available.to_string()],
        ));
    }
    Ok(disks)
}

/// Choose a host for `vm`: its affinity host if it fits, else the host with
/// the most free memory (ties to the lowest uuid). `reserved`: the memory
/// starts in flight take on a host.
fn choose_host(
    txn: &Txn,
    vm_ref: &str,
    vm: &VmRecord,
    avoid: &[String],
    reserved: impl Fn(&str) -> i64,
) -> Result<(Target, Vec<std::path::PathBuf>), ApiError> {
    let hosts: Vec<(String, HostRecord)> = txn
        .all::<HostRecord>()
        .into_iter()
        .filter(|(r, _)| !avoid.contains(r))
        .collect();
    if let Some((r, h)) = hosts.iter().find(|(r, _)| *r == vm.affinity) {
        if let Ok(disks) = check_host_reserved(txn, vm_ref, vm, r, h, reserved(r)) {
            return Ok((Target::new(r, h), disks));
        }
    }
    let mut fits: Vec<(i64, &String, &HostRecord, Vec<std::path::PathBuf>)> = hosts
        .iter()
        .filter_map(|(r, h)| {
            let held = reserved(r);
            check_host_reserved(txn, vm_ref, vm, r, h, held)
                .ok()
                .map(|disks| (memory::host_free(txn, r, h).saturating_sub(held), r, h, disks))
        })
        .collect();
    fits.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.2.uuid.cmp(&b.2.uuid)));
    fits.into_iter()
        .next()
        .map(|(_, r, h, disks)| (Target::new(r, h), disks))
        .ok_or_else(|| ApiError::bare(codes::NO_HOSTS_AVAILABLE))
}

/// Record `vm_ref` as running on `host_ref` as the guest `domid`, or
/// halted when `None`.
pub fn set_residence(txn: &mut Txn, vm_ref: &str, running: Option<(&str, i64)>) {
    let old = txn.get::<VmRecord>(vm_ref).map(|v| v.resident_on).unwrap_or_default();
    txn.update::<VmRecord>(vm_ref, |vm| match running {
        Some((h, domid)) => {
            vm.power_state = PowerState::Running;
            vm.resident_on = h.to_string();
            vm.domid = domid;
        }
        None => {
            vm.power_state = PowerState::Halted;
            vm.resident_on = NULL_REF.into();
            vm.domid = -1;
        }
    });
    let host_ref = running.map(|(h, _)| h);
    for h in [Some(old.as_str()), host_ref].into_iter().flatten() {
        if h != NULL_REF {
            memory::refresh_host(txn, h);
        }
    }
}

/// Start a halted VM on `host_ref`, or on the host the chooser picks.
/// Starting a protected VM sets `ha_always_run`. The checks and the commit
/// happen under the write lock, with the guest started in between. With
/// `protect_plan`, a start that would lose the failover plan is refused
/// (HA's own restarts skip that check, as XAPI's do).
pub async fn start_vm(d: &Daemon, vm_ref: &str, host_ref: Option<&str>, protect_plan: bool) -> Result<(), ApiError> {
    start_vm_avoiding(d, vm_ref, host_ref, protect_plan, &[]).await
}

/// [`start_vm`], choosing no host of `avoid` when `host_ref` is `None`.
pub async fn start_vm_avoiding(
    d: &Daemon,
    vm_ref: &str,
    host_ref: Option<&str>,
    protect_plan: bool,
    avoid: &[String],
) -> Result<(), ApiError> {
    let planned = plan_start(d, vm_ref, host_ref, protect_plan, avoid).await?;
    let Planned {
        vm,
        target,
        disks,
        reservation,
    } = planned;
    // The write lock is free meanwhile: the reservation holds the memory
    // and keeps other operations on the VM out.
    let domid = hostops::start_guest(d, &target, hostops::guest_spec(&vm, disks, None)).await?;
    let committed = d
        .write(|txn| {
            let now = txn
                .get::<VmRecord>(vm_ref)
                .ok_or_else(|| ApiError::handle_invalid("VM", vm_ref))?;
            if now.power_state != PowerState::Halted {
                return Err(bad_power_state(vm_ref, PowerState::Halted, now.power_state));
            }
            set_residence(txn, vm_ref, Some((&target.host_ref, domid)));
            txn.update::<VmRecord>(vm_ref, |v| v.ha_always_run = v.ha_restart_priority == "restart");
            Ok(())
        })
        .await;
    drop(reservation);
    if let Err(e) = committed {
        let _ = hostops::stop_guest(d, &target, &vm.uuid).await;
        return Err(e);
    }
    Ok(())
}

/// A start checked and reserved, not yet begun.
struct Planned<'a> {
    vm: VmRecord,
    target: Target,
    disks: Vec<std::path::PathBuf>,
    reservation: crate::reserve::Reservation<'a>,
}

/// The checks of a start, under the write lock, and its reservation
/// (`reserve`): the VM, where it goes and its disks there.
async fn plan_start<'a>(
    d: &'a Daemon,
    vm_ref: &str,
    host_ref: Option<&str>,
    protect_plan: bool,
    avoid: &[String],
) -> Result<Planned<'a>, ApiError> {
    let w = d.writer().await;
    let starting = d.starting();
    if starting.busy(vm_ref) {
        return Err(crate::reserve::in_progress(vm_ref));
    }
    let (vm, target, disks) = w.read(|txn| {
        let vm = txn
            .get::<VmRecord>(vm_ref)
            .ok_or_else(|| ApiError::handle_invalid("VM", vm_ref))?;
        if vm.is_a_template {
            return Err(ApiError::new("VM_IS_TEMPLATE", vec![vm_ref.to_string()]));
        }
        if vm.power_state != PowerState::Halted {
            return Err(bad_power_state(vm_ref, PowerState::Halted, vm.power_state));
        }
        let (target, disks) = match host_ref {
            Some(h) => {
                let host = txn
                    .get::<HostRecord>(h)
                    .ok_or_else(|| ApiError::handle_invalid("host", h))?;
                let disks = check_host_reserved(txn, vm_ref, &vm, h, &host, starting.reserved_on(h))?;
                (Target::new(h, &host), disks)
            }
            None => choose_host(txn, vm_ref, &vm, avoid, |h| starting.reserved_on(h))?,
        };
        if protect_plan {
            // This start and those in flight, as if all had arrived.
            let mut starts = starting.all();
            starts.push((vm_ref.to_string(), target.host_ref.clone()));
            let protecting: Vec<&str> = starts
                .iter()
                .filter(|(v, _)| {
                    txn.get::<VmRecord>(v)
                        .is_some_and(|r| r.ha_restart_priority == "restart" && !r.ha_always_run)
                })
                .map(|(v, _)| v.as_str())
                .collect();
            let change = overcommit::Change {
                arriving: starts.iter().map(|(v, h)| (v.as_str(), h.as_str())).collect(),
                protecting,
                ..Default::default()
            };
            overcommit::check_cached(d.plan_cache(), txn.base(), &change)?;
        }
        Ok((vm, target, disks))
    })?;
    let reservation = starting.hold(vm_ref, &target.host_ref, memory::footprint(&vm))?;
    drop(w);
    Ok(Planned {
        vm,
        target,
        disks,
        reservation,
    })
}

/// Stop a running VM and record it halted, not to be restarted by HA.
pub async fn shutdown_vm(d: &Daemon, vm_ref: &str) -> Result<(), ApiError> {
    let mut w = d.writer().await;
    let (vm, target) = w.read(|txn| {
        let vm = txn
            .get::<VmRecord>(vm_ref)
            .ok_or_else(|| ApiError::handle_invalid("VM", vm_ref))?;
        if vm.power_state != PowerState::Running {
            return Err(bad_power_state(vm_ref, PowerState::Running, vm.power_state));
        }
        let host = txn
            .get::<HostRecord>(&vm.resident_on)
            .ok_or_else(|| ApiError::internal(format!("VM {} is resident on an unknown host", vm.uuid)))?;
        let target = Target::new(&vm.resident_on, &host);
        Ok((vm, target))
    })?;
    hostops::stop_guest(d, &target, &vm.uuid).await?;
    w.commit(|txn| {
        set_residence(txn, vm_ref, None);
        txn.update::<VmRecord>(vm_ref, |v| v.ha_always_run = false);
        Ok(())
    })?;
    Ok(())
}

/// Live-migrate a running VM to `host_ref`. With `protect_plan`, a move
/// that would lose the failover plan is refused (an evacuation checks its
/// whole plan first).
pub async fn migrate_vm(d: &Daemon, vm_ref: &str, host_ref: &str, protect_plan: bool) -> Result<(), ApiError> {
    let mut w = d.writer().await;
    let (vm, source, dest, disks) = w.read(|txn| {
        let vm = txn
            .get::<VmRecord>(vm_ref)
            .ok_or_else(|| ApiError::handle_invalid("VM", vm_ref))?;
        let host = txn
            .get::<HostRecord>(host_ref)
            .ok_or_else(|| ApiError::handle_invalid("host", host_ref))?;
        if vm.power_state != PowerState::Running {
            return Err(bad_power_state(vm_ref, PowerState::Running, vm.power_state));
        }
        if vm.resident_on == host_ref {
            return Err(ApiError::not_allowed(
                "The VM is already resident on the destination host.",
            ));
        }
        let source_host = txn
            .get::<HostRecord>(&vm.resident_on)
            .ok_or_else(|| ApiError::internal(format!("VM {} is resident on an unknown host", vm.uuid)))?;
        let disks = check_host(txn, vm_ref, &vm, host_ref, &host)?;
        if protect_plan {
            let change = overcommit::Change {
                arriving: vec![(vm_ref, host_ref)],
                ..Default::default()
            };
            overcommit::check_cached(d.plan_cache(), txn.base(), &change)?;
        }
        Ok((
            vm.clone(),
            Target::new(&vm.resident_on, &source_host),
            Target::new(host_ref, &host),
            disks,
        ))
    })?;
    if d.driver().kind() == DriverKind::Qemu {
        // Live: the destination waits for the guest's state, the source
        // sends it; the disk stays on the shared SR. A failure leaves the
        // guest running on the source, and no guest on the destination.
        let (domid, uri) = hostops::start_incoming(d, &dest, hostops::guest_spec(&vm, disks, None)).await?;
        if let Err(e) = hostops::migrate_out(d, &source, &vm.uuid, &uri).await {
            if let Err(k) = hostops::kill_guest(d, &dest, &vm.uuid).await {
                tracing::error!(vm = %vm.uuid, "cannot stop the incoming guest of a failed migration: {k}");
            }
            return Err(ApiError::new(
                codes::VM_MIGRATE_FAILED,
                vec![vm_ref.to_string(), source.host_ref, dest.host_ref, e.to_string()],
            ));
        }
        w.commit(|txn| {
            set_residence(txn, vm_ref, Some((&dest.host_ref, domid)));
            Ok(())
        })?;
        return Ok(());
    }
    let last = hostops::stop_guest(d, &source, &vm.uuid).await?;
    let next = last.map(|s| s + 1);
    let (resident, domid, failed) = match hostops::start_guest(d, &dest, hostops::guest_spec(&vm, disks, next)).await {
        Ok(domid) => (&dest, domid, None),
        Err(e) => {
            // Put the guest back where it was; the VM never left the source,
            // but it runs there as a new guest.
            let back = w.read(|txn| hostops::disk_paths(txn, vm_ref, &vm, &source.host_ref))?;
            let domid = hostops::start_guest(d, &source, hostops::guest_spec(&vm, back, next)).await?;
            (&source, domid, Some(e))
        }
    };
    w.commit(|txn| {
        set_residence(txn, vm_ref, Some((&resident.host_ref, domid)));
        Ok(())
    })?;
    match failed {
        None => Ok(()),
        Some(e) => Err(ApiError::new(
            codes::VM_MIGRATE_FAILED,
            vec![vm_ref.to_string(), source.host_ref, dest.host_ref, e.to_string()],
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pool_db::model::new_ref;
    use std::time::Duration;

    async fn halted_vm(d: &Daemon, name: &str, bytes: i64) -> String {
        let r = new_ref();
        let vm = VmRecord {
            uuid: format!("{name}-uuid"),
            name_label: name.into(),
            memory_static_max: bytes,
            memory_dynamic_max: bytes,
            memory_dynamic_min: bytes,
            memory_static_min: bytes,
            power_state: PowerState::Halted,
            ..Default::default()
        };
        d.write(|txn| {
            txn.put(&r, vm);
            Ok(())
        })
        .await
        .unwrap();
        r
    }

    #[tokio::test]
    async fn a_start_in_flight_holds_its_memory_and_its_vm_but_not_the_write_lock() {
        let dir = tempfile::tempdir().unwrap();
        let d = Daemon::open(crate::daemon::tests::config(dir.path())).unwrap();
        let host = d.host_ref().unwrap();
        // Two VMs of 600 MiB on a host of 1 GiB: one fits.
        let (a, b) = (halted_vm(&d, "a", 600 << 20).await, halted_vm(&d, "b", 600 << 20).await);
        let planned = plan_start(&d, &a, Some(&host), false, &[]).await.unwrap();
        // While a's guest starts, the pool's write lock is free.
        tokio::time::timeout(Duration::from_secs(1), d.write(|_| Ok(())))
            .await
            .expect("the write lock is free during a start")
            .unwrap();
        // b does not fit beside a's reservation, chosen or named.
        let e = start_vm(&d, &b, Some(&host), false).await.unwrap_err();
        assert_eq!(e.code, codes::HOST_NOT_ENOUGH_FREE_MEMORY, "{e:?}");
        let e = start_vm(&d, &b, None, false).await.unwrap_err();
        assert_eq!(e.code, codes::NO_HOSTS_AVAILABLE, "{e:?}");
        // Nor does a second start of a.
        let e = start_vm(&d, &a, None, false).await.unwrap_err();
        assert_eq!(e.code, "OTHER_OPERATION_IN_PROGRESS", "{e:?}");
        assert_eq!(d.model().get::<VmRecord>(&a).unwrap().power_state, PowerState::Halted);
        // a's start given up: b fits now, and runs.
        drop(planned);
        start_vm(&d, &b, Some(&host), false).await.unwrap();
        assert_eq!(d.model().get::<VmRecord>(&b).unwrap().power_state, PowerState::Running);
        assert!(!d.starting().busy(&b), "the reservation ends with the commit");
        // And a does not fit beside b.
        let e = start_vm(&d, &a, Some(&host), false).await.unwrap_err();
        assert_eq!(e.code, codes::HOST_NOT_ENOUGH_FREE_MEMORY, "{e:?}");
    }
}
