//! Which hosts xe trusts: the certificate fingerprints it has pinned.
//!
//! xe talks HTTPS unless told `--nossl`. pool-ha hosts serve self-signed
//! certificates, so xe trusts a host when the SHA-256 fingerprint of its
//! certificate is pinned for the address xe dialled: in the known-hosts
//! file (`~/.xe_known_hosts`, or `knownhosts=FILE`; one `ADDRESS
//! FINGERPRINT` per line, `#` comments), or given as `fingerprint=` for
//! the server named by `-s`. A host xe has never seen is trusted on first
//! use only by a person at a terminal, who is shown the fingerprint and
//! must type `yes`; a script gets an error saying what to pass. A host
//! whose certificate differs from the pinned one is refused: that is what
//! a host in the middle looks like.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use xapi_client::tls::{normalize, Pins};

use crate::error::XeError;

/// The known-hosts file and what it says.
pub struct KnownHosts {
    path: PathBuf,
    entries: Vec<(String, String)>,
}

impl KnownHosts {
    /// `path` when given, else `~/.xe_known_hosts`.
    pub fn load(path: Option<&str>) -> KnownHosts {
        let path = match path {
            Some(p) => PathBuf::from(p),
            None => std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_default()
                .join(".xe_known_hosts"),
        };
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let entries = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                Some((w.next()?.to_string(), normalize(w.next()?)))
            })
            .collect();
        KnownHosts { path, entries }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The fingerprints pinned for `address`.
    pub fn of(&self, address: &str) -> Vec<&str> {
        self.entries
            .iter()
            .filter(|(a, _)| a == address)
            .map(|(_, f)| f.as_str())
            .collect()
    }

    /// Every pin, for the client.
    pub fn pins(&self) -> Arc<Pins> {
        let pins = Pins::new();
        for (a, f) in &self.entries {
            pins.pin(a, f);
        }
        Arc::new(pins)
    }

    /// Remember `fingerprint` for `address` (the file is created 0600).
    pub fn add(&mut self, address: &str, fingerprint: &str) -> Result<(), XeError> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.path)
            .map_err(|e| XeError::cli(format!("cannot write {}: {e}", self.path.display())))?;
        writeln!(f, "{address} {fingerprint}")
            .map_err(|e| XeError::cli(format!("cannot write {}: {e}", self.path.display())))?;
        self.entries.push((address.to_string(), fingerprint.to_string()));
        Ok(())
    }
}

/// What to do about `address` showing the certificate `fingerprint` that
/// is not pinned for it: `Ok` once it is trusted now (a person said yes,
/// and it is remembered), else the error to print.
pub fn decide(known: &mut KnownHosts, address: &str, fingerprint: &str) -> Result<(), XeError> {
    let file = known.path().display().to_string();
    if let Some(was) = known.of(address).first() {
        return Err(XeError::Plain(format!(
            "Error: the certificate of {address} has changed.\n\
             It was SHA-256 {was}\n\
             it is now  {fingerprint}\n\
             Someone may be intercepting the connection. If the host's certificate was replaced on \
             purpose, remove its line from {file}."
        )));
    }
    if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
        return Err(XeError::Plain(format!(
            "Error: the certificate of {address} is not known (SHA-256 {fingerprint}).\n\
             Check it against the host's own (xapid logs it when it starts) and pass \
             fingerprint={fingerprint}, or add the line \"{address} {fingerprint}\" to {file}; \
             --no-verify skips the check."
        )));
    }
    crate::commands::ask(&format!(
        "The certificate of {address} is not known.\n\
         Its SHA-256 fingerprint is {fingerprint}\n\
         Check it against the host's own (xapid logs it when it starts). Trust it and remember it in {file}?"
    ))?;
    known.add(address, fingerprint)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_file_is_read_leniently_and_written_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known");
        std::fs::write(&path, "# pool a\n10.0.0.1 ab:cd\n\nbroken-line\n10.0.0.2 EF01\n").unwrap();
        let mut k = KnownHosts::load(path.to_str());
        assert_eq!(k.of("10.0.0.1"), vec!["AB:CD"]);
        assert_eq!(k.of("10.0.0.2"), vec!["EF:01"]);
        assert!(k.of("10.0.0.3").is_empty());
        // A host whose certificate changed is refused, naming both.
        let e = decide(&mut k, "10.0.0.1", "AB:CE").unwrap_err().render(&mut |_| None);
        assert!(
            e.contains("has changed") && e.contains("AB:CD") && e.contains("AB:CE"),
            "{e}"
        );
        // A new one, without a terminal: an error that says what to pass.
        let e = decide(&mut k, "10.0.0.3", "12:34").unwrap_err().render(&mut |_| None);
        assert!(e.contains("fingerprint=12:34"), "{e}");
        let fresh = dir.path().join("new");
        let mut k = KnownHosts::load(fresh.to_str());
        k.add("10.0.0.4", "56:78").unwrap();
        assert_eq!(std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(KnownHosts::load(fresh.to_str()).of("10.0.0.4"), vec!["56:78"]);
    }
}
