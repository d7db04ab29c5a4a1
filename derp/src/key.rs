//! x25519 keys: the node keys clients prove they hold, the relay's own key,
//! and the pre-shared mesh key that lets relays of one region trust each other.
//!
//! Keys are thin wrappers over `crypto_box` so other crates (`mesh`) can
//! convert to and from plain bytes without depending on `crypto_box` directly.
//! Sealing uses NaCl `crypto_box` (X25519 + XSalsa20-Poly1305): a sealed
//! message is `nonce (24 bytes) || ciphertext`.

use std::fmt;
use std::str::FromStr;

use crypto_box::aead::{Aead, AeadCore, OsRng};
use crypto_box::SalsaBox;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use subtle::ConstantTimeEq;

/// Length of a public or secret key in bytes.
pub const KEY_LEN: usize = 32;
/// Length of the nonce that prefixes every sealed box.
pub const NONCE_LEN: usize = 24;
/// Bytes a sealed box adds to its plaintext (nonce + Poly1305 tag).
pub const SEAL_OVERHEAD: usize = NONCE_LEN + 16;

/// A key could not be parsed from text.
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum KeyParseError {
    #[error("key is not valid hex: {0}")]
    Hex(#[from] hex::FromHexError),
    #[error("key must be {KEY_LEN} bytes, got {0}")]
    Length(usize),
}

/// A sealed box could not be opened: it was not made by the holder of the
/// claimed key for us, or it was damaged.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("sealed box could not be opened (wrong key or corrupted)")]
pub struct OpenError;

/// An x25519 secret key. `Debug` never prints the secret.
#[derive(Clone)]
pub struct SecretKey(crypto_box::SecretKey);

impl SecretKey {
    /// A fresh random key from the operating system's RNG.
    pub fn generate() -> Self {
        Self(crypto_box::SecretKey::generate(&mut OsRng))
    }

    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(crypto_box::SecretKey::from(bytes))
    }

    pub fn to_bytes(&self) -> [u8; KEY_LEN] {
        self.0.to_bytes()
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(*self.0.public_key().as_bytes())
    }

    /// Seals `plaintext` so only the holder of `peer`'s secret key can open
    /// it, and so that opening it proves we hold this key.
    pub fn seal_to(&self, peer: &PublicKey, plaintext: &[u8]) -> Vec<u8> {
        let salsa = SalsaBox::new(&peer.to_crypto(), &self.0);
        let nonce = SalsaBox::generate_nonce(&mut OsRng);
        // Encryption with a fresh nonce and an in-memory buffer cannot fail.
        let ciphertext = salsa.encrypt(&nonce, plaintext).unwrap_or_default();
        let mut out = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        out
    }

    /// Opens a box that `peer` sealed to us with [`SecretKey::seal_to`].
    pub fn open_from(&self, peer: &PublicKey, sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        if sealed.len() < SEAL_OVERHEAD {
            return Err(OpenError);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce = crypto_box::Nonce::from_slice(nonce);
        SalsaBox::new(&peer.to_crypto(), &self.0).decrypt(nonce, ciphertext).map_err(|_| OpenError)
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(public={})", self.public())
    }
}

impl FromStr for SecretKey {
    type Err = KeyParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_hex_32(s).map(Self::from_bytes)
    }
}

/// An x25519 public key: a node's identity on the relay, or the relay's own.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; KEY_LEN]);

impl PublicKey {
    pub const fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    pub const fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Parses a key from the front of `bytes`; `None` when too short.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.get(..KEY_LEN).and_then(|b| <[u8; KEY_LEN]>::try_from(b).ok()).map(Self)
    }

    /// The first few hex digits, for logs.
    pub fn short(&self) -> String {
        hex::encode(self.0.get(..5).unwrap_or_default())
    }

    fn to_crypto(self) -> crypto_box::PublicKey {
        crypto_box::PublicKey::from(self.0)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl FromStr for PublicKey {
    type Err = KeyParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_hex_32(s).map(Self)
    }
}

impl Serialize for PublicKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The pre-shared key that relays of one region present to each other.
/// Compared in constant time; `Debug` never prints it.
#[derive(Clone)]
pub struct MeshKey([u8; KEY_LEN]);

impl MeshKey {
    pub const fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    pub fn generate() -> Self {
        Self(rand::random())
    }
}

impl PartialEq for MeshKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for MeshKey {}

impl fmt::Debug for MeshKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MeshKey(..)")
    }
}

impl fmt::Display for MeshKey {
    /// The key as hex, e.g. to write a `--mesh-psk-file`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl FromStr for MeshKey {
    type Err = KeyParseError;
    /// Parses 64 hex digits; surrounding whitespace (a file's newline) is ignored.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_hex_32(s.trim()).map(Self)
    }
}

impl Serialize for MeshKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for MeshKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

fn parse_hex_32(s: &str) -> Result<[u8; KEY_LEN], KeyParseError> {
    let bytes = hex::decode(s)?;
    let len = bytes.len();
    <[u8; KEY_LEN]>::try_from(bytes).map_err(|_| KeyParseError::Length(len))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn public_key_hex_round_trip() {
        let key = SecretKey::generate().public();
        let text = key.to_string();
        assert_eq!(text.len(), 64);
        assert_eq!(text.parse::<PublicKey>().unwrap(), key);
        let json = serde_json::to_string(&key).unwrap();
        assert_eq!(json, format!("\"{text}\""));
        assert_eq!(serde_json::from_str::<PublicKey>(&json).unwrap(), key);
    }

    #[test]
    fn bad_hex_is_typed_error() {
        assert_eq!("abcd".parse::<PublicKey>(), Err(KeyParseError::Length(2)));
        assert!(matches!("zz".parse::<PublicKey>(), Err(KeyParseError::Hex(_))));
    }

    #[test]
    fn secret_key_bytes_round_trip() {
        let secret = SecretKey::generate();
        let again = SecretKey::from_bytes(secret.to_bytes());
        assert_eq!(secret.public(), again.public());
        assert!(!format!("{secret:?}").contains(&hex::encode(secret.to_bytes())));
    }

    #[test]
    fn seal_open_proves_sender() {
        let alice = SecretKey::generate();
        let bob = SecretKey::generate();
        let mallory = SecretKey::generate();
        let sealed = alice.seal_to(&bob.public(), b"hello");
        assert_eq!(bob.open_from(&alice.public(), &sealed).unwrap(), b"hello");
        // Mallory cannot pass a box off as Alice's.
        let forged = mallory.seal_to(&bob.public(), b"hello");
        assert_eq!(bob.open_from(&alice.public(), &forged), Err(OpenError));
        assert_eq!(bob.open_from(&alice.public(), &sealed[..10]), Err(OpenError));
    }

    #[test]
    fn mesh_key_parse_and_compare() {
        let key = MeshKey::generate();
        let parsed: MeshKey = format!("{key}\n").parse().unwrap();
        assert_eq!(parsed, key);
        assert_ne!(MeshKey::generate(), key);
        assert_eq!(format!("{key:?}"), "MeshKey(..)");
    }
}
