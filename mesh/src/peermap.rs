//! The peers a [`crate::MeshEndpoint`] knows: the one owner of per-peer
//! state, with an index for every way a peer is looked up.
//!
//! [`PeerMap`] holds each peer's node record (by node key) and its paths
//! ([`PathSelector`]), and indexes them by virtual address (quinn's name
//! for the peer, derived from the node id), QUIC key (the TLS verifier's
//! question), disco key (whose probes a sealed datagram carries) and proven
//! endpoint address (whose UDP datagram this is, on the receive path). It
//! also keeps the relayed QUIC that beat the coordinator's announcement of
//! its sender. A peer is added, replaced and removed here in one step, so
//! the indexes never disagree.
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
//! # Locking
//!
//! All access is done with the magic socket's state lock held
//! (`magicsock::Inner::state`, which guards the `PeerMap` and nothing else
//! of note); nothing here locks. Two pieces of per-peer state live apart,
//! each behind its own lock, and are told of changes by
//! [`crate::MeshEndpoint::upsert_peer`] / `remove_peer` after the state lock
//! is released:
//! - the WireGuard device (`wg::Shared::device`): its per-peer tunnels do
//!   the crypto, under a lock held while they send, and sending takes the
//!   state lock to pick the path;
//! - the relay links (`relay::Relays`): connections, one per region, opened
//!   early for a peer's home region. Which region a peer's datagrams go
//!   through is read from its record here, when they are queued.
//!
//! Locks are taken in this order, never the other way round:
//! 1. `MeshEndpoint::peer_updates`: serializes adding and removing peers
//!    (and starting WireGuard), so the device sees them in the map's order;
//! 2. the WireGuard device lock;
//! 3. the magic socket's state lock (this map);
//!
//! and the relay's locks (`Relays::links`, `Relays::selector`) and the
//! relayed-QUIC queue's lock are never held with the state lock. quinn
//! takes the state lock under its own locks (sending, receiving, and the
//! TLS verifier asking [`PeerMap::knows_quic`]); nothing calls into quinn
//! with the state lock held.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::watch;

use crate::key::{NodeKey, QuicKey};
use crate::magicsock::virtual_addr;
use crate::node::{Node, NodeId, RegionId};
use crate::path::{Destination, PathSelector};

/// Relayed QUIC datagrams from a sender the coordinator has not announced yet
/// (its announcement races its first packets) are kept this long...
const EARLY_QUIC_TTL: Duration = Duration::from_secs(3);
/// ...and at most this many of them.
const MAX_EARLY_QUIC: usize = 64;

/// A withdrawn peer's last route is kept this long, for the connection
/// close that tells it so ([`PeerMap::withdraw`]).
const WITHDRAWN_ROUTE_TTL: Duration = Duration::from_secs(2);

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

/// What [`PeerMap::upsert`] changed, for the state kept outside the map.
#[derive(Debug, Default)]
pub(crate) struct Upserted {
    /// The record of the same node id under another node key, now gone
    /// (the caller forgets that key everywhere else).
    pub(crate) replaced: Option<Node>,
    /// Relayed QUIC the peer sent before it was announced, to deliver now.
    pub(crate) early_quic: Vec<Bytes>,
}

/// One peer's record, and the signal its connections wait on.
struct Entry {
    node: Node,
    /// Dropped when the peer leaves the map (removed, or replaced by a
    /// record with other keys): every [`Presence`] of it then resolves, and
    /// the connections watching it close ([`crate::MeshConnection`]).
    present: watch::Sender<()>,
}

/// Resolves once its peer has left the map ([`PeerMap::presence`]).
#[derive(Debug)]
pub(crate) struct Presence(watch::Receiver<()>);

impl Presence {
    /// Waits until the peer is withdrawn (at once if it already is).
    pub(crate) async fn withdrawn(mut self) {
        // Nothing is ever sent: `changed` fails exactly when the sender,
        // held by the peer's entry, is dropped.
        while self.0.changed().await.is_ok() {}
    }
}

/// Every peer's record and paths, indexed every way they are looked up.
/// Guarded by the magic socket's state lock (see the module docs).
pub(crate) struct PeerMap {
    /// Node records: the primary map.
    by_key: HashMap<NodeKey, Entry>,
    /// Node key by virtual address (quinn's name for a peer; node id).
    by_vaddr: HashMap<SocketAddr, NodeKey>,
    /// Node key by QUIC key.
    by_quic: HashMap<QuicKey, NodeKey>,
    /// Each peer's paths, and the indexes by disco key
    /// ([`PathSelector::disco_holder`]) and by proven endpoint address
    /// ([`PathSelector::peer_at`]), kept in step with its probes.
    paths: PathSelector,
    /// Relayed QUIC from senders not announced yet, oldest first.
    early_quic: VecDeque<(Instant, NodeKey, Bytes)>,
    /// Withdrawn peers by virtual address: where their data went when they
    /// were withdrawn, and until when quinn may still send there (the
    /// `CONNECTION_CLOSE` that tells them). Nothing is received from them.
    withdrawn: HashMap<SocketAddr, (Instant, Destination, Option<RegionId>)>,
}

