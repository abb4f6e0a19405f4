//! The API classes and the type and mutability of their fields.
//!
//! The server generates `Class.get_<field>` for every field listed here and
//! `Class.set_<field>` for the settable ones, and checks each setter's value
//! against the field's type (`FIELD_TYPE_ERROR` otherwise). Maps listed as
//! settable also get `add_to_<field>` and `remove_from_<field>`, sets
//! `add_<field>` and `remove_<field>` (`VM.add_tags`), as XAPI names them.

/// The type of a field as JSON carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    String,
    Int,
    Bool,
    /// An `OpaqueRef:` to an object of the named class.
    Ref(&'static str),
    /// An array of strings or refs.
    Set,
    /// An object of string to string.
    Map,
}

impl FieldType {
    /// `value` as this type, or `None` when it is not of it. An integer
    /// may come as a string of digits (XML-RPC sends XAPI's int64s so, and
    /// XAPI takes them so on either wire).
    pub fn coerce(self, value: serde_json::Value) -> Option<serde_json::Value> {
        match (self, &value) {
            (FieldType::Int, serde_json::Value::String(s)) => s.parse::<i64>().ok().map(serde_json::Value::from),
            _ => self.accepts(&value).then_some(value),
        }
    }

    /// Does `value` have this type?
    pub fn accepts(self, value: &serde_json::Value) -> bool {
        use serde_json::Value;
        match (self, value) {
            (FieldType::String, Value::String(_)) => true,
            (FieldType::Ref(_), Value::String(s)) => s.starts_with("OpaqueRef:"),
            (FieldType::Int, Value::Number(n)) => n.is_i64(),
            (FieldType::Bool, Value::Bool(_)) => true,
            (FieldType::Set, Value::Array(a)) => a.iter().all(Value::is_string),
            (FieldType::Map, Value::Object(m)) => m.values().all(Value::is_string),
            _ => false,
        }
    }
}

/// One field of a class.
#[derive(Debug)]
pub struct FieldSpec {
    /// The wire name (`ha_restart_priority`).
    pub name: &'static str,
    pub ty: FieldType,
    /// Whether `set_<name>` exists.
    pub settable: bool,
}

const fn ro(name: &'static str, ty: FieldType) -> FieldSpec {
    FieldSpec {
        name,
        ty,
        settable: false,
    }
}

const fn rw(name: &'static str, ty: FieldType) -> FieldSpec {
    FieldSpec {
        name,
        ty,
        settable: true,
    }
}

use FieldType::{Bool, Int, Map, Ref, Set, String as Str};

/// The classes the API serves, by their wire name.
pub const CLASSES: &[&str] = &[
    "pool",
    "host",
    "VM",
    "SR",
    "PBD",
    "VDI",
    "VBD",
    "message",
    "Certificate",
];

pub static POOL_FIELDS: &[FieldSpec] = &[
    ro("uuid", Str),
    rw("name_label", Str),
    rw("name_description", Str),
    ro("master", Ref("host")),
    rw("default_SR", Ref("SR")),
    ro("ha_enabled", Bool),
    ro("ha_configuration", Map),
    ro("ha_statefiles", Set),
    rw("ha_host_failures_to_tolerate", Int),
    ro("ha_plan_exists_for", Int),
    rw("ha_allow_overcommit", Bool),
    ro("ha_overcommitted", Bool),
    rw("ha_reboot_vm_on_internal_shutdown", Bool),
    ro("ha_cluster_stack", Str),
    rw("other_config", Map),
    ro("allowed_operations", Set),
    ro("current_operations", Map),
    rw("tags", Set),
];

pub static HOST_FIELDS: &[FieldSpec] = &[
    ro("uuid", Str),
    rw("name_label", Str),
    rw("name_description", Str),
    ro("hostname", Str),
    ro("address", Str),
    ro("enabled", Bool),
    ro("live", Bool),
    ro("memory_total", Int),
    ro("memory_free", Int),
    ro("memory_overhead", Int),
    ro("resident_VMs", Set),
    ro("PBDs", Set),
    ro("ha_statefiles", Set),
    ro("ha_network_peers", Set),
    rw("other_config", Map),
    ro("API_version_major", Int),
    ro("API_version_minor", Int),
    ro("allowed_operations", Set),
    ro("current_operations", Map),
    rw("tags", Set),
];

pub static VM_FIELDS: &[FieldSpec] = &[
    ro("uuid", Str),
    rw("name_label", Str),
    rw("name_description", Str),
    ro("power_state", Str),
    ro("resident_on", Ref("host")),
    ro("domid", Int),
    rw("affinity", Ref("host")),
    rw("memory_static_max", Int),
    rw("memory_dynamic_max", Int),
    rw("memory_dynamic_min", Int),
    rw("memory_static_min", Int),
    ro("memory_overhead", Int),
    rw("VCPUs_max", Int),
    rw("ha_restart_priority", Str),
    rw("ha_always_run", Bool),
    rw("order", Int),
    rw("start_delay", Int),
    rw("shutdown_delay", Int),
    ro("is_a_template", Bool),
    ro("is_control_domain", Bool),
    ro("is_a_snapshot", Bool),
    ro("VBDs", Set),
    rw("other_config", Map),
    ro("allowed_operations", Set),
    ro("current_operations", Map),
    rw("tags", Set),
    ro("blocked_operations", Map),
];

