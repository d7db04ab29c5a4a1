//! The sans-IO coordination core of one replica.
//!
//! It holds this replica's view of the whole mesh: every peer with a row in
//! the store (local ones authoritative, remote ones as last read) and every
//! tunnel. Inputs are `handle_*` calls: a local peer connected, sent a node,
//! opened or closed a tunnel, or went away; a remote peer or tunnel set was
//! (re-)read from the store; a full snapshot after a resync. After each
//! input the core recomputes, for every local peer whose neighbourhood may
//! have changed, what it should know (the nodes of the peers it shares a
//! tunnel with, in either direction) and diffs that against what it was told,
//! queueing [`Output::Send`]s. Local changes also queue [`Output::Store`]
//! operations for the shell to persist and announce. Nothing here touches a
//! socket or the database, so the rules are unit-tested directly.

use std::collections::{BTreeSet, HashMap, VecDeque};

use codersdk::coordination::ServerMessage;
use mesh::Node;
use uuid::Uuid;

use super::keys::{self, KeyHolders, Pinned};
use super::node_id;

/// Identifies one WebSocket connection within a replica.
pub type ConnId = u64;

/// Most tunnels one client may hold open.
pub const MAX_TUNNELS_PER_PEER: usize = 1024;

/// What kind of peer a connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Agent,
    /// A user's client; `owner` is the user.
    Client {
        owner: Uuid,
    },
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Agent => "agent",
            Kind::Client { .. } => "client",
        }
    }
}

/// A peer as the store has it.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub coordinator: Uuid,
    pub node: Option<Node>,
    /// Its replica stopped heartbeating.
    pub lost: bool,
}

/// A write for the shell to persist, then announce to other replicas.
// Node records dominate these; boxing them would cost an allocation per update.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum StoreOp {
    /// Insert or take over the peer's row (status ok, owned by this replica).
    UpsertPeer {
        id: Uuid,
        kind: Kind,
        node: Option<Node>,
    },
    /// Delete the peer's row and its tunnels, if this replica still owns it.
    DeletePeer {
        id: Uuid,
    },
    AddTunnel {
        src: Uuid,
        dst: Uuid,
    },
    RemoveTunnel {
        src: Uuid,
        dst: Uuid,
    },
}

/// Why the core closes a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    /// WebSocket close code: 1008 (policy) or 1000 (normal).
    pub code: u16,
    pub reason: String,
}

impl Close {
    fn policy(reason: impl Into<String>) -> Self {
        Close { code: 1008, reason: reason.into() }
    }
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Send { conn: ConnId, message: ServerMessage },
    Close { conn: ConnId, close: Close },
    Store(StoreOp),
}

/// What a local peer was last told about a neighbour.
// Node records dominate these; boxing them would cost an allocation per update.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
enum Told {
    Node(Node),
    Lost,
}

#[derive(Debug)]
struct Local {
    conn: ConnId,
    kind: Kind,
    /// The keys of this connection's first node; later nodes must carry
    /// the same ([`keys`]).
    pinned: Option<Pinned>,
    /// Sorted by peer, allocated to fit: most peers have one neighbour, and
    /// a `BTreeMap` would allocate a node of 11 `Told`s (~2.7 KiB) for it.
    told: Vec<(Uuid, Told)>,
}

impl Local {
    fn told(&self, peer: &Uuid) -> Option<&Told> {
        let i = self.told.binary_search_by_key(peer, |(p, _)| *p).ok()?;
        self.told.get(i).map(|(_, t)| t)
    }
}

/// One replica's coordination state machine.
#[derive(Debug)]
pub struct Core {
    me: Uuid,
    local: HashMap<Uuid, Local>,
    conns: HashMap<ConnId, Uuid>,
    records: HashMap<Uuid, Record>,
    /// Which record holds each key: an index over `records`, kept by
    /// [`Core::set_record`] and [`Core::remove_record`].
    holders: KeyHolders,
    tunnels: BTreeSet<(Uuid, Uuid)>,
    /// Both directions of every tunnel.
    neighbours: HashMap<Uuid, BTreeSet<Uuid>>,
    out: VecDeque<Output>,
}

