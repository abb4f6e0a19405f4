//! The overcommit gate, field by field (issue 26, defect 4): every writable
//! field of a VM, the pool and a host is set on a pool whose failover plan
//! is at its limit, and each call that would protect more than the plan
//! holds (or shrink the room it counts on) is refused with
//! `HA_OPERATION_WOULD_BREAK_FAILOVER_PLAN` and changes nothing. The list
//! of fields comes from `xapi_proto::classes`, so a field added there
//! without a line here fails the test.
//!
//! The pool: two hosts of 1 GiB, HA on, a plan for 1 failure.
//! - host 1: `a` (300 MiB, protected) and `c` (300 MiB, unprotected);
//! - host 2: `b` (600 MiB, unprotected);
//! - halted: `p` (100 MiB, protected: `ha_always_run`, to be restarted),
//!   `h` (600 MiB, unprotected), `q` (100 MiB, priority `restart`, not
//!   yet protected).
//!
//! If host 1 fails, `a` and `p` (410 MiB with overheads) just fit in host
//! 2's 416 MiB; protecting `b` or `h`, growing `p`, or filling host 2
//! loses that.

use std::sync::Arc;

use serde_json::{json, Value};
use xapi_proto::classes;
use xapi_proto::records::{HostRecord, PoolRecord, PowerState, VmRecord};
use xapi_proto::{codes, ApiError};

use super::{generic, Args};
use crate::daemon::Daemon;
use crate::memory;
use pool_db::model::{new_ref, Model};

const MIB: i64 = 1 << 20;

struct Pool {
    d: Arc<Daemon>,
    _dir: tempfile::TempDir,
    host1: String,
    host2: String,
    pool: String,
    vms: std::collections::BTreeMap<&'static str, String>,
}

fn vm(name: &str, mib: i64, priority: &str, always_run: bool, on: Option<&str>) -> VmRecord {
    let bytes = mib * MIB;
    let mut v = VmRecord {
        uuid: format!("{name}-uuid"),
        name_label: name.into(),
        memory_static_max: bytes,
        memory_dynamic_max: bytes,
        memory_dynamic_min: bytes / 2,
        memory_static_min: bytes / 10,
        ha_restart_priority: priority.into(),
        ha_always_run: always_run,
        ..Default::default()
    };
    v.memory_overhead = memory::vm_overhead(v.memory_static_max, v.vcpus_max);
    if let Some(h) = on {
        v.power_state = PowerState::Running;
        v.resident_on = h.into();
    }
    v
}

