//! The pool secret (XAPI's `ptoken`): what hosts of one pool prove to each
//! other with (`session.slave_login`, the HMAC of HA heartbeats).
//!
//! It lives in a file of its own, `DATA_DIR/pool-secret` (mode 0600,
//! replaced whole: sibling, fsync, rename, directory fsync), never in the
//! pool database, and is never logged: [`Secret`] prints as `Secret(..)`.
//! An install from before kept it in the database's `local` table; the
//! daemon moves it here at start (`daemon::first_start::load_secret`).

use std::path::{Path, PathBuf};
use std::sync::RwLock;

/// The file name under the data directory.
pub const FILE: &str = "pool-secret";

/// The longest secret taken from a file or a peer.
const MAX_LEN: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read or write {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{} is damaged: {reason}", path.display())]
    Damaged { path: PathBuf, reason: &'static str },
}

/// A pool secret. Its text leaves only through [`Secret::expose`]; `Debug`
/// shows no part of it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// A new random secret: 32 bytes from the OS's generator, in hex.
    pub fn fresh() -> Secret {
        Secret(rand::random::<[u8; 32]>().iter().map(|b| format!("{b:02x}")).collect())
    }

    /// A secret given as text (a file, a join answer): printable ASCII
    /// without spaces, 1 to 1,024 bytes.
    pub fn parse(text: &str) -> Option<Secret> {
        let ok = !text.is_empty() && text.len() <= MAX_LEN && text.bytes().all(|b| b.is_ascii_graphic());
        ok.then(|| Secret(text.to_string()))
    }

    /// The text, to send to a peer.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Does `text` equal this secret? In time that does not depend on
    /// where they differ.
    pub fn matches(&self, text: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), text.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// This host's pool secret, in memory and in its file.
pub struct PoolSecret {
    dir: PathBuf,
    current: RwLock<Secret>,
}

impl PoolSecret {
    /// The secret kept in `dir`, or `None` when there is no file yet.
    pub fn open(dir: &Path) -> Result<Option<PoolSecret>, SecretError> {
        let Some(current) = read(&dir.join(FILE))? else {
            return Ok(None);
        };
        Ok(Some(PoolSecret {
            dir: dir.to_path_buf(),
            current: RwLock::new(current),
        }))
    }

    /// Keep `secret` in a new file in `dir` (replacing any).
    pub fn create(dir: &Path, secret: Secret) -> Result<PoolSecret, SecretError> {
        write(&dir.join(FILE), &secret)?;
        Ok(PoolSecret {
            dir: dir.to_path_buf(),
            current: RwLock::new(secret),
        })
    }

    /// The path of the file.
    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    /// The secret this host proves itself with.
    pub fn current(&self) -> Secret {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Does a peer's `text` prove it is of this pool?
    pub fn accepts(&self, text: &str) -> bool {
        self.current.read().unwrap_or_else(|p| p.into_inner()).matches(text)
    }

    /// Take `secret` from now on (this host joined a pool): on disk first.
    pub fn replace(&self, secret: Secret) -> Result<(), SecretError> {
        write(&self.path(), &secret)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = secret;
        Ok(())
    }
}

/// The secret in `path`, `None` when the file does not exist.
fn read(path: &Path) -> Result<Option<Secret>, SecretError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(SecretError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    // An install that left it open to others is tightened.
    crate::files::private_file(path).map_err(|source| SecretError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Secret::parse(text.trim_end_matches('\n'))
        .map(Some)
        .ok_or_else(|| SecretError::Damaged {
            path: path.to_path_buf(),
            reason: "not one line of printable text",
        })
}

/// Replace `path` with `secret`, 0600 from its creation, durably.
fn write(path: &Path, secret: &Secret) -> Result<(), SecretError> {
    let io = |source| SecretError::Io {
        path: path.to_path_buf(),
        source,
    };
    crate::files::replace_private(path, format!("{}\n", secret.expose()).as_bytes()).map_err(io)?;
    crate::files::sync_dir(path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_secret_is_kept_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        assert!(PoolSecret::open(dir.path()).unwrap().is_none());
        let s = Secret::fresh();
        assert_eq!(s.expose().len(), 64);
        let kept = PoolSecret::create(dir.path(), s.clone()).unwrap();
        assert_eq!(mode(&kept.path()), 0o600);
        assert!(kept.accepts(s.expose()));
        assert!(!kept.accepts("other"));
        let again = PoolSecret::open(dir.path()).unwrap().unwrap();
        assert_eq!(again.current(), s);
        let t = Secret::fresh();
        again.replace(t.clone()).unwrap();
        assert_eq!(PoolSecret::open(dir.path()).unwrap().unwrap().current(), t);
        assert!(!dir.path().join("pool-secret.tmp").exists());
    }

    #[test]
    fn a_damaged_or_open_file_is_refused_or_tightened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        std::fs::write(&path, "two words\n").unwrap();
        assert!(matches!(PoolSecret::open(dir.path()), Err(SecretError::Damaged { .. })));
        std::fs::write(&path, "abc\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let s = PoolSecret::open(dir.path()).unwrap().unwrap();
        assert!(s.accepts("abc"));
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn debug_shows_no_secret() {
        let s = Secret::parse("hunter2").unwrap();
        assert_eq!(format!("{s:?}"), "Secret(..)");
        assert!(Secret::parse("").is_none());
        assert!(Secret::parse(&"a".repeat(MAX_LEN + 1)).is_none());
    }
}
