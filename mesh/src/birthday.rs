//! The extra sockets of birthday probing (`path/birthday.rs`): opened and
//! closed when the path selector says ([`SocketCommand`]), each with a task
//! reading it, owned by the magic socket and closed with it.
//!
//! A node behind a hard NAT opens them toward an easy peer; the one a
//! probe of the peer hits carries that peer's direct path from then on:
//! disco, QUIC and WireGuard to the peer leave from it
//! ([`PathSelector::direct_socket`](crate::PathSelector::direct_socket)),
//! and what arrives on it goes where the node's own socket's datagrams go
//! ([`Inner::handle_extra`]). The others close at once.
//!
//! Sockets are bound by the opening probes' thread ([`Sockets`]), in the
//! node's network namespace. Opening, closing and the disco sends through
//! them go through one queue to [`run`], in order, so a ping "via" a
//! socket never overtakes its opening; data sends take the socket straight
//! from [`ExtraSockets::send_data`].

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::magicsock::Inner;
use crate::opening::Sockets;
use crate::path::SocketCommand;
use crate::socket;

/// What [`run`] does, in order.
#[derive(Debug)]
enum Op {
    Command(SocketCommand),
    Send { via: u32, to: SocketAddr, payload: Vec<u8> },
}

/// The open extra sockets, and the queue to the task that manages them.
#[derive(Debug, Default)]
pub(crate) struct ExtraSockets {
    tx: OnceLock<mpsc::UnboundedSender<Op>>,
    /// A leaf lock, taken under the state lock (on send), never the other
    /// way round.
    open: Mutex<HashMap<u32, Arc<tokio::net::UdpSocket>>>,
}

impl ExtraSockets {
    fn queue(&self, op: Op) {
        if let Some(tx) = self.tx.get() {
            // The receiver lives as long as the socket's tasks.
            let _ = tx.send(op);
        }
    }

    /// Opens or closes a socket (queued).
    pub(crate) fn command(&self, cmd: SocketCommand) {
        self.queue(Op::Command(cmd));
    }

    /// Sends a disco datagram from socket `via` (queued after its opening).
    pub(crate) fn send(&self, via: u32, to: SocketAddr, payload: Vec<u8>) {
        self.queue(Op::Send { via, to, payload });
    }

    /// Sends datagrams (back to back in `contents`, `segment` bytes each but
    /// the last) from socket `via`; dropped, like a full queue, when it is
    /// not open.
    pub(crate) fn send_data(&self, via: u32, to: SocketAddr, contents: &[u8], segment: usize) {
        let socket = self.open.lock().unwrap_or_else(|p| p.into_inner()).get(&via).cloned();
        let Some(socket) = socket else { return };
        let Ok(local) = socket.local_addr() else { return };
        let to = socket::send_addr(local, to);
        for datagram in contents.chunks(segment.max(1)) {
            let _ = socket.try_send_to(datagram, to);
        }
    }
}

/// Opens, closes and sends through the extra sockets queued for `inner`
/// until the magic socket is dropped; `family` is the node's own socket's
/// address (extra sockets bind the same family).
pub(crate) async fn run(inner: Arc<Inner>, sockets: Sockets, family: SocketAddr) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    if inner.extra().tx.set(tx).is_err() {
        return;
    }
    let any: SocketAddr = match family {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let mut readers = JoinSet::new();
    let mut aborts = HashMap::new();
    while let Some(op) = rx.recv().await {
        match op {
            Op::Command(SocketCommand::Open(id)) => {
                let socket = match sockets.bind(any).await.and_then(tokio::net::UdpSocket::from_std)
                {
                    Ok(socket) => Arc::new(socket),
                    Err(e) => {
                        // Without it this socket's probes are lost; the others go on.
                        tracing::debug!(%e, id, "could not open a birthday socket");
                        continue;
                    }
                };
                inner
                    .extra()
                    .open
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(id, socket.clone());
                let abort = readers.spawn(read(inner.clone(), id, socket));
                aborts.insert(id, abort);
            }
            Op::Command(SocketCommand::Close(id)) => {
                inner.extra().open.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                if let Some(abort) = aborts.remove(&id) {
                    abort.abort();
                }
            }
            Op::Send { via, to, payload } => {
                inner.extra().send_data(via, to, &payload, payload.len())
            }
        }
        // Reap finished readers so the set does not grow.
        while readers.try_join_next().is_some() {}
    }
}

/// Hands what arrives on extra socket `id` to the magic socket.
async fn read(inner: Arc<Inner>, id: u32, socket: Arc<tokio::net::UdpSocket>) {
    let mut buf = vec![0u8; 65536];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, src)) => inner.handle_extra(id, src, Bytes::copy_from_slice(&buf[..n])),
            // ICMP errors of earlier sends surface here; keep reading.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset
                ) => {}
            Err(e) => {
                tracing::debug!(%e, id, "birthday socket failed");
                return;
            }
        }
    }
}
