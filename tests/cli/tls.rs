//! xe over HTTPS (issue 19): it trusts only pinned certificates, asks a
//! person at a terminal about a host it has never seen, refuses a host
//! whose certificate changed, and speaks plain HTTP only with `--nossl`.

use crate::util::{installed, run_xe, Lab, Session, PASSWORD};

/// XE_EXTRA_ARGS for the lab's master without the lab's known-hosts file.
fn bare(lab: &Lab) -> String {
    format!(
        "server={},port={},username=root,password={PASSWORD}",
        lab.master(),
        lab.port
    )
}

/// The master's fingerprint, from the lab's known-hosts file.
fn master_fingerprint(lab: &Lab) -> String {
    let text = std::fs::read_to_string(lab.dir.path().join(".xe_known_hosts")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{} ", lab.master())))
        .expect("the master's line")
        .to_string()
}

#[test]
fn xe_trusts_pinned_certificates_only_and_says_what_to_do_otherwise() {
    let lab = Lab::start(2, 1);
    let home = tempfile::tempdir().unwrap();
    let fp = master_fingerprint(&lab);
    let vms = lab.xe_min(&["vm-list"]);

    // Never seen, no terminal: refused, with the fingerprint and the ways on.
    let r = run_xe(
        &["vm-list", "--minimal"],
        &[("XE_EXTRA_ARGS", &bare(&lab))],
        home.path(),
    );
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("is not known"), "{}", r.stderr);
    assert!(r.stderr.contains(&format!("fingerprint={fp}")), "{}", r.stderr);
    assert!(r.stdout.is_empty());

    // The fingerprint given (in any case): trusted.
    let given = format!("{},fingerprint={}", bare(&lab), fp.to_lowercase());
    let r = run_xe(&["vm-list", "--minimal"], &[("XE_EXTRA_ARGS", &given)], home.path());
    assert_eq!((r.code, r.stdout.trim()), (0, vms.as_str()), "{}", r.stderr);

    // --no-verify: TLS without the check; --nossl: plain HTTP.
    for flag in ["--no-verify", "--nossl"] {
        let r = run_xe(
            &["vm-list", "--minimal", flag],
            &[("XE_EXTRA_ARGS", &bare(&lab))],
            home.path(),
        );
        assert_eq!((r.code, r.stdout.trim()), (0, vms.as_str()), "{flag}: {}", r.stderr);
    }

    // A pinned fingerprint that is not the host's: refused as a changed
    // certificate, naming both, and nothing is sent.
    let wrong = home.path().join("known");
    let other = fp.replace(&fp[..2], if &fp[..2] == "00" { "11" } else { "00" });
    std::fs::write(&wrong, format!("{} {other}\n", lab.master())).unwrap();
    let pinned_wrong = format!("{},knownhosts={}", bare(&lab), wrong.display());
    let r = run_xe(
        &["vm-param-set", &format!("uuid={vms}"), "name-label=intercepted"],
        &[("XE_EXTRA_ARGS", &pinned_wrong)],
        home.path(),
    );
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("has changed"), "{}", r.stderr);
    assert!(r.stderr.contains(&other) && r.stderr.contains(&fp), "{}", r.stderr);
    assert_eq!(
        lab.xe_min(&["vm-list", &format!("uuid={vms}"), "params=name-label"]),
        "vm01"
    );

    // Pointed at a member, xe follows it to the master: both pinned (the
    // lab's file) is enough, the member alone is not.
    let member_fp = {
        let text = std::fs::read_to_string(lab.dir.path().join(".xe_known_hosts")).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{} ", lab.host_address(2))))
            .unwrap()
            .to_string()
    };
    let only_member = home.path().join("member-only");
    std::fs::write(&only_member, format!("{} {member_fp}\n", lab.host_address(2))).unwrap();
    let via_member = format!(
        "server={},port={},username=root,password={PASSWORD},knownhosts={}",
        lab.host_address(2),
        lab.port,
        only_member.display()
    );
    let r = run_xe(
        &["vm-list", "--minimal"],
        &[("XE_EXTRA_ARGS", &via_member)],
        home.path(),
    );
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .contains(&format!("the certificate of {} is not known", lab.master())),
        "{}",
        r.stderr
    );
}