impl Core {
    /// A core for the replica with coordinator id `me`.
    pub fn new(me: Uuid) -> Self {
        Core {
            me,
            local: HashMap::new(),
            conns: HashMap::new(),
            records: HashMap::new(),
            holders: KeyHolders::default(),
            tunnels: BTreeSet::new(),
            neighbours: HashMap::new(),
            out: VecDeque::new(),
        }
    }

    /// The next thing to do.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// A peer connected to this replica. A previous connection of the same
    /// peer here is closed: the newest wins.
    pub fn handle_connect(&mut self, conn: ConnId, peer: Uuid, kind: Kind) {
        if let Some(old) = self.local.remove(&peer) {
            self.conns.remove(&old.conn);
            self.close(
                old.conn,
                Close { code: 1000, reason: "replaced by a newer connection".into() },
            );
        }
        self.conns.insert(conn, peer);
        self.local.insert(peer, Local { conn, kind, pinned: None, told: Vec::new() });
        let node = self.records.get(&peer).and_then(|r| r.node.clone());
        self.set_record(peer, Record { coordinator: self.me, node: node.clone(), lost: false });
        self.out.push_back(Output::Store(StoreOp::UpsertPeer { id: peer, kind, node }));
        // Tunnels it had (a resumed client) stay; neighbours learn it is back.
        self.reconcile_around(peer);
    }

    /// A local peer published its node.
    pub fn handle_node(&mut self, conn: ConnId, node: Node) {
        let Some((peer, kind)) = self.peer_of(conn) else { return };
        let assigned = node_id(peer);
        if node.id != assigned {
            let reason = format!("node id {} is not the assigned {}", node.id, assigned);
            return self.refuse(conn, peer, reason);
        }
        if let Err(e) = node.check_addresses() {
            return self.refuse(conn, peer, e.to_string());
        }
        let pinned = Pinned::of(&node);
        match self.local.get(&peer).and_then(|l| l.pinned) {
            Some(before) if before != pinned => {
                return self.refuse(conn, peer, keys::changed(before, pinned));
            }
            _ => {}
        }
        if let Some(key) = self.holders.held_by_another(pinned, peer) {
            return self.refuse(conn, peer, keys::in_use(key));
        }
        if let Some(local) = self.local.get_mut(&peer) {
            local.pinned = Some(pinned);
        }
        let record = Record { coordinator: self.me, node: Some(node.clone()), lost: false };
        if self.records.get(&peer) == Some(&record) {
            return;
        }
        self.set_record(peer, record);
        self.out.push_back(Output::Store(StoreOp::UpsertPeer { id: peer, kind, node: Some(node) }));
        self.reconcile_around(peer);
    }

    /// The store refused `peer`'s node (with these keys): another replica's
    /// peer holds its `kind` key. Refuses the peer if it is still local with
    /// those keys.
    pub(crate) fn handle_key_conflict(
        &mut self,
        peer: Uuid,
        node_keys: Pinned,
        kind: mesh::KeyKind,
    ) {
        let Some(local) = self.local.get(&peer) else { return };
        if local.pinned != Some(node_keys) {
            return;
        }
        let conn = local.conn;
        self.refuse(conn, peer, keys::in_use(node_keys.key(kind)));
    }

    /// A local client asked for a tunnel to `dst`, which the shell has
    /// already authorized as an agent the client may reach.
    pub fn handle_add_tunnel(&mut self, conn: ConnId, dst: Uuid) {
        let Some((peer, kind)) = self.peer_of(conn) else { return };
        if kind == Kind::Agent {
            return self.refuse(conn, peer, "agents may not open tunnels".into());
        }
        if dst == peer || self.tunnels.contains(&(peer, dst)) {
            return;
        }
        if self.neighbours.get(&peer).map_or(0, BTreeSet::len) >= MAX_TUNNELS_PER_PEER {
            let message = format!("at most {MAX_TUNNELS_PER_PEER} tunnels per connection");
            self.send(conn, ServerMessage::Error { peer: Some(dst), message });
            return;
        }
        self.insert_tunnel(peer, dst);
        self.out.push_back(Output::Store(StoreOp::AddTunnel { src: peer, dst }));
        self.reconcile(&[peer, dst]);
    }

    /// A local client closed a tunnel (or the shell revoked it).
    pub fn handle_remove_tunnel(&mut self, conn: ConnId, dst: Uuid) {
        let Some((peer, _)) = self.peer_of(conn) else { return };
        if self.remove_tunnel(peer, dst) {
            self.out.push_back(Output::Store(StoreOp::RemoveTunnel { src: peer, dst }));
            self.reconcile(&[peer, dst]);
        }
    }

