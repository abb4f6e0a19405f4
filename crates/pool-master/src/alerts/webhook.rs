//! Alerts by webhook: a JSON `POST` of the message's fields to
//! `other-config:pool-ha-webhook-url`, signed with the pool's shared key.
//!
//! The body is one JSON object: `uuid`, `name`, `priority`, `class`,
//! `obj_uuid`, `timestamp` (XAPI's wire form), `body`, `pool_uuid`,
//! `pool_name`. Headers: `X-Pool-HA-Signature: sha256=<hex>`, the
//! HMAC-SHA256 of the body's bytes under the key (GitHub's form; a
//! receiver checks it before it believes the rest), `X-Pool-HA-Message`
//! (the message's uuid, to drop a second copy) and `X-Pool-HA-Attempt`.
//! An answer 2xx is delivered; 408, 429, 5xx and errors of the connection
//! are tried again; any other answer is final. Redirects are not followed
//! (the signed body would go to a host nobody named). HTTPS is checked
//! against the machine's trust store (rustls with the platform verifier).
//! Each attempt: 5 s to connect, 10 s in all.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use super::{Alert, Failure};

/// The signature's header.
pub const SIGNATURE_HEADER: &str = "X-Pool-HA-Signature";

/// A webhook target.
#[derive(Clone)]
pub struct Webhook {
    pub url: url::Url,
    key: String,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook").field("target", &self.label()).finish()
    }
}

/// The target of `url` as it may be shown: scheme, host and port (a path
/// or query may hold a token).
fn origin(url: &url::Url) -> String {
    format!(
        "{}://{}{}",
        url.scheme(),
        url.host_str().unwrap_or_default(),
        url.port().map(|p| format!(":{p}")).unwrap_or_default()
    )
}

/// `sha256=<hex>` of `body` under `key`.
pub fn signature(key: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", crate::daemon::hex(&mac.finalize().into_bytes()))
}

/// The one HTTP client of the webhooks.
fn client() -> Result<&'static reqwest::Client, Failure> {
    static CLIENT: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            use rustls_platform_verifier::BuilderVerifierExt;
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            let tls = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .and_then(|b| b.with_platform_verifier())
                .map_err(|e| format!("TLS setup: {e}"))?
                .with_no_client_auth();
            reqwest::Client::builder()
                .use_preconfigured_tls(tls)
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(Duration::from_secs(5))
                .timeout(Duration::from_secs(10))
                .no_proxy()
                .user_agent("pool-ha xapid")
                .build()
                .map_err(|e| format!("HTTP client: {e}"))
        })
        .as_ref()
        .map_err(|e| Failure::permanent(e.clone()))
}

