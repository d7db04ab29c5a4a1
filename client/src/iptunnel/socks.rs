//! A SOCKS5 proxy (RFC 1928, no authentication, `CONNECT` only) into the
//! mesh through the client's userspace stack. Hostnames are resolved here,
//! from the mesh names, so `curl --socks5-hostname` reaches `ws.coder`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use mesh::netstack::Netstack;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::names::Names;

const VERSION: u8 = 5;
const NO_AUTH: u8 = 0;
const NO_ACCEPTABLE: u8 = 0xff;
const CMD_CONNECT: u8 = 1;

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

/// Why a request was refused, as the reply code to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal(pub u8);

/// Reads the greeting and the request; on an unsupported one, answers it
/// and returns the refusal.
pub async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
) -> std::io::Result<Result<Target, Refusal>> {
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
    if version != VERSION || cmd != CMD_CONNECT {
        return refuse(s, COMMAND_NOT_SUPPORTED).await;
    }
    Ok(Ok(target))
}

async fn refuse<S: AsyncWrite + Unpin>(
    s: &mut S,
    code: u8,
) -> std::io::Result<Result<Target, Refusal>> {
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

/// Serves SOCKS5 on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, stack: Arc<Netstack>, names: watch::Receiver<Names>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            a = listener.accept() => match a {
                Ok((s, _)) => { conns.spawn(connection(s, stack.clone(), names.clone())); }
                Err(e) => {
                    tracing::warn!(%e, "SOCKS5 accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn connection(mut s: TcpStream, stack: Arc<Netstack>, names: watch::Receiver<Names>) {
    let _ = s.set_nodelay(true);
    let target = match handshake(&mut s).await {
        Ok(Ok(t)) => t,
        Ok(Err(_)) | Err(_) => return,
    };
    let addr = match &target {
        Target::Ip(a) => Some(*a),
        Target::Name(n, port) => names
            .borrow()
            .lookup(n)
            .and_then(|ips| ips.iter().find(|ip| ip.is_ipv6()).or(ips.first()).copied())
            .map(|ip| SocketAddr::new(ip, *port)),
    };
    let Some(addr) = addr else {
        let _ = reply(&mut s, HOST_UNREACHABLE, None).await;
        return;
    };
    match stack.connect(addr).await {
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    async fn run(request: &[u8]) -> (Result<Target, Refusal>, Vec<u8>) {
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
        assert_eq!(r, Ok(Target::Name("ws1.coder".into(), 80)));
        assert_eq!(out, [5, 0]);
        let mut v6 = b"\x05\x01\x00\x05\x01\x00\x04".to_vec();
        v6.extend_from_slice(&"fd5c:9a3e:71b2::1".parse::<Ipv6Addr>().unwrap().octets());
        v6.extend_from_slice(&[0x1f, 0x90]);
        assert_eq!(run(&v6).await.0, Ok(Target::Ip("[fd5c:9a3e:71b2::1]:8080".parse().unwrap())));
        let (r, _) = run(b"\x05\x01\x00\x05\x01\x00\x01\x64\x40\x00\x01\x00\x16").await;
        assert_eq!(r, Ok(Target::Ip("100.64.0.1:22".parse().unwrap())));
        // An IP literal sent as a name is an IP.
        let (r, _) = run(b"\x05\x01\x00\x05\x01\x00\x03\x09127.0.0.1\x00\x50").await;
        assert_eq!(r, Ok(Target::Ip("127.0.0.1:80".parse().unwrap())));
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
