//! The relay client: a plain async API over one relay connection that
//! reconnects by itself.
//!
//! [`Client::connect`] dials once (so configuration errors surface at once)
//! and then owns one background task that reads frames, answers pings,
//! sends keepalives and, when the connection breaks, redials with backoff
//! (honouring the relay's `Restarting` hint). Sending writes straight to the
//! connection under a lock, and [`Client::send_many`] writes a whole batch
//! of packets with one write; received packets and events wait in a bounded
//! queue for [`Client::recv`] / [`Client::recv_event`] (full queue: dropped
//! and counted, like UDP). While disconnected, [`Client::send`] fails fast
//! with [`SendError::NotConnected`]: callers treat it as packet loss.

pub(crate) mod dial;
pub mod tls;
mod url;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::timeout;
use tokio_util::task::AbortOnDropHandle;

pub use dial::{ConnectError, Transport};
pub use url::{InvalidRelayUrl, RelayUrl};

use crate::conn::{ConnError, FrameWriter};
use crate::key::{MeshKey, PublicKey, SecretKey};
use crate::proto::{Frame, PeerGoneReason, MAX_PACKET_SIZE};

mod task;

/// How to connect to a relay. Start from [`ClientConfig::new`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientConfig {
    pub url: RelayUrl,
    /// The node key this client proves it holds.
    pub secret_key: SecretKey,
    pub transport: Transport,
    /// TLS settings for `https` relays; when `None`, [`tls::client_config`]
    /// (the system's roots, or those `SSL_CERT_FILE` names).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Only for relay-to-relay links.
    pub mesh_key: Option<MeshKey>,
    pub connect_timeout: Duration,
    pub write_timeout: Duration,
    pub keepalive_interval: Duration,
    /// No frame from the relay for this long means the connection is dead.
    pub idle_timeout: Duration,
    /// Received packets and events buffered for `recv`.
    pub recv_queue_len: usize,
    pub max_backoff: Duration,
}

impl ClientConfig {
    pub fn new(url: RelayUrl, secret_key: SecretKey) -> Self {
        Self {
            url,
            secret_key,
            transport: Transport::Auto,
            tls: None,
            mesh_key: None,
            connect_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(5),
            keepalive_interval: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(150),
            recv_queue_len: 1024,
            max_backoff: Duration::from_secs(10),
        }
    }
}

/// A packet relayed to us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedPacket {
    pub src: PublicKey,
    pub data: Bytes,
}

/// Something the relay told us.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    Packet(ReceivedPacket),
    /// A peer we sent to left the relay, or was never there.
    PeerGone {
        key: PublicKey,
        reason: PeerGoneReason,
    },
    /// The relay reports a problem (empty: healthy again).
    Health {
        problem: String,
    },
    /// The relay is restarting; the client reconnects by itself.
    Restarting {
        reconnect_in: Duration,
        try_for: Duration,
    },
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    #[error("not connected to the relay (reconnecting)")]
    NotConnected,
    #[error("packet of {len} bytes is over the {MAX_PACKET_SIZE} byte limit")]
    TooLarge { len: usize },
    #[error("write to relay timed out")]
    Timeout,
    #[error(transparent)]
    Conn(#[from] ConnError),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecvError {
    /// The client stopped for good: closed, or replaced by a newer
    /// connection for the same key elsewhere.
    #[error("relay client is closed")]
    Closed,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PingError {
    #[error(transparent)]
    Send(#[from] SendError),
    #[error("no pong in time")]
    Timeout,
    #[error("connection dropped before the pong")]
    Disconnected,
}

/// State shared by the handle and its background task.
struct Shared {
    config: ClientConfig,
    writer: tokio::sync::Mutex<Option<FrameWriter>>,
    events: tokio::sync::Mutex<mpsc::Receiver<Event>>,
    pings: Mutex<HashMap<[u8; 8], oneshot::Sender<()>>>,
    preferred: AtomicBool,
    server_key: Mutex<Option<PublicKey>>,
    connected: watch::Sender<bool>,
    dropped: AtomicU64,
    /// Set once a connection needed WebSocket: later redials go straight there.
    websocket: AtomicBool,
}

impl Shared {
    async fn write(&self, frame: &Frame) -> Result<(), SendError> {
        self.write_all(std::iter::once(frame)).await
    }

    /// Writes `frames` with one flush.
    async fn write_all<'a>(
        &self,
        frames: impl IntoIterator<Item = &'a Frame>,
    ) -> Result<(), SendError> {
        let mut guard = self.writer.lock().await;
        let writer = guard.as_mut().ok_or(SendError::NotConnected)?;
        let write = async {
            for frame in frames {
                writer.feed(frame).await?;
            }
            writer.flush().await
        };
        let result = match timeout(self.config.write_timeout, write).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(err)) => SendError::Conn(err),
            Err(_) => SendError::Timeout,
        };
        // The connection is broken; the reader notices and reconnects.
        *guard = None;
        Err(result)
    }
}

