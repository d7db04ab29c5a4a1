//! `coder tunnel` (alias `port-forward`): local TCP and UDP ports forwarded
//! to a workspace's ports over the mesh, until Ctrl-C. With `--ip`, every
//! workspace at its mesh address instead ([`crate::iptunnel`]).
//!
//! One mesh session and one QUIC connection to the agent carry everything:
//!
//! ```text
//! local TCP conn ──▶ one stream, header tcp:<port> ──▶ agent connects 127.0.0.1:<port>
//! local UDP peer ──▶ one stream, header udp:<port> ──▶ agent's own UDP socket → 127.0.0.1:<port>
//!                    frames: len:u16 BE + datagram, both ways; closed after idling
//! ```
//!
//! Each forward is a task owned by a `JoinSet`; each accepted connection or
//! UDP peer is a task owned by its forward's `JoinSet`. A failure on one
//! connection is reported on stderr and never stops the others. If the QUIC
//! connection dies (agent restart), the next stream open dials again.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use mesh::{MeshConnection, Service};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::output::outln;
use super::ping::AgentLink;
use super::speedtest::parse_duration;
use super::Context_;
use codersdk::meshnet::MeshSession;

#[derive(clap::Args, Debug)]
pub struct TunnelArgs {
    /// `WORKSPACE` or `WORKSPACE.AGENT` (not with `--ip`).
    #[arg(required_unless_present = "ip", conflicts_with = "ip")]
    pub workspace: Option<String>,
    /// Reach every workspace at its mesh address over WireGuard: a TUN device
    /// when run as root, else a SOCKS5 proxy (see `--socks5`).
    #[arg(long, env = "CODER_TUNNEL_IP")]
    pub ip: bool,
    /// With `--ip`: no TUN device, only a SOCKS5 proxy on this address (it
    /// also serves there when the TUN device cannot be created).
    #[arg(long, value_name = "ADDR", requires = "ip", env = "CODER_TUNNEL_SOCKS5")]
    pub socks5: Option<SocketAddr>,
    /// With `--ip`: the TUN device's name.
    #[arg(long, default_value = "coder0", requires = "ip", env = "CODER_TUNNEL_TUN_NAME")]
    pub tun_name: String,
    /// With `--ip`: how often the workspace list is re-read.
    #[arg(long, default_value = "5s", value_parser = parse_duration, hide = true)]
    pub refresh: Duration,
    /// TCP forward `[BIND:]LOCAL:REMOTE` (or `PORT` for the same port both
    /// sides); ports may be equal-length ranges, `8000-8005:9000-9005`.
    /// Repeat the flag or separate with commas.
    #[arg(
        short = 'p',
        long = "tcp",
        value_name = "[BIND:]LOCAL:REMOTE",
        env = "CODER_PORT_FORWARD_TCP",
        value_delimiter = ','
    )]
    pub tcp: Vec<String>,
    /// UDP forward, same syntax as `--tcp`.
    #[arg(
        long = "udp",
        value_name = "[BIND:]LOCAL:REMOTE",
        env = "CODER_PORT_FORWARD_UDP",
        value_delimiter = ','
    )]
    pub udp: Vec<String>,
    /// Close a UDP peer's stream after this long without a datagram either way.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub udp_idle_timeout: Duration,
    /// Use only the relay.
    #[arg(long, env = "CODER_SSH_RELAY_ONLY")]
    pub relay_only: bool,
}

/// One local port forwarded to one workspace port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    pub local: SocketAddr,
    pub remote: u16,
}

fn port_range(s: &str) -> Option<(u16, u16)> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let (a, b): (u16, u16) = (a.parse().ok()?, b.parse().ok()?);
    (a != 0 && a <= b).then_some((a, b))
}

