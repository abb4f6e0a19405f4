//! The restart executor (master): keep protected VMs running.
//!
//! Level-triggered, as xapi's `restart_auto_run_vms`, but woken by every
//! change of the liveset and of VM power states instead of a 20 s poll
//! (and at least every [`PERIOD`] while HA is on). One pass:
//! 1. **Declare dead** every host outside the liveset: `HA_HOST_FAILED`
//!    once (not for a host the admin is shutting down), `live = false`,
//!    its VMs reset to halted. The liveset shrink is the proof that the
//!    host fenced or is off: the winners waited until its watchdog must
//!    have fired.
//!    **Lapsed hosts**: a host still in the liveset whose lease on the
//!    heartbeat SR expired in the master's eyes has its guests paused, and
//!    they stay so (`crate::lease`): its protected VMs are reset to halted
//!    now, without waiting for the liveset to drop it, and no VM is placed
//!    there. Their new host takes each VM's lease before it starts it, so a
//!    host that comes back finds its VMs taken and kills its paused guests.
//! 2. **Protected VMs** (`restart` priority, `ha_always_run`, halted) are
//!    placed by the planner, keeping a plan for the remaining failures to
//!    tolerate where it can, and started in `order` groups: ascending
//!    (negative last), a group's VMs in parallel, the next group once the
//!    previous one has started and its longest `start_delay` has passed.
//!    A VM the plan cannot place is started wherever it fits; a VM that
//!    fails is retried after [`RETRY_SPACING`], or at once when capacity
//!    appears (a host joins or is enabled, memory is freed, an SR comes
//!    back: every commit and view change wakes the executor), and raises
//!    `HA_PROTECTED_VM_RESTART_FAILED` once; one its new host refused
//!    because the VM's lease looked held there (that host's observer lags
//!    this one's) is tried again after two renewals, a few times.
//! 3. **Best-effort VMs** reset in this pass get one attempt each, grouped
//!    by order, after the protected ones.
//! 4. **Plan status**: after any commit, `ha_plan_exists_for` and
//!    `ha_overcommitted` are brought up to date (`overcommit::pool_status`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ha_planner::Placement;
use xapi_proto::records::{HostRecord, PowerState, VmRecord};
use xapi_proto::ApiError;

use super::monitor::{alert, Alert};
use crate::daemon::Daemon;
use crate::planning;

/// The longest wait between two passes while HA is on.
pub const PERIOD: Duration = Duration::from_secs(2);

/// How long a protected VM that failed to start waits before the next try.
pub const RETRY_SPACING: Duration = Duration::from_secs(10);

#[derive(Default)]
struct State {
    /// When each protected VM was last tried.
    attempts: HashMap<String, Instant>,
    /// Protected VMs whose failure was reported (until they run again).
    alerted: HashSet<String>,
    /// The database generation and time of the last plan-status update.
    status_at: Option<(u64, Instant)>,
    /// What the hosts offered at the last pass (see [`capacity`]).
    capacity: Vec<Capacity>,
    /// The hosts (refs) in the liveset whose host lease lapsed in this
    /// master's eyes, at this pass: no VM starts there.
    lapsed: Vec<String>,
    /// Protected VMs tried again soon because their new host still saw
    /// their lease held, and how many times.
    lease_lag: HashMap<String, u32>,
    /// When this master first found each protected VM down (for the
    /// restart latency metric).
    down_since: HashMap<String, Instant>,
}

/// How many times a start refused because the VM's lease looked held to
/// its new host is tried again after two renewals, not [`RETRY_SPACING`]:
/// the master may have read the old host's lapse or fencing mark a
/// renewal and a read before the new host did (a network-cut host's VMs
/// waited 10 s for that in the failover bench).
const LEASE_LAG_TRIES: u32 = 3;

/// Was the start refused for a lease held by a host alive in the starting
/// host's eyes?
fn lease_busy(e: &ApiError) -> bool {
    e.params.iter().any(|p| p.contains(crate::lease::BUSY))
}

