//! The relay embedded in `coderd` (served at `/derp`), its STUN listener,
//! and the relay map the coordinator hands to peers: the embedded region
//! plus any regions of self-hosted `derper`s from `--derp-config-path`.
//!
//! With several replicas the embedded region lists one node per live
//! replica's relay (`--derp-server-relay-url`, from the registry), the
//! answering replica's own first, then the access URL as a last resort
//! ([`RelayMaps`], [`embedded_nodes`]). The relays mesh, so any node reaches
//! every peer; a peer dials the nodes in order and moves on when one fails.
//! Peers get the map in the coordination `hello` of every (re)connection, so
//! the replica they coordinate through is the relay they prefer.
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
use tokio::sync::{watch, Semaphore};
use url::Url;
use uuid::Uuid;

use crate::pubsub::Pubsub;
use crate::replicas::ReplicaRow;

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

/// The relay map this replica hands out (`GET /api/v2/derp-map`, the agent
/// manifest, the coordination `hello`): fixed, or following the replica
/// registry's live set ([`RelayMaps::per_replica`]).
#[derive(Debug, Clone, Default)]
pub struct RelayMaps {
    base: Arc<RelayMap>,
    replicas: Option<ReplicaNodes>,
}

#[derive(Debug, Clone)]
struct ReplicaNodes {
    this: Uuid,
    live: watch::Receiver<Vec<ReplicaRow>>,
    /// Whether loopback relay URLs may be listed: only when the access
    /// URL is one too (a remote peer would dial itself).
    loopback: bool,
}

impl From<RelayMap> for RelayMaps {
    fn from(map: RelayMap) -> Self {
        RelayMaps { base: Arc::new(map), replicas: None }
    }
}

impl RelayMaps {
    /// `base` (from [`relay_map`]) with the embedded region's nodes taken
    /// from the live replicas as replica `this` sees them ([`embedded_nodes`]).
    pub fn per_replica(
        base: RelayMap,
        this: Uuid,
        live: watch::Receiver<Vec<ReplicaRow>>,
        access_url: &Url,
    ) -> Self {
        let loopback = is_loopback(access_url);
        RelayMaps { base: Arc::new(base), replicas: Some(ReplicaNodes { this, live, loopback }) }
    }

    /// The map now.
    pub fn current(&self) -> RelayMap {
        let mut map = self.base.as_ref().clone();
        let (Some(r), Some(region)) = (&self.replicas, map.regions.get_mut(&EMBEDDED_REGION_ID))
        else {
            return map;
        };
        if let Some(last_resort) = region.nodes.last().cloned() {
            region.nodes = embedded_nodes(&r.live.borrow(), r.this, last_resort, r.loopback);
        }
        map
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    }
}

