//! The chaos run: `xapid lab chaos --dir DIR --seed S --duration D`.
//!
//! On a running lab pool with HA on, it protects every VM, then for the
//! given time injects random faults (power off and on, network cut and
//! heal, storage cut and heal, the host's process frozen with SIGSTOP and
//! thawed with SIGCONT) and guest halts, while a second task commits a
//! counter to the pool database once a second and reads it back before
//! each commit, and a third records which hosts the master reports live.
//! Everything goes to the journal (`DIR/chaos.jsonl`). At the end it heals
//! every fault, waits for the pool to settle and runs the checker.
//!
//! The seed fixes the sequence of decisions (what to do, to which host, for
//! how long); the pool's timing decides which of them find their host
//! healthy, so a replay injects the same schedule, not the same history.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tokio::sync::watch;
use xapi_proto::records::{HostRecord, PoolRecord, PowerState, VmRecord};

use crate::journal::{self, Event, FaultKind, Resident};
use crate::{apply, check, connect_any, first, FaultAction, LabState};
use pool_master::driver::unix_ms;

/// What `xapid lab chaos` was asked for.
#[derive(Debug, Clone)]
pub struct ChaosOptions {
    pub dir: PathBuf,
    pub seed: u64,
    pub duration: Duration,
}

/// Time allowed, beyond detection and the fence wait, for a new master to
/// take over and the restart executor to start the VMs.
const RESTART_ALLOWANCE: Duration = Duration::from_secs(15);

/// How often the commit and liveness tasks act.
const COMMIT_EVERY: Duration = Duration::from_secs(1);
const LIVE_EVERY: Duration = Duration::from_secs(1);

/// Each API call of the run is bounded by this.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// The journal, shared by the run's tasks.
#[derive(Clone)]
struct Journal(Arc<Mutex<journal::Writer>>);

impl Journal {
    fn log(&self, e: Event) {
        let mut w = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(err) = w.append(&e) {
            eprintln!("cannot write the chaos journal: {err}");
        }
    }
}

/// What the run learned of the pool before it began.
struct Pool {
    t: Duration,
    ntol: u64,
    budget: Duration,
    /// Protected VMs: uuid → name.
    protected: BTreeMap<String, String>,
}

/// A fault in force, healed at `until`.
struct Active {
    host: usize,
    kind: FaultKind,
    until: Instant,
    /// The frozen process of a pause.
    pid: Option<u32>,
}

