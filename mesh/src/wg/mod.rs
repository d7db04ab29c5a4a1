//! WireGuard over the magic socket: IP packets between mesh peers.
//!
//! [`device`] is the sans-IO core (boringtun sessions per announced peer);
//! this module is its I/O shell. The magic socket hands every WireGuard
//! datagram (from UDP or the relay) to an inbound task through a bounded
//! queue; the task decrypts them under the device lock and passes the IP
//! packets to the [`WgReceiver`]. [`WgSender::send`] encrypts on the caller's
//! task and writes through the magic socket, which picks the path exactly as
//! it does for QUIC (direct once a pong proved it, else the relay). A timer
//! task sleeps until the device's next deadline.
//!
//! ```text
//! magic socket ──(key?, datagram)──▶ inbound task ──▶ WgDevice ──IP packet──▶ WgReceiver
//! WgSender::send(IP packet) ──▶ WgDevice ──datagram──▶ magic socket (direct | relay)
//! timer task ──deadline──▶ WgDevice::handle_timeout ──▶ magic socket
//! ```

pub mod device;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::{mpsc, Notify};
use tokio_util::task::AbortOnDropHandle;

use crate::key::NodeKey;
use crate::magicsock::Inner;

pub use device::{Emit, WgDevice, WgError, MTU};

/// Datagrams queued toward the device, and packets toward the receiver,
/// before new ones are dropped (as a full NIC queue would).
const QUEUE: usize = 1024;

/// Packets decrypted per lock of the device.
const BATCH: usize = 64;

/// The device and the socket it sends through.
pub(crate) struct Shared {
    device: Mutex<WgDevice>,
    sock: Arc<Inner>,
    timer: Notify,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WireGuard").finish_non_exhaustive()
    }
}

impl Shared {
    pub(crate) fn device(&self) -> MutexGuard<'_, WgDevice> {
        self.device.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes the timer task if a call armed a peer's timers.
    fn rearm(&self, device: &mut WgDevice) {
        if device.take_armed() {
            self.timer.notify_one();
        }
    }
}

/// Starts WireGuard on `sock` with `device`; the tasks stop when the returned
/// receiver is dropped.
pub(crate) fn start(sock: Arc<Inner>, device: WgDevice) -> (Arc<Shared>, WgSender, WgReceiver) {
    let shared =
        Arc::new(Shared { device: Mutex::new(device), sock: sock.clone(), timer: Notify::new() });
    let (in_tx, in_rx) = mpsc::channel(QUEUE);
    let (up_tx, up_rx) = mpsc::channel(QUEUE);
    sock.set_wireguard(in_tx);
    let tasks = vec![
        AbortOnDropHandle::new(tokio::spawn(inbound(shared.clone(), in_rx, up_tx))),
        AbortOnDropHandle::new(tokio::spawn(timers(shared.clone()))),
    ];
    let sender = WgSender(shared.clone());
    (shared, sender, WgReceiver { rx: up_rx, _tasks: tasks })
}

/// Sends IP packets to mesh peers. Cheap to clone.
#[derive(Debug, Clone)]
pub struct WgSender(Arc<Shared>);

impl WgSender {
    /// Encrypts `packet` for the peer that owns its destination address and
    /// sends it. A packet sent before the handshake completes waits for it.
    pub fn send(&self, packet: &[u8]) -> Result<(), WgError> {
        let shared = &self.0;
        let mut device = shared.device();
        let result = device.handle_packet(packet, Instant::now(), &mut |e| {
            if let Emit::Network(key, datagram) = e {
                shared.sock.send_wireguard(&key, datagram);
            }
        });
        shared.rearm(&mut device);
        result
    }

    /// Whether some peer owns this address.
    pub fn routes(&self, ip: std::net::IpAddr) -> bool {
        self.0.device().peer_for(ip).is_some()
    }
}

/// IP packets peers sent us, decrypted and checked. Dropping it stops
/// WireGuard on the endpoint.
#[derive(Debug)]
pub struct WgReceiver {
    rx: mpsc::Receiver<Bytes>,
    _tasks: Vec<AbortOnDropHandle<()>>,
}

impl WgReceiver {
    /// The next packet; `None` once the endpoint is gone.
    pub async fn recv(&mut self) -> Option<Bytes> {
        self.rx.recv().await
    }

    /// Up to `limit` packets at once, appended to `buf`; 0 once the endpoint is gone.
    pub async fn recv_many(&mut self, buf: &mut Vec<Bytes>, limit: usize) -> usize {
        self.rx.recv_many(buf, limit).await
    }
}

async fn inbound(
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<(Option<NodeKey>, Bytes)>,
    up: mpsc::Sender<Bytes>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut packets = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        {
            let mut device = shared.device();
            let now = Instant::now();
            for (from, datagram) in batch.drain(..) {
                let result = device.handle_datagram(from, &datagram, now, &mut |e| match e {
                    Emit::Network(key, out) => shared.sock.send_wireguard(&key, out),
                    Emit::Tunnel(_, packet) => packets.push(Bytes::copy_from_slice(packet)),
                });
                if let Err(e) = result {
                    tracing::debug!(%e, "dropped wireguard datagram");
                }
            }
            shared.rearm(&mut device);
        }
        for packet in packets.drain(..) {
            if up.send(packet).await.is_err() {
                return;
            }
        }
    }
}

async fn timers(shared: Arc<Shared>) {
    loop {
        let deadline = shared.device().poll_timeout();
        match deadline {
            Some(at) => {
                tokio::select! {
                    biased;
                    () = shared.timer.notified() => {}
                    () = tokio::time::sleep_until(at.into()) => {
                        let mut device = shared.device();
                        device.handle_timeout(Instant::now(), &mut |e| {
                            if let Emit::Network(key, datagram) = e {
                                shared.sock.send_wireguard(&key, datagram);
                            }
                        });
                        device.take_armed();
                    }
                }
            }
            None => shared.timer.notified().await,
        }
    }
}
