//! The node's UDP socket: binding it dual-stack, and guessing which of the
//! host's addresses peers could reach it at.
//!
//! An IPv6 wildcard bind (`[::]:port`) is made dual-stack explicitly
//! (`IPV6_V6ONLY` off), so one socket serves IPv4 peers (as IPv4-mapped
//! addresses) and IPv6 peers; where IPv6 is unavailable the bind falls back to
//! IPv4 on the same port. The kernel hands IPv4 peers' addresses to a
//! dual-stack socket IPv4-mapped (`::ffff:a.b.c.d`); [`canonical`] turns
//! them back into plain IPv4, as peers announce them, wherever an address
//! from the network meets one from a record (received datagrams, STUN
//! answers, peers' endpoints).
//!
//! Local endpoints are guessed without sending anything: connecting a
//! throwaway UDP socket toward a documentation address makes the kernel pick
//! the source address of the default route, per family. A dual-stack socket
//! also announces every global and unique-local IPv6 address of the host
//! ([`host_ipv6`]): unlike IPv4 behind a NAT, each is reachable as it is
//! (link-local addresses are left out: they need a scope id peers cannot use).

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

/// `addr` with an IPv4-mapped IPv6 address turned into plain IPv4.
pub(crate) fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// The source address the kernel would use toward `probe`, if there is a route.
pub(crate) fn route_source(probe: SocketAddr) -> Option<IpAddr> {
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
/// itself if specific, else the default routes' source addresses, and for
/// a dual-stack socket the host's global and unique-local IPv6 addresses.
pub(crate) fn local_endpoints(bound: SocketAddr) -> Vec<SocketAddr> {
    if !bound.ip().is_unspecified() {
        return vec![bound];
    }
    let mut probes = vec![SocketAddr::from(([203, 0, 113, 1], 9))];
    if bound.is_ipv6() {
        probes.push(SocketAddr::new(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1).into(), 9));
    }
    let mut ips: Vec<IpAddr> = probes.into_iter().filter_map(route_source).collect();
    if bound.is_ipv6() {
        for ip in host_ipv6() {
            if !ips.contains(&IpAddr::V6(ip)) {
                ips.push(IpAddr::V6(ip));
            }
        }
    }
    if bound.is_ipv6() && !ips.iter().any(IpAddr::is_ipv6) {
        tracing::debug!("no IPv6 address or route: announcing IPv4 endpoints only");
    }
    ips.into_iter().map(|ip| SocketAddr::new(ip, bound.port())).collect()
}

/// Whether the socket bound to `bound` can send to `dst`: the same family
/// (or a dual-stack socket), and a route to it.
pub(crate) fn can_reach(bound: SocketAddr, dst: SocketAddr) -> bool {
    if bound.is_ipv4() && dst.is_ipv6() {
        return false;
    }
    route_source(dst).is_some()
}

/// The host's IPv6 addresses a peer could reach: global unicast and unique
/// local, not link-local, loopback, tentative, deprecated or failed DAD.
/// Read from the kernel's table for the calling thread's network namespace;
/// none where there is no such table (no IPv6, not Linux).
fn host_ipv6() -> Vec<Ipv6Addr> {
    let table = std::fs::read_to_string("/proc/thread-self/net/if_inet6")
        .or_else(|_| std::fs::read_to_string("/proc/net/if_inet6"));
    match table {
        Ok(table) => parse_if_inet6(&table),
        Err(_) => Vec::new(),
    }
}

/// `IFA_F_DADFAILED`, `IFA_F_DEPRECATED` and `IFA_F_TENTATIVE`: addresses
/// that cannot (or should no longer) carry new traffic.
const UNUSABLE: u32 = 0x08 | 0x20 | 0x40;

/// The usable global and unique-local addresses of `/proc/net/if_inet6`:
/// lines of `ADDRESS(32 hex) IFINDEX PREFIXLEN SCOPE FLAGS NAME`.
fn parse_if_inet6(table: &str) -> Vec<Ipv6Addr> {
    let mut out = Vec::new();
    for line in table.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [hex, _index, _prefix, _scope, flags, _name] = fields.as_slice() else { continue };
        let (Ok(bits), Ok(flags)) = (u128::from_str_radix(hex, 16), u32::from_str_radix(flags, 16))
        else {
            continue;
        };
        if hex.len() != 32 || flags & UNUSABLE != 0 {
            continue;
        }
        let ip = Ipv6Addr::from(bits);
        let global = ip.segments()[0] & 0xe000 == 0x2000;
        let unique_local = ip.segments()[0] & 0xfe00 == 0xfc00;
        if (global || unique_local) && !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
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
    fn if_inet6_keeps_global_and_unique_local_addresses() {
        let table = "\
fe8000000000000000fc00fffe000001 04 40 20 80     eth0
00000000000000000000000000000001 01 80 10 80       lo
fd000000000000000000000000000002 04 40 00 82     eth0
20010db8000000000000000000000010 04 40 00 80     eth0
20010db8000000000000000000000011 04 40 00 20     eth0
20010db8000000000000000000000012 04 40 00 c0     eth0
fd000000000000000000000000000002 05 40 00 80     eth1
garbage line
2001zzzz000000000000000000000013 04 40 00 80     eth0
";
        let got: Vec<String> = parse_if_inet6(table).iter().map(ToString::to_string).collect();
        assert_eq!(got, ["fd00::2", "2001:db8::10"]);
    }

    #[test]
    fn ipv4_mapped_addresses_become_ipv4() {
        let mapped: SocketAddr = "[::ffff:192.0.2.1]:7".parse().unwrap();
        assert_eq!(canonical(mapped), "192.0.2.1:7".parse().unwrap());
        let v6: SocketAddr = "[2001:db8::1]:7".parse().unwrap();
        assert_eq!(canonical(v6), v6);
    }

    #[test]
    fn an_ipv4_socket_cannot_reach_ipv6() {
        let v4: SocketAddr = "0.0.0.0:1".parse().unwrap();
        assert!(!can_reach(v4, "[2001:db8::1]:3478".parse().unwrap()));
        assert!(can_reach(v4, "127.0.0.1:3478".parse().unwrap()));
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
