//! Outgoing mesh links: this relay connects to every other relay of its
//! region with the mesh key, asks to watch its connections, and learns from
//! `PeerPresent`/`PeerGone` which peers are homed there. Packets for those
//! peers go out on the link as `ForwardPacket`; the neighbour delivers them
//! locally and never forwards further (one hop).
//!
//! A link that drops forgets its routes and reconnects with backoff. A link
//! that reaches this very relay (it listed itself) stops.
//!
//! [`MeshLinks`] owns the set: links come and go with the neighbours an
//! operator lists (`derper --mesh-with`) or that a deployment's replica
//! registry reports (coderd's replicas), each stopped by its own token.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
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

/// One neighbour's link as [`super::Server::mesh_links`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshLinkStatus {
    /// The neighbour's relay URL, as configured.
    pub url: String,
    /// Whether the link is established (watching the neighbour's clients).
    pub up: bool,
    /// The link reached this relay itself and stopped.
    pub is_self: bool,
}

/// A running link: its stop token, and whether it is up.
struct Link {
    stop: CancellationToken,
    state: Arc<LinkState>,
}

#[derive(Default)]
pub(crate) struct LinkState {
    up: AtomicBool,
    is_self: AtomicBool,
}

/// The relay's outgoing mesh links, by configured URL.
#[derive(Default)]
pub(crate) struct MeshLinks {
    links: HashMap<String, Link>,
    next_neighbour: NeighbourId,
}

/// A link to start: the caller spawns `run_link(shared, url, neighbour, stop, state)`.
pub(crate) struct NewLink {
    pub(crate) url: RelayUrl,
    pub(crate) neighbour: NeighbourId,
    pub(crate) stop: CancellationToken,
    pub(crate) state: Arc<LinkState>,
}

impl MeshLinks {
    /// Makes the set of links exactly `urls`: stops the links to URLs no
    /// longer listed (their routes are cleared as each stops) and returns
    /// the new links to spawn. `shutdown` parents every stop token.
    pub(crate) fn set(
        &mut self,
        urls: Vec<(String, RelayUrl)>,
        shutdown: &CancellationToken,
    ) -> Vec<NewLink> {
        let wanted: std::collections::HashSet<&str> =
            urls.iter().map(|(s, _)| s.as_str()).collect();
        self.links.retain(|url, link| {
            let keep = wanted.contains(url.as_str());
            if !keep {
                link.stop.cancel();
            }
            keep
        });
        let mut started = Vec::new();
        for (text, url) in urls {
            if self.links.contains_key(&text) {
                continue;
            }
            let neighbour = self.next_neighbour;
            self.next_neighbour += 1;
            let stop = shutdown.child_token();
            let state = Arc::new(LinkState::default());
            self.links.insert(text, Link { stop: stop.clone(), state: state.clone() });
            started.push(NewLink { url, neighbour, stop, state });
        }
        started
    }

    pub(crate) fn status(&self) -> Vec<MeshLinkStatus> {
        let mut all: Vec<_> = self
            .links
            .iter()
            .map(|(url, l)| MeshLinkStatus {
                url: url.clone(),
                up: l.state.up.load(Ordering::Relaxed),
                is_self: l.state.is_self.load(Ordering::Relaxed),
            })
            .collect();
        all.sort_by(|a, b| a.url.cmp(&b.url));
        all
    }
}

pub(crate) async fn run_link(shared: Arc<Shared>, link: NewLink) {
    let NewLink { url, neighbour, stop, state } = link;
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
                () = stop.cancelled() => return,
                dialed = dial(&opts) => dialed,
            };
            match dialed {
                Ok(dialed) if dialed.server_key == shared.public_key => {
                    debug!("mesh link reached this relay itself; skipping it");
                    state.is_self.store(true, Ordering::Relaxed);
                    return;
                }
                Ok(dialed) => {
                    info!("mesh link up");
                    backoff.reset();
                    state.up.store(true, Ordering::Relaxed);
                    let result = forward(&shared, &stop, neighbour, dialed).await;
                    state.up.store(false, Ordering::Relaxed);
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
                () = stop.cancelled() => return,
                () = tokio::time::sleep(backoff.next_delay()) => {}
            }
        }
    }
    .instrument(span)
    .await
}

/// Runs one established link until it fails (`Err`) or is stopped (`Ok`:
/// the relay shuts down or the neighbour left the mesh).
async fn forward(
    shared: &Shared,
    stop: &CancellationToken,
    neighbour: NeighbourId,
    dialed: Dialed,
) -> Result<(), ConnError> {
    let Dialed { mut reader, mut writer, .. } = dialed;
    let config = &shared.config;
    writer.send(&Frame::WatchConns).await?;
    let (forward_tx, mut forward_rx) = mpsc::channel(FORWARD_QUEUE_LEN);
    let mut keepalive = tokio::time::interval(config.keepalive_interval);
    keepalive.reset();
    loop {
        let out = tokio::select! {
            biased;
            () = stop.cancelled() => return Ok(()),
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn urls(list: &[&str]) -> Vec<(String, RelayUrl)> {
        list.iter().map(|u| (u.to_string(), u.parse().unwrap())).collect()
    }

    #[test]
    fn links_follow_the_listed_neighbours() {
        let shutdown = CancellationToken::new();
        let mut links = MeshLinks::default();
        let a = "http://10.0.0.1:3000/derp";
        let b = "http://10.0.0.2:3000/derp";
        let first = links.set(urls(&[a, b]), &shutdown);
        assert_eq!(first.len(), 2);
        let (id_a, id_b) = (first[0].neighbour, first[1].neighbour);
        assert_ne!(id_a, id_b);

        // Listing the same set again starts nothing: the links carry on.
        assert!(links.set(urls(&[b, a]), &shutdown).is_empty());
        assert!(!first[0].stop.is_cancelled());

        // b leaves: its link is stopped; a stays; c is new with a fresh id.
        let c = "http://10.0.0.3:3000/derp";
        let added = links.set(urls(&[a, c]), &shutdown);
        assert!(first[1].stop.is_cancelled());
        assert!(!first[0].stop.is_cancelled());
        assert_eq!(added.len(), 1);
        assert!(added[0].neighbour != id_a && added[0].neighbour != id_b);
        assert_eq!(links.status().iter().map(|s| s.url.as_str()).collect::<Vec<_>>(), [a, c]);

        // Shutting the relay down stops every link.
        shutdown.cancel();
        assert!(added[0].stop.is_cancelled());
    }
}
