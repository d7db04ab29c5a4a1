//! A tiny simulated network to drive [`PathSelector`]s on simulated time.
//!
//! Hosts sit on LANs, optionally behind a NAT with endpoint-independent
//! (port-preserving) or endpoint-dependent mapping (both with address-and-port-dependent filtering:
//! inbound packets pass only from addresses the mapping has sent to). A relay
//! forwards between node keys with a fixed latency and never loses packets; direct
//! UDP has latency, jitter and loss from a seeded RNG, or is blocked outright.
//! The STUN result a host advertises is its NAT mapping toward a STUN server.
//! A NAT may *answer* unsolicited packets (a Linux router whose INPUT chain
//! accepts): each one it does not let through leaves a conntrack entry for
//! that (public port, remote) pair, and a later outbound flow of its own host
//! to that remote clashes with it and is moved to a fresh port, as
//! `MASQUERADE` does (`docs/reliability.md`, finding 1). Such a router
//! answers an opening probe ([`PathSelector::poll_opening_probe`]) with a
//! port-unreachable a round trip later.
//!
//! An endpoint-dependent NAT picks a random public port per flow, and a
//! host behind one that asks two STUN servers advertises both mappings (as
//! the shell does), so peers can tell it is hard; its extra sockets
//! ([`super::SocketCommand`], birthday probing) get NAT mappings of their own.
//!
//! Tests drive it directly; with the `sim` feature, [`time_to_direct`] is
//! public for the benchmarks.
#![allow(clippy::unwrap_used)]
#![cfg_attr(not(test), allow(dead_code))]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{Destination, PathConfig, PathEvent, PathSelector, Source};
use crate::key::{DiscoSecret, NodeKey, NodeSecret, QuicSecret};
use crate::node::{mesh_addresses, Node, NodeId, PROTOCOL_VERSION};

/// How a NAT picks the public port for an outbound flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mapping {
    /// One public port per local socket ("easy" NAT).
    EndpointIndependent,
    /// A new public port per destination ("hard", symmetric NAT).
    EndpointDependent,
}

/// Which inbound packets a NAT lets through to a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Filtering {
    /// From any port of an IP the mapping has sent to.
    AddressDependent,
    /// Only from exact addresses the mapping has sent to.
    AddressAndPortDependent,
}

/// What a host looks like on the network.
#[derive(Debug, Clone)]
pub(super) struct HostSpec {
    /// The host's socket address on its LAN (public if there is no NAT).
    pub lan: SocketAddr,
    /// Hosts with the same LAN id reach each other's LAN addresses directly.
    pub lan_id: u32,
    /// The NAT in front of the host: public IP and mapping behaviour.
    pub nat: Option<(IpAddr, Mapping)>,
    /// The NAT's inbound filter.
    pub filtering: Filtering,
    /// Further addresses that reach this (NAT-less) host.
    pub aliases: Vec<SocketAddr>,
    /// The NAT answers unsolicited packets, leaving clashing conntrack entries.
    pub answers: bool,
    /// The STUN answer comes late: the host starts (and is announced)
    /// without its NAT mapping until [`Sim::stun_answers`].
    pub stun_late: bool,
}

impl HostSpec {
    pub fn public(lan: &str) -> Self {
        Self {
            lan: lan.parse().unwrap(),
            lan_id: 0,
            nat: None,
            filtering: Filtering::AddressAndPortDependent,
            aliases: Vec::new(),
            answers: false,
            stun_late: false,
        }
    }

    pub fn natted(lan: &str, lan_id: u32, public_ip: &str, mapping: Mapping) -> Self {
        Self {
            lan: lan.parse().unwrap(),
            lan_id,
            nat: Some((public_ip.parse().unwrap(), mapping)),
            filtering: Filtering::AddressAndPortDependent,
            aliases: Vec::new(),
            answers: false,
            stun_late: false,
        }
    }
}

struct Nat {
    ip: IpAddr,
    mapping: Mapping,
    filtering: Filtering,
    ports: HashMap<(SocketAddr, Option<SocketAddr>), u16>,
    inbound: HashMap<u16, (SocketAddr, HashSet<SocketAddr>)>,
    next_port: u16,
    /// Answers unsolicited packets ([`HostSpec::answers`])...
    answers: bool,
    /// ...leaving these (public port, remote) pairs taken.
    taken: HashSet<(u16, SocketAddr)>,
    /// Port mappings its host asked for ([`Sim::map_port`]): public port
    /// to local address, open to anyone.
    forwards: HashMap<u16, SocketAddr>,
    /// Picks an endpoint-dependent NAT's random ports.
    rng: StdRng,
}

