//! xapid as a system service (issue 21): the systemd unit in `dist/` is
//! one systemd accepts, and xapid tells systemd when it is ready and when
//! it stops (`Type=notify`), over the socket systemd names.

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::util::{installed, xapid_bin};

#[test]
fn the_unit_file_is_one_systemd_accepts() {
    if !installed("systemd-analyze") {
        eprintln!("skipped: no systemd-analyze");
        return;
    }
    let unit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/dist/xapid.service")).unwrap();
    assert!(
        unit.contains("Type=notify") && unit.contains("Restart=always"),
        "{unit}"
    );
    // Checked with the binary this build made in place of /usr/sbin/xapid.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("xapid.service");
    std::fs::write(
        &path,
        unit.replace("/usr/sbin/xapid", &xapid_bin().display().to_string()),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    // Complaints about the machine (units it lacks) are not the unit's.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let ours: Vec<&str> = stderr.lines().filter(|l| l.contains("xapid.service")).collect();
    assert!(ours.is_empty(), "{stderr}");
}

#[test]
fn the_shipped_settings_file_is_valid() {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/dist/xapid.toml");
    let out = Command::new(xapid_bin())
        .args(["serve", "--config", file, "--check-config"])
        .env_remove("POOL_HA_DATA_DIR")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        text.contains("data-dir = /var/lib/xapid") && text.contains("driver = qemu"),
        "{text}"
    );
}