/// Parses `[BIND:]LOCAL:REMOTE` (or `PORT`), with ranges, into forwards.
pub fn parse_forwards(spec: &str) -> Result<Vec<Forward>, String> {
    let bad = |why: &str| {
        format!("invalid forward {spec:?}: {why}; use [BIND:]LOCAL:REMOTE, e.g. 8080:80 or 127.0.0.1:8000-8005:9000-9005")
    };
    let (rest, remote) = spec.rsplit_once(':').unwrap_or(("", spec));
    let (bind, local) = match rest.rsplit_once(':') {
        Some((bind, local)) => (Some(bind), local),
        None if rest.is_empty() => (None, remote),
        None => (None, rest),
    };
    let bind = match bind {
        None => IpAddr::V4(Ipv4Addr::LOCALHOST),
        Some("localhost") => IpAddr::V4(Ipv4Addr::LOCALHOST),
        Some(b) => b
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| bad("the bind address is not an IP address"))?,
    };
    let local =
        port_range(local).ok_or_else(|| bad("the local port is not a port (1-65535) or range"))?;
    let remote = port_range(remote)
        .ok_or_else(|| bad("the remote port is not a port (1-65535) or range"))?;
    if local.1 - local.0 != remote.1 - remote.0 {
        return Err(bad("the local and remote ranges differ in length"));
    }
    Ok((local.0..=local.1)
        .zip(remote.0..=remote.1)
        .map(|(l, r)| Forward { local: SocketAddr::new(bind, l), remote: r })
        .collect())
}

/// Opens streams to the agent, dialing again if the connection died.
struct Dialer {
    session: MeshSession,
    agent: uuid::Uuid,
    conn: Mutex<MeshConnection>,
}

impl Dialer {
    async fn open(&self, service: Service) -> anyhow::Result<(mesh::SendStream, mesh::RecvStream)> {
        let conn = {
            let mut conn = self.conn.lock().await;
            if conn.quic().close_reason().is_some() {
                *conn = self
                    .session
                    .dial_agent(self.agent, Duration::from_secs(30))
                    .await
                    .context("reconnect to the agent")?;
            }
            // Opening may wait for stream credit: don't hold the lock for it.
            conn.clone()
        };
        conn.open(service).await.context("open a mesh stream to the agent")
    }
}

/// Where the SOCKS5 proxy listens unless `--socks5` says otherwise.
const DEFAULT_SOCKS5: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 1080);

async fn shutdown_signal() {
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    match term {
        Ok(mut term) => tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        },
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

async fn run_ip(ctx: &Context_, args: TunnelArgs) -> anyhow::Result<()> {
    if !args.tcp.is_empty() || !args.udp.is_empty() {
        bail!("--ip reaches every port already; drop --tcp/--udp.");
    }
    let client = ctx.client()?;
    let token = ctx.token.clone().context("You are not logged in. Run `coder login <url>`.")?;
    let mode = match args.socks5 {
        Some(addr) => crate::iptunnel::Mode::Socks5(addr),
        None => crate::iptunnel::Mode::Tun { name: args.tun_name, fallback: DEFAULT_SOCKS5 },
    };
    let config = crate::iptunnel::IpTunnelConfig {
        mode,
        relay_only: args.relay_only,
        refresh: args.refresh,
    };
    crate::iptunnel::run(client, &token, config, shutdown_signal()).await
}

pub async fn run(ctx: &Context_, args: TunnelArgs) -> anyhow::Result<()> {
    if args.ip {
        return run_ip(ctx, args).await;
    }
    let workspace = args.workspace.clone().unwrap_or_default();
    let mut tcp = Vec::new();
    for spec in &args.tcp {
        tcp.extend(parse_forwards(spec).map_err(anyhow::Error::msg)?);
    }
    let mut udp = Vec::new();
    for spec in &args.udp {
        udp.extend(parse_forwards(spec).map_err(anyhow::Error::msg)?);
    }
    if tcp.is_empty() && udp.is_empty() {
        bail!("Nothing to forward; add --tcp LOCAL:REMOTE or --udp LOCAL:REMOTE.");
    }
    // Bind everything first: a port in use fails fast, before the mesh join.
    let mut listeners = Vec::new();
    for f in &tcp {
        let l = TcpListener::bind(f.local).await.with_context(|| {
            format!("cannot listen on tcp {}; pick another local port", f.local)
        })?;
        listeners.push((l, *f));
    }
    let mut sockets = Vec::new();
    for f in &udp {
        let s = UdpSocket::bind(f.local).await.with_context(|| {
            format!("cannot listen on udp {}; pick another local port", f.local)
        })?;
        sockets.push((Arc::new(s), *f));
    }
    let link = AgentLink::connect(ctx, &workspace, args.relay_only).await?;
    let ws = link.workspace.clone();
    let path = link.path();
    let dialer =
        Arc::new(Dialer { agent: link.agent, conn: Mutex::new(link.conn), session: link.session });
    let mut forwards = JoinSet::new();
    for (listener, f) in listeners {
        outln!("Forwarding tcp {} → {ws}:{}", f.local, f.remote)?;
        forwards.spawn(serve_tcp(listener, f, dialer.clone()));
    }
    for (socket, f) in sockets {
        outln!("Forwarding udp {} → {ws}:{}", f.local, f.remote)?;
        forwards.spawn(serve_udp(socket, f, dialer.clone(), args.udp_idle_timeout));
    }
    outln!("Ready via {path}; press Ctrl-C to stop.")?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("listen for SIGTERM")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("listen for Ctrl-C")?,
        _ = term.recv() => {}
    }
    forwards.shutdown().await;
    dialer.conn.lock().await.quic().close(0u32.into(), b"done");
    let _ = tokio::time::timeout(Duration::from_secs(1), dialer.session.endpoint().close()).await;
    Ok(())
}