async fn pool_at_its_limit() -> Pool {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::open(crate::daemon::tests::config(dir.path())).unwrap();
    let host1 = d.host_ref().unwrap();
    let host2 = new_ref();
    let pool_ref = d.model().pool().unwrap().0.clone();
    let mut vms = std::collections::BTreeMap::new();
    let specs: [(&'static str, i64, &str, bool, Option<&str>); 6] = [
        ("a", 300, "restart", true, Some(&host1)),
        ("c", 300, "", false, Some(&host1)),
        ("b", 600, "", false, Some(&host2)),
        ("p", 100, "restart", true, None),
        ("h", 600, "", false, None),
        ("q", 100, "restart", false, None),
    ];
    for (name, ..) in &specs {
        vms.insert(*name, new_ref());
    }
    d.write(|txn| {
        txn.put(
            &host2,
            HostRecord {
                uuid: "host2-uuid".into(),
                name_label: "host2".into(),
                live: true,
                enabled: true,
                memory_total: 1 << 30,
                ..Default::default()
            },
        );
        txn.update::<HostRecord>(&host1, |h| {
            h.live = true;
            h.enabled = true;
            h.memory_total = 1 << 30;
            h.memory_overhead = 0;
        });
        for (name, mib, priority, always_run, on) in &specs {
            txn.put(&vms[name], vm(name, *mib, priority, *always_run, *on));
        }
        memory::refresh_host(txn, &host1);
        memory::refresh_host(txn, &host2);
        txn.update::<PoolRecord>(&pool_ref, |p| {
            p.ha_enabled = true;
            p.ha_allow_overcommit = false;
            p.ha_host_failures_to_tolerate = 1;
            p.ha_plan_exists_for = 1;
        });
        Ok(())
    })
    .await
    .unwrap();
    let plan = crate::planning::plan_exists_for(&d.model(), 1).unwrap();
    assert!(plan.exists(), "the pool starts with a plan for 1 failure: {plan:?}");
    Pool {
        d,
        _dir: dir,
        host1,
        host2,
        pool: pool_ref,
        vms,
    }
}

/// What a call may change: every VM, host and pool record.
fn snapshot(m: &Model) -> String {
    let mut out = String::new();
    for (r, v) in m.vm.iter() {
        out += &format!("{r} {}\n", serde_json::to_string(v).unwrap());
    }
    for (r, h) in m.host.iter() {
        out += &format!("{r} {}\n", serde_json::to_string(h).unwrap());
    }
    for (r, p) in m.pool.iter() {
        out += &format!("{r} {}\n", serde_json::to_string(p).unwrap());
    }
    out
}

async fn call(p: &Pool, class: &str, verb: &str, params: Vec<Value>) -> Result<Value, ApiError> {
    let mut all = vec![json!("OpaqueRef:session")];
    all.extend(params);
    let args = Args::new(&format!("{class}.{verb}"), all);
    generic::dispatch(&p.d, class, verb, &args).await
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// Refused by the gate, nothing changed.
    Breaks,
    /// Allowed: the field does not touch protection or the plan (or, for
    /// `ha_allow_overcommit`, turns the protection off by design).
    Allowed,
}

#[tokio::test]
async fn every_writable_field_goes_through_the_gate() {
    use Expect::*;
    // (class, field, object, value, expected). Objects by name: a VM of
    // the pool, "pool", "host1".
    let table: Vec<(&str, &str, &str, Value, Expect)> = vec![
        ("VM", "name_label", "b", json!("renamed"), Allowed),
        ("VM", "name_description", "b", json!("text"), Allowed),
        ("VM", "affinity", "b", json!("host1"), Allowed),
        ("VM", "memory_static_max", "p", json!(500 * MIB), Breaks),
        ("VM", "memory_dynamic_max", "p", json!(80 * MIB), Allowed),
        ("VM", "memory_dynamic_min", "p", json!(60 * MIB), Allowed),
        ("VM", "memory_static_min", "p", json!(20 * MIB), Allowed),
        ("VM", "VCPUs_max", "p", json!(64), Breaks),
        ("VM", "ha_restart_priority", "b", json!("restart"), Breaks),
        // Issue 26, defect 4: the deprecated field protected a VM unchecked.
        ("VM", "ha_always_run", "b", json!(true), Breaks),
        ("VM", "order", "a", json!(5), Allowed),
        ("VM", "start_delay", "a", json!(5), Allowed),
        ("VM", "shutdown_delay", "a", json!(5), Allowed),
        ("VM", "other_config", "b", json!({"k": "v"}), Allowed),
        ("pool", "name_label", "pool", json!("p"), Allowed),
        ("pool", "name_description", "pool", json!("d"), Allowed),
        ("pool", "default_SR", "pool", json!("OpaqueRef:NULL"), Allowed),
        ("pool", "ha_host_failures_to_tolerate", "pool", json!(2), Breaks),
        (
            "pool",
            "ha_reboot_vm_on_internal_shutdown",
            "pool",
            json!(false),
            Allowed,
        ),
        // Re-planned with the XAPI planner, which finds the plan too.
        ("pool", "other_config", "pool", json!({"ha-planner": "xapi"}), Allowed),
        ("pool", "ha_allow_overcommit", "pool", json!(true), Allowed),
        ("host", "name_label", "host1", json!("h"), Allowed),
        ("host", "name_description", "host1", json!("d"), Allowed),
        ("host", "other_config", "host1", json!({"k": "v"}), Allowed),
        ("VM", "tags", "h", json!(["web"]), Allowed),
        ("pool", "tags", "pool", json!(["prod"]), Allowed),
        ("host", "tags", "host1", json!(["rack1"]), Allowed),
    ];
    // The table lists every writable field of the three classes.
    for class in ["VM", "pool", "host"] {
        let writable: Vec<&str> = classes::fields(class)
            .unwrap()
            .iter()
            .filter(|f| f.settable)
            .map(|f| f.name)
            .collect();
        let listed: Vec<&str> = table.iter().filter(|t| t.0 == class).map(|t| t.1).collect();
        let mut w = writable.clone();
        let mut l = listed.clone();
        w.sort();
        l.sort();
        assert_eq!(w, l, "every writable field of {class} has a line in the table");
    }
    for (class, field, object, value, expect) in table {
        // A fresh pool at its limit for each call.
        let p = pool_at_its_limit().await;
        let target = match object {
            "pool" => p.pool.clone(),
            "host1" => p.host1.clone(),
            vm => p.vms[vm].clone(),
        };
        let value = match value.as_str() {
            Some("host1") => json!(p.host1),
            _ => value,
        };
        let before = snapshot(&p.d.model());
        let result = call(&p, class, &format!("set_{field}"), vec![json!(target), value.clone()]).await;
        match expect {
            Breaks => {
                let e = result.expect_err(&format!("{class}.set_{field} {value} must be refused"));
                assert_eq!(
                    e.code,
                    codes::HA_OPERATION_WOULD_BREAK_FAILOVER_PLAN,
                    "{class}.set_{field}: {e:?}"
                );
                assert_eq!(snapshot(&p.d.model()), before, "{class}.set_{field} changed nothing");
            }
            Allowed => {
                result.unwrap_or_else(|e| panic!("{class}.set_{field} {value}: {e:?}"));
            }
        }
    }
}

/// The same gate behind the calls that are not setters: `ha_always_run` on
/// a halted VM (it asks HA to start it), `add_to_other_config` of the
/// planner mode, a start and a migration.
#[tokio::test]
async fn the_other_calls_that_change_protection_go_through_the_gate() {
    let p = pool_at_its_limit().await;
    let before = snapshot(&p.d.model());
    let refused =
        |r: Result<Value, ApiError>| assert_eq!(r.unwrap_err().code, codes::HA_OPERATION_WOULD_BREAK_FAILOVER_PLAN);
    refused(call(&p, "VM", "set_ha_always_run", vec![json!(p.vms["h"]), json!(true)]).await);
    let e = crate::ops::vm::start_vm(&p.d, &p.vms["q"], Some(&p.host2), true)
        .await
        .unwrap_err();
    assert_eq!(e.code, codes::HA_OPERATION_WOULD_BREAK_FAILOVER_PLAN, "{e:?}");
    let e = crate::ops::vm::migrate_vm(&p.d, &p.vms["c"], &p.host2, true)
        .await
        .unwrap_err();
    assert_eq!(e.code, codes::HA_OPERATION_WOULD_BREAK_FAILOVER_PLAN, "{e:?}");
    assert_eq!(snapshot(&p.d.model()), before, "refused calls change nothing");
    // Unprotecting is never refused, and the deprecated field follows
    // XAPI: false leaves the VM unprotected.
    call(&p, "VM", "set_ha_always_run", vec![json!(p.vms["a"]), json!(false)])
        .await
        .unwrap();
    let a = p.d.model().get::<VmRecord>(&p.vms["a"]).cloned().unwrap();
    assert_eq!((a.ha_restart_priority.as_str(), a.ha_always_run), ("", false));
    // Protecting it again restores the plan the pool had: allowed.
    call(&p, "VM", "set_ha_always_run", vec![json!(p.vms["a"]), json!(true)])
        .await
        .unwrap();
    let a = p.d.model().get::<VmRecord>(&p.vms["a"]).cloned().unwrap();
    assert_eq!((a.ha_restart_priority.as_str(), a.ha_always_run), ("restart", true));
}

/// Issue 26, defect 2, at the API: the probes are refused with XAPI's
/// errors and change nothing.
#[tokio::test]
async fn hostile_memory_and_vcpus_are_refused_and_change_nothing() {
    let p = pool_at_its_limit().await;
    let before = snapshot(&p.d.model());
    let h = json!(p.vms["h"]);
    for (verb, value, code) in [
        (
            "set_memory_static_max",
            json!(9_223_372_036_854_775_000i64),
            codes::VALUE_NOT_SUPPORTED,
        ),
        ("set_memory_static_max", json!(i64::MAX), codes::VALUE_NOT_SUPPORTED),
        ("set_memory_static_max", json!(-1), codes::MEMORY_CONSTRAINT_VIOLATION),
        (
            "set_memory_static_min",
            json!(i64::MIN),
            codes::MEMORY_CONSTRAINT_VIOLATION,
        ),
        (
            "set_memory_dynamic_max",
            json!(i64::MAX),
            codes::MEMORY_CONSTRAINT_VIOLATION_ORDER,
        ),
        ("set_VCPUs_max", json!(1i64 << 62), codes::VALUE_NOT_SUPPORTED),
        ("set_VCPUs_max", json!(0), codes::INVALID_VALUE),
        ("set_VCPUs_max", json!(i64::MIN), codes::INVALID_VALUE),
    ] {
        let e = call(&p, "VM", verb, vec![h.clone(), value.clone()]).await.unwrap_err();
        assert_eq!(e.code, code, "{verb} {value}: {e:?}");
    }
    // Running VMs keep their memory and vCPUs (XAPI: halted only).
    let e = call(&p, "VM", "set_VCPUs_max", vec![json!(p.vms["b"]), json!(2)])
        .await
        .unwrap_err();
    assert_eq!(e.code, codes::VM_BAD_POWER_STATE);
    assert_eq!(snapshot(&p.d.model()), before);
    // Host figures stay within the host.
    for (_, host) in p.d.model().host.iter() {
        assert!((0..=host.memory_total).contains(&host.memory_free), "{host:?}");
    }
}
