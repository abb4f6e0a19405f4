//! `xapid`: the pool-ha host daemon.
//!
//! - `xapid serve --data-dir DIR --address IP --port PORT`: run one host
//!   (or with those in `/etc/pool-ha/xapid.toml`, or `POOL_HA_*`
//!   variables; `--check-config` prints the effective settings).
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
    /// Print this manual page (roff) to standard output: `dist/man/xapid.8`.
    #[command(hide = true, name = "__man")]
    Man,
    /// Run a pool of several hosts on this machine (the `xapid-lab`
    /// program installed next to xapid; `xapid lab --help` for its options).
    #[command(disable_help_flag = true)]
    Lab {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

/// `xapid serve`'s settings: each a flag, a `POOL_HA_*` environment
/// variable and a key of the settings file (`pool_master::config_file`),
/// in that order of precedence.
#[derive(Args)]
struct ServeArgs {
    /// The settings file (default /etc/pool-ha/xapid.toml, if present).
    #[arg(long, env = "POOL_HA_CONFIG")]
    config: Option<PathBuf>,
    /// Print the effective settings, each with where it came from, and
    /// exit: 0 when they are usable, 2 with one line per problem.
    #[arg(long)]
    check_config: bool,
    /// Where this host keeps its database and local storage.
    #[arg(long, env = "POOL_HA_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The management address: the one the pool and its clients know
    /// the host by (and the API listens on, unless --bind-address).
    #[arg(long, env = "POOL_HA_ADDRESS", default_value = "127.0.0.1")]
    address: String,
    /// The address the API, the HA heartbeats and incoming live
    /// migrations listen on, when not the management address (0.0.0.0 or :: for every interface; behind NAT,
    /// the local one).
    #[arg(long, env = "POOL_HA_BIND_ADDRESS")]
    bind_address: Option<String>,
    /// The API's HTTPS port (the same on every host of a pool). With --lab
    /// it takes plain HTTP too.
    #[arg(long, env = "POOL_HA_PORT", default_value_t = 443)]
    port: u16,
    /// The plain-HTTP port, XAPI's port 80: the same API in clear, for
    /// `xe --nossl` and old clients (default 80; none with --lab unless
    /// given; 0 for none).
    #[arg(long, env = "POOL_HA_HTTP_PORT")]
    http_port: Option<u16>,
    /// Serve no plain HTTP at all (XAPI's https_only): HTTPS alone.
    #[arg(long, env = "POOL_HA_HTTPS_ONLY")]
    https_only: bool,
    /// The root password, at first start (prefer --root-password-file).
    #[arg(long)]
    root_password: Option<String>,
    /// A file holding the root password, at first start: the password on
    /// one line, or an xe -pwf file (root, then the password).
    #[arg(long, env = "POOL_HA_ROOT_PASSWORD_FILE")]
    root_password_file: Option<PathBuf>,
    /// The host's name, at first start.
    #[arg(long, env = "POOL_HA_NAME")]
    name: Option<String>,
    /// Memory the host offers to VMs, in bytes (default: 16 GiB with the
    /// sim driver; the machine's memory less 1 GiB for the host with qemu).
    #[arg(long, env = "POOL_HA_MEMORY")]
    memory: Option<i64>,
    /// What runs the guests: tasks inside xapid (sim) or QEMU processes.
    #[arg(long, env = "POOL_HA_DRIVER", value_enum, default_value_t = DriverKind::Sim)]
    driver: DriverKind,
    /// The qemu driver's accelerator (auto: KVM when it works here, else TCG).
    #[arg(long, env = "POOL_HA_ACCEL", value_enum, default_value_t = Accel::Auto)]
    accel: Accel,
    /// The kernel a VM boots when it names none (qemu driver; `guest/build.sh`
    /// builds a test guest).
    #[arg(long, env = "POOL_HA_GUEST_KERNEL")]
    guest_kernel: Option<PathBuf>,
    /// The initrd that goes with --guest-kernel.
    #[arg(long, env = "POOL_HA_GUEST_INITRD")]
    guest_initrd: Option<PathBuf>,
    /// Where the kernels and initrds VMs name (other-config:pool-ha-kernel)
    /// must be (default /boot/guest).
    #[arg(long, env = "POOL_HA_GUEST_KERNEL_DIR")]
    guest_kernel_dir: Option<PathBuf>,
    /// The machine's watchdog device (e.g. /dev/watchdog), armed with HA:
    /// the host resets if xapid stops feeding it. Not for the lab.
    #[arg(long, env = "POOL_HA_WATCHDOG_DEVICE")]
    watchdog_device: Option<PathBuf>,
    /// Sessions idle for longer than this many seconds expire.
    #[arg(long, env = "POOL_HA_SESSION_IDLE_TIMEOUT", default_value_t = 24 * 3600)]
    session_idle_timeout: u64,
    /// Lab mode: allow HA timeouts down to 3 s (for tests and demos).
    #[arg(long)]
    lab: bool,
}

/// Where one setting came from.
fn source_of(sub: &clap::ArgMatches, id: &str, in_file: bool, file: &std::path::Path) -> String {
    use clap::parser::ValueSource;
    match sub.value_source(id) {
        Some(ValueSource::CommandLine) => "flag".into(),
        Some(ValueSource::EnvVariable) => format!("environment (POOL_HA_{})", id.to_uppercase()),
        _ if in_file => file.display().to_string(),
        Some(ValueSource::DefaultValue) => "default".into(),
        _ => "unset".into(),
    }
}

/// Take the settings file's values where neither a flag nor the
/// environment gave one; the settings and where each came from, or one
/// line per problem.
fn merge_file(args: &mut ServeArgs, sub: &clap::ArgMatches) -> Result<Vec<(String, String, String)>, Vec<String>> {
    use clap::ValueEnum;
    use pool_master::config_file;
    let explicit = args.config.is_some();
    let path = args
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(config_file::DEFAULT_PATH));
    let file = config_file::load(&path, explicit).map_err(|e| vec![e.to_string()])?;
    let mut problems = Vec::new();
    let given = |id: &str| {
        matches!(
            sub.value_source(id),
            Some(clap::parser::ValueSource::CommandLine | clap::parser::ValueSource::EnvVariable)
        )
    };
    macro_rules! take {
        ($field:ident) => {
            if !given(stringify!($field)) {
                if let Some(v) = file.$field.clone() {
                    args.$field = v.into();
                }
            }
        };
    }
    take!(data_dir);
    take!(address);
    take!(bind_address);
    take!(port);
    take!(http_port);
    take!(https_only);
    take!(name);
    // An explicit --root-password beats a password file the settings file
    // names (a flag beats the file).
    if args.root_password.is_none() {
        take!(root_password_file);
    }
    take!(memory);
    take!(guest_kernel);
    take!(guest_initrd);
    take!(guest_kernel_dir);
    take!(watchdog_device);
    take!(session_idle_timeout);
    if !given("driver") {
        if let Some(d) = &file.driver {
            match DriverKind::from_str(d, true) {
                Ok(d) => args.driver = d,
                Err(_) => problems.push(format!("{}: driver: {d:?} is not one of sim, qemu", path.display())),
            }
        }
    }
    if !given("accel") {
        if let Some(a) = &file.accel {
            match Accel::from_str(a, true) {
                Ok(a) => args.accel = a,
                Err(_) => problems.push(format!("{}: accel: {a:?} is not one of auto, kvm, tcg", path.display())),
            }
        }
    }
    if args.data_dir.is_none() {
        problems.push(format!(
            "no data directory: give --data-dir, POOL_HA_DATA_DIR or data-dir in {}",
            path.display()
        ));
    }
    if args.guest_initrd.is_some() && args.guest_kernel.is_none() {
        problems.push("guest-initrd is given without guest-kernel".into());
    }
    if args.memory.is_some_and(|m| m <= 0) {
        problems.push(format!(
            "memory: {} is not a positive number of bytes",
            args.memory.unwrap_or(0)
        ));
    }
    if http_port(args) == Some(args.port) {
        problems.push(format!(
            "http-port: {} is the HTTPS port too (give another, or https-only)",
            args.port
        ));
    }
    if args.address.parse::<std::net::IpAddr>().is_err() {
        problems.push(format!("address: {:?} is not an IP address", args.address));
    }
    if let Some(b) = args
        .bind_address
        .as_ref()
        .filter(|b| b.parse::<std::net::IpAddr>().is_err())
    {
        problems.push(format!("bind-address: {b:?} is not an IP address"));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let shown = |p: &Option<PathBuf>| p.as_ref().map_or("-".to_string(), |p| p.display().to_string());
    let source = |id: &str, in_file: bool| source_of(sub, id, in_file, &path);
    Ok(vec![
        (
            "config".into(),
            path.display().to_string(),
            if explicit { "given".into() } else { "default".into() },
        ),
        (
            "data-dir".into(),
            shown(&args.data_dir),
            source("data_dir", file.data_dir.is_some()),
        ),
        (
            "address".into(),
            args.address.clone(),
            source("address", file.address.is_some()),
        ),
        (
            "bind-address".into(),
            args.bind_address.clone().unwrap_or_else(|| args.address.clone()),
            match source("bind_address", file.bind_address.is_some()).as_str() {
                "unset" => "default (the address)".to_string(),
                s => s.to_string(),
            },
        ),
        (
            "port".into(),
            args.port.to_string(),
            source("port", file.port.is_some()),
        ),
        (
            "http-port".into(),
            http_port(args).map_or("off".to_string(), |p| p.to_string()),
            source("http_port", file.http_port.is_some()),
        ),
        (
            "https-only".into(),
            args.https_only.to_string(),
            source("https_only", file.https_only.is_some()),
        ),
        (
            "name".into(),
            args.name.clone().unwrap_or_else(|| "-".into()),
            source("name", file.name.is_some()),
        ),
        (
            "root-password-file".into(),
            shown(&args.root_password_file),
            source("root_password_file", file.root_password_file.is_some()),
        ),
        (
            "memory".into(),
            args.memory.map_or("-".to_string(), |m| m.to_string()),
            source("memory", file.memory.is_some()),
        ),
        (
            "driver".into(),
            format!("{:?}", args.driver).to_lowercase(),
            source("driver", file.driver.is_some()),
        ),
        (
            "accel".into(),
            format!("{:?}", args.accel).to_lowercase(),
            source("accel", file.accel.is_some()),
        ),
        (
            "guest-kernel".into(),
            shown(&args.guest_kernel),
            source("guest_kernel", file.guest_kernel.is_some()),
        ),
        (
            "guest-initrd".into(),
            shown(&args.guest_initrd),
            source("guest_initrd", file.guest_initrd.is_some()),
        ),
        (
            "guest-kernel-dir".into(),
            shown(&args.guest_kernel_dir),
            source("guest_kernel_dir", file.guest_kernel_dir.is_some()),
        ),
        (
            "watchdog-device".into(),
            shown(&args.watchdog_device),
            source("watchdog_device", file.watchdog_device.is_some()),
        ),
        (
            "session-idle-timeout".into(),
            args.session_idle_timeout.to_string(),
            source("session_idle_timeout", file.session_idle_timeout.is_some()),
        ),
    ])
}

/// `xapid(8)`: the program and its subcommands, then `xapid serve`'s
/// settings (each a flag, a `POOL_HA_*` variable and a settings-file key),
/// from the same clap definitions that parse them.
fn man_page() -> Result<String> {
    use clap::CommandFactory;
    let cmd = Cli::command();
    let serve = cmd
        .find_subcommand("serve")
        .cloned()
        .context("xapid has a serve subcommand")?;
    let man = clap_mangen::Man::new(cmd.clone()).section("8");
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    out.extend_from_slice(MAN_BODY.as_bytes());
    clap_mangen::Man::new(serve).render_options_section(&mut out)?;
    out.extend_from_slice(MAN_TAIL.as_bytes());
    man.render_version_section(&mut out)?;
    String::from_utf8(out).context("the manual page is UTF-8")
}

const MAN_BODY: &str = r#".SH DESCRIPTION
\fBxapid\fR runs on every host of a pool\-ha pool. The pool master keeps the
pool database and serves XAPI's API (HTTPS: JSON\-RPC and XML\-RPC) to
\fBxe\fR(1) and other clients; every host runs its guests and the HA agent
(heartbeats, the statefile, the liveset, self\-fencing, master election).
Under systemd it runs as \fBxapid.service\fR.
.SH COMMANDS
.TP
.B xapid serve \fR[\fIoptions\fR]
Run this host. Each setting under OPTIONS is a flag, a \fBPOOL_HA_*\fR
environment variable (where one is named) and a key of the settings file
\fI/etc/pool\-ha/xapid.toml\fR (the flag without its leading dashes), in that
order of precedence. \fB\-\-check\-config\fR prints the effective settings and
where each came from.
.TP
.B xapid lab \fR[\fIargs\fR]
Run a pool of several hosts on this machine, for trying pool\-ha out and for
its tests (the \fBxapid\-lab\fR program; \fBxapid lab \-\-help\fR).
"#;

const MAN_TAIL: &str = r#".SH FILES
.TP
.I /etc/pool\-ha/xapid.toml
The settings file.
.TP
.I /etc/default/xapid
\fBXAPID_ARGS\fR for the systemd unit.
.TP
.I /var/lib/xapid
The data directory (0700): the pool database \fIpool.db\fR (0600), this
host's TLS key and certificate, the local SR.
.SH EXIT STATUS
0 on a clean stop; 2 for unusable settings; 86 after a self\-fence, so that
systemd (\fBRestart=always\fR) starts the host again after the unit's delay.
.SH "SEE ALSO"
.BR xe (1),
.BR systemd.service (5)
"#;

fn main() -> Result<()> {
    use clap::{CommandFactory, FromArgMatches};
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let mut args = match cli.command {
        Command::Lab { args } => return run_lab(&args),
        Command::Serve(args) => *args,
        Command::Guard { reset_machine } => {
            pool_master::driver::qemu::guard::run(reset_machine);
            return Ok(());
        }
        Command::Man => {
            print!("{}", man_page()?);
            return Ok(());
        }
    };
    let sub = matches.subcommand_matches("serve").expect("the serve subcommand");
    let settings = match merge_file(&mut args, sub) {
        Ok(settings) => settings,
        Err(problems) => {
            for p in problems {
                eprintln!("xapid: {p}");
            }
            std::process::exit(2);
        }
    };
    if args.check_config {
        let width = settings.iter().map(|(k, v, _)| k.len() + v.len()).max().unwrap_or(0) + 4;
        for (key, value, source) in settings {
            let line = format!("{key} = {value}");
            println!("{line:width$}# {source}");
        }
        return Ok(());
    }
    pool_master::logging::init();
    raise_open_file_limit();
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(serve(args))
}

async fn serve(args: ServeArgs) -> Result<()> {
    let stop = shutdown_signal();
    let http_port = http_port(&args);
    let root_password = match (&args.root_password_file, &args.root_password) {
        (Some(f), _) => {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("reading the root password from {}", f.display()))?;
            Some(pool_master::config_file::root_password(&text).map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?)
        }
        (None, p) => p.clone(),
    };
    let config = Config {
        data_dir: args.data_dir.clone().context("no data directory")?,
        address: args.address.clone(),
        bind_address: args.bind_address.clone().unwrap_or_else(|| args.address.clone()),
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
    let bind = daemon.config().bind_address.clone();
    let https = tokio::net::TcpListener::bind((bind.as_str(), args.port))
        .await
        .with_context(|| format!("listening on {bind}:{}", args.port))?;
    let http = match http_port {
        Some(port) => Some(
            tokio::net::TcpListener::bind((bind.as_str(), port))
                .await
                .with_context(|| format!("listening on {bind}:{port} for plain HTTP (--https-only for none)"))?,
        ),
        None => None,
    };
    tracing::info!(host = %daemon.host_uuid(), address = %args.address, bind = %bind, port = args.port, http_port = ?http_port, "xapid is serving");
    // systemd (Type=notify): ready once the API's sockets are bound and the
    // database open; calls that arrive meanwhile wait in the backlog.
    let http_text = http_port.map_or(String::new(), |p| format!(", plain HTTP on {p}"));
    notify_systemd(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&format!("serving the API on {}:{}{http_text}", args.address, args.port)),
    ]);
    let listeners = pool_master::server::Listeners {
        https,
        plain_on_https: args.lab,
        http,
    };
    pool_master::server::serve(daemon, listeners, async {
        stop.await;
        notify_systemd(&[sd_notify::NotifyState::Stopping]);
    })
    .await
    .context("serving the API")?;
    tracing::info!("xapid stopped");
    Ok(())
}

/// The plain-HTTP port this host serves, if any: none when HTTPS-only or
/// given 0; with --lab only when given (the lab's port takes both); else
/// the one given, or XAPI's 80.
fn http_port(args: &ServeArgs) -> Option<u16> {
    match (args.https_only, args.lab, args.http_port) {
        (true, _, _) | (_, _, Some(0)) | (false, true, None) => None,
        (false, _, Some(p)) => Some(p),
        (false, false, None) => Some(80),
    }
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
