//! `coderd` as a mesh peer: the app proxy and the web terminal reach agents
//! the way `coder ssh` does, over an end-to-end encrypted QUIC connection
//! (direct when the network allows, else through the relay).
//!
//! ```text
//! request ──authorize (api)──▶ MeshPeer::open(agent, service)
//!                                 │ first use: join the mesh through this
//!                                 │ process's own coordinator endpoint
//!                                 │ (`/api/v2/coderd/coordinate`, per-process secret)
//!                                 ▼
//!                      cached MeshConnection per agent ──stream──▶ agent
//! ```
//!
//! The peer connects to the *local* listener, not the access URL, so behind a
//! load balancer each replica's peer authenticates against itself: the secret
//! never leaves the process and is compared in constant time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use codersdk::coordination::PeerKind;
use codersdk::meshnet::{MeshSession, SessionConfig, SessionError};
use codersdk::RelayMap;
use mesh::{MeshConnection, Service};
use tokio::sync::OnceCell;
use url::Url;
use uuid::Uuid;

/// How long to wait for an agent's node before giving up on a request.
const DIAL_TIMEOUT: Duration = Duration::from_secs(15);

/// Reaching an agent failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    #[error("cannot join the mesh: {0}")]
    Join(#[source] SessionError),
    #[error("cannot reach the agent over the mesh: {0}")]
    Dial(#[source] SessionError),
    #[error("the agent refused the stream: {0}")]
    Stream(#[from] mesh::StreamError),
    /// The connection reached another node than the agent's (never expected:
    /// `dial_agent` dials the node announced for the agent's id).
    #[error("the mesh connection reached node {0}, not the agent's")]
    WrongNode(mesh::NodeId),
}

/// This process's mesh peer. Cloning shares it.
#[derive(Clone)]
pub struct MeshPeer {
    inner: Arc<Inner>,
}

struct Inner {
    secret: String,
    session: OnceCell<MeshSession>,
    conns: Mutex<HashMap<Uuid, MeshConnection>>,
}

impl std::fmt::Debug for MeshPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshPeer").finish_non_exhaustive()
    }
}

impl Default for MeshPeer {
    fn default() -> Self {
        MeshPeer::new()
    }
}

impl MeshPeer {
    /// A peer with a fresh random secret; joins lazily on first use.
    pub fn new() -> Self {
        let secret = hex::encode(rand::random::<[u8; 32]>());
        MeshPeer {
            inner: Arc::new(Inner {
                secret,
                session: OnceCell::new(),
                conns: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Whether `presented` is this process's peer secret (constant time).
    pub fn is_secret(&self, presented: &str) -> bool {
        crate::secrets::constant_time_eq(presented.as_bytes(), self.inner.secret.as_bytes())
    }

    async fn session(&self, url: &Url, map: &RelayMap) -> Result<&MeshSession, PeerError> {
        self.inner
            .session
            .get_or_try_init(|| {
                MeshSession::join(
                    url,
                    &self.inner.secret,
                    PeerKind::Coderd,
                    map,
                    SessionConfig::default(),
                )
            })
            .await
            .map_err(PeerError::Join)
    }

    /// Opens a stream to `service` on `agent`, reusing the connection to it
    /// when one is up. `url` is this process's own listener.
    pub async fn open(
        &self,
        url: &Url,
        map: &RelayMap,
        agent: Uuid,
        service: Service,
    ) -> Result<(quinn::SendStream, quinn::RecvStream), PeerError> {
        let cached = self.cached(agent);
        if let Some(conn) = cached {
            match conn.open(service).await {
                Ok(s) => return Ok(s),
                Err(e) => {
                    tracing::debug!(%agent, error = %e, "cached mesh connection is gone; redialing");
                    self.forget(agent);
                }
            }
        }
        let session = self.session(url, map).await?;
        // The request was authorized for `agent`: dial the node announced for
        // that peer id, whatever other peers announce.
        let conn = session.dial_agent(agent, DIAL_TIMEOUT).await.map_err(PeerError::Dial)?;
        if conn.peer().id != codersdk::coordination::node_id(agent) {
            conn.quic().close(mesh::close::WRONG_PEER, b"wrong node");
            return Err(PeerError::WrongNode(conn.peer().id));
        }
        if let Ok(mut conns) = self.inner.conns.lock() {
            conns.insert(agent, conn.clone());
        }
        Ok(conn.open(service).await?)
    }

    fn cached(&self, agent: Uuid) -> Option<MeshConnection> {
        let conns = self.inner.conns.lock().ok()?;
        conns.get(&agent).filter(|c| c.quic().close_reason().is_none()).cloned()
    }

    fn forget(&self, agent: Uuid) {
        if let Ok(mut conns) = self.inner.conns.lock() {
            conns.remove(&agent);
        }
    }

    /// Whether the connection to `agent` currently goes direct, and its RTT.
    pub fn path(&self, agent: Uuid) -> Option<(bool, Duration)> {
        let conn = self.cached(agent)?;
        let session = self.inner.session.get()?;
        let direct = matches!(
            session.endpoint().destination(&conn.peer().key),
            Some(mesh::Destination::Direct(_))
        );
        Some((direct, conn.quic().rtt()))
    }
}
