//! The endpoint's port mapping, in the background.
//!
//! [`PortMapper::start`] spawns a task that finds the default gateway, asks
//! it for a mapping of the node's UDP port in each configured protocol in
//! turn until one grants it, and adds the public address to the node's
//! endpoints ([`PathSelector::add_local_endpoint`](crate::PathSelector::add_local_endpoint)),
//! which republishes the node and tells peers still on the relay, as a
//! STUN answer does. It renews at half the granted lifetime, and starts
//! over (after [`PortMapConfig::retry`]) when a renewal fails or nothing
//! maps. [`PortMapper::release`] deletes the mapping and waits for the
//! gateway; dropping the mapper has the thread delete it before it ends.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::client::{self, Gateway};
use super::{Mapping, PortMapConfig, Protocol};
use crate::magicsock::Inner;

/// How long closing waits for the gateway to confirm the delete.
const RELEASE_WAIT: Duration = Duration::from_secs(1);

/// Where the node's port mapping is ([`MeshEndpoint::port_mapping`](crate::MeshEndpoint::port_mapping)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PortMapStatus {
    /// Not configured (or the node is relay-only).
    Off,
    /// Asking the gateway.
    Pending,
    /// The gateway forwards `external` to the node's socket.
    Mapped {
        /// Which protocol got it.
        protocol: Protocol,
        /// The public address, among the node's endpoints.
        external: SocketAddrV4,
        /// The gateway that granted it.
        gateway: Ipv4Addr,
        /// How often it was renewed since.
        renewals: u32,
    },
    /// Nothing mapped, and why (tried again later).
    Failed {
        /// Each protocol's error, or why none was asked.
        reason: String,
    },
}

/// What is held: the gateway and its mapping, to delete on close.
type Held = Arc<Mutex<Option<(Gateway, Mapping)>>>;

/// The background port mapping of one endpoint.
///
/// It runs on a thread of its own, in the network namespace of the thread
/// that bound the endpoint: its sockets (and the routing table it reads)
/// must be the node's, also when a test binds nodes of several namespaces
/// from one process, whose runtime's threads stay in another.
pub(crate) struct PortMapper {
    status: watch::Sender<PortMapStatus>,
    /// Dropped: the thread deletes the mapping and ends.
    release: Option<mpsc::UnboundedSender<oneshot::Sender<()>>>,
}

impl PortMapper {
    /// Starts mapping UDP `port` as `config` says (nothing if it names no protocol).
    pub(crate) fn start(sock: Arc<Inner>, port: u16, config: PortMapConfig) -> PortMapper {
        if config.protocols.is_empty() {
            return PortMapper { status: watch::Sender::new(PortMapStatus::Off), release: None };
        }
        let status = watch::Sender::new(PortMapStatus::Pending);
        let (release, requests) = mpsc::unbounded_channel();
        let netns = std::fs::File::open("/proc/thread-self/ns/net").ok();
        let shared = status.clone();
        let thread = std::thread::Builder::new().name("portmap".into()).spawn(move || {
            if let Some(netns) = netns {
                if let Err(e) = nix::sched::setns(netns, nix::sched::CloneFlags::CLONE_NEWNET) {
                    tracing::warn!(%e, "port mapping: entering the socket's network namespace");
                    return;
                }
            }
            match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime.block_on(serve(sock, port, config, shared, requests)),
                Err(e) => tracing::warn!(%e, "port mapping: no runtime"),
            }
        });
        if let Err(e) = thread {
            status.send_replace(PortMapStatus::Failed { reason: format!("no thread: {e}") });
        }
        PortMapper { status, release: Some(release) }
    }

    pub(crate) fn status(&self) -> watch::Receiver<PortMapStatus> {
        self.status.subscribe()
    }

    /// Deletes the mapping, waiting up to a second for the gateway, and
    /// stops mapping.
    pub(crate) async fn release(&self) {
        let Some(release) = &self.release else { return };
        let (done, released) = oneshot::channel();
        if release.send(done).is_ok() {
            let _ = released.await;
        }
    }
}

