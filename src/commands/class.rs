//! The generated commands of a class: `<class>-list`, `-param-list`,
//! `-param-get`, `-param-set`. `message-list` also takes pool-ha's
//! `since=<time>`: only the messages stamped after it (`message.get_since`),
//! then the filters as usual.

use serde_json::{json, Value};

use super::{make_spec, make_standard, Ctx, Handler, Spec};
use crate::error::XeError;
use crate::fields::{parse_bytes, scalar_text, Class, Field, Kind};
use crate::params::Params;
use crate::printer::Format;
use crate::records::STDPARAMS;

/// The generated command specs of `class`.
pub fn generated(class: &'static Class) -> Vec<Spec> {
    let all: Vec<&str> = class.fields.iter().map(|f| f.name).collect();
    let mut list_optn = vec!["params", "database:"];
    list_optn.extend(all.iter().copied());
    let set_names: Vec<String> = class
        .fields
        .iter()
        .filter(|f| f.is_set())
        .map(|f| format!("{}:contains", f.name))
        .collect();
    list_optn.extend(set_names.iter().map(String::as_str));
    if class.cli == "message" {
        // pool-ha: the messages after a time (`message.get_since`).
        list_optn.push("since");
    }
    let list = make_spec(
        &format!("{}-list", class.cli),
        &[],
        &list_optn,
        &format!(
            "Lists all the {}s, filtering on the optional arguments. To filter on map parameters, use the syntax 'map-param:key=value'",
            class.cli
        ),
        Handler::List(class),
    );
    let list = if matches!(class.cli, "vm" | "sr") {
        make_standard(list)
    } else {
        list
    };
    let mut specs = vec![
        list,
        make_spec(
            &format!("{}-param-list", class.cli),
            &["uuid"],
            &["database:"],
            "Lists all the parameters of the object specified by the uuid.",
            Handler::ParamList(class),
        ),
        make_spec(
            &format!("{}-param-get", class.cli),
            &["uuid", "param-name"],
            &["param-key", "database:"],
            "Gets the parameter specified of the object. If the parameter is a map of key=value pairs, use 'param-key=<key>' to get the value associated with a particular key.",
            Handler::ParamGet(class),
        ),
    ];
    let mut settable: Vec<String> = class
        .fields
        .iter()
        .filter(|f| f.rw && !f.is_map())
        .map(|f| f.name.to_string())
        .collect();
    // Writable maps: set with `map:key=`, added to and removed from.
    let rw_maps: Vec<&Field> = class.fields.iter().filter(|f| f.rw && f.is_map()).collect();
    settable.extend(rw_maps.iter().map(|f| format!("{}:", f.name)));
    if !rw_maps.is_empty() {
        specs.push(make_spec(
            &format!("{}-param-add", class.cli),
            &["uuid", "param-name"],
            &["param-key"],
            "Adds to a set or map parameter. If the parameter is a set, use param-key=<key to add>. If the parameter is a map, pass the values to add as 'key=value' pairs.",
            Handler::ParamAdd(class),
        ));
        specs.push(make_spec(
            &format!("{}-param-remove", class.cli),
            &["uuid", "param-name", "param-key"],
            &[],
            "Removes a member or a key,value pair from a set/map respectively.",
            Handler::ParamRemove(class),
        ));
    }
    let clearable: Vec<&str> = class
        .fields
        .iter()
        .filter(|f| f.rw || f.is_map() || f.is_set())
        .map(|f| f.name)
        .collect();
    if !clearable.is_empty() {
        specs.push(make_spec(
            &format!("{}-param-clear", class.cli),
            &["uuid", "param-name"],
            &[],
            &format!(
                "Clears the specified parameter (param-name can be {}).",
                clearable.join(",")
            ),
            Handler::ParamClear(class),
        ));
    }
    if !settable.is_empty() {
        let names: Vec<&str> = settable.iter().map(String::as_str).collect();
        specs.push(make_spec(
            &format!("{}-param-set", class.cli),
            &["uuid"],
            &names,
            "Sets the parameter specified. If param-value is not given, the parameter is set to a null value. To set a (key,value) pair in a map parameter, use the syntax 'map-param:key=value'.",
            Handler::ParamSet(class),
        ));
    }
    specs
}

