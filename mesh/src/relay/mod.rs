//! The node's relay connections: one per region it needs, and which one is home.
//!
//! A node keeps a [`derp::Client`] (a *link*) to its home region, where peers
//! send to it, and to each region a peer calls home, where it sends to that
//! peer. Datagrams the magic socket queues for the relay pass through
//! [`dispatch`], which picks the link by the destination's announced
//! `preferred_relay` (read from the peer map when the datagram is queued;
//! our own home for peers that announce none, or a region we do not know);
//! every link delivers what it receives to the magic socket,
//! whichever region it came through.
//!
//! A region may have several relay servers (nodes) that mesh, such as one
//! per `coderd` replica: its link dials them in the map's order and moves
//! to the next when one fails (`link.rs`, with the sans-IO choice in
//! `nodes.rs`), without changing the home region, so peers need no new node.
//! [`Relays::update_nodes`] takes a new relay map's node lists.
//!
//! Which region is home is [`HomeSelector`]'s decision (sans-IO, `home.rs`);
//! [`run_home`] is its I/O shell: it measures every region's latency with
//! relay pings over that region's link (netcheck-style, and it works where
//! UDP is blocked; links opened only to measure are closed after), watches
//! the home link's connection, and applies a change of home: the new link
//! is told it is preferred, and [`Relays::home_changes`] fires so the owner
//! re-publishes the node (`preferred_relay`) through the coordinator.
//!
//! QUIC connections are unaffected by a move: quinn addresses peers by
//! virtual address, never by path, so a move only loses the datagrams sent
//! through the dead relay before both sides learned of it, which QUIC
//! retransmits.

mod home;
mod link;
mod nodes;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tokio_util::task::AbortOnDropHandle;

pub use home::{HomeConfig, HomeSelector};
pub use nodes::RegionNodes;

use crate::key::NodeKey;
use crate::magicsock::{Inner, RelayDatagram, RELAY_QUEUE};
use crate::node::RegionId;

/// A relay region the node may use: its id in the relay map and the URLs
/// of its relay servers, in order of preference.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RelayRegion {
    /// The region's id.
    pub id: RegionId,
    /// Its relays, e.g. `https://relay.example.com/derp`; never empty.
    nodes: Vec<derp::RelayUrl>,
}

impl RelayRegion {
    /// Region `id` served at `url`.
    pub fn new(id: RegionId, url: derp::RelayUrl) -> Self {
        Self { id, nodes: vec![url] }
    }

    /// Region `id` served by meshed relays at `nodes`, the preferred first;
    /// `None` without any.
    pub fn with_nodes(id: RegionId, nodes: Vec<derp::RelayUrl>) -> Option<Self> {
        (!nodes.is_empty()).then_some(Self { id, nodes })
    }

    /// Its relays in order of preference.
    pub fn nodes(&self) -> &[derp::RelayUrl] {
        &self.nodes
    }

    fn region_nodes(&self) -> Option<RegionNodes> {
        let (first, rest) = self.nodes.split_first()?;
        Some(RegionNodes::new(first.clone(), rest.iter().cloned()))
    }
}

/// After the first region answers at bind time, the others get this long
/// to answer too before the home is chosen from what arrived.
const BIND_GRACE: Duration = Duration::from_millis(500);
/// Pings per region measurement.
const PINGS: usize = 3;
/// While the home is down and no region answers, probe this often.
const RETRY_PROBE: Duration = Duration::from_secs(1);

/// One region's connection; dropping it closes the connection.
struct Link {
    tx: mpsc::Sender<(NodeKey, Bytes)>,
    /// The connected client, while there is one.
    slot: link::Slot,
    /// Whether the link is connected (to whichever of the region's nodes).
    connected: Arc<watch::Sender<bool>>,
    _task: AbortOnDropHandle<()>,
}

/// The relay side of a mesh node (see the module docs).
pub(crate) struct Relays {
    secret: derp::SecretKey,
    /// The set of regions is fixed at bind time; their nodes follow the map.
    regions: BTreeMap<RegionId, Arc<watch::Sender<RegionNodes>>>,
    config: HomeConfig,
    sock: Arc<Inner>,
    /// Never held with the magic socket's state lock ([`crate::peermap`]).
    links: Mutex<HashMap<RegionId, Link>>,
    /// Never held with the magic socket's state lock.
    selector: Mutex<HomeSelector>,
    home: watch::Sender<Option<RegionId>>,
}

