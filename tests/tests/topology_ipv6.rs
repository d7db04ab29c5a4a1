//! Direct over IPv6 where IPv4 cannot go direct: two hosts behind routers
//! that drop all IPv4 UDP (`Nat::UdpBlocked`) but give them routable IPv6
//! ([`Topology::host_v6`], each router firewalling IPv6 as home routers do).
//!
//! In-process nodes (the mesh library, no `coderd`) bound dual-stack: a
//! relay (TCP over IPv4) and one STUN server on the internet's IPv4
//! wildcard, which listens on IPv6 too. Each node announces its host IPv6
//! address at bind, learns it again from STUN over IPv6 (no NAT66: the
//! mapped address is the host's own), and the pair goes direct over IPv6
//! through both firewalls; 8 MiB cross that path intact (SHA-256).
//!
//! Root only; runs in the `topology` test group.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use mesh::{
    Destination, DiscoSecret, MeshConfig, MeshEndpoint, NodeId, NodeSecret, QuicSecret, StunStatus,
};
use sha2::{Digest, Sha256};
use tests::topology::mesh::{bind_in, relay_in};
use tests::topology::{Host, Nat, Topology};

const STUN_PORT: u16 = 3478;
const SIZE: usize = 8 << 20;

fn node(host: &Host, id: u64, relay: &derp::RelayUrl, stun: Vec<SocketAddr>) -> MeshEndpoint {
    let mut rng = rand::rngs::OsRng;
    let mut config = MeshConfig::new(
        NodeId(id),
        NodeSecret::generate(&mut rng),
        DiscoSecret::generate(&mut rng),
        QuicSecret::generate(&mut rng),
    );
    // The default bind, `[::]:0`: dual-stack.
    config.relays = vec![mesh::RelayRegion::new(1, relay.clone())];
    config.stun_servers = stun;
    // The IPv4 probe never gets an answer through a UdpBlocked router.
    config.stun_timeout = Duration::from_secs(2);
    bind_in(host, config).unwrap()
}

/// Waits until `node`'s STUN probes are over; what they mapped.
async fn stun_done(node: &MeshEndpoint) -> Vec<SocketAddr> {
    let mut status = node.stun_status();
    let done = status.wait_for(|s| matches!(s, StunStatus::Done { .. }));
    let found = tokio::time::timeout(Duration::from_secs(10), done).await.unwrap().unwrap().clone();
    match found {
        StunStatus::Done { mapped } => mapped,
        other => panic!("STUN not done: {other:?}"),
    }
}

/// Waits (up to 20 s) for `a`'s path to `b` to be direct; the address.
async fn wait_direct(a: &MeshEndpoint, b: &MeshEndpoint) -> SocketAddr {
    let key = b.node().key;
    let mut events = a.path_events();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(Destination::Direct(addr)) = a.destination(&key) {
            return addr;
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, events.recv()).await {
            Ok(_) => {}
            Err(_) => panic!("never direct: {:?}", a.destination(&key)),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topology_ipv6_udp_blocked_pair_goes_direct_over_ipv6() {
    if let Some(reason) = Topology::unavailable() {
        coordinator::testutil::skip(&reason);
        return;
    }
    let mut topo = Topology::new("ipv6").unwrap();
    let ha = topo.host_v6("a", Nat::UdpBlocked).unwrap();
    let hb = topo.host_v6("b", Nat::UdpBlocked).unwrap();
    let inet = topo.internet().clone();
    let inet6 = inet.addr6.unwrap();
    let (_relay, url) = relay_in(&inet).await.unwrap();
    let runtime = tokio::runtime::Handle::current();
    let stun = tokio::task::block_in_place(|| {
        inet.in_netns(|| {
            let any = SocketAddr::from(([0, 0, 0, 0], STUN_PORT));
            Ok(runtime.block_on(derp::stun::StunServer::spawn(any))?)
        })
    })
    .unwrap();
    assert!(stun.serves_ipv6(), "the wildcard STUN listener bound only {:?}", stun.local_addrs());
    let servers =
        vec![SocketAddr::from((inet.addr, STUN_PORT)), SocketAddr::from((inet6, STUN_PORT))];

    let a = node(&ha, 1, &url, servers.clone());
    let b = node(&hb, 2, &url, servers);
    for (n, host) in [(&a, &ha), (&b, &hb)] {
        let own6 = SocketAddr::new(IpAddr::V6(host.addr6.unwrap()), n.local_addr().unwrap().port());
        assert!(n.node().endpoints.contains(&own6), "{own6} not announced at bind: {:?}", n.node());
        // STUN over IPv6 answers (over IPv4 it cannot), with the host's own address.
        assert_eq!(stun_done(n).await, vec![own6], "STUN over IPv6");
    }
    a.upsert_peer(&b.node()).unwrap();
    b.upsert_peer(&a.node()).unwrap();
    let (ca, cb) = tokio::try_join!(
        async { a.dial(&b.node().key).await.map_err(anyhow::Error::from) },
        async { b.accept().await.map_err(anyhow::Error::from) },
    )
    .unwrap();
    let path = wait_direct(&a, &b).await;
    assert_eq!(path.ip(), IpAddr::V6(hb.addr6.unwrap()), "direct, but not over IPv6: {path}");
    println!("direct over IPv6 to {path}, mechanism {:?}", a.direct_mechanism(&b.node().key));

    // 8 MiB over one stream; the receiver answers with their SHA-256.
    let receiver = tokio::spawn(async move {
        let (_service, mut send, mut recv) = cb.accept().await.unwrap();
        let got = recv.read_to_end(SIZE + 1).await.unwrap();
        send.write_all(&Sha256::digest(&got)).await.unwrap();
        send.finish().unwrap();
        let _ = cb.quic().closed().await;
    });
    let data: Vec<u8> =
        (0..SIZE as u32).map(|i| (i.wrapping_mul(2654435761) >> 11) as u8).collect();
    let (mut send, mut recv) = ca.open(mesh::Service::Speedtest).await.unwrap();
    send.write_all(&data).await.unwrap();
    send.finish().unwrap();
    let digest = tokio::time::timeout(Duration::from_secs(20), recv.read_to_end(64))
        .await
        .expect("no digest within 20 s")
        .unwrap();
    assert_eq!(digest, Sha256::digest(&data).to_vec(), "the transfer arrived altered");
    let after = a.destination(&b.node().key);
    assert_eq!(after, Some(Destination::Direct(path)), "left the IPv6 path during the transfer");
    ca.quic().close(0u32.into(), b"done");
    receiver.abort();
    for n in [&a, &b] {
        n.close().await;
    }
    stun.shutdown().await;
}
