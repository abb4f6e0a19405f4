//! A real `xapid` fed hostile input over raw HTTP: it answers each request in
//! XAPI's shape, never crashes, and every rejected write leaves the database
//! as it was.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

struct Daemon {
    child: Child,
    /// The plain-HTTP port (the API in clear, XAPI's port 80).
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start() -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    // Ports free now (each test starts its own daemon, side by side): the
    // HTTPS one, and the plain-HTTP one the raw requests go to.
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (https_port, port) = (free(), free());
    let child = Command::new(env!("CARGO_BIN_EXE_xapid"))
        .arg("serve")
        .arg("--data-dir")
        .arg(dir.path())
        .args([
            "--address",
            "127.0.0.1",
            "--port",
            &https_port.to_string(),
            "--http-port",
            &port.to_string(),
            "--root-password",
            "pw",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let d = Daemon { child, port, _dir: dir };
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(20), "xapid did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    d
}

/// POST `body` to /jsonrpc; (status, body).
fn post(port: u16, body: &[u8]) -> (u16, String) {
    post_as(port, "application/json", body)
}

/// POST `body` to /jsonrpc with `Content-Type: content_type`; (status,
/// the whole answer with its headers).
fn post_raw(port: u16, content_type: &str, body: &[u8]) -> (u16, String) {
    post_path(port, "/jsonrpc", content_type, body)
}

/// POST `body` to `path`; (status, the whole answer with its headers).
fn post_path(port: u16, path: &str, content_type: &str, body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    let _ = s.write_all(body);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, text)
}

/// POST `body` to /jsonrpc with `Content-Type: content_type`; (status, body).
fn post_as(port: u16, content_type: &str, body: &[u8]) -> (u16, String) {
    let (status, text) = post_raw(port, content_type, body);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn call(port: u16, method: &str, params: Value) -> Value {
    let body = json!({"jsonrpc": "2.0", "method": method, "params": params, "id": 1}).to_string();
    let (status, text) = post(port, body.as_bytes());
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(&text).unwrap()
}

/// A session of root (password `pw`).
fn root_session(port: u16) -> String {
    call(port, "session.login_with_password", json!(["root", "pw"]))["result"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A new 1 GiB VM named `a`: its reference and its record as created.
fn new_vm(port: u16, session: &str) -> (Value, Value) {
    let vm = call(
        port,
        "VM.create",
        json!([session, {"name_label": "a", "memory_static_max": 1 << 30}]),
    )["result"]
        .clone();
    let record = call(port, "VM.get_record", json!([session, vm]))["result"].clone();
    (vm, record)
}

fn error_of(v: &Value) -> (String, Vec<String>) {
    let e = &v["error"];
    let data = e["data"]
        .as_array()
        .map(|a| a.iter().map(|x| x.as_str().unwrap_or_default().to_string()).collect());
    (
        e["message"].as_str().unwrap_or_default().to_string(),
        data.unwrap_or_default(),
    )
}

#[test]
fn hostile_input_gets_xapi_errors_and_changes_nothing() {
    let d = start();
    let p = d.port;
    let s = call(p, "session.login_with_password", json!(["root", "pw", "2.21", "test"]))["result"]
        .as_str()
        .unwrap()
        .to_string();
    let vms = call(p, "VM.get_all_records", json!([s]));
    assert!(vms["result"].as_object().unwrap().is_empty());
    let (vm, before) = new_vm(p, &s);

    // Not JSON, not an object, no method, oversized.
    let (status, body) = post(p, b"{\"jsonrpc\": \"2.0\", \"method\": ");
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["error"]["code"], -32700);
    let (_, body) = post(p, b"[1, 2, 3]");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["error"]["code"], -32600);
    let (status, _) = post(p, &vec![b'x'; 2 << 20]);
    assert_eq!(status, 413, "a 2 MiB body is refused");
    let (_, body) = post(p, &[0xff, 0xfe, 0x00, 0x7b]);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["error"]["code"], -32700);

    // The calls between hosts are not the root user's to make: starting,
    // stopping or migrating a guest behind the master's back.
    for (method, params) in [
        ("host.local_vm_start", json!([s, "vm", ["/tmp/x.disk"], -1])),
        (
            "host.local_vm_start_incoming",
            json!([s, "vm", ["/tmp/x.disk"], -1, {}]),
        ),
        ("host.local_vm_migrate", json!([s, "vm", "tcp:127.0.0.1:1"])),
        ("host.local_vm_stop", json!([s, "vm", true])),
    ] {
        assert_eq!(error_of(&call(p, method, params)).0, "PERMISSION_DENIED", "{method}");
    }

    // XAPI's errors for wrong calls.
    assert_eq!(
        error_of(&call(p, "VM.frobnicate", json!([s, vm]))).0,
        "MESSAGE_METHOD_UNKNOWN"
    );
    assert_eq!(
        error_of(&call(p, "Nope.get_all", json!([s]))).0,
        "MESSAGE_METHOD_UNKNOWN"
    );
    assert_eq!(error_of(&call(p, "nodot", json!([]))).0, "MESSAGE_METHOD_UNKNOWN");
    assert_eq!(
        error_of(&call(p, "VM.start", json!([s]))),
        (
            "MESSAGE_PARAMETER_COUNT_MISMATCH".into(),
            vec!["VM.start".into(), "4".into(), "1".into()]
        )
    );
    assert_eq!(
        error_of(&call(p, "VM.set_order", json!([s, vm, "seven"]))).0,
        "FIELD_TYPE_ERROR"
    );
    assert_eq!(
        error_of(&call(p, "VM.set_order", json!([s, vm, -1]))).0,
        "INVALID_VALUE"
    );
    assert_eq!(
        error_of(&call(p, "VM.set_ha_restart_priority", json!([s, vm, "always"]))).0,
        "INVALID_VALUE"
    );
    assert_eq!(
        error_of(&call(p, "VM.set_memory_static_max", json!([s, vm, 1]))),
        ("MEMORY_CONSTRAINT_VIOLATION_ORDER".into(), vec![])
    );
    // Issue 26: figures that used to wrap a host's free memory.
    for (method, params) in [
        ("VM.set_memory_static_max", json!([s, vm, 9_223_372_036_854_775_000i64])),
        ("VM.set_VCPUs_max", json!([s, vm, 1i64 << 62])),
        ("VM.create", json!([s, {"memory_static_max": i64::MAX}])),
        (
            "VM.create",
            json!([s, {"memory_static_max": 1 << 30, "VCPUs_max": 1i64 << 62}]),
        ),
    ] {
        assert_eq!(error_of(&call(p, method, params)).0, "VALUE_NOT_SUPPORTED", "{method}");
    }
    assert_eq!(
        error_of(&call(
            p,
            "VM.create",
            json!([s, {"memory_static_max": 1 << 30, "VCPUs_max": 0}])
        ))
        .0,
        "INVALID_VALUE"
    );
    assert_eq!(
        error_of(&call(p, "VM.set_power_state", json!([s, vm, "Running"]))).0,
        "MESSAGE_METHOD_UNKNOWN"
    );
    assert_eq!(
        error_of(&call(p, "VM.set_affinity", json!([s, vm, "OpaqueRef:nope"]))).0,
        "HANDLE_INVALID"
    );
    assert_eq!(
        error_of(&call(p, "VM.get_record", json!([s, "OpaqueRef:nope"]))),
        ("HANDLE_INVALID".into(), vec!["VM".into(), "OpaqueRef:nope".into()])
    );
    assert_eq!(
        error_of(&call(p, "VM.get_by_uuid", json!([s, "nope"]))).0,
        "UUID_INVALID"
    );
    assert_eq!(
        error_of(&call(p, "VM.get_all", json!(["OpaqueRef:forged"]))),
        ("SESSION_INVALID".into(), vec!["OpaqueRef:forg…".into()])
    );
    assert_eq!(error_of(&call(p, "VM.get_all", json!([42]))).0, "SESSION_INVALID");
    assert_eq!(
        error_of(&call(p, "session.login_with_password", json!(["root", "bad"]))).0,
        "SESSION_AUTHENTICATION_FAILED"
    );
    assert_eq!(
        error_of(&call(p, "session.slave_login", json!(["h", "guess"]))).0,
        "SESSION_AUTHENTICATION_FAILED"
    );
    assert_eq!(
        error_of(&call(p, "pool.sync_database", json!([s, 0, 0.0]))).0,
        "PERMISSION_DENIED"
    );
    assert_eq!(
        error_of(&call(p, "VM.create", json!([s, {"memory_static_max": "big"}]))).0,
        "FIELD_TYPE_ERROR"
    );
    assert_eq!(
        error_of(&call(p, "VM.add_to_other_config", json!([s, vm, "k", 1]))).0,
        "FIELD_TYPE_ERROR"
    );

    // Version 1.0 requests get 1.0-shaped answers.
    let (_, body) = post(p, br#"{"method":"VM.get_all","params":["bad"],"id":null}"#);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"], json!(["SESSION_INVALID", "bad"]));
    assert!(v.get("jsonrpc").is_none());

    // Still alive, and the VM exactly as it was.
    assert_eq!(call(p, "VM.get_record", json!([s, vm]))["result"], before);
    assert_eq!(call(p, "session.logout", json!([s]))["result"], "");
    assert_eq!(error_of(&call(p, "VM.get_all", json!([s]))).0, "SESSION_INVALID");
}

#[test]
fn web_pages_control_characters_and_huge_strings_are_refused() {
    let d = start();
    let p = d.port;
    let s = root_session(p);
    let (vm, before) = new_vm(p, &s);
    let body = json!({"jsonrpc": "2.0", "method": "VM.set_name_label", "params": [s, vm, "b"], "id": 1}).to_string();

    // What a web page may send without asking the server first: refused.
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        let (status, _) = post_as(p, ct, body.as_bytes());
        assert_eq!(status, 415, "{ct}");
    }
    // JSON with a charset is fine, and no answer carries a CORS header.
    let (status, text) = post_raw(p, "application/json; charset=utf-8", body.as_bytes());
    assert_eq!(status, 200, "{text}");
    assert!(
        !text.to_ascii_lowercase().contains("access-control-allow-origin"),
        "{text}"
    );
    call(p, "VM.set_name_label", json!([s, vm, "a"]));

    // NUL and other control characters, and strings of a megabyte.
    for bad in ["a\u{0}b", "bell\u{7}", "esc\u{1b}[2J"] {
        let e = error_of(&call(p, "VM.set_name_label", json!([s, vm, bad])));
        assert_eq!(e.0, "INVALID_VALUE", "{bad:?}");
        assert_eq!(e.1[0], "VM.set_name_label parameter 3");
    }
    let huge = "x".repeat(900_000);
    assert_eq!(
        error_of(&call(p, "VM.set_name_description", json!([s, vm, huge]))).0,
        "INVALID_VALUE"
    );
    assert_eq!(
        error_of(&call(p, "VM.add_to_other_config", json!([s, vm, "k\u{0}", "v"]))).0,
        "INVALID_VALUE"
    );
    // Tabs and newlines are text.
    call(p, "VM.set_name_description", json!([s, vm, "line one\n\tline two"]));
    let after = call(p, "VM.get_record", json!([s, vm]))["result"].clone();
    assert_eq!(after["name_label"], before["name_label"]);
    assert_eq!(after["other_config"], before["other_config"]);
    assert_eq!(after["name_description"], "line one\n\tline two");

    // A wrong session is not echoed back whole.
    let forged = "OpaqueRef:0123456789abcdef-secret";
    let e = error_of(&call(p, "VM.get_all", json!([forged])));
    assert_eq!(e.0, "SESSION_INVALID");
    assert!(!e.1[0].contains("secret"), "{e:?}");
}

#[test]
fn xml_rpc_bombs_deep_nesting_and_broken_bodies_get_faults_and_change_nothing() {
    let d = start();
    let p = d.port;
    let s = root_session(p);
    let (vm, before) = new_vm(p, &s);
    let vm = vm.as_str().unwrap().to_string();
    let xml_call = |method: &str, params: &str| {
        format!("<?xml version=\"1.0\"?><methodCall><methodName>{method}</methodName><params>{params}</params></methodCall>")
    };
    let param = |v: &str| format!("<param><value>{v}</value></param>");
    let set_name = |name: &str| xml_call("VM.set_name_label", &[param(&s), param(&vm), param(name)].concat());
    let bomb = format!(
        "<?xml version=\"1.0\"?><!DOCTYPE b [<!ENTITY a \"{}\"><!ENTITY b \"{}\">]>{}",
        "x".repeat(1000),
        "&a;".repeat(1000),
        set_name("&b;")
    );
    let deep = set_name(&format!(
        "{}x{}",
        "<array><data><value>".repeat(20_000),
        "</value></data></array>".repeat(20_000)
    ));
    let mut truncated = set_name("b");
    truncated.truncate(truncated.len() / 2);
    for (what, body) in [
        ("an entity bomb", bomb),
        ("20,000 nested arrays", deep),
        ("a cut-off call", truncated),
        ("not XML", "{\"method\": \"VM.destroy\"}".to_string()),
    ] {
        let (status, text) = post_path(p, "/", "text/xml", body.as_bytes());
        assert_eq!(status, 200, "{what}: {text}");
        assert!(
            text.contains("<fault>") && text.contains("faultString"),
            "{what}: {text}"
        );
    }
    // What a web page may send without asking: refused at / too.
    let (status, _) = post_path(p, "/", "text/plain", set_name("b").as_bytes());
    assert_eq!(status, 415);
    // The daemon still answers, on both wires, and nothing changed.
    let (status, text) = post_path(
        p,
        "/",
        "text/xml",
        xml_call("VM.get_name_label", &[param(&s), param(&vm)].concat()).as_bytes(),
    );
    assert_eq!(status, 200);
    let name = before["name_label"].as_str().unwrap();
    assert!(
        text.contains(&format!("<name>Value</name><value>{name}</value>")),
        "{text}"
    );
    assert_eq!(call(p, "VM.get_record", json!([s, vm]))["result"], before);
}

/// `session.login_with_password` for `user`; the session or the error code,
/// and how long it took.
fn login(port: u16, user: &str, password: &str) -> (Result<String, String>, Duration) {
    let t = Instant::now();
    let v = call(port, "session.login_with_password", json!([user, password]));
    let r = match v["result"].as_str() {
        Some(s) => Ok(s.to_string()),
        None => Err(error_of(&v).0),
    };
    (r, t.elapsed())
}

#[test]
fn password_guessing_is_slowed_reported_and_leaves_the_api_fast() {
    let d = start();
    let p = d.port;
    let (s, _) = login(p, "root", "pw");
    let s = s.unwrap();
    // Guesses one after another: the first few are checked at once, then
    // each waits longer than the one before (the throttle's slots).
    let mut took = Vec::new();
    for _ in 0..6 {
        let (r, t) = login(p, "root", "guess");
        assert_eq!(r, Err("SESSION_AUTHENTICATION_FAILED".to_string()));
        took.push(t);
    }
    // Two more at once: each waits for a slot of its own, a second or
    // more apart; unthrottled, both would be checked side by side.
    let pair: Vec<_> = (0..2)
        .map(|_| {
            std::thread::spawn(move || {
                let (r, _) = login(p, "root", "guess");
                assert_eq!(r, Err("SESSION_AUTHENTICATION_FAILED".to_string()));
                Instant::now()
            })
        })
        .collect();
    let mut done: Vec<Instant> = pair.into_iter().map(|t| t.join().unwrap()).collect();
    done.sort();
    let apart = done[1] - done[0];
    assert!(
        apart >= Duration::from_millis(700),
        "two guesses at once ended {apart:?} apart"
    );
    // A flood of guesses from many connections, and meanwhile the API.
    let flood: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                for _ in 0..3 {
                    let (r, _) = login(p, "root", "guess");
                    assert!(r.is_err());
                }
            })
        })
        .collect();
    let mut api = Vec::new();
    while !flood.iter().all(|t| t.is_finished()) && api.len() < 200 {
        let t = Instant::now();
        assert!(call(p, "VM.get_all", json!([s]))["result"].is_array());
        api.push(t.elapsed());
        std::thread::sleep(Duration::from_millis(50));
    }
    for t in flood {
        t.join().unwrap();
    }
    api.sort();
    let median = api.get(api.len() / 2).copied().unwrap_or_default();
    eprintln!(
        "VM.get_all during the flood: median {median:?} over {} calls; guesses took {took:?}",
        api.len()
    );
    assert!(
        median < Duration::from_millis(500),
        "the API slowed to {median:?} under guessing"
    );
    // The pool says so.
    let messages = call(p, "message.get_all_records", json!([s]))["result"].clone();
    let names: Vec<&str> = messages
        .as_object()
        .unwrap()
        .values()
        .filter_map(|m| m["name"].as_str())
        .collect();
    assert!(names.contains(&"LOGIN_FAILURES"), "{names:?}");
    // The right password still gets in (after its wait), and clears the
    // count; another name was never slowed.
    let (r, _) = login(p, "nobody", "x");
    assert_eq!(r, Err("SESSION_AUTHENTICATION_FAILED".to_string()));
    let (r, t) = login(p, "root", "pw");
    assert!(r.is_ok(), "{r:?} after {t:?}");
    let (r, t) = login(p, "root", "pw");
    assert!(r.is_ok() && t < Duration::from_secs(5), "{r:?} after {t:?}");
}