/// No relay region answered at bind time: why, region by region.
#[derive(Debug, thiserror::Error)]
#[error("no relay region answered: {0}")]
pub struct NoRegion(String);

impl Relays {
    /// Measures every region, connects to the best as home, and starts the
    /// tasks (returned for the caller to own) that route datagrams from
    /// `out` and keep the home chosen. Fails when no region answers.
    pub(crate) async fn start(
        regions: &[RelayRegion],
        secret: derp::SecretKey,
        config: HomeConfig,
        sock: Arc<Inner>,
        out: mpsc::Receiver<RelayDatagram>,
    ) -> Result<(Arc<Relays>, Vec<AbortOnDropHandle<()>>), NoRegion> {
        let relays = Arc::new(Relays {
            secret,
            regions: regions
                .iter()
                .filter_map(|r| Some((r.id, Arc::new(watch::Sender::new(r.region_nodes()?)))))
                .collect(),
            selector: Mutex::new(HomeSelector::new(config.clone())),
            config,
            sock,
            links: Mutex::default(),
            home: watch::Sender::new(None),
        });
        let errors = relays.probe_all(Some(BIND_GRACE)).await;
        let home = relays.selector().poll_home(Instant::now());
        let Some(home) = home else {
            let why = relays
                .regions
                .keys()
                .map(|r| {
                    let error = errors.iter().find(|(e, _)| e == r).map(|(_, e)| e.as_str());
                    format!("region {r}: {}", error.unwrap_or("no answer in time"))
                })
                .collect::<Vec<_>>();
            return Err(NoRegion(why.join("; ")));
        };
        relays.switch_home(None, home).await;
        relays.drop_unused_links();
        let tasks = vec![
            AbortOnDropHandle::new(tokio::spawn(dispatch(relays.clone(), out))),
            AbortOnDropHandle::new(tokio::spawn(run_home(relays.clone()))),
        ];
        Ok((relays, tasks))
    }

    fn selector(&self) -> MutexGuard<'_, HomeSelector> {
        self.selector.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn links(&self) -> MutexGuard<'_, HashMap<RegionId, Link>> {
        self.links.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The home region now.
    pub(crate) fn home(&self) -> Option<RegionId> {
        *self.home.borrow()
    }

    /// Fires whenever the home region changes.
    pub(crate) fn home_changes(&self) -> watch::Receiver<Option<RegionId>> {
        self.home.subscribe()
    }

    /// The last measured latency of each reachable region, in milliseconds.
    pub(crate) fn latencies_ms(&self) -> BTreeMap<RegionId, f64> {
        self.selector().latencies().map(|(r, l)| (r, l.as_secs_f64() * 1000.0)).collect()
    }

    /// Takes the node lists of a new relay map for the regions known at
    /// bind time (others are ignored). A link whose node is no longer
    /// listed moves to the region's first node that answers; the others
    /// stay where they are.
    pub(crate) fn update_nodes(&self, regions: &[RelayRegion]) {
        for region in regions {
            let Some(nodes) = self.regions.get(&region.id) else { continue };
            nodes.send_if_modified(|n| {
                let changed = n.nodes() != region.nodes();
                if n.handle_nodes(region.nodes.clone()) {
                    tracing::info!(region = region.id, "the relay node in use left the relay map");
                }
                changed
            });
        }
    }

    /// Whether `region` is in the relay map.
    pub(crate) fn knows(&self, region: RegionId) -> bool {
        self.regions.contains_key(&region)
    }

    /// The region datagrams to a peer announcing home `peer_region` go
    /// through: that one if we know it, else our own home.
    pub(crate) fn region_for(&self, peer_region: Option<RegionId>) -> Option<RegionId> {
        peer_region.filter(|r| self.knows(*r)).or_else(|| self.home())
    }

    /// Connects to a peer's announced home `region` now, so the first
    /// datagrams to it need not wait.
    pub(crate) fn prepare(&self, region: Option<RegionId>) {
        if let Some(region) = region.filter(|r| self.knows(*r)) {
            self.link(region);
        }
    }

