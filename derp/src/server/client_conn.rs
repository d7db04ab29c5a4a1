//! One accepted relay connection, from handshake to close.
//!
//! After the handshake the connection runs two futures in one task: the
//! read loop routes the peer's frames through the [`Registry`]; the write
//! loop drains this connection's outbox (control frames first, then packet
//! batches) and sends keepalives. They never wait on each other, so a peer
//! that stops reading only fills its own queue. The task ends on error,
//! idle timeout, replacement by a newer connection, or relay shutdown.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, info_span, Instrument};

use super::queue::PacketQueue;
use super::ratelimit::TokenBucket;
use super::registry::{ConnId, Outbox};
use super::stats::bump;
use super::verify::Verdict;
use super::Shared;
use crate::conn::{ConnError, FrameReader, FrameWriter};
use crate::key::PublicKey;
use crate::proto::{
    ClientInfo, Frame, HandshakeError, ServerInfo, CHALLENGE_LEN, PROTOCOL_VERSION,
};

/// Control frames (pong, peer gone/present, health) queued per connection.
const CONTROL_QUEUE_LEN: usize = 1024;
/// Packets written per flush at most: a batch is one write (or a few
/// WebSocket messages), so syscalls per packet fall as load rises.
const MAX_BATCH: usize = 128;
/// Bytes of packets a connection routes before it lets the others have a
/// turn. Without it a sender whose socket is always full would route up to
/// tokio's whole budget of reads (128 × 64 KiB) per turn, and every other
/// connection, paced sender or waiting receiver, would wait that long: each
/// connection gets about one read's worth per round instead.
const READ_QUANTUM: usize = 64 * 1024;

