//! Secrets among the pool's settings, and secrets in API calls.
//!
//! Two settings of the pool's `other_config` are secrets: the webhook's
//! shared key (`pool-ha-webhook-secret`) and the SMTP password
//! (`ssmtp-authpass`, XenServer's macro key for ssmtp's `AuthPass`). An
//! admin sets them as any other key (`xe pool-param-set
//! other-config:pool-ha-webhook-secret=...`); the setters [`seal`] the
//! value before it is written, so the pool database, its replicas, the
//! metadata file on the heartbeat SR, events and `xe` only ever hold
//! `sealed1:<base64>`: ChaCha20-Poly1305 (ring) under a key derived from
//! the pool secret (HMAC-SHA256), which every host has and which never
//! leaves the hosts. The alert sender [`open`]s it when it delivers.
//!
//! [`mask_call`] gives an API call's arguments with every secret replaced
//! by `(secret)`, for the audit log: passwords of logins and joins, the
//! pool secret of a member's login, and secret keys of maps.

use base64::Engine;
use hmac::{Hmac, Mac};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use serde_json::Value;
use sha2::Sha256;

/// The `other_config` keys of the pool that hold sealed secrets.
pub const SECRET_KEYS: &[&str] = &["pool-ha-webhook-secret", "ssmtp-authpass"];

/// What a sealed value starts with.
const PREFIX: &str = "sealed1:";

/// What a masked secret reads as in the audit log.
pub const MASKED: &str = "(secret)";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("the value is not sealed (set it again with pool-param-set)")]
    NotSealed,
    #[error(
        "the sealed value does not open with this pool's secret (sealed by another pool, or damaged): set it again"
    )]
    WrongKey,
}

/// Is `key` one of the pool's secret settings?
pub fn is_secret_key(key: &str) -> bool {
    SECRET_KEYS.contains(&key)
}

/// The AEAD key of a pool: HMAC-SHA256 of a fixed label under the pool secret.
fn key(pool_secret: &str) -> LessSafeKey {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(pool_secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(b"pool-ha sealed other-config v1");
    let bytes = mac.finalize().into_bytes();
    LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &bytes).expect("a 32-byte key"))
}

/// `value` sealed for setting `name` of the pool whose secret is
/// `pool_secret`. A value that already opens under this pool's key is
/// kept as it is (a whole map written back by a client).
pub fn seal(pool_secret: &str, name: &str, value: &str) -> String {
    if open(pool_secret, name, value).is_ok() {
        return value.to_string();
    }
    let mut nonce = [0u8; NONCE_LEN];
    rand::fill(&mut nonce);
    let mut data = value.as_bytes().to_vec();
    key(pool_secret)
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(name.as_bytes()),
            &mut data,
        )
        .expect("ChaCha20-Poly1305 seals any length we allow");
    let mut out = nonce.to_vec();
    out.extend_from_slice(&data);
    format!("{PREFIX}{}", base64::engine::general_purpose::STANDARD.encode(out))
}

/// The plain text of setting `name` sealed by [`seal`].
pub fn open(pool_secret: &str, name: &str, sealed: &str) -> Result<String, SecretError> {
    let text = sealed.strip_prefix(PREFIX).ok_or(SecretError::NotSealed)?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|_| SecretError::WrongKey)?;
    if bytes.len() < NONCE_LEN {
        return Err(SecretError::WrongKey);
    }
    let (nonce, data) = bytes.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SecretError::WrongKey)?;
    let mut data = data.to_vec();
    let plain = key(pool_secret)
        .open_in_place(nonce, Aad::from(name.as_bytes()), &mut data)
        .map_err(|_| SecretError::WrongKey)?;
    String::from_utf8(plain.to_vec()).map_err(|_| SecretError::WrongKey)
}

/// Setting `name`'s `value` sealed under `new` when it was sealed under
/// `old` (a pool secret rotation); `None` when there is nothing to do (not
/// sealed, or already under `new`) or it opens under neither.
pub fn reseal(old: &str, new: &str, name: &str, value: &str) -> Option<String> {
    if open(new, name, value).is_ok() {
        return None;
    }
    let plain = open(old, name, value).ok()?;
    Some(seal(new, name, &plain))
}

/// Seal every secret key of a pool `other_config` map in place.
pub fn seal_map(pool_secret: &str, map: &mut serde_json::Map<String, Value>) {
    for (k, v) in map.iter_mut() {
        if let (true, Some(text)) = (is_secret_key(k), v.as_str()) {
            *v = Value::String(seal(pool_secret, k, text));
        }
    }
}

/// Does a map key name a secret (a pool secret setting, or any key that
/// says password or secret)?
fn secret_name(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    is_secret_key(key) || k.contains("password") || k.contains("secret") || k.ends_with("pass") || k == "pwd"
}

/// The positions of secret arguments of `method`, counted from its first
/// argument (the session of most methods).
fn secret_positions(method: &str) -> &'static [usize] {
    match method {
        "session.login_with_password" | "session.slave_local_login_with_password" | "session.slave_login" => &[1],
        "session.change_password" => &[1, 2],
        "pool.join" | "pool.join_force" => &[3],
        _ => &[],
    }
}

