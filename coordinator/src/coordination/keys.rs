//! Keys are bound to the peer that announced them (`docs/protocols/coordination.md`,
//! "Key binding").
//!
//! A node's node, disco and QUIC keys name it on the mesh: the relay routes
//! by node key, path probes are sealed with the disco key, QUIC checks the
//! QUIC key. So each key belongs to one peer id at a time: the core refuses a
//! node announcing a key that another peer's record holds ([`KeyHolders`],
//! over every record this replica knows, local or remote), and Postgres
//! refuses the write when two replicas race (migration 0008's unique
//! indexes; the writer reports it and the core refuses then). A connection's
//! keys are fixed by its first node ([`Pinned`]): a peer that restarts with
//! new keys reconnects, and a new connection may announce new keys.

use std::collections::HashMap;

use mesh::{DiscoKey, KeyKind, Node, NodeKey, QuicKey};
use uuid::Uuid;

/// One of a node's keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum KeyRef {
    Node(NodeKey),
    Disco(DiscoKey),
    Quic(QuicKey),
}

impl KeyRef {
    fn kind(self) -> KeyKind {
        match self {
            KeyRef::Node(_) => KeyKind::Node,
            KeyRef::Disco(_) => KeyKind::Disco,
            KeyRef::Quic(_) => KeyKind::Quic,
        }
    }

    /// Its prefix and first hex digits, as logs print it.
    fn short(self) -> String {
        match self {
            KeyRef::Node(k) => format!("{k:?}"),
            KeyRef::Disco(k) => format!("{k:?}"),
            KeyRef::Quic(k) => format!("{k:?}"),
        }
    }
}

/// A node's three keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pinned {
    pub node: NodeKey,
    pub disco: DiscoKey,
    pub quic: QuicKey,
}

impl Pinned {
    pub fn of(node: &Node) -> Self {
        Pinned { node: node.key, disco: node.disco_key, quic: node.quic_key }
    }

    fn refs(self) -> [KeyRef; 3] {
        [KeyRef::Node(self.node), KeyRef::Disco(self.disco), KeyRef::Quic(self.quic)]
    }

    /// The key of this kind.
    pub fn key(self, kind: KeyKind) -> KeyRef {
        match kind {
            KeyKind::Disco => KeyRef::Disco(self.disco),
            KeyKind::Quic => KeyRef::Quic(self.quic),
            _ => KeyRef::Node(self.node),
        }
    }
}

/// The close reason for a node announcing a key another peer holds.
pub(crate) fn in_use(key: KeyRef) -> String {
    format!("{} key {} is already announced by another peer", key.kind(), key.short())
}

/// The close reason for a connection whose node changed keys.
pub(crate) fn changed(before: Pinned, now: Pinned) -> String {
    let kind = before.refs().into_iter().zip(now.refs()).find(|(b, n)| b != n).map(|(b, _)| b);
    let kind = kind.map_or(KeyKind::Node, KeyRef::kind);
    format!("a connection's keys are fixed: its {kind} key changed; reconnect to announce new keys")
}

/// Which peer holds each key of the records a core knows.
#[derive(Debug, Default)]
pub(crate) struct KeyHolders {
    by_key: HashMap<KeyRef, Uuid>,
}

impl KeyHolders {
    /// A key of `keys` that a peer other than `peer` holds.
    pub fn held_by_another(&self, keys: Pinned, peer: Uuid) -> Option<KeyRef> {
        keys.refs().into_iter().find(|k| self.by_key.get(k).is_some_and(|h| *h != peer))
    }

    /// `peer`'s record now carries `node`. A remote record takes keys over
    /// even from a local peer: the store already accepted it, so the local
    /// peer's write is the one the store will refuse.
    pub fn add(&mut self, peer: Uuid, node: &Node) {
        for k in Pinned::of(node).refs() {
            self.by_key.insert(k, peer);
        }
    }

