//! The certificates every HTTPS/WSS client of this project trusts: the
//! relay client, the coordination client and the API client (`coder`, the
//! agent, external provisioners) all take their TLS settings from
//! [`client_config`], so one deployment with a private CA works for all of
//! them once `SSL_CERT_FILE` names that CA.
//!
//! - `SSL_CERT_FILE` (a PEM bundle) and/or `SSL_CERT_DIR` set: exactly the
//!   certificates found there, as OpenSSL and Go read these variables. A
//!   file that cannot be read or holds no certificate is an error, never a
//!   silent fallback to other roots.
//! - Neither set: the operating system's store (`rustls-native-certs`); on
//!   a system without one (a bare container), the bundled Mozilla roots.
//!
//! Certificates are always verified; nothing here can turn that off.

use std::sync::{Arc, OnceLock};

use rustls::RootCertStore;

/// The trusted roots could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsRootsError {
    /// `SSL_CERT_FILE`/`SSL_CERT_DIR` name something unusable.
    #[error("cannot load the CA certificates that {var} names: {reason}")]
    Env { var: &'static str, reason: String },
    #[error("TLS setup failed: {0}")]
    Rustls(#[from] rustls::Error),
}

const ENV_VARS: [&str; 2] = ["SSL_CERT_FILE", "SSL_CERT_DIR"];

/// The trusted roots, read from the environment (see the module docs).
pub fn root_store() -> Result<RootCertStore, TlsRootsError> {
    let named: Vec<&'static str> = ENV_VARS
        .into_iter()
        .filter(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()))
        .collect();
    let found = rustls_native_certs::load_native_certs();
    if let Some(var) = named.first().copied() {
        if let Some(e) = found.errors.first() {
            return Err(TlsRootsError::Env { var, reason: e.to_string() });
        }
        let mut roots = RootCertStore::empty();
        let (added, _) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            return Err(TlsRootsError::Env { var, reason: "no usable certificate found".into() });
        }
        return Ok(roots);
    }
    for e in &found.errors {
        tracing::debug!(error = %e, "skipping part of the system certificate store");
    }
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        tracing::debug!("no system certificate store; trusting the bundled Mozilla roots");
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    Ok(roots)
}

/// A client config (ring, TLS 1.2 and 1.3, no client certificate) trusting
/// exactly `roots`: for tests and callers with a root store of their own.
pub fn client_config_with_roots(
    roots: RootCertStore,
) -> Result<Arc<rustls::ClientConfig>, TlsRootsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The process-wide client config over [`root_store`], built on first use
/// (a failure is not cached: the next call reports it again).
pub fn client_config() -> Result<Arc<rustls::ClientConfig>, TlsRootsError> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    if let Some(config) = CONFIG.get() {
        return Ok(config.clone());
    }
    let config = client_config_with_roots(root_store()?)?;
    Ok(CONFIG.get_or_init(|| config).clone())
}
