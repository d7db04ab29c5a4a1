//! The topology library's own check: each [`Nat`] kind behaves as documented,
//! seen from a UDP reflector on the internet (a STUN server in miniature).
//!
//! - mapping: the public address:port a host's socket gets toward two
//!   different destinations (same port: endpoint-independent; different:
//!   endpoint-dependent);
//! - filtering: whether a packet from an address:port the host never sent to
//!   reaches it, and whether a reply from one it did send to does;
//! - UDP blocked: nothing arrives at all;
//! - HTTP proxy only: TCP to the internet fails, `CONNECT` through the
//!   router's proxy works.
//!
//! Root only; runs in the `topology` test group. No binaries needed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use tests::topology::{Nat, Topology, INTERNET_ADDR};

/// How long "nothing arrives" waits: the namespaces are one machine, so a
/// packet that is let through arrives in microseconds.
const SILENCE: Duration = Duration::from_millis(300);

fn recv_from(sock: &UdpSocket, wait: Duration) -> Option<SocketAddr> {
    sock.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 64];
    sock.recv_from(&mut buf).ok().map(|(_, from)| from)
}

#[test]
fn topology_nat_kinds_map_and_filter_as_documented() {
    if let Some(reason) = Topology::unavailable() {
        coordinator::testutil::skip(&reason);
        return;
    }
    let mut topo = Topology::new("natcheck").unwrap();
    let inet = topo.internet().clone();
    // Three reflector ports: two the host talks to, one it never does.
    let refl: Vec<UdpSocket> = (0..3).map(|i| inet.bind_udp(4000 + i).unwrap()).collect();
    let mut failures = Vec::new();
    for (i, nat) in Nat::ALL.into_iter().enumerate() {
        let host = topo.host(&format!("h{i}"), nat).unwrap();
        let sock = host.bind_udp(0).unwrap();
        let local = sock.local_addr().unwrap();
        let mut seen = Vec::new();
        for r in &refl[..2] {
            sock.send_to(b"probe", r.local_addr().unwrap()).unwrap();
            seen.push(recv_from(r, Duration::from_secs(2)));
        }
        // Unsolicited: from the third port to where the first reflector saw us.
        let stranger_reached = seen[0].is_some_and(|mapped| {
            refl[2].send_to(b"stranger", mapped).unwrap();
            recv_from(&sock, SILENCE).is_some()
        });
        // A reply from an address:port the host sent to.
        let reply_reached = seen[0].is_some_and(|mapped| {
            refl[0].send_to(b"reply", mapped).unwrap();
            recv_from(&sock, Duration::from_secs(2)).is_some()
        });
        let line = format!(
            "{nat}: local {local}, seen as {seen:?}, stranger reached {stranger_reached}, reply reached {reply_reached}"
        );
        eprintln!("{line}");
        let public = |s: &Option<SocketAddr>| s.map(|a| a.ip()) == Some(host.public_addr.into());
        let ok = match nat {
            Nat::None => {
                seen.iter().all(|s| *s == Some(local)) && stranger_reached && reply_reached
            }
            Nat::Easy | Nat::EasyAnswering => {
                seen.iter().all(public) && seen[0] == seen[1] && !stranger_reached && reply_reached
            }
            Nat::FullCone => {
                seen.iter().all(public) && seen[0] == seen[1] && stranger_reached && reply_reached
            }
            Nat::Hard => {
                seen.iter().all(public) && seen[0] != seen[1] && !stranger_reached && reply_reached
            }
            Nat::UdpBlocked | Nat::HttpProxyOnly => seen.iter().all(Option::is_none),
        };
        if !ok {
            failures.push(format!("{line}\n{}", topo.router_counters(&host)));
        }
    }

    // Hole punching between two Easy NATs, the way the mesh does it: one
    // side's probe arrives before the other side has sent anything (and is
    // dropped), then the other side's probe goes out. It must leave from the
    // port STUN saw, so it passes the first side's filter.
    let h1 = topo.host("p1", Nat::Easy).unwrap();
    let h2 = topo.host("p2", Nat::Easy).unwrap();
    let (s1, s2) = (h1.bind_udp(0).unwrap(), h2.bind_udp(0).unwrap());
    let stun = refl[0].local_addr().unwrap();
    s1.send_to(b"stun", stun).unwrap();
    let m1 = recv_from(&refl[0], Duration::from_secs(2)).unwrap();
    s2.send_to(b"stun", stun).unwrap();
    let m2 = recv_from(&refl[0], Duration::from_secs(2)).unwrap();
    s1.send_to(b"early", m2).unwrap();
    let early = recv_from(&s2, SILENCE);
    s2.send_to(b"punch", m1).unwrap();
    let punched = recv_from(&s1, Duration::from_secs(2));
    s1.send_to(b"through", m2).unwrap();
    let through = recv_from(&s2, Duration::from_secs(2));
    eprintln!("easy×easy punch: early {early:?}, punched from {punched:?} (want {m2}), then {through:?} (want {m1})");
    if early.is_some() || punched != Some(m2) || through != Some(m1) {
        failures.push(format!(
            "easy×easy hole punching: early {early:?}, punched {punched:?} (want {m2}), through {through:?} (want {m1})\n{}",
            topo.router_counters(&h2)
        ));
    }

    // HttpProxyOnly: no TCP gets through the router, except via its proxy.
    let proxied = topo.host("px", Nat::HttpProxyOnly).unwrap();
    let server = inet.in_netns(|| Ok(TcpListener::bind((INTERNET_ADDR, 4100))?)).unwrap();
    let target = server.local_addr().unwrap();
    let direct = proxied
        .in_netns(|| Ok(TcpStream::connect_timeout(&target, Duration::from_secs(1)).is_ok()))
        .unwrap();
    let proxy = proxied.http_proxy.clone().unwrap();
    let proxy_addr: SocketAddr = proxy.strip_prefix("http://").unwrap().parse().unwrap();
    let mut tunnel = proxied.in_netns(|| Ok(TcpStream::connect(proxy_addr)?)).unwrap();
    write!(tunnel, "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").unwrap();
    let (mut accepted, _) = server.accept().unwrap();
    accepted.write_all(b"hello through the proxy").unwrap();
    drop(accepted);
    let mut answer = String::new();
    tunnel.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    tunnel.read_to_string(&mut answer).unwrap();
    eprintln!("httpproxy: direct TCP connected {direct}; via {proxy}: {answer:?}");
    if direct
        || !answer.starts_with("HTTP/1.1 200")
        || !answer.ends_with("\r\n\r\nhello through the proxy")
    {
        failures.push(format!("httpproxy: direct {direct}, via proxy {answer:?}"));
    }
    assert!(failures.is_empty(), "NAT kinds misbehave:\n{}", failures.join("\n"));
}

