//! Opening probes: before a node first pings a peer's endpoint, one datagram
//! from a throwaway socket asks whether the router there answers unsolicited
//! UDP (`docs/reliability.md`, finding 1).
//!
//! The path selector queues the endpoints ([`PathSelector::poll_opening_probe`](crate::PathSelector::poll_opening_probe));
//! [`Inner::flush`] hands them to [`run`], which sends each probe from a
//! fresh connected socket and, if the router answers port-unreachable
//! (`ECONNREFUSED` on that socket) within the selector's
//! [`PathConfig::opening_wait`](crate::PathConfig::opening_wait), reports
//! it ([`PathSelector::handle_unreachable`](crate::PathSelector::handle_unreachable)).
//! The probe's conntrack entry in that router names the throwaway port,
//! which no one uses again, so it clashes with nothing, unlike a ping from
//! the node's own socket. The payload is one zero byte, which a node that
//! does receive it (no NAT, or a full cone) drops as unknown.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc;

use crate::magicsock::Inner;

/// What an opening probe carries.
const PAYLOAD: [u8; 1] = [0];

/// Sends the opening probes queued on `rx`, reporting refused ones to
/// `inner`'s path selector, until the socket is dropped.
pub(crate) async fn run(
    inner: Arc<Inner>,
    mut rx: mpsc::UnboundedReceiver<SocketAddr>,
    wait: Duration,
) {
    let mut probes = FuturesUnordered::new();
    loop {
        tokio::select! {
            addr = rx.recv() => match addr {
                Some(addr) => probes.push(probe(addr, wait)),
                None => return,
            },
            Some((addr, refused)) = probes.next(), if !probes.is_empty() => {
                if refused {
                    tracing::debug!(%addr, "the router at this endpoint answers unsolicited UDP");
                    inner.handle_unreachable(addr, Instant::now());
                }
            }
        }
    }
}

/// Whether `dst` refused a datagram from a fresh socket within `wait`.
async fn probe(dst: SocketAddr, wait: Duration) -> (SocketAddr, bool) {
    let refused = async {
        let any: SocketAddr = match dst {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let socket = tokio::net::UdpSocket::bind(any).await?;
        socket.connect(dst).await?;
        socket.send(&PAYLOAD).await?;
        let mut buf = [0u8; 16];
        match tokio::time::timeout(wait, socket.recv(&mut buf)).await {
            Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(true),
            _ => Ok::<_, io::Error>(false),
        }
    };
    // A probe that cannot be sent (no route) says nothing: the endpoint
    // counts as silent, and gets pinged as before.
    (dst, refused.await.unwrap_or(false))
}