/// What one host offers protected VMs: whether it takes VMs, and its free
/// memory and plugged SRs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Capacity {
    host: String,
    usable: bool,
    free: i64,
    srs: Vec<String>,
}

/// Every host's [`Capacity`], by uuid.
fn capacity(d: &Daemon) -> Vec<Capacity> {
    let m = d.model();
    let mut out: Vec<Capacity> = m
        .host
        .iter()
        .map(|(r, h)| Capacity {
            host: h.uuid.clone(),
            usable: planning::host_usable(h),
            free: planning::host_free(&m, r, h),
            srs: planning::host_reaches(&m, r)
                .into_iter()
                .map(|s| format!("{s:?}"))
                .collect(),
        })
        .collect();
    out.sort_by(|a, b| a.host.cmp(&b.host));
    out
}

/// The longest the plan status goes without a re-plan (XAPI's
/// `ha_monitor_plan_interval`), though any commit triggers one.
pub const REPLAN_INTERVAL: Duration = Duration::from_secs(1800);

/// Start the executor; it runs for the life of the process and acts only
/// on the master holding the master lock, with HA on.
pub fn spawn(d: Arc<Daemon>) {
    tokio::spawn(async move {
        let mut state = State::default();
        let mut commits = d.watch_generation();
        loop {
            // Woken by a kick (a view change, a guest halt, a host back
            // from maintenance) or a commit (memory freed, a host enabled),
            // and at least every PERIOD.
            let _ = tokio::time::timeout(PERIOD, async {
                tokio::select! {
                    () = d.ha().restarts.notified() => {}
                    _ = commits.changed() => {}
                }
            })
            .await;
            if let Err(e) = pass(&d, &mut state).await {
                tracing::warn!("HA restart pass: {e}");
            }
        }
    });
}

/// May this host act on the liveset now? It is the master, HA is on, its
/// agent is online and it holds the master lock.
fn in_charge(d: &Daemon) -> Option<Vec<String>> {
    let view = d.ha().view();
    let enabled = d.ha_enabled();
    (enabled && d.is_master() && view.online && view.lock_holder.as_deref() == Some(d.host_uuid()))
        .then_some(view.liveset)
}

async fn pass(d: &Arc<Daemon>, state: &mut State) -> Result<(), ApiError> {
    let Some(liveset) = in_charge(d) else {
        return Ok(());
    };
    let reset = declare_dead(d, &liveset).await?;
    state.lapsed = reclaim_lapsed(d, &liveset).await?;
    // Capacity appeared (a host joined or was enabled, memory was freed, an
    // SR came back): VMs that failed for want of it are tried at once, not
    // at their next retry.
    let now = capacity(d);
    if now != state.capacity {
        if !state.attempts.is_empty() && !state.capacity.is_empty() {
            tracing::info!("capacity changed: protected VMs waiting for a retry are tried now");
        }
        state.attempts.clear();
        state.capacity = now;
    }
    restart_protected(d, state).await;
    restart_best_effort(d, &reset, &state.lapsed).await;
    restore_failures_to_tolerate(d).await?;
    update_pool_status(d, state).await
}

/// The pool `other_config` key recording a host-failures-to-tolerate that
/// was lowered while a host is away for maintenance: `N:<host-uuid>`
/// (written by `xe host-disable lower-ntol=true`, as XenCenter offers).
pub const RESTORE_NTOL_KEY: &str = "pool-ha-restore-ntol";