/// One punch between a host behind `first` and one behind `second`, in the
/// mesh's order: `first`'s probe leaves before `second` has sent anything,
/// then `second` probes, then `first` again. Whether both later probes got
/// through from the STUN-seen ports, and the routers' conntrack tables.
fn punch(
    topo: &mut Topology,
    tag: &str,
    first: Nat,
    second: Nat,
    stun: &UdpSocket,
) -> (bool, String) {
    let h1 = topo.host(&format!("{tag}f"), first).unwrap();
    let h2 = topo.host(&format!("{tag}s"), second).unwrap();
    let (s1, s2) = (h1.bind_udp(0).unwrap(), h2.bind_udp(0).unwrap());
    let server = stun.local_addr().unwrap();
    s1.send_to(b"stun", server).unwrap();
    let m1 = recv_from(stun, Duration::from_secs(2)).unwrap();
    s2.send_to(b"stun", server).unwrap();
    let m2 = recv_from(stun, Duration::from_secs(2)).unwrap();
    s1.send_to(b"early", m2).unwrap();
    let early = recv_from(&s2, SILENCE);
    s2.send_to(b"punch", m1).unwrap();
    let punched = recv_from(&s1, SILENCE);
    s1.send_to(b"through", m2).unwrap();
    let through = recv_from(&s2, SILENCE);
    let ok = early.is_none() && punched == Some(m2) && through == Some(m1);
    let trace = format!(
        "{first} first ({m1}) × {second} ({m2}): punched {punched:?}, through {through:?}\n\
         {first} router:\n{}{second} router:\n{}",
        topo.router_conntrack(&h1),
        topo.router_conntrack(&h2),
    );
    (ok, trace)
}

