//! Peer networking: keys, node records, path discovery, the magic socket.
//!
//! - [`key`]: node, disco and QUIC identities;
//! - [`Node`]: the record a peer publishes through the coordinator;
//! - [`disco`] and [`wire`]: path probe messages and the sealed datagram format,
//!   and [`classify`] to demultiplex the shared UDP socket;
//! - [`PathSelector`]: the sans-IO path selection state machine (relay first, then the
//!   best direct UDP path a pong proves);
//! - [`MeshEndpoint`]: QUIC to peers over the magic socket (one UDP socket plus
//!   the relay), authenticated by announced keys ([`tls`]), streams opened with a
//!   [`Service`] header;
//!   its peers, their paths and every index to them live in one peer map
//!   (`peermap.rs`, which writes down the lock order); it yields this node's
//!   record to publish ([`MeshEndpoint::node_changes`]) and answers relay facts
//!   (home region, a peer's region, the [`PeerPath`] to it);
//! - [`wg`]: WireGuard (boringtun) over the same magic socket, for IP packets
//!   between peers' mesh addresses ([`MeshEndpoint::wireguard`]);
//! - [`RelayRegion`], [`HomeSelector`], [`RegionNodes`]: the relay regions a
//!   node uses, the sans-IO choice of its home region (failover,
//!   hysteresis), and the order it dials a region's meshed relays in;
//! - [`portmap`]: NAT-PMP, PCP and UPnP IGD port mapping, whose public
//!   address becomes an endpoint ([`MeshConfig::port_mapping`]);
//! - [`netstack`]: a userspace TCP/IP stack (smoltcp) on a node's mesh addresses.

mod birthday;
pub mod disco;
mod endpoint;
pub mod key;
mod magicsock;
pub mod netstack;
mod node;
mod opening;
mod path;
mod peermap;
pub mod portmap;
mod relay;
mod service;
mod socket;
mod splice;
pub mod tls;
pub mod wg;
pub mod wire;

pub use endpoint::{
    AcceptError, BindError, DialError, IncomingConnection, MeshConfig, MeshConnection,
    MeshEndpoint, PeerPath, StreamError, StunStatus, UpsertError, WireGuardStarted,
    WITHDRAWN_REASON,
};
pub use key::{DiscoKey, DiscoSecret, KeyParseError, NodeKey, NodeSecret, QuicKey, QuicSecret};
pub use node::{
    mesh_addresses, AddressError, MeshAddresses, Node, NodeId, RegionId, MESH_IPV4_NETWORK,
    MESH_IPV6_PREFIX, PROTOCOL_VERSION,
};
#[cfg(feature = "sim")]
pub use path::{simulated_time_to_direct, SimScenario};
pub use path::{
    Destination, DirectMechanism, DiscoError, PathConfig, PathEvent, PathSelector, SocketCommand,
    Source, Transmit,
};
pub use peermap::{KeyInUse, KeyKind};
pub use portmap::{PortMapConfig, PortMapStatus};
/// The stream halves a [`MeshConnection`] opens and accepts.
pub use quinn::{RecvStream, SendStream};
pub use relay::{HomeConfig, HomeSelector, NoRegion, RegionNodes, RelayRegion};
pub use service::{close, pty_frame, reset, Service, ServiceParseError, COPY_BUFFER};
pub use splice::{copy_from_stream, copy_to_stream, fit_loopback_buffer, splice, Spliced};
pub use wire::{classify, PacketKind};