impl Nat {
    fn outbound(&mut self, local: SocketAddr, dst: SocketAddr) -> SocketAddr {
        let key = match self.mapping {
            Mapping::EndpointIndependent => (local, None),
            Mapping::EndpointDependent => (local, Some(dst)),
        };
        let (mapping, inbound, rng) = (self.mapping, &self.inbound, &mut self.rng);
        let next_port = &mut self.next_port;
        let mut next = || match mapping {
            // Keeps the local port when it is free, as Linux does.
            Mapping::EndpointIndependent if !inbound.contains_key(&local.port()) => local.port(),
            Mapping::EndpointIndependent => {
                *next_port += 1;
                *next_port
            }
            Mapping::EndpointDependent => loop {
                let port = rng.gen_range(1024..=u16::MAX);
                if !inbound.contains_key(&port) {
                    break port;
                }
            },
        };
        let mut port = match self.ports.get(&(local, Some(dst))) {
            // A flow moved off its port by a clash keeps its new one.
            Some(&moved) => moved,
            None => *self.ports.entry(key).or_insert_with(&mut next),
        };
        let open = self.inbound.get(&port).is_some_and(|(_, allowed)| allowed.contains(&dst));
        if !open && self.taken.contains(&(port, dst)) {
            port = next();
            self.ports.insert((local, Some(dst)), port);
        }
        let (_, allowed) = self.inbound.entry(port).or_insert_with(|| (local, HashSet::new()));
        allowed.insert(dst);
        SocketAddr::new(self.ip, port)
    }

    fn inbound(&mut self, port: u16, from: SocketAddr) -> Option<SocketAddr> {
        let pass = self.inbound.get(&port).and_then(|(local, allowed)| {
            let pass = match self.filtering {
                Filtering::AddressDependent => allowed.iter().any(|a| a.ip() == from.ip()),
                Filtering::AddressAndPortDependent => allowed.contains(&from),
            };
            pass.then_some(*local)
        });
        if let (None, Some(&local)) = (pass, self.forwards.get(&port)) {
            // A port mapping lets anyone in, and the host's answers leave
            // through the same (conntrack) flow, from the mapped port.
            self.ports.insert((local, Some(from)), port);
            self.inbound.entry(port).or_insert_with(|| (local, HashSet::new())).1.insert(from);
            return Some(local);
        }
        if pass.is_none() && self.answers {
            // Accepted by the router itself (answered port-unreachable):
            // its conntrack entry now holds this pair.
            self.taken.insert((port, from));
        }
        pass
    }
}

pub(super) struct Host {
    pub sel: PathSelector,
    pub node: Node,
    spec: HostSpec,
    nat: Option<Nat>,
    /// Drops all direct UDP to and from this host.
    pub udp_blocked: bool,
    /// Every path event with the simulated time it happened at.
    pub events: Vec<(Duration, PathEvent)>,
    /// Disco datagrams this host sent.
    pub sent: usize,
    /// Extra sockets (birthday probing) by id: their local addresses.
    pub sockets: HashMap<u32, SocketAddr>,
    /// How many extra sockets were ever open at once.
    pub max_sockets: usize,
    /// For a multi-homed host: the local address each remote last reached it at,
    /// which replies leave from (as a socket with `IP_PKTINFO` would).
    reply_from: HashMap<SocketAddr, SocketAddr>,
}

impl Host {
    pub fn key(&self) -> NodeKey {
        self.node.key
    }
}

struct Packet {
    to: usize,
    src: Source,
    /// The address the packet was sent to, for direct packets.
    dst: Option<SocketAddr>,
    /// The receiver's extra socket it arrived on.
    via: Option<u32>,
    payload: Vec<u8>,
}

pub(super) const STUN_SERVER: &str = "203.0.113.254:3478";
/// A second STUN server: a hard NAT maps toward it on another port.
pub(super) const STUN_SERVER_2: &str = "203.0.113.253:3478";

