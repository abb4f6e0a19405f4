//! The classes xe shows and their CLI fields: names, order, markers and how
//! each value renders.
//!
//! Field order is XAPI's record order (`records.ml`), which decides both the
//! order of `*-param-list` and which field `--minimal` prints. A field's
//! marker (` ( RO)`, ` (MRW)`, ...) follows from its kind and whether it has
//! a setter.

use serde_json::Value;

/// How a field's value is typed and rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Str,
    Int,
    /// Bytes; setters accept `KiB`, `MiB`, `GiB`, `TiB` suffixes.
    Bytes,
    Bool,
    /// `Running` on the wire, `running` for people.
    PowerState,
    /// A reference to an object of the class, shown as its uuid.
    Ref(&'static str),
    /// A set of references, shown as uuids joined with `; `.
    RefSet(&'static str),
    /// A set shown with a scalar marker.
    SetScalar,
    /// A set of references shown as uuids, with a scalar marker
    /// (`ha-statefiles ( RO)`).
    RefSetScalar(&'static str),
    /// A map, `k: v; k2: v2`.
    Map,
    /// A map shown with a scalar marker (pool `ha-configuration ( RO)`).
    MapScalar,
    /// XAPI's wire datetime, shown as RFC 3339.
    DateTime,
    /// The SR's `host`: the name of its only PBD's host, or `<shared>`.
    SrHost,
}

/// One CLI field.
#[derive(Debug)]
pub struct Field {
    pub name: &'static str,
    pub wire: &'static str,
    pub kind: Kind,
    pub rw: bool,
    pub deprecated: bool,
}

impl Field {
    /// The name with its marker, as a record line shows it.
    pub fn label(&self) -> String {
        let marker = match (self.kind, self.rw) {
            (Kind::Map, true) => " (MRW)",
            (Kind::Map, false) => " (MRO)",
            (Kind::RefSet(_), true) => " (SRW)",
            (Kind::RefSet(_), false) => " (SRO)",
            (_, true) => " ( RW)",
            (_, false) => " ( RO)",
        };
        let deprecated = if self.deprecated { " [DEPRECATED]" } else { "" };
        format!("{}{marker}{deprecated}", self.name)
    }

    pub fn is_map(&self) -> bool {
        matches!(self.kind, Kind::Map | Kind::MapScalar)
    }

    pub fn is_set(&self) -> bool {
        matches!(self.kind, Kind::SetScalar | Kind::RefSet(_) | Kind::RefSetScalar(_))
    }
}

/// A class as xe shows it.
#[derive(Debug)]
pub struct Class {
    /// The xe prefix (`vm`).
    pub cli: &'static str,
    /// The API class (`VM`).
    pub wire: &'static str,
    /// Plural for messages (`VMs`).
    pub plural: &'static str,
    pub fields: &'static [Field],
    /// Fields `<class>-list` shows by default.
    pub default_list: &'static [&'static str],
    /// Filters `<class>-list` and selectors apply unless `--all`.
    pub default_filters: &'static [(&'static str, &'static str)],
}

impl Class {
    pub fn field(&self, name: &str) -> Option<&'static Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// The longest field name that `key` starts with followed by `-`, for
    /// the old `map-field-key=value` filter form.
    pub fn map_field_prefix(&self, key: &str) -> Option<(&'static Field, String)> {
        self.fields
            .iter()
            .filter(|f| f.is_map())
            .filter_map(|f| {
                key.strip_prefix(f.name)
                    .and_then(|r| r.strip_prefix('-'))
                    .map(|k| (f, k.to_string()))
            })
            .max_by_key(|(f, _)| f.name.len())
    }
}

const fn f(name: &'static str, wire: &'static str, kind: Kind, rw: bool) -> Field {
    Field {
        name,
        wire,
        kind,
        rw,
        deprecated: false,
    }
}

use Kind::*;

pub static POOL: Class = Class {
    cli: "pool",
    wire: "pool",
    plural: "pools",
    fields: &[
        f("uuid", "uuid", Str, false),
        f("name-label", "name_label", Str, true),
        f("name-description", "name_description", Str, true),
        f("master", "master", Ref("host"), false),
        f("default-SR", "default_SR", Ref("SR"), true),
        f("other-config", "other_config", Map, true),
        f("ha-enabled", "ha_enabled", Bool, false),
        f("ha-configuration", "ha_configuration", MapScalar, false),
        f("ha-statefiles", "ha_statefiles", RefSetScalar("VDI"), false),
        f(
            "ha-host-failures-to-tolerate",
            "ha_host_failures_to_tolerate",
            Int,
            true,
        ),
        f("ha-plan-exists-for", "ha_plan_exists_for", Int, false),
        f("ha-allow-overcommit", "ha_allow_overcommit", Bool, true),
        f("ha-overcommitted", "ha_overcommitted", Bool, false),
        f(
            "ha-reboot-vm-on-internal-shutdown",
            "ha_reboot_vm_on_internal_shutdown",
            Bool,
            true,
        ),
        f("ha-cluster-stack", "ha_cluster_stack", Str, false),
    ],
    default_list: &["uuid", "name-label", "name-description", "master", "default-SR"],
    default_filters: &[],
};

pub static HOST: Class = Class {
    cli: "host",
    wire: "host",
    plural: "hosts",
    fields: &[
        f("uuid", "uuid", Str, false),
        f("name-label", "name_label", Str, true),
        f("name-description", "name_description", Str, true),
        f("enabled", "enabled", Bool, false),
        f("other-config", "other_config", Map, true),
        f("hostname", "hostname", Str, false),
        f("address", "address", Str, false),
        f("memory-overhead", "memory_overhead", Int, false),
        f("memory-total", "memory_total", Int, false),
        f("memory-free", "memory_free", Int, false),
        f("host-metrics-live", "live", Bool, false),
        f("ha-statefiles", "ha_statefiles", RefSetScalar("VDI"), false),
        f("ha-network-peers", "ha_network_peers", SetScalar, false),
        f("resident-vms", "resident_VMs", RefSet("VM"), false),
    ],
    default_list: &["uuid", "name-label", "name-description"],
    default_filters: &[],
};

pub static VM: Class = Class {
    cli: "vm",
    wire: "VM",
    plural: "VMs",
    fields: &[
        f("uuid", "uuid", Str, false),
        f("name-label", "name_label", Str, true),
        f("name-description", "name_description", Str, true),
        f("is-a-template", "is_a_template", Bool, false),
        f("is-a-snapshot", "is_a_snapshot", Bool, false),
        f("is-control-domain", "is_control_domain", Bool, false),
        f("power-state", "power_state", PowerState, false),
        f("memory-overhead", "memory_overhead", Int, false),
        f("memory-static-max", "memory_static_max", Bytes, true),
        f("memory-dynamic-max", "memory_dynamic_max", Bytes, true),
        f("memory-dynamic-min", "memory_dynamic_min", Bytes, true),
        f("memory-static-min", "memory_static_min", Bytes, true),
        f("VCPUs-max", "VCPUs_max", Int, true),
        f("resident-on", "resident_on", Ref("host"), false),
        f("dom-id", "domid", Int, false),
        f("affinity", "affinity", Ref("host"), true),
        f("other-config", "other_config", Map, true),
        Field {
            name: "ha-always-run",
            wire: "ha_always_run",
            kind: Bool,
            rw: true,
            deprecated: true,
        },
        f("ha-restart-priority", "ha_restart_priority", Str, true),
        f("start-delay", "start_delay", Int, true),
        f("shutdown-delay", "shutdown_delay", Int, true),
        f("order", "order", Int, true),
    ],
    default_list: &["name-label", "uuid", "power-state"],
    default_filters: &[("is-a-template", "false"), ("is-a-snapshot", "false")],
};

pub static SR: Class = Class {
    cli: "sr",
    wire: "SR",
    plural: "SRs",
    fields: &[
        f("uuid", "uuid", Str, false),
        f("name-label", "name_label", Str, true),
        f("name-description", "name_description", Str, true),
        f("host", "PBDs", SrHost, false),
        f("VDIs", "VDIs", RefSet("VDI"), false),
        f("PBDs", "PBDs", RefSet("PBD"), false),
        f("physical-size", "physical_size", Int, false),
        f("type", "type", Str, false),
        f("content-type", "content_type", Str, false),
        f("shared", "shared", Bool, false),
        f("other-config", "other_config", Map, true),
    ],
    default_list: &["uuid", "name-label", "name-description", "host", "type", "content-type"],
    default_filters: &[],
};

pub static PBD: Class = Class {
    cli: "pbd",
    wire: "PBD",
    plural: "PBDs",
    fields: &[
        f("uuid", "uuid", Str, false),
        f("host-uuid", "host", Ref("host"), false),
        f("sr-uuid", "SR", Ref("SR"), false),
        f("device-config", "device_config", Map, false),
        f("currently-attached", "currently_attached", Bool, false),
    ],
    default_list: &["uuid", "host-uuid", "sr-uuid", "device-config", "currently-attached"],
    default_filters: &[],
};

pub static MESSAGE: Class = Class {
    cli: "message",
    wire: "message",
    plural: "messages",
    fields: &[
        f("uuid", "uuid", Str, false),
        f("name", "name", Str, false),
        f("priority", "priority", Int, false),
        f("class", "cls", Str, false),
        f("obj-uuid", "obj_uuid", Str, false),
        f("timestamp", "timestamp", DateTime, false),
        f("body", "body", Str, false),
    ],
    default_list: &["uuid", "name", "priority", "class", "obj-uuid", "timestamp", "body"],
    default_filters: &[],
};

/// Every class with generated `<class>-*` commands.
pub static CLASSES: &[&Class] = &[&POOL, &HOST, &VM, &SR, &PBD, &MESSAGE];

/// `20240420T12:00:00Z` as `2024-04-20T12:00:00Z`; anything else unchanged.
pub fn rfc3339(wire: &str) -> String {
    let b = wire.as_bytes();
    if b.len() >= 17 && b[8] == b'T' && b[..8].iter().all(u8::is_ascii_digit) {
        format!("{}-{}-{}{}", &wire[..4], &wire[4..6], &wire[6..8], &wire[8..])
    } else if wire.is_empty() {
        "<unknown time>".to_string()
    } else {
        wire.to_string()
    }
}

/// A JSON scalar as text.
pub fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Parse a byte size with an optional `KiB`/`MiB`/`GiB`/`TiB` suffix.
pub fn parse_bytes(text: &str) -> Option<i64> {
    let t = text.trim();
    let (num, shift) = [("KiB", 10), ("MiB", 20), ("GiB", 30), ("TiB", 40)]
        .iter()
        .find_map(|(s, sh)| t.strip_suffix(s).map(|n| (n.trim(), *sh)))
        .unwrap_or((t, 0));
    num.parse::<i64>().ok()?.checked_mul(1i64 << shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_follow_kind_and_setter() {
        assert_eq!(VM.field("uuid").unwrap().label(), "uuid ( RO)");
        assert_eq!(VM.field("name-label").unwrap().label(), "name-label ( RW)");
        assert_eq!(VM.field("other-config").unwrap().label(), "other-config (MRW)");
        assert_eq!(
            VM.field("ha-always-run").unwrap().label(),
            "ha-always-run ( RW) [DEPRECATED]"
        );
        assert_eq!(
            POOL.field("ha-configuration").unwrap().label(),
            "ha-configuration ( RO)"
        );
        assert_eq!(HOST.field("resident-vms").unwrap().label(), "resident-vms (SRO)");
    }

    #[test]
    fn sizes_take_suffixes() {
        assert_eq!(parse_bytes("512MiB"), Some(512 << 20));
        assert_eq!(parse_bytes("2GiB"), Some(2 << 30));
        assert_eq!(parse_bytes("1024"), Some(1024));
        assert_eq!(parse_bytes("lots"), None);
        assert_eq!(parse_bytes("99999999999TiB"), None);
    }

    #[test]
    fn wire_times_become_rfc3339() {
        assert_eq!(rfc3339("20240420T12:00:00Z"), "2024-04-20T12:00:00Z");
        assert_eq!(rfc3339(""), "<unknown time>");
    }

    #[test]
    fn every_wire_field_exists_in_the_api() {
        for class in CLASSES {
            for field in class.fields {
                assert!(
                    xapi_proto::classes::field(class.wire, field.wire).is_some(),
                    "{}.{} is not an API field",
                    class.wire,
                    field.wire
                );
                if field.rw {
                    let spec = xapi_proto::classes::field(class.wire, field.wire).unwrap();
                    assert!(spec.settable, "{}.{} has no setter", class.wire, field.wire);
                }
            }
        }
    }
}
