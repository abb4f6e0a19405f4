//! Failover benchmark on a real 3-host lab pool: 50 protected VMs, HA on
//! with T = 10 s (or `FAILOVER_T`). Each run faults the host that runs the most VMs (its
//! power, its network cable, its storage or its xapid) and measures, from the fault
//! to the first guest write of each of its VMs on another host, the time
//! until the last one is back. The fault is healed and the host rejoins
//! before the next run.
//!
//! Run: `cargo bench -p pool-master --bench failover`. Environment:
//! - `FAILOVER_RUNS=N`: runs per kind of fault (10);
//! - `FAILOVER_VMS=N`: protected VMs (50);
//! - `FAILOVER_KINDS=power,network,storage,freeze`: the kinds, in turn
//!   (power); `freeze` stops the host's xapid (SIGSTOP) and thaws it after;
//! - `FAILOVER_NETNS=1`: each host in its own network namespace, so the
//!   network fault is a real link going down (root, iproute2, nftables);
//! - `FAILOVER_T=S`: the HA timeout in seconds (10; XAPI's default is 60);
//! - `FAILOVER_VICTIM=member`: fault only hosts that are not the master
//!   (the host of a member's protected VMs restarts them as soon as its
//!   lease lapses; a dead master's VMs wait for the next master);
//!   `FAILOVER_VICTIM=master`: fault only the master, whatever it runs;
//! - `FAILOVER_KEEP_LAB=S`: on a failure, keep the lab up S seconds for a
//!   look before the bench ends;
//! - `FAILOVER_DRIVER=qemu`: real QEMU guests (the test guest of
//!   guest/build.sh, 128 MiB each) instead of sim guests; the time is then
//!   also split into "restarted" (the master shows every VM running on
//!   another host) and "guest boot" (from there to the last first write).
//!
//! Each run also counts how often the hosts not faulted paused their
//! guests (their lease's deadline passed; the goal is never), from their
//! logs. About a minute per run at T = 10 s, three at T = 60 s.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pool_master::driver::{read_records, unix_ms};
use serde_json::{json, Value};
use xapi_client::Client;

mod common;
use common::Lab;

const DEFAULT_VMS: usize = 50;
const DEFAULT_T_S: u64 = 10;

/// The `xapid lab` actions that inject and heal a kind of fault.
fn fault_actions(kind: &str) -> Option<(&'static str, &'static str)> {
    match kind {
        "power" => Some(("power-off", "power-on")),
        "network" => Some(("cut-network", "restore-network")),
        "storage" => Some(("cut-storage", "restore-storage")),
        "freeze" => Some(("freeze", "thaw")),
        _ => None,
    }
}

/// Why a host's guests pause: its lease's deadline passed (`crate::lease`).
const PAUSE_LINE: &str = "its guests pause";

/// Each host's log length now, by host directory name.
fn log_lengths(lab: &Path) -> BTreeMap<String, u64> {
    std::fs::read_dir(lab.join("hosts"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let len = std::fs::metadata(e.path().join("xapid.log")).ok()?.len();
            Some((e.file_name().to_string_lossy().into_owned(), len))
        })
        .collect()
}

/// How many times the hosts other than `victim` paused their guests since
/// the log lengths `from` (the goal: never).
fn healthy_pauses(lab: &Path, victim: &str, from: &BTreeMap<String, u64>) -> usize {
    use std::io::{Read, Seek, SeekFrom};
    let mut paused = 0;
    for (host, &start) in from.iter().filter(|(h, _)| h.as_str() != victim) {
        let Ok(mut f) = std::fs::File::open(lab.join("hosts").join(host).join("xapid.log")) else {
            continue;
        };
        let mut text = String::new();
        if f.seek(SeekFrom::Start(start)).is_ok() && f.read_to_string(&mut text).is_ok() {
            paused += text.lines().filter(|l| l.contains(PAUSE_LINE)).count();
        }
    }
    paused
}