pub(super) struct Sim {
    pub start: Instant,
    pub now: Instant,
    pub hosts: Vec<Host>,
    queue: BTreeMap<(Instant, u64), Packet>,
    seq: u64,
    rng: StdRng,
    /// One-way latency of direct UDP between different LANs.
    pub direct_latency: Duration,
    /// Extra one-way latency toward particular addresses.
    pub latency_to: HashMap<SocketAddr, Duration>,
    /// Uniform random extra one-way latency, up to this much.
    pub jitter: Duration,
    /// One-way latency through the relay.
    pub relay_latency: Duration,
    /// Probability of losing a direct UDP packet.
    pub loss: f64,
    /// Pairs of hosts exchanging data (each marks activity once a second).
    traffic: Vec<(usize, usize)>,
    next_tick: Option<Instant>,
    /// Port-unreachable answers to opening probes: when, to which host,
    /// for which probed address.
    unreachable: Vec<(Instant, usize, SocketAddr)>,
    /// [`PathConfig::opening_wait`] of hosts added from now on: none by
    /// default, so the timings of the other scenarios stay exact.
    pub opening_wait: Duration,
    /// [`PathConfig::birthday_sockets`] of hosts added from now on.
    pub birthday_sockets: usize,
    /// [`PathConfig::birthday_deadline`] of hosts added from now on.
    pub birthday_deadline: Duration,
    /// [`PathConfig::birthday_hold`] of hosts added from now on.
    pub birthday_hold: Duration,
}

impl Sim {
    pub fn new(seed: u64) -> Self {
        let start = Instant::now();
        Self {
            start,
            now: start,
            hosts: Vec::new(),
            queue: BTreeMap::new(),
            seq: 0,
            rng: StdRng::seed_from_u64(seed),
            direct_latency: Duration::from_millis(20),
            latency_to: HashMap::new(),
            jitter: Duration::ZERO,
            relay_latency: Duration::from_millis(30),
            loss: 0.0,
            traffic: Vec::new(),
            next_tick: None,
            unreachable: Vec::new(),
            opening_wait: Duration::ZERO,
            birthday_sockets: PathConfig::default().birthday_sockets,
            birthday_deadline: PathConfig::default().birthday_deadline,
            birthday_hold: PathConfig::default().birthday_hold,
        }
    }

