//! `xe pool-ha-status --watch`: the screen drawn again when the pool
//! changes (`event.from`), not only on its 10 s refresh, until Ctrl-C.

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::util::{wait_for, xe_bin, Lab};

#[test]
fn pool_ha_status_watch_redraws_on_a_change_and_stops_on_ctrl_c() {
    let lab = Lab::start(1, 1);
    let home = tempfile::tempdir().unwrap();
    let mut child = Command::new(xe_bin())
        .args(["pool-ha-status", "--watch"])
        .env("XE_EXTRA_ARGS", lab.extra_args())
        .env("HOME", home.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let seen = Arc::new(Mutex::new(String::new()));
    let mut stdout = child.stdout.take().unwrap();
    let sink = seen.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let draws = || seen.lock().unwrap().matches("Answered by").count();
    // The first draw, and the one after event.from's first (empty-token)
    // answer, which returns at once; the next wait lasts up to the 10 s
    // refresh, so a draw within 4 s of a change is the change's.
    assert!(
        wait_for(Duration::from_secs(15), || draws() >= 2),
        "{}",
        seen.lock().unwrap()
    );
    let before = draws();
    let changed = Instant::now();
    let vm = lab.xe_min(&["vm-list", "name-label=vm01", "params=uuid"]);
    lab.xe_ok(&["vm-param-set", &format!("uuid={vm}"), "name-description=watched"]);
    assert!(
        wait_for(Duration::from_secs(4), || draws() > before),
        "no redraw within 4 s of a change"
    );
    eprintln!("redrawn {} ms after the change", changed.elapsed().as_millis());
    assert!(seen.lock().unwrap().contains("HA: disabled"));
    // Ctrl-C ends it.
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let ended = wait_for(Duration::from_secs(5), || child.try_wait().unwrap().is_some());
    if !ended {
        let _ = child.kill();
    }
    assert!(ended, "xe --watch did not stop on SIGINT");
    reader.join().unwrap();
    // Bad input: not for scripts.
    let r = lab.xe(&["pool-ha-status", "--watch", "--format", "json"]);
    assert_eq!(r.code, 1, "{r:?}");
}
