//! The node's UDP socket: binding it dual-stack, and guessing which of the
//! host's addresses peers could reach it at.
//!
//! An IPv6 wildcard bind (`[::]:port`) is made dual-stack explicitly
//! (`IPV6_V6ONLY` off), so one socket serves IPv4 peers (as IPv4-mapped
//! addresses) and IPv6 peers; where IPv6 is unavailable the bind falls back to
//! IPv4 on the same port. Local endpoints are guessed without sending anything:
//! connecting a throwaway UDP socket toward a documentation address makes the
//! kernel pick the source address of the default route.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};

use socket2::{Domain, Protocol, Socket, Type};

/// Socket buffers large enough for a fast QUIC stream.
const BUFFER_SIZE: usize = 4 << 20;

fn bind_one(addr: SocketAddr) -> io::Result<tokio::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        socket.set_only_v6(false)?;
    }
    // Smaller buffers still work, just slower.
    let _ = socket.set_recv_buffer_size(BUFFER_SIZE);
    let _ = socket.set_send_buffer_size(BUFFER_SIZE);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    tokio::net::UdpSocket::from_std(socket.into())
}

/// Binds `addr`; an IPv6 wildcard that cannot be bound falls back to IPv4.
pub(crate) fn bind(addr: SocketAddr) -> io::Result<tokio::net::UdpSocket> {
    match bind_one(addr) {
        Err(e) if addr.is_ipv6() && addr.ip().is_unspecified() => {
            tracing::debug!(%e, "no dual-stack socket, using IPv4 only");
            bind_one(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), addr.port()))
        }
        other => other,
    }
}

/// The address to send to `dst` on a socket bound to `local`: IPv4 peers
/// are IPv4-mapped on a dual-stack IPv6 socket.
pub(crate) fn send_addr(local: SocketAddr, dst: SocketAddr) -> SocketAddr {
    match (local, dst) {
        (SocketAddr::V6(_), SocketAddr::V4(v4)) => {
            SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
        }
        _ => dst,
    }
}

/// The source address the kernel would use toward `probe`, if there is a route.
fn route_source(probe: SocketAddr) -> Option<IpAddr> {
    let any: SocketAddr = match probe {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(any).ok()?;
    // UDP connect only looks up the route; nothing is sent.
    socket.connect(probe).ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}

/// Endpoints a socket bound to `bound` can be reached at: the bound address
/// itself if specific, else the default routes' source addresses.
pub(crate) fn local_endpoints(bound: SocketAddr) -> Vec<SocketAddr> {
    if !bound.ip().is_unspecified() {
        return vec![bound];
    }
    let mut probes = vec![SocketAddr::from(([203, 0, 113, 1], 9))];
    if bound.is_ipv6() {
        probes.push(SocketAddr::new(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1).into(), 9));
    }
    probes
        .into_iter()
        .filter_map(route_source)
        .map(|ip| SocketAddr::new(ip, bound.port()))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wildcard_bind_is_usable_and_maps_ipv4_peers() {
        let socket = bind("[::]:0".parse().unwrap()).unwrap();
        let local = socket.local_addr().unwrap();
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        let peer_addr = peer.local_addr().unwrap();
        let to = send_addr(local, peer_addr);
        socket.send_to(b"hi", to).await.unwrap();
        let mut buf = [0u8; 2];
        let (n, _) = peer.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"hi");
    }

    #[test]
    fn specific_bind_announces_itself() {
        let bound: SocketAddr = "127.0.0.1:4242".parse().unwrap();
        assert_eq!(local_endpoints(bound), vec![bound]);
        for ep in local_endpoints("0.0.0.0:4242".parse().unwrap()) {
            assert_eq!(ep.port(), 4242);
            assert!(!ep.ip().is_unspecified());
        }
    }
}
