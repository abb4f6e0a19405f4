//! `ha-plan`: the failover planner on a pool snapshot, offline (as admins
//! use `crm_simulate` on a saved CIB).
//!
//! ```text
//! ha-plan max-failures FILE [--format text|json] [--mode exact|xapi]
//! ha-plan check FILE --failures N [--format text|json] [--mode exact|xapi]
//! ```
//!
//! FILE is the planner's `Pool` as JSON (`snapshot.rs`). `max-failures`
//! prints how many host failures the pool tolerates, how that is proven and
//! the bounds; `check` whether a plan exists for N failures (exit code 0 if
//! one is proven, 1 if not or unknown). Bad input or usage: one line on
//! stderr and exit code 2.

mod snapshot;

use std::process::ExitCode;

use ha_planner::{Mode, Planner, Proof, Tolerance, Verdict, Witness};
use serde_json::{json, Value};

const USAGE: &str =
    "usage: ha-plan max-failures FILE [--format text|json] [--mode exact|xapi] | ha-plan check FILE --failures N [--format text|json] [--mode exact|xapi]";

/// Why `ha-plan` gives up: each is printed as one line, exit code 2.
#[derive(Debug, thiserror::Error)]
enum CliError {
    /// The command line: what is wrong with it.
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Snapshot(#[from] snapshot::SnapshotError),
    #[error("{0}")]
    Plan(#[from] ha_planner::PlanError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Text,
    Json,
}

#[derive(Debug)]
enum Command {
    MaxFailures,
    Check(u32),
}

#[derive(Debug)]
struct Args {
    command: Command,
    file: String,
    format: Format,
    mode: Mode,
}

fn parse_args(args: &[String]) -> Result<Args, CliError> {
    let usage = |message: String| CliError::Usage(message);
    let mut it = args.iter();
    let command = it.next().ok_or_else(|| usage(USAGE.to_string()))?;
    let file = it.next().ok_or_else(|| usage(USAGE.to_string()))?.clone();
    let mut format = Format::Text;
    let mut mode = Mode::Exact;
    let mut failures = None;
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| usage(format!("{flag} needs a value; {USAGE}")));
        match flag.as_str() {
            "--format" => {
                format = match value()?.as_str() {
                    "text" => Format::Text,
                    "json" => Format::Json,
                    other => return Err(usage(format!("unknown format '{other}' (expected text or json)"))),
                }
            }
            "--mode" => mode = value()?.parse().map_err(usage)?,
            "--failures" => {
                let v = value()?;
                failures = Some(
                    v.parse::<u32>()
                        .map_err(|_| usage(format!("--failures must be a number of hosts, not '{v}'")))?,
                );
            }
            other => return Err(usage(format!("unknown argument '{other}'; {USAGE}"))),
        }
    }
    let command = match (command.as_str(), failures) {
        ("max-failures", None) => Command::MaxFailures,
        ("max-failures", Some(_)) => return Err(usage("max-failures takes no --failures".into())),
        ("check", Some(n)) => Command::Check(n),
        ("check", None) => return Err(usage("check needs --failures N".into())),
        (other, _) => return Err(usage(format!("unknown command '{other}'; {USAGE}"))),
    };
    Ok(Args {
        command,
        file,
        format,
        mode,
    })
}

fn witness_json(w: &Option<Witness>) -> Value {
    match w {
        Some(w) => json!({"failed_hosts": w.failed_hosts, "unplaced_vms": w.unplaced_vms}),
        None => Value::Null,
    }
}

fn witness_text(w: &Witness) -> String {
    format!(
        "if these hosts fail: {}; these protected VMs cannot be restarted: {}",
        w.failed_hosts.join(", "),
        w.unplaced_vms.join(", ")
    )
}

fn max_failures(t: &Tolerance, format: Format) -> String {
    let (proof, at_most) = match t.proof {
        Proof::Exact => ("exact", t.failures),
        Proof::LowerBound { at_most } => ("lower-bound", at_most),
        Proof::Reference => ("reference", t.failures),
    };
    match format {
        Format::Json => json!({
            "max_failures": t.failures,
            "proof": proof,
            "at_most": at_most,
            "proven_by": t.proven_by.name(),
            "restartable_now": t.restartable_now,
            "witness": witness_json(&t.witness),
        })
        .to_string(),
        Format::Text => {
            let mut out = match t.proof {
                Proof::LowerBound { at_most } => {
                    format!("max failures: {} (lower bound; at most {at_most})", t.failures)
                }
                _ => format!("max failures: {} ({proof})", t.failures),
            };
            out.push_str(&format!("\nproven by: {}", t.proven_by.name()));
            if !t.restartable_now {
                out.push_str("\nnot every protected VM can run now");
            }
            if let Some(w) = &t.witness {
                out.push_str(&format!("\n{} failures: {}", t.failures + 1, witness_text(w)));
            }
            out
        }
    }
}

fn check(n: u32, v: &Verdict, format: Format) -> String {
    let (plan, witness) = match v {
        Verdict::Exists => ("exists", None),
        Verdict::NoPlan(w) => ("no-plan", w.clone()),
        Verdict::Unknown => ("unknown", None),
    };
    match format {
        Format::Json => json!({"failures": n, "plan": plan, "witness": witness_json(&witness)}).to_string(),
        Format::Text => {
            let mut out = match v {
                Verdict::Exists => format!("a plan for {n} host failures exists (proven)"),
                Verdict::NoPlan(_) => format!("no plan for {n} host failures"),
                Verdict::Unknown => format!("unknown: a plan for {n} host failures is neither proven nor refuted"),
            };
            if let Some(w) = &witness {
                out.push_str(&format!("\n{}", witness_text(w)));
            }
            out
        }
    }
}

fn run(args: &[String]) -> Result<(String, ExitCode), CliError> {
    let args = parse_args(args)?;
    let pool = snapshot::read(&args.file)?;
    let planner = Planner::new(args.mode);
    match args.command {
        Command::MaxFailures => {
            let t = planner.max_host_failures_to_tolerate(&pool)?;
            Ok((max_failures(&t, args.format), ExitCode::SUCCESS))
        }
        Command::Check(n) => {
            let v = planner.plan_exists(&pool, n)?;
            let code = if v.exists() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            };
            Ok((check(n, &v, args.format), code))
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok((out, code)) => {
            println!("{out}");
            code
        }
        Err(e) => {
            // One line, whatever the error says.
            eprintln!("ha-plan: {}", e.to_string().replace('\n', " "));
            ExitCode::from(2)
        }
    }
}
