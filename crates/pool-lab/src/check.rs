//! The checker of a lab pool: `xapid lab check --dir DIR`, also run at the
//! end of every chaos run.
//!
//! It reads every guest record on the shared SR and, when a chaos run left
//! its journal, what the run did, and reports four kinds of violation:
//! - **split-brain writes**: two hosts writing one VM's disk in
//!   overlapping time. Every guest continues the sequence it finds on the
//!   disk, so in file order the sequence only increases and the times never
//!   go back when the writer changes; a host still writing after another
//!   took over breaks one or the other.
//! - **lost commits**: the run's counter (the pool's `name-description`)
//!   read back lower than a value the master had acknowledged.
//! - **protected VMs down too long**: a gap in a protected VM's records
//!   longer than the failover budget, while at every moment of the gap no
//!   more hosts were failed than the pool tolerates (`ntol`). A host counts
//!   as failed from a fault until it is healed, and after that until the
//!   master reports it live again at least one budget later.
//! - **VMs shown running without writes**: the master showed a protected
//!   VM running on a host whose guest wrote nothing there for longer than
//!   T + the failover budget (its storage cut aside).
//!
//! The rules are pure functions over records and events, tested below; the
//! I/O around them is [`run`].

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use serde_json::json;

use crate::journal::{self, Event, FaultKind};
use crate::LabState;
use pool_master::driver::{self, GuestRecord};

/// What the checker found.
#[derive(Debug, Default)]
pub struct Findings {
    pub split_brain: Vec<String>,
    pub lost_commits: Vec<String>,
    pub down_too_long: Vec<String>,
    pub shown_without_writes: Vec<String>,
    /// Facts worth printing that are not violations.
    pub notes: Vec<String>,
}

impl Findings {
    pub fn clean(&self) -> bool {
        self.split_brain.is_empty()
            && self.lost_commits.is_empty()
            && self.down_too_long.is_empty()
            && self.shown_without_writes.is_empty()
    }

    /// The report, one section per kind of violation.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (title, list) in [
            ("split-brain writes", &self.split_brain),
            ("lost commits", &self.lost_commits),
            ("protected VMs down too long", &self.down_too_long),
            ("VMs shown running without writes", &self.shown_without_writes),
        ] {
            if list.is_empty() {
                out += &format!("{title}: none\n");
            } else {
                out += &format!("{title}: {}\n", list.len());
                for l in list {
                    out += &format!("  {l}\n");
                }
            }
        }
        for n in &self.notes {
            out += &format!("note: {n}\n");
        }
        out
    }
}

/// The split-brain rule on one disk's records in file order: the first
/// violation, if any, and how many there are.
pub fn split_brain(disk: &str, records: &[GuestRecord]) -> Option<String> {
    let bad: Vec<(&GuestRecord, &GuestRecord)> = records
        .windows(2)
        .map(|w| (&w[0], &w[1]))
        .filter(|(a, b)| b.seq <= a.seq || (a.host_uuid != b.host_uuid && b.unix_ms < a.unix_ms))
        .collect();
    let (a, b) = bad.first()?;
    Some(format!(
        "{disk}: host {} wrote record {} at {} ms after host {} wrote record {} at {} ms ({} such pairs)",
        b.host_uuid,
        b.seq,
        b.unix_ms,
        a.host_uuid,
        a.seq,
        a.unix_ms,
        bad.len()
    ))
}

/// The lost-commit rule: every value read back (during the run, and at the
/// end as `final_value`) is at least the last value acknowledged before it.
pub fn lost_commits(events: &[Event], final_value: Option<u64>) -> Vec<String> {
    let mut acked: Option<(u64, u64)> = None;
    let mut out = Vec::new();
    let mut check = |at: u64, seen: u64, acked: Option<(u64, u64)>| {
        if let Some((value, when)) = acked.filter(|(v, _)| seen < *v) {
            out.push(format!(
                "at {at} ms the pool's counter read {seen}, but {value} was acknowledged at {when} ms"
            ));
        }
    };
    for e in events {
        match e {
            Event::Commit { at, value } => acked = Some((*value, *at)),
            Event::Read { at, value } => check(*at, *value, acked),
            _ => {}
        }
    }
    if let Some(v) = final_value {
        check(u64::MAX, v, acked);
    }
    out
}

