//! The statefile on the heartbeat SR: blocking file I/O in xhad's layout.
//!
//! A global block, then one 4 KiB slot per host (`ha_liveness::codec`).
//! A host writes only its own slot, and the global block when its engine
//! asks; then it reads the whole file back. These functions block: the
//! agent runs them on the blocking pool, so a hung SR stalls only the
//! statefile loop and the statefile watchdog notices. Each passes this
//! host's I/O gate first, as all I/O on the SR does.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::sync::{Arc, Mutex};

use ha_liveness::codec::{self, BLOCK, STATEFILE_SIZE};
use ha_liveness::{Global, PoolState, Slot, StatefileRead};

use crate::io::Gate;

/// The statefile's name in the heartbeat SR's directory.
pub const STATEFILE_NAME: &str = "ha-statefile";
/// The pool database copy's name in the heartbeat SR's directory.
pub const METADATA_NAME: &str = "ha-metadata";

/// Create the statefile, or reuse an existing one, for a new HA
/// generation: every slot cleared, the pool state `init`.
pub fn prepare(io: &Gate, path: &Path, generation: u128) -> std::io::Result<()> {
    io.storage()?;
    let f = OpenOptions::new().create(true).truncate(false).write(true).open(path)?;
    f.set_len(STATEFILE_SIZE as u64)?;
    f.write_all_at(&vec![0u8; STATEFILE_SIZE - BLOCK], BLOCK as u64)?;
    write_global_to(
        &f,
        &Global {
            pool_state: PoolState::Init,
            generation,
            master: None,
        },
    )?;
    f.sync_all()
}

/// Write the global block.
pub fn write_global(io: &Gate, path: &Path, global: &Global) -> std::io::Result<()> {
    io.storage()?;
    let f = OpenOptions::new().write(true).open(path)?;
    write_global_to(&f, global)?;
    f.sync_data()
}

fn write_global_to(f: &File, global: &Global) -> std::io::Result<()> {
    f.write_all_at(&codec::encode_global(global), 0)
}

/// Read the global block: `Ok(None)` when it is corrupt.
pub fn read_global(io: &Gate, path: &Path) -> std::io::Result<Option<Global>> {
    io.storage()?;
    let mut block = vec![0u8; BLOCK];
    File::open(path)?.read_exact_at(&mut block, 0)?;
    Ok(match codec::decode_global(&block) {
        Ok(Some(g)) => Some(g),
        Ok(None) => Some(Global {
            pool_state: PoolState::None,
            generation: 0,
            master: None,
        }),
        Err(_) => None,
    })
}

fn cycle_on(f: &File, slot: &Slot, global: Option<&Global>, hosts: usize) -> std::io::Result<StatefileRead> {
    let len = f.metadata()?.len();
    if len < STATEFILE_SIZE as u64 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("the statefile is {len} bytes, expected {STATEFILE_SIZE}"),
        ));
    }
    f.write_all_at(&codec::encode_slot(slot), codec::slot_offset(slot.index) as u64)?;
    if let Some(g) = global {
        write_global_to(f, g)?;
    }
    let mut image = vec![0u8; STATEFILE_SIZE];
    f.read_exact_at(&mut image, 0)?;
    Ok(codec::decode_statefile(&image, hosts))
}

/// The statefile held open across the agent's cycles, so that a host whose
/// descriptors run out (a flood of connections, a leak) keeps its
/// statefile I/O, and with it its place in the liveset (issue 26). Each
/// cycle still checks, by `stat` (no descriptor needed), that the path is
/// the file it holds: a statefile replaced or removed is opened again, or
/// its absence is an I/O error as before. Any error drops the file; the
/// next cycle opens it afresh (a remounted SR).
#[derive(Debug, Clone, Default)]
pub struct Held(Arc<Mutex<Option<File>>>);