#[test]
fn xapid_tells_systemd_it_is_ready_and_when_it_stops() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let port = crate::util::free_port();
    let mut xapid = Command::new(xapid_bin())
        .args([
            "serve",
            "--config",
            "/dev/null",
            "--root-password",
            "pw",
            "--address",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--https-only",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("NOTIFY_SOCKET", &socket_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 512];
    let n = socket.recv(&mut buf).expect("a notification within 30 s");
    let ready = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    assert!(
        ready.contains(&format!("STATUS=serving the API on 127.0.0.1:{port}")),
        "{ready:?}"
    );
    // Ready means serving: the API answers at once.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(xapid.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let n = socket.recv(&mut buf).expect("a notification at stop");
    assert_eq!(String::from_utf8_lossy(&buf[..n]).trim(), "STOPPING=1");
    let status = xapid.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

#[test]
fn settings_come_from_the_file_the_environment_and_flags_in_that_order() {
    let dir = tempfile::tempdir().unwrap();
    let port = crate::util::free_port();
    let data = dir.path().join("data");
    let password = dir.path().join("root-password");
    std::fs::write(&password, "from-file-pw\n").unwrap();
    let file = dir.path().join("xapid.toml");
    std::fs::write(
        &file,
        format!(
            "data-dir = \"{}\"\naddress = \"127.0.0.1\"\nport = {port}\nhttps-only = true\nname = \"configured\"\nroot-password-file = \"{}\"\n",
            data.display(),
            password.display()
        ),
    )
    .unwrap();
    let xapid = |args: &[&str], env: &[(&str, &str)]| {
        let mut c = Command::new(xapid_bin());
        c.arg("serve").arg("--config").arg(&file).args(args);
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    // --check-config: each setting and where it came from.
    let out = xapid(
        &["--check-config", "--name", "from-flag"],
        &[("POOL_HA_PORT", "1"), ("POOL_HA_NAME", "from-env")],
    );
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = |key: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{key} = ")))
            .unwrap_or("")
            .to_string()
    };
    assert!(line("data-dir").ends_with(&format!("# {}", file.display())), "{text}");
    assert!(
        line("port").starts_with("port = 1 ") && line("port").ends_with("# environment (POOL_HA_PORT)"),
        "{text}"
    );
    assert!(
        line("name").starts_with("name = from-flag ") && line("name").ends_with("# flag"),
        "{text}"
    );
    assert!(line("driver").ends_with("# default"), "{text}");
    assert!(!data.exists(), "checking started nothing");
    // A bad file: one line per problem, exit 2, nothing started.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "colour = \"blue\"\n").unwrap();
    let out = Command::new(xapid_bin())
        .args(["serve", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("bad.toml: line 1") && err.contains("unknown field `colour`"),
        "{err}"
    );
    // The file alone is enough to run a host.
    let mut host = Command::new(xapid_bin())
        .args(["serve", "--config"])
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let home = tempfile::tempdir().unwrap();
    let extra = format!("server=127.0.0.1,port={port},username=root,password=from-file-pw");
    let named = crate::util::wait_for(Duration::from_secs(20), || {
        let r = crate::util::run_xe(
            &["host-list", "params=name-label", "--minimal", "--no-verify"],
            &[("XE_EXTRA_ARGS", &extra)],
            home.path(),
        );
        r.code == 0 && r.stdout.trim() == "configured"
    });
    let _ = host.kill();
    let _ = host.wait();
    assert!(named, "the host did not come up as the file says");
}

/// The address the API listens on apart from the one the pool knows the
/// host by (issue 21): `--bind-address`, `POOL_HA_BIND_ADDRESS` or
/// `bind-address` in the file, shown by `--check-config`, checked; a host
/// bound to one address records the other.
#[test]
fn the_bind_address_is_apart_from_the_address_the_pool_knows() {
    let dir = tempfile::tempdir().unwrap();
    let check = |args: &[&str], env: &[(&str, &str)]| {
        let mut c = Command::new(xapid_bin());
        c.args(["serve", "--config", "/dev/null", "--data-dir"])
            .arg(dir.path().join("d"));
        c.args(["--address", "192.0.2.11", "--check-config"]).args(args);
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    let bind_line = |out: &std::process::Output| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|l| l.starts_with("bind-address = "))
            .unwrap_or("")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    let out = check(&[], &[]);
    assert_eq!(bind_line(&out), "bind-address = 192.0.2.11 # default (the address)");
    let out = check(&[], &[("POOL_HA_BIND_ADDRESS", "0.0.0.0")]);
    assert_eq!(
        bind_line(&out),
        "bind-address = 0.0.0.0 # environment (POOL_HA_BIND_ADDRESS)"
    );
    let out = check(&["--bind-address", "::"], &[("POOL_HA_BIND_ADDRESS", "0.0.0.0")]);
    assert_eq!(bind_line(&out), "bind-address = :: # flag");
    let out = check(&["--bind-address", "every-interface"], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("bind-address: \"every-interface\" is not an IP address"),
        "{err}"
    );
    let file = dir.path().join("xapid.toml");
    std::fs::write(&file, "bind-address = \"0.0.0.0\"\n").unwrap();
    let out = Command::new(xapid_bin())
        .args(["serve", "--config"])
        .arg(&file)
        .arg("--data-dir")
        .arg(dir.path().join("d"))
        .arg("--check-config")
        .output()
        .unwrap();
    assert!(bind_line(&out).starts_with("bind-address = 0.0.0.0 # "), "{out:?}");
    assert!(bind_line(&out).ends_with("xapid.toml"), "{out:?}");

    // A host listening on one loopback address, known by another.
    let net = format!(
        "127.{}.{}",
        rand::random_range(1..=250u8),
        rand::random_range(1..=250u8)
    );
    let (known, bound) = (format!("{net}.9"), format!("{net}.10"));
    let port = rand::random_range(20000..60000u16).to_string();
    let mut host = Command::new(xapid_bin())
        .args([
            "serve",
            "--config",
            "/dev/null",
            "--lab",
            "--root-password",
            "pw",
            "--port",
            &port,
        ])
        .args(["--address", &known, "--bind-address", &bound, "--data-dir"])
        .arg(dir.path().join("host"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let home = tempfile::tempdir().unwrap();
    let extra = format!("server={bound},port={port},username=root,password=pw");
    let recorded = crate::util::wait_for(Duration::from_secs(20), || {
        let r = crate::util::run_xe(
            &["host-list", "params=address", "--minimal", "--no-verify"],
            &[("XE_EXTRA_ARGS", &extra)],
            home.path(),
        );
        r.code == 0 && r.stdout.trim() == known
    });
    let elsewhere = std::net::TcpStream::connect((known.as_str(), port.parse::<u16>().unwrap())).is_ok();
    let _ = host.kill();
    let _ = host.wait();
    assert!(recorded, "the host did not serve on {bound} as {known}");
    assert!(!elsewhere, "the API listens on the management address too");
}
