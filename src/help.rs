//! `xe help`, `xe help --all`, `xe help --minimal --all`, `xe help <cmd>`,
//! and the usage banner, in xe's own format (so tools written for xe, its
//! bash completion among them, read ours).

use crate::commands::{Selectors, Spec};
use crate::params::Params;
use crate::printer::Out;

/// The banner of `xe -help` (printed on stderr).
pub const USAGE: &str = "Usage:
  xe <command>
    [ -s <server> ]            XenServer host
    [ -p <port> ]              XenServer port number
    [ -u <username> -pw <password> | -pwf <password file> ]
                               User authentication (password or file)
    [ --nossl ]                Disable SSL/TLS
    [ --debug ]                Enable debug output
    [ --debug-on-fail ]        Enable debug output only on failure
    [ --minimal ]              Output only values in a comma-separated lists
    [ --traceparent <value> ]  Distributed tracing context
    [ --trace ]                Show task stacktrace on failure
    [ <other arguments> ... ]  Command-specific options

A full list of commands can be obtained by running
  xe help -s <server> -p <port>";

const HELP_HEADER: &str = "Usage:
  xe <command>
    [ -s <server> ]            XenServer host
    [ -p <port> ]              XenServer port number
    [ -u <username> -pw <password> | -pwf <password file> ]
                               User authentication (password or file)
    [ --nossl ]                Disable SSL/TLS
    [ --debug ]                Enable debug output
    [ --debug-on-fail ]        Enable debug output only on failure
    [ --traceparent <value> ]  Distributed tracing context
    [ <other arguments> ... ]  Command-specific options

To get help on a specific command:
  xe help <command>

";

const VM_SELECTORS_INFO: &str = " VMs can be specified by filtering the full list of VMs on the values of zero or more fields. For example, specifying 'uuid=<some_uuid>' will select only the VM with that uuid, and 'power-state=halted' will select only VMs whose 'power-state' field is equal to 'halted'. The special pseudo-field 'vm' matches either of name-label or uuid. Where multiple VMs are matching, the option '--multiple' must be specified to perform the operation. The full list of fields that can be matched can be obtained by the command 'xe vm-list params=all'. If no parameters to select VMs are given, the operation will be performed on all VMs.";
const HOST_SELECTORS_INFO: &str = " Hosts can be specified by filtering the full list of hosts on the values of zero or more fields. For example, specifying 'uuid=<some_uuid>' will select only the host with that uuid, and 'enabled=true' will select only hosts whose 'enabled' field is equal to 'true'. The special pseudo-field 'host' matches any of hostname, name-label or uuid. Where multiple hosts are matching, and the operation can be performed on multiple hosts, the option '--multiple' must be specified to perform the operation. The full list of fields that can be matched can be obtained by the command 'xe host-list params=all'. If no parameters to select hosts are given, the operation will be performed on all hosts.";
/// Wrap names into lines of at most 74 columns, indented by 4, as xe does.
fn make_list(names: &[&str]) -> Vec<String> {
    let indent = "    ";
    let Some((first, rest)) = names.split_first() else {
        return vec![indent.to_string()];
    };
    let mut lines = Vec::new();
    let mut cur = format!("{indent}{first}");
    for n in rest {
        if cur.len() + n.len() > 74 {
            lines.push(std::mem::replace(&mut cur, format!("{indent}{n}")));
        } else {
            cur = format!("{cur}, {n}");
        }
    }
    lines.push(cur);
    lines
}

/// The help record of one command.
fn command_record(spec: &Spec) -> Vec<(String, String)> {
    let mut optional = spec.optn.clone();
    let desc = match spec.selectors {
        Some(Selectors::Vm) => {
            optional.push("<vm-selectors>".into());
            format!("{}{VM_SELECTORS_INFO}", spec.help)
        }
        Some(Selectors::Host) => {
            optional.push("<host-selectors>".into());
            format!("{}{HOST_SELECTORS_INFO}", spec.help)
        }
        None => spec.help.clone(),
    };
    vec![
        ("command name        ".into(), spec.name.clone()),
        ("reqd params     ".into(), spec.reqd.join(", ")),
        ("optional params ".into(), optional.join(", ")),
        ("description     ".into(), desc),
    ]
}

