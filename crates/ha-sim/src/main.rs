//! `ha-sim`: run the HA engines through seeded random fault schedules.
//!
//! `cargo run -p ha-sim -- --seeds 500` runs seeds 0..500 and prints one
//! line per violation with the command that replays it;
//! `--seed S --trace` replays one seed and prints what happened.

use anyhow::{bail, Result};
use clap::Parser;
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
    let (mut bad, mut fences, mut faults, mut shrinks) = (0, 0, 0, 0);
    let mut codes = std::collections::BTreeMap::<String, usize>::new();
    for &seed in &seeds {
        let r = schedule::run(seed, cli.hosts, cli.seconds * 1000, cli.trace)?;
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
            let hosts = cli.hosts.map(|h| format!(" --hosts {h}")).unwrap_or_default();
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
    if bad > 0 {
        std::process::exit(1);
    }
    Ok(())
}
