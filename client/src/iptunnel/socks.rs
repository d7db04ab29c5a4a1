//! A SOCKS5 proxy (RFC 1928, no authentication; `CONNECT` and `UDP
//! ASSOCIATE`) into the mesh through the client's userspace stack. Hostnames
//! are resolved here, from the mesh names, so `curl --socks5-hostname`
//! reaches `ws.coder`.
//!
//! A UDP association gets a relay socket on the proxy's address and a port
//! of ours on the mesh; datagrams (with the SOCKS5 UDP header) go out as UDP
//! from that port, and what comes back to it ([`SocksUdp`], the stack's UDP
//! handler) goes to the client with the header naming the sender. It lives
//! as long as its TCP control connection.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use mesh::netstack::{Netstack, UdpHandler};
use mesh::wg::WgSender;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::names::Names;

const VERSION: u8 = 5;
const NO_AUTH: u8 = 0;
const NO_ACCEPTABLE: u8 = 0xff;
const CMD_CONNECT: u8 = 1;
const CMD_UDP_ASSOCIATE: u8 = 3;

/// Reply codes.
const SUCCEEDED: u8 = 0;
const GENERAL_FAILURE: u8 = 1;
const HOST_UNREACHABLE: u8 = 4;
const CONNECTION_REFUSED: u8 = 5;
const COMMAND_NOT_SUPPORTED: u8 = 7;
const ADDRESS_NOT_SUPPORTED: u8 = 8;

/// Where a client asked to go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Ip(SocketAddr),
    Name(String, u16),
}

/// What a client asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Connect(Target),
    /// The address the client says it will send from (often all zeros).
    UdpAssociate(Target),
}

/// Why a request was refused, as the reply code to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal(pub u8);

/// Reads the greeting and the request; on an unsupported one, answers it
/// and returns the refusal.
pub async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
) -> std::io::Result<Result<Request, Refusal>> {
    let mut head = [0u8; 2];
    s.read_exact(&mut head).await?;
    if head[0] != VERSION {
        return Ok(Err(Refusal(GENERAL_FAILURE)));
    }
    let mut methods = vec![0u8; usize::from(head[1])];
    s.read_exact(&mut methods).await?;
    if !methods.contains(&NO_AUTH) {
        s.write_all(&[VERSION, NO_ACCEPTABLE]).await?;
        return Ok(Err(Refusal(GENERAL_FAILURE)));
    }
    s.write_all(&[VERSION, NO_AUTH]).await?;
    let mut req = [0u8; 4];
    s.read_exact(&mut req).await?;
    let [version, cmd, _, atyp] = req;
    let target = match atyp {
        1 => {
            let mut b = [0u8; 6];
            s.read_exact(&mut b).await?;
            let ip = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
            Target::Ip(SocketAddr::new(ip.into(), u16::from_be_bytes([b[4], b[5]])))
        }
        4 => {
            let mut b = [0u8; 18];
            s.read_exact(&mut b).await?;
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&b[..16]);
            Target::Ip(SocketAddr::new(
                Ipv6Addr::from(octets).into(),
                u16::from_be_bytes([b[16], b[17]]),
            ))
        }
        3 => {
            let mut len = [0u8; 1];
            s.read_exact(&mut len).await?;
            let mut name = vec![0u8; usize::from(len[0]) + 2];
            s.read_exact(&mut name).await?;
            let port_at = name.len() - 2;
            let port = u16::from_be_bytes([name[port_at], name[port_at + 1]]);
            name.truncate(port_at);
            match String::from_utf8(name) {
                Ok(n) => match n.parse::<IpAddr>() {
                    Ok(ip) => Target::Ip(SocketAddr::new(ip, port)),
                    Err(_) => Target::Name(n, port),
                },
                Err(_) => return refuse(s, HOST_UNREACHABLE).await,
            }
        }
        _ => return refuse(s, ADDRESS_NOT_SUPPORTED).await,
    };
    match (version, cmd) {
        (VERSION, CMD_CONNECT) => Ok(Ok(Request::Connect(target))),
        (VERSION, CMD_UDP_ASSOCIATE) => Ok(Ok(Request::UdpAssociate(target))),
        _ => refuse(s, COMMAND_NOT_SUPPORTED).await,
    }
}

