//! Two (or three) devices wired back to back in memory: handshakes, data,
//! and every reason a datagram is refused.

use std::net::Ipv6Addr;

use super::*;
use crate::key::{DiscoSecret, QuicSecret};
use crate::node::{mesh_addresses, NodeId, PROTOCOL_VERSION};

fn node(id: u64, secret: &NodeSecret) -> Node {
    Node {
        id: NodeId(id),
        key: secret.public(),
        disco_key: DiscoSecret::from_bytes([id as u8; 32]).public(),
        quic_key: QuicSecret::from_bytes([id as u8; 32]).public(),
        preferred_relay: None,
        relay_latency_ms: Default::default(),
        port_mapped: Vec::new(),
        endpoints: Vec::new(),
        addresses: mesh_addresses(NodeId(id)),
        version: PROTOCOL_VERSION,
    }
}

/// An IPv6 UDP packet (checksum left zero; nothing here checks it).
pub(crate) fn ipv6_udp(src: Ipv6Addr, dst: Ipv6Addr, payload: &[u8]) -> Vec<u8> {
    let len = u16::try_from(payload.len() + 8).unwrap();
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&len.to_be_bytes());
    p.extend_from_slice(&[17, 64]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&[0x30, 0x39, 0x30, 0x39]);
    p.extend_from_slice(&len.to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    p
}

struct Side {
    node: Node,
    dev: WgDevice,
}

fn side(id: u64) -> Side {
    let secret = NodeSecret::from_bytes([id as u8 + 100; 32]);
    Side { node: node(id, &secret), dev: WgDevice::new(&secret) }
}

/// What one call emitted, owned.
#[derive(Default, Debug)]
struct Out {
    network: Vec<(NodeKey, Vec<u8>)>,
    tunnel: Vec<(NodeKey, Vec<u8>)>,
}

