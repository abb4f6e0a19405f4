//! Alerts and the audit log end to end: a lab pool with HA on mails and
//! posts `HA_HOST_FAILED` when a host loses its power, to a real SMTP
//! server (Python's aiosmtpd, Debian's `python3-aiosmtpd`, which `.ci/run`
//! installs) and to a webhook receiver on loopback that checks the
//! signature; and every state-changing call is in `xe audit-list` with its
//! secrets masked.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::util::{wait_for, Lab, FAILOVER, PASSWORD};

/// The webhook's shared key.
const KEY: &str = "webhook-key-4711";

fn now_s() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// A Python that has aiosmtpd (the machine's own, where Debian installs
/// it, or the first on PATH), or why none.
fn aiosmtpd_python() -> Result<String, String> {
    for python in ["/usr/bin/python3", "python3"] {
        let ok = Command::new(python)
            .args(["-c", "import aiosmtpd"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Ok(python.to_string());
        }
    }
    Err("no Python with aiosmtpd (apt-get install python3-aiosmtpd)".into())
}

/// aiosmtpd printing each mail it accepts; killed on drop.
struct SmtpSink {
    child: Child,
    port: u16,
    /// (time received, the mail's text) per mail.
    mails: Receiver<(f64, String)>,
}

impl SmtpSink {
    fn start(python: &str) -> SmtpSink {
        let port = crate::util::free_port();
        let mut child = Command::new(python)
            .args(["-u", "-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start aiosmtpd");
        let out = child.stdout.take().unwrap();
        let (tx, mails) = channel();
        std::thread::spawn(move || {
            let mut mail: Option<String> = None;
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if line.starts_with("---------- MESSAGE FOLLOWS") {
                    mail = Some(String::new());
                } else if line.starts_with("------------ END MESSAGE") {
                    if let Some(m) = mail.take() {
                        let _ = tx.send((now_s(), m));
                    }
                } else if let Some(m) = mail.as_mut() {
                    m.push_str(&line);
                    m.push('\n');
                }
            }
        });
        assert!(
            wait_for(Duration::from_secs(15), || TcpStream::connect(("127.0.0.1", port))
                .is_ok()),
            "aiosmtpd does not listen on {port}"
        );
        SmtpSink { child, port, mails }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request the webhook receiver got.
struct Post {
    at: f64,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Post {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A webhook receiver on loopback: answers the first request 503 (the
/// sender must try again) and the rest 200.
fn webhook_receiver() -> (u16, Receiver<Post>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { continue };
            stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut headers = Vec::new();
            let mut line = String::new();
            let _ = reader.read_line(&mut line); // the request line
            loop {
                line.clear();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim_end().is_empty() {
                    break;
                }
                if let Some((k, v)) = line.trim_end().split_once(':') {
                    headers.push((k.trim().to_string(), v.trim().to_string()));
                }
            }
            let length: usize = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0; length.min(1 << 20)];
            let _ = reader.read_exact(&mut body);
            let status = if n == 0 { "503 Service Unavailable" } else { "200 OK" };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            if n > 0 {
                let _ = tx.send(Post {
                    at: now_s(),
                    headers,
                    body,
                });
            }
        }
    });
    (port, rx)
}

/// Seconds since the epoch of `2024-04-20T12:00:00Z` (xe's form).
fn epoch_of(rfc3339: &str) -> f64 {
    let digits: Vec<i64> = rfc3339
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    let (y, m, d) = (digits[0], digits[1], digits[2]);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    (days * 86_400 + digits[3] * 3600 + digits[4] * 60 + digits[5]) as f64
}

#[test]
fn a_power_pull_is_mailed_and_posted_within_5_s_of_ha_host_failed() {
    let python = match aiosmtpd_python() {
        Ok(p) => p,
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    let smtp = SmtpSink::start(&python);
    let (hook_port, posts) = webhook_receiver();
    let lab = Lab::start_ha(3, 0, &[]);
    let pool = lab.xe_min(&["pool-list", "params=uuid"]);
    lab.xe_ok(&[
        "pool-param-set",
        &format!("uuid={pool}"),
        "other-config:mail-destination=ops@example.com",
        &format!("other-config:ssmtp-mailhub=127.0.0.1:{}", smtp.port),
        "other-config:mail-min-priority=1",
        &format!("other-config:pool-ha-webhook-url=http://127.0.0.1:{hook_port}/hooks/T0KEN"),
        &format!("other-config:pool-ha-webhook-secret={KEY}"),
    ]);
    // The key is kept sealed: xe never shows it, nor does the audit log.
    let shown = lab.xe_ok(&["pool-param-list", &format!("uuid={pool}")]);
    assert!(shown.contains("pool-ha-webhook-secret: sealed1:"), "{shown}");
    assert!(!shown.contains(KEY), "{shown}");
    let audit = lab.xe_ok(&["audit-list", "method=pool.add_to_other_config", "--format", "json"]);
    assert!(audit.contains("(secret)") && !audit.contains(KEY), "{audit}");

    let host2 = lab.xe_min(&["host-list", "name-label=host2", "params=uuid"]);
    lab.fault("power-off", "host2");
    let mail = smtp
        .mails
        .recv_timeout(FAILOVER)
        .unwrap_or_else(|_| panic!("no mail\n{}", lab.post_mortem()));
    let post = posts
        .recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("no webhook post\n{}", lab.post_mortem()));

    // The message as the pool records it.
    let listed: serde_json::Value = serde_json::from_str(&lab.xe_ok(&[
        "message-list",
        "name=HA_HOST_FAILED",
        "params=uuid,obj-uuid,timestamp,priority",
        "--format",
        "json",
    ]))
    .unwrap();
    let message = &listed[0];
    assert_eq!(message["obj-uuid"], host2.as_str(), "{listed}");
    let raised = epoch_of(message["timestamp"].as_str().unwrap());
    let uuid = message["uuid"].as_str().unwrap();

    // The mail: XAPI's subject, to the destination, within 5 s (the
    // stamp is to the second, so this is at most 5 s after the raise).
    let (mailed_at, text) = mail;
    // Long headers are folded (RFC 5322): unfold them.
    let text = text.replace("\n ", " ").replace("\n\t", " ");
    assert!(
        text.contains("Subject: [") && text.contains(&format!("Message: Host {host2} HA_HOST_FAILED")),
        "{text}"
    );
    assert!(text.contains("To: ops@example.com"), "{text}");
    assert!(text.contains("Message UUID:") && text.contains(uuid), "{text}");
    assert!(mailed_at - raised <= 5.0, "mailed {:.1} s after", mailed_at - raised);

    // The post: signed, its body the message, after one 503 and a retry
    // 1 s later, still within 5 s.
    let signature = post.header("X-Pool-HA-Signature").unwrap_or_default().to_string();
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(KEY.as_bytes()).unwrap();
    mac.update(&post.body);
    let expected: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(signature, format!("sha256={expected}"), "the signature verifies");
    let body: serde_json::Value = serde_json::from_slice(&post.body).unwrap();
    assert_eq!(
        (body["name"].as_str(), body["uuid"].as_str(), body["obj_uuid"].as_str()),
        (Some("HA_HOST_FAILED"), Some(uuid), Some(host2.as_str()))
    );
    assert_eq!(post.header("X-Pool-HA-Attempt"), Some("2"));
    assert!(post.at - raised <= 5.0, "posted {:.1} s after", post.at - raised);
    eprintln!(
        "HA_HOST_FAILED stamped {raised}: mailed {:.2} s and posted {:.2} s after the stamp's second",
        mailed_at - raised,
        post.at - raised
    );

    // Every attempt recorded: the webhook's 503 and its retry, the mail.
    let deliveries = || -> serde_json::Value {
        serde_json::from_str(&lab.xe_ok(&[
            "alert-delivery-list",
            &format!("message-uuid={uuid}"),
            "--format",
            "json",
        ]))
        .unwrap()
    };
    assert!(wait_for(Duration::from_secs(10), || deliveries()
        .as_array()
        .is_some_and(|d| d.len() == 3)));
    let rows = deliveries();
    let outcomes: Vec<(String, String)> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["target"].as_str().unwrap().to_string(),
                r["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let hook = format!("webhook http://127.0.0.1:{hook_port}");
    let mailhub = format!("smtp 127.0.0.1:{} to ops@example.com", smtp.port);
    for expected in [(&hook, "retrying"), (&hook, "delivered"), (&mailhub, "delivered")] {
        assert!(
            outcomes.iter().any(|(t, o)| t == expected.0 && o == expected.1),
            "{expected:?} in {rows:#}"
        );
    }
    assert!(!rows.to_string().contains("T0KEN"), "the URL's path is not shown");
    // Nor is the key in any host's log.
    for i in 1..=3 {
        let log = std::fs::read_to_string(lab.host_data_dir(i).join("xapid.log")).unwrap_or_default();
        assert!(!log.contains(KEY), "host{i}'s log shows the key");
    }
}

#[test]
fn state_changing_calls_are_audited_with_passwords_masked() {
    let lab = Lab::start(1, 1);
    // A login refused, a join refused (its password given), a change, a read.
    let wrong = format!(
        "server={},port={},username=root,password=guess-0815",
        lab.master(),
        lab.port
    );
    let r = crate::util::run_xe(&["vm-list"], &[("XE_EXTRA_ARGS", &wrong)], lab.dir.path());
    assert_eq!(r.code, 1);
    let join = lab.xe(&[
        "pool-join",
        "master-address=127.0.0.1",
        "master-username=root",
        "master-password=join-pw-0815",
    ]);
    assert_eq!(join.code, 1);
    let vm = lab.xe_min(&["vm-list", "name-label=vm01", "params=uuid"]);
    lab.xe_ok(&["vm-param-set", &format!("uuid={vm}"), "name-description=audited"]);
    lab.xe_ok(&["vm-list"]);

    let rows: serde_json::Value = serde_json::from_str(&lab.xe_ok(&["audit-list", "--format", "json"])).unwrap();
    let rows = rows.as_array().unwrap();
    let text = serde_json::to_string(rows).unwrap();
    assert!(!text.contains("guess-0815") && !text.contains("join-pw-0815") && !text.contains(PASSWORD));
    let find = |method: &str, result: &str| {
        rows.iter()
            .find(|r| r["method"] == method && r["result"] == result)
            .unwrap_or_else(|| panic!("no {method} {result} in {text}"))
    };
    let refused = find("session.login_with_password", "SESSION_AUTHENTICATION_FAILED");
    assert_eq!(
        (refused["user"].as_str(), refused["args"][1].as_str()),
        (Some("root"), Some("(secret)"))
    );
    let join = rows
        .iter()
        .find(|r| r["method"] == "pool.join")
        .unwrap_or_else(|| panic!("no pool.join in {text}"));
    assert_eq!(join["args"], serde_json::json!(["127.0.0.1", "root", "(secret)"]));
    assert_ne!(join["result"], "success");
    let set = find("VM.set_name_description", "success");
    assert_eq!(set["user"], "root");
    assert_eq!(set["args"][1], "audited");
    assert!(
        !rows
            .iter()
            .any(|r| r["method"].as_str().is_some_and(|m| m.contains(".get_"))),
        "reads are not audited: {text}"
    );
    // In the host log too, masked.
    let log = std::fs::read_to_string(lab.host_data_dir(1).join("xapid.log")).unwrap_or_default();
    assert!(log.contains("VM.set_name_description"), "no audit line in the host log");
    assert!(!log.contains("join-pw-0815") && !log.contains("guess-0815"));
    // Filters, and xe's own record layout.
    let mine = lab.xe_ok(&["audit-list", "method=VM.set_name_description", "limit=50"]);
    assert!(
        mine.contains("method ( RO)") && mine.contains("VM.set_name_description"),
        "{mine}"
    );
    assert_eq!(lab.xe(&["audit-list", "limit=0"]).code, 1);
}

/// A pool message made through the API (xe has no message-create here).
fn create_message(lab: &Lab, session: &serde_json::Value, name: &str, priority: i64) {
    let pool = lab.xe_min(&["pool-list", "params=uuid"]);
    let r = lab.call(
        1,
        "message.create",
        serde_json::json!([session, name, priority, "Pool", pool, "made by the test"]),
    );
    assert!(r.get("result").is_some(), "{r}");
}

#[test]
fn messages_are_listed_by_priority_and_time_and_destroyed_as_xe_does() {
    let lab = Lab::start(1, 0);
    let login = lab.call(1, "session.login_with_password", serde_json::json!(["root", PASSWORD]));
    let session = login["result"].clone();
    create_message(&lab, &session, "OLD_URGENT", 1);
    create_message(&lab, &session, "OLD_INFO", 5);
    let old_stamp = lab.xe_min(&["message-list", "name=OLD_URGENT", "params=timestamp"]);
    // The next second on the wall clock: stamps are to the second.
    assert!(wait_for(Duration::from_secs(3), || now_s() >= epoch_of(&old_stamp) + 1.0));
    create_message(&lab, &session, "NEW_INFO", 5);
    let names = |args: &[&str]| -> Vec<String> {
        let mut a = vec!["message-list", "params=name"];
        a.extend_from_slice(args);
        let mut n: Vec<String> = lab
            .xe_min(&a)
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        n.sort();
        n
    };
    // xe's filters: a field's value, exactly.
    assert_eq!(names(&["priority=1"]), ["OLD_URGENT"]);
    assert_eq!(names(&["priority=5"]), ["NEW_INFO", "OLD_INFO"]);
    // pool-ha's since=: stamped after the time (message.get_since).
    assert_eq!(names(&[&format!("since={old_stamp}")]), ["NEW_INFO"]);
    assert_eq!(
        names(&[&format!("since={old_stamp}"), "priority=1"]),
        Vec::<String>::new()
    );
    assert_eq!(names(&["since=2000-01-01T00:00:00Z"]).len(), 3);
    let bad = lab.xe(&["message-list", "since=yesterday"]);
    assert_eq!(bad.code, 1);
    assert!(
        bad.stderr.contains("Invalid timestamp format for 'since'"),
        "{}",
        bad.stderr
    );

    // message-destroy: uuid= or uuids=, as xe.
    let r = lab.xe(&["message-destroy"]);
    assert!(
        r.code == 1 && r.stderr.contains("Need one of uuid, uuids"),
        "{}",
        r.stderr
    );
    let r = lab.xe(&["message-destroy", "uuid=nope"]);
    assert!(
        r.code == 1 && r.stderr.contains("uuid you supplied was invalid"),
        "{}",
        r.stderr
    );
    let urgent = lab.xe_min(&["message-list", "name=OLD_URGENT", "params=uuid"]);
    lab.xe_ok(&["message-destroy", &format!("uuid={urgent}")]);
    assert_eq!(names(&[]), ["NEW_INFO", "OLD_INFO"]);
    // message-destroy-all: before=, after=, priority=, checked by xe first.
    let r = lab.xe(&["message-destroy-all", "before=soon"]);
    assert!(
        r.code == 1 && r.stderr.contains("invalid timestamp format for 'before'"),
        "{}",
        r.stderr
    );
    lab.xe_ok(&["message-destroy-all", "priority=5", &format!("before={old_stamp}")]);
    assert_eq!(
        names(&[]),
        ["NEW_INFO", "OLD_INFO"],
        "OLD_INFO is not before its own second"
    );
    lab.xe_ok(&["message-destroy-all", "priority=5", &format!("after={old_stamp}")]);
    assert_eq!(names(&[]), ["OLD_INFO"]);
    let info = lab.xe_min(&["message-list", "params=uuid"]);
    lab.xe_ok(&["message-destroy", &format!("uuids={info}")]);
    assert!(names(&[]).is_empty());
    // And every destroy is in the audit log.
    let audit = lab.xe_ok(&["audit-list", "method=message.destroy_many", "--minimal"]);
    assert_eq!(audit.trim().split(',').count(), 2, "{audit}");
}