impl Webhook {
    /// The target the pool's settings describe, or (its label, why not).
    pub fn from_settings(c: &BTreeMap<String, String>, pool_secret: &str) -> Result<Webhook, (String, String)> {
        let text = c.get("pool-ha-webhook-url").map(String::as_str).unwrap_or_default();
        let url = url::Url::parse(text.trim())
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some());
        let Some(url) = url else {
            return Err((
                "webhook".into(),
                "other-config:pool-ha-webhook-url is not an http:// or https:// URL".into(),
            ));
        };
        let label = format!("webhook {}", origin(&url));
        let sealed = c.get("pool-ha-webhook-secret").ok_or_else(|| {
            (
                label.clone(),
                "other-config:pool-ha-webhook-secret is not set: nothing is sent unsigned".to_string(),
            )
        })?;
        let key = crate::secrets::open(pool_secret, "pool-ha-webhook-secret", sealed)
            .map_err(|e| (label.clone(), format!("pool-ha-webhook-secret: {e}")))?;
        Ok(Webhook { url, key })
    }

    /// `webhook SCHEME://HOST[:PORT]`.
    pub fn label(&self) -> String {
        format!("webhook {}", origin(&self.url))
    }

    /// The body of `alert`.
    pub fn body(alert: &Alert) -> Vec<u8> {
        let m = &alert.message;
        let doc = json!({
            "uuid": m.uuid,
            "name": m.name,
            "priority": m.priority,
            "class": m.cls,
            "obj_uuid": m.obj_uuid,
            "timestamp": m.timestamp,
            "body": m.body,
            "pool_uuid": alert.pool_uuid,
            "pool_name": alert.pool_name,
        });
        serde_json::to_vec(&doc).unwrap_or_default()
    }

    /// Attempt `attempt`: the answer's status, or why not.
    pub async fn send(&self, alert: &Alert, attempt: u32) -> Result<String, Failure> {
        let body = Self::body(alert);
        let answer = client()?
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signature(&self.key, &body))
            .header("X-Pool-HA-Message", alert.message.uuid.as_str())
            .header("X-Pool-HA-Attempt", attempt.to_string())
            .body(body)
            .send()
            .await
            .map_err(|e| Failure::transient(e.without_url().to_string()))?;
        let status = answer.status();
        let text = format!("HTTP {}", status.as_u16());
        if status.is_success() {
            Ok(text)
        } else if status.is_server_error() || matches!(status.as_u16(), 408 | 429) {
            Err(Failure::transient(text))
        } else {
            Err(Failure::permanent(text))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xapi_proto::records::MessageRecord;

    fn alert() -> Alert {
        Alert {
            message: MessageRecord {
                uuid: "m-1".into(),
                name: "HA_HOST_FAILED".into(),
                priority: 1,
                cls: "Host".into(),
                obj_uuid: "h-2".into(),
                timestamp: "20240420T12:00:00Z".into(),
                body: "Host host2 failed".into(),
            },
            pool_uuid: "p".into(),
            pool_name: "lab".into(),
        }
    }

    fn settings(url: &str, secret: Option<&str>) -> BTreeMap<String, String> {
        let mut c = BTreeMap::new();
        c.insert("pool-ha-webhook-url".to_string(), url.to_string());
        if let Some(s) = secret {
            c.insert("pool-ha-webhook-secret".to_string(), s.to_string());
        }
        c
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_the_body() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let body: serde_json::Value = serde_json::from_slice(&Webhook::body(&alert())).unwrap();
        assert_eq!(body["name"], "HA_HOST_FAILED");
        assert_eq!(body["priority"], 1);
        assert_eq!(body["class"], "Host");
    }

    #[test]
    fn the_settings_need_a_url_and_a_sealed_key_and_show_neither_path_nor_key() {
        let sealed = crate::secrets::seal("ps", "pool-ha-webhook-secret", "k3y");
        let w = Webhook::from_settings(
            &settings("https://hooks.example.com:8443/T0KEN?x=1", Some(&sealed)),
            "ps",
        )
        .unwrap();
        assert_eq!(w.label(), "webhook https://hooks.example.com:8443");
        assert!(!format!("{w:?}").contains("k3y") && !format!("{w:?}").contains("T0KEN"));
        let none = Webhook::from_settings(&settings("http://127.0.0.1:1/h", None), "ps").unwrap_err();
        assert!(none.1.contains("unsigned"), "{none:?}");
        let plain = Webhook::from_settings(&settings("http://127.0.0.1:1/h", Some("k3y")), "ps").unwrap_err();
        assert!(plain.1.contains("not sealed") && !plain.1.contains("k3y"), "{plain:?}");
        assert!(Webhook::from_settings(&settings("file:///etc/passwd", Some(&sealed)), "ps").is_err());
    }

    /// A real attempt against a closed port on loopback: a connection
    /// error, to be tried again, that names no URL.
    #[tokio::test]
    async fn a_refused_connection_is_tried_again() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let sealed = crate::secrets::seal("ps", "pool-ha-webhook-secret", "k");
        let w = Webhook::from_settings(
            &settings(&format!("http://127.0.0.1:{port}/secret-path"), Some(&sealed)),
            "ps",
        )
        .unwrap();
        let f = w.send(&alert(), 1).await.unwrap_err();
        assert!(f.retry, "{f:?}");
        assert!(!f.detail.contains("secret-path"), "{f:?}");
    }
}
