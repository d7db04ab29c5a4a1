//! The relay embedded in `coderd` (served at `/derp`), its STUN listener,
//! and the relay map the coordinator hands to peers: the embedded region
//! plus any regions of self-hosted `derper`s from `--derp-config-path`.
//!
//! The embedded relay admits only node keys of connected coordination peers
//! ([`PeerKeys`]); `derper --verify-clients` asks the same question over
//! `POST /api/v2/derp/verify-client`, authenticated with a
//! [`RelayVerifyKey`] (`docs/protocols/relay.md`, "Client verification").

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use codersdk::{RelayMap, RelayNode, RelayRegion};
use derp::server::{ClientVerifier, Verdict, VerifyClient, VerifyFuture};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use subtle::ConstantTimeEq;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::Semaphore;
use url::Url;

use crate::pubsub::Pubsub;

/// The embedded relay's region.
pub const EMBEDDED_REGION_ID: u16 = 999;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    #[error("start the embedded relay: {0}")]
    Server(#[from] derp::server::ServerError),
    #[error("listen for STUN on {addr}: {source}")]
    Stun {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("read --derp-config-path {path}: {source}")]
    ConfigRead {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("--derp-config-path {path} is not a relay map: {source}")]
    ConfigParse {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("--derp-config-path {path}: region {region} is also the embedded relay's region")]
    RegionClash { path: String, region: u16 },
}

/// The embedded relay and STUN server; both stop when this is dropped.
pub struct EmbeddedRelay {
    pub server: derp::Server,
    pub stun: Option<derp::stun::StunServer>,
}

impl EmbeddedRelay {
    /// Starts the relay, admitting the clients `verifier` allows (all
    /// without one), and the STUN listener on `stun_address`.
    pub async fn spawn(
        stun_address: Option<SocketAddr>,
        verifier: Option<ClientVerifier>,
    ) -> Result<EmbeddedRelay, RelayError> {
        Self::spawn_meshed(stun_address, verifier, None).await
    }

    /// As [`EmbeddedRelay::spawn`], accepting mesh links from the other
    /// replicas' relays that present `mesh_key` (and able to dial them:
    /// `crate::replicas::RelayMesh`).
    pub async fn spawn_meshed(
        stun_address: Option<SocketAddr>,
        verifier: Option<ClientVerifier>,
        mesh_key: Option<derp::MeshKey>,
    ) -> Result<EmbeddedRelay, RelayError> {
        let mut config = derp::ServerConfig::default();
        config.verify_clients = verifier;
        config.mesh_key = mesh_key;
        let server = derp::Server::spawn(config)?;
        let stun = match stun_address {
            Some(addr) => Some(
                derp::stun::StunServer::spawn(addr)
                    .await
                    .map_err(|source| RelayError::Stun { addr, source })?,
            ),
            None => None,
        };
        Ok(EmbeddedRelay { server, stun })
    }

    pub fn stun_addr(&self) -> Option<SocketAddr> {
        self.stun.as_ref().map(|s| s.local_addr())
    }
}

/// Builds the relay map: the embedded region (if any) reached through the
/// access URL, plus extra regions from a JSON file in the same format as
/// `GET /api/v2/derp-map`.
pub fn relay_map(
    access_url: &Url,
    embedded: Option<&EmbeddedRelay>,
    extra: Option<&Path>,
) -> Result<RelayMap, RelayError> {
    let mut map = RelayMap::default();
    if let Some(relay) = embedded {
        let mut url = access_url.clone();
        url.set_path("/derp");
        let stun = relay.stun_addr().map(|addr| {
            let host = access_url.host_str().unwrap_or("127.0.0.1");
            if host.contains(':') {
                format!("[{host}]:{}", addr.port())
            } else {
                format!("{host}:{}", addr.port())
            }
        });
        map.regions.insert(
            EMBEDDED_REGION_ID,
            RelayRegion {
                region_id: EMBEDDED_REGION_ID,
                region_code: "coder".into(),
                region_name: "Embedded relay".into(),
                nodes: vec![RelayNode { name: "embedded".into(), url: url.to_string(), stun }],
            },
        );
    }
    if let Some(path) = extra {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|source| RelayError::ConfigRead { path: p.clone(), source })?;
        let more: RelayMap = serde_json::from_str(&text)
            .map_err(|source| RelayError::ConfigParse { path: p.clone(), source })?;
        for (id, mut region) in more.regions {
            if embedded.is_some() && id == EMBEDDED_REGION_ID {
                return Err(RelayError::RegionClash { path: p, region: id });
            }
            region.region_id = id;
            map.regions.insert(id, region);
        }
    }
    Ok(map)
}

/// How long a relay client's key may take to show up in the coordination
/// state: a peer announces its node just before it dials the relay, and the
/// row is written behind the fan-out.
const KEY_WAIT: Duration = Duration::from_secs(5);