/// Every secret in a map or list replaced by [`MASKED`].
fn mask_value(v: &Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let v = if secret_name(k) && !v.is_object() && !v.is_array() {
                        Value::String(MASKED.into())
                    } else {
                        mask_value(v)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(mask_value).collect()),
        other => other.clone(),
    }
}

/// The arguments of a call to `method` as the audit log keeps them: every
/// secret masked, and the session (`skip_session`) left out.
pub fn mask_call(method: &str, params: &[Value], skip_session: bool) -> Value {
    let plain = method.strip_prefix("Async.").unwrap_or(method);
    let positions = secret_positions(plain);
    // `add_to_<map>(session, self, key, value)` with a secret key.
    let map_key_secret = plain.contains(".add_to_") && params.get(2).and_then(Value::as_str).is_some_and(secret_name);
    let out: Vec<Value> = params
        .iter()
        .enumerate()
        .filter(|(i, _)| !(skip_session && *i == 0))
        .map(|(i, v)| {
            if positions.contains(&i) || (map_key_secret && i == 3) {
                Value::String(MASKED.into())
            } else {
                mask_value(v)
            }
        })
        .collect();
    Value::Array(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_sealed_value_opens_only_with_its_pool_and_key() {
        let sealed = seal("pool-a", "pool-ha-webhook-secret", "hunter2");
        assert!(sealed.starts_with(PREFIX), "{sealed}");
        assert!(!sealed.contains("hunter2"));
        assert_eq!(
            open("pool-a", "pool-ha-webhook-secret", &sealed).as_deref(),
            Ok("hunter2")
        );
        assert_eq!(
            open("pool-b", "pool-ha-webhook-secret", &sealed),
            Err(SecretError::WrongKey)
        );
        assert_eq!(open("pool-a", "ssmtp-authpass", &sealed), Err(SecretError::WrongKey));
        assert_eq!(open("pool-a", "ssmtp-authpass", "hunter2"), Err(SecretError::NotSealed));
        assert_eq!(
            open("pool-a", "ssmtp-authpass", "sealed1:!!"),
            Err(SecretError::WrongKey)
        );
        // Sealed again, it stays as it is; another pool's sealed text is
        // taken as plain text and sealed.
        assert_eq!(seal("pool-a", "pool-ha-webhook-secret", &sealed), sealed);
        let other = seal("pool-b", "pool-ha-webhook-secret", &sealed);
        assert_ne!(other, sealed);
        assert_ne!(
            seal("pool-a", "pool-ha-webhook-secret", "hunter2"),
            sealed,
            "a fresh nonce each time"
        );
        let mut map = serde_json::Map::new();
        map.insert("pool-ha-webhook-secret".into(), json!("k"));
        map.insert("pool-ha-webhook-url".into(), json!("http://x"));
        seal_map("pool-a", &mut map);
        assert_eq!(map["pool-ha-webhook-url"], "http://x");
        assert_eq!(
            open(
                "pool-a",
                "pool-ha-webhook-secret",
                map["pool-ha-webhook-secret"].as_str().unwrap()
            )
            .as_deref(),
            Ok("k")
        );
    }

    #[test]
    fn calls_are_logged_with_their_secrets_masked() {
        let login = mask_call(
            "session.login_with_password",
            &[json!("root"), json!("pw"), json!("1.0"), json!("xe")],
            false,
        );
        assert_eq!(login, json!(["root", MASKED, "1.0", "xe"]));
        let join = mask_call(
            "pool.join",
            &[json!("OpaqueRef:s"), json!("10.0.0.1"), json!("root"), json!("pw")],
            true,
        );
        assert_eq!(join, json!(["10.0.0.1", "root", MASKED]));
        let add = mask_call(
            "pool.add_to_other_config",
            &[
                json!("s"),
                json!("OpaqueRef:p"),
                json!("pool-ha-webhook-secret"),
                json!("k"),
            ],
            true,
        );
        assert_eq!(add, json!(["OpaqueRef:p", "pool-ha-webhook-secret", MASKED]));
        let plain = mask_call(
            "pool.add_to_other_config",
            &[
                json!("s"),
                json!("OpaqueRef:p"),
                json!("mail-destination"),
                json!("a@b"),
            ],
            true,
        );
        assert_eq!(plain, json!(["OpaqueRef:p", "mail-destination", "a@b"]));
        let map = mask_call(
            "pool.set_other_config",
            &[
                json!("s"),
                json!("OpaqueRef:p"),
                json!({"ssmtp-authpass": "x", "ssmtp-mailhub": "m:25", "db_password": "y"}),
            ],
            true,
        );
        assert_eq!(
            map,
            json!(["OpaqueRef:p", {"ssmtp-authpass": MASKED, "ssmtp-mailhub": "m:25", "db_password": MASKED}])
        );
    }

    #[test]
    fn a_rotation_seals_again_under_the_new_secret() {
        let sealed = seal("old", "pool-ha-webhook-secret", "k3y");
        let again = reseal("old", "new", "pool-ha-webhook-secret", &sealed).unwrap();
        assert_eq!(open("new", "pool-ha-webhook-secret", &again).unwrap(), "k3y");
        assert!(open("old", "pool-ha-webhook-secret", &again).is_err());
        // Done already, or not ours: nothing to do.
        assert_eq!(reseal("old", "new", "pool-ha-webhook-secret", &again), None);
        assert_eq!(reseal("x", "y", "pool-ha-webhook-secret", &sealed), None);
    }
}
