//! Outgoing mesh links: this relay connects to every other relay of its
//! region with the mesh key, asks to watch its connections, and learns from
//! `PeerPresent`/`PeerGone` which peers are homed there. Packets for those
//! peers go out on the link as `ForwardPacket`; the neighbour delivers them
//! locally and never forwards further (one hop).
//!
//! A link that drops forgets its routes and reconnects with backoff. A link
//! that reaches this very relay (it listed itself) stops.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::timeout;
use tracing::{debug, info, info_span, Instrument};

use super::registry::NeighbourId;
use super::Shared;
use crate::backoff::Backoff;
use crate::client::dial::{dial, DialOptions, Dialed, Transport};
use crate::client::RelayUrl;
use crate::conn::ConnError;
use crate::proto::Frame;

/// Packets queued for one neighbour before new ones are dropped.
const FORWARD_QUEUE_LEN: usize = 4096;

pub(crate) async fn run_link(shared: Arc<Shared>, url: RelayUrl, neighbour: NeighbourId) {
    let span = info_span!("mesh_link", %url);
    async move {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        loop {
            let opts = DialOptions {
                url: &url,
                secret_key: &shared.secret_key,
                mesh_key: shared.config.mesh_key.as_ref(),
                transport: Transport::Auto,
                tls: None,
                timeout: shared.config.handshake_timeout,
            };
            let dialed = tokio::select! {
                biased;
                () = shared.shutdown.cancelled() => return,
                dialed = dial(&opts) => dialed,
            };
            match dialed {
                Ok(dialed) if dialed.server_key == shared.public_key => {
                    debug!("mesh link reached this relay itself; skipping it");
                    return;
                }
                Ok(dialed) => {
                    info!("mesh link up");
                    backoff.reset();
                    let result = forward(&shared, neighbour, dialed).await;
                    shared.registry.clear_mesh_routes(neighbour);
                    match result {
                        Ok(()) => return,
                        Err(err) => info!(%err, "mesh link down"),
                    }
                }
                Err(err) => debug!(%err, "mesh link dial failed"),
            }
            tokio::select! {
                biased;
                () = shared.shutdown.cancelled() => return,
                () = tokio::time::sleep(backoff.next_delay()) => {}
            }
        }
    }
    .instrument(span)
    .await
}

/// Runs one established link until it fails (`Err`) or the relay shuts
/// down (`Ok`).
async fn forward(shared: &Shared, neighbour: NeighbourId, dialed: Dialed) -> Result<(), ConnError> {
    let Dialed { mut reader, mut writer, .. } = dialed;
    let config = &shared.config;
    writer.send(&Frame::WatchConns).await?;
    let (forward_tx, mut forward_rx) = mpsc::channel(FORWARD_QUEUE_LEN);
    let mut keepalive = tokio::time::interval(config.keepalive_interval);
    keepalive.reset();
    loop {
        let out = tokio::select! {
            biased;
            () = shared.shutdown.cancelled() => return Ok(()),
            frame = timeout(config.idle_timeout, reader.recv()) => {
                let frame = frame.map_err(|_| ConnError::Closed)??;
                match frame {
                    Frame::PeerPresent { key } => {
                        shared.registry.add_mesh_route(key, neighbour, forward_tx.clone());
                    }
                    Frame::PeerGone { key, .. } => shared.registry.remove_mesh_route(key, neighbour),
                    Frame::Restarting { .. } => return Err(ConnError::Closed),
                    Frame::Ping { data } => writer.send(&Frame::Pong { data }).await?,
                    _ => {}
                }
                continue;
            }
            Some(frame) = forward_rx.recv() => frame,
            _ = keepalive.tick() => Frame::KeepAlive,
        };
        let write = async {
            writer.feed(&out).await?;
            while let Ok(frame) = forward_rx.try_recv() {
                writer.feed(&frame).await?;
            }
            writer.flush().await
        };
        timeout(config.write_timeout, write).await.map_err(|_| ConnError::Closed)??;
    }
}
