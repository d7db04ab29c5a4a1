//! A peer's candidate endpoints: where they came from, what probes found, and
//! which to forget.
//!
//! Each source owns its part of the set: the coordinator's record and the
//! peer's latest call-me-maybe replace their earlier lists; addresses learned
//! from pings expire when they stop answering. The set is bounded; when full, the
//! stalest non-coordinator endpoint makes room. The chosen path (`keep`) is
//! never removed.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::{DirectMechanism, PathConfig};

/// A ping-learned endpoint without a pong for this long is forgotten.
const LEARNED_TTL: Duration = Duration::from_secs(60);

/// How we came to know an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Origin {
    /// The coordinator's node record.
    Coordinator,
    /// The peer's call-me-maybe.
    CallMeMaybe,
    /// A ping that came from that address.
    Ping,
    /// A random port of a hard NAT that answered a birthday probe.
    Birthday,
}

/// Whether the router in front of an endpoint answers unsolicited UDP
/// (`docs/reliability.md`, finding 1), which decides when we may ping it
/// first. Learned from an opening probe: one datagram from a throwaway
/// socket, whose port-unreachable (if the router answers) poisons no pair
/// that matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Opening {
    /// No opening probe sent yet.
    Unprobed,
    /// Probe sent: pings wait until `until` or the port-unreachable.
    Pending {
        /// When silence counts as "does not answer".
        until: Instant,
    },
    /// No port-unreachable came back: ping it freely.
    Silent,
    /// Its router answered: a ping of ours arriving before the peer's host
    /// has sent to us would claim the conntrack tuple its host needs, so
    /// it is pinged only once the peer says it has pinged us
    /// (call-me-maybe) or its ping arrives, or once a probe interval has
    /// passed since `since` without either: a peer that cannot prompt us
    /// (no relay between us) or a firewall that rejects probes on their way
    /// must not keep us from pinging for good.
    Answers {
        /// When the port-unreachable came back.
        since: Instant,
    },
}

#[derive(Debug, Clone)]
pub(super) struct Endpoint {
    origin: Origin,
    added: Instant,
    pub(super) last_ping: Option<Instant>,
    pub(super) last_pong: Option<Instant>,
    pub(super) rtt: Option<Duration>,
    /// Pings sent in answer to the peer's pings since the last probe round.
    pub(super) ping_backs: u8,
    /// What the opening probe found.
    pub(super) opening: Opening,
}

impl Endpoint {
    pub(super) fn trusted(&self, now: Instant, config: &PathConfig) -> bool {
        self.last_pong.is_some_and(|t| now.saturating_duration_since(t) < config.trust_timeout)
    }

    /// How the direct path through this endpoint was found.
    pub(super) fn mechanism(&self, addr: SocketAddr) -> DirectMechanism {
        if self.origin == Origin::Birthday {
            DirectMechanism::Birthday
        } else if is_lan(addr.ip()) {
            DirectMechanism::Lan
        } else if self.origin == Origin::Ping {
            DirectMechanism::PeerReflexive
        } else {
            DirectMechanism::Stun
        }
    }

    /// When the endpoint last showed it was alive (or was added).
    fn freshness(&self) -> Instant {
        self.last_pong.map_or(self.added, |pong| pong.max(self.added))
    }
}

/// A path's latency weighted by preference: LAN beats WAN, IPv6 beats IPv4.
pub(super) fn score(addr: SocketAddr, rtt: Duration) -> f64 {
    let mut s = rtt.as_secs_f64();
    if is_lan(addr.ip()) {
        s *= 0.8;
    }
    if addr.is_ipv6() {
        s *= 0.9;
    }
    s
}

/// RFC 1918, link-local, ULA or loopback.
pub(super) fn is_lan(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_private() || v4.is_link_local() || v4.is_loopback(),
        IpAddr::V6(v6) => {
            let first = v6.segments().first().copied().unwrap_or(0);
            // fc00::/7 unique local and fe80::/10 link local.
            (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80 || v6.is_loopback()
        }
    }
}

#[derive(Debug, Default)]
pub(super) struct Endpoints {
    map: BTreeMap<SocketAddr, Endpoint>,
}

impl Endpoints {
    pub(super) fn get(&self, addr: SocketAddr) -> Option<&Endpoint> {
        self.map.get(&addr)
    }

    pub(super) fn get_mut(&mut self, addr: SocketAddr) -> Option<&mut Endpoint> {
        self.map.get_mut(&addr)
    }