async fn serve_tcp(listener: TcpListener, f: Forward, dialer: Arc<Dialer>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            a = listener.accept() => match a {
                Ok((tcp, _)) => { conns.spawn(tcp_connection(tcp, f, dialer.clone())); }
                Err(e) => {
                    // Out of file descriptors and the like: wait, don't spin.
                    eprintln!("tcp {}: accept failed: {e}", f.local);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn tcp_connection(mut tcp: TcpStream, f: Forward, dialer: Arc<Dialer>) {
    let _ = tcp.set_nodelay(true);
    mesh::fit_loopback_buffer(&tcp);
    let (send, recv) = match dialer.open(Service::Tcp(f.remote)).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tcp {} → port {}: {e:#}", f.local, f.remote);
            return;
        }
    };
    let (mut r, mut w) = tcp.split();
    if let Err(e) = mesh::splice(&mut r, &mut w, send, recv).await {
        let hint = if e.kind() == std::io::ErrorKind::ConnectionReset {
            format!(" (is anything listening on port {} in the workspace?)", f.remote)
        } else {
            String::new()
        };
        eprintln!("tcp {} → port {}: {e}{hint}", f.local, f.remote);
    }
}

/// Datagrams queued per UDP peer while its stream opens or is slow; more are dropped.
const UDP_QUEUE: usize = 256;

async fn serve_udp(socket: Arc<UdpSocket>, f: Forward, dialer: Arc<Dialer>, idle: Duration) {
    let mut flows: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>> = HashMap::new();
    let mut tasks = JoinSet::new();
    let mut buf = vec![0u8; usize::from(u16::MAX)];
    loop {
        tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok((n, peer)) => {
                    let Some(datagram) = buf.get(..n) else { continue };
                    let tx = match flows.get(&peer) {
                        Some(tx) if !tx.is_closed() => tx.clone(),
                        _ => {
                            let (tx, rx) = mpsc::channel(UDP_QUEUE);
                            tasks.spawn(udp_flow(socket.clone(), peer, f, dialer.clone(), rx, idle));
                            flows.insert(peer, tx.clone());
                            tx
                        }
                    };
                    // A full queue drops the datagram, as a congested link would.
                    let _ = tx.try_send(datagram.to_vec());
                }
                Err(e) => tracing::debug!(error = %e, local = %f.local, "UDP receive"),
            },
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Ok(peer) = done {
                    if flows.get(&peer).is_some_and(|tx| tx.is_closed()) {
                        flows.remove(&peer);
                    }
                }
            }
        }
    }
}

