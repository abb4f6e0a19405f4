//! The methods every class has: `get_all`, `get_all_records` (served as
//! pre-serialized text by [`all_records_json`]), `get_all_records_where`
//! (XAPI's expression language, [`super::filter`]), `get_record`,
//! `get_by_uuid`, `get_by_name_label`, `get_<field>`, `set_<field>`,
//! `add_to_<map>` and `remove_from_<map>`, `add_<set>` and `remove_<set>`.
//!
//! The pool's secret `other_config` settings (`crate::secrets`) are sealed
//! before they are written, whichever setter writes them.
//!
//! Setters check the value's type against [`xapi_proto::classes`], then the
//! class's own rules ([`validate_set`]), then pass the record as it will be
//! through the overcommit gate ([`crate::overcommit::check`]: protection and
//! the failover plan), and only then write. A refused call changes nothing.

use std::sync::Arc;

use serde_json::{json, Value};
use xapi_proto::classes::{self, FieldType};
use xapi_proto::records::{PoolRecord, PowerState, VmRecord, NULL_REF};
use xapi_proto::{codes, ApiError};

use super::{unknown, Args};
use crate::daemon::Daemon;
use crate::memory;
use crate::planning;
use pool_db::model::{Model, Record, Txn};
use pool_db::with_record_type;

/// Route a generic verb of `class`.
pub async fn dispatch(d: &Arc<Daemon>, class: &str, verb: &str, args: &Args) -> Result<Value, ApiError> {
    with_record_type!(class, T => handle::<T>(d, verb, args).await, _ => Err(unknown(args.method())))
}

/// `<class>.get_all_records` as JSON text, serialized straight from the records.
pub fn all_records_json(d: &Arc<Daemon>, class: &str) -> Result<String, ApiError> {
    fn text<T: Record>(d: &Daemon) -> Result<String, ApiError> {
        let m = d.model();
        let rows: std::collections::BTreeMap<&String, &T> = T::table(&m).iter().collect();
        serde_json::to_string(&rows).map_err(|e| ApiError::internal(e.to_string()))
    }
    with_record_type!(class, T => text::<T>(d), _ => Err(unknown(&format!("{class}.get_all_records"))))
}

/// The record `reference` of API class `class` as the API shows it.
pub(super) fn record_json(m: &Model, class: &str, reference: &str) -> Option<Value> {
    with_record_type!(class, T => m.get::<T>(reference).map(to_json), _ => None)
}

fn to_json<T: Record>(record: &T) -> Value {
    serde_json::to_value(record).unwrap_or(Value::Null)
}

async fn handle<T: Record>(d: &Arc<Daemon>, verb: &str, args: &Args) -> Result<Value, ApiError> {
    let has_name = T::CLASS != "pool" && classes::field(T::CLASS, "name_label").is_some();
    match verb {
        "get_all" => {
            args.exactly(1)?;
            let m = d.model();
            let mut refs: Vec<&String> = T::table(&m).iter().map(|(r, _)| r).collect();
            refs.sort();
            Ok(json!(refs))
        }
        "get_record" => {
            args.exactly(2)?;
            let r = args.str(1, "self")?;
            let m = d.model();
            m.get::<T>(r)
                .map(to_json)
                .ok_or_else(|| ApiError::handle_invalid(T::CLASS, r))
        }
        "get_by_uuid" => {
            args.exactly(2)?;
            let uuid = args.str(1, "uuid")?;
            let m = d.model();
            T::table(&m)
                .ref_of_uuid(uuid)
                .map(|r| json!(r))
                .ok_or_else(|| ApiError::uuid_invalid(T::CLASS, uuid))
        }
        "get_all_records_where" => {
            args.exactly(2)?;
            let expr = super::filter::compile(args.str(1, "expr")?, |f| classes::field(T::CLASS, f).is_some())?;
            let m = d.model();
            let matching: serde_json::Map<String, Value> = T::table(&m)
                .iter()
                .map(|(r, v)| (r.clone(), to_json(v)))
                .filter(|(_, v)| super::filter::matches(&expr, v))
                .collect();
            Ok(Value::Object(matching))
        }
        "get_by_name_label" if has_name => {
            args.exactly(2)?;
            let label = args.str(1, "label")?;
            let m = d.model();
            let mut refs: Vec<&String> = T::table(&m)
                .iter()
                .filter(|(_, v)| v.name_label() == Some(label))
                .map(|(r, _)| r)
                .collect();
            refs.sort();
            Ok(json!(refs))
        }
        _ => {
            if let Some(field) = verb.strip_prefix("get_") {
                return get_field::<T>(d, field, args);
            }
            if let Some(field) = verb.strip_prefix("set_") {
                return set_field::<T>(d, field, args).await;
            }
            if let Some(field) = verb.strip_prefix("add_to_") {
                return map_edit::<T>(d, field, args, true).await;
            }
            if let Some(field) = verb.strip_prefix("remove_from_") {
                return map_edit::<T>(d, field, args, false).await;
            }
            if let Some(field) = verb.strip_prefix("add_") {
                return set_edit::<T>(d, field, args, true).await;
            }
            if let Some(field) = verb.strip_prefix("remove_") {
                return set_edit::<T>(d, field, args, false).await;
            }
            Err(unknown(args.method()))
        }
    }
}

