//! A userspace TCP/IP stack (smoltcp) on a node's mesh addresses, fed by
//! WireGuard.
//!
//! One task owns the smoltcp interface and all its sockets. Each TCP
//! connection is handed to the application as one end of an in-memory pipe
//! ([`tokio::io::DuplexStream`]); the task moves bytes between the pipe's
//! other end and the smoltcp socket, polling the pipe with a waker that wakes
//! the task, so nothing spins and no task per connection is needed.
//!
//! ```text
//! WgReceiver ──IP──▶ [accept-any: SYN → listen on its port; UDP → Forwarder] ──▶ smoltcp ──▶ sockets ⇄ pipes ⇄ app
//! app ⇄ pipes ⇄ sockets ──▶ smoltcp ──IP──▶ WgSender
//! ```
//!
//! - [`Netstack::spawn_accepting`] (the agent): a SYN to any port of ours
//!   gets a listening socket on that port just before smoltcp sees it, and the
//!   connection comes out of [`TcpIncoming`]; UDP to any port goes to the
//!   [`UdpHandler`]; smoltcp answers ICMP echo itself.
//! - [`Netstack::connect`] (the client's SOCKS5 proxy): a connection from our
//!   address to a peer's, returned once established.
//!
//! Wakeups: new packets, a command, a pipe becoming readable or writable (its
//! waker), or smoltcp's next timer ([`smoltcp::iface::Interface::poll_delay`]).

pub mod packet;
mod udp;

pub use udp::{LoopbackUdp, UDP_IDLE_TIMEOUT};

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use bytes::Bytes;
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::socket::tcp;
use smoltcp::wire::{HardwareAddress, IpCidr, IpEndpoint, IpListenEndpoint};
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_util::task::AbortOnDropHandle;

use crate::node::MeshAddresses;
use crate::wg::{WgReceiver, WgSender, MTU};

use self::packet::Transport;

/// Each TCP socket's receive and send buffers. Large enough for window
/// scaling to keep a fast path full.
const TCP_BUFFER: usize = 1 << 20;

/// The in-memory pipe between a socket and the application.
const PIPE_BUFFER: usize = 256 * 1024;

/// Open TCP sockets (connections and listeners) beyond which new
/// connections are refused (smoltcp answers their SYN with a reset): each
/// holds [`TCP_BUFFER`] twice.
const MAX_SOCKETS: usize = 1024;

/// Connections waiting in [`TcpIncoming`] before new ones are refused.
const ACCEPT_QUEUE: usize = 128;

/// Packets read from WireGuard per wakeup.
const BATCH: usize = 64;

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Ephemeral ports for outgoing connections.
const EPHEMERAL: std::ops::RangeInclusive<u16> = 49152..=65535;

/// UDP datagrams addressed to the stack, for an accept-any stack.
pub trait UdpHandler: Send + 'static {
    /// A datagram from `src` to our `dst`. Replies go through
    /// [`packet::udp`] and the [`WgSender`].
    fn datagram(&mut self, src: SocketAddr, dst: SocketAddr, payload: &[u8]);
}

/// Why [`Netstack::connect`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The peer reset the connection or never answered.
    #[error("connection to {0} refused or timed out")]
    Refused(SocketAddr),
    /// smoltcp refused the endpoints (e.g. a family we have no address of).
    #[error("cannot connect to {0}: {1}")]
    Invalid(SocketAddr, String),
    /// The stack stopped.
    #[error("the network stack stopped")]
    Stopped,
}

/// A TCP connection a peer opened to us.
#[derive(Debug)]
pub struct Accepted {
    /// The connection's bytes.
    pub stream: DuplexStream,
    /// The peer's address and port.
    pub remote: SocketAddr,
    /// Our address and the port it connected to.
    pub local: SocketAddr,
}

/// Incoming TCP connections of an accept-any stack.
#[derive(Debug)]
pub struct TcpIncoming(mpsc::Receiver<Accepted>);

impl TcpIncoming {
    /// The next connection; `None` once the stack stopped.
    pub async fn accept(&mut self) -> Option<Accepted> {
        self.0.recv().await
    }
}

