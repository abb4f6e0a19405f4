//! XAPI error codes, their parameter names and their documentation text.
//!
//! An API error travels as a code plus a list of string parameters
//! (`["HOST_NOT_ENOUGH_FREE_MEMORY", "1073741824", "536870912"]`). The
//! catalogue below pairs each code the pool can raise with the parameter names
//! and the doc sentence from XAPI's datamodel, so `xe` prints exactly what a
//! XenServer admin has seen before: the doc line, then `name: value` lines.

use std::fmt;

/// One API error: a code and its positional string parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: String,
    pub params: Vec<String>,
}

impl ApiError {
    pub fn new(code: &str, params: Vec<String>) -> Self {
        ApiError {
            code: code.to_string(),
            params,
        }
    }

    /// An error with no parameters.
    pub fn bare(code: &str) -> Self {
        ApiError::new(code, Vec::new())
    }

    /// `INTERNAL_ERROR [message]`.
    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(codes::INTERNAL_ERROR, vec![message.into()])
    }

    /// `INVALID_VALUE [field, value]`.
    pub fn invalid_value(field: impl Into<String>, value: impl Into<String>) -> Self {
        ApiError::new(codes::INVALID_VALUE, vec![field.into(), value.into()])
    }

    /// `HANDLE_INVALID [class, handle]`.
    pub fn handle_invalid(class: &str, handle: impl Into<String>) -> Self {
        ApiError::new(codes::HANDLE_INVALID, vec![class.to_string(), handle.into()])
    }

    /// `UUID_INVALID [class, uuid]`.
    pub fn uuid_invalid(class: &str, uuid: impl Into<String>) -> Self {
        ApiError::new(codes::UUID_INVALID, vec![class.to_string(), uuid.into()])
    }

    /// `FIELD_TYPE_ERROR [field]`.
    pub fn field_type(field: impl Into<String>) -> Self {
        ApiError::new(codes::FIELD_TYPE_ERROR, vec![field.into()])
    }

    /// `OPERATION_NOT_ALLOWED [reason]`.
    pub fn not_allowed(reason: impl Into<String>) -> Self {
        ApiError::new(codes::OPERATION_NOT_ALLOWED, vec![reason.into()])
    }

    /// The catalogue entry for this error's code, if there is one.
    pub fn doc(&self) -> Option<&'static ErrorDoc> {
        lookup(&self.code)
    }

    /// The error as `[CODE, params...]`, the form of a JSON-RPC 1.0 error
    /// and of a task's `error_info`.
    pub fn to_strings(&self) -> Vec<String> {
        std::iter::once(self.code.clone())
            .chain(self.params.iter().cloned())
            .collect()
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if !self.params.is_empty() {
            write!(f, " [{}]", self.params.join("; "))?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {}

/// The documentation of one error code, as XAPI's datamodel gives it.
#[derive(Debug)]
pub struct ErrorDoc {
    pub code: &'static str,
    pub params: &'static [&'static str],
    pub doc: &'static str,
}

/// Find the catalogue entry of `code`.
pub fn lookup(code: &str) -> Option<&'static ErrorDoc> {
    CATALOGUE.iter().find(|d| d.code == code)
}

