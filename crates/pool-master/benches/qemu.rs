//! Real guests with the qemu driver: how long the test guest takes from
//! `Driver::start` to its first record on its disk (boot), and how long a
//! live migration stops it (the largest gap between two records around
//! the switch), each the median of `QEMU_RUNS` runs (10).
//!
//! Run: `cargo bench -p pool-master --bench qemu` (needs QEMU and the test
//! guest's packages: guest/build.sh).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pool_master::driver::qemu::{Accel, QemuConfig, QemuDriver};
use pool_master::driver::{read_records, Driver, GuestSpec, KernelBoot, StopMode};

const VM: &str = "00000000-0000-4000-8000-0000000000bb";

fn guest() -> KernelBoot {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = root.join("target/test-guest");
    let ok = std::process::Command::new("sh")
        .arg(root.join("guest/build.sh"))
        .arg(&out)
        .status()
        .expect("guest/build.sh")
        .success();
    assert!(
        ok,
        "guest/build.sh failed: install qemu-system-x86, linux-image-cloud-amd64, busybox-static"
    );
    KernelBoot {
        kernel: out.join("vmlinuz"),
        initrd: Some(out.join("initrd.img")),
        args: String::new(),
    }
}

fn driver(host: &str, dir: &Path, guest: &KernelBoot) -> QemuDriver {
    let config = QemuConfig {
        accel: Accel::Auto,
        default_kernel: Some(guest.clone()),
        ..QemuConfig::new(dir)
    };
    QemuDriver::open(host, Arc::new(|| Ok(())), config).expect("qemu driver")
}

fn spec(disk: &Path) -> GuestSpec {
    GuestSpec {
        memory: 128 << 20,
        ..GuestSpec::new(VM, vec![disk.to_path_buf()], None)
    }
}

/// Wait until `disk` holds more than `n` records; when the last arrived.
async fn records_past(disk: &Path, n: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let len = read_records(disk).map(|r| r.len()).unwrap_or(0);
        if len > n {
            return len;
        }
        assert!(Instant::now() < deadline, "no record in 2 minutes");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runs: usize = std::env::var("QEMU_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let guest = guest();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let (dir_a, dir_b) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
        let a = driver("00000000-0000-4000-8000-00000000000a", dir_a.path(), &guest);
        let b = driver("00000000-0000-4000-8000-00000000000b", dir_b.path(), &guest);
        println!("accelerator: {}", a.accel());
        let disk: PathBuf = dir_a.path().join("vm.disk");
        let mut boots = Vec::new();
        let mut gaps = Vec::new();
        for run in 1..=runs {
            let before = read_records(&disk).map(|r| r.len()).unwrap_or(0);
            let t = Instant::now();
            a.start(spec(&disk)).await.expect("start");
            records_past(&disk, before).await;
            let boot = t.elapsed().as_secs_f64();
            boots.push(boot);
            let n = records_past(&disk, before + 5).await;
            let (_, uri) = b.start_incoming(spec(&disk), "127.0.0.1", "127.0.0.1").await.expect("incoming");
            a.migrate_out(VM, &uri).await.expect("migrate");
            records_past(&disk, n + 10).await;
            let recs = read_records(&disk).expect("records");
            let gap = recs[before..]
                .windows(2)
                .map(|w| w[1].unix_ms.saturating_sub(w[0].unix_ms))
                .max()
                .unwrap_or(0);
            gaps.push(gap as f64);
            println!("run {run}: boot {boot:.2} s, largest gap in the records across the migration {gap} ms");
            b.stop(VM, StopMode::Hard).await.expect("stop");
        }
        println!(
            "qemu guest boot (start to first record), median of {runs}: {:.2} s; live migration, largest gap in the records, median of {runs}: {:.0} ms",
            median(boots),
            median(gaps)
        );
    });
}
