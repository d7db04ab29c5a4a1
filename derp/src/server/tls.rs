//! TLS for a standalone relay: a rustls (ring) acceptor from PEM files.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// The certificate or key could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsConfigError {
    #[error("cannot read certificate chain {path}: {source}")]
    Certificate { path: String, source: rustls::pki_types::pem::Error },
    #[error("cannot read private key {path}: {source}")]
    PrivateKey { path: String, source: rustls::pki_types::pem::Error },
    #[error("certificate and key do not make a TLS config: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Builds a TLS acceptor (HTTP/1.1 only) from a PEM certificate chain and
/// a PEM private key.
pub fn tls_acceptor_from_pem_files(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsConfigError> {
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsConfigError::Certificate {
            path: cert.display().to_string(),
            source,
        })?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|source| TlsConfigError::PrivateKey { path: key.display().to_string(), source })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
