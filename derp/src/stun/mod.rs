//! STUN: the sans-IO binding request/response codec (its items are
//! re-exported here), a UDP [`StunServer`], and [`probe`], a one-shot
//! client for endpoint discovery.

mod proto;
mod server;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::UdpSocket;

pub use proto::{
    binding_request, binding_response, is_stun, parse_binding_request, parse_binding_response,
    StunError, TransactionId, MAGIC_COOKIE,
};
pub use server::StunServer;

/// A STUN probe failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    #[error("STUN socket error: {0}")]
    Io(#[from] std::io::Error),
    #[error("no STUN answer from {0} in time")]
    Timeout(SocketAddr),
}

/// Asks `server` which address it sees `socket` at. Datagrams that are not
/// the answer to this request are ignored, so use a socket that nothing
/// else reads while the probe runs.
pub async fn probe(
    socket: &UdpSocket,
    server: SocketAddr,
    timeout: Duration,
) -> Result<SocketAddr, ProbeError> {
    let txid = TransactionId::random();
    socket.send_to(&binding_request(txid), server).await?;
    let wait = async {
        let mut buf = [0u8; 1024];
        loop {
            let (len, from) = socket.recv_from(&mut buf).await?;
            let packet = buf.get(..len).unwrap_or_default();
            match parse_binding_response(packet) {
                Ok((id, mapped)) if id == txid && from == server => return Ok(mapped),
                _ => continue,
            }
        }
    };
    tokio::time::timeout(timeout, wait).await.map_err(|_| ProbeError::Timeout(server))?
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stun_answer_carries_mapped_address() {
        let server = StunServer::spawn("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mapped = probe(&socket, server.local_addr(), Duration::from_secs(5)).await.unwrap();
        assert_eq!(mapped, socket.local_addr().unwrap());
        assert_eq!(server.requests(), 1);
        server.shutdown().await;
    }

    #[tokio::test]
    async fn stun_over_ipv6_when_available() {
        let Ok(server) = StunServer::spawn("[::1]:0".parse().unwrap()).await else {
            return; // No IPv6 loopback on this machine.
        };
        let socket = UdpSocket::bind("[::1]:0").await.unwrap();
        let mapped = probe(&socket, server.local_addr(), Duration::from_secs(5)).await.unwrap();
        assert_eq!(mapped, socket.local_addr().unwrap());
    }

    /// The IPv4 wildcard listens on IPv6 too, and answers an IPv4 client
    /// (IPv4-mapped on a dual-stack socket) with its plain IPv4 address.
    #[tokio::test]
    async fn the_ipv4_wildcard_serves_both_families() {
        let server = StunServer::spawn("0.0.0.0:0".parse().unwrap()).await.unwrap();
        let port = server.local_addr().port();
        assert_eq!(server.local_addr(), SocketAddr::from(([0, 0, 0, 0], port)));
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = SocketAddr::from(([127, 0, 0, 1], port));
        let mapped = probe(&socket, to, Duration::from_secs(5)).await.unwrap();
        assert_eq!(mapped, socket.local_addr().unwrap());
        let Ok(socket6) = UdpSocket::bind("[::1]:0").await else {
            assert!(std::env::var_os("CI").is_none(), "no IPv6 loopback in CI");
            eprintln!("skipping the IPv6 half: no IPv6 loopback here");
            return;
        };
        assert!(server.serves_ipv6(), "bound only {:?}", server.local_addrs());
        let to6: SocketAddr = format!("[::1]:{port}").parse().unwrap();
        let mapped = probe(&socket6, to6, Duration::from_secs(5)).await.unwrap();
        assert_eq!(mapped, socket6.local_addr().unwrap());
        assert_eq!(server.requests(), 2);
    }
}
