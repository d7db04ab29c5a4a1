//! Background STUN: which address the STUN servers see the node's socket at,
//! asked while the node is already published and connecting.
//!
//! Binding does not wait for STUN. The node is published at once with its
//! local endpoints and its relay home, so a first connection starts on the
//! relay whatever STUN does; each STUN answer adds a server-reflexive
//! endpoint as it comes ([`PathSelector::add_local_endpoint`](crate::PathSelector::add_local_endpoint)),
//! the record is published again ([`MeshEndpoint::node_changes`]), and
//! peers still on the relay get a call-me-maybe listing it at once (the one
//! sent when their session began could not). On a
//! network that drops UDP no answer ever comes, and nothing waits for the
//! timeout ([`StunStatus`] says when the probes are over).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::watch;
use tokio_util::task::AbortOnDropHandle;

use super::MeshEndpoint;
use crate::magicsock::Inner;
use crate::socket;

/// A binding request is sent again this often until its answer or the timeout.
const RETRY: Duration = Duration::from_millis(500);

/// Where the node's STUN probes are.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StunStatus {
    /// Probes are still waiting for answers (the node is already published).
    Pending,
    /// Every probe answered or timed out; these addresses were found (none on
    /// a network without UDP), in the order they came.
    Done {
        /// The server-reflexive addresses, now among the node's endpoints.
        mapped: Vec<SocketAddr>,
    },
}

/// Starts probing `servers` (each for up to `timeout`) in the background.
/// Servers the socket cannot reach (IPv6 ones from an IPv4-only socket, or
/// with no route to them) are left out at once, with one debug line, so a
/// host without IPv6 pays nothing for the relay map's IPv6 STUN servers.
/// Called from [`MeshEndpoint::bind`], in the namespace the node binds in.
pub(super) fn start(
    sock: Arc<Inner>,
    servers: Vec<SocketAddr>,
    timeout: Duration,
) -> (watch::Sender<StunStatus>, Option<AbortOnDropHandle<()>>) {
    let servers = reachable(sock.udp_local_addr().ok(), servers);
    if servers.is_empty() {
        return (watch::Sender::new(StunStatus::Done { mapped: Vec::new() }), None);
    }
    let status = watch::Sender::new(StunStatus::Pending);
    let task = tokio::spawn(run(sock, servers, timeout, status.clone()));
    (status, Some(AbortOnDropHandle::new(task)))
}

/// The servers a socket bound to `bound` can send to.
fn reachable(bound: Option<SocketAddr>, servers: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let Some(bound) = bound else { return servers };
    let (reachable, skipped): (Vec<_>, Vec<_>) =
        servers.into_iter().partition(|&server| socket::can_reach(bound, server));
    if !skipped.is_empty() {
        tracing::debug!(?skipped, %bound, "STUN servers unreachable from this socket (no IPv6?)");
    }
    reachable
}

async fn run(
    sock: Arc<Inner>,
    servers: Vec<SocketAddr>,
    timeout: Duration,
    status: watch::Sender<StunStatus>,
) {
    let mut probes: FuturesUnordered<_> = servers
        .iter()
        .map(|&server| {
            let sock = sock.clone();
            async move { (server, sock.stun_probe(server, RETRY, timeout).await) }
        })
        .collect();
    let mut mapped = Vec::new();
    while let Some((server, answer)) = probes.next().await {
        match answer {
            Ok(addr) => {
                tracing::debug!(%server, %addr, "STUN answered");
                if !mapped.contains(&addr) {
                    mapped.push(addr);
                }
                let mut state = sock.state();
                state.peers.paths_mut().add_local_endpoint(addr, std::time::Instant::now());
                // Publishes LocalEndpointsChanged (the node's record follows
                // it), and tells peers still on the relay at once.
                sock.flush(&mut state);
            }
            Err(e) => tracing::warn!(%e, %server, "STUN probe failed"),
        }
    }
    status.send_replace(StunStatus::Done { mapped });
}

impl MeshEndpoint {
    /// Whether the bind-time STUN probes are still running, and what they
    /// found. [`Self::node_changes`] yields the record again for every
    /// address they add; this is for callers that want to know the probes
    /// are over (tests, `coder netcheck`-like reports).
    pub fn stun_status(&self) -> watch::Receiver<StunStatus> {
        self.stun.subscribe()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv4_socket_skips_ipv6_servers() {
        let v4: SocketAddr = "0.0.0.0:1".parse().unwrap();
        let loopback: SocketAddr = "127.0.0.1:3478".parse().unwrap();
        let servers = vec![loopback, "[::1]:3478".parse().unwrap()];
        assert_eq!(reachable(Some(v4), servers), vec![loopback]);
    }
}