/// Run chaos on the lab in `opts.dir`; an error when the checker finds a
/// violation.
pub async fn run(opts: ChaosOptions) -> Result<()> {
    let state = LabState::load(&opts.dir)?;
    let pool = prepare(&state).await?;
    println!(
        "Chaos on {} hosts for {} s, seed {}: T = {} s, {} host failure(s) tolerated, failover budget {:.1} s, {} protected VMs.",
        state.hosts.len(),
        opts.duration.as_secs(),
        opts.seed,
        pool.t.as_secs(),
        pool.ntol,
        pool.budget.as_secs_f64(),
        pool.protected.len()
    );
    let journal = Journal(Arc::new(Mutex::new(journal::Writer::create(&opts.dir)?)));
    journal.log(Event::Start {
        at: unix_ms(),
        seed: opts.seed,
        ha_timeout_ms: pool.t.as_millis() as u64,
        ntol: pool.ntol,
        budget_ms: pool.budget.as_millis() as u64,
        protected: pool.protected.keys().cloned().collect(),
        hosts: state.hosts.iter().map(|h| h.name.clone()).collect(),
    });
    let live: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(state.hosts.iter().map(|h| h.name.clone()).collect()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let committer = tokio::spawn(commit_loop(state.clone(), journal.clone(), stop_rx.clone()));
    let watcher = tokio::spawn(live_loop(state.clone(), journal.clone(), live.clone(), stop_rx));

    let interrupted = inject(&opts, &state, &pool, &journal, &live).await;
    journal.log(Event::End { at: unix_ms() });
    if interrupted {
        let _ = stop_tx.send(true);
        let _ = tokio::join!(committer, watcher);
        bail!(
            "interrupted; every fault was healed. Check the pool with: xapid lab check --dir {}",
            opts.dir.display()
        );
    }
    println!("Every fault healed; waiting for the pool to settle...");
    let settled = settle(&state, &pool, &live).await;
    let _ = stop_tx.send(true);
    let _ = tokio::join!(committer, watcher);
    let findings = check::findings(&state, unix_ms()).await?;
    print!("{}", findings.render());
    if let Err(why) = &settled {
        println!("not settled: {why}");
    }
    if !findings.clean() {
        bail!(
            "the chaos run broke a safety or availability rule (seed {}, journal {})",
            opts.seed,
            journal::path(&opts.dir).display()
        );
    }
    settled.map_err(|why| anyhow!("the pool did not settle after the chaos run: {why}"))
}

/// Check HA is on, protect and start every VM, keep one host failure
/// tolerated where a plan allows it.
async fn prepare(state: &LabState) -> Result<Pool> {
    let hint = || {
        format!(
            "start one first: xapid lab --ha --hosts 4 --vms 8 --dir {}",
            state.dir.display()
        )
    };
    let mut c = connect_any(state, Duration::from_secs(5))
        .await
        .with_context(|| format!("the lab pool does not answer; {}", hint()))?;
    let pool_ref = first(&c.call("pool.get_all", vec![]).await?)?;
    let pool: PoolRecord = serde_json::from_value(c.call("pool.get_record", vec![json!(pool_ref)]).await?)?;
    if !pool.ha_enabled {
        bail!("HA is off in the lab pool: run `xe pool-ha-enable`, or {}", hint());
    }
    let t_s = ha_liveness::effective_timeout_s(pool.ha_configuration.get("timeout").and_then(|t| t.parse().ok()));
    let timeouts = ha_liveness::Timeouts::derive(t_s, true).map_err(|e| anyhow!("the pool's HA timeout: {e}"))?;
    let mut ntol = pool.ha_host_failures_to_tolerate.max(0) as u64;
    if ntol == 0 {
        match c
            .call("pool.set_ha_host_failures_to_tolerate", vec![json!(pool_ref), json!(1)])
            .await
        {
            Ok(_) => ntol = 1,
            Err(e) => println!("The pool cannot tolerate a host failure ({e}); every fault excuses downtime."),
        }
    }
    let vms: BTreeMap<String, VmRecord> = serde_json::from_value(c.call("VM.get_all_records", vec![]).await?)?;
    let mut protected = BTreeMap::new();
    for (r, vm) in vms.iter().filter(|(_, v)| !v.is_a_template && !v.is_control_domain) {
        let done = async {
            if vm.ha_restart_priority != "restart" {
                c.call("VM.set_ha_restart_priority", vec![json!(r), json!("restart")])
                    .await?;
            }
            if vm.power_state == PowerState::Halted {
                c.call("VM.start", vec![json!(r), json!(false), json!(false)]).await?;
            }
            Ok::<_, xapi_client::ClientError>(())
        }
        .await;
        match done {
            Ok(()) => {
                protected.insert(vm.uuid.clone(), vm.name_label.clone());
            }
            Err(e) => println!("{} stays unprotected: {e}", vm.name_label),
        }
    }
    c.logout().await;
    if protected.is_empty() {
        bail!("the lab pool has no VM to protect; {}", hint());
    }
    let budget = Duration::from_millis(timeouts.hb_timeout + timeouts.fence_wait(true)) + RESTART_ALLOWANCE;
    Ok(Pool {
        t: Duration::from_millis(timeouts.t),
        ntol,
        budget,
        protected,
    })
}

/// The fault schedule; true when interrupted by Ctrl-C or SIGTERM.
async fn inject(
    opts: &ChaosOptions,
    state: &LabState,
    pool: &Pool,
    journal: &Journal,
    live: &Mutex<Vec<String>>,
) -> bool {
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let t = pool.t;
    let start = Instant::now();
    let mut active: Vec<Active> = Vec::new();
    // Healed hosts, with when: they count as recovering for one budget.
    let mut healed: BTreeMap<usize, Instant> = BTreeMap::new();
    let mut next = start + t;
    let signal = crate::wait_for_signal();
    tokio::pin!(signal);
    let interrupted = loop {
        tokio::select! {
            _ = &mut signal => break true,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
        let now = Instant::now();
        let (due, kept): (Vec<Active>, Vec<Active>) = active.drain(..).partition(|a| a.until <= now);
        active = kept;
        for a in due {
            heal(state, &a, journal, start);
            healed.insert(a.host, now);
        }
        if now >= start + opts.duration {
            break false;
        }
        if now < next {
            continue;
        }
        next = now + rng.random_range(t..=t * 3);
        // Every decision draws the same numbers whatever the pool does.
        let roll: f64 = rng.random();
        let host = rng.random_range(0..state.hosts.len());
        let kind = FaultKind::ALL[rng.random_range(0..FaultKind::ALL.len())];
        let length = rng.random_range(t / 2..=t * 4);
        let vm = rng.random_range(0..pool.protected.len());
        let live_now = live.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let is_failed = |i: usize| {
            active.iter().any(|a| a.host == i)
                || healed.get(&i).is_some_and(|h| h.elapsed() < pool.budget)
                || !live_now.contains(&state.hosts[i].name)
        };
        let failed = (0..state.hosts.len()).filter(|i| is_failed(*i)).count();
        let healthy = !is_failed(host);
        let fault_now = if failed == 0 {
            roll < 0.75
        } else {
            roll < 0.1 && failed < 2
        };
        if fault_now && healthy {
            match inject_one(state, host, kind, journal, start) {
                Ok(pid) => active.push(Active {
                    host,
                    kind,
                    until: now + length,
                    pid,
                }),
                Err(e) => eprintln!("cannot inject {} on {}: {e:#}", kind.name(), state.hosts[host].name),
            }
        } else if !fault_now && roll < 0.95 && roll > 0.75 {
            let (uuid, name) = pool.protected.iter().nth(vm).expect("index within the map");
            let marker = state.dir.join("sr").join(format!("{uuid}.halt"));
            match std::fs::write(&marker, b"") {
                Ok(()) => {
                    say(start, &format!("guest halt: {name}"));
                    journal.log(Event::GuestHalt {
                        at: unix_ms(),
                        vm: uuid.clone(),
                    });
                }
                Err(e) => eprintln!("cannot halt {name}: {e}"),
            }
        }
    };
    for a in active.drain(..) {
        heal(state, &a, journal, start);
    }
    interrupted
}

/// Inject `kind` on host `i`; the frozen pid of a pause.
fn inject_one(state: &LabState, i: usize, kind: FaultKind, journal: &Journal, start: Instant) -> Result<Option<u32>> {
    // The pid changes at every boot: read the lab's current state.
    let fresh = LabState::load(&state.dir)?;
    let h = &fresh.hosts[i];
    let mut pid = None;
    let what = match kind {
        FaultKind::Power => apply(&fresh, i, FaultAction::PowerOff)?,
        FaultKind::Network => apply(&fresh, i, FaultAction::CutNetwork)?,
        FaultKind::Storage => apply(&fresh, i, FaultAction::CutStorage)?,
        FaultKind::Pause => {
            let p = h
                .pid
                .filter(|p| crate::process_alive(*p))
                .ok_or_else(|| anyhow!("{} has no process", h.name))?;
            kill(Pid::from_raw(p as i32), Signal::SIGSTOP)?;
            pid = Some(p);
            format!("{} frozen (pid {p}).", h.name)
        }
    };
    journal.log(Event::Fault {
        at: unix_ms(),
        host: h.name.clone(),
        fault: kind,
    });
    say(start, &format!("fault: {what}"));
    Ok(pid)
}

fn heal(state: &LabState, a: &Active, journal: &Journal, start: Instant) {
    let h = &state.hosts[a.host];
    let done = match a.kind {
        FaultKind::Power => apply(state, a.host, FaultAction::PowerOn),
        FaultKind::Network => apply(state, a.host, FaultAction::RestoreNetwork),
        FaultKind::Storage => apply(state, a.host, FaultAction::RestoreStorage),
        FaultKind::Pause => {
            let p = a.pid.unwrap_or_default();
            // A process that died meanwhile needs nothing.
            let _ = kill(Pid::from_raw(p as i32), Signal::SIGCONT);
            Ok(format!("{} thawed (pid {p}).", h.name))
        }
    };
    match done {
        Ok(what) => {
            journal.log(Event::Heal {
                at: unix_ms(),
                host: h.name.clone(),
                fault: a.kind,
            });
            say(start, &format!("heal:  {what}"));
        }
        Err(e) => eprintln!("cannot heal {} on {}: {e:#}", a.kind.name(), h.name),
    }
}

/// One line of the run's output, stamped with the seconds since it began.
fn say(start: Instant, what: &str) {
    println!("{:>7.1} s  {what}", start.elapsed().as_secs_f64());
}

/// Commit the counter once a second, reading it back first.
async fn commit_loop(state: LabState, journal: Journal, mut stop: watch::Receiver<bool>) {
    let mut attempted = 0u64;
    let mut client = None;
    while !*stop.borrow() {
        let step = async {
            if client.is_none() {
                client = Some(connect_any(&state, CALL_TIMEOUT).await?);
            }
            let c = client.as_mut().expect("connected above");
            let pool = first(&c.call("pool.get_all", vec![]).await?)?;
            let text = c.call("pool.get_name_description", vec![json!(pool)]).await?;
            let read = check::parse_counter(text.as_str().unwrap_or_default());
            journal.log(Event::Read {
                at: unix_ms(),
                value: read,
            });
            attempted = attempted.max(read) + 1;
            c.call(
                "pool.set_name_description",
                vec![json!(pool), json!(check::counter_text(attempted))],
            )
            .await?;
            journal.log(Event::Commit {
                at: unix_ms(),
                value: attempted,
            });
            Ok::<_, anyhow::Error>(())
        };
        if step.await.is_err() {
            // The master may have moved: find it again next time.
            client = None;
        }
        tokio::select! {
            _ = stop.changed() => {}
            _ = tokio::time::sleep(COMMIT_EVERY) => {}
        }
    }
}

/// Record the hosts the master reports live, once a second.
async fn live_loop(state: LabState, journal: Journal, live: Arc<Mutex<Vec<String>>>, mut stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        if let Ok((hosts, running)) = live_hosts(&state).await {
            *live.lock().unwrap_or_else(|p| p.into_inner()) = hosts.clone();
            journal.log(Event::Live {
                at: unix_ms(),
                hosts,
                running,
            });
        }
        tokio::select! {
            _ = stop.changed() => {}
            _ = tokio::time::sleep(LIVE_EVERY) => {}
        }
    }
}

/// The names of the hosts the master reports live, and the host (uuid) it
/// shows each running VM (uuid) on.
async fn live_hosts(state: &LabState) -> Result<(Vec<String>, BTreeMap<String, Resident>)> {
    let mut c = connect_any(state, CALL_TIMEOUT).await?;
    let all: BTreeMap<String, HostRecord> = serde_json::from_value(c.call("host.get_all_records", vec![]).await?)?;
    let vms: BTreeMap<String, VmRecord> = serde_json::from_value(c.call("VM.get_all_records", vec![]).await?)?;
    c.logout().await;
    let running = vms
        .into_values()
        .filter(|v| v.power_state == PowerState::Running)
        .filter_map(|v| {
            let h = all.get(&v.resident_on)?;
            let r = Resident {
                host_uuid: h.uuid.clone(),
                host: h.name_label.clone(),
            };
            Some((v.uuid, r))
        })
        .collect();
    let mut names: Vec<String> = all.into_values().filter(|h| h.live).map(|h| h.name_label).collect();
    names.sort();
    Ok((names, running))
}

/// Wait until every host is live and every protected VM runs and writes.
async fn settle(state: &LabState, pool: &Pool, live: &Mutex<Vec<String>>) -> Result<(), String> {
    let limit = pool.budget * 2 + Duration::from_secs(60);
    let start = Instant::now();
    let sr = state.dir.join("sr");
    loop {
        let live_now = live.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let down_hosts: Vec<&str> = state
            .hosts
            .iter()
            .map(|h| h.name.as_str())
            .filter(|n| !live_now.iter().any(|l| l == n))
            .collect();
        let now = unix_ms();
        let recent = check::disks(&sr).map(|disks| {
            let mut last: BTreeMap<&str, u64> = BTreeMap::new();
            for r in disks.values().flatten() {
                let e = last.entry(r.vm_uuid.as_str()).or_default();
                *e = (*e).max(r.unix_ms);
            }
            pool.protected
                .iter()
                .filter(|(uuid, _)| last.get(uuid.as_str()).is_none_or(|t| now.saturating_sub(*t) > 2000))
                .map(|(_, name)| name.clone())
                .collect::<Vec<_>>()
        });
        let down_vms = recent.map_err(|e| format!("{e:#}"))?;
        if down_hosts.is_empty() && down_vms.is_empty() {
            println!("Settled after {:.1} s.", start.elapsed().as_secs_f64());
            return Ok(());
        }
        if start.elapsed() > limit {
            return Err(format!(
                "after {} s, hosts not live: [{}]; protected VMs not writing: [{}]",
                limit.as_secs(),
                down_hosts.join(", "),
                down_vms.join(", ")
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Parse a duration given as seconds (`90`) or with a unit (`30m`, `2h`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let (num, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{text}' is not a duration: use seconds (90) or 90s, 30m, 2h"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("'{text}' has an unknown unit: use s, m or h")),
    };
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_duration("1d").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("").is_err());
    }
}