/// The embedded region's nodes as replica `this` lists them: its own relay
/// first (the replica a peer coordinates through is the one it prefers),
/// the other live replicas' relays (by URL), and `last_resort` (the access
/// URL, which every peer reaches) last. With fewer than two replica relays
/// to list, only `last_resort`: a lone replica gains nothing from a second
/// address, which may be one only the replicas reach.
pub fn embedded_nodes(
    live: &[ReplicaRow],
    this: Uuid,
    last_resort: RelayNode,
    loopback: bool,
) -> Vec<RelayNode> {
    let mut replicas: Vec<&ReplicaRow> = live
        .iter()
        .filter(|r| r.region_id == i32::from(EMBEDDED_REGION_ID))
        .filter(|r| match Url::parse(&r.relay_url) {
            Ok(url) => loopback || !is_loopback(&url),
            Err(_) => false,
        })
        .collect();
    replicas.sort_by(|a, b| (a.id != this, &a.relay_url).cmp(&(b.id != this, &b.relay_url)));
    let mut nodes: Vec<RelayNode> = Vec::new();
    for r in replicas {
        if nodes.iter().all(|n| n.url != r.relay_url) {
            let id = r.id.simple().to_string();
            let name = format!("replica-{}", id.get(..8).unwrap_or(&id));
            nodes.push(RelayNode { name, url: r.relay_url.clone(), stun: None });
        }
    }
    if nodes.len() < 2 {
        return vec![last_resort];
    }
    nodes.retain(|n| n.url != last_resort.url);
    nodes.push(last_resort);
    nodes
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

    fn replica(id: u128, url: &str) -> ReplicaRow {
        let now = chrono::Utc::now();
        ReplicaRow {
            id: Uuid::from_u128(id),
            hostname: "h".into(),
            relay_url: url.into(),
            region_id: i32::from(EMBEDDED_REGION_ID),
            version: "0".into(),
            started_at: now,
            heartbeat_at: now,
        }
    }

    fn access() -> RelayNode {
        RelayNode {
            name: "embedded".into(),
            url: "https://coder.example.com/derp".into(),
            stun: Some("coder.example.com:3478".into()),
        }
    }

    fn urls(nodes: &[RelayNode]) -> Vec<&str> {
        nodes.iter().map(|n| n.url.as_str()).collect()
    }

    #[test]
    fn the_answering_replica_comes_first_and_the_access_url_last() {
        let live = [
            replica(3, "http://10.0.0.3:3000/derp"),
            replica(1, "http://10.0.0.9:3000/derp"),
            replica(2, "http://10.0.0.2:3000/derp"),
            replica(4, ""),
        ];
        let nodes = embedded_nodes(&live, Uuid::from_u128(1), access(), false);
        assert_eq!(
            urls(&nodes),
            [
                "http://10.0.0.9:3000/derp",
                "http://10.0.0.2:3000/derp",
                "http://10.0.0.3:3000/derp",
                "https://coder.example.com/derp"
            ]
        );
        assert_eq!(nodes[0].name, "replica-00000000");
        assert_eq!(nodes[3], access(), "the last resort keeps its STUN server");
        let nodes = embedded_nodes(&live, Uuid::from_u128(3), access(), false);
        assert_eq!(nodes[0].url, "http://10.0.0.3:3000/derp");
        // A replica the registry does not list (yet) still lists the others.
        let nodes = embedded_nodes(&live, Uuid::from_u128(7), access(), false);
        assert_eq!(nodes.len(), 4);
    }

    #[test]
    fn a_lone_replica_and_loopback_relays_are_not_listed() {
        let one = [replica(1, "http://10.0.0.1:3000/derp")];
        assert_eq!(embedded_nodes(&one, Uuid::from_u128(1), access(), false), [access()]);
        // Loopback relay URLs reach a remote peer's own machine: not listed
        // unless the access URL is loopback too.
        let local =
            [replica(1, "http://127.0.0.1:3000/derp"), replica(2, "http://127.0.0.1:3001/derp")];
        assert_eq!(embedded_nodes(&local, Uuid::from_u128(2), access(), false), [access()]);
        let nodes = embedded_nodes(&local, Uuid::from_u128(2), access(), true);
        assert_eq!(urls(&nodes)[..2], ["http://127.0.0.1:3001/derp", "http://127.0.0.1:3000/derp"]);
        // A replica whose relay is the access URL is listed once, last.
        let same =
            [replica(1, "https://coder.example.com/derp"), replica(2, "http://10.0.0.2/derp")];
        let nodes = embedded_nodes(&same, Uuid::from_u128(1), access(), false);
        assert_eq!(urls(&nodes), ["http://10.0.0.2/derp", "https://coder.example.com/derp"]);
    }

    #[test]
    fn the_map_follows_the_registry() {
        let url = Url::parse("https://coder.example.com").unwrap();
        let mut base = RelayMap::default();
        base.regions.insert(
            EMBEDDED_REGION_ID,
            RelayRegion {
                region_id: EMBEDDED_REGION_ID,
                region_code: "coder".into(),
                region_name: "Embedded relay".into(),
                nodes: vec![access()],
            },
        );
        let (tx, rx) = watch::channel(vec![replica(1, "http://10.0.0.1:3000/derp")]);
        let maps = RelayMaps::per_replica(base.clone(), Uuid::from_u128(1), rx, &url);
        assert_eq!(maps.current(), base, "one replica: the map as before");
        tx.send_replace(vec![
            replica(2, "http://10.0.0.2:3000/derp"),
            replica(1, "http://10.0.0.1:3000/derp"),
        ]);
        let nodes = &maps.current().regions[&EMBEDDED_REGION_ID].nodes;
        assert_eq!(
            urls(nodes),
            [
                "http://10.0.0.1:3000/derp",
                "http://10.0.0.2:3000/derp",
                "https://coder.example.com/derp"
            ]
        );
        tx.send_replace(vec![replica(2, "http://10.0.0.2:3000/derp")]);
        assert_eq!(maps.current(), base, "the other replica left");
        assert_eq!(RelayMaps::from(base.clone()).current(), base);
    }

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
