//! Feeds arbitrary datagrams to the WireGuard device (one announced peer) and
//! arbitrary packets to the IP header parser of the userspace stack. None may
//! panic; nothing unauthenticated may reach the tunnel.
#![no_main]

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use mesh::netstack::packet;
use mesh::wg::{Emit, WgDevice};
use mesh::{mesh_addresses, DiscoSecret, Node, NodeId, NodeSecret, QuicSecret, PROTOCOL_VERSION};

fuzz_target!(|data: &[u8]| {
    let _ = packet::transport(data);
    let mut device = WgDevice::new(&NodeSecret::from_bytes([1; 32]));
    let peer = Node {
        id: NodeId(2),
        key: NodeSecret::from_bytes([2; 32]).public(),
        disco_key: DiscoSecret::from_bytes([2; 32]).public(),
        quic_key: QuicSecret::from_bytes([2; 32]).public(),
        preferred_relay: None,
        relay_latency_ms: Default::default(),
        port_mapped: Vec::new(),
        endpoints: Vec::new(),
        addresses: mesh_addresses(NodeId(2)),
        version: PROTOCOL_VERSION,
    };
    device.upsert_peer(&peer);
    let mut up = false;
    let _ = device.handle_datagram(None, data, Instant::now(), &mut |e| {
        if let Emit::Tunnel(..) = e {
            up = true;
        }
    });
    assert!(!up, "an unauthenticated datagram reached the tunnel");
    let _ = device.handle_packet(data, Instant::now(), &mut |_| {});
});
