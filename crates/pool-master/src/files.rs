//! Small files replaced whole: written to a sibling, synced, and renamed
//! into place, so a reader (another process, or this one after a crash)
//! sees the old content or the new, never a truncated file. And the modes
//! of what only this host's root may read (`private_dir`, `private_file`).

use std::io::Write;
use std::path::{Path, PathBuf};

/// Replace `path` with `contents` atomically.
pub fn replace(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let tmp = sibling(path);
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(contents)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Replace `path` with `contents` atomically, readable by its owner only
/// (mode 0600 from the moment the sibling is created): secrets and keys.
pub fn replace_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = sibling(path);
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(contents)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Sync the directory holding `path`, so a rename into it survives a
/// crash of the machine.
pub fn sync_dir(path: &Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)?.sync_all()
}

/// `NAME.tmp` beside `path`.
fn sibling(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

/// Make `dir` (created if missing) readable by its owner only (0700); an
/// existing directory open to others is tightened. Whether it was.
pub fn private_dir(dir: &Path) -> std::io::Result<bool> {
    use std::os::unix::fs::DirBuilderExt;
    if !dir.exists() {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        return Ok(false);
    }
    tighten(dir, 0o700)
}

/// Make `path`, if it exists, readable by its owner only (0600), or
/// create it empty so (a database SQLite then opens, whose journal and WAL
/// files take its mode). Whether an existing file was tightened.
pub fn private_file(path: &Path) -> std::io::Result<bool> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => tighten(path, 0o600),
        Err(e) => Err(e),
    }
}

/// Set `path`'s mode to `mode` when it grants more than `mode` does.
fn tighten(path: &Path, mode: u32) -> std::io::Result<bool> {
    use std::os::unix::fs::PermissionsExt;
    let now = std::fs::metadata(path)?.permissions().mode() & 0o777;
    if now & !mode == 0 {
        return Ok(false);
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_replaced_whole_and_no_sibling_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("env");
        replace(&path, b"first\n").unwrap();
        replace(&path, b"second\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "second\n");
        assert!(!sibling(&path).exists());
        assert_eq!(sibling(&path).file_name().unwrap(), "env.tmp");
    }
}
