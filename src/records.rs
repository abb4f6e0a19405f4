//! Fetching records and rendering their fields for people, and selecting
//! objects with xe's selectors and filters.
//!
//! A [`Records`] fetches each class's `get_all_records` at most once per
//! command, so rendering references as uuids and filtering on any field cost
//! one call per class involved, not one per object.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use serde_json::{json, Value};

use crate::conn::Conn;
use crate::error::XeError;
use crate::fields::{rfc3339, scalar_text, Class, Field, Kind};
use crate::params::Params;
use crate::printer::Record;

/// Parameters that are never filters or data (xe's `stdparams`, and this
/// xe's own `params`, `format`, `report-ignored-params`).
pub const STDPARAMS: &[&str] = &[
    "server",
    "password",
    "port",
    "username",
    "minimal",
    "force",
    "multiple",
    "all",
    "message-priority",
    "trace",
    "params",
    "database:",
    "format",
    "report-ignored-params",
];

/// The records of the pool, fetched per class on first use.
pub struct Records<'c> {
    pub conn: &'c mut Conn,
    cache: HashMap<String, BTreeMap<String, Rc<Value>>>,
}

impl<'c> Records<'c> {
    pub fn new(conn: &'c mut Conn) -> Self {
        Records {
            conn,
            cache: HashMap::new(),
        }
    }

    /// Every record of an API class, by reference.
    pub fn all(&mut self, class: &str) -> Result<&BTreeMap<String, Rc<Value>>, XeError> {
        if !self.cache.contains_key(class) {
            let v = self.conn.call(&format!("{class}.get_all_records"), vec![])?;
            let map = match v {
                Value::Object(m) => m.into_iter().map(|(k, v)| (k, Rc::new(v))).collect(),
                _ => BTreeMap::new(),
            };
            self.cache.insert(class.to_string(), map);
        }
        Ok(&self.cache[class])
    }

    /// Take `records` (a map from reference to record) as the class's
    /// records for this command (a subset, such as `message.get_since`'s).
    pub fn preload(&mut self, class: &str, records: Value) {
        let map = match records {
            Value::Object(m) => m.into_iter().map(|(k, v)| (k, Rc::new(v))).collect(),
            _ => BTreeMap::new(),
        };
        self.cache.insert(class.to_string(), map);
    }

    fn get(&mut self, class: &str, r: &str) -> Result<Option<Rc<Value>>, XeError> {
        Ok(self.all(class)?.get(r).cloned())
    }

