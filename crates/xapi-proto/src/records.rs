//! The records of the pool database as they travel on the wire.
//!
//! Field names are XAPI's (snake_case, with XAPI's odd capitals such as
//! `resident_VMs` and `default_SR`). References are `OpaqueRef:...` strings;
//! [`NULL_REF`] is the empty reference. Every record deserializes from a
//! partial object, missing fields taking their defaults, which is what
//! `VM.create` and friends accept.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The null reference.
pub const NULL_REF: &str = "OpaqueRef:NULL";

/// A string-to-string map field (`other_config`, `device_config`, ...).
pub type StringMap = BTreeMap<String, String>;

/// A VM's power state. On the wire it is capitalised (`"Running"`); xe prints
/// it in lower case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum PowerState {
    #[default]
    Halted,
    Running,
    Paused,
    Suspended,
}

impl PowerState {
    /// The wire name (`Running`).
    pub fn wire_name(self) -> &'static str {
        match self {
            PowerState::Halted => "Halted",
            PowerState::Running => "Running",
            PowerState::Paused => "Paused",
            PowerState::Suspended => "Suspended",
        }
    }

    /// The name xe prints and XAPI's errors use (`running`).
    pub fn cli_name(self) -> &'static str {
        match self {
            PowerState::Halted => "halted",
            PowerState::Running => "running",
            PowerState::Paused => "paused",
            PowerState::Suspended => "suspended",
        }
    }
}

fn null_ref() -> String {
    NULL_REF.to_string()
}

/// The pool: one per database.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PoolRecord {
    pub uuid: String,
    pub name_label: String,
    pub name_description: String,
    pub master: String,
    #[serde(rename = "default_SR")]
    pub default_sr: String,
    pub ha_enabled: bool,
    pub ha_configuration: StringMap,
    pub ha_statefiles: Vec<String>,
    pub ha_host_failures_to_tolerate: i64,
    pub ha_plan_exists_for: i64,
    pub ha_allow_overcommit: bool,
    pub ha_overcommitted: bool,
    pub ha_reboot_vm_on_internal_shutdown: bool,
    pub ha_cluster_stack: String,
    pub other_config: StringMap,
    /// XAPI's advisory list of the operations allowed now; always empty
    /// here (XAPI computes it per state; clients must not rely on it).
    pub allowed_operations: Vec<String>,
    /// XAPI's running tasks on the object (task ref to operation); empty
    /// here (no operation is tracked as a task on its object).
    pub current_operations: StringMap,
    /// User-specified tags (`add_tags`, `remove_tags`, `set_tags`).
    pub tags: Vec<String>,
}

impl Default for PoolRecord {
    fn default() -> Self {
        PoolRecord {
            uuid: String::new(),
            name_label: String::new(),
            name_description: String::new(),
            master: null_ref(),
            default_sr: null_ref(),
            ha_enabled: false,
            ha_configuration: StringMap::new(),
            ha_statefiles: Vec::new(),
            ha_host_failures_to_tolerate: 0,
            ha_plan_exists_for: 0,
            ha_allow_overcommit: false,
            ha_overcommitted: false,
            ha_reboot_vm_on_internal_shutdown: true,
            ha_cluster_stack: "xhad".to_string(),
            other_config: StringMap::new(),
            allowed_operations: Vec::new(),
            current_operations: StringMap::new(),
            tags: Vec::new(),
        }
    }
}

/// A host. Unlike XAPI, the metrics xe shows (`memory_total`, `memory_free`,
/// `live`) are fields of the host record itself rather than of a separate
/// `host_metrics` object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HostRecord {
    pub uuid: String,
    pub name_label: String,
    pub name_description: String,
    pub hostname: String,
    pub address: String,
    pub enabled: bool,
    pub live: bool,
    pub memory_total: i64,
    pub memory_free: i64,
    pub memory_overhead: i64,
    #[serde(rename = "resident_VMs")]
    pub resident_vms: Vec<String>,
    #[serde(rename = "PBDs")]
    pub pbds: Vec<String>,
    pub ha_statefiles: Vec<String>,
    pub ha_network_peers: Vec<String>,
    pub other_config: StringMap,
    /// The XAPI version this host's API answers as ([`API_VERSION`]).
    #[serde(rename = "API_version_major")]
    pub api_version_major: i64,
    #[serde(rename = "API_version_minor")]
    pub api_version_minor: i64,
    /// XAPI's advisory list of the operations allowed now; always empty
    /// here (XAPI computes it per state; clients must not rely on it).
    pub allowed_operations: Vec<String>,
    /// XAPI's running tasks on the object (task ref to operation); empty
    /// here (no operation is tracked as a task on its object).
    pub current_operations: StringMap,
    /// User-specified tags (`add_tags`, `remove_tags`, `set_tags`).
    pub tags: Vec<String>,
}

