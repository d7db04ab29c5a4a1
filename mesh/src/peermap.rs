//! The peers a [`crate::MeshEndpoint`] knows: one map of node records with
//! an index for every way they are looked up, and the rule that binds keys to
//! identities.
//!
//! A peer's identity is its node id (the coordinator derives it from the
//! authenticated peer id, and the mesh addresses and quinn's virtual address
//! derive from it). Each of a node's three keys belongs to at most one node
//! id: a record announcing a node, disco or QUIC key that another node id
//! holds is refused ([`KeyInUse`]), so a peer cannot take over another's
//! relay traffic, path probes or QUIC identity by announcing its keys. A new
//! record for the same node id replaces the old one, keys and all (the peer
//! restarted with fresh keys).
//!
//! Guarded by the magic socket's state lock (`magicsock::State`), with the
//! path selector's state; nothing here locks.

use std::collections::HashMap;
use std::net::SocketAddr;

use crate::key::{DiscoKey, NodeKey, QuicKey};
use crate::magicsock::virtual_addr;
use crate::node::{Node, NodeId};

/// Which of a node's keys collided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyKind {
    /// The WireGuard/relay key.
    Node,
    /// The path probe key.
    Disco,
    /// The QUIC certificate key.
    Quic,
}

impl std::fmt::Display for KeyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeyKind::Node => "node",
            KeyKind::Disco => "disco",
            KeyKind::Quic => "QUIC",
        })
    }
}

/// A record announced a key that another node id (or this node) holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("node {announced}'s {kind} key is already held by {holder}")]
#[non_exhaustive]
pub struct KeyInUse {
    /// The key that collided.
    pub kind: KeyKind,
    /// The node that announced it.
    pub announced: NodeId,
    /// Who holds it: another peer's node id, or this node's own.
    pub holder: NodeId,
}

/// Node records by node key, indexed by virtual address (that is, node
/// id), disco key and QUIC key.
#[derive(Debug, Default)]
pub(crate) struct PeerMap {
    by_key: HashMap<NodeKey, Node>,
    by_vaddr: HashMap<SocketAddr, NodeKey>,
    by_disco: HashMap<DiscoKey, NodeKey>,
    by_quic: HashMap<QuicKey, NodeKey>,
}

impl PeerMap {
    pub(crate) fn get(&self, key: &NodeKey) -> Option<&Node> {
        self.by_key.get(key)
    }

    pub(crate) fn contains_key(&self, key: &NodeKey) -> bool {
        self.by_key.contains_key(key)
    }

    /// The node key of the peer quinn knows by virtual address `vaddr`.
    pub(crate) fn key_at(&self, vaddr: &SocketAddr) -> Option<NodeKey> {
        self.by_vaddr.get(vaddr).copied()
    }

