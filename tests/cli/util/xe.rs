//! Running the real `xe` binary.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use super::xe_bin;

/// What an xe run printed and returned.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Run xe with `env` and HOME set to `home`.
pub fn run_xe(args: &[&str], env: &[(&str, &str)], home: &Path) -> Run {
    let mut cmd = Command::new(xe_bin());
    cmd.args(args)
        .env_remove("XE_EXTRA_ARGS")
        .env("HOME", home)
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let Output { status, stdout, stderr } = cmd.output().expect("run xe");
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}
