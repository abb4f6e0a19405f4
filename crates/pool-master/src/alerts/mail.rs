//! Alerts by mail, as XenServer's `mail-alarm` sends them (its subject and
//! body), through `lettre`'s SMTP client over rustls: plain SMTP (ssmtp's
//! default), STARTTLS (`ssmtp-usestarttls=YES`) or TLS from the first
//! byte (`ssmtp-usetls=YES`), with a login when `ssmtp-authuser` and the
//! sealed `ssmtp-authpass` are set. Each attempt has 10 s per SMTP step.

use std::collections::BTreeMap;
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::{Alert, Failure};

/// The time limit of each SMTP step (connect, each command).
const STEP: Duration = Duration::from_secs(10);

/// How the connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    Plain,
    StartTls,
    Tls,
}

/// A mail target.
#[derive(Clone)]
pub struct Mail {
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub to: Vec<Mailbox>,
    pub from: Mailbox,
    /// User and password (opened from its sealed setting).
    login: Option<(String, String)>,
}

impl std::fmt::Debug for Mail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mail")
            .field("target", &self.label())
            .field("login", &self.login.as_ref().map(|(u, _)| u))
            .finish()
    }
}

/// `host[:port]`, `[v6]:port` or a bare IPv6 address, as ssmtp's
/// `mailhub` reads; port 25 when none is given.
pub fn parse_hub(hub: &str) -> Option<(String, u16)> {
    let hub = hub.trim();
    if hub.is_empty() {
        return None;
    }
    if let Some(rest) = hub.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => 25,
            None => return None,
        };
        return Some((host.to_string(), port));
    }
    match hub.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => Some((host.to_string(), port.parse().ok()?)),
        Some(_) => Some((hub.to_string(), 25)),
        None => Some((hub.to_string(), 25)),
    }
}

fn yes(v: Option<&String>) -> bool {
    v.is_some_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "yes" | "true" | "1" | "on"))
}

/// This machine's name, for the default sender.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

