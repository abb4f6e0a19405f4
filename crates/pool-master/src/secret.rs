//! The pool secret (XAPI's `ptoken`): what hosts of one pool prove to each
//! other with (`session.slave_login`, the HMAC of HA heartbeats).
//!
//! It lives in a file of its own, `DATA_DIR/pool-secret` (mode 0600,
//! replaced whole: sibling, fsync, rename, directory fsync), never in the
//! pool database, and is never logged: [`Secret`] prints as `Secret(..)`.
//! An install from before kept it in the database's `local` table; the
//! daemon moves it here at start (`daemon::first_start::load_secret`).
//!
//! A rotation (`pool.rotate_secret`, XAPI's pool secret rotation) goes
//! through three steps on every host, each idempotent so that a rotation
//! that failed half-way is finished by running it again with the same
//! pair: [`PoolSecret::accept_new`] (accept the new secret beside the old;
//! the pair is kept in `DATA_DIR/pool-secret.rotation`, XAPI's
//! `ptoken.old`/`ptoken.new`), [`PoolSecret::send_new`] (prove with the
//! new one: `pool-secret` holds it) and [`PoolSecret::cleanup`] (accept
//! only the new one; the pair's file goes). While the pair's file exists
//! the host accepts both, also across a restart.

use std::path::{Path, PathBuf};
use std::sync::RwLock;

/// The file name under the data directory.
pub const FILE: &str = "pool-secret";

/// The pair (old, new) of a rotation under way on this host.
pub const ROTATION_FILE: &str = "pool-secret.rotation";

