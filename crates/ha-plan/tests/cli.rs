//! `ha-plan` as a black box: snapshots written to files, the binary run on
//! them, its output and exit code checked against the planner library.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Output};

use ha_planner::{Host, Pool, Proof, Resource, Vm};
use serde_json::Value;

/// A file in the temporary directory, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, text: &str) -> TempFile {
        let path = std::env::temp_dir().join(format!("ha-plan-test-{}-{name}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        TempFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn ha_plan(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ha-plan")).args(args).output().unwrap()
}

/// The snapshot text of `pool`, written by hand as the issue shows it.
fn snapshot(pool: &Pool) -> String {
    let res = |r: &Resource| match r {
        Resource::Sr(u) => format!("sr:{u}"),
        Resource::Network(u) => format!("network:{u}"),
    };
    let hosts: Vec<Value> = pool
        .hosts
        .iter()
        .map(|h| {
            serde_json::json!({"uuid": h.uuid, "memory_free": h.memory_free, "live": h.live,
                "reaches": h.reaches.iter().map(res).collect::<Vec<_>>()})
        })
        .collect();
    let vms: Vec<Value> = pool
        .vms
        .iter()
        .map(|v| {
            serde_json::json!({"uuid": v.uuid, "memory": v.memory, "resident_on": v.resident_on,
                "needs": v.needs.iter().map(res).collect::<Vec<_>>()})
        })
        .collect();
    serde_json::json!({"hosts": hosts, "vms": vms}).to_string()
}

/// The benchmark's skewed pool shape: 512 GiB hosts, VMs of 1 to 16 GiB
/// round-robin and one of 192 GiB, one VM down, one host not live.
fn skewed(hosts: usize, vms: usize) -> Pool {
    const GIB: i64 = 1 << 30;
    let sr = Resource::Sr("shared".into());
    let net = Resource::Network("n0".into());
    let mut pool = Pool {
        hosts: (0..hosts)
            .map(|i| Host {
                uuid: format!("host-{i:02}"),
                memory_free: 504 * GIB,
                live: i != hosts - 1,
                reaches: BTreeSet::from([sr.clone(), net.clone()]),
            })
            .collect(),
        vms: Vec::new(),
    };
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..vms {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let gib = if i == 0 {
            192
        } else {
            [1, 2, 4, 8, 16][(x % 5) as usize]
        };
        let memory = gib * GIB + gib * 10 * (1 << 20);
        let h = i % (hosts - 1);
        let resident_on = (i != 1).then(|| {
            pool.hosts[h].memory_free -= memory;
            pool.hosts[h].uuid.clone()
        });
        pool.vms.push(Vm {
            uuid: format!("vm-{i:04}"),
            memory,
            resident_on,
            needs: BTreeSet::from([sr.clone()]),
        });
    }
    pool
}

#[test]
fn max_failures_and_check_agree_with_the_library() {
    let pool = skewed(12, 240);
    let file = TempFile::new("skewed.json", &snapshot(&pool));
    let want = ha_planner::max_host_failures_to_tolerate(&pool).unwrap();

    let out = ha_plan(&["max-failures", file.path(), "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["max_failures"], want.failures);
    let (proof, at_most) = match want.proof {
        Proof::Exact => ("exact", want.failures),
        Proof::LowerBound { at_most } => ("lower-bound", at_most),
        Proof::Reference => ("reference", want.failures),
    };
    assert_eq!(got["proof"], proof);
    assert_eq!(got["at_most"], at_most);
    assert_eq!(got["proven_by"], want.proven_by.name());

    let out = ha_plan(&["max-failures", file.path()]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with(&format!("max failures: {} (", want.failures)),
        "{text}"
    );

    let r = want.failures.to_string();
    let out = ha_plan(&["check", file.path(), "--failures", &r, "--format", "json"]);
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    let verdict = ha_planner::plan_exists(&pool, want.failures).unwrap();
    assert_eq!(got["plan"], if verdict.exists() { "exists" } else { "unknown" });
    assert_eq!(out.status.code(), Some(if verdict.exists() { 0 } else { 1 }));

    let over = (at_most + 1).to_string();
    let out = ha_plan(&["check", file.path(), "--failures", &over, "--format", "json"]);
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["plan"], "no-plan");
    assert_eq!(out.status.code(), Some(1));
    assert!(!got["witness"]["failed_hosts"].as_array().unwrap().is_empty());
}

#[test]
fn the_issues_example_snapshot_reads() {
    let text = r#"{"hosts":[{"uuid":"h0","memory_free":541165879296,"live":true,"reaches":["sr:A","network:N"]}],"vms":[{"uuid":"v0","memory":206158430208,"resident_on":"h0","needs":["sr:A"]}]}"#;
    let file = TempFile::new("example.json", text);
    let out = ha_plan(&["max-failures", file.path(), "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    // One host: the VM runs, and no failure can be tolerated.
    assert_eq!(got["max_failures"], 0);
    assert_eq!(got["proof"], "exact");
    assert_eq!(got["restartable_now"], true);
}

#[test]
fn bad_input_gets_one_line_and_exit_code_2() {
    let good_host = r#"{"uuid":"h0","memory_free":10,"live":true,"reaches":["sr:A"]}"#;
    let cases = [
        ("truncated.json", r#"{"hosts":["#.to_string(), "not a pool snapshot"),
        (
            "unknown-field.json",
            format!(r#"{{"hosts":[{good_host}],"vms":[],"extra":1}}"#),
            "unknown field",
        ),
        (
            "resource.json",
            r#"{"hosts":[{"uuid":"h0","memory_free":10,"live":true,"reaches":["A"]}],"vms":[]}"#.to_string(),
            "neither sr:UUID nor network:UUID",
        ),
        (
            "memory.json",
            format!(r#"{{"hosts":[{good_host}],"vms":[{{"uuid":"v","memory":-1,"resident_on":null,"needs":[]}}]}}"#),
            "must be positive",
        ),
        (
            "resident.json",
            format!(r#"{{"hosts":[{good_host}],"vms":[{{"uuid":"v","memory":1,"resident_on":"h9","needs":[]}}]}}"#),
            "not a host of the pool",
        ),
    ];
    for (name, text, says) in cases {
        let file = TempFile::new(name, &text);
        let out = ha_plan(&["max-failures", file.path()]);
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        assert!(out.stdout.is_empty(), "{name}");
        assert_eq!(err.lines().count(), 1, "{name}: {err}");
        assert!(err.contains(says), "{name}: {err}");
    }
    let file = TempFile::new("usage.json", r#"{"hosts":[],"vms":[]}"#);
    for args in [
        vec!["check", file.path()],
        vec!["check", file.path(), "--failures", "x"],
        vec!["max-failures", file.path(), "--format", "yaml"],
        vec!["frobnicate", file.path()],
        vec!["max-failures", "/nonexistent/ha-plan-snapshot.json"],
    ] {
        let out = ha_plan(&args);
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    }
}
