//! One peer's paths: candidate endpoints, pings in flight, the chosen path.
//!
//! Inputs come from [`super::PathSelector`]; outputs (pings, call-me-maybe,
//! events) go into the shared [`Outbox`].

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::disco::{CallMeMaybe, Message, Pong, TxId};
use crate::key::{DiscoKey, NodeKey};

use super::birthday::{Birthday, SocketCommand};
use super::endpoints::{score, Endpoint, Endpoints, Opening, Origin};
use super::{Destination, DirectMechanism, Outbox, PathConfig, PathEvent};

#[derive(Debug, Clone, Copy)]
struct Best {
    addr: SocketAddr,
    /// The extra socket the path leaves from (birthday probing).
    via: Option<u32>,
    rtt: Duration,
    trusted_until: Instant,
}

#[derive(Debug, Clone, Copy)]
struct SentPing {
    addr: SocketAddr,
    via: Option<u32>,
    at: Instant,
}

/// At most this many pings back to one endpoint per probe round.
const MAX_PING_BACKS: u8 = 4;

/// Call-me-maybe pings an endpoint only if it was not pinged this recently.
const CALL_ME_MAYBE_GAP: Duration = Duration::from_secs(1);

pub(super) struct Peer {
    pub(super) key: NodeKey,
    pub(super) disco: DiscoKey,
    /// Addresses this peer proved, oldest first; the selector's `by_addr`
    /// index points here.
    pub(super) proven: VecDeque<SocketAddr>,
    endpoints: Endpoints,
    best: Option<Best>,
    pings: HashMap<TxId, SentPing>,
    active_until: Option<Instant>,
    next_probe: Option<Instant>,
    next_heartbeat: Option<Instant>,
    discovery_started: Option<Instant>,
    time_to_direct: Option<Duration>,
    /// How the first direct path was found, and its address.
    found_by: Option<DirectMechanism>,
    found_at: Option<SocketAddr>,
    /// Those of the peer's endpoints that are port mappings (its record's
    /// [`crate::Node::port_mapped`]).
    port_mapped: Vec<SocketAddr>,
    /// When to start birthday probing if still not direct (set when a
    /// discovery starts).
    birthday_at: Option<Instant>,
    birthday: Option<Birthday>,
    /// When the peer's first call-me-maybe of this discovery came (birthday
    /// probing's hold counts from it).
    heard: Option<Instant>,
}

impl Peer {
    pub(super) fn new(key: NodeKey, disco: DiscoKey) -> Self {
        Self {
            key,
            disco,
            proven: VecDeque::new(),
            endpoints: Endpoints::default(),
            best: None,
            pings: HashMap::new(),
            active_until: None,
            next_probe: None,
            next_heartbeat: None,
            discovery_started: None,
            time_to_direct: None,
            found_by: None,
            found_at: None,
            port_mapped: Vec::new(),
            birthday_at: None,
            birthday: None,
            heard: None,
        }
    }

    fn active(&self, now: Instant) -> bool {
        self.active_until.is_some_and(|t| now < t)
    }

    pub(super) fn time_to_direct(&self) -> Option<Duration> {
        self.time_to_direct
    }

    pub(super) fn found_by(&self) -> Option<DirectMechanism> {
        self.found_by
    }

    pub(super) fn direct_socket(&self, now: Instant) -> Option<u32> {
        self.best.filter(|b| now < b.trusted_until).and_then(|b| b.via)
    }

    /// Starts a discovery: the clock of time to direct, and birthday
    /// probing's delay.
    fn start_discovery(&mut self, now: Instant, config: &PathConfig) {
        self.discovery_started = Some(now);
        self.birthday_at = Some(now + config.birthday_delay);
        self.heard = None;
    }

    /// Closes every extra socket this peer holds (it is being forgotten).
    pub(super) fn close_sockets(&mut self, out: &mut Outbox) {
        if let Some(b) = self.birthday.take() {
            b.finish(None, out);
        }
        if let Some(via) = self.best.and_then(|b| b.via) {
            out.sockets.push_back(SocketCommand::Close(via));
        }
    }

