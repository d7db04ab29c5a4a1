//! Birthday probing: a direct path between a hard NAT (endpoint-dependent
//! mapping) and an easy one (endpoint-independent mapping, filtering on
//! address and port), where plain hole punching cannot work.
//!
//! The hard side's NAT gives every (local socket, destination) pair its own
//! random public port, so the easy side cannot know where to send, and the
//! easy side's router drops the hard side's pings, which come from a port it
//! never sent to. So, as in Tailscale's "How NAT traversal works":
//! - the **hard side** opens [`PathConfig::birthday_sockets`] extra sockets
//!   (the I/O shell owns them: [`SocketCommand`]) and pings the easy side's
//!   public endpoint once from each, which opens that many random ports of
//!   its NAT toward exactly that endpoint (the pings themselves die at the
//!   easy router);
//! - the **easy side** pings random ports of the hard side's public IP from
//!   its one socket, [`PathConfig::birthday_burst`] every
//!   [`PathConfig::birthday_tick`]. With 256 ports open among ~64,500, each
//!   probe hits with p ≈ 1/252: 1,000 probes find one with 98 %, 2,000 with
//!   99.96 %.
//!
//! A hit reaches the hard side on one of its extra sockets; its pong goes
//! back from that socket through the port the easy side just sent to, which
//! the easy router now lets in, and proves the path to the easy side; the
//! hard side's ping back through the same socket proves it to the hard side,
//! whose data then leaves from that socket ([`super::PathSelector::direct_socket`]).
//! Probing stops at the first proven path; the other sockets close. The relay
//! carries data until then, and after [`PathConfig::birthday_deadline`]
//! without a hit both sides give up (the sockets close) until the next
//! discovery.
//!
//! Which side is hard is read from the endpoints ([`is_hard`]): a node's
//! endpoints are its interface addresses (the socket's port) and what STUN
//! servers saw. An easy NAT keeps the port (Linux `MASQUERADE`, most home
//! routers), so every endpoint has the same port; a hard one maps to a
//! random port, different again for a second STUN server. So endpoints with
//! different ports mean a hard NAT. A NAT that maps to another port without
//! being endpoint-dependent is taken for a hard one, which costs little:
//! birthday probing starts only after [`PathConfig::birthday_delay`] without
//! a direct path, and only toward a peer that looks easy. Nodes publish every
//! STUN answer already, so the node record needs no new field, and an older
//! peer simply never opens sockets (the easy side's probes then find
//! nothing until the deadline).
//!
//! A router that *answers* unsolicited UDP (finding 1 of
//! `docs/reliability.md`) in front of the easy side turns every hard-side ping that arrives
//! first into a conntrack entry that later clashes with the easy host's
//! probe to that port. So when its opening probe said the easy side's
//! router answers, the hard side holds its sockets' pings until the easy
//! side has probed for [`PathConfig::birthday_hold`]: by then it has probed
//! ~1,500 random ports, and a hard-side ping from one of them arrives as the
//! reply to the easy host's own probe (256 sockets hit one of 1,500 ports
//! with 99.7 %). The hold counts from when the easy side started, as far as
//! the hard side can tell: the easy side probes at most
//! [`PathConfig::birthday_delay`] after its discovery began, which was
//! before its first call-me-maybe of the discovery reached us. Counting from
//! our own start instead lost the race whenever the easy side heard of us
//! late (a long-running agent that the coordinator tells about a fresh
//! client a second after the client started): its probing had barely begun
//! when our pings claimed our 256 ports at its router (finding 2). Without
//! any call-me-maybe from the peer the pings wait, until the deadline.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand::Rng;

use super::endpoints::is_lan;
use super::{Outbox, PathConfig};
use crate::disco::TxId;
use crate::key::DiscoKey;

/// The lowest port a NAT maps to; easy-side probes pick ports from here up.
const LOWEST_PORT: u16 = 1024;

/// Hard-side socket open/close requests for the I/O shell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketCommand {
    /// Open an extra UDP socket (any local port, same address family as
    /// the main socket) with this id; transmits with `via: Some(id)` leave
    /// from it, and what arrives on it is handed to
    /// [`super::PathSelector::handle_disco_via`] with the id.
    Open(u32),
    /// Close the extra socket with this id.
    Close(u32),
}