    /// The queue of `region`'s link, connecting it first if there is none.
    /// The one way a connection to a region is made: two connections with
    /// one key would make the relay drop the older for good.
    fn link(&self, region: RegionId) -> Option<mpsc::Sender<(NodeKey, Bytes)>> {
        self.open_link(region, true).map(|(tx, _)| tx)
    }

    /// `region`'s link, and whether this call opened it. A new link
    /// connects in the background, or (`background` false) waits for the
    /// caller to hand it a connected client through its `slot`.
    fn open_link(
        &self,
        region: RegionId,
        background: bool,
    ) -> Option<(mpsc::Sender<(NodeKey, Bytes)>, bool)> {
        let mut links = self.links();
        if let Some(link) = links.get(&region) {
            return Some((link.tx.clone(), false));
        }
        let nodes = self.regions.get(&region)?.clone();
        let (tx, rx) = mpsc::channel(RELAY_QUEUE);
        let slot = Arc::new(watch::Sender::new(None));
        let connected = Arc::new(watch::Sender::new(false));
        let task = link::run(link::LinkTask {
            region,
            nodes,
            secret: self.secret.clone(),
            dial_timeout: self.config.probe_timeout,
            background,
            slot: slot.clone(),
            connected: connected.clone(),
            home: self.home.subscribe(),
            rx,
            sock: self.sock.clone(),
        });
        let task = AbortOnDropHandle::new(tokio::spawn(task));
        links.insert(region, Link { tx: tx.clone(), slot, connected, _task: task });
        Some((tx, true))
    }

    fn link_client(&self, region: RegionId) -> Option<Option<Arc<derp::Client>>> {
        self.links().get(&region).map(|l| l.slot.borrow().clone())
    }

    /// The client of `region`'s link, waiting up to `wait` for a link that
    /// is still connecting; `None` without a link.
    async fn link_client_ready(
        &self,
        region: RegionId,
        wait: Duration,
    ) -> Option<Option<Arc<derp::Client>>> {
        let mut ready = self.links().get(&region)?.slot.subscribe();
        let client = tokio::time::timeout(wait, ready.wait_for(Option::is_some)).await;
        Some(client.ok().and_then(|c| c.ok()).and_then(|c| c.clone()))
    }

    /// Measures every region over its link (opening links as needed) and
    /// feeds the selector. With `grace`, stops waiting that long after the
    /// first answer.
    /// Returns why regions that failed to connect did.
    async fn probe_all(&self, grace: Option<Duration>) -> Vec<(RegionId, String)> {
        let mut pending = futures::stream::FuturesUnordered::new();
        for &region in self.regions.keys() {
            pending.push(self.probe(region));
        }
        let mut done = Vec::new();
        let mut deadline = None;
        loop {
            let next = futures::StreamExt::next(&mut pending);
            let probe = match deadline {
                Some(at) => match tokio::time::timeout_at(at, next).await {
                    Ok(p) => p,
                    Err(_) => break,
                },
                None => next.await,
            };
            let Some((region, latency)) = probe else { break };
            if latency.as_ref().is_ok_and(Option::is_some) && deadline.is_none() {
                deadline = grace.map(|g| tokio::time::Instant::now() + g);
            }
            done.push((region, latency));
        }
        let mut selector = self.selector();
        let mut errors = Vec::new();
        for &region in self.regions.keys() {
            let latency = match done.iter().find(|(r, _)| *r == region) {
                Some((_, Ok(latency))) => *latency,
                Some((_, Err(e))) => {
                    errors.push((region, e.clone()));
                    None
                }
                None => None,
            };
            selector.handle_latency(region, latency);
        }
        errors
    }

    /// `region`'s latency, `None` if its link is not up within the probe
    /// timeout, or why connecting failed. A region without a link gets one,
    /// connected here (so at bind time, in the caller's context: its
    /// network namespace, for one) rather than in a background task.
    async fn probe(&self, region: RegionId) -> (RegionId, Result<Option<Duration>, String>) {
        let wait = self.config.probe_timeout;
        let created = self.open_link(region, false).is_some_and(|(_, created)| created);
        if created {
            let Some(nodes) = self.regions.get(&region) else { return (region, Ok(None)) };
            match link::dial(nodes, &self.secret, wait).await {
                Ok(client) => {
                    let client = Arc::new(client);
                    if let Some(link) = self.links().get(&region) {
                        link.slot.send_replace(Some(client));
                    }
                }
                Err(e) => {
                    tracing::debug!(region, error = %e, "relay region probe failed");
                    // The next user opens it again, connecting in the background.
                    self.links().remove(&region);
                    return (region, Err(e));
                }
            }
        }
        let latency = match self.link_client_ready(region, wait).await {
            Some(Some(client)) if client.is_connected() => best_ping(&client, wait).await,
            _ => None,
        };
        (region, Ok(latency))
    }