impl Mail {
    /// The target the pool's settings describe, or (its label, why not).
    pub fn from_settings(c: &BTreeMap<String, String>, pool_secret: &str) -> Result<Mail, (String, String)> {
        let destination = c.get("mail-destination").map(String::as_str).unwrap_or_default();
        let label = format!("smtp to {destination}");
        let fail = |why: String| (label.clone(), why);
        let (host, port) = parse_hub(c.get("ssmtp-mailhub").map(String::as_str).unwrap_or_default())
            .ok_or_else(|| fail("other-config:ssmtp-mailhub is not set to host[:port]".into()))?;
        let to = destination
            .split([',', ' '])
            .filter(|a| !a.is_empty())
            .map(|a| {
                a.parse::<Mailbox>()
                    .map_err(|e| fail(format!("mail-destination {a:?}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if to.is_empty() {
            return Err(fail("other-config:mail-destination names no address".into()));
        }
        let sender = c
            .get("mail-sender")
            .cloned()
            .unwrap_or_else(|| format!("noreply@{}", host_name()));
        let from = sender
            .parse::<Mailbox>()
            .map_err(|e| fail(format!("mail-sender {sender:?}: {e}")))?;
        let security = if yes(c.get("ssmtp-usetls")) {
            Security::Tls
        } else if yes(c.get("ssmtp-usestarttls")) {
            Security::StartTls
        } else {
            Security::Plain
        };
        let login = match (c.get("ssmtp-authuser"), c.get("ssmtp-authpass")) {
            (Some(user), Some(sealed)) => {
                let pass = crate::secrets::open(pool_secret, "ssmtp-authpass", sealed)
                    .map_err(|e| fail(format!("ssmtp-authpass: {e}")))?;
                Some((user.clone(), pass))
            }
            (Some(_), None) => return Err(fail("ssmtp-authuser is set without ssmtp-authpass".into())),
            _ => None,
        };
        Ok(Mail {
            host,
            port,
            security,
            to,
            from,
            login,
        })
    }

    /// `smtp HOST:PORT to ADDRESSES`.
    pub fn label(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let to: Vec<String> = self.to.iter().map(|m| m.email.to_string()).collect();
        format!("smtp {host}:{} to {}", self.port, to.join(","))
    }

    fn transport(&self) -> Result<AsyncSmtpTransport<Tokio1Executor>, Failure> {
        let builder = match self.security {
            Security::Plain => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(self.host.as_str()),
            Security::StartTls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&self.host)
                .map_err(|e| Failure::permanent(format!("TLS setup: {e}")))?,
            Security::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&self.host)
                .map_err(|e| Failure::permanent(format!("TLS setup: {e}")))?,
        };
        let mut builder = builder.port(self.port).timeout(Some(STEP));
        if let Some((user, pass)) = &self.login {
            builder = builder.credentials(Credentials::new(user.clone(), pass.clone()));
        }
        Ok(builder.build())
    }

    /// One attempt: the server's answer, or why not.
    pub async fn send(&self, alert: &Alert) -> Result<String, Failure> {
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(subject(alert))
            .header(ContentType::TEXT_PLAIN);
        for to in &self.to {
            builder = builder.to(to.clone());
        }
        let email = builder
            .body(body(alert))
            .map_err(|e| Failure::permanent(format!("cannot build the mail: {e}")))?;
        // The whole exchange within a bound too, beyond lettre's per-step one.
        let sent = tokio::time::timeout(STEP * 4, self.transport()?.send(email))
            .await
            .map_err(|_| Failure::transient(format!("no answer within {} s", (STEP * 4).as_secs())))?;
        match sent {
            Ok(r) => Ok(format!("{} {}", r.code(), r.message().collect::<Vec<_>>().join(" "))
                .trim()
                .to_string()),
            Err(e) if e.is_permanent() => Err(Failure::permanent(e.to_string())),
            Err(e) => Err(Failure::transient(e.to_string())),
        }
    }
}

/// XAPI's default subject: `[pool] pool-ha Message: Host <uuid> HA_HOST_FAILED`.
pub fn subject(alert: &Alert) -> String {
    let m = &alert.message;
    format!(
        "[{}] pool-ha Message: {} {} {}",
        alert.pool_name, m.cls, m.obj_uuid, m.name
    )
}

/// XAPI's default body: the message's fields, one a line.
pub fn body(alert: &Alert) -> String {
    let m = &alert.message;
    format!(
        "Field\t\tValue\n-----\t\t-----\nName:\t\t{}\nPriority:\t{}\nClass:\t\t{}\nObject UUID:\t{}\nTimestamp:\t{}\nMessage UUID:\t{}\nPool name:\t{}\nBody:\t{}\n",
        m.name, m.priority, m.cls, m.obj_uuid, m.timestamp, m.uuid, alert.pool_name, m.body
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mailhub_reads_as_ssmtp_reads_it() {
        assert_eq!(parse_hub("mail.example.com"), Some(("mail.example.com".into(), 25)));
        assert_eq!(parse_hub("127.0.0.1:2525"), Some(("127.0.0.1".into(), 2525)));
        assert_eq!(parse_hub("[::1]:587"), Some(("::1".into(), 587)));
        assert_eq!(parse_hub("::1"), Some(("::1".into(), 25)));
        assert_eq!(parse_hub("host:port"), None);
        assert_eq!(parse_hub(""), None);
    }

    #[test]
    fn the_password_is_opened_from_its_sealed_setting_and_never_shown() {
        let sealed = crate::secrets::seal("ps", "ssmtp-authpass", "hunter2");
        let c: BTreeMap<String, String> = [
            ("mail-destination", "a@example.com, b@example.com"),
            ("ssmtp-mailhub", "mail.example.com:587"),
            ("ssmtp-usestarttls", "YES"),
            ("ssmtp-authuser", "alerts"),
            ("ssmtp-authpass", sealed.as_str()),
            ("mail-sender", "pool@example.com"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let m = Mail::from_settings(&c, "ps").unwrap();
        assert_eq!(m.security, Security::StartTls);
        assert_eq!(m.login, Some(("alerts".into(), "hunter2".into())));
        assert_eq!(m.label(), "smtp mail.example.com:587 to a@example.com,b@example.com");
        assert!(!format!("{m:?}").contains("hunter2"));
        let wrong = Mail::from_settings(&c, "another pool").unwrap_err();
        assert!(wrong.1.contains("ssmtp-authpass"), "{wrong:?}");
        assert!(!wrong.1.contains("hunter2"));
    }
}
