//! The coordination protocol (`docs/protocols/coordination.md`, version 1):
//! its JSON messages, and the reusable client that `coder` and `coder-agent`
//! keep connected to the coordinator.
//!
//! [`Coordinator::connect`] dials the coordinator's WebSocket, waits for the
//! `hello` that assigns this peer its [`NodeId`], and hands back a
//! [`Coordinator`] handle (publish the node, open and close tunnels) and a
//! [`PeerUpdates`] stream. A background task owned by the handle keeps the
//! connection up: when it drops it emits [`PeerUpdate::CoordinatorUnreachable`],
//! reconnects with jittered exponential backoff, and re-sends the latest node
//! and every open tunnel. Clients ask to resume their previous peer id, so
//! their node id (and mesh addresses) survive a reconnect, even to another
//! replica. Mesh connections are none of this module's business: while the
//! coordinator is away, existing connections keep running on the last nodes.

use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{SinkExt, Stream, StreamExt};
use mesh::{Node, NodeId};
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::task::AbortOnDropHandle;
use url::Url;
use uuid::Uuid;

use crate::SESSION_TOKEN_HEADER;

/// The protocol version this crate speaks (the `version` query parameter and
/// the `hello` message carry it).
pub const PROTOCOL_VERSION: u16 = 1;

/// The node id of a peer: the first 8 bytes of SHA-256 over the peer's
/// UUID, big-endian (never 0). Both sides can compute it (a client knows an
/// agent's mesh addresses before its node arrives); the coordinator tells
/// the peer in `hello` anyway.
pub fn node_id(peer: Uuid) -> NodeId {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(peer.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    NodeId(u64::from_be_bytes(bytes).max(1))
}

/// Largest message either side sends or accepts.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// A message from the coordinator to a peer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ServerMessage {
    /// First message on every connection.
    Hello {
        version: u16,
        /// The peer's id: the agent id, or the client connection's id.
        peer_id: Uuid,
        /// The node id this peer must put in its node (derived from `peer_id`).
        node_id: NodeId,
        /// The relay map, opaque to this protocol.
        relay_map: serde_json::Value,
    },
    /// A peer we share a tunnel with published (or re-published) its node.
    Node { peer: Uuid, node: Node },
    /// A peer went away for good, or the tunnel to it closed.
    Disconnected { peer: Uuid, reason: String },
    /// The coordinator lost contact with a peer (its replica died). Keep
    /// using its last node; a `node` follows when it is back.
    Lost { peer: Uuid },
    /// A request was refused; the connection stays up.
    Error {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        peer: Option<Uuid>,
        message: String,
    },
}

/// A message from a peer to the coordinator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ClientMessage {
    /// This peer's node; its id must be the assigned one.
    Node { node: Node },
    /// Open a tunnel to an agent (clients only).
    AddTunnel { peer: Uuid },
    /// Close a tunnel.
    RemoveTunnel { peer: Uuid },
}

impl ServerMessage {
    /// Parses one message: `serde_json::from_str`, but a `node` message (a
    /// burst of updates is thousands of them) is read straight into its
    /// fields, where the internally tagged enum would first buffer the whole
    /// message into a tree of values. Anything else takes the general path.
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        #[derive(Deserialize)]
        struct NodeMessage {
            #[serde(rename = "type")]
            _type: NodeTag,
            peer: Uuid,
            node: Node,
        }
        if let Ok(m) = serde_json::from_str::<NodeMessage>(text) {
            return Ok(ServerMessage::Node { peer: m.peer, node: m.node });
        }
        serde_json::from_str(text)
    }
}

impl ClientMessage {
    /// Parses one message, `node` messages straight into their fields (as
    /// [`ServerMessage::parse`]).
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        #[derive(Deserialize)]
        struct NodeMessage {
            #[serde(rename = "type")]
            _type: NodeTag,
            node: Node,
        }
        if let Ok(m) = serde_json::from_str::<NodeMessage>(text) {
            return Ok(ClientMessage::Node { node: m.node });
        }
        serde_json::from_str(text)
    }
}

/// The `type` of a `node` message.
#[derive(Deserialize)]
enum NodeTag {
    #[serde(rename = "node")]
    Node,
}

