//! The workspace agent's SSH server.
//!
//! Every mesh stream whose header names the `ssh` service is handed to
//! [`SshServer::serve_stream`] as a plain bidirectional byte stream; one SSH
//! connection runs over it. Inside that connection the server offers what
//! OpenSSH's `sshd` offers a workspace user, running everything as the agent's
//! own user:
//!
//! - `session` channels: `exec` (through the user's shell, separate stdout and
//!   stderr, exit status or exit signal), `shell` and `exec` with a PTY
//!   (`pty-req`, `window-change`), `env`, `signal`, and the `sftp` subsystem
//!   ([`session`], [`process`], [`pty`], [`sftp`]);
//! - `direct-tcpip` (`ssh -L`), `tcpip-forward` (`ssh -R`) and agent
//!   forwarding (`ssh -A`) ([`forward`]);
//! - server keepalives, and answers to the client's `keepalive@openssh.com`.
//!
//! # Authentication
//!
//! The SSH layer accepts every client: the `none` method and any public key.
//! That is deliberate. A stream only reaches this server after the mesh has
//! authenticated the peer with a key the coordinator vouched for, and the
//! coordinator only hands out a workspace's node to users allowed to use that
//! workspace. A second, SSH-level check would need a second key distribution
//! and would add nothing. Never expose [`SshServer::serve_stream`] on a socket
//! that the mesh does not guard.
//!
//! # Data flow and ownership
//!
//! [`SshServer::serve_stream`] wraps the stream in a counter of bytes (for
//! [`SshStats`]) that also aborts it when the future is dropped, and runs
//! russh's session over it. The russh [`Handler`](russh::server::Handler)
//! ([`handler::ConnectionHandler`]) owns every task spawned for that
//! connection in a `JoinSet` (channel tasks) or `AbortOnDropHandle`s (remote
//! forward listeners); when the connection ends, russh drops the handler and
//! with it all those tasks, which kill the processes they started.

mod forward;
mod handler;
mod host_key;
mod process;
mod pty;
mod rpty;
mod session;
mod sftp;
mod stats;
mod stream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use host_key::{HostKey, HostKeyError};
pub use stats::{SessionCounts, SessionKind, SshStats};

use stats::Counters;

/// Configuration of an [`SshServer`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SshConfig {
    /// The whole environment of every command and shell (see
    /// [`crate::environ`]): nothing else is inherited from the agent. Each
    /// session adds `SSH_CLIENT`, `SSH_CONNECTION`, `TERM` and `SSH_TTY` with
    /// a PTY, then the variables the client sends (`env` requests).
    pub env: Vec<(String, String)>,
    /// Working directory of commands and shells, and the base of relative
    /// SFTP paths.
    pub dir: PathBuf,
    /// The user's shell; `$SHELL`, then `/bin/sh` when `None`.
    pub shell: Option<PathBuf>,
    /// The host key; a fresh Ed25519 key is generated when `None`.
    pub host_key: Option<HostKey>,
    /// How often to send `keepalive@openssh.com` to an idle client.
    pub keepalive_interval: Option<Duration>,
    /// Unanswered keepalives after which the connection is dropped.
    pub keepalive_max: usize,
    /// Whether `ssh -L` and `ssh -R` are allowed.
    pub port_forwarding: bool,
    /// Whether `ssh -A` is allowed.
    pub agent_forwarding: bool,
}

impl Default for SshConfig {
    fn default() -> Self {
        let dir = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/"));
        Self {
            env: crate::environ::for_current_process(),
            dir,
            shell: None,
            host_key: None,
            keepalive_interval: Some(Duration::from_secs(15)),
            keepalive_max: 4,
            port_forwarding: true,
            agent_forwarding: true,
        }
    }
}

impl SshConfig {
    /// A default configuration whose commands run in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into(), ..Self::default() }
    }
}

/// Who is at the other end of an SSH connection.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Names the peer in logs.
    pub name: String,
    /// The client's and the server's addresses (on the mesh: their mesh
    /// addresses), for `SSH_CLIENT` and `SSH_CONNECTION`; unset when unknown.
    pub addrs: Option<(SocketAddr, SocketAddr)>,
}

impl From<String> for Peer {
    fn from(name: String) -> Self {
        Peer { name, addrs: None }
    }
}