/// Per host, the times it counted as failed: from a fault to its heal, then
/// until the first `Live` event that lists it at least `budget` after the
/// heal (until `end` if none does).
pub fn failure_intervals(events: &[Event], budget: u64, end: u64) -> BTreeMap<String, Vec<(u64, u64)>> {
    let mut active: BTreeMap<String, (u64, usize)> = BTreeMap::new();
    let mut recovering: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut out: BTreeMap<String, Vec<(u64, u64)>> = BTreeMap::new();
    for e in events {
        match e {
            Event::Fault { at, host, .. } => {
                let from = recovering.remove(host).map_or(*at, |(from, _)| from);
                let entry = active.entry(host.clone()).or_insert((from, 0));
                entry.1 += 1;
            }
            Event::Heal { at, host, .. } => {
                if let Some((from, n)) = active.get_mut(host) {
                    *n -= 1;
                    if *n == 0 {
                        recovering.insert(host.clone(), (*from, *at));
                        active.remove(host);
                    }
                }
            }
            Event::Live { at, hosts, .. } => {
                for h in hosts {
                    if recovering.get(h).is_some_and(|(_, healed)| *at >= healed + budget) {
                        let (from, _) = recovering.remove(h).unwrap_or_default();
                        out.entry(h.clone()).or_default().push((from, *at));
                    }
                }
            }
            _ => {}
        }
    }
    let open = active.into_iter().map(|(h, (from, _))| (h, from));
    for (h, from) in open.chain(recovering.into_iter().map(|(h, (from, _))| (h, from))) {
        out.entry(h).or_default().push((from, end));
    }
    out
}

/// The most hosts failed at one moment of `[a, b]`.
pub fn max_failed(intervals: &BTreeMap<String, Vec<(u64, u64)>>, a: u64, b: u64) -> usize {
    let all: Vec<(u64, u64)> = intervals.values().flatten().copied().collect();
    // The count only rises at an interval's start, so look there and at `a`.
    std::iter::once(a)
        .chain(all.iter().map(|(s, _)| *s).filter(|s| *s > a && *s <= b))
        .map(|t| all.iter().filter(|(s, e)| *s <= t && t <= *e).count())
        .max()
        .unwrap_or(0)
}

/// Per host, when its storage was cut: from the fault to one `budget`
/// after its heal (until `end` if never healed).
pub fn storage_cuts(events: &[Event], budget: u64, end: u64) -> BTreeMap<String, Vec<(u64, u64)>> {
    let mut open: BTreeMap<String, u64> = BTreeMap::new();
    let mut out: BTreeMap<String, Vec<(u64, u64)>> = BTreeMap::new();
    for e in events {
        match e {
            Event::Fault {
                at,
                host,
                fault: FaultKind::Storage,
            } => {
                open.entry(host.clone()).or_insert(*at);
            }
            Event::Heal {
                at,
                host,
                fault: FaultKind::Storage,
            } => {
                if let Some(from) = open.remove(host) {
                    out.entry(host.clone()).or_default().push((from, at + budget));
                }
            }
            _ => {}
        }
    }
    for (h, from) in open {
        out.entry(h).or_default().push((from, end));
    }
    out
}

/// The shown-without-writes rule for one protected VM: the master showed
/// it running on a host (the `Live` events) while its guest wrote nothing
/// there for longer than `bound` (T + the failover budget). The pool then
/// believed a dead guest was running, and HA did not restart it (a host
/// lost while the pool formed was never judged). The time since the later
/// of the host's last write and the start of the run of observations
/// showing it there counts; a host whose storage was cut (`cuts`) is left
/// out, as its guests stall on I/O while HA keeps the host, as XAPI does.
pub fn shown_without_writes(
    vm: &str,
    events: &[Event],
    records: &[GuestRecord],
    bound: u64,
    cuts: &BTreeMap<String, Vec<(u64, u64)>>,
) -> Vec<String> {
    let mut out = Vec::new();
    // The current run: where it is shown, since when, and whether reported.
    let mut run: Option<(&journal::Resident, u64, bool)> = None;
    for e in events {
        let Event::Live { at, running, .. } = e else { continue };
        let Some(r) = running.get(vm) else {
            run = None;
            continue;
        };
        if run.is_none_or(|(h, _, _)| h.host_uuid != r.host_uuid) {
            run = Some((r, *at, false));
        }
        let Some((h, from, reported)) = run.as_mut() else {
            continue;
        };
        let last_write = records
            .iter()
            .filter(|w| w.vm_uuid == vm && w.host_uuid == h.host_uuid && w.unix_ms <= *at)
            .map(|w| w.unix_ms)
            .max();
        let since = last_write.map_or(*from, |w| w.max(*from));
        let cut = cuts
            .get(&h.host)
            .is_some_and(|c| c.iter().any(|(a, b)| *a <= *at && since <= *b));
        if *at - since > bound && !cut && !*reported {
            *reported = true;
            out.push(format!(
                "VM {vm} was shown running on {} at {at} ms, with no write there for {:.1} s (since {since} ms); the bound is {:.1} s",
                h.host,
                (*at - since) as f64 / 1000.0,
                bound as f64 / 1000.0
            ));
        }
    }
    out
}

