//! API benchmark against a real 3-host lab pool with 1,000 VMs.
//!
//! Measures: `xe vm-list --minimal` end to end (process start, login, one
//! `get_all_records`, logout), read calls per second (`VM.get_record`) over
//! JSON-RPC and over XML-RPC (`POST /`, as the `XenAPI` Python package
//! calls), in alternating rounds so both see the same machine, and
//! committed writes per second (`VM.set_order`, each durable in SQLite with
//! `synchronous=FULL` before it is acknowledged).
//!
//! Run: `cargo build --release && cargo bench -p pool-master --bench api`.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use xapi_client::Client;

mod common;
use common::Lab;

const VMS: usize = 1000;
const CLIENTS: usize = 4;
const PHASE: Duration = Duration::from_secs(5);
const XE_RUNS: usize = 200;
/// Rounds of each wire's read phase.
const ROUNDS: usize = 3;
/// Writes timed through a waiting `event.from`.
const EVENT_SAMPLES: usize = 200;
/// `event.from` calls waiting at once.
const WAITERS: usize = 1000;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Calls per second of [`CLIENTS`] JSON-RPC clients (`xapi-client`, keep-
/// alive), over HTTPS when `tls` (the certificate not checked).
async fn rate(address: &str, port: u16, vms: &[String], write: bool, tls: bool) -> f64 {
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (address, vms) = (address.to_string(), vms.to_vec());
        tasks.push(tokio::spawn(async move {
            let options = xapi_client::Options {
                trust: if tls {
                    xapi_client::tls::Trust::Anyone
                } else {
                    xapi_client::tls::Trust::Plain
                },
                ..xapi_client::Options::default()
            };
            let mut client = Client::with_options(&address, port, &options);
            client.login("root", "bench").await.expect("login");
            let start = Instant::now();
            let mut n = 0u64;
            while start.elapsed() < PHASE {
                let vm = &vms[(n as usize * CLIENTS + c) % vms.len()];
                if write {
                    client
                        .call("VM.set_order", vec![json!(vm), json!(n as i64)])
                        .await
                        .expect("write");
                } else {
                    client.call("VM.get_record", vec![json!(vm)]).await.expect("read");
                }
                n += 1;
            }
            client.logout().await;
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("task");
    }
    total as f64 / PHASE.as_secs_f64()
}

/// The `Value` of an XML-RPC success answer that is one string.
fn xml_value(answer: &str) -> Option<&str> {
    let rest = answer.split_once("<name>Value</name><value>")?.1;
    Some(rest.split_once("</value>")?.0)
}

fn xml_call(method: &str, params: &[&str]) -> String {
    let params: String = params
        .iter()
        .map(|p| format!("<param><value>{p}</value></param>"))
        .collect();
    format!(
        "<?xml version=\"1.0\"?><methodCall><methodName>{method}</methodName><params>{params}</params></methodCall>"
    )
}

/// `VM.get_record` calls per second over XML-RPC, [`CLIENTS`] clients with
/// keep-alive, over HTTPS when `tls` (the certificate not checked).
async fn xml_rate(address: &str, port: u16, vms: &[String], tls: bool) -> f64 {
    let url = format!("{}://{address}:{port}/", if tls { "https" } else { "http" });
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (url, vms) = (url.clone(), vms.to_vec());
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .tls_danger_accept_invalid_certs(true)
                .build()
                .expect("client");
            let post = |body: String| http.post(&url).header("Content-Type", "text/xml").body(body).send();
            let login = post(xml_call("session.login_with_password", &["root", "bench"]))
                .await
                .expect("login");
            let login = login.text().await.expect("login answer");
            let session = xml_value(&login).expect("a session").to_string();
            let start = Instant::now();
            let mut n = 0u64;
            while start.elapsed() < PHASE {
                let vm = &vms[(n as usize * CLIENTS + c) % vms.len()];
                let answer = post(xml_call("VM.get_record", &[&session, vm]))
                    .await
                    .expect("read")
                    .text()
                    .await
                    .expect("read answer");
                assert!(answer.contains("<value>Success</value>"), "{answer}");
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("task");
    }
    total as f64 / PHASE.as_secs_f64()
}

/// One JSON-RPC call with a bare reqwest client: the result.
async fn jsonrpc(http: &reqwest::Client, url: &str, method: &str, params: serde_json::Value) -> serde_json::Value {
    let body = json!({"jsonrpc": "2.0", "method": method, "params": params, "id": 1});
    let answer: serde_json::Value = http
        .post(url)
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("call")
        .text()
        .await
        .map(|t| serde_json::from_str(&t).expect("JSON answer"))
        .expect("an answer");
    answer["result"].clone()
}

/// Resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Event latency (a write's call to a waiting `event.from`'s answer) over
/// [`EVENT_SAMPLES`] writes, then [`WAITERS`] waiters held at once from 40
/// source addresses: the master's memory with them waiting, and the time
/// until one commit has answered all of them.
async fn events(address: &str, port: u16, vm: &str, master_pid: u32) {
    let url = format!("http://{address}:{port}/jsonrpc");
    let http = reqwest::Client::new();
    let session = jsonrpc(&http, &url, "session.login_with_password", json!(["root", "bench"])).await;
    let mut latencies = Vec::with_capacity(EVENT_SAMPLES);
    for i in 0..EVENT_SAMPLES {
        let token = jsonrpc(&http, &url, "event.from", json!([session, ["vm"], "", 0.0])).await["token"].clone();
        let waiter = {
            let (http, url, session) = (http.clone(), url.clone(), session.clone());
            tokio::spawn(async move {
                let out = jsonrpc(&http, &url, "event.from", json!([session, ["vm"], token, 10.0])).await;
                (Instant::now(), out["events"].as_array().map_or(0, Vec::len))
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let t0 = Instant::now();
        jsonrpc(&http, &url, "VM.set_order", json!([session, vm, i as i64])).await;
        let (answered, n) = waiter.await.expect("waiter");
        assert_eq!(n, 1, "one event for the write");
        latencies.push(answered.duration_since(t0).as_secs_f64() * 1000.0);
    }
    latencies.sort_by(f64::total_cmp);
    println!(
        "event latency, write call to the waiting event.from's answer ({EVENT_SAMPLES} writes): median {:.2} ms, p99 {:.2} ms",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99)
    );

    let before = rss_kib(master_pid);
    let token = jsonrpc(&http, &url, "event.from", json!([session, ["vm"], "", 0.0])).await["token"].clone();
    let mut waiters = Vec::with_capacity(WAITERS);
    let clients: Vec<reqwest::Client> = (0..40u8)
        .map(|i| {
            reqwest::Client::builder()
                .local_address(std::net::IpAddr::from([127, 99, 0, i + 1]))
                .build()
                .expect("client")
        })
        .collect();
    for i in 0..WAITERS {
        let (http, url, session, token) = (clients[i % 40].clone(), url.clone(), session.clone(), token.clone());
        waiters.push(tokio::spawn(async move {
            let out = jsonrpc(&http, &url, "event.from", json!([session, ["vm"], token, 60.0])).await;
            (Instant::now(), out["events"].as_array().map_or(0, Vec::len))
        }));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let waiting = rss_kib(master_pid);
    let t0 = Instant::now();
    jsonrpc(&http, &url, "VM.set_order", json!([session, vm, 1_000_000])).await;
    let mut last = t0;
    let mut woke = 0;
    for w in waiters {
        let (at, n) = w.await.expect("waiter");
        woke += usize::from(n == 1);
        last = last.max(at);
    }
    assert_eq!(woke, WAITERS, "every waiter gets the commit's event");
    println!(
        "{WAITERS} event.from waiters: master RSS {} MiB idle, {} MiB with them waiting (+{} KiB each); one commit answered {woke} of them in {:.0} ms",
        before / 1024,
        waiting / 1024,
        waiting.saturating_sub(before) / WAITERS as u64,
        last.duration_since(t0).as_secs_f64() * 1000.0
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let xapid = PathBuf::from(env!("CARGO_BIN_EXE_xapid"));
    let xe = xapid.with_file_name("xe");
    let dir = tempfile::tempdir().expect("tempdir");
    let subnet = format!(
        "127.{}.{}",
        rand::random_range(1..=250u8),
        rand::random_range(1..=250u8)
    );
    let port = rand::random_range(20000..60000u16).to_string();
    let child = Command::new(&xapid)
        .args([
            "lab",
            "--hosts",
            "3",
            "--vms",
            "0",
            "--password",
            "bench",
            "--subnet",
            &subnet,
            "--port",
            &port,
        ])
        .arg("--dir")
        .arg(dir.path())
        .args(["--host-memory", &(1i64 << 50).to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the lab");
    let lab = Lab(child, dir);
    let master = format!("{subnet}.1");
    let port: u16 = port.parse().expect("port");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let vms: Vec<String> = runtime.block_on(async {
        let start = Instant::now();
        let mut client = loop {
            let mut c = Client::new(&master, port);
            match c.login("root", "bench").await {
                Ok(())
                    if c.call("host.get_all", vec![])
                        .await
                        .ok()
                        .map(|v| v.as_array().map_or(0, Vec::len))
                        == Some(3) =>
                {
                    break c
                }
                _ if start.elapsed() > Duration::from_secs(60) => panic!("the lab did not come up"),
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        };
        let mut vms = Vec::with_capacity(VMS);
        for i in 0..VMS {
            let r = client
                .call(
                    "VM.create",
                    vec![json!({"name_label": format!("bench{i:04}"), "memory_static_max": 1i64 << 30})],
                )
                .await
                .expect("VM.create");
            vms.push(r.as_str().unwrap_or_default().to_string());
        }
        client.logout().await;
        vms
    });
    println!(
        "pool: 3 hosts (lab), {VMS} VMs; {CLIENTS} concurrent clients, {}s per phase",
        PHASE.as_secs()
    );

    if xe.exists() {
        let extra = format!(
            "server={master},port={port},username=root,password=bench,knownhosts={}",
            lab.1.path().join(".xe_known_hosts").display()
        );
        // Over HTTPS (xe's default, the lab's certificates pinned) and with
        // --nossl, run by run in turn.
        let mut times: [Vec<f64>; 2] = Default::default();
        for _ in 0..XE_RUNS {
            for (i, extra_flag) in [None, Some("--nossl")].into_iter().enumerate() {
                let start = Instant::now();
                let out = Command::new(&xe)
                    .args(["vm-list", "--minimal"])
                    .args(extra_flag)
                    .env("XE_EXTRA_ARGS", &extra)
                    .output()
                    .expect("xe");
                times[i].push(start.elapsed().as_secs_f64() * 1000.0);
                assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
                assert_eq!(String::from_utf8_lossy(&out.stdout).trim_end().split(',').count(), VMS);
            }
        }
        for (times, wire) in times.iter_mut().zip(["HTTPS", "plain HTTP (--nossl)"]) {
            times.sort_by(f64::total_cmp);
            println!(
                "xe vm-list --minimal over {wire} ({XE_RUNS} runs, in turn): median {:.1} ms, p90 {:.1} ms, p99 {:.1} ms",
                percentile(times, 0.5),
                percentile(times, 0.9),
                percentile(times, 0.99)
            );
        }
    } else {
        println!(
            "xe vm-list --minimal: skipped, {} is not built (cargo build --release first)",
            xe.display()
        );
    }
    // JSON-RPC and XML-RPC, plain and over TLS, in alternating rounds:
    // medians side by side.
    let mut rates: [Vec<f64>; 4] = Default::default();
    for _ in 0..ROUNDS {
        rates[0].push(runtime.block_on(rate(&master, port, &vms, false, false)));
        rates[1].push(runtime.block_on(rate(&master, port, &vms, false, true)));
        rates[2].push(runtime.block_on(xml_rate(&master, port, &vms, false)));
        rates[3].push(runtime.block_on(xml_rate(&master, port, &vms, true)));
    }
    let [jp, jt, xp, xt] = rates.map(|mut r| {
        r.sort_by(f64::total_cmp);
        percentile(&r, 0.5)
    });
    println!(
        "VM.get_record, median of {ROUNDS} alternating rounds, calls/s: JSON-RPC {jp:.0} plain, {jt:.0} HTTPS ({:.2}); XML-RPC {xp:.0} plain, {xt:.0} HTTPS ({:.2})",
        jt / jp,
        xt / xp
    );
    let writes = runtime.block_on(rate(&master, port, &vms, true, false));
    println!("VM.set_order (committed, synchronous=FULL): {writes:.0} writes/s");
    let lab_state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(lab.1.path().join("lab.json")).expect("lab.json"))
            .expect("lab.json");
    let master_pid = lab_state["hosts"][0]["pid"].as_u64().expect("the master's pid") as u32;
    runtime.block_on(events(&master, port, &vms[0], master_pid));
    drop(lab);
}