    /// The peer quinn knows by virtual address `vaddr`.
    pub(crate) fn at(&self, vaddr: &SocketAddr) -> Option<&Node> {
        self.by_vaddr.get(vaddr).and_then(|k| self.by_key.get(k))
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &Node> {
        self.by_key.values()
    }

    /// Whether `node` may be stored: none of its keys is held by another node
    /// id. Returns the record it would replace (same node id), if any.
    pub(crate) fn check(&self, node: &Node) -> Result<Option<&Node>, KeyInUse> {
        let current = self.at(&virtual_addr(node));
        let holders = [
            (KeyKind::Node, Some(node.key)),
            (KeyKind::Disco, self.by_disco.get(&node.disco_key).copied()),
            (KeyKind::Quic, self.by_quic.get(&node.quic_key).copied()),
        ];
        for (kind, key) in holders {
            let Some(holder) = key.and_then(|k| self.by_key.get(&k)) else { continue };
            if holder.id != node.id {
                return Err(KeyInUse { kind, announced: node.id, holder: holder.id });
            }
        }
        Ok(current)
    }

    /// Stores `node` after [`Self::check`] passed; returns the record of the
    /// same node id it replaced under another node key (the caller forgets
    /// that key everywhere else).
    pub(crate) fn insert(&mut self, node: &Node) -> Result<Option<Node>, KeyInUse> {
        let replaced_key = match self.check(node)? {
            Some(current) if current.key != node.key => Some(current.key),
            _ => None,
        };
        let replaced = replaced_key.and_then(|k| self.remove(&k));
        if let Some(old) = self.by_key.insert(node.key, node.clone()) {
            self.unindex(&old);
        }
        self.by_vaddr.insert(virtual_addr(node), node.key);
        self.by_disco.insert(node.disco_key, node.key);
        self.by_quic.insert(node.quic_key, node.key);
        Ok(replaced)
    }

    pub(crate) fn remove(&mut self, key: &NodeKey) -> Option<Node> {
        let old = self.by_key.remove(key)?;
        self.unindex(&old);
        Some(old)
    }

    /// Removes `old`'s index entries that still point at its node key.
    fn unindex(&mut self, old: &Node) {
        let vaddr = virtual_addr(old);
        if self.by_vaddr.get(&vaddr) == Some(&old.key) {
            self.by_vaddr.remove(&vaddr);
        }
        if self.by_disco.get(&old.disco_key) == Some(&old.key) {
            self.by_disco.remove(&old.disco_key);
        }
        if self.by_quic.get(&old.quic_key) == Some(&old.key) {
            self.by_quic.remove(&old.quic_key);
        }
    }

    /// Whether QUIC key `key` belongs to a known peer (the TLS verifier's question).
    #[cfg(test)]
    fn knows_quic(&self, key: &QuicKey) -> bool {
        self.by_quic.contains_key(key)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use rand::SeedableRng;

    use super::*;
    use crate::key::{DiscoSecret, NodeSecret, QuicSecret};
    use crate::node::{mesh_addresses, PROTOCOL_VERSION};

    fn node(id: u64, seed: u64) -> Node {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        Node {
            id: NodeId(id),
            key: NodeSecret::generate(&mut rng).public(),
            disco_key: DiscoSecret::generate(&mut rng).public(),
            quic_key: QuicSecret::generate(&mut rng).public(),
            preferred_relay: None,
            relay_latency_ms: Default::default(),
            endpoints: vec![],
            addresses: mesh_addresses(NodeId(id)),
            version: PROTOCOL_VERSION,
        }
    }

    #[test]
    fn another_node_id_cannot_take_any_key() {
        let mut map = PeerMap::default();
        let victim = node(1, 1);
        map.insert(&victim).unwrap();
        let mut fresh = node(2, 2);
        for kind in [KeyKind::Node, KeyKind::Disco, KeyKind::Quic] {
            let mut spoof = fresh.clone();
            match kind {
                KeyKind::Node => spoof.key = victim.key,
                KeyKind::Disco => spoof.disco_key = victim.disco_key,
                KeyKind::Quic => spoof.quic_key = victim.quic_key,
            }
            let refused = map.insert(&spoof).unwrap_err();
            assert_eq!(refused, KeyInUse { kind, announced: NodeId(2), holder: NodeId(1) });
            // The victim is untouched, in every index.
            assert_eq!(map.get(&victim.key), Some(&victim));
            assert_eq!(map.at(&virtual_addr(&victim)), Some(&victim));
            assert!(map.knows_quic(&victim.quic_key));
            assert!(map.at(&virtual_addr(&spoof)).is_none());
        }
        // Keys of its own are fine.
        fresh.endpoints = vec!["192.0.2.1:1".parse().unwrap()];
        assert_eq!(map.insert(&fresh).unwrap(), None);
    }

    #[test]
    fn same_node_id_with_new_keys_replaces_the_old_record() {
        let mut map = PeerMap::default();
        let before = node(1, 1);
        map.insert(&before).unwrap();
        let after = node(1, 7);
        assert_eq!(map.insert(&after).unwrap(), Some(before.clone()));
        assert!(map.get(&before.key).is_none());
        assert!(!map.knows_quic(&before.quic_key));
        assert_eq!(map.at(&virtual_addr(&after)), Some(&after));
        // The old keys are free again, for anyone.
        let mut other = node(2, 2);
        other.key = before.key;
        other.disco_key = before.disco_key;
        other.quic_key = before.quic_key;
        map.insert(&other).unwrap();
        assert_eq!(map.values().count(), 2);
        map.remove(&other.key);
        assert!(!map.knows_quic(&other.quic_key));
        assert_eq!(map.key_at(&virtual_addr(&after)), Some(after.key));
    }
}