fn get_field<T: Record>(d: &Arc<Daemon>, field: &str, args: &Args) -> Result<Value, ApiError> {
    classes::field(T::CLASS, field).ok_or_else(|| unknown(args.method()))?;
    args.exactly(2)?;
    let r = args.str(1, "self")?;
    let m = d.model();
    let record = m.get::<T>(r).ok_or_else(|| ApiError::handle_invalid(T::CLASS, r))?;
    Ok(to_json(record).get(field).cloned().unwrap_or(Value::Null))
}

async fn set_field<T: Record>(d: &Arc<Daemon>, field: &str, args: &Args) -> Result<Value, ApiError> {
    let spec = classes::field(T::CLASS, field)
        .filter(|f| f.settable)
        .ok_or_else(|| unknown(args.method()))?;
    args.exactly(3)?;
    let r = args.str(1, "self")?.to_string();
    let value = args.raw(2).cloned().unwrap_or(Value::Null);
    let mut value = spec.ty.coerce(value).ok_or_else(|| ApiError::field_type("value"))?;
    if let ("pool", "other_config", Some(map)) = (T::CLASS, field, value.as_object_mut()) {
        crate::secrets::seal_map(&d.pool_secret(), map);
    }
    d.write(|txn| {
        let record = txn.get::<T>(&r).ok_or_else(|| ApiError::handle_invalid(T::CLASS, &r))?;
        if let FieldType::Ref(class) = spec.ty {
            check_ref(txn, class, value.as_str().unwrap_or_default())?;
        }
        let mut json = to_json(&record);
        json[field] = value.clone();
        let mut updated: T =
            serde_json::from_value(json).map_err(|e| ApiError::internal(format!("set {field}: {e}")))?;
        validate_set(txn.base(), &r, &mut updated, field, &value)?;
        txn.put(&r, updated);
        Ok(())
    })
    .await?;
    Ok(json!(""))
}

