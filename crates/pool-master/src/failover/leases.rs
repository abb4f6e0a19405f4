//! The lease keeper (every host, while it is armed for HA): renews this
//! host's lease on the heartbeat SR and reads every peer's, every T/10;
//! pauses the guests when the lease's deadline passes and lets them run
//! again once a renewal counts and no host began a later instance of
//! their VMs (`docs/LEASES.md`, "Enforced outside `xapid`"); takes the
//! lease of a guest that runs without one (HA enabled under running VMs,
//! a guest adopted at start) and lets go of leases whose guest is gone.
//! The rules are `crate::lease`'s; this is the clock and the loop.

use std::sync::Arc;
use std::time::Duration;

use xapi_proto::records::VmRecord;

use crate::daemon::Daemon;
use crate::driver::StopMode;
use crate::lease::acquire::{self, acquire, release_in};
use crate::lease::LeaseError;

/// How often the keeper looks while leases are off.
const IDLE: Duration = Duration::from_secs(1);

/// How long a pass waits for the local database (held by every commit,
/// and by a VM start for as long as it runs): past that, the keeper goes
/// on with the HA configuration it read last. Renewals never wait for a
/// commit.
const STORE_WAIT: Duration = Duration::from_millis(20);

pub fn spawn(d: Arc<Daemon>) {
    tokio::spawn(async move {
        let mut config = None;
        let mut swept: Option<(u128, std::time::Instant)> = None;
        loop {
            let next = pass(&d, &mut config).await;
            sweep_if_due(&d, &mut swept);
            tokio::time::sleep(next).await;
        }
    });
}

/// How often the master looks for the lease files of destroyed VMs (and
/// once whenever leases come on).
const SWEEP_EVERY: Duration = Duration::from_secs(600);

/// Remove the lease files of VMs `uuids` (destroyed), in the background:
/// on the master, while leases are on (else the next sweep does it).
pub fn forget_vm_leases(d: &Arc<Daemon>, uuids: Vec<String>) {
    let Some(view) = d.leases().view() else { return };
    if uuids.is_empty() {
        return;
    }
    tokio::spawn(async move {
        let layout = view.layout.clone();
        match crate::lease::files::with_limit(&view.gate, view.io(), move || {
            crate::lease::files::forget_vms(&layout, &uuids)
        })
        .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(count = n, "removed the lease files of destroyed VMs"),
            Err(e) => tracing::warn!("cannot remove the lease files of destroyed VMs: {e}"),
        }
    });
}

/// On the master, every [`SWEEP_EVERY`] and when leases come on in a new
/// configuration: the lease directories of VMs the pool no longer has go.
/// The directories are listed before the database is read: a directory
/// exists only for a VM that was in the database before it.
fn sweep_if_due(d: &Arc<Daemon>, swept: &mut Option<(u128, std::time::Instant)>) {
    let Some((generation, view)) = d.leases().generation().zip(d.leases().view()) else {
        return;
    };
    if !d.is_master() || swept.is_some_and(|(g, at)| g == generation && at.elapsed() < SWEEP_EVERY) {
        return;
    }
    *swept = Some((generation, std::time::Instant::now()));
    let d = d.clone();
    tokio::spawn(async move {
        let layout = view.layout.clone();
        let listed = crate::lease::files::with_limit(&view.gate, view.io(), move || {
            crate::lease::files::vms_with_files(&layout)
        })
        .await;
        let Ok(listed) = listed else { return };
        let gone: Vec<String> = {
            let m = d.model();
            listed.into_iter().filter(|u| m.vm.ref_of_uuid(u).is_none()).collect()
        };
        forget_vm_leases(&d, gone);
    });
}