/// `<class>-list [params=a,b|all] [--all] [filters]`.
pub fn list(ctx: &mut Ctx, class: &'static Class) -> Result<(), XeError> {
    let show_all = ctx.flag("all")?;
    let consumed = ["params", "all", "minimal", "since"];
    if let (true, Some(since)) = (class.cli == "message", ctx.param("since").map(str::to_string)) {
        if !super::message::is_time(&since) {
            return Err(XeError::cli(
                "Invalid timestamp format for 'since' (expected RFC3339, for example, 2025-01-01T00:00:00Z)",
            ));
        }
        let newer = ctx.records.conn.call("message.get_since", vec![json!(since)])?;
        ctx.records.preload(class.wire, newer);
    }
    let selected = if show_all {
        ctx.records
            .all(class.wire)?
            .iter()
            .map(|(r, v)| (r.clone(), v.clone()))
            .collect()
    } else {
        ctx.records.select(class, ctx.params, &consumed, true)?
    };
    let params_arg = ctx.param("params").map(str::to_string);
    let names: Option<Vec<&str>> = match params_arg.as_deref() {
        Some("all") => None,
        Some(list) => Some(list.split(',').map(str::trim).filter(|n| !n.is_empty()).collect()),
        None => Some(class.default_list.to_vec()),
    };
    // A name that is no field would print empty records without a word
    // (XAPI's xe does that); say which one instead.
    if let Some(unknown) = names.iter().flatten().find(|n| class.field(n).is_none()) {
        return Err(XeError::cli(format!(
            "Unknown field '{unknown}' in params=; 'xe {}-list params=all' shows every field",
            class.cli
        )));
    }
    let records: Vec<&Value> = selected.iter().map(|(_, r)| r.as_ref()).collect();
    print_records(ctx, class, &records, names.as_deref(), false)
}

/// Print records in the command's format: xe's records, a JSON array (one
/// object, for param-list), or a table.
fn print_records(
    ctx: &mut Ctx,
    class: &'static Class,
    records: &[&Value],
    names: Option<&[&str]>,
    one: bool,
) -> Result<(), XeError> {
    match ctx.format {
        Format::Xe => {
            let mut lines = Vec::with_capacity(records.len());
            for record in records {
                lines.push(ctx.records.record_lines(class, record, names)?);
            }
            ctx.out.table(lines);
        }
        Format::Json => {
            let mut objects = Vec::with_capacity(records.len());
            for record in records {
                objects.push(ctx.records.record_json(class, record, names)?);
            }
            // A param-list prints its one record as an object.
            let doc = if one {
                objects.pop().unwrap_or(Value::Null)
            } else {
                Value::Array(objects)
            };
            ctx.out.json(&doc);
        }
        Format::Table => {
            let fields: Vec<&Field> = class
                .fields
                .iter()
                .filter(|f| names.is_none_or(|n| n.contains(&f.name)))
                .collect();
            let mut rows = Vec::new();
            for record in records {
                let mut row = Vec::with_capacity(fields.len());
                for field in &fields {
                    row.push(ctx.records.render(field, record)?);
                }
                rows.push(row);
            }
            if one {
                // One object: a row per field.
                let values = rows.pop().unwrap_or_default();
                let rows = fields
                    .iter()
                    .zip(values)
                    .map(|(f, v)| vec![f.name.to_string(), v])
                    .collect();
                ctx.out.grid(vec!["field".into(), "value".into()], rows);
            } else {
                ctx.out.grid(fields.iter().map(|f| f.name.to_string()).collect(), rows);
            }
        }
    }
    Ok(())
}

/// The record of `uuid=`, by `get_by_uuid` then `get_record`.
fn by_uuid(ctx: &mut Ctx, class: &Class) -> Result<(String, Value), XeError> {
    let uuid = ctx.param("uuid").unwrap_or_default().to_string();
    let r = ctx
        .records
        .conn
        .call(&format!("{}.get_by_uuid", class.wire), vec![json!(uuid)])?;
    let record = ctx
        .records
        .conn
        .call(&format!("{}.get_record", class.wire), vec![r.clone()])?;
    Ok((scalar_text(&r), record))
}

