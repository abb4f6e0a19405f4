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
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
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
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
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
