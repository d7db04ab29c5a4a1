//! Path selection: which way data to each peer goes, relay or direct UDP.
//!
//! [`PathSelector`] is a sans-IO state machine. It owns no socket and reads no
//! clock: the I/O shell feeds it disco datagrams ([`PathSelector::handle_disco`]),
//! activity ([`PathSelector::handle_activity`]) and timer expiry
//! ([`PathSelector::handle_timeout`]), and drains what it wants sent
//! ([`PathSelector::poll_transmit`]), what changed ([`PathSelector::poll_event`])
//! and when to wake it next ([`PathSelector::poll_timeout`]).
//!
//! Per peer, while a session is active (data went either way in the last
//! [`PathConfig::session_active_timeout`]):
//! 1. data goes through the peer's relay at once ([`Destination::Relay`]);
//! 2. every candidate endpoint gets a ping, and a call-me-maybe listing our own
//!    endpoints goes through the relay so the peer pings us too (opening its NAT);
//! 3. the first pong proves a direct path: data switches to it
//!    ([`PathEvent::RelayToDirect`]); a later pong switches to another path only if
//!    it is clearly better ([`PathConfig::switch_margin`], preferring LAN and IPv6);
//! 4. the direct path gets a heartbeat ping every [`PathConfig::heartbeat_interval`],
//!    and all candidates are re-probed every [`PathConfig::probe_interval`];
//! 5. without a pong for [`PathConfig::trust_timeout`], data falls back to the
//!    relay ([`PathEvent::DirectToRelay`]) and probing goes on, so a path that
//!    comes back is taken again.
//!
//! The coordinator tells both sides about each other at about the same time, so
//! the first pings often arrive a few milliseconds before their sender is known.
//! Authentic disco messages from unknown senders are kept for
//! [`EARLY_DISCO_TTL`] and replayed when the coordinator announces the sender,
//! instead of waiting a whole probe interval for the next ping.
//!
//! Between a hard NAT and an easy one, where none of this can work, the two
//! sides probe for a path by the birthday paradox ([`birthday`]) from
//! [`PathConfig::birthday_delay`] into the discovery on.

mod birthday;
mod endpoints;
mod peer;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

use crate::disco::{Message, Ping, TxId};
use crate::key::{DiscoKey, DiscoSecret, NodeKey};
use crate::node::Node;
use crate::wire::{self, OpenError};

pub use self::birthday::SocketCommand;
use self::peer::Peer;

/// At most this many proven addresses per peer attribute incoming datagrams.
const MAX_PROVEN: usize = 8;

/// At most this many of our own endpoints learned from pongs are kept.
const MAX_LEARNED_LOCAL: usize = 4;

/// Disco messages from not-yet-announced senders are kept this long...
pub const EARLY_DISCO_TTL: Duration = Duration::from_secs(3);
/// ...and at most this many of them (the oldest go first).
const MAX_EARLY_DISCO: usize = 64;

/// A disco datagram that arrived before the coordinator announced its sender.
struct EarlyDisco {
    at: Instant,
    sender: DiscoKey,
    src: Source,
    datagram: Vec<u8>,
}

/// Timers and thresholds of path selection.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PathConfig {
    /// Ping the direct path this often to keep it trusted and the NAT open.
    pub heartbeat_interval: Duration,
    /// Ping every candidate (and send call-me-maybe while on the relay) this often.
    pub probe_interval: Duration,
    /// A direct path without a pong for this long is dropped for the relay.
    pub trust_timeout: Duration,
    /// A ping unanswered for this long is forgotten.
    pub ping_timeout: Duration,
    /// A peer is probed only this long after the last data to or from it.
    pub session_active_timeout: Duration,
    /// A new path must be this much faster (fraction of the current RTT) to win.
    pub switch_margin: f64,
    /// At most this many candidate endpoints per peer.
    pub max_endpoints: usize,
    /// Seed for transaction ids and nonces; `None` seeds from the OS.
    pub rng_seed: Option<u64>,
    /// Never use a direct path: probe no peer endpoint and ignore peers'
    /// pings, pongs and call-me-maybes, so neither side proves one.
    pub relay_only: bool,
    /// How long an opening probe waits for a port-unreachable before its
    /// endpoint counts as not answering and is pinged
    /// ([`PathSelector::poll_opening_probe`]); zero pings every endpoint at
    /// once, as if no router answered. A router farther away than this (in
    /// round trip) is taken for a silent one.
    pub opening_wait: Duration,
    /// Extra sockets the hard side of a hard × easy pair opens ([`birthday`]);
    /// zero turns birthday probing off.
    pub birthday_sockets: usize,
    /// The easy side pings this many random ports of the hard side...
    pub birthday_burst: usize,
    /// ...this often.
    pub birthday_tick: Duration,
    /// Birthday probing starts this long into a discovery without a direct
    /// path (plain punching finds most paths within a few round trips)...
    pub birthday_delay: Duration,
    /// ...and gives up this long after it started.
    pub birthday_deadline: Duration,
    /// The hard side holds its sockets' pings this long when the easy
    /// side's router answers unsolicited UDP ([`birthday`]).
    pub birthday_hold: Duration,
}

