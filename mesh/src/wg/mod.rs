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

    /// Encrypts and sends many packets under one lock of the device; the
    /// datagrams for one peer leave in as few sends as the socket allows
    /// (GSO). Returns how many packets were accepted; the rest were dropped
    /// (no route, malformed), as [`WgSender::send`] would.
    pub fn send_batch<'a>(&self, packets: impl IntoIterator<Item = &'a [u8]>) -> usize {
        let shared = &self.0;
        let mut out = GsoBatch::new(shared.sock.max_gso_segments());
        let mut send = |key: NodeKey, datagrams: &[u8], segment: usize| {
            shared.sock.send_wireguard_batch(&key, datagrams, segment);
        };
        let mut sent = 0;
        let mut device = shared.device();
        let now = Instant::now();
        for packet in packets {
            let result = device.handle_packet(packet, now, &mut |e| {
                if let Emit::Network(key, datagram) = e {
                    out.push(key, datagram, &mut send);
                }
            });
            match result {
                Ok(()) => sent += 1,
                Err(e) => tracing::trace!(%e, "packet not sent"),
            }
        }
        shared.rearm(&mut device);
        drop(device);
        out.flush(&mut send);
        sent
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

/// The most bytes one GSO send carries (a UDP datagram's limit, with room
/// for headers).
const GSO_MAX_BYTES: usize = 64_000;

/// Datagrams for one peer, back to back, waiting to leave in one GSO send:
/// every one `segment` bytes long but the last.
struct GsoBatch {
    key: Option<NodeKey>,
    buf: Vec<u8>,
    segment: usize,
    count: usize,
    max_segments: usize,
    /// The last datagram was shorter than `segment`: nothing may follow it.
    closed: bool,
}

impl GsoBatch {
    fn new(max_segments: usize) -> Self {
        Self {
            key: None,
            buf: Vec::new(),
            segment: 0,
            count: 0,
            max_segments: max_segments.max(1),
            closed: false,
        }
    }

    /// Adds a datagram for `key`, first sending what is batched through `send`
    /// (key, datagrams back to back, segment size) if it cannot join them.
    fn push(
        &mut self,
        key: NodeKey,
        datagram: &[u8],
        send: &mut impl FnMut(NodeKey, &[u8], usize),
    ) {
        let fits = self.key == Some(key)
            && !self.closed
            && datagram.len() <= self.segment
            && self.count < self.max_segments
            && self.buf.len() + datagram.len() <= GSO_MAX_BYTES;
        if !fits {
            self.flush(send);
            self.key = Some(key);
            self.segment = datagram.len();
        }
        self.buf.extend_from_slice(datagram);
        self.count += 1;
        self.closed = datagram.len() < self.segment;
    }

    fn flush(&mut self, send: &mut impl FnMut(NodeKey, &[u8], usize)) {
        if let Some(key) = self.key.take() {
            send(key, &self.buf, self.segment);
        }
        self.buf.clear();
        self.count = 0;
        self.closed = false;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> NodeKey {
        NodeKey::from_bytes([b; 32])
    }

    /// Pushes `(peer, len)` datagrams; the sends as (peer, lengths, segment).
    fn batches(max_segments: usize, datagrams: &[(u8, usize)]) -> Vec<(u8, Vec<usize>, usize)> {
        let mut sent = Vec::new();
        let mut send = |k: NodeKey, buf: &[u8], segment: usize| {
            let peer = k.as_bytes()[0];
            let lens = buf.chunks(segment).map(<[u8]>::len).collect();
            sent.push((peer, lens, segment));
        };
        let mut batch = GsoBatch::new(max_segments);
        for &(peer, len) in datagrams {
            batch.push(key(peer), &vec![peer; len], &mut send);
        }
        batch.flush(&mut send);
        sent
    }

    #[test]
    fn equal_datagrams_to_one_peer_leave_together() {
        assert_eq!(batches(64, &[(1, 1452); 3]), [(1, vec![1452; 3], 1452)]);
    }

    #[test]
    fn a_shorter_datagram_ends_the_batch() {
        let sent = batches(64, &[(1, 1452), (1, 1452), (1, 80), (1, 1452)]);
        assert_eq!(sent, [(1, vec![1452, 1452, 80], 1452), (1, vec![1452], 1452)]);
    }

    #[test]
    fn a_longer_datagram_or_another_peer_starts_a_new_batch() {
        let sent = batches(64, &[(1, 80), (1, 1452), (2, 1452), (1, 1452)]);
        assert_eq!(
            sent,
            [
                (1, vec![80], 80),
                (1, vec![1452], 1452),
                (2, vec![1452], 1452),
                (1, vec![1452], 1452)
            ]
        );
    }

    #[test]
    fn batches_respect_the_segment_and_byte_limits() {
        let sent = batches(2, &[(1, 100); 5]);
        assert_eq!(sent.iter().map(|s| s.1.len()).collect::<Vec<_>>(), [2, 2, 1]);
        let sent = batches(1000, &[(1, 1452); 50]);
        assert!(sent.iter().all(|s| s.1.iter().sum::<usize>() <= GSO_MAX_BYTES), "{sent:?}");
        assert_eq!(sent.iter().map(|s| s.1.len()).sum::<usize>(), 50);
    }
}
