//! Relay protocol, relay server and client, STUN server.
//!
//! - [`proto`]: the sans-IO frame codec and handshake (`docs/protocols/relay.md`).
//! - [`key`]: x25519 node/relay keys and the mesh pre-shared key.

pub mod key;
pub mod proto;

pub use key::{MeshKey, PublicKey, SecretKey};