/// When (unix ms) a host other than `victim` first acted on the fault, by
/// the logs since the lengths `from`: the master resetting a VM of
/// `vms` because its host's lease lapsed, or declaring the host `uuid`
/// dead when it left the liveset.
fn decided_at(lab: &Path, victim: &str, uuid: &str, vms: &[String], from: &BTreeMap<String, u64>) -> Option<u64> {
    use std::io::{Read, Seek, SeekFrom};
    let mut first: Option<u64> = None;
    for (host, &start) in from.iter().filter(|(h, _)| h.as_str() != victim) {
        let Ok(mut f) = std::fs::File::open(lab.join("hosts").join(host).join("xapid.log")) else {
            continue;
        };
        let mut text = String::new();
        if f.seek(SeekFrom::Start(start)).is_err() || f.read_to_string(&mut text).is_err() {
            continue;
        }
        for line in text.lines() {
            let lapsed = line.contains(LAPSE_LINE) && vms.iter().any(|v| line.contains(v.as_str()));
            let dead = line.contains(DEAD_LINE) && line.contains(uuid);
            if !(lapsed || dead) {
                continue;
            }
            let stamp = line.split_whitespace().next().unwrap_or_default();
            let Ok(at) = time::OffsetDateTime::parse(stamp, &time::format_description::well_known::Rfc3339) else {
                continue;
            };
            let ms = u64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
            first = Some(first.map_or(ms, |f| f.min(ms)));
        }
    }
    first
}

/// Every host of the lab's `n` is settled in HA, by its log: its last
/// liveset line (a fault handler's end, going online, a join) lists all
/// `n` hosts, and no fault handler started since. Live and enabled in the
/// database is not enough: with leases a host's VMs restart while the
/// liveset still holds it, and the next run's fault must not land in the
/// previous run's fault handler.
fn pool_settled(lab: &Path, n: usize) -> bool {
    (1..=n).all(|i| {
        let Ok(text) = std::fs::read_to_string(lab.join("hosts").join(format!("host{i}")).join("xapid.log")) else {
            return false;
        };
        let last = text.lines().rev().find(|l| {
            l.contains("HA: fault handler starts")
                || l.contains("HA: fault handler ends")
                || l.contains("HA: online, fencing armed")
                || l.contains("HA: Liveset has been updated")
                || l.contains("HA: joined the liveset")
        });
        match last {
            Some(l) if l.contains("fault handler starts") => false,
            Some(l) => {
                let set = l
                    .rsplit('{')
                    .next()
                    .and_then(|t| t.split('}').next())
                    .unwrap_or_default();
                set.split(',').filter(|x| !x.trim().is_empty()).count() == n
            }
            None => false,
        }
    })
}

/// The master's log lines the split is taken from.
const LAPSE_LINE: &str = "let its lease on the heartbeat SR lapse";
const DEAD_LINE: &str = "host declared dead";

/// Copy the hosts' logs out of the lab (which goes with the bench), say
/// where, and fail.
fn keep_logs_and_fail(lab: &Path, why: &str) -> ! {
    let kept = std::env::temp_dir().join(format!("failover-failed-{}", unix_ms()));
    for entry in std::fs::read_dir(lab.join("hosts")).into_iter().flatten().flatten() {
        let to = kept.join(entry.file_name());
        if std::fs::create_dir_all(&to).is_ok() {
            let _ = std::fs::copy(entry.path().join("xapid.log"), to.join("xapid.log"));
        }
    }
    if let Some(secs) = std::env::var("FAILOVER_KEEP_LAB").ok().and_then(|s| s.parse().ok()) {
        // The lab lives on for a look (its processes, its state).
        eprintln!("{why}: the lab stays up {secs} s at {}", lab.display());
        std::thread::sleep(Duration::from_secs(secs));
    }
    panic!("{why} (the hosts' logs are kept in {})", kept.display());
}

fn lab_cmd(xapid: &Path, dir: &Path, action: &str, host: &str) {
    let ok = Command::new(xapid)
        .args(["lab", action, host, "--dir"])
        .arg(dir)
        .stdout(Stdio::null())
        .status()
        .expect("xapid lab")
        .success();
    assert!(ok, "xapid lab {action} {host} failed");
}

