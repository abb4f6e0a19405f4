//! `docs/cli.md`, generated from the command table: exit codes, output
//! formats and the JSON schema, then every command with its parameters
//! and an example. `xe __reference > docs/cli.md` writes it; a test checks
//! the file is current.

use crate::commands::{Handler, Selectors, Spec};

/// An example invocation of `spec`.
pub fn example(spec: &Spec) -> String {
    let class = spec.name.split('-').next().unwrap_or_default();
    let uuid = format!("uuid=$(xe {class}-list --minimal | cut -d, -f1)");
    let generated = match spec.handler {
        Handler::List(_) => Some(format!("xe {} params=uuid,name-label --format json", spec.name)),
        Handler::ParamList(_) => Some(format!("xe {} {uuid}", spec.name)),
        Handler::ParamGet(_) => Some(format!("xe {} {uuid} param-name=name-label", spec.name)),
        Handler::ParamSet(_) => Some(format!("xe {} {uuid} name-description=\"rack 4\"", spec.name)),
        Handler::ParamAdd(_) => Some(format!("xe {} {uuid} param-name=other-config owner=ops", spec.name)),
        Handler::ParamRemove(_) => Some(format!(
            "xe {} {uuid} param-name=other-config param-key=owner",
            spec.name
        )),
        Handler::ParamClear(_) => Some(format!("xe {} {uuid} param-name=other-config", spec.name)),
        Handler::Help | Handler::Run(_) => None,
    };
    if let Some(e) = generated {
        return e;
    }
    let text = match spec.name.as_str() {
        "help" => "xe help vm-start",
        "diagnostic-vm-status" => "xe diagnostic-vm-status uuid=$(xe vm-list name-label=web01 --minimal)",
        "host-disable" => "xe host-disable host=host2",
        "host-enable" => "xe host-enable host=host2",
        "host-evacuate" => "xe host-evacuate host=host2",
        "host-reboot" => "xe host-disable host=host2 && xe host-evacuate host=host2 && xe host-reboot host=host2",
        "host-shutdown" => "xe host-disable host=host2 && xe host-evacuate host=host2 && xe host-shutdown host=host2",
        "host-emergency-ha-disable" => "xe host-emergency-ha-disable --force -s host3",
        "host-declare-dead" => "xe host-declare-dead uuid=$(xe host-list name-label=host3 --minimal) --force",
        "host-forget" => "xe host-forget uuid=$(xe host-list name-label=host3 --minimal) --force",
        "pool-emergency-reset-master" => "xe pool-emergency-reset-master master-address=10.0.0.2 -s host3",
        "pool-emergency-transition-to-master" => "xe pool-emergency-transition-to-master -s host2",
        "pool-ha-compute-hypothetical-max-host-failures-to-tolerate" => {
            "xe pool-ha-compute-hypothetical-max-host-failures-to-tolerate vm-uuid=<uuid> restart-priority=restart"
        }
        "pool-ha-compute-max-host-failures-to-tolerate" => "xe pool-ha-compute-max-host-failures-to-tolerate --explain",
        "pool-ha-compute-vm-failover-plan" => "xe pool-ha-compute-vm-failover-plan host-uuids=<uuid>,<uuid>",
        "pool-ha-disable" => "xe pool-ha-disable",
        "pool-ha-status" => "xe pool-ha-status --format json",
        "pool-ha-plan-snapshot" => "xe pool-ha-plan-snapshot file-name=pool.json && ha-plan max-failures pool.json",
        "audit-list" => "xe audit-list limit=20 user=root",
        "alert-delivery-list" => "xe alert-delivery-list outcome=failed",
        "message-destroy" => "xe message-destroy uuid=$(xe message-list name=HA_HOST_FAILED --minimal | cut -d, -f1)",
        "message-destroy-all" => "xe message-destroy-all before=2025-01-01T00:00:00Z priority=5",
        "pool-ha-enable" => "xe pool-ha-enable heartbeat-sr-uuids=<sr uuid> ha-config:timeout=30",
        "pool-join" => "xe pool-join master-address=10.0.0.1 master-username=root master-password=secret",
        "pool-designate-new-master" => {
            "xe pool-designate-new-master host-uuid=$(xe host-list name-label=host2 --minimal)"
        }
        "pool-eject" => "xe pool-eject host-uuid=$(xe host-list name-label=host3 --minimal) --force",
        "pool-secret-rotate" => "xe pool-secret-rotate",
        "sr-create" => "xe sr-create name-label=shared type=dir shared=true device-config:location=/srv/pool-sr",
        "vm-install" => "xe vm-install new-name-label=web02 memory=2GiB disk-size=20GiB",
        "vm-migrate" => "xe vm-migrate vm=web01 host=host3 --live",
        "vm-reset-powerstate" => "xe vm-reset-powerstate vm=web01 --force && xe vm-start vm=web01",
        "vm-shutdown" => "xe vm-shutdown vm=web01 --force",
        "vm-start" => "xe vm-start vm=web01 on=host2",
        "vm-destroy" => "xe vm-destroy uuid=$(xe vm-list name-label=web01 --minimal)",
        "vm-uninstall" => "xe vm-uninstall vm=web02 --force",
        _ => "",
    };
    text.to_string()
}

