//! `host.*`: the calls hosts make on each other.
//!
//! - `host.local_vm_start / local_vm_start_incoming / local_vm_migrate /
//!   local_vm_stop / local_vm_list`: served by every
//!   host for the master, acting on this host's VM driver.
//! - `host.member_hello`: a member tells the master it is up and which VMs
//!   it runs; VMs the database places there but that died with a previous
//!   run of the member are marked halted.
//! - `host.report_pbd_reachability`: a member says whether it reaches the
//!   SR of one of its PBDs (`storage_probe`).
//! - `host.prove_certificate(nonce)`: any host, to anyone, without a
//!   session: the certificate it serves and the proof, under the pool
//!   secret, that it is its own (`crate::tls::certificate_proof`), for a
//!   peer that pinned an older one.

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{json, Value};
use xapi_proto::{codes, ApiError};

use super::Args;
use crate::daemon::Daemon;
use crate::driver::{DriverError, GuestSpec, Snapshot, StopMode};
use crate::ops::host::record_host_start;

/// The methods served here.
pub const METHODS: &[&str] = &[
    "host.local_vm_start",
    "host.local_vm_stop",
    "host.local_vm_start_incoming",
    "host.local_vm_migrate",
    "host.local_vm_list",
    "host.member_hello",
    "host.declare_dead",
    "host.destroy",
    "host.report_pbd_reachability",
];

pub async fn dispatch(d: &Arc<Daemon>, verb: &str, args: &Args) -> Option<Result<Value, ApiError>> {
    Some(match verb {
        "local_vm_start" => local_start(d, args).await,
        "local_vm_stop" => local_stop(d, args).await,
        "local_vm_start_incoming" => local_start_incoming(d, args).await,
        "local_vm_migrate" => local_migrate(d, args).await,
        "local_vm_list" => args.exactly(1).map(|_| json!(d.driver().running())),
        "member_hello" => member_hello(d, args).await,
        "declare_dead" => super::recovery::declare_dead(d, args).await,
        "destroy" => super::recovery::destroy(d, args).await,
        "report_pbd_reachability" => report_pbd(d, args).await,
        _ => return None,
    })
}

/// `host.prove_certificate(nonce)`: `{fingerprint, proof}`. The nonce is
/// 64 to 128 hex digits (a peer's fresh one); nothing else is read, and
/// the answer gives away nothing but the host's certificate, which it
/// shows to anyone anyway, and an HMAC under a key only the pool's hosts
/// can derive.
pub fn prove_certificate(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    args.exactly(1)?;
    let nonce = args.str(0, "nonce")?;
    let hex = crate::tls::NONCE_HEX;
    if !(hex..=2 * hex).contains(&nonce.len()) || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::invalid_value(
            "nonce",
            format!("{hex} to {} hex digits", 2 * hex),
        ));
    }
    let fingerprint = d.identity().fingerprint();
    let proof = crate::tls::certificate_proof(&d.pool_secret(), nonce, &fingerprint);
    Ok(json!({"fingerprint": fingerprint, "proof": proof}))
}

/// The guest spec of a `local_vm_*` call: `vm_uuid, disk_paths,
/// first_seq` at `first`, then an optional `extra` object `{memory, vcpus,
/// kernel}`.
fn spec_from(args: &Args, first: usize) -> Result<GuestSpec, ApiError> {
    let vm = args.str(first, "vm")?;
    let disks: Vec<PathBuf> = args
        .strings(first + 1, "disks")?
        .into_iter()
        .map(PathBuf::from)
        .collect();
    let seq = args.int(first + 2, "first_seq")?;
    let mut spec = GuestSpec::new(vm, disks, u64::try_from(seq).ok());
    if let Some(extra) = args.raw(first + 3) {
        let bad = |field: &str| ApiError::field_type(format!("extra.{field}"));
        if let Some(m) = extra.get("memory") {
            spec.memory = m.as_i64().filter(|m| *m > 0).ok_or_else(|| bad("memory"))?;
        }
        if let Some(v) = extra.get("vcpus") {
            spec.vcpus = v
                .as_i64()
                .filter(|v| (1..=64).contains(v))
                .ok_or_else(|| bad("vcpus"))?;
        }
        if let Some(k) = extra.get("kernel").filter(|k| !k.is_null()) {
            spec.kernel = Some(serde_json::from_value(k.clone()).map_err(|_| bad("kernel"))?);
        }
    }
    Ok(spec)
}