/// A client to whichever host answers (following the master).
async fn connect(addresses: &[String], port: u16) -> Client {
    let start = Instant::now();
    loop {
        for a in addresses {
            let mut c = Client::new(a, port);
            if c.login("root", "bench").await.is_ok() {
                return c;
            }
        }
        assert!(start.elapsed() < Duration::from_secs(120), "no host answers");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn records(c: &mut Client, class: &str) -> serde_json::Map<String, Value> {
    c.call(&format!("{class}.get_all_records"), vec![])
        .await
        .expect("get_all_records")
        .as_object()
        .cloned()
        .unwrap_or_default()
}

fn field<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or_default()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runs: usize = std::env::var("FAILOVER_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let kinds: Vec<String> = std::env::var("FAILOVER_KINDS")
        .unwrap_or_else(|_| "power".into())
        .split(',')
        .map(str::to_string)
        .collect();
    for k in &kinds {
        assert!(
            fault_actions(k).is_some(),
            "FAILOVER_KINDS: unknown kind {k} (power, network, storage, freeze)"
        );
    }
    let netns = std::env::var_os("FAILOVER_NETNS").is_some();
    let t_s: u64 = std::env::var("FAILOVER_T")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_T_S);
    let vm_count: usize = std::env::var("FAILOVER_VMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_VMS);
    let qemu = std::env::var("FAILOVER_DRIVER").is_ok_and(|d| d == "qemu");
    let members_only = std::env::var("FAILOVER_VICTIM").is_ok_and(|v| v == "member");
    let master_only = std::env::var("FAILOVER_VICTIM").is_ok_and(|v| v == "master");
    let xapid = PathBuf::from(env!("CARGO_BIN_EXE_xapid"));
    let dir = tempfile::tempdir().expect("tempdir");
    let subnet = if netns {
        format!(
            "10.{}.{}",
            rand::random_range(200..=254u8),
            rand::random_range(0..=255u8)
        )
    } else {
        format!(
            "127.{}.{}",
            rand::random_range(1..=250u8),
            rand::random_range(1..=250u8)
        )
    };
    let port: u16 = rand::random_range(20000..60000u16);
    let child = Command::new(&xapid)
        .args([
            "lab",
            "--hosts",
            "3",
            "--vms",
            &vm_count.to_string(),
            "--password",
            "bench",
        ])
        .args(["--subnet", &subnet, "--port", &port.to_string(), "--ha", "--ha-timeout"])
        .arg(t_s.to_string())
        .args([
            "--host-memory",
            &(64i64 << 30).to_string(),
            "--vm-memory",
            &(if qemu { 128i64 << 20 } else { 256i64 << 20 }).to_string(),
        ])
        .args(if qemu { &["--driver", "qemu"][..] } else { &[][..] })
        .args(if netns { &["--netns"][..] } else { &[][..] })
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the lab");
    println!(
        "lab: {} (each host's log in hosts/hostN/xapid.log while the bench runs)",
        dir.path().display()
    );
    let lab = Lab(child, dir);
    let addresses: Vec<String> = (1..=3).map(|i| format!("{subnet}.{i}")).collect();
    let sr = lab.1.path().join("sr");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let mut times: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut pauses: BTreeMap<String, usize> = BTreeMap::new();
    runtime.block_on(async {
        // The lab is ready once HA is on (it creates the VMs first).
        let mut c = loop {
            let mut c = connect(&addresses, port).await;
            let pools = records(&mut c, "pool").await;
            if pools.values().any(|p| p.get("ha_enabled") == Some(&json!(true))) {
                break c;
            }
            c.logout().await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        let hosts = records(&mut c, "host").await;
        let host_refs: Vec<String> = hosts.keys().cloned().collect();
        let vms = records(&mut c, "VM").await;
        assert_eq!(vms.len(), vm_count);
        for (i, r) in vms.keys().enumerate() {
            c.call("VM.set_ha_restart_priority", vec![json!(r), json!("restart")])
                .await
                .expect("protect");
            c.call(
                "VM.start_on",
                vec![json!(r), json!(host_refs[i % 3]), json!(false), json!(false)],
            )
            .await
            .expect("start");
        }
        c.logout().await;
        println!(
            "pool: 3 hosts ({}), {vm_count} protected {} VMs, T = {t_s} s; {runs} runs of each of: {}",
            if netns { "lab, network namespaces" } else { "lab" },
            if qemu { "QEMU" } else { "sim" },
            kinds.join(", ")
        );
        for (run, kind) in (1..=runs).flat_map(|r| kinds.iter().map(move |k| (r, k))) {
            let (cut, heal) = fault_actions(kind).expect("checked above");
            let mut c = connect(&addresses, port).await;
            let hosts = records(&mut c, "host").await;
            let vms = records(&mut c, "VM").await;
            let mut per_host: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for v in vms.values() {
                if field(v, "power_state") == "Running" {
                    per_host
                        .entry(field(v, "resident_on").to_string())
                        .or_default()
                        .push(field(v, "uuid").to_string());
                }
            }
            let pools = records(&mut c, "pool").await;
            let master_ref = pools
                .values()
                .next()
                .map(|p| field(p, "master").to_string())
                .unwrap_or_default();
            if members_only {
                // Every member is a candidate, with or without VMs.
                for h in hosts.keys().filter(|h| **h != master_ref) {
                    per_host.entry(h.clone()).or_default();
                }
            }
            if master_only {
                per_host.entry(master_ref.clone()).or_default();
            }
            let (victim_ref, mut victim_vms) = per_host
                .iter()
                .filter(|(h, _)| !members_only || **h != master_ref)
                .filter(|(h, _)| !master_only || **h == master_ref)
                .max_by_key(|(_, v)| v.len())
                .map(|(h, v)| (h.clone(), v.clone()))
                .expect("running VMs");
            // Earlier runs may have left most VMs on the master: give the
            // victim its third back, by live migration.
            let share = vm_count / 3;
            if members_only && victim_vms.len() < share {
                let movers: Vec<(String, String)> = vms
                    .iter()
                    .filter(|(_, v)| field(v, "power_state") == "Running" && field(v, "resident_on") == master_ref)
                    .map(|(r, v)| (r.clone(), field(v, "uuid").to_string()))
                    .take(share - victim_vms.len())
                    .collect();
                for (vm_ref, uuid) in movers {
                    // The victim of an earlier run may be live in the
                    // master's liveset a moment before it is online in its
                    // own (HOST_OFFLINE): try again for a while.
                    let mut tries = 0;
                    loop {
                        let moved = c
                            .call(
                                "VM.pool_migrate",
                                vec![json!(vm_ref), json!(victim_ref), json!({"live": "true"})],
                            )
                            .await;
                        match moved {
                            Ok(_) => break,
                            Err(e) if tries < 30 && format!("{e:?}").contains("HOST_OFFLINE") => {
                                tries += 1;
                                tokio::time::sleep(Duration::from_secs(1)).await;
                            }
                            Err(e) => panic!("VM.pool_migrate to the victim: {e:?}"),
                        }
                    }
                    victim_vms.push(uuid);
                }
            }
            let victim = hosts.get(&victim_ref).expect("victim host");
            let (victim_uuid, victim_name) = (
                field(victim, "uuid").to_string(),
                field(victim, "name_label").to_string(),
            );
            let role = if victim_ref == master_ref { "master" } else { "member" };
            c.logout().await;
            let logs_before = log_lengths(lab.1.path());
            let killed = unix_ms();
            lab_cmd(&xapid, lab.1.path(), cut, &victim_name);
            // Wait until every one of its VMs writes from another host.
            let deadline = Instant::now() + Duration::from_secs(20 * t_s);
            let mut restarted: Option<u64> = None;
            let worst = loop {
                if Instant::now() >= deadline {
                    keep_logs_and_fail(lab.1.path(), &format!("run {run}: the VMs did not come back"));
                }
                tokio::time::sleep(Duration::from_millis(if qemu { 200 } else { 500 })).await;
                if qemu && restarted.is_none() {
                    let mut c = connect(&addresses, port).await;
                    let vms = records(&mut c, "VM").await;
                    c.logout().await;
                    let elsewhere = vms.values().filter(|v| {
                        victim_vms.iter().any(|u| u == field(v, "uuid"))
                            && field(v, "power_state") == "Running"
                            && field(v, "resident_on") != victim_ref
                    });
                    if elsewhere.count() == victim_vms.len() {
                        restarted = Some(unix_ms() - killed);
                    }
                }
                let mut firsts = Vec::new();
                for entry in std::fs::read_dir(&sr).expect("sr").flatten() {
                    if entry.path().extension().is_none_or(|e| e != "disk") {
                        continue;
                    }
                    let Ok(recs) = read_records(&entry.path()) else {
                        continue;
                    };
                    if let Some(r) = recs
                        .iter()
                        .find(|r| r.unix_ms > killed && r.host_uuid != victim_uuid && victim_vms.contains(&r.vm_uuid))
                    {
                        firsts.push(r.unix_ms);
                    }
                }
                if firsts.len() == victim_vms.len() {
                    break firsts.into_iter().max().unwrap_or(killed) - killed;
                }
            };
            let secs = worst as f64 / 1000.0;
            // The split: until the master acted (detection, the lease's
            // or the liveset's wait included), until the VMs ran elsewhere
            // (restart), and their first records (guest boot).
            let decided = decided_at(lab.1.path(), &victim_name, &victim_uuid, &victim_vms, &logs_before)
                .map(|at| at.saturating_sub(killed) as f64 / 1000.0);
            let split = match (restarted, decided) {
                (Some(r), Some(d)) => {
                    let r = r as f64 / 1000.0;
                    times.entry(format!("{kind}, detection")).or_default().push(d);
                    times.entry(format!("{kind}, restart")).or_default().push(r - d);
                    times.entry(format!("{kind}, guest boot")).or_default().push(secs - r);
                    format!(
                        " (detected at {d:.1} s, restarted {:.1} s later, guest boot {:.1} s)",
                        r - d,
                        secs - r
                    )
                }
                (Some(r), None) => {
                    let r = r as f64 / 1000.0;
                    times.entry(format!("{kind}, restarted")).or_default().push(r);
                    times.entry(format!("{kind}, guest boot")).or_default().push(secs - r);
                    format!(" (restarted at {r:.1} s, guest boot {:.1} s)", secs - r)
                }
                (None, Some(d)) => {
                    times.entry(format!("{kind}, detection")).or_default().push(d);
                    format!(" (detected at {d:.1} s)")
                }
                (None, None) => String::new(),
            };
            let paused = healthy_pauses(lab.1.path(), &victim_name, &logs_before);
            *pauses.entry(kind.clone()).or_default() += paused;
            println!(
                "run {run}, {kind}: {} VMs of {victim_name} ({role}) back in {secs:.1} s ({:.2} T){split}; the other hosts paused their guests {paused} times",
                victim_vms.len(),
                secs / t_s as f64
            );
            times.entry(kind.clone()).or_default().push(secs);
            times.entry(format!("{kind}, {role}")).or_default().push(secs);
            lab_cmd(&xapid, lab.1.path(), heal, &victim_name);
            // Until it is live and enabled again, and every host's HA has
            // settled with all of them in its liveset.
            let back = Instant::now();
            let mut settled = 0;
            loop {
                if back.elapsed() >= Duration::from_secs(20 * t_s) {
                    keep_logs_and_fail(lab.1.path(), &format!("{victim_name} did not come back"));
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                let mut c = connect(&addresses, port).await;
                let hosts = records(&mut c, "host").await;
                // After a storage cut, the host's SR probe plugs its PBDs
                // back a little after the storage is back.
                let pbds = records(&mut c, "PBD").await;
                c.logout().await;
                if hosts
                    .values()
                    .all(|h| h.get("live") == Some(&json!(true)) && h.get("enabled") == Some(&json!(true)))
                    && pbds.values().all(|p| p.get("currently_attached") == Some(&json!(true)))
                    && pool_settled(lab.1.path(), hosts.len())
                {
                    settled += 1;
                    // Settled for two seconds on end.
                    if settled >= 4 {
                        break;
                    }
                } else {
                    settled = 0;
                }
            }
        }
    });
    for (kind, n) in &pauses {
        println!("{kind}: the hosts not faulted paused their guests {n} times in all");
    }
    for (kind, mut t) in times {
        t.sort_by(f64::total_cmp);
        let pct = |p: f64| t[((t.len() as f64 * p).ceil() as usize).clamp(1, t.len()) - 1];
        let p50 = pct(0.5);
        let part = ["detection", "restart", "restarted", "guest boot"]
            .iter()
            .any(|p| kind.ends_with(&format!(", {p}")));
        let what = if part {
            format!("{kind} (a part of the failover)")
        } else {
            format!("failover after {kind} loss, fault to the last VM's first write elsewhere")
        };
        println!(
            "{what}, {} runs: p50 {p50:.1} s ({:.2} T), worst {:.1} s ({:.2} T), best {:.1} s",
            t.len(),
            p50 / t_s as f64,
            t[t.len() - 1],
            t[t.len() - 1] / t_s as f64,
            t[0]
        );
    }
    drop(lab);
}
