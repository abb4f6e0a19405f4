//! A host's first start: a one-host pool of its own (the pool, this host,
//! its local SR), the root password; the pool secret's file (made, or
//! moved out of an older database); and the count of starts every start
//! makes.

use xapi_proto::records::{HostRecord, PbdRecord, PoolRecord, SrRecord, NULL_REF};

use super::{Config, StartError};
use std::path::Path;

use crate::auth;
use crate::secret::{PoolSecret, Secret};
use pool_db::model::{new_ref, new_uuid, Changes};
use pool_db::store::Store;

const BOOT_KEY: &str = "boot_count";

/// Count this start: this boot's number, above every earlier one's (the
/// VM leases tell an owner's later boot from an earlier one by it).
pub(super) fn next_boot(store: &mut Store) -> Result<u64, StartError> {
    let boot = store
        .local(BOOT_KEY)?
        .and_then(|b| b.parse::<u64>().ok())
        .unwrap_or(0)
        .saturating_add(1);
    store.set_local(&[(BOOT_KEY, &boot.to_string())])?;
    Ok(boot)
}

pub(super) fn first_start(store: &mut Store, config: &Config) -> Result<String, StartError> {
    let password = config.root_password.as_deref().ok_or(StartError::NoRootPassword)?;
    let hash = auth::hash_password(password).map_err(StartError::Hash)?;
    let host_uuid = new_uuid();
    let host_ref = new_ref();
    let hostname = config
        .name_label
        .clone()
        .unwrap_or_else(|| format!("host-{}", &host_uuid[..8]));
    let local_sr_dir = config.data_dir.join("local-sr");
    std::fs::create_dir_all(&local_sr_dir).map_err(|source| StartError::Io {
        path: local_sr_dir.clone(),
        source,
    })?;
    let (sr_ref, pbd_ref) = (new_ref(), new_ref());
    let mut changes = Changes::default();
    changes.pool.insert(
        new_ref(),
        Some(PoolRecord {
            uuid: new_uuid(),
            master: host_ref.clone(),
            default_sr: NULL_REF.into(),
            ..Default::default()
        }),
    );
    changes.host.insert(
        host_ref.clone(),
        Some(HostRecord {
            uuid: host_uuid.clone(),
            name_label: hostname.clone(),
            hostname,
            address: config.address.clone(),
            enabled: true,
            live: true,
            memory_total: config.memory_total,
            memory_free: config.memory_total,
            pbds: vec![pbd_ref.clone()],
            ..Default::default()
        }),
    );
    changes.sr.insert(
        sr_ref.clone(),
        Some(SrRecord {
            uuid: new_uuid(),
            name_label: "Local storage".into(),
            sr_type: "dir".into(),
            content_type: "user".into(),
            shared: false,
            pbds: vec![pbd_ref.clone()],
            ..Default::default()
        }),
    );
    changes.pbd.insert(
        pbd_ref,
        Some(PbdRecord {
            uuid: new_uuid(),
            host: host_ref,
            sr: sr_ref,
            device_config: [("location".to_string(), local_sr_dir.display().to_string())].into(),
            currently_attached: true,
        }),
    );
    store.commit(&changes, 1)?;
    store.set_user("root", &hash)?;
    store.set_local(&[("host_uuid", &host_uuid), ("role", "master")])?;
    Ok(host_uuid)
}

/// Where an install from before kept the pool secret: the database's
/// `local` table.
const LEGACY_KEY: &str = "pool_secret";

/// This host's pool secret, from `DATA_DIR/pool-secret`. A database that
/// still holds it (an older install) has it moved to the file (written
/// first, then removed from the database: a crash in between leaves both,
/// and the next start removes the database's copy), keeping its value so
/// a running pool goes on. With neither (a first start), a fresh one.
pub(super) fn load_secret(store: &mut Store, dir: &Path, first: bool) -> Result<PoolSecret, StartError> {
    let legacy = store.local(LEGACY_KEY)?;
    let secret = match PoolSecret::open(dir)? {
        Some(s) => s,
        None => match legacy.as_deref().and_then(Secret::parse) {
            Some(old) => {
                let s = PoolSecret::create(dir, old)?;
                tracing::info!(file = %s.path().display(), "moved the pool secret out of the pool database");
                s
            }
            None => {
                if !first {
                    tracing::warn!(
                        file = %dir.join(crate::secret::FILE).display(),
                        "this host had no pool secret: it makes a new one, which the pool's other hosts do not know (a member: reset it with pool-emergency-reset-master, or eject it and join it again)"
                    );
                }
                PoolSecret::create(dir, Secret::fresh())?
            }
        },
    };
    if legacy.is_some() {
        store.remove_local(LEGACY_KEY)?;
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::super::tests::config;
    use super::super::Daemon;
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// An install from before kept the secret in the database: the next
    /// start moves it, value and all, to its own 0600 file.
    #[test]
    fn a_secret_in_the_database_moves_to_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let d = Daemon::open(config(dir.path())).unwrap();
        let first = d.pool_secret();
        drop(d);
        let file = dir.path().join(crate::secret::FILE);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), format!("{first}\n"));
        // Make it look like the older layout.
        std::fs::remove_file(&file).unwrap();
        let mut store = Store::open(&dir.path().join("pool.db")).unwrap();
        store.set_local(&[(LEGACY_KEY, &first)]).unwrap();
        drop(store);
        let d = Daemon::open(config(dir.path())).unwrap();
        assert_eq!(d.pool_secret(), first, "the pool's secret is kept");
        drop(d);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), format!("{first}\n"));
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        let store = Store::open(&dir.path().join("pool.db")).unwrap();
        assert_eq!(store.local(LEGACY_KEY).unwrap(), None);
        // A crash after the file was written: both; the file wins and the
        // database's copy goes.
        let mut store = store;
        store.set_local(&[(LEGACY_KEY, "stale")]).unwrap();
        drop(store);
        let d = Daemon::open(config(dir.path())).unwrap();
        assert_eq!(d.pool_secret(), first);
        drop(d);
        let store = Store::open(&dir.path().join("pool.db")).unwrap();
        assert_eq!(store.local(LEGACY_KEY).unwrap(), None);
    }
}
