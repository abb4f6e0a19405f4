//! What an admin installs (issue 21): the manual pages generated from the
//! command tables are current and read cleanly, and the two Debian
//! packages `cargo deb` makes (`xe`, and `pool-ha` with xapid, its unit and
//! its settings) install through dpkg into a scratch root with what a host
//! needs where Debian puts it, the settings file as a conffile, and the
//! installed xapid accepting the installed settings.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{installed, xapid_bin, xe_bin};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn stdout(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_manual_pages_are_generated_from_the_command_tables() {
    for (bin, file) in [(xe_bin(), "dist/man/xe.1"), (xapid_bin(), "dist/man/xapid.8")] {
        let generated = stdout(Command::new(&bin).arg("__man"));
        let checked_in = std::fs::read_to_string(Path::new(ROOT).join(file)).unwrap_or_default();
        assert!(
            checked_in == generated,
            "{file} is out of date: run `{} __man > {file}`",
            bin.file_name().unwrap_or_default().to_string_lossy()
        );
        if installed("groff") {
            // Undefined macros and bad escapes would show as warnings.
            let out = Command::new("groff")
                .args(["-man", "-z", "-wmac", "-wescape", "-wchar", "-Wbreak"])
                .arg(Path::new(ROOT).join(file))
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success() && stderr.is_empty(), "{file}: {stderr}");
        }
    }
    let xe_page = std::fs::read_to_string(Path::new(ROOT).join("dist/man/xe.1")).unwrap();
    for word in [
        "vm-start",
        "pool-ha-enable",
        "host-emergency-ha-disable",
        "~/.xe_known_hosts",
    ] {
        assert!(xe_page.contains(&word.replace('-', "\\-")), "xe.1 lacks {word}");
    }
    let xapid_page = std::fs::read_to_string(Path::new(ROOT).join("dist/man/xapid.8")).unwrap();
    for word in ["check\\-config", "POOL_HA_DATA_DIR", "/etc/pool\\-ha/xapid.toml"] {
        assert!(xapid_page.contains(word), "xapid.8 lacks {word}");
    }
}

/// The Cargo profile the test binaries were built with, as `cargo deb
/// --profile` names it.
fn profile() -> &'static str {
    let dir = xe_bin().parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.file_name().is_some_and(|n| n == "release") {
        "release"
    } else {
        "dev"
    }
}

/// `cargo deb` for `package`, from the binaries this build made.
fn build_deb(package: &str, out: &Path) -> PathBuf {
    let target = xe_bin()
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .expect("the target directory");
    let printed = stdout(
        Command::new("cargo")
            .current_dir(ROOT)
            .env("CARGO_TARGET_DIR", &target)
            .args([
                "deb",
                "--no-build",
                "--fast",
                "--profile",
                profile(),
                "-p",
                package,
                "-o",
            ])
            .arg(out),
    );
    PathBuf::from(printed.trim().lines().last().unwrap_or_default())
}

/// The two packages, `xe` and `pool-ha`, built by `cargo deb` into `dir`
/// from this build's binaries; or why this machine cannot.
pub(crate) fn build_debs(dir: &Path) -> Result<(PathBuf, PathBuf), String> {
    let has_cargo_deb = Command::new("cargo")
        .args(["deb", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_cargo_deb || !installed("dpkg") || !installed("dpkg-deb") {
        return Err("needs cargo-deb (`cargo install cargo-deb --locked`; .ci/run installs it) and dpkg".into());
    }
    // Both binaries exist: xapid_bin() asserts it.
    let _ = xapid_bin();
    Ok((build_deb("xe", dir), build_deb("pool-master", dir)))
}

/// `dpkg --root=ROOT` with the switches a scratch root needs (dependencies
/// such as libc6 are the machine's, not the scratch root's).
pub(crate) fn dpkg(root: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("dpkg");
    cmd.arg(format!("--root={}", root.display()))
        .args(["--force-depends", "--force-not-root", "--force-script-chrootless"])
        .args(args);
    cmd
}

/// Install `debs` through dpkg into `root`, a fresh scratch root.
pub(crate) fn install(root: &Path, debs: &[&Path]) {
    for sub in ["var/lib/dpkg/info", "var/lib/dpkg/updates", "var/lib/dpkg/triggers"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    for file in ["var/lib/dpkg/status", "var/lib/dpkg/available"] {
        std::fs::write(root.join(file), "").unwrap();
    }
    let out = dpkg(root, &["-i"]).args(debs).output().unwrap();
    assert!(
        out.status.success(),
        "dpkg -i: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_packages_install_what_a_host_needs() {
    let dir = tempfile::tempdir().unwrap();
    let (xe_deb, host_deb) = match build_debs(dir.path()) {
        Ok(debs) => debs,
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };

    let field = |deb: &Path, name: &str| stdout(Command::new("dpkg-deb").arg("-f").arg(deb).arg(name));
    assert_eq!(field(&xe_deb, "Package").trim(), "xe");
    assert_eq!(field(&host_deb, "Package").trim(), "pool-ha");
    let depends = field(&host_deb, "Depends");
    assert!(depends.contains("xe") && depends.contains("libc6"), "{depends}");

    // Install both through dpkg into a scratch root.
    let root = dir.path().join("root");
    install(&root, &[&xe_deb, &host_deb]);
    let dpkg = |args: &[&str]| dpkg(&root, args);
    let status = stdout(&mut dpkg(&["-s", "pool-ha"]));
    assert!(status.contains("Status: install ok installed"), "{status}");

    for (path, mode) in [
        ("usr/bin/xe", 0o755),
        ("usr/sbin/xapid", 0o755),
        ("usr/lib/systemd/system/xapid.service", 0o644),
        ("etc/pool-ha/xapid.toml", 0o644),
        ("etc/default/xapid", 0o644),
        ("usr/share/man/man1/xe.1.gz", 0o644),
        ("usr/share/man/man8/xapid.8.gz", 0o644),
        ("usr/share/bash-completion/completions/xe", 0o644),
        ("usr/share/zsh/vendor-completions/_xe", 0o644),
        ("usr/share/fish/vendor_completions.d/xe.fish", 0o644),
    ] {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(meta.permissions().mode() & 0o777, mode, "{path}");
    }
    let conffiles = stdout(&mut dpkg(&["-s", "pool-ha"]));
    assert!(
        conffiles.contains("/etc/pool-ha/xapid.toml") && conffiles.contains("/etc/default/xapid"),
        "the settings are not conffiles: {conffiles}"
    );

    // The installed programs run, and the installed xapid takes the
    // installed settings.
    let help = stdout(Command::new(root.join("usr/bin/xe")).args(["help", "vm-start"]));
    assert!(help.contains("vm-start"), "{help}");
    let settings = stdout(
        Command::new(root.join("usr/sbin/xapid"))
            .args(["serve", "--check-config", "--config"])
            .arg(root.join("etc/pool-ha/xapid.toml"))
            .env_remove("POOL_HA_DATA_DIR"),
    );
    assert!(settings.contains("data-dir = /var/lib/xapid"), "{settings}");
    let unit = std::fs::read_to_string(root.join("usr/lib/systemd/system/xapid.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/sbin/xapid serve"), "{unit}");

    // Removing keeps the admin's settings; purging removes them.
    assert!(dpkg(&["-r", "pool-ha"]).status().unwrap().success());
    assert!(!root.join("usr/sbin/xapid").exists());
    assert!(root.join("etc/pool-ha/xapid.toml").exists());
    assert!(dpkg(&["-P", "pool-ha"]).status().unwrap().success());
    assert!(!root.join("etc/pool-ha/xapid.toml").exists());
}
