//! A host's first start: a one-host pool of its own (the pool, this host,
//! its local SR), the root password, a pool secret; and the count of
//! starts every start makes.

use xapi_proto::records::{HostRecord, PbdRecord, PoolRecord, SrRecord, NULL_REF};

use super::{hex, Config, StartError};
use crate::auth;
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
    let secret = hex(&rand::random::<[u8; 32]>());
    store.set_local(&[("host_uuid", &host_uuid), ("role", "master"), ("pool_secret", &secret)])?;
    Ok(host_uuid)
}
