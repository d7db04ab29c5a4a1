//! Node identities: the keys a node owns and the public halves it announces.
//!
//! A node has three key pairs:
//! - the **node key** (x25519): the node's name on the relay and the WireGuard
//!   static key; printed `nodekey:<hex>`;
//! - the **disco key** (x25519): seals path probes ([`crate::disco`]); it can be
//!   rotated without touching sessions; printed `discokey:<hex>`;
//! - the **QUIC identity** (ed25519): the key a peer's TLS certificate must carry,
//!   as announced by the coordinator in the [`crate::Node`] record; printed
//!   `quickey:<hex>`.
//!
//! Public keys are plain 32-byte values (copyable, hashable, ordered) that parse
//! from and print to their prefixed form, and serialize as that string. Secrets
//! never print their bytes (`Debug` is redacted).

use std::fmt;
use std::str::FromStr;

use rand::{CryptoRng, RngCore};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a printed key did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyParseError {
    /// The string did not start with the expected `prefix:`.
    #[error("key must start with {expected:?}")]
    Prefix {
        /// The prefix this key type uses, with the colon.
        expected: &'static str,
    },
    /// The part after the prefix was not 64 hex digits.
    #[error("key must be 64 hex digits after the prefix")]
    Hex,
    /// The bytes are not a valid public key of this kind (ed25519 only).
    #[error("not a valid ed25519 public key")]
    Invalid,
}

/// Parses `prefix` followed by 64 hex digits.
fn parse_prefixed(s: &str, prefix: &'static str) -> Result<[u8; 32], KeyParseError> {
    let hex_part = s.strip_prefix(prefix).ok_or(KeyParseError::Prefix { expected: prefix })?;
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(hex_part, &mut bytes).map_err(|_| KeyParseError::Hex)?;
    Ok(bytes)
}

/// Defines a 32-byte public key newtype printed as `prefix<hex>`.
macro_rules! public_key {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name([u8; 32]);

        impl $name {
            /// The printed prefix, colon included.
            pub const PREFIX: &'static str = $prefix;

            /// The raw key bytes.
            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            /// Short form for logs: the prefix and the first 8 hex digits.
            pub fn short(&self) -> String {
                let mut s = hex::encode(self.0);
                s.truncate(8);
                format!("{}{s}", Self::PREFIX)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}{}", Self::PREFIX, hex::encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.short())
            }
        }

        impl FromStr for $name {
            type Err = KeyParseError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let bytes = parse_prefixed(s, Self::PREFIX)?;
                Self::try_from_bytes(bytes)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

public_key!(
    /// A node's public x25519 key: its relay address and WireGuard static key.
    NodeKey,
    "nodekey:"
);
public_key!(
    /// A node's public x25519 key for sealing path probes.
    DiscoKey,
    "discokey:"
);
public_key!(
    /// A node's public ed25519 QUIC identity, announced by the coordinator.
    QuicKey,
    "quickey:"
);

impl NodeKey {
    /// Any 32 bytes are an x25519 public key.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    fn try_from_bytes(bytes: [u8; 32]) -> Result<Self, KeyParseError> {
        Ok(Self(bytes))
    }
}

/// The relay names nodes by the same x25519 key.
impl From<NodeKey> for derp::PublicKey {
    fn from(key: NodeKey) -> Self {
        derp::PublicKey::from_bytes(key.0)
    }
}

impl From<derp::PublicKey> for NodeKey {
    fn from(key: derp::PublicKey) -> Self {
        NodeKey(*key.as_bytes())
    }
}

impl DiscoKey {
    /// Any 32 bytes are an x25519 public key.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    fn try_from_bytes(bytes: [u8; 32]) -> Result<Self, KeyParseError> {
        Ok(Self(bytes))
    }

    pub(crate) fn to_box_key(self) -> crypto_box::PublicKey {
        crypto_box::PublicKey::from_bytes(self.0)
    }
}

impl QuicKey {
    /// Checks that the bytes are a valid ed25519 point.
    pub fn try_from_bytes(bytes: [u8; 32]) -> Result<Self, KeyParseError> {
        ed25519_dalek::VerifyingKey::from_bytes(&bytes).map_err(|_| KeyParseError::Invalid)?;
        Ok(Self(bytes))
    }

    /// The key as an ed25519 verifying key.
    pub fn verifying_key(&self) -> Result<ed25519_dalek::VerifyingKey, KeyParseError> {
        ed25519_dalek::VerifyingKey::from_bytes(&self.0).map_err(|_| KeyParseError::Invalid)
    }
}

/// The secret half of a [`NodeKey`].
#[derive(Clone)]
pub struct NodeSecret(crypto_box::SecretKey);

/// The secret half of a [`DiscoKey`].
#[derive(Clone)]
pub struct DiscoSecret(crypto_box::SecretKey);