    /// Runs birthday probing: starts it when due, sends its probes, ends it
    /// at its deadline.
    fn birthday_timeout(&mut self, now: Instant, config: &PathConfig, out: &mut Outbox) {
        if self.best.is_some() || !self.active(now) {
            self.birthday_at = None;
            if let Some(b) = self.birthday.take() {
                b.finish(None, out);
            }
            return;
        }
        if self.birthday_at.is_some_and(|t| t <= now) {
            let answering = self.endpoints.answering();
            let addrs = self.endpoints.addrs();
            self.birthday = Birthday::start(&addrs, &answering, self.heard, now, config, out);
            // Not (yet) a hard × easy pair as far as we know: a STUN answer
            // or the peer's record may still come, so look again later in
            // this discovery.
            let retry = now + config.birthday_delay;
            let until = self.discovery_started.map(|t| t + config.birthday_deadline);
            self.birthday_at = match &self.birthday {
                None if until.is_some_and(|u| retry < u) => Some(retry),
                _ => None,
            };
        }
        let Some(b) = self.birthday.as_mut() else { return };
        if b.expired(now) {
            if let Some(b) = self.birthday.take() {
                b.finish(None, out);
            }
            return;
        }
        let pings = &mut self.pings;
        b.on_timeout(self.disco, now, config, out, |tx, addr, via| {
            pings.insert(tx, SentPing { addr, via, at: now });
        });
    }

    pub(super) fn destination(&self, now: Instant) -> Destination {
        match self.best {
            Some(best) if now < best.trusted_until => Destination::Direct(best.addr),
            _ => Destination::Relay(self.key),
        }
    }

    fn endpoints_changed(&self, out: &mut Outbox) {
        out.events.push_back(PathEvent::PeerEndpointsChanged {
            peer: self.key,
            endpoints: self.endpoints.addrs(),
        });
    }

    fn best_addr(&self) -> Option<SocketAddr> {
        self.best.map(|b| b.addr)
    }

    /// The peer's record says these of its `endpoints` are port mappings
    /// (at most `max` of them; others it lists are ignored).
    pub(super) fn set_port_mapped(
        &mut self,
        mapped: &[SocketAddr],
        endpoints: &[SocketAddr],
        max: usize,
    ) {
        self.port_mapped =
            mapped.iter().filter(|a| endpoints.contains(a)).take(max).copied().collect();
        // The peer's call-me-maybe (which cannot mark a mapping) can beat its
        // republished record: the first path went to a mapping after all.
        if self.found_at.is_some_and(|a| self.port_mapped.contains(&a))
            && matches!(self.found_by, Some(DirectMechanism::Stun | DirectMechanism::PeerReflexive))
        {
            self.found_by = Some(DirectMechanism::PortMapping);
        }
    }

    /// How the direct path to `addr` was found: birthday probing if it
    /// leaves from an extra socket; a port mapping if `addr` is the peer's
    /// or the peer saw our ping come from ours (`seen_at`); else what the
    /// endpoint's origin and address say.
    fn mechanism(
        &self,
        addr: SocketAddr,
        via: Option<u32>,
        seen_at: SocketAddr,
        out: &Outbox,
    ) -> Option<DirectMechanism> {
        if via.is_some() {
            Some(DirectMechanism::Birthday)
        } else if self.port_mapped.contains(&addr) || out.mapped_local.contains(&seen_at) {
            Some(DirectMechanism::PortMapping)
        } else {
            self.endpoints.get(addr).map(|ep| ep.mechanism(addr))
        }
    }

    pub(super) fn set_coordinator_endpoints(
        &mut self,
        endpoints: &[SocketAddr],
        now: Instant,
        config: &PathConfig,
        out: &mut Outbox,
    ) {
        let keep = self.best_addr();
        if self.endpoints.replace(Origin::Coordinator, endpoints, now, config, keep) {
            self.endpoints_changed(out);
            if self.active(now) {
                self.next_probe = Some(now);
                self.on_timeout(now, config, out);
            }
        }
    }

    pub(super) fn activity(&mut self, now: Instant, config: &PathConfig, out: &mut Outbox) {
        let was_active = self.active(now);
        self.active_until = Some(now + config.session_active_timeout);
        if !was_active {
            if self.best.is_none() {
                self.start_discovery(now, config);
            }
            self.next_probe = Some(now);
            self.next_heartbeat = Some(now + config.heartbeat_interval);
            self.on_timeout(now, config, out);
        }
    }

