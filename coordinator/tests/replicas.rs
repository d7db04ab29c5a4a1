//! The replica registry on a real Postgres: two replicas see each other,
//! their relays mesh with the deployment's one mesh key and carry a packet
//! between peers homed on different replicas; a replica that stops
//! heartbeating (its task dies, as with `kill -9`) is forgotten by the
//! other, whose relay drops the mesh link to it, and `GET /api/v2/replicas`
//! and each replica's relay map (one node per replica, its own first)
//! follow.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use coordinator::relay::RelayMaps;
use coordinator::replicas::{
    relay_mesh_key, RelayMesh, ReplicaConfig, ReplicaRegistry, ReplicaRow,
};
use coordinator::testutil::TestServer;
use derp::server::PeerLocation;
use derp::{Client, ClientConfig, SecretKey};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::task::AbortOnDropHandle;
use url::Url;

const DEADLINE: Duration = Duration::from_secs(20);

/// A replica's relay served on its own port, meshed with the stored key.
struct ReplicaRelay {
    server: derp::Server,
    url: Url,
    _serve: AbortOnDropHandle<std::io::Result<()>>,
}

async fn relay(db: &sqlx::PgPool) -> ReplicaRelay {
    let mut config = derp::ServerConfig::default();
    config.mesh_key = Some(relay_mesh_key(db).await.unwrap());
    let server = derp::Server::spawn(config).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = Url::parse(&format!("http://{}/derp", listener.local_addr().unwrap())).unwrap();
    let serve = tokio::spawn({
        let server = server.clone();
        async move { server.serve(listener).await }
    });
    ReplicaRelay { server, url, _serve: AbortOnDropHandle::new(serve) }
}

async fn register(srv: &TestServer, relay: &ReplicaRelay) -> ReplicaRegistry {
    let mut config = ReplicaConfig::default();
    config.relay_url = Some(relay.url.clone());
    config.heartbeat_interval = Duration::from_millis(200);
    config.heartbeat_deadline = Duration::from_millis(1000);
    ReplicaRegistry::spawn(srv.db.pool.clone(), srv.state.pubsub.clone(), config).await.unwrap()
}

/// Waits (on the registry's own change notifications) until `want` holds.
async fn wait_live(
    live: &mut watch::Receiver<Vec<ReplicaRow>>,
    what: &str,
    want: impl Fn(&[ReplicaRow]) -> bool,
) {
    tokio::time::timeout(DEADLINE, async {
        while !want(&live.borrow_and_update()) {
            live.changed().await.unwrap();
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}: {:?}", *live.borrow()));
}

async fn wait_location(relay: &derp::Server, key: derp::PublicKey, want: Option<PeerLocation>) {
    let mut changes = relay.membership_changes();
    tokio::time::timeout(DEADLINE, async {
        while relay.peer_location(&key) != want {
            changes.changed().await.unwrap();
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for the relay to see {want:?}"));
}

fn embedded_region(access: &Url) -> codersdk::RelayRegion {
    codersdk::RelayRegion {
        region_id: 999,
        region_code: "coder".into(),
        region_name: "Embedded relay".into(),
        nodes: vec![codersdk::RelayNode {
            name: "embedded".into(),
            url: access.join("/derp").unwrap().to_string(),
            stun: None,
        }],
    }
}

fn node_urls(maps: &RelayMaps) -> Vec<String> {
    maps.current().regions[&999].nodes.iter().map(|n| n.url.clone()).collect()
}

async fn replicas_api(srv: &TestServer, token: &str) -> Vec<codersdk::Replica> {
    reqwest::Client::new()
        .get(srv.url.join("/api/v2/replicas").unwrap())
        .header(codersdk::SESSION_TOKEN_HEADER, token)
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn replicas_see_each_other_mesh_their_relays_and_forget_the_silent_one() {
    let srv = TestServer::start().await.unwrap();
    let owner = srv.owner().await.unwrap();
    let token = owner.token().unwrap().to_owned();
    let db = srv.db.pool.clone();

    // One mesh key per deployment, whoever asks first.
    let (key_a, key_b) = (relay_mesh_key(&db).await.unwrap(), relay_mesh_key(&db).await.unwrap());
    assert_eq!(key_a, key_b);
    assert_eq!(format!("{key_a:?}"), "MeshKey(..)");

    let (relay_a, relay_b) = (relay(&db).await, relay(&db).await);
    let a = register(&srv, &relay_a).await;
    let b = register(&srv, &relay_b).await;
    let _mesh_a = RelayMesh::spawn(relay_a.server.clone(), a.id(), a.live());
    let _mesh_b = RelayMesh::spawn(relay_b.server.clone(), b.id(), b.live());
    let (mut live_a, mut live_b) = (a.live(), b.live());
    let both = |rows: &[ReplicaRow]| rows.len() == 2;
    wait_live(&mut live_a, "A to see B", both).await;
    wait_live(&mut live_b, "B to see A", both).await;
    assert!(live_a.borrow().iter().any(|r| r.id == b.id() && r.relay_url == relay_b.url.as_str()));

    // Peers homed on different replicas' relays meet through the mesh.
    let connect = |url: &Url| {
        let cfg = ClientConfig::new(url.as_str().parse().unwrap(), SecretKey::generate());
        async move { Client::connect(cfg).await.unwrap() }
    };
    let (pa, pb) = (connect(&relay_a.url).await, connect(&relay_b.url).await);
    wait_location(&relay_a.server, pb.public_key(), Some(PeerLocation::Mesh)).await;
    pa.send(pb.public_key(), Bytes::from_static(b"across replicas")).await.unwrap();
    let got = tokio::time::timeout(DEADLINE, pb.recv()).await.unwrap().unwrap();
    assert_eq!(got.data, Bytes::from_static(b"across replicas"));

    // Each replica's relay map lists both relays, its own first, and the
    // access URL last.
    let access = Url::parse("http://127.0.0.1:9/").unwrap();
    let maps = |r: &ReplicaRegistry| {
        let mut map = codersdk::RelayMap::default();
        map.regions.insert(999, embedded_region(&access));
        RelayMaps::per_replica(map, r.id(), r.live(), &access)
    };
    let (maps_a, maps_b) = (maps(&a), maps(&b));
    let (ua, ub) = (relay_a.url.as_str(), relay_b.url.as_str());
    assert_eq!(node_urls(&maps_a), [ua, ub, "http://127.0.0.1:9/derp"]);
    assert_eq!(node_urls(&maps_b), [ub, ua, "http://127.0.0.1:9/derp"]);

    let listed = replicas_api(&srv, &token).await;
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(listed.iter().all(|r| r.healthy && r.region_id == 999), "{listed:?}");

    // B stops heartbeating without a goodbye: A forgets it after the
    // deadline, and A's relay stops meshing with B's.
    let b_id = b.id();
    drop(b);
    drop(_mesh_b);
    wait_live(&mut live_a, "A to forget B", |rows| rows.iter().all(|r| r.id != b_id)).await;
    wait_location(&relay_a.server, pb.public_key(), None).await;
    assert!(relay_a.server.mesh_links().iter().all(|l| l.url != relay_b.url.as_str()));
    assert_eq!(node_urls(&maps_a), ["http://127.0.0.1:9/derp"], "alone: the access URL only");
    let listed = replicas_api(&srv, &token).await;
    assert_eq!(listed.iter().map(|r| r.id).collect::<Vec<_>>(), [a.id()], "{listed:?}");

    // An orderly shutdown deregisters at once.
    a.shutdown().await;
    assert!(replicas_api(&srv, &token).await.is_empty());
}
