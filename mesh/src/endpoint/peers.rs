//! Changing the peer set ([`MeshEndpoint::upsert_peer`],
//! [`MeshEndpoint::remove_peer`], [`MeshEndpoint::wireguard`]), and the
//! relay facts about peers a CLI reports: where each is homed and which
//! way data to it goes.
//!
//! Each change takes the locks in the order [`crate::peermap`] writes
//! down: the endpoint's `peer_updates`, then the magic socket's state
//! (the peer map, changed in one step), released before the relay links
//! and the WireGuard device hear of it.

use std::net::SocketAddr;
use std::sync::MutexGuard;
use std::time::Instant;

use super::{MeshEndpoint, UpsertError, WireGuardStarted};
use crate::key::NodeKey;
use crate::node::{Node, RegionId};
use crate::path::Destination;
use crate::peermap::{KeyInUse, KeyKind};
use crate::wg::{self, WgDevice, WgReceiver, WgSender};

/// How data to a peer travels now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerPath {
    /// Straight over UDP to this address, which a pong proved.
    Direct(SocketAddr),
    /// Through the relay region the peer is homed in (or ours, when the
    /// peer announced none we know); `None` for an endpoint without relays.
    Relay(Option<RegionId>),
}

impl MeshEndpoint {
    fn peer_updates(&self) -> MutexGuard<'_, ()> {
        self.peer_updates.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds or updates a peer the coordinator announced.
    ///
    /// A peer is its node id: a record for a known node id replaces that
    /// peer's (new keys mean it restarted). A record announcing a node, disco
    /// or QUIC key that another node id holds, or that is this node's own, is
    /// refused and changes nothing ([`crate::peermap`]): keys are never
    /// capabilities one peer can take from another.
    pub fn upsert_peer(&self, node: &Node) -> Result<(), UpsertError> {
        node.check_addresses()?;
        let own = self.own.base();
        let own_keys = [
            (KeyKind::Node, node.key == own.key),
            (KeyKind::Disco, node.disco_key == own.disco_key),
            (KeyKind::Quic, node.quic_key == own.quic_key),
        ];
        if let Some((kind, _)) = own_keys.into_iter().find(|(_, own)| *own) {
            return Err(KeyInUse { kind, announced: node.id, holder: own.id }.into());
        }
        let _updates = self.peer_updates();
        let upserted = {
            let mut state = self.sock.state();
            let upserted = state.peers.upsert(node, Instant::now())?;
            // Ahead of what the peer sends from now on.
            self.sock.deliver_early(node.key, &upserted.early_quic);
            self.sock.flush(&mut state);
            upserted
        };
        if let Some(relays) = &self.relays {
            relays.prepare(node.preferred_relay);
        }
        if let Some(wg) = self.wireguard.get() {
            let mut device = wg.device();
            if let Some(old) = &upserted.replaced {
                device.remove_peer(&old.key);
            }
            device.upsert_peer(node);
        }
        Ok(())
    }

    /// Forgets a peer (the coordinator withdrew it): its connections are
    /// closed at once with [`crate::close::WITHDRAWN`], its WireGuard
    /// session is dropped (no packet to or from it is sealed or opened any
    /// more), and nothing more goes to it.
    pub fn remove_peer(&self, key: &NodeKey) {
        let _updates = self.peer_updates();
        // Its route outlives it for a moment: the close goes out by it.
        self.sock.state().peers.withdraw(key, Instant::now());
        if let Some(wg) = self.wireguard.get() {
            wg.device().remove_peer(key);
        }
    }

    /// Starts WireGuard on this endpoint (once): IP packets to and from the
    /// announced peers' mesh addresses, keyed by the node keys, over the same
    /// paths as QUIC. Dropping the receiver stops it.
    pub fn wireguard(&self) -> Result<(WgSender, WgReceiver), WireGuardStarted> {
        let _updates = self.peer_updates();
        if self.wireguard.get().is_some() {
            return Err(WireGuardStarted);
        }
        let mut device = WgDevice::new(&self.node_secret);
        for node in self.sock.state().peers.values() {
            device.upsert_peer(node);
        }
        let (shared, sender, receiver) = wg::start(self.sock.clone(), device);
        self.wireguard.set(shared).map_err(|_| WireGuardStarted)?;
        Ok((sender, receiver))
    }

    /// The relay region `peer` announced as its home, if it is one of
    /// ours (the relay map's).
    pub fn peer_relay(&self, peer: &NodeKey) -> Option<RegionId> {
        let region = self.sock.state().peers.region(peer)?;
        self.relays.as_ref().filter(|r| r.knows(region)).map(|_| region)
    }

    /// Which way data to `peer` goes now; `None` for an unknown peer.
    pub fn path(&self, peer: &NodeKey) -> Option<PeerPath> {
        let (dst, region) = {
            let state = self.sock.state();
            (state.peers.paths().destination(peer, Instant::now())?, state.peers.region(peer))
        };
        Some(match dst {
            Destination::Direct(addr) => PeerPath::Direct(addr),
            Destination::Relay(_) => {
                PeerPath::Relay(self.relays.as_ref().and_then(|r| r.region_for(region)))
            }
        })
    }
}