    /// The uuid of a reference, or `<not in database>`.
    pub fn uuid_of(&mut self, class: &str, r: &str) -> Result<String, XeError> {
        Ok(self
            .get(class, r)?
            .and_then(|v| v.get("uuid").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_else(|| "<not in database>".to_string()))
    }

    /// `uuid (name-label)` of any reference, for error messages.
    pub fn describe(&mut self, r: &str) -> Option<String> {
        for class in xapi_proto::classes::CLASSES {
            if let Ok(v) = self.conn.call(&format!("{class}.get_record"), vec![Value::from(r)]) {
                let uuid = v.get("uuid").and_then(Value::as_str).unwrap_or_default();
                return Some(match v.get("name_label").and_then(Value::as_str) {
                    Some(name) => format!("{uuid} ({name})"),
                    None => uuid.to_string(),
                });
            }
        }
        None
    }

    /// A field's value as xe shows it.
    pub fn render(&mut self, field: &Field, record: &Value) -> Result<String, XeError> {
        let v = record.get(field.wire).unwrap_or(&Value::Null);
        Ok(match field.kind {
            Kind::Str | Kind::Int | Kind::Bytes | Kind::Bool => scalar_text(v),
            Kind::PowerState => scalar_text(v).to_lowercase(),
            Kind::DateTime => rfc3339(v.as_str().unwrap_or_default()),
            Kind::Ref(class) => match v.as_str() {
                Some(r) if r != "OpaqueRef:NULL" => self.uuid_of(class, r)?,
                _ => "<not in database>".to_string(),
            },
            Kind::RefSet(class) | Kind::RefSetScalar(class) => {
                let mut uuids = Vec::new();
                for r in v.as_array().into_iter().flatten().filter_map(Value::as_str) {
                    uuids.push(self.uuid_of(class, r)?);
                }
                uuids.join("; ")
            }
            Kind::SetScalar => v
                .as_array()
                .into_iter()
                .flatten()
                .map(scalar_text)
                .collect::<Vec<_>>()
                .join("; "),
            Kind::Map | Kind::MapScalar => v
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| format!("{k}: {}", scalar_text(v)))
                .collect::<Vec<_>>()
                .join("; "),
            Kind::SrHost => {
                let pbds: Vec<String> = v
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect();
                match pbds.as_slice() {
                    [] => "<not in database>".to_string(),
                    [one] => {
                        let host = self
                            .get("PBD", one)?
                            .and_then(|p| p.get("host").and_then(Value::as_str).map(str::to_string));
                        match host {
                            Some(h) => self
                                .get("host", &h)?
                                .and_then(|h| h.get("name_label").and_then(Value::as_str).map(str::to_string))
                                .unwrap_or_else(|| "<not in database>".to_string()),
                            None => "<not in database>".to_string(),
                        }
                    }
                    _ => "<shared>".to_string(),
                }
            }
        })
    }

