//! Shell completion: what `xe __complete WORD...` prints, and the bash, zsh
//! and fish scripts that call it (`xe __completions SHELL`, also checked in
//! under `completions/`).
//!
//! The words are the command line after `xe`, the last one being the word
//! under the cursor (empty after a space). The answer is one candidate per
//! line, `word<TAB>description`; each candidate is the whole word, so
//! `vm=we` completes to `vm=web01`. Command names and parameter names come
//! from the command table; values of `vm=`, `host=`, `sr=`, `on=`, `uuid=`,
//! `*-uuid=`, `params=` and `param-name=` come from the pool, through one
//! `get_all_records` per class with a short timeout and a few seconds'
//! cache on disk, and nothing is printed when the pool does not answer.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::argv;
use crate::commands::{self, Handler, Selectors, Spec};
use crate::fields::{scalar_text, Class, Kind, CLASSES};

/// How long values fetched from the pool are reused.
const CACHE_FOR: Duration = Duration::from_secs(10);
/// The longest a TAB waits for the pool.
const POOL_TIMEOUT: Duration = Duration::from_secs(2);

/// One completion: the whole word and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub word: String,
    pub description: String,
}

fn candidate(word: impl Into<String>, description: impl Into<String>) -> Candidate {
    Candidate {
        word: word.into(),
        description: description.into(),
    }
}

/// The first sentence of a help text.
fn first_sentence(help: &str) -> String {
    match help.find(". ") {
        Some(i) => help[..=i].to_string(),
        None => help.to_string(),
    }
}

/// The candidates for `words` (after `xe`; the last is being completed).
/// `pool` is asked for live values of a class (its records).
pub fn complete(words: &[String], pool: &mut dyn FnMut(&Class) -> Vec<Value>) -> Vec<Candidate> {
    let table = commands::table();
    let (current, before) = match words.split_last() {
        Some((c, b)) => (c.as_str(), b),
        None => ("", &[][..]),
    };
    // Words that are options or their values do not name the command.
    let mut rest = Vec::new();
    let mut skip = false;
    for w in before {
        if skip {
            skip = false;
        } else if ["-s", "-h", "-p", "-u", "-pw", "-pwf", "--traceparent", "--format"].contains(&w.as_str()) {
            skip = true;
        } else if !w.starts_with('-') {
            rest.push(w.as_str());
        }
    }
    let command_names = |prefix: &str| -> Vec<Candidate> {
        table
            .iter()
            .filter(|s| !s.hidden && s.name.starts_with(prefix))
            .map(|s| candidate(&s.name, first_sentence(&s.help)))
            .collect()
    };
    let Some(&command) = rest.first() else {
        return command_names(current);
    };
    if command == "help" && rest.len() == 1 {
        return command_names(current);
    }
    let Some(spec) = commands::find(&table, command) else {
        return Vec::new();
    };
    if let Some((map, key)) = current.split_once(':') {
        if !map.contains('=') && !key.contains('=') {
            return map_keys(spec, map, key);
        }
    }
    match current.split_once('=') {
        Some((key, prefix)) => values(spec, key, prefix, pool)
            .into_iter()
            .map(|c| candidate(format!("{key}={}", c.word), c.description))
            .collect(),
        None => parameter_names(spec, &rest[1..], current),
    }
}

/// The class a command works on, from its selectors or its name.
fn class_of(spec: &Spec) -> Option<&'static Class> {
    match (spec.selectors, spec.handler) {
        (Some(Selectors::Vm), _) => class_named("vm"),
        (Some(Selectors::Host), _) => class_named("host"),
        (
            _,
            Handler::List(c)
            | Handler::ParamList(c)
            | Handler::ParamGet(c)
            | Handler::ParamSet(c)
            | Handler::ParamAdd(c)
            | Handler::ParamRemove(c)
            | Handler::ParamClear(c),
        ) => Some(c),
        _ => spec.name.split('-').next().and_then(class_named),
    }
}

fn class_named(cli: &str) -> Option<&'static Class> {
    CLASSES.iter().copied().find(|c| c.cli == cli)
}

/// `name=` (or `name:` for maps) for the command's parameters not given yet.
fn parameter_names(spec: &Spec, given: &[&str], prefix: &str) -> Vec<Candidate> {
    let given: Vec<&str> = given.iter().map(|w| w.split('=').next().unwrap_or(w)).collect();
    let mut out = Vec::new();
    let mut add = |name: &str, what: &str| {
        let word = if name.ends_with(':') {
            name.to_string()
        } else {
            format!("{name}=")
        };
        if word.starts_with(prefix) && !given.contains(&name) {
            out.push(candidate(word, what));
        }
    };
    for p in &spec.reqd {
        add(p, "required");
    }
    for p in &spec.optn {
        add(p, "optional");
    }
    match spec.selectors {
        Some(Selectors::Vm) => add("vm", "a VM's name or uuid"),
        Some(Selectors::Host) => add("host", "a host's name or uuid"),
        None => {}
    }
    out
}

