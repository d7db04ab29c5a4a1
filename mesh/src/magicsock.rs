//! The magic socket: one UDP socket plus a relay connection, shown to quinn as a
//! single [`AsyncUdpSocket`] whose "addresses" are peers, not network paths.
//!
//! quinn addresses each peer by a stable virtual address, the peer's mesh IPv6
//! address (port 1). Sending, the socket asks [`PathSelector`] where that peer's
//! data goes now and writes the datagram to the direct UDP address or hands it to
//! the relay. Receiving, it sorts datagrams with [`classify`]: disco goes to the
//! path selector (whose probes it sends right away), QUIC goes up to quinn under
//! the sending peer's virtual address, WireGuard goes to [`crate::wg`] (which
//! sends through [`Inner::send_wireguard`], on the same paths as QUIC). Timers run in [`drive_timers`]; relayed
//! datagrams go out through one queue to [`crate::relay`], which picks the
//! destination's region, and come back through [`Inner::handle_relayed`].
//! STUN answers to the node's own endpoint probes ([`crate::endpoint`]'s
//! background STUN) are matched to their waiting probe by transaction id
//! ([`Inner::stun_probe`]).

use std::collections::HashMap;
use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use derp::stun::{self, TransactionId};
use quinn::udp::{RecvMeta, Transmit, UdpSocketState};
use quinn::{AsyncUdpSocket, UdpPoller};
use tokio::io::Interest;
use tokio::sync::{broadcast, mpsc, oneshot, Notify};

use crate::key::NodeKey;
use crate::node::{mesh_addresses, Node, RegionId};
use crate::path::{Destination, PathEvent, PathSelector, Source};
use crate::peermap::PeerMap;
use crate::socket::{self, canonical};
use crate::wire::{classify, PacketKind};

/// Datagrams queued toward or from the relay before new ones are dropped.
pub(crate) const RELAY_QUEUE: usize = 1024;

/// A datagram for the relay: the destination, the region it announced as
/// home (read from its record when queued), the datagram.
pub(crate) type RelayDatagram = (NodeKey, Option<RegionId>, Bytes);

/// The virtual address quinn uses for the node with these mesh addresses.
pub(crate) fn virtual_addr(node: &Node) -> SocketAddr {
    SocketAddr::new(IpAddr::V6(mesh_addresses(node.id).ipv6), 1)
}

/// What [`Inner::state`] guards.
pub(crate) struct State {
    /// The announced peers, their paths and indexes: the one owner of
    /// per-peer state, and its lock order ([`crate::peermap`]).
    pub(crate) peers: PeerMap,
    /// The deadline the timer task sleeps until, so it is woken only for earlier ones.
    armed: Option<Instant>,
}

/// The shared half of the magic socket.
pub(crate) struct Inner {
    udp: tokio::net::UdpSocket,
    /// quinn-udp's batching state: GSO on send, GRO and ECN on receive.
    udp_state: UdpSocketState,
    udp_addr: SocketAddr,
    local_vaddr: SocketAddr,
    /// The peer map; see [`crate::peermap`] for what else may be locked with it.
    state: Mutex<State>,
    relay_out: Option<mpsc::Sender<RelayDatagram>>,
    relayed_quic: Mutex<mpsc::Receiver<(NodeKey, Bytes)>>,
    relayed_quic_tx: mpsc::Sender<(NodeKey, Bytes)>,
    timer: Notify,
    events: broadcast::Sender<PathEvent>,
    /// Where WireGuard datagrams go (with the sender, when known): [`crate::wg`].
    wireguard: OnceLock<mpsc::Sender<(Option<NodeKey>, Bytes)>>,
    /// Where the path selector's opening probes go ([`crate::opening`]);
    /// unset, they are dropped and their endpoints count as silent.
    openings: OnceLock<mpsc::UnboundedSender<SocketAddr>>,
    /// STUN probes waiting for their answer: the server asked and where the
    /// mapped address goes. A leaf lock: taken under the state lock (on
    /// receive), never the other way round.
    stun: Mutex<HashMap<TransactionId, (SocketAddr, oneshot::Sender<SocketAddr>)>>,
    /// Birthday probing's extra sockets ([`crate::birthday`]).
    extra: crate::birthday::ExtraSockets,
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MagicSock").field("udp", &self.udp.local_addr()).finish()
    }
}