/// What the down-too-long rule needs of a run.
pub struct Window {
    pub start: u64,
    pub end: u64,
    pub budget: u64,
    pub ntol: u64,
}

/// The down-too-long rule for one protected VM: every gap longer than the
/// budget between its writes (and from the window's start, and up to its
/// end) during which no more than `ntol` hosts were failed at once.
pub fn down_too_long(
    vm: &str,
    write_times: &[u64],
    w: &Window,
    intervals: &BTreeMap<String, Vec<(u64, u64)>>,
) -> Vec<String> {
    let mut points: Vec<u64> = write_times
        .iter()
        .copied()
        .filter(|t| *t >= w.start && *t <= w.end)
        .collect();
    points.sort_unstable();
    points.insert(0, w.start);
    points.push(w.end);
    points
        .windows(2)
        .filter(|p| p[1] - p[0] > w.budget)
        .filter(|p| max_failed(intervals, p[0], p[1]) as u64 <= w.ntol)
        .map(|p| {
            format!(
                "VM {vm} wrote nothing for {:.1} s (from {} ms to {} ms) with at most {} host(s) failed; the budget is {:.1} s",
                (p[1] - p[0]) as f64 / 1000.0,
                p[0],
                p[1],
                max_failed(intervals, p[0], p[1]),
                w.budget as f64 / 1000.0
            )
        })
        .collect()
}

/// Every guest record on the SR folder, by disk file name, in file order.
pub fn disks(sr: &Path) -> Result<BTreeMap<String, Vec<GuestRecord>>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(sr).with_context(|| format!("cannot read the SR folder {}", sr.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "disk") {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            out.insert(
                name,
                driver::read_records(&path).with_context(|| format!("reading {}", path.display()))?,
            );
        }
    }
    Ok(out)
}

/// The counter a chaos run writes into the pool's `name-description`.
pub fn counter_text(value: u64) -> String {
    format!("chaos commit {value}")
}