/// Whether `endpoints` show a hard NAT: they do not all have one port (see
/// the module docs).
pub(crate) fn is_hard(endpoints: &[SocketAddr]) -> bool {
    endpoints.iter().any(|a| a.port() != endpoints[0].port())
}

/// The IPs whose random ports the easy side probes: the hard side's public
/// ones, or all of them when none is public (a private "internet", as in
/// the namespace tests); at most two.
fn probe_ips(endpoints: &[SocketAddr]) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = Vec::new();
    let public = endpoints.iter().any(|a| !is_lan(a.ip()));
    for a in endpoints.iter().filter(|a| !public || !is_lan(a.ip())) {
        if !ips.contains(&a.ip()) && a.is_ipv4() {
            ips.push(a.ip());
        }
    }
    ips.truncate(2);
    ips
}

/// The easy side's endpoints the hard side's sockets ping: public ones
/// first; at most three.
fn targets(endpoints: &[SocketAddr]) -> Vec<SocketAddr> {
    let mut targets: Vec<SocketAddr> =
        endpoints.iter().copied().filter(|a| a.is_ipv4() && !is_lan(a.ip())).collect();
    targets.extend(endpoints.iter().copied().filter(|a| a.is_ipv4() && is_lan(a.ip())));
    targets.truncate(3);
    targets
}

/// Which half of the probing this node does toward one peer.
#[derive(Debug)]
enum Role {
    /// We are hard: these extra sockets ping `targets` (the easy side's
    /// public endpoints).
    Hard { sockets: Vec<u32>, targets: Vec<SocketAddr> },
    /// We are easy: random ports of the hard side's `ips` get pings.
    Easy { ips: Vec<IpAddr> },
}

/// One birthday attempt toward one peer.
#[derive(Debug)]
pub(super) struct Birthday {
    role: Role,
    /// The next burst (easy) or re-ping of the easy side (hard).
    next: Instant,
    deadline: Instant,
    /// Hard side held for an answering router: when the hold began, and
    /// whether it still waits for the peer's first call-me-maybe.
    hold: Option<(Instant, bool)>,
}

/// The hard side re-pings the easy side from every socket this often, so
/// its NAT keeps the mappings open for the whole attempt.
const HARD_REPING: Duration = Duration::from_secs(2);

impl Birthday {
    /// Starts an attempt if one side is hard and the other easy (and both
    /// have public endpoints), else `None`.
    /// `answering` are the peer's endpoints whose router answers
    /// unsolicited UDP (opening probes); `heard` is when the peer's first
    /// call-me-maybe of this discovery came, if it did.
    pub(super) fn start(
        peer_endpoints: &[SocketAddr],
        answering: &[SocketAddr],
        heard: Option<Instant>,
        now: Instant,
        config: &PathConfig,
        out: &mut Outbox,
    ) -> Option<Self> {
        // A peer with one endpoint has no NAT (or no STUN answer): nothing
        // to probe around.
        if config.birthday_sockets == 0
            || out.local_endpoints.is_empty()
            || peer_endpoints.len() < 2
        {
            return None;
        }
        let local_hard = is_hard(&out.local_endpoints);
        let peer_hard = is_hard(peer_endpoints);
        let deadline = now + config.birthday_deadline;
        let mut next = now;
        let mut hold = None;
        let role = match (local_hard, peer_hard) {
            (true, false) => {
                let targets = targets(peer_endpoints);
                if targets.is_empty() {
                    return None;
                }
                if targets.iter().any(|t| answering.contains(t)) {
                    hold = Some((now, true));
                    next = deadline;
                }
                let sockets: Vec<u32> = (0..config.birthday_sockets)
                    .map(|_| {
                        let id = out.next_socket;
                        out.next_socket = out.next_socket.wrapping_add(1);
                        out.sockets.push_back(SocketCommand::Open(id));
                        id
                    })
                    .collect();
                Role::Hard { sockets, targets }
            }
            (false, true) => {
                let ips = probe_ips(peer_endpoints);
                if ips.is_empty() {
                    return None;
                }
                Role::Easy { ips }
            }
            _ => return None,
        };
        let mut attempt = Self { role, next, deadline, hold };
        if let Some(at) = heard {
            attempt.peer_heard(at, config);
        }
        Some(attempt)
    }