/// `session.login_with_password` for `user` over a connection from the
/// loopback address `source` (any 127.x.y.z reaches the server); the error
/// code or the session, and how long it took.
fn login_from(port: u16, source: [u8; 4], user: &str, password: &str) -> (Result<String, String>, Duration) {
    let t = Instant::now();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let stream = rt.block_on(async {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind((std::net::Ipv4Addr::from(source), 0).into()).unwrap();
        sock.connect(([127, 0, 0, 1], port).into())
            .await
            .unwrap()
            .into_std()
            .unwrap()
    });
    stream.set_nonblocking(false).unwrap();
    let mut s = stream;
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let body = json!({"jsonrpc": "2.0", "method": "session.login_with_password", "params": [user, password], "id": 1})
        .to_string();
    let head = format!(
        "POST /jsonrpc HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let v: Value = serde_json::from_str(out.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("")).unwrap();
    let r = match v["result"].as_str() {
        Some(s) => Ok(s.to_string()),
        None => Err(error_of(&v).0),
    };
    (r, t.elapsed())
}

#[test]
fn one_address_guessing_many_names_is_slowed_and_other_addresses_are_not() {
    let d = start();
    let p = d.port;
    const ATTACKER: [u8; 4] = [127, 0, 0, 3];
    const ADMIN: [u8; 4] = [127, 0, 0, 4];
    // A new name each time: no name's own throttle ever starts, but the
    // address's does after 20 failures; four more (the last three waiting
    // 0.25, 0.5 and 1 s for their slots) space its next attempts 2 s
    // apart, far more than a password check takes on a loaded machine.
    for i in 0..24 {
        let (r, _) = login_from(p, ATTACKER, &format!("guess{i}"), "x");
        assert_eq!(r, Err("SESSION_AUTHENTICATION_FAILED".to_string()));
    }
    // Two more guesses from it at once, and meanwhile one from another
    // address: the attacker's wait for slots of their own, seconds apart;
    // the other address is checked at once.
    let attacker: Vec<_> = (0..2)
        .map(|i| {
            std::thread::spawn(move || {
                let (r, t) = login_from(p, ATTACKER, &format!("more{i}"), "x");
                assert_eq!(r, Err("SESSION_AUTHENTICATION_FAILED".to_string()));
                (Instant::now(), t)
            })
        })
        .collect();
    let (admin, admin_took) = login_from(p, ADMIN, "root", "pw");
    assert!(admin.is_ok(), "{admin:?}");
    let mut done: Vec<(Instant, Duration)> = attacker.into_iter().map(|t| t.join().unwrap()).collect();
    done.sort();
    let apart = done[1].0 - done[0].0;
    assert!(
        apart >= Duration::from_millis(1000),
        "two guesses from one address at once ended {apart:?} apart"
    );
    assert!(
        admin_took < done[1].1,
        "the other address took {admin_took:?}, the throttled ones {:?}",
        done.iter().map(|d| d.1).collect::<Vec<_>>()
    );
    // The right password from the attacker's address still gets in, after
    // its wait.
    let (r, _) = login_from(p, ATTACKER, "root", "pw");
    assert!(r.is_ok(), "{r:?}");
}