/// The keys this pool reads from a map parameter (`ha-config:<TAB>`), as
/// `map:key=`; nothing for maps of free keys.
fn map_keys(spec: &Spec, map: &str, prefix: &str) -> Vec<Candidate> {
    let param = format!("{map}:");
    if !spec.reqd.contains(&param) && !spec.optn.contains(&param) {
        return Vec::new();
    }
    let keys: &[(&str, &str)] = match map {
        "ha-config" => &[("timeout", "seconds a silent host has before it is declared dead")],
        "device-config" => &[("location", "the SR's directory (the same path on every host)")],
        _ => &[],
    };
    keys.iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(k, d)| candidate(format!("{map}:{k}="), *d))
        .collect()
}

/// Values for `key=` on `spec`.
fn values(spec: &Spec, key: &str, prefix: &str, pool: &mut dyn FnMut(&Class) -> Vec<Value>) -> Vec<Candidate> {
    let fixed = |options: &[(&str, &str)]| -> Vec<Candidate> {
        options
            .iter()
            .filter(|(v, _)| v.starts_with(prefix))
            .map(|(v, d)| candidate(*v, *d))
            .collect()
    };
    if commands::SWITCHES.contains(&key)
        || key.starts_with("is-")
        || key.ends_with("enabled")
        || key == "ha-always-run"
        || key == "ha-allow-overcommit"
        || key == "shared"
    {
        return fixed(&[("true", ""), ("false", "")]);
    }
    match key {
        "ha-restart-priority" => {
            return fixed(&[
                ("restart", "protected: restarted when its host fails"),
                ("best-effort", "restarted if there is room"),
            ])
        }
        "format" => return fixed(&[("json", "typed JSON"), ("table", "a table with a header")]),
        "restart-priority" => return fixed(&[("restart", ""), ("best-effort", "")]),
        _ => {}
    }
    let live = |cli: &str, pool: &mut dyn FnMut(&Class) -> Vec<Value>, by_uuid: bool| -> Vec<Candidate> {
        let Some(class) = class_named(cli) else {
            return Vec::new();
        };
        let mut out: Vec<Candidate> = pool(class)
            .iter()
            .filter(|r| !r.get("is_a_template").and_then(Value::as_bool).unwrap_or(false))
            .filter(|r| !r.get("is_control_domain").and_then(Value::as_bool).unwrap_or(false))
            .filter_map(|r| {
                let uuid = r.get("uuid").map(scalar_text)?;
                let name = r.get("name_label").map(scalar_text).unwrap_or_default();
                Some(if by_uuid {
                    candidate(uuid, name)
                } else {
                    candidate(name, uuid)
                })
            })
            .filter(|c| !c.word.is_empty() && c.word.starts_with(prefix))
            .collect();
        out.sort_by(|a, b| a.word.cmp(&b.word));
        out.dedup_by(|a, b| a.word == b.word);
        out
    };
    match key {
        "vm" => live("vm", pool, false),
        "host" | "on" => live("host", pool, false),
        "sr" | "sr-name-label" => live("sr", pool, false),
        "uuid" => class_of(spec).map_or_else(Vec::new, |c| live(c.cli, pool, true)),
        "params" | "param-name" => field_names(spec, key, prefix),
        k => match k.strip_suffix("-uuid").or(k.strip_suffix("-uuids")) {
            Some(cli) => live(&cli.to_lowercase(), pool, true),
            None => Vec::new(),
        },
    }
}

/// Field names of the command's class: `params=a,b,<TAB>` completes the
/// part after the last comma.
fn field_names(spec: &Spec, key: &str, prefix: &str) -> Vec<Candidate> {
    let Some(class) = class_of(spec) else {
        return Vec::new();
    };
    let (done, part) = match (key, prefix.rsplit_once(',')) {
        ("params", Some((done, part))) => (format!("{done},"), part),
        _ => (String::new(), prefix),
    };
    let writable_maps = matches!(spec.handler, Handler::ParamAdd(_) | Handler::ParamRemove(_));
    let mut out: Vec<Candidate> = class
        .fields
        .iter()
        .filter(|f| !f.deprecated && f.name.starts_with(part))
        .filter(|f| !writable_maps || (f.rw && matches!(f.kind, Kind::Map)))
        .map(|f| candidate(format!("{done}{}", f.name), f.label()))
        .collect();
    if key == "params" && "all".starts_with(part) {
        out.push(candidate(format!("{done}all"), "every field"));
    }
    out
}

// ---- live values from the pool, cached ----

/// Where completion keeps what it fetched.
fn cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("xe-complete"))
}