/// Why a connection ended; logged, never sent except `Refused`.
#[derive(Debug, thiserror::Error)]
enum End {
    #[error("{0}")]
    Conn(#[from] ConnError),
    #[error("handshake failed: {0}")]
    Handshake(#[from] HandshakeError),
    #[error("handshake timed out")]
    HandshakeTimeout,
    #[error("refused: {0}")]
    Refused(String),
    #[error("no frame for the idle timeout")]
    Idle,
    #[error("write stalled past the write timeout")]
    WriteTimeout,
    #[error("replaced by a newer connection")]
    Replaced,
    #[error("relay shutting down")]
    Shutdown,
}

/// Runs one connection whose HTTP upgrade is done.
pub(crate) async fn serve_conn(
    shared: Arc<Shared>,
    mut reader: FrameReader,
    mut writer: FrameWriter,
) {
    let conn_id = shared.next_conn_id();
    bump(&shared.registry.stats.connections_accepted);
    let handshake =
        timeout(shared.config.handshake_timeout, handshake(&shared, &mut reader, &mut writer));
    let (key, is_mesh) = match handshake.await {
        Ok(Ok(accepted)) => accepted,
        Ok(Err(err)) => return refuse_handshake(&shared, &mut writer, err).await,
        Err(_) => return refuse_handshake(&shared, &mut writer, End::HandshakeTimeout).await,
    };
    if !is_mesh {
        if let Err(reason) = verify(&shared, key).await {
            return refuse_client(&shared, &mut writer, key, reason).await;
        }
    }
    let span = info_span!("relay_conn", peer = %key.short(), conn = conn_id, mesh = is_mesh);
    let conn = Conn { shared, key, conn_id, is_mesh };
    conn.run(reader, writer).instrument(span).await;
}

/// Verifies the client's key; the `ServerInfo` answer is sent by
/// [`Conn::run`] once the client is registered, so that a client that has
/// its answer can at once be sent to.
async fn handshake(
    shared: &Shared,
    reader: &mut FrameReader,
    writer: &mut FrameWriter,
) -> Result<(PublicKey, bool), End> {
    let challenge: [u8; CHALLENGE_LEN] = rand::random();
    writer.send(&Frame::ServerKey { key: shared.public_key, challenge }).await?;
    let frame = reader.recv().await?;
    let mesh_key = shared.config.mesh_key.as_ref();
    let (key, _info, is_mesh) = ClientInfo::open(frame, &shared.secret_key, &challenge, mesh_key)?;
    Ok((key, is_mesh))
}

fn server_info(shared: &Shared, key: &PublicKey) -> Result<Frame, HandshakeError> {
    let limit = shared.config.rate_limit;
    let info = ServerInfo {
        version: PROTOCOL_VERSION,
        token_bucket_bytes_per_second: limit.map_or(0, |l| l.bytes_per_second),
        token_bucket_bytes_burst: limit.map_or(0, |l| l.burst),
    };
    info.seal(&shared.secret_key, key)
}

/// Asks the configured verifier (if any) whether `key` may use the relay.
async fn verify(shared: &Shared, key: PublicKey) -> Result<(), String> {
    let Some(verifier) = &shared.config.verify_clients else { return Ok(()) };
    match timeout(shared.config.handshake_timeout, verifier.verify(key)).await {
        Ok(Verdict::Allow) => Ok(()),
        Ok(Verdict::Deny { reason }) => Err(reason),
        Err(_) => Err("client verification timed out; retry shortly".into()),
    }
}

/// Tells a client the verifier refused it, then closes. Never registered,
/// it could neither receive nor send a packet.
async fn refuse_client(shared: &Shared, writer: &mut FrameWriter, key: PublicKey, reason: String) {
    bump(&shared.registry.stats.clients_refused);
    info!(peer = %key.short(), %reason, "relay refused a client");
    let problem = format!("node key {} may not use this relay: {reason}", key.short());
    let _ = timeout(Duration::from_secs(1), writer.send(&Frame::Health { problem })).await;
    let _ = timeout(Duration::from_secs(1), writer.close()).await;
}

async fn refuse_handshake(shared: &Shared, writer: &mut FrameWriter, err: End) {
    bump(&shared.registry.stats.handshake_failures);
    debug!(%err, "relay handshake refused");
    let problem = Frame::Health { problem: err.to_string() };
    let _ = timeout(Duration::from_secs(1), writer.send(&problem)).await;
    writer.close().await;
}

struct Conn {
    shared: Arc<Shared>,
    key: PublicKey,
    conn_id: ConnId,
    is_mesh: bool,
}

impl Conn {
    async fn run(self, mut reader: FrameReader, mut writer: FrameWriter) {
        let packets = Arc::new(PacketQueue::new(self.shared.config.send_queue_len));
        let (control, control_rx) = mpsc::channel(CONTROL_QUEUE_LEN);
        let outbox = Outbox { packets: packets.clone(), control, close: CancellationToken::new() };
        let registry = &self.shared.registry;
        if !self.is_mesh {
            registry.register(self.key, self.conn_id, outbox.clone());
        }
        let end = self.serve(&mut reader, &mut writer, &packets, control_rx, &outbox).await;
        if self.is_mesh {
            registry.unwatch(self.conn_id);
        } else {
            registry.unregister(self.key, self.conn_id);
        }
        if let End::Refused(problem) = &end {
            bump(&registry.stats.frames_refused);
            let problem = Frame::Health { problem: problem.clone() };
            let _ = timeout(Duration::from_secs(1), writer.send(&problem)).await;
        }
        if let End::Conn(ConnError::Decode(_)) = &end {
            bump(&registry.stats.frames_refused);
        }
        let _ = timeout(Duration::from_secs(1), writer.close()).await;
        debug!(%end, "relay connection closed");
    }

    /// Answers the handshake, then reads and writes until the connection ends.
    async fn serve(
        &self,
        reader: &mut FrameReader,
        writer: &mut FrameWriter,
        packets: &PacketQueue,
        control: mpsc::Receiver<Frame>,
        outbox: &Outbox,
    ) -> End {
        let welcome = async {
            let info = server_info(&self.shared, &self.key)?;
            timeout(self.shared.config.write_timeout, writer.send(&info))
                .await
                .map_err(|_| End::WriteTimeout)??;
            Ok::<(), End>(())
        };
        if let Err(end) = welcome.await {
            return end;
        }
        tokio::select! {
            end = self.read_loop(reader, outbox) => end,
            end = self.write_loop(writer, packets, control, &outbox.close) => end,
        }
    }

    async fn read_loop(&self, reader: &mut FrameReader, outbox: &Outbox) -> End {
        match self.read_frames(reader, outbox).await {
            Ok(never) => match never {},
            Err(end) => end,
        }
    }

    async fn read_frames(
        &self,
        reader: &mut FrameReader,
        outbox: &Outbox,
    ) -> Result<std::convert::Infallible, End> {
        let config = &self.shared.config;
        let registry = &self.shared.registry;
        let mut bucket = config
            .rate_limit
            .map(|l| TokenBucket::new(l.bytes_per_second, l.burst, Instant::now()));
        let mut routed = 0usize;
        loop {
            if routed >= READ_QUANTUM {
                routed = 0;
                tokio::task::yield_now().await;
            }
            let frame =
                timeout(config.idle_timeout, reader.recv()).await.map_err(|_| End::Idle)??;
            routed += frame.encoded_len();
            match frame {
                Frame::SendPacket { dst, data } if !self.is_mesh => {
                    let wait = bucket.as_mut().and_then(|b| b.take(data.len(), Instant::now()));
                    if let Some(wait) = wait {
                        tokio::time::sleep(wait).await;
                    }
                    registry.send_packet(self.key, dst, data, false);
                }
                Frame::ForwardPacket { src, dst, data } if self.is_mesh => {
                    registry.send_packet(src, dst, data, true);
                }
                Frame::WatchConns if self.is_mesh => registry.watch(self.conn_id, outbox.clone()),
                Frame::NotePreferred { preferred } => {
                    registry.note_preferred(self.key, self.conn_id, preferred);
                }
                Frame::Ping { data } => {
                    // A peer that floods pings without reading loses pongs.
                    let _ = outbox.control.try_send(Frame::Pong { data });
                }
                Frame::KeepAlive | Frame::Pong { .. } => {}
                Frame::ForwardPacket { .. } | Frame::WatchConns => {
                    return Err(End::Refused("mesh frames need the mesh key".into()));
                }
                other => {
                    let ty = other.frame_type();
                    return Err(End::Refused(format!("{ty:?} frames may not be sent to a relay")));
                }
            }
        }
    }

    async fn write_loop(
        &self,
        writer: &mut FrameWriter,
        packets: &PacketQueue,
        mut control: mpsc::Receiver<Frame>,
        close: &CancellationToken,
    ) -> End {
        let config = &self.shared.config;
        let mut keepalive = tokio::time::interval(config.keepalive_interval);
        keepalive.reset();
        let mut batch = Vec::with_capacity(MAX_BATCH);
        loop {
            let end = tokio::select! {
                biased;
                () = self.shared.shutdown.cancelled() => {
                    batch.push(Frame::Restarting {
                        reconnect_in: config.restart_reconnect_in,
                        try_for: config.restart_try_for,
                    });
                    Some(End::Shutdown)
                }
                () = close.cancelled() => {
                    while let Ok(frame) = control.try_recv() {
                        batch.push(frame);
                    }
                    Some(End::Replaced)
                }
                Some(frame) = control.recv() => {
                    batch.push(frame);
                    None
                }
                () = packets.wait() => {
                    packets.pop_batch(MAX_BATCH, &mut batch);
                    None
                }
                _ = keepalive.tick() => {
                    batch.push(Frame::KeepAlive);
                    None
                }
            };
            let write = async {
                for frame in batch.drain(..) {
                    writer.feed(&frame).await?;
                }
                writer.flush().await
            };
            match timeout(config.write_timeout, write).await {
                Err(_) => return End::WriteTimeout,
                Ok(Err(err)) => return err.into(),
                Ok(Ok(())) => {}
            }
            if let Some(end) = end {
                return end;
            }
        }
    }
}
