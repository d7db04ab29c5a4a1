//! Home relay failover, in process: two relay-only nodes stream through
//! region 1, region 1 goes away, both move to region 2 and the stream
//! completes byte for byte. A task per node stands in for the coordinator:
//! it re-announces the node to the other side when its record changes.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use common::{config, connect};
use mesh::{MeshEndpoint, PeerPath, RelayRegion};
use tokio::task::JoinHandle;

struct Relay {
    server: derp::Server,
    url: derp::RelayUrl,
    serving: JoinHandle<()>,
}

async fn relay() -> anyhow::Result<Relay> {
    let server = derp::Server::spawn(derp::ServerConfig::default())?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/derp", listener.local_addr()?).parse()?;
    let s = server.clone();
    let serving = tokio::spawn(async move {
        let _ = s.serve(listener).await;
    });
    Ok(Relay { server, url, serving })
}

/// Announces `from`'s node to `to` now and whenever it changes.
fn announce(from: Arc<MeshEndpoint>, to: Arc<MeshEndpoint>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut changes = from.node_changes();
        to.upsert_peer(&from.node()).unwrap();
        while changes.changed().await.is_ok() {
            let node = changes.borrow_and_update().clone();
            to.upsert_peer(&node).unwrap();
        }
    })
}

async fn wait_home(ep: &MeshEndpoint, region: u16) -> anyhow::Result<()> {
    let mut changes = ep.home_relay_changes();
    tokio::time::timeout(Duration::from_secs(20), changes.wait_for(|h| *h == Some(region)))
        .await
        .with_context(|| format!("home did not become region {region}"))??;
    Ok(())
}

#[tokio::test]
async fn relayed_stream_survives_its_relay_and_moves_to_the_second_region() -> anyhow::Result<()> {
    let (r1, r2) = (relay().await?, relay().await?);
    let regions = vec![RelayRegion::new(1, r1.url.clone()), RelayRegion::new(2, r2.url.clone())];
    let bind = |id| {
        let mut c = config(id, None, true);
        c.relays = regions.clone();
        MeshEndpoint::bind(c)
    };
    let a = Arc::new(bind(1).await?);
    let b = Arc::new(bind(2).await?);
    // Both regions answer within a millisecond: the lower id is home.
    assert_eq!((a.home_relay(), b.home_relay()), (Some(1), Some(1)));
    assert_eq!(a.node().preferred_relay, Some(1));
    assert!(a.node().relay_latency_ms.contains_key(&2), "{:?}", a.node().relay_latency_ms);
    a.upsert_peer(&b.node())?;
    b.upsert_peer(&a.node())?;
    let _announce = (announce(a.clone(), b.clone()), announce(b.clone(), a.clone()));
    let (ca, cb) = connect(&a, &b).await?;
    // Each node said "home" before its handshake packets, on the same
    // connection, so the relay has seen both by now.
    assert_eq!((r1.server.stats().clients_home, r2.server.stats().clients_home), (2, 0));
    let b_key = b.node().key;
    assert_eq!(a.peer_relay(&b_key), Some(1));
    assert_eq!(a.path(&b_key), Some(PeerPath::Relay(Some(1))));

    const TOTAL: usize = 32 << 20;
    const KILL_AT: usize = 6 << 20;
    let (kill_tx, kill_rx) = tokio::sync::oneshot::channel::<()>();
    let sender = common::send_marked(&ca, TOTAL, KILL_AT, kill_tx);
    let killer = async {
        kill_rx.await?;
        // No restart: refuse new connections and end the open ones.
        r1.serving.abort();
        r1.server.shutdown().await;
        let before = r2.server.stats().bytes_forwarded;
        tokio::try_join!(wait_home(&a, 2), wait_home(&b, 2))?;
        anyhow::Ok(before)
    };
    let (sent, received, r2_before) = tokio::time::timeout(Duration::from_secs(120), async {
        tokio::try_join!(sender, common::receive(&cb), killer)
    })
    .await
    .context("the stream did not finish")??;
    assert_eq!(received.0, sent.0, "bytes lost or duplicated");
    assert_eq!(received.1, sent.1, "SHA-256 differs");
    assert_eq!((a.home_relay(), b.home_relay()), (Some(2), Some(2)));
    assert_eq!(a.node().preferred_relay, Some(2));
    assert_eq!(r2.server.stats().clients_home, 2, "both told region 2 it is their home");
    let r2_after = r2.server.stats().bytes_forwarded;
    assert!(
        r2_after > r2_before + (1 << 20),
        "region 2 carried the rest of the stream ({r2_before} → {r2_after} bytes)"
    );
    // The connection from before the move is still the one in use.
    common::transfer_on(&cb, &ca, 1 << 20).await?;
    // Through region 2 now, where b announced its new home.
    assert_eq!(a.peer_relay(&b_key), Some(2));
    assert_eq!(a.path(&b_key), Some(PeerPath::Relay(Some(2))));
    assert_eq!(a.node_changes().borrow().preferred_relay, Some(2));
    Ok(())
}

#[tokio::test]
async fn bind_fails_naming_each_region_when_none_answers() -> anyhow::Result<()> {
    // A port nobody listens on: bound, then closed.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let mut c = config(1, None, true);
    c.relays = vec![RelayRegion::new(4, format!("http://{closed}/derp").parse()?)];
    let err = MeshEndpoint::bind(c).await.err().context("bind without a relay succeeded")?;
    let msg = err.to_string();
    // Each region, and each node of it that was tried, by URL.
    assert!(msg.contains("no relay region answered: region 4: "), "{msg}");
    assert!(msg.contains(&format!("http://{closed}/derp: cannot reach relay")), "{msg}");
    Ok(())
}