impl Default for PathConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(2),
            probe_interval: Duration::from_secs(5),
            trust_timeout: Duration::from_millis(6500),
            ping_timeout: Duration::from_secs(5),
            session_active_timeout: Duration::from_secs(45),
            switch_margin: 0.15,
            max_endpoints: 32,
            rng_seed: None,
            relay_only: false,
            opening_wait: Duration::from_millis(200),
            birthday_sockets: 256,
            birthday_burst: 20,
            birthday_tick: Duration::from_millis(20),
            birthday_delay: Duration::from_millis(500),
            birthday_deadline: Duration::from_secs(10),
            birthday_hold: Duration::from_millis(1500),
        }
    }
}

/// Where a datagram goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Destination {
    /// Straight to this UDP address.
    Direct(SocketAddr),
    /// Through the relay, to this node.
    Relay(NodeKey),
}

/// How the first direct path to a peer was found (`coder ping` says).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DirectMechanism {
    /// An endpoint the peer announced, on the Internet: its STUN-mapped (or
    /// public interface) address.
    Stun,
    /// An address the peer's ping came from, which it never announced (a
    /// NAT mapping no STUN server saw).
    PeerReflexive,
    /// A private, link-local or loopback address: the same network.
    Lan,
    /// Birthday probing between a hard NAT and an easy one ([`birthday`]).
    Birthday,
    /// A port mapping a gateway granted (PCP, NAT-PMP, UPnP): the peer's
    /// ([`Node::port_mapped`]) that we pinged, or ours that the peer pinged
    /// (its pong saw us at our mapped address).
    PortMapping,
}

impl std::fmt::Display for DirectMechanism {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DirectMechanism::Stun => "STUN",
            DirectMechanism::PeerReflexive => "peer-reflexive",
            DirectMechanism::Lan => "LAN",
            DirectMechanism::Birthday => "birthday",
            DirectMechanism::PortMapping => "port mapping",
        })
    }
}

/// Where a datagram came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// A UDP address.
    Direct(SocketAddr),
    /// The relay, from this node.
    Relay(NodeKey),
}

/// A disco datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to.
    pub dst: Destination,
    /// The sealed datagram.
    pub payload: Vec<u8>,
    /// The extra socket to send it from ([`SocketCommand::Open`]); `None`
    /// for the node's own socket.
    pub via: Option<u32>,
}

/// A change the I/O shell or the user may care about.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PathEvent {
    /// Data to `peer` now goes straight to `addr`.
    RelayToDirect {
        /// The peer.
        peer: NodeKey,
        /// Its proven address.
        addr: SocketAddr,
        /// The round trip the proving pong measured.
        rtt: Duration,
    },
    /// Data to `peer` moved from one direct address to a better one.
    DirectChanged {
        /// The peer.
        peer: NodeKey,
        /// The old address.
        from: SocketAddr,
        /// The new address.
        to: SocketAddr,
        /// The new address's round trip.
        rtt: Duration,
    },
    /// The direct path to `peer` stopped answering; data goes through the relay.
    DirectToRelay {
        /// The peer.
        peer: NodeKey,
    },
    /// `peer`'s candidate endpoints changed (call-me-maybe or a ping from a new address).
    PeerEndpointsChanged {
        /// The peer.
        peer: NodeKey,
        /// The full new candidate list.
        endpoints: Vec<SocketAddr>,
    },
    /// A pong or a late STUN answer revealed an address of ours we did not
    /// know: republish.
    LocalEndpointsChanged {
        /// Our full endpoint list.
        endpoints: Vec<SocketAddr>,
    },
}

