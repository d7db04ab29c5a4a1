//! Joining the mesh: one [`MeshSession`] ties a coordination connection to a
//! [`mesh::MeshEndpoint`]. Both `coder` (a client that dials agents) and
//! `coder-agent` (which accepts) use it.
//!
//! ```text
//! coordinator ──hello(node id)──▶ announce our keys, then bind MeshEndpoint (relay regions, STUN)
//!             ◀──our node──────── publish (again whenever our endpoints or home relay change)
//!             ──peer node──────▶ endpoint.upsert_peer, remember agent id → node
//!             ──disconnected───▶ endpoint.remove_peer
//! ```
//!
//! A peer is its peer id: [`MeshSession::dial_agent`] dials the node the
//! coordinator announced for the agent id it asked for, and only if the
//! endpoint holds that very record. A node whose key another peer already
//! holds is refused by the endpoint (the coordinator refuses such nodes too;
//! this covers a race between two replicas) and kept aside until that peer
//! goes away.
//!
//! The session keeps running when the coordinator goes away: existing mesh
//! connections stay up on the last known nodes; the coordination client
//! reconnects and re-publishes on its own.

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use mesh::{
    DiscoSecret, MeshConfig, MeshConnection, MeshEndpoint, Node, NodeKey, NodeSecret, QuicSecret,
};
use tokio::sync::watch;
use tokio_util::task::AbortOnDropHandle;
use url::Url;
use uuid::Uuid;

use crate::coordination::{ConnectError, Coordinator, PeerKind, PeerUpdate, PeerUpdates};
use crate::RelayMap;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    #[error(transparent)]
    Coordinator(#[from] ConnectError),
    #[error("the coordinator closed the connection before saying hello")]
    NoHello,
    #[error("cannot open the mesh socket: {0}")]
    Bind(#[from] mesh::BindError),
    #[error(
        "the workspace agent did not appear on the mesh within {0:?}; is the workspace running?"
    )]
    PeerTimeout(Duration),
    #[error("the coordinator refused: {0}")]
    Refused(String),
    #[error("cannot connect to the agent over the mesh: {0}")]
    Dial(#[from] mesh::DialError),
}

/// Options for joining.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct SessionConfig {
    /// Announce no direct endpoints: always use the relay.
    pub relay_only: bool,
    /// Bind the mesh socket here (default `[::]:0`).
    pub bind: Option<SocketAddr>,
}

impl SessionConfig {
    /// This config, announcing no direct endpoints when `relay_only`.
    pub fn with_relay_only(mut self, relay_only: bool) -> Self {
        self.relay_only = relay_only;
        self
    }
}

/// Known peers: coordinator peer id → latest node.
type Peers = HashMap<Uuid, Node>;

pub struct MeshSession {
    endpoint: Arc<MeshEndpoint>,
    coordinator: Coordinator,
    peers: watch::Receiver<Peers>,
    refusals: watch::Receiver<Option<String>>,
    _task: AbortOnDropHandle<()>,
}

impl std::fmt::Debug for MeshSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshSession").finish_non_exhaustive()
    }
}

/// The relay regions (every node of each, in the map's order of
/// preference) and STUN servers of a relay map: each node's STUN host once
/// per address family it resolves to (the mesh skips IPv6 ones where the
/// host has no IPv6).
fn relay_regions(map: &RelayMap) -> (Vec<mesh::RelayRegion>, Vec<SocketAddr>) {
    let mut stun = Vec::new();
    for region in map.regions.values() {
        for node in &region.nodes {
            if let Some(s) = &node.stun {
                if let Ok(addrs) = s.to_socket_addrs() {
                    let addrs: Vec<SocketAddr> = addrs.collect();
                    stun.extend(addrs.iter().find(|a| a.is_ipv4()));
                    stun.extend(addrs.iter().find(|a| a.is_ipv6()));
                }
            }
        }
    }
    (region_nodes(map), stun)
}