/// The XAPI API version hosts report (`host.API_version_major/minor`):
/// that of XenServer 8 and XCP-ng 8.3, whose calls clients make of it.
pub const API_VERSION: (i64, i64) = (2, 21);

impl Default for HostRecord {
    fn default() -> Self {
        HostRecord {
            uuid: String::new(),
            name_label: String::new(),
            name_description: String::new(),
            hostname: String::new(),
            address: String::new(),
            enabled: true,
            live: false,
            memory_total: 0,
            memory_free: 0,
            memory_overhead: 0,
            resident_vms: Vec::new(),
            pbds: Vec::new(),
            ha_statefiles: Vec::new(),
            ha_network_peers: Vec::new(),
            other_config: StringMap::new(),
            api_version_major: API_VERSION.0,
            api_version_minor: API_VERSION.1,
            allowed_operations: Vec::new(),
            current_operations: StringMap::new(),
            tags: Vec::new(),
        }
    }
}

/// A VM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VmRecord {
    pub uuid: String,
    pub name_label: String,
    pub name_description: String,
    pub power_state: PowerState,
    pub resident_on: String,
    /// The running guest's domain id, -1 when halted. Unique per host: the
    /// master compares it with a host's reports to tell old news from new.
    pub domid: i64,
    pub affinity: String,
    pub memory_static_max: i64,
    pub memory_dynamic_max: i64,
    pub memory_dynamic_min: i64,
    pub memory_static_min: i64,
    pub memory_overhead: i64,
    #[serde(rename = "VCPUs_max")]
    pub vcpus_max: i64,
    pub ha_restart_priority: String,
    pub ha_always_run: bool,
    pub order: i64,
    pub start_delay: i64,
    pub shutdown_delay: i64,
    pub is_a_template: bool,
    pub is_control_domain: bool,
    pub is_a_snapshot: bool,
    #[serde(rename = "VBDs")]
    pub vbds: Vec<String>,
    pub other_config: StringMap,
    /// XAPI's advisory list of the operations allowed now; always empty
    /// here (XAPI computes it per state; clients must not rely on it).
    pub allowed_operations: Vec<String>,
    /// XAPI's running tasks on the object (task ref to operation); empty
    /// here (no operation is tracked as a task on its object).
    pub current_operations: StringMap,
    /// User-specified tags (`add_tags`, `remove_tags`, `set_tags`).
    pub tags: Vec<String>,
    /// Operations blocked, with the error to give; read-only and empty
    /// here (XAPI's `set_blocked_operations` is not served).
    pub blocked_operations: StringMap,
}

impl Default for VmRecord {
    fn default() -> Self {
        VmRecord {
            uuid: String::new(),
            name_label: String::new(),
            name_description: String::new(),
            power_state: PowerState::Halted,
            resident_on: null_ref(),
            domid: -1,
            affinity: null_ref(),
            memory_static_max: 0,
            memory_dynamic_max: 0,
            memory_dynamic_min: 0,
            memory_static_min: 0,
            memory_overhead: 0,
            vcpus_max: 1,
            ha_restart_priority: String::new(),
            ha_always_run: false,
            order: 0,
            start_delay: 0,
            shutdown_delay: 0,
            is_a_template: false,
            is_control_domain: false,
            is_a_snapshot: false,
            vbds: Vec::new(),
            other_config: StringMap::new(),
            allowed_operations: Vec::new(),
            current_operations: StringMap::new(),
            tags: Vec::new(),
            blocked_operations: StringMap::new(),
        }
    }
}