/// One local UDP peer's stream; returns the peer when the stream ends.
async fn udp_flow(
    socket: Arc<UdpSocket>,
    peer: SocketAddr,
    f: Forward,
    dialer: Arc<Dialer>,
    mut rx: mpsc::Receiver<Vec<u8>>,
    idle: Duration,
) -> SocketAddr {
    let (mut send, mut recv) = match dialer.open(Service::Udp(f.remote)).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("udp {} → port {}: {e:#}", f.local, f.remote);
            return peer;
        }
    };
    // Reading a frame is not cancel-safe, so each direction is one long-lived
    // future; a shared clock of the last activity drives the idle timeout.
    let start = Instant::now();
    let last = AtomicU64::new(0);
    let touch = || {
        last.store(
            u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        )
    };
    let up = async {
        while let Some(d) = rx.recv().await {
            touch();
            let Some(frame) = frame_datagram(&d) else { continue };
            if send.write_all(&frame).await.is_err() {
                return;
            }
        }
    };
    let down = async {
        while let Ok(Some(d)) = read_datagram(&mut recv).await {
            touch();
            let _ = socket.send_to(&d, peer).await;
        }
    };
    let watchdog = async {
        loop {
            let quiet =
                start.elapsed().saturating_sub(Duration::from_millis(last.load(Ordering::Relaxed)));
            if quiet >= idle {
                return;
            }
            tokio::time::sleep(idle - quiet).await;
        }
    };
    tokio::select! {
        () = up => {}
        () = down => {}
        () = watchdog => {}
    }
    let _ = send.shutdown().await;
    peer
}

/// `len:u16 BE` + payload; `None` for a payload that does not fit.
fn frame_datagram(payload: &[u8]) -> Option<Vec<u8>> {
    let len = u16::try_from(payload.len()).ok()?;
    let mut frame = Vec::with_capacity(payload.len() + 2);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(payload);
    Some(frame)
}

/// The next framed datagram; `None` at a clean end of stream.
async fn read_datagram<R: AsyncRead + Unpin>(recv: &mut R) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 2];
    match recv.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut payload = vec![0u8; usize::from(u16::from_be_bytes(len))];
    recv.read_exact(&mut payload).await?;
    Ok(Some(payload))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn fw(local: &str, remote: u16) -> Forward {
        Forward { local: local.parse().unwrap(), remote }
    }

    #[test]
    fn forward_specs_parse() {
        assert_eq!(parse_forwards("8080:80").unwrap(), vec![fw("127.0.0.1:8080", 80)]);
        assert_eq!(parse_forwards("3000").unwrap(), vec![fw("127.0.0.1:3000", 3000)]);
        assert_eq!(parse_forwards("0.0.0.0:8080:80").unwrap(), vec![fw("0.0.0.0:8080", 80)]);
        assert_eq!(parse_forwards("[::1]:8080:80").unwrap(), vec![fw("[::1]:8080", 80)]);
        assert_eq!(parse_forwards("::1:8080:80").unwrap(), vec![fw("[::1]:8080", 80)]);
        assert_eq!(parse_forwards("localhost:8080:80").unwrap(), vec![fw("127.0.0.1:8080", 80)]);
        assert_eq!(
            parse_forwards("8000-8002:9000-9002").unwrap(),
            vec![
                fw("127.0.0.1:8000", 9000),
                fw("127.0.0.1:8001", 9001),
                fw("127.0.0.1:8002", 9002)
            ]
        );
    }

    #[test]
    fn bad_forward_specs_say_why() {
        for (spec, why) in [
            ("8000-8005:9000", "differ in length"),
            ("8000:0", "remote port"),
            ("x:80", "local port"),
            ("8005-8000:1-6", "local port"),
            ("nohost:1:2", "bind address"),
            ("", "local port"),
            ("70000:1", "local port"),
        ] {
            let err = parse_forwards(spec).unwrap_err();
            assert!(err.contains(why), "{spec}: {err}");
        }
    }

    #[tokio::test]
    async fn datagram_frames_round_trip() {
        let mut wire = Vec::new();
        for d in [&b""[..], b"x", &[7u8; 1500]] {
            wire.extend(frame_datagram(d).unwrap());
        }
        assert_eq!(&wire[..5], &[0, 0, 0, 1, b'x']);
        assert!(frame_datagram(&vec![0u8; 70_000]).is_none());
        let mut r = &wire[..];
        assert_eq!(read_datagram(&mut r).await.unwrap().unwrap(), b"");
        assert_eq!(read_datagram(&mut r).await.unwrap().unwrap(), b"x");
        assert_eq!(read_datagram(&mut r).await.unwrap().unwrap(), vec![7u8; 1500]);
        assert_eq!(read_datagram(&mut r).await.unwrap(), None);
        let mut truncated = &[0u8, 5, 1][..];
        assert!(read_datagram(&mut truncated).await.is_err());
    }
}
