//! The chaos run and its checker on a real lab pool: `xapid lab chaos`
//! injects a seeded schedule of faults and ends with a clean report; the
//! checker on its own catches a disk written by two hosts at once.

use std::io::Write;
use std::process::Command;

use crate::util::{xapid_bin, Lab};

/// A short chaos run (one minute of faults at T = 5 s), as CI affords.
#[test]
fn a_short_chaos_run_finds_no_split_brain_no_lost_commit_and_no_long_outage() {
    let lab = Lab::start_ha(3, 3, &[]);
    let out = Command::new(xapid_bin())
        .args(["lab", "chaos", "--seed", "7", "--duration", "60s", "--dir"])
        .arg(lab.dir.path())
        .output()
        .expect("run xapid lab chaos");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the chaos run failed:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "seed 7",
        "split-brain writes: none",
        "lost commits: none",
        "protected VMs down too long: none",
        "Settled after",
    ] {
        assert!(text.contains(line), "no '{line}' in:\n{text}");
    }
    let journal = std::fs::read_to_string(lab.dir.path().join("chaos.jsonl")).unwrap();
    assert!(journal.contains("\"event\":\"commit\""), "no commit acknowledged");
    assert!(journal.lines().last().is_some_and(|l| l.contains("\"event\"")));

    // The checker alone, on a disk two hosts wrote at once.
    let forged = lab.sr_dir().join("forged.disk");
    let mut f = std::fs::File::create(&forged).unwrap();
    f.write_all(b"1 1000 host-a vm-x\n2 1100 host-a vm-x\n3 1200 host-b vm-x\n3 1210 host-a vm-x\n")
        .unwrap();
    let check = Command::new(xapid_bin())
        .args(["lab", "check", "--dir"])
        .arg(lab.dir.path())
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(!check.status.success(), "{report}");
    assert!(report.contains("split-brain writes: 1"), "{report}");
    assert!(report.contains("forged.disk: host host-a wrote record 3"), "{report}");
}
