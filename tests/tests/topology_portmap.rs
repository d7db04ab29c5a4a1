//! Port mapping against a real `miniupnpd` on a router of the topology
//! library: each protocol (PCP, NAT-PMP, UPnP IGD) gets a UDP mapping from
//! a router doing a hard NAT, a datagram from the internet to the mapped
//! address reaches the host's socket, and deleting the mapping removes the
//! router's redirect; `probe` (what `coder netcheck` shows) tells which
//! protocols each router speaks; a mesh node maps its own port in the
//! background, announces the public address as an endpoint, renews it, and
//! deletes it on close.
//!
//! Three hosts behind hard NATs, one per miniupnpd setting (all, UPnP
//! only, NAT-PMP/PCP only), and a STUN server on the internet for
//! miniupnpd's own check. Root and miniupnpd only; runs in the `topology`
//! test group.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::net::{SocketAddr, SocketAddrV4};
use std::time::Duration;

use mesh::portmap::{self, Gateway, Protocol};
use mesh::{DiscoSecret, MeshConfig, NodeId, NodeSecret, PortMapConfig, PortMapStatus, QuicSecret};
use tests::topology::mesh::{bind_in, stun_in};
use tests::topology::{Host, Miniupnpd, Nat, PortMapping, Topology};
use tokio::time::Instant;

const STUN_PORT: u16 = 3478;

/// Runs `f`'s future to completion on a thread inside `host`'s namespace,
/// so the sockets it opens are the host's.
fn in_host<T: Send, F: Future<Output = T>>(host: &Host, f: impl FnOnce() -> F + Send) -> T {
    let runtime = tokio::runtime::Handle::current();
    tokio::task::block_in_place(|| host.in_netns(|| Ok(runtime.block_on(f()))).unwrap())
}

fn gateway(host: &Host) -> Gateway {
    in_host(host, portmap::gateway).expect("the host has a default gateway")
}

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(5)
}