#[test]
fn on_a_terminal_xe_asks_once_and_remembers_the_host() {
    if !installed("tmux") {
        eprintln!("skipped: tmux is not installed (.ci/run installs it)");
        return;
    }
    let lab = Lab::start(1, 1);
    let home = tempfile::tempdir().unwrap();
    let fp = master_fingerprint(&lab);
    let s = Session::start(&["bash", "--norc", "--noprofile", "-i"], home.path(), &bare(&lab));
    s.keys(&["-l", "xe vm-list params=name-label --minimal; echo listed-$?"]);
    s.keys(&["Enter"]);
    assert!(s.wait_for("Type 'yes' to continue"), "{}", s.screen());
    assert!(
        s.screen().replace('\n', "").contains(&fp),
        "the fingerprint is shown:\n{}",
        s.screen()
    );
    s.keys(&["-l", "yes"]);
    s.keys(&["Enter"]);
    assert!(s.wait_for("listed-0"), "{}", s.screen());
    assert!(s.screen().contains("vm01"), "{}", s.screen());
    let known = std::fs::read_to_string(home.path().join(".xe_known_hosts")).unwrap();
    assert_eq!(known, format!("{} {fp}\n", lab.master()));
    // The second time: no question.
    s.keys(&["-l", "clear; xe vm-list params=name-label --minimal; echo again-$?"]);
    s.keys(&["Enter"]);
    assert!(s.wait_for("again-0"), "{}", s.screen());
    assert!(!s.screen().contains("Type 'yes'"), "{}", s.screen());
}

/// A TLS server at `address:port` with the key and certificate in `pem`,
/// for 90 s at most: one line per connection in `log` (`handshake-failed`,
/// or `request` and the whole request). It answers every request as a
/// host proving its certificate would, with its own fingerprint and a
/// made-up proof (it has the key, not the pool secret).
const IMPOSTOR: &str = r#"
import hashlib, json, re, socket, ssl, sys, time
address, port, pem, log = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(pem)
cert = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", open(pem).read(), re.S).group(0)
digest = hashlib.sha256(ssl.PEM_cert_to_DER_cert(cert)).hexdigest().upper()
fingerprint = ":".join(digest[i:i + 2] for i in range(0, 64, 2))
body = json.dumps({"jsonrpc": "2.0", "id": 1, "result": {"fingerprint": fingerprint, "proof": "ab" * 32}}).encode()
answer = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body

def read_request(tls):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = tls.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    length = re.search(rb"(?i)content-length: *(\d+)", head)
    while length and len(rest) < int(length.group(1)):
        chunk = tls.recv(65536)
        if not chunk:
            break
        rest += chunk
    return head + b"\r\n\r\n" + rest

srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((address, port))
srv.listen(16)
srv.settimeout(0.5)
end = time.time() + 90
with open(log, "a", buffering=1) as out:
    out.write("listening\n")
    while time.time() < end:
        try:
            conn, _ = srv.accept()
        except socket.timeout:
            continue
        conn.settimeout(5)
        try:
            tls = ctx.wrap_socket(conn, server_side=True)
        except Exception as e:
            out.write("handshake-failed %s\n" % type(e).__name__)
            conn.close()
            continue
        try:
            out.write("request %r\n" % read_request(tls))
            tls.sendall(answer)
        except Exception as e:
            out.write("read-failed %s\n" % type(e).__name__)
        tls.close()
"#;