/// Verifications waiting for a key at once, process-wide; past this, an
/// unknown key is refused at once rather than waited for.
static KEY_WAITERS: Semaphore = Semaphore::const_new(1024);

/// Answers "may this node key use our relays?": only if a peer connected
/// to a replica of this deployment (agent, client, or a coderd's own mesh
/// peer) announced it. Reads the shared `peers` table, so a key homed on
/// this relay but coordinated by another replica is known too; a peer that
/// disconnects loses its row, and with it new relay connections.
#[derive(Debug, Clone)]
pub struct PeerKeys {
    db: PgPool,
    pubsub: Pubsub,
}

impl PeerKeys {
    pub fn new(db: PgPool, pubsub: Pubsub) -> Self {
        PeerKeys { db, pubsub }
    }

    /// This as the embedded relay's verifier.
    pub fn verifier(db: PgPool, pubsub: Pubsub) -> ClientVerifier {
        ClientVerifier::new(PeerKeys::new(db, pubsub))
    }

    /// Whether a connected peer announced `key`, waiting up to [`KEY_WAIT`]
    /// for an announcement in flight.
    pub async fn is_known(&self, key: &mesh::NodeKey) -> Result<bool, sqlx::Error> {
        use crate::coordination::{node_key_is_known, peer_changes};
        if node_key_is_known(&self.db, key).await? {
            return Ok(true);
        }
        let Ok(_permit) = KEY_WAITERS.try_acquire() else { return Ok(false) };
        let deadline = tokio::time::Instant::now() + KEY_WAIT;
        let mut changes = peer_changes(&self.pubsub).await;
        loop {
            // Checked after subscribing: a row written in between is seen.
            if node_key_is_known(&self.db, key).await? {
                return Ok(true);
            }
            match tokio::time::timeout_at(deadline, changes.recv()).await {
                Err(_) | Ok(Err(RecvError::Closed)) => return Ok(false),
                Ok(Ok(_) | Err(RecvError::Lagged(_))) => {}
            }
            // One query for a burst of changes.
            while !matches!(changes.try_recv(), Err(TryRecvError::Empty | TryRecvError::Closed)) {}
        }
    }
}

impl VerifyClient for PeerKeys {
    fn verify(&self, key: derp::PublicKey) -> VerifyFuture<'_> {
        Box::pin(async move {
            match self.is_known(&mesh::NodeKey::from(key)).await {
                Ok(true) => Verdict::Allow,
                Ok(false) => Verdict::deny(
                    "no peer connected to the coordinator announced this node key (join through coderd first)",
                ),
                Err(err) => {
                    tracing::warn!(%err, "relay: cannot check a client's node key");
                    Verdict::deny("the relay cannot verify clients right now; retry shortly")
                }
            }
        })
    }
}

/// The secret `derper --verify-clients` presents to
/// `POST /api/v2/derp/verify-client` (`--derp-verify-clients-psk-file` on
/// coderd, `--verify-clients-psk-file` on derper). Without one configured,
/// the route answers 404: it is no oracle for anyone else.
#[derive(Clone)]
pub struct RelayVerifyKey(Arc<str>);

impl std::fmt::Debug for RelayVerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RelayVerifyKey(..)")
    }
}

/// A [`RelayVerifyKey`] could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyKeyError {
    #[error("the relay verification secret must be at least 16 characters (got {0})")]
    TooShort(usize),
    #[error("read {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl RelayVerifyKey {
    /// A key from its text; surrounding whitespace (a trailing newline) is ignored.
    pub fn new(key: &str) -> Result<Self, VerifyKeyError> {
        let key = key.trim();
        let len = key.chars().count();
        if len < 16 {
            return Err(VerifyKeyError::TooShort(len));
        }
        Ok(RelayVerifyKey(Arc::from(key)))
    }

    pub fn from_file(path: &Path) -> Result<Self, VerifyKeyError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| VerifyKeyError::Read { path: path.to_owned(), source })?;
        Self::new(&text)
    }

    /// Compares in constant time (over digests, so not even the length leaks).
    pub fn matches(&self, presented: &[u8]) -> bool {
        let ours = Sha256::digest(self.0.as_bytes());
        let theirs = Sha256::digest(presented);
        ours.ct_eq(&theirs).into()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn extra_regions_join_the_map() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("derp.json");
        std::fs::write(
            &path,
            r#"{"regions":{"7":{"region_id":7,"region_code":"fra","region_name":"Frankfurt",
                "nodes":[{"name":"fra1","url":"https://fra1.example.com/derp","stun":"fra1.example.com:3478"}]}}}"#,
        )
        .unwrap();
        let url = Url::parse("https://coder.example.com").unwrap();
        let map = relay_map(&url, None, Some(&path)).unwrap();
        assert_eq!(map.regions[&7].nodes[0].name, "fra1");
        std::fs::write(&path, "{not json").unwrap();
        assert!(matches!(relay_map(&url, None, Some(&path)), Err(RelayError::ConfigParse { .. })));
    }
}