/// Once that host is back, live and enabled, give the pool its number back
/// if a plan exists for it (XenCenter's "restored if appropriate").
async fn restore_failures_to_tolerate(d: &Daemon) -> Result<(), ApiError> {
    let restore = {
        let m = d.model();
        let Some((pool_ref, pool)) = m.pool() else {
            return Ok(());
        };
        let Some((n, host)) = pool.other_config.get(RESTORE_NTOL_KEY).and_then(|v| v.split_once(':')) else {
            return Ok(());
        };
        let (Ok(n), Some(host_ref)) = (n.parse::<u32>(), m.host.ref_of_uuid(host)) else {
            return Ok(());
        };
        let back = m.get::<HostRecord>(host_ref).is_some_and(|h| h.live && h.enabled);
        if !back || !crate::planning::plan_exists_for(&m, n)?.exists() {
            return Ok(());
        }
        (pool_ref.clone(), n)
    };
    tracing::info!(
        failures = restore.1,
        "host back from maintenance: ha-host-failures-to-tolerate restored"
    );
    d.write(|txn| {
        txn.update::<xapi_proto::records::PoolRecord>(&restore.0, |p| {
            p.ha_host_failures_to_tolerate = i64::from(restore.1);
            p.other_config.remove(RESTORE_NTOL_KEY);
        });
        Ok(())
    })
    .await
}

/// Keep `ha_plan_exists_for` and `ha_overcommitted` true after any change
/// (and every [`REPLAN_INTERVAL`]); alert when they get worse.
async fn update_pool_status(d: &Daemon, state: &mut State) -> Result<(), ApiError> {
    let generation = d.model().generation;
    if state
        .status_at
        .is_some_and(|(g, t)| g == generation && t.elapsed() < REPLAN_INTERVAL)
    {
        return Ok(());
    }
    let (status, old, pool_ref, pool_uuid) = {
        let m = d.model();
        let began = Instant::now();
        let Some(status) = crate::overcommit::pool_status(&m)? else {
            return Ok(());
        };
        crate::metrics::ha().planned(began.elapsed());
        // The overcommit gate's compiled pool for this generation, built
        // here rather than on the next VM start's path.
        if let Err(e) = d.plan_cache().prepare(&m) {
            tracing::debug!(error = ?e, "overcommit gate: cannot compile the pool");
        }
        let Some((r, p)) = m.pool() else { return Ok(()) };
        (
            status,
            (p.ha_plan_exists_for, p.ha_overcommitted),
            r.clone(),
            p.uuid.clone(),
        )
    };
    if (status.plan_exists_for, status.overcommitted) != old {
        d.write(|txn| {
            txn.update::<xapi_proto::records::PoolRecord>(&pool_ref, |p| {
                p.ha_plan_exists_for = status.plan_exists_for;
                p.ha_overcommitted = status.overcommitted;
            });
            Ok(())
        })
        .await?;
        if status.plan_exists_for < old.0 {
            alert(
                d,
                Alert::PoolDropInPlanExistsFor,
                &pool_uuid,
                status.plan_exists_for.to_string(),
            )
            .await?;
        }
        if status.overcommitted && !old.1 {
            let body = "The failover tolerance for the pool has dropped and the initially specified number of host failures to tolerate can no longer be guaranteed".to_string();
            alert(d, Alert::PoolOvercommitted, &pool_uuid, body).await?;
        }
    }
    state.status_at = Some((d.model().generation, Instant::now()));
    Ok(())
}