/// Maps until asked to release (or the mapper is dropped), then deletes.
async fn serve(
    sock: Arc<Inner>,
    port: u16,
    config: PortMapConfig,
    status: watch::Sender<PortMapStatus>,
    mut requests: mpsc::UnboundedReceiver<oneshot::Sender<()>>,
) {
    let held = Held::default();
    let done = tokio::select! {
        biased;
        done = requests.recv() => done,
        () = run(sock, port, config, status.clone(), held.clone()) => None,
    };
    let taken = held.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some((gw, mapping)) = taken {
        let deadline = Instant::now() + RELEASE_WAIT;
        match client::unmap(&gw, &mapping, deadline).await {
            Ok(()) => tracing::info!(external = %mapping.external, "port mapping deleted"),
            Err(e) => tracing::warn!(%e, protocol = %mapping.protocol, "deleting the port mapping"),
        }
    }
    status.send_replace(PortMapStatus::Off);
    if let Some(done) = done {
        let _ = done.send(());
    }
}

async fn run(
    sock: Arc<Inner>,
    port: u16,
    config: PortMapConfig,
    status: watch::Sender<PortMapStatus>,
    held: Held,
) {
    loop {
        match client::gateway().await {
            Some(gw) => hold(&sock, port, &config, &status, &held, gw).await,
            None => {
                status.send_replace(PortMapStatus::Failed {
                    reason: "no default IPv4 gateway".to_owned(),
                });
            }
        }
        tokio::time::sleep(config.retry).await;
    }
}

/// Maps the port at `gw` and keeps it renewed; returns when that fails.
async fn hold(
    sock: &Inner,
    port: u16,
    config: &PortMapConfig,
    status: &watch::Sender<PortMapStatus>,
    held: &Held,
    gw: Gateway,
) {
    let mut errors = Vec::new();
    let mut mapping = None;
    for &protocol in &config.protocols {
        let deadline = Instant::now() + config.timeout;
        match client::map(&gw, protocol, port, port, config.lifetime, deadline).await {
            Ok(m) => {
                mapping = Some(m);
                break;
            }
            Err(e) => errors.push(format!("{protocol}: {e}")),
        }
    }
    let Some(mut mapping) = mapping else {
        let reason = format!("gateway {}: {}", gw.addr, errors.join("; "));
        tracing::debug!(%reason, "no port mapping");
        status.send_replace(PortMapStatus::Failed { reason });
        return;
    };
    let mut renewals = 0;
    loop {
        tracing::info!(protocol = %mapping.protocol, external = %mapping.external, "port mapped");
        announce(sock, mapping.external);
        *held.lock().unwrap_or_else(|e| e.into_inner()) = Some((gw, mapping.clone()));
        status.send_replace(PortMapStatus::Mapped {
            protocol: mapping.protocol,
            external: mapping.external,
            gateway: gw.addr,
            renewals,
        });
        tokio::time::sleep(mapping.lifetime / 2).await;
        let deadline = Instant::now() + config.timeout;
        match client::renew(&gw, &mapping, config.lifetime, deadline).await {
            Ok(renewed) => {
                mapping = renewed;
                renewals += 1;
            }
            Err(e) => {
                tracing::warn!(%e, protocol = %mapping.protocol, "renewing the port mapping");
                held.lock().unwrap_or_else(|e| e.into_inner()).take();
                status.send_replace(PortMapStatus::Failed { reason: e.to_string() });
                return;
            }
        }
    }
}

/// Adds `external` to the node's endpoints, marked as a port mapping:
/// republished, and sent to peers still on the relay.
fn announce(sock: &Inner, external: SocketAddrV4) {
    let mut state = sock.state();
    let now = std::time::Instant::now();
    if state.peers.paths_mut().add_port_mapped_endpoint(external.into(), now) {
        sock.flush(&mut state);
    }
}
