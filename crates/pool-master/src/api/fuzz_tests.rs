//! Hostile arguments for every method (issue 26): proptest draws a method
//! from the list clients see (`system.listMethods`) and its parameters from
//! what hurts: references of real objects of every class (so calls get past
//! the lookups), the wrong class's references, strings that are huge, hold
//! control characters or digits only, numbers at the edges of i64 and f64,
//! nulls, nesting. Each call must end in a result or a typed XAPI error,
//! never a panic, a hang, or `INTERNAL_ERROR`; and a refused call changes
//! nothing. A stable-toolchain fuzzer: proptest is the generator (no
//! nightly, so no libFuzzer), `PROPTEST_CASES` sets the run's length.

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use serde_json::{json, Value};
use xapi_proto::codes;
use xapi_proto::records::{PowerState, VmRecord};

use crate::daemon::Daemon;
use crate::sessions::Principal;
use pool_db::model::new_ref;

/// A pool to call: one host, a running and a halted VM, a message; the
/// references of everything in it, by class.
struct Pool {
    d: Arc<Daemon>,
    _dir: tempfile::TempDir,
    refs: Vec<String>,
}

async fn pool() -> Pool {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::open(crate::daemon::tests::config(dir.path())).unwrap();
    let host = d.host_ref().unwrap();
    let (running, halted) = (new_ref(), new_ref());
    d.write(|txn| {
        for (r, name, on) in [(&running, "web", true), (&halted, "db", false)] {
            let mut v = VmRecord {
                uuid: format!("{name}-uuid"),
                name_label: name.into(),
                memory_static_max: 256 << 20,
                memory_dynamic_max: 256 << 20,
                memory_dynamic_min: 128 << 20,
                memory_static_min: 64 << 20,
                ..Default::default()
            };
            v.memory_overhead = crate::memory::vm_overhead(v.memory_static_max, v.vcpus_max);
            if on {
                v.power_state = PowerState::Running;
                v.resident_on = host.clone();
            }
            txn.put(r, v);
        }
        crate::memory::refresh_host(txn, &host);
        Ok(())
    })
    .await
    .unwrap();
    let m = d.model();
    let mut refs: Vec<String> = Vec::new();
    macro_rules! collect {
        ($($table:ident),*) => {
            $(for (r, rec) in m.$table.iter() {
                refs.push(r.clone());
                refs.push(rec.uuid.clone());
            })*
        };
    }
    collect!(pool, host, vm, sr, pbd, vdi, vbd, message);
    drop(m);
    Pool { d, _dir: dir, refs }
}

/// Methods left out: every login (after a few failures the throttle makes
/// a name's attempts wait, up to 10 s: its own test covers it; a long run
/// found `session.slave_local_login_with_password` waiting so),
/// logouts (they end the session the next calls use), the calls that stop
/// the host, and those that make it a member of another pool (every later
/// call would answer `HOST_IS_SLAVE`).
fn fuzzed_methods() -> Vec<String> {
    super::system::methods()
        .iter()
        .filter(|m| {
            !m.contains("login")
                && !m.starts_with("session.logout")
                && ![
                    "host.shutdown",
                    "host.reboot",
                    "pool.emergency_reset_master",
                    "pool.join",
                    "pool.eject",
                ]
                .iter()
                .any(|x| m.ends_with(x))
        })
        .cloned()
        .collect()
}

fn hostile_string() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => Just(String::new()),
        4 => "[a-z_]{1,12}",
        3 => "[0-9]{1,25}",
        1 => "-[0-9]{1,25}",
        1 => "OpaqueRef:[0-9a-f-]{0,40}",
        2 => ".{0,40}",
        1 => "[\\x00-\\x1f]{1,4}",
        1 => Just("x".repeat(70_000)),
        2 => prop_oneof![Just("restart"), Just("best-effort"), Just("true"), Just("1.5e300"), Just("VM"), Just("*")]
            .prop_map(str::to_string),
    ]
}

fn hostile_value(refs: Vec<String>) -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        6 => proptest::sample::select(refs).prop_map(Value::String),
        4 => hostile_string().prop_map(Value::String),
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::Bool),
        2 => prop_oneof![
            Just(i64::MAX),
            Just(i64::MIN),
            Just(0i64),
            Just(-1),
            any::<i64>()
        ]
        .prop_map(|n| json!(n)),
        1 => prop_oneof![Just(f64::MAX), Just(-0.5), Just(1e-300), any::<f64>().prop_filter("JSON has no NaN", |f| f.is_finite())]
            .prop_map(|f| json!(f)),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(hostile_string(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
    .boxed()
}

/// How many arguments after the session `method` takes: the first count
/// not answered with `MESSAGE_PARAMETER_COUNT_MISMATCH`.
async fn arity(d: &Arc<Daemon>, session: &str, method: &str) -> usize {
    for n in 0..6 {
        let mut params = vec![json!(session)];
        params.extend(std::iter::repeat_n(json!(""), n));
        let answer = tokio::time::timeout(Duration::from_secs(5), super::dispatch(d, method, params)).await;
        if !matches!(answer, Ok(Err(ref e)) if e.code == codes::MESSAGE_PARAMETER_COUNT_MISMATCH) {
            return n;
        }
    }
    0
}

#[test]
fn every_method_survives_hostile_arguments() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let p = rt.block_on(pool());
    let methods = fuzzed_methods();
    let session = p.d.sessions().open(Principal::User("root".into()));
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(1500);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    // Each method's arity, found by asking (the count mismatch answers
    // first): most cases then get past the count check to the values.
    let arities: Vec<usize> = methods.iter().map(|m| rt.block_on(arity(&p.d, &session, m))).collect();
    let values = hostile_value(p.refs.clone());
    let strategy = (
        0..methods.len(),
        proptest::bool::weighted(0.9),
        proptest::bool::weighted(0.85),
    )
        .prop_flat_map(move |(i, with_session, exact)| {
            let n = if exact { arities[i]..arities[i] + 1 } else { 0..5 };
            (
                Just(i),
                Just(with_session),
                proptest::collection::vec(values.clone(), n),
            )
        })
        .prop_map(move |(i, with_session, rest)| (methods[i].clone(), with_session, rest));
    runner
        .run(&strategy, |(method, with_session, rest)| {
            let mut params = Vec::with_capacity(rest.len() + 1);
            if with_session {
                params.push(json!(session));
            }
            params.extend(rest);
            let before = p.d.model().generation;
            let shown = format!("{method} {}", Value::Array(params.clone()));
            let shown: String = shown.chars().take(300).collect();
            let answer = rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(5), super::dispatch(&p.d, &method, params)).await
            });
            match answer {
                // A long-poll waits as asked; anything else must answer.
                Err(_) => prop_assert!(method.starts_with("event."), "{shown}: no answer in 5 s"),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    prop_assert_ne!(e.code.as_str(), codes::INTERNAL_ERROR, "{}: {:?}", shown, e);
                    prop_assert!(!e.code.is_empty(), "{}", shown);
                    prop_assert_eq!(p.d.model().generation, before, "{}: refused ({:?}) but wrote", shown, e);
                }
            }
            Ok(())
        })
        .unwrap();
}
