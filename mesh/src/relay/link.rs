//! One region's link, the I/O shell of [`RegionNodes`]: dials the region's
//! nodes in [`RegionNodes::dial_order`] (each within a bounded timeout, so
//! a dead node costs little), carries datagrams both ways over the node
//! that answered, and when that connection breaks, or its node leaves the
//! relay map, drops it and dials again in order. Every new connection is
//! published in the link's `slot` and `connected` watches (the home
//! selector follows `connected`) and, when the region is home, told it is
//! preferred.
//!
//! The derp client would redial its own node forever; the link instead
//! gives the region's other nodes their turn at once, which is what makes a
//! region of meshed relays (one per `coderd` replica) survive a replica.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, watch};

use super::nodes::RegionNodes;
use crate::key::NodeKey;
use crate::magicsock::Inner;
use crate::node::RegionId;

/// Backoff between rounds over a region whose nodes all failed.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A connection up this long was stable: losing it resets the backoff.
const STABLE: Duration = Duration::from_secs(2);

/// Datagrams written to a relay per write at most.
const SEND_BATCH: usize = 64;

/// A link's connected client, shared with pings and home changes.
pub(super) type Slot = Arc<watch::Sender<Option<Arc<derp::Client>>>>;

/// What a link's task owns.
pub(super) struct LinkTask {
    pub region: RegionId,
    pub nodes: Arc<watch::Sender<RegionNodes>>,
    pub secret: derp::SecretKey,
    /// Per node dialed.
    pub dial_timeout: Duration,
    /// Dial in the background from the start; else the first client comes
    /// through `slot` (dialed at bind time in the caller's context).
    pub background: bool,
    pub slot: Slot,
    pub connected: Arc<watch::Sender<bool>>,
    pub home: watch::Receiver<Option<RegionId>>,
    pub rx: mpsc::Receiver<(NodeKey, Bytes)>,
    pub sock: Arc<Inner>,
}

/// Dials the region's nodes in order; the first that answers, or why each failed.
pub(super) async fn dial(
    nodes: &watch::Sender<RegionNodes>,
    secret: &derp::SecretKey,
    timeout: Duration,
) -> Result<derp::Client, String> {
    let order = nodes.borrow().dial_order(Instant::now());
    let mut errors = Vec::new();
    for url in order {
        let mut config = derp::ClientConfig::new(url.clone(), secret.clone());
        config.connect_timeout = timeout;
        // Recording a dial changes no node list: no one is woken.
        match derp::Client::connect(config).await {
            Ok(client) => {
                nodes.send_if_modified(|n| {
                    n.handle_connected(&url);
                    false
                });
                return Ok(client);
            }
            Err(e) => {
                tracing::debug!(%url, error = %e, "relay node did not answer");
                nodes.send_if_modified(|n| {
                    n.handle_failed(&url, Instant::now());
                    false
                });
                errors.push(format!("{url}: {e}"));
            }
        }
    }
    Err(errors.join("; "))
}

/// Runs the link until it is dropped (see the module docs).
pub(super) async fn run(mut t: LinkTask) {
    let mut handed = !t.background;
    let mut backoff = FIRST_BACKOFF;
    loop {
        let client = if std::mem::take(&mut handed) {
            let mut ready = t.slot.subscribe();
            match ready.wait_for(Option::is_some).await.map(|c| c.clone()) {
                Ok(Some(client)) => client,
                _ => return,
            }
        } else {
            match dial(&t.nodes, &t.secret, t.dial_timeout).await {
                Ok(client) => {
                    let client = Arc::new(client);
                    t.slot.send_replace(Some(client.clone()));
                    client
                }
                Err(e) => {
                    tracing::debug!(region = t.region, error = %e, "no relay node of the region answered");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            }
        };
        let url = t.nodes.borrow().current().cloned();
        if *t.home.borrow() == Some(t.region) {
            let _ = client.note_preferred(true).await;
        }
        t.connected.send_replace(true);
        let mut conn = client.connection_changes();
        let mut nodes = t.nodes.subscribe();
        let up_since = Instant::now();
        let failed = tokio::select! {
            () = relay_send(&client, &mut t.rx) => return,
            () = relay_recv(&client, &t.sock) => true,
            _ = conn.wait_for(|up| !*up) => true,
            () = left_map(&mut nodes, url.clone()) => false,
        };
        t.connected.send_replace(false);
        t.slot.send_replace(None);
        tracing::info!(region = t.region, url = ?url.as_ref().map(ToString::to_string), failed, "relay node lost; dialing the region's nodes");
        if let Some(url) = url.filter(|_| failed) {
            t.nodes.send_if_modified(|n| {
                n.handle_failed(&url, Instant::now());
                false
            });
        }
        // The old connection closes before the next dial: a relay keeps
        // only the newest connection of a key.
        drop(client);
        // A connection that lasted is lost to a dying node: redial at once.
        // One that did not is backed off, so two connections of one key
        // (each closing the other) or a flapping node cannot spin.
        if up_since.elapsed() >= STABLE {
            backoff = FIRST_BACKOFF;
        } else {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

/// Returns once the node list no longer names `url`.
async fn left_map(nodes: &mut watch::Receiver<RegionNodes>, url: Option<derp::RelayUrl>) {
    let Some(url) = url else { return std::future::pending().await };
    loop {
        if nodes.changed().await.is_err() {
            return std::future::pending().await;
        }
        if !nodes.borrow_and_update().nodes().contains(&url) {
            return;
        }
    }
}

/// Writes the link's queued datagrams to its relay, all that are waiting
/// (up to [`SEND_BATCH`]) in one write; returns when the queue closes.
async fn relay_send(client: &derp::Client, rx: &mut mpsc::Receiver<(NodeKey, Bytes)>) {
    let mut batch = Vec::with_capacity(SEND_BATCH);
    while rx.recv_many(&mut batch, SEND_BATCH).await > 0 {
        let packets = batch.drain(..).map(|(key, data)| (key.into(), data));
        if let Err(e) = client.send_many(packets).await {
            tracing::trace!(%e, "relay send failed");
        }
    }
}

/// Delivers what the client receives until it closes for good.
async fn relay_recv(client: &derp::Client, sock: &Inner) {
    while let Ok(packet) = client.recv().await {
        sock.handle_relayed(packet.src.into(), packet.data);
    }
}