impl PeerMap {
    /// A map with no peers, whose paths `paths` selects.
    pub(crate) fn new(paths: PathSelector) -> Self {
        Self {
            by_key: HashMap::new(),
            by_vaddr: HashMap::new(),
            by_quic: HashMap::new(),
            paths,
            early_quic: VecDeque::new(),
            withdrawn: HashMap::new(),
        }
    }

    /// The path selector, to drive (disco, activity, timers, polls). Peers
    /// are added and removed through the map only.
    pub(crate) fn paths(&self) -> &PathSelector {
        &self.paths
    }

    /// See [`Self::paths`].
    pub(crate) fn paths_mut(&mut self) -> &mut PathSelector {
        &mut self.paths
    }

    pub(crate) fn get(&self, key: &NodeKey) -> Option<&Node> {
        self.by_key.get(key).map(|e| &e.node)
    }

    /// The signal that `key` left the map, for a connection to watch;
    /// `None` if it is not a peer now.
    pub(crate) fn presence(&self, key: &NodeKey) -> Option<Presence> {
        self.by_key.get(key).map(|e| Presence(e.present.subscribe()))
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
        self.by_vaddr.get(vaddr).and_then(|k| self.get(k))
    }

    /// The peer holding disco key `disco`.
    #[cfg(test)]
    fn by_disco(&self, disco: &crate::key::DiscoKey) -> Option<&Node> {
        self.paths.disco_holder(disco).and_then(|k| self.get(&k))
    }