enum Command {
    Connect(SocketAddr, oneshot::Sender<Result<DuplexStream, ConnectError>>),
}

/// A handle to the stack's task; dropping it stops the stack.
#[derive(Debug)]
pub struct Netstack {
    commands: mpsc::Sender<Command>,
    _task: AbortOnDropHandle<()>,
}

impl Netstack {
    /// Starts a stack on `addresses` that only connects out; UDP datagrams
    /// addressed to us go to `udp` if given.
    pub fn spawn(
        addresses: MeshAddresses,
        udp: Option<Box<dyn UdpHandler>>,
        tx: WgSender,
        rx: WgReceiver,
    ) -> Netstack {
        Self::start(Stack::new(addresses, None, udp), tx, rx)
    }

    /// Starts a stack on `addresses` that accepts TCP on every port (the
    /// connections come out of [`TcpIncoming`]) and gives UDP to `udp`.
    pub fn spawn_accepting(
        addresses: MeshAddresses,
        udp: Box<dyn UdpHandler>,
        tx: WgSender,
        rx: WgReceiver,
    ) -> (Netstack, TcpIncoming) {
        let (accept, incoming) = mpsc::channel(ACCEPT_QUEUE);
        let stack = Stack::new(addresses, Some(accept), Some(udp));
        (Self::start(stack, tx, rx), TcpIncoming(incoming))
    }

    fn start(stack: Stack, tx: WgSender, rx: WgReceiver) -> Netstack {
        let (commands, commands_rx) = mpsc::channel(64);
        let task = tokio::spawn(stack.run(tx, rx, commands_rx));
        Netstack { commands, _task: AbortOnDropHandle::new(task) }
    }

    /// Opens a TCP connection from our address to `remote` (a peer's mesh
    /// address); resolves once it is established.
    pub async fn connect(&self, remote: SocketAddr) -> Result<DuplexStream, ConnectError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Connect(remote, tx))
            .await
            .map_err(|_| ConnectError::Stopped)?;
        rx.await.map_err(|_| ConnectError::Stopped)?
    }
}

/// The smoltcp device: packets queued in from WireGuard and out to it.
#[derive(Default)]
struct Queues {
    rx: VecDeque<Bytes>,
    tx: Vec<Vec<u8>>,
}

struct Rx(Bytes);
struct Tx<'a>(&'a mut Vec<Vec<u8>>);

impl RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0; len];
        let r = f(&mut buf);
        self.0.push(buf);
        r
    }
}

impl Device for Queues {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _: smoltcp::time::Instant) -> Option<(Rx, Tx<'_>)> {
        let packet = self.rx.pop_front()?;
        Some((Rx(packet), Tx(&mut self.tx)))
    }

    fn transmit(&mut self, _: smoltcp::time::Instant) -> Option<Tx<'_>> {
        Some(Tx(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = MTU;
        caps
    }
}

/// Wakes the stack's task (a pipe became ready).
struct NotifyWaker(Notify);

impl Wake for NotifyWaker {
    fn wake(self: Arc<Self>) {
        self.0.notify_one();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.notify_one();
    }
}

/// A connection's pipe end and how far it has closed.
struct Conn {
    pipe: DuplexStream,
    /// The application finished writing: FIN sent (or to send).
    app_eof: bool,
    /// The peer finished: the pipe's write side is shut.
    peer_eof: bool,
}

struct Pending {
    remote: SocketAddr,
    deadline: tokio::time::Instant,
    reply: oneshot::Sender<Result<DuplexStream, ConnectError>>,
}

struct Stack {
    iface: Interface,
    sockets: SocketSet<'static>,
    device: Queues,
    addresses: MeshAddresses,
    conns: HashMap<SocketHandle, Conn>,
    /// Accept-any: the listening socket of each port that has one.
    listeners: HashMap<u16, SocketHandle>,
    /// (remote, local) of every connection, to tell a retransmitted SYN from a new one.
    flows: HashSet<(SocketAddr, SocketAddr)>,
    connecting: HashMap<SocketHandle, Pending>,
    accept: Option<mpsc::Sender<Accepted>>,
    udp: Option<Box<dyn UdpHandler>>,
    next_port: u16,
    wake: Arc<NotifyWaker>,
    waker: Waker,
}

