//! The qemu driver with real QEMU guests: the test guest that
//! `guest/build.sh` builds from Debian's packages (a cloud kernel and a
//! busybox initramfs writing `SEQ UNIX_MS HOST_UUID VM_UUID` records to its
//! virtio disk every 100 ms).
//!
//! Skipped, with the reason, where QEMU, the kernel or busybox-static is
//! missing (`.ci/run` installs them as root).

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pool_master::driver::qemu::{running_guests_in, Accel, QemuConfig, QemuDriver};
use pool_master::driver::{read_records, Driver, GuestRecord, GuestSpec, Halted, KernelBoot, StopMode};

const HOST: &str = "00000000-0000-4000-8000-0000000000aa";
const VM: &str = "00000000-0000-4000-8000-0000000000bb";

/// The test guest, built once per test binary into `target/test-guest`;
/// `None` (and why) when this machine cannot build or run it.
fn test_guest() -> Result<KernelBoot, String> {
    static GUEST: std::sync::OnceLock<Result<KernelBoot, String>> = std::sync::OnceLock::new();
    GUEST
        .get_or_init(|| {
            let qemu = std::process::Command::new("qemu-system-x86_64")
                .arg("--version")
                .output();
            if !qemu.is_ok_and(|o| o.status.success()) {
                return Err("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)".into());
            }
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
            let out = root.join("target/test-guest");
            let built = std::process::Command::new("sh")
                .arg(root.join("guest/build.sh"))
                .arg(&out)
                .output()
                .map_err(|e| format!("cannot run guest/build.sh: {e}"))?;
            if !built.status.success() {
                return Err(format!(
                    "guest/build.sh failed: {}",
                    String::from_utf8_lossy(&built.stderr).trim()
                ));
            }
            Ok(KernelBoot {
                kernel: out.join("vmlinuz"),
                initrd: Some(out.join("initrd.img")),
                args: String::new(),
            })
        })
        .clone()
}

macro_rules! guest_or_skip {
    () => {
        match test_guest() {
            Ok(g) => g,
            Err(why) => {
                eprintln!("skipped: {why}");
                return;
            }
        }
    };
}

struct Host {
    _dir: tempfile::TempDir,
    disk: PathBuf,
    driver: Arc<QemuDriver>,
}

fn host(guest: KernelBoot) -> Host {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("vm.disk");
    std::fs::File::create(&disk).unwrap().set_len(4 << 20).unwrap();
    let config = QemuConfig {
        accel: Accel::Auto,
        default_kernel: Some(guest),
        ..QemuConfig::new(dir.path())
    };
    let driver = QemuDriver::open(HOST, Arc::new(|| Ok(())), config).unwrap();
    Host {
        _dir: dir,
        disk,
        driver: Arc::new(driver),
    }
}

fn spec(h: &Host) -> GuestSpec {
    GuestSpec {
        memory: 128 << 20,
        ..GuestSpec::new(VM, vec![h.disk.clone()], None)
    }
}

/// The command line (arguments joined by spaces) of the QEMU process
/// whose drive is `disk`, if one runs.
fn guest_cmdline(disk: &Path) -> Option<String> {
    let disk = disk.display().to_string();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let raw = std::fs::read(e.path().join("cmdline")).ok()?;
        let line = raw
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        (line.contains("qemu-system") && line.contains(&disk)).then_some(line)
    })
}

