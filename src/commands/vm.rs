//! VM commands: vm-install, vm-start, vm-shutdown, vm-migrate,
//! vm-reset-powerstate, vm-destroy, vm-uninstall.

use std::io::{BufRead, IsTerminal, Write};

use serde_json::{json, Value};

use super::{make_spec, make_standard, make_with_selectors, Ctx, Handler, Selectors, Spec};
use crate::error::XeError;
use crate::fields::{parse_bytes, scalar_text, HOST, SR, VM};

pub fn commands() -> Vec<Spec> {
    let vm_op = |name: &str, optn: &[&str], help: &str, f: fn(&mut Ctx) -> Result<(), XeError>| {
        make_standard(make_with_selectors(
            make_spec(name, &[], optn, help, Handler::Run(f)),
            Selectors::Vm,
        ))
    };
    vec![
        make_standard(make_spec(
            "vm-install",
            &["new-name-label"],
            &[
                "sr-name-label",
                "sr-uuid",
                "template",
                "copy-bios-strings-from",
                "memory",
                "disk-size",
            ],
            "Install a new VM from a template. The template parameter can match either the template name or the uuid. This pool has no templates: 'template' is accepted and ignored, 'copy-bios-strings-from' is refused; the VM gets 'memory' bytes of memory (suffixes KiB, MiB, GiB, TiB; default 1GiB) and a disk of 'disk-size' (default 8GiB) on the SR named by sr-uuid or sr-name-label, else on the pool's default SR.",
            Handler::Run(install),
        )),
        vm_op(
            "vm-start",
            &["force", "on", "paused"],
            "Start the selected VM(s). Where pooling is enabled, the host on which to start can be specified with the 'on' parameter that takes a uuid. The optional parameter '--force' will bypass any hardware-compatibility warnings.",
            start,
        ),
        vm_op(
            "vm-shutdown",
            &["force"],
            "Shutdown the selected VM(s). The optional argument --force will forcibly shut down the VM.",
            shutdown,
        ),
        vm_op(
            "vm-migrate",
            &[
                "live",
                "host",
                "host-uuid",
                "remote-master",
                "remote-username",
                "remote-password",
                "remote-network",
                "force",
                "copy",
                "compress",
                "vif:",
                "vdi:",
                "image-format:",
            ],
            "Migrate the selected VM(s). The parameter '--live' will migrate the VM without shutting it down. The 'host' parameter matches can be either the name or the uuid of the host. If you are migrating a VM to a remote pool, you will need to specify the remote-master, remote-username, and remote-password parameters. remote-master is the network address of the master host. To migrate to a particular host within a remote pool, you may additionally specify the host or host-uuid parameters. Also for cross-pool migration, setting 'copy=true' will enable the copy mode so that a stopped vm can be copied, instead of migrating, to the destination pool. The vif and vdi mapping parameters take the form 'vif:<source vif uuid>=<dest network uuid>' and 'vdi:<source vdi uuid>=<dest sr uuid>'. You can also specify the destination image format of the VDI using 'image-format:<source vdi uuid>=<destination image format>'. Unfortunately, destination uuids cannot be tab-completed.",
            migrate,
        ),
        vm_op(
            "vm-reset-powerstate",
            &["force"],
            "Force the VM powerstate to halted in the management toolstack database only. This command is used to recover a VM that is marked as 'running', but is known to be on a dead slave host that will not recover. This is a potentially dangerous operation: you must ensure that the VM you are forcing to 'halted' is definitely not running anywhere.",
            reset_powerstate,
        ),
        make_spec(
            "vm-destroy",
            &["uuid"],
            &[],
            "Destroy a VM. This leaves the storage associated with the VM intact. To delete storage too, use vm-uninstall.",
            Handler::Run(destroy),
        ),
        vm_op(
            "vm-uninstall",
            &["force"],
            "Uninstall a VM. This operation will destroy those VDIs that are marked RW and connected to this VM only. To simply destroy the VM record, use vm-destroy.",
            uninstall,
        ),
    ]
}

/// Run `op` on every selected VM.
fn each_vm(ctx: &mut Ctx, op: impl Fn(&mut Ctx, &str, &Value) -> Result<(), XeError>) -> Result<(), XeError> {
    super::each_selected(ctx, &VM, op)
}

/// A host named by uuid, name-label or hostname.
fn host_ref(ctx: &mut Ctx, name: &str) -> Result<String, XeError> {
    let mut p = crate::params::Params::default();
    p.push("host", name);
    let hosts = ctx.records.select(&HOST, &p, &[], false)?;
    match hosts.as_slice() {
        [] => Err(XeError::cli("No matching hosts found")),
        [(r, _)] => Ok(r.clone()),
        _ => Err(XeError::cli(
            "Multiple matching hosts found. --multiple required to complete the operation",
        )),
    }
}

