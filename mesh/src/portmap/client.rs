//! The I/O side of port mapping: one exchange with the gateway per call.
//!
//! [`gateway`] finds the default IPv4 gateway and our address toward it;
//! [`map`] asks it for a UDP mapping of a port in one protocol, [`unmap`]
//! deletes one, [`probe`] asks which protocols it speaks. NAT-PMP and PCP
//! are UDP exchanges with port 5351, sent again at 250 ms, 500 ms, 1 s …
//! until an answer or the deadline (RFC 6886 §3.1); the socket is
//! connected, so a gateway that does not listen answers with
//! port-unreachable at once. UPnP is SSDP discovery then SOAP over HTTP.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::{timeout_at, Instant};

use super::{natpmp, pcp, upnp, Mapping, MappingKind, PortMapError, Protocol};

/// The first wait before a request is sent again.
const FIRST_RETRY: Duration = Duration::from_millis(250);
/// The most an HTTP answer from the gateway may be.
const MAX_HTTP: u64 = 64 * 1024;
/// What the router's UI shows for our mappings.
const DESCRIPTION: &str = "coder mesh";

/// The default IPv4 gateway and our address toward it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gateway {
    /// The router.
    pub addr: Ipv4Addr,
    /// Our source address toward it.
    pub local: Ipv4Addr,
}

/// The default IPv4 gateway of the calling thread's network namespace
/// (Linux: `/proc/thread-self/net/route`), or `None`.
pub async fn gateway() -> Option<Gateway> {
    // Read on this thread: tokio::fs would read on a blocking-pool thread,
    // which may be in another network namespace.
    let routes = std::fs::read_to_string("/proc/thread-self/net/route").ok()?;
    let addr = default_gateway(&routes)?;
    let probe = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await.ok()?;
    probe.connect((addr, natpmp::PORT)).await.ok()?;
    match probe.local_addr().ok()? {
        SocketAddr::V4(local) => Some(Gateway { addr, local: *local.ip() }),
        SocketAddr::V6(_) => None,
    }
}

/// The gateway of the first default route in `/proc/net/route`'s text
/// (fields in hex, the address little-endian).
pub(super) fn default_gateway(routes: &str) -> Option<Ipv4Addr> {
    routes.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (destination, gateway) = (fields.get(1)?, fields.get(2)?);
        if *destination != "00000000" {
            return None;
        }
        let gw = u32::from_str_radix(gateway, 16).ok()?;
        (gw != 0).then(|| Ipv4Addr::from(gw.swap_bytes()))
    })
}

/// Sends `request` to the gateway's 5351 until `answer` accepts a reply or
/// `deadline` passes.
async fn exchange<T>(
    gw: &Gateway,
    request: &[u8],
    deadline: Instant,
    mut answer: impl FnMut(&[u8]) -> Option<T>,
) -> Result<T, PortMapError> {
    let socket = UdpSocket::bind((gw.local, 0)).await?;
    socket.connect((gw.addr, natpmp::PORT)).await?;
    let mut wait = FIRST_RETRY;
    let mut buf = [0u8; 1100];
    loop {
        socket.send(request).await?;
        let resend = (Instant::now() + wait).min(deadline);
        loop {
            match timeout_at(resend, socket.recv(&mut buf)).await {
                Ok(Ok(n)) => {
                    if let Some(t) = buf.get(..n).and_then(&mut answer) {
                        return Ok(t);
                    }
                }
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => break,
            }
        }
        if Instant::now() >= deadline {
            return Err(PortMapError::Timeout);
        }
        wait *= 2;
    }
}

/// Asks the gateway for a UDP mapping of `internal_port` (public port
/// `external_port` if it can) in `protocol`, for `lifetime`.
pub async fn map(
    gw: &Gateway,
    protocol: Protocol,
    internal_port: u16,
    external_port: u16,
    lifetime: Duration,
    deadline: Instant,
) -> Result<Mapping, PortMapError> {
    let seconds = u32::try_from(lifetime.as_secs()).unwrap_or(u32::MAX);
    match protocol {
        Protocol::NatPmp => {
            let address = natpmp::Request::ExternalAddress.encode();
            let ip = exchange(gw, &address, deadline, |b| match natpmp::Response::decode(b) {
                Ok(natpmp::Response::ExternalAddress { addr, .. }) => Some(Ok(addr)),
                Ok(natpmp::Response::Refused { code, .. }) => Some(Err(code)),
                _ => None,
            })
            .await?
            .map_err(|code| PortMapError::Refused { protocol, code })?;
            let request =
                natpmp::Request::MapUdp { internal_port, external_port, lifetime: seconds };
            let answer =
                exchange(gw, &request.encode(), deadline, |b| match natpmp::Response::decode(b) {
                    Ok(natpmp::Response::MapUdp {
                        internal_port: i,
                        external_port,
                        lifetime,
                        ..
                    }) if i == internal_port => Some(Ok((external_port, lifetime))),
                    Ok(natpmp::Response::Refused { opcode: 1, code }) => Some(Err(code)),
                    _ => None,
                })
                .await?;
            let (port, lifetime) =
                answer.map_err(|code| PortMapError::Refused { protocol, code })?;
            mapped(protocol, ip, port, internal_port, lifetime, MappingKind::NatPmp)
        }
        Protocol::Pcp => {
            let nonce: [u8; 12] = rand::random();
            pcp_map(gw, internal_port, external_port, seconds, nonce, deadline).await
        }
        Protocol::Upnp => upnp_map(gw, internal_port, external_port, seconds, deadline).await,
    }
}