/// The relay regions of a relay map, every node of each in the map's order
/// (no STUN lookups: for a map that replaces the nodes of a bound endpoint).
fn region_nodes(map: &RelayMap) -> Vec<mesh::RelayRegion> {
    map.regions
        .values()
        .filter_map(|r| {
            let nodes = r.nodes.iter().filter_map(|n| n.url.parse::<derp::RelayUrl>().ok());
            mesh::RelayRegion::with_nodes(r.region_id, nodes.collect())
        })
        .collect()
}

/// The relay map a coordinator's `hello` carries; `None` when it sent none
/// (older coordinators, `null`) or one without any region.
fn parse_relay_map(value: serde_json::Value) -> Option<RelayMap> {
    if value.is_null() {
        return None;
    }
    match serde_json::from_value::<RelayMap>(value) {
        Ok(map) if !map.regions.is_empty() => Some(map),
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(error = %e, "ignoring the coordinator's relay map");
            None
        }
    }
}

/// Our node before the endpoint is bound: keys and addresses, no endpoints
/// and no home relay yet.
fn keys_only_node(cfg: &MeshConfig) -> Node {
    Node {
        id: cfg.node_id,
        key: cfg.node_secret.public(),
        disco_key: cfg.disco_secret.public(),
        quic_key: cfg.quic_secret.public(),
        preferred_relay: None,
        relay_latency_ms: Default::default(),
        port_mapped: Vec::new(),
        endpoints: Vec::new(),
        addresses: mesh::mesh_addresses(cfg.node_id),
        version: mesh::PROTOCOL_VERSION,
    }
}

/// A fresh node key announced through the coordinator, for talking to
/// relays without a mesh endpoint (`coder netcheck`): relays admit only
/// keys a connected peer announced. The announcement lasts as long as this.
pub struct ProbeKey {
    pub secret: derp::SecretKey,
    _coordinator: Coordinator,
    _updates: AbortOnDropHandle<()>,
}

impl ProbeKey {
    /// Joins coordination as a client and announces a throwaway node.
    pub async fn announce(access_url: &Url, token: &str) -> Result<ProbeKey, SessionError> {
        let (coordinator, mut updates) =
            Coordinator::connect(access_url, token, PeerKind::Client).await?;
        let node_id = loop {
            match updates.recv().await {
                Some(PeerUpdate::Connected { node_id, .. }) => break node_id,
                Some(_) => continue,
                None => return Err(SessionError::NoHello),
            }
        };
        let mut rng = rand::rngs::OsRng;
        let cfg = MeshConfig::new(
            node_id,
            NodeSecret::generate(&mut rng),
            DiscoSecret::generate(&mut rng),
            QuicSecret::generate(&mut rng),
        );
        coordinator.update_node(keys_only_node(&cfg));
        // The coordination client stops when no one reads its updates.
        let drain = tokio::spawn(async move { while updates.recv().await.is_some() {} });
        Ok(ProbeKey {
            secret: cfg.node_secret.to_relay_key(),
            _coordinator: coordinator,
            _updates: AbortOnDropHandle::new(drain),
        })
    }
}

impl MeshSession {
    /// Connects to the coordinator as `kind`, binds the mesh endpoint with the
    /// assigned node id, and publishes our node.
    pub async fn join(
        access_url: &Url,
        token: &str,
        kind: PeerKind,
        relay_map: &RelayMap,
        config: SessionConfig,
    ) -> Result<MeshSession, SessionError> {
        let (coordinator, mut updates) = Coordinator::connect(access_url, token, kind).await?;
        let (node_id, hello_map) = loop {
            match updates.recv().await {
                Some(PeerUpdate::Connected { node_id, relay_map, .. }) => {
                    break (node_id, relay_map)
                }
                Some(_) => continue,
                None => return Err(SessionError::NoHello),
            }
        };
        // The map of the replica we coordinate through lists its own relay
        // first; the one fetched beforehand may come from another replica.
        let hello_map = parse_relay_map(hello_map);
        let relay_map = hello_map.as_ref().unwrap_or(relay_map);
        let mut rng = rand::rngs::OsRng;
        let mut cfg = MeshConfig::new(
            node_id,
            NodeSecret::generate(&mut rng),
            DiscoSecret::generate(&mut rng),
            QuicSecret::generate(&mut rng),
        );
        let (regions, stun) = relay_regions(relay_map);
        cfg.relays = regions;
        cfg.stun_servers = stun;
        cfg.relay_only = config.relay_only;
        // Off unless CODER_PORT_MAPPING asks (mesh::PortMapConfig::from_env).
        cfg.port_mapping = mesh::PortMapConfig::from_env();
        if let Some(bind) = config.bind {
            cfg.bind = bind;
        }
        // Our keys go to the coordinator before binding dials the relays:
        // relays admit only node keys a connected peer announced
        // (docs/protocols/relay.md, "Client verification").
        coordinator.update_node(keys_only_node(&cfg));
        let endpoint = Arc::new(MeshEndpoint::bind(cfg).await?);
        // Subscribed before the first publish, so no change after it is missed.
        let node_changes = endpoint.node_changes();
        coordinator.update_node(endpoint.node());
        let (peers_tx, peers) = watch::channel(Peers::new());
        let (refusals_tx, refusals) = watch::channel(None);
        let task = tokio::spawn(run(
            endpoint.clone(),
            coordinator.clone(),
            node_changes,
            updates,
            peers_tx,
            refusals_tx,
        ));
        Ok(MeshSession {
            endpoint,
            coordinator,
            peers,
            refusals,
            _task: AbortOnDropHandle::new(task),
        })
    }