/// Record the liveset: hosts in it are live, hosts out of it are dead and
/// their VMs halted. Returns the VMs reset.
async fn declare_dead(d: &Daemon, liveset: &[String]) -> Result<Vec<String>, ApiError> {
    let (changes, failed): (Vec<(String, bool)>, Vec<HostRecord>) = {
        let m = d.model();
        let changes: Vec<(String, bool)> = m
            .host
            .iter()
            .filter_map(|(r, h)| {
                let live = liveset.contains(&h.uuid);
                (live != h.live).then(|| (r.clone(), live))
            })
            .collect();
        let failed = changes
            .iter()
            .filter(|(_, live)| !live)
            .filter_map(|(r, _)| m.get::<HostRecord>(r).cloned())
            .filter(|h| !h.other_config.contains_key(crate::ops::host::LEAVING_KEY))
            .collect();
        (changes, failed)
    };
    let dead: HashSet<String> = {
        let m = d.model();
        m.host
            .iter()
            .filter(|(_, h)| !liveset.contains(&h.uuid))
            .map(|(r, _)| r.clone())
            .collect()
    };
    let reset: Vec<String> = {
        let m = d.model();
        m.vm.iter()
            .filter(|(_, v)| v.power_state != PowerState::Halted && dead.contains(&v.resident_on))
            .map(|(r, _)| r.clone())
            .collect()
    };
    if changes.is_empty() && reset.is_empty() {
        return Ok(reset);
    }
    d.write(|txn| {
        for (r, live) in &changes {
            txn.update::<HostRecord>(r, |h| h.live = *live);
        }
        for vm in &reset {
            crate::ops::vm::set_residence(txn, vm, None);
        }
        Ok(())
    })
    .await?;
    for h in failed {
        tracing::warn!(host = %h.uuid, "host declared dead: it left the liveset");
        let body = format!(
            "Host {} ({}) has failed: it left the HA liveset and has fenced or lost power. Its VMs are marked halted and protected ones restart elsewhere.",
            h.name_label, h.uuid
        );
        alert(d, Alert::HostFailed, &h.uuid, body).await?;
    }
    if !reset.is_empty() {
        tracing::info!(count = reset.len(), "VMs of dead hosts reset to halted");
    }
    Ok(reset)
}

/// Reset the protected VMs of lapsed hosts to halted (see the top of this
/// file): the lapsed hosts' refs.
async fn reclaim_lapsed(d: &Daemon, liveset: &[String]) -> Result<Vec<String>, ApiError> {
    let lapsed_uuids: Vec<String> = d
        .leases()
        .lapsed()
        .into_iter()
        .filter(|h| liveset.contains(h) && h != d.host_uuid())
        .collect();
    if lapsed_uuids.is_empty() {
        return Ok(Vec::new());
    }
    let (lapsed, reset): (Vec<String>, Vec<(String, String)>) = {
        let m = d.model();
        // Sim guests stop writing at the pause; real guests are killed at
        // the kill time and their host reset if one does not exit, before
        // any observer's L (`driver::qemu::guard`, docs/LEASES.md, "Real
        // guests"): either way nothing of theirs lands after the lease
        // lapsed in this host's eyes.
        let lapsed: Vec<String> = lapsed_uuids
            .iter()
            .filter_map(|u| m.host.ref_of_uuid(u).map(str::to_string))
            .collect();
        let reset =
            m.vm.iter()
                .filter(|(_, v)| {
                    v.power_state != PowerState::Halted
                        && lapsed.contains(&v.resident_on)
                        && v.ha_restart_priority == "restart"
                        && v.ha_always_run
                })
                .map(|(r, v)| (r.clone(), v.uuid.clone()))
                .collect();
        (lapsed, reset)
    };
    if reset.is_empty() {
        return Ok(lapsed);
    }
    d.write(|txn| {
        for (vm, _) in &reset {
            crate::ops::vm::set_residence(txn, vm, None);
        }
        Ok(())
    })
    .await?;
    for (_, uuid) in &reset {
        tracing::warn!(
            vm = %uuid,
            "the host of this protected VM let its lease on the heartbeat SR lapse: it restarts elsewhere"
        );
    }
    Ok(lapsed)
}

/// A VM to start and where.
struct Start {
    vm_ref: String,
    uuid: String,
    order: i64,
    start_delay: u64,
    host: Option<String>,
}

/// Sort key of an order: ascending, negative last (as xapi).
fn order_key(order: i64) -> i64 {
    if order < 0 {
        i64::MAX
    } else {
        order
    }
}