    /// Makes `to` home (after `from`): tells both relays, announces it.
    async fn switch_home(&self, from: Option<RegionId>, to: RegionId) {
        self.link(to);
        let wait = self.config.probe_timeout;
        if let Some(Some(client)) = self.link_client_ready(to, wait).await {
            let _ = client.note_preferred(true).await;
        }
        if let Some(Some(client)) = from.and_then(|f| self.link_client(f)) {
            let _ = client.note_preferred(false).await;
        }
        tracing::info!(?from, to, "home relay region");
        self.home.send_replace(Some(to));
    }

    /// Closes links no one needs: not home, and no peer's home.
    fn drop_unused_links(&self) {
        let home = self.home();
        // The state lock is released before the links' is taken.
        let used: Vec<RegionId> =
            self.sock.state().peers.values().filter_map(|n| n.preferred_relay).collect();
        self.links().retain(|region, _| Some(*region) == home || used.contains(region));
    }
}

/// The fastest of [`PINGS`] relay pings: one slow answer on a busy host
/// should not move a node to another region.
async fn best_ping(client: &derp::Client, wait: Duration) -> Option<Duration> {
    let mut best = None;
    for _ in 0..PINGS {
        match client.ping(wait).await {
            Ok(rtt) => best = Some(best.map_or(rtt, |b: Duration| b.min(rtt))),
            Err(_) => break,
        }
    }
    best
}

/// Routes the magic socket's relay datagrams to the destination's region.
async fn dispatch(relays: Arc<Relays>, mut out: mpsc::Receiver<RelayDatagram>) {
    while let Some((key, peer_region, data)) = out.recv().await {
        if let Some(tx) = relays.region_for(peer_region).and_then(|r| relays.link(r)) {
            // Full queue: drop, as a congested link would; QUIC recovers.
            let _ = tx.try_send((key, data));
        }
    }
}

/// Keeps the home region chosen: measures regions every
/// [`HomeConfig::probe_interval`], watches the home link, and moves home
/// when the selector says so.
async fn run_home(relays: Arc<Relays>) {
    let mut next_probe = Instant::now() + relays.config.probe_interval;
    let mut home_conn = home_connection(&relays);
    loop {
        let now = Instant::now();
        let wake = match relays.selector().poll_timeout() {
            Some(at) if at > now => at.min(next_probe),
            _ => next_probe,
        };
        let changed = {
            let conn_changed = async {
                match &mut home_conn {
                    Some(rx) => rx.changed().await.map(|()| *rx.borrow_and_update()),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                changed = conn_changed => Some(changed),
                () = tokio::time::sleep_until(wake.into()) => None,
            }
        };
        if let Some(changed) = changed {
            relays
                .selector()
                .handle_home_connected(*changed.as_ref().unwrap_or(&false), Instant::now());
            if changed.is_err() {
                // The link stopped for good: only probes can tell now.
                home_conn = None;
            }
            continue;
        }
        relays.probe_all(None).await;
        let now = Instant::now();
        let from = relays.home();
        let change = relays.selector().poll_home(now);
        if let Some(to) = change {
            relays.switch_home(from, to).await;
            home_conn = home_connection(&relays);
        }
        relays.drop_unused_links();
        next_probe = now
            + if relays.selector().home_failed(now) {
                RETRY_PROBE
            } else {
                relays.config.probe_interval
            };
    }
}

/// Watches the home link's connection (to whichever of the region's
/// nodes), telling the selector at once if it is down already; `None`
/// without a home link.
fn home_connection(relays: &Relays) -> Option<watch::Receiver<bool>> {
    let home = relays.home()?;
    let mut rx = relays.links().get(&home)?.connected.subscribe();
    if !*rx.borrow_and_update() {
        relays.selector().handle_home_connected(false, Instant::now());
    }
    Some(rx)
}
