//! Peer networking: keys, node records, path discovery, the magic socket.
//!
//! - [`key`]: node, disco and QUIC identities;
//! - [`Node`]: the record a peer publishes through the coordinator;
//! - [`disco`] and [`wire`]: path probe messages and the sealed datagram format,
//!   and [`classify`] to demultiplex the shared UDP socket;
//! - [`path`]: the sans-IO path selection state machine (relay first, then the
//!   best direct UDP path a pong proves).

pub mod disco;
pub mod key;
mod node;
mod path;
pub mod wire;

pub use key::{DiscoKey, DiscoSecret, KeyParseError, NodeKey, NodeSecret, QuicKey, QuicSecret};
pub use node::{
    mesh_addresses, AddressError, MeshAddresses, Node, NodeId, RegionId, MESH_IPV4_NETWORK,
    MESH_IPV6_PREFIX, PROTOCOL_VERSION,
};
pub use path::{Destination, DiscoError, PathConfig, PathEvent, PathSelector, Source, Transmit};
pub use wire::{classify, PacketKind};