/// Why an SSH connection ended abnormally.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SshError {
    /// The SSH protocol failed: bad packets, failed key exchange, I/O on the
    /// underlying stream.
    #[error("ssh protocol: {0}")]
    Protocol(#[from] russh::Error),
    /// I/O on the underlying stream failed.
    #[error("ssh stream: {0}")]
    Io(#[from] std::io::Error),
}

/// The SSH server; cheap to clone, and all clones share config and counters.
#[derive(Clone)]
pub struct SshServer {
    inner: Arc<Inner>,
}

/// What every connection shares.
pub(crate) struct Inner {
    pub(crate) config: SshConfig,
    pub(crate) shell: PathBuf,
    pub(crate) russh: Arc<russh::server::Config>,
    pub(crate) host_key: HostKey,
    pub(crate) counters: Counters,
    pub(crate) shutdown: CancellationToken,
    /// The web terminal's shells (`rpty`).
    pub(crate) ptys: rpty::Registry,
}

impl std::fmt::Debug for SshServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshServer")
            .field("dir", &self.inner.config.dir)
            .field("shell", &self.inner.shell)
            .field("host_key", &self.inner.host_key.public_openssh())
            .finish_non_exhaustive()
    }
}

impl SshServer {
    /// Builds a server; generates an Ed25519 host key unless one is given.
    pub fn new(mut config: SshConfig) -> Self {
        let host_key = config.host_key.take().unwrap_or_else(HostKey::generate);
        let shell = config
            .shell
            .clone()
            .or_else(|| std::env::var_os("SHELL").map(PathBuf::from))
            .filter(|s| !s.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("/bin/sh"));
        let mut methods = russh::MethodSet::empty();
        methods.push(russh::MethodKind::None);
        methods.push(russh::MethodKind::PublicKey);
        let russh = russh::server::Config {
            server_id: russh::SshId::Standard(
                concat!("SSH-2.0-coder-agent_", env!("CARGO_PKG_VERSION")).into(),
            ),
            methods,
            // Every client is accepted, so rejections only come from clients
            // trying methods we do not offer; no need to slow them down.
            auth_rejection_time: Duration::ZERO,
            auth_rejection_time_initial: Some(Duration::ZERO),
            keys: vec![host_key.private().clone()],
            keepalive_interval: config.keepalive_interval,
            keepalive_max: config.keepalive_max,
            // Idle shells stay open for days; keepalives detect dead peers.
            inactivity_timeout: None,
            nodelay: true,
            ..Default::default()
        };
        Self {
            inner: Arc::new(Inner {
                config,
                shell,
                russh: Arc::new(russh),
                host_key,
                counters: Counters::default(),
                shutdown: CancellationToken::new(),
                ptys: rpty::Registry::default(),
            }),
        }
    }

    /// Attaches a mesh stream to reconnecting PTY `id` (the web terminal),
    /// starting a login shell in the agent's directory if it has none.
    pub async fn serve_pty<R, W>(&self, id: u128, rows: u16, cols: u16, recv: R, send: W)
    where
        R: tokio::io::AsyncRead + Unpin,
        W: tokio::io::AsyncWrite + Unpin,
    {
        let config = &self.inner.config;
        let spec = process::CommandSpec {
            shell: self.inner.shell.clone(),
            command: None,
            env: config.env.clone(),
            dir: config.dir.clone(),
        };
        let _active = self.inner.counters.session(SessionKind::Shell);
        self.inner.ptys.serve(&spec, id, rows, cols, recv, send).await;
    }

    /// Web terminal shells alive now.
    pub fn pty_count(&self) -> usize {
        self.inner.ptys.len()
    }

    /// The host key, so the agent can publish its public half.
    pub fn host_key(&self) -> &HostKey {
        &self.inner.host_key
    }

    /// A snapshot of the counters; cheap (a few atomic loads).
    pub fn stats(&self) -> SshStats {
        self.inner.counters.snapshot()
    }

    /// Ends every connection, current and future.
    pub fn shutdown(&self) {
        self.inner.shutdown.cancel();
    }

    /// Serves one SSH connection over `stream` until it ends; `peer` names the
    /// mesh peer in logs.
    ///
    /// Dropping the returned future ends the connection and everything it
    /// started.
    pub async fn serve_stream<S>(&self, stream: S, peer: String) -> Result<(), SshError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        self.serve_peer(stream, Peer::from(peer)).await
    }

    /// [`Self::serve_stream`] for a peer whose addresses are known, so that
    /// sessions get `SSH_CLIENT` and `SSH_CONNECTION`.
    pub async fn serve_peer<S>(&self, stream: S, peer: Peer) -> Result<(), SshError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let span = tracing::info_span!("ssh", peer = %peer.name);
        let cancel = self.inner.shutdown.child_token();
        let _cancel_on_drop = cancel.clone().drop_guard();
        let counted = stream::CountedStream::new(stream, &self.inner.counters, cancel);
        let _connection = self.inner.counters.connection();
        let handler = handler::ConnectionHandler::new(self.inner.clone(), peer);
        async {
            tracing::debug!("ssh connection started");
            let session =
                russh::server::run_stream(self.inner.russh.clone(), counted, handler).await?;
            let result = session.await;
            match &result {
                Ok(()) => tracing::debug!("ssh connection ended"),
                Err(e) => tracing::debug!(error = %e, "ssh connection failed"),
            }
            result
        }
        .instrument(span)
        .await
    }
}