impl Out {
    fn sink(&mut self) -> impl FnMut(Emit<'_>) + '_ {
        |e| match e {
            Emit::Network(k, d) => self.network.push((k, d.to_vec())),
            Emit::Tunnel(k, d) => self.tunnel.push((k, d.to_vec())),
        }
    }
}

/// Delivers datagrams between `a` and `b` until neither has anything to
/// send; returns the IP packets each handed up, (at a, at b).
fn run(a: &mut Side, b: &mut Side, mut in_flight: Vec<(NodeKey, Vec<u8>)>) -> (Out, Out) {
    let (mut up_a, mut up_b) = (Out::default(), Out::default());
    let now = Instant::now();
    while let Some((to, datagram)) = in_flight.pop() {
        let (dst, from, up) = if to == a.node.key {
            (&mut *a, b.node.key, &mut up_a)
        } else {
            (&mut *b, a.node.key, &mut up_b)
        };
        let mut out = Out::default();
        dst.dev.handle_datagram(Some(from), &datagram, now, &mut out.sink()).unwrap();
        in_flight.extend(out.network);
        up.tunnel.extend(out.tunnel);
    }
    (up_a, up_b)
}

fn pair() -> (Side, Side) {
    let (mut a, mut b) = (side(1), side(2));
    a.dev.upsert_peer(&b.node);
    b.dev.upsert_peer(&a.node);
    (a, b)
}

#[test]
fn handshake_then_data_both_ways() {
    let (mut a, mut b) = pair();
    let (ia, ib) = (a.node.addresses.ipv6, b.node.addresses.ipv6);
    let first = ipv6_udp(ia, ib, b"first");
    let mut out = Out::default();
    a.dev.handle_packet(&first, Instant::now(), &mut out.sink()).unwrap();
    // No session yet: the packet waits, a handshake initiation goes out.
    assert_eq!(out.network.len(), 1);
    assert_eq!(out.network[0].0, b.node.key);
    assert_eq!(out.network[0].1[0], 1, "handshake initiation");
    let (_, at_b) = run(&mut a, &mut b, out.network);
    assert_eq!(at_b.tunnel, vec![(a.node.key, first)]);

    let reply = ipv6_udp(ib, ia, &[7u8; 1400]);
    let mut out = Out::default();
    b.dev.handle_packet(&reply, Instant::now(), &mut out.sink()).unwrap();
    assert_eq!(out.network.len(), 1);
    assert_eq!(out.network[0].1[0], 4, "data");
    assert_eq!(out.network[0].1.len(), reply.len() + 32);
    let (at_a, _) = run(&mut a, &mut b, out.network);
    assert_eq!(at_a.tunnel, vec![(b.node.key, reply)]);
    assert!(a.dev.session_age(&b.node.key).is_some());
}

#[test]
fn unannounced_peer_handshake_is_refused_silently() {
    let (mut a, mut b) = pair();
    let mut stranger = side(3);
    stranger.dev.upsert_peer(&b.node);
    let mut out = Out::default();
    let packet = ipv6_udp(stranger.node.addresses.ipv6, b.node.addresses.ipv6, b"hi");
    stranger.dev.handle_packet(&packet, Instant::now(), &mut out.sink()).unwrap();
    let (_, init) = out.network.pop().unwrap();
    let mut answer = Out::default();
    let err = b.dev.handle_datagram(None, &init, Instant::now(), &mut answer.sink()).unwrap_err();
    assert_eq!(err, WgError::UnknownPeer(stranger.node.key));
    assert!(answer.network.is_empty() && answer.tunnel.is_empty());
    // Announced, the same key is answered.
    b.dev.upsert_peer(&stranger.node);
    b.dev.handle_datagram(None, &init, Instant::now(), &mut answer.sink()).unwrap();
    assert_eq!(answer.network.len(), 1);
    assert_eq!(answer.network[0].1[0], 2, "handshake response");
    // And removing a peer refuses it again.
    b.dev.remove_peer(&stranger.node.key);
    assert!(matches!(
        b.dev.handle_datagram(None, &init, Instant::now(), &mut Out::default().sink()),
        Err(WgError::UnknownPeer(_))
    ));
    let _ = &mut a;
}

#[test]
fn a_withdrawn_peer_loses_its_session_at_once() {
    // What `MeshEndpoint::remove_peer` does to the WireGuard side: the
    // session goes with the peer, so a live tunnel stops both ways with the
    // next packet, as the peer's QUIC connections are closed.
    let (mut a, mut b) = pair();
    let (ia, ib) = (a.node.addresses.ipv6, b.node.addresses.ipv6);
    let mut out = Out::default();
    a.dev.handle_packet(&ipv6_udp(ia, ib, b"hello"), Instant::now(), &mut out.sink()).unwrap();
    let (_, up_b) = run(&mut a, &mut b, out.network);
    assert_eq!(up_b.tunnel.len(), 1, "the session works before the withdrawal");
    // A data packet sealed in the established session, in flight as b
    // withdraws a.
    let mut out = Out::default();
    a.dev.handle_packet(&ipv6_udp(ia, ib, b"late"), Instant::now(), &mut out.sink()).unwrap();
    let (_, data) = out.network.pop().unwrap();
    b.dev.remove_peer(&a.node.key);
    assert!(!b.dev.has_peer(&a.node.key));
    let mut got = Out::default();
    let err = b.dev.handle_datagram(Some(a.node.key), &data, Instant::now(), &mut got.sink());
    assert!(matches!(err, Err(WgError::UnknownIndex(_))), "{err:?}");
    assert!(got.tunnel.is_empty() && got.network.is_empty(), "nothing opened or answered");
    // And nothing is sealed toward it any more.
    let mut out = Out::default();
    let err = b.dev.handle_packet(&ipv6_udp(ib, ia, b"reply"), Instant::now(), &mut out.sink());
    assert_eq!(err, Err(WgError::NoRoute(ia.into())));
    assert!(out.network.is_empty());
}

#[test]
fn spoofed_source_and_wrong_sender_are_dropped() {
    let (mut a, mut b) = pair();
    let ib = b.node.addresses.ipv6;
    let hello = ipv6_udp(a.node.addresses.ipv6, ib, b"x");
    let mut out = Out::default();
    a.dev.handle_packet(&hello, Instant::now(), &mut out.sink()).unwrap();
    run(&mut a, &mut b, out.network);

    // A packet from an address that is not a's.
    let spoofed = ipv6_udp(mesh_addresses(NodeId(99)).ipv6, ib, b"x");
    let mut out = Out::default();
    // a routes by destination, so it encrypts it happily; b must refuse it.
    a.dev.handle_packet(&spoofed, Instant::now(), &mut out.sink()).unwrap();
    let (_, datagram) = out.network.pop().unwrap();
    let err = b.dev.handle_datagram(None, &datagram, Instant::now(), &mut Out::default().sink());
    assert!(matches!(err, Err(WgError::Spoofed { .. })), "{err:?}");

    // a's datagram claimed by the magic socket to come from someone else.
    let mut out = Out::default();
    a.dev.handle_packet(&hello, Instant::now(), &mut out.sink()).unwrap();
    let (_, datagram) = out.network.pop().unwrap();
    let other = NodeSecret::from_bytes([9; 32]).public();
    let err =
        b.dev.handle_datagram(Some(other), &datagram, Instant::now(), &mut Out::default().sink());
    assert!(matches!(err, Err(WgError::SourceMismatch { .. })), "{err:?}");

    // Garbage, unknown indices and unroutable destinations.
    let mut sink = Out::default();
    assert_eq!(
        b.dev.handle_datagram(None, &[4, 0, 0, 0], Instant::now(), &mut sink.sink()),
        Err(WgError::Malformed)
    );
    let mut data = datagram.clone();
    data[4..8].copy_from_slice(&0xdead_0000u32.to_le_bytes());
    assert!(matches!(
        b.dev.handle_datagram(None, &data, Instant::now(), &mut sink.sink()),
        Err(WgError::UnknownIndex(_))
    ));
    let nowhere = ipv6_udp(a.node.addresses.ipv6, mesh_addresses(NodeId(77)).ipv6, b"x");
    assert!(matches!(
        a.dev.handle_packet(&nowhere, Instant::now(), &mut sink.sink()),
        Err(WgError::NoRoute(_))
    ));
    assert!(matches!(
        a.dev.handle_packet(b"nope", Instant::now(), &mut sink.sink()),
        Err(WgError::Malformed)
    ));
    assert!(sink.network.is_empty() && sink.tunnel.is_empty());
}

#[test]
fn timers_have_a_deadline_only_after_activity() {
    let (mut a, mut b) = pair();
    assert_eq!(a.dev.poll_timeout(), None, "idle device");
    let now = Instant::now();
    let mut out = Out::default();
    a.dev
        .handle_packet(
            &ipv6_udp(a.node.addresses.ipv6, b.node.addresses.ipv6, b"x"),
            now,
            &mut out.sink(),
        )
        .unwrap();
    assert_eq!(a.dev.poll_timeout(), Some(now + TIMER_TICK));
    // Not due yet: nothing runs, the deadline stays.
    a.dev.handle_timeout(now, &mut out.sink());
    assert_eq!(a.dev.poll_timeout(), Some(now + TIMER_TICK));
    let later = now + TIMER_TICK;
    a.dev.handle_timeout(later, &mut out.sink());
    assert_eq!(a.dev.poll_timeout(), Some(later + TIMER_TICK));
    run(&mut a, &mut b, out.network);
    assert!(b.dev.poll_timeout().is_some());
}
