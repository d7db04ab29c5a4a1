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
//!
//! The throwaway sockets are made by a thread started at bind time
//! ([`Sockets`]), not by the runtime's worker threads: a thread stays in the
//! network namespace of the thread that started it, and a node bound from a
//! thread that entered another namespace (`ip netns`, the topology tests
//! and benches) has its own socket there. A probe from the runtime's
//! namespace would go out another way, and a firewall there that rejects it
//! would pass for an answering router at the peer.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{mpsc, oneshot};

use crate::magicsock::Inner;

/// What an opening probe carries.
const PAYLOAD: [u8; 1] = [0];

/// Sends the opening probes queued on `rx`, reporting refused ones to
/// `inner`'s path selector, until the socket is dropped.
pub(crate) async fn run(
    inner: Arc<Inner>,
    mut rx: mpsc::UnboundedReceiver<SocketAddr>,
    sockets: Sockets,
    wait: Duration,
) {
    let mut probes = FuturesUnordered::new();
    loop {
        tokio::select! {
            addr = rx.recv() => match addr {
                Some(addr) => probes.push(probe(&sockets, addr, wait)),
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
async fn probe(sockets: &Sockets, dst: SocketAddr, wait: Duration) -> (SocketAddr, bool) {
    let refused = async {
        let any: SocketAddr = match dst {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let socket = tokio::net::UdpSocket::from_std(sockets.bind(any).await?)?;
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

/// A request for a socket bound to an address, and where to answer.
type Request = (SocketAddr, oneshot::Sender<io::Result<std::net::UdpSocket>>);

/// Binds throwaway sockets in the network namespace of the thread that
/// made it (see the module docs); its thread ends when this (and every
/// clone) is dropped. Birthday probing's sockets are bound here too
/// ([`crate::birthday`]).
#[derive(Clone)]
pub(crate) struct Sockets {
    /// `None` when the thread could not start: sockets are then bound by
    /// the caller, in whatever namespace it runs in.
    tx: Option<std::sync::mpsc::Sender<Request>>,
}

impl Sockets {
    /// Starts the binding thread in the calling thread's namespace.
    pub(crate) fn spawn() -> Self {
        let (tx, rx) = std::sync::mpsc::channel::<Request>();
        let started = std::thread::Builder::new().name("mesh-opening".into()).spawn(move || {
            while let Ok((addr, reply)) = rx.recv() {
                let socket = std::net::UdpSocket::bind(addr)
                    .and_then(|s| s.set_nonblocking(true).map(|()| s));
                let _ = reply.send(socket);
            }
        });
        match started {
            Ok(_) => Self { tx: Some(tx) },
            Err(e) => {
                tracing::warn!(error = %e, "no thread for opening probes; binding them in place");
                Self { tx: None }
            }
        }
    }

    /// A non-blocking UDP socket bound to `addr`.
    pub(crate) async fn bind(&self, addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
        let gone = || io::Error::other("the opening probes' thread ended");
        let Some(tx) = &self.tx else {
            let socket = std::net::UdpSocket::bind(addr)?;
            socket.set_nonblocking(true)?;
            return Ok(socket);
        };
        let (reply, answer) = oneshot::channel();
        tx.send((addr, reply)).map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A socket from the thread works in the runtime: a datagram sent to it
    /// arrives. (That the thread keeps its creator's namespace is what
    /// `bench quic` and `bench wireguard` rely on: their nodes are bound in
    /// namespaces and have no relay, so a probe misread as refused would
    /// hold their pings for good; `tests/tests/bench_smoke.rs` runs them.)
    #[tokio::test]
    async fn sockets_bind_through_their_thread() {
        let sockets = Sockets::spawn();
        let socket = sockets.bind((Ipv4Addr::LOCALHOST, 0).into()).await.unwrap();
        let socket = tokio::net::UdpSocket::from_std(socket).unwrap();
        let sender = tokio::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        sender.send_to(b"x", socket.local_addr().unwrap()).await.unwrap();
        let mut buf = [0u8; 1];
        let got = tokio::time::timeout(Duration::from_secs(5), socket.recv(&mut buf)).await;
        assert_eq!(got.unwrap().unwrap(), 1);
    }
}