/// A connection to one relay, reconnecting as needed. Dropping it closes
/// the connection and stops its task.
pub struct Client {
    shared: Arc<Shared>,
    public_key: PublicKey,
    task: AbortOnDropHandle<()>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.shared.config.url)
            .field("public_key", &self.public_key)
            .finish()
    }
}

impl Client {
    /// Connects and proves our key; fails if this first attempt fails.
    pub async fn connect(config: ClientConfig) -> Result<Self, ConnectError> {
        let dialed = task::dial_config(&config, false).await?;
        let (events_tx, events_rx) = mpsc::channel(config.recv_queue_len.max(1));
        let public_key = config.secret_key.public();
        let shared = Arc::new(Shared {
            config,
            writer: tokio::sync::Mutex::new(Some(dialed.writer)),
            events: tokio::sync::Mutex::new(events_rx),
            pings: Mutex::default(),
            preferred: AtomicBool::new(false),
            server_key: Mutex::new(Some(dialed.server_key)),
            connected: watch::Sender::new(true),
            dropped: AtomicU64::new(0),
            websocket: AtomicBool::new(dialed.websocket),
        });
        let task = tokio::spawn(task::run(shared.clone(), events_tx, dialed.reader));
        Ok(Self { shared, public_key, task: AbortOnDropHandle::new(task) })
    }

    pub fn public_key(&self) -> PublicKey {
        self.public_key
    }

    /// The relay's key, once connected.
    pub fn server_key(&self) -> Option<PublicKey> {
        *self.shared.server_key.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_connected(&self) -> bool {
        *self.shared.connected.borrow()
    }

    /// Watch this to learn of disconnects and reconnects.
    pub fn connection_changes(&self) -> watch::Receiver<bool> {
        self.shared.connected.subscribe()
    }

    /// Whether this client talks WebSocket (forced, or after a fallback).
    pub fn is_websocket(&self) -> bool {
        self.shared.websocket.load(Ordering::Relaxed)
    }

    /// Packets dropped because `recv` was not keeping up.
    pub fn dropped_packets(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Sends `data` to the peer holding `dst`, via the relay.
    pub async fn send(&self, dst: PublicKey, data: impl Into<Bytes>) -> Result<(), SendError> {
        let data = data.into();
        if data.len() > MAX_PACKET_SIZE {
            return Err(SendError::TooLarge { len: data.len() });
        }
        self.shared.write(&Frame::SendPacket { dst, data }).await
    }

    /// Sends each `(dst, data)` via the relay with one write: what a busy
    /// link should use. All or nothing: a packet over the limit fails the
    /// batch before anything is sent.
    pub async fn send_many(
        &self,
        packets: impl IntoIterator<Item = (PublicKey, Bytes)>,
    ) -> Result<(), SendError> {
        let frames = packets
            .into_iter()
            .map(|(dst, data)| {
                if data.len() > MAX_PACKET_SIZE {
                    return Err(SendError::TooLarge { len: data.len() });
                }
                Ok(Frame::SendPacket { dst, data })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if frames.is_empty() {
            return Ok(());
        }
        self.shared.write_all(&frames).await
    }

    /// The next packet relayed to us; other events are skipped.
    pub async fn recv(&self) -> Result<ReceivedPacket, RecvError> {
        loop {
            if let Event::Packet(packet) = self.recv_event().await? {
                return Ok(packet);
            }
        }
    }

    /// The next packet or relay event.
    pub async fn recv_event(&self) -> Result<Event, RecvError> {
        self.shared.events.lock().await.recv().await.ok_or(RecvError::Closed)
    }

    /// Tells the relay whether it is our home; remembered across reconnects.
    pub async fn note_preferred(&self, preferred: bool) -> Result<(), SendError> {
        self.shared.preferred.store(preferred, Ordering::Relaxed);
        match self.shared.write(&Frame::NotePreferred { preferred }).await {
            // Sent again on reconnect.
            Err(SendError::NotConnected) => Ok(()),
            other => other,
        }
    }

    /// Round-trip time to the relay.
    pub async fn ping(&self, wait: Duration) -> Result<Duration, PingError> {
        let data: [u8; 8] = rand::random();
        let (tx, rx) = oneshot::channel();
        self.shared.pings.lock().unwrap_or_else(|p| p.into_inner()).insert(data, tx);
        let start = Instant::now();
        let result = async {
            self.shared.write(&Frame::Ping { data }).await?;
            match timeout(wait, rx).await {
                Ok(Ok(())) => Ok(start.elapsed()),
                Ok(Err(_)) => Err(PingError::Disconnected),
                Err(_) => Err(PingError::Timeout),
            }
        }
        .await;
        self.shared.pings.lock().unwrap_or_else(|p| p.into_inner()).remove(&data);
        result
    }

    /// Closes the connection and stops reconnecting.
    pub async fn close(self) {
        self.task.abort();
        if let Some(mut writer) = self.shared.writer.lock().await.take() {
            writer.close().await;
        }
    }
}
