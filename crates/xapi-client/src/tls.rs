//! How the client trusts a host's certificate: pinned fingerprints.
//!
//! pool-ha hosts serve self-signed certificates (each makes its own, as
//! XAPI's do), so no CA vouches for them; the client trusts a host whose
//! certificate's SHA-256 fingerprint is pinned for the address it dialled
//! (`xe` keeps the pins in a known-hosts file). A certificate that is not
//! pinned fails the handshake; [`Pins::refused`] then says which
//! fingerprint the host showed, so the caller can tell "unknown" from
//! "changed" and ask the admin. Signatures are checked as usual: the host
//! must hold the key of the certificate it shows. The pool's hosts also
//! trust a certificate a peer proved with the pool secret
//! ([`Pins::prove`]; the proof itself is the daemon's).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

/// The SHA-256 fingerprint of a DER certificate (`AB:CD:...`, upper case,
/// as XAPI and `openssl x509 -fingerprint -sha256` show it).
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A fingerprint as typed by a person: case and separators do not matter.
pub fn normalize(fp: &str) -> String {
    let hex: String = fp
        .chars()
        .filter(char::is_ascii_hexdigit)
        .collect::<String>()
        .to_ascii_uppercase();
    hex.as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(":")
}

/// Which certificates the client trusts.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Plain HTTP, no TLS (`xe --nossl`).
    Plain,
    /// TLS, trusting the pinned certificates.
    Pinned(Arc<Pins>),
    /// TLS without checking who the host is (`xe --no-verify`).
    Anyone,
}

/// The pinned fingerprints by address, and what a refused host showed.
#[derive(Debug, Default)]
pub struct Pins {
    by_address: Mutex<HashMap<String, Vec<String>>>,
    /// Certificates a host proved with the pool secret, by address (see
    /// [`Pins::prove`]); kept apart from [`Pins::pin_all`]'s.
    proven: Mutex<HashMap<String, String>>,
    refused: Mutex<Option<(String, String)>>,
    /// An address with no pin at all is trusted (see [`Pins::for_peers`]).
    open_unknown: bool,
}

impl Pins {
    pub fn new() -> Pins {
        Pins::default()
    }

    /// Pins for calls between the hosts of a pool: an address the pool
    /// keeps a certificate for must show it; an address it keeps none for
    /// yet (a host between its join and its first report, or a pool
    /// database from before certificates were kept) is trusted as the
    /// unpinned TLS it had before.
    pub fn for_peers() -> Pins {
        Pins {
            open_unknown: true,
            ..Pins::default()
        }
    }

    /// Replace every pin: `pins` by address (an IP address in its
    /// canonical form, as the verifier sees the address dialled).
    /// A certificate proven at `address` stays trusted until these pins
    /// record it there themselves or another proof replaces it.
    pub fn pin_all(&self, pins: HashMap<String, Vec<String>>) {
        let pins: HashMap<String, Vec<String>> = pins
            .into_iter()
            .map(|(a, fps)| (canonical(&a), fps.iter().map(|f| normalize(f)).collect()))
            .collect();
        self.proven
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|a, fp| !pins.get(a).is_some_and(|fps| fps.contains(fp)));
        *self.by_address.lock().unwrap_or_else(|p| p.into_inner()) = pins;
    }

    /// Trust `fingerprint` at `address` because the host there proved,
    /// with the pool secret, that it is its certificate (the caller checked
    /// the proof): in addition to the address's pins, in place of an
    /// earlier proof.
    pub fn prove(&self, address: &str, fingerprint: &str) {
        self.proven
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(canonical(address), normalize(fingerprint));
    }

    /// Trust the certificate `fingerprint` at `address`.
    pub fn pin(&self, address: &str, fingerprint: &str) {
        self.by_address
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(address.to_string())
            .or_default()
            .push(normalize(fingerprint));
    }

    /// The pins of `address`.
    pub fn of(&self, address: &str) -> Vec<String> {
        self.by_address
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&canonical(address))
            .cloned()
            .unwrap_or_default()
    }

    /// The last certificate refused: (address, fingerprint it showed).
    pub fn refused(&self) -> Option<(String, String)> {
        self.refused.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn accepts(&self, address: &str, fingerprint: &str) -> bool {
        let pinned = self.of(address);
        let proven = self
            .proven
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&canonical(address))
            .is_some_and(|f| f == fingerprint);
        proven || (self.open_unknown && pinned.is_empty()) || pinned.iter().any(|f| f == fingerprint)
    }
}

/// An IP address in its canonical text (`2001:DB8::1` and `2001:db8::1`
/// are one host); a name as it is.
fn canonical(address: &str) -> String {
    address
        .parse::<std::net::IpAddr>()
        .map_or_else(|_| address.to_string(), |ip| ip.to_string())
}

/// The name a certificate is checked for, as the address was dialled.
fn address_of(name: &ServerName<'_>) -> String {
    match name {
        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        ServerName::DnsName(d) => d.as_ref().to_string(),
        _ => String::new(),
    }
}

