//! `xapid`: the pool-ha host daemon.
//!
//! - `xapid serve --data-dir DIR --address IP --port PORT`: run one host.
//! - `xapid lab ...`: runs `xapid-lab` (crate `pool-lab`), installed next
//!   to it, with the same arguments: the lab is not part of the daemon.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use pool_master::daemon::{Config, Daemon};
use pool_master::driver::qemu::Accel;
use pool_master::driver::{DriverKind, KernelBoot};

#[derive(Parser)]
#[command(name = "xapid", version, about = "The pool-ha host daemon")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one host of a pool.
    Serve(Box<ServeArgs>),
    /// The fence guard beside a host running real guests (started by
    /// `xapid serve --driver qemu`, not by hand).
    #[command(hide = true)]
    Guard {
        /// Reset the machine (sysrq) when killed guests do not exit; else
        /// kill xapid (the lab).
        #[arg(long)]
        reset_machine: bool,
    },
    /// Run a pool of several hosts on this machine (the `xapid-lab`
    /// program installed next to xapid; `xapid lab --help` for its options).
    #[command(disable_help_flag = true)]
    Lab {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
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
    #[arg(long, default_value_t = 443)]
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
    /// Memory the host offers to VMs, in bytes (default: 16 GiB with the
    /// sim driver; the machine's memory less 1 GiB for the host with qemu).
    #[arg(long)]
    memory: Option<i64>,
    /// What runs the guests: tasks inside xapid (sim) or QEMU processes.
    #[arg(long, value_enum, default_value_t = DriverKind::Sim)]
    driver: DriverKind,
    /// The qemu driver's accelerator (auto: KVM when it works here, else TCG).
    #[arg(long, value_enum, default_value_t = Accel::Auto)]
    accel: Accel,
    /// The kernel a VM boots when it names none (qemu driver; `guest/build.sh`
    /// builds a test guest).
    #[arg(long)]
    guest_kernel: Option<PathBuf>,
    /// The initrd that goes with --guest-kernel.
    #[arg(long, requires = "guest_kernel")]
    guest_initrd: Option<PathBuf>,
    /// Where the kernels and initrds VMs name (other-config:pool-ha-kernel)
    /// must be (default /boot/guest).
    #[arg(long)]
    guest_kernel_dir: Option<PathBuf>,
    /// The machine's watchdog device (e.g. /dev/watchdog), armed with HA:
    /// the host resets if xapid stops feeding it. Not for the lab.
    #[arg(long)]
    watchdog_device: Option<PathBuf>,
    /// Sessions idle for longer than this many seconds expire.
    #[arg(long, default_value_t = 24 * 3600)]
    session_idle_timeout: u64,
    /// Lab mode: allow HA timeouts down to 3 s (for tests and demos).
    #[arg(long)]
    lab: bool,
}

fn main() -> Result<()> {
    let args = match Cli::parse().command {
        Command::Lab { args } => return run_lab(&args),
        Command::Serve(args) => *args,
        Command::Guard { reset_machine } => {
            pool_master::driver::qemu::guard::run(reset_machine);
            return Ok(());
        }
    };
    pool_master::logging::init();
    raise_open_file_limit();
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(serve(args))
}

async fn serve(args: ServeArgs) -> Result<()> {
    let stop = shutdown_signal();
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
        memory_total: match (args.memory, args.driver) {
            (Some(m), _) => m,
            (None, DriverKind::Sim) => 16 << 30,
            (None, DriverKind::Qemu) => pool_master::memory::machine_memory_for_guests()
                .context("reading the machine's memory from /proc/meminfo (or give --memory)")?,
        },
        name_label: args.name,
        session_idle_timeout: Duration::from_secs(args.session_idle_timeout),
        lab: args.lab,
        driver: args.driver,
        accel: args.accel,
        guest_kernel: args.guest_kernel.map(|kernel| KernelBoot {
            kernel,
            initrd: args.guest_initrd,
            args: String::new(),
        }),
        guest_kernel_dir: args.guest_kernel_dir,
        watchdog_device: args.watchdog_device,
    };
    if config.driver == DriverKind::Qemu {
        let me = std::env::current_exe().context("cannot find this program's own path")?;
        // A real server (its watchdog device given) resets itself when a
        // killed guest will not exit; the lab must not.
        let reset_machine = config.watchdog_device.is_some();
        pool_master::driver::qemu::guard::spawn(&me, reset_machine).context("starting the fence guard")?;
    }
    let daemon = Daemon::open(config).context("opening the host")?;
    let listener = tokio::net::TcpListener::bind((args.address.as_str(), args.port))
        .await
        .with_context(|| format!("listening on {}:{}", args.address, args.port))?;
    tracing::info!(host = %daemon.host_uuid(), address = %args.address, port = args.port, "xapid is serving");
    // systemd (Type=notify): ready once the API's socket is bound and the
    // database open; calls that arrive meanwhile wait in the backlog.
    notify_systemd(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&format!("serving the API on {}:{}", args.address, args.port)),
    ]);
    pool_master::server::serve(daemon, listener, async {
        stop.await;
        notify_systemd(&[sd_notify::NotifyState::Stopping]);
    })
    .await
    .context("serving the API")?;
    tracing::info!("xapid stopped");
    Ok(())
}

/// Tell systemd (when it started this process with `NOTIFY_SOCKET`) how the
/// service is doing; nothing without it.
fn notify_systemd(state: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(false, state) {
        tracing::warn!("cannot notify systemd: {e}");
    }
}

/// Raise the soft limit of open files to the hard one, and say what it is:
/// the API's connection caps are a quarter of it (`listener::Limits`), and
/// the rest is for HA's I/O, the database and the guests (issue 26: a member
/// at the usual 1,024 ran out under idle API connections and fenced).
fn raise_open_file_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::info!(from = soft, to = hard, "raised the open-file limit"),
            Err(e) => tracing::warn!(limit = soft, hard, "cannot raise the open-file limit: {e}"),
        },
        Ok((soft, _)) => tracing::info!(limit = soft, "open-file limit (already the hard limit)"),
        Err(e) => tracing::warn!("cannot read the open-file limit: {e}"),
    }
}

/// Ask now to be told of SIGTERM and SIGINT: from here on they stop xapid
/// cleanly (requests in progress finish) instead of killing it, however
/// early in its start they come. The future ends at the first of them.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

/// `xapid lab ARGS`: run the `xapid-lab` next to this program in its place.
fn run_lab(args: &[std::ffi::OsString]) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let me = std::env::current_exe().context("cannot find this program's own path")?;
    let lab = me.with_file_name("xapid-lab");
    if !lab.exists() {
        anyhow::bail!(
            "{} is missing: the lab is its own program (build the workspace: cargo build)",
            lab.display()
        );
    }
    let err = std::process::Command::new(&lab).args(args).exec();
    Err(err).with_context(|| format!("cannot run {}", lab.display()))
}
