//! This host's TLS identity: the certificate its API serves.
//!
//! Each host makes its own on first start, as XAPI does: a self-signed
//! certificate (ECDSA P-256, rcgen) for its management address and host
//! name, valid ten years, kept with its key in `DATA_DIR/xapi-ssl.pem`
//! (mode 0600, written whole: sibling, fsync, rename). Later starts load
//! it; a file that cannot be read or parsed stops the start with the
//! reason, rather than being replaced behind the admin's back (clients
//! pinned the old certificate). Its SHA-256 fingerprint is what clients
//! pin (`xe` in `~/.xe`).
//!
//! A host whose certificate changed (its file moved away and a new one
//! made) is refused by peers that pinned the old one. It can vouch for the
//! new one with the pool secret ([`certificate_proof`]): a peer sends a
//! fresh nonce over a connection that trusts only the certificate it was
//! just shown, and the host answers with an HMAC, under a key derived from
//! the secret, over that nonce and the certificate's fingerprint
//! (`host.prove_certificate`, `crate::peers`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
pub use xapi_client::tls::fingerprint;

/// The file in the data directory.
pub const FILE: &str = "xapi-ssl.pem";

/// Why there is no identity.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{path} holds no {what} in PEM (move it away to have a new certificate made)")]
    Pem { path: PathBuf, what: &'static str },
    #[error("cannot make a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("the certificate in {path} is not usable: {source}")]
    Config { path: PathBuf, source: rustls::Error },
}

/// This host's certificate and key.
#[derive(Debug)]
pub struct Identity {
    pub cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    path: PathBuf,
}

impl Identity {
    /// Load `data_dir/xapi-ssl.pem`, or make one for `names` (the
    /// management address first) when there is none.
    pub fn load_or_create(data_dir: &Path, names: &[String]) -> Result<Identity, TlsError> {
        let path = data_dir.join(FILE);
        match std::fs::read(&path) {
            Ok(pem) => Identity::parse(&path, &pem),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let pem = generate(names)?;
                crate::files::replace_private(&path, pem.as_bytes()).map_err(|source| TlsError::Write {
                    path: path.clone(),
                    source,
                })?;
                Identity::parse(&path, pem.as_bytes())
            }
            Err(source) => Err(TlsError::Read { path, source }),
        }
    }

    fn parse(path: &Path, pem: &[u8]) -> Result<Identity, TlsError> {
        let cert = CertificateDer::from_pem_slice(pem).map_err(|_| TlsError::Pem {
            path: path.to_path_buf(),
            what: "certificate",
        })?;
        let key = PrivateKeyDer::from_pem_slice(pem).map_err(|_| TlsError::Pem {
            path: path.to_path_buf(),
            what: "private key",
        })?;
        Ok(Identity {
            cert,
            key,
            path: path.to_path_buf(),
        })
    }

    /// The certificate's SHA-256 fingerprint.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.cert)
    }

    /// What the pool records of this certificate.
    pub fn summary(&self) -> Summary {
        Summary::of(&self.cert)
    }

    /// The server side of TLS with this identity (TLS 1.2 and 1.3,
    /// HTTP/1.1).
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|source| self.config_error(source))?
            .with_no_client_auth()
            .with_single_cert(vec![self.cert.clone()], self.key.clone_key())
            .map_err(|source| self.config_error(source))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    fn config_error(&self, source: rustls::Error) -> TlsError {
        TlsError::Config {
            path: self.path.clone(),
            source,
        }
    }
}

/// What the pool records of a host's certificate (XAPI's `Certificate`
/// fields): its fingerprint, which the other hosts pin, and its validity
/// (XAPI's wire datetimes; empty when the certificate cannot be parsed,
/// which a certificate this host made never is).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    pub fingerprint: String,
    pub not_before: String,
    pub not_after: String,
}

impl Summary {
    /// A SHA-256 fingerprint as [`fingerprint`] writes it, and dates in
    /// XAPI's wire form (or empty): what a host may report of itself.
    pub fn well_formed(&self) -> bool {
        let date = |d: &str| d.is_empty() || (d.len() == 18 && d.is_ascii() && d.ends_with('Z'));
        self.fingerprint.len() == 32 * 3 - 1
            && xapi_client::tls::normalize(&self.fingerprint) == self.fingerprint
            && date(&self.not_before)
            && date(&self.not_after)
    }

    pub fn of(der: &[u8]) -> Summary {
        let (not_before, not_after) = match x509_parser::parse_x509_certificate(der) {
            Ok((_, cert)) => {
                let wire = |t: x509_parser::time::ASN1Time| {
                    crate::clock::wire(u64::try_from(t.timestamp()).unwrap_or(0).saturating_mul(1000))
                };
                (wire(cert.validity().not_before), wire(cert.validity().not_after))
            }
            Err(_) => (String::new(), String::new()),
        };
        Summary {
            fingerprint: fingerprint(der),
            not_before,
            not_after,
        }
    }
}

