//! A tiny UDP STUN server: answers every binding request with the
//! requester's address. One owned task per socket; dropping the handle
//! stops them.
//!
//! Asked to listen on the IPv4 wildcard (`0.0.0.0:port`), it listens on
//! IPv6 too: it binds `[::]:port` first (dual-stack where the system allows,
//! so one socket serves both families), then `0.0.0.0:port` (which succeeds
//! only where the IPv6 socket is IPv6-only); on a host without IPv6 the
//! first bind fails and only IPv4 is served. IPv4 requesters reach a
//! dual-stack socket IPv4-mapped (`::ffff:a.b.c.d`); they are answered
//! with their plain IPv4 address, as an IPv4-only server would.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio_util::task::AbortOnDropHandle;
use tracing::{debug, warn};

use super::proto::{binding_response, parse_binding_request};

/// A running STUN server.
#[derive(Debug)]
pub struct StunServer {
    local_addr: SocketAddr,
    local_addrs: Vec<SocketAddr>,
    requests: Arc<AtomicU64>,
    tasks: Vec<AbortOnDropHandle<()>>,
}

impl StunServer {
    /// Binds `addr` (use port 0 in tests) and starts answering; the IPv4
    /// wildcard listens on IPv6 too (see the module docs).
    pub async fn spawn(addr: SocketAddr) -> io::Result<Self> {
        let sockets = bind(addr).await?;
        let mut local_addrs = Vec::new();
        for socket in &sockets {
            local_addrs.push(socket.local_addr()?);
        }
        let port = local_addrs.first().map_or(addr.port(), SocketAddr::port);
        let requests = Arc::new(AtomicU64::new(0));
        let tasks = sockets
            .into_iter()
            .map(|socket| AbortOnDropHandle::new(tokio::spawn(run(socket, requests.clone()))))
            .collect();
        Ok(Self { local_addr: SocketAddr::new(addr.ip(), port), local_addrs, requests, tasks })
    }

    /// The address asked for, with the port bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Every socket's address: `[::]:port` beside `0.0.0.0:port` when the
    /// IPv4 wildcard also listens on IPv6.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// Whether requests over IPv6 are answered.
    pub fn serves_ipv6(&self) -> bool {
        self.local_addrs.iter().any(SocketAddr::is_ipv6)
    }

    /// Binding requests answered so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub async fn shutdown(self) {
        for task in self.tasks {
            task.abort();
            let _ = task.await;
        }
    }
}

/// The sockets that serve `addr` (see the module docs).
async fn bind(addr: SocketAddr) -> io::Result<Vec<UdpSocket>> {
    if addr.ip() != Ipv4Addr::UNSPECIFIED {
        return Ok(vec![UdpSocket::bind(addr).await?]);
    }
    let v6 = match UdpSocket::bind((Ipv6Addr::UNSPECIFIED, addr.port())).await {
        Ok(socket) => socket,
        Err(e) => {
            debug!(%e, "no IPv6 STUN listener; serving IPv4 only");
            return Ok(vec![UdpSocket::bind(addr).await?]);
        }
    };
    let port = v6.local_addr()?.port();
    match UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port)).await {
        // The IPv6 socket is IPv6-only here: both serve.
        Ok(v4) => Ok(vec![v4, v6]),
        // Dual-stack: the IPv6 socket serves IPv4 too.
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Ok(vec![v6]),
        Err(e) => Err(e),
    }
}

async fn run(socket: UdpSocket, requests: Arc<AtomicU64>) {
    let mut buf = vec![0u8; 2048];
    loop {
        let (len, from) = match socket.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(err) => {
                // ICMP errors surface here on some platforms; keep serving.
                debug!(%err, "stun recv failed");
                continue;
            }
        };
        let Some(packet) = buf.get(..len) else { continue };
        let Ok(txid) = parse_binding_request(packet) else {
            continue;
        };
        requests.fetch_add(1, Ordering::Relaxed);
        let mapped = SocketAddr::new(from.ip().to_canonical(), from.port());
        if let Err(err) = socket.send_to(&binding_response(txid, mapped), from).await {
            warn!(%err, %from, "stun reply failed");
        }
    }
}
