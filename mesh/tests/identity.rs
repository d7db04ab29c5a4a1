//! Keys and addresses are bound to the peer that holds them: a record
//! announcing another peer's key is refused, a dial reaches the node id it
//! names, and an address a peer merely lists does not capture another
//! peer's datagrams.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{config, relay, transfer_on};
use mesh::{
    mesh_addresses, Destination, DialError, DiscoSecret, KeyInUse, KeyKind, MeshEndpoint, Node,
    NodeId, NodeSecret, PathEvent, QuicSecret, UpsertError, PROTOCOL_VERSION,
};
use rand::SeedableRng;

/// A node record for id `id` with fresh keys, listing `endpoints`; nobody
/// runs it.
fn fake(id: u64, endpoints: Vec<std::net::SocketAddr>) -> Node {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1000 + id);
    Node {
        id: NodeId(id),
        key: NodeSecret::generate(&mut rng).public(),
        disco_key: DiscoSecret::generate(&mut rng).public(),
        quic_key: QuicSecret::generate(&mut rng).public(),
        preferred_relay: Some(1),
        relay_latency_ms: Default::default(),
        port_mapped: Vec::new(),
        endpoints,
        addresses: mesh_addresses(NodeId(id)),
        version: PROTOCOL_VERSION,
    }
}

fn key_in_use(r: Result<(), UpsertError>) -> KeyInUse {
    match r {
        Err(UpsertError::KeyInUse(e)) => e,
        other => panic!("not refused for a key in use: {other:?}"),
    }
}

#[tokio::test]
async fn another_peers_keys_are_refused_and_dials_reach_the_named_node() -> anyhow::Result<()> {
    let (_server, url) = relay().await?;
    let a = MeshEndpoint::bind(config(1, Some(&url), false)).await?;
    let b = MeshEndpoint::bind(config(2, Some(&url), false)).await?;
    a.upsert_peer(&b.node())?;
    b.upsert_peer(&a.node())?;
    let victim = b.node();
    // Node 7 announces one of b's keys at a time, then one of a's own.
    for kind in [KeyKind::Node, KeyKind::Disco, KeyKind::Quic] {
        let mut spoof = fake(7, vec![]);
        match kind {
            KeyKind::Node => spoof.key = victim.key,
            KeyKind::Disco => spoof.disco_key = victim.disco_key,
            _ => spoof.quic_key = victim.quic_key,
        }
        let refused = key_in_use(a.upsert_peer(&spoof));
        assert_eq!((refused.kind, refused.holder), (kind, victim.id));
        // Dialing node 7's record reaches nobody, b included.
        let dialed = a.dial_node(&spoof).await;
        assert!(matches!(dialed, Err(DialError::NotAnnounced(NodeId(7)))), "{dialed:?}");
    }
    let mut own = fake(8, vec![]);
    own.quic_key = a.node().quic_key;
    assert_eq!(key_in_use(a.upsert_peer(&own)).holder, a.node().id);

    // b is still b: dialing its record reaches it.
    let (dialed, accepted) = tokio::time::timeout(Duration::from_secs(20), async {
        tokio::try_join!(a.dial_node(&victim), async { Ok(b.accept().await.unwrap()) })
    })
    .await??;
    assert_eq!(dialed.peer().id, victim.id);
    assert_eq!(accepted.peer().id, a.node().id);
    transfer_on(&dialed, &accepted, 64 << 10).await?;
    Ok(())
}

#[tokio::test]
async fn a_peer_listing_anothers_address_does_not_capture_its_datagrams() -> anyhow::Result<()> {
    let (_server, url) = relay().await?;
    let a = MeshEndpoint::bind(config(1, Some(&url), false)).await?;
    let b = MeshEndpoint::bind(config(2, Some(&url), false)).await?;
    // Before b learns of a, many peers announce a's UDP address as theirs (so
    // that attributing by listed address would pick a wrong one almost surely).
    for id in 10..42 {
        b.upsert_peer(&fake(id, a.node().endpoints))?;
    }
    b.upsert_peer(&a.node())?;
    a.upsert_peer(&b.node())?;
    let mut a_events = a.path_events();
    let run = async {
        let (ca, cb) = tokio::try_join!(async { Ok(a.dial(&b.node().key).await?) }, async {
            anyhow::Ok(b.accept().await?)
        })?;
        assert_eq!(cb.peer().id, a.node().id);
        // Once a sends straight to b, b must still see a there.
        loop {
            if let PathEvent::RelayToDirect { peer, .. } = a_events.recv().await? {
                if peer == b.node().key {
                    break;
                }
            }
        }
        transfer_on(&ca, &cb, 4 << 20).await?;
        transfer_on(&cb, &ca, 1 << 20).await?;
        anyhow::Ok(())
    };
    tokio::time::timeout(Duration::from_secs(30), run).await??;
    assert!(matches!(a.destination(&b.node().key), Some(Destination::Direct(_))));
    Ok(())
}