/// Defines generation, byte conversion and a redacted `Debug` for an x25519 secret.
macro_rules! x25519_secret {
    ($name:ident, $public:ident) => {
        impl $name {
            /// A fresh random secret.
            pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
                let mut bytes = [0u8; 32];
                rng.fill_bytes(&mut bytes);
                Self(crypto_box::SecretKey::from_bytes(bytes))
            }

            /// A secret from stored bytes.
            pub fn from_bytes(bytes: [u8; 32]) -> Self {
                Self(crypto_box::SecretKey::from_bytes(bytes))
            }

            /// The bytes to store; keep them private.
            pub fn to_bytes(&self) -> [u8; 32] {
                self.0.to_bytes()
            }

            /// The public half.
            pub fn public(&self) -> $public {
                $public(self.0.public_key().to_bytes())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}(public {:?})", stringify!($name), self.public())
            }
        }
    };
}

x25519_secret!(NodeSecret, NodeKey);

impl NodeSecret {
    /// The same secret as the relay client's key.
    pub fn to_relay_key(&self) -> derp::SecretKey {
        derp::SecretKey::from_bytes(self.to_bytes())
    }
}
x25519_secret!(DiscoSecret, DiscoKey);

impl DiscoSecret {
    pub(crate) fn box_key(&self) -> &crypto_box::SecretKey {
        &self.0
    }
}

/// The secret half of a [`QuicKey`]: signs the node's TLS certificate.
#[derive(Clone)]
pub struct QuicSecret(ed25519_dalek::SigningKey);

impl QuicSecret {
    /// A fresh random identity.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        Self(ed25519_dalek::SigningKey::generate(rng))
    }

    /// An identity from stored bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(ed25519_dalek::SigningKey::from_bytes(&bytes))
    }

    /// The bytes to store; keep them private.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The public half.
    pub fn public(&self) -> QuicKey {
        QuicKey(self.0.verifying_key().to_bytes())
    }

    /// The ed25519 signing key.
    pub fn signing_key(&self) -> &ed25519_dalek::SigningKey {
        &self.0
    }
}

impl fmt::Debug for QuicSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "QuicSecret(public {:?})", self.public())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;

    #[test]
    fn node_key_prints_and_parses() {
        let key = NodeKey::from_bytes([0xab; 32]);
        let s = key.to_string();
        assert_eq!(s, format!("nodekey:{}", "ab".repeat(32)));
        assert_eq!(s.parse::<NodeKey>().unwrap(), key);
        assert_eq!(format!("{key:?}"), "nodekey:abababab");
    }

    #[test]
    fn wrong_prefix_and_bad_hex_are_refused() {
        let hex = "ab".repeat(32);
        assert_eq!(
            format!("discokey:{hex}").parse::<NodeKey>(),
            Err(KeyParseError::Prefix { expected: "nodekey:" })
        );
        assert_eq!("nodekey:abc".parse::<NodeKey>(), Err(KeyParseError::Hex));
        assert_eq!(format!("discokey:{hex}zz").parse::<DiscoKey>(), Err(KeyParseError::Hex));
    }

    #[test]
    fn serde_uses_the_printed_form() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let disco = DiscoSecret::generate(&mut rng).public();
        let json = serde_json::to_string(&disco).unwrap();
        assert_eq!(json, format!("\"{disco}\""));
        assert_eq!(serde_json::from_str::<DiscoKey>(&json).unwrap(), disco);
        let quic = QuicSecret::generate(&mut rng).public();
        let json = serde_json::to_string(&quic).unwrap();
        assert!(json.starts_with("\"quickey:"));
        assert_eq!(serde_json::from_str::<QuicKey>(&json).unwrap(), quic);
    }

    #[test]
    fn secrets_do_not_print_their_bytes() {
        let secret = NodeSecret::from_bytes([7; 32]);
        let debug = format!("{secret:?}");
        assert!(debug.starts_with("NodeSecret(public nodekey:"));
        assert!(!debug.contains("0707"));
        let restored = NodeSecret::from_bytes(secret.to_bytes());
        assert_eq!(restored.public(), secret.public());
    }

    #[test]
    fn node_keys_are_relay_keys() {
        let secret = NodeSecret::from_bytes([3; 32]);
        let relay: derp::PublicKey = secret.public().into();
        assert_eq!(relay, secret.to_relay_key().public());
        assert_eq!(NodeKey::from(relay), secret.public());
    }

    #[test]
    fn invalid_ed25519_point_is_refused() {
        // y = 2 does not decompress to a curve point.
        let mut bytes = [0u8; 32];
        bytes[0] = 2;
        assert_eq!(QuicKey::try_from_bytes(bytes), Err(KeyParseError::Invalid));
    }

    proptest! {
        #[test]
        fn x25519_keys_round_trip(bytes in any::<[u8; 32]>()) {
            let key = NodeKey::from_bytes(bytes);
            prop_assert_eq!(key.to_string().parse::<NodeKey>().unwrap(), key);
            let key = DiscoKey::from_bytes(bytes);
            prop_assert_eq!(key.to_string().parse::<DiscoKey>().unwrap(), key);
        }

        #[test]
        fn parse_never_panics(s in ".{0,80}") {
            let _ = s.parse::<NodeKey>();
            let _ = s.parse::<QuicKey>();
        }
    }
}