    pub(super) fn addrs(&self) -> Vec<SocketAddr> {
        self.map.keys().copied().collect()
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (SocketAddr, &Endpoint)> {
        self.map.iter().map(|(a, e)| (*a, e))
    }

    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = &mut Endpoint> {
        self.map.values_mut()
    }

    /// Adds `addr`, making room if needed; true if the set changed.
    pub(super) fn add(
        &mut self,
        addr: SocketAddr,
        origin: Origin,
        now: Instant,
        config: &PathConfig,
        keep: Option<SocketAddr>,
    ) -> bool {
        if let Some(ep) = self.map.get_mut(&addr) {
            // The coordinator's word outlasts the peer's.
            if origin == Origin::Coordinator {
                ep.origin = origin;
            }
            return false;
        }
        if self.map.len() >= config.max_endpoints {
            let victim = self
                .map
                .iter()
                .filter(|(a, e)| e.origin != Origin::Coordinator && Some(**a) != keep)
                .min_by_key(|(_, e)| e.freshness())
                .map(|(a, _)| *a);
            match victim {
                Some(victim) => self.map.remove(&victim),
                None => return false,
            };
        }
        let ep = Endpoint {
            origin,
            added: now,
            last_ping: None,
            last_pong: None,
            rtt: None,
            ping_backs: 0,
            opening: match config.opening_wait.is_zero() {
                true => Opening::Silent,
                false => Opening::Unprobed,
            },
        };
        self.map.insert(addr, ep);
        true
    }

    /// Makes `addrs` the whole list from `origin`; true if the set changed.
    pub(super) fn replace(
        &mut self,
        origin: Origin,
        addrs: &[SocketAddr],
        now: Instant,
        config: &PathConfig,
        keep: Option<SocketAddr>,
    ) -> bool {
        let before = self.map.len();
        self.map.retain(|a, e| e.origin != origin || addrs.contains(a) || Some(*a) == keep);
        let mut changed = before != self.map.len();
        for &addr in addrs {
            changed |= self.add(addr, origin, now, config, keep);
        }
        changed
    }

    /// The endpoints whose router answered an opening probe.
    pub(super) fn answering(&self) -> Vec<SocketAddr> {
        let answers = |e: &&Endpoint| matches!(e.opening, Opening::Answers { .. });
        self.map.iter().filter(|(_, e)| answers(e)).map(|(a, _)| *a).collect()
    }

    /// The earliest deadline of a pending opening probe.
    pub(super) fn opening_deadline(&self) -> Option<Instant> {
        self.map
            .values()
            .filter_map(|e| match e.opening {
                Opening::Pending { until } => Some(until),
                _ => None,
            })
            .min()
    }

    /// Endpoints whose opening probe stayed silent until now: they become
    /// [`Opening::Silent`] and are returned.
    pub(super) fn silent_openings(&mut self, now: Instant) -> Vec<SocketAddr> {
        let mut silent = Vec::new();
        for (addr, ep) in &mut self.map {
            if matches!(ep.opening, Opening::Pending { until } if until <= now) {
                ep.opening = Opening::Silent;
                silent.push(*addr);
            }
        }
        silent
    }

    /// Forgets ping-learned endpoints that stopped answering; true if any went.
    pub(super) fn expire_learned(&mut self, now: Instant, keep: Option<SocketAddr>) -> bool {
        let before = self.map.len();
        self.map.retain(|a, e| {
            !matches!(e.origin, Origin::Ping | Origin::Birthday)
                || Some(*a) == keep
                || now.saturating_duration_since(e.freshness()) < LEARNED_TTL
        });
        before != self.map.len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], port))
    }

    #[test]
    fn full_set_evicts_the_stalest_peer_endpoint() {
        let config = PathConfig { max_endpoints: 3, ..PathConfig::default() };
        let t0 = Instant::now();
        let mut set = Endpoints::default();
        assert!(set.add(addr(1), Origin::Coordinator, t0, &config, None));
        assert!(set.add(addr(2), Origin::Ping, t0, &config, None));
        assert!(set.add(addr(3), Origin::Ping, t0 + Duration::from_secs(1), &config, None));
        // Full: the oldest learned endpoint (2) goes, unless it is the chosen path.
        assert!(set.add(
            addr(4),
            Origin::Ping,
            t0 + Duration::from_secs(2),
            &config,
            Some(addr(2))
        ));
        assert_eq!(set.addrs(), vec![addr(1), addr(2), addr(4)]);
        // Only coordinator endpoints and the chosen path left: no room.
        let mut coord = Endpoints::default();
        let config = PathConfig { max_endpoints: 1, ..config };
        assert!(coord.add(addr(1), Origin::Coordinator, t0, &config, None));
        assert!(!coord.add(addr(2), Origin::Ping, t0, &config, None));
    }

    #[test]
    fn call_me_maybe_replaces_its_own_list_and_learned_ones_expire() {
        let config = PathConfig::default();
        let t0 = Instant::now();
        let mut set = Endpoints::default();
        set.replace(Origin::Coordinator, &[addr(1)], t0, &config, None);
        set.replace(Origin::CallMeMaybe, &[addr(2), addr(3)], t0, &config, None);
        set.add(addr(9), Origin::Ping, t0, &config, None);
        assert!(set.replace(Origin::CallMeMaybe, &[addr(3)], t0, &config, None));
        assert_eq!(set.addrs(), vec![addr(1), addr(3), addr(9)]);
        assert!(!set.expire_learned(t0 + Duration::from_secs(59), None));
        assert!(set.expire_learned(t0 + LEARNED_TTL, None));
        assert_eq!(set.addrs(), vec![addr(1), addr(3)]);
    }
}