impl Held {
    /// One statefile cycle on the held file: write this host's slot (and
    /// the global block when given), then read the whole file for `hosts`
    /// hosts.
    pub fn cycle(
        &self,
        io: &Gate,
        path: &Path,
        slot: &Slot,
        global: Option<&Global>,
        hosts: usize,
    ) -> std::io::Result<StatefileRead> {
        io.storage()?;
        let mut held = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let on_disk = std::fs::metadata(path)?;
        let same = |f: &File| {
            f.metadata()
                .is_ok_and(|m| m.dev() == on_disk.dev() && m.ino() == on_disk.ino())
        };
        let f = match held.take().filter(same) {
            Some(f) => f,
            None => OpenOptions::new().read(true).write(true).open(path)?,
        };
        let read = cycle_on(&f, slot, global, hosts)?;
        *held = Some(f);
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ha_liveness::{HostSet, SlotRead, View};

    fn slot(index: usize, sequence: u64) -> Slot {
        Slot {
            sequence,
            index,
            boot: 1,
            member_boots: [0; ha_liveness::MAX_HOSTS],
            excluded: false,
            starting: true,
            arming: false,
            view: View::default(),
            lock_request: false,
            lock_grant: HostSet::default(),
            weight: 0,
            tie: Default::default(),
        }
    }

    #[test]
    fn slots_land_in_place_and_corruption_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATEFILE_NAME);
        let io = Gate::open();
        prepare(&io, &path, 7).unwrap();
        let read = Held::default().cycle(&io, &path, &slot(1, 5), None, 3).unwrap();
        assert_eq!(
            read.global.map(|g| (g.pool_state, g.generation)),
            Some((PoolState::Init, 7))
        );
        assert_eq!(read.slots[0], SlotRead::Empty);
        assert_eq!(read.slots[1], SlotRead::Valid(slot(1, 5)));
        // A flipped byte in host 1's slot.
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(&[0x55], codec::slot_offset(1) as u64 + 20).unwrap();
        let read = Held::default().cycle(&io, &path, &slot(0, 1), None, 3).unwrap();
        assert_eq!(read.slots[1], SlotRead::Corrupt);
        // A new generation clears the slots.
        prepare(&io, &path, 8).unwrap();
        let read = Held::default().cycle(&io, &path, &slot(2, 1), None, 3).unwrap();
        assert_eq!(read.slots[0], SlotRead::Empty);
        assert_eq!(read.global.map(|g| g.generation), Some(8));
    }

    #[test]
    fn a_missing_or_short_statefile_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATEFILE_NAME);
        let io = Gate::open();
        assert!(Held::default().cycle(&io, &path, &slot(0, 1), None, 1).is_err());
        std::fs::write(&path, b"short").unwrap();
        assert!(Held::default().cycle(&io, &path, &slot(0, 1), None, 1).is_err());
    }

    #[test]
    fn a_cut_storage_fails_every_call_and_leaves_the_file_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATEFILE_NAME);
        let io = Gate::lab(dir.path());
        prepare(&io, &path, 7).unwrap();
        let before = std::fs::read(&path).unwrap();
        crate::io::set(dir.path(), crate::io::Fault::Storage, true).unwrap();
        std::thread::sleep(crate::io::REFRESH + std::time::Duration::from_millis(10));
        let e = Held::default().cycle(&io, &path, &slot(0, 1), None, 1).unwrap_err();
        assert_eq!(e.to_string(), "I/O error: the host's storage is cut");
        assert!(prepare(&io, &path, 8).is_err() && read_global(&io, &path).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }

    /// The held statefile is opened once, and still follows the path: a replaced file is opened again, a removed
    /// one is an error, and it recovers when the file is back.
    #[test]
    fn the_held_statefile_needs_no_descriptor_and_follows_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATEFILE_NAME);
        let io = Gate::open();
        prepare(&io, &path, 7).unwrap();
        let held = Held::default();
        held.cycle(&io, &path, &slot(0, 1), None, 2).unwrap();
        // The same open file from cycle to cycle: no descriptor is taken
        // per cycle.
        let open_again = held.0.lock().unwrap().as_ref().map(|f| f.metadata().unwrap().ino());
        let read = held.cycle(&io, &path, &slot(0, 2), None, 2).unwrap();
        assert!(matches!(read.slots[0], SlotRead::Valid(ref s) if s.sequence == 2));
        assert_eq!(
            held.0.lock().unwrap().as_ref().map(|f| f.metadata().unwrap().ino()),
            open_again,
            "the same file, not reopened"
        );
        // Replaced: the new file is used.
        let other = dir.path().join("new");
        prepare(&io, &other, 8).unwrap();
        std::fs::rename(&other, &path).unwrap();
        let read = held.cycle(&io, &path, &slot(0, 3), None, 2).unwrap();
        assert!(matches!(read.slots[0], SlotRead::Valid(ref s) if s.sequence == 3));
        assert_eq!(read_global(&io, &path).unwrap().map(|g| g.generation), Some(8));
        // Removed: an error, then back when the file is.
        std::fs::remove_file(&path).unwrap();
        assert!(held.cycle(&io, &path, &slot(0, 4), None, 2).is_err());
        prepare(&io, &path, 9).unwrap();
        held.cycle(&io, &path, &slot(0, 5), None, 2).unwrap();
    }
}