    fn ping(&mut self, addr: SocketAddr, now: Instant, out: &mut Outbox) {
        self.ping_via(addr, None, now, out);
    }

    fn ping_via(&mut self, addr: SocketAddr, via: Option<u32>, now: Instant, out: &mut Outbox) {
        let tx_id = out.ping_via(self.disco, addr, via);
        self.pings.insert(tx_id, SentPing { addr, via, at: now });
        if let Some(ep) = self.endpoints.get_mut(addr) {
            ep.last_ping = Some(now);
        }
    }

    /// Pings `addr` unprompted (a probe round, or the peer's call-me-maybe
    /// when `prompted`), unless that could break the punch: an endpoint
    /// first gets an opening probe, and one whose router answers is pinged
    /// only when the peer prompts it (`docs/reliability.md`, finding 1).
    fn open_or_ping(
        &mut self,
        addr: SocketAddr,
        prompted: bool,
        now: Instant,
        config: &PathConfig,
        out: &mut Outbox,
    ) {
        let Some(ep) = self.endpoints.get_mut(addr) else { return };
        if ep.opening == Opening::Unprobed
            && out.local_endpoints.iter().any(|l| l.ip() == addr.ip())
        {
            // A peer on one of our own addresses: no router between us.
            ep.opening = Opening::Silent;
        }
        match ep.opening {
            Opening::Silent => self.ping(addr, now, out),
            Opening::Answers { since }
                if prompted || now.saturating_duration_since(since) >= config.probe_interval =>
            {
                self.ping(addr, now, out)
            }
            Opening::Answers { .. } | Opening::Pending { .. } => {}
            Opening::Unprobed => {
                ep.opening = Opening::Pending { until: now + config.opening_wait };
                out.openings.push_back(addr);
            }
        }
    }

    /// The opening probe to `addr` came back refused: its router answers.
    pub(super) fn opening_refused(&mut self, addr: SocketAddr, now: Instant) {
        if let Some(ep) = self.endpoints.get_mut(addr) {
            if matches!(ep.opening, Opening::Pending { .. }) {
                ep.opening = Opening::Answers { since: now };
            }
        }
    }

    /// Pings the endpoints whose opening probes stayed silent, then tells
    /// the peer (which may be holding its pings for us) that we did.
    fn release_silent(&mut self, now: Instant, out: &mut Outbox) {
        let silent = self.endpoints.silent_openings(now);
        if silent.is_empty() || !self.active(now) {
            return;
        }
        for addr in silent {
            self.ping(addr, now, out);
        }
        if self.best.is_none() && !out.local_endpoints.is_empty() {
            self.call_me_maybe(out);
        }
    }

    /// Asks the peer (through the relay) to ping our current endpoints.
    fn call_me_maybe(&self, out: &mut Outbox) {
        let cmm = Message::CallMeMaybe(CallMeMaybe { endpoints: out.local_endpoints.clone() });
        out.send(self.disco, Destination::Relay(self.key), &cmm);
    }

    /// We learned an endpoint of ours (STUN): a peer still on the relay in
    /// an active session hears of it now.
    pub(super) fn local_endpoints_changed(&mut self, now: Instant, out: &mut Outbox) {
        if self.active(now) && self.best.is_none() && !out.local_endpoints.is_empty() {
            self.call_me_maybe(out);
        }
    }

    /// Pings every candidate; asks the peer to ping us too while not direct.
    fn probe(&mut self, now: Instant, config: &PathConfig, out: &mut Outbox) {
        if self.endpoints.expire_learned(now, self.best_addr()) {
            self.endpoints_changed(out);
        }
        for addr in self.endpoints.addrs() {
            self.open_or_ping(addr, false, now, config, out);
        }
        for ep in self.endpoints.iter_mut() {
            ep.ping_backs = 0;
        }
        if self.best.is_none() && !out.local_endpoints.is_empty() {
            self.call_me_maybe(out);
        }
        self.next_probe = Some(now + config.probe_interval);
    }