/// Error code constants, so call sites cannot misspell a code.
pub mod codes {
    macro_rules! code_consts {
        ($($name:ident),* $(,)?) => { $(pub const $name: &str = stringify!($name);)* };
    }
    code_consts!(
        INTERNAL_ERROR,
        MESSAGE_PARAMETER_COUNT_MISMATCH,
        MESSAGE_METHOD_UNKNOWN,
        EVENTS_LOST,
        EVENT_FROM_TOKEN_PARSE_FAILURE,
        SESSION_NOT_REGISTERED,
        FIELD_TYPE_ERROR,
        INVALID_VALUE,
        OPERATION_NOT_ALLOWED,
        NOT_IMPLEMENTED,
        HANDLE_INVALID,
        UUID_INVALID,
        SESSION_AUTHENTICATION_FAILED,
        SESSION_INVALID,
        PERMISSION_DENIED,
        MAP_DUPLICATE_KEY,
        CANNOT_CONTACT_HOST,
        HOST_IS_SLAVE,
        HOST_OFFLINE,
        HOST_NOT_LIVE,
        HOST_IS_LIVE,
        HOST_HAS_RESIDENT_VMS,
        HOST_DISABLED,
        HOST_NOT_ENOUGH_FREE_MEMORY,
        NO_HOSTS_AVAILABLE,
        VM_BAD_POWER_STATE,
        VM_REQUIRES_SR,
        VM_NOT_RESIDENT_HERE,
        VM_MIGRATE_FAILED,
        DOMAIN_EXISTS,
        CANNOT_RESET_CONTROL_DOMAIN,
        SR_UNKNOWN_DRIVER,
        SR_BACKEND_FAILURE,
        SR_NOT_EMPTY,
        JOINING_HOST_CANNOT_CONTAIN_SHARED_SRS,
        JOINING_HOST_CANNOT_HAVE_RUNNING_VMS,
        JOINING_HOST_CANNOT_BE_MASTER_OF_OTHER_HOSTS,
        JOINING_HOST_CONNECTION_FAILED,
        JOINING_HOST_SERVICE_FAILED,
        HA_IS_ENABLED,
        HA_OPERATION_WOULD_BREAK_FAILOVER_PLAN,
        HA_CONSTRAINT_VIOLATION_SR_NOT_SHARED,
        HA_NOT_ENABLED,
        HA_HOST_CANNOT_ACCESS_STATEFILE,
        HA_HEARTBEAT_DAEMON_STARTUP_FAILED,
        HA_FAILED_TO_FORM_LIVESET,
        HA_HOST_IS_ARMED,
        HA_ENABLE_IN_PROGRESS,
        HA_DISABLE_IN_PROGRESS,
        HA_LOST_STATEFILE,
        SR_NO_PBDS,
        HOST_STILL_BOOTING,
        HOST_NOT_DISABLED,
        CANNOT_CREATE_STATE_FILE,
        MEMORY_CONSTRAINT_VIOLATION,
        MEMORY_CONSTRAINT_VIOLATION_ORDER,
        VALUE_NOT_SUPPORTED,
        VM_LEASE_HELD,
    );
}