/// The TLS verifier asks the peer map (under the state lock; see [`crate::peermap`]).
impl crate::tls::KnownKeys for Inner {
    fn knows(&self, key: &crate::key::QuicKey) -> bool {
        self.state().peers.knows_quic(key)
    }
}

impl Inner {
    pub(crate) fn new(
        udp: tokio::net::UdpSocket,
        local_vaddr: SocketAddr,
        paths: PathSelector,
        relay_out: Option<mpsc::Sender<RelayDatagram>>,
    ) -> io::Result<Arc<Self>> {
        let (relayed_quic_tx, relayed_quic) = mpsc::channel(RELAY_QUEUE);
        let state = State { peers: PeerMap::new(paths), armed: None };
        let udp_state = UdpSocketState::new((&udp).into())?;
        Ok(Arc::new(Self {
            udp_addr: udp.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0))),
            udp,
            udp_state,
            local_vaddr,
            state: Mutex::new(state),
            relay_out,
            relayed_quic: Mutex::new(relayed_quic),
            relayed_quic_tx,
            timer: Notify::new(),
            events: broadcast::channel(256).0,
            wireguard: OnceLock::new(),
            openings: OnceLock::new(),
            stun: Mutex::new(HashMap::new()),
            extra: Default::default(),
        }))
    }

    /// Asks `server` which address it sees the socket at: a binding request
    /// every `retry` until an answer or `timeout`. The socket keeps carrying
    /// traffic meanwhile; the answer is picked out by [`Self::sort_received`].
    pub(crate) async fn stun_probe(
        &self,
        server: SocketAddr,
        retry: Duration,
        timeout: Duration,
    ) -> Result<SocketAddr, stun::ProbeError> {
        let txid = TransactionId::random();
        let (tx, mut rx) = oneshot::channel();
        self.stun_waiters().insert(txid, (server, tx));
        let request = stun::binding_request(txid);
        let asking = async {
            let mut every = tokio::time::interval(retry.max(Duration::from_millis(10)));
            loop {
                tokio::select! {
                    _ = every.tick() => {
                        if let Err(e) = self.send_udp(&request, server) {
                            // No route (yet): the next retry may have one.
                            tracing::debug!(%e, %server, "STUN request not sent");
                        }
                    }
                    answer = &mut rx => return answer.ok(),
                }
            }
        };
        let answer = tokio::time::timeout(timeout, asking).await;
        self.stun_waiters().remove(&txid);
        match answer {
            Ok(Some(mapped)) => Ok(mapped),
            _ => Err(stun::ProbeError::Timeout(server)),
        }
    }

    fn stun_waiters(
        &self,
    ) -> MutexGuard<'_, HashMap<TransactionId, (SocketAddr, oneshot::Sender<SocketAddr>)>> {
        self.stun.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A STUN datagram from `src`: the answer to a waiting probe, if its
    /// transaction id and server match; anything else is dropped.
    fn handle_stun(&self, src: SocketAddr, datagram: &[u8]) {
        let Ok((txid, mapped)) = stun::parse_binding_response(datagram) else { return };
        let mut waiters = self.stun_waiters();
        if waiters.get(&txid).is_some_and(|(server, _)| canonical(*server) == src) {
            if let Some((_, tx)) = waiters.remove(&txid) {
                let _ = tx.send(canonical(mapped));
            }
        }
    }

    pub(crate) fn udp_local_addr(&self) -> io::Result<SocketAddr> {
        self.udp.local_addr()
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<PathEvent> {
        self.events.subscribe()
    }

    /// Sends what the path selector queued and publishes its events.
    pub(crate) fn flush(&self, state: &mut State) {
        while let Some(cmd) = state.peers.paths_mut().poll_socket_command() {
            self.extra.command(cmd);
        }
        while let Some(t) = state.peers.paths_mut().poll_transmit() {
            match (t.dst, t.via) {
                (Destination::Direct(addr), Some(via)) => self.extra.send(via, addr, t.payload),
                // A lost probe is retried by the next probe.
                (Destination::Direct(addr), None) => drop(self.send_udp(&t.payload, addr)),
                (Destination::Relay(key), _) => {
                    let region = state.peers.region(&key);
                    self.send_relay((key, region, Bytes::from(t.payload)));
                }
            }
        }
        while let Some(addr) = state.peers.paths_mut().poll_opening_probe() {
            if let Some(openings) = self.openings.get() {
                // The receiver lives as long as the socket's tasks.
                let _ = openings.send(addr);
            }
        }
        while let Some(event) = state.peers.paths_mut().poll_event() {
            tracing::debug!(?event, "path event");
            // Nobody listening is fine.
            let _ = self.events.send(event);
        }
        let next = state.peers.paths().poll_timeout();
        if next.is_some_and(|n| state.armed.is_none_or(|armed| n < armed)) {
            self.timer.notify_one();
        }
    }

    fn send_udp(&self, data: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.udp.try_send_to(data, socket::send_addr(self.udp_addr, to))
    }

    fn send_relay(&self, datagram: RelayDatagram) {
        if let Some(out) = &self.relay_out {
            // Full queue: drop, as a congested link would; QUIC recovers.
            let _ = out.try_send(datagram);
        }
    }

    /// Where data for `key` goes now (its session counts as active), and
    /// the peer's home region for the relay.
    /// and the birthday socket a direct path leaves from.
    fn route(&self, key: &NodeKey, now: Instant) -> Option<Route> {
        let mut state = self.state();
        let paths = state.peers.paths_mut();
        paths.handle_activity(key, now);
        let dst = paths.destination(key, now);
        let via = paths.direct_socket(key, now);
        let region = relay_region(&state.peers, dst);
        self.flush(&mut state);
        dst.map(|dst| (dst, region, via))
    }

    /// A datagram the relay delivered from `src`.
    pub(crate) fn handle_relayed(&self, src: NodeKey, data: Bytes) {
        match classify(&data) {
            PacketKind::Disco => {
                let mut state = self.state();
                let paths = state.peers.paths_mut();
                if let Err(e) = paths.handle_disco(Source::Relay(src), &data, Instant::now()) {
                    tracing::debug!(%e, "dropped relayed disco");
                }
                self.flush(&mut state);
            }
            PacketKind::Quic => {
                let mut state = self.state();
                if state.peers.contains_key(&src) {
                    drop(state);
                    let _ = self.relayed_quic_tx.try_send((src, data));
                } else {
                    // Handed over when (if) the coordinator announces it.
                    state.peers.keep_early_quic(src, data, Instant::now());
                }
            }
            PacketKind::WireGuard => {
                let mut state = self.state();
                state.peers.paths_mut().handle_activity(&src, Instant::now());
                self.flush(&mut state);
                self.to_wireguard(Some(src), data);
            }
            // STUN answers come straight from the server, never relayed.
            PacketKind::Stun | PacketKind::Unknown => {}
        }
    }

    /// Routes WireGuard datagrams to `tx` from now on.
    pub(crate) fn set_wireguard(&self, tx: mpsc::Sender<(Option<NodeKey>, Bytes)>) {
        // Set once per endpoint; `MeshEndpoint::wireguard` refuses a second start.
        let _ = self.wireguard.set(tx);
    }

    fn to_wireguard(&self, from: Option<NodeKey>, data: Bytes) {
        if let Some(tx) = self.wireguard.get() {
            // Full queue: drop, as a congested link would; TCP inside recovers.
            let _ = tx.try_send((from, data));
        }
    }

    /// Sends a WireGuard datagram to `key` the way QUIC goes: straight to
    /// the proven direct address, else through the relay.
    pub(crate) fn send_wireguard(&self, key: &NodeKey, data: &[u8]) {
        self.send_wireguard_batch(key, data, data.len());
    }

    /// Sends WireGuard datagrams to `key` in one go: `contents` holds them
    /// back to back, each `segment` bytes but the last (which may be shorter).
    /// A direct path takes them in one GSO send where the kernel offers it.
    pub(crate) fn send_wireguard_batch(&self, key: &NodeKey, contents: &[u8], segment: usize) {
        let segment = segment.max(1);
        match self.route(key, Instant::now()) {
            Some((Destination::Direct(addr), _, Some(via))) => {
                self.extra.send_data(via, addr, contents, segment)
            }
            Some((Destination::Direct(addr), _, None)) if contents.len() > segment => {
                let transmit = Transmit {
                    destination: socket::send_addr(self.udp_addr, addr),
                    ecn: None,
                    contents,
                    segment_size: Some(segment),
                    src_ip: None,
                };
                // Like a full NIC queue: dropped, and TCP inside recovers.
                let _ = self.udp.try_io(Interest::WRITABLE, || {
                    self.udp_state.send((&self.udp).into(), &transmit)
                });
            }
            Some((Destination::Direct(addr), _, None)) => drop(self.send_udp(contents, addr)),
            Some((Destination::Relay(key), region, _)) => {
                for datagram in contents.chunks(segment) {
                    self.send_relay((key, region, Bytes::copy_from_slice(datagram)));
                }
            }
            None => {}
        }
    }

    /// How many datagrams one GSO send may carry (1 without GSO).
    pub(crate) fn max_gso_segments(&self) -> usize {
        self.udp_state.max_gso_segments()
    }

    /// Delivers relayed QUIC from `key` that came before its announcement.
    pub(crate) fn deliver_early(&self, key: NodeKey, early: &[Bytes]) {
        for data in early {
            let _ = self.relayed_quic_tx.try_send((key, data.clone()));
        }
    }

    /// Runs due timers.
    fn on_timer(&self) {
        let mut state = self.state();
        state.peers.paths_mut().handle_timeout(Instant::now());
        self.flush(&mut state);
    }

    /// Delivers one datagram into quinn's buffers.
    fn deliver(
        &self,
        from: SocketAddr,
        data: &[u8],
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Option<usize> {
        let buf = bufs.first_mut()?;
        let dst = buf.get_mut(..data.len())?;
        dst.copy_from_slice(data);
        let m = meta.first_mut()?;
        *m = RecvMeta { addr: from, len: data.len(), stride: data.len(), ecn: None, dst_ip: None };
        Some(1)
    }

    /// Sorts a batch read from the UDP socket, in place: disco goes to the path
    /// selector; QUIC from an address a peer proved ([`PeerMap::quic_source`],
    /// hash lookups once per entry) stays, relabelled with that peer's virtual
    /// address; everything else is cut out (an entry left with `len` 0). Each
    /// entry may hold several datagrams of `stride` bytes (GRO). Returns how many
    /// entries still carry QUIC.
    fn sort_received(&self, bufs: &mut [IoSliceMut<'_>], meta: &mut [RecvMeta]) -> usize {
        let now = Instant::now();
        let mut state = self.state();
        let mut kept = 0;
        for (buf, m) in bufs.iter_mut().zip(meta.iter_mut()) {
            let src = canonical(m.addr);
            let stride = m.stride.max(1);
            let len = m.len.min(buf.len());
            let data = &mut buf[..len];
            // QUIC datagrams move to the front; only the last may be short, and
            // it stays last, so the batch keeps GRO's shape.
            let mut quic = 0;
            let mut at = 0;
            // The WireGuard sender, looked up once per entry (one source address).
            let mut wg_from = None;
            while at < len {
                let end = (at + stride).min(len);
                match classify(&data[at..end]) {
                    PacketKind::Quic => {
                        // Usually every datagram is QUIC and already in place.
                        if at != quic {
                            data.copy_within(at..end, quic);
                        }
                        quic += end - at;
                    }
                    PacketKind::Disco => {
                        let datagram = &data[at..end];
                        let paths = state.peers.paths_mut();
                        if let Err(e) = paths.handle_disco(Source::Direct(src), datagram, now) {
                            tracing::debug!(%e, %src, "dropped disco");
                        }
                    }
                    PacketKind::WireGuard => {
                        // An unknown address is fine: the device finds the peer by
                        // its session index or static key, and authenticates it.
                        let from = *wg_from.get_or_insert_with(|| {
                            let paths = state.peers.paths_mut();
                            let key = paths.peer_at(src);
                            if let Some(key) = &key {
                                paths.handle_activity(key, now);
                            }
                            key
                        });
                        self.to_wireguard(from, Bytes::copy_from_slice(&data[at..end]));
                    }
                    PacketKind::Stun => self.handle_stun(src, &data[at..end]),
                    PacketKind::Unknown => {}
                }
                at = end;
            }
            let vaddr = match quic {
                0 => None,
                _ => state.peers.quic_source(src, now),
            };
            match vaddr {
                Some(vaddr) => {
                    m.addr = vaddr;
                    m.len = quic;
                    m.stride = stride;
                    kept += 1;
                }
                None => m.len = 0,
            }
        }
        self.flush(&mut state);
        kept
    }
}

/// Where data to a peer goes: the destination, the peer's home region (for
/// the relay), and the birthday socket a direct path leaves from.
type Route = (Destination, Option<RegionId>, Option<u32>);

/// The home region of the peer `dst` relays to; looked up only for the
/// relay, so the direct path pays nothing for it.
fn relay_region(peers: &PeerMap, dst: Option<Destination>) -> Option<RegionId> {
    match dst {
        Some(Destination::Relay(key)) => peers.region(&key),
        _ => None,
    }
}

impl Inner {
    /// Starts sending the path selector's opening probes; the task runs
    /// until the returned handle is dropped.
    pub(crate) fn start_openings(
        self: &Arc<Self>,
        wait: Duration,
    ) -> tokio_util::task::AbortOnDropHandle<()> {
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = self.openings.set(tx);
        // Made here, in the caller's network namespace (see `opening`).
        let sockets = crate::opening::Sockets::spawn();
        let extra = crate::birthday::run(self.clone(), sockets.clone(), self.udp_addr);
        let openings = crate::opening::run(self.clone(), rx, sockets, wait);
        let task = tokio::spawn(async move {
            tokio::join!(openings, extra);
        });
        tokio_util::task::AbortOnDropHandle::new(task)
    }

    /// Birthday probing's extra sockets.
    pub(crate) fn extra(&self) -> &crate::birthday::ExtraSockets {
        &self.extra
    }

    /// A datagram that arrived on birthday socket `via` from `src`: disco
    /// goes to the path selector with the socket, QUIC and WireGuard from
    /// the peer that proved `src` go where the relay's do.
    pub(crate) fn handle_extra(&self, via: u32, src: SocketAddr, data: Bytes) {
        let src = canonical(src);
        let now = Instant::now();
        let mut state = self.state();
        let paths = state.peers.paths_mut();
        let from = match classify(&data) {
            PacketKind::Disco => {
                if let Err(e) = paths.handle_disco_via(Source::Direct(src), Some(via), &data, now) {
                    tracing::debug!(%e, %src, via, "dropped disco on a birthday socket");
                }
                self.flush(&mut state);
                return;
            }
            PacketKind::Quic | PacketKind::WireGuard => paths.peer_at(src),
            PacketKind::Stun | PacketKind::Unknown => None,
        };
        let Some(key) = from else { return };
        paths.handle_activity(&key, now);
        self.flush(&mut state);
        drop(state);
        match classify(&data) {
            PacketKind::Quic => drop(self.relayed_quic_tx.try_send((key, data))),
            _ => self.to_wireguard(Some(key), data),
        }
    }

    /// An opening probe to `addr` was refused.
    pub(crate) fn handle_unreachable(&self, addr: SocketAddr, now: Instant) {
        let mut state = self.state();
        state.peers.paths_mut().handle_unreachable(addr, now);
        self.flush(&mut state);
    }

    /// Sends quinn's `transmit` the way `route` says.
    fn send_routed(
        &self,
        transmit: &Transmit,
        route: (Destination, Option<RegionId>),
    ) -> io::Result<()> {
        match route {
            (Destination::Direct(addr), _) => {
                let direct = Transmit {
                    destination: socket::send_addr(self.udp_addr, addr),
                    ecn: transmit.ecn,
                    contents: transmit.contents,
                    segment_size: transmit.segment_size,
                    src_ip: None,
                };
                self.udp
                    .try_io(Interest::WRITABLE, || self.udp_state.send((&self.udp).into(), &direct))
            }
            (Destination::Relay(key), region) => {
                // The relay carries single datagrams: split a GSO batch.
                let size = transmit.segment_size.unwrap_or(transmit.contents.len()).max(1);
                for datagram in transmit.contents.chunks(size) {
                    self.send_relay((key, region, Bytes::copy_from_slice(datagram)));
                }
                Ok(())
            }
        }
    }
}

/// Runs the path selector's timers until the socket is dropped.
pub(crate) async fn drive_timers(inner: Arc<Inner>) {
    loop {
        let deadline = {
            let mut state = inner.state();
            state.armed = state.peers.paths().poll_timeout();
            state.armed
        };
        match deadline {
            Some(at) => {
                let at = tokio::time::Instant::from_std(at);
                tokio::select! {
                    biased;
                    () = inner.timer.notified() => {}
                    () = tokio::time::sleep_until(at) => inner.on_timer(),
                }
            }
            None => inner.timer.notified().await,
        }
    }
}

/// The quinn-facing handle.
#[derive(Debug)]
pub(crate) struct MagicSock(pub(crate) Arc<Inner>);

#[derive(Debug)]
struct Poller(Arc<Inner>);

impl UdpPoller for Poller {
    fn poll_writable(self: Pin<&mut Self>, cx: &mut Context) -> Poll<io::Result<()>> {
        self.0.udp.poll_send_ready(cx)
    }
}

impl AsyncUdpSocket for MagicSock {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(Poller(self.0.clone()))
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        let inner = &self.0;
        let now = Instant::now();
        let route = {
            let mut state = inner.state();
            let Some(key) = state.peers.key_at(&transmit.destination) else {
                // Not a peer (any more): drop, like an unroutable address,
                // unless it was just withdrawn and this is the close.
                let route = state.peers.withdrawn_route(&transmit.destination, now);
                drop(state);
                return match route {
                    Some(route) => inner.send_routed(transmit, route),
                    None => Ok(()),
                };
            };
            let paths = state.peers.paths_mut();
            paths.handle_activity(&key, now);
            let dst = paths.destination(&key, now);
            let via = paths.direct_socket(&key, now);
            let region = relay_region(&state.peers, dst);
            inner.flush(&mut state);
            dst.map(|dst| (dst, region, via))
        };
        match route {
            Some((Destination::Direct(addr), _, Some(via))) => {
                let segment = transmit.segment_size.unwrap_or(transmit.contents.len());
                inner.extra.send_data(via, addr, transmit.contents, segment);
                Ok(())
            }
            Some((dst, region, _)) => inner.send_routed(transmit, (dst, region)),
            None => Ok(()),
        }
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let inner = &self.0;
        loop {
            let relayed =
                inner.relayed_quic.lock().unwrap_or_else(|p| p.into_inner()).poll_recv(cx);
            if let Poll::Ready(Some((key, data))) = relayed {
                let vaddr = {
                    let mut state = inner.state();
                    state.peers.paths_mut().handle_activity(&key, Instant::now());
                    inner.flush(&mut state);
                    state.peers.get(&key).map(virtual_addr)
                };
                if let Some(n) = vaddr.and_then(|v| inner.deliver(v, &data, bufs, meta)) {
                    return Poll::Ready(Ok(n));
                }
                continue;
            }
            match inner.udp.poll_recv_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
            let read = inner.udp.try_io(Interest::READABLE, || {
                inner.udp_state.recv((&inner.udp).into(), bufs, meta)
            });
            let n = match read {
                Ok(n) => n.min(bufs.len()).min(meta.len()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                // ICMP errors from unreachable probes surface here; keep reading.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionRefused
                    ) =>
                {
                    continue
                }
                Err(e) => return Poll::Ready(Err(e)),
            };
            if inner.sort_received(&mut bufs[..n], &mut meta[..n]) > 0 {
                return Poll::Ready(Ok(n));
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.0.local_vaddr)
    }

    fn max_transmit_segments(&self) -> usize {
        self.0.udp_state.max_gso_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.0.udp_state.gro_segments()
    }

    fn may_fragment(&self) -> bool {
        self.0.udp_state.may_fragment()
    }
}
