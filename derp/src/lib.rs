//! Relay protocol, relay server and client, STUN server.
//!
//! - [`proto`]: the sans-IO frame codec and handshake (`docs/protocols/relay.md`).
//! - [`key`]: x25519 node/relay keys and the mesh pre-shared key.
//! - [`server`]: the relay, embeddable ([`Server::handle_request`]) or
//!   standalone ([`Server::serve`]), with region meshing.
//! - [`client`]: connect to a relay, send and receive packets, reconnecting.
//! - [`proxy`]: TCP through an HTTP `CONNECT` proxy named by `HTTP(S)_PROXY`/`NO_PROXY`.
//! - [`stun`]: STUN codec, server and probe for endpoint discovery.

mod backoff;
pub mod client;
mod conn;
pub mod key;
pub mod proto;
pub mod proxy;
pub mod server;
pub mod stun;

pub use client::{Client, ClientConfig, Event, ReceivedPacket, RelayUrl, Transport};
pub use conn::ConnError;
pub use key::{MeshKey, PublicKey, SecretKey};
pub use server::{Server, ServerConfig, StatsSnapshot};