    /// A field's value as typed JSON: strings, integers, booleans, maps as
    /// objects of strings, sets as arrays, references as uuids (null when
    /// unset).
    pub fn render_json(&mut self, field: &Field, record: &Value) -> Result<Value, XeError> {
        let v = record.get(field.wire).unwrap_or(&Value::Null);
        Ok(match field.kind {
            Kind::Int | Kind::Bytes => match v {
                Value::String(s) => s.parse::<i64>().map_or_else(|_| json!(s), |n| json!(n)),
                other => other.clone(),
            },
            Kind::Bool => match v {
                Value::String(s) => json!(s == "true"),
                other => other.clone(),
            },
            Kind::Ref(_) => match self.render(field, record)?.as_str() {
                "<not in database>" => Value::Null,
                uuid => json!(uuid),
            },
            Kind::RefSet(class) | Kind::RefSetScalar(class) => {
                let mut uuids = Vec::new();
                for r in v.as_array().into_iter().flatten().filter_map(Value::as_str) {
                    uuids.push(json!(self.uuid_of(class, r)?));
                }
                Value::Array(uuids)
            }
            Kind::SetScalar => Value::Array(
                v.as_array()
                    .into_iter()
                    .flatten()
                    .map(|x| json!(scalar_text(x)))
                    .collect(),
            ),
            Kind::Map | Kind::MapScalar => Value::Object(
                v.as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, x)| (k.clone(), json!(scalar_text(x))))
                    .collect(),
            ),
            Kind::Str | Kind::PowerState | Kind::DateTime | Kind::SrHost => json!(self.render(field, record)?),
        })
    }

    /// A record as a JSON object keyed by CLI field name: `names` (in
    /// record order) or every field.
    pub fn record_json(&mut self, class: &Class, record: &Value, names: Option<&[&str]>) -> Result<Value, XeError> {
        let mut object = serde_json::Map::new();
        for field in class.fields {
            if names.is_some_and(|n| !n.contains(&field.name)) {
                continue;
            }
            object.insert(field.name.to_string(), self.render_json(field, record)?);
        }
        Ok(Value::Object(object))
    }

    /// A record as (label, value) lines: `names` (in record order) or every field.
    pub fn record_lines(&mut self, class: &Class, record: &Value, names: Option<&[&str]>) -> Result<Record, XeError> {
        let mut lines = Vec::new();
        for field in class.fields {
            if names.is_some_and(|n| !n.contains(&field.name)) {
                continue;
            }
            lines.push((field.label(), self.render(field, record)?));
        }
        Ok(lines)
    }

    /// Does `record` pass the filter `key=value`?
    fn matches(&mut self, class: &Class, record: &Value, key: &str, value: &str) -> Result<bool, XeError> {
        let pseudo = match (class.cli, key) {
            ("vm", "vm") | ("sr", "sr") => Some(&["uuid", "name_label"][..]),
            ("host", "host") => Some(&["uuid", "name_label", "hostname"][..]),
            _ => None,
        };
        if let Some(wires) = pseudo {
            return Ok(wires
                .iter()
                .any(|w| record.get(*w).and_then(Value::as_str) == Some(value)));
        }
        if let Some(field) = class.field(key) {
            return Ok(self.render(field, record)? == value);
        }
        let (field, map_key) = match key.split_once(':') {
            Some((name, k)) => match class.field(name) {
                Some(f) => (f, k.to_string()),
                None => return Err(XeError::cli(format!("Unknown field '{key}'"))),
            },
            None => class
                .map_field_prefix(key)
                .ok_or_else(|| XeError::cli(format!("Unknown field '{key}'")))?,
        };
        let v = record.get(field.wire).cloned().unwrap_or(Value::Null);
        if field.is_set() && map_key == "contains" {
            return Ok(v.as_array().into_iter().flatten().any(|x| scalar_text(x) == value));
        }
        Ok(v.get(&map_key).map(scalar_text).as_deref() == Some(value))
    }

    /// The objects the command's parameters select: pseudo-fields, filters on
    /// any field, the class's default filters unless `use_defaults` is off.
    /// Parameters in `consumed` belong to the command and are not filters.
    pub fn select(
        &mut self,
        class: &Class,
        params: &Params,
        consumed: &[&str],
        use_defaults: bool,
    ) -> Result<Vec<(String, Rc<Value>)>, XeError> {
        let mut filters: Vec<(String, String)> = params
            .iter()
            .filter(|(k, _)| !STDPARAMS.contains(k) && !consumed.contains(k))
            .filter(|(k, _)| !consumed.iter().any(|c| c.ends_with(':') && k.starts_with(c)))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if use_defaults {
            for (k, v) in class.default_filters {
                if !filters.iter().any(|(fk, _)| fk == k) {
                    filters.push((k.to_string(), v.to_string()));
                }
            }
        }
        let all: Vec<(String, Rc<Value>)> = self
            .all(class.wire)?
            .iter()
            .map(|(r, v)| (r.clone(), v.clone()))
            .collect();
        let mut selected = Vec::new();
        for (r, record) in all {
            let mut ok = true;
            for (k, v) in &filters {
                if !self.matches(class, &record, k, v)? {
                    ok = false;
                    break;
                }
            }
            if ok {
                selected.push((r, record));
            }
        }
        selected.sort_by_cached_key(|(_, v)| v.get("uuid").and_then(Value::as_str).unwrap_or_default().to_string());
        Ok(selected)
    }

    /// Selection for a command acting on objects: none is an error, more
    /// than one needs `--multiple`.
    pub fn select_for_op(
        &mut self,
        class: &Class,
        params: &Params,
        consumed: &[&str],
    ) -> Result<Vec<(String, Rc<Value>)>, XeError> {
        let selected = self.select(class, params, consumed, true)?;
        if selected.is_empty() {
            return Err(XeError::cli(format!("No matching {} found", class.plural)));
        }
        let multiple = params.flag("multiple").map_err(XeError::Cli)?;
        if selected.len() > 1 && !multiple {
            return Err(XeError::cli(match class.cli {
                "vm" => "Multiple matches VMs found. --multiple required to complete the operation".to_string(),
                _ => format!(
                    "Multiple matching {} found. --multiple required to complete the operation",
                    class.plural
                ),
            }));
        }
        Ok(selected)
    }
}
