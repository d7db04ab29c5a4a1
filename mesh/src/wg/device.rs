//! The WireGuard core: one noise session ([`Tunn`]) per announced peer, keyed
//! by node key, with no socket and no task.
//!
//! The I/O shell feeds it datagrams from the magic socket
//! ([`WgDevice::handle_datagram`]), IP packets to send
//! ([`WgDevice::handle_packet`]) and timer expiry ([`WgDevice::handle_timeout`]);
//! each call reports what to send to a peer or hand up to the tunnel through an
//! `emit` callback (borrowed buffers, no copy), and [`WgDevice::poll_timeout`]
//! says when to call again.
//!
//! Who is who:
//! - a handshake initiation names its sender only inside the encryption; it is
//!   opened with our static key (`parse_handshake_anon`) and refused unless the
//!   sender's static key is a peer the coordinator announced;
//! - every other message carries our receiver index, whose top 24 bits are the
//!   index we gave that peer's session ([`Tunn::new`] shifts it left by 8);
//! - when the magic socket knows the sender (the relay names it, or the UDP
//!   address belongs to a peer), it must be the same peer;
//! - a decrypted packet's source address must be one of the peer's mesh
//!   addresses (WireGuard's "allowed IPs"), so no peer can speak for another.
//!
//! Timers: boringtun's timers (handshake retries, rekeying, keepalives, session
//! expiry) only advance when `update_timers` runs, at a granularity of about a
//! second. A peer gets a deadline [`TIMER_TICK`] after its first activity and
//! keeps one while its session lives; once boringtun reports the session
//! expired, the peer has no deadline until it is used again. An idle device
//! has no deadline at all.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::{Packet, Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};

use crate::key::{NodeKey, NodeSecret};
use crate::node::{MeshAddresses, Node};

/// How often a live session's timers run.
pub const TIMER_TICK: Duration = Duration::from_secs(1);

/// The largest IP packet the tunnel carries (the interface MTU): a 1500-byte
/// path minus IPv6 (40), UDP (8) and WireGuard's data header and tag (32).
pub const MTU: usize = 1420;

/// WireGuard's data message overhead: type, receiver, counter, tag.
const DATA_OVERHEAD: usize = 32;

/// Room for the largest datagram either way.
const BUF_LEN: usize = u16::MAX as usize + DATA_OVERHEAD;

/// Receiver indices are 24 bits (boringtun keeps the low 8 for sessions).
const MAX_INDEX: u32 = (1 << 24) - 1;

/// Why a datagram or packet was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WgError {
    /// Not a WireGuard message, or not an IP packet.
    #[error("malformed packet")]
    Malformed,
    /// A handshake from a key the coordinator did not announce.
    #[error("handshake from unannounced {0}")]
    UnknownPeer(NodeKey),
    /// A message for a receiver index no peer has.
    #[error("no session for receiver index {0:#x}")]
    UnknownIndex(u32),
    /// The magic socket saw one peer send a message for another's session.
    #[error("{claimed} sent a message for {session}'s session")]
    SourceMismatch {
        /// Who the magic socket says sent it.
        claimed: NodeKey,
        /// Whose session it belongs to.
        session: NodeKey,
    },
    /// A decrypted packet whose source is not the peer's mesh address.
    #[error("{peer} sent a packet from {src}, not its own address")]
    Spoofed {
        /// The peer.
        peer: NodeKey,
        /// The source address it used.
        src: IpAddr,
    },
    /// No peer owns this destination address.
    #[error("no peer has address {0}")]
    NoRoute(IpAddr),
    /// boringtun refused the message (authentication, replay, expiry).
    #[error("wireguard: {0}")]
    Noise(String),
}

/// What a call wants done.
#[derive(Debug, PartialEq, Eq)]
pub enum Emit<'a> {
    /// Send this WireGuard datagram to the peer (through the magic socket).
    Network(NodeKey, &'a [u8]),
    /// Hand this decrypted IP packet, from the peer, up to the tunnel.
    Tunnel(NodeKey, &'a [u8]),
}

struct Peer {
    tunn: Tunn,
    addresses: MeshAddresses,
    /// When its timers run next; `None` while idle.
    deadline: Option<Instant>,
}

impl Peer {
    fn owns(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V6(v6) => v6 == self.addresses.ipv6,
            IpAddr::V4(v4) => Some(v4) == self.addresses.ipv4,
        }
    }

    /// Arms the peer's timers; true if it had none (the device's earliest
    /// deadline may have moved).
    fn touch(&mut self, now: Instant) -> bool {
        let idle = self.deadline.is_none();
        if idle {
            self.deadline = Some(now + TIMER_TICK);
        }
        idle
    }
}