/// A storage repository.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct SrRecord {
    pub uuid: String,
    pub name_label: String,
    pub name_description: String,
    #[serde(rename = "type")]
    pub sr_type: String,
    pub content_type: String,
    pub shared: bool,
    #[serde(rename = "PBDs")]
    pub pbds: Vec<String>,
    #[serde(rename = "VDIs")]
    pub vdis: Vec<String>,
    pub physical_size: i64,
    pub other_config: StringMap,
    /// XAPI's advisory list of the operations allowed now; always empty
    /// here (XAPI computes it per state; clients must not rely on it).
    pub allowed_operations: Vec<String>,
    /// XAPI's running tasks on the object (task ref to operation); empty
    /// here (no operation is tracked as a task on its object).
    pub current_operations: StringMap,
    /// User-specified tags (`add_tags`, `remove_tags`, `set_tags`).
    pub tags: Vec<String>,
}

/// The connection of one host to one SR.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PbdRecord {
    pub uuid: String,
    pub host: String,
    #[serde(rename = "SR")]
    pub sr: String,
    pub device_config: StringMap,
    pub currently_attached: bool,
}

impl Default for PbdRecord {
    fn default() -> Self {
        PbdRecord {
            uuid: String::new(),
            host: null_ref(),
            sr: null_ref(),
            device_config: StringMap::new(),
            currently_attached: false,
        }
    }
}

/// A virtual disk: a file on an SR.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VdiRecord {
    pub uuid: String,
    pub name_label: String,
    pub name_description: String,
    #[serde(rename = "SR")]
    pub sr: String,
    pub virtual_size: i64,
    #[serde(rename = "VBDs")]
    pub vbds: Vec<String>,
    /// The file name of the disk inside the SR's directory.
    pub location: String,
    pub other_config: StringMap,
}

impl Default for VdiRecord {
    fn default() -> Self {
        VdiRecord {
            uuid: String::new(),
            name_label: String::new(),
            name_description: String::new(),
            sr: null_ref(),
            virtual_size: 0,
            vbds: Vec::new(),
            location: String::new(),
            other_config: StringMap::new(),
        }
    }
}

/// The attachment of a VDI to a VM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VbdRecord {
    pub uuid: String,
    #[serde(rename = "VM")]
    pub vm: String,
    #[serde(rename = "VDI")]
    pub vdi: String,
    pub userdevice: String,
    pub mode: String,
    #[serde(rename = "type")]
    pub vbd_type: String,
    pub currently_attached: bool,
}

impl Default for VbdRecord {
    fn default() -> Self {
        VbdRecord {
            uuid: String::new(),
            vm: null_ref(),
            vdi: null_ref(),
            userdevice: "0".to_string(),
            mode: "RW".to_string(),
            vbd_type: "Disk".to_string(),
            currently_attached: false,
        }
    }
}

/// A pool message (alert).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct MessageRecord {
    pub uuid: String,
    pub name: String,
    pub priority: i64,
    pub cls: String,
    pub obj_uuid: String,
    /// XAPI's wire datetime, `20240420T12:00:00Z`.
    pub timestamp: String,
    pub body: String,
}

/// A host's TLS certificate (XAPI's `Certificate`, type `host`): the
/// fingerprint the pool's other hosts pin when they call that host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct CertificateRecord {
    pub uuid: String,
    pub name: String,
    /// `host` (the only kind kept: each host's own server certificate).
    #[serde(rename = "type")]
    pub kind: String,
    pub host: String,
    /// XAPI's wire datetimes.
    pub not_before: String,
    pub not_after: String,
    /// SHA-256 of the DER certificate, `AB:CD:...` (XAPI keeps the old name
    /// beside the new one).
    pub fingerprint: String,
    pub fingerprint_sha256: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_vm_record_takes_defaults() {
        let vm: VmRecord = serde_json::from_str(r#"{"name_label":"web01","memory_static_max":1024}"#).unwrap();
        assert_eq!(vm.name_label, "web01");
        assert_eq!(vm.power_state, PowerState::Halted);
        assert_eq!(vm.resident_on, NULL_REF);
        assert_eq!(vm.vcpus_max, 1);
    }

    #[test]
    fn wire_names_are_xapis() {
        let v = serde_json::to_value(HostRecord::default()).unwrap();
        assert!(v.get("resident_VMs").is_some());
        let v = serde_json::to_value(PoolRecord::default()).unwrap();
        assert!(v.get("default_SR").is_some());
        let v = serde_json::to_value(VmRecord {
            power_state: PowerState::Running,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(v["power_state"], "Running");
        assert_eq!(v["VCPUs_max"], 1);
    }
}
