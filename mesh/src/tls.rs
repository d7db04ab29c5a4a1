//! TLS for mesh QUIC: peers authenticate by the ed25519 key the coordinator
//! announced, never by a CA or an address.
//!
//! Each node presents a self-signed certificate for its [`QuicSecret`]. The
//! certificate is only a carrier: a verifier takes the ed25519 key out of its
//! SubjectPublicKeyInfo, requires it to be the announced key (the dialed peer's,
//! or one of the known peers' when accepting), and checks the TLS 1.3
//! CertificateVerify signature with that key, so the peer proves it holds the
//! secret. Only TLS 1.3 and ed25519 are offered; the crypto provider is `ring`.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, RwLock};

use ed25519_dalek::{Signature, Verifier};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::key::{QuicKey, QuicSecret};

/// The ALPN protocol of mesh QUIC.
pub const ALPN: &[u8] = b"coder-mesh/1";

/// The TLS server name dialers use; certificates carry it, verifiers ignore it.
pub const SERVER_NAME: &str = "mesh.invalid";

/// DER prefix of an ed25519 SubjectPublicKeyInfo (RFC 8410), before the 32 key bytes.
const ED25519_SPKI_PREFIX: [u8; 12] =
    [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The self-signed certificate could not be made.
    #[error("generating the certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    /// rustls refused the configuration.
    #[error("configuring TLS: {0}")]
    Rustls(#[from] rustls::Error),
    /// The crypto provider lacks the cipher suite QUIC's initial packets need.
    #[error("no cipher suite usable for QUIC")]
    NoQuicCipherSuite,
}

/// A node's certificate and key, in the form rustls takes.
pub struct Identity {
    cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Identity(..)")
    }
}

impl Identity {
    /// A self-signed certificate for `secret`.
    pub fn new(secret: &QuicSecret) -> Result<Self, TlsError> {
        let key = pkcs8_v2(secret);
        let key_pair = rcgen::KeyPair::try_from(&key)?;
        let params = rcgen::CertificateParams::new(vec![SERVER_NAME.to_string()])?;
        let cert = params.self_signed(&key_pair)?;
        Ok(Self { cert: cert.der().clone(), key })
    }

    fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.clone_key())
    }
}

/// The PKCS#8 v2 document (RFC 5958) of an ed25519 key, as `ring` reads it.
fn pkcs8_v2(secret: &QuicSecret) -> PrivatePkcs8KeyDer<'static> {
    let mut der = hex_prefix("3053020101300506032b657004220420");
    der.extend_from_slice(&secret.to_bytes());
    der.extend_from_slice(&hex_prefix("a123032100"));
    der.extend_from_slice(secret.public().as_bytes());
    PrivatePkcs8KeyDer::from(der)
}

fn hex_prefix(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap_or_default()
}

/// The ed25519 key a certificate carries, if it carries exactly one.
pub fn certificate_key(cert: &[u8]) -> Option<QuicKey> {
    let mut found = cert
        .windows(ED25519_SPKI_PREFIX.len())
        .enumerate()
        .filter(|(_, w)| *w == ED25519_SPKI_PREFIX)
        .map(|(i, _)| i + ED25519_SPKI_PREFIX.len());
    let start = found.next()?;
    if found.next().is_some() {
        return None;
    }
    let bytes: [u8; 32] = cert.get(start..start + 32)?.try_into().ok()?;
    QuicKey::try_from_bytes(bytes).ok()
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn bad_cert(why: rustls::CertificateError) -> rustls::Error {
    rustls::Error::InvalidCertificate(why)
}

/// Checks a TLS 1.3 handshake signature with the key in `cert`.
fn verify_signature(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    if dss.scheme != SignatureScheme::ED25519 {
        return Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::NoSignatureSchemesInCommon,
        ));
    }
    let key = certificate_key(cert)
        .and_then(|k| k.verifying_key().ok())
        .ok_or(bad_cert(rustls::CertificateError::BadEncoding))?;
    let sig = Signature::from_slice(dss.signature())
        .map_err(|_| rustls::Error::InvalidCertificate(rustls::CertificateError::BadSignature))?;
    key.verify(message, &sig).map_err(|_| bad_cert(rustls::CertificateError::BadSignature))?;
    Ok(HandshakeSignatureValid::assertion())
}