/// Finding 1 of `docs/reliability.md`, pinned: a router whose INPUT chain
/// accepts unsolicited packets (`EasyAnswering`) breaks the punch when the
/// *other* side's probe reaches it first (its conntrack entry for that
/// address pair clashes with its host's own probe, which `MASQUERADE` moves
/// to another port), and survives it when its own host sends first. Two
/// answering routers fail in either order.
#[test]
fn topology_nat_answering_router_needs_its_host_to_send_first() {
    if let Some(reason) = Topology::unavailable() {
        coordinator::testutil::skip(&reason);
        return;
    }
    let mut topo = Topology::new("answering").unwrap();
    let inet = topo.internet().clone();
    let stun = inet.bind_udp(4000).unwrap();
    let cases = [
        ("ee", Nat::Easy, Nat::Easy, true),
        ("ae", Nat::EasyAnswering, Nat::Easy, true),
        ("ea", Nat::Easy, Nat::EasyAnswering, false),
        ("aa", Nat::EasyAnswering, Nat::EasyAnswering, false),
    ];
    let mut failures = Vec::new();
    for (tag, first, second, expected) in cases {
        let (ok, trace) = punch(&mut topo, tag, first, second, &stun);
        eprintln!("{trace}");
        if ok != expected {
            failures.push(format!("expected punched={expected}, got {ok}: {trace}"));
        }
    }
    assert!(failures.is_empty(), "answering routers misbehave:\n{}", failures.join("\n"));
}

/// The internet bridge keeps its MAC while hosts join: a host that cached
/// it in ARP before the others were added keeps reaching the internet (a
/// bridge takes the lowest MAC of its ports unless given one, and a relay
/// connection from a host added earlier once timed out against the stale
/// entry).
#[test]
fn topology_internet_keeps_its_mac_as_hosts_join() {
    if let Some(reason) = Topology::unavailable() {
        coordinator::testutil::skip(&reason);
        return;
    }
    let mut topo = Topology::new("bridgemac").unwrap();
    let inet = topo.internet().clone();
    let listener = inet.in_netns(|| Ok(TcpListener::bind((INTERNET_ADDR, 0))?)).unwrap();
    let target = listener.local_addr().unwrap();
    let first = topo.host("first", Nat::None).unwrap();
    let connect = |host: &tests::topology::Host| {
        host.in_netns(|| Ok(TcpStream::connect_timeout(&target, Duration::from_secs(5))?)).unwrap();
        listener.accept().unwrap();
    };
    connect(&first);
    let mac = |host: &tests::topology::Host, args: &[&str]| {
        let out = host.command("ip").args(args).output().unwrap();
        assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .skip_while(|w| *w != "lladdr" && *w != "link/ether")
            .nth(1)
            .map(str::to_owned)
    };
    let bridge = mac(&inet, &["link", "show", "br0"]).expect("the bridge has a MAC");
    let cached = INTERNET_ADDR.to_string();
    assert_eq!(mac(&first, &["neigh", "show", &cached]).as_deref(), Some(bridge.as_str()));
    // Hosts with and without routers join; some of their veths get lower MACs.
    for i in 0..6 {
        let nat = if i % 2 == 0 { Nat::None } else { Nat::Easy };
        topo.host(&format!("late{i}"), nat).unwrap();
    }
    assert_eq!(mac(&inet, &["link", "show", "br0"]).as_deref(), Some(bridge.as_str()));
    assert_eq!(mac(&first, &["neigh", "show", &cached]).as_deref(), Some(bridge.as_str()));
    connect(&first);
}
