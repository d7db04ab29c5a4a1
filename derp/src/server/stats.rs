//! Relay counters, readable as a snapshot or as Prometheus text.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters, bumped by connection tasks.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) connections_accepted: AtomicU64,
    pub(crate) handshake_failures: AtomicU64,
    pub(crate) frames_refused: AtomicU64,
    pub(crate) packets_forwarded: AtomicU64,
    pub(crate) bytes_forwarded: AtomicU64,
    pub(crate) packets_forwarded_mesh: AtomicU64,
    pub(crate) packets_dropped_queue_full: AtomicU64,
    pub(crate) packets_dropped_unknown_dest: AtomicU64,
    pub(crate) duplicate_connections: AtomicU64,
    pub(crate) clients_refused: AtomicU64,
}

pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// A point-in-time copy of the relay's counters and gauges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StatsSnapshot {
    /// Clients connected now (mesh peers not included).
    pub clients_connected: u64,
    /// Connected clients that said this relay is their home.
    pub clients_home: u64,
    /// Mesh relays watching this one now.
    pub mesh_watchers: u64,
    /// Peers reachable through a mesh neighbour now.
    pub mesh_routes: u64,
    pub connections_accepted: u64,
    pub handshake_failures: u64,
    /// Connections closed for a frame they may not send (e.g. mesh frames
    /// without the mesh key) or a malformed one.
    pub frames_refused: u64,
    /// Packets queued to a local client.
    pub packets_forwarded: u64,
    pub bytes_forwarded: u64,
    /// Packets handed to a mesh neighbour.
    pub packets_forwarded_mesh: u64,
    /// Packets dropped because the receiver's queue was full.
    pub packets_dropped_queue_full: u64,
    /// Packets dropped because no one here or in the mesh has the key.
    pub packets_dropped_unknown_dest: u64,
    /// Connections replaced by a newer one for the same key.
    pub duplicate_connections: u64,
    /// Clients that proved a key the client verifier refused.
    pub clients_refused: u64,
}

impl Stats {
    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            connections_accepted: get(&self.connections_accepted),
            handshake_failures: get(&self.handshake_failures),
            frames_refused: get(&self.frames_refused),
            packets_forwarded: get(&self.packets_forwarded),
            bytes_forwarded: get(&self.bytes_forwarded),
            packets_forwarded_mesh: get(&self.packets_forwarded_mesh),
            packets_dropped_queue_full: get(&self.packets_dropped_queue_full),
            packets_dropped_unknown_dest: get(&self.packets_dropped_unknown_dest),
            duplicate_connections: get(&self.duplicate_connections),
            clients_refused: get(&self.clients_refused),
            ..StatsSnapshot::default()
        }
    }
}

impl StatsSnapshot {
    /// The snapshot in the Prometheus text exposition format, metric names
    /// prefixed `derp_`.
    pub fn to_prometheus(&self) -> String {
        let rows: [(&str, &str, &str, u64); 14] = [
            ("clients_connected", "gauge", "Clients connected now.", self.clients_connected),
            ("clients_home", "gauge", "Clients whose home relay this is.", self.clients_home),
            ("mesh_watchers", "gauge", "Mesh relays watching this one.", self.mesh_watchers),
            ("mesh_routes", "gauge", "Peers reachable via a mesh neighbour.", self.mesh_routes),
            (
                "connections_accepted_total",
                "counter",
                "Connections accepted.",
                self.connections_accepted,
            ),
            ("handshake_failures_total", "counter", "Handshakes refused.", self.handshake_failures),
            (
                "frames_refused_total",
                "counter",
                "Connections closed for a bad frame.",
                self.frames_refused,
            ),
            (
                "packets_forwarded_total",
                "counter",
                "Packets queued to a local client.",
                self.packets_forwarded,
            ),
            (
                "bytes_forwarded_total",
                "counter",
                "Bytes queued to local clients.",
                self.bytes_forwarded,
            ),
            (
                "packets_forwarded_mesh_total",
                "counter",
                "Packets handed to a mesh neighbour.",
                self.packets_forwarded_mesh,
            ),
            (
                "packets_dropped_queue_full_total",
                "counter",
                "Packets dropped: receiver queue full.",
                self.packets_dropped_queue_full,
            ),
            (
                "packets_dropped_unknown_dest_total",
                "counter",
                "Packets dropped: unknown destination.",
                self.packets_dropped_unknown_dest,
            ),
            (
                "duplicate_connections_total",
                "counter",
                "Connections replaced by a newer one.",
                self.duplicate_connections,
            ),
            (
                "clients_refused_total",
                "counter",
                "Clients whose key the client verifier refused.",
                self.clients_refused,
            ),
        ];
        let mut out = String::new();
        for (name, kind, help, value) in rows {
            let _ = writeln!(
                out,
                "# HELP derp_{name} {help}\n# TYPE derp_{name} {kind}\nderp_{name} {value}"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_shape() {
        let snap = StatsSnapshot { clients_connected: 3, ..StatsSnapshot::default() };
        let text = snap.to_prometheus();
        assert!(text.contains("# TYPE derp_clients_connected gauge\nderp_clients_connected 3\n"));
        assert!(text.contains("derp_packets_dropped_queue_full_total 0\n"));
    }
}
