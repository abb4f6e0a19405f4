//! `xapid-lab` (run as `xapid lab`): a pool of `xapid` hosts on this
//! machine, for demos and tests, outside the daemon.
//!
//! - `xapid lab [--hosts N] [--dir DIR]`: a pool of N hosts on this machine.
//! - `xapid lab status --dir DIR`: the lab's hosts and processes.
//! - `xapid lab power-off|power-on|cut-network|restore-network|cut-storage|restore-storage HOST --dir DIR`:
//!   the seeds' faults; `xapid lab freeze|thaw HOST --dir DIR`: a frozen xapid; `xapid lab block|unblock FROM TO --dir DIR`: one-way
//!   cuts in a `--netns` lab.
//! - `xapid lab chaos --dir DIR --seed S --duration D`, `xapid lab check --dir DIR`:
//!   random faults on a running lab pool, and the safety checker.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use pool_lab::{FaultAction, LabOptions};

#[derive(Parser)]
#[command(
    name = "xapid-lab",
    bin_name = "xapid lab",
    version,
    about = "A pool of xapid hosts on this machine: start it, pull its cables, run chaos, check it",
    args_conflicts_with_subcommands = true
)]
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
    /// What runs the VMs: tasks inside xapid (sim) or QEMU processes (qemu:
    /// the test guest from guest/build.sh unless --guest-kernel is given).
    #[arg(long, value_enum, default_value_t = pool_master::driver::DriverKind::Sim)]
    driver: pool_master::driver::DriverKind,
    /// The VMs' kernel with --driver qemu.
    #[arg(long)]
    guest_kernel: Option<PathBuf>,
    /// The VMs' initrd with --driver qemu.
    #[arg(long, requires = "guest_kernel")]
    guest_initrd: Option<PathBuf>,
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
    /// Freeze a host's xapid (SIGSTOP), as a stalled kernel would; its real
    /// guests run on (until its fence guard stops them).
    Freeze(FaultArgs),
    /// Let a frozen xapid run again (SIGCONT); it fences if its watchdog
    /// ran out meanwhile.
    Thaw(FaultArgs),
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
        #[arg(long, value_parser = pool_lab::chaos::parse_duration, default_value = "5m")]
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
    let args = LabArgs::parse();
    pool_master::logging::init();
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        match args.command {
            Some(LabCommand::Status { dir }) => pool_lab::status(&dir).await,
            Some(LabCommand::PowerOff(f)) => pool_lab::fault(&f.dir, &f.host, FaultAction::PowerOff).await,
            Some(LabCommand::PowerOn(f)) => pool_lab::fault(&f.dir, &f.host, FaultAction::PowerOn).await,
            Some(LabCommand::CutNetwork(f)) => pool_lab::fault(&f.dir, &f.host, FaultAction::CutNetwork).await,
            Some(LabCommand::RestoreNetwork(f)) => pool_lab::fault(&f.dir, &f.host, FaultAction::RestoreNetwork).await,
            Some(LabCommand::CutStorage(f)) => pool_lab::fault(&f.dir, &f.host, FaultAction::CutStorage).await,
            Some(LabCommand::GuestHalt { vm, dir }) => pool_lab::guest_halt(&dir, &vm).await,
            Some(LabCommand::Chaos { dir, seed, duration }) => {
                pool_lab::chaos::run(pool_lab::chaos::ChaosOptions {
                    dir,
                    seed: seed.unwrap_or_else(rand::random),
                    duration,
                })
                .await
            }
            Some(LabCommand::Check { dir }) => pool_lab::check::run(&dir).await,
            Some(LabCommand::Block(l)) => pool_lab::block(&l.dir, &l.from, &l.to, true).await,
            Some(LabCommand::Unblock(l)) => pool_lab::block(&l.dir, &l.from, &l.to, false).await,
            Some(LabCommand::RestoreStorage(f)) => pool_lab::fault(&f.dir, &f.host, FaultAction::RestoreStorage).await,
            Some(LabCommand::Freeze(f)) => pool_lab::fault(&f.dir, &f.host, FaultAction::Freeze).await,
            Some(LabCommand::Thaw(f)) => pool_lab::fault(&f.dir, &f.host, FaultAction::Thaw).await,
            None => {
                pool_lab::run(LabOptions {
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
                    driver: args.driver,
                    guest_kernel: args.guest_kernel,
                    guest_initrd: args.guest_initrd,
                })
                .await
            }
        }
    })
}