/// The records of a class, from the cache when fresh, else from the pool
/// named by the words (`-s`, `-p`, ...), `XE_EXTRA_ARGS` and `~/.xe`.
/// Empty when the pool cannot be reached in time.
pub fn pool_records(words: &[String]) -> impl FnMut(&Class) -> Vec<Value> {
    let connection = argv::lex(words)
        .ok()
        .and_then(|lexed| crate::read_sources_from(lexed).ok())
        .map(|inv| inv.connection);
    move |class: &Class| {
        let Some(connection) = &connection else {
            return Vec::new();
        };
        let server = connection.server.clone().unwrap_or_else(|| "127.0.0.1".into());
        let port = connection.port.clone().unwrap_or_default();
        let file = cache_dir().map(|d| d.join(format!("{server}-{port}-{}.json", class.cli)));
        if let Some(f) = &file {
            let fresh = std::fs::metadata(f)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .is_some_and(|age| age < CACHE_FOR);
            if fresh {
                if let Some(v) = std::fs::read_to_string(f)
                    .ok()
                    .and_then(|t| serde_json::from_str(&t).ok())
                {
                    return v;
                }
            }
        }
        let records = fetch(connection, class).unwrap_or_default();
        if let (Some(f), false) = (&file, records.is_empty()) {
            if let Some(dir) = f.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            let _ = std::fs::write(f, Value::Array(records.clone()).to_string());
        }
        records
    }
}

fn fetch(connection: &argv::Connection, class: &Class) -> Option<Vec<Value>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let connection = connection.clone();
    let wire = class.wire;
    // The connection runs on its own thread so that a pool that never
    // answers costs at most the timeout.
    std::thread::spawn(move || {
        let result = crate::conn::Conn::open(&connection, false)
            .ok()
            .and_then(|mut c| c.call(&format!("{wire}.get_all_records"), vec![]).ok());
        let _ = tx.send(result);
    });
    let all = rx.recv_timeout(POOL_TIMEOUT).ok()??;
    Some(all.as_object()?.values().cloned().collect())
}

// ---- the shell scripts ----

/// The completion script for `shell` (bash, zsh or fish).
pub fn script(shell: &str) -> Option<&'static str> {
    match shell {
        "bash" => Some(include_str!("../completions/xe.bash")),
        "zsh" => Some(include_str!("../completions/_xe")),
        "fish" => Some(include_str!("../completions/xe.fish")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn words(line: &str) -> Vec<String> {
        let mut w: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        if line.ends_with(' ') {
            w.push(String::new());
        }
        w
    }

    fn pool(class: &Class) -> Vec<Value> {
        match class.cli {
            "vm" => vec![
                json!({"uuid": "u-1", "name_label": "web01", "is_a_template": false}),
                json!({"uuid": "u-2", "name_label": "db01", "is_a_template": false}),
                json!({"uuid": "u-3", "name_label": "tmpl", "is_a_template": true}),
            ],
            "host" => vec![json!({"uuid": "h-1", "name_label": "host1"})],
            _ => vec![],
        }
    }

    fn run(line: &str) -> Vec<String> {
        complete(&words(line), &mut pool).into_iter().map(|c| c.word).collect()
    }

    #[test]
    fn commands_then_parameters_then_values() {
        assert!(run("vm-sta").contains(&"vm-start".to_string()));
        assert!(
            !run("").contains(&"help".to_string()),
            "hidden commands are not offered"
        );
        assert_eq!(run("help pool-ha-en"), ["pool-ha-enable"]);
        let params = run("vm-start ");
        assert!(
            params.contains(&"on=".to_string()) && params.contains(&"vm=".to_string()),
            "{params:?}"
        );
        assert_eq!(run("pool-ha-enable ha-c"), ["ha-config:"]);
        assert_eq!(run("pool-ha-enable ha-config:"), ["ha-config:timeout="]);
        assert_eq!(run("pool-ha-enable ha-config:t"), ["ha-config:timeout="]);
        assert_eq!(run("sr-create device-config:"), ["device-config:location="]);
        assert!(run("pool-ha-enable ha-config:timeout=").is_empty());
        assert!(run("vm-start vm=a:b").is_empty(), "a ':' in a value names no map");
        assert_eq!(run("vm-start vm="), ["vm=db01", "vm=web01"], "templates are left out");
        assert_eq!(run("vm-start vm=w"), ["vm=web01"]);
        assert_eq!(run("vm-start on="), ["on=host1"]);
        assert_eq!(run("vm-param-list uuid=u-"), ["uuid=u-1", "uuid=u-2"]);
        assert_eq!(
            run("vm-param-set ha-restart-priority="),
            ["ha-restart-priority=restart", "ha-restart-priority=best-effort"]
        );
        assert_eq!(run("vm-list params=uuid,power-"), ["params=uuid,power-state"]);
        assert_eq!(run("vm-start force="), ["force=true", "force=false"]);
        assert_eq!(
            run("-s pool1 -p 8090 vm-start vm=d"),
            ["vm=db01"],
            "options are skipped"
        );
    }

    #[test]
    fn parameters_already_given_are_not_offered_again() {
        let params = run("vm-param-get uuid=x ");
        assert!(!params.contains(&"uuid=".to_string()) && params.contains(&"param-name=".to_string()));
    }

    #[test]
    fn every_shell_has_a_script() {
        for shell in ["bash", "zsh", "fish"] {
            assert!(script(shell).is_some_and(|s| s.contains("__complete")), "{shell}");
        }
    }
}