async fn map_edit<T: Record>(d: &Arc<Daemon>, field: &str, args: &Args, add: bool) -> Result<Value, ApiError> {
    let spec = classes::field(T::CLASS, field)
        .filter(|f| f.settable && f.ty == FieldType::Map)
        .ok_or_else(|| unknown(args.method()))?;
    args.exactly(if add { 4 } else { 3 })?;
    let r = args.str(1, "self")?.to_string();
    let key = args.str(2, "key")?.to_string();
    let value = if add {
        let v = args.str(3, "value")?;
        // The pool's secret settings are kept sealed (crate::secrets).
        Some(match (T::CLASS, spec.name) {
            ("pool", "other_config") if crate::secrets::is_secret_key(&key) => {
                crate::secrets::seal(&d.pool_secret(), &key, v)
            }
            _ => v.to_string(),
        })
    } else {
        None
    };
    d.write(|txn| {
        rewrite::<T>(txn, &r, spec.name, |field_value, record| {
            let map = field_value
                .as_object_mut()
                .ok_or_else(|| ApiError::internal("map field is not a map"))?;
            match &value {
                Some(v) => {
                    if map.contains_key(&key) {
                        return Err(ApiError::new(
                            codes::MAP_DUPLICATE_KEY,
                            vec![T::CLASS.into(), field.into(), record.uuid().into(), key.clone()],
                        ));
                    }
                    map.insert(key.clone(), json!(v));
                }
                None => {
                    map.remove(&key);
                }
            }
            Ok(true)
        })
    })
    .await?;
    Ok(json!(""))
}

/// `add_<set>(self, value)` / `remove_<set>(self, value)` of a settable set
/// field (`VM.add_tags`): as XAPI's database, adding a value already there
/// or removing one that is not changes nothing and is no error.
async fn set_edit<T: Record>(d: &Arc<Daemon>, field: &str, args: &Args, add: bool) -> Result<Value, ApiError> {
    let spec = classes::field(T::CLASS, field)
        .filter(|f| f.settable && f.ty == FieldType::Set)
        .ok_or_else(|| unknown(args.method()))?;
    args.exactly(3)?;
    let r = args.str(1, "self")?.to_string();
    let value = args.str(2, "value")?.to_string();
    d.write(|txn| {
        rewrite::<T>(txn, &r, spec.name, |field_value, _| {
            let set = field_value
                .as_array_mut()
                .ok_or_else(|| ApiError::internal("set field is not a list"))?;
            let had = set.iter().any(|v| v.as_str() == Some(value.as_str()));
            match (add, had) {
                (true, false) => set.push(json!(value)),
                (false, true) => set.retain(|v| v.as_str() != Some(value.as_str())),
                _ => return Ok(false),
            }
            Ok(true)
        })
    })
    .await?;
    Ok(json!(""))
}

/// Change field `field` of record `r` through its JSON form: `edit` changes
/// the field's value (given the record as it is) and says whether it changed
/// anything; the record as it will be passes the class's rules
/// ([`validate_set`]) before it is written.
fn rewrite<T: Record>(
    txn: &mut Txn,
    r: &str,
    field: &str,
    edit: impl FnOnce(&mut Value, &T) -> Result<bool, ApiError>,
) -> Result<(), ApiError> {
    let record = txn.get::<T>(r).ok_or_else(|| ApiError::handle_invalid(T::CLASS, r))?;
    let mut json = to_json(&record);
    if !edit(&mut json[field], &record)? {
        return Ok(());
    }
    let mut updated: T = serde_json::from_value(json).map_err(|e| ApiError::internal(e.to_string()))?;
    validate_set(txn.base(), r, &mut updated, field, &Value::Null)?;
    txn.put(r, updated);
    Ok(())
}

/// A reference value must name an object of `class`, or be null.
fn check_ref(txn: &Txn, class: &str, r: &str) -> Result<(), ApiError> {
    if r == NULL_REF {
        return Ok(());
    }
    let exists = with_record_type!(class, T => txn.get::<T>(r).is_some(), _ => true);
    if exists {
        Ok(())
    } else {
        Err(ApiError::handle_invalid(class, r))
    }
}

/// The rules of a class beyond the field's type, applied to the updated
/// record before it is written.
fn validate_set<T: Record>(m: &Model, r: &str, updated: &mut T, field: &str, value: &Value) -> Result<(), ApiError> {
    let any = updated as &mut dyn std::any::Any;
    if let Some(vm) = any.downcast_mut::<VmRecord>() {
        return validate_vm(m, r, vm, field, value);
    }
    if let Some(pool) = any.downcast_mut::<PoolRecord>() {
        return validate_pool(m, pool, field, value);
    }
    Ok(())
}