#[derive(Debug)]
struct Verifier {
    /// `None`: anyone (signatures are still checked).
    pins: Option<Arc<Pins>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(pins) = &self.pins else {
            return Ok(ServerCertVerified::assertion());
        };
        let address = address_of(server_name);
        let fp = fingerprint(end_entity);
        if pins.accepts(&address, &fp) {
            return Ok(ServerCertVerified::assertion());
        }
        *pins.refused.lock().unwrap_or_else(|p| p.into_inner()) = Some((address.clone(), fp.clone()));
        Err(rustls::Error::General(format!(
            "the certificate of {address} (SHA-256 {fp}) is not the one pinned for it"
        )))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// The rustls configuration of `trust` (for plain HTTP too: the HTTP
/// client is built with one either way, and never uses it for `http://`).
///
/// The client uses *ring*'s provider, not aws-lc-rs's: aws-lc seeds its
/// jitter entropy source when first used, about 30 ms of CPU, which every
/// `xe` command paid (a median `xe vm-list` went from 8 to 41 ms against a
/// lab); *ring* takes its randomness from `getrandom`. Its provider is
/// marked deprecated for lacking post-quantum key exchange, which matters
/// less here than the pinned certificates do. The server (long-running)
/// uses aws-lc-rs.
///
/// The key exchange offers X25519 first: *ring*'s provider lists P-384
/// first, and the server takes the client's first share, so every command
/// paid two P-384 scalar multiplications (11 M of the 16 M instructions
/// TLS added to `xe vm-list` against 1,000 VMs, about 2 ms here). X25519
/// is TLS 1.3's usual first choice; P-256 and P-384 stay offered for a
/// server that wants them. Certificates are checked as before.
pub fn client_config(trust: &Trust) -> rustls::ClientConfig {
    let pins = match trust {
        Trust::Pinned(p) => Some(p.clone()),
        Trust::Plain | Trust::Anyone => None,
    };
    #[allow(deprecated)]
    let provider = {
        use rustls::crypto::ring::{default_provider, kx_group};
        Arc::new(rustls::crypto::CryptoProvider {
            kx_groups: vec![kx_group::X25519, kx_group::SECP256R1, kx_group::SECP384R1],
            ..default_provider()
        })
    };
    let verifier = Arc::new(Verifier {
        pins,
        provider: provider.clone(),
    });
    rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)
        .expect("ring supports TLS 1.2 and 1.3")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_offers_x25519_first_whatever_it_trusts() {
        for trust in [Trust::Plain, Trust::Anyone, Trust::Pinned(Arc::new(Pins::new()))] {
            let config = client_config(&trust);
            let groups: Vec<_> = config.crypto_provider().kx_groups.iter().map(|g| g.name()).collect();
            assert_eq!(
                groups,
                [
                    rustls::NamedGroup::X25519,
                    rustls::NamedGroup::secp256r1,
                    rustls::NamedGroup::secp384r1
                ]
            );
        }
    }

    #[test]
    fn fingerprints_are_compared_as_people_type_them() {
        assert_eq!(normalize("ab:cd:0f"), "AB:CD:0F");
        assert_eq!(normalize("ABCD0F"), "AB:CD:0F");
        let pins = Pins::new();
        pins.pin("10.0.0.1", "ab cd 0f");
        assert!(pins.accepts("10.0.0.1", "AB:CD:0F"));
        assert!(!pins.accepts("10.0.0.2", "AB:CD:0F"));
        // A pool's peers: an address with no pin is trusted, one with a pin
        // must show it; replacing the pins takes the old ones away.
        let peers = Pins::for_peers();
        assert!(peers.accepts("10.0.0.1", "AB:CD:0F"));
        peers.pin_all(HashMap::from([("10.0.0.1".to_string(), vec!["ab:cd:0f".to_string()])]));
        assert!(peers.accepts("10.0.0.1", "AB:CD:0F"));
        assert!(!peers.accepts("10.0.0.1", "AB:CD:10"));
        assert!(peers.accepts("10.0.0.2", "AB:CD:10"));
        peers.pin_all(HashMap::from([("10.0.0.1".to_string(), vec!["AB:CD:10".to_string()])]));
        assert!(!peers.accepts("10.0.0.1", "AB:CD:0F"));
        // An IPv6 address however it is written.
        peers.pin_all(HashMap::from([(
            "2001:DB8::1".to_string(),
            vec!["AB:CD:10".to_string()],
        )]));
        assert!(!peers.accepts("2001:db8:0::1", "AB:CD:0F"));
        assert!(peers.accepts("2001:db8::1", "AB:CD:10"));
        assert!(!pins.accepts("10.0.0.1", "AB:CD:10"));
        // A proven certificate: trusted beside the pins, kept by a pin_all
        // that does not record it, dropped by one that does (the pins hold
        // it now), replaced by the next proof.
        peers.pin_all(HashMap::from([("10.0.0.3".to_string(), vec!["AB:01".to_string()])]));
        peers.prove("10.0.0.3", "ab:02");
        assert!(peers.accepts("10.0.0.3", "AB:02") && peers.accepts("10.0.0.3", "AB:01"));
        peers.pin_all(HashMap::from([("10.0.0.3".to_string(), vec!["AB:01".to_string()])]));
        assert!(peers.accepts("10.0.0.3", "AB:02"));
        peers.prove("10.0.0.3", "AB:03");
        assert!(!peers.accepts("10.0.0.3", "AB:02") && peers.accepts("10.0.0.3", "AB:03"));
        peers.pin_all(HashMap::from([("10.0.0.3".to_string(), vec!["AB:03".to_string()])]));
        peers.pin_all(HashMap::from([("10.0.0.3".to_string(), vec!["AB:04".to_string()])]));
        assert!(!peers.accepts("10.0.0.3", "AB:03"));
    }
}
