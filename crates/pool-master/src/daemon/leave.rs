//! A member leaving its pool (`pool.eject`): it becomes the master of a
//! one-host pool of its own, as XAPI's ejected host does after its
//! restart: a new pool record, this host, its local SRs with their PBDs
//! (their disks' records go: XAPI reinitialises a local SR; the files are
//! left), its own certificate, the users it had; and a fresh pool secret.

use xapi_proto::records::{CertificateRecord, HostRecord, PbdRecord, PoolRecord, SrRecord, NULL_REF};

use super::{Daemon, Role};
use crate::secret::Secret;
use pool_db::model::{new_ref, new_uuid, Changes, Model};

/// The one-host pool this host keeps of `m` when it leaves: the pool's
/// new ref and the rows.
fn standalone(m: &Model, me: &str) -> Option<Changes> {
    let mut host: HostRecord = m.get::<HostRecord>(me)?.clone();
    let mut out = Changes::default();
    // Local SRs: not shared, and every PBD of theirs is this host's.
    let mut pbds = Vec::new();
    for (sr_ref, sr) in m.sr.iter() {
        let mine: Vec<(String, PbdRecord)> = sr
            .pbds
            .iter()
            .filter_map(|p| m.get::<PbdRecord>(p).map(|r| (p.clone(), r.clone())))
            .collect();
        if sr.shared || mine.is_empty() || mine.iter().any(|(_, p)| p.host != me) {
            continue;
        }
        let mut sr: SrRecord = sr.clone();
        sr.vdis = Vec::new();
        out.sr.insert(sr_ref.to_string(), Some(sr));
        for (pbd_ref, pbd) in mine {
            pbds.push(pbd_ref.clone());
            out.pbd.insert(pbd_ref, Some(pbd));
        }
    }
    host.pbds = pbds;
    host.resident_vms = Vec::new();
    host.live = true;
    host.enabled = true;
    out.host.insert(me.to_string(), Some(host));
    for (cert_ref, cert) in m.certificate.iter() {
        if cert.host == me {
            out.certificate
                .insert(cert_ref.to_string(), Some::<CertificateRecord>(cert.clone()));
        }
    }
    out.pool.insert(
        new_ref(),
        Some(PoolRecord {
            uuid: new_uuid(),
            master: me.to_string(),
            default_sr: NULL_REF.into(),
            ..Default::default()
        }),
    );
    Some(out)
}

impl Daemon {
    /// Leave the pool for a one-host pool of this host's own: the new
    /// database and the role of master in one transaction, then a fresh
    /// secret (a crash in between leaves a standalone host with the old
    /// secret, which nobody uses to reach it). The caller has checked that
    /// this is a member without HA or guests.
    pub async fn leave_pool(&self) -> Result<(), String> {
        let me = self.host_ref().ok_or("this host has no record")?;
        let (snapshot, generation) = {
            let m = self.model();
            let rows = standalone(&m, &me).ok_or("this host has no record")?;
            (rows, m.generation + 1)
        };
        let users = self.users();
        {
            let mut store = self.store.lock().await;
            store
                .replace_all_with_local(
                    &snapshot,
                    &users,
                    generation,
                    &[("role", "master")],
                    &["master_address"],
                )
                .map_err(|e| e.to_string())?;
            let mut model = Model {
                generation,
                ..Model::default()
            };
            model.apply(snapshot);
            *self.model.write().unwrap_or_else(|p| p.into_inner()) = model;
            self.events.reset(generation);
        }
        self.pool_secret.replace(Secret::fresh()).map_err(|e| e.to_string())?;
        self.peers.forget().await;
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.set_role(Role::Master);
        self.repin();
        self.generation.send_replace(generation);
        Ok(())
    }
}