    /// A local connection ended (closed, failed, or revoked).
    pub fn handle_disconnect(&mut self, conn: ConnId) {
        let Some(peer) = self.conns.remove(&conn) else { return };
        self.local.remove(&peer);
        let around = self.drop_peer(peer);
        self.out.push_back(Output::Store(StoreOp::DeletePeer { id: peer }));
        self.reconcile(&around);
    }

    /// A remote peer's row as (re-)read from the store, with the tunnels it
    /// opened; `None` when it has no row.
    pub fn handle_remote_peer(&mut self, peer: Uuid, record: Option<Record>, tunnels: Vec<Uuid>) {
        let record = record.filter(|r| !self.is_stale_own(peer, r));
        if let Some(local) = self.local.get(&peer) {
            match &record {
                // Our own write echoed back, or a stale read: we know better.
                Some(r) if r.coordinator == self.me => return,
                None => return,
                Some(_) => {
                    // The peer connected to another replica: that one owns it now.
                    let conn = local.conn;
                    self.local.remove(&peer);
                    self.conns.remove(&conn);
                    let close = Close { code: 1000, reason: "moved to another replica".into() };
                    self.close(conn, close);
                }
            }
        }
        let mut around = self.drop_peer(peer);
        if let Some(record) = record {
            self.set_record(peer, record);
            for dst in tunnels {
                self.insert_tunnel(peer, dst);
                around.push(dst);
            }
        }
        around.push(peer);
        self.reconcile(&around);
    }

    /// Every row in the store, after a resync: remote state is replaced,
    /// local peers stay as they are.
    pub fn handle_snapshot(&mut self, records: Vec<(Uuid, Record)>, tunnels: Vec<(Uuid, Uuid)>) {
        // Local peers another replica took over are theirs now.
        let moved: Vec<Uuid> = records
            .iter()
            .filter(|(id, r)| r.coordinator != self.me && self.local.contains_key(id))
            .map(|(id, _)| *id)
            .collect();
        for id in moved {
            if let Some(local) = self.local.remove(&id) {
                self.conns.remove(&local.conn);
                let close = Close { code: 1000, reason: "moved to another replica".into() };
                self.close(local.conn, close);
            }
        }
        let local_tunnels: Vec<(Uuid, Uuid)> =
            self.tunnels.iter().filter(|(src, _)| self.local.contains_key(src)).copied().collect();
        self.records.retain(|id, _| self.local.contains_key(id));
        self.holders.clear();
        for (id, node) in self.records.iter().filter_map(|(id, r)| Some((*id, r.node.as_ref()?))) {
            self.holders.add(id, node);
        }
        self.tunnels.clear();
        self.neighbours.clear();
        for (id, record) in records {
            if !self.local.contains_key(&id) && !self.is_stale_own(id, &record) {
                self.set_record(id, record);
            }
        }
        for (src, dst) in tunnels {
            // Tunnels of a stale row of ours go with it.
            if !self.local.contains_key(&src) && self.records.contains_key(&src) {
                self.insert_tunnel(src, dst);
            }
        }
        for (src, dst) in local_tunnels {
            self.insert_tunnel(src, dst);
        }
        let all: Vec<Uuid> = self.local.keys().copied().collect();
        self.reconcile(&all);
    }

    /// Every local peer with its kind, node and tunnels: what the shell
    /// writes back after the store may have lost it.
    pub fn local_state(&self) -> Vec<(Uuid, Kind, Option<Node>, Vec<Uuid>)> {
        self.local
            .iter()
            .map(|(id, l)| {
                let node = self.records.get(id).and_then(|r| r.node.clone());
                let tunnels = self.tunnels_from(*id);
                (*id, l.kind, node, tunnels)
            })
            .collect()
    }

    /// The local peer behind a connection.
    pub fn peer(&self, conn: ConnId) -> Option<Uuid> {
        self.conns.get(&conn).copied()
    }

    /// Tunnels `src` opened.
    pub fn tunnels_from(&self, src: Uuid) -> Vec<Uuid> {
        self.tunnels.range((src, Uuid::nil())..=(src, Uuid::max())).map(|(_, d)| *d).collect()
    }