/// WireGuard for all peers of one node. See the module docs.
pub struct WgDevice {
    secret: StaticSecret,
    public: PublicKey,
    peers: HashMap<NodeKey, Peer>,
    by_index: HashMap<u32, NodeKey>,
    by_addr: HashMap<IpAddr, NodeKey>,
    next_index: u32,
    buf: Vec<u8>,
    /// A peer's timers were armed since [`WgDevice::take_armed`] last ran.
    armed: bool,
}

impl std::fmt::Debug for WgDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WgDevice").field("peers", &self.peers.len()).finish_non_exhaustive()
    }
}

impl WgDevice {
    /// A device whose static key is the node key.
    pub fn new(secret: &NodeSecret) -> Self {
        let secret = StaticSecret::from(secret.to_bytes());
        let public = PublicKey::from(&secret);
        Self {
            secret,
            public,
            peers: HashMap::new(),
            by_index: HashMap::new(),
            by_addr: HashMap::new(),
            next_index: 1,
            buf: vec![0; BUF_LEN],
            armed: false,
        }
    }

    /// Adds a peer the coordinator announced; an existing session is kept.
    pub fn upsert_peer(&mut self, node: &Node) {
        if let Some(peer) = self.peers.get_mut(&node.key) {
            if peer.addresses != node.addresses {
                self.by_addr.retain(|_, k| *k != node.key);
                peer.addresses = node.addresses;
                self.index_addresses(node.key, node.addresses);
            }
            return;
        }
        let index = self.allocate_index();
        let tunn = Tunn::new(
            self.secret.clone(),
            PublicKey::from(*node.key.as_bytes()),
            None,
            None,
            index,
            None,
        );
        self.by_index.insert(index, node.key);
        self.index_addresses(node.key, node.addresses);
        self.peers.insert(node.key, Peer { tunn, addresses: node.addresses, deadline: None });
    }

    fn index_addresses(&mut self, key: NodeKey, addresses: MeshAddresses) {
        self.by_addr.insert(IpAddr::V6(addresses.ipv6), key);
        if let Some(v4) = addresses.ipv4 {
            self.by_addr.insert(IpAddr::V4(v4), key);
        }
    }

    fn allocate_index(&mut self) -> u32 {
        loop {
            let index = self.next_index;
            self.next_index = if index >= MAX_INDEX { 1 } else { index + 1 };
            if !self.by_index.contains_key(&index) {
                return index;
            }
        }
    }

    /// Forgets a peer and its sessions.
    pub fn remove_peer(&mut self, key: &NodeKey) {
        if self.peers.remove(key).is_some() {
            self.by_index.retain(|_, k| k != key);
            self.by_addr.retain(|_, k| k != key);
        }
    }

    /// Whether `key` is a peer.
    pub fn has_peer(&self, key: &NodeKey) -> bool {
        self.peers.contains_key(key)
    }

    /// The peer that owns mesh address `ip`.
    pub fn peer_for(&self, ip: IpAddr) -> Option<NodeKey> {
        self.by_addr.get(&ip).copied()
    }