/// The fingerprint the lab's known-hosts file holds for `address`.
fn fingerprint_of(lab: &Lab, address: &str) -> String {
    let text = std::fs::read_to_string(lab.dir.path().join(".xe_known_hosts")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{address} ")))
        .unwrap_or_else(|| panic!("no line for {address} in {text}"))
        .to_string()
}

#[test]
fn hosts_pin_each_others_certificates_and_an_impostor_gets_no_secret() {
    if !installed("python3") {
        eprintln!("skipped: no python3 for the impostor");
        return;
    }
    let lab = Lab::start(3, 2);
    let session = lab.call(1, "session.login_with_password", serde_json::json!(["root", PASSWORD]))["result"]
        .as_str()
        .unwrap()
        .to_string();
    // The pool keeps each host's certificate (XAPI's Certificate class),
    // as the host serves it: the master's from its start, each member's
    // from its first call to the master.
    let certificates = || lab.call(1, "Certificate.get_all_records", serde_json::json!([session]))["result"].clone();
    assert!(
        crate::util::wait_for(std::time::Duration::from_secs(30), || certificates()
            .as_object()
            .is_some_and(|m| m.len() == 3)),
        "{}",
        certificates()
    );
    let hosts = lab.call(1, "host.get_all_records", serde_json::json!([session]))["result"].clone();
    for (_, c) in certificates().as_object().unwrap() {
        let host = &hosts[c["host"].as_str().unwrap()];
        let address = host["address"].as_str().unwrap();
        assert_eq!(c["type"], "host");
        assert_eq!(
            c["fingerprint_sha256"].as_str().unwrap(),
            fingerprint_of(&lab, address),
            "{c}"
        );
        assert!(
            c["not_after"].as_str().unwrap() > c["not_before"].as_str().unwrap(),
            "{c}"
        );
    }

    // Host 3 goes away, and a machine with another key (host 2's) answers
    // at its address.
    lab.fault("power-off", "host3");
    let log = lab.dir.path().join("impostor.log");
    let pem = lab.host_data_dir(2).join("xapi-ssl.pem");
    let mut impostor = std::process::Command::new("python3")
        .args(["-c", IMPOSTOR, &lab.host_address(3), &lab.port.to_string()])
        .arg(&pem)
        .arg(&log)
        .spawn()
        .unwrap();
    let said = |what: &str| std::fs::read_to_string(&log).unwrap_or_default().contains(what);
    assert!(crate::util::wait_for(std::time::Duration::from_secs(10), || said(
        "listening"
    )));

    // The master calls host 3 to start a VM there: its TLS client finds
    // the wrong certificate and stops at the handshake, then asks the
    // impostor to prove that certificate with the pool secret, over a
    // connection that trusts only it, sending a nonce and nothing else.
    // The impostor's made-up proof does not hold: nothing is pinned, no
    // login (and no pool secret) reaches it, and the start fails.
    let r = lab.xe(&["vm-start", "vm=vm02", "on=host3"]);
    assert_ne!(r.code, 0, "{r:?}");
    let seen = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(seen.contains("handshake-failed"), "{seen}");
    let requests: Vec<&str> = seen.lines().filter(|l| l.starts_with("request")).collect();
    assert!(!requests.is_empty(), "no proof was asked for: {seen}");
    for request in &requests {
        assert!(request.contains("host.prove_certificate"), "{request}");
        assert!(!request.contains("slave_login"), "{request}");
    }
    let r = lab.xe(&["vm-start", "vm=vm02", "on=host3"]);
    assert_ne!(r.code, 0, "the impostor was trusted after its proof: {r:?}");
    let seen = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!seen.contains("slave_login"), "{seen}");

    // The impostor is not blind: a client that trusts anyone gets through
    // to it, and sends what an unpinned host would have sent.
    let anyone = format!(
        "server={},port={},username=root,password={PASSWORD}",
        lab.host_address(3),
        lab.port
    );
    let home = tempfile::tempdir().unwrap();
    let _ = run_xe(&["vm-list", "--no-verify"], &[("XE_EXTRA_ARGS", &anyone)], home.path());
    let _ = impostor.kill();
    let _ = impostor.wait();
    let seen = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(seen.contains("session.login_with_password"), "{seen}");
}

/// Issue 19: a master whose certificate is made again (its file moved
/// away) is refused by its members, which pinned the old one; each asks
/// it to prove the new one with the pool secret, pins it, and follows the
/// master again: a change made on the master reaches the member's
/// replica, and the pool records the new certificate.
#[test]
fn a_master_with_a_new_certificate_proves_it_and_its_members_follow_it() {
    let lab = Lab::start(2, 1);
    let old = fingerprint_of(&lab, &lab.master());
    let login = || {
        let a = lab.call(1, "session.login_with_password", serde_json::json!(["root", PASSWORD]));
        a["result"].as_str().map(str::to_string)
    };
    lab.fault("power-off", "host1");
    std::fs::remove_file(lab.host_data_dir(1).join("xapi-ssl.pem")).unwrap();
    lab.fault("power-on", "host1");
    let limit = std::time::Duration::from_secs(60);
    let mut session = None;
    assert!(
        crate::util::wait_for(limit, || {
            let up = std::net::TcpStream::connect((lab.master().as_str(), lab.port)).is_ok();
            session = if up { login() } else { None };
            session.is_some()
        }),
        "the master did not come back:\n{}",
        lab.output()
    );
    let session = session.unwrap();

    // The pool records the master's new certificate.
    let master_fp = || {
        let pools = lab.call(1, "pool.get_all_records", serde_json::json!([session]))["result"].clone();
        let master = pools.as_object()?.values().next()?["master"].clone();
        let certs = lab.call(1, "Certificate.get_all_records", serde_json::json!([session]))["result"].clone();
        let cert = certs.as_object()?.values().find(|c| c["host"] == master)?;
        cert["fingerprint_sha256"].as_str().map(str::to_string)
    };
    assert!(crate::util::wait_for(limit, || master_fp().is_some_and(|fp| fp != old)));

    // A change on the master reaches the member.
    let vm = lab.call(1, "VM.get_by_name_label", serde_json::json!([session, "vm01"]))["result"][0].clone();
    let set = lab.call(
        1,
        "VM.set_name_description",
        serde_json::json!([session, vm, "after the new certificate"]),
    );
    assert!(set.get("error").is_none(), "{set}");
    let caught_up = crate::util::wait_for(limit, || {
        let master = crate::util::generation(&lab, 1);
        master.is_some() && crate::util::generation(&lab, 2) == master
    });
    assert!(caught_up, "the member did not follow the master:\n{}", lab.output());
    let log = std::fs::read_to_string(lab.host_data_dir(2).join("xapid.log")).unwrap_or_default();
    assert!(log.contains("proved it with the pool secret"), "{log}");
}