/// `<class>-param-list uuid=`.
pub fn param_list(ctx: &mut Ctx, class: &'static Class) -> Result<(), XeError> {
    let (_, record) = by_uuid(ctx, class)?;
    print_records(ctx, class, &[&record], None, true)
}

/// `<class>-param-get uuid= param-name= [param-key=]`.
pub fn param_get(ctx: &mut Ctx, class: &'static Class) -> Result<(), XeError> {
    let name = ctx.param("param-name").unwrap_or_default().to_string();
    let field = class
        .field(&name)
        .ok_or_else(|| XeError::Plain(format!("Error code: Missing parameter\nError parameters: {name}")))?;
    let (_, record) = by_uuid(ctx, class)?;
    let text = match ctx.param("param-key") {
        Some(key) if field.is_map() => record
            .get(field.wire)
            .and_then(|m| m.get(key))
            .map(scalar_text)
            .ok_or_else(|| XeError::cli(format!("Key {key} not found in map")))?,
        _ => ctx.records.render(field, &record)?,
    };
    ctx.out.list(vec![text]);
    Ok(())
}

/// A CLI value as the JSON a setter takes; `None` for a reference, which
/// needs the pool to look the uuid up.
fn scalar_value(field: &Field, text: &str) -> Result<Option<Value>, XeError> {
    Ok(Some(match field.kind {
        Kind::Int => json!(text.trim().parse::<i64>().map_err(|_| XeError::cli(format!(
            "Failed to parse parameter '{}': expecting an integer",
            field.name
        )))?),
        Kind::Bytes => json!(parse_bytes(text).ok_or_else(|| XeError::cli(format!(
            "Failed to parse field '{}': expecting an integer (possibly with suffix KiB, MiB, GiB, TiB), got '{text}'",
            field.name
        )))?),
        Kind::Bool => match text {
            "true" => json!(true),
            "false" => json!(false),
            _ => {
                return Err(XeError::cli(format!(
                    "Parameter {} must be a boolean (true or false)",
                    field.name
                )))
            }
        },
        Kind::Ref(_) => return Ok(None),
        _ => json!(text),
    }))
}

/// Convert a CLI value to the JSON a setter takes.
fn wire_value(ctx: &mut Ctx, field: &Field, text: &str) -> Result<Value, XeError> {
    if let Some(v) = scalar_value(field, text)? {
        return Ok(v);
    }
    match field.kind {
        Kind::Ref(class) if !text.is_empty() => ctx
            .records
            .conn
            .call(&format!("{class}.get_by_uuid"), vec![json!(text)]),
        _ => Ok(json!("OpaqueRef:NULL")),
    }
}