fn start(ctx: &mut Ctx) -> Result<(), XeError> {
    let force = ctx.flag("force")?;
    let paused = ctx.flag("paused")?;
    let params = ctx.params;
    let on = match params.get("on") {
        Some(h) => Some(host_ref(ctx, h)?),
        None => None,
    };
    each_vm(ctx, |ctx, vm, _| {
        match &on {
            Some(h) => ctx
                .records
                .conn
                .call("VM.start_on", vec![json!(vm), json!(h), json!(paused), json!(force)]),
            None => ctx
                .records
                .conn
                .call("VM.start", vec![json!(vm), json!(paused), json!(force)]),
        }
        .map(|_| ())
    })
}

fn shutdown(ctx: &mut Ctx) -> Result<(), XeError> {
    let force = ctx.flag("force")?;
    let method = if force { "VM.hard_shutdown" } else { "VM.clean_shutdown" };
    let ha_on = ctx
        .records
        .all("pool")?
        .values()
        .any(|p| p.get("ha_enabled").and_then(Value::as_bool) == Some(true));
    each_vm(ctx, |ctx, vm, record| {
        let protected = record.get("ha_restart_priority").and_then(Value::as_str) == Some("restart");
        if ha_on && protected && !force && std::io::stdin().is_terminal() {
            let name = record.get("name_label").map(scalar_text).unwrap_or_default();
            ask(&format!(
                "VM {name} is protected by HA. Shut down from here, it stays down: HA will not restart it until it is started again."
            ))?;
        }
        ctx.records.conn.call(method, vec![json!(vm)]).map(|_| ())
    })
}

/// XAPI's cross-pool migration parameters, which this pool does not do.
const CROSS_POOL: &[&str] = &[
    "remote-master",
    "remote-username",
    "remote-password",
    "remote-network",
    "copy",
    "compress",
];

fn migrate(ctx: &mut Ctx) -> Result<(), XeError> {
    ctx.flag("live")?;
    let cross_pool = ctx
        .params
        .iter()
        .map(|(k, _)| k)
        .find(|k| CROSS_POOL.contains(k) || ["vif:", "vdi:", "image-format:"].iter().any(|p| k.starts_with(p)));
    if let Some(k) = cross_pool {
        return Err(XeError::cli(format!(
            "Cross-pool migration is not supported ('{k}' was given): migrate within the pool with host= or host-uuid="
        )));
    }
    let name = ctx
        .param("host")
        .or(ctx.param("host-uuid"))
        .map(str::to_string)
        .ok_or_else(|| XeError::Usage("Required parameter not found: host".into()))?;
    let host = host_ref(ctx, &name)?;
    each_vm(ctx, |ctx, vm, _| {
        ctx.records
            .conn
            .call("VM.pool_migrate", vec![json!(vm), json!(host), json!({"live": "true"})])
            .map(|_| ())
    })
}

/// `vm-reset-powerstate`: only with `--force`, as xe (no question asked).
fn reset_powerstate(ctx: &mut Ctx) -> Result<(), XeError> {
    if !ctx.flag("force")? {
        return Err(XeError::cli(NO_FORCE));
    }
    each_vm(ctx, |ctx, vm, _| {
        ctx.records
            .conn
            .call("VM.power_state_reset", vec![json!(vm)])
            .map(|_| ())
    })
}

/// xe's refusal of a dangerous operation without `--force`.
pub(super) const NO_FORCE: &str =
    "This operation is dangerous and may cause data loss. This operation must be forced (use --force).";

/// Ask on a terminal; refuse without `--force` elsewhere.
fn confirm(ctx: &Ctx, question: &str) -> Result<(), XeError> {
    if ctx.flag("force")? {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(XeError::cli(NO_FORCE));
    }
    ask(question)
}

/// Ask `question` on the terminal; `Aborted.` unless the answer is `yes`.
pub(crate) fn ask(question: &str) -> Result<(), XeError> {
    eprint!("{question}\nType 'yes' to continue\n");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| XeError::cli(e.to_string()))?;
    if line.trim() == "yes" {
        Ok(())
    } else {
        Err(XeError::cli("Aborted."))
    }
}

