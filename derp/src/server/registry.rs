//! Who is connected where: local clients, mesh watchers, and peers homed on
//! mesh neighbours. Connection tasks look destinations up here and hand
//! frames to the receiver's queue without waiting ([`PacketQueue::push`],
//! fair between senders), so a full queue drops a packet (an older one, and
//! counts it) instead of slowing the sender.
//!
//! Everything here is synchronous and short; the lock is never held across
//! an `.await`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::queue::PacketQueue;
use super::stats::{bump, Stats, StatsSnapshot};
use crate::key::PublicKey;
use crate::proto::{Frame, PeerGoneReason};

/// Sent to a connection that a newer one for the same key replaced.
pub const REPLACED_PROBLEM: &str = "replaced by a newer connection for this key";

/// Identifies one accepted connection (keys can reconnect).
pub(crate) type ConnId = u64;
/// Identifies one outgoing mesh link.
pub(crate) type NeighbourId = u64;

/// The queues a connection's writer drains. Packets and control frames are
/// apart so a flood of packets never crowds out `PeerGone` or `Pong`.
#[derive(Debug, Clone)]
pub(crate) struct Outbox {
    pub(crate) packets: Arc<PacketQueue>,
    pub(crate) control: mpsc::Sender<Frame>,
    /// Cancelled to make the connection close (after draining control).
    pub(crate) close: CancellationToken,
}

struct ClientEntry {
    conn_id: ConnId,
    outbox: Outbox,
    /// Local clients that sent to this one: told `PeerGone` when it leaves.
    senders: HashSet<PublicKey>,
    preferred: bool,
}

struct MeshRoute {
    neighbour: NeighbourId,
    forward: mpsc::Sender<Frame>,
}

#[derive(Default)]
struct Inner {
    clients: HashMap<PublicKey, ClientEntry>,
    watchers: HashMap<ConnId, Outbox>,
    mesh_routes: HashMap<PublicKey, MeshRoute>,
}

/// Where a key can be reached from this relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerLocation {
    Local,
    Mesh,
}

pub(crate) struct Registry {
    inner: Mutex<Inner>,
    pub(crate) stats: Stats,
    /// Bumped on every membership change, so tests and operators can wait
    /// for one instead of polling.
    generation: watch::Sender<u64>,
}

