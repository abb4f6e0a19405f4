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

use crate::daemon::Daemon;
use crate::driver::StopMode;
use crate::lease::acquire::{self, acquire, release_in};

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
        loop {
            let next = pass(&d, &mut config).await;
            tokio::time::sleep(next).await;
        }
    });
}

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
    if crate::lease::renew_and_observe(leases, &view, d.ha().faults.storage_cut()).await {
        // Its protected VMs may restart elsewhere now (the master's
        // restart executor).
        d.ha().restarts.kick();
    }
    let deadline = leases.deadline().map(|t| leases.instant(t));
    crate::driver::qemu::guard::set_pause(deadline);
    // Asked here too, not only by guest writes: a qemu guest writes
    // without asking. Again at every pass while paused (the lab's storage
    // switch continues stopped guests when it restores storage).
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
/// again; a guest whose VM another host began to take is killed.
async fn resume(d: &Daemon) {
    let leases = d.leases();
    for vm in d.driver().running() {
        match acquire::may_resume(leases, &vm).await {
            Some(true) => {}
            Some(false) => {
                tracing::error!(vm = %vm, "another host took this VM's lease while its guest was paused here: killing the guest");
                if let Err(e) = d.driver().stop(&vm, StopMode::Hard).await {
                    tracing::error!(vm = %vm, "cannot kill the guest: {e}");
                    return;
                }
            }
            None => return,
        }
    }
    if leases.paused_since().is_some() {
        tracing::info!("this host's lease is renewed again and no VM of its guests was taken: they run again");
        leases.unpause();
        d.driver().resume_all();
    }
}

/// Take the lease of every guest that runs without one (in a task each:
/// a busy lease may take L to free), and let go of the leases whose guest
/// is gone.
fn keep_leases_with_guests(d: &Arc<Daemon>) {
    let leases = d.leases();
    if leases.paused_since().is_some() {
        return;
    }
    let running = d.driver().running();
    for vm in &running {
        if leases.owned(vm).is_some() || leases.is_starting(vm) {
            continue;
        }
        leases.set_starting(vm, true);
        let (d, vm) = (d.clone(), vm.clone());
        tokio::spawn(async move {
            match acquire(d.leases(), &vm).await {
                Ok(k) => tracing::info!(vm = %vm, instance = k, "took the lease of a guest running here"),
                Err(e) => tracing::error!(vm = %vm, "a guest runs here without its lease: {e}"),
            }
            d.leases().set_starting(&vm, false);
        });
    }
    for (vm, _) in leases.all_owned() {
        if !running.contains(&vm) && !leases.is_starting(&vm) {
            leases.set_starting(&vm, true);
            let d = d.clone();
            tokio::spawn(async move {
                acquire::release(d.leases(), &vm).await;
                d.leases().set_starting(&vm, false);
            });
        }
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
    crate::driver::qemu::guard::set_pause(None);
    if was_paused {
        d.driver().resume_all();
    }
}
