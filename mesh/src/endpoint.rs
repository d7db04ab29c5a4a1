//! [`MeshEndpoint`]: QUIC between mesh peers over the magic socket.
//!
//! Bind one per node. Feed it the peers the coordinator announces
//! ([`MeshEndpoint::upsert_peer`]); then [`MeshEndpoint::dial`] a peer by node key
//! or [`MeshEndpoint::accept`] peers' connections. Streams open with a
//! [`Service`] header. Every connection is authenticated both ways by the QUIC
//! keys in the peers' node records ([`crate::tls`]); a peer presenting any other
//! key is refused.
//!
//! The peers, their paths and their indexes live in one [`crate::peermap`],
//! whose docs say which locks are taken in which order; `peers.rs` changes
//! the peer set and answers relay questions, `own.rs` keeps this node's
//! record and its [`MeshEndpoint::node_changes`], `stun.rs` asks the STUN
//! servers in the background (binding never waits for them).

mod own;
mod peers;
mod stun;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use tokio::sync::broadcast;
use tokio_util::task::AbortOnDropHandle;

pub use self::peers::PeerPath;
pub use self::stun::StunStatus;
use crate::key::{DiscoSecret, NodeKey, NodeSecret, QuicSecret};
use crate::magicsock::{self, Inner, MagicSock};
use crate::node::{mesh_addresses, AddressError, Node, NodeId, PROTOCOL_VERSION};
use crate::path::{Destination, PathConfig, PathEvent, PathSelector};
use crate::peermap::{KeyInUse, Presence};
use crate::portmap::{PortMapConfig, PortMapStatus, PortMapper};
use crate::relay::{HomeConfig, RelayRegion, Relays};
use crate::service::{Service, ServiceParseError};
use crate::socket;
use crate::tls::{self, Identity, TlsError};
use crate::wg;

/// How to run a [`MeshEndpoint`]. Start from [`MeshConfig::new`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MeshConfig {
    /// This node's id, from the coordinator.
    pub node_id: NodeId,
    /// WireGuard/relay identity.
    pub node_secret: NodeSecret,
    /// Path probe identity.
    pub disco_secret: DiscoSecret,
    /// QUIC identity.
    pub quic_secret: QuicSecret,
    /// The UDP socket's address; the default `[::]:0` is dual-stack.
    pub bind: SocketAddr,
    /// Further endpoint candidates to announce.
    pub endpoints: Vec<SocketAddr>,
    /// STUN servers asked from bind time on, in the background, which
    /// address they see the socket at; the answers are announced as
    /// endpoints when they come ([`MeshEndpoint::stun_status`]).
    pub stun_servers: Vec<SocketAddr>,
    /// How long each STUN probe asks (a request every 500 ms) before it
    /// gives up. Nothing waits for it.
    pub stun_timeout: Duration,
    /// Announce the bound address, or for a wildcard bind the default routes'
    /// source addresses, as endpoints.
    pub announce_local: bool,
    /// Announce no endpoint at all: peers reach us through the relay only.
    pub relay_only: bool,
    /// The relay regions of the relay map. The node connects to the best
    /// as its home (announced as `preferred_relay`), moves when it fails, and
    /// reaches each peer through the peer's home ([`crate::relay`]).
    pub relays: Vec<RelayRegion>,
    /// How the home region is chosen and when it is given up.
    pub home: HomeConfig,
    /// Path selection timers.
    pub path: PathConfig,
    /// Asking the gateway to forward a port to the socket (off by default;
    /// [`crate::portmap`]). Its public address becomes an endpoint.
    pub port_mapping: PortMapConfig,
}

impl MeshConfig {
    /// A config for node `node_id` with these keys, bound to `0.0.0.0:0`, no relay.
    pub fn new(node_id: NodeId, node: NodeSecret, disco: DiscoSecret, quic: QuicSecret) -> Self {
        Self {
            node_id,
            node_secret: node,
            disco_secret: disco,
            quic_secret: quic,
            bind: SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0)),
            announce_local: true,
            endpoints: Vec::new(),
            stun_servers: Vec::new(),
            stun_timeout: Duration::from_secs(2),
            relay_only: false,
            relays: Vec::new(),
            home: HomeConfig::default(),
            path: PathConfig::default(),
            port_mapping: PortMapConfig::default(),
        }
    }
}

