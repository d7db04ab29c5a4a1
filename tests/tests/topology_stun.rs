//! No STUN tax: on a network that drops UDP, a node is published and its
//! first connection runs over the relay while its STUN probes still wait for
//! an answer that never comes; on an open network the STUN answer arrives
//! later and the node's record is yielded again with the reflexive endpoint.
//!
//! In-process nodes (the mesh library, no `coderd`): a relay and a STUN
//! server in the internet namespace, one node behind a `UdpBlocked` router,
//! one behind an `Easy` NAT, one on a public address. Assertions are on
//! order, not time: the STUN timeout is a minute, so "still pending" after
//! the transfer means nothing waited for it.
//!
//! Root only; runs in the `topology` test group.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mesh::{
    Destination, DiscoSecret, MeshConfig, MeshEndpoint, NodeId, NodeSecret, QuicSecret, StunStatus,
};
use tests::topology::mesh::{bind_in, relay_in, stun_in};
use tests::topology::{Host, Nat, Topology};

/// Far longer than the test: a probe still pending at the end was never waited for.
const STUN_TIMEOUT: Duration = Duration::from_secs(60);
const STUN_PORT: u16 = 3478;

fn node(host: &Host, id: u64, relay: &derp::RelayUrl, stun: SocketAddr) -> MeshEndpoint {
    let mut rng = rand::rngs::OsRng;
    let mut config = MeshConfig::new(
        NodeId(id),
        NodeSecret::generate(&mut rng),
        DiscoSecret::generate(&mut rng),
        QuicSecret::generate(&mut rng),
    );
    config.bind = SocketAddr::from((host.addr, 0));
    config.relays = vec![mesh::RelayRegion::new(1, relay.clone())];
    config.stun_servers = vec![stun];
    config.stun_timeout = STUN_TIMEOUT;
    bind_in(host, config).unwrap()
}

/// Dials `b` from `a` and echoes 64 KiB over one stream; the time to the
/// first echoed byte, from the dial.
async fn first_byte(a: &MeshEndpoint, b: &MeshEndpoint) -> Duration {
    let start = Instant::now();
    let key = b.node().key;
    let (ca, cb) =
        tokio::try_join!(async { a.dial(&key).await.map_err(anyhow::Error::from) }, async {
            b.accept().await.map_err(anyhow::Error::from)
        },)
        .unwrap();
    let echo = tokio::spawn(async move {
        let (_service, mut send, mut recv) = cb.accept().await.unwrap();
        tokio::io::copy(&mut recv, &mut send).await.unwrap();
        send.finish().unwrap();
        // Keep the connection until the dialer has read everything.
        let _ = cb.quic().closed().await;
    });
    let (mut send, mut recv) = ca.open(mesh::Service::Speedtest).await.unwrap();
    let data = vec![0x5a_u8; 64 << 10];
    send.write_all(&data).await.unwrap();
    send.finish().unwrap();
    let mut first = [0u8; 1];
    recv.read_exact(&mut first).await.unwrap();
    let ttfb = start.elapsed();
    let rest = recv.read_to_end(1 << 20).await.unwrap();
    assert_eq!(rest.len() + 1, data.len(), "echo lost bytes");
    ca.quic().close(0u32.into(), b"done");
    echo.abort();
    ttfb
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topology_stun_udp_blocked_first_connection_does_not_wait_for_stun() {
    if let Some(reason) = Topology::unavailable() {
        coordinator::testutil::skip(&reason);
        return;
    }
    let mut topo = Topology::new("stuntax").unwrap();
    let inet = topo.internet().clone();
    let blocked = topo.host("blocked", Nat::UdpBlocked).unwrap();
    let easy = topo.host("easy", Nat::Easy).unwrap();
    let public = topo.host("public", Nat::None).unwrap();
    let (_relay, url) = relay_in(&inet).await.unwrap();
    let stun = stun_in(&inet, STUN_PORT).unwrap();
    let stun_addr = stun.local_addr();

    // UDP blocked: bound and published (relay home set) with STUN pending.
    let b = node(&blocked, 1, &url, stun_addr);
    let p = node(&public, 2, &url, stun_addr);
    assert_eq!(*b.stun_status().borrow(), StunStatus::Pending, "bind waited for STUN");
    let published = b.node();
    assert_eq!(published.preferred_relay, Some(1), "published without its relay home");
    b.upsert_peer(&p.node()).unwrap();
    p.upsert_peer(&published).unwrap();
    let blocked_ttfb = tokio::time::timeout(Duration::from_secs(20), first_byte(&b, &p))
        .await
        .expect("no echo over the relay within 20 s");
    // The connection ran on the relay while STUN still had not answered.
    assert_eq!(*b.stun_status().borrow(), StunStatus::Pending, "STUN finished first?");
    let dst = b.destination(&p.node().key);
    assert!(matches!(dst, Some(Destination::Relay(_))), "UDP is blocked, yet {dst:?}");

    // Open network: STUN answers after bind, and the record is yielded again
    // with the router's public address.
    let e = node(&easy, 3, &url, stun_addr);
    let mut changes = e.node_changes();
    let port = e.local_addr().unwrap().port();
    let reflexive = SocketAddr::from((easy.public_addr, port));
    let republished = async {
        while !changes.borrow_and_update().endpoints.contains(&reflexive) {
            changes.changed().await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(10), republished)
        .await
        .expect("the STUN answer never became an endpoint");
    let mut status = e.stun_status();
    let done = status.wait_for(|s| matches!(s, StunStatus::Done { .. }));
    let found = tokio::time::timeout(Duration::from_secs(10), done).await.unwrap().unwrap().clone();
    assert_eq!(found, StunStatus::Done { mapped: vec![reflexive] });
    let e_node = e.node();
    let p2 = node(&public, 4, &url, stun_addr);
    e.upsert_peer(&p2.node()).unwrap();
    p2.upsert_peer(&e_node).unwrap();
    let open_ttfb = tokio::time::timeout(Duration::from_secs(20), first_byte(&e, &p2))
        .await
        .expect("no echo within 20 s");
    println!(
        "time to first byte: UDP blocked {:.0} ms, easy NAT {:.0} ms (STUN timeout {} s)",
        blocked_ttfb.as_secs_f64() * 1000.0,
        open_ttfb.as_secs_f64() * 1000.0,
        STUN_TIMEOUT.as_secs()
    );
    for n in [&b, &p, &e, &p2] {
        n.close().await;
    }
    stun.shutdown().await;
}