/// A datagram from the internet to `external` arrives on the host's `socket`.
fn reaches_host(topo: &Topology, socket: &std::net::UdpSocket, external: SocketAddrV4, tag: &str) {
    let sender = topo.internet().bind_udp(0).unwrap();
    sender.send_to(tag.as_bytes(), external).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = socket.recv_from(&mut buf).unwrap_or_else(|e| {
        panic!("{tag}: nothing from the internet reached the host through {external}: {e}")
    });
    assert_eq!(&buf[..n], tag.as_bytes());
    assert_eq!(from, sender.local_addr().unwrap(), "{tag}: the datagram's source");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topology_portmap_each_protocol_against_miniupnpd() {
    if let Some(reason) = Topology::unavailable().or_else(Miniupnpd::unavailable) {
        coordinator::testutil::skip(&reason);
        return;
    }
    let mut topo = Topology::new("portmap").unwrap();
    let stun = stun_in(topo.internet(), STUN_PORT).unwrap();
    let stun_addr = SocketAddr::from((topo.internet().addr, STUN_PORT));
    let all = topo.host("all", Nat::Hard).unwrap();
    let upnp_only = topo.host("upnp", Nat::Hard).unwrap();
    let pmp_only = topo.host("pmp", Nat::Hard).unwrap();
    let daemon = Miniupnpd::start(&all, PortMapping::ALL, stun_addr).unwrap();
    let _upnp_daemon = Miniupnpd::start(&upnp_only, PortMapping::UPNP, stun_addr).unwrap();
    let _pmp_daemon = Miniupnpd::start(&pmp_only, PortMapping::NAT_PMP_PCP, stun_addr).unwrap();

    // What each router speaks, as `coder netcheck` reports it.
    for (host, pcp, nat_pmp, upnp) in
        [(&all, true, true, true), (&upnp_only, false, false, true), (&pmp_only, true, true, false)]
    {
        let gw = gateway(host);
        let probe = in_host(host, || async move { portmap::probe(&gw, deadline()).await });
        assert_eq!(probe.gateway, Some(gw.addr));
        assert_eq!(
            (probe.pcp, probe.nat_pmp, probe.upnp),
            (pcp, nat_pmp, upnp),
            "{}: {probe:?}",
            host.netns
        );
    }

    let gw = gateway(&all);
    for protocol in Protocol::ALL {
        let socket = all.bind_udp(0).unwrap();
        let port = socket.local_addr().unwrap().port();
        let mapping = in_host(&all, || async move {
            portmap::map(&gw, protocol, port, port, Duration::from_secs(60), deadline()).await
        })
        .unwrap_or_else(|e| panic!("{protocol}: {e}\n{}", daemon.log()));
        assert_eq!(mapping.protocol, protocol);
        assert_eq!(*mapping.external.ip(), all.public_addr, "{protocol}: the router's address");
        assert!(mapping.lifetime > Duration::ZERO);
        let redirects = daemon.redirects().unwrap();
        let rule = format!("dport {} dnat ip to {}:{port}", mapping.external.port(), all.addr);
        assert!(redirects.iter().any(|r| r.contains(&rule)), "{protocol}: {redirects:?}");
        reaches_host(&topo, &socket, mapping.external, &format!("hello over {protocol}"));

        in_host(&all, || {
            let mapping = mapping.clone();
            async move { portmap::unmap(&gw, &mapping, deadline()).await }
        })
        .unwrap_or_else(|e| panic!("{protocol}: deleting: {e}"));
        let redirects = daemon.redirects().unwrap();
        assert!(!redirects.iter().any(|r| r.contains(&rule)), "{protocol} kept {redirects:?}");
    }

    // A gateway that speaks only UPnP refuses nothing in PCP: it does not answer.
    let gw = gateway(&upnp_only);
    let pcp = in_host(&upnp_only, || async move {
        portmap::map(&gw, Protocol::Pcp, 4000, 4000, Duration::from_secs(60), deadline()).await
    });
    assert!(pcp.is_err(), "PCP mapped on a UPnP-only router: {pcp:?}");

    node_maps_renews_and_releases(&all, &daemon).await;
    drop(stun);
}

/// A mesh node behind `host` maps its port in the background (PCP, the
/// first protocol), announces it, renews it, and deletes it on close.
async fn node_maps_renews_and_releases(host: &Host, daemon: &Miniupnpd) {
    let mut rng = rand::rngs::OsRng;
    let mut config = MeshConfig::new(
        NodeId(7),
        NodeSecret::generate(&mut rng),
        DiscoSecret::generate(&mut rng),
        QuicSecret::generate(&mut rng),
    );
    config.bind = SocketAddr::from((host.addr, 0));
    let mut port_mapping = PortMapConfig::all();
    // miniupnpd grants what is asked down to its min_lifetime (2 s here),
    // so a renewal comes after 2 s.
    port_mapping.lifetime = Duration::from_secs(4);
    config.port_mapping = port_mapping;
    let node = bind_in(host, config).unwrap();
    let port = node.local_addr().unwrap().port();
    let mut status = node.port_mapping();
    let renewed = tokio::time::timeout(
        Duration::from_secs(15),
        status.wait_for(|s| matches!(s, PortMapStatus::Mapped { renewals: 1.., .. })),
    )
    .await
    .unwrap_or_else(|_| {
        let now = node.port_mapping().borrow().clone();
        panic!("no renewed mapping: {now:?}\n{}", daemon.log())
    })
    .unwrap()
    .clone();
    let PortMapStatus::Mapped { protocol, external, .. } = renewed else { unreachable!() };
    assert_eq!(protocol, Protocol::Pcp);
    assert_eq!(*external.ip(), host.public_addr);
    assert!(
        node.node().endpoints.contains(&SocketAddr::V4(external)),
        "{external} not announced: {:?}",
        node.node().endpoints
    );
    let rule = format!("dnat ip to {}:{port}", host.addr);
    assert!(daemon.redirects().unwrap().iter().any(|r| r.contains(&rule)));
    node.close().await;
    assert_eq!(*node.port_mapping().borrow(), PortMapStatus::Off);
    let redirects = daemon.redirects().unwrap();
    assert!(!redirects.iter().any(|r| r.contains(&rule)), "close kept {redirects:?}");
}
