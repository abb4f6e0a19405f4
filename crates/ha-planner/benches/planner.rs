//! Planner benchmark: generated pools of XenServer's sizes, both modes side
//! by side. Run with `cargo bench -p ha-planner`; prints a Markdown table
//! for `docs/benchmarks.md`.
//!
//! For each pool: the time of `max_host_failures_to_tolerate`, and of one
//! `plan_exists(r)` after a change (a new 8 GiB protected VM on the first
//! host: the overcommit check of a VM start), with each mode's answers.
//!
//! Then a second table: generators for the shapes real pools have (several
//! big VMs, hosts of three sizes, VMs on an SR only half the hosts reach),
//! each over several seeds, with the share of seeds answered exactly, what
//! proved the answers, and the times.

use std::collections::BTreeSet;
use std::hint::black_box;
use std::time::{Duration, Instant};

use ha_planner::{Check, Compiled, Delta, Host, Mode, Planner, Pool, Proof, Resource, Verdict, Vm};

const GIB: i64 = 1 << 30;
const MIB: i64 = 1 << 20;

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Footprint of a VM with `gib` of static-max: XAPI's HVM overhead is
/// roughly 1% of memory plus a few MiB.
fn footprint(gib: i64) -> i64 {
    gib * GIB + gib * 10 * MIB + 3 * MIB
}

/// `hosts` hosts of 512 GiB; `vms` VMs spread round-robin. Uniform: all
/// 8 GiB. Skewed: 1 to 16 GiB at random, and one 192 GiB VM on host 0.
fn pool(hosts: usize, vms: usize, skewed: bool) -> Pool {
    let sr = Resource::Sr("shared".into());
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (hosts as u64) << 8);
    let mut pool = Pool {
        hosts: (0..hosts)
            .map(|i| Host {
                uuid: format!("host-{i:02}"),
                memory_free: 512 * GIB - 8 * GIB,
                live: true,
                reaches: BTreeSet::from([sr.clone()]),
            })
            .collect(),
        vms: Vec::with_capacity(vms),
    };
    for i in 0..vms {
        let gib = match (skewed, i) {
            (true, 0) => 192,
            (true, _) => [1, 2, 4, 8, 16][(rng.next() % 5) as usize],
            (false, _) => 8,
        };
        let h = i % hosts;
        let memory = footprint(gib);
        pool.hosts[h].memory_free -= memory;
        pool.vms.push(Vm {
            uuid: format!("vm-{i:04}"),
            memory,
            resident_on: Some(pool.hosts[h].uuid.clone()),
            needs: BTreeSet::from([sr.clone()]),
        });
    }
    pool
}

/// The same start as deltas, for the incremental check.
fn new_vm_deltas(pool: &Pool) -> Vec<Delta> {
    let memory = footprint(8);
    vec![
        Delta::HostFree {
            host: pool.hosts[0].uuid.clone(),
            by: -memory,
        },
        Delta::Vm(Vm {
            uuid: "vm-new".into(),
            memory,
            resident_on: Some(pool.hosts[0].uuid.clone()),
            needs: pool.vms[0].needs.clone(),
        }),
    ]
}

/// The pool after starting one more protected 8 GiB VM on the first host.
fn with_new_vm(pool: &Pool) -> Pool {
    let mut changed = pool.clone();
    let memory = footprint(8);
    changed.hosts[0].memory_free -= memory;
    changed.vms.push(Vm {
        uuid: "vm-new".into(),
        memory,
        resident_on: Some(changed.hosts[0].uuid.clone()),
        needs: changed.vms[0].needs.clone(),
    });
    changed
}

fn median(mut runs: Vec<Duration>) -> Duration {
    runs.sort();
    runs[runs.len() / 2]
}

fn time<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut out = None;
    let times = (0..runs)
        .map(|_| {
            let start = Instant::now();
            out = Some(black_box(f()));
            start.elapsed()
        })
        .collect();
    (median(times), out.expect("at least one run"))
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// The shapes of the second table.
#[derive(Clone, Copy)]
enum Shape {
    /// Four VMs of 96 to 192 GiB on different hosts among 1 to 16 GiB ones.
    SeveralBig,
    /// Hosts of 256, 512 and 768 GiB in turn; one 192 GiB VM.
    MixedHosts,
    /// One 192 GiB VM; one VM in four needs an SR that only even-numbered
    /// hosts reach.
    PartialSr,
}

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Shape::SeveralBig => "several big VMs",
            Shape::MixedHosts => "mixed host sizes",
            Shape::PartialSr => "partial SR reach",
        }
    }
}

