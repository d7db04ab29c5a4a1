//! UDP to any port of ours, forwarded to the same port on this host's
//! loopback: one host socket per peer flow (peer address and port, our
//! port), so replies find their way back; a flow quiet for
//! [`UDP_IDLE_TIMEOUT`] is closed.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::packet;
use super::UdpHandler;
use crate::wg::WgSender;

/// How long a flow may carry nothing either way.
pub const UDP_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Datagrams queued per flow while its socket opens.
const FLOW_QUEUE: usize = 256;

/// Forwards datagrams to `127.0.0.1:<port>` and sends the replies back.
pub struct LoopbackUdp {
    tx: WgSender,
    flows: HashMap<(SocketAddr, SocketAddr), mpsc::Sender<Bytes>>,
    tasks: JoinSet<()>,
}

impl LoopbackUdp {
    /// A forwarder whose replies go out through `tx`.
    pub fn new(tx: WgSender) -> Self {
        Self { tx, flows: HashMap::new(), tasks: JoinSet::new() }
    }
}

impl UdpHandler for LoopbackUdp {
    fn datagram(&mut self, src: SocketAddr, dst: SocketAddr, payload: &[u8]) {
        let key = (src, dst);
        let flow = match self.flows.get(&key) {
            Some(flow) if !flow.is_closed() => flow,
            _ => {
                // Reap finished flows whenever a new one starts.
                self.flows.retain(|_, f| !f.is_closed());
                while self.tasks.try_join_next().is_some() {}
                let (flow_tx, flow_rx) = mpsc::channel(FLOW_QUEUE);
                self.tasks.spawn(flow(self.tx.clone(), src, dst, flow_rx));
                self.flows.entry(key).or_insert(flow_tx)
            }
        };
        // A full queue drops the datagram, as a congested link would.
        let _ = flow.try_send(Bytes::copy_from_slice(payload));
    }
}

async fn flow(tx: WgSender, peer: SocketAddr, ours: SocketAddr, mut rx: mpsc::Receiver<Bytes>) {
    let target = SocketAddr::from((Ipv4Addr::LOCALHOST, ours.port()));
    let socket = match UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%e, "cannot bind a UDP socket for a forward");
            return;
        }
    };
    if let Err(e) = socket.connect(target).await {
        tracing::debug!(%e, %target, "UDP forward target unusable");
        return;
    }
    let mut buf = vec![0u8; usize::from(u16::MAX)];
    loop {
        tokio::select! {
            d = rx.recv() => match d {
                // A refused send (nobody listening) is loss, as UDP goes.
                Some(d) => drop(socket.send(&d).await),
                None => return,
            },
            r = socket.recv(&mut buf) => match r {
                Ok(n) => {
                    let Some(reply) = buf.get(..n).and_then(|p| packet::udp(ours, peer, p)) else {
                        continue;
                    };
                    if let Err(e) = tx.send(&reply) {
                        tracing::debug!(%e, "UDP reply not sent");
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                Err(e) => {
                    tracing::debug!(%e, %target, "UDP forward receive failed");
                    return;
                }
            },
            () = tokio::time::sleep(UDP_IDLE_TIMEOUT) => return,
        }
    }
}
