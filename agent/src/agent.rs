//! The agent's main loop: fetch the manifest, join the mesh as this agent,
//! accept mesh connections and dispatch each stream by its service header
//! (SSH and the web terminal to [`crate::ssh`], the others to
//! [`crate::services`]), serve IP packets at the agent's mesh address
//! ([`crate::ip`]), run the scripts ([`crate::scripts`]), and report
//! liveness until told to stop. A stop or delete build asks the agent to run
//! its stop scripts first (a long poll); SIGTERM runs them too if that did
//! not happen, within [`AgentConfig::shutdown_timeout`].
//!
//! The coordinator may come and go: the mesh session reconnects on its own
//! and established mesh connections (and SSH sessions on them) keep running.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use codersdk::coordination::{ConnectError, PeerKind};
use codersdk::meshnet::{MeshSession, SessionConfig, SessionError};
use codersdk::{AgentManifest, AgentStats, Client, LifecycleState};
use mesh::{MeshConnection, Service};
use tokio::task::JoinSet;
use url::Url;

use crate::environ::{Account, Inherited, WorkspaceVars};
use crate::scripts::Scripts;
use crate::services;
use crate::ssh::{Peer, SshConfig, SshServer};
use crate::startup;

/// What the agent needs to start.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AgentConfig {
    pub url: Url,
    pub token: String,
    /// Use the relay only (no direct UDP paths).
    pub relay_only: bool,
    /// How often liveness and stats are reported.
    pub stats_interval: Duration,
    /// The environment the agent was started with, minus its secrets: the
    /// source of what workspace processes inherit ([`crate::environ`]).
    pub inherited: Inherited,
    /// Longest the agent takes to stop once told to, whatever the network
    /// does: lifecycle reports that have not gone through by then are dropped.
    pub shutdown_timeout: Duration,
}

impl AgentConfig {
    pub fn new(url: Url, token: impl Into<String>) -> Self {
        AgentConfig {
            url,
            token: token.into(),
            relay_only: false,
            stats_interval: Duration::from_secs(10),
            inherited: Inherited::read(),
            shutdown_timeout: Duration::from_secs(8),
        }
    }
}

/// Longest one manifest request may go unanswered before it is sent again.
const MANIFEST_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    #[error("the coordinator refused the agent token ({0}); the workspace was probably stopped or rebuilt")]
    Unauthorized(String),
}