/// A pool of `shape` from `seed`: VMs round-robin over the hosts that can
/// take them.
fn shaped(shape: Shape, hosts: usize, vms: usize, seed: u64) -> Pool {
    let shared = Resource::Sr("shared".into());
    let partial = Resource::Sr("partial".into());
    let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ seed.wrapping_mul(0x9e37_79b9) ^ (hosts as u64) << 8);
    let mut pool = Pool {
        hosts: (0..hosts)
            .map(|i| {
                let gib = match shape {
                    Shape::MixedHosts => [256, 512, 768][i % 3],
                    _ => 512,
                };
                let mut reaches = BTreeSet::from([shared.clone()]);
                if i % 2 == 0 {
                    reaches.insert(partial.clone());
                }
                Host {
                    uuid: format!("host-{i:02}"),
                    memory_free: gib * GIB - 8 * GIB,
                    live: true,
                    reaches,
                }
            })
            .collect(),
        vms: Vec::with_capacity(vms),
    };
    let mut next = 0;
    for i in 0..vms {
        let big = match shape {
            Shape::SeveralBig => i < 4,
            _ => i == 0,
        };
        let gib = if big {
            [96, 128, 160, 192][(rng.next() % 4) as usize]
        } else {
            [1, 2, 4, 8, 16][(rng.next() % 5) as usize]
        };
        let restricted = matches!(shape, Shape::PartialSr) && rng.next() % 4 == 0;
        let memory = footprint(gib);
        // Big VMs spread over the pool; the rest round-robin.
        let start = if big { i * hosts / 4 } else { next };
        let Some(h) = (0..hosts)
            .map(|d| (start + d) % hosts)
            .find(|&h| pool.hosts[h].memory_free >= memory && (!restricted || h % 2 == 0))
        else {
            continue;
        };
        if !big {
            next = (h + 1) % hosts;
        }
        pool.hosts[h].memory_free -= memory;
        pool.vms.push(Vm {
            uuid: format!("vm-{i:04}"),
            memory,
            resident_on: Some(pool.hosts[h].uuid.clone()),
            needs: BTreeSet::from([if restricted { partial.clone() } else { shared.clone() }]),
        });
    }
    pool
}

/// Seeds per shape and size in the second table.
const SEEDS: u64 = 8;

fn shapes_table() {
    println!();
    println!("| shape | pool | seeds | exact | proven by | answers (min-max) | at most (min-max) | time: median | time: max |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let planner = Planner::new(Mode::Exact);
    for shape in [Shape::SeveralBig, Shape::MixedHosts, Shape::PartialSr] {
        for (hosts, vms) in [(16, 400), (32, 800), (64, 1600)] {
            let mut exact = 0;
            let mut times = Vec::new();
            let mut answers = Vec::new();
            let mut uppers = Vec::new();
            let mut proven: std::collections::BTreeMap<&str, u32> = std::collections::BTreeMap::new();
            for seed in 0..SEEDS {
                let p = shaped(shape, hosts, vms, seed);
                let (t, tol) = time(3, || planner.max_host_failures_to_tolerate(&p).expect("valid pool"));
                times.push(t);
                if tol.proof == Proof::Exact {
                    exact += 1;
                }
                answers.push(tol.failures);
                uppers.push(match tol.proof {
                    Proof::LowerBound { at_most } => at_most,
                    _ => tol.failures,
                });
                *proven.entry(tol.proven_by.name()).or_default() += 1;
            }
            let slowest = times.iter().max().copied().unwrap_or_default();
            let proven: Vec<String> = proven.iter().map(|(k, v)| format!("{k} {v}")).collect();
            println!(
                "| {} | {hosts} x {vms} | {SEEDS} | {exact}/{SEEDS} | {} | {}-{} | {}-{} | {} | {} |",
                shape.name(),
                proven.join(", "),
                answers.iter().min().unwrap_or(&0),
                answers.iter().max().unwrap_or(&0),
                uppers.iter().min().unwrap_or(&0),
                uppers.iter().max().unwrap_or(&0),
                ms(median(times)),
                ms(slowest)
            );
        }
    }
}

fn main() {
    println!(
        "| pool | mode | max failures | proof | time (median) | overcommit check r | plan after change | time (median) | incremental check | time (median) | compile once |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (hosts, vms) in [(16, 400), (32, 800), (64, 1600)] {
        for skewed in [false, true] {
            let p = pool(hosts, vms, skewed);
            let changed = with_new_vm(&p);
            let deltas = new_vm_deltas(&p);
            let name = format!("{hosts} x {vms} {}", if skewed { "skewed" } else { "uniform" });
            for mode in [Mode::Exact, Mode::Xapi] {
                let planner = Planner::new(mode);
                let runs = if mode == Mode::Xapi && hosts <= 32 { 3 } else { 7 };
                let (t_max, tol) = time(runs, || planner.max_host_failures_to_tolerate(&p).expect("valid pool"));
                let r = tol.failures;
                let check_runs = if mode == Mode::Exact { 31 } else { 3 };
                let (t_check, verdict) = time(check_runs, || planner.plan_exists(&changed, r).expect("valid pool"));
                // The master compiles once per database generation (off the
                // call's path), then checks each change as deltas.
                let (t_compile, compiled) = time(3, || Compiled::new(planner, &p, r).expect("valid pool"));
                let (t_inc, check) = time(check_runs, || compiled.check(&deltas).expect("valid deltas"));
                let proof = match tol.proof {
                    Proof::Exact => "exact".to_string(),
                    Proof::LowerBound { at_most } => format!("lower bound (at most {at_most})"),
                    Proof::Reference => "reference".to_string(),
                };
                println!(
                    "| {name} | {mode} | {} | {proof} | {} | {r} | {} | {} | {} | {} | {} |",
                    tol.failures,
                    ms(t_max),
                    match verdict {
                        Verdict::Exists => "exists",
                        Verdict::NoPlan(_) => "no plan",
                        Verdict::Unknown => "unknown",
                    },
                    ms(t_check),
                    match check {
                        Check::Exists(by) => format!("exists ({})", by.name()),
                        Check::NoPlan(_) => "no plan".to_string(),
                        Check::Undecided { at_most } => format!("undecided (at most {at_most})"),
                    },
                    ms(t_inc),
                    ms(t_compile)
                );
            }
        }
    }
    if std::env::args().any(|a| a == "--no-shapes") {
        return;
    }
    shapes_table();
}