/// Renews `mapping` for `lifetime`, asking for the same public port (PCP:
/// the same nonce, so the gateway knows it is the same mapping).
pub async fn renew(
    gw: &Gateway,
    mapping: &Mapping,
    lifetime: Duration,
    deadline: Instant,
) -> Result<Mapping, PortMapError> {
    let port = mapping.external.port();
    match &mapping.kind {
        MappingKind::Pcp { nonce } => {
            let seconds = u32::try_from(lifetime.as_secs()).unwrap_or(u32::MAX);
            pcp_map(gw, mapping.internal_port, port, seconds, *nonce, deadline).await
        }
        _ => map(gw, mapping.protocol, mapping.internal_port, port, lifetime, deadline).await,
    }
}

async fn pcp_map(
    gw: &Gateway,
    internal_port: u16,
    external_port: u16,
    lifetime: u32,
    nonce: [u8; 12],
    deadline: Instant,
) -> Result<Mapping, PortMapError> {
    let request = pcp::MapRequest {
        lifetime,
        client: gw.local,
        nonce,
        internal_port,
        external_port,
        external_addr: Ipv4Addr::UNSPECIFIED,
    };
    let answer = exchange(gw, &request.encode(), deadline, |b| match pcp::MapResponse::decode(b) {
        Ok(r) if r.nonce == nonce => Some(Ok(r)),
        Err(pcp::DecodeError::Version(v)) => Some(Err(v)),
        _ => None,
    })
    .await?
    .map_err(|_| PortMapError::Unsupported(Protocol::Pcp))?;
    if answer.result != 0 {
        return Err(PortMapError::Refused { protocol: Protocol::Pcp, code: answer.result.into() });
    }
    let kind = MappingKind::Pcp { nonce };
    mapped(
        Protocol::Pcp,
        answer.external_addr,
        answer.external_port,
        internal_port,
        answer.lifetime,
        kind,
    )
}

fn mapped(
    protocol: Protocol,
    ip: Ipv4Addr,
    port: u16,
    internal_port: u16,
    lifetime: u32,
    kind: MappingKind,
) -> Result<Mapping, PortMapError> {
    if ip.is_unspecified() || port == 0 || lifetime == 0 {
        return Err(PortMapError::Unusable(protocol));
    }
    Ok(Mapping {
        protocol,
        external: SocketAddrV4::new(ip, port),
        internal_port,
        lifetime: Duration::from_secs(lifetime.into()),
        kind,
    })
}

/// Deletes `mapping` (lifetime zero; UPnP `DeletePortMapping`).
pub async fn unmap(gw: &Gateway, mapping: &Mapping, deadline: Instant) -> Result<(), PortMapError> {
    match &mapping.kind {
        MappingKind::NatPmp => {
            let request = natpmp::Request::MapUdp {
                internal_port: mapping.internal_port,
                external_port: 0,
                lifetime: 0,
            };
            exchange(gw, &request.encode(), deadline, |b| {
                matches!(
                    natpmp::Response::decode(b),
                    Ok(natpmp::Response::MapUdp { .. } | natpmp::Response::Refused { .. })
                )
                .then_some(())
            })
            .await
        }
        MappingKind::Pcp { nonce } => {
            let request = pcp::MapRequest {
                lifetime: 0,
                client: gw.local,
                nonce: *nonce,
                internal_port: mapping.internal_port,
                external_port: 0,
                external_addr: Ipv4Addr::UNSPECIFIED,
            };
            let nonce = *nonce;
            exchange(gw, &request.encode(), deadline, |b| {
                pcp::MapResponse::decode(b).ok().filter(|r| r.nonce == nonce).map(|_| ())
            })
            .await
        }
        MappingKind::Upnp { service } => {
            let delete = upnp::Action::DeletePortMapping { external_port: mapping.external.port() };
            soap(service, &delete, deadline).await.map(|_| ())
        }
    }
}

