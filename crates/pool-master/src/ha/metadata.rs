//! The pool database on the heartbeat SR (xapi's HA metadata VDI and redo
//! log): a full copy, then every commit appended after it.
//!
//! While HA is on, the master appends each commit here before it answers
//! the call, so a host that wins the master lock after the master died
//! starts from the newest committed state even when no member had
//! replicated it yet.
//!
//! The file is a sequence of records, each `length (u32 LE) | first 8
//! bytes of its SHA-256 | JSON`. The first record is a full copy
//! (`{"full": true, "generation", "rows", "users", "term"}`, the writer's
//! master term, for the event tokens of its clients), the others deltas
//! (`{"generation", "rows"}`). A torn or damaged record ends the log: what
//! comes before it is still a committed state. A full copy is written to
//! a new file that replaces the old one, so a crash in between leaves the
//! old log whole. Every read and write passes this host's I/O gate.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use pool_db::model::Changes;
use pool_db::replication;

use crate::io::Gate;

/// A log larger than this is rewritten as one full copy at the next commit.
pub const COMPACT_AT: u64 = 8 << 20;

/// The database as the metadata file holds it.
#[derive(Debug)]
pub struct Metadata {
    pub generation: u64,
    pub snapshot: Changes,
    pub users: Vec<(String, String)>,
    /// The master term that wrote the file (none in a file from before
    /// terms were written).
    pub term: Option<u64>,
    /// The generation of the full copy the file starts with.
    pub base: u64,
    /// The commits after the full copy, in order, as the master made them.
    pub commits: Vec<(u64, Changes)>,
}

/// The writer side, kept by the master while HA is on.
#[derive(Debug)]
pub struct RedoLog {
    io: Arc<Gate>,
    path: PathBuf,
    file: Option<File>,
    size: u64,
}

fn frame(v: &Value) -> Vec<u8> {
    let body = v.to_string().into_bytes();
    let mut out = Vec::with_capacity(body.len() + 12);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&Sha256::digest(&body)[..8]);
    out.extend_from_slice(&body);
    out
}

impl RedoLog {
    /// A log at `path` that needs a full copy before its first delta.
    pub fn new(io: Arc<Gate>, path: PathBuf) -> RedoLog {
        RedoLog {
            io,
            path,
            file: None,
            size: 0,
        }
    }

    /// Does the next commit need a full copy first?
    /// The file missed a commit: the next one writes a full copy.
    pub fn needs_full_copy(&mut self) {
        self.file = None;
    }

    pub fn needs_full(&self) -> bool {
        self.file.is_none() || self.size > COMPACT_AT
    }

    /// Replace the log with one full copy.
    pub fn write_full(
        &mut self,
        generation: u64,
        snapshot: &Changes,
        users: &[(String, String)],
        term: u64,
    ) -> std::io::Result<()> {
        self.file = None;
        self.io.storage()?;
        let record = frame(&json!({
            "full": true,
            "generation": generation,
            "rows": replication::encode_rows(snapshot),
            "users": replication::encode_users(users),
            "term": term,
        }));
        let tmp = self.path.with_extension("tmp");
        let mut f = File::create(&tmp)?;
        f.write_all(&record)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        self.file = Some(OpenOptions::new().append(true).open(&self.path)?);
        self.size = record.len() as u64;
        Ok(())
    }

    /// Append one commit. On error the log needs a full copy again.
    pub fn append(&mut self, generation: u64, changes: &Changes) -> std::io::Result<()> {
        let record = frame(&json!({ "generation": generation, "rows": replication::encode_rows(changes) }));
        let result = match self.file.as_mut() {
            Some(f) => (self.io.storage().map_err(std::io::Error::from))
                .and_then(|()| f.write_all(&record))
                .and_then(|()| f.sync_data()),
            None => Err(std::io::Error::other("the metadata log has no full copy yet")),
        };
        match result {
            Ok(()) => {
                self.size += record.len() as u64;
                Ok(())
            }
            Err(e) => {
                self.file = None;
                Err(e)
            }
        }
    }
}