/// Pool rules: host failures to tolerate must be plannable (unless
/// overcommit is allowed); the planner mode must be one we have; and the
/// record as it will be passes the overcommit gate (a planner mode that
/// loses the plan is refused).
fn validate_pool(m: &Model, pool: &mut PoolRecord, field: &str, value: &Value) -> Result<(), ApiError> {
    let mut to_tolerate = None;
    match field {
        "ha_host_failures_to_tolerate" => {
            let n = u32::try_from(pool.ha_host_failures_to_tolerate)
                .map_err(|_| ApiError::invalid_value("ha_host_failures_to_tolerate", value.to_string()))?;
            to_tolerate = Some(n);
        }
        "other_config" => {
            planning::planner(pool)?;
        }
        _ => {}
    }
    crate::overcommit::check(
        m,
        &crate::overcommit::Change {
            pool: Some(pool),
            to_tolerate,
            ..Default::default()
        },
    )?;
    if let Some(n) = to_tolerate {
        // The plan status follows at once (XAPI's update_pool_status),
        // so the next plan-checked call protects the new number.
        if pool.ha_enabled && crate::planning::plan_exists_for(m, n)?.exists() {
            pool.ha_plan_exists_for = i64::from(n);
            pool.ha_overcommitted = false;
        }
    }
    Ok(())
}

/// `INVALID_VALUE` unless `priority` is one XAPI accepts (`restart`,
/// `best-effort`, or empty for unprotected).
pub(crate) fn check_restart_priority(priority: &str) -> Result<(), ApiError> {
    match priority {
        "restart" | "best-effort" | "" => Ok(()),
        other => Err(ApiError::invalid_value("ha_restart_priority", other)),
    }
}

/// `INVALID_VALUE ["<field> must be non-negative", value]`, as XAPI words it
/// for `order`, `start_delay` and `shutdown_delay`.
pub(crate) fn check_non_negative(field: &str, value: i64) -> Result<(), ApiError> {
    if value < 0 {
        return Err(ApiError::invalid_value(
            format!("{field} must be non-negative"),
            value.to_string(),
        ));
    }
    Ok(())
}