fn tls12_refused() -> Result<HandshakeSignatureValid, rustls::Error> {
    Err(rustls::Error::PeerIncompatible(rustls::PeerIncompatible::Tls13RequiredForQuic))
}

/// The signature half of both verifiers: TLS 1.3 with ed25519, checked against
/// the key in the certificate (which the certificate check pinned).
macro_rules! ed25519_signatures {
    () => {
        fn verify_tls12_signature(
            &self,
            _message: &[u8],
            _cert: &CertificateDer<'_>,
            _dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            tls12_refused()
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            vec![SignatureScheme::ED25519]
        }
    };
}

/// Accepts exactly one server key: the dialed peer's announced key.
#[derive(Debug)]
struct ExpectedServer(QuicKey);

impl ServerCertVerifier for ExpectedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match certificate_key(end_entity) {
            Some(key) if key == self.0 => Ok(ServerCertVerified::assertion()),
            Some(_) => Err(bad_cert(rustls::CertificateError::ApplicationVerificationFailure)),
            None => Err(bad_cert(rustls::CertificateError::BadEncoding)),
        }
    }

    ed25519_signatures!();
}

/// The QUIC keys of the peers the coordinator announced, as the server's
/// verifier asks about them (once per handshake). A mesh endpoint answers
/// from its peer map ([`crate::MeshEndpoint::upsert_peer`]).
pub trait KnownKeys: fmt::Debug + Send + Sync {
    /// Whether `key` is a known peer's.
    fn knows(&self, key: &QuicKey) -> bool;
}

impl KnownKeys for RwLock<HashSet<QuicKey>> {
    fn knows(&self, key: &QuicKey) -> bool {
        self.read().map(|k| k.contains(key)).unwrap_or(false)
    }
}

/// Accepts any client whose key is one of the known peers'.
#[derive(Debug)]
struct KnownClients(Arc<dyn KnownKeys>);

impl ClientCertVerifier for KnownClients {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let key =
            certificate_key(end_entity).ok_or(bad_cert(rustls::CertificateError::BadEncoding))?;
        if self.0.knows(&key) {
            Ok(ClientCertVerified::assertion())
        } else {
            Err(bad_cert(rustls::CertificateError::ApplicationVerificationFailure))
        }
    }

    ed25519_signatures!();
}

/// TLS for dialing the peer whose announced key is `peer`.
pub fn client_config(identity: &Identity, peer: QuicKey) -> Result<rustls::ClientConfig, TlsError> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ExpectedServer(peer)))
        .with_client_auth_cert(vec![identity.cert.clone()], identity.key_der())?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

/// TLS for accepting connections from any of the `known` peers.
pub fn server_config(
    identity: &Identity,
    known: Arc<dyn KnownKeys>,
) -> Result<rustls::ServerConfig, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(KnownClients(known)))
        .with_single_cert(vec![identity.cert.clone()], identity.key_der())?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn certificate_carries_the_identity_key() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let secret = QuicSecret::generate(&mut rng);
        let identity = Identity::new(&secret).unwrap();
        assert_eq!(certificate_key(&identity.cert), Some(secret.public()));
        assert!(client_config(&identity, secret.public()).is_ok());
        assert!(server_config(&identity, Arc::new(RwLock::new(HashSet::new()))).is_ok());
    }

    #[test]
    fn garbage_certificates_carry_no_key() {
        assert_eq!(certificate_key(&[]), None);
        let twice =
            [ED25519_SPKI_PREFIX.as_slice(), &[9; 32], &ED25519_SPKI_PREFIX, &[9; 32]].concat();
        assert_eq!(certificate_key(&twice), None);
        let cut = [ED25519_SPKI_PREFIX.as_slice(), &[9; 10]].concat();
        assert_eq!(certificate_key(&cut), None);
    }
}
