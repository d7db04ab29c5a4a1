//! Drives the path selector with a script of hostile or well-formed path
//! probes, timer ticks and node updates, as a peer (and anyone on the path)
//! could. Nothing may panic, every probe it sends must be sealed to the
//! peer, and it may only ever pick a direct address that answered one of its
//! pings with an authentic pong from that very address.
#![no_main]

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use mesh::disco::{CallMeMaybe, Message, Ping, Pong, TxId};
use mesh::{
    mesh_addresses, wire, Destination, DiscoSecret, Node, NodeId, NodeSecret, PathConfig,
    PathSelector, QuicSecret, Source, PROTOCOL_VERSION,
};

/// Addresses the script picks from (by index).
fn addr(i: u8) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 1 + i % 4], 41000 + u16::from(i % 2)))
}

struct Script<'a>(&'a [u8]);

impl Script<'_> {
    fn byte(&mut self) -> u8 {
        let (first, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        *first
    }
    fn bytes(&mut self) -> &[u8] {
        let len = usize::from(self.byte()).min(self.0.len());
        let (head, rest) = self.0.split_at(len);
        self.0 = rest;
        head
    }
    fn source(&mut self, peer: mesh::NodeKey) -> Source {
        match self.byte() {
            b if b >= 0xf0 => Source::Relay(peer),
            b => Source::Direct(addr(b)),
        }
    }
}

fn peer_node(key: mesh::NodeKey, disco: &DiscoSecret, endpoints: Vec<SocketAddr>) -> Node {
    Node {
        id: NodeId(2),
        key,
        disco_key: disco.public(),
        quic_key: QuicSecret::from_bytes([5; 32]).public(),
        preferred_relay: Some(1),
        relay_latency_ms: BTreeMap::new(),
        port_mapped: Vec::new(),
        endpoints,
        addresses: mesh_addresses(NodeId(2)),
        version: PROTOCOL_VERSION,
    }
}

fuzz_target!(|data: &[u8]| {
    let me = DiscoSecret::from_bytes([1; 32]);
    let my_disco = me.public();
    let my_key = NodeSecret::from_bytes([3; 32]).public();
    let peer_key = NodeSecret::from_bytes([4; 32]).public();
    let mut peer_disco = DiscoSecret::from_bytes([2; 32]);
    let mut config = PathConfig::default();
    config.rng_seed = Some(7);
    let mut selector = PathSelector::new(config, my_key, me);
    let mut now = Instant::now();
    selector.upsert_peer(&peer_node(peer_key, &peer_disco, vec![addr(0), addr(1)]), now);

    // Pings the selector sent (destination, tx id), and the addresses that
    // answered one of them from the address it went to.
    let mut pings: Vec<(SocketAddr, TxId)> = Vec::new();
    let mut proven: HashSet<SocketAddr> = HashSet::new();
    let mut nonce = 0u64;
    let mut seal = |from: &DiscoSecret, msg: &Message| {
        nonce += 1;
        let mut n = [0u8; 24];
        n[..8].copy_from_slice(&nonce.to_be_bytes());
        wire::seal(from, my_disco, n, msg)
    };

    let mut script = Script(data);
    for _ in 0..64 {
        if script.0.is_empty() {
            break;
        }
        match script.byte() % 7 {
            // Raw bytes, from anywhere.
            0 => {
                let src = script.source(peer_key);
                let raw = script.bytes().to_vec();
                let _ = selector.handle_disco(src, &raw, now);
            }
            // A message the peer really sealed, decoded from script bytes.
            1 => {
                let src = script.source(peer_key);
                if let Ok(msg) = Message::decode(script.bytes()) {
                    let sealed = seal(&peer_disco, &msg);
                    let _ = selector.handle_disco(src, &sealed, now);
                }
            }
            // The peer answers one of the selector's pings, from some address.
            2 => {
                let (to, tx_id) = match pings.len() {
                    0 => continue,
                    n => pings[usize::from(script.byte()) % n],
                };
                let src = script.source(peer_key);
                let pong = Message::Pong(Pong { tx_id, src: addr(script.byte()) });
                let sealed = seal(&peer_disco, &pong);
                if selector.handle_disco(src, &sealed, now).is_ok() && src == Source::Direct(to) {
                    proven.insert(to);
                }
            }
            // The peer pings us, or asks us to ping it.
            3 => {
                let src = script.source(peer_key);
                let msg = if script.byte() % 2 == 0 {
                    Message::Ping(Ping { tx_id: TxId([script.byte(); 12]), node_key: peer_key })
                } else {
                    let endpoints = (0..script.byte() % 8).map(|_| addr(script.byte())).collect();
                    Message::CallMeMaybe(CallMeMaybe { endpoints })
                };
                let sealed = seal(&peer_disco, &msg);
                let _ = selector.handle_disco(src, &sealed, now);
            }
            // Time passes.
            4 => {
                let ms = u64::from(u16::from_be_bytes([script.byte(), script.byte()]));
                now += Duration::from_millis(ms);
                selector.handle_timeout(now);
            }
            5 => selector.handle_activity(&peer_key, now),
            // The coordinator updates the peer (sometimes it restarted: new disco key).
            _ => {
                if script.byte() % 4 == 0 {
                    peer_disco = DiscoSecret::from_bytes([script.byte() | 0x80; 32]);
                    pings.clear();
                }
                let endpoints = (0..script.byte() % 6).map(|_| addr(script.byte())).collect();
                selector.upsert_peer(&peer_node(peer_key, &peer_disco, endpoints), now);
            }
        }
        while let Some(t) = selector.poll_transmit() {
            let opened = wire::open(&peer_disco, &t.payload);
            let Ok((_, msg)) = opened else {
                panic!("a probe the peer cannot open: {opened:?}");
            };
            if let (Destination::Direct(to), Message::Ping(p)) = (t.dst, msg) {
                pings.push((to, p.tx_id));
            }
        }
        while selector.poll_event().is_some() {}
        if let Some(Destination::Direct(a)) = selector.destination(&peer_key, now) {
            assert!(proven.contains(&a), "went direct to {a}, which never answered a ping");
        }
    }
});