/// The protected VMs to start now, with the plan's hosts.
fn plan_protected(d: &Daemon, state: &State) -> Vec<Start> {
    let m = d.model();
    let now = Instant::now();
    let due: Vec<(String, VmRecord)> =
        m.vm.iter()
            .filter(|(_, v)| planning::awaits_restart(v))
            .filter(|(_, v)| {
                state
                    .attempts
                    .get(&v.uuid)
                    .is_none_or(|t| now.duration_since(*t) >= RETRY_SPACING)
            })
            .map(|(r, v)| (r.clone(), v.clone()))
            .collect();
    if due.is_empty() {
        return Vec::new();
    }
    let placements: BTreeMap<String, String> = (|| {
        let pool = m.pool()?.1;
        let planner = planning::planner(pool).ok()?;
        let described = planning::describe(&m, |_, v| planning::is_protected(v));
        let dead = m.host.iter().filter(|(_, h)| !h.live).count();
        let keep = (pool.ha_host_failures_to_tolerate.max(0) as usize).saturating_sub(dead) as u32;
        let plan = planner.restart_plan(&described, &[], keep).ok()?;
        Some(
            plan.placements
                .into_iter()
                .filter_map(|(vm, p)| match p {
                    Placement::Host(h) => Some((vm, m.host.ref_of_uuid(&h)?.to_string())),
                    Placement::Unplaced(_) => None,
                })
                .filter(|(_, h)| !state.lapsed.contains(h))
                .collect(),
        )
    })()
    .unwrap_or_default();
    due.into_iter()
        .map(|(vm_ref, v)| Start {
            host: placements.get(&v.uuid).cloned(),
            vm_ref,
            order: v.order,
            start_delay: u64::try_from(v.start_delay).unwrap_or(0),
            uuid: v.uuid,
        })
        .collect()
}

/// Start `starts` in order groups; the VMs that failed, with why.
async fn start_groups(d: &Arc<Daemon>, mut starts: Vec<Start>, avoid: &[String]) -> Vec<(Start, ApiError)> {
    starts.sort_by_key(|s| (order_key(s.order), s.uuid.clone()));
    let mut failed = Vec::new();
    let mut groups: Vec<Vec<Start>> = Vec::new();
    for s in starts {
        match groups.last_mut() {
            Some(g) if g[0].order == s.order => g.push(s),
            _ => groups.push(vec![s]),
        }
    }
    // Hosts that said they are not online in the liveset (`HOST_OFFLINE`:
    // one that booted again while the liveset still holds its previous
    // boot) get no more starts in this pass.
    let refused: Arc<std::sync::Mutex<Vec<String>>> = Arc::new(std::sync::Mutex::new(avoid.to_vec()));
    for group in groups {
        let tasks: Vec<_> = group
            .into_iter()
            .map(|s| {
                let (d, refused) = (d.clone(), refused.clone());
                tokio::spawn(async move {
                    use crate::ops::vm::start_vm_avoiding;
                    let avoid = || refused.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    let note = |r: &Result<(), ApiError>| {
                        if let Err(e) = r {
                            if e.code == xapi_proto::codes::HOST_OFFLINE {
                                let mut list = refused.lock().unwrap_or_else(|p| p.into_inner());
                                list.extend(e.params.first().cloned());
                            }
                        }
                    };
                    let planned = s.host.as_deref().filter(|h| !avoid().iter().any(|a| a == h));
                    let mut r = start_vm_avoiding(&d, &s.vm_ref, planned, false, &avoid()).await;
                    note(&r);
                    let mut again = planned.is_some();
                    for _ in 0..2 {
                        let offline = r.as_ref().is_err_and(|e| e.code == xapi_proto::codes::HOST_OFFLINE);
                        if r.is_ok() || !(again || offline) {
                            break;
                        }
                        // The planned host refused (memory moved), or the
                        // chosen one is not online: anywhere else.
                        again = false;
                        r = start_vm_avoiding(&d, &s.vm_ref, None, false, &avoid()).await;
                        note(&r);
                    }
                    (s, r)
                })
            })
            .collect();
        let mut delay = 0;
        for t in tasks {
            let Ok((s, r)) = t.await else { continue };
            match r {
                Ok(()) => {
                    tracing::info!(vm = %s.uuid, order = s.order, "HA restarted a VM");
                    delay = delay.max(s.start_delay);
                }
                Err(e) => failed.push((s, e)),
            }
        }
        if delay > 0 {
            tokio::time::sleep(Duration::from_secs(delay)).await;
        }
    }
    failed
}