    pub(super) fn on_timeout(&mut self, now: Instant, config: &PathConfig, out: &mut Outbox) {
        self.pings.retain(|_, p| now.saturating_duration_since(p.at) < config.ping_timeout);
        if let Some(best) = self.best {
            if now >= best.trusted_until {
                self.fall_back(best.addr, now, config, out);
            }
        }
        self.release_silent(now, out);
        self.birthday_timeout(now, config, out);
        if !self.active(now) {
            // Idle: no probing until the next activity restarts the timers.
            self.next_probe = None;
            self.next_heartbeat = None;
            return;
        }
        if self.next_probe.is_some_and(|t| t <= now) {
            self.probe(now, config, out);
        }
        if self.next_heartbeat.is_some_and(|t| t <= now) {
            if let Some(best) = self.best {
                self.ping_via(best.addr, best.via, now, out);
            }
            self.next_heartbeat = Some(now + config.heartbeat_interval);
        }
    }

    /// The chosen path expired: take another trusted one, else the relay.
    fn fall_back(&mut self, from: SocketAddr, now: Instant, config: &PathConfig, out: &mut Outbox) {
        if let Some(via) = self.best.and_then(|b| b.via) {
            // The birthday socket's path died: a new attempt opens new ones.
            out.sockets.push_back(SocketCommand::Close(via));
        }
        let next = self
            .endpoints
            .iter()
            .filter(|(addr, ep)| *addr != from && ep.trusted(now, config))
            .filter_map(|(addr, ep)| ep.rtt.map(|rtt| (addr, rtt, ep.last_pong)))
            .min_by(|a, b| score(a.0, a.1).total_cmp(&score(b.0, b.1)));
        match next {
            Some((to, rtt, Some(pong))) => {
                let trusted_until = pong + config.trust_timeout;
                self.best = Some(Best { addr: to, via: None, rtt, trusted_until });
                out.events.push_back(PathEvent::DirectChanged { peer: self.key, from, to, rtt });
            }
            _ => {
                self.best = None;
                self.start_discovery(now, config);
                self.next_probe = Some(now);
                out.events.push_back(PathEvent::DirectToRelay { peer: self.key });
            }
        }
    }

    pub(super) fn on_ping(
        &mut self,
        addr: SocketAddr,
        via: Option<u32>,
        tx_id: TxId,
        now: Instant,
        config: &PathConfig,
        out: &mut Outbox,
    ) {
        if via.is_some_and(|v| !self.owns_socket(v)) {
            // A socket of another peer's attempt (or a closed one).
            return;
        }
        let pong = Message::Pong(Pong { tx_id, src: addr });
        out.send_via(self.disco, Destination::Direct(addr), via, &pong);
        if via.is_some() {
            // A birthday hit on one of our sockets: ping back through it,
            // which proves the path here too.
            if self.best.is_none_or(|b| b.via != via) {
                self.ping_via(addr, via, now, out);
            }
            return;
        }
        // During birthday probing, a ping from a new port of the hard side
        // is a hit of the hard side's sockets on a port we probed.
        let origin = if self.birthday.is_some() { Origin::Birthday } else { Origin::Ping };
        if self.endpoints.add(addr, origin, now, config, self.best_addr()) {
            self.endpoints_changed(out);
        }
        // A ping from an unproven address means the peer's NAT is open toward
        // us now: ping back at once so our side proves the path too.
        let Some(ep) = self.endpoints.get_mut(addr) else {
            return;
        };
        if !ep.trusted(now, config) && ep.ping_backs < MAX_PING_BACKS {
            ep.ping_backs += 1;
            self.ping(addr, now, out);
        }
    }

