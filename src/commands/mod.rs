//! The command table: every xe command, its parameters, help and handler.
//!
//! The table is the single source of `xe help`, of required-parameter
//! checks and of dispatch. Generated `<class>-list`, `-param-list`,
//! `-param-get` and `-param-set` commands come from [`crate::fields`].

mod class;
mod ha;
mod ha_admin;
mod ha_status;
mod host;
mod journal;
mod message;
mod pool;
mod vm;

/// The question xe asks before something a person should confirm.
pub(crate) use vm::ask;

use crate::error::XeError;
use crate::fields::{Class, CLASSES};
use crate::params::Params;
use crate::printer::{Format, Out};
use crate::records::Records;

/// Which selectors a command takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selectors {
    Vm,
    Host,
}

/// What runs a command.
#[derive(Clone, Copy)]
pub enum Handler {
    /// `xe help`: needs no connection.
    Help,
    List(&'static Class),
    ParamList(&'static Class),
    ParamGet(&'static Class),
    ParamSet(&'static Class),
    ParamAdd(&'static Class),
    ParamRemove(&'static Class),
    ParamClear(&'static Class),
    Run(fn(&mut Ctx) -> Result<(), XeError>),
}

/// One command.
pub struct Spec {
    pub name: String,
    pub reqd: Vec<String>,
    pub optn: Vec<String>,
    pub help: String,
    /// Listed by plain `xe help`.
    pub standard: bool,
    /// Left out of every listing (XAPI's `Hidden`), though it runs.
    pub hidden: bool,
    pub selectors: Option<Selectors>,
    pub handler: Handler,
    /// Runs against the host xe talks to, never forwarded to the master.
    pub local: bool,
    /// Takes `format=` / `--format` though it is no list command.
    pub formatted: bool,
}

/// What a handler works with.
pub struct Ctx<'a, 'c> {
    pub records: Records<'c>,
    pub params: &'a Params,
    pub out: &'a mut Out,
    pub spec: &'a Spec,
    /// `--format` (only list and param-list commands take one).
    pub format: Format,
    /// Where xe connected, for a second connection (progress).
    pub connection: &'a crate::argv::Connection,
}

impl Ctx<'_, '_> {
    /// Draw progress while `op` runs, when on a terminal: `poll` gets its
    /// own connection to the pool and reports (done, total).
    pub fn with_progress<T>(
        &mut self,
        label: String,
        poll: impl Fn(&mut crate::conn::Conn) -> Option<(u64, u64)> + Send + 'static,
        op: impl FnOnce(&mut Self) -> Result<T, XeError>,
    ) -> Result<T, XeError> {
        if !crate::progress::wanted(self.out.is_minimal()) {
            return op(self);
        }
        let connection = self.connection.clone();
        let mut conn: Option<crate::conn::Conn> = None;
        let progress = crate::progress::Progress::start(label, move || {
            if conn.is_none() {
                conn = crate::conn::Conn::open(&connection, false).ok();
            }
            poll(conn.as_mut()?)
        });
        let result = op(self);
        progress.finish();
        result
    }
}

impl<'a> Ctx<'a, '_> {
    /// The command's own parameter names (never filters).
    pub fn consumed(&self) -> Vec<&'a str> {
        self.spec
            .reqd
            .iter()
            .chain(self.spec.optn.iter())
            .map(String::as_str)
            .collect()
    }

    pub fn param(&self, key: &str) -> Option<&str> {
        self.params.get(key)
    }

    pub fn flag(&self, key: &str) -> Result<bool, XeError> {
        self.params.flag(key).map_err(XeError::Cli)
    }
}

pub(crate) fn make_spec(name: &str, reqd: &[&str], optn: &[&str], help: &str, handler: Handler) -> Spec {
    Spec {
        name: name.to_string(),
        reqd: reqd.iter().map(|s| s.to_string()).collect(),
        optn: optn.iter().map(|s| s.to_string()).collect(),
        help: help.to_string(),
        standard: false,
        hidden: false,
        selectors: None,
        handler,
        local: false,
        formatted: false,
    }
}

pub(crate) fn make_formatted(mut s: Spec) -> Spec {
    s.formatted = true;
    s
}

pub(crate) fn make_local(mut s: Spec) -> Spec {
    s.local = true;
    s
}

pub(crate) fn make_standard(mut s: Spec) -> Spec {
    s.standard = true;
    s
}

pub(crate) fn make_hidden(mut s: Spec) -> Spec {
    s.hidden = true;
    s
}

pub(crate) fn make_with_selectors(mut s: Spec, sel: Selectors) -> Spec {
    s.selectors = Some(sel);
    s
}

/// The whole command table, sorted by name.
pub fn table() -> Vec<Spec> {
    let mut t = Vec::new();
    for class in CLASSES {
        t.extend(class::generated(class));
    }
    t.push(make_hidden(make_spec(
        "help",
        &[],
        &["all", "minimal"],
        "Get help on a command, or list the commands.",
        Handler::Help,
    )));
    t.extend(vm::commands());
    t.extend(pool::commands());
    t.extend(ha::commands());
    t.extend(ha_admin::commands());
    t.extend(ha_status::commands());
    t.extend(host::commands());
    t.extend(message::commands());
    t.extend(journal::commands());
    t.sort_by(|a, b| a.name.cmp(&b.name));
    t
}

/// Find a command by name.
pub fn find<'t>(table: &'t [Spec], name: &str) -> Option<&'t Spec> {
    table.iter().find(|s| s.name == name)
}

/// Check the command's required parameters.
pub fn check_required(spec: &Spec, params: &Params) -> Result<(), XeError> {
    for r in &spec.reqd {
        if !params.has(r) {
            return Err(XeError::Usage(format!("Required parameter not found: {r}")));
        }
    }
    Ok(())
}

/// Parameters that are switches wherever a command takes them.
pub const SWITCHES: &[&str] = &[
    "force",
    "multiple",
    "minimal",
    "all",
    "live",
    "paused",
    "soft",
    "explain",
    "lower-ntol",
    "auto-enable",
    "copy",
    "compress",
    "watch",
];

/// Parameters that are counts wherever a command takes them.
const COUNTS: &[&str] = &["batch-size"];

/// Check what can be checked without the pool, so that bad input sends
/// nothing: switches are booleans, counts are numbers, a param-set's
/// fields exist, are writable and get values of their type.
pub fn preflight(spec: &Spec, params: &Params) -> Result<(), XeError> {
    let takes = |k: &str| crate::records::STDPARAMS.contains(&k) || spec.reqd.iter().chain(&spec.optn).any(|p| p == k);
    for (k, v) in params.iter() {
        if SWITCHES.contains(&k) && takes(k) {
            crate::params::parse_bool(k, v).map_err(XeError::Cli)?;
        }
        if COUNTS.contains(&k) && takes(k) && v.parse::<u32>().is_err() {
            return Err(XeError::cli(format!(
                "Failed to parse parameter '{k}': expecting an integer"
            )));
        }
    }
    if let Handler::ParamSet(class) = spec.handler {
        class::param_set_changes(class, params)?;
    }
    Ok(())
}

/// The parameters the command does not use (xe ignores them; with
/// `report-ignored-params=warn` this xe names them on stderr). List
/// commands use every parameter as a filter, and param-set and param-add
/// take any field, so they ignore nothing.
pub fn ignored(spec: &Spec, params: &Params) -> Vec<String> {
    if matches!(
        spec.handler,
        Handler::List(_) | Handler::ParamSet(_) | Handler::ParamAdd(_) | Handler::Help
    ) {
        return Vec::new();
    }
    let selector_class = match spec.selectors {
        Some(Selectors::Vm) => Some((&crate::fields::VM, "vm")),
        Some(Selectors::Host) => Some((&crate::fields::HOST, "host")),
        None => None,
    };
    let used = |k: &str| {
        crate::records::STDPARAMS.contains(&k)
            || spec.reqd.iter().chain(&spec.optn).any(|p| match p.strip_suffix(':') {
                Some(map) => k.strip_prefix(map).is_some_and(|rest| rest.starts_with(':')),
                None => p == k,
            })
            || selector_class.is_some_and(|(class, pseudo)| {
                k == pseudo
                    || class.field(k).is_some()
                    || k.split_once(':').is_some_and(|(f, _)| class.field(f).is_some())
                    || class.map_field_prefix(k).is_some()
            })
    };
    params
        .iter()
        .map(|(k, _)| k)
        .filter(|k| !used(k))
        .map(str::to_string)
        .collect()
}

/// The `--format` a command was given; only list and param-list commands
/// take one, and not with `--minimal`.
pub fn output_format(spec: &Spec, params: &Params, minimal: bool) -> Result<Format, XeError> {
    let format = Format::parse(params.get("format")).map_err(XeError::Cli)?;
    if format == Format::Xe {
        return Ok(format);
    }
    if !spec.formatted && !matches!(spec.handler, Handler::List(_) | Handler::ParamList(_)) {
        return Err(XeError::cli(format!(
            "{} does not take format=: only <class>-list and <class>-param-list commands do",
            spec.name
        )));
    }
    if minimal {
        return Err(XeError::cli("--minimal and format= cannot be used together"));
    }
    Ok(format)
}

/// Run `op` on every object of `class` the command's selectors pick. With
/// several, failures are reported per object on stdout and the command
/// fails at the end.
pub(crate) fn each_selected(
    ctx: &mut Ctx,
    class: &Class,
    op: impl Fn(&mut Ctx, &str, &serde_json::Value) -> Result<(), XeError>,
) -> Result<(), XeError> {
    let consumed = ctx.consumed();
    let selected = ctx.records.select_for_op(class, ctx.params, &consumed)?;
    if let [(r, record)] = selected.as_slice() {
        return op(ctx, r, record);
    }
    let mut failed = false;
    for (r, record) in &selected {
        if let Err(e) = op(ctx, r, record) {
            failed = true;
            let uuid = record.get("uuid").map(crate::fields::scalar_text).unwrap_or_default();
            let records = &mut ctx.records;
            let text = e.render(&mut |r| records.describe(r));
            ctx.out.list(vec![format!("operation failed on {uuid}: {text}")]);
        }
    }
    if failed {
        return Err(XeError::Plain(String::new()));
    }
    Ok(())
}

/// Run a command that needs the pool.
pub fn run(ctx: &mut Ctx) -> Result<(), XeError> {
    match ctx.spec.handler {
        Handler::Help => Ok(()),
        Handler::List(c) => class::list(ctx, c),
        Handler::ParamList(c) => class::param_list(ctx, c),
        Handler::ParamGet(c) => class::param_get(ctx, c),
        Handler::ParamSet(c) => class::param_set(ctx, c),
        Handler::ParamAdd(c) => class::param_add(ctx, c),
        Handler::ParamRemove(c) => class::param_remove(ctx, c),
        Handler::ParamClear(c) => class::param_clear(ctx, c),
        Handler::Run(f) => f(ctx),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_issue_command_set_is_present() {
        let t = table();
        for name in [
            "help",
            "pool-list",
            "pool-param-list",
            "pool-param-get",
            "pool-param-set",
            "host-list",
            "host-param-list",
            "host-param-get",
            "vm-list",
            "vm-param-list",
            "vm-param-get",
            "vm-param-set",
            "vm-install",
            "vm-start",
            "vm-shutdown",
            "vm-migrate",
            "vm-uninstall",
            "sr-create",
            "sr-list",
            "pool-join",
            "message-list",
        ] {
            assert!(find(&t, name).is_some(), "{name} missing");
        }
        let mut names: Vec<&str> = t.iter().map(|s| s.name.as_str()).collect();
        names.dedup();
        assert_eq!(names.len(), t.len(), "duplicate command names");
    }
}