fn smol_now() -> smoltcp::time::Instant {
    smoltcp::time::Instant::now()
}

impl Stack {
    fn new(
        addresses: MeshAddresses,
        accept: Option<mpsc::Sender<Accepted>>,
        udp: Option<Box<dyn UdpHandler>>,
    ) -> Self {
        let mut device = Queues::default();
        let mut config = Config::new(HardwareAddress::Ip);
        config.random_seed = rand::random();
        let mut iface = Interface::new(config, &mut device, smol_now());
        iface.update_ip_addrs(|addrs| {
            // The whole mesh prefix is on-link: every peer is one hop away.
            let _ = addrs.push(IpCidr::new(addresses.ipv6.into(), 48));
            if let Some(v4) = addresses.ipv4 {
                let _ = addrs.push(IpCidr::new(v4.into(), 10));
            }
        });
        let wake = Arc::new(NotifyWaker(Notify::new()));
        let waker = Waker::from(wake.clone());
        Self {
            iface,
            sockets: SocketSet::new(Vec::new()),
            device,
            addresses,
            conns: HashMap::new(),
            listeners: HashMap::new(),
            flows: HashSet::new(),
            connecting: HashMap::new(),
            accept,
            udp,
            next_port: *EPHEMERAL.start(),
            wake,
            waker,
        }
    }