async fn refuse<S: AsyncWrite + Unpin>(
    s: &mut S,
    code: u8,
) -> std::io::Result<Result<Request, Refusal>> {
    reply(s, code, None).await?;
    Ok(Err(Refusal(code)))
}

/// The reply with the bound address (zeros when unknown).
async fn reply<S: AsyncWrite + Unpin>(
    s: &mut S,
    code: u8,
    bound: Option<SocketAddr>,
) -> std::io::Result<()> {
    let mut r = vec![VERSION, code, 0];
    match bound {
        Some(SocketAddr::V6(a)) => {
            r.push(4);
            r.extend_from_slice(&a.ip().octets());
            r.extend_from_slice(&a.port().to_be_bytes());
        }
        Some(SocketAddr::V4(a)) => {
            r.push(1);
            r.extend_from_slice(&a.ip().octets());
            r.extend_from_slice(&a.port().to_be_bytes());
        }
        None => r.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0]),
    }
    s.write_all(&r).await
}

/// Where replies to each association's mesh port go.
type Associations = Arc<Mutex<HashMap<u16, mpsc::Sender<(SocketAddr, Bytes)>>>>;

/// The stack's UDP handler: datagrams to an association's mesh port go to it.
#[derive(Clone, Default)]
pub struct SocksUdp(Associations);

impl UdpHandler for SocksUdp {
    fn datagram(&mut self, src: SocketAddr, dst: SocketAddr, payload: &[u8]) {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = map.get(&dst.port()) {
            // A full queue drops, as UDP goes.
            let _ = tx.try_send((src, Bytes::copy_from_slice(payload)));
        }
    }
}

/// What the proxy needs besides its listener.
#[derive(Clone)]
pub struct Proxy {
    pub stack: Arc<Netstack>,
    pub names: watch::Receiver<Names>,
    /// For UDP: our mesh address and the stack's sender.
    pub mesh_ip: IpAddr,
    pub tx: WgSender,
    pub udp: SocksUdp,
}

