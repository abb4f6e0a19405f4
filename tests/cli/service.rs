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
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
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
            "--root-password",
            "pw",
            "--address",
            "127.0.0.1",
            "--port",
            &port.to_string(),
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