fn uninstall(ctx: &mut Ctx) -> Result<(), XeError> {
    each_vm(ctx, |ctx, vm, record| {
        let uuid = record.get("uuid").map(scalar_text).unwrap_or_default();
        let name = record.get("name_label").map(scalar_text).unwrap_or_default();
        let mut vdis = Vec::new();
        for vbd in record.get("VBDs").and_then(Value::as_array).into_iter().flatten() {
            let vbd = ctx.records.conn.call("VBD.get_record", vec![vbd.clone()])?;
            if vbd.get("mode").and_then(Value::as_str) == Some("RW") {
                vdis.push(vbd.get("VDI").cloned().unwrap_or_default());
            }
        }
        confirm(
            ctx,
            &format!(
                "The VM {uuid} ({name}) and its {} disk(s) are about to be destroyed.",
                vdis.len()
            ),
        )?;
        if record.get("power_state").and_then(Value::as_str) != Some("Halted") {
            ctx.records.conn.call("VM.hard_shutdown", vec![json!(vm)])?;
        }
        ctx.records.conn.call("VM.destroy", vec![json!(vm)])?;
        for vdi in vdis {
            ctx.records.conn.call("VDI.destroy", vec![vdi])?;
        }
        Ok(())
    })
}

/// `vm-destroy uuid=`: the VM's record only (XAPI's `vm_destroy`); its
/// disks stay. The server refuses a VM that is not halted.
fn destroy(ctx: &mut Ctx) -> Result<(), XeError> {
    let uuid = ctx.param("uuid").unwrap_or_default().to_string();
    let vm = ctx.records.conn.call("VM.get_by_uuid", vec![json!(uuid)])?;
    let control = ctx.records.conn.call("VM.get_is_control_domain", vec![vm.clone()])?;
    if control.as_bool() == Some(true) {
        return Err(XeError::Api(xapi_proto::ApiError::new(
            "OPERATION_NOT_ALLOWED",
            vec!["You cannot destroy a control domain via the CLI".into()],
        )));
    }
    ctx.records.conn.call("VM.destroy", vec![vm])?;
    Ok(())
}

fn install(ctx: &mut Ctx) -> Result<(), XeError> {
    let name = ctx.param("new-name-label").unwrap_or_default().to_string();
    if ctx.param("copy-bios-strings-from").is_some() {
        return Err(XeError::cli(
            "copy-bios-strings-from is not supported: this pool has no templates or BIOS strings",
        ));
    }
    let size = |ctx: &Ctx, key: &str, default: i64| -> Result<i64, XeError> {
        match ctx.param(key) {
            None => Ok(default),
            Some(t) => parse_bytes(t).filter(|b| *b > 0).ok_or_else(|| {
                XeError::cli(format!(
                    "Failed to parse field '{key}': expecting an integer (possibly with suffix KiB, MiB, GiB, TiB), got '{t}'"
                ))
            }),
        }
    };
    let memory = size(ctx, "memory", 1 << 30)?;
    let disk = size(ctx, "disk-size", 8 << 30)?;
    let sr_uuid = ctx.param("sr-uuid").map(str::to_string);
    let sr_name = ctx.param("sr-name-label").map(str::to_string);
    let sr = match (sr_uuid, sr_name) {
        (Some(u), _) => ctx.records.conn.call("SR.get_by_uuid", vec![json!(u)])?,
        (None, Some(n)) => {
            let mut p = crate::params::Params::default();
            p.push("sr", &n);
            let srs = ctx.records.select(&SR, &p, &[], false)?;
            match srs.first() {
                Some((r, _)) => json!(r),
                None => return Err(XeError::cli(format!("No SR named '{n}'"))),
            }
        }
        (None, None) => {
            let pools = ctx.records.all("pool")?;
            let default = pools
                .values()
                .next()
                .and_then(|p| p.get("default_SR"))
                .cloned()
                .unwrap_or_default();
            if default.as_str().is_none_or(|r| r == "OpaqueRef:NULL") {
                return Err(XeError::cli("No SR specified and Pool default SR is null"));
            }
            default
        }
    };
    let vm = ctx.records.conn.call(
        "VM.create",
        vec![json!({"name_label": name, "memory_static_max": memory})],
    )?;
    let created = ctx
        .records
        .conn
        .call(
            "VDI.create",
            vec![json!({"name_label": format!("{name} disk"), "SR": sr, "virtual_size": disk})],
        )
        .and_then(|vdi| {
            ctx.records.conn.call(
                "VBD.create",
                vec![json!({"VM": vm, "VDI": vdi, "userdevice": "0", "mode": "RW"})],
            )
        });
    if let Err(e) = created {
        let _ = ctx.records.conn.call("VM.destroy", vec![vm.clone()]);
        return Err(e);
    }
    let uuid = ctx.records.conn.call("VM.get_uuid", vec![vm])?;
    ctx.out.list(vec![scalar_text(&uuid)]);
    Ok(())
}