    /// Returns true if the pong answered one of our pings.
    pub(super) fn on_pong(
        &mut self,
        addr: SocketAddr,
        via: Option<u32>,
        pong: &Pong,
        now: Instant,
        config: &PathConfig,
        out: &mut Outbox,
    ) -> bool {
        let tx_id = pong.tx_id;
        // Only a pong from the address we pinged (on the socket we pinged
        // from) proves that address.
        match self.pings.get(&tx_id) {
            Some(sent) if sent.addr == addr && sent.via == via => {}
            _ => return false,
        }
        let Some(sent) = self.pings.remove(&tx_id) else {
            return false;
        };
        let rtt = now.saturating_duration_since(sent.at);
        if self.endpoints.get(addr).is_none() && self.birthday.is_some() {
            // A random port of the hard side answered a birthday probe.
            let changed = self.endpoints.add(addr, Origin::Birthday, now, config, None);
            if changed {
                self.endpoints_changed(out);
            }
        }
        if let Some(ep) = self.endpoints.get_mut(addr) {
            ep.last_pong = Some(now);
            ep.rtt = Some(rtt);
        }
        let trusted_until = now + config.trust_timeout;
        match self.best {
            None => {
                self.best = Some(Best { addr, via, rtt, trusted_until });
                if let Some(b) = self.birthday.take() {
                    b.finish(via, out);
                }
                if self.time_to_direct.is_none() {
                    self.found_by = self.mechanism(addr, via, pong.src, out);
                    self.found_at = Some(addr);
                    self.time_to_direct =
                        self.discovery_started.map(|t| now.saturating_duration_since(t));
                }
                self.next_heartbeat = Some(now + config.heartbeat_interval);
                out.events.push_back(PathEvent::RelayToDirect { peer: self.key, addr, rtt });
            }
            Some(ref mut best) if best.addr == addr && best.via == via => {
                best.rtt = rtt;
                best.trusted_until = trusted_until;
            }
            Some(best) => {
                let current = score(best.addr, best.rtt);
                if score(addr, rtt) < current * (1.0 - config.switch_margin) {
                    if let Some(old) = best.via.filter(|v| via != Some(*v)) {
                        out.sockets.push_back(SocketCommand::Close(old));
                    }
                    self.best = Some(Best { addr, via, rtt, trusted_until });
                    out.events.push_back(PathEvent::DirectChanged {
                        peer: self.key,
                        from: best.addr,
                        to: addr,
                        rtt,
                    });
                }
            }
        }
        true
    }

    pub(super) fn on_call_me_maybe(
        &mut self,
        endpoints: &[SocketAddr],
        now: Instant,
        config: &PathConfig,
        out: &mut Outbox,
    ) {
        // The list is the peer's whole current set: it replaces the previous one.
        let keep = self.best_addr();
        if self.endpoints.replace(Origin::CallMeMaybe, endpoints, now, config, keep) {
            self.endpoints_changed(out);
        }
        // The peer is starting a session with us: count it as activity, and
        // ping what it listed now, which opens our NAT toward it.
        if self.best.is_none() && !self.active(now) {
            self.start_discovery(now, config);
        }
        if self.heard.is_none() {
            self.heard = Some(now);
            if let Some(b) = &mut self.birthday {
                b.peer_heard(now, config);
            }
        }
        self.active_until = Some(now + config.session_active_timeout);
        if self.next_heartbeat.is_none_or(|t| t <= now) {
            self.next_heartbeat = Some(now + config.heartbeat_interval);
        }
        // A peer cannot make us ping an address more than once a second, however
        // many call-me-maybes it sends.
        let recently = |ep: &Endpoint| {
            ep.last_ping.is_some_and(|t| now.saturating_duration_since(t) < CALL_ME_MAYBE_GAP)
        };
        for &addr in endpoints {
            if self.endpoints.get(addr).is_some_and(|ep| !recently(ep)) {
                self.open_or_ping(addr, true, now, config, out);
            }
        }
        if self.next_probe.is_none_or(|t| t <= now) {
            self.next_probe = Some(now + config.probe_interval);
        }
    }

    /// Whether extra socket `via` is this peer's: its attempt's, or its path's.
    fn owns_socket(&self, via: u32) -> bool {
        self.birthday.as_ref().is_some_and(|b| b.owns(via))
            || self.best.is_some_and(|b| b.via == Some(via))
    }

    pub(super) fn next_timeout(&self, config: &PathConfig) -> Option<Instant> {
        let expiry = self.best.map(|b| b.trusted_until);
        let ping_expiry = self.pings.values().map(|p| p.at + config.ping_timeout).min();
        let opening = self.endpoints.opening_deadline();
        let mut next = [expiry, ping_expiry, opening].into_iter().flatten().min();
        if let Some(active_until) = self.active_until {
            let birthday = self.birthday.as_ref().map(Birthday::next_timeout);
            let timers = [
                self.next_probe,
                self.next_heartbeat.filter(|_| self.best.is_some()),
                self.birthday_at.filter(|_| self.best.is_none()),
                birthday,
            ];
            let due = timers.into_iter().flatten().filter(|t| *t < active_until).min();
            next = [next, due].into_iter().flatten().min();
        }
        next
    }
}
