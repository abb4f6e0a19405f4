//! The daemon's layers point one way: each top-level module of
//! `pool-master` may use only modules of a lower layer (docs/ARCHITECTURE.md,
//! "Layers of xapid"). This reads the sources, collects every `crate::X`
//! path outside comments, and fails on an import that points up or
//! sideways, naming the file and the line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Bottom to top. A module may use the modules of the layers below its own.
const LAYERS: &[&[&str]] = &[
    &[
        "files",
        "clock",
        "config_file",
        "metrics",
        "auth",
        "throttle",
        "sessions",
        "logging",
        "memory",
        "reserve",
        "journal",
        "secrets",
    ],
    &["planning", "io", "events", "tls", "secret"],
    &["overcommit", "peers", "listener", "tasks"],
    &["driver"],
    &["lease"],
    &["ha"],
    &["daemon"],
    &["hostops"],
    &["storage_probe", "ops"],
    &["failover", "guests", "alerts"],
    &["member"],
    &["api", "scrape"],
    &["server"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// The `crate::X` modules named on a line, outside a `//` comment.
fn crate_refs(line: &str) -> Vec<String> {
    let code = line.split("//").next().unwrap_or("");
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `use crate::{a, b::c};`
            let inner = group.split('}').next().unwrap_or("");
            for item in inner.split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.push(name);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.push(name);
            }
        }
    }
    out
}

/// Every import that breaks the layering, as `file:line: a -> b`.
fn violations(files: &BTreeMap<PathBuf, (String, String)>) -> Vec<String> {
    let mut bad = Vec::new();
    for (path, (module, text)) in files {
        let Some(mine) = layer_of(module) else {
            bad.push(format!("{}: module {module} is in no layer", path.display()));
            continue;
        };
        for (n, line) in text.lines().enumerate() {
            for used in crate_refs(line) {
                if used == *module {
                    continue;
                }
                match layer_of(&used) {
                    Some(theirs) if theirs < mine => {}
                    Some(_) => bad.push(format!("{}:{}: {module} -> {used}", path.display(), n + 1)),
                    None => bad.push(format!(
                        "{}:{}: {module} -> {used} (in no layer)",
                        path.display(),
                        n + 1
                    )),
                }
            }
        }
    }
    bad
}

/// Every source file under `src/` but the binary's `main.rs` and `lib.rs`,
/// with its top-level module.
fn sources(src: &Path) -> BTreeMap<PathBuf, (String, String)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).expect("under src");
            let first = rel.components().next().expect("a component");
            let module = first.as_os_str().to_string_lossy().trim_end_matches(".rs").to_string();
            if module == "main" || module == "lib" {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read source");
            out.insert(rel.to_path_buf(), (module, text));
        }
    }
    out
}

#[test]
fn every_module_uses_only_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = sources(&src);
    assert!(files.len() > 30, "read the sources ({} files)", files.len());
    let bad = violations(&files);
    assert!(bad.is_empty(), "imports against the layers:\n{}", bad.join("\n"));
}

#[test]
fn the_check_catches_an_import_that_points_up() {
    let mut files = BTreeMap::new();
    files.insert(
        PathBuf::from("ha/agent.rs"),
        (
            "ha".to_string(),
            "use crate::driver::unix_ms;\n// crate::api in a comment\n".to_string(),
        ),
    );
    assert!(violations(&files).is_empty());
    files.insert(
        PathBuf::from("ha/restart.rs"),
        (
            "ha".to_string(),
            "use crate::{io, ops::vm};\nlet x = crate::api::Args::new(m, p);\n".to_string(),
        ),
    );
    assert_eq!(
        violations(&files),
        vec![
            "ha/restart.rs:1: ha -> ops".to_string(),
            "ha/restart.rs:2: ha -> api".to_string()
        ]
    );
}
