//! xe over HTTPS (issue 19): it trusts only pinned certificates, asks a
//! person at a terminal about a host it has never seen, refuses a host
//! whose certificate changed, and speaks plain HTTP only with `--nossl`.

use crate::util::{installed, run_xe, Lab, Session, PASSWORD};

/// XE_EXTRA_ARGS for the lab's master without the lab's known-hosts file.
fn bare(lab: &Lab) -> String {
    format!(
        "server={},port={},username=root,password={PASSWORD}",
        lab.master(),
        lab.port
    )
}

/// The master's fingerprint, from the lab's known-hosts file.
fn master_fingerprint(lab: &Lab) -> String {
    let text = std::fs::read_to_string(lab.dir.path().join(".xe_known_hosts")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{} ", lab.master())))
        .expect("the master's line")
        .to_string()
}

#[test]
fn xe_trusts_pinned_certificates_only_and_says_what_to_do_otherwise() {
    let lab = Lab::start(2, 1);
    let home = tempfile::tempdir().unwrap();
    let fp = master_fingerprint(&lab);
    let vms = lab.xe_min(&["vm-list"]);

    // Never seen, no terminal: refused, with the fingerprint and the ways on.
    let r = run_xe(
        &["vm-list", "--minimal"],
        &[("XE_EXTRA_ARGS", &bare(&lab))],
        home.path(),
    );
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("is not known"), "{}", r.stderr);
    assert!(r.stderr.contains(&format!("fingerprint={fp}")), "{}", r.stderr);
    assert!(r.stdout.is_empty());

    // The fingerprint given (in any case): trusted.
    let given = format!("{},fingerprint={}", bare(&lab), fp.to_lowercase());
    let r = run_xe(&["vm-list", "--minimal"], &[("XE_EXTRA_ARGS", &given)], home.path());
    assert_eq!((r.code, r.stdout.trim()), (0, vms.as_str()), "{}", r.stderr);

    // --no-verify: TLS without the check; --nossl: plain HTTP.
    for flag in ["--no-verify", "--nossl"] {
        let r = run_xe(
            &["vm-list", "--minimal", flag],
            &[("XE_EXTRA_ARGS", &bare(&lab))],
            home.path(),
        );
        assert_eq!((r.code, r.stdout.trim()), (0, vms.as_str()), "{flag}: {}", r.stderr);
    }

    // A pinned fingerprint that is not the host's: refused as a changed
    // certificate, naming both, and nothing is sent.
    let wrong = home.path().join("known");
    let other = fp.replace(&fp[..2], if &fp[..2] == "00" { "11" } else { "00" });
    std::fs::write(&wrong, format!("{} {other}\n", lab.master())).unwrap();
    let pinned_wrong = format!("{},knownhosts={}", bare(&lab), wrong.display());
    let r = run_xe(
        &["vm-param-set", &format!("uuid={vms}"), "name-label=intercepted"],
        &[("XE_EXTRA_ARGS", &pinned_wrong)],
        home.path(),
    );
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("has changed"), "{}", r.stderr);
    assert!(r.stderr.contains(&other) && r.stderr.contains(&fp), "{}", r.stderr);
    assert_eq!(
        lab.xe_min(&["vm-list", &format!("uuid={vms}"), "params=name-label"]),
        "vm01"
    );

    // Pointed at a member, xe follows it to the master: both pinned (the
    // lab's file) is enough, the member alone is not.
    let member_fp = {
        let text = std::fs::read_to_string(lab.dir.path().join(".xe_known_hosts")).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{} ", lab.host_address(2))))
            .unwrap()
            .to_string()
    };
    let only_member = home.path().join("member-only");
    std::fs::write(&only_member, format!("{} {member_fp}\n", lab.host_address(2))).unwrap();
    let via_member = format!(
        "server={},port={},username=root,password={PASSWORD},knownhosts={}",
        lab.host_address(2),
        lab.port,
        only_member.display()
    );
    let r = run_xe(
        &["vm-list", "--minimal"],
        &[("XE_EXTRA_ARGS", &via_member)],
        home.path(),
    );
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .contains(&format!("the certificate of {} is not known", lab.master())),
        "{}",
        r.stderr
    );
}

#[test]
fn on_a_terminal_xe_asks_once_and_remembers_the_host() {
    if !installed("tmux") {
        eprintln!("skipped: tmux is not installed (.ci/run installs it)");
        return;
    }
    let lab = Lab::start(1, 1);
    let home = tempfile::tempdir().unwrap();
    let fp = master_fingerprint(&lab);
    let s = Session::start(&["bash", "--norc", "--noprofile", "-i"], home.path(), &bare(&lab));
    s.keys(&["-l", "xe vm-list params=name-label --minimal; echo listed-$?"]);
    s.keys(&["Enter"]);
    assert!(s.wait_for("Type 'yes' to continue"), "{}", s.screen());
    assert!(
        s.screen().replace('\n', "").contains(&fp),
        "the fingerprint is shown:\n{}",
        s.screen()
    );
    s.keys(&["-l", "yes"]);
    s.keys(&["Enter"]);
    assert!(s.wait_for("listed-0"), "{}", s.screen());
    assert!(s.screen().contains("vm01"), "{}", s.screen());
    let known = std::fs::read_to_string(home.path().join(".xe_known_hosts")).unwrap();
    assert_eq!(known, format!("{} {fp}\n", lab.master()));
    // The second time: no question.
    s.keys(&["-l", "clear; xe vm-list params=name-label --minimal; echo again-$?"]);
    s.keys(&["Enter"]);
    assert!(s.wait_for("again-0"), "{}", s.screen());
    assert!(!s.screen().contains("Type 'yes'"), "{}", s.screen());
}