    /// The peer's first call-me-maybe of this discovery came at `at`: a
    /// held hard side pings once the easy side has probed for the hold.
    pub(super) fn peer_heard(&mut self, at: Instant, config: &PathConfig) {
        if let Some((since, waiting @ true)) = &mut self.hold {
            *waiting = false;
            let probed_enough = at + config.birthday_delay + config.birthday_hold;
            self.next = (*since + config.birthday_hold).max(probed_enough);
        }
    }

    /// When [`Self::on_timeout`] should run next.
    pub(super) fn next_timeout(&self) -> Instant {
        self.next.min(self.deadline)
    }

    /// Whether the attempt ran out of time.
    pub(super) fn expired(&self, now: Instant) -> bool {
        now >= self.deadline
    }

    /// Whether `via` is one of this attempt's sockets.
    pub(super) fn owns(&self, via: u32) -> bool {
        matches!(&self.role, Role::Hard { sockets, .. } if sockets.contains(&via))
    }

    /// Sends what is due: the hard side's pings from every socket, or the
    /// easy side's next burst of pings to random ports. Each sent ping is
    /// reported to `record` (tx id, address, socket).
    pub(super) fn on_timeout(
        &mut self,
        disco: DiscoKey,
        now: Instant,
        config: &PathConfig,
        out: &mut Outbox,
        mut record: impl FnMut(TxId, SocketAddr, Option<u32>),
    ) {
        if now < self.next || self.expired(now) {
            return;
        }
        match &mut self.role {
            Role::Hard { sockets, targets } => {
                for &via in sockets.iter() {
                    for &target in targets.iter() {
                        let tx = out.ping_via(disco, target, Some(via));
                        record(tx, target, Some(via));
                    }
                }
                self.next = now + HARD_REPING;
            }
            Role::Easy { ips } => {
                for i in 0..config.birthday_burst {
                    let port = out.rng.gen_range(LOWEST_PORT..=u16::MAX);
                    let addr = SocketAddr::new(ips[i % ips.len()], port);
                    let tx = out.ping_via(disco, addr, None);
                    record(tx, addr, None);
                }
                self.next = now + config.birthday_tick;
            }
        }
    }

    /// Ends the attempt: closes every socket but `keep` (the one the path
    /// was found on, if any).
    pub(super) fn finish(self, keep: Option<u32>, out: &mut Outbox) {
        if let Role::Hard { sockets, .. } = self.role {
            for id in sockets.into_iter().filter(|id| Some(*id) != keep) {
                out.sockets.push_back(SocketCommand::Close(id));
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap_or_else(|_| panic!("{s}"))
    }

    #[test]
    fn a_nat_that_moves_the_port_looks_hard() {
        // Two STUN servers saw two random ports.
        assert!(is_hard(&[a("10.0.0.2:1"), a("192.0.2.1:40001"), a("192.0.2.1:40002")]));
        // One STUN server, a port other than the socket's.
        assert!(is_hard(&[a("10.0.0.2:41641"), a("192.0.2.1:40001")]));
        // The port kept: easy; a public host or a multi-homed one: not hard.
        assert!(!is_hard(&[a("10.0.0.2:41641"), a("192.0.2.1:41641")]));
        assert!(!is_hard(&[a("192.0.2.1:1"), a("198.51.100.1:1")]));
        assert!(!is_hard(&[]));
        // The probed IPs: public ones, else all (a private test internet).
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(probe_ips(&[a("10.0.0.2:1"), a("192.0.2.1:3")]), vec![ip("192.0.2.1")]);
        assert_eq!(
            probe_ips(&[a("10.99.101.2:1"), a("10.99.0.13:3"), a("10.99.0.13:4")]),
            vec![ip("10.99.101.2"), ip("10.99.0.13")]
        );
        assert_eq!(targets(&[a("10.0.0.2:1"), a("192.0.2.1:1")])[0], a("192.0.2.1:1"));
    }
}