/// Why a disco datagram was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoError {
    /// Unreadable or not for us.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// Sealed by a disco key no known peer has.
    #[error("disco message from unknown {0}")]
    UnknownSender(DiscoKey),
    /// A ping naming a node key other than the one the coordinator gave.
    #[error("ping claims {claimed} but the disco key belongs to {expected}")]
    NodeKeyMismatch {
        /// What the ping said.
        claimed: NodeKey,
        /// The peer that owns the disco key.
        expected: NodeKey,
    },
}

/// What peers' state machines send through: seals messages and queues outputs.
pub(crate) struct Outbox {
    disco: DiscoSecret,
    node_key: NodeKey,
    rng: StdRng,
    /// Our endpoints: the configured ones, then the few most recent pongs revealed.
    local_endpoints: Vec<SocketAddr>,
    configured_local: Vec<SocketAddr>,
    learned_local: VecDeque<SocketAddr>,
    /// Those of our endpoints that are port mappings ([`PathSelector::add_port_mapped_endpoint`]).
    mapped_local: Vec<SocketAddr>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<PathEvent>,
    /// Endpoints to send an opening probe to.
    openings: VecDeque<SocketAddr>,
    /// Extra sockets to open or close ([`birthday`]).
    sockets: VecDeque<SocketCommand>,
    /// The id of the next extra socket.
    next_socket: u32,
    /// Sealers by recipient, so a burst of probes does one key exchange.
    sealers: HashMap<DiscoKey, wire::Sealer>,
}

/// At most this many sealers are kept; then they are all dropped.
const MAX_SEALERS: usize = 1024;

impl Outbox {
    fn send(&mut self, to: DiscoKey, dst: Destination, msg: &Message) {
        self.send_via(to, dst, None, msg);
    }

    fn send_via(&mut self, to: DiscoKey, dst: Destination, via: Option<u32>, msg: &Message) {
        let mut nonce = [0u8; 24];
        self.rng.fill_bytes(&mut nonce);
        if self.sealers.len() >= MAX_SEALERS && !self.sealers.contains_key(&to) {
            self.sealers.clear();
        }
        let disco = &self.disco;
        let sealer = self.sealers.entry(to).or_insert_with(|| wire::Sealer::new(disco, to));
        let payload = sealer.seal(nonce, msg);
        self.transmits.push_back(Transmit { dst, payload, via });
    }

    fn ping_via(&mut self, to: DiscoKey, addr: SocketAddr, via: Option<u32>) -> TxId {
        let mut tx_id = [0u8; 12];
        self.rng.fill_bytes(&mut tx_id);
        let tx_id = TxId(tx_id);
        let ping = Ping { tx_id, node_key: self.node_key };
        self.send_via(to, Destination::Direct(addr), via, &Message::Ping(ping));
        tx_id
    }
}

/// Path selection for all peers of one node. See the module docs.
pub struct PathSelector {
    config: PathConfig,
    out: Outbox,
    peers: HashMap<NodeKey, Peer>,
    by_disco: HashMap<DiscoKey, NodeKey>,
    /// Direct addresses by the peer that proved them: a pong from that
    /// address, sealed with that peer's disco key, answered our ping to it.
    /// Incoming datagrams are attributed by this index only, so an address a
    /// peer merely lists (coordinator record, call-me-maybe) or pings from
    /// attracts nothing. Each peer keeps its latest [`MAX_PROVEN`] entries
    /// ([`Peer::proven`]); the latest proof of an address wins.
    by_addr: HashMap<SocketAddr, NodeKey>,
    early: VecDeque<EarlyDisco>,
}