    /// Whether QUIC key `key` belongs to a known peer (the TLS verifier's question).
    pub(crate) fn knows_quic(&self, key: &QuicKey) -> bool {
        self.by_quic.contains_key(key)
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &Node> {
        self.by_key.values().map(|e| &e.node)
    }

    /// The home region `key` announced, if any.
    pub(crate) fn region(&self, key: &NodeKey) -> Option<RegionId> {
        self.get(key).and_then(|n| n.preferred_relay)
    }

    /// The peer that proved UDP address `src`, on the receive path: its
    /// session counts as active, and its virtual address is returned.
    pub(crate) fn quic_source(&mut self, src: SocketAddr, now: Instant) -> Option<SocketAddr> {
        let key = self.paths.peer_at(src)?;
        self.paths.handle_activity(&key, now);
        self.get(&key).map(virtual_addr)
    }

    /// Whether `node` may be stored: none of its keys is held by another node
    /// id. Returns the record it would replace (same node id), if any.
    pub(crate) fn check(&self, node: &Node) -> Result<Option<&Node>, KeyInUse> {
        let current = self.at(&virtual_addr(node));
        let holders = [
            (KeyKind::Node, Some(node.key)),
            (KeyKind::Disco, self.paths.disco_holder(&node.disco_key)),
            (KeyKind::Quic, self.by_quic.get(&node.quic_key).copied()),
        ];
        for (kind, key) in holders {
            let Some(holder) = key.and_then(|k| self.get(&k)) else { continue };
            if holder.id != node.id {
                return Err(KeyInUse { kind, announced: node.id, holder: holder.id });
            }
        }
        Ok(current)
    }

    /// Adds or updates the peer `node` (after [`Self::check`] passes) in
    /// every index and in the path selector, and takes the relayed QUIC it
    /// sent before it was announced.
    pub(crate) fn upsert(&mut self, node: &Node, now: Instant) -> Result<Upserted, KeyInUse> {
        // Datagrams are matched to endpoints in plain IPv4: a record that
        // announces one IPv4-mapped is stored the same way.
        let mut canonical = None;
        if node.endpoints.iter().any(|ep| crate::socket::canonical(*ep) != *ep) {
            let mut copy = node.clone();
            copy.endpoints = copy.endpoints.into_iter().map(crate::socket::canonical).collect();
            canonical = Some(copy);
        }
        let node = canonical.as_ref().unwrap_or(node);
        let replaced_key = match self.check(node)? {
            Some(current) if current.key != node.key => Some(current.key),
            _ => None,
        };
        let replaced = replaced_key.and_then(|k| self.remove(&k));
        // The same key keeps its entry, so its connections stay up.
        match self.by_key.get_mut(&node.key) {
            Some(entry) => {
                let old = std::mem::replace(&mut entry.node, node.clone());
                self.unindex(&old);
            }
            None => {
                let entry = Entry { node: node.clone(), present: watch::Sender::new(()) };
                self.by_key.insert(node.key, entry);
            }
        }
        self.withdrawn.remove(&virtual_addr(node));
        self.by_vaddr.insert(virtual_addr(node), node.key);
        self.by_quic.insert(node.quic_key, node.key);
        self.paths.upsert_peer(node, now);
        Ok(Upserted { replaced, early_quic: self.take_early_quic(node.key, now) })
    }

    /// The coordinator withdrew `key`: forgets it ([`Self::remove`]), but
    /// keeps its route for [`WITHDRAWN_ROUTE_TTL`] so that the close of its
    /// connections, which their watchers send right after, still reaches it.
    pub(crate) fn withdraw(&mut self, key: &NodeKey, now: Instant) -> Option<Node> {
        let dst = self.paths.destination(key, now);
        let region = self.region(key);
        let old = self.remove(key)?;
        self.withdrawn.retain(|_, (until, ..)| *until > now);
        if let Some(dst) = dst {
            self.withdrawn.insert(virtual_addr(&old), (now + WITHDRAWN_ROUTE_TTL, dst, region));
        }
        Some(old)
    }

    /// Where to send quinn's last packets to the withdrawn peer at `vaddr`.
    pub(crate) fn withdrawn_route(
        &self,
        vaddr: &SocketAddr,
        now: Instant,
    ) -> Option<(Destination, Option<RegionId>)> {
        let (until, dst, region) = self.withdrawn.get(vaddr)?;
        (*until > now).then_some((*dst, *region))
    }

    /// Forgets the peer with node key `key` everywhere in the map; its
    /// [`Presence`] resolves, which closes its connections.
    pub(crate) fn remove(&mut self, key: &NodeKey) -> Option<Node> {
        self.paths.remove_peer(key);
        let old = self.by_key.remove(key)?.node;
        self.unindex(&old);
        Some(old)
    }

    /// Removes `old`'s index entries that still point at its node key.
    fn unindex(&mut self, old: &Node) {
        let vaddr = virtual_addr(old);
        if self.by_vaddr.get(&vaddr) == Some(&old.key) {
            self.by_vaddr.remove(&vaddr);
        }
        if self.by_quic.get(&old.quic_key) == Some(&old.key) {
            self.by_quic.remove(&old.quic_key);
        }
    }

    /// Keeps relayed QUIC from `src`, not announced yet: probably its first
    /// handshake packet, a moment before the coordinator's announcement.
    pub(crate) fn keep_early_quic(&mut self, src: NodeKey, data: Bytes, now: Instant) {
        if self.early_quic.len() >= MAX_EARLY_QUIC {
            self.early_quic.pop_front();
        }
        self.early_quic.push_back((now, src, data));
    }

    /// The relayed QUIC kept for `key`, just announced; drops expired ones.
    fn take_early_quic(&mut self, key: NodeKey, now: Instant) -> Vec<Bytes> {
        self.early_quic.retain(|(at, _, _)| now.saturating_duration_since(*at) < EARLY_QUIC_TTL);
        if !self.early_quic.iter().any(|(_, src, _)| *src == key) {
            return Vec::new();
        }
        let (mine, kept) = std::mem::take(&mut self.early_quic)
            .into_iter()
            .partition::<VecDeque<_>, _>(|(_, src, _)| *src == key);
        self.early_quic = kept;
        mine.into_iter().map(|(_, _, data)| data).collect()
    }

    /// Datagrams kept from senders not announced yet.
    pub(crate) fn early_datagrams(&self) -> usize {
        self.early_quic.len() + self.paths.early_disco()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use rand::SeedableRng;

    use super::*;
    use crate::key::{DiscoSecret, NodeSecret, QuicSecret};
    use crate::node::{mesh_addresses, PROTOCOL_VERSION};
    use crate::path::PathConfig;

    fn node(id: u64, seed: u64) -> Node {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        Node {
            id: NodeId(id),
            key: NodeSecret::generate(&mut rng).public(),
            disco_key: DiscoSecret::generate(&mut rng).public(),
            quic_key: QuicSecret::generate(&mut rng).public(),
            preferred_relay: None,
            relay_latency_ms: Default::default(),
            port_mapped: Vec::new(),
            endpoints: vec![],
            addresses: mesh_addresses(NodeId(id)),
            version: PROTOCOL_VERSION,
        }
    }

    fn map() -> PeerMap {
        let own = node(1000, 1000);
        let config = PathConfig { rng_seed: Some(1), ..PathConfig::default() };
        PeerMap::new(PathSelector::new(config, own.key, DiscoSecret::from_bytes([5; 32])))
    }

    /// `node` is found by every key and address it is looked up by.
    fn assert_indexed(map: &PeerMap, node: &Node) {
        assert_eq!(map.get(&node.key), Some(node));
        assert_eq!(map.at(&virtual_addr(node)), Some(node));
        assert_eq!(map.by_disco(&node.disco_key), Some(node));
        assert!(map.knows_quic(&node.quic_key));
        assert!(map.paths().destination(&node.key, Instant::now()).is_some());
    }

    /// Nothing in any index still names `node`'s keys.
    fn assert_forgotten(map: &PeerMap, node: &Node) {
        assert!(map.get(&node.key).is_none());
        assert!(map.by_disco(&node.disco_key).is_none());
        assert!(!map.knows_quic(&node.quic_key));
        assert!(map.paths().destination(&node.key, Instant::now()).is_none());
    }

    #[test]
    fn another_node_id_cannot_take_any_key() {
        let mut map = map();
        let now = Instant::now();
        let victim = node(1, 1);
        map.upsert(&victim, now).unwrap();
        let mut fresh = node(2, 2);
        for kind in [KeyKind::Node, KeyKind::Disco, KeyKind::Quic] {
            let mut spoof = fresh.clone();
            match kind {
                KeyKind::Node => spoof.key = victim.key,
                KeyKind::Disco => spoof.disco_key = victim.disco_key,
                KeyKind::Quic => spoof.quic_key = victim.quic_key,
            }
            let refused = map.upsert(&spoof, now).unwrap_err();
            assert_eq!(refused, KeyInUse { kind, announced: NodeId(2), holder: NodeId(1) });
            // The victim is untouched, in every index.
            assert_indexed(&map, &victim);
            assert!(map.at(&virtual_addr(&spoof)).is_none());
        }
        // Keys of its own are fine.
        fresh.endpoints = vec!["192.0.2.1:1".parse().unwrap()];
        assert_eq!(map.upsert(&fresh, now).unwrap().replaced, None);
        assert_indexed(&map, &fresh);
    }

    #[test]
    fn same_node_id_with_new_keys_replaces_the_old_record() {
        let mut map = map();
        let now = Instant::now();
        let before = node(1, 1);
        map.upsert(&before, now).unwrap();
        let after = node(1, 7);
        assert_eq!(map.upsert(&after, now).unwrap().replaced, Some(before.clone()));
        assert_forgotten(&map, &before);
        assert_indexed(&map, &after);
        // The old keys are free again, for anyone.
        let mut other = node(2, 2);
        other.key = before.key;
        other.disco_key = before.disco_key;
        other.quic_key = before.quic_key;
        map.upsert(&other, now).unwrap();
        assert_indexed(&map, &other);
        assert_eq!(map.values().count(), 2);
        map.remove(&other.key);
        assert_forgotten(&map, &other);
        assert_eq!(map.key_at(&virtual_addr(&after)), Some(after.key));
    }

    #[test]
    fn ipv4_mapped_endpoints_are_stored_as_ipv4() {
        let mut map = map();
        let mut peer = node(1, 1);
        peer.endpoints =
            vec!["[::ffff:192.0.2.1]:1".parse().unwrap(), "[2001:db8::1]:2".parse().unwrap()];
        map.upsert(&peer, Instant::now()).unwrap();
        let stored = &map.get(&peer.key).unwrap().endpoints;
        let want: Vec<SocketAddr> =
            vec!["192.0.2.1:1".parse().unwrap(), "[2001:db8::1]:2".parse().unwrap()];
        assert_eq!(stored, &want);
    }

    #[test]
    fn early_quic_is_handed_over_once_and_expires() {
        let mut map = map();
        let now = Instant::now();
        let (a, b) = (node(1, 1), node(2, 2));
        map.keep_early_quic(a.key, Bytes::from_static(b"a1"), now);
        map.keep_early_quic(b.key, Bytes::from_static(b"b1"), now);
        map.keep_early_quic(a.key, Bytes::from_static(b"a2"), now);
        assert_eq!(map.early_datagrams(), 3);
        let got = map.upsert(&a, now).unwrap().early_quic;
        assert_eq!(got, [Bytes::from_static(b"a1"), Bytes::from_static(b"a2")]);
        assert!(map.upsert(&a, now).unwrap().early_quic.is_empty());
        assert_eq!(map.early_datagrams(), 1);
        // Too late: dropped, not delivered.
        assert!(map.upsert(&b, now + EARLY_QUIC_TTL).unwrap().early_quic.is_empty());
        assert_eq!(map.early_datagrams(), 0);
    }
}