fn driver_error(e: DriverError) -> ApiError {
    e.to_api()
}

/// How long a start waits for this host to be online in the liveset: the
/// master may count a joiner in a moment before the joiner hears so.
const ONLINE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// With HA on for the pool, a host that is not online in the liveset (it
/// booted again while the liveset still holds its previous boot, or it is
/// cut off) starts nothing, whoever asks: `HOST_OFFLINE`, as XAPI says of
/// a host that is not live. A joiner the master already counts is online
/// here within [`ONLINE_WAIT`].
async fn refuse_unless_online(d: &Daemon) -> Result<(), ApiError> {
    if !d.ha_enabled() {
        return Ok(());
    }
    let until = tokio::time::Instant::now() + ONLINE_WAIT;
    while !d.ha().view().online {
        if tokio::time::Instant::now() >= until {
            let me = d.host_ref().unwrap_or_default();
            return Err(ApiError::new(codes::HOST_OFFLINE, vec![me]));
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Ok(())
}

/// `host.local_vm_start(session, vm_uuid, disk_paths, first_seq, extra)`:
/// the guest's domain id. A negative `first_seq` continues the disk's own
/// sequence; `extra` is optional.
async fn local_start(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    args.count(4, 5)?;
    let spec = spec_from(args, 1)?;
    refuse_unless_online(d).await?;
    let domid = d.driver().start(spec).await.map_err(driver_error)?;
    Ok(json!(domid))
}

/// `host.local_vm_start_incoming(session, vm_uuid, disk_paths, first_seq,
/// extra)`: a guest waiting for a live migration on this host's bind
/// address, as `[domid, uri]` (the URI names the address the pool knows
/// this host by).
async fn local_start_incoming(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    args.exactly(5)?;
    let spec = spec_from(args, 1)?;
    refuse_unless_online(d).await?;
    let (domid, uri) = d
        .driver()
        .start_incoming(spec, &d.config().bind_address, &d.config().address)
        .await
        .map_err(driver_error)?;
    Ok(json!([domid, uri]))
}

/// `host.local_vm_migrate(session, vm_uuid, uri)`: migrate the guest here
/// live to `uri`; the last sequence written here.
async fn local_migrate(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    args.exactly(3)?;
    let vm = args.str(1, "vm")?;
    let uri = args.str(2, "uri")?;
    match d.driver().migrate_out(vm, uri).await {
        Ok(seq) => Ok(json!(seq)),
        Err(DriverError::NotRunning(_)) => Err(not_resident(d, vm)),
        Err(e) => Err(driver_error(e)),
    }
}

fn not_resident(d: &Daemon, vm: &str) -> ApiError {
    ApiError::new(
        codes::VM_NOT_RESIDENT_HERE,
        vec![vm.to_string(), d.host_uuid().to_string()],
    )
}

/// `host.local_vm_stop(session, vm_uuid, hard)`: the last sequence written
/// (`hard`, optional: pull the plug instead of pressing the power button).
async fn local_stop(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    args.count(2, 3)?;
    let vm = args.str(1, "vm")?;
    let how = if args.bool_or(2, "hard", false)? {
        StopMode::Hard
    } else {
        StopMode::Clean
    };
    match d.driver().stop(vm, how).await {
        Ok(seq) => Ok(json!(seq)),
        Err(DriverError::NotRunning(_)) => Err(not_resident(d, vm)),
        Err(e) => Err(driver_error(e)),
    }
}

/// `host.member_hello(session, host_uuid, address, memory_total, running,
/// next_domid, driver, certificate)`: `running`, `next_domid` and `driver`
/// (optional) are one snapshot of the member's driver; `certificate`
/// (optional) is what the pool records of the member's TLS certificate,
/// which the other hosts then pin.
async fn member_hello(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    args.count(6, 8)?;
    let uuid = args.str(1, "host")?.to_string();
    let address = args.str(2, "address")?.to_string();
    let memory_total = args.int(3, "memory_total")?;
    let snapshot = Snapshot {
        running: args.strings(4, "running")?,
        next_domid: args.int(5, "next_domid")?,
        driver: match args.raw(6) {
            Some(_) => args.str(6, "driver")?.to_string(),
            None => String::new(),
        },
    };
    let cert: Option<crate::tls::Summary> = match args.raw(7) {
        Some(v) => {
            let cert: crate::tls::Summary =
                serde_json::from_value(v.clone()).map_err(|_| ApiError::field_type("certificate"))?;
            if !cert.well_formed() {
                return Err(ApiError::invalid_value(
                    "certificate",
                    "not a SHA-256 fingerprint and dates",
                ));
            }
            Some(cert)
        }
        None => None,
    };
    let strays = d
        .write(|txn| {
            if let Some(cert) = &cert {
                crate::ops::host::record_certificate(txn, &uuid, cert)?;
            }
            let mut strays = record_host_start(txn, &uuid, &address, memory_total, &snapshot)?;
            // A guest whose start is in flight (`reserve`) runs there
            // before the pool places it there: not a stray.
            let starting: Vec<String> = d
                .starting()
                .all()
                .iter()
                .filter_map(|(vm, _)| txn.get::<xapi_proto::records::VmRecord>(vm).map(|v| v.uuid))
                .collect();
            strays.retain(|s| !starting.contains(s));
            Ok(strays)
        })
        .await?;
    d.note_seen(&uuid);
    Ok(json!(strays))
}

/// `host.report_pbd_reachability(session, pbd, reachable)`: from the member
/// that owns the PBD.
async fn report_pbd(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    args.exactly(3)?;
    let caller = match args.session(d)? {
        crate::sessions::Principal::Member(uuid) => uuid,
        _ => {
            return Err(ApiError::new(
                codes::PERMISSION_DENIED,
                vec!["only hosts of the pool may call this method".into()],
            ))
        }
    };
    let pbd = args.str(1, "pbd")?;
    let reachable = args.bool_or(2, "reachable", true)?;
    crate::storage_probe::set_attached(d, &caller, pbd, reachable).await?;
    Ok(json!(""))
}

/// `host.guest_halted(session, host_uuid, vm_uuid, domid)`: a member
/// reports it.
pub(super) async fn guest_halted(d: &Arc<Daemon>, args: &Args) -> Result<Value, ApiError> {
    args.exactly(4)?;
    let host = args.str(1, "host")?.to_string();
    let guest = crate::driver::Halted {
        vm_uuid: args.str(2, "vm")?.to_string(),
        domid: args.int(3, "domid")?,
    };
    crate::guests::record(d, &host, &guest).await?;
    Ok(json!(""))
}

#[cfg(test)]
mod tests {
    use xapi_proto::records::{HostRecord, PowerState, VmRecord};

    use super::record_host_start;
    use crate::driver::Snapshot;
    use pool_db::model::{Model, Txn};

    /// A pool of one host, `h`, running `vm-a` (guest 100), `vm-b` (guest
    /// 101) and `vm-c` (guest 105).
    fn model() -> Model {
        let mut model = Model::default();
        model.host.upsert(
            "h".into(),
            HostRecord {
                uuid: "host-1".into(),
                ..Default::default()
            },
        );
        for (r, domid) in [("vm-a", 100), ("vm-b", 101), ("vm-c", 105)] {
            model.vm.upsert(
                r.into(),
                VmRecord {
                    uuid: r.into(),
                    power_state: PowerState::Running,
                    resident_on: "h".into(),
                    domid,
                    ..Default::default()
                },
            );
        }
        model
    }

    fn running_after(snapshot: Snapshot) -> Vec<String> {
        let mut model = model();
        let mut txn = Txn::new(&model);
        let strays = record_host_start(&mut txn, "host-1", "10.0.0.1", 1 << 30, &snapshot).unwrap();
        assert!(strays.iter().all(|s| snapshot.running.contains(s)));
        model.apply(txn.into_changes());
        // The host record says what runs its guests, when the snapshot says.
        let shown = model
            .host
            .iter()
            .next()
            .and_then(|(_, h)| h.other_config.get(crate::ops::host::VM_DRIVER_KEY).cloned());
        assert_eq!(shown, Some(snapshot.driver.clone()).filter(|d| !d.is_empty()));
        let mut running: Vec<String> = model
            .vm
            .iter()
            .filter(|(_, v)| v.power_state == PowerState::Running)
            .map(|(_, v)| {
                assert_eq!(v.resident_on, "h");
                v.uuid.clone()
            })
            .collect();
        running.sort();
        let mut halted = model.vm.iter().filter(|(_, v)| v.power_state == PowerState::Halted);
        assert!(halted.all(|(_, v)| v.domid == -1 && v.resident_on == xapi_proto::records::NULL_REF));
        running
    }

    /// The pool keeps one certificate record per host, replaced when the
    /// host reports a new certificate, untouched when it reports the same.
    #[test]
    fn a_hosts_certificate_is_recorded_once_and_replaced_when_it_changes() {
        use crate::tls::Summary;
        use xapi_proto::records::CertificateRecord;
        let mut model = model();
        let cert = |fp: &str| Summary {
            fingerprint: fp.into(),
            not_before: "20261206T00:00:00Z".into(),
            not_after: "20361204T00:00:00Z".into(),
        };
        let mut report = |c: &Summary| {
            let mut txn = Txn::new(&model);
            crate::ops::host::record_certificate(&mut txn, "host-1", c).unwrap();
            let changes = txn.into_changes();
            let wrote = !changes.is_empty();
            model.apply(changes);
            let rows: Vec<CertificateRecord> = model.certificate.iter().map(|(_, c)| c.clone()).collect();
            (wrote, rows)
        };
        let (wrote, rows) = report(&cert("AA:01"));
        assert!(wrote);
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].host.as_str(), rows[0].kind.as_str()), ("h", "host"));
        assert_eq!(rows[0].fingerprint_sha256, "AA:01");
        let (wrote, rows) = report(&cert("AA:01"));
        assert!(!wrote, "the same certificate again writes nothing");
        assert_eq!(rows.len(), 1);
        let (_, rows) = report(&cert("BB:02"));
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0].fingerprint, "BB:02");
    }

    #[test]
    fn a_host_start_halts_the_vms_its_driver_no_longer_runs() {
        let snapshot = Snapshot {
            running: vec!["vm-b".into()],
            next_domid: 200,
            driver: "qemu-tcg".into(),
        };
        assert_eq!(running_after(snapshot), ["vm-b"]);
    }

    #[test]
    fn a_guest_started_after_the_snapshot_is_not_the_snapshots_business() {
        // The master started vm-c (guest 105) while a snapshot taken before
        // guest 102 was on its way: vm-c stays running; vm-a died.
        let snapshot = Snapshot {
            running: vec!["vm-b".into()],
            next_domid: 102,
            driver: "sim".into(),
        };
        assert_eq!(running_after(snapshot), ["vm-b", "vm-c"]);
    }

    #[test]
    fn guests_the_pool_does_not_place_here_are_strays() {
        // vm-a runs here as the pool says; vm-z (halted, or restarted on
        // another host meanwhile) and vm-y (unknown) must not run here.
        let mut model = model();
        model.vm.upsert(
            "vm-z".into(),
            VmRecord {
                uuid: "vm-z".into(),
                power_state: PowerState::Halted,
                ..Default::default()
            },
        );
        let snapshot = Snapshot {
            running: vec!["vm-a".into(), "vm-y".into(), "vm-z".into()],
            next_domid: 200,
            driver: "qemu-tcg".into(),
        };
        let mut txn = Txn::new(&model);
        let strays = record_host_start(&mut txn, "host-1", "10.0.0.1", 1 << 30, &snapshot).unwrap();
        assert_eq!(strays, ["vm-y", "vm-z"]);
    }

    #[test]
    fn a_fresh_process_halts_every_vm_of_its_previous_one() {
        let snapshot = Snapshot {
            running: Vec::new(),
            next_domid: 1_000,
            driver: String::new(),
        };
        assert!(running_after(snapshot).is_empty());
    }
}
