//! `ha-explore`: run every fault schedule of a bounded space in the
//! simulated world and report each one that breaks a safety property.
//!
//! `ha-explore --hosts 3 --faults 2 --step-ms 1000 --window-ms 30000`
//! explores; add `--replay "31000 net-cut 1; 33000 freeze 1 8000"` to run
//! one schedule of that space again with a trace.

use std::time::Instant;

use anyhow::{bail, Result};
use clap::Parser;
use ha_sim::explore::{self, Schedule, Space};

#[derive(Parser)]
#[command(name = "ha-explore", about = "Bounded exhaustive exploration of HA fault schedules")]
struct Cli {
    #[arg(long, default_value_t = 3)]
    hosts: usize,
    /// At most this many faults per schedule (undoing one counts).
    #[arg(long, default_value_t = 2)]
    faults: usize,
    /// Between decision points.
    #[arg(long, default_value_t = 1000)]
    step_ms: u64,
    /// Decision points span this long.
    #[arg(long, default_value_t = 30_000)]
    window_ms: u64,
    /// The first decision point (the pool forms by 30 s).
    #[arg(long, default_value_t = 30_000)]
    start_ms: u64,
    /// Faults stay this long after the window, then everything heals.
    #[arg(long, default_value_t = 20_000)]
    hold_ms: u64,
    /// The healed pool runs this long.
    #[arg(long, default_value_t = 60_000)]
    settle_ms: u64,
    /// HA timeout T in seconds.
    #[arg(long, default_value_t = 10)]
    t_s: u64,
    /// Packets take 1 ms plus up to this long (drawn from the seed).
    #[arg(long, default_value_t = 0)]
    max_delay_ms: u64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Slow statefile latencies, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "7000,12000")]
    latencies: Vec<u64>,
    /// Freeze lengths, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "8000,12000")]
    freezes: Vec<u64>,
    /// Do not prune states seen before.
    #[arg(long)]
    no_dedup: bool,
    /// Where a path cannot branch any more, compare states this often.
    #[arg(long, default_value_t = 10_000)]
    check_ms: u64,
    /// Print at most this many violations.
    #[arg(long, default_value_t = 20)]
    show: usize,
    /// Replay one schedule with a trace instead of exploring.
    #[arg(long)]
    replay: Option<String>,
}

impl Cli {
    fn space(&self) -> Space {
        let mut s = Space::new(self.hosts, self.faults, self.step_ms, self.window_ms);
        s.start_ms = self.start_ms;
        s.hold_ms = self.hold_ms;
        s.settle_ms = self.settle_ms;
        s.t_s = self.t_s;
        s.max_delay_ms = self.max_delay_ms;
        s.seed = self.seed;
        s.alphabet.latencies = self.latencies.clone();
        s.alphabet.freezes = self.freezes.clone();
        s.dedup = !self.no_dedup;
        s.keep = self.show;
        s.check_ms = self.check_ms;
        s
    }

    /// The options that define the space, to replay a schedule of it.
    fn space_args(&self) -> String {
        format!(
            "--hosts {} --faults {} --step-ms {} --window-ms {} --start-ms {} --hold-ms {} --settle-ms {} --t-s {} --max-delay-ms {} --seed {}",
            self.hosts,
            self.faults,
            self.step_ms,
            self.window_ms,
            self.start_ms,
            self.hold_ms,
            self.settle_ms,
            self.t_s,
            self.max_delay_ms,
            self.seed
        )
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let space = cli.space();
    if let Some(text) = &cli.replay {
        let schedule: Schedule = text.parse()?;
        let r = explore::replay(&space, &schedule, |_| {})?;
        for line in &r.trace {
            println!("{line}");
        }
        match r.violation {
            Some(v) => {
                println!("VIOLATION {v}");
                std::process::exit(1);
            }
            None => println!("no violation"),
        }
        return Ok(());
    }
    let started = Instant::now();
    let s = explore::explore(&space)?;
    let secs = started.elapsed().as_secs_f64();
    for f in &s.violations {
        println!(
            "VIOLATION {}\n  schedule: {}\n  replay: cargo run --release -p ha-sim --bin ha-explore -- {} --replay \"{}\"",
            f.violation,
            f.schedule,
            cli.space_args(),
            f.schedule
        );
    }
    println!(
        "{} hosts, {} faults, {} decision points: {} schedules, {} pruned, {} states, {} steps ({:.0} simulated s), {:.1} s, {} violations",
        cli.hosts,
        cli.faults,
        cli.window_ms.div_ceil(cli.step_ms.max(1)),
        s.schedules,
        s.pruned,
        s.states,
        s.steps,
        s.steps as f64 * 0.05,
        secs,
        s.violating
    );
    if !s.formed {
        bail!("the pool had not formed its liveset when the window opened");
    }
    if s.violating > 0 {
        std::process::exit(1);
    }
    Ok(())
}
