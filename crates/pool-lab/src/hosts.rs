//! Booting the lab's hosts: the `xapid` program next to the lab, the
//! options every host's `xapid serve` gets (the VM driver and the test
//! guest among them), and waiting until a host answers.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::json;
use tokio::process::{Child, Command};
use xapi_client::Client;

use crate::{LabOptions, LabState};

/// The `xapid` program the lab runs its hosts with: the one installed
/// next to this program (`cargo build` puts both in one directory).
pub fn xapid_exe() -> Result<PathBuf> {
    let me = std::env::current_exe().context("cannot find this program's own path")?;
    let exe = me.with_file_name("xapid");
    if !exe.exists() {
        bail!(
            "{} is missing: the lab runs the xapid next to it (build the workspace: cargo build)",
            exe.display()
        );
    }
    Ok(exe)
}

/// The `xapid serve` options every lab host gets: its memory, the lab's
/// short HA timeouts, and the VM driver (with the qemu driver, the test
/// guest's kernel, built here when not given).
pub(crate) fn serve_args(options: &LabOptions, dir: &Path) -> Result<Vec<String>> {
    use pool_master::driver::DriverKind;
    let mut args = vec![
        "--memory".to_string(),
        options.host_memory.to_string(),
        "--lab".to_string(),
    ];
    if options.driver == DriverKind::Qemu {
        let (kernel, initrd) = match &options.guest_kernel {
            Some(k) => (k.clone(), options.guest_initrd.clone()),
            None => {
                let out = dir.join("guest");
                build_test_guest(&out)?;
                (out.join("vmlinuz"), Some(out.join("initrd.img")))
            }
        };
        args.extend(["--driver".to_string(), "qemu".to_string()]);
        args.push("--guest-kernel".to_string());
        args.push(kernel.display().to_string());
        if let Some(i) = initrd {
            args.push("--guest-initrd".to_string());
            args.push(i.display().to_string());
        }
    }
    Ok(args)
}

/// Build the test guest into `out` with the repository's guest/build.sh.
fn build_test_guest(out: &Path) -> Result<()> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../guest/build.sh");
    let built = std::process::Command::new("sh")
        .arg(&script)
        .arg(out)
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !built.status.success() {
        bail!(
            "cannot build the test guest for --driver qemu ({}): {}\ngive --guest-kernel (and --guest-initrd) instead",
            script.display(),
            String::from_utf8_lossy(&built.stderr).trim()
        );
    }
    Ok(())
}

/// Boot host `i`: `xapid serve`, inside its namespace in a netns lab.
pub(crate) fn spawn_host(state: &LabState, i: usize, password_file: &Path, serve: &[String]) -> Result<Child> {
    let (host, port) = (&state.hosts[i], state.port);
    std::fs::create_dir_all(&host.data_dir)?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(host.data_dir.join("xapid.log"))?;
    let exe = xapid_exe()?;
    let mut command = match &state.netns {
        Some(net) => net.command(i + 1, &exe),
        None => Command::new(exe),
    };
    // The lab's hosts take their settings from the lab alone: never from
    // this machine's /etc/pool-ha/xapid.toml or POOL_HA_* variables (a real
    // host's watchdog device, say).
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("POOL_HA_") {
            command.env_remove(&key);
        }
    }
    let child = command
        .arg("serve")
        .args(["--config", "/dev/null"])
        .arg("--data-dir")
        .arg(&host.data_dir)
        .args([
            "--address",
            &host.address,
            "--port",
            &port.to_string(),
            "--name",
            &host.name,
        ])
        .arg("--root-password-file")
        .arg(password_file)
        .args(serve)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", host.name))?;
    Ok(child)
}

/// Wait until the host at `address:port` answers the API.
pub async fn wait_until_up(address: &str, port: u16, limit: Duration) -> Result<()> {
    let start = Instant::now();
    loop {
        let mut c = Client::new(address, port).no_redirect();
        match c.call_raw("pool.get_all", vec![json!("")]).await {
            Ok(_) | Err(xapi_client::ClientError::Api(_)) => return Ok(()),
            Err(e) if start.elapsed() > limit => bail!("{address}:{port} did not come up: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}