/// Wait (up to 2 minutes: TCG boots slowly on a loaded machine) until the
/// disk holds at least `n` records; they are returned.
async fn records_at_least(disk: &Path, n: usize) -> Vec<GuestRecord> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let recs = read_records(disk).unwrap();
        if recs.len() >= n {
            return recs;
        }
        assert!(Instant::now() < deadline, "only {} records after 2 minutes", recs.len());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_guest_writes_its_disk_halts_from_inside_and_continues_its_sequence() {
    let guest = guest_or_skip!();
    let h = host(guest);
    let mut halted = h.driver.take_halted().unwrap();
    let before = h.driver.snapshot();
    let first = h.driver.start(spec(&h)).await.unwrap();
    assert!(first >= before.next_domid);
    assert_eq!(h.driver.running(), vec![VM.to_string()]);
    assert_eq!(h.driver.domid(VM), Some(first));
    assert!(h.driver.start(spec(&h)).await.is_err(), "one guest per VM");

    let recs = records_at_least(&h.disk, 10).await;
    assert!(recs.iter().all(|r| r.host_uuid == HOST && r.vm_uuid == VM), "{recs:?}");
    // No page cache between the guest and its disk: a killed guest leaves
    // no dirty pages for the kernel to write later, which the leases'
    // kill-then-reset argument needs (docs/LEASES.md, "Real guests").
    let cmdline = guest_cmdline(&h.disk).expect("the guest's QEMU process");
    assert!(cmdline.contains("cache=directsync"), "{cmdline}");
    let seqs: Vec<u64> = recs.iter().map(|r| r.seq).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    let now = pool_master::driver::unix_ms();
    let newest = recs.last().unwrap().unix_ms;
    assert!(
        newest <= now + 1000 && now - newest < 10_000,
        "record time {newest}, now {now}"
    );

    // A key press makes the test guest power itself off: a halt nobody asked for.
    h.driver.send_key(VM).await.unwrap();
    let report = tokio::time::timeout(Duration::from_secs(60), halted.recv())
        .await
        .unwrap();
    assert_eq!(
        report,
        Some(Halted {
            vm_uuid: VM.into(),
            domid: first
        })
    );
    assert!(h.driver.running().is_empty());
    let last = read_records(&h.disk).unwrap().last().unwrap().seq;

    // Started again: a larger domain id, and the disk's sequence goes on.
    let second = h.driver.start(spec(&h)).await.unwrap();
    assert!(second > first);
    let recs = records_at_least(&h.disk, last as usize + 5).await;
    assert_eq!(recs[last as usize + 1].seq, last + 1, "the sequence continues");

    // A clean stop presses the power button, and the guest obeys (well
    // before the driver would pull the plug).
    let t = Instant::now();
    let stopped_at = h.driver.stop(VM, StopMode::Clean).await.unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "clean stop took {:?}",
        t.elapsed()
    );
    assert_eq!(stopped_at, read_records(&h.disk).unwrap().last().unwrap().seq);
    assert!(h.driver.running().is_empty());
    assert!(
        tokio::time::timeout(Duration::from_millis(500), halted.recv())
            .await
            .is_err(),
        "a stop asked for is no halt"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fence_kills_every_guest_before_it_returns_and_nothing_is_written_after() {
    let guest = guest_or_skip!();
    let h = host(guest);
    h.driver.start(spec(&h)).await.unwrap();
    records_at_least(&h.disk, 5).await;
    let run_dir = h.disk.parent().unwrap().join("qemu");
    assert_eq!(running_guests_in(&run_dir).len(), 1, "one guest process");
    h.driver.kill_all();
    assert!(
        running_guests_in(&run_dir).is_empty(),
        "the guest process is gone when the fence returns"
    );
    let after_kill = read_records(&h.disk).unwrap().len();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        read_records(&h.disk).unwrap().len(),
        after_kill,
        "no write after the fence"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn domain_ids_stay_unique_across_driver_restarts() {
    let guest = guest_or_skip!();
    let dir = tempfile::tempdir().unwrap();
    let open = || {
        let config = QemuConfig {
            accel: Accel::Tcg,
            default_kernel: Some(guest.clone()),
            ..QemuConfig::new(dir.path())
        };
        QemuDriver::open(HOST, Arc::new(|| Ok(())), config).unwrap()
    };
    let first = open();
    assert_eq!(first.accel(), "tcg");
    let disk = dir.path().join("d.disk");
    std::fs::File::create(&disk).unwrap().set_len(1 << 20).unwrap();
    let a = first.start(GuestSpec::new(VM, vec![disk.clone()], None)).await.unwrap();
    first.stop(VM, StopMode::Hard).await.unwrap();
    drop(first);
    let second = open();
    assert!(
        second.snapshot().next_domid > a,
        "a restarted driver never reuses domain id {a}"
    );
}

#[tokio::test]
async fn a_vm_without_a_kernel_or_disk_gets_a_clear_error() {
    let guest = guest_or_skip!();
    let dir = tempfile::tempdir().unwrap();
    let config = QemuConfig {
        accel: Accel::Tcg,
        default_kernel: None,
        ..QemuConfig::new(dir.path())
    };
    let driver = QemuDriver::open(HOST, Arc::new(|| Ok(())), config).unwrap();
    let disk = dir.path().join("d.disk");
    std::fs::File::create(&disk).unwrap().set_len(1 << 20).unwrap();
    let e = driver
        .start(GuestSpec::new(VM, vec![disk.clone()], None))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("pool-ha-kernel"), "{e}");
    let missing = GuestSpec {
        kernel: Some(guest),
        ..GuestSpec::new(VM, vec![dir.path().join("no-sr/nope.disk")], None)
    };
    let e = driver.start(missing).await.unwrap_err();
    assert!(e.to_string().contains("nope.disk"), "{e}");
    // A VM may name only kernels under the kernel directory (/boot/guest):
    // its other-config must not load a host file into a guest.
    let outside = GuestSpec {
        kernel: Some(KernelBoot {
            kernel: PathBuf::from("/etc/passwd"),
            initrd: None,
            args: String::new(),
        }),
        ..GuestSpec::new(VM, vec![disk.clone()], None)
    };
    let e = driver.start(outside).await.unwrap_err();
    assert!(e.to_string().contains("/boot/guest"), "{e}");
    assert!(driver.running().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_migration_moves_the_guest_with_one_writer_and_a_short_gap() {
    let guest = guest_or_skip!();
    const B: &str = "00000000-0000-4000-8000-0000000000cc";
    let a = host(guest.clone());
    let dir_b = tempfile::tempdir().unwrap();
    let b = QemuDriver::open(
        B,
        Arc::new(|| Ok(())),
        QemuConfig {
            accel: Accel::Auto,
            default_kernel: Some(guest),
            ..QemuConfig::new(dir_b.path())
        },
    )
    .unwrap();
    let mut halted_a = a.driver.take_halted().unwrap();
    a.driver.start(spec(&a)).await.unwrap();
    records_at_least(&a.disk, 10).await;

    let (domid_b, uri) = b.start_incoming(spec(&a), "127.0.0.1", "127.0.0.1").await.unwrap();
    assert!(uri.starts_with("tcp:127.0.0.1:"), "{uri}");
    a.driver.migrate_out(VM, &uri).await.unwrap();
    assert!(a.driver.running().is_empty(), "the source guest is gone");
    assert_eq!(b.running(), vec![VM.to_string()]);
    assert_eq!(b.domid(VM), Some(domid_b));
    assert!(
        tokio::time::timeout(Duration::from_millis(500), halted_a.recv())
            .await
            .is_err(),
        "a migration is no halt"
    );

    // The guest goes on writing, now naming host B.
    let deadline = Instant::now() + Duration::from_secs(60);
    let recs = loop {
        let recs = read_records(&a.disk).unwrap();
        if recs.iter().filter(|r| r.host_uuid == B).count() >= 10 {
            break recs;
        }
        assert!(Instant::now() < deadline, "no records from host B after the migration");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let seqs: Vec<u64> = recs.iter().map(|r| r.seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "one writer, no record lost: {seqs:?}"
    );
    let switch = recs.iter().position(|r| r.host_uuid == B).unwrap();
    assert!(recs[..switch].iter().all(|r| r.host_uuid == HOST));
    assert!(
        recs[switch..].iter().all(|r| r.host_uuid == B),
        "host A wrote again after the switch"
    );
    let gap = recs[switch].unix_ms.saturating_sub(recs[switch - 1].unix_ms);
    eprintln!("live migration: largest gap in the records {gap} ms");
    assert!(gap < 1000, "the records stopped for {gap} ms across the migration");
    b.stop(VM, StopMode::Hard).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_live_migration_leaves_the_guest_running_on_the_source() {
    let guest = guest_or_skip!();
    let a = host(guest);
    a.driver.start(spec(&a)).await.unwrap();
    let before = records_at_least(&a.disk, 5).await.len();
    // Nobody listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let e = a
        .driver
        .migrate_out(VM, &format!("tcp:127.0.0.1:{port}"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("live migration"), "{e}");
    assert_eq!(
        a.driver.running(),
        vec![VM.to_string()],
        "the guest still runs on the source"
    );
    records_at_least(&a.disk, before + 10).await;
    a.driver.stop(VM, StopMode::Hard).await.unwrap();
}