/// One change `<class>-param-set` makes.
pub(super) enum Change {
    Set(&'static Field, String),
    MapKey(&'static Field, String, String),
}

/// Every change of a param-set, checked without the pool: unknown and
/// read-only fields, maps and sets, values of the wrong type.
pub(super) fn param_set_changes(class: &'static Class, params: &Params) -> Result<Vec<Change>, XeError> {
    let mut changes = Vec::new();
    for (k, v) in params.iter().filter(|(k, _)| *k != "uuid" && !STDPARAMS.contains(k)) {
        if let Some((name, key)) = k.split_once(':') {
            let field = class
                .field(name)
                .ok_or_else(|| XeError::cli(format!("Unknown field '{name}'")))?;
            if !field.is_map() || !field.rw {
                return Err(XeError::cli(format!("Field '{name}' is read-only.")));
            }
            changes.push(Change::MapKey(field, key.to_string(), v.to_string()));
            continue;
        }
        let field = class
            .field(k)
            .ok_or_else(|| XeError::cli(format!("Unknown field '{k}'")))?;
        if field.is_set() {
            return Err(XeError::cli("Cannot param-set on set fields"));
        }
        if field.is_map() {
            return Err(XeError::cli(format!(
                "Field '{k}' is a map or set. use the 'name:key=value' syntax."
            )));
        }
        if !field.rw {
            return Err(XeError::cli(format!("Field '{k}' is read-only.")));
        }
        scalar_value(field, v)?;
        changes.push(Change::Set(field, v.to_string()));
    }
    Ok(changes)
}

/// `<class>-param-set uuid= field=value ... map:key=value ...`. Every
/// parameter is checked before the first change is sent.
pub fn param_set(ctx: &mut Ctx, class: &'static Class) -> Result<(), XeError> {
    let changes = param_set_changes(class, ctx.params)?;
    let (r, _) = by_uuid(ctx, class)?;
    for change in changes {
        match change {
            Change::Set(field, text) => {
                let value = wire_value(ctx, field, &text)?;
                ctx.records
                    .conn
                    .call(&format!("{}.set_{}", class.wire, field.wire), vec![json!(r), value])?;
            }
            Change::MapKey(field, key, value) => {
                map_call(ctx, class, "remove_from", field, vec![json!(r), json!(key)])?;
                map_call(ctx, class, "add_to", field, vec![json!(r), json!(key), json!(value)])?;
            }
        }
    }
    Ok(())
}

/// The field `param-name=` names, and the object's reference and record.
fn named_field(ctx: &mut Ctx, class: &'static Class) -> Result<(&'static Field, String, Value), XeError> {
    let name = ctx.param("param-name").unwrap_or_default().to_string();
    let field = class
        .field(&name)
        .ok_or_else(|| XeError::cli(format!("Unknown field '{name}'")))?;
    let (r, record) = by_uuid(ctx, class)?;
    Ok((field, r, record))
}

fn map_call(ctx: &mut Ctx, class: &Class, verb: &str, field: &Field, args: Vec<Value>) -> Result<(), XeError> {
    ctx.records
        .conn
        .call(&format!("{}.{verb}_{}", class.wire, field.wire), args)
        .map(|_| ())
}

/// `<class>-param-add uuid= param-name=<map> key=value...`.
pub fn param_add(ctx: &mut Ctx, class: &'static Class) -> Result<(), XeError> {
    let (field, r, _) = named_field(ctx, class)?;
    if !field.is_map() && !field.is_set() {
        return Err(XeError::cli("Can only add to parameters of type Set or Map"));
    }
    if !field.rw {
        return Err(XeError::cli("Parameter is read-only"));
    }
    let pairs: Vec<(String, String)> = ctx
        .params
        .iter()
        .filter(|(k, _)| !["uuid", "param-name", "param-key"].contains(k) && !STDPARAMS.contains(k))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for (k, v) in pairs {
        map_call(ctx, class, "add_to", field, vec![json!(r), json!(k), json!(v)])?;
    }
    Ok(())
}

/// `<class>-param-remove uuid= param-name=<map> param-key=<key>`.
pub fn param_remove(ctx: &mut Ctx, class: &'static Class) -> Result<(), XeError> {
    let (field, r, record) = named_field(ctx, class)?;
    if !field.is_map() && !field.is_set() {
        return Err(XeError::cli("Can only remove from parameters of type Set or Map"));
    }
    if !field.rw {
        return Err(XeError::cli("Cannot remove parameters from read-only map"));
    }
    let key = ctx.param("param-key").unwrap_or_default().to_string();
    if record.get(field.wire).and_then(|m| m.get(&key)).is_none() {
        return Err(XeError::cli(format!("Key {key} is not in map")));
    }
    map_call(ctx, class, "remove_from", field, vec![json!(r), json!(key)])
}

/// `<class>-param-clear uuid= param-name=`: a map loses every key, a
/// read-write scalar becomes empty.
pub fn param_clear(ctx: &mut Ctx, class: &'static Class) -> Result<(), XeError> {
    let (field, r, record) = named_field(ctx, class)?;
    if !field.rw {
        return Err(XeError::cli("Can only clear RW parameters"));
    }
    if field.is_map() {
        let keys: Vec<String> = record
            .get(field.wire)
            .and_then(Value::as_object)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        for key in keys {
            map_call(ctx, class, "remove_from", field, vec![json!(r), json!(key)])?;
        }
        return Ok(());
    }
    let value = wire_value(ctx, field, "").map_err(|_| XeError::cli("Cannot clear this parameter"))?;
    map_call(ctx, class, "set", field, vec![json!(r), value]).map_err(|_| XeError::cli("Cannot clear this parameter"))
}