/// The longest secret taken from a file or a peer.
const MAX_LEN: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read or write {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{} is damaged: {reason}", path.display())]
    Damaged { path: PathBuf, reason: &'static str },
    /// A rotation step that does not fit this host's secrets (XAPI's
    /// "old pool secret doesn't match" and kin).
    #[error("pool secret rotation: {0}")]
    Mismatch(&'static str),
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
    state: RwLock<State>,
}

#[derive(Clone)]
struct State {
    /// What this host proves itself with.
    current: Secret,
    /// A rotation under way: (old, new), both accepted.
    rotation: Option<(Secret, Secret)>,
}

impl PoolSecret {
    /// The secret kept in `dir`, or `None` when there is no file yet.
    pub fn open(dir: &Path) -> Result<Option<PoolSecret>, SecretError> {
        let Some(current) = read(&dir.join(FILE))? else {
            return Ok(None);
        };
        let rotation = read_pair(&dir.join(ROTATION_FILE))?;
        if let Some((old, new)) = &rotation {
            if current != *old && current != *new {
                return Err(SecretError::Damaged {
                    path: dir.join(ROTATION_FILE),
                    reason: "its pair does not hold this host's secret",
                });
            }
        }
        Ok(Some(PoolSecret {
            dir: dir.to_path_buf(),
            state: RwLock::new(State { current, rotation }),
        }))
    }

    /// Keep `secret` in a new file in `dir` (replacing any; a rotation's
    /// pair left there goes).
    pub fn create(dir: &Path, secret: Secret) -> Result<PoolSecret, SecretError> {
        write(&dir.join(FILE), &secret)?;
        remove(&dir.join(ROTATION_FILE))?;
        Ok(PoolSecret {
            dir: dir.to_path_buf(),
            state: RwLock::new(State {
                current: secret,
                rotation: None,
            }),
        })
    }

    fn state(&self) -> State {
        self.state.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, state: State) {
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = state;
    }

    /// The path of the file.
    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    /// The secret this host proves itself with.
    pub fn current(&self) -> Secret {
        self.state.read().unwrap_or_else(|p| p.into_inner()).current.clone()
    }

    /// Every secret this host accepts, the one it proves itself with
    /// first (the keys HA heartbeats are checked with).
    pub fn keys(&self) -> Vec<Secret> {
        let s = self.state();
        let mut keys = vec![s.current.clone()];
        if let Some((old, new)) = s.rotation {
            keys.extend([old, new].into_iter().filter(|k| *k != s.current));
        }
        keys
    }

    /// Does a peer's `text` prove it is of this pool?
    pub fn accepts(&self, text: &str) -> bool {
        // Every key is compared, so the time does not tell which matched.
        self.keys().iter().fold(false, |ok, k| k.matches(text) | ok)
    }

    /// The pair (old, new) of a rotation not finished on this host.
    pub fn rotation(&self) -> Option<(Secret, Secret)> {
        self.state().rotation
    }

    /// Take `secret` from now on (this host joined a pool, or left one):
    /// on disk first; any rotation's pair goes.
    pub fn replace(&self, secret: Secret) -> Result<(), SecretError> {
        write(&self.path(), &secret)?;
        remove(&self.dir.join(ROTATION_FILE))?;
        self.set(State {
            current: secret,
            rotation: None,
        });
        Ok(())
    }

    /// Rotation step 1: accept `new` beside `old` (which must be this
    /// host's secret), the pair kept on disk first.
    pub fn accept_new(&self, old: &Secret, new: &Secret) -> Result<(), SecretError> {
        let s = self.state();
        match &s.rotation {
            Some(pair) if pair == &(old.clone(), new.clone()) => return Ok(()),
            Some(_) => return Err(SecretError::Mismatch("another rotation is under way on this host")),
            None if s.current == *new => return Ok(()), // done here already
            None if s.current != *old => return Err(SecretError::Mismatch("the old pool secret does not match")),
            None => {}
        }
        write_pair(&self.dir.join(ROTATION_FILE), old, new)?;
        self.set(State {
            rotation: Some((old.clone(), new.clone())),
            ..s
        });
        Ok(())
    }

    /// Rotation step 2: prove with `new` from now on (still accepting
    /// `old`).
    pub fn send_new(&self, old: &Secret, new: &Secret) -> Result<(), SecretError> {
        let s = self.state();
        match &s.rotation {
            Some(pair) if pair == &(old.clone(), new.clone()) => {}
            None if s.current == *new => return Ok(()),
            _ => {
                return Err(SecretError::Mismatch(
                    "this host was not told to accept the new pool secret",
                ))
            }
        }
        if s.current != *new {
            write(&self.path(), new)?;
        }
        self.set(State {
            current: new.clone(),
            ..s
        });
        Ok(())
    }

    /// Rotation step 3: accept only `new`; the pair's file goes.
    pub fn cleanup(&self, old: &Secret, new: &Secret) -> Result<(), SecretError> {
        let s = self.state();
        match &s.rotation {
            None if s.current == *new => return Ok(()),
            Some(pair) if pair == &(old.clone(), new.clone()) && s.current == *new => {}
            _ => return Err(SecretError::Mismatch("this host does not send the new pool secret yet")),
        }
        remove(&self.dir.join(ROTATION_FILE))?;
        self.set(State {
            current: new.clone(),
            rotation: None,
        });
        Ok(())
    }
}

/// The text of `path`, `None` when the file does not exist.
fn read_text(path: &Path) -> Result<Option<String>, SecretError> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(SecretError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The pair in a rotation file, `None` when there is none.
fn read_pair(path: &Path) -> Result<Option<(Secret, Secret)>, SecretError> {
    let Some(text) = read_text(path)? else {
        return Ok(None);
    };
    let mut lines = text.lines().map(Secret::parse);
    match (lines.next(), lines.next(), lines.next()) {
        (Some(Some(old)), Some(Some(new)), None) => Ok(Some((old, new))),
        _ => Err(SecretError::Damaged {
            path: path.to_path_buf(),
            reason: "not two lines of printable text",
        }),
    }
}

fn write_pair(path: &Path, old: &Secret, new: &Secret) -> Result<(), SecretError> {
    let io = |source| SecretError::Io {
        path: path.to_path_buf(),
        source,
    };
    crate::files::replace_private(path, format!("{}\n{}\n", old.expose(), new.expose()).as_bytes()).map_err(io)?;
    crate::files::sync_dir(path).map_err(io)
}

/// Remove `path` if it exists, durably.
fn remove(path: &Path) -> Result<(), SecretError> {
    let io = |source| SecretError::Io {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::remove_file(path) {
        Ok(()) => crate::files::sync_dir(path).map_err(io),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(e)),
    }
}

/// The secret in `path`, `None` when the file does not exist.
fn read(path: &Path) -> Result<Option<Secret>, SecretError> {
    let Some(text) = read_text(path)? else {
        return Ok(None);
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

    /// The three steps on two hosts, in the master's order: every host
    /// accepts what every other sends at every moment; afterwards only the
    /// new secret; a rotation interrupted anywhere resumes with the pair,
    /// also after a restart (the files).
    #[test]
    fn a_rotation_accepts_both_until_the_cleanup() {
        let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let old = Secret::fresh();
        let a = PoolSecret::create(da.path(), old.clone()).unwrap();
        let b = PoolSecret::create(db.path(), old.clone()).unwrap();
        let new = Secret::fresh();
        let each_accepts_the_other = || {
            assert!(a.accepts(b.current().expose()) && b.accepts(a.current().expose()));
        };
        for h in [&a, &b] {
            h.accept_new(&old, &new).unwrap();
            each_accepts_the_other();
        }
        assert_eq!(mode(&da.path().join(ROTATION_FILE)), 0o600);
        // A restart in the middle keeps the pair.
        let b = PoolSecret::open(db.path()).unwrap().unwrap();
        assert_eq!(b.rotation(), Some((old.clone(), new.clone())));
        assert!(b.accepts(new.expose()) && b.accepts(old.expose()));
        a.send_new(&old, &new).unwrap();
        assert_eq!(a.current(), new);
        assert!(b.accepts(a.current().expose()) && a.accepts(b.current().expose()));
        // Steps again are no-ops (a rotation run twice).
        a.accept_new(&old, &new).unwrap();
        a.send_new(&old, &new).unwrap();
        b.send_new(&old, &new).unwrap();
        assert_eq!(a.keys(), vec![new.clone(), old.clone()]);
        b.cleanup(&old, &new).unwrap();
        a.cleanup(&old, &new).unwrap();
        for (h, dir) in [(&a, &da), (&b, &db)] {
            assert!(h.accepts(new.expose()));
            assert!(!h.accepts(old.expose()), "the old secret after the cleanup");
            assert!(!dir.path().join(ROTATION_FILE).exists());
            let again = PoolSecret::open(dir.path()).unwrap().unwrap();
            assert_eq!((again.current(), again.rotation()), (new.clone(), None));
        }
        a.accept_new(&old, &new).unwrap();
        a.cleanup(&old, &new).unwrap();
        assert_eq!(a.keys(), vec![new.clone()]);
    }

    #[test]
    fn rotation_steps_that_do_not_fit_are_refused_and_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mine = Secret::fresh();
        let h = PoolSecret::create(dir.path(), mine.clone()).unwrap();
        let (other, new) = (Secret::fresh(), Secret::fresh());
        assert!(matches!(h.accept_new(&other, &new), Err(SecretError::Mismatch(_))));
        assert!(matches!(h.send_new(&mine, &new), Err(SecretError::Mismatch(_))));
        assert!(matches!(h.cleanup(&mine, &new), Err(SecretError::Mismatch(_))));
        h.accept_new(&mine, &new).unwrap();
        assert!(matches!(h.cleanup(&mine, &new), Err(SecretError::Mismatch(_))));
        assert!(matches!(h.accept_new(&mine, &other), Err(SecretError::Mismatch(_))));
        assert_eq!(h.current(), mine);
        assert_eq!(h.rotation(), Some((mine.clone(), new.clone())));
        // A damaged pair file stops the start rather than guess.
        std::fs::write(dir.path().join(ROTATION_FILE), "one line\n").unwrap();
        assert!(matches!(PoolSecret::open(dir.path()), Err(SecretError::Damaged { .. })));
    }

    #[test]
    fn debug_shows_no_secret() {
        let s = Secret::parse("hunter2").unwrap();
        assert_eq!(format!("{s:?}"), "Secret(..)");
        assert!(Secret::parse("").is_none());
        assert!(Secret::parse(&"a".repeat(MAX_LEN + 1)).is_none());
    }
}
