//! The relay server: accepts relay connections, forwards packets between
//! node keys, meshes with the other relays of its region.
//!
//! [`Server::spawn`] starts the shared state and the mesh links and returns
//! a cloneable handle. Connections arrive through
//! [`Server::handle_request`] (an HTTP request to embed in any router) or
//! through [`Server::serve`], a complete HTTP service for `derper`. Every
//! task is owned by the server: [`Server::shutdown`] tells clients the relay
//! is restarting and waits for them; dropping the last handle aborts them.
//!
//! Embedding in axum (the HTTP stack must serve with upgrades enabled, as
//! `axum::serve` does):
//!
//! ```ignore
//! let relay = derp::Server::spawn(derp::ServerConfig::default())?;
//! let app = axum::Router::new().route(
//!     "/derp",
//!     axum::routing::any(move |req: axum::extract::Request| {
//!         let relay = relay.clone();
//!         async move { relay.handle_request(req).await }
//!     }),
//! );
//! ```

mod client_conn;
mod http;
mod mesh;
mod queue;
mod ratelimit;
mod registry;
mod stats;
mod tls;
mod verify;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use mesh::MeshLinkStatus;
pub use registry::{PeerLocation, REPLACED_PROBLEM};
pub use stats::StatsSnapshot;
pub use tls::{tls_acceptor_from_pem_files, TlsConfigError};
pub use verify::{
    node_key_text, ClientVerifier, UrlVerifier, Verdict, VerifyClient, VerifyClientRequest,
    VerifyClientResponse, VerifyFuture,
};

use crate::client::RelayUrl;
use crate::key::{MeshKey, PublicKey, SecretKey};
pub(crate) use http::UPGRADE_DERP;
use registry::Registry;

/// A per-client limit on the bytes it may send through the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub bytes_per_second: u32,
    pub burst: u32,
}

/// How to run a relay. Start from `ServerConfig::default()`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// The relay's own key; generated when `None`.
    pub secret_key: Option<SecretKey>,
    /// The region's pre-shared mesh key; without it no mesh peer is accepted.
    pub mesh_key: Option<MeshKey>,
    /// Relay URLs (`http://host:port/derp`) of the other relays of the
    /// region. Listing this relay itself is harmless: it is skipped.
    pub mesh_with: Vec<String>,
    /// Packets queued per client before new ones are dropped.
    pub send_queue_len: usize,
    pub rate_limit: Option<RateLimit>,
    pub keepalive_interval: Duration,
    /// A connection silent for this long is closed.
    pub idle_timeout: Duration,
    /// A write blocked for this long closes the connection.
    pub write_timeout: Duration,
    pub handshake_timeout: Duration,
    /// Sent in the `Restarting` frame on shutdown.
    pub restart_reconnect_in: Duration,
    pub restart_try_for: Duration,
    /// How long [`Server::shutdown`] waits for connections to close.
    pub shutdown_grace: Duration,
    /// Asked about every client after it proved its key; `None` admits any
    /// key. Bounded by `handshake_timeout`.
    pub verify_clients: Option<ClientVerifier>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            secret_key: None,
            mesh_key: None,
            mesh_with: Vec::new(),
            send_queue_len: 512,
            rate_limit: None,
            keepalive_interval: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(150),
            write_timeout: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(10),
            restart_reconnect_in: Duration::from_secs(1),
            restart_try_for: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(5),
            verify_clients: None,
        }
    }
}

/// The relay could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    #[error("mesh peer URL {url:?} is invalid: {reason}")]
    InvalidMeshUrl { url: String, reason: String },
    #[error("mesh peers are configured but no mesh key is set")]
    MeshWithoutKey,
}