/// Why [`MeshEndpoint::bind`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BindError {
    /// The UDP socket.
    #[error("binding UDP: {0}")]
    Io(#[from] std::io::Error),
    /// TLS setup.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// No relay region answered.
    #[error(transparent)]
    Relay(#[from] crate::relay::NoRegion),
}

/// Why [`MeshEndpoint::dial`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DialError {
    /// The coordinator has not announced this peer.
    #[error("unknown peer {0}")]
    UnknownPeer(NodeKey),
    /// This endpoint holds no such record for that node id (it was refused,
    /// replaced or removed).
    #[error("node {0} is not announced with these keys")]
    NotAnnounced(NodeId),
    /// TLS setup.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// quinn refused to start the connection.
    #[error("starting the connection: {0}")]
    Connect(#[from] quinn::ConnectError),
    /// The handshake failed: unreachable, or the peer's key is not the announced one.
    #[error("connecting: {0}")]
    Connection(#[from] quinn::ConnectionError),
}

/// Why [`MeshEndpoint::upsert_peer`] refused a record.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpsertError {
    /// It claims mesh addresses its node id does not own.
    #[error(transparent)]
    Address(#[from] AddressError),
    /// One of its keys belongs to another peer, or to this node.
    #[error(transparent)]
    KeyInUse(#[from] KeyInUse),
}

/// Why an incoming connection was not accepted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AcceptError {
    /// The endpoint is closed.
    #[error("endpoint closed")]
    Closed,
    /// The handshake failed (including an unknown client key).
    #[error("handshake: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// The client's key is not the one announced for the node it came from.
    #[error("peer at {0} presented a key not announced for it")]
    WrongIdentity(SocketAddr),
}

/// A peer's connection attempt, from [`MeshEndpoint::accept_incoming`].
pub struct IncomingConnection {
    incoming: quinn::Incoming,
    sock: Arc<Inner>,
}

impl IncomingConnection {
    /// Completes the handshake and checks the client's key against the node
    /// the coordinator announced for the address it came from.
    pub async fn finish(self) -> Result<MeshConnection, AcceptError> {
        let conn = self.incoming.await?;
        let remote = conn.remote_address();
        let (node, presence) = {
            let state = self.sock.state();
            let node = state.peers.at(&remote).cloned();
            let presence = node.as_ref().and_then(|n| state.peers.presence(&n.key));
            (node, presence)
        };
        let presented = conn
            .peer_identity()
            .and_then(|id| id.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>().ok())
            .and_then(|certs| certs.first().and_then(|c| tls::certificate_key(c)));
        match (node, presence) {
            (Some(node), Some(presence)) if presented == Some(node.quic_key) => {
                Ok(MeshConnection::watched(node, conn, presence))
            }
            (node, _) => {
                tracing::warn!(
                    %remote,
                    announced = ?node.as_ref().map(|n| (n.id, n.key)),
                    "refused a mesh connection: its key is not the one announced for its address"
                );
                conn.close(crate::close::WRONG_PEER, b"identity mismatch");
                Err(AcceptError::WrongIdentity(remote))
            }
        }
    }
}

/// Why a stream could not be opened or accepted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The connection is gone.
    #[error(transparent)]
    Connection(#[from] quinn::ConnectionError),
    /// Writing the header.
    #[error(transparent)]
    Write(#[from] quinn::WriteError),
    /// Reading the header.
    #[error(transparent)]
    Read(#[from] quinn::ReadExactError),
    /// The header named no known service.
    #[error(transparent)]
    Service(#[from] ServiceParseError),
}

/// WireGuard was already started on this endpoint.
#[derive(Debug, thiserror::Error)]
#[error("WireGuard is already running on this endpoint")]
#[non_exhaustive]
pub struct WireGuardStarted;

/// A mesh node's QUIC endpoint over its magic socket.
pub struct MeshEndpoint {
    /// The magic socket, whose state lock guards the peer map.
    sock: Arc<Inner>,
    node_secret: NodeSecret,
    wireguard: OnceLock<Arc<wg::Shared>>,
    /// Taken first by whatever adds or removes peers or starts WireGuard
    /// (lock order: [`crate::peermap`]).
    peer_updates: Mutex<()>,
    quic: quinn::Endpoint,
    identity: Identity,
    own: own::OwnNode,
    relays: Option<Arc<Relays>>,
    stun: tokio::sync::watch::Sender<StunStatus>,
    portmap: PortMapper,
    _tasks: Vec<AbortOnDropHandle<()>>,
}

impl MeshEndpoint {
    /// Binds the UDP socket, connects to the relay (if any) and starts QUIC.
    pub async fn bind(config: MeshConfig) -> Result<Self, BindError> {
        let udp = socket::bind(config.bind)?;
        let bound = udp.local_addr()?;
        let mut endpoints = Vec::new();
        if config.announce_local {
            endpoints = socket::local_endpoints(bound);
        }
        for &extra in &config.endpoints {
            if !endpoints.contains(&extra) {
                endpoints.push(extra);
            }
        }
        if config.relay_only {
            endpoints.clear();
        }
        let node_key = config.node_secret.public();
        let mut path_config = config.path.clone();
        path_config.relay_only |= config.relay_only;
        let path_wait = path_config.opening_wait;
        let mut paths = PathSelector::new(path_config, node_key, config.disco_secret.clone());
        paths.set_local_endpoints(endpoints.clone());

        let mut tasks = Vec::new();
        let (relay_out, relay_rx) = match config.relays.is_empty() {
            true => (None, None),
            false => {
                let (tx, rx) = tokio::sync::mpsc::channel(magicsock::RELAY_QUEUE);
                (Some(tx), Some(rx))
            }
        };
        let addresses = mesh_addresses(config.node_id);
        let local_vaddr = SocketAddr::new(addresses.ipv6.into(), 1);
        let sock = Inner::new(udp, local_vaddr, paths, relay_out)?;
        // STUN races the relay connection below and everything after it:
        // its answers become endpoints whenever they come.
        let stun_servers = match config.relay_only {
            true => Vec::new(),
            false => config.stun_servers.clone(),
        };
        let (stun, stun_task) = stun::start(sock.clone(), stun_servers, config.stun_timeout);
        tasks.extend(stun_task);
        let mut port_mapping = config.port_mapping.clone();
        if config.relay_only {
            port_mapping.protocols.clear();
        }
        let portmap = PortMapper::start(sock.clone(), bound.port(), port_mapping);
        let relays = match relay_rx {
            Some(rx) => {
                let secret = config.node_secret.to_relay_key();
                let (relays, relay_tasks) =
                    Relays::start(&config.relays, secret, config.home.clone(), sock.clone(), rx)
                        .await?;
                tasks.extend(relay_tasks);
                Some(relays)
            }
            None => None,
        };
        tasks.push(AbortOnDropHandle::new(tokio::spawn(magicsock::drive_timers(sock.clone()))));
        if !path_wait.is_zero() {
            tasks.push(sock.start_openings(path_wait));
        }

        let identity = Identity::new(&config.quic_secret)?;
        // The verifier asks the peer map which QUIC keys are known.
        let server_tls = tls::server_config(&identity, sock.clone())?;
        let server_crypto =
            QuicServerConfig::try_from(server_tls).map_err(|_| TlsError::NoQuicCipherSuite)?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(server_crypto));
        server.transport_config(transport());
        let mut endpoint_config = quinn::EndpointConfig::default();
        // Disco demultiplexing needs the QUIC fixed bit set (docs/protocols/mesh.md).
        endpoint_config.grease_quic_bit(false);
        let quic = quinn::Endpoint::new_with_abstract_socket(
            endpoint_config,
            Some(server),
            Arc::new(MagicSock(sock.clone())),
            Arc::new(quinn::TokioRuntime),
        )?;
        let node = Node {
            id: config.node_id,
            key: node_key,
            disco_key: config.disco_secret.public(),
            quic_key: config.quic_secret.public(),
            preferred_relay: None,
            relay_latency_ms: Default::default(),
            port_mapped: Vec::new(),
            endpoints,
            addresses,
            version: PROTOCOL_VERSION,
        };
        let (own, own_task) =
            own::OwnNode::start(node, config.relay_only, sock.clone(), relays.clone());
        tasks.push(own_task);
        Ok(Self {
            sock,
            node_secret: config.node_secret,
            wireguard: OnceLock::new(),
            peer_updates: Mutex::new(()),
            quic,
            identity,
            own,
            relays,
            stun,
            portmap,
            _tasks: tasks,
        })
    }

    /// The UDP socket's bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.sock.udp_local_addr()
    }

    /// Datagrams kept from senders the coordinator has not announced yet (they
    /// are delivered if it does within a few seconds).
    pub fn early_datagrams(&self) -> usize {
        self.sock.state().peers.early_datagrams()
    }

    /// Where data for `peer` goes now.
    pub fn destination(&self, peer: &NodeKey) -> Option<Destination> {
        self.sock.state().peers.paths().destination(peer, Instant::now())
    }

    /// How long the first direct path to `peer` took to find.
    pub fn time_to_direct(&self, peer: &NodeKey) -> Option<Duration> {
        self.sock.state().peers.paths().time_to_direct(peer)
    }

    /// How the first direct path to `peer` was found (STUN, peer-reflexive, LAN).
    pub fn direct_mechanism(&self, peer: &NodeKey) -> Option<crate::DirectMechanism> {
        self.sock.state().peers.paths().direct_mechanism(peer)
    }

    /// Path changes, as they happen.
    pub fn path_events(&self) -> broadcast::Receiver<PathEvent> {
        self.sock.subscribe()
    }

    /// Connects to `peer`, which must present the QUIC key its record announced.
    pub async fn dial(&self, peer: &NodeKey) -> Result<MeshConnection, DialError> {
        let node =
            self.sock.state().peers.get(peer).cloned().ok_or(DialError::UnknownPeer(*peer))?;
        self.connect(node).await
    }

    /// Connects to the peer the coordinator announced as `node` for the peer
    /// id the caller authorized: only if this endpoint holds that very record
    /// (the node id with these keys), never another node that carries one of
    /// its keys.
    pub async fn dial_node(&self, node: &Node) -> Result<MeshConnection, DialError> {
        let held = self.sock.state().peers.at(&magicsock::virtual_addr(node)).cloned();
        match held {
            Some(held)
                if held.key == node.key
                    && held.quic_key == node.quic_key
                    && held.disco_key == node.disco_key =>
            {
                self.connect(held).await
            }
            _ => Err(DialError::NotAnnounced(node.id)),
        }
    }

    async fn connect(&self, node: Node) -> Result<MeshConnection, DialError> {
        // Taken before the handshake: a withdrawal during it closes the
        // connection as soon as it exists.
        let presence =
            self.sock.state().peers.presence(&node.key).ok_or(DialError::UnknownPeer(node.key))?;
        let tls = tls::client_config(&self.identity, node.quic_key)?;
        let crypto = QuicClientConfig::try_from(tls).map_err(|_| TlsError::NoQuicCipherSuite)?;
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        config.transport_config(transport());
        let conn = self
            .quic
            .connect_with(config, magicsock::virtual_addr(&node), tls::SERVER_NAME)?
            .await?;
        Ok(MeshConnection::watched(node, conn, presence))
    }

    /// The next peer connection, handshake done; its key is checked against
    /// the node it came from. One handshake at a time: a server that must not
    /// wait on a slow peer takes [`Self::accept_incoming`] instead.
    pub async fn accept(&self) -> Result<MeshConnection, AcceptError> {
        self.accept_incoming().await?.finish().await
    }

    /// The next connection attempt, before its handshake, so that a server can
    /// finish each handshake in a task of its own. Fails only once the
    /// endpoint is closed.
    pub async fn accept_incoming(&self) -> Result<IncomingConnection, AcceptError> {
        let incoming = self.quic.accept().await.ok_or(AcceptError::Closed)?;
        Ok(IncomingConnection { incoming, sock: self.sock.clone() })
    }

    /// Closes all connections and waits for the peers to learn of it, and
    /// deletes the port mapping.
    pub async fn close(&self) {
        self.quic.close(crate::close::CLOSING, b"closing");
        self.quic.wait_idle().await;
        self.portmap.release().await;
    }

    /// Takes the node lists of a newer relay map (the regions stay those
    /// of [`MeshConfig::relays`]): a link whose relay node left the map
    /// moves to the region's next node; see [`crate::RegionNodes`].
    pub fn update_relay_nodes(&self, regions: &[RelayRegion]) {
        if let Some(relays) = &self.relays {
            relays.update_nodes(regions);
        }
    }

    /// The port mapping's state ([`MeshConfig::port_mapping`]).
    pub fn port_mapping(&self) -> tokio::sync::watch::Receiver<PortMapStatus> {
        self.portmap.status()
    }
}

/// QUIC transport settings for mesh connections.
fn transport() -> Arc<quinn::TransportConfig> {
    let mut transport = quinn::TransportConfig::default();
    // Keep-alives keep an idle session (an open SSH shell) alive, and keep the
    // path selector's session active so the direct path stays probed.
    transport.keep_alive_interval(Some(Duration::from_secs(10)));
    Arc::new(transport)
}

/// An authenticated QUIC connection to a mesh peer.
///
/// It lasts while the coordinator keeps announcing the peer: when the peer
/// is withdrawn ([`MeshEndpoint::remove_peer`], or a record of the same node
/// id with new keys), the connection is closed at once with
/// [`close::WITHDRAWN`](crate::close::WITHDRAWN) and [`WITHDRAWN_REASON`],
/// which the peer's streams fail with. A task owned by the connection's
/// handles (dropping the last clone stops it) waits for that: quinn has no
/// weak handle that could be kept in the peer map instead.
#[derive(Debug, Clone)]
pub struct MeshConnection {
    peer: Node,
    conn: quinn::Connection,
    /// Set by the watcher before it closes the connection: our side saw the
    /// peer withdrawn (quinn then reports only "locally closed").
    withdrawn_here: Arc<std::sync::atomic::AtomicBool>,
    _withdrawal: Arc<AbortOnDropHandle<()>>,
}

/// The reason phrase a connection to a withdrawn peer is closed with.
pub const WITHDRAWN_REASON: &str =
    "the coordinator withdrew the tunnel (user suspended or deleted, token revoked, or workspace stopped)";

impl MeshConnection {
    /// `conn` to `peer`, closed when `presence` says the peer was withdrawn.
    fn watched(peer: Node, conn: quinn::Connection, presence: Presence) -> Self {
        let watched = conn.clone();
        let key = peer.key;
        let withdrawn_here = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = withdrawn_here.clone();
        let watcher = tokio::spawn(async move {
            tokio::select! {
                biased;
                () = presence.withdrawn() => {
                    tracing::info!(peer = %key, "peer withdrawn: closing its connection");
                    flag.store(true, std::sync::atomic::Ordering::Release);
                    watched.close(crate::close::WITHDRAWN, WITHDRAWN_REASON.as_bytes());
                }
                _ = watched.closed() => {}
            }
        });
        Self { peer, conn, withdrawn_here, _withdrawal: Arc::new(AbortOnDropHandle::new(watcher)) }
    }

    /// The peer's node record.
    pub fn peer(&self) -> &Node {
        &self.peer
    }

    /// The underlying QUIC connection.
    pub fn quic(&self) -> &quinn::Connection {
        &self.conn
    }

    /// The reason phrase, if this connection closed because the coordinator
    /// withdrew one side from the other ([`crate::close::WITHDRAWN`]):
    /// the peer closed it so, or our side did (whichever side heard of the
    /// withdrawal first; both are told).
    pub fn withdrawn_reason(&self) -> Option<String> {
        match self.conn.close_reason()? {
            quinn::ConnectionError::ApplicationClosed(c)
                if c.error_code == crate::close::WITHDRAWN =>
            {
                Some(String::from_utf8_lossy(&c.reason).into_owned())
            }
            quinn::ConnectionError::LocallyClosed
                if self.withdrawn_here.load(std::sync::atomic::Ordering::Acquire) =>
            {
                Some(WITHDRAWN_REASON.to_owned())
            }
            _ => None,
        }
    }

    /// Opens a stream to `service` on the peer.
    pub async fn open(
        &self,
        service: Service,
    ) -> Result<(quinn::SendStream, quinn::RecvStream), StreamError> {
        let (mut send, recv) = self.conn.open_bi().await?;
        send.write_all(&service.header()).await?;
        Ok((send, recv))
    }

    /// The next stream the peer opened, with the service it names.
    pub async fn accept(
        &self,
    ) -> Result<(Service, quinn::SendStream, quinn::RecvStream), StreamError> {
        let (send, mut recv) = self.conn.accept_bi().await?;
        let mut len = [0u8; 1];
        recv.read_exact(&mut len).await?;
        let mut name = vec![0u8; usize::from(len[0])];
        recv.read_exact(&mut name).await?;
        Ok((Service::from_header_name(&name)?, send, recv))
    }
}