/// `xe help ...`.
pub fn help(table: &[Spec], params: &Params, out: &mut Out) {
    let asked: Vec<&str> = params
        .iter()
        .map(|(k, _)| k)
        .filter(|k| !["server", "username", "password", "port", "minimal", "all"].contains(k))
        .collect();
    if !asked.is_empty() {
        for name in asked {
            match table.iter().find(|s| s.name == name) {
                Some(spec) => out.table(vec![command_record(spec)]),
                None => out.list(vec![format!("Unknown command '{name}'")]),
            }
        }
        return;
    }
    let all = params.flag("all").unwrap_or(false);
    let names: Vec<&str> = table
        .iter()
        .filter(|s| !s.hidden && (all || s.standard))
        .map(|s| s.name.as_str())
        .collect();
    if out.is_minimal() {
        out.list(names.iter().map(|s| s.to_string()).collect());
        return;
    }
    if all {
        let (host, rest): (Vec<&str>, Vec<&str>) = names.iter().partition(|n| n.starts_with("host-"));
        let (vm, other): (Vec<&str>, Vec<&str>) = rest.iter().partition(|n| n.starts_with("vm-"));
        out.list(vec![format!("{HELP_HEADER}Full command list\n-----------------\n")]);
        out.list(make_list(&host));
        out.list(make_list(&[""]));
        out.list(make_list(&vm));
        out.list(make_list(&[""]));
        out.list(make_list(&other));
    } else {
        out.list(vec![format!(
            "{HELP_HEADER}To get a full listing of commands:\n  xe help --all\n\nCommon command list\n-------------------\n"
        )]);
        out.list(make_list(&names));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_wrap_at_74_columns() {
        let names = [
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
            "c",
        ];
        let lines = make_list(&names);
        assert_eq!(lines[0], "    aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
        assert_eq!(lines[1], "    bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb, c");
    }

    /// `xe help vm-uninstall` once sent the reader to a `vm-destroy` xe
    /// did not have: every `<class>-<verb>` a help text names is a command
    /// (words that are parameters, such as `host-uuid`, aside).
    #[test]
    fn every_command_a_help_text_names_exists() {
        let table = crate::commands::table();
        let names: Vec<&str> = table.iter().map(|s| s.name.as_str()).collect();
        let params: Vec<&str> = table
            .iter()
            .flat_map(|s| s.reqd.iter().chain(&s.optn))
            .map(|p| p.trim_end_matches(':'))
            .collect();
        let classes: Vec<&str> = crate::fields::CLASSES.iter().map(|c| c.cli).collect();
        // The project's name and an other-config key.
        let not_commands = ["pool-ha", "pool-ha-webhook-url"];
        let mut missing = Vec::new();
        for spec in &table {
            for word in spec.help.split(|c: char| !(c.is_ascii_lowercase() || c == '-')) {
                let word = word.trim_matches('-');
                let Some((class, _)) = word.split_once('-') else {
                    continue;
                };
                if classes.contains(&class)
                    && !names.contains(&word)
                    && !params.contains(&word)
                    && !not_commands.contains(&word)
                    && !word.ends_with("-uuid")
                    && !word.ends_with("-uuids")
                {
                    missing.push(format!("{}: {word}", spec.name));
                }
            }
        }
        assert!(missing.is_empty(), "help texts name commands xe lacks: {missing:?}");
        assert!(names.contains(&"vm-destroy"));
    }

    #[test]
    fn command_help_has_xe_layout() {
        let table = crate::commands::table();
        let mut params = Params::default();
        params.push("pool-join", "");
        let mut out = Out::new(false);
        help(&table, &params, &mut out);
        assert_eq!(
            out.finish(),
            "command name            : pool-join\n        reqd params     : master-address, master-username, master-password\n        optional params : force\n        description     : Instruct host to join an existing pool.\n\n\n"
        );
    }
}