/// With real guests, follow the lab's storage switch (`xapid lab
/// cut-storage`): the lab stops the guests itself when it cuts the
/// storage, and this host lets them continue when it is back, unless its
/// lease keeps them paused (then the keeper's resume check decides). A
/// lease whose deadline is less than [`STORAGE_MARGIN`] away waits: the
/// fence guard may stop the guests at that deadline, and the keeper
/// learns of it only at its next pass.
pub fn spawn_lab_storage_watch(d: Arc<Daemon>) {
    use crate::driver::qemu::{continue_stopped_guests, held, hold_guests, release_guests, Hold};
    if d.driver().kind() != crate::driver::DriverKind::Qemu || !d.io().is_lab() {
        return;
    }
    tokio::spawn(async move {
        let mut stopped = false;
        loop {
            tokio::time::sleep(crate::io::REFRESH).await;
            let cut = d.io().storage().is_err();
            let leases = d.leases();
            let margin = leases.now() + STORAGE_MARGIN.as_millis() as u64;
            // The lease lets the guests run now, and will for a while.
            let lease_runs =
                !leases.active() || (leases.paused_since().is_none() && leases.deadline().is_some_and(|t| t > margin));
            if cut && !stopped {
                stopped = true;
                hold_guests(Hold::Storage);
            } else if !cut && stopped {
                // Paused for the lease (the keeper holds them): lifting the
                // storage's hold continues nothing, the resume check will.
                // Paused without the keeper's hold yet (`gate()` from
                // another caller): wait for it.
                if held(Hold::Lease) || lease_runs {
                    stopped = false;
                    release_guests(Hold::Storage);
                }
            } else if !cut && lease_runs {
                // A cut this watch never saw (shorter than its period, or
                // while this xapid was frozen or not yet started) left
                // guests stopped: nothing holds them, they continue.
                continue_stopped_guests();
            }
        }
    });
}

/// How far a lease's deadline must be for the lab's storage coming back
/// to let the guests continue at once.
const STORAGE_MARGIN: Duration = Duration::from_millis(500);

/// One pass: the time to the next. `config`: the HA configuration as last
/// read.
async fn pass(d: &Arc<Daemon>, config: &mut Option<crate::ha::local::HaLocal>) -> Duration {
    let leases = d.leases();
    if !d.ha().watchdog.may_write() {
        // Fencing: no renewal may land over the fencing mark.
        return IDLE;
    }
    let local = match d.ha().armed() {
        true => {
            if let Ok(read) = tokio::time::timeout(STORE_WAIT, d.ha_local()).await {
                *config = read;
            }
            config.clone().filter(|l| l.armed)
        }
        false => None,
    };
    let on = local.as_ref().is_some_and(|l| {
        let sr = l.statefile.parent().unwrap_or(std::path::Path::new("/"));
        leases.activate(l.generation, &l.hosts, l.timeout_s.saturating_mul(1000), sr)
    });
    if !on {
        turn_off(d).await;
        return IDLE;
    }
    let Some(view) = leases.view() else { return IDLE };
    if crate::lease::renew_and_observe(leases, &view).await {
        // Its protected VMs may restart elsewhere now (the master's
        // restart executor).
        d.ha().restarts.kick();
    }
    crate::driver::qemu::guard::set_lease(leases.escalation().map(|(pause, kill, reset)| {
        crate::driver::qemu::guard::LeaseDeadlines {
            pause: leases.instant(pause),
            kill: leases.instant(kill),
            reset: leases.instant(reset),
        }
    }));
    // Asked here too, not only by guest writes: a qemu guest writes
    // without asking. Again at every pass while paused: a guest whose
    // start passed the gate just before it shut registers after the pause.
    if leases.gate().is_err() {
        d.driver().pause_all();
    }
    if let Some(since) = leases.paused_since() {
        if leases.renewed_since(since) {
            resume(d).await;
        }
    }
    keep_leases_with_guests(d);
    Duration::from_millis(view.timing.renew_every)
}