    fn ours(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V6(v6) => v6 == self.addresses.ipv6,
            IpAddr::V4(v4) => Some(v4) == self.addresses.ipv4,
        }
    }

    async fn run(
        mut self,
        tx: WgSender,
        mut rx: WgReceiver,
        mut commands: mpsc::Receiver<Command>,
    ) {
        let mut batch = Vec::with_capacity(BATCH);
        let wake = self.wake.clone();
        loop {
            self.step();
            if !self.device.tx.is_empty() {
                tx.send_batch(self.device.tx.iter().map(Vec::as_slice));
                self.device.tx.clear();
            }
            let delay = self.iface.poll_delay(smol_now(), &self.sockets);
            let sleep = delay.map(|d| Duration::from_micros(d.total_micros()));
            let connect_deadline = self.connecting.values().map(|p| p.deadline).min();
            let timer = async {
                match (sleep, connect_deadline) {
                    (Some(d), Some(at)) => {
                        tokio::time::sleep_until(at.min(tokio::time::Instant::now() + d)).await
                    }
                    (Some(d), None) => tokio::time::sleep(d).await,
                    (None, Some(at)) => tokio::time::sleep_until(at).await,
                    (None, None) => std::future::pending().await,
                }
            };
            tokio::select! {
                n = rx.recv_many(&mut batch, BATCH) => {
                    if n == 0 {
                        return;
                    }
                    for packet in batch.drain(..) {
                        self.ingress(packet);
                    }
                }
                c = commands.recv() => match c {
                    Some(Command::Connect(remote, reply)) => self.connect(remote, reply),
                    None => return,
                },
                () = wake.0.notified() => {}
                () = timer => {}
            }
        }
    }

    /// Looks at a packet before smoltcp does: accept-any listening and UDP.
    fn ingress(&mut self, packet: Bytes) {
        if self.accept.is_some() || self.udp.is_some() {
            match packet::transport(&packet) {
                Some(Transport::Tcp { src, dst, syn: true })
                    if self.accept.is_some() && self.ours(dst.ip()) =>
                {
                    self.listen_for(src, dst)
                }
                Some(Transport::Udp { src, dst, payload: (at, len) }) if self.ours(dst.ip()) => {
                    if let (Some(udp), Some(payload)) = (&mut self.udp, packet.get(at..at + len)) {
                        udp.datagram(src, dst, payload);
                    }
                    return;
                }
                _ => {}
            }
        }
        self.device.rx.push_back(packet);
    }

    fn new_socket(&mut self) -> tcp::Socket<'static> {
        let mut socket = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; TCP_BUFFER]),
            tcp::SocketBuffer::new(vec![0; TCP_BUFFER]),
        );
        socket.set_nagle_enabled(false);
        socket.set_congestion_control(tcp::CongestionControl::Cubic);
        socket
    }

    /// Makes sure a SYN to `dst` finds a listening socket.
    fn listen_for(&mut self, src: SocketAddr, dst: SocketAddr) {
        if self.flows.contains(&(src, dst))
            || self.listeners.contains_key(&dst.port())
            || self.sockets.iter().count() >= MAX_SOCKETS
        {
            return;
        }
        let mut socket = self.new_socket();
        if socket.listen(IpListenEndpoint { addr: None, port: dst.port() }).is_ok() {
            let handle = self.sockets.add(socket);
            self.listeners.insert(dst.port(), handle);
        }
    }

    fn ephemeral_port(&mut self) -> u16 {
        let port = self.next_port;
        self.next_port = if port >= *EPHEMERAL.end() { *EPHEMERAL.start() } else { port + 1 };
        port
    }

    fn connect(
        &mut self,
        remote: SocketAddr,
        reply: oneshot::Sender<Result<DuplexStream, ConnectError>>,
    ) {
        let local_ip: IpAddr = match remote.ip() {
            IpAddr::V6(_) => self.addresses.ipv6.into(),
            IpAddr::V4(_) => match self.addresses.ipv4 {
                Some(v4) => v4.into(),
                None => {
                    let _ = reply
                        .send(Err(ConnectError::Invalid(remote, "no mesh IPv4 address".into())));
                    return;
                }
            },
        };
        let mut socket = self.new_socket();
        let local = loop {
            let candidate = SocketAddr::new(local_ip, self.ephemeral_port());
            if !self.flows.contains(&(remote, candidate)) {
                break candidate;
            }
        };
        if let Err(e) = socket.connect(
            self.iface.context(),
            IpEndpoint::from(remote),
            IpListenEndpoint::from(local),
        ) {
            let _ = reply.send(Err(ConnectError::Invalid(remote, e.to_string())));
            return;
        }
        let handle = self.sockets.add(socket);
        self.flows.insert((remote, local));
        let deadline = tokio::time::Instant::now() + CONNECT_TIMEOUT;
        self.connecting.insert(handle, Pending { remote, deadline, reply });
    }

    /// Runs smoltcp and moves bytes until nothing more moves.
    fn step(&mut self) {
        loop {
            self.iface.poll(smol_now(), &mut self.device, &mut self.sockets);
            self.promote_listeners();
            self.finish_connects();
            let moved = self.service();
            if !moved {
                break;
            }
        }
    }

    /// Accept-any: listening sockets that got a SYN become connections.
    fn promote_listeners(&mut self) {
        let Some(accept) = self.accept.clone() else { return };
        let mut promoted = Vec::new();
        for (&port, &handle) in &self.listeners {
            let socket = self.sockets.get::<tcp::Socket>(handle);
            if socket.state() != tcp::State::Listen {
                promoted.push((port, handle));
            }
        }
        for (port, handle) in promoted {
            self.listeners.remove(&port);
            let socket = self.sockets.get_mut::<tcp::Socket>(handle);
            let (Some(remote), Some(local)) = (socket.remote_endpoint(), socket.local_endpoint())
            else {
                socket.abort();
                continue;
            };
            let (remote, local) = (endpoint(remote), endpoint(local));
            let (app, pipe) = tokio::io::duplex(PIPE_BUFFER);
            match accept.try_send(Accepted { stream: app, remote, local }) {
                Ok(()) => {
                    self.flows.insert((remote, local));
                    self.conns.insert(handle, Conn { pipe, app_eof: false, peer_eof: false });
                }
                // Nobody accepts fast enough: refuse, as a full backlog does.
                Err(_) => socket.abort(),
            }
        }
    }

    fn finish_connects(&mut self) {
        let now = tokio::time::Instant::now();
        let mut done = Vec::new();
        for (&handle, pending) in &self.connecting {
            let state = self.sockets.get::<tcp::Socket>(handle).state();
            match state {
                tcp::State::Established | tcp::State::CloseWait => done.push((handle, true)),
                tcp::State::Closed | tcp::State::TimeWait => done.push((handle, false)),
                _ if now >= pending.deadline => done.push((handle, false)),
                _ => {}
            }
        }
        for (handle, ok) in done {
            let Some(pending) = self.connecting.remove(&handle) else { continue };
            if ok {
                let (app, pipe) = tokio::io::duplex(PIPE_BUFFER);
                if pending.reply.send(Ok(app)).is_ok() {
                    self.conns.insert(handle, Conn { pipe, app_eof: false, peer_eof: false });
                    continue;
                }
            } else {
                let _ = pending.reply.send(Err(ConnectError::Refused(pending.remote)));
            }
            self.sockets.get_mut::<tcp::Socket>(handle).abort();
            self.remove(handle);
        }
    }

    fn remove(&mut self, handle: SocketHandle) {
        let socket = self.sockets.remove(handle);
        #[allow(irrefutable_let_patterns)] // Only TCP sockets are enabled.
        if let smoltcp::socket::Socket::Tcp(socket) = socket {
            if let (Some(r), Some(l)) = (socket.remote_endpoint(), socket.local_endpoint()) {
                self.flows.remove(&(endpoint(r), endpoint(l)));
            }
        }
        self.conns.remove(&handle);
    }

    /// Moves bytes between every connection's socket and pipe; true if any moved.
    fn service(&mut self) -> bool {
        let mut cx = Context::from_waker(&self.waker);
        let mut moved = false;
        let mut closed = Vec::new();
        for (&handle, conn) in self.conns.iter_mut() {
            let socket = self.sockets.get_mut::<tcp::Socket>(handle);
            moved |= pump(socket, conn, &mut cx);
            let over = matches!(socket.state(), tcp::State::Closed | tcp::State::TimeWait);
            // Keep the socket until the application has every byte the peer sent.
            if over && (conn.peer_eof || socket.recv_queue() == 0) {
                closed.push(handle);
            }
        }
        for handle in closed {
            // Dropping the pipe tells the application (EOF, or a broken pipe).
            self.remove(handle);
        }
        moved
    }
}