    /// Simulated time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    pub fn add_host(&mut self, spec: HostSpec) -> usize {
        let id = self.hosts.len() as u64 + 1;
        let node_secret = NodeSecret::generate(&mut self.rng);
        let disco = DiscoSecret::generate(&mut self.rng);
        let mut nat = spec.nat.map(|(ip, mapping)| Nat {
            ip,
            mapping,
            filtering: spec.filtering,
            ports: HashMap::new(),
            inbound: HashMap::new(),
            next_port: 40000,
            answers: spec.answers,
            taken: HashSet::new(),
            forwards: HashMap::new(),
            rng: StdRng::seed_from_u64(self.rng.gen()),
        });
        let mut endpoints = vec![spec.lan];
        endpoints.extend(&spec.aliases);
        if let Some(nat) = &mut nat {
            let mapped = nat.outbound(spec.lan, STUN_SERVER.parse().unwrap());
            let mapped_2 = nat.outbound(spec.lan, STUN_SERVER_2.parse().unwrap());
            if !spec.stun_late {
                endpoints.push(mapped);
                if mapped_2 != mapped {
                    endpoints.push(mapped_2);
                }
            }
        }
        let config = PathConfig {
            rng_seed: Some(self.rng.gen()),
            opening_wait: self.opening_wait,
            birthday_sockets: self.birthday_sockets,
            birthday_deadline: self.birthday_deadline,
            birthday_hold: self.birthday_hold,
            ..PathConfig::default()
        };
        let mut sel = PathSelector::new(config, node_secret.public(), disco.clone());
        sel.set_local_endpoints(endpoints.clone());
        let node = Node {
            id: NodeId(id),
            key: node_secret.public(),
            disco_key: disco.public(),
            quic_key: QuicSecret::generate(&mut self.rng).public(),
            preferred_relay: Some(1),
            relay_latency_ms: BTreeMap::new(),
            port_mapped: Vec::new(),
            endpoints,
            addresses: mesh_addresses(NodeId(id)),
            version: PROTOCOL_VERSION,
        };
        self.hosts.push(Host {
            sel,
            node,
            spec,
            nat,
            udp_blocked: false,
            events: Vec::new(),
            sent: 0,
            sockets: HashMap::new(),
            max_sockets: 0,
            reply_from: HashMap::new(),
        });
        self.hosts.len() - 1
    }

    /// Host `i`'s late STUN answer arrives ([`HostSpec::stun_late`]): its
    /// NAT mapping toward the STUN server becomes one of its endpoints.
    /// The coordinator's record of it is left as it was.
    pub fn stun_answers(&mut self, i: usize) -> SocketAddr {
        let host = &mut self.hosts[i];
        let lan = host.spec.lan;
        // STUN maps only behind a NAT.
        let nat = host.nat.as_mut().unwrap();
        let mapped = nat.outbound(lan, STUN_SERVER.parse().unwrap());
        host.sel.add_local_endpoint(mapped, self.now);
        self.flush();
        mapped
    }

    /// Host `i`'s gateway maps a public port to its socket (PCP, NAT-PMP,
    /// UPnP): anyone may send to it, and the host's answers leave from it.
    /// The host adds it as a port-mapped endpoint; its record (what the
    /// coordinator tells peers from now on) lists it too.
    pub fn map_port(&mut self, i: usize) -> SocketAddr {
        let host = &mut self.hosts[i];
        let lan = host.spec.lan;
        let nat = host.nat.as_mut().unwrap();
        let port = (50000..=u16::MAX).find(|p| !nat.inbound.contains_key(p)).unwrap();
        nat.forwards.insert(port, lan);
        nat.inbound.insert(port, (lan, HashSet::new()));
        let external = SocketAddr::new(nat.ip, port);
        assert!(host.sel.add_port_mapped_endpoint(external, self.now));
        host.node.endpoints.push(external);
        host.node.port_mapped.push(external);
        self.flush();
        external
    }

    /// The coordinator tells `a` and `b` about each other.
    pub fn introduce(&mut self, a: usize, b: usize) {
        self.tell(a, b);
        self.tell(b, a);
    }

    /// The coordinator tells `a` about `b` (only).
    pub fn tell(&mut self, a: usize, b: usize) {
        let nb = self.hosts[b].node.clone();
        self.hosts[a].sel.upsert_peer(&nb, self.now);
        self.flush();
    }

    /// `a` starts sending data to `b`, and from the next second on both do, every second.
    pub fn start_traffic(&mut self, a: usize, b: usize) {
        let kb = self.hosts[b].key();
        self.hosts[a].sel.handle_activity(&kb, self.now);
        self.traffic.push((a, b));
        self.next_tick = Some(self.now + Duration::from_secs(1));
        self.flush();
    }

    pub fn stop_traffic(&mut self) {
        self.traffic.clear();
        self.next_tick = None;
    }

    /// Where `a` sends data for `b` right now.
    pub fn destination(&self, a: usize, b: usize) -> Option<Destination> {
        self.hosts[a].sel.destination(&self.hosts[b].key(), self.now)
    }

    pub fn run_for(&mut self, duration: Duration) {
        let end = self.now + duration;
        for _ in 0..10_000_000 {
            let next_packet = self.queue.keys().next().map(|k| k.0);
            let next_timer = self.hosts.iter().filter_map(|h| h.sel.poll_timeout()).min();
            let next_icmp = self.unreachable.iter().map(|u| u.0).min();
            let Some(next) = [next_packet, next_timer, self.next_tick, next_icmp]
                .into_iter()
                .flatten()
                .min()
                .filter(|t| *t <= end)
            else {
                self.now = end;
                return;
            };
            self.now = self.now.max(next);
            self.step();
        }
        panic!("simulation did not go idle: a timer keeps firing in the past");
    }

    fn step(&mut self) {
        let now = self.now;
        while let Some(entry) = self.queue.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let packet = entry.remove();
            let host = &mut self.hosts[packet.to];
            if let (Source::Direct(src), Some(dst), None) = (packet.src, packet.dst, &host.nat) {
                host.reply_from.insert(src, dst);
            }
            // Errors (unknown sender, …) are dropped datagrams, as in the real shell.
            let _ = host.sel.handle_disco_via(packet.src, packet.via, &packet.payload, now);
        }
        let (due, later) =
            std::mem::take(&mut self.unreachable).into_iter().partition(|u| u.0 <= now);
        self.unreachable = later;
        for (_, host, addr) in due {
            self.hosts[host].sel.handle_unreachable(addr, now);
        }
        if self.next_tick.is_some_and(|t| t <= now) {
            for (a, b) in self.traffic.clone() {
                let (ka, kb) = (self.hosts[a].key(), self.hosts[b].key());
                self.hosts[a].sel.handle_activity(&kb, now);
                self.hosts[b].sel.handle_activity(&ka, now);
            }
            self.next_tick = Some(now + Duration::from_secs(1));
        }
        for host in &mut self.hosts {
            if host.sel.poll_timeout().is_some_and(|t| t <= now) {
                host.sel.handle_timeout(now);
            }
        }
        self.flush();
    }

    /// Moves every host's queued transmits onto the network and records events.
    fn flush(&mut self) {
        for i in 0..self.hosts.len() {
            while let Some(event) = self.hosts[i].sel.poll_event() {
                let at = self.now - self.start;
                self.hosts[i].events.push((at, event));
            }
            while let Some(cmd) = self.hosts[i].sel.poll_socket_command() {
                let host = &mut self.hosts[i];
                match cmd {
                    super::SocketCommand::Open(id) => {
                        let port = 30001 + (id % 30000) as u16;
                        host.sockets.insert(id, SocketAddr::new(host.spec.lan.ip(), port));
                        host.max_sockets = host.max_sockets.max(host.sockets.len());
                    }
                    super::SocketCommand::Close(id) => {
                        host.sockets.remove(&id);
                    }
                }
            }
            while let Some(t) = self.hosts[i].sel.poll_transmit() {
                self.hosts[i].sent += 1;
                match t.dst {
                    Destination::Relay(key) => {
                        let to = self.hosts.iter().position(|h| h.key() == key);
                        let src = Source::Relay(self.hosts[i].key());
                        if let Some(to) = to {
                            self.enqueue(to, src, self.relay_latency, t.payload);
                        }
                    }
                    Destination::Direct(addr) => self.route(i, addr, t.via, t.payload),
                }
            }
            while let Some(addr) = self.hosts[i].sel.poll_opening_probe() {
                self.opening_probe(i, addr);
            }
        }
    }

    /// An opening probe from a fresh port of host `from` to `dst`: an
    /// answering router takes the pair (harmless: nobody uses that port
    /// again) and its port-unreachable comes back a round trip later;
    /// anything else (a host's socket, a silent drop) sends nothing back.
    fn opening_probe(&mut self, from: usize, dst: SocketAddr) {
        if self.hosts[from].udp_blocked {
            return;
        }
        self.seq += 1;
        let host = &mut self.hosts[from];
        let fresh = SocketAddr::new(host.spec.lan.ip(), 20000 + (self.seq % 10000) as u16);
        let src = match &mut host.nat {
            Some(nat) => nat.outbound(fresh, dst),
            None => fresh,
        };
        let refused = self.hosts.iter_mut().any(|h| match &mut h.nat {
            Some(nat) if nat.ip == dst.ip() => {
                nat.inbound(dst.port(), src).is_none() && nat.answers
            }
            _ => false,
        });
        if refused {
            let latency = self.latency_to.get(&dst).copied().unwrap_or(self.direct_latency);
            self.unreachable.push((self.now + latency * 2, from, dst));
        }
    }

    fn enqueue(&mut self, to: usize, src: Source, latency: Duration, payload: Vec<u8>) {
        self.seq += 1;
        let packet = Packet { to, src, dst: None, via: None, payload };
        self.queue.insert((self.now + latency, self.seq), packet);
    }

    fn route(&mut self, from: usize, dst: SocketAddr, via: Option<u32>, payload: Vec<u8>) {
        if self.hosts[from].udp_blocked {
            return;
        }
        let local = match via {
            None => self.hosts[from].spec.lan,
            // A transmit from a socket closed since is lost.
            Some(id) => match self.hosts[from].sockets.get(&id) {
                Some(local) => *local,
                None => return,
            },
        };
        let (lan, lan_id) = (self.hosts[from].spec.lan, self.hosts[from].spec.lan_id);
        let same_lan = self
            .hosts
            .iter()
            .position(|h| h.spec.lan == dst && h.spec.lan_id == lan_id && h.spec.nat.is_some());
        if let Some(to) = same_lan {
            let src = Source::Direct(lan);
            return self.enqueue(to, src, Duration::from_millis(1), payload);
        }
        let host = &mut self.hosts[from];
        let src = match &mut host.nat {
            Some(nat) => nat.outbound(local, dst),
            None if via.is_some() => local,
            None => host.reply_from.get(&dst).copied().unwrap_or(lan),
        };
        if self.rng.gen::<f64>() < self.loss {
            return;
        }
        let to = self.hosts.iter_mut().enumerate().find_map(|(j, h)| match &mut h.nat {
            None if h.spec.lan == dst || h.spec.aliases.contains(&dst) => Some((j, None)),
            Some(nat) if nat.ip == dst.ip() => {
                let local = nat.inbound(dst.port(), src)?;
                if local == h.spec.lan {
                    return Some((j, None));
                }
                // An extra socket's mapping; lost if the socket closed.
                let id = h.sockets.iter().find(|(_, a)| **a == local).map(|(id, _)| *id)?;
                Some((j, Some(id)))
            }
            _ => None,
        });
        let Some((to, to_via)) = to.filter(|(j, _)| !self.hosts[*j].udp_blocked) else {
            return;
        };
        let jitter = self.jitter.mul_f64(self.rng.gen::<f64>());
        let base = self.latency_to.get(&dst).copied();
        let latency = base.unwrap_or(self.direct_latency) + jitter;
        self.enqueue(to, Source::Direct(src), latency, payload);
        if let Some(packet) = self.queue.get_mut(&(self.now + latency, self.seq)) {
            packet.dst = Some(dst);
            packet.via = to_via;
        }
    }
}