/// Serves SOCKS5 on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, proxy: Proxy) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            a = listener.accept() => match a {
                Ok((s, _)) => { conns.spawn(connection(s, proxy.clone())); }
                Err(e) => {
                    tracing::warn!(%e, "SOCKS5 accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

fn resolve(target: &Target, names: &watch::Receiver<Names>) -> Option<SocketAddr> {
    match target {
        Target::Ip(a) => Some(*a),
        Target::Name(n, port) => names
            .borrow()
            .lookup(n)
            .and_then(|ips| ips.iter().find(|ip| ip.is_ipv6()).or(ips.first()).copied())
            .map(|ip| SocketAddr::new(ip, *port)),
    }
}

async fn connection(mut s: TcpStream, proxy: Proxy) {
    let _ = s.set_nodelay(true);
    let target = match handshake(&mut s).await {
        Ok(Ok(Request::Connect(t))) => t,
        Ok(Ok(Request::UdpAssociate(_))) => return associate(s, proxy).await,
        Ok(Err(_)) | Err(_) => return,
    };
    let Some(addr) = resolve(&target, &proxy.names) else {
        let _ = reply(&mut s, HOST_UNREACHABLE, None).await;
        return;
    };
    match proxy.stack.connect(addr).await {
        Ok(mut mesh) => {
            if reply(&mut s, SUCCEEDED, None).await.is_ok() {
                let _ = tokio::io::copy_bidirectional(&mut s, &mut mesh).await;
            }
        }
        Err(e) => {
            tracing::debug!(%addr, %e, "SOCKS5 connect failed");
            let _ = reply(&mut s, CONNECTION_REFUSED, None).await;
        }
    }
}

/// Mesh-side ports for UDP associations.
const UDP_PORTS: std::ops::RangeInclusive<u16> = 40000..=48999;

async fn associate(mut control: TcpStream, proxy: Proxy) {
    let local_ip = control.local_addr().map(|a| a.ip()).unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let Ok(relay) = UdpSocket::bind(SocketAddr::new(local_ip, 0)).await else {
        let _ = reply(&mut control, GENERAL_FAILURE, None).await;
        return;
    };
    let (tx, mut replies) = mpsc::channel(256);
    let port = {
        let mut map = proxy.udp.0.lock().unwrap_or_else(|p| p.into_inner());
        let free = UDP_PORTS.clone().find(|p| !map.contains_key(p));
        if let Some(port) = free {
            map.insert(port, tx);
        }
        free
    };
    let Some(port) = port else {
        let _ = reply(&mut control, GENERAL_FAILURE, None).await;
        return;
    };
    let ours = SocketAddr::new(proxy.mesh_ip, port);
    if reply(&mut control, SUCCEEDED, relay.local_addr().ok()).await.is_ok() {
        let mut client: Option<SocketAddr> = None;
        let mut buf = vec![0u8; usize::from(u16::MAX)];
        let mut closed = [0u8; 1];
        loop {
            tokio::select! {
                // The association ends with its control connection.
                r = control.read(&mut closed) => if !matches!(r, Ok(n) if n > 0) { break },
                r = relay.recv_from(&mut buf) => {
                    let Ok((n, from)) = r else { break };
                    client = Some(from);
                    let Some((target, data)) = buf.get(..n).and_then(parse_udp) else { continue };
                    let Some(dst) = resolve(&target, &proxy.names) else { continue };
                    if let Some(packet) = mesh::netstack::packet::udp(ours, dst, data) {
                        let _ = proxy.tx.send(&packet);
                    }
                }
                Some((src, data)) = replies.recv() => {
                    if let Some(client) = client {
                        let _ = relay.send_to(&udp_header(src, &data), client).await;
                    }
                }
            }
        }
    }
    proxy.udp.0.lock().unwrap_or_else(|p| p.into_inner()).remove(&port);
}

/// A SOCKS5 UDP datagram: `RSV(2) FRAG(1) ATYP ADDR PORT DATA`; fragments are dropped.
fn parse_udp(d: &[u8]) -> Option<(Target, &[u8])> {
    let (&[0, 0, 0, atyp], rest) = d.split_first_chunk::<4>()? else { return None };
    let (target, rest) = match atyp {
        1 => {
            let (a, rest) = rest.split_first_chunk::<6>()?;
            let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            (Target::Ip(SocketAddr::new(ip.into(), u16::from_be_bytes([a[4], a[5]]))), rest)
        }
        4 => {
            let (a, rest) = rest.split_first_chunk::<18>()?;
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&a[..16]);
            let port = u16::from_be_bytes([a[16], a[17]]);
            (Target::Ip(SocketAddr::new(Ipv6Addr::from(octets).into(), port)), rest)
        }
        3 => {
            let (&len, rest) = rest.split_first()?;
            let name = std::str::from_utf8(rest.get(..usize::from(len))?).ok()?;
            let rest = rest.get(usize::from(len)..)?;
            let (p, rest) = rest.split_first_chunk::<2>()?;
            (Target::Name(name.to_owned(), u16::from_be_bytes(*p)), rest)
        }
        _ => return None,
    };
    Some((target, rest))
}

/// The SOCKS5 UDP header naming `src`, then `data`.
fn udp_header(src: SocketAddr, data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0];
    match src {
        SocketAddr::V4(a) => {
            out.push(1);
            out.extend_from_slice(&a.ip().octets());
        }
        SocketAddr::V6(a) => {
            out.push(4);
            out.extend_from_slice(&a.ip().octets());
        }
    }
    out.extend_from_slice(&src.port().to_be_bytes());
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    async fn run(request: &[u8]) -> (Result<Request, Refusal>, Vec<u8>) {
        let (mut client, mut server) = tokio::io::duplex(1024);
        client.write_all(request).await.unwrap();
        let r = handshake(&mut server).await.unwrap();
        drop(server);
        let mut out = Vec::new();
        client.read_to_end(&mut out).await.unwrap();
        (r, out)
    }

    #[tokio::test]
    async fn connect_by_name_ipv6_and_ipv4() {
        let (r, out) = run(b"\x05\x01\x00\x05\x01\x00\x03\x09ws1.coder\x00\x50").await;
        assert_eq!(r, Ok(Request::Connect(Target::Name("ws1.coder".into(), 80))));
        assert_eq!(out, [5, 0]);
        let mut v6 = b"\x05\x01\x00\x05\x01\x00\x04".to_vec();
        v6.extend_from_slice(&"fd5c:9a3e:71b2::1".parse::<Ipv6Addr>().unwrap().octets());
        v6.extend_from_slice(&[0x1f, 0x90]);
        let want = Target::Ip("[fd5c:9a3e:71b2::1]:8080".parse().unwrap());
        assert_eq!(run(&v6).await.0, Ok(Request::Connect(want)));
        let (r, _) = run(b"\x05\x01\x00\x05\x01\x00\x01\x64\x40\x00\x01\x00\x16").await;
        assert_eq!(r, Ok(Request::Connect(Target::Ip("100.64.0.1:22".parse().unwrap()))));
        // An IP literal sent as a name is an IP.
        let (r, _) = run(b"\x05\x01\x00\x05\x01\x00\x03\x09127.0.0.1\x00\x50").await;
        assert_eq!(r, Ok(Request::Connect(Target::Ip("127.0.0.1:80".parse().unwrap()))));
        // UDP ASSOCIATE from 0.0.0.0:0.
        let (r, _) = run(b"\x05\x01\x00\x05\x03\x00\x01\x00\x00\x00\x00\x00\x00").await;
        assert_eq!(r, Ok(Request::UdpAssociate(Target::Ip("0.0.0.0:0".parse().unwrap()))));
    }

    #[test]
    fn udp_header_round_trip() {
        let src: SocketAddr = "[fd5c:9a3e:71b2::1]:9000".parse().unwrap();
        let d = udp_header(src, b"echo");
        assert_eq!(parse_udp(&d), Some((Target::Ip(src), &b"echo"[..])));
        let named = b"\x00\x00\x00\x03\x09ws1.coder\x23\x28hi";
        assert_eq!(parse_udp(named), Some((Target::Name("ws1.coder".into(), 9000), &b"hi"[..])));
        assert_eq!(parse_udp(b"\x00\x00\x01\x01\x01\x02\x03\x04\x00\x01x"), None, "fragment");
        assert_eq!(parse_udp(b"\x00\x00\x00\x03\x09ws1"), None, "truncated");
    }

    #[tokio::test]
    async fn refusals() {
        // BIND is not supported.
        let (r, out) = run(b"\x05\x01\x00\x05\x02\x00\x01\x01\x02\x03\x04\x00\x16").await;
        assert_eq!(r, Err(Refusal(COMMAND_NOT_SUPPORTED)));
        assert_eq!(&out[2..4], [5, COMMAND_NOT_SUPPORTED]);
        // Only username/password offered.
        let (r, out) = run(b"\x05\x01\x02").await;
        assert_eq!(r, Err(Refusal(GENERAL_FAILURE)));
        assert_eq!(out, [5, 0xff]);
        let (r, _) = run(b"\x05\x01\x00\x05\x01\x00\x07").await;
        assert_eq!(r, Err(Refusal(ADDRESS_NOT_SUPPORTED)));
    }
}