    /// A row this replica wrote for a peer that is no longer connected here:
    /// its delete was lost (the database was away when the peer left). Only
    /// this replica writes rows with its id, so the row is dead; the shell
    /// prunes it from the store at the next resync.
    fn is_stale_own(&self, peer: Uuid, record: &Record) -> bool {
        record.coordinator == self.me && !self.local.contains_key(&peer)
    }

    fn peer_of(&self, conn: ConnId) -> Option<(Uuid, Kind)> {
        let peer = self.conns.get(&conn)?;
        Some((*peer, self.local.get(peer)?.kind))
    }

    fn refuse(&mut self, conn: ConnId, peer: Uuid, reason: String) {
        self.close(conn, Close::policy(reason));
        self.conns.remove(&conn);
        self.local.remove(&peer);
        let around = self.drop_peer(peer);
        self.out.push_back(Output::Store(StoreOp::DeletePeer { id: peer }));
        self.reconcile(&around);
    }

    /// Forgets a peer's record and the tunnels it opened; returns who may
    /// need telling.
    fn drop_peer(&mut self, peer: Uuid) -> Vec<Uuid> {
        let mut around: Vec<Uuid> =
            self.neighbours.get(&peer).map(|n| n.iter().copied().collect()).unwrap_or_default();
        self.remove_record(peer);
        for dst in self.tunnels_from(peer) {
            self.remove_tunnel(peer, dst);
        }
        around.push(peer);
        around
    }

    /// Stores `peer`'s record, keeping the key index in step.
    fn set_record(&mut self, peer: Uuid, record: Record) {
        if let Some(old) = self.records.insert(peer, record).and_then(|r| r.node) {
            self.holders.remove(peer, &old);
        }
        if let Some(node) = self.records.get(&peer).and_then(|r| r.node.as_ref()) {
            self.holders.add(peer, node);
        }
    }

    fn remove_record(&mut self, peer: Uuid) {
        if let Some(old) = self.records.remove(&peer).and_then(|r| r.node) {
            self.holders.remove(peer, &old);
        }
    }

    fn insert_tunnel(&mut self, src: Uuid, dst: Uuid) {
        if self.tunnels.insert((src, dst)) {
            self.neighbours.entry(src).or_default().insert(dst);
            self.neighbours.entry(dst).or_default().insert(src);
        }
    }

    fn remove_tunnel(&mut self, src: Uuid, dst: Uuid) -> bool {
        if !self.tunnels.remove(&(src, dst)) {
            return false;
        }
        // The reverse tunnel (never opened by agents) may still link them.
        if !self.tunnels.contains(&(dst, src)) {
            for (a, b) in [(src, dst), (dst, src)] {
                if let Some(n) = self.neighbours.get_mut(&a) {
                    n.remove(&b);
                    if n.is_empty() {
                        self.neighbours.remove(&a);
                    }
                }
            }
        }
        true
    }

    fn reconcile_around(&mut self, peer: Uuid) {
        let mut ids: Vec<Uuid> =
            self.neighbours.get(&peer).map(|n| n.iter().copied().collect()).unwrap_or_default();
        ids.push(peer);
        self.reconcile(&ids);
    }

    /// Brings what each listed local peer was told in line with the view.
    fn reconcile(&mut self, ids: &[Uuid]) {
        for id in ids {
            let Some(local) = self.local.get(id) else { continue };
            let conn = local.conn;
            let neighbours = self.neighbours.get(id);
            // In the neighbours' (sorted) order.
            let mut want: Vec<(Uuid, Told)> =
                Vec::with_capacity(neighbours.map_or(0, BTreeSet::len));
            for n in neighbours.into_iter().flatten() {
                let Some(record) = self.records.get(n) else { continue };
                let Some(node) = &record.node else { continue };
                want.push((*n, if record.lost { Told::Lost } else { Told::Node(node.clone()) }));
            }
            want.shrink_to_fit();
            let wanted = |p: &Uuid| want.binary_search_by_key(p, |(k, _)| *k).is_ok();
            let mut messages = Vec::new();
            for (peer, _) in local.told.iter().filter(|(p, _)| !wanted(p)) {
                let reason = "peer disconnected or tunnel closed".to_owned();
                messages.push(ServerMessage::Disconnected { peer: *peer, reason });
            }
            for (peer, wanted) in &want {
                let before = local.told(peer);
                if before == Some(wanted) {
                    continue;
                }
                match wanted {
                    Told::Node(node) => {
                        messages.push(ServerMessage::Node { peer: *peer, node: node.clone() });
                    }
                    Told::Lost => {
                        if before.is_none() {
                            // Never told: its last node may still be reachable.
                            if let Some(node) = self.records.get(peer).and_then(|r| r.node.clone())
                            {
                                messages.push(ServerMessage::Node { peer: *peer, node });
                            }
                        }
                        messages.push(ServerMessage::Lost { peer: *peer });
                    }
                }
            }
            if let Some(local) = self.local.get_mut(id) {
                local.told = want;
            }
            for message in messages {
                self.send(conn, message);
            }
        }
    }