impl Registry {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::default(),
            stats: Stats::default(),
            generation: watch::Sender::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain maps behind: still usable.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn changed(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Adds a client; an older connection for the key is told and closed.
    pub(crate) fn register(&self, key: PublicKey, conn_id: ConnId, outbox: Outbox) {
        let mut inner = self.lock();
        let entry = ClientEntry { conn_id, outbox, senders: HashSet::new(), preferred: false };
        if let Some(old) = inner.clients.insert(key, entry) {
            debug!(peer = %key.short(), "newer connection replaces older");
            bump(&self.stats.duplicate_connections);
            let _ = old.outbox.control.try_send(Frame::Health { problem: REPLACED_PROBLEM.into() });
            old.outbox.close.cancel();
        }
        notify_watchers(&mut inner, &Frame::PeerPresent { key });
        drop(inner);
        self.changed();
    }

    /// Removes a client if `conn_id` is still the one registered for `key`.
    pub(crate) fn unregister(&self, key: PublicKey, conn_id: ConnId) {
        let mut inner = self.lock();
        if inner.clients.get(&key).map(|e| e.conn_id) != Some(conn_id) {
            return;
        }
        let Some(gone) = inner.clients.remove(&key) else { return };
        let frame = Frame::PeerGone { key, reason: PeerGoneReason::Disconnected };
        for sender in &gone.senders {
            if let Some(entry) = inner.clients.get(sender) {
                let _ = entry.outbox.control.try_send(frame.clone());
            }
        }
        notify_watchers(&mut inner, &frame);
        drop(inner);
        self.changed();
    }

    pub(crate) fn note_preferred(&self, key: PublicKey, conn_id: ConnId, preferred: bool) {
        if let Some(entry) = self.lock().clients.get_mut(&key) {
            if entry.conn_id == conn_id {
                entry.preferred = preferred;
            }
        }
    }

    /// Routes a packet from `src`. Packets that came from a mesh neighbour
    /// (`from_mesh`) are only delivered locally: the mesh is one hop.
    pub(crate) fn send_packet(&self, src: PublicKey, dst: PublicKey, data: Bytes, from_mesh: bool) {
        let len = data.len() as u64;
        let mut inner = self.lock();
        if let Some(entry) = inner.clients.get_mut(&dst) {
            if !from_mesh && !entry.senders.contains(&src) {
                entry.senders.insert(src);
            }
            self.stats.bytes_forwarded.fetch_add(len, Ordering::Relaxed);
            match entry.outbox.packets.push(src, Frame::RecvPacket { src, data }) {
                None => bump(&self.stats.packets_forwarded),
                // An older packet made room: it is the one not forwarded.
                Some(dropped) => {
                    bump(&self.stats.packets_dropped_queue_full);
                    let dropped_len = match dropped {
                        Frame::RecvPacket { data, .. } => data.len() as u64,
                        _ => 0,
                    };
                    self.stats.bytes_forwarded.fetch_sub(dropped_len, Ordering::Relaxed);
                }
            }
            return;
        }
        if !from_mesh {
            if let Some(route) = inner.mesh_routes.get(&dst) {
                match route.forward.try_send(Frame::ForwardPacket { src, dst, data }) {
                    Ok(()) => bump(&self.stats.packets_forwarded_mesh),
                    Err(_) => bump(&self.stats.packets_dropped_queue_full),
                }
                return;
            }
        }
        bump(&self.stats.packets_dropped_unknown_dest);
        if let Some(sender) = inner.clients.get(&src) {
            let gone = Frame::PeerGone { key: dst, reason: PeerGoneReason::NotHere };
            let _ = sender.outbox.control.try_send(gone);
        }
    }

    /// A mesh neighbour watches our clients: tell it about all of them now
    /// and about every arrival and departure from now on.
    pub(crate) fn watch(&self, conn_id: ConnId, outbox: Outbox) {
        let mut inner = self.lock();
        for key in inner.clients.keys() {
            if outbox.control.try_send(Frame::PeerPresent { key: *key }).is_err() {
                // Too many to announce at once; the watcher reconnects and retries.
                outbox.close.cancel();
                return;
            }
        }
        inner.watchers.insert(conn_id, outbox);
        drop(inner);
        self.changed();
    }

    pub(crate) fn unwatch(&self, conn_id: ConnId) {
        if self.lock().watchers.remove(&conn_id).is_some() {
            self.changed();
        }
    }

    /// `key` is homed on mesh neighbour `neighbour`.
    pub(crate) fn add_mesh_route(
        &self,
        key: PublicKey,
        neighbour: NeighbourId,
        forward: mpsc::Sender<Frame>,
    ) {
        self.lock().mesh_routes.insert(key, MeshRoute { neighbour, forward });
        self.changed();
    }

    pub(crate) fn remove_mesh_route(&self, key: PublicKey, neighbour: NeighbourId) {
        let mut inner = self.lock();
        if inner.mesh_routes.get(&key).map(|r| r.neighbour) == Some(neighbour) {
            inner.mesh_routes.remove(&key);
            drop(inner);
            self.changed();
        }
    }

    /// The link to `neighbour` is down: forget everything learnt from it.
    pub(crate) fn clear_mesh_routes(&self, neighbour: NeighbourId) {
        self.lock().mesh_routes.retain(|_, r| r.neighbour != neighbour);
        self.changed();
    }

    pub(crate) fn location(&self, key: &PublicKey) -> Option<PeerLocation> {
        let inner = self.lock();
        if inner.clients.contains_key(key) {
            Some(PeerLocation::Local)
        } else if inner.mesh_routes.contains_key(key) {
            Some(PeerLocation::Mesh)
        } else {
            None
        }
    }

    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        let mut snap = self.stats.snapshot();
        let inner = self.lock();
        snap.clients_connected = inner.clients.len() as u64;
        snap.clients_home = inner.clients.values().filter(|e| e.preferred).count() as u64;
        snap.mesh_watchers = inner.watchers.len() as u64;
        snap.mesh_routes = inner.mesh_routes.len() as u64;
        snap
    }
}

