//! The server's host key: generated at start, or loaded from the OpenSSH
//! private key format the agent persists it in.

use rand::RngCore;
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::ssh_key::{HashAlg, LineEnding};
use russh::keys::PrivateKey;

/// Why a host key could not be parsed or encoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostKeyError {
    /// The text is not an unencrypted OpenSSH private key.
    #[error("invalid OpenSSH private key: {0}")]
    Parse(String),
    /// The key could not be encoded.
    #[error("cannot encode host key: {0}")]
    Encode(String),
}

/// An SSH host key.
#[derive(Clone)]
pub struct HostKey(PrivateKey);

impl std::fmt::Debug for HostKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("HostKey").field(&self.fingerprint()).finish()
    }
}

impl HostKey {
    /// A fresh Ed25519 key from the OS's random source.
    pub fn generate() -> Self {
        let mut seed = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut seed);
        Self(PrivateKey::from(Ed25519Keypair::from_seed(&seed)))
    }

    /// Parses an unencrypted key in OpenSSH's private key format.
    pub fn from_openssh(text: &str) -> Result<Self, HostKeyError> {
        let key = PrivateKey::from_openssh(text).map_err(|e| HostKeyError::Parse(e.to_string()))?;
        if key.is_encrypted() {
            return Err(HostKeyError::Parse("the key is encrypted".into()));
        }
        Ok(Self(key))
    }

    /// The key in OpenSSH's private key format, for persisting it.
    pub fn to_openssh(&self) -> Result<String, HostKeyError> {
        self.0
            .to_openssh(LineEnding::LF)
            .map(|s| s.to_string())
            .map_err(|e| HostKeyError::Encode(e.to_string()))
    }

    /// The public half as an `authorized_keys`/`known_hosts` line body
    /// (`ssh-ed25519 AAAA…`).
    pub fn public_openssh(&self) -> String {
        self.0.public_key().to_openssh().unwrap_or_else(|_| String::from("<unencodable key>"))
    }

    /// The SHA-256 fingerprint, as `ssh-keygen -l` prints it.
    pub fn fingerprint(&self) -> String {
        self.0.fingerprint(HashAlg::Sha256).to_string()
    }

    pub(crate) fn private(&self) -> &PrivateKey {
        &self.0
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_openssh_format() {
        let key = HostKey::generate();
        let text = key.to_openssh().unwrap();
        let back = HostKey::from_openssh(&text).unwrap();
        assert_eq!(key.public_openssh(), back.public_openssh());
        assert!(key.public_openssh().starts_with("ssh-ed25519 "));
    }

    #[test]
    fn rejects_garbage() {
        assert!(HostKey::from_openssh("not a key").is_err());
    }
}
