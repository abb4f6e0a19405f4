//! `/etc/pool-ha/xapid.toml`: `xapid serve`'s settings in a file (issue 21).
//!
//! Every key is also a flag of `xapid serve` (the same spelling: `data-dir`
//! is `--data-dir`) and a `POOL_HA_*` environment variable; a flag beats the
//! environment, which beats the file, which beats the built-in default.
//! This module reads and checks the file; `xapid`'s `main` merges it. The
//! root password itself is never a key: `root-password-file` names a file
//! that holds it (0600), as secrets stay out of files others may read.
//! That file is either the password on one line or an `xe -pwf` file
//! (`root` on the first line, the password on the second), so one file
//! serves both ([`root_password`]).

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Where `xapid serve` looks when no `--config` is given.
pub const DEFAULT_PATH: &str = "/etc/pool-ha/xapid.toml";

/// The settings a file may hold, each optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub address: Option<String>,
    pub bind_address: Option<String>,
    pub port: Option<u16>,
    pub http_port: Option<u16>,
    pub https_only: Option<bool>,
    pub name: Option<String>,
    pub root_password_file: Option<PathBuf>,
    pub memory: Option<i64>,
    pub driver: Option<String>,
    pub accel: Option<String>,
    pub guest_kernel: Option<PathBuf>,
    pub guest_initrd: Option<PathBuf>,
    pub guest_kernel_dir: Option<PathBuf>,
    pub watchdog_device: Option<PathBuf>,
    pub session_idle_timeout: Option<u64>,
}

/// Why the file cannot be used: one line each, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read it: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
}

/// The root password in the text of a `root-password-file`: its one line,
/// or, in xe's `-pwf` layout (a user name on the first line, the password
/// on the second), the second line when the first is `root`.
pub fn root_password(text: &str) -> Result<String, String> {
    let lines: Vec<&str> = text.lines().map(|l| l.strip_suffix('\r').unwrap_or(l)).collect();
    match lines.as_slice() {
        [] | [""] => Err("the file is empty: write the root password on its first line".into()),
        [password] | [password, ""] => Ok(password.to_string()),
        ["root", password, ..] if !password.is_empty() => Ok(password.to_string()),
        [user, ..] if *user != "root" && lines.len() >= 2 && !lines[1].is_empty() => Err(format!(
            "the file reads as an xe -pwf file for user '{user}': the pool's user is root \
             (one line with the password, or `root` then the password)"
        )),
        _ => Err(
            "expected the password on one line, or xe's -pwf layout (`root` on the first line, the password on the second)"
                .into(),
        ),
    }
}

/// Read the settings at `path`. A file that is not there is no error when
/// `path` is the default one (`explicit` false): no file, no settings.
pub fn load(path: &Path, explicit: bool) -> Result<FileConfig, ConfigError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => return Ok(FileConfig::default()),
        Err(source) => {
            return Err(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    parse(path, &text)
}

/// Parse the text of a settings file (`path` names it in errors).
pub fn parse(path: &Path, text: &str) -> Result<FileConfig, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        // toml's message spans lines (the offending line, a caret): the
        // first says what is wrong, with the line and column.
        message: one_line(&e, text),
    })
}

fn one_line(e: &toml::de::Error, text: &str) -> String {
    let what = e.message().trim().replace('\n', " ");
    match e.span() {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let shown: String = text.lines().nth(line - 1).unwrap_or("").chars().take(80).collect();
            format!("line {line} ({}): {what}", shown.trim())
        }
        None => what,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_root_password_file_is_one_line_or_an_xe_pwf_file() {
        assert_eq!(root_password("s3cret\n").unwrap(), "s3cret");
        assert_eq!(root_password("s3cret").unwrap(), "s3cret");
        assert_eq!(root_password("s3cret\n\n").unwrap(), "s3cret");
        assert_eq!(root_password("root\ns3cret\n").unwrap(), "s3cret");
        assert_eq!(root_password("root\r\ns3cret\r\n").unwrap(), "s3cret");
        assert!(root_password("").is_err());
        assert!(root_password("admin\ns3cret\n").unwrap_err().contains("'admin'"));
        assert!(root_password("a\n\nb\n").is_err());
    }

    #[test]
    fn a_file_sets_what_it_names_and_nothing_else() {
        let c = parse(
            Path::new("x.toml"),
            "data-dir = \"/var/lib/xapid\"\naddress = \"192.0.2.11\"\nport = 443\ndriver = \"qemu\"\n",
        )
        .unwrap();
        assert_eq!(c.data_dir.as_deref(), Some(Path::new("/var/lib/xapid")));
        assert_eq!(c.address.as_deref(), Some("192.0.2.11"));
        assert_eq!((c.port, c.driver.as_deref(), c.memory), (Some(443), Some("qemu"), None));
    }

    #[test]
    fn bad_files_get_one_line_naming_the_file() {
        for (text, says) in [
            ("colour = \"blue\"\n", "unknown field `colour`"),
            ("port = 70000\n", "port"),
            ("port = \"x\"\n", "invalid type"),
            ("address = \n", "x.toml"),
            ("root-password = \"secret\"\n", "unknown field `root-password`"),
        ] {
            let e = parse(Path::new("x.toml"), text).unwrap_err().to_string();
            assert!(!e.contains('\n'), "{e:?}");
            assert!(e.starts_with("x.toml: "), "{e}");
            assert!(e.contains(says), "{text:?}: {e}");
        }
    }

    #[test]
    fn the_default_file_may_be_missing_a_named_one_may_not() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.toml");
        assert_eq!(load(&missing, false).unwrap(), FileConfig::default());
        let e = load(&missing, true).unwrap_err().to_string();
        assert!(e.contains("none.toml: cannot read it"), "{e}");
    }
}
