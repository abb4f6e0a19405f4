//! `ha-sim`: run the HA engines through seeded random fault schedules.
//!
//! `cargo run -p ha-sim -- --seeds 500` runs seeds 0..500 and prints one
//! line per violation with the command that replays it;
//! `--seed S --trace` replays one seed and prints what happened.
//! `--avail` judges every fence with the availability oracle and prints
//! tables (`--avail-log`: a line per non-justified and whole-pool fence);
//! `--single` runs one fault on one host per seed.

use anyhow::{bail, Result};
use clap::Parser;
use ha_sim::avail::AvailReport;
use ha_sim::schedule;

#[derive(Parser)]
#[command(
    name = "ha-sim",
    about = "Deterministic simulation of the HA engines under random faults"
)]
struct Cli {
    /// How many seeds to run, from --first.
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 0)]
    first: u64,
    /// Run this one seed only.
    #[arg(long)]
    seed: Option<u64>,
    /// Pool size (2 to 5 by the seed when not given).
    #[arg(long)]
    hosts: Option<usize>,
    /// Simulated seconds per seed.
    #[arg(long, default_value_t = 300)]
    seconds: u64,
    /// Print everything that happened (with --seed).
    #[arg(long)]
    trace: bool,
    /// Judge every fence with the availability oracle and print tables.
    #[arg(long)]
    avail: bool,
    /// With --avail, also one line per non-justified fence and per
    /// whole-pool fence.
    #[arg(long)]
    avail_log: bool,
    /// Exit non-zero on a clean unnecessary fence or an avoidable
    /// whole-pool fence (implies --avail).
    #[arg(long)]
    fail_on_avail: bool,
    /// One fault on one host per seed, nothing else.
    #[arg(long)]
    single: bool,
    /// Restart the whole pool at 30 s with faults on some hosts as they
    /// boot, then the random schedule.
    #[arg(long, conflicts_with = "single")]
    boot: bool,
    /// An attacker on the network captures every heartbeat and sends old
    /// ones again, to any host, in any order (issue 26); the checks hold.
    #[arg(long)]
    replay: bool,
    /// The HA timeout T in seconds (10; XAPI's default is 60). The fault
    /// schedule is the same; give --seconds room for rounds of T = 60 s
    #[arg(long)]
    timeout: Option<u64>,
    /// Run the lease world instead (VM leases on the SR, issue 25): no
    /// liveset, every host contends for every VM; checks that no VM runs
    /// on two hosts at once. --seconds defaults to 120 here.
    #[arg(long, conflicts_with_all = ["single", "boot", "avail", "avail_log", "fail_on_avail"])]
    leases: bool,
    /// With --leases: drive the lease world by the liveset world (its
    /// fault schedule, its fences, its masters restarting VMs).
    #[arg(long, requires = "leases")]
    coupled: bool,
    /// With --coupled: every online host acts as master, not only the
    /// master lock's holder.
    #[arg(long, requires = "coupled")]
    every_master: bool,
    /// With --coupled: break the survival rule on purpose (every host
    /// always wins), so that the liveset splits.
    #[arg(long, requires = "coupled")]
    broken_survival: bool,
    /// With --leases: real guests (QEMU processes): a disk write on its
    /// way lands whatever happens to the guest, hangs while the SR is cut,
    /// and the fence guard kills the guests and resets the host in time.
    #[arg(long, requires = "leases")]
    real_guests: bool,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Some(h) = cli.hosts {
        if !(1..=64).contains(&h) {
            bail!("--hosts must be between 1 and 64");
        }
    }
    let seeds: Vec<u64> = match cli.seed {
        Some(s) => vec![s],
        None => (cli.first..cli.first + cli.seeds).collect(),
    };
    if cli.coupled {
        return run_coupled(&cli, &seeds);
    }
    if cli.leases {
        return run_leases(&cli, &seeds);
    }
    let (mut bad, mut fences, mut faults, mut shrinks) = (0, 0, 0, 0);
    let mut codes = std::collections::BTreeMap::<String, usize>::new();
    let opts = schedule::Options {
        trace: cli.trace,
        avail: cli.avail || cli.avail_log || cli.fail_on_avail,
        single: cli.single,
        boot: cli.boot,
        replay: cli.replay,
        t_s: cli.timeout,
    };
    let mut avail = AvailReport::default();
    for &seed in &seeds {
        let r = schedule::run_opts(seed, cli.hosts, cli.seconds * 1000, opts, |_| {})?;
        if let Some(a) = &r.avail {
            if cli.avail_log {
                if let (Some(f), false) = (&r.single, a.log.is_empty()) {
                    println!("seed {seed}: single fault: {}", f.describe());
                }
                for line in &a.log {
                    println!("seed {seed} ({} hosts): {line}", r.hosts);
                }
            }
            let mut a = a.clone();
            a.log.clear();
            avail.add(&a);
        }
        for line in &r.trace {
            println!("{line}");
        }
        fences += r.fences();
        for (code, k) in &r.fence_codes {
            *codes.entry(code.clone()).or_insert(0) += k;
        }
        faults += r.faults;
        shrinks += r.shrinks;
        if let Some(v) = &r.violation {
            bad += 1;
            let mut hosts = cli.hosts.map(|h| format!(" --hosts {h}")).unwrap_or_default();
            for (on, flag) in [
                (cli.single, " --single"),
                (cli.boot, " --boot"),
                (cli.replay, " --replay"),
            ] {
                if on {
                    hosts += flag;
                }
            }
            println!(
                "seed {seed} ({} hosts): VIOLATION {v}\n  reproduce: cargo run -p ha-sim -- --seed {seed}{hosts} --seconds {} --trace",
                r.hosts, cli.seconds
            );
        }
    }
    println!(
        "{} seeds, {faults} faults, {shrinks} liveset shrinks, {fences} fences, {bad} violations",
        seeds.len()
    );
    if !codes.is_empty() {
        let by: Vec<String> = codes.iter().map(|(c, k)| format!("{c} {k}")).collect();
        println!("fences by code: {}", by.join(", "));
    }
    if opts.avail {
        print!("{}", avail.tables());
    }
    if bad > 0 || (cli.fail_on_avail && avail.failing()) {
        std::process::exit(1);
    }
    Ok(())
}