/// What keys a certificate proof apart from every other use of the pool
/// secret (heartbeats, logins): the proof's key is HMAC(secret, this).
const PROOF_LABEL: &[u8] = b"pool-ha certificate proof v1";

/// How long a proof's nonce is, in hex digits (at least; at most twice).
pub const NONCE_HEX: usize = 64;

fn proof_mac(secret: &str, nonce: &str, fingerprint: &str) -> hmac::Hmac<sha2::Sha256> {
    use hmac::Mac;
    let mut key = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    key.update(PROOF_LABEL);
    let key = key.finalize().into_bytes();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).expect("HMAC takes any key");
    mac.update(nonce.as_bytes());
    mac.update(&[0]);
    mac.update(xapi_client::tls::normalize(fingerprint).as_bytes());
    mac
}

/// The proof, for a peer that sent `nonce`, that the holder of the pool
/// secret `secret` serves the certificate `fingerprint`: in hex.
pub fn certificate_proof(secret: &str, nonce: &str, fingerprint: &str) -> String {
    use hmac::Mac;
    proof_mac(secret, nonce, fingerprint)
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Does `proof` (hex) prove `fingerprint` for `nonce` under `secret`?
/// Compared in constant time.
pub fn proof_holds(secret: &str, nonce: &str, fingerprint: &str, proof: &str) -> bool {
    use hmac::Mac;
    if proof.len() != 64 || !proof.is_ascii() {
        return false;
    }
    let bytes: Option<Vec<u8>> = (0..32)
        .map(|i| u8::from_str_radix(&proof[2 * i..2 * i + 2], 16).ok())
        .collect();
    bytes.is_some_and(|b| proof_mac(secret, nonce, fingerprint).verify_slice(&b).is_ok())
}

/// A fresh nonce for a proof: 32 random bytes in hex.
pub fn nonce() -> String {
    (0..NONCE_HEX / 2)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

/// A new self-signed certificate and its key, in PEM (key first).
fn generate(names: &[String]) -> Result<String, TlsError> {
    let mut params = rcgen::CertificateParams::new(names.to_vec())?;
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, names.first().cloned().unwrap_or_default());
    params.distinguished_name = dn;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(3650);
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok(format!("{}{}", key.serialize_pem(), cert.pem()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn made_once_private_and_loaded_again() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["127.0.0.7".to_string(), "host7".to_string()];
        let a = Identity::load_or_create(dir.path(), &names).unwrap();
        let mode = std::fs::metadata(dir.path().join(FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = Identity::load_or_create(dir.path(), &names).unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint().len(), 32 * 3 - 1);
        assert!(a.server_config().is_ok());
        // Valid from a day ago for ten years, in XAPI's wire time.
        let s = a.summary();
        assert_eq!(s.fingerprint, a.fingerprint());
        let year = |t: &str| t[..4].parse::<i32>().unwrap();
        assert_eq!(s.not_before.len(), "20240420T12:00:00Z".len(), "{s:?}");
        assert_eq!(year(&s.not_after) - year(&s.not_before), 10, "{s:?}");
        assert!(s.well_formed());
        let bad = Summary {
            fingerprint: "AB:CD".into(),
            ..s.clone()
        };
        assert!(!bad.well_formed());
        let bad = Summary {
            not_after: "tomorrow\n".into(),
            ..s
        };
        assert!(!bad.well_formed());
    }

    #[test]
    fn a_proof_holds_only_for_its_secret_nonce_and_certificate() {
        let n = nonce();
        assert_eq!(n.len(), NONCE_HEX);
        assert_ne!(n, nonce());
        let fp = "AB:CD:EF";
        let p = certificate_proof("secret", &n, fp);
        assert!(proof_holds("secret", &n, "ab cd ef", &p));
        assert!(!proof_holds("other", &n, fp, &p));
        assert!(!proof_holds("secret", &nonce(), fp, &p));
        assert!(!proof_holds("secret", &n, "AB:CD:EE", &p));
        assert!(!proof_holds("secret", &n, fp, &p[..62]));
        assert!(!proof_holds("secret", &n, fp, &"zz".repeat(32)));
        assert!(!proof_holds("secret", &n, fp, &"é".repeat(32)));
        // Not the plain HMAC of the secret: the label keeps it apart.
        use hmac::Mac;
        let mut plain = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"secret").unwrap();
        plain.update(n.as_bytes());
        let plain: String = plain
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_ne!(plain, p);
    }

    #[test]
    fn a_damaged_file_stops_the_start_instead_of_being_replaced() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), b"not PEM").unwrap();
        let e = Identity::load_or_create(dir.path(), &["h".into()]).unwrap_err();
        assert!(e.to_string().contains("holds no certificate"), "{e}");
        assert_eq!(std::fs::read(dir.path().join(FILE)).unwrap(), b"not PEM");
    }
}