    pub fn endpoint(&self) -> &MeshEndpoint {
        &self.endpoint
    }

    pub fn coordinator(&self) -> &Coordinator {
        &self.coordinator
    }

    /// Waits until the coordinator has told us `peer`'s node.
    pub async fn wait_for_peer(&self, peer: Uuid, timeout: Duration) -> Result<Node, SessionError> {
        let mut peers = self.peers.clone();
        let mut refusals = self.refusals.clone();
        let wait = async {
            loop {
                if let Some(node) = peers.borrow_and_update().get(&peer) {
                    return Ok(node.clone());
                }
                if let Some(msg) = refusals.borrow_and_update().clone() {
                    return Err(SessionError::Refused(msg));
                }
                tokio::select! {
                    r = peers.changed() => if r.is_err() { return Err(SessionError::PeerTimeout(timeout)) },
                    r = refusals.changed() => if r.is_err() { return Err(SessionError::PeerTimeout(timeout)) },
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.map_err(|_| SessionError::PeerTimeout(timeout))?
    }

    /// Opens a tunnel to an agent and dials it over the mesh: the node the
    /// coordinator announced for `agent`, never another node that carries one
    /// of its keys.
    pub async fn dial_agent(
        &self,
        agent: Uuid,
        timeout: Duration,
    ) -> Result<MeshConnection, SessionError> {
        self.coordinator.add_tunnel(agent);
        let node = self.wait_for_peer(agent, timeout).await?;
        Ok(self.endpoint.dial_node(&node).await?)
    }

    /// The node key of a known peer.
    pub fn peer_key(&self, peer: Uuid) -> Option<NodeKey> {
        self.peers.borrow().get(&peer).map(|n| n.key)
    }
}

/// Hands `peer`'s node to the endpoint (which replaces the peer's previous
/// node, keys and all) and remembers it; a node the endpoint refuses for a
/// key in use waits in `refused`.
fn upsert(
    endpoint: &MeshEndpoint,
    peers: &watch::Sender<Peers>,
    refused: &mut HashMap<Uuid, Node>,
    peer: Uuid,
    node: Node,
) {
    match endpoint.upsert_peer(&node) {
        Ok(()) => {
            peers.send_modify(|p| {
                p.insert(peer, node);
            });
        }
        Err(mesh::UpsertError::KeyInUse(e)) => {
            tracing::warn!(%peer, error = %e, "refusing a peer node whose key another peer holds");
            refused.insert(peer, node);
        }
        Err(e) => {
            tracing::warn!(%peer, error = %e, "ignoring a peer node with foreign addresses");
        }
    }
}

/// Publishes this node whenever the endpoint yields a new record of it
/// (endpoints, home relay) and applies the coordinator's peer updates.
async fn run(
    endpoint: Arc<MeshEndpoint>,
    coordinator: Coordinator,
    mut node_changes: watch::Receiver<Node>,
    mut updates: PeerUpdates,
    peers: watch::Sender<Peers>,
    refusals: watch::Sender<Option<String>>,
) {
    // Nodes the endpoint refused because another peer holds one of their keys.
    let mut refused: HashMap<Uuid, Node> = HashMap::new();
    loop {
        tokio::select! {
            changed = node_changes.changed() => {
                if changed.is_err() {
                    // The endpoint is gone.
                    return;
                }
                let node = node_changes.borrow_and_update().clone();
                coordinator.update_node(node);
            }
            u = updates.recv() => {
                let Some(u) = u else { return };
                match u {
                    PeerUpdate::Node { peer, node } => {
                        refused.remove(&peer);
                        upsert(&endpoint, &peers, &mut refused, peer, node);
                    }
                    PeerUpdate::Disconnected { peer, reason } => {
                        tracing::debug!(%peer, %reason, "peer disconnected");
                        refused.remove(&peer);
                        peers.send_modify(|p| {
                            if let Some(old) = p.remove(&peer) {
                                endpoint.remove_peer(&old.key);
                            }
                        });
                        // The keys it held may free a node refused for them.
                        for (peer, node) in std::mem::take(&mut refused) {
                            upsert(&endpoint, &peers, &mut refused, peer, node);
                        }
                    }
                    PeerUpdate::Refused { message, .. } => {
                        refusals.send_replace(Some(message));
                    }
                    PeerUpdate::Connected { relay_map, .. } => {
                        // A reconnect, perhaps to another replica: its relay
                        // map (its relay first) replaces the nodes we dial.
                        if let Some(map) = parse_relay_map(relay_map) {
                            endpoint.update_relay_nodes(&region_nodes(&map));
                        }
                        coordinator.update_node(endpoint.node());
                    }
                    PeerUpdate::Lost { .. } | PeerUpdate::CoordinatorUnreachable { .. } => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_node_of_a_region_is_dialable_in_the_maps_order() {
        let map = serde_json::json!({"regions": {"999": {"region_id": 999, "region_code": "coder",
            "region_name": "Embedded relay", "nodes": [
                {"name": "replica-b", "url": "http://10.0.0.2:3000/derp"},
                {"name": "bad", "url": "not a url"},
                {"name": "replica-a", "url": "http://10.0.0.1:3000/derp"},
                {"name": "embedded", "url": "https://coder.example.com/derp", "stun": "127.0.0.1:3478"}]},
            "7": {"region_id": 7, "region_code": "x", "region_name": "x", "nodes": []}}});
        let map = parse_relay_map(map).unwrap();
        let (regions, stun) = relay_regions(&map);
        assert_eq!(regions.len(), 1, "a region without a node is left out");
        let urls: Vec<String> = regions[0].nodes().iter().map(ToString::to_string).collect();
        assert_eq!(
            urls,
            [
                "http://10.0.0.2:3000/derp",
                "http://10.0.0.1:3000/derp",
                "https://coder.example.com/derp"
            ]
        );
        assert_eq!(stun, ["127.0.0.1:3478".parse::<SocketAddr>().unwrap()]);
    }

    #[test]
    fn a_hello_without_a_usable_map_keeps_the_fetched_one() {
        assert!(parse_relay_map(serde_json::Value::Null).is_none());
        assert!(parse_relay_map(serde_json::json!({"regions": {}})).is_none());
        assert!(parse_relay_map(serde_json::json!({"regions": 3})).is_none());
    }

    #[test]
    fn stun_servers_of_both_families_are_kept() {
        let map: RelayMap = serde_json::from_value(serde_json::json!({"regions": {
            "1": {"region_id": 1, "region_code": "a", "region_name": "A", "nodes": [
                {"name": "v4", "url": "http://127.0.0.1:1/derp", "stun": "127.0.0.1:3478"},
                {"name": "v6", "url": "http://127.0.0.1:1/derp", "stun": "[::1]:3479"}
            ]}
        }}))
        .unwrap();
        let (_, stun) = relay_regions(&map);
        let want: Vec<SocketAddr> =
            vec!["127.0.0.1:3478".parse().unwrap(), "[::1]:3479".parse().unwrap()];
        assert_eq!(stun, want);
    }
}