    /// A WireGuard datagram arrived; `from` is the sender if the magic socket
    /// knows it (relay, or a UDP address of a known peer).
    pub fn handle_datagram(
        &mut self,
        from: Option<NodeKey>,
        datagram: &[u8],
        now: Instant,
        emit: &mut dyn FnMut(Emit<'_>),
    ) -> Result<(), WgError> {
        let key = match Tunn::parse_incoming_packet(datagram).map_err(|_| WgError::Malformed)? {
            Packet::HandshakeInit(init) => {
                let half =
                    parse_handshake_anon(&self.secret, &self.public, &init).map_err(noise)?;
                let key = NodeKey::from_bytes(half.peer_static_public);
                if !self.peers.contains_key(&key) {
                    return Err(WgError::UnknownPeer(key));
                }
                key
            }
            Packet::HandshakeResponse(p) => self.session_owner(p.receiver_idx)?,
            Packet::PacketCookieReply(p) => self.session_owner(p.receiver_idx)?,
            Packet::PacketData(p) => self.session_owner(p.receiver_idx)?,
        };
        if let Some(claimed) = from.filter(|c| *c != key) {
            return Err(WgError::SourceMismatch { claimed, session: key });
        }
        let Self { peers, buf, armed, .. } = self;
        let peer = peers.get_mut(&key).ok_or(WgError::UnknownPeer(key))?;
        *armed |= peer.touch(now);
        let mut result = peer.tunn.decapsulate(None, datagram, buf);
        loop {
            match result {
                TunnResult::Done => return Ok(()),
                TunnResult::Err(e) => return Err(noise(e)),
                TunnResult::WriteToNetwork(out) => {
                    emit(Emit::Network(key, out));
                    // A handshake may have released queued packets: send them all.
                    result = peer.tunn.decapsulate(None, &[], buf);
                }
                TunnResult::WriteToTunnelV4(packet, src) => {
                    return Self::up(peer, key, IpAddr::V4(src), packet, emit)
                }
                TunnResult::WriteToTunnelV6(packet, src) => {
                    return Self::up(peer, key, IpAddr::V6(src), packet, emit)
                }
            }
        }
    }

    fn up(
        peer: &Peer,
        key: NodeKey,
        src: IpAddr,
        packet: &[u8],
        emit: &mut dyn FnMut(Emit<'_>),
    ) -> Result<(), WgError> {
        if !peer.owns(src) {
            return Err(WgError::Spoofed { peer: key, src });
        }
        emit(Emit::Tunnel(key, packet));
        Ok(())
    }

    fn session_owner(&self, receiver: u32) -> Result<NodeKey, WgError> {
        self.by_index.get(&(receiver >> 8)).copied().ok_or(WgError::UnknownIndex(receiver))
    }

    /// An IP packet to send: encrypts it for the peer owning its destination
    /// (or queues it while a handshake runs, sending the handshake).
    pub fn handle_packet(
        &mut self,
        packet: &[u8],
        now: Instant,
        emit: &mut dyn FnMut(Emit<'_>),
    ) -> Result<(), WgError> {
        if packet.len() > BUF_LEN - DATA_OVERHEAD {
            return Err(WgError::Malformed);
        }
        let dst = Tunn::dst_address(packet).ok_or(WgError::Malformed)?;
        let key = *self.by_addr.get(&dst).ok_or(WgError::NoRoute(dst))?;
        let Self { peers, buf, armed, .. } = self;
        let peer = peers.get_mut(&key).ok_or(WgError::NoRoute(dst))?;
        *armed |= peer.touch(now);
        match peer.tunn.encapsulate(packet, buf) {
            TunnResult::WriteToNetwork(out) => emit(Emit::Network(key, out)),
            TunnResult::Err(e) => return Err(noise(e)),
            _ => {}
        }
        Ok(())
    }

    /// Runs the timers that are due.
    pub fn handle_timeout(&mut self, now: Instant, emit: &mut dyn FnMut(Emit<'_>)) {
        let Self { peers, buf, .. } = self;
        for (key, peer) in peers.iter_mut() {
            if peer.deadline.is_none_or(|d| d > now) {
                continue;
            }
            peer.deadline = Some(now + TIMER_TICK);
            match peer.tunn.update_timers(buf) {
                TunnResult::WriteToNetwork(out) => emit(Emit::Network(*key, out)),
                TunnResult::Err(WireGuardError::ConnectionExpired) => peer.deadline = None,
                TunnResult::Err(e) => tracing::debug!(peer = %key.short(), ?e, "wireguard timer"),
                _ => {}
            }
        }
    }

    /// Whether a peer's timers were armed since the last call, so the timer
    /// task must look at [`WgDevice::poll_timeout`] again.
    pub fn take_armed(&mut self) -> bool {
        std::mem::take(&mut self.armed)
    }

    /// When [`WgDevice::handle_timeout`] should run next; `None` while idle.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.peers.values().filter_map(|p| p.deadline).min()
    }

    /// Time since `peer`'s current session was established, if it has one.
    pub fn session_age(&self, peer: &NodeKey) -> Option<Duration> {
        self.peers.get(peer).and_then(|p| p.tunn.time_since_last_handshake())
    }
}

fn noise(e: WireGuardError) -> WgError {
    WgError::Noise(format!("{e:?}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