fn endpoint(e: IpEndpoint) -> SocketAddr {
    SocketAddr::new(e.addr.into(), e.port)
}

/// One connection: socket → pipe, pipe → socket, and the FINs; true if bytes moved.
fn pump(socket: &mut tcp::Socket<'_>, conn: &mut Conn, cx: &mut Context<'_>) -> bool {
    let mut moved = false;
    let mut broken = false;
    while socket.can_recv() {
        let r = socket.recv(|buf| match Pin::new(&mut conn.pipe).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => (n, n),
            Poll::Ready(Err(_)) => {
                broken = true;
                (0, 0)
            }
            Poll::Pending => (0, 0),
        });
        match r {
            Ok(n) if n > 0 => moved = true,
            _ => break,
        }
    }
    if broken {
        socket.abort();
        return true;
    }
    let peer_finished = matches!(
        socket.state(),
        tcp::State::CloseWait
            | tcp::State::LastAck
            | tcp::State::Closing
            | tcp::State::TimeWait
            | tcp::State::Closed
    );
    if !conn.peer_eof && peer_finished && socket.recv_queue() == 0 {
        match Pin::new(&mut conn.pipe).poll_shutdown(cx) {
            Poll::Ready(_) => conn.peer_eof = true,
            Poll::Pending => {}
        }
    }
    while !conn.app_eof && socket.can_send() {
        let r = socket.send(|buf| {
            let mut read = ReadBuf::new(buf);
            match Pin::new(&mut conn.pipe).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) => {
                    let n = read.filled().len();
                    if n == 0 {
                        conn.app_eof = true;
                    }
                    (n, n)
                }
                Poll::Ready(Err(_)) => {
                    conn.app_eof = true;
                    (0, 0)
                }
                Poll::Pending => (0, 0),
            }
        });
        match r {
            Ok(n) if n > 0 => moved = true,
            _ => break,
        }
    }
    if conn.app_eof && socket.may_send() {
        socket.close();
    }
    moved
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stack").field("conns", &self.conns.len()).finish_non_exhaustive()
    }
}