/// Read the database from the metadata file: `Ok(None)` when there is no
/// file or no whole full copy in it.
pub fn read(io: &Gate, path: &Path) -> std::io::Result<Option<Metadata>> {
    io.storage()?;
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(mut f) => f.read_to_end(&mut bytes)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut records = Vec::new();
    let mut rest = bytes.as_slice();
    while rest.len() >= 12 {
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let Some(body) = rest.get(12..12 + len) else { break };
        if Sha256::digest(body)[..8] != rest[4..12] {
            break;
        }
        let Ok(v) = serde_json::from_slice::<Value>(body) else {
            break;
        };
        records.push(v);
        rest = &rest[12 + len..];
    }
    let mut records = records.into_iter();
    let Some(first) = records.next() else { return Ok(None) };
    let decode = |v: &Value| -> Option<(u64, Changes)> {
        let g = v.get("generation")?.as_u64()?;
        Some((g, replication::decode_rows(v.get("rows")?).ok()?))
    };
    if first.get("full").and_then(Value::as_bool) != Some(true) {
        return Ok(None);
    }
    let Some((mut generation, snapshot)) = decode(&first) else {
        return Ok(None);
    };
    let Some(users) = first.get("users").and_then(|u| replication::decode_users(u).ok()) else {
        return Ok(None);
    };
    let term = first.get("term").and_then(Value::as_u64);
    let base = generation;
    let mut model = pool_db::model::Model::default();
    model.apply(snapshot);
    let mut commits = Vec::new();
    for r in records {
        let Some((g, changes)) = decode(&r) else { break };
        if g <= generation {
            continue;
        }
        model.apply(changes.clone());
        commits.push((g, changes));
        generation = g;
    }
    Ok(Some(Metadata {
        generation,
        snapshot: model.snapshot(),
        users,
        term,
        base,
        commits,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use xapi_proto::records::VmRecord;

    fn vm(name: &str) -> Changes {
        let mut c = Changes::default();
        c.vm.insert(
            format!("OpaqueRef:{name}"),
            Some(VmRecord {
                uuid: name.into(),
                name_label: name.into(),
                ..Default::default()
            }),
        );
        c
    }

    #[test]
    fn full_copy_and_deltas_read_back_and_a_torn_tail_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ha-metadata");
        let io = Arc::new(Gate::open());
        assert!(read(&io, &path).unwrap().is_none());
        let mut log = RedoLog::new(io.clone(), path.clone());
        assert!(log.needs_full());
        assert!(log.append(2, &vm("b")).is_err());
        log.write_full(1, &vm("a"), &[("root".into(), "hash".into())], 7)
            .unwrap();
        log.append(2, &vm("b")).unwrap();
        log.append(3, &vm("c")).unwrap();
        let m = read(&io, &path).unwrap().unwrap();
        assert_eq!(m.generation, 3);
        assert_eq!(m.snapshot.vm.len(), 3);
        assert_eq!((m.term, m.base), (Some(7), 1));
        let commits: Vec<u64> = m.commits.iter().map(|(g, _)| *g).collect();
        assert_eq!(commits, [2, 3]);
        assert_eq!(m.users, vec![("root".to_string(), "hash".to_string())]);
        // A torn last record: the state before it.
        let len = std::fs::metadata(&path).unwrap().len();
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len - 3).unwrap();
        let m = read(&io, &path).unwrap().unwrap();
        assert_eq!(m.generation, 2);
        assert_eq!(m.snapshot.vm.len(), 2);
    }

    #[test]
    fn a_cut_storage_refuses_appends_and_the_next_write_is_a_full_copy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ha-metadata");
        let io = Arc::new(Gate::lab(dir.path()));
        let mut log = RedoLog::new(io.clone(), path.clone());
        log.write_full(1, &vm("a"), &[], 7).unwrap();
        let settle = || std::thread::sleep(crate::io::REFRESH + std::time::Duration::from_millis(10));
        crate::io::set(dir.path(), crate::io::Fault::Storage, true).unwrap();
        settle();
        assert!(log.append(2, &vm("b")).is_err());
        assert!(log.needs_full() && read(&io, &path).is_err());
        crate::io::set(dir.path(), crate::io::Fault::Storage, false).unwrap();
        settle();
        assert_eq!(read(&io, &path).unwrap().unwrap().generation, 1);
    }
}
