//! Port and agent forwarding: byte splices between SSH channels and sockets
//! on the agent's side.
//!
//! - `direct-tcpip` (`ssh -L`): the client asks us to connect to host:port;
//!   [`direct_tcpip`] connects and then accepts the channel.
//! - `tcpip-forward` (`ssh -R`): [`RemoteForward`] listens here and opens a
//!   `forwarded-tcpip` channel back to the client for each connection.
//! - `auth-agent-req@openssh.com` (`ssh -A`): [`AgentSocket`] listens on a
//!   private unix socket (its path becomes `SSH_AUTH_SOCK`) and opens an
//!   `auth-agent@openssh.com` channel per connection.
//!
//! Each listener owns its connections' tasks; dropping it stops all of them.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use russh::server::{ChannelOpenHandle, Handle, Msg};
use russh::{Channel, ChannelOpenFailure};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::task::JoinSet;
use tokio_util::task::AbortOnDropHandle;

use super::stats::{Counters, SessionKind};

/// How long a `direct-tcpip` connect may take before the channel is refused.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Copies both ways until both directions reached EOF or one failed.
async fn splice<A, B>(mut a: A, mut b: B)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    if let Err(e) = tokio::io::copy_bidirectional_with_sizes(
        &mut a,
        &mut b,
        mesh::COPY_BUFFER,
        mesh::COPY_BUFFER,
    )
    .await
    {
        tracing::debug!(error = %e, "forwarded connection ended with an error");
    }
}

/// A listening socket, TCP or unix.
trait Accept: Send + 'static {
    type Conn: Send + 'static;
    fn accept_one(&self) -> impl Future<Output = std::io::Result<Self::Conn>> + Send;
}

impl Accept for TcpListener {
    type Conn = (TcpStream, SocketAddr);
    fn accept_one(&self) -> impl Future<Output = std::io::Result<Self::Conn>> + Send {
        self.accept()
    }
}

impl Accept for UnixListener {
    type Conn = UnixStream;
    async fn accept_one(&self) -> std::io::Result<Self::Conn> {
        Ok(self.accept().await?.0)
    }
}

/// Accepts until the listener fails, serving each connection in a task the
/// loop owns; dropping the handle closes the listener and ends them all.
fn spawn_accept_loop<L, F, Fut>(listener: L, serve: F) -> AbortOnDropHandle<()>
where
    L: Accept,
    F: Fn(L::Conn) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    AbortOnDropHandle::new(tokio::spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept_one() => match accepted {
                    Ok(conn) => {
                        while conns.try_join_next().is_some() {}
                        conns.spawn(serve(conn));
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "forward listener failed");
                        break;
                    }
                },
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
    }))
}

/// Serves a `direct-tcpip` channel: connects to `host:port` from the agent,
/// then accepts the channel and splices.
pub(crate) async fn direct_tcpip(
    channel: Channel<Msg>,
    reply: ChannelOpenHandle,
    host: String,
    port: u32,
    counters: Counters,
) {
    let Ok(port) = u16::try_from(port) else {
        reply.reject(ChannelOpenFailure::ConnectFailed).await;
        return;
    };
    let connected =
        tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host.as_str(), port)))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))
            .and_then(|r| r);
    match connected {
        Ok(tcp) => {
            let _ = tcp.set_nodelay(true);
            reply.accept().await;
            let _active = counters.session(SessionKind::LocalForward);
            splice(channel.into_stream(), tcp).await;
        }
        Err(e) => {
            tracing::debug!(%host, port, error = %e, "direct-tcpip connect failed");
            reply.reject(ChannelOpenFailure::ConnectFailed).await;
        }
    }
}

/// A listener for `ssh -R`; dropping it stops listening and ends its
/// connections.
#[derive(Debug)]
pub(crate) struct RemoteForward {
    _task: AbortOnDropHandle<()>,
}

impl RemoteForward {
    /// Listens on `address:port` (port 0 picks one) and returns the listener
    /// with the port actually bound.
    pub(crate) async fn bind(
        address: &str,
        port: u32,
        handle: Handle,
        counters: Counters,
    ) -> std::io::Result<(Self, u32)> {
        let port16 = u16::try_from(port)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "bad port"))?;
        // As sshd without GatewayPorts: "" and "localhost" mean loopback.
        let bind_host = match address {
            "" | "localhost" => "127.0.0.1",
            "*" => "0.0.0.0",
            other => other,
        };
        let listener = TcpListener::bind((bind_host, port16)).await?;
        let bound = u32::from(listener.local_addr()?.port());
        let address = address.to_string();
        let task = spawn_accept_loop(listener, move |(tcp, from)| {
            forwarded_tcpip(handle.clone(), counters.clone(), address.clone(), bound, tcp, from)
        });
        Ok((Self { _task: task }, bound))
    }
}

async fn forwarded_tcpip(
    handle: Handle,
    counters: Counters,
    address: String,
    port: u32,
    tcp: TcpStream,
    from: SocketAddr,
) {
    let _ = tcp.set_nodelay(true);
    let opened = handle
        .channel_open_forwarded_tcpip(address, port, from.ip().to_string(), u32::from(from.port()))
        .await;
    match opened {
        Ok(channel) => {
            let _active = counters.session(SessionKind::RemoteForward);
            splice(channel.into_stream(), tcp).await;
        }
        Err(e) => tracing::debug!(error = %e, "client refused forwarded-tcpip channel"),
    }
}

/// The `SSH_AUTH_SOCK` of a session with agent forwarding; dropping it stops
/// listening, ends its connections and removes the socket's directory.
#[derive(Debug)]
pub(crate) struct AgentSocket {
    path: PathBuf,
    _task: AbortOnDropHandle<()>,
    // Declared last so the socket is closed before its directory goes.
    _dir: tempfile::TempDir,
}

impl AgentSocket {
    /// Creates a private (0700) directory holding a listening socket.
    pub(crate) fn bind(handle: Handle, counters: Counters) -> std::io::Result<Self> {
        let dir = tempfile::Builder::new().prefix("coder-ssh-agent-").tempdir()?;
        let path = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&path)?;
        let task = spawn_accept_loop(listener, move |unix| {
            let (handle, counters) = (handle.clone(), counters.clone());
            async move {
                match handle.channel_open_agent().await {
                    Ok(channel) => {
                        let _active = counters.session(SessionKind::AgentForward);
                        splice(channel.into_stream(), unix).await;
                    }
                    Err(e) => tracing::debug!(error = %e, "client refused agent channel"),
                }
            }
        });
        Ok(Self { path, _task: task, _dir: dir })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}
