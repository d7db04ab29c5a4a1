//! This node's own record: what it publishes through the coordinator, and
//! [`MeshEndpoint::node_changes`], which yields it again whenever what
//! peers need of it changes (its endpoints, its home relay region).

use std::sync::Arc;

use tokio::sync::{broadcast, watch};
use tokio_util::task::AbortOnDropHandle;

use super::MeshEndpoint;
use crate::magicsock::Inner;
use crate::node::{Node, RegionId};
use crate::path::PathEvent;
use crate::relay::Relays;

/// What this node's record is made of, and the latest published one.
pub(super) struct OwnNode {
    parts: Arc<Parts>,
    changes: watch::Sender<Node>,
    /// What [`MeshEndpoint::home_relay_changes`] watches without relays:
    /// never changes.
    no_home: watch::Sender<Option<RegionId>>,
}

struct Parts {
    /// The fixed fields (id, keys, addresses) and the configured endpoints.
    base: Node,
    /// Announce no endpoint, whatever the path selector knows.
    relay_only: bool,
    sock: Arc<Inner>,
    relays: Option<Arc<Relays>>,
}

impl Parts {
    fn current(&self) -> Node {
        let mut node = self.base.clone();
        if !self.relay_only {
            let state = self.sock.state();
            node.endpoints = state.peers.paths().local_endpoints().to_vec();
            node.port_mapped = state.peers.paths().port_mapped_endpoints();
        }
        if let Some(relays) = &self.relays {
            node.preferred_relay = relays.home();
            node.relay_latency_ms = relays.latencies_ms();
        }
        node
    }
}

impl OwnNode {
    /// The fixed part of the record: id, keys, addresses.
    pub(super) fn base(&self) -> &Node {
        &self.parts.base
    }

    /// The record of the node `base` describes, and the task (for the
    /// endpoint to own) that follows its changes.
    pub(super) fn start(
        base: Node,
        relay_only: bool,
        sock: Arc<Inner>,
        relays: Option<Arc<Relays>>,
    ) -> (Self, AbortOnDropHandle<()>) {
        // Subscribed before the first record is taken, so no change is missed.
        let events = sock.subscribe();
        let home = relays.as_ref().map(|r| r.home_changes());
        let parts = Arc::new(Parts { base, relay_only, sock, relays });
        let changes = watch::Sender::new(parts.current());
        let task = tokio::spawn(follow(parts.clone(), events, home, changes.clone()));
        let own = Self { parts, changes, no_home: watch::Sender::new(None) };
        (own, AbortOnDropHandle::new(task))
    }
}

/// Publishes the record again whenever the home region changes or a pong or
/// a STUN answer reveals a new endpoint of ours, until the endpoint is dropped.
async fn follow(
    parts: Arc<Parts>,
    mut events: broadcast::Receiver<PathEvent>,
    mut home: Option<watch::Receiver<Option<RegionId>>>,
    tx: watch::Sender<Node>,
) {
    loop {
        let home_changed = async {
            match &mut home {
                Some(home) => home.changed().await.is_ok(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            alive = home_changed => if !alive { return },
            event = events.recv() => match event {
                Ok(PathEvent::LocalEndpointsChanged { .. })
                | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Closed) => return,
            },
        }
        let node = parts.current();
        tx.send_if_modified(|published| {
            let changed = published.endpoints != node.endpoints
                || published.port_mapped != node.port_mapped
                || published.preferred_relay != node.preferred_relay;
            if changed {
                *published = node;
            }
            changed
        });
    }
}

impl MeshEndpoint {
    /// This node's record now, to publish through the coordinator.
    pub fn node(&self) -> Node {
        self.own.parts.current()
    }

    /// This node's record, yielded again whenever its endpoints or home
    /// relay region change, so whoever publishes it through the coordinator
    /// publishes it again: the current record is marked seen, so
    /// `changed()` waits for the next. It closes when the endpoint is dropped.
    pub fn node_changes(&self) -> watch::Receiver<Node> {
        self.own.changes.subscribe()
    }

    /// The home relay region now: the one peers reach this node through.
    pub fn home_relay(&self) -> Option<RegionId> {
        self.relays.as_ref().and_then(|r| r.home())
    }

    /// Fires when the home relay region changes; never fires for an
    /// endpoint without relays. To republish the node, follow
    /// [`Self::node_changes`] instead, which also covers new endpoints.
    pub fn home_relay_changes(&self) -> watch::Receiver<Option<RegionId>> {
        match &self.relays {
            Some(relays) => relays.home_changes(),
            None => self.own.no_home.subscribe(),
        }
    }
}