const HEAD: &str = r#"# xe command reference

Generated from xe's command table by `xe __reference > docs/cli.md`; a test
fails when this file is out of date. `xe help <command>` prints the same
parameters and description in xe's own layout.

## Exit codes

| code | when |
|---|---|
| 0 | The command succeeded. Also `xe`, `xe -help`, `xe --help` and `xe help ...` (usage goes to stderr for the first three), and a bad `-p` port, which prints the usage as XenServer's xe does. |
| 1 | Anything failed: an unknown command, a missing required parameter, a malformed word, a value of the wrong type (these four are refused before xe connects), a login refused, the pool unreachable, an error from the pool, or, with `--multiple`, at least one object the operation failed on. |

A successful command writes nothing to stderr, unless
`report-ignored-params=warn` is given (on the command, in `XE_EXTRA_ARGS`
or in `~/.xe`): then each parameter the command did not use is named on
stderr as `Ignored parameter: <name>`.

Errors go to stderr. Errors from the pool print XAPI's description, then one
`name: value` line per parameter; input errors print one line saying what
is wrong, then `For usage run: 'xe help'` (or `'xe help <command>'`).

## Output

- Default: xe's records, `key ( RO): value`, two empty lines after each.
- `--minimal`: the first field of every record on one line, comma
  separated (`,` and `\` escaped with `\`).
- `--format json` (or `format=json`), on `<class>-list` and
  `<class>-param-list` only:
  - `<class>-list` prints an array with one object per record;
    `<class>-param-list` prints one object.
  - Keys are the CLI field names (`name-label`, `power-state`), sorted; a
    list shows the fields of `params=` (default: the same fields as xe's
    records), a param-list shows every field.
  - Values are typed: strings; integers (memory in bytes); `true`/`false`;
    maps as objects of strings (`other-config`); sets as arrays of
    strings; references as the object's uuid, or `null` when unset
    (`resident-on` of a halted VM).
  - New fields may be added; a field keeps its name and type.
- `--format table`: the same records as a table with a header row (a
  param-list prints `field | value` rows). For people, not for parsing.
- `--minimal` and `--format` cannot be combined.

Progress bars (`host-evacuate`, `pool-ha-enable`) and questions
(`vm-shutdown` of a protected VM, `host-disable` lowering the failures to
tolerate) appear only when stdin and stderr are a terminal. Scripts answer
questions with flags: `--force`, `lower-ntol=true`.

## Alerts

The master delivers each new pool message (`xe message-list`) whose
priority is at most a target's threshold (1 is the most urgent, 5
information) to the targets the pool's `other-config` names:

| key | meaning |
|---|---|
| `mail-destination` | XAPI's: where mail goes (addresses, comma separated); mail is on when it is set |
| `ssmtp-mailhub` | XAPI's: the SMTP server, `host[:port]` (port 25 by default) |
| `mail-min-priority` | XAPI's: mail messages of this priority or more urgent (default 3) |
| `mail-sender` | XAPI's: the From address (default `noreply@<host name>`) |
| `ssmtp-usestarttls`, `ssmtp-usetls` | `YES`: STARTTLS, or TLS from the first byte (default: plain SMTP, as ssmtp) |
| `ssmtp-authuser`, `ssmtp-authpass` | a login at the SMTP server; the password is a secret (below) |
| `pool-ha-webhook-url` | pool-ha's: an `http://` or `https://` URL to POST each message to, as JSON |
| `pool-ha-webhook-secret` | pool-ha's: the shared key of the body's HMAC-SHA256 signature, header `X-Pool-HA-Signature: sha256=<hex>`; required (nothing is sent unsigned); a secret |
| `pool-ha-webhook-min-priority` | pool-ha's: the webhook's threshold (default 3) |

```sh
xe pool-param-set uuid=$(xe pool-list --minimal) other-config:mail-destination=ops@example.com \
    other-config:ssmtp-mailhub=mail.example.com:25 other-config:mail-min-priority=2
xe pool-param-set uuid=$(xe pool-list --minimal) other-config:pool-ha-webhook-url=https://hooks.example.com/pool \
    other-config:pool-ha-webhook-secret="$(cat webhook.key)"
```

Secrets (`pool-ha-webhook-secret`, `ssmtp-authpass`) are sealed by the
pool when they are set: the pool's settings, `xe` and the audit log show
`sealed1:...` or `(secret)`, never the value. The webhook's body holds
`uuid`, `name`, `priority`, `class`, `obj_uuid`, `timestamp`, `body`,
`pool_uuid`, `pool_name`; headers `X-Pool-HA-Message` (the message's uuid)
and `X-Pool-HA-Attempt`. A failed delivery is tried up to 5 times, 1, 2, 4
and 8 s apart; every attempt is listed by `xe alert-delivery-list`.

`xe message-list` filters as xe's (`priority=1`, `name=HA_HOST_FAILED`);
pool-ha adds `since=<RFC 3339 time>`: only the messages stamped after it
(`message.get_since`). `xe message-destroy uuid=` (or `uuids=a,b`) and
`xe message-destroy-all [before=] [after=] [priority=]` are XAPI's.

## Audit

Every state-changing call an admin makes (not the `get_*` reads, `event.*`
or calls between hosts) is logged by the host that serves it, with the
session's user, the method, its arguments (passwords and secrets shown as
`(secret)`) and the result, in its log and in its newest 10,000 rows of
`xe audit-list`. Logins are audited, failed ones too.

## Commands
"#;

/// The whole of `docs/cli.md`.
pub fn markdown(table: &[Spec]) -> String {
    let mut out = HEAD.to_string();
    for spec in table.iter().filter(|s| s.name != "help") {
        out += &format!("\n### {}\n\n", spec.name);
        if spec.hidden {
            out += "Not listed by `xe help --all` (as in XAPI).\n\n";
        }
        out += &format!("{}\n\n", spec.help);
        let list = |names: &[String]| {
            if names.is_empty() {
                "none".to_string()
            } else {
                names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
            }
        };
        out += &format!("- Required: {}\n", list(&spec.reqd));
        out += &format!("- Optional: {}\n", list(&spec.optn));
        match spec.selectors {
            Some(Selectors::Vm) => out += "- Selects VMs: `vm=<name or uuid>` or any VM field as a filter; `--multiple` for more than one.\n",
            Some(Selectors::Host) => out += "- Selects hosts: `host=<name or uuid>` or any host field as a filter; `--multiple` for more than one.\n",
            None => {}
        }
        if spec.local {
            out += "- Runs on the host `-s` names, never forwarded to the master.\n";
        }
        out += &format!("\n```sh\n{}\n```\n", example(spec));
    }
    out
}