/// Fetches the manifest, retrying while the coordinator is unreachable or
/// does not know the token yet: the agent may start while the build that
/// created it is still running, before its token is recorded.
async fn fetch_manifest(client: &Client) -> Result<AgentManifest, AgentError> {
    let mut delay = Duration::from_millis(200);
    loop {
        let Ok(answer) =
            tokio::time::timeout(MANIFEST_ATTEMPT_TIMEOUT, client.agent_manifest()).await
        else {
            tracing::warn!("the manifest request went unanswered; retrying");
            continue;
        };
        match answer {
            Ok(m) => return Ok(m),
            Err(e) if e.status() == Some(reqwest::StatusCode::UNAUTHORIZED) => {
                tracing::info!("the coordinator does not know this agent yet; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) if e.status().is_some_and(|s| s.is_client_error()) => {
                return Err(AgentError::Unauthorized(e.to_string()))
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot fetch the manifest; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
}

async fn join_mesh(
    config: &AgentConfig,
    manifest: &AgentManifest,
) -> Result<MeshSession, AgentError> {
    let mut delay = Duration::from_millis(200);
    loop {
        let mut sc = SessionConfig::default();
        sc.relay_only = config.relay_only;
        match MeshSession::join(
            &config.url,
            &config.token,
            PeerKind::Agent,
            &manifest.relay_map,
            sc,
        )
        .await
        {
            Ok(s) => return Ok(s),
            Err(e) if refused_token(&e) => return Err(AgentError::Unauthorized(e.to_string())),
            Err(e) => {
                tracing::warn!(error = %e, "cannot join the mesh; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// Whether the coordinator turned the agent token away (HTTP 401), which
/// retrying cannot change; other refusals and network errors are retried.
fn refused_token(e: &SessionError) -> bool {
    matches!(
        e,
        SessionError::Coordinator(ConnectError::Refused { status, .. })
            if *status == reqwest::StatusCode::UNAUTHORIZED.as_u16()
    )
}

/// Runs the agent until `shutdown` resolves; then stops within
/// [`AgentConfig::shutdown_timeout`].
pub async fn run(
    config: AgentConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), AgentError> {
    tokio::pin!(shutdown);
    let client = Client::new(config.url.clone()).with_token(config.token.clone());
    let manifest = tokio::select! {
        biased;
        () = &mut shutdown => {
            tracing::info!("shutting down before the manifest arrived");
            return Ok(());
        }
        m = fetch_manifest(&client) => m?,
    };
    tracing::info!(agent = %manifest.agent_id, workspace = %manifest.workspace_name, "manifest fetched");
    let account = Account::current(&config.inherited);
    let dir = if manifest.directory.is_empty() {
        account.home.clone()
    } else {
        PathBuf::from(&manifest.directory)
    };
    let workspace = WorkspaceVars::from_manifest(&manifest, &config.url);
    let env = crate::environ::base(&config.inherited, &account, Some(&workspace));
    let mut ssh_config = SshConfig::new(dir.clone());
    ssh_config.env = env.clone();
    ssh_config.shell = Some(account.shell.clone());
    let ssh = SshServer::new(ssh_config);

    let session = tokio::select! {
        biased;
        () = &mut shutdown => {
            tracing::info!("shutting down before joining the mesh");
            return Ok(());
        }
        s = join_mesh(&config, &manifest) => Arc::new(s?),
    };
    tracing::info!(node = ?session.endpoint().node().id, "joined the mesh");
    let mut tasks = JoinSet::new();
    let forwards = services::tunnel::OpenForwards::default();
    tasks.spawn(accept_loop(session.clone(), ssh.clone(), forwards.clone()));
    let ip_stack = match crate::ip::start(session.endpoint()) {
        Ok((stack, incoming)) => {
            tasks.spawn(crate::ip::serve(incoming));
            Some(stack)
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot serve the mesh address");
            None
        }
    };
    tasks.spawn(report_stats(client.clone(), ssh.clone(), forwards, config.stats_interval));
    let metadata =
        crate::metadata::spawn(client.clone(), manifest.metadata.clone(), dir.clone(), env.clone());
    let app_health = crate::apphealth::spawn(client.clone(), &manifest.apps);
    let scripts = Scripts {
        client: client.clone(),
        scripts: crate::scripts::from_manifest(&manifest),
        dir,
        env,
    };
    // The start phase and the cron scripts stop when shutdown begins.
    let mut running = JoinSet::new();
    let starting = scripts.clone();
    running.spawn(async move {
        let state = starting.start().await;
        tracing::info!(state = state.as_str(), "start scripts finished");
    });
    scripts.spawn_cron(&mut running);

    // A stop or delete build asks first (graceful: the stop scripts run
    // with their own timeouts, and the agent serves on until it is killed);
    // SIGTERM may come without that, or after it.
    let mut stopped = false;
    tokio::select! {
        biased;
        () = &mut shutdown => {}
        () = graceful_shutdown_requested(&client) => {
            tracing::info!("coderd asked for a graceful shutdown");
            running.shutdown().await;
            stopped = true;
            tokio::select! {
                state = scripts.stop(None) => {
                    tracing::info!(state = state.as_str(), "stop scripts finished");
                    shutdown.await;
                }
                // SIGTERM while the stop scripts run: they are killed (the
                // dropped runs kill their process groups), and the lifecycle
                // says they did not finish.
                () = &mut shutdown => {
                    let deadline = tokio::time::Instant::now() + config.shutdown_timeout / 2;
                    let state = LifecycleState::ShutdownTimeout;
                    startup::report_lifecycle_by(&client, state, None, deadline).await;
                }
            }
        }
    }
    tracing::info!("shutting down");
    // Every step has a deadline: a coordinator that is gone, or a network
    // that swallows packets, must not keep the agent (and the build that
    // stops the workspace) waiting.
    let deadline = tokio::time::Instant::now() + config.shutdown_timeout;
    running.shutdown().await;
    if !stopped {
        // Reports shutting_down, runs the stop scripts and reports how they
        // ended, all by the deadline.
        let state = scripts.stop(Some(deadline)).await;
        tracing::info!(state = state.as_str(), "stop scripts finished");
    }
    ssh.shutdown();
    tasks.shutdown().await;
    drop((metadata, app_health, ip_stack));
    if tokio::time::timeout_at(deadline, session.endpoint().close()).await.is_err() {
        tracing::debug!("mesh connections did not close in time");
    }
    Ok(())
}

/// Resolves when coderd asks the agent to shut down (a stop or delete build
/// began), by long poll; never, if this coderd does not know the route.
async fn graceful_shutdown_requested(client: &Client) {
    let mut delay = Duration::from_secs(1);
    loop {
        match tokio::time::timeout(Duration::from_secs(60), client.agent_graceful_shutdown()).await
        {
            Ok(Ok(answer)) if answer.shutdown_requested => return,
            Ok(Ok(_)) => {
                delay = Duration::from_secs(1);
                continue;
            }
            Ok(Err(e)) if e.status() == Some(reqwest::StatusCode::NOT_FOUND) => {
                tracing::debug!("coderd has no graceful shutdown; relying on SIGTERM");
                std::future::pending::<()>().await;
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "graceful shutdown poll failed"),
            Err(_) => tracing::debug!("graceful shutdown poll unanswered"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

async fn accept_loop(
    session: Arc<MeshSession>,
    ssh: SshServer,
    forwards: services::tunnel::OpenForwards,
) {
    let local = session.endpoint().node().addresses;
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            c = session.endpoint().accept_incoming() => match c {
                // Each handshake in its own task: one peer that stalls or fails
                // its handshake holds up nobody else.
                Ok(incoming) => {
                    let ssh = ssh.clone();
                    let forwards = forwards.clone();
                    conns.spawn(async move {
                        match incoming.finish().await {
                            Ok(conn) => {
                                tracing::debug!(peer = %conn.peer().key, "mesh connection");
                                serve_connection(conn, local, ssh, forwards).await;
                            }
                            Err(e) => tracing::info!(error = %e, "mesh handshake failed"),
                        }
                    });
                }
                Err(e) => {
                    tracing::debug!(error = %e, "mesh endpoint closed; no more connections");
                    return;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// The SSH service's port in `SSH_CONNECTION`; mesh streams have none, but
/// scripts that parse it expect one.
const SSH_PORT: u16 = 22;

/// The peer's and our mesh addresses, as `SSH_CONNECTION` shows them: IPv4
/// when both have one, else IPv6; the client's port is 0 (a QUIC stream has none).
fn ssh_addrs(peer: mesh::MeshAddresses, local: mesh::MeshAddresses) -> (SocketAddr, SocketAddr) {
    match (peer.ipv4, local.ipv4) {
        (Some(p), Some(l)) => (SocketAddr::from((p, 0)), SocketAddr::from((l, SSH_PORT))),
        _ => (SocketAddr::from((peer.ipv6, 0)), SocketAddr::from((local.ipv6, SSH_PORT))),
    }
}

/// Serves every stream a peer opens on one mesh connection.
async fn serve_connection(
    conn: MeshConnection,
    local: mesh::MeshAddresses,
    ssh: SshServer,
    forwards: services::tunnel::OpenForwards,
) {
    let peer = Peer {
        name: conn.peer().key.to_string(),
        addrs: Some(ssh_addrs(conn.peer().addresses, local)),
    };
    let mut streams = JoinSet::new();
    loop {
        tokio::select! {
            s = conn.accept() => match s {
                Ok((service, send, recv)) => {
                    let ssh = ssh.clone();
                    let peer = peer.clone();
                    let forwards = forwards.clone();
                    streams.spawn(async move {
                        match service {
                            Service::Ssh => {
                                let stream = tokio::io::join(recv, send);
                                if let Err(e) = ssh.serve_peer(stream, peer).await {
                                    tracing::debug!(error = %e, "ssh connection ended");
                                }
                            }
                            Service::Tcp(port) => {
                                let _open = forwards.open();
                                services::tunnel::tcp(port, send, recv).await
                            }
                            Service::Udp(port) => {
                                let _open = forwards.open();
                                services::tunnel::udp(port, send, recv).await
                            }
                            Service::Speedtest => services::speedtest::serve(send, recv).await,
                            Service::ListeningPorts => services::listening_ports::serve(send).await,
                            Service::Pty { id, rows, cols } => ssh.serve_pty(id, rows, cols, recv, send).await,
                            other => {
                                tracing::debug!(service = %other, "unsupported service");
                                let mut send = send;
                                let _ = send.reset(mesh::reset::UNSUPPORTED);
                            }
                        }
                    });
                }
                Err(e) => {
                    tracing::debug!(error = %e, peer = %peer.name, "mesh connection closed");
                    return;
                }
            },
            Some(_) = streams.join_next(), if !streams.is_empty() => {}
        }
    }
}

async fn report_stats(
    client: Client,
    ssh: SshServer,
    forwards: services::tunnel::OpenForwards,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let s = ssh.stats();
        let mut stats =
            AgentStats { version: env!("CARGO_PKG_VERSION").to_owned(), ..Default::default() };
        stats.rx_bytes = s.bytes_in;
        stats.tx_bytes = s.bytes_out;
        stats.session_count = s.connections_active;
        stats.session_count_port_forward = forwards.count();
        // The web terminal's sessions are PTY shells (`ssh_shell` below).
        let a = &s.sessions_active;
        for (kind, n) in [
            ("ssh_exec", a.exec),
            ("ssh_shell", a.shell),
            ("sftp", a.sftp),
            ("local_forward", a.local_forward),
            ("remote_forward", a.remote_forward),
        ] {
            stats.connections_by_kind.insert(kind.to_owned(), n);
        }
        if let Err(e) = client.post_agent_stats(&stats).await {
            tracing::debug!(error = %e, "stats report failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(status: u16) -> SessionError {
        SessionError::Coordinator(ConnectError::Refused { status, body: "HTTP 401".into() })
    }

    #[test]
    fn only_a_401_refusal_is_a_refused_token() {
        assert!(refused_token(&refused(401)));
        // The body's wording does not matter, only the status.
        assert!(!refused_token(&refused(403)));
        assert!(!refused_token(&refused(502)));
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "HTTP 401");
        assert!(!refused_token(&SessionError::Coordinator(ConnectError::Io(io))));
        assert!(!refused_token(&SessionError::NoHello));
    }
}