async fn restart_protected(d: &Arc<Daemon>, state: &mut State) {
    if !state.down_since.is_empty() {
        // Forget VMs no longer down and protected (started by hand,
        // unprotected, destroyed): their latency is no restart's.
        let m = d.model();
        let down: HashSet<&str> =
            m.vm.iter()
                .filter(|(_, v)| v.ha_always_run && v.power_state == PowerState::Halted)
                .map(|(_, v)| v.uuid.as_str())
                .collect();
        state.down_since.retain(|uuid, _| down.contains(uuid.as_str()));
    }
    let starts = plan_protected(d, state);
    if starts.is_empty() {
        return;
    }
    let now = Instant::now();
    for s in &starts {
        state.attempts.insert(s.uuid.clone(), now);
        state.down_since.entry(s.uuid.clone()).or_insert(now);
    }
    let tried: Vec<String> = starts.iter().map(|s| s.uuid.clone()).collect();
    let failed = start_groups(d, starts, &state.lapsed).await;
    let failed_uuids: HashSet<&String> = failed.iter().map(|(s, _)| &s.uuid).collect();
    for uuid in &tried {
        if !failed_uuids.contains(uuid) {
            state.alerted.remove(uuid);
            state.attempts.remove(uuid);
            state.lease_lag.remove(uuid);
            if let Some(since) = state.down_since.remove(uuid) {
                crate::metrics::ha().restarted(since.elapsed());
            }
        }
    }
    let lag = d
        .leases()
        .view()
        .map_or(PERIOD, |v| Duration::from_millis(2 * v.timing.renew_every));
    let mut soon = false;
    for (s, e) in &failed {
        if lease_busy(e) {
            let tries = state.lease_lag.entry(s.uuid.clone()).or_insert(0);
            if *tries < LEASE_LAG_TRIES {
                *tries += 1;
                if let Some(due) = now.checked_sub(RETRY_SPACING.saturating_sub(lag)) {
                    state.attempts.insert(s.uuid.clone(), due);
                }
                tracing::info!(vm = %s.uuid, "the VM's new host still sees its lease held: trying again in {lag:?}");
                soon = true;
                continue;
            }
        }
        tracing::warn!(vm = %s.uuid, "HA could not restart a protected VM: {e}");
        if state.alerted.insert(s.uuid.clone()) {
            let body =
                format!("HA could not restart this protected VM ({e}); it is tried again when capacity appears.");
            if let Err(e) = alert(d, Alert::ProtectedVmRestartFailed, &s.uuid, body).await {
                tracing::warn!("cannot raise HA_PROTECTED_VM_RESTART_FAILED: {e}");
            }
        }
    }
    if soon {
        let d = d.clone();
        tokio::spawn(async move {
            tokio::time::sleep(lag).await;
            d.ha().restarts.kick();
        });
    }
}

async fn restart_best_effort(d: &Arc<Daemon>, reset: &[String], avoid: &[String]) {
    let starts: Vec<Start> = {
        let m = d.model();
        reset
            .iter()
            .filter_map(|r| m.get::<VmRecord>(r).map(|v| (r, v)))
            .filter(|(_, v)| v.ha_restart_priority == "best-effort" && v.power_state == PowerState::Halted)
            .map(|(r, v)| Start {
                vm_ref: r.clone(),
                uuid: v.uuid.clone(),
                order: v.order,
                start_delay: u64::try_from(v.start_delay).unwrap_or(0),
                host: None,
            })
            .collect()
    };
    for (s, e) in start_groups(d, starts, avoid).await {
        tracing::info!(vm = %s.uuid, "best-effort VM not restarted (one attempt): {e}");
    }
}