/// Parses mesh peer URLs, keeping each as written.
fn parse_mesh_urls(
    urls: &[String],
    have_key: bool,
) -> Result<Vec<(String, RelayUrl)>, ServerError> {
    let parsed = urls
        .iter()
        .map(|url| {
            let relay = url.parse::<RelayUrl>().map_err(|err| ServerError::InvalidMeshUrl {
                url: url.clone(),
                reason: err.to_string(),
            })?;
            Ok((url.clone(), relay))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if !parsed.is_empty() && !have_key {
        return Err(ServerError::MeshWithoutKey);
    }
    Ok(parsed)
}

/// State every connection and mesh task shares.
pub(crate) struct Shared {
    pub(crate) config: ServerConfig,
    pub(crate) secret_key: SecretKey,
    pub(crate) public_key: PublicKey,
    pub(crate) registry: Arc<Registry>,
    pub(crate) shutdown: CancellationToken,
    next_conn_id: AtomicU64,
}

impl Shared {
    pub(crate) fn next_conn_id(&self) -> u64 {
        self.next_conn_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// A running relay. Cheap to clone; all clones drive the same relay.
#[derive(Clone)]
pub struct Server {
    inner: Arc<ServerInner>,
}

struct ServerInner {
    shared: Arc<Shared>,
    /// Connection and mesh tasks; dropped (so aborted) with the last handle.
    tasks: Mutex<JoinSet<()>>,
    /// The outgoing mesh links. Lock order: `mesh_links`, then `tasks`.
    mesh_links: Mutex<mesh::MeshLinks>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("public_key", &self.public_key()).finish()
    }
}

impl Server {
    /// Starts a relay (and its mesh links). Call inside a tokio runtime.
    pub fn spawn(config: ServerConfig) -> Result<Self, ServerError> {
        let mesh_urls = parse_mesh_urls(&config.mesh_with, config.mesh_key.is_some())?;
        let secret_key = config.secret_key.clone().unwrap_or_else(SecretKey::generate);
        let shared = Arc::new(Shared {
            public_key: secret_key.public(),
            secret_key,
            config,
            registry: Registry::new(),
            shutdown: CancellationToken::new(),
            next_conn_id: AtomicU64::new(1),
        });
        let server = Self {
            inner: Arc::new(ServerInner {
                shared,
                tasks: Mutex::new(JoinSet::new()),
                mesh_links: Mutex::default(),
            }),
        };
        server.replace_mesh_links(mesh_urls);
        Ok(server)
    }

    /// Meshes with exactly these relays from now on (the region's other
    /// relays; listing this relay itself is harmless): links to new URLs
    /// start, links to URLs no longer listed stop and forget their routes,
    /// the others carry on. Needs the mesh key the relay started with.
    pub fn set_mesh_peers(&self, urls: &[String]) -> Result<(), ServerError> {
        let parsed = parse_mesh_urls(urls, self.shared().config.mesh_key.is_some())?;
        self.replace_mesh_links(parsed);
        Ok(())
    }

    fn replace_mesh_links(&self, urls: Vec<(String, RelayUrl)>) {
        let mut links = self.inner.mesh_links.lock().unwrap_or_else(|p| p.into_inner());
        for link in links.set(urls, &self.shared().shutdown) {
            self.spawn_task(mesh::run_link(self.shared().clone(), link));
        }
    }

    /// The outgoing mesh links and whether each is up, by URL.
    pub fn mesh_links(&self) -> Vec<MeshLinkStatus> {
        self.inner.mesh_links.lock().unwrap_or_else(|p| p.into_inner()).status()
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }

    /// Runs `task` owned by this relay, reaping tasks that have finished.
    fn spawn_task(&self, task: impl Future<Output = ()> + Send + 'static) {
        let mut tasks = self.inner.tasks.lock().unwrap_or_else(|p| p.into_inner());
        while tasks.try_join_next().is_some() {}
        tasks.spawn(task);
    }

    /// The relay's public key, as listed in the relay map.
    pub fn public_key(&self) -> PublicKey {
        self.shared().public_key
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.shared().registry.snapshot()
    }

    /// Whether `key` is reachable from here, and how.
    pub fn peer_location(&self, key: &PublicKey) -> Option<PeerLocation> {
        self.shared().registry.location(key)
    }

    /// Changes whenever a client or mesh route comes or goes: wait on it
    /// (then re-check [`Server::peer_location`]) instead of polling.
    pub fn membership_changes(&self) -> watch::Receiver<u64> {
        self.shared().registry.subscribe()
    }

    /// Whether [`Server::shutdown`] has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.shared().shutdown.is_cancelled()
    }

    /// Sends `Restarting` to every client, waits up to the configured grace
    /// for the connections to close, then aborts whatever is left.
    pub async fn shutdown(&self) {
        self.shared().shutdown.cancel();
        let mut tasks = {
            let mut guard = self.inner.tasks.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::take(&mut *guard)
        };
        let drain = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(self.shared().config.shutdown_grace, drain).await.is_err() {
            tasks.abort_all();
        }
    }
}