pub static SR_FIELDS: &[FieldSpec] = &[
    ro("uuid", Str),
    rw("name_label", Str),
    rw("name_description", Str),
    ro("type", Str),
    ro("content_type", Str),
    ro("shared", Bool),
    ro("PBDs", Set),
    ro("VDIs", Set),
    ro("physical_size", Int),
    rw("other_config", Map),
    ro("allowed_operations", Set),
    ro("current_operations", Map),
    rw("tags", Set),
];

pub static PBD_FIELDS: &[FieldSpec] = &[
    ro("uuid", Str),
    ro("host", Ref("host")),
    ro("SR", Ref("SR")),
    ro("device_config", Map),
    ro("currently_attached", Bool),
];

pub static VDI_FIELDS: &[FieldSpec] = &[
    ro("uuid", Str),
    rw("name_label", Str),
    rw("name_description", Str),
    ro("SR", Ref("SR")),
    ro("virtual_size", Int),
    ro("VBDs", Set),
    ro("location", Str),
    rw("other_config", Map),
];

pub static VBD_FIELDS: &[FieldSpec] = &[
    ro("uuid", Str),
    ro("VM", Ref("VM")),
    ro("VDI", Ref("VDI")),
    ro("userdevice", Str),
    ro("mode", Str),
    ro("type", Str),
    ro("currently_attached", Bool),
];

pub static MESSAGE_FIELDS: &[FieldSpec] = &[
    ro("uuid", Str),
    ro("name", Str),
    ro("priority", Int),
    ro("cls", Str),
    ro("obj_uuid", Str),
    ro("timestamp", Str),
    ro("body", Str),
];

/// A host's TLS certificate, as the pool knows it (XAPI's `Certificate`):
/// what other hosts pin when they call it.
pub static CERTIFICATE_FIELDS: &[FieldSpec] = &[
    ro("uuid", Str),
    ro("name", Str),
    ro("type", Str),
    ro("host", Ref("host")),
    ro("not_before", Str),
    ro("not_after", Str),
    ro("fingerprint", Str),
    ro("fingerprint_sha256", Str),
];

/// The fields of `class`, or `None` for a class the API does not serve.
pub fn fields(class: &str) -> Option<&'static [FieldSpec]> {
    Some(match class {
        "pool" => POOL_FIELDS,
        "host" => HOST_FIELDS,
        "VM" => VM_FIELDS,
        "SR" => SR_FIELDS,
        "PBD" => PBD_FIELDS,
        "VDI" => VDI_FIELDS,
        "VBD" => VBD_FIELDS,
        "message" => MESSAGE_FIELDS,
        "Certificate" => CERTIFICATE_FIELDS,
        _ => return None,
    })
}

/// The spec of one field.
pub fn field(class: &str, name: &str) -> Option<&'static FieldSpec> {
    fields(class)?.iter().find(|f| f.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::*;

    fn keys<T: serde::Serialize>(record: T) -> Vec<String> {
        let v = serde_json::to_value(record).unwrap();
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    }

    fn names(specs: &[FieldSpec]) -> Vec<String> {
        let mut k: Vec<String> = specs.iter().map(|f| f.name.to_string()).collect();
        k.sort();
        k
    }

    #[test]
    fn specs_list_exactly_the_record_fields() {
        assert_eq!(names(POOL_FIELDS), keys(PoolRecord::default()));
        assert_eq!(names(HOST_FIELDS), keys(HostRecord::default()));
        assert_eq!(names(VM_FIELDS), keys(VmRecord::default()));
        assert_eq!(names(SR_FIELDS), keys(SrRecord::default()));
        assert_eq!(names(PBD_FIELDS), keys(PbdRecord::default()));
        assert_eq!(names(VDI_FIELDS), keys(VdiRecord::default()));
        assert_eq!(names(VBD_FIELDS), keys(VbdRecord::default()));
        assert_eq!(names(MESSAGE_FIELDS), keys(MessageRecord::default()));
        assert_eq!(names(CERTIFICATE_FIELDS), keys(CertificateRecord::default()));
    }

    #[test]
    fn types_check_values() {
        use serde_json::json;
        assert!(Int.accepts(&json!(3)));
        assert!(!Int.accepts(&json!("3")));
        assert!(Ref("host").accepts(&json!("OpaqueRef:abc")));
        assert!(!Ref("host").accepts(&json!("abc")));
        assert!(Map.accepts(&json!({"a": "b"})));
        assert!(!Map.accepts(&json!({"a": 1})));
    }
}