/// `--leases --coupled`: the lease world driven by the liveset world.
fn run_coupled(cli: &Cli, seeds: &[u64]) -> Result<()> {
    use ha_sim::leases::coupled::{self, Masters, Setup};
    let setup = Setup {
        hosts: cli.hosts,
        millis: cli.seconds * 1000,
        masters: if cli.every_master {
            Masters::Every
        } else {
            Masters::Lock
        },
        survival: cli
            .broken_survival
            .then_some(coupled::always_wins as fn(&ha_liveness::rules::Views) -> ha_liveness::rules::Outcome),
        broken: Default::default(),
        real_guests: cli.real_guests,
        trace: cli.trace,
    };
    let (mut bad, mut split, mut two_ms, mut takeovers, mut fences, mut faults) = (0, 0, 0u64, 0, 0, 0);
    for &seed in seeds {
        let r = coupled::run(seed, setup)?;
        faults += r.leases.faults;
        takeovers += r.leases.takeovers;
        fences += r.engine_fences;
        two_ms += r.two_masters_ms;
        if let Some(v) = &r.liveset_violation {
            split += 1;
            if cli.seed.is_some() {
                println!("seed {seed}: the liveset broke a rule: {v}");
            }
        }
        if let Some(v) = &r.leases.violation {
            bad += 1;
            println!(
                "seed {seed}: VIOLATION {v}\n  reproduce: cargo run -p ha-sim -- --leases --coupled{}{}{} --seed {seed} --trace",
                if cli.every_master { " --every-master" } else { "" },
                if cli.broken_survival { " --broken-survival" } else { "" },
                if cli.real_guests { " --real-guests" } else { "" }
            );
        }
    }
    println!(
        "{} seeds (leases driven by the liveset{}), {faults} faults, {fences} engine fences with marks, {takeovers} takeovers, {split} seeds where the liveset broke a rule, two masters for {:.0} s in all, {bad} violations",
        seeds.len(),
        if cli.real_guests { ", real guests" } else { "" },
        two_ms as f64 / 1000.0
    );
    if bad > 0 {
        std::process::exit(1);
    }
    Ok(())
}

/// `--leases`: the lease world over `seeds`.
fn run_leases(cli: &Cli, seeds: &[u64]) -> Result<()> {
    let seconds = if cli.seconds == 300 { 120 } else { cli.seconds };
    let timing = ha_lease::host::Timing::for_timeout(10_000);
    let (mut bad, mut faults, mut takeovers, mut released, mut fences, mut resets, mut down, mut span) =
        (0, 0, 0, 0, 0, 0, 0u64, 0u64);
    for &seed in seeds {
        let r = ha_sim::leases::run_guests(
            seed,
            cli.hosts,
            seconds * 1000,
            timing,
            Default::default(),
            cli.real_guests,
            cli.trace,
        );
        faults += r.faults;
        takeovers += r.takeovers;
        released += r.released;
        fences += r.fences;
        resets += r.resets;
        down += r.down_ms;
        span += r.span_ms;
        if let Some(v) = &r.violation {
            bad += 1;
            println!(
                "seed {seed}: VIOLATION {v}\n  reproduce: cargo run -p ha-sim -- --leases{} --seed {seed} --trace",
                if cli.real_guests { " --real-guests" } else { "" }
            );
        }
    }
    let share = if span == 0 {
        0.0
    } else {
        100.0 * down as f64 / span as f64
    };
    println!(
        "{} seeds (leases{}), {faults} faults, {takeovers} takeovers, {released} releases, {fences} fences, {resets} guard resets, VMs down {share:.1}% of the time, {bad} violations",
        seeds.len(),
        if cli.real_guests { ", real guests" } else { "" }
    );
    if bad > 0 {
        std::process::exit(1);
    }
    Ok(())
}