/// The paused guests' resume check: each guest whose VM nobody took runs
/// again; a guest whose VM another host began to take, or that the pool
/// no longer places here (the master restarted it elsewhere), is killed;
/// a guest without a lease runs again only once it has one. The guests run
/// again only if this host's lease held all through the check.
async fn resume(d: &Daemon) {
    let leases = d.leases();
    let began = leases.now();
    for vm in d.driver().running() {
        let placed_here = {
            let m = d.model();
            let vm_ref = m.vm.ref_of_uuid(&vm).map(str::to_string);
            let host_ref = m.host.ref_of_uuid(d.host_uuid()).map(str::to_string);
            match (vm_ref, host_ref) {
                (Some(v), Some(h)) => m.get::<VmRecord>(&v).is_none_or(|r| r.resident_on == h),
                _ => true,
            }
        };
        let verdict = if !placed_here {
            Some(false)
        } else if leases.owned(&vm).is_none() {
            let hold = leases.lock_vm(&vm).await;
            let taken = acquire(leases, &vm).await;
            drop(hold);
            match taken {
                Ok(_) => Some(true),
                Err(LeaseError::Busy { .. } | LeaseError::Lost { .. }) => Some(false),
                Err(_) => None,
            }
        } else {
            acquire::may_resume(leases, &vm).await
        };
        match verdict {
            Some(true) => {}
            Some(false) => {
                tracing::error!(vm = %vm, "another host took this VM while its guest was paused here: killing the guest");
                if let Err(e) = d.driver().stop(&vm, StopMode::Hard).await {
                    tracing::error!(vm = %vm, "cannot kill the guest: {e}");
                    return;
                }
            }
            None => return,
        }
    }
    if leases.paused_since().is_some() && leases.held_since(began) {
        tracing::info!("this host's lease is renewed again and no VM of its guests was taken: they run again");
        leases.unpause();
        d.driver().resume_all();
    }
}

/// Take the lease of every guest that runs without one (in a task each:
/// a busy lease may take L to free), and let go of the leases whose guest
/// is gone. A VM whose lease work is under way (a start, a stop) is left
/// alone. A guest whose VM another live host holds, or took, is killed: it
/// runs without a lease, and the pool places the VM there.
fn keep_leases_with_guests(d: &Arc<Daemon>) {
    let leases = d.leases();
    if leases.paused_since().is_some() {
        return;
    }
    let running = d.driver().running();
    for vm in &running {
        if leases.owned(vm).is_some() {
            continue;
        }
        let Some(hold) = leases.try_lock_vm(vm) else { continue };
        let (d, vm) = (d.clone(), vm.clone());
        tokio::spawn(async move {
            let taken = acquire(d.leases(), &vm).await;
            drop(hold);
            match taken {
                Ok(k) => tracing::info!(vm = %vm, instance = k, "took the lease of a guest running here"),
                Err(e @ (LeaseError::Busy { .. } | LeaseError::Lost { .. })) if d.driver().running().contains(&vm) => {
                    tracing::error!(vm = %vm, "a guest runs here without its lease, which another host holds ({e}): killing it");
                    if let Err(e) = d.driver().stop(&vm, StopMode::Hard).await {
                        tracing::error!(vm = %vm, "cannot kill the guest: {e}");
                    }
                }
                Err(e) => tracing::warn!(vm = %vm, "a guest runs here without its lease: {e}"),
            }
        });
    }
    for (vm, _) in leases.all_owned() {
        if running.contains(&vm) {
            continue;
        }
        let Some(hold) = leases.try_lock_vm(&vm) else { continue };
        let d = d.clone();
        tokio::spawn(async move {
            acquire::release(d.leases(), &vm).await;
            drop(hold);
        });
    }
}

/// Leases off (HA is off here): let go of every lease held, and let
/// paused guests run (without HA nobody restarts their VMs elsewhere).
async fn turn_off(d: &Daemon) {
    let leases = d.leases();
    let was_paused = leases.paused_since().is_some();
    for (vm, k, view) in leases.deactivate() {
        if !release_in(&view, &vm, k).await {
            tracing::warn!(vm = %vm, "HA is off here and the VM's lease could not be marked released: another host takes it only once this host's lease expired");
        }
    }
    crate::driver::qemu::guard::set_lease(None);
    if was_paused {
        d.driver().resume_all();
    }
}