/// Which endpoint to coordinate through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerKind {
    /// A workspace agent, authenticated by its agent token.
    Agent,
    /// A user's client that opens tunnels to any agent it may use.
    Client,
    /// A user's client for exactly one agent (the tunnel opens implicitly).
    SingleAgent(Uuid),
    /// `coderd` itself (app proxy, web terminal), with the per-process
    /// secret it hands only to itself; it may open tunnels to any live agent.
    Coderd,
}

/// What the [`PeerUpdates`] stream yields.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum PeerUpdate {
    /// (Re)connected; put `node_id` (and its mesh addresses) in the node.
    Connected { peer_id: Uuid, node_id: NodeId, relay_map: serde_json::Value },
    /// A peer's current node.
    Node { peer: Uuid, node: Node },
    /// A peer is gone; tear down what was built for it.
    Disconnected { peer: Uuid, reason: String },
    /// The coordinator lost the peer; keep its last node.
    Lost { peer: Uuid },
    /// The coordinator refused a request (e.g. a tunnel to a foreign agent).
    Refused { peer: Option<Uuid>, message: String },
    /// The connection to the coordinator dropped; reconnecting.
    CoordinatorUnreachable { error: String },
}

/// Connecting to the coordinator failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    #[error("invalid coordinator URL: {0}")]
    InvalidUrl(String),
    #[error("cannot reach the coordinator: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot reach the coordinator: {0}")]
    Connect(#[from] derp::proxy::ProxyError),
    #[error("TLS setup failed: {0}")]
    Tls(#[from] rustls::Error),
    #[error(transparent)]
    TlsRoots(#[from] derp::client::tls::TlsRootsError),
    #[error("coordinator refused the connection with HTTP {status}: {body}")]
    Refused { status: u16, body: String },
    #[error("websocket error: {0}")]
    WebSocket(#[from] tungstenite::Error),
    #[error("coordinator broke the protocol: {0}")]
    Protocol(String),
    #[error("the coordinator connection task stopped")]
    Stopped,
}

impl ConnectError {
    /// Whether retrying cannot help (bad credentials, URL, version or agent).
    fn is_permanent(&self) -> bool {
        match self {
            ConnectError::InvalidUrl(_) => true,
            ConnectError::Refused { status, .. } => matches!(status, 400 | 401 | 403 | 404),
            _ => false,
        }
    }
}

/// A handle to the coordination connection. Dropping it (and every clone)
/// closes the connection.
#[derive(Debug, Clone)]
pub struct Coordinator {
    node: Arc<watch::Sender<Option<Node>>>,
    tunnels: Arc<watch::Sender<BTreeSet<Uuid>>>,
    node_sent: Arc<std::sync::Mutex<Option<std::time::Instant>>>,
    _task: Arc<AbortOnDropHandle<()>>,
}

/// The stream of updates from the coordinator.
#[derive(Debug)]
pub struct PeerUpdates {
    rx: mpsc::UnboundedReceiver<PeerUpdate>,
}

impl PeerUpdates {
    /// The next update; `None` once the connection task has stopped for good
    /// (the coordinator refused the credentials or the agent on reconnect:
    /// token revoked, workspace deleted).
    pub async fn recv(&mut self) -> Option<PeerUpdate> {
        self.rx.recv().await
    }
}

impl Stream for PeerUpdates {
    type Item = PeerUpdate;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<PeerUpdate>> {
        self.rx.poll_recv(cx)
    }
}

impl Coordinator {
    /// Connects to the coordinator at `url` (the deployment's access URL)
    /// with a session or agent token. Returns once the first `hello` arrived
    /// (it is the first item of the stream), so bad credentials fail here.
    pub async fn connect(
        url: &Url,
        token: &str,
        kind: PeerKind,
    ) -> Result<(Coordinator, PeerUpdates), ConnectError> {
        Self::connect_with_tls(url, token, kind, None).await
    }

    /// [`Coordinator::connect`] trusting the roots of `tls` for `https`
    /// URLs; `None`: [`derp::client::tls::client_config`] (the system's
    /// roots, or those `SSL_CERT_FILE` names).
    pub async fn connect_with_tls(
        url: &Url,
        token: &str,
        kind: PeerKind,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<(Coordinator, PeerUpdates), ConnectError> {
        let (node, _) = watch::channel(None);
        let (tunnels, _) = watch::channel(BTreeSet::new());
        let (updates_tx, rx) = mpsc::unbounded_channel();
        let mut actor = Actor {
            url: url.clone(),
            token: token.to_owned(),
            kind,
            tls,
            resume: None,
            node: node.subscribe(),
            tunnels: tunnels.subscribe(),
            updates: updates_tx,
            node_sent: Arc::default(),
        };
        let node_sent = actor.node_sent.clone();
        let ws = actor.dial().await?;
        let task = tokio::spawn(actor.run(ws));
        let handle = Coordinator {
            node: Arc::new(node),
            tunnels: Arc::new(tunnels),
            node_sent,
            _task: Arc::new(AbortOnDropHandle::new(task)),
        };
        Ok((handle, PeerUpdates { rx }))
    }

    /// Publishes this peer's node (now, and again after every reconnect).
    pub fn update_node(&self, node: Node) {
        self.node.send_replace(Some(node));
    }

    /// When the latest node was last written to the coordinator's socket
    /// (benchmarks measure from it).
    pub fn node_sent_at(&self) -> Option<std::time::Instant> {
        *self.node_sent.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens a tunnel to an agent; kept across reconnects until removed.
    pub fn add_tunnel(&self, agent: Uuid) {
        self.tunnels.send_if_modified(|t| t.insert(agent));
    }

    /// Closes a tunnel.
    pub fn remove_tunnel(&self, agent: Uuid) {
        self.tunnels.send_if_modified(|t| t.remove(&agent));
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
type WsStream = tokio_tungstenite::WebSocketStream<Box<dyn Io>>;

struct Actor {
    url: Url,
    token: String,
    kind: PeerKind,
    /// Roots for `wss`; `None`: the process-wide default.
    tls: Option<Arc<rustls::ClientConfig>>,
    /// The client peer id to ask to resume after a reconnect.
    resume: Option<Uuid>,
    node: watch::Receiver<Option<Node>>,
    tunnels: watch::Receiver<BTreeSet<Uuid>>,
    updates: mpsc::UnboundedSender<PeerUpdate>,
    /// [`Coordinator::node_sent_at`].
    node_sent: Arc<std::sync::Mutex<Option<std::time::Instant>>>,
}

/// Why a session ended.
enum End {
    /// Nobody listens any more.
    Stopped,
    Dropped(String),
}

impl Actor {
    async fn run(mut self, first: WsStream) {
        let mut ws = Some(first);
        let mut backoff = FIRST_BACKOFF;
        loop {
            if let Some(socket) = ws.take() {
                let started = tokio::time::Instant::now();
                match self.session(socket).await {
                    End::Stopped => return,
                    End::Dropped(error) => {
                        tracing::info!(%error, "coordinator connection dropped; reconnecting");
                        if self.emit(PeerUpdate::CoordinatorUnreachable { error }).is_err() {
                            return;
                        }
                        // Only a session that lasted starts the backoff over: one the
                        // coordinator ends at once (it refused our node, say) would
                        // otherwise become a reconnect loop at 10 per second.
                        if started.elapsed() >= HEALTHY_SESSION {
                            backoff = FIRST_BACKOFF;
                        }
                    }
                }
            }
            let jitter = rand::thread_rng().gen_range(0..=backoff.as_millis() as u64 / 2);
            tokio::time::sleep(backoff + Duration::from_millis(jitter)).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            match self.dial().await {
                Ok(socket) => ws = Some(socket),
                Err(e) if e.is_permanent() => {
                    // Revoked credentials or a deleted workspace: retrying cannot help.
                    tracing::warn!(error = %e, "coordinator refused us for good; giving up");
                    let _ = self.emit(PeerUpdate::CoordinatorUnreachable { error: e.to_string() });
                    return;
                }
                Err(e) => tracing::debug!(error = %e, "reconnecting to the coordinator failed"),
            }
        }
    }

    fn emit(&self, update: PeerUpdate) -> Result<(), ()> {
        self.updates.send(update).map_err(|_| ())
    }

    /// Dials and reads the `hello`, which it emits.
    async fn dial(&mut self) -> Result<WsStream, ConnectError> {
        let url = self.endpoint()?;
        let mut req = url.as_str().into_client_request()?;
        let token = self.token.parse().map_err(|_| ConnectError::InvalidUrl("bad token".into()))?;
        req.headers_mut().insert(SESSION_TOKEN_HEADER, token);
        let io = connect_io(&url, self.tls.as_ref()).await?;
        let mut config = WebSocketConfig::default();
        config.max_message_size = Some(MAX_MESSAGE_BYTES);
        config.max_frame_size = Some(MAX_MESSAGE_BYTES);
        // The default read chunk is 128 KiB (zeroed); messages are small.
        config.read_buffer_size = 4 * 1024;
        let (mut ws, _) =
            match tokio_tungstenite::client_async_with_config(req, io, Some(config)).await {
                Ok(ok) => ok,
                Err(tungstenite::Error::Http(resp)) => {
                    let body = resp
                        .body()
                        .as_ref()
                        .map(|b| String::from_utf8_lossy(b).into_owned())
                        .unwrap_or_default();
                    return Err(ConnectError::Refused { status: resp.status().as_u16(), body });
                }
                Err(e) => return Err(e.into()),
            };
        let hello = tokio::time::timeout(Duration::from_secs(10), next_message(&mut ws))
            .await
            .map_err(|_| ConnectError::Protocol("no hello within 10s".into()))??;
        let ServerMessage::Hello { version, peer_id, node_id, relay_map } = hello else {
            return Err(ConnectError::Protocol("first message was not hello".into()));
        };
        if version != PROTOCOL_VERSION {
            return Err(ConnectError::Protocol(format!("unsupported version {version}")));
        }
        if matches!(self.kind, PeerKind::Client | PeerKind::SingleAgent(_) | PeerKind::Coderd) {
            self.resume = Some(peer_id);
        }
        self.emit(PeerUpdate::Connected { peer_id, node_id, relay_map })
            .map_err(|()| ConnectError::Stopped)?;
        Ok(ws)
    }

    fn endpoint(&self) -> Result<Url, ConnectError> {
        let mut url = self.url.clone();
        let scheme = match url.scheme() {
            "http" | "ws" => "ws",
            "https" | "wss" => "wss",
            other => return Err(ConnectError::InvalidUrl(format!("unsupported scheme {other}"))),
        };
        url.set_scheme(scheme).map_err(|()| ConnectError::InvalidUrl(self.url.to_string()))?;
        let path = match self.kind {
            PeerKind::Agent => "api/v2/workspaceagents/me/coordinate".to_owned(),
            PeerKind::SingleAgent(id) => format!("api/v2/workspaceagents/{id}/coordinate"),
            PeerKind::Client => "api/v2/tailnet".to_owned(),
            PeerKind::Coderd => "api/v2/coderd/coordinate".to_owned(),
        };
        let base = url.path().trim_end_matches('/').to_owned();
        url.set_path(&format!("{base}/{path}"));
        {
            let mut q = url.query_pairs_mut();
            q.clear().append_pair("version", &PROTOCOL_VERSION.to_string());
            if let Some(id) = self.resume {
                q.append_pair("resume", &id.to_string());
            }
        }
        Ok(url)
    }

    /// Runs one connection until it drops.
    async fn session(&mut self, mut ws: WsStream) -> End {
        let mut sent_tunnels = BTreeSet::new();
        self.node.mark_changed();
        self.tunnels.mark_changed();
        loop {
            tokio::select! {
                changed = self.node.changed() => {
                    if changed.is_err() {
                        return End::Stopped;
                    }
                    let node = self.node.borrow_and_update().clone();
                    if let Some(node) = node {
                        if let Err(e) = send(&mut ws, &ClientMessage::Node { node }).await {
                            return End::Dropped(e.to_string());
                        }
                        let now = std::time::Instant::now();
                        *self.node_sent.lock().unwrap_or_else(|p| p.into_inner()) = Some(now);
                    }
                }
                changed = self.tunnels.changed() => {
                    if changed.is_err() {
                        return End::Stopped;
                    }
                    let want = self.tunnels.borrow_and_update().clone();
                    if let Err(e) = self.sync_tunnels(&mut ws, &mut sent_tunnels, want).await {
                        return End::Dropped(e.to_string());
                    }
                }
                msg = next_message(&mut ws) => {
                    let update = match msg {
                        Ok(ServerMessage::Node { peer, node }) => PeerUpdate::Node { peer, node },
                        Ok(ServerMessage::Disconnected { peer, reason }) => {
                            PeerUpdate::Disconnected { peer, reason }
                        }
                        Ok(ServerMessage::Lost { peer }) => PeerUpdate::Lost { peer },
                        Ok(ServerMessage::Error { peer, message }) => {
                            PeerUpdate::Refused { peer, message }
                        }
                        Ok(ServerMessage::Hello { .. }) => {
                            return End::Dropped("unexpected second hello".into());
                        }
                        Err(e) => return End::Dropped(e.to_string()),
                    };
                    if self.emit(update).is_err() {
                        return End::Stopped;
                    }
                }
            }
        }
    }

    async fn sync_tunnels(
        &self,
        ws: &mut WsStream,
        sent: &mut BTreeSet<Uuid>,
        want: BTreeSet<Uuid>,
    ) -> Result<(), ConnectError> {
        for peer in sent.difference(&want) {
            send(ws, &ClientMessage::RemoveTunnel { peer: *peer }).await?;
        }
        for peer in want.difference(sent) {
            send(ws, &ClientMessage::AddTunnel { peer: *peer }).await?;
        }
        *sent = want;
        Ok(())
    }
}

async fn send(ws: &mut WsStream, msg: &ClientMessage) -> Result<(), ConnectError> {
    let text = serde_json::to_string(msg).map_err(|e| ConnectError::Protocol(e.to_string()))?;
    ws.send(Message::text(text)).await?;
    Ok(())
}

/// The next protocol message; pings are answered by tungstenite itself.
async fn next_message(ws: &mut WsStream) -> Result<ServerMessage, ConnectError> {
    loop {
        match ws.next().await {
            None => return Err(ConnectError::Protocol("connection closed".into())),
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(Message::Text(text))) => {
                return ServerMessage::parse(text.as_str())
                    .map_err(|e| ConnectError::Protocol(format!("bad message: {e}")));
            }
            Some(Ok(Message::Close(frame))) => {
                let reason = frame.map(|f| f.reason.to_string()).unwrap_or_default();
                return Err(ConnectError::Protocol(format!("closed by coordinator: {reason}")));
            }
            Some(Ok(Message::Binary(_))) => {
                return Err(ConnectError::Protocol("unexpected binary message".into()));
            }
            Some(Ok(_)) => {}
        }
    }
}

/// How long opening the TCP (or proxy) connection to the coordinator may
/// take: a network that drops SYNs fails here instead of after the kernel's
/// two minutes of retries.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The first wait before reconnecting; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A session at least this long resets the backoff when it drops.
const HEALTHY_SESSION: Duration = Duration::from_secs(10);

async fn connect_io(
    url: &Url,
    tls_config: Option<&Arc<rustls::ClientConfig>>,
) -> Result<Box<dyn Io>, ConnectError> {
    let host = url.host_str().ok_or_else(|| ConnectError::InvalidUrl(url.to_string()))?;
    let port = url.port_or_known_default().unwrap_or(80);
    let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
    let tls = url.scheme() == "wss";
    // Through the HTTP(S)_PROXY the environment names, as API calls go.
    let tcp = derp::proxy::connect_tcp(tls, &host, port, CONNECT_TIMEOUT).await?;
    if !tls {
        return Ok(Box::new(tcp));
    }
    let name = rustls::pki_types::ServerName::try_from(host.clone())
        .map_err(|_| ConnectError::InvalidUrl(format!("{host} is not a TLS server name")))?;
    let config = match tls_config {
        Some(config) => config.clone(),
        None => derp::client::tls::client_config()?,
    };
    let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await?;
    Ok(Box::new(tls))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn client_message_json() {
        let peer = Uuid::from_u128(0x1234);
        let json = serde_json::to_string(&ClientMessage::AddTunnel { peer }).unwrap();
        assert_eq!(json, r#"{"type":"add_tunnel","peer":"00000000-0000-0000-0000-000000001234"}"#);
        let back: ClientMessage = serde_json::from_str(&json).unwrap();
        assert_eq!(back, ClientMessage::AddTunnel { peer });
        assert!(serde_json::from_str::<ClientMessage>(r#"{"type":"hack"}"#).is_err());
    }

    #[test]
    fn server_message_json() {
        let peer = Uuid::from_u128(7);
        let hello = ServerMessage::Hello {
            version: 1,
            peer_id: peer,
            node_id: NodeId(42),
            relay_map: serde_json::Value::Null,
        };
        assert_eq!(
            serde_json::to_string(&hello).unwrap(),
            r#"{"type":"hello","version":1,"peer_id":"00000000-0000-0000-0000-000000000007","node_id":42,"relay_map":null}"#
        );
        let lost = serde_json::to_string(&ServerMessage::Lost { peer }).unwrap();
        assert_eq!(lost, r#"{"type":"lost","peer":"00000000-0000-0000-0000-000000000007"}"#);
        let err = ServerMessage::Error { peer: None, message: "no".into() };
        assert_eq!(serde_json::to_string(&err).unwrap(), r#"{"type":"error","message":"no"}"#);
    }

    #[test]
    fn node_messages_parse_as_the_general_path_does() {
        let peer = Uuid::from_u128(7);
        let node: Node = serde_json::from_value(serde_json::json!({
            "id": 5,
            "key": format!("nodekey:{}", "11".repeat(32)),
            "disco_key": format!("discokey:{}", "22".repeat(32)),
            "quic_key": format!("quickey:{}", "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"),
            "preferred_relay": 1,
            "endpoints": ["192.0.2.1:41641"],
            "addresses": mesh::mesh_addresses(NodeId(5)),
            "version": 1,
        }))
        .unwrap();
        let server = ServerMessage::Node { peer, node: node.clone() };
        let client = ClientMessage::Node { node: node.clone() };
        let server_json = serde_json::to_string(&server).unwrap();
        let client_json = serde_json::to_string(&client).unwrap();
        assert_eq!(ServerMessage::parse(&server_json).unwrap(), server);
        assert_eq!(ClientMessage::parse(&client_json).unwrap(), client);
        // Fields in another order, and unknown ones, as serde's own path takes them.
        let node_json = serde_json::to_string(&node).unwrap();
        let reordered =
            format!(r#"{{"node":{node_json},"extra":1,"peer":"{peer}","type":"node"}}"#);
        assert_eq!(ServerMessage::parse(&reordered).unwrap(), server);
        let reordered = format!(r#"{{"node":{node_json},"type":"node"}}"#);
        assert_eq!(ClientMessage::parse(&reordered).unwrap(), client);
        // Other messages, and broken ones, take the general path.
        let lost = r#"{"type":"lost","peer":"00000000-0000-0000-0000-000000000007"}"#;
        assert_eq!(ServerMessage::parse(lost).unwrap(), ServerMessage::Lost { peer });
        let add = r#"{"type":"add_tunnel","peer":"00000000-0000-0000-0000-000000000007"}"#;
        assert_eq!(ClientMessage::parse(add).unwrap(), ClientMessage::AddTunnel { peer });
        let bad_key = client_json.replace("quickey:d75a", "quickey:zz5a");
        assert!(ClientMessage::parse(&bad_key).is_err());
        assert!(ClientMessage::parse(&client_json.replace("\"node\",", "\"nod\",")).is_err());
        assert!(ClientMessage::parse(r#"{"type":"node"}"#).is_err());
    }

    #[test]
    fn endpoints() {
        let (node, _) = watch::channel(None);
        let (tunnels, _) = watch::channel(BTreeSet::new());
        let mut actor = Actor {
            url: Url::parse("https://coder.example.com/").unwrap(),
            token: "t".into(),
            kind: PeerKind::Agent,
            tls: None,
            resume: None,
            node: node.subscribe(),
            tunnels: tunnels.subscribe(),
            updates: mpsc::unbounded_channel().0,
            node_sent: Arc::default(),
        };
        assert_eq!(
            actor.endpoint().unwrap().as_str(),
            "wss://coder.example.com/api/v2/workspaceagents/me/coordinate?version=1"
        );
        actor.kind = PeerKind::Client;
        actor.resume = Some(Uuid::from_u128(1));
        actor.url = Url::parse("http://127.0.0.1:3000").unwrap();
        assert_eq!(
            actor.endpoint().unwrap().as_str(),
            "ws://127.0.0.1:3000/api/v2/tailnet?version=1&resume=00000000-0000-0000-0000-000000000001"
        );
    }
}
