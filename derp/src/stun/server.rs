//! A tiny UDP STUN server: answers every binding request with the
//! requester's address. One owned task; dropping the handle stops it.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio_util::task::AbortOnDropHandle;
use tracing::{debug, warn};

use super::proto::{binding_response, parse_binding_request};

/// A running STUN server.
#[derive(Debug)]
pub struct StunServer {
    local_addr: SocketAddr,
    requests: Arc<AtomicU64>,
    task: AbortOnDropHandle<()>,
}

impl StunServer {
    /// Binds `addr` (use port 0 in tests) and starts answering.
    pub async fn spawn(addr: SocketAddr) -> io::Result<Self> {
        let socket = UdpSocket::bind(addr).await?;
        let local_addr = socket.local_addr()?;
        let requests = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(run(socket, requests.clone()));
        Ok(Self { local_addr, requests, task: AbortOnDropHandle::new(task) })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Binding requests answered so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub async fn shutdown(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

async fn run(socket: UdpSocket, requests: Arc<AtomicU64>) {
    let mut buf = vec![0u8; 2048];
    loop {
        let (len, from) = match socket.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(err) => {
                // ICMP errors surface here on some platforms; keep serving.
                debug!(%err, "stun recv failed");
                continue;
            }
        };
        let Some(packet) = buf.get(..len) else { continue };
        let Ok(txid) = parse_binding_request(packet) else {
            continue;
        };
        requests.fetch_add(1, Ordering::Relaxed);
        if let Err(err) = socket.send_to(&binding_response(txid, from), from).await {
            warn!(%err, %from, "stun reply failed");
        }
    }
}
