//! Failover between the meshed relays of one region, in process: region 1
//! has two relay servers that mesh (as two `coderd` replicas' relays do).
//! Node a lists them [r1, r2] and node b [r2, r1] (each prefers "its"
//! replica), so a relayed stream between them crosses the relay mesh. r1
//! dies mid-stream: a's link dials the region's next node at once, the home
//! region stays 1 (no node update needed), and the stream completes byte
//! for byte.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use anyhow::Context;
use common::{config, connect};
use derp::server::PeerLocation;
use mesh::{MeshEndpoint, PeerPath, RelayRegion};
use tokio::task::JoinHandle;

struct Relay {
    server: derp::Server,
    url: derp::RelayUrl,
    serving: JoinHandle<()>,
}

async fn relay(key: &derp::MeshKey) -> anyhow::Result<Relay> {
    let mut config = derp::ServerConfig::default();
    config.mesh_key = Some(key.clone());
    let server = derp::Server::spawn(config)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/derp", listener.local_addr()?).parse()?;
    let s = server.clone();
    let serving = tokio::spawn(async move {
        let _ = s.serve(listener).await;
    });
    Ok(Relay { server, url, serving })
}

/// Waits until `relay` sees `key` at `want`.
async fn wait_location(relay: &derp::Server, key: derp::PublicKey, want: PeerLocation) {
    let mut changes = relay.membership_changes();
    tokio::time::timeout(Duration::from_secs(20), async {
        while relay.peer_location(&key) != Some(want) {
            changes.changed().await.unwrap();
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for the relay to see {want:?}"));
}

#[tokio::test]
async fn a_relayed_stream_moves_to_the_regions_next_node_when_its_relay_dies() -> anyhow::Result<()>
{
    let key = derp::MeshKey::generate();
    let (r1, r2) = (relay(&key).await?, relay(&key).await?);
    r1.server.set_mesh_peers(&[r2.url.to_string()])?;
    r2.server.set_mesh_peers(&[r1.url.to_string()])?;
    let bind = |id, nodes: Vec<derp::RelayUrl>| {
        let mut c = config(id, None, true);
        c.relays = vec![RelayRegion::with_nodes(1, nodes).unwrap()];
        MeshEndpoint::bind(c)
    };
    let a = bind(1, vec![r1.url.clone(), r2.url.clone()]).await?;
    let b = bind(2, vec![r2.url.clone(), r1.url.clone()]).await?;
    let (a_key, b_key) = (a.node().key, b.node().key);
    // Each on its first node; they meet through the relays' mesh.
    wait_location(&r1.server, b_key.into(), PeerLocation::Mesh).await;
    wait_location(&r2.server, a_key.into(), PeerLocation::Mesh).await;
    assert_eq!(r1.server.peer_location(&a_key.into()), Some(PeerLocation::Local));
    a.upsert_peer(&b.node())?;
    b.upsert_peer(&a.node())?;
    let (ca, cb) = connect(&a, &b).await?;
    assert_eq!(a.path(&b_key), Some(PeerPath::Relay(Some(1))));

    const TOTAL: usize = 24 << 20;
    const KILL_AT: usize = 4 << 20;
    let (kill_tx, kill_rx) = tokio::sync::oneshot::channel::<()>();
    let sender = common::send_marked(&ca, TOTAL, KILL_AT, kill_tx);
    let killer = async {
        kill_rx.await?;
        // No restart: refuse new connections and end the open ones.
        r1.serving.abort();
        r1.server.shutdown().await;
        let killed = Instant::now();
        wait_location(&r2.server, a_key.into(), PeerLocation::Local).await;
        anyhow::Ok(killed.elapsed())
    };
    let (sent, received, moved) = tokio::time::timeout(Duration::from_secs(120), async {
        tokio::try_join!(sender, common::receive(&cb), killer)
    })
    .await
    .context("the stream did not finish")??;
    assert_eq!(received.0, sent.0, "bytes lost or duplicated");
    assert_eq!(received.1, sent.1, "SHA-256 differs");
    // One refused dial, not the home selector's 2 s failover.
    assert!(moved < Duration::from_secs(2), "a's link took {moved:?} to reach r2");
    assert_eq!((a.home_relay(), b.home_relay()), (Some(1), Some(1)), "the region stays home");
    assert_eq!(r2.server.stats().clients_home, 2, "a told r2 it is home");
    common::transfer_on(&cb, &ca, 1 << 20).await?;
    Ok(())
}