/// VM rules, as XAPI's setters: a restart priority XAPI knows (on a running
/// VM it sets `ha_always_run`); `ha_always_run`, deprecated, mapped onto the
/// priority (`true` is `restart`, `false` is unprotected); non-negative
/// order and delays; memory and vCPUs only while halted, within XAPI's
/// constraints and this pool's limits, with the overhead recomputed. Then
/// every one of them through the overcommit gate, which refuses what
/// protects a VM that is not agile or loses the failover plan.
fn validate_vm(m: &Model, r: &str, vm: &mut VmRecord, field: &str, value: &Value) -> Result<(), ApiError> {
    match field {
        "ha_restart_priority" => {
            check_restart_priority(&vm.ha_restart_priority)?;
            if vm.power_state != PowerState::Halted {
                vm.ha_always_run = vm.ha_restart_priority == "restart";
            }
        }
        "ha_always_run" => {
            vm.ha_restart_priority = if vm.ha_always_run { "restart" } else { "" }.into();
        }
        "order" | "start_delay" | "shutdown_delay" => check_non_negative(field, value.as_i64().unwrap_or(0))?,
        f if f.starts_with("memory_") || f == "VCPUs_max" => {
            if vm.power_state != PowerState::Halted {
                return Err(ApiError::new(
                    codes::VM_BAD_POWER_STATE,
                    vec![r.to_string(), "halted".into(), vm.power_state.cli_name().into()],
                ));
            }
            memory::check_vm_setter(vm)?;
            vm.memory_overhead = memory::vm_overhead(vm.memory_static_max, vm.vcpus_max);
        }
        _ => {}
    }
    crate::overcommit::check(
        m,
        &crate::overcommit::Change {
            updating: vec![(r, &*vm)],
            ..Default::default()
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sessions::Principal;

    use crate::api::call;

    #[tokio::test]
    async fn tags_are_a_set_and_the_operation_fields_read_as_xapis_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let d = Daemon::open(crate::daemon::tests::config(dir.path())).unwrap();
        let s = json!(d.sessions().open(Principal::User("root".into())));
        let vm = call(
            &d,
            "VM.create",
            vec![
                s.clone(),
                json!({"name_label": "a", "memory_static_max": 1i64 << 30, "tags": ["x"], "allowed_operations": ["start"],
                       "blocked_operations": {"start": "no"}}),
            ],
        )
        .await
        .unwrap();
        let tags =
            |d: Arc<Daemon>, s: Value, vm: Value| async move { call(&d, "VM.get_tags", vec![s, vm]).await.unwrap() };
        assert_eq!(tags(d.clone(), s.clone(), vm.clone()).await, json!(["x"]));
        let record = call(&d, "VM.get_record", vec![s.clone(), vm.clone()]).await.unwrap();
        assert_eq!(record["allowed_operations"], json!([]));
        assert_eq!(record["current_operations"], json!({}));
        assert_eq!(record["blocked_operations"], json!({}));
        // add_tags is a set's: a second add changes nothing.
        for _ in 0..2 {
            call(&d, "VM.add_tags", vec![s.clone(), vm.clone(), json!("web")])
                .await
                .unwrap();
        }
        assert_eq!(tags(d.clone(), s.clone(), vm.clone()).await, json!(["x", "web"]));
        call(&d, "VM.remove_tags", vec![s.clone(), vm.clone(), json!("x")])
            .await
            .unwrap();
        let generation = d.model().generation;
        call(&d, "VM.remove_tags", vec![s.clone(), vm.clone(), json!("absent")])
            .await
            .unwrap();
        assert_eq!(d.model().generation, generation, "nothing to remove, nothing written");
        assert_eq!(tags(d.clone(), s.clone(), vm.clone()).await, json!(["web"]));
        call(&d, "VM.set_tags", vec![s.clone(), vm.clone(), json!(["a", "b"])])
            .await
            .unwrap();
        assert_eq!(tags(d.clone(), s.clone(), vm.clone()).await, json!(["a", "b"]));
        // Pool, host and SR have them too.
        let host = json!(d.host_ref().unwrap());
        call(&d, "host.add_tags", vec![s.clone(), host.clone(), json!("rack1")])
            .await
            .unwrap();
        assert_eq!(
            call(&d, "host.get_tags", vec![s.clone(), host]).await.unwrap(),
            json!(["rack1"])
        );
        let pool = call(&d, "pool.get_all", vec![s.clone()]).await.unwrap()[0].clone();
        assert_eq!(
            call(&d, "pool.get_allowed_operations", vec![s.clone(), pool])
                .await
                .unwrap(),
            json!([])
        );
        // Read-only sets and the wrong types are refused, changing nothing.
        let generation = d.model().generation;
        for (method, value, code) in [
            ("VM.add_VBDs", json!("OpaqueRef:x"), codes::MESSAGE_METHOD_UNKNOWN),
            (
                "VM.add_allowed_operations",
                json!("start"),
                codes::MESSAGE_METHOD_UNKNOWN,
            ),
            ("VM.set_blocked_operations", json!({}), codes::MESSAGE_METHOD_UNKNOWN),
            ("VM.add_tags", json!(1), codes::FIELD_TYPE_ERROR),
            ("VM.set_tags", json!("a"), codes::FIELD_TYPE_ERROR),
        ] {
            let e = call(&d, method, vec![s.clone(), vm.clone(), value]).await.unwrap_err();
            assert_eq!(e.code, code, "{method}");
        }
        let e = call(&d, "VM.add_tags", vec![s.clone(), json!("OpaqueRef:x"), json!("t")])
            .await
            .unwrap_err();
        assert_eq!(e.code, codes::HANDLE_INVALID);
        assert_eq!(d.model().generation, generation);
    }
}