    /// `peer`'s record no longer carries `node`.
    pub fn remove(&mut self, peer: Uuid, node: &Node) {
        for k in Pinned::of(node).refs() {
            if self.by_key.get(&k) == Some(&peer) {
                self.by_key.remove(&k);
            }
        }
    }

    pub fn clear(&mut self) {
        self.by_key.clear();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;

    use codersdk::coordination::ServerMessage;
    use mesh::{mesh_addresses, DiscoSecret, NodeSecret, QuicSecret, PROTOCOL_VERSION};
    use rand::SeedableRng;

    use super::super::core::{Close, ConnId, Core, Kind, Output, Record, StoreOp};
    use super::super::node_id;
    use super::*;

    const ME: Uuid = Uuid::from_u128(0xc0);
    const OTHER: Uuid = Uuid::from_u128(0xc1);
    const VICTIM: Uuid = Uuid::from_u128(0xa1);
    const MALLORY: Uuid = Uuid::from_u128(0xa2);
    const CLIENT: Uuid = Uuid::from_u128(0xb1);
    const USER: Uuid = Uuid::from_u128(0x11);

    fn node_for(peer: Uuid, seed: u64) -> Node {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let id = node_id(peer);
        Node {
            id,
            key: NodeSecret::generate(&mut rng).public(),
            disco_key: DiscoSecret::generate(&mut rng).public(),
            quic_key: QuicSecret::generate(&mut rng).public(),
            preferred_relay: Some(1),
            relay_latency_ms: BTreeMap::new(),
            port_mapped: Vec::new(),
            endpoints: vec![],
            addresses: mesh_addresses(id),
            version: PROTOCOL_VERSION,
        }
    }

    fn drain(core: &mut Core) -> Vec<Output> {
        std::iter::from_fn(|| core.poll_output()).collect()
    }

    fn closes(outs: &[Output], to: ConnId) -> Vec<Close> {
        outs.iter()
            .filter_map(|o| match o {
                Output::Close { conn, close } if *conn == to => Some(close.clone()),
                _ => None,
            })
            .collect()
    }

    /// Victim agent on conn 1, a client tunnelling to it on conn 2, mallory (another agent) on conn 3.
    fn setup() -> Core {
        let mut core = Core::new(ME);
        core.handle_connect(1, VICTIM, Kind::Agent);
        core.handle_node(1, node_for(VICTIM, 1));
        core.handle_connect(2, CLIENT, Kind::Client { owner: USER });
        core.handle_node(2, node_for(CLIENT, 2));
        core.handle_add_tunnel(2, VICTIM);
        core.handle_connect(3, MALLORY, Kind::Agent);
        drain(&mut core);
        core
    }

    #[test]
    fn another_peers_key_is_refused_and_the_victim_unchanged() {
        let victim = node_for(VICTIM, 1);
        for kind in [KeyKind::Node, KeyKind::Disco, KeyKind::Quic] {
            let mut core = setup();
            let mut spoof = node_for(MALLORY, 3);
            match kind {
                KeyKind::Node => spoof.key = victim.key,
                KeyKind::Disco => spoof.disco_key = victim.disco_key,
                _ => spoof.quic_key = victim.quic_key,
            }
            core.handle_node(3, spoof);
            let outs = drain(&mut core);
            let close = &closes(&outs, 3)[0];
            assert_eq!(close.code, 1008);
            assert!(close.reason.contains("already announced by another peer"), "{close:?}");
            assert!(close.reason.starts_with(&kind.to_string()), "{close:?}");
            assert!(!outs.iter().any(
                |o| matches!(o, Output::Store(StoreOp::UpsertPeer { id, .. }) if *id == MALLORY)
            ));
            assert!(!outs.iter().any(|o| matches!(o, Output::Send { conn: 2, .. })), "{outs:?}");
            let (_, _, node, _) =
                core.local_state().into_iter().find(|(id, ..)| *id == VICTIM).unwrap();
            assert_eq!(node, Some(victim.clone()));
        }
    }

    #[test]
    fn a_remote_peers_key_is_refused_too() {
        let mut core = setup();
        let remote = node_for(OTHER, 9);
        let record = Record { coordinator: OTHER, node: Some(remote.clone()), lost: true };
        core.handle_remote_peer(OTHER, Some(record), vec![]);
        drain(&mut core);
        let mut spoof = node_for(MALLORY, 3);
        spoof.quic_key = remote.quic_key;
        core.handle_node(3, spoof);
        assert_eq!(closes(&drain(&mut core), 3)[0].code, 1008);
        // Once the remote peer is gone its keys are free.
        core.handle_remote_peer(OTHER, None, vec![]);
        core.handle_connect(4, MALLORY, Kind::Agent);
        let mut node = node_for(MALLORY, 3);
        node.quic_key = remote.quic_key;
        core.handle_node(4, node);
        assert!(closes(&drain(&mut core), 4).is_empty());
    }

    #[test]
    fn a_connections_keys_are_pinned_but_a_new_connection_may_bring_new_ones() {
        let mut core = setup();
        // Same keys, new endpoints: fine.
        let mut moved = node_for(VICTIM, 1);
        moved.endpoints = vec!["192.0.2.1:9".parse().unwrap()];
        core.handle_node(1, moved.clone());
        let outs = drain(&mut core);
        assert!(closes(&outs, 1).is_empty());
        assert!(outs.contains(&Output::Send {
            conn: 2,
            message: ServerMessage::Node { peer: VICTIM, node: moved.clone() }
        }));
        // A new disco key on the same connection: refused.
        let mut rotated = moved.clone();
        rotated.disco_key = node_for(VICTIM, 5).disco_key;
        core.handle_node(1, rotated);
        let close = &closes(&drain(&mut core), 1)[0];
        assert_eq!(close.code, 1008);
        assert!(close.reason.contains("disco key changed"), "{close:?}");
        // The restarted agent reconnects with all-new keys.
        core.handle_connect(5, VICTIM, Kind::Agent);
        core.handle_node(5, node_for(VICTIM, 5));
        let outs = drain(&mut core);
        assert!(closes(&outs, 5).is_empty());
        assert!(outs.contains(&Output::Send {
            conn: 2,
            message: ServerMessage::Node { peer: VICTIM, node: node_for(VICTIM, 5) }
        }));
        // Its old keys are free again.
        core.handle_node(3, node_for(VICTIM, 1).clone_with_id(MALLORY));
        assert!(closes(&drain(&mut core), 3).is_empty());
    }

    #[test]
    fn a_conflict_the_store_reports_refuses_the_local_peer() {
        let mut core = setup();
        let node = node_for(MALLORY, 3);
        core.handle_node(3, node.clone());
        drain(&mut core);
        // Another replica's peer won the race for the disco key in Postgres.
        core.handle_key_conflict(MALLORY, Pinned::of(&node), KeyKind::Disco);
        let outs = drain(&mut core);
        let close = &closes(&outs, 3)[0];
        assert!(close.reason.starts_with("disco key"), "{close:?}");
        assert!(outs.contains(&Output::Store(StoreOp::DeletePeer { id: MALLORY })));
        // A stale report (the peer has other keys now) refuses nothing.
        core.handle_connect(6, MALLORY, Kind::Agent);
        core.handle_node(6, node_for(MALLORY, 4));
        drain(&mut core);
        core.handle_key_conflict(MALLORY, Pinned::of(&node), KeyKind::Disco);
        assert!(closes(&drain(&mut core), 6).is_empty());
    }

    trait WithId {
        fn clone_with_id(&self, peer: Uuid) -> Node;
    }

    impl WithId for Node {
        fn clone_with_id(&self, peer: Uuid) -> Node {
            let mut n = self.clone();
            n.id = node_id(peer);
            n.addresses = mesh_addresses(n.id);
            n
        }
    }
}