impl PathSelector {
    /// A selector for the node with these keys.
    pub fn new(config: PathConfig, node_key: NodeKey, disco: DiscoSecret) -> Self {
        let rng = match config.rng_seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_entropy(),
        };
        Self {
            config,
            out: Outbox {
                disco,
                node_key,
                rng,
                local_endpoints: Vec::new(),
                configured_local: Vec::new(),
                learned_local: VecDeque::new(),
                mapped_local: Vec::new(),
                transmits: VecDeque::new(),
                events: VecDeque::new(),
                openings: VecDeque::new(),
                sockets: VecDeque::new(),
                next_socket: 0,
                sealers: HashMap::new(),
            },
            peers: HashMap::new(),
            by_disco: HashMap::new(),
            by_addr: HashMap::new(),
            early: VecDeque::new(),
        }
    }

    /// Sets our own endpoint candidates (interfaces, STUN results), sent in call-me-maybe.
    pub fn set_local_endpoints(&mut self, endpoints: Vec<SocketAddr>) {
        self.out.configured_local = endpoints;
        self.out.learned_local.retain(|a| !self.out.configured_local.contains(a));
        self.refresh_local_endpoints();
    }

    /// Adds one of our endpoints found after start (a STUN answer that came
    /// while traffic already flowed); returns whether it was new, and if so
    /// emits [`PathEvent::LocalEndpointsChanged`] so the node is republished,
    /// and sends a call-me-maybe with the new list to every active peer that
    /// has no direct path yet: the call-me-maybe sent when its session began
    /// lacked this endpoint, and waiting for the coordinator's
    /// re-announcement or the next probe round leaves the pair on the relay
    /// for seconds.
    pub fn add_local_endpoint(&mut self, addr: SocketAddr, now: Instant) -> bool {
        if self.out.configured_local.contains(&addr) {
            return false;
        }
        let known = self.out.local_endpoints.contains(&addr);
        self.out.configured_local.push(addr);
        self.out.learned_local.retain(|a| *a != addr);
        self.refresh_local_endpoints();
        if !known {
            let endpoints = self.out.local_endpoints.clone();
            self.out.events.push_back(PathEvent::LocalEndpointsChanged { endpoints });
            if !self.config.relay_only {
                for peer in self.peers.values_mut() {
                    peer.local_endpoints_changed(now, &mut self.out);
                }
            }
        }
        !known
    }

    /// Adds our endpoint `addr`, a port mapping the gateway granted: as
    /// [`Self::add_local_endpoint`], and marked as such in our record
    /// ([`Self::port_mapped_endpoints`]), so the peer that goes direct
    /// through it, and we, report [`DirectMechanism::PortMapping`]. Returns
    /// whether the record changed (a STUN answer may have listed the same
    /// address already; it is marked then, and republished).
    pub fn add_port_mapped_endpoint(&mut self, addr: SocketAddr, now: Instant) -> bool {
        let marked = !self.out.mapped_local.contains(&addr);
        if marked {
            self.out.mapped_local.push(addr);
        }
        if self.add_local_endpoint(addr, now) {
            return true;
        }
        if marked {
            let endpoints = self.out.local_endpoints.clone();
            self.out.events.push_back(PathEvent::LocalEndpointsChanged { endpoints });
        }
        marked
    }

    /// Those of our endpoints that are port mappings, for our record's
    /// [`Node::port_mapped`].
    pub fn port_mapped_endpoints(&self) -> Vec<SocketAddr> {
        let listed = |a: &&SocketAddr| self.out.local_endpoints.contains(a);
        self.out.mapped_local.iter().filter(listed).copied().collect()
    }

    fn refresh_local_endpoints(&mut self) {
        let out = &mut self.out;
        out.local_endpoints = out.configured_local.clone();
        out.local_endpoints.extend(out.learned_local.iter().copied());
    }

    /// Our endpoint candidates, including ones pongs revealed.
    pub fn local_endpoints(&self) -> &[SocketAddr] {
        &self.out.local_endpoints
    }

    /// Adds a peer or applies the coordinator's update of it. A record whose
    /// disco key another peer holds is ignored: a disco key seals one peer's
    /// probes only ([`crate::MeshEndpoint::upsert_peer`] refuses such a
    /// record before it gets here).
    pub fn upsert_peer(&mut self, node: &Node, now: Instant) {
        if self.by_disco.get(&node.disco_key).is_some_and(|k| *k != node.key) {
            return;
        }
        let peer =
            self.peers.entry(node.key).or_insert_with(|| Peer::new(node.key, node.disco_key));
        if peer.disco != node.disco_key {
            // A new disco key means the peer restarted: start its paths afresh.
            self.by_disco.remove(&peer.disco);
            let old = std::mem::replace(peer, Peer::new(node.key, node.disco_key));
            unbind(&mut self.by_addr, &old);
        }
        self.by_disco.insert(node.disco_key, node.key);
        let Some(peer) = self.peers.get_mut(&node.key) else { return };
        let endpoints = if self.config.relay_only { &[][..] } else { &node.endpoints[..] };
        peer.set_port_mapped(&node.port_mapped, endpoints, self.config.max_endpoints);
        peer.set_coordinator_endpoints(endpoints, now, &self.config, &mut self.out);
        self.replay_early(node.disco_key, now);
    }

    /// Handles the kept disco messages of the sender just announced.
    fn replay_early(&mut self, sender: DiscoKey, now: Instant) {
        self.early.retain(|e| now.saturating_duration_since(e.at) < EARLY_DISCO_TTL);
        let (mine, others) = std::mem::take(&mut self.early)
            .into_iter()
            .partition::<VecDeque<_>, _>(|e| e.sender == sender);
        self.early = others;
        for e in mine {
            // What fails now (forged, or a ping naming another node key) fails as
            // it would have on time.
            let _ = self.handle_disco(e.src, &e.datagram, now);
        }
    }

    /// Forgets a peer.
    pub fn remove_peer(&mut self, key: &NodeKey) {
        if let Some(mut peer) = self.peers.remove(key) {
            self.by_disco.remove(&peer.disco);
            unbind(&mut self.by_addr, &peer);
            peer.close_sockets(&mut self.out);
        }
    }

    /// Data went to or came from `peer`: keep (or start) finding a direct path.
    pub fn handle_activity(&mut self, peer: &NodeKey, now: Instant) {
        if let Some(p) = self.peers.get_mut(peer) {
            p.activity(now, &self.config, &mut self.out);
        }
    }

    /// How many disco datagrams from unannounced senders are kept.
    pub fn early_disco(&self) -> usize {
        self.early.len()
    }

    /// A disco datagram arrived from `src` on the node's own socket.
    pub fn handle_disco(
        &mut self,
        src: Source,
        datagram: &[u8],
        now: Instant,
    ) -> Result<(), DiscoError> {
        self.handle_disco_via(src, None, datagram, now)
    }

    /// A disco datagram arrived from `src`, on extra socket `via`
    /// ([`SocketCommand::Open`]) or (`None`) the node's own socket.
    pub fn handle_disco_via(
        &mut self,
        src: Source,
        via: Option<u32>,
        datagram: &[u8],
        now: Instant,
    ) -> Result<(), DiscoError> {
        let sender = wire::sender(datagram)?;
        let Some(&key) = self.by_disco.get(&sender) else {
            // Maybe just early: keep it for the announcement, which opens it. Not
            // opened now, so strangers cost no key exchange; the cap bounds memory.
            if self.early.len() >= MAX_EARLY_DISCO {
                self.early.pop_front();
            }
            self.early.push_back(EarlyDisco { at: now, sender, src, datagram: datagram.to_vec() });
            return Err(DiscoError::UnknownSender(sender));
        };
        let (_, msg) = wire::open(&self.out.disco, datagram)?;
        let peer = self.peers.get_mut(&key).ok_or(DiscoError::UnknownSender(sender))?;
        if self.config.relay_only {
            return Ok(());
        }
        match (msg, src) {
            (Message::Ping(ping), Source::Direct(addr)) => {
                if ping.node_key != key {
                    return Err(DiscoError::NodeKeyMismatch {
                        claimed: ping.node_key,
                        expected: key,
                    });
                }
                peer.on_ping(addr, via, ping.tx_id, now, &self.config, &mut self.out);
            }
            (Message::Pong(pong), Source::Direct(addr)) => {
                let answered = peer.on_pong(addr, via, &pong, now, &self.config, &mut self.out);
                if answered {
                    self.bind(addr, key);
                    self.learn_local_endpoint(pong.src);
                }
            }
            (Message::CallMeMaybe(cmm), _) => {
                peer.on_call_me_maybe(&cmm.endpoints, now, &self.config, &mut self.out);
            }
            // Pings and pongs only prove direct paths; through the relay they mean nothing.
            _ => {}
        }
        Ok(())
    }

    /// `key`'s pong proved `addr`: datagrams from there are its from now on.
    fn bind(&mut self, addr: SocketAddr, key: NodeKey) {
        match self.by_addr.insert(addr, key) {
            Some(before) if before == key => return,
            Some(before) => {
                if let Some(p) = self.peers.get_mut(&before) {
                    p.proven.retain(|a| *a != addr);
                }
            }
            None => {}
        }
        let Some(peer) = self.peers.get_mut(&key) else { return };
        peer.proven.push_back(addr);
        if peer.proven.len() > MAX_PROVEN {
            if let Some(oldest) = peer.proven.pop_front() {
                if self.by_addr.get(&oldest) == Some(&key) {
                    self.by_addr.remove(&oldest);
                }
            }
        }
    }

    /// A pong said the peer saw us at `addr`. Peers could lie, so only the few
    /// latest such addresses are kept (and then offered to other peers).
    fn learn_local_endpoint(&mut self, addr: SocketAddr) {
        if !self.out.local_endpoints.contains(&addr) {
            self.out.learned_local.push_back(addr);
            if self.out.learned_local.len() > MAX_LEARNED_LOCAL {
                self.out.learned_local.pop_front();
            }
            self.refresh_local_endpoints();
            let endpoints = self.out.local_endpoints.clone();
            self.out.events.push_back(PathEvent::LocalEndpointsChanged { endpoints });
        }
    }

    /// Runs timers that are due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        for peer in self.peers.values_mut() {
            peer.on_timeout(now, &self.config, &mut self.out);
        }
    }

    /// The next disco datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.transmits.pop_front()
    }

    /// The next path event.
    pub fn poll_event(&mut self) -> Option<PathEvent> {
        self.out.events.pop_front()
    }

    /// The next endpoint to send an opening probe to: one datagram from a
    /// fresh socket (never the node's own), whose ICMP port-unreachable, if
    /// one comes back within [`PathConfig::opening_wait`], the shell reports
    /// with [`Self::handle_unreachable`]. Pings to that endpoint wait for
    /// the answer. Polled with the transmits.
    pub fn poll_opening_probe(&mut self) -> Option<SocketAddr> {
        self.out.openings.pop_front()
    }

    /// The next extra socket to open or close (birthday probing, when this
    /// node is behind a hard NAT). Polled with the transmits: a transmit
    /// `via` a socket comes after the command that opens it.
    pub fn poll_socket_command(&mut self) -> Option<SocketCommand> {
        self.out.sockets.pop_front()
    }

    /// The extra socket data to `peer` must leave from now (its direct path
    /// was found by birthday probing from that socket); `None` for the
    /// node's own socket or the relay.
    pub fn direct_socket(&self, peer: &NodeKey, now: Instant) -> Option<u32> {
        self.peers.get(peer).and_then(|p| p.direct_socket(now))
    }

    /// The opening probe to `addr` was refused (port-unreachable): the
    /// router there answers unsolicited UDP, so we ping it only after its
    /// peer has pinged us.
    pub fn handle_unreachable(&mut self, addr: SocketAddr, now: Instant) {
        for peer in self.peers.values_mut() {
            peer.opening_refused(addr, now);
        }
    }

    /// When [`PathSelector::handle_timeout`] should run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.peers.values().filter_map(|p| p.next_timeout(&self.config)).min()
    }

    /// Where data for `peer` should go now; `None` for an unknown peer.
    pub fn destination(&self, peer: &NodeKey, now: Instant) -> Option<Destination> {
        self.peers.get(peer).map(|p| p.destination(now))
    }

    /// The peer that proved direct address `addr` (its pong came from
    /// there), to attribute incoming datagrams; `None` for an address no peer
    /// proved, even one a peer lists as its endpoint.
    pub fn peer_at(&self, addr: SocketAddr) -> Option<NodeKey> {
        self.by_addr.get(&addr).copied()
    }

    /// The peer holding disco key `disco`.
    pub(crate) fn disco_holder(&self, disco: &DiscoKey) -> Option<NodeKey> {
        self.by_disco.get(disco).copied()
    }

    /// How long the first direct path to `peer` took to find, from the start of
    /// the session's discovery to the proving pong.
    pub fn time_to_direct(&self, peer: &NodeKey) -> Option<Duration> {
        self.peers.get(peer).and_then(|p| p.time_to_direct())
    }

    /// How the first direct path to `peer` was found.
    pub fn direct_mechanism(&self, peer: &NodeKey) -> Option<DirectMechanism> {
        self.peers.get(peer).and_then(|p| p.found_by())
    }
}

/// Removes `peer`'s proven addresses from the index (those still its own).
fn unbind(by_addr: &mut HashMap<SocketAddr, NodeKey>, peer: &Peer) {
    for addr in &peer.proven {
        if by_addr.get(addr) == Some(&peer.key) {
            by_addr.remove(addr);
        }
    }
}

#[cfg(any(test, feature = "sim"))]
mod sim;
#[cfg(feature = "sim")]
pub use sim::{time_to_direct as simulated_time_to_direct, Scenario as SimScenario};
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_birthday;
#[cfg(test)]
mod tests_portmap;