/// Finds the gateway's WAN connection service by SSDP (unicast to the
/// gateway and multicast; only an answer naming the gateway counts).
async fn upnp_service(gw: &Gateway, deadline: Instant) -> Result<upnp::Service, PortMapError> {
    let socket = UdpSocket::bind((gw.local, 0)).await?;
    let search = upnp::search_request();
    let mut wait = FIRST_RETRY;
    let mut buf = [0u8; 2048];
    let location = 'found: loop {
        socket.send_to(&search, (gw.addr, upnp::SSDP.port())).await?;
        // Multicast may have no route here; unicast is enough then.
        let _ = socket.send_to(&search, upnp::SSDP).await;
        let resend = (Instant::now() + wait).min(deadline);
        while let Ok(received) = timeout_at(resend, socket.recv_from(&mut buf)).await {
            let (n, from) = received?;
            let Some(answer) = buf.get(..n) else { continue };
            match upnp::parse_search_response(answer) {
                Ok(location) if from.ip() == gw.addr && *location.addr.ip() == gw.addr => {
                    break 'found location;
                }
                Ok(location) => tracing::debug!(%from, ?location, "ignored an SSDP answer"),
                Err(_) => {}
            }
        }
        if Instant::now() >= deadline {
            return Err(PortMapError::Timeout);
        }
        wait *= 2;
    };
    let get = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        location.path, location.addr
    );
    let answer = http(location.addr, get.as_bytes(), deadline).await?;
    let body = upnp::http_body(&answer).map_err(PortMapError::Upnp)?;
    let service = upnp::parse_description(&location, &body).map_err(PortMapError::Upnp)?;
    if *service.control.addr.ip() != gw.addr {
        return Err(PortMapError::Unusable(Protocol::Upnp));
    }
    Ok(service)
}

async fn upnp_map(
    gw: &Gateway,
    internal_port: u16,
    external_port: u16,
    lease: u32,
    deadline: Instant,
) -> Result<Mapping, PortMapError> {
    let service = upnp_service(gw, deadline).await?;
    let body = soap(&service, &upnp::Action::GetExternalIpAddress, deadline).await?;
    let ip = upnp::parse_external_address(&body).map_err(PortMapError::Upnp)?;
    let mut port = if external_port == 0 { internal_port } else { external_port };
    let mut lease = lease;
    // A port taken by another host: try random ones; a gateway that keeps
    // only permanent leases: ask for one (it is deleted on close).
    for _ in 0..4 {
        let add = upnp::Action::AddPortMapping {
            external_port: port,
            client: gw.local,
            internal_port,
            lease,
            description: DESCRIPTION,
        };
        match soap(&service, &add, deadline).await {
            Ok(_) => {
                let kind = MappingKind::Upnp { service };
                let shown = if lease == 0 { u32::MAX } else { lease };
                return mapped(Protocol::Upnp, ip, port, internal_port, shown, kind);
            }
            Err(PortMapError::Upnp(upnp::ParseError::Upnp { code: 718, .. })) => {
                port = rand::random::<u16>() | 1024;
            }
            Err(PortMapError::Upnp(upnp::ParseError::Upnp { code: 725, .. })) if lease != 0 => {
                lease = 0;
            }
            Err(e) => return Err(e),
        }
    }
    Err(PortMapError::Unusable(Protocol::Upnp))
}

async fn soap(
    service: &upnp::Service,
    action: &upnp::Action,
    deadline: Instant,
) -> Result<String, PortMapError> {
    let answer = http(service.control.addr, &action.http_request(service), deadline).await?;
    upnp::http_body(&answer).map_err(PortMapError::Upnp)
}

/// One HTTP/1.1 exchange (`Connection: close`): the whole answer, at most
/// [`MAX_HTTP`] bytes.
async fn http(
    addr: SocketAddrV4,
    request: &[u8],
    deadline: Instant,
) -> Result<Vec<u8>, PortMapError> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(request).await?;
        let mut answer = Vec::new();
        stream.take(MAX_HTTP).read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    Ok(timeout_at(deadline, exchange).await.map_err(|_| PortMapError::Timeout)??)
}

/// Which protocols the gateway speaks: each asked at once, each answer (a
/// refusal too) counts.
pub async fn probe(gw: &Gateway, deadline: Instant) -> super::Probe {
    let pmp_request = natpmp::Request::ExternalAddress.encode();
    let pmp =
        exchange(gw, &pmp_request, deadline, |b| natpmp::Response::decode(b).ok().map(|_| ()));
    let pcp_announce = pcp::announce_request(gw.local);
    let pcp = exchange(gw, &pcp_announce, deadline, |b| pcp::is_answer(b).then_some(()));
    let upnp = upnp_service(gw, deadline);
    let (pmp, pcp, upnp) = tokio::join!(pmp, pcp, upnp);
    super::Probe {
        gateway: Some(gw.addr),
        nat_pmp: pmp.is_ok(),
        pcp: pcp.is_ok(),
        upnp: upnp.is_ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_route_gateway() {
        let routes = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\n\
                      eth0\t0065630A\t00000000\t0001\t0\t0\t0\t00FFFFFF\n\
                      eth0\t00000000\t0165630A\t0003\t0\t0\t0\t00000000\n";
        assert_eq!(default_gateway(routes), Some(Ipv4Addr::new(10, 99, 101, 1)));
        assert_eq!(default_gateway("Iface\n"), None);
        assert_eq!(default_gateway("h\neth0 00000000 zz\n"), None);
    }
}