    fn send(&mut self, conn: ConnId, message: ServerMessage) {
        self.out.push_back(Output::Send { conn, message });
    }

    fn close(&mut self, conn: ConnId, close: Close) {
        self.out.push_back(Output::Close { conn, close });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;

    use mesh::{mesh_addresses, DiscoSecret, NodeSecret, QuicSecret, PROTOCOL_VERSION};
    use rand::SeedableRng;

    use super::*;

    fn node_for(peer: Uuid) -> Node {
        let mut rng = rand::rngs::StdRng::seed_from_u64(peer.as_u128() as u64);
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

    const ME: Uuid = Uuid::from_u128(0xc0);
    const OTHER: Uuid = Uuid::from_u128(0xc1);
    const AGENT: Uuid = Uuid::from_u128(0xa1);
    const CLIENT: Uuid = Uuid::from_u128(0xb1);
    const USER: Uuid = Uuid::from_u128(0x11);

    fn drain(core: &mut Core) -> Vec<Output> {
        std::iter::from_fn(|| core.poll_output()).collect()
    }

    fn sends(outs: &[Output], to: ConnId) -> Vec<ServerMessage> {
        outs.iter()
            .filter_map(|o| match o {
                Output::Send { conn, message } if *conn == to => Some(message.clone()),
                _ => None,
            })
            .collect()
    }

    fn closes(outs: &[Output], to: ConnId) -> Vec<Close> {
        outs.iter()
            .filter_map(|o| match o {
                Output::Close { conn, close } if *conn == to => Some(close.clone()),
                _ => None,
            })
            .collect()
    }

    /// Agent on conn 1, client on conn 2, both with nodes; client tunnels to agent.
    fn connected_pair() -> Core {
        let mut core = Core::new(ME);
        core.handle_connect(1, AGENT, Kind::Agent);
        core.handle_node(1, node_for(AGENT));
        core.handle_connect(2, CLIENT, Kind::Client { owner: USER });
        core.handle_node(2, node_for(CLIENT));
        core.handle_add_tunnel(2, AGENT);
        core
    }

    #[test]
    fn tunnel_shares_nodes_both_ways() {
        let mut core = Core::new(ME);
        core.handle_connect(1, AGENT, Kind::Agent);
        core.handle_node(1, node_for(AGENT));
        core.handle_connect(2, CLIENT, Kind::Client { owner: USER });
        core.handle_node(2, node_for(CLIENT));
        let outs = drain(&mut core);
        assert!(sends(&outs, 1).is_empty() && sends(&outs, 2).is_empty(), "no tunnel, no news");
        core.handle_add_tunnel(2, AGENT);
        let outs = drain(&mut core);
        assert_eq!(
            sends(&outs, 2),
            vec![ServerMessage::Node { peer: AGENT, node: node_for(AGENT) }]
        );
        assert_eq!(
            sends(&outs, 1),
            vec![ServerMessage::Node { peer: CLIENT, node: node_for(CLIENT) }]
        );
        assert!(outs.contains(&Output::Store(StoreOp::AddTunnel { src: CLIENT, dst: AGENT })));
        // Re-publishing the same node says nothing new.
        core.handle_node(1, node_for(AGENT));
        assert!(drain(&mut core).is_empty());
    }

    #[test]
    fn tunnel_before_agent_connects() {
        let mut core = Core::new(ME);
        core.handle_connect(2, CLIENT, Kind::Client { owner: USER });
        core.handle_add_tunnel(2, AGENT);
        core.handle_node(2, node_for(CLIENT));
        drain(&mut core);
        core.handle_connect(1, AGENT, Kind::Agent);
        let outs = drain(&mut core);
        assert_eq!(
            sends(&outs, 1),
            vec![ServerMessage::Node { peer: CLIENT, node: node_for(CLIENT) }]
        );
        core.handle_node(1, node_for(AGENT));
        let outs = drain(&mut core);
        assert_eq!(
            sends(&outs, 2),
            vec![ServerMessage::Node { peer: AGENT, node: node_for(AGENT) }]
        );
    }

    #[test]
    fn agents_may_not_open_tunnels() {
        let mut core = connected_pair();
        drain(&mut core);
        core.handle_add_tunnel(1, CLIENT);
        let outs = drain(&mut core);
        assert_eq!(closes(&outs, 1)[0].code, 1008);
        assert!(outs.contains(&Output::Store(StoreOp::DeletePeer { id: AGENT })));
        assert!(matches!(&sends(&outs, 2)[..], [ServerMessage::Disconnected { peer: AGENT, .. }]));
    }

    #[test]
    fn foreign_node_id_or_addresses_are_refused() {
        let mut core = Core::new(ME);
        core.handle_connect(1, AGENT, Kind::Agent);
        core.handle_node(1, node_for(CLIENT));
        let outs = drain(&mut core);
        assert!(closes(&outs, 1)[0].reason.contains("assigned"));

        core.handle_connect(3, AGENT, Kind::Agent);
        let mut node = node_for(AGENT);
        node.addresses = mesh_addresses(node_id(CLIENT));
        core.handle_node(3, node);
        let outs = drain(&mut core);
        assert_eq!(closes(&outs, 3)[0].code, 1008);
        assert!(core.local_state().is_empty());
    }

    #[test]
    fn closing_a_tunnel_or_disconnecting_tells_the_other_side() {
        let mut core = connected_pair();
        drain(&mut core);
        core.handle_remove_tunnel(2, AGENT);
        let outs = drain(&mut core);
        assert!(matches!(&sends(&outs, 1)[..], [ServerMessage::Disconnected { peer: CLIENT, .. }]));
        assert!(matches!(&sends(&outs, 2)[..], [ServerMessage::Disconnected { peer: AGENT, .. }]));

        core.handle_add_tunnel(2, AGENT);
        drain(&mut core);
        core.handle_disconnect(2);
        let outs = drain(&mut core);
        assert!(matches!(&sends(&outs, 1)[..], [ServerMessage::Disconnected { peer: CLIENT, .. }]));
        assert!(outs.contains(&Output::Store(StoreOp::DeletePeer { id: CLIENT })));
        assert!(core.tunnels_from(CLIENT).is_empty());
    }

    #[test]
    fn remote_agent_node_lost_and_gone() {
        let mut core = Core::new(ME);
        core.handle_connect(2, CLIENT, Kind::Client { owner: USER });
        core.handle_node(2, node_for(CLIENT));
        core.handle_add_tunnel(2, AGENT);
        drain(&mut core);
        let record = Record { coordinator: OTHER, node: Some(node_for(AGENT)), lost: false };
        core.handle_remote_peer(AGENT, Some(record.clone()), vec![]);
        let outs = drain(&mut core);
        assert_eq!(
            sends(&outs, 2),
            vec![ServerMessage::Node { peer: AGENT, node: node_for(AGENT) }]
        );
        assert!(
            !outs.iter().any(|o| matches!(o, Output::Store(_))),
            "remote reads are not written"
        );

        core.handle_remote_peer(AGENT, Some(Record { lost: true, ..record.clone() }), vec![]);
        assert_eq!(sends(&drain(&mut core), 2), vec![ServerMessage::Lost { peer: AGENT }]);
        // Back (reconnected elsewhere): the node again.
        core.handle_remote_peer(AGENT, Some(record), vec![]);
        assert_eq!(sends(&drain(&mut core), 2).len(), 1);
        core.handle_remote_peer(AGENT, None, vec![]);
        let outs = drain(&mut core);
        assert!(matches!(&sends(&outs, 2)[..], [ServerMessage::Disconnected { peer: AGENT, .. }]));
    }

    #[test]
    fn remote_client_tunnel_reaches_local_agent() {
        let mut core = Core::new(ME);
        core.handle_connect(1, AGENT, Kind::Agent);
        core.handle_node(1, node_for(AGENT));
        drain(&mut core);
        let record = Record { coordinator: OTHER, node: Some(node_for(CLIENT)), lost: false };
        core.handle_remote_peer(CLIENT, Some(record.clone()), vec![AGENT]);
        let outs = drain(&mut core);
        assert_eq!(
            sends(&outs, 1),
            vec![ServerMessage::Node { peer: CLIENT, node: node_for(CLIENT) }]
        );
        // The remote client closed its tunnel.
        core.handle_remote_peer(CLIENT, Some(record), vec![]);
        let outs = drain(&mut core);
        assert!(matches!(&sends(&outs, 1)[..], [ServerMessage::Disconnected { peer: CLIENT, .. }]));
    }

    #[test]
    fn snapshot_drops_stale_remote_state() {
        let mut core = Core::new(ME);
        core.handle_connect(1, AGENT, Kind::Agent);
        core.handle_node(1, node_for(AGENT));
        let record = Record { coordinator: OTHER, node: Some(node_for(CLIENT)), lost: false };
        core.handle_remote_peer(CLIENT, Some(record), vec![AGENT]);
        drain(&mut core);
        // After a resync the remote client is gone; our agent stays.
        let mine = Record { coordinator: ME, node: Some(node_for(AGENT)), lost: false };
        core.handle_snapshot(vec![(AGENT, mine)], vec![]);
        let outs = drain(&mut core);
        assert!(matches!(&sends(&outs, 1)[..], [ServerMessage::Disconnected { peer: CLIENT, .. }]));
        assert_eq!(core.local_state().len(), 1);
    }

    #[test]
    fn rows_of_ours_without_a_connection_are_not_announced() {
        // The agent is local; a client of ours left while the database was
        // away, so its delete was lost and the store still has it.
        let mut core = Core::new(ME);
        core.handle_connect(1, AGENT, Kind::Agent);
        core.handle_node(1, node_for(AGENT));
        drain(&mut core);
        let stale = Record { coordinator: ME, node: Some(node_for(CLIENT)), lost: false };
        let mine = Record { coordinator: ME, node: Some(node_for(AGENT)), lost: false };
        core.handle_snapshot(vec![(AGENT, mine), (CLIENT, stale.clone())], vec![(CLIENT, AGENT)]);
        assert!(sends(&drain(&mut core), 1).is_empty(), "a dead peer announced as alive");
        core.handle_remote_peer(CLIENT, Some(stale), vec![AGENT]);
        assert!(sends(&drain(&mut core), 1).is_empty(), "a dead peer announced as alive");
        // The same row written by another replica is a live peer.
        let theirs = Record { coordinator: OTHER, node: Some(node_for(CLIENT)), lost: false };
        core.handle_remote_peer(CLIENT, Some(theirs), vec![AGENT]);
        assert_eq!(
            sends(&drain(&mut core), 1),
            vec![ServerMessage::Node { peer: CLIENT, node: node_for(CLIENT) }]
        );
    }

    #[test]
    fn newest_connection_wins() {
        let mut core = connected_pair();
        drain(&mut core);
        core.handle_connect(3, AGENT, Kind::Agent);
        let outs = drain(&mut core);
        assert_eq!(closes(&outs, 1)[0].code, 1000);
        // The replaced connection's close is not a disconnect of the peer.
        core.handle_disconnect(1);
        assert!(drain(&mut core).is_empty());
        assert_eq!(core.peer(3), Some(AGENT));
        // The agent's new connection learns the client again.
        core.handle_node(3, node_for(AGENT));
        let outs = drain(&mut core);
        assert!(sends(&outs, 2).is_empty(), "same node, nothing new for the client");
    }

    #[test]
    fn peer_moving_to_another_replica_closes_the_local_connection() {
        let mut core = connected_pair();
        drain(&mut core);
        let record = Record { coordinator: OTHER, node: Some(node_for(AGENT)), lost: false };
        core.handle_remote_peer(AGENT, Some(record), vec![]);
        let outs = drain(&mut core);
        assert_eq!(closes(&outs, 1).len(), 1);
        assert!(sends(&outs, 2).is_empty(), "the client keeps the agent's node");
        assert!(!outs.contains(&Output::Store(StoreOp::DeletePeer { id: AGENT })));
    }
}