/// Every error code the pool raises or may raise, with XAPI's parameter names
/// and doc text (from `ocaml/idl/datamodel_errors.ml`).
pub static CATALOGUE: &[ErrorDoc] = &[
    ErrorDoc { code: "INTERNAL_ERROR", params: &["message"], doc: "The server failed to handle your request, due to an internal error. The given message may give details useful for debugging the problem." },
    ErrorDoc { code: "MESSAGE_PARAMETER_COUNT_MISMATCH", params: &["method", "expected", "received"], doc: "You tried to call a method with the incorrect number of parameters. The fully-qualified method name that you used, and the number of received and expected parameters are returned." },
    ErrorDoc { code: "MESSAGE_METHOD_UNKNOWN", params: &["method"], doc: "You tried to call a method that does not exist. The method name that you used is echoed." },
    ErrorDoc { code: "MEMORY_CONSTRAINT_VIOLATION", params: &["constraint"], doc: "The dynamic memory range does not satisfy the following constraint." },
    ErrorDoc { code: "MEMORY_CONSTRAINT_VIOLATION_ORDER", params: &[], doc: "The dynamic memory range violates constraint static_min <= dynamic_min <= dynamic_max <= static_max." },
    ErrorDoc { code: "FIELD_TYPE_ERROR", params: &["field"], doc: "The value specified is of the wrong type" },
    ErrorDoc { code: "INVALID_VALUE", params: &["field", "value"], doc: "The value given is invalid" },
    ErrorDoc { code: "OPERATION_NOT_ALLOWED", params: &["reason"], doc: "You attempted an operation that was not allowed." },
    ErrorDoc { code: "NOT_IMPLEMENTED", params: &["function"], doc: "The function is not implemented" },
    ErrorDoc { code: "HANDLE_INVALID", params: &["class", "handle"], doc: "You gave an invalid object reference. The object may have recently been deleted. The class parameter gives the type of reference given, and the handle parameter echoes the bad value given." },
    ErrorDoc { code: "UUID_INVALID", params: &["type", "uuid"], doc: "The uuid you supplied was invalid." },
    ErrorDoc { code: "SESSION_AUTHENTICATION_FAILED", params: &[], doc: "The credentials given by the user are incorrect, so access has been denied, and you have not been issued a session handle." },
    ErrorDoc { code: "SESSION_INVALID", params: &["handle"], doc: "You gave an invalid session reference. It may have been invalidated by a server restart, or timed out. You should get a new session handle, using one of the session.login_ calls. This error does not invalidate the current connection. The handle parameter echoes the bad value given." },
    ErrorDoc { code: "PERMISSION_DENIED", params: &["message"], doc: "Caller not allowed to perform this operation." },
    ErrorDoc { code: "OTHER_OPERATION_IN_PROGRESS", params: &["class", "object", "operation_type", "operation_ref"], doc: "Another operation involving the object is currently in progress" },
    ErrorDoc { code: "MAP_DUPLICATE_KEY", params: &["type", "param_name", "uuid", "key"], doc: "You tried to add a key-value pair to a map, but that key is already there." },
    ErrorDoc { code: "CANNOT_CONTACT_HOST", params: &["host"], doc: "Cannot forward messages because the server cannot be contacted. The server may be switched off or there may be network connectivity problems." },
    ErrorDoc { code: "HOST_IS_SLAVE", params: &["Master IP address"], doc: "You cannot make regular API calls directly on a supporter. Please pass API calls via the coordinator host." },
    ErrorDoc { code: "HOST_OFFLINE", params: &["host"], doc: "You attempted an operation which involves a host which could not be contacted." },
    ErrorDoc { code: "HOST_NOT_LIVE", params: &[], doc: "This operation cannot be completed as the server is not live." },
    ErrorDoc { code: "HOST_IS_LIVE", params: &["host"], doc: "This operation cannot be completed because the server is still live." },
    ErrorDoc { code: "HOST_HAS_RESIDENT_VMS", params: &["host"], doc: "This server cannot be forgotten because there are user VMs still running." },
    ErrorDoc { code: "HOST_DISABLED", params: &["host"], doc: "The specified server is disabled." },
    ErrorDoc { code: "DOMAIN_EXISTS", params: &["vm", "domid"], doc: "The operation could not be performed because a domain still exists for the specified VM." },
    ErrorDoc { code: "CANNOT_RESET_CONTROL_DOMAIN", params: &["vm"], doc: "The power-state of a control domain cannot be reset." },
    ErrorDoc { code: "HOST_NOT_DISABLED", params: &[], doc: "This operation cannot be performed because the host is not disabled. Please disable the host and then try again." },
    ErrorDoc { code: "HOST_STILL_BOOTING", params: &[], doc: "The host toolstack is still initialising. Please wait." },
    ErrorDoc { code: "HOST_NOT_ENOUGH_FREE_MEMORY", params: &["needed", "available"], doc: "Not enough server memory is available to perform this operation." },
    ErrorDoc { code: "NO_HOSTS_AVAILABLE", params: &[], doc: "There were no servers available to complete the specified operation." },
    ErrorDoc { code: "VM_BAD_POWER_STATE", params: &["vm", "expected", "actual"], doc: "You attempted an operation on a VM that was not in an appropriate power state at the time; for example, you attempted to start a VM that was already running. The parameters returned are the VM's handle, and the expected and actual VM state at the time of the call." },
    ErrorDoc { code: "VM_IS_TEMPLATE", params: &["vm"], doc: "The operation attempted is not valid for a template VM" },
    ErrorDoc { code: "VM_REQUIRES_SR", params: &["vm", "sr"], doc: "You attempted to run a VM on a host which doesn't have access to an SR needed by the VM. The VM has at least one VBD attached to a VDI in the SR." },
    ErrorDoc { code: "VM_NOT_RESIDENT_HERE", params: &["vm", "host"], doc: "The specified VM is not currently resident on the specified server." },
    ErrorDoc { code: "VM_MIGRATE_FAILED", params: &["vm", "source", "destination", "msg"], doc: "An error occurred during the migration process." },
    ErrorDoc { code: "VM_IS_PROTECTED", params: &["vm"], doc: "This operation cannot be performed because the specified VM is protected by HA" },
    ErrorDoc { code: "SR_UNKNOWN_DRIVER", params: &["driver"], doc: "The SR could not be connected because the driver was not recognised." },
    ErrorDoc { code: "SR_HAS_PBD", params: &["sr"], doc: "The SR is still connected to a host via a PBD. It cannot be destroyed or forgotten." },
    ErrorDoc { code: "SR_NOT_EMPTY", params: &[], doc: "The SR operation cannot be performed because the SR is not empty." },
    ErrorDoc { code: "SR_BACKEND_FAILURE", params: &["status", "stdout", "stderr"], doc: "There was an SR backend failure." },
    ErrorDoc { code: "VDI_IN_USE", params: &["vdi", "operation"], doc: "This operation cannot be performed because this VDI is in use by some other operation" },
    ErrorDoc { code: "JOINING_HOST_CANNOT_CONTAIN_SHARED_SRS", params: &[], doc: "The server joining the pool cannot contain any shared storage." },
    ErrorDoc { code: "JOINING_HOST_CANNOT_HAVE_RUNNING_VMS", params: &[], doc: "The server joining the pool cannot have any running VMs." },
    ErrorDoc { code: "JOINING_HOST_CANNOT_BE_MASTER_OF_OTHER_HOSTS", params: &[], doc: "The server joining the pool cannot already be a coordinator of another pool." },
    ErrorDoc { code: "JOINING_HOST_CONNECTION_FAILED", params: &[], doc: "There was an error connecting to the host while joining it in the pool." },
    ErrorDoc { code: "JOINING_HOST_SERVICE_FAILED", params: &[], doc: "There was an error connecting to the server. The service contacted didn't reply properly." },
    ErrorDoc { code: "POOL_JOINING_HOST_MUST_HAVE_SAME_PRODUCT_VERSION", params: &[], doc: "The server joining the pool must have the same product version as the pool coordinator." },
    ErrorDoc { code: "HA_FAILED_TO_FORM_LIVESET", params: &[], doc: "HA could not be enabled on the Pool because a liveset could not be formed: check storage and network heartbeat paths." },
    ErrorDoc { code: "HA_HEARTBEAT_DAEMON_STARTUP_FAILED", params: &[], doc: "The server could not join the liveset because the HA daemon failed to start." },
    ErrorDoc { code: "HA_HOST_CANNOT_ACCESS_STATEFILE", params: &[], doc: "The host could not join the liveset because the HA daemon could not access the heartbeat disk." },
    ErrorDoc { code: "HA_HOST_IS_ARMED", params: &["host"], doc: "The operation could not be performed while the server is still armed; it must be disarmed first." },
    // pool-ha's own (no XAPI code says it): a start refused by the VM's
    // lease on its SR (docs/LEASES.md).
    ErrorDoc { code: "VM_LEASE_HELD", params: &["vm", "reason"], doc: "The VM cannot run on this host now: another host holds its lease on the SR of its disks and that host still renews its own lease. It can start here once that host has stopped and its lease has expired." },
    ErrorDoc { code: "HA_IS_ENABLED", params: &[], doc: "The operation could not be performed because HA is enabled on the Pool" },
    ErrorDoc { code: "HA_NOT_ENABLED", params: &[], doc: "The operation could not be performed because HA is not enabled on the Pool" },
    ErrorDoc { code: "HA_ENABLE_IN_PROGRESS", params: &[], doc: "The operation could not be performed because HA enable is in progress" },
    ErrorDoc { code: "HA_DISABLE_IN_PROGRESS", params: &[], doc: "The operation could not be performed because HA disable is in progress" },
    ErrorDoc { code: "HA_NOT_INSTALLED", params: &["host"], doc: "The operation could not be performed because the HA software is not installed on this server." },
    ErrorDoc { code: "HA_HOST_CANNOT_SEE_PEERS", params: &["host", "all", "subset"], doc: "The operation failed because the HA software on the specified server could not see a subset of other servers. Check your network connectivity." },
    ErrorDoc { code: "HA_TOO_FEW_HOSTS", params: &[], doc: "HA can only be enabled for 2 servers or more. Note that 2 servers requires a pre-configured quorum tiebreak script." },
    ErrorDoc { code: "HA_SHOULD_BE_FENCED", params: &["host"], doc: "Server cannot rejoin pool because it should have fenced (it is not in the coordinator's partition)." },
    ErrorDoc { code: "HA_ABORT_NEW_MASTER", params: &["reason"], doc: "This server cannot accept the proposed new coordinator setting at this time." },
    ErrorDoc { code: "HA_NO_PLAN", params: &[], doc: "Cannot find a plan for placement of VMs as there are no other servers available." },
    ErrorDoc { code: "HA_LOST_STATEFILE", params: &[], doc: "This server lost access to the HA statefile." },
    ErrorDoc { code: "HA_POOL_IS_ENABLED_BUT_HOST_IS_DISABLED", params: &[], doc: "This server cannot join the pool because the pool has HA enabled but this server has HA disabled." },
    ErrorDoc { code: "HA_CONSTRAINT_VIOLATION_SR_NOT_SHARED", params: &["SR"], doc: "This operation cannot be performed because the referenced SR is not properly shared. The SR must both be marked as shared and a currently_attached PBD must exist for each host." },
    ErrorDoc { code: "HA_CONSTRAINT_VIOLATION_NETWORK_NOT_SHARED", params: &["network"], doc: "This operation cannot be performed because the referenced network is not properly shared. The network must either be entirely virtual or must be physically present via a currently_attached PIF on every host." },
    ErrorDoc { code: "HA_OPERATION_WOULD_BREAK_FAILOVER_PLAN", params: &[], doc: "This operation cannot be performed because it would invalidate VM failover planning such that the system would be unable to guarantee to restart protected VMs after a Host failure." },
    ErrorDoc { code: "SR_NO_PBDS", params: &["sr"], doc: "The SR has no attached PBDs" },
    ErrorDoc { code: "CANNOT_CREATE_STATE_FILE", params: &[], doc: "An HA statefile could not be created, perhaps because no SR with the appropriate capability was found." },
    ErrorDoc { code: "HOST_EVACUATE_IN_PROGRESS", params: &["host"], doc: "This host is being evacuated." },
    ErrorDoc { code: "CANNOT_EVACUATE_HOST", params: &["errors"], doc: "This server cannot be evacuated." },
    ErrorDoc { code: "HOST_EVACUATE_VM_NOT_HA_PROTECTED", params: &["vm"], doc: "The host cannot be evacuated because HA is enabled on the pool and a VM running on it is not HA-protected (its ha_restart_priority is not set to 'restart'). Set the VM's ha_restart_priority to 'restart', shut down or suspend the VM, or disable HA on the pool before evacuating the host." },
    ErrorDoc { code: "NOT_IN_EMERGENCY_MODE", params: &[], doc: "This pool is not in emergency mode." },
    ErrorDoc { code: "HOST_IN_EMERGENCY_MODE", params: &[], doc: "Cannot perform operation as the host is running in emergency mode." },
    ErrorDoc { code: "TASK_CANCELLED", params: &["task"], doc: "The request was asynchronously canceled." },
    ErrorDoc { code: "EVENTS_LOST", params: &[], doc: "Some events have been lost from the queue and cannot be retrieved." },
    ErrorDoc { code: "SESSION_NOT_REGISTERED", params: &["handle"], doc: "This session is not registered to receive events. You must call event.register before event.next. The session handle you are using is echoed." },
    ErrorDoc { code: "EVENT_FROM_TOKEN_PARSE_FAILURE", params: &["token"], doc: "The event.from token could not be parsed. Valid values include: '', and a value returned from a previous event.from call." },
    ErrorDoc { code: "VALUE_NOT_SUPPORTED", params: &["field", "value", "reason"], doc: "You attempted to set a value that is not supported by this implementation. The fully-qualified field name and the value that you tried to set are returned. Also returned is a developer-only diagnostic reason." },
    ErrorDoc { code: "VM_REQUIRES_VDI", params: &["vm", "vdi"], doc: "VM cannot be started because it requires a VDI which cannot be attached" },
    ErrorDoc { code: "DUPLICATE_VM", params: &["vm"], doc: "Cannot restore this VM because it would create a duplicate" },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_constant_has_a_doc() {
        for code in [
            codes::INTERNAL_ERROR,
            codes::MESSAGE_PARAMETER_COUNT_MISMATCH,
            codes::HOST_NOT_ENOUGH_FREE_MEMORY,
            codes::VM_BAD_POWER_STATE,
            codes::SESSION_INVALID,
            codes::HOST_IS_SLAVE,
            codes::JOINING_HOST_CANNOT_HAVE_RUNNING_VMS,
            codes::MEMORY_CONSTRAINT_VIOLATION,
            codes::MEMORY_CONSTRAINT_VIOLATION_ORDER,
            codes::VALUE_NOT_SUPPORTED,
            codes::HA_OPERATION_WOULD_BREAK_FAILOVER_PLAN,
            codes::VM_LEASE_HELD,
        ] {
            assert!(lookup(code).is_some(), "{code} has no catalogue entry");
        }
    }

    #[test]
    fn catalogue_has_no_duplicate_codes() {
        let mut seen = std::collections::HashSet::new();
        for d in CATALOGUE {
            assert!(seen.insert(d.code), "duplicate {}", d.code);
        }
    }

    #[test]
    fn memory_error_has_xapi_parameter_names() {
        let d = lookup("HOST_NOT_ENOUGH_FREE_MEMORY").expect("entry");
        assert_eq!(d.params, &["needed", "available"]);
        assert_eq!(
            d.doc,
            "Not enough server memory is available to perform this operation."
        );
    }

    #[test]
    fn display_lists_parameters() {
        let e = ApiError::new("UUID_INVALID", vec!["VM".into(), "x".into()]);
        assert_eq!(e.to_string(), "UUID_INVALID [VM; x]");
        assert_eq!(e.to_strings(), vec!["UUID_INVALID", "VM", "x"]);
    }
}
