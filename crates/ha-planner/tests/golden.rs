//! Golden tests in the style of Pacemaker's scheduler tests: each
//! `golden/NAME.pool` describes a pool, `golden/NAME.out` holds what both
//! planner modes answer. Run with `UPDATE_GOLDEN=1` to rewrite the `.out`
//! files after a deliberate change, then review the diff.
//!
//! Pool format, one item per line (`#` starts a comment):
//!
//! ```text
//! host NAME free=SIZE [dead] [reaches=RES,RES]
//! vm NAME mem=SIZE [on=HOST] [needs=RES,RES]
//! restart HOST[,HOST] [keep=N]
//! ```
//!
//! SIZE is bytes with an optional K, M or G suffix (binary); RES is
//! `sr:NAME` or `net:NAME`. A `restart` line asks for the restart plan when
//! those hosts fail.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

use ha_planner::{Host, Mode, Placement, Planner, Pool, Proof, Resource, Verdict, Vm};

fn size(s: &str) -> i64 {
    let (num, mult) = match s.chars().last() {
        Some('K') => (&s[..s.len() - 1], 1i64 << 10),
        Some('M') => (&s[..s.len() - 1], 1 << 20),
        Some('G') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<i64>().unwrap() * mult
}

fn resources(s: &str) -> BTreeSet<Resource> {
    s.split(',')
        .filter(|r| !r.is_empty())
        .map(|r| match r.split_once(':') {
            Some(("sr", n)) => Resource::Sr(n.into()),
            Some(("net", n)) => Resource::Network(n.into()),
            _ => panic!("bad resource {r}"),
        })
        .collect()
}

struct Case {
    pool: Pool,
    restarts: Vec<(Vec<String>, u32)>,
}

fn parse(text: &str) -> Case {
    let mut pool = Pool::default();
    let mut restarts = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap().trim();
        let mut words = line.split_whitespace();
        let Some(kind) = words.next() else { continue };
        let name = words.next().unwrap().to_string();
        let rest: Vec<&str> = words.collect();
        let get = |k: &str| {
            rest.iter()
                .find_map(|w| w.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
        };
        match kind {
            "host" => pool.hosts.push(Host {
                uuid: name,
                memory_free: size(get("free").unwrap()),
                live: !rest.contains(&"dead"),
                reaches: resources(get("reaches").unwrap_or("sr:shared")),
            }),
            "vm" => pool.vms.push(Vm {
                uuid: name,
                memory: size(get("mem").unwrap()),
                resident_on: get("on").map(String::from),
                needs: resources(get("needs").unwrap_or("sr:shared")),
            }),
            "restart" => restarts.push((
                name.split(',').map(String::from).collect(),
                get("keep").map_or(0, |k| k.parse().unwrap()),
            )),
            other => panic!("unknown line kind {other}"),
        }
    }
    Case { pool, restarts }
}

fn render(case: &Case) -> String {
    let mut out = String::new();
    for mode in [Mode::Exact, Mode::Xapi] {
        let planner = Planner::new(mode);
        let t = planner.max_host_failures_to_tolerate(&case.pool).unwrap();
        let proof = match t.proof {
            Proof::Exact => "exact".to_string(),
            Proof::LowerBound { at_most } => format!("at least; at most {at_most}"),
            Proof::Reference => "reference".to_string(),
        };
        writeln!(
            out,
            "{mode}: tolerates {} ({proof}); restartable now: {}",
            t.failures, t.restartable_now
        )
        .unwrap();
        if mode == Mode::Exact {
            writeln!(out, "  proven by: {}", t.proven_by.name()).unwrap();
        }
        if let Some(w) = &t.witness {
            writeln!(
                out,
                "  witness for {}: fail [{}] -> cannot place [{}]",
                t.failures + 1,
                w.failed_hosts.join(", "),
                w.unplaced_vms.join(", ")
            )
            .unwrap();
        }
        let verdicts: Vec<String> = (0..=t.failures + 1)
            .map(|r| {
                let v = match planner.plan_exists(&case.pool, r).unwrap() {
                    Verdict::Exists => "yes",
                    Verdict::NoPlan(_) => "no",
                    Verdict::Unknown => "unknown",
                };
                format!("{r}:{v}")
            })
            .collect();
        writeln!(out, "  plan exists: {}", verdicts.join(" ")).unwrap();
        for (failed, keep) in &case.restarts {
            let plan = planner.restart_plan(&case.pool, failed, *keep).unwrap();
            let keeps = plan.tolerates_after.map_or("-".to_string(), |k| k.to_string());
            writeln!(
                out,
                "  restart after [{}] keep={keep} (keeps {keeps}):",
                failed.join(", ")
            )
            .unwrap();
            for (vm, p) in &plan.placements {
                match p {
                    Placement::Host(h) => writeln!(out, "    {vm} -> {h}").unwrap(),
                    Placement::Unplaced(reason) => writeln!(out, "    {vm} -> nowhere: {reason}").unwrap(),
                }
            }
        }
    }
    out
}

#[test]
fn golden_files() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "pool"))
        .collect();
    names.sort();
    assert!(!names.is_empty(), "no golden pools in {}", dir.display());
    let mut failures = Vec::new();
    for path in names {
        let case = parse(&std::fs::read_to_string(&path).unwrap());
        let got = render(&case);
        let out = path.with_extension("out");
        if update {
            std::fs::write(&out, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&out).unwrap_or_default();
        if got != want {
            failures.push(format!("{}:\n--- want\n{want}--- got\n{got}", path.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "golden mismatches (UPDATE_GOLDEN=1 to accept):\n{}",
        failures.join("\n")
    );
}