/// Tells every watcher; one that cannot keep up is closed so it resyncs.
fn notify_watchers(inner: &mut Inner, frame: &Frame) {
    inner.watchers.retain(|_, outbox| {
        let ok = outbox.control.try_send(frame.clone()).is_ok();
        if !ok {
            outbox.close.cancel();
        }
        ok
    });
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::key::SecretKey;

    struct Peer {
        key: PublicKey,
        outbox: Outbox,
        packets: Arc<PacketQueue>,
        control: mpsc::Receiver<Frame>,
    }

    fn peer(queue: usize) -> Peer {
        let packets = Arc::new(PacketQueue::new(queue));
        let (control, control_rx) = mpsc::channel(16);
        Peer {
            key: SecretKey::generate().public(),
            outbox: Outbox { packets: packets.clone(), control, close: CancellationToken::new() },
            packets,
            control: control_rx,
        }
    }

    fn pop(queue: &PacketQueue) -> Option<Frame> {
        let mut out = Vec::new();
        queue.pop_batch(1, &mut out);
        out.pop()
    }

    fn data() -> Bytes {
        Bytes::from_static(b"pkt")
    }

    #[test]
    fn full_queue_drops_and_counts() {
        let reg = Registry::new();
        let b = peer(2);
        let a = peer(2);
        reg.register(b.key, 1, b.outbox.clone());
        for i in 0..5u8 {
            reg.send_packet(a.key, b.key, Bytes::from(vec![i; 10]), false);
        }
        let snap = reg.snapshot();
        assert_eq!((snap.packets_forwarded, snap.packets_dropped_queue_full), (2, 3));
        assert_eq!(snap.bytes_forwarded, 20, "the bytes of the two packets still queued");
        // The oldest made way: the newest two are what the writer sends.
        let newest = Frame::RecvPacket { src: a.key, data: Bytes::from(vec![3; 10]) };
        assert_eq!(pop(&b.packets).unwrap(), newest);
    }

    #[test]
    fn newer_connection_replaces_older_and_stale_unregister_is_ignored() {
        let reg = Registry::new();
        let mut old = peer(4);
        let mut new = peer(4);
        new.key = old.key;
        reg.register(old.key, 1, old.outbox.clone());
        reg.register(new.key, 2, new.outbox.clone());
        assert!(old.outbox.close.is_cancelled());
        assert_eq!(
            old.control.try_recv().unwrap(),
            Frame::Health { problem: REPLACED_PROBLEM.into() }
        );
        // The old connection's cleanup must not remove the new one.
        reg.unregister(old.key, 1);
        assert_eq!(reg.location(&new.key), Some(PeerLocation::Local));
        reg.send_packet(SecretKey::generate().public(), new.key, data(), false);
        assert!(pop(&new.packets).is_some());
    }

    #[test]
    fn senders_learn_peer_gone_and_unknown_is_not_here() {
        let reg = Registry::new();
        let mut a = peer(4);
        let b = peer(4);
        reg.register(a.key, 1, a.outbox.clone());
        reg.register(b.key, 2, b.outbox.clone());
        reg.send_packet(a.key, b.key, data(), false);
        reg.unregister(b.key, 2);
        let gone = Frame::PeerGone { key: b.key, reason: PeerGoneReason::Disconnected };
        assert_eq!(a.control.try_recv().unwrap(), gone);
        reg.send_packet(a.key, b.key, data(), false);
        let not_here = Frame::PeerGone { key: b.key, reason: PeerGoneReason::NotHere };
        assert_eq!(a.control.try_recv().unwrap(), not_here);
        assert_eq!(reg.snapshot().packets_dropped_unknown_dest, 1);
    }

    #[test]
    fn watchers_see_present_and_gone() {
        let reg = Registry::new();
        let a = peer(4);
        let mut watcher = peer(4);
        reg.register(a.key, 1, a.outbox.clone());
        reg.watch(10, watcher.outbox.clone());
        assert_eq!(watcher.control.try_recv().unwrap(), Frame::PeerPresent { key: a.key });
        reg.unregister(a.key, 1);
        assert!(
            matches!(watcher.control.try_recv().unwrap(), Frame::PeerGone { key, .. } if key == a.key)
        );
        reg.unwatch(10);
        assert_eq!(reg.snapshot().mesh_watchers, 0);
    }

    #[test]
    fn mesh_routes_forward_once_and_belong_to_their_neighbour() {
        let reg = Registry::new();
        let remote = SecretKey::generate().public();
        let local = peer(4);
        let (forward, mut forwarded) = mpsc::channel(4);
        reg.register(local.key, 1, local.outbox.clone());
        reg.add_mesh_route(remote, 7, forward);
        reg.send_packet(local.key, remote, data(), false);
        assert!(
            matches!(forwarded.try_recv().unwrap(), Frame::ForwardPacket { dst, .. } if dst == remote)
        );
        // A packet that came over the mesh is never forwarded again.
        reg.send_packet(local.key, remote, data(), true);
        assert!(forwarded.try_recv().is_err());
        // Another neighbour's PeerGone does not remove this route.
        reg.remove_mesh_route(remote, 8);
        assert_eq!(reg.location(&remote), Some(PeerLocation::Mesh));
        reg.clear_mesh_routes(7);
        assert_eq!(reg.location(&remote), None);
    }
}
