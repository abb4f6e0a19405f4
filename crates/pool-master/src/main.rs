//! `xapid`: the pool-ha host daemon, and the lab that runs a pool of them.
//!
//! - `xapid serve --data-dir DIR --address IP --port PORT`: run one host.
//! - `xapid lab [--hosts N] [--dir DIR]`: a pool of N hosts on this machine.
//! - `xapid lab status --dir DIR`: the lab's hosts and processes.
//! - `xapid lab power-off|power-on|cut-network|restore-network|cut-storage|restore-storage HOST --dir DIR`:
//!   the seeds' faults; `xapid lab block|unblock FROM TO --dir DIR`: one-way
//!   cuts in a `--netns` lab.
//! - `xapid lab chaos --dir DIR --seed S --duration D`, `xapid lab check --dir DIR`:
//!   random faults on a running lab pool, and the safety checker.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use pool_master::daemon::{Config, Daemon};
use pool_master::lab::{self, FaultAction, LabOptions};

#[derive(Parser)]
#[command(name = "xapid", version, about = "The pool-ha host daemon")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one host of a pool.
    Serve(ServeArgs),
    /// Run a pool of several hosts on this machine.
    Lab(LabArgs),
}

#[derive(Args)]
struct ServeArgs {
    /// Where this host keeps its database and local storage.
    #[arg(long)]
    data_dir: PathBuf,
    /// The address to listen on; the pool knows the host by it.
    #[arg(long, default_value = "127.0.0.1")]
    address: String,
    /// The API port (the same on every host of a pool).
    #[arg(long, default_value_t = 8090)]
    port: u16,
    /// The root password, at first start (prefer --root-password-file).
    #[arg(long)]
    root_password: Option<String>,
    /// A file whose first line is the root password, at first start.
    #[arg(long)]
    root_password_file: Option<PathBuf>,
    /// The host's name, at first start.
    #[arg(long)]
    name: Option<String>,
    /// Memory the host offers to VMs, in bytes.
    #[arg(long, default_value_t = 16 << 30)]
    memory: i64,
    /// Sessions idle for longer than this many seconds expire.
    #[arg(long, default_value_t = 24 * 3600)]
    session_idle_timeout: u64,
    /// Lab mode: allow HA timeouts down to 3 s (for tests and demos).
    #[arg(long)]
    lab: bool,
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
struct LabArgs {
    #[command(subcommand)]
    command: Option<LabCommand>,
    /// How many hosts.
    #[arg(long, default_value_t = 3)]
    hosts: usize,
    /// The lab's directory (hosts' data, the shared SR, `env`); a new
    /// temporary one when not given. An existing lab there is restarted.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The API port of every host.
    #[arg(long, default_value_t = 8090)]
    port: u16,
    /// The first three octets of the hosts' loopback addresses (127.A.B).
    #[arg(long)]
    subnet: Option<String>,
    /// The root password (random when not given).
    #[arg(long)]
    password: Option<String>,
    /// How many VMs to create.
    #[arg(long, default_value_t = 3)]
    vms: usize,
    /// Memory of each host, in bytes.
    #[arg(long, default_value_t = 8 << 30)]
    host_memory: i64,
    /// Memory of each VM, in bytes.
    #[arg(long, default_value_t = 1 << 30)]
    vm_memory: i64,
    /// Enable HA on a new lab pool.
    #[arg(long)]
    ha: bool,
    /// The HA timeout in seconds with --ha (the lab allows 3 and up).
    #[arg(long, default_value_t = 10)]
    ha_timeout: u64,
    /// Each host in its own network namespace behind one bridge, so that
    /// cable pulls and one-way cuts are the kernel's (root, iproute2,
    /// nftables). --subnet then takes a private /24 such as 10.213.7.
    #[arg(long)]
    netns: bool,
}

#[derive(Subcommand)]
enum LabCommand {
    /// List the lab's hosts, their processes and roles.
    Status {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Pull a host's power (its process is killed and stays down).
    PowerOff(FaultArgs),
    /// Give a host its power back; the lab boots it.
    PowerOn(FaultArgs),
    /// Pull a host's network cable: no heartbeats, no calls in or out.
    CutNetwork(FaultArgs),
    RestoreNetwork(FaultArgs),
    /// Take the shared storage away from a host: statefile and disk I/O fail.
    CutStorage(FaultArgs),
    RestoreStorage(FaultArgs),
    /// Halt a VM from inside its guest (as `shutdown -h` in the VM would).
    GuestHalt {
        /// The VM, by name or uuid.
        vm: String,
        #[arg(long)]
        dir: PathBuf,
    },
    /// Inject random faults into a running lab pool with HA on, then check
    /// it (see `check`); exits non-zero on any violation.
    Chaos {
        #[arg(long)]
        dir: PathBuf,
        /// The seed of the fault schedule (random when not given; printed).
        #[arg(long)]
        seed: Option<u64>,
        /// How long to inject faults: seconds, or with a unit (90s, 30m, 2h).
        #[arg(long, value_parser = lab::chaos::parse_duration, default_value = "5m")]
        duration: std::time::Duration,
    },
    /// Drop what one host sends to another (a one-way cut; --netns labs).
    Block(LinkArgs),
    /// Deliver again what one host sends to another.
    Unblock(LinkArgs),
    /// Check the lab pool: split-brain writes on the VMs' disks and, after
    /// a chaos run, lost commits and protected VMs down too long.
    Check {
        #[arg(long)]
        dir: PathBuf,
    },
}

#[derive(Args)]
struct LinkArgs {
    /// The sending host, by name or uuid.
    from: String,
    /// The host its packets no longer reach.
    to: String,
    #[arg(long)]
    dir: PathBuf,
}

#[derive(Args)]
struct FaultArgs {
    /// The host, by name (host2) or uuid.
    host: String,
    /// The lab's directory.
    #[arg(long)]
    dir: PathBuf,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Lab(args) => match args.command {
                Some(LabCommand::Status { dir }) => lab::status(&dir).await,
                Some(LabCommand::PowerOff(f)) => lab::fault(&f.dir, &f.host, FaultAction::PowerOff).await,
                Some(LabCommand::PowerOn(f)) => lab::fault(&f.dir, &f.host, FaultAction::PowerOn).await,
                Some(LabCommand::CutNetwork(f)) => lab::fault(&f.dir, &f.host, FaultAction::CutNetwork).await,
                Some(LabCommand::RestoreNetwork(f)) => lab::fault(&f.dir, &f.host, FaultAction::RestoreNetwork).await,
                Some(LabCommand::CutStorage(f)) => lab::fault(&f.dir, &f.host, FaultAction::CutStorage).await,
                Some(LabCommand::GuestHalt { vm, dir }) => lab::guest_halt(&dir, &vm).await,
                Some(LabCommand::Chaos { dir, seed, duration }) => {
                    lab::chaos::run(lab::chaos::ChaosOptions {
                        dir,
                        seed: seed.unwrap_or_else(rand::random),
                        duration,
                    })
                    .await
                }
                Some(LabCommand::Check { dir }) => lab::check::run(&dir).await,
                Some(LabCommand::Block(l)) => lab::block(&l.dir, &l.from, &l.to, true).await,
                Some(LabCommand::Unblock(l)) => lab::block(&l.dir, &l.from, &l.to, false).await,
                Some(LabCommand::RestoreStorage(f)) => lab::fault(&f.dir, &f.host, FaultAction::RestoreStorage).await,
                None => {
                    lab::run(LabOptions {
                        hosts: args.hosts,
                        dir: args.dir,
                        port: args.port,
                        subnet: args.subnet,
                        password: args.password,
                        vms: args.vms,
                        host_memory: args.host_memory,
                        vm_memory: args.vm_memory,
                        ha_timeout: args.ha.then_some(args.ha_timeout),
                        netns: args.netns,
                    })
                    .await
                }
            },
        }
    })
}

async fn serve(args: ServeArgs) -> Result<()> {
    let root_password = match (&args.root_password_file, &args.root_password) {
        (Some(f), _) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("reading the root password from {}", f.display()))?
                .lines()
                .next()
                .unwrap_or_default()
                .to_string(),
        ),
        (None, p) => p.clone(),
    };
    let config = Config {
        data_dir: args.data_dir,
        address: args.address.clone(),
        port: args.port,
        root_password,
        memory_total: args.memory,
        name_label: args.name,
        session_idle_timeout: Duration::from_secs(args.session_idle_timeout),
        lab: args.lab,
    };
    let daemon = Daemon::open(config).context("opening the host")?;
    let listener = tokio::net::TcpListener::bind((args.address.as_str(), args.port))
        .await
        .with_context(|| format!("listening on {}:{}", args.address, args.port))?;
    tracing::info!(host = %daemon.host_uuid, address = %args.address, port = args.port, "xapid is serving");
    pool_master::server::serve(daemon, listener, shutdown_signal())
        .await
        .context("serving the API")?;
    tracing::info!("xapid stopped");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
