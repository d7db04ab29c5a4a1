//! Counters of connections, sessions by kind and bytes, kept in atomics so
//! that [`SshServer::stats`](super::SshServer::stats) is a cheap snapshot the
//! agent can report as often as it likes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// What a channel is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SessionKind {
    /// `exec` without a PTY (`ssh host cmd`, `scp`).
    Exec,
    /// `shell`, or `exec` with a PTY.
    Shell,
    /// The `sftp` subsystem.
    Sftp,
    /// A `direct-tcpip` channel (`ssh -L`).
    LocalForward,
    /// A `forwarded-tcpip` channel (`ssh -R`).
    RemoteForward,
    /// An `auth-agent@openssh.com` channel (`ssh -A`).
    AgentForward,
}

const KINDS: usize = 6;

impl SessionKind {
    fn index(self) -> usize {
        match self {
            Self::Exec => 0,
            Self::Shell => 1,
            Self::Sftp => 2,
            Self::LocalForward => 3,
            Self::RemoteForward => 4,
            Self::AgentForward => 5,
        }
    }
}

/// A number per [`SessionKind`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionCounts {
    pub exec: u64,
    pub shell: u64,
    pub sftp: u64,
    pub local_forward: u64,
    pub remote_forward: u64,
    pub agent_forward: u64,
}

impl SessionCounts {
    fn from_array(a: [u64; KINDS]) -> Self {
        let [exec, shell, sftp, local_forward, remote_forward, agent_forward] = a;
        Self { exec, shell, sftp, local_forward, remote_forward, agent_forward }
    }

    /// The count for one kind.
    pub fn get(&self, kind: SessionKind) -> u64 {
        match kind {
            SessionKind::Exec => self.exec,
            SessionKind::Shell => self.shell,
            SessionKind::Sftp => self.sftp,
            SessionKind::LocalForward => self.local_forward,
            SessionKind::RemoteForward => self.remote_forward,
            SessionKind::AgentForward => self.agent_forward,
        }
    }
}

/// A snapshot of the server's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SshStats {
    /// SSH connections open now.
    pub connections_active: u64,
    /// SSH connections ever served.
    pub connections_total: u64,
    /// Channels open now, by kind.
    pub sessions_active: SessionCounts,
    /// Channels ever opened, by kind.
    pub sessions_total: SessionCounts,
    /// Bytes read from clients' streams (SSH framing included).
    pub bytes_in: u64,
    /// Bytes written to clients' streams (SSH framing included).
    pub bytes_out: u64,
}

#[derive(Debug, Default)]
struct Atomics {
    connections_active: AtomicU64,
    connections_total: AtomicU64,
    active: [AtomicU64; KINDS],
    total: [AtomicU64; KINDS],
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

/// The live counters; clones share them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Counters(Arc<Atomics>);

impl Counters {
    pub(crate) fn snapshot(&self) -> SshStats {
        let load = |a: &[AtomicU64; KINDS]| a.each_ref().map(|c| c.load(Ordering::Relaxed));
        SshStats {
            connections_active: self.0.connections_active.load(Ordering::Relaxed),
            connections_total: self.0.connections_total.load(Ordering::Relaxed),
            sessions_active: SessionCounts::from_array(load(&self.0.active)),
            sessions_total: SessionCounts::from_array(load(&self.0.total)),
            bytes_in: self.0.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.0.bytes_out.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn add_bytes_in(&self, n: usize) {
        self.0.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn add_bytes_out(&self, n: usize) {
        self.0.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Counts a connection as active until the guard drops.
    pub(crate) fn connection(&self) -> ActiveGuard {
        self.0.connections_total.fetch_add(1, Ordering::Relaxed);
        self.0.connections_active.fetch_add(1, Ordering::Relaxed);
        ActiveGuard { counters: self.clone(), kind: None }
    }

    /// Counts a session of `kind` as active until the guard drops.
    pub(crate) fn session(&self, kind: SessionKind) -> ActiveGuard {
        let i = kind.index();
        if let (Some(total), Some(active)) = (self.0.total.get(i), self.0.active.get(i)) {
            total.fetch_add(1, Ordering::Relaxed);
            active.fetch_add(1, Ordering::Relaxed);
        }
        ActiveGuard { counters: self.clone(), kind: Some(kind) }
    }
}

/// Decrements an active gauge on drop.
#[derive(Debug)]
pub(crate) struct ActiveGuard {
    counters: Counters,
    kind: Option<SessionKind>,
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        let gauge = match self.kind {
            None => Some(&self.counters.0.connections_active),
            Some(kind) => self.counters.0.active.get(kind.index()),
        };
        if let Some(gauge) = gauge {
            gauge.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_count_up_and_down() {
        let c = Counters::default();
        let conn = c.connection();
        let exec = c.session(SessionKind::Exec);
        let _sftp = c.session(SessionKind::Sftp);
        c.add_bytes_in(10);
        c.add_bytes_out(20);
        drop(exec);
        let s = c.snapshot();
        assert_eq!(s.connections_active, 1);
        assert_eq!(s.sessions_total.exec, 1);
        assert_eq!(s.sessions_active.exec, 0);
        assert_eq!(s.sessions_active.get(SessionKind::Sftp), 1);
        assert_eq!((s.bytes_in, s.bytes_out), (10, 20));
        drop(conn);
        assert_eq!(c.snapshot().connections_active, 0);
        assert_eq!(c.snapshot().connections_total, 1);
    }
}
