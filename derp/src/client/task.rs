//! The client's one background task: read, keep alive, reconnect.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::timeout;
use tracing::debug;

use super::dial::{dial, ConnectError, DialOptions, Dialed, Transport};
use super::{ClientConfig, Event, ReceivedPacket, Shared};
use crate::backoff::Backoff;
use crate::conn::FrameReader;
use crate::proto::Frame;
use crate::server::REPLACED_PROBLEM;

/// Dials as configured; `websocket_learnt` (a fallback already happened
/// on this client) skips straight to WebSocket.
pub(super) async fn dial_config(
    config: &ClientConfig,
    websocket_learnt: bool,
) -> Result<Dialed, ConnectError> {
    let transport = match config.transport {
        Transport::Auto if websocket_learnt => Transport::WebSocket,
        other => other,
    };
    dial(&DialOptions {
        url: &config.url,
        secret_key: &config.secret_key,
        mesh_key: config.mesh_key.as_ref(),
        transport,
        tls: config.tls.as_ref(),
        timeout: config.connect_timeout,
    })
    .await
}

/// Why a connection ended.
enum Disconnect {
    /// Another connection took our key: stop for good.
    Replaced,
    Restarting {
        reconnect_in: Duration,
    },
    Broken,
}

pub(super) async fn run(shared: Arc<Shared>, events: mpsc::Sender<Event>, mut reader: FrameReader) {
    let config = &shared.config;
    let mut backoff = Backoff::new(Duration::from_millis(100), config.max_backoff);
    loop {
        let end = read_frames(&shared, &events, &mut reader).await;
        *shared.writer.lock().await = None;
        shared.connected.send_replace(false);
        // Pending pings will never be answered on this connection.
        shared.pings.lock().unwrap_or_else(|p| p.into_inner()).clear();
        let mut wait = match end {
            Disconnect::Replaced => return,
            Disconnect::Restarting { reconnect_in } => reconnect_in,
            Disconnect::Broken => backoff.next_delay(),
        };
        reader = loop {
            tokio::time::sleep(wait).await;
            match dial_config(config, shared.websocket.load(Ordering::Relaxed)).await {
                Ok(dialed) => break install(&shared, dialed).await,
                Err(err) => debug!(%err, url = %config.url, "relay reconnect failed"),
            }
            wait = backoff.next_delay();
        };
        backoff.reset();
    }
}

/// Makes a fresh connection the current one and restores our state on it.
async fn install(shared: &Shared, dialed: Dialed) -> FrameReader {
    let Dialed { reader, writer, server_key, websocket } = dialed;
    shared.websocket.fetch_or(websocket, Ordering::Relaxed);
    *shared.server_key.lock().unwrap_or_else(|p| p.into_inner()) = Some(server_key);
    *shared.writer.lock().await = Some(writer);
    if shared.preferred.load(Ordering::Relaxed) {
        let _ = shared.write(&Frame::NotePreferred { preferred: true }).await;
    }
    shared.connected.send_replace(true);
    reader
}

async fn read_frames(
    shared: &Shared,
    events: &mpsc::Sender<Event>,
    reader: &mut FrameReader,
) -> Disconnect {
    let config = &shared.config;
    let mut keepalive = tokio::time::interval(config.keepalive_interval);
    keepalive.reset();
    loop {
        let frame = tokio::select! {
            frame = timeout(config.idle_timeout, reader.recv()) => frame,
            _ = keepalive.tick() => {
                let _ = shared.write(&Frame::KeepAlive).await;
                continue;
            }
        };
        let frame = match frame {
            Ok(Ok(frame)) => frame,
            Ok(Err(err)) => {
                debug!(%err, "relay connection lost");
                return Disconnect::Broken;
            }
            Err(_) => {
                debug!("relay connection idle for too long");
                return Disconnect::Broken;
            }
        };
        let event = match frame {
            Frame::RecvPacket { src, data } => Event::Packet(ReceivedPacket { src, data }),
            Frame::PeerGone { key, reason } => Event::PeerGone { key, reason },
            Frame::Health { problem } if problem == REPLACED_PROBLEM => {
                debug!("a newer connection for our key replaced this one");
                return Disconnect::Replaced;
            }
            Frame::Health { problem } => Event::Health { problem },
            Frame::Restarting { reconnect_in, try_for } => {
                let _ = events.try_send(Event::Restarting { reconnect_in, try_for });
                return Disconnect::Restarting { reconnect_in };
            }
            Frame::Pong { data } => {
                let waiter = shared.pings.lock().unwrap_or_else(|p| p.into_inner()).remove(&data);
                if let Some(waiter) = waiter {
                    let _ = waiter.send(());
                }
                continue;
            }
            Frame::Ping { data } => {
                let _ = shared.write(&Frame::Pong { data }).await;
                continue;
            }
            _ => continue,
        };
        if events.try_send(event).is_err() {
            shared.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}