/// The counter in a `name-description`; 0 when it holds none.
pub fn parse_counter(text: &str) -> u64 {
    text.strip_prefix("chaos commit ")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Read the pool's counter through whichever host answers.
pub async fn read_counter(state: &LabState) -> Result<u64> {
    let mut c = crate::connect_any(state, Duration::from_secs(3)).await?;
    let pool = crate::first(&c.call("pool.get_all", vec![]).await?)?;
    let d = c.call("pool.get_name_description", vec![json!(pool)]).await?;
    c.logout().await;
    Ok(parse_counter(d.as_str().unwrap_or_default()))
}

/// Check the lab in `state.dir`; `now` closes the chaos window.
pub async fn findings(state: &LabState, now: u64) -> Result<Findings> {
    let mut f = Findings::default();
    let disks = disks(&state.dir.join("sr"))?;
    let total: usize = disks.values().map(Vec::len).sum();
    f.split_brain = disks
        .iter()
        .filter_map(|(name, recs)| split_brain(name, recs))
        .collect();
    f.notes.push(format!("{} disks, {total} guest records", disks.len()));
    let events = match journal::read(&state.dir) {
        Ok(e) => e,
        Err(why) => {
            f.notes.push(format!(
                "no chaos journal ({why}): lost commits and downtime not checked"
            ));
            return Ok(f);
        }
    };
    let Some(Event::Start {
        at: start,
        ha_timeout_ms,
        budget_ms,
        ntol,
        protected,
        ..
    }) = events.first().cloned()
    else {
        return Err(anyhow!("the chaos journal does not begin with its start event"));
    };
    let end = events
        .iter()
        .find_map(|e| matches!(e, Event::End { .. }).then(|| e.at()))
        .map_or(now, |e| e.max(now));
    let final_value = match read_counter(state).await {
        Ok(v) => Some(v),
        Err(e) => {
            f.notes
                .push(format!("could not read the pool's counter at the end: {e:#}"));
            None
        }
    };
    f.lost_commits = lost_commits(&events, final_value);
    let intervals = failure_intervals(&events, budget_ms, end);
    let window = Window {
        start,
        end,
        budget: budget_ms,
        ntol,
    };
    for vm in &protected {
        let times: Vec<u64> = disks
            .values()
            .flatten()
            .filter(|r| &r.vm_uuid == vm)
            .map(|r| r.unix_ms)
            .collect();
        f.down_too_long.extend(down_too_long(vm, &times, &window, &intervals));
    }
    let cuts = storage_cuts(&events, budget_ms, end);
    let records: Vec<GuestRecord> = disks.into_values().flatten().collect();
    for vm in &protected {
        f.shown_without_writes.extend(shown_without_writes(
            vm,
            &events,
            &records,
            ha_timeout_ms + budget_ms,
            &cuts,
        ));
    }
    let count = |pred: fn(&Event) -> bool| events.iter().filter(|e| pred(e)).count();
    f.notes.push(format!(
        "{:.0} s of chaos: {} faults, {} guest halts, {} commits acknowledged, {} protected VMs",
        (end - start) as f64 / 1000.0,
        count(|e| matches!(e, Event::Fault { .. })),
        count(|e| matches!(e, Event::GuestHalt { .. })),
        count(|e| matches!(e, Event::Commit { .. })),
        protected.len()
    ));
    Ok(f)
}

/// `xapid lab check --dir DIR`: print the findings; an error when any
/// violation was found.
pub async fn run(dir: &Path) -> Result<()> {
    let state = LabState::load(dir)?;
    let f = findings(&state, driver::unix_ms()).await?;
    print!("{}", f.render());
    if f.clean() {
        Ok(())
    } else {
        Err(anyhow!(
            "the lab pool in {} broke a safety or availability rule",
            dir.display()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::FaultKind;

    fn rec(seq: u64, ms: u64, host: &str) -> GuestRecord {
        GuestRecord {
            seq,
            unix_ms: ms,
            host_uuid: host.into(),
            vm_uuid: "vm".into(),
        }
    }

    #[test]
    fn a_clean_handover_is_not_split_brain() {
        let recs = [rec(1, 100, "a"), rec(2, 200, "a"), rec(3, 900, "b"), rec(4, 1000, "b")];
        assert_eq!(split_brain("d", &recs), None);
    }

    #[test]
    fn an_old_writer_continuing_is_split_brain() {
        // b took over at 3; a, still running, writes its own 3.
        let recs = [rec(1, 100, "a"), rec(2, 200, "a"), rec(3, 300, "b"), rec(3, 310, "a")];
        let found = split_brain("d", &recs).unwrap();
        assert!(found.contains("host a wrote record 3"), "{found}");
        // Times going back across writers, even with a rising sequence.
        let recs = [rec(1, 100, "a"), rec(2, 500, "b"), rec(3, 400, "a")];
        assert!(split_brain("d", &recs).unwrap().contains("1 such pairs"));
    }

    fn fault(at: u64, host: &str) -> Event {
        Event::Fault {
            at,
            host: host.into(),
            fault: FaultKind::Network,
        }
    }
    fn heal(at: u64, host: &str) -> Event {
        Event::Heal {
            at,
            host: host.into(),
            fault: FaultKind::Network,
        }
    }
    fn live(at: u64, hosts: &[&str]) -> Event {
        Event::Live {
            at,
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            running: BTreeMap::new(),
        }
    }

    /// The master shows "vm" running on `host` (uuid and name alike).
    fn shown(at: u64, host: Option<&str>) -> Event {
        let running = host
            .map(|h| {
                let r = journal::Resident {
                    host_uuid: h.into(),
                    host: h.into(),
                };
                BTreeMap::from([("vm".to_string(), r)])
            })
            .unwrap_or_default();
        Event::Live {
            at,
            hosts: vec!["a".into(), "b".into()],
            running,
        }
    }

    #[test]
    fn a_vm_shown_running_where_it_stopped_writing_is_caught() {
        // Written on a every second up to 10 s, then silent; the master
        // keeps showing it on a until 40 s. Bound 20 s: caught at 31 s.
        let recs: Vec<GuestRecord> = (1..=10).map(|i| rec(i, i * 1000, "a")).collect();
        let events: Vec<Event> = (1..=40).map(|i| shown(i * 1000, Some("a"))).collect();
        let found = shown_without_writes("vm", &events, &recs, 20_000, &BTreeMap::new());
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("on a at 31000 ms"), "{}", found[0]);
        // Restarted on b at 25 s: b's run starts then, and b writes.
        let mut recs2 = recs.clone();
        recs2.extend((26..=40).map(|i| rec(i, i * 1000, "b")));
        let moved: Vec<Event> = (1..=40)
            .map(|i| shown(i * 1000, Some(if i < 25 { "a" } else { "b" })))
            .collect();
        assert!(shown_without_writes("vm", &moved, &recs2, 20_000, &BTreeMap::new()).is_empty());
        // Shown halted meanwhile: nothing to report either.
        let halted: Vec<Event> = (1..=40).map(|i| shown(i * 1000, (i < 25).then_some("a"))).collect();
        assert!(shown_without_writes("vm", &halted, &recs, 20_000, &BTreeMap::new()).is_empty());
    }

    #[test]
    fn a_vm_stalled_by_its_hosts_storage_cut_is_not_reported() {
        let recs: Vec<GuestRecord> = (1..=10).map(|i| rec(i, i * 1000, "a")).collect();
        let mut events = vec![Event::Fault {
            at: 10_500,
            host: "a".into(),
            fault: FaultKind::Storage,
        }];
        events.extend((11..=40).map(|i| shown(i * 1000, Some("a"))));
        let cuts = storage_cuts(&events, 5_000, 50_000);
        assert_eq!(cuts["a"], vec![(10_500, 50_000)]);
        assert!(shown_without_writes("vm", &events, &recs, 20_000, &cuts).is_empty());
    }

    #[test]
    fn a_host_is_failed_until_seen_live_a_budget_after_its_heal() {
        let events = [
            fault(100, "h2"),
            live(150, &["h1", "h2"]),
            heal(200, "h2"),
            // Still listed before the master noticed: not yet recovered.
            live(250, &["h1", "h2"]),
            live(400, &["h1"]),
            live(1300, &["h1", "h2"]),
            fault(2000, "h3"),
        ];
        let iv = failure_intervals(&events, 1000, 5000);
        assert_eq!(iv["h2"], vec![(100, 1300)]);
        assert_eq!(iv["h3"], vec![(2000, 5000)]);
        assert_eq!(max_failed(&iv, 0, 99), 0);
        assert_eq!(max_failed(&iv, 0, 1000), 1);
        assert_eq!(max_failed(&iv, 1200, 2500), 1);
        let events2 = [fault(100, "h2"), fault(150, "h3"), heal(300, "h2"), heal(300, "h3")];
        assert_eq!(max_failed(&failure_intervals(&events2, 10, 1000), 0, 1000), 2);
    }

    #[test]
    fn downtime_is_judged_against_the_failures_in_force() {
        let w = Window {
            start: 0,
            end: 10_000,
            budget: 1000,
            ntol: 1,
        };
        let one = failure_intervals(
            &[fault(2000, "h2"), heal(3000, "h2"), live(5000, &["h2"])],
            1000,
            10_000,
        );
        // Writes every 100 ms but for a 2.6 s hole: too long even with one failure.
        let mut times: Vec<u64> = (0..100)
            .map(|i| i * 100)
            .filter(|t| !(2100..4600).contains(t))
            .collect();
        let found = down_too_long("vm", &times, &w, &one);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("2.6 s"), "{found:?}");
        // A hole of 0.9 s is within budget.
        times = (0..100)
            .map(|i| i * 100)
            .filter(|t| !(2100..2900).contains(t))
            .collect();
        assert!(down_too_long("vm", &times, &w, &one).is_empty());
        // With two hosts failed during the hole it is excused.
        let two = failure_intervals(
            &[fault(2000, "h2"), fault(2500, "h3"), heal(3000, "h2"), heal(3000, "h3")],
            1000,
            10_000,
        );
        times = (0..100)
            .map(|i| i * 100)
            .filter(|t| !(2100..4600).contains(t))
            .collect();
        assert!(down_too_long("vm", &times, &w, &two).is_empty());
        // A VM that never came back is down up to the window's end.
        times = (0..30).map(|i| i * 100).collect();
        assert_eq!(down_too_long("vm", &times, &w, &one).len(), 1);
    }

    #[test]
    fn a_counter_read_below_an_acknowledged_value_is_a_lost_commit() {
        let events = [
            Event::Commit { at: 1, value: 1 },
            Event::Read { at: 2, value: 1 },
            Event::Commit { at: 3, value: 2 },
            Event::Read { at: 4, value: 3 },
        ];
        assert!(lost_commits(&events, Some(3)).is_empty());
        assert_eq!(lost_commits(&events, Some(1)).len(), 1);
        let rolled_back = [Event::Commit { at: 1, value: 5 }, Event::Read { at: 2, value: 4 }];
        assert!(lost_commits(&rolled_back, None)[0].contains("read 4, but 5"));
        assert_eq!(parse_counter(&counter_text(42)), 42);
        assert_eq!(parse_counter("A pool"), 0);
    }
}