/// The NATs in front of the two peers of [`time_to_direct`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Scenario {
    /// Both peers have public addresses.
    Public,
    /// Both behind endpoint-independent ("easy") NATs.
    EasyNatBoth,
    /// The dialer behind an endpoint-dependent ("hard") NAT, the other behind an
    /// easy NAT that filters by address only.
    HardNatOneSide,
    /// The dialer behind a hard NAT, the other behind an easy NAT that
    /// filters by address and port (Linux `MASQUERADE`): birthday probing.
    HardEasyBirthday,
    /// The dialer behind an easy NAT, the other behind an easy router that
    /// answers unsolicited UDP (finding 1), with the default opening wait.
    EasyAnswering,
}

/// Simulated time from the coordinator's announcement of two peers (and the
/// first data) until the dialer sends directly, with `rtt` between them and
/// 1.5 × `rtt` through the relay; `None` if no direct path appears in 30 s.
/// Deterministic for a `seed`. The hosts run the default [`PathConfig`],
/// opening probes included, as shipped nodes do.
pub fn time_to_direct(scenario: Scenario, rtt: Duration, seed: u64) -> Option<Duration> {
    let mut sim = Sim::new(seed);
    sim.direct_latency = rtt / 2;
    sim.relay_latency = rtt * 3 / 4;
    sim.opening_wait = PathConfig::default().opening_wait;
    let (a, b) = match scenario {
        Scenario::Public => (HostSpec::public("192.0.2.1:1"), HostSpec::public("198.51.100.1:1")),
        Scenario::EasyNatBoth => (
            HostSpec::natted("10.0.0.2:1", 1, "192.0.2.1", Mapping::EndpointIndependent),
            HostSpec::natted("10.0.0.2:1", 2, "198.51.100.1", Mapping::EndpointIndependent),
        ),
        Scenario::HardNatOneSide => {
            let mut easy =
                HostSpec::natted("10.0.0.2:1", 2, "198.51.100.1", Mapping::EndpointIndependent);
            easy.filtering = Filtering::AddressDependent;
            (HostSpec::natted("10.0.0.2:1", 1, "192.0.2.1", Mapping::EndpointDependent), easy)
        }
        Scenario::HardEasyBirthday => (
            HostSpec::natted("10.0.0.2:1", 1, "192.0.2.1", Mapping::EndpointDependent),
            HostSpec::natted("10.0.0.2:1", 2, "198.51.100.1", Mapping::EndpointIndependent),
        ),
        Scenario::EasyAnswering => {
            let mut answering =
                HostSpec::natted("10.0.0.2:1", 2, "198.51.100.1", Mapping::EndpointIndependent);
            answering.answers = true;
            (
                HostSpec::natted("10.0.0.2:1", 1, "192.0.2.1", Mapping::EndpointIndependent),
                answering,
            )
        }
    };
    let (a, b) = (sim.add_host(a), sim.add_host(b));
    sim.introduce(a, b);
    sim.start_traffic(a, b);
    sim.run_for(Duration::from_secs(30));
    let key = sim.hosts[b].key();
    sim.hosts[a].sel.time_to_direct(&key)
}