/// A standalone `xapid serve` (not the lab) on `address` with `args`; it is
/// killed when dropped, and its data directory removed.
struct Serving {
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve_on(address: &str, args: &[&str]) -> Serving {
    let dir = tempfile::tempdir().unwrap();
    let child = std::process::Command::new(crate::util::xapid_bin())
        .args([
            "serve",
            "--config",
            "/dev/null",
            "--root-password",
            "pw",
            "--address",
            address,
        ])
        .args(args)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    Serving { child, _dir: dir }
}

/// What a plain HTTP POST to `address:port` gets: the status line and body.
fn plain_post(address: &str, port: u16) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect((address, port)) else {
        return "refused".into();
    };
    s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    let body = r#"{"jsonrpc":"2.0","method":"pool.get_all","params":[""],"id":1}"#;
    let _ = write!(
        s,
        "POST /jsonrpc HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text
}

/// Issue 19, ports as XAPI has them: outside the lab the API port speaks
/// HTTPS only (a plain request there is told where to go), plain HTTP is
/// served on its own port (XAPI's 80, the same API in clear: `xe --nossl`,
/// which goes to port 80 when no port is given) and a TLS handshake there
/// is closed; `https-only` serves no plain HTTP at all. (The lab's one
/// port takes both, as every other test shows.)
#[test]
fn https_on_the_api_port_plain_http_on_its_own_port_and_none_when_https_only() {
    let (https, http) = (crate::util::free_port(), crate::util::free_port());
    let _host = serve_on(
        "127.0.0.1",
        &["--port", &https.to_string(), "--http-port", &http.to_string()],
    );
    let home = tempfile::tempdir().unwrap();
    let xe = |port: u16, flag: &str| {
        let extra = format!("server=127.0.0.1,port={port},username=root,password=pw");
        run_xe(
            &["host-list", "params=address", "--minimal", flag],
            &[("XE_EXTRA_ARGS", &extra)],
            home.path(),
        )
    };
    let limit = std::time::Duration::from_secs(20);
    assert!(crate::util::wait_for(limit, || xe(https, "--no-verify").code == 0));
    // HTTPS port: TLS answers; plain HTTP gets 400 and where to go.
    assert_eq!(xe(https, "--no-verify").stdout.trim(), "127.0.0.1");
    let told = plain_post("127.0.0.1", https);
    assert!(told.starts_with("HTTP/1.1 400"), "{told}");
    assert!(told.contains(&format!("plain HTTP is on port {http}")), "{told}");
    assert_ne!(xe(https, "--nossl").code, 0);
    // HTTP port: the API in clear; no TLS.
    let answer = plain_post("127.0.0.1", http);
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.contains("SESSION_INVALID"),
        "the API answers in clear: {answer}"
    );
    let r = xe(http, "--nossl");
    assert_eq!((r.code, r.stdout.trim()), (0, "127.0.0.1"), "{}", r.stderr);
    assert_ne!(xe(http, "--no-verify").code, 0);

    // The defaults: HTTPS on the port given, plain HTTP on XAPI's 80, and
    // xe --nossl without a port goes there. Binding port 80 needs root (or
    // the capability): without it, this part is skipped, saying so.
    let address = format!("127.{}.{}.9", 100 + https % 100, 1 + http % 200);
    if std::net::TcpListener::bind((address.as_str(), 80)).is_err() {
        eprintln!("skipped the port-80 part: cannot bind {address}:80 here");
    } else {
        let https2 = crate::util::free_port();
        let _default = serve_on(&address, &["--port", &https2.to_string()]);
        let extra = format!("server={address},username=root,password=pw");
        let nossl = || {
            run_xe(
                &["host-list", "params=address", "--minimal", "--nossl"],
                &[("XE_EXTRA_ARGS", &extra)],
                home.path(),
            )
        };
        assert!(crate::util::wait_for(limit, || nossl().code == 0), "{:?}", nossl());
        assert_eq!(nossl().stdout.trim(), address);
    }

    // https-only: no plain HTTP anywhere, and the HTTPS port says so.
    let (https3, http3) = (crate::util::free_port(), crate::util::free_port());
    let _only = serve_on(
        "127.0.0.1",
        &[
            "--port",
            &https3.to_string(),
            "--http-port",
            &http3.to_string(),
            "--https-only",
        ],
    );
    assert!(crate::util::wait_for(limit, || xe(https3, "--no-verify").code == 0));
    assert_eq!(plain_post("127.0.0.1", http3), "refused");
    let told = plain_post("127.0.0.1", https3);
    assert!(
        told.starts_with("HTTP/1.1 400") && told.contains("no plain HTTP (https-only)"),
        "{told}"
    );
}
