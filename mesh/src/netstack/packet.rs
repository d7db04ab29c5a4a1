//! Reading and writing the few IP packets the stack handles outside smoltcp:
//! which transport a packet carries and to where, UDP datagrams (built with
//! checksums), and DNS-sized answers. No I/O.

use std::net::{IpAddr, SocketAddr};

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr, TcpPacket, UdpPacket,
    UdpRepr,
};

/// Hop limit / TTL of packets we build.
const HOP_LIMIT: u8 = 64;

/// The transport header of an IP packet, as far as the stack cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A TCP segment; `syn` is a connection request (SYN without ACK).
    Tcp { src: SocketAddr, dst: SocketAddr, syn: bool },
    /// A UDP datagram; the payload is at `payload` (offset, length) in the packet.
    Udp { src: SocketAddr, dst: SocketAddr, payload: (usize, usize) },
    /// Anything else (ICMP, fragments, extension headers): smoltcp's business.
    Other,
}

/// Parses the IP and transport headers of `packet`; `None` if it is not IP.
pub fn transport(packet: &[u8]) -> Option<Transport> {
    let (src, dst, proto, offset, payload): (IpAddr, IpAddr, IpProtocol, usize, &[u8]) =
        match packet.first()? >> 4 {
            4 => {
                let ip = Ipv4Packet::new_checked(packet).ok()?;
                if ip.more_frags() || ip.frag_offset() != 0 {
                    return Some(Transport::Other);
                }
                let header = usize::from(ip.header_len());
                (
                    ip.src_addr().into(),
                    ip.dst_addr().into(),
                    ip.next_header(),
                    header,
                    packet.get(header..usize::from(ip.total_len()))?,
                )
            }
            6 => {
                let ip = Ipv6Packet::new_checked(packet).ok()?;
                let header = ip.header_len();
                let end = header + usize::from(ip.payload_len());
                (
                    ip.src_addr().into(),
                    ip.dst_addr().into(),
                    ip.next_header(),
                    header,
                    packet.get(header..end)?,
                )
            }
            _ => return None,
        };
    Some(match proto {
        IpProtocol::Tcp => {
            let tcp = TcpPacket::new_checked(payload).ok()?;
            Transport::Tcp {
                src: SocketAddr::new(src, tcp.src_port()),
                dst: SocketAddr::new(dst, tcp.dst_port()),
                syn: tcp.syn() && !tcp.ack(),
            }
        }
        IpProtocol::Udp => {
            let udp = UdpPacket::new_checked(payload).ok()?;
            let len = usize::from(udp.len()).checked_sub(8)?;
            Transport::Udp {
                src: SocketAddr::new(src, udp.src_port()),
                dst: SocketAddr::new(dst, udp.dst_port()),
                payload: (offset + 8, len),
            }
        }
        _ => Transport::Other,
    })
}

/// An IP packet carrying one UDP datagram from `src` to `dst`, with its
/// checksum; `None` if the families differ or the payload is too long.
pub fn udp(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Option<Vec<u8>> {
    let repr = UdpRepr { src_port: src.port(), dst_port: dst.port() };
    let udp_len = 8 + payload.len();
    u16::try_from(udp_len).ok()?;
    let caps = ChecksumCapabilities::default();
    let (src_ip, dst_ip) = (IpAddress::from(src.ip()), IpAddress::from(dst.ip()));
    let emit_udp = |buf: &mut [u8]| {
        let mut packet = UdpPacket::new_unchecked(buf);
        repr.emit(
            &mut packet,
            &src_ip,
            &dst_ip,
            payload.len(),
            |b| b.copy_from_slice(payload),
            &caps,
        );
    };
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let ip = Ipv4Repr {
                src_addr: s,
                dst_addr: d,
                next_header: IpProtocol::Udp,
                payload_len: udp_len,
                hop_limit: HOP_LIMIT,
            };
            let mut buf = vec![0; ip.buffer_len() + udp_len];
            let mut packet = Ipv4Packet::new_unchecked(&mut buf[..]);
            ip.emit(&mut packet, &caps);
            emit_udp(packet.payload_mut());
            Some(buf)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let ip = Ipv6Repr {
                src_addr: s,
                dst_addr: d,
                next_header: IpProtocol::Udp,
                payload_len: udp_len,
                hop_limit: HOP_LIMIT,
            };
            let mut buf = vec![0; ip.buffer_len() + udp_len];
            let mut packet = Ipv6Packet::new_unchecked(&mut buf[..]);
            ip.emit(&mut packet);
            emit_udp(packet.payload_mut());
            Some(buf)
        }
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn udp_v6_snapshot_and_parse() {
        let src: SocketAddr = "[fd5c:9a3e:71b2::1]:5353".parse().unwrap();
        let dst: SocketAddr = "[fd5c:9a3e:71b2::2]:53".parse().unwrap();
        let p = udp(src, dst, b"hi").unwrap();
        // Checksum 0x6fb4 checked independently (RFC 768 over the RFC 8200 pseudo-header).
        assert_eq!(
            hex::encode(&p),
            "60000000000a1140fd5c9a3e71b200000000000000000001fd5c9a3e71b20000000000000000000214e90035000a6fb46869"
        );
        assert_eq!(transport(&p), Some(Transport::Udp { src, dst, payload: (48, 2) }));
    }

    #[test]
    fn udp_v4_parses_back() {
        let src: SocketAddr = "100.64.0.1:1000".parse().unwrap();
        let dst: SocketAddr = "100.64.0.2:2000".parse().unwrap();
        let p = udp(src, dst, b"hello").unwrap();
        assert_eq!(transport(&p), Some(Transport::Udp { src, dst, payload: (28, 5) }));
        assert_eq!(&p[28..], b"hello");
        assert!(udp(src, "[::1]:1".parse().unwrap(), b"").is_none());
    }

    proptest! {
        #[test]
        fn transport_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = transport(&bytes);
        }

        #[test]
        fn udp_round_trips(port_a in 1u16.., port_b in 1u16.., payload in proptest::collection::vec(any::<u8>(), 0..1400)) {
            let src = SocketAddr::new("fd5c:9a3e:71b2::7".parse().unwrap(), port_a);
            let dst = SocketAddr::new("fd5c:9a3e:71b2::8".parse().unwrap(), port_b);
            let p = udp(src, dst, &payload).unwrap();
            let Some(Transport::Udp { src: s, dst: d, payload: (off, len) }) = transport(&p) else { panic!() };
            prop_assert_eq!((s, d), (src, dst));
            prop_assert_eq!(&p[off..off + len], &payload[..]);
        }
    }
}
