//! Two relays of one region, meshed: peers on different relays meet.

use bytes::Bytes;
use derp::server::PeerLocation;
use derp::{MeshKey, ServerConfig};
use tokio::net::TcpListener;

use crate::harness::{within, Relay};

#[tokio::test]
async fn clients_on_two_meshed_relays_exchange_packets() {
    let mesh_key = MeshKey::generate();
    let (l1, l2) = (
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
    );
    let urls =
        [l1.local_addr().unwrap(), l2.local_addr().unwrap()].map(|a| format!("http://{a}/derp"));
    let config = || {
        let mut config = ServerConfig::default();
        config.mesh_key = Some(mesh_key.clone());
        // Listing itself too, as an operator sharing one list would.
        config.mesh_with = urls.to_vec();
        config
    };
    let r1 = Relay::start_on(l1, config());
    let r2 = Relay::start_on(l2, config());
    let a = r1.client().await;
    let b = r2.client().await;
    r1.wait_for_peer(b.public_key()).await;
    r2.wait_for_peer(a.public_key()).await;
    assert_eq!(r1.server.peer_location(&b.public_key()), Some(PeerLocation::Mesh));

    a.send(b.public_key(), Bytes::from_static(b"across")).await.unwrap();
    let got = within("b to receive", b.recv()).await.unwrap();
    assert_eq!((got.src, got.data), (a.public_key(), Bytes::from_static(b"across")));
    b.send(a.public_key(), Bytes::from_static(b"back")).await.unwrap();
    assert_eq!(within("a to receive", a.recv()).await.unwrap().data, Bytes::from_static(b"back"));
    assert_eq!(r1.server.stats().packets_forwarded_mesh, 1);
    assert_eq!(r2.server.stats().packets_forwarded_mesh, 1);

    // When b leaves, r1 forgets the route.
    let b_key = b.public_key();
    b.close().await;
    let mut changes = r1.server.membership_changes();
    within("route to go", async {
        while r1.server.peer_location(&b_key).is_some() {
            changes.changed().await.unwrap();
        }
    })
    .await;
}

/// Mesh neighbours given at run time (as coderd's replica registry does):
/// links come up, and a neighbour removed from the list loses its routes.
#[tokio::test]
async fn mesh_peers_follow_the_list_at_run_time() {
    let mesh_key = MeshKey::generate();
    let config = || {
        let mut config = ServerConfig::default();
        config.mesh_key = Some(mesh_key.clone());
        config
    };
    let r1 = Relay::start(config()).await;
    let r2 = Relay::start(config()).await;
    let (u1, u2) = (r1.url().to_string(), r2.url().to_string());
    let b = r2.client().await;
    assert_eq!(r1.server.peer_location(&b.public_key()), None);

    // Both relays list both (themselves included), as every replica does.
    r1.server.set_mesh_peers(&[u1.clone(), u2.clone()]).unwrap();
    r2.server.set_mesh_peers(&[u1.clone(), u2.clone()]).unwrap();
    r1.wait_for_peer(b.public_key()).await;
    let a = r1.client().await;
    r2.wait_for_peer(a.public_key()).await;
    a.send(b.public_key(), Bytes::from_static(b"late mesh")).await.unwrap();
    assert_eq!(
        within("b to receive", b.recv()).await.unwrap().data,
        Bytes::from_static(b"late mesh")
    );
    let links = r1.server.mesh_links();
    assert_eq!(links.len(), 2, "{links:?}");
    assert!(links.iter().any(|l| l.url == u2 && l.up), "{links:?}");
    assert!(links.iter().any(|l| l.url == u1 && !l.up), "a link to itself is never up: {links:?}");

    // r2 leaves r1's list: r1 forgets the routes through it.
    r1.server.set_mesh_peers(std::slice::from_ref(&u1)).unwrap();
    let mut changes = r1.server.membership_changes();
    within("route to go", async {
        while r1.server.peer_location(&b.public_key()).is_some() {
            changes.changed().await.unwrap();
        }
    })
    .await;
    assert!(r1.server.mesh_links().iter().all(|l| l.url != u2));

    // Without a mesh key there is nothing to mesh with.
    let lone = Relay::start(ServerConfig::default()).await;
    assert!(matches!(
        lone.server.set_mesh_peers(&[u2]),
        Err(derp::server::ServerError::MeshWithoutKey)
    ));
}
