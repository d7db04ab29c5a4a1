//! Birthday probing between a hard and an easy NAT on the simulated network.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use super::sim::Sim;
use super::tests::{assert_direct, assert_relay, count, easy, hard, is_direct, secs};
use super::*;

/// Hard (host 0) and easy (host 1, filtering on address and port), or the
/// other way round, introduced; `dialer` starts the traffic.
fn hard_easy(seed: u64, dialer: usize, setup: impl FnOnce(&mut Sim)) -> Sim {
    let mut sim = Sim::new(seed);
    setup(&mut sim);
    let h = sim.add_host(hard("10.0.0.2:41641", 1, "192.0.2.1"));
    let e = sim.add_host(easy("10.1.0.2:41641", 2, "198.51.100.1"));
    sim.introduce(h, e);
    sim.start_traffic(dialer, 1 - dialer);
    sim
}

#[test]
fn hard_and_easy_nat_go_direct_by_birthday_within_three_seconds() {
    for seed in 0..4 {
        let dialer = (seed % 2) as usize;
        let mut sim = hard_easy(seed, dialer, |_| {});
        // Two STUN servers saw the hard side at two ports: both sides know.
        assert!(birthday::is_hard(&sim.hosts[0].node.endpoints));
        assert!(!birthday::is_hard(&sim.hosts[1].node.endpoints));
        sim.run_for(secs(3));
        let (hk, ek) = (sim.hosts[0].key(), sim.hosts[1].key());
        let to_hard = assert_direct(&sim, 1, 0);
        assert_direct(&sim, 0, 1);
        // The easy side reaches a random port no STUN server saw...
        assert!(!sim.hosts[0].node.endpoints.contains(&to_hard), "seed {seed}");
        // ...and the hard side sends from the socket that port belongs to.
        let via = sim.hosts[0].sel.direct_socket(&ek, sim.now);
        assert!(via.is_some(), "seed {seed}");
        assert_eq!(sim.hosts[1].sel.direct_socket(&hk, sim.now), None);
        for (host, peer) in [(0, ek), (1, hk)] {
            assert_eq!(
                sim.hosts[host].sel.direct_mechanism(&peer),
                Some(DirectMechanism::Birthday)
            );
            let took = sim.hosts[host].sel.time_to_direct(&peer).unwrap();
            assert!(took <= secs(3), "seed {seed}: host {host} took {took:?}");
        }
        // 256 sockets were open; all but the winner are closed.
        assert_eq!(sim.hosts[0].max_sockets, 256, "seed {seed}");
        assert_eq!(sim.hosts[0].sockets.keys().copied().collect::<Vec<_>>(), vec![via.unwrap()]);
        assert_eq!(sim.hosts[1].max_sockets, 0);
        // The path holds on heartbeats through that socket.
        sim.run_for(secs(30));
        assert_eq!(count(&sim, 0, is_direct), 1, "seed {seed}");
        assert_eq!(count(&sim, 1, is_direct), 1, "seed {seed}");
        assert_eq!(sim.hosts[0].sel.direct_socket(&ek, sim.now), via);
    }
}

#[test]
fn without_birthday_probing_hard_and_easy_stay_on_the_relay() {
    let mut sim = hard_easy(7, 0, |sim| sim.birthday_sockets = 0);
    sim.run_for(secs(20));
    assert_relay(&sim, 0, 1);
    assert_relay(&sim, 1, 0);
    assert_eq!(sim.hosts[0].max_sockets, 0);
}

#[test]
fn easy_side_probes_at_a_bounded_rate_and_gives_up_at_the_deadline() {
    // The hard side is an older node (no extra sockets): no probe can hit.
    let mut sim = Sim::new(8);
    sim.birthday_deadline = secs(2);
    sim.birthday_sockets = 0;
    let h = sim.add_host(hard("10.0.0.2:41641", 1, "192.0.2.1"));
    sim.birthday_sockets = PathConfig::default().birthday_sockets;
    let e = sim.add_host(easy("10.1.0.2:41641", 2, "198.51.100.1"));
    sim.introduce(h, e);
    sim.start_traffic(e, h);
    let config = PathConfig::default();
    let per_second = (config.birthday_burst as f64 / config.birthday_tick.as_secs_f64()) as usize;
    sim.run_for(config.birthday_delay + secs(1));
    let first_second = sim.hosts[e].sent;
    assert!(first_second > per_second / 2, "probing: {first_second} datagrams");
    assert!(first_second <= per_second + 50, "{first_second} datagrams in the first second");
    sim.run_for(secs(1));
    let at_deadline = sim.hosts[e].sent;
    sim.run_for(secs(10));
    // After the deadline only the regular probe rounds and call-me-maybes.
    assert!(sim.hosts[e].sent - at_deadline < 20, "{} more", sim.hosts[e].sent - at_deadline);
    assert_relay(&sim, e, h);
}

#[test]
fn hard_side_closes_its_sockets_at_the_deadline() {
    // The easy side is an older node: nobody probes the hard side's ports.
    let mut sim = Sim::new(9);
    sim.birthday_deadline = secs(4);
    let h = sim.add_host(hard("10.0.0.2:41641", 1, "192.0.2.1"));
    sim.birthday_sockets = 0;
    let e = sim.add_host(easy("10.1.0.2:41641", 2, "198.51.100.1"));
    sim.introduce(h, e);
    sim.start_traffic(h, e);
    sim.run_for(secs(2));
    assert_eq!(sim.hosts[h].sockets.len(), 256);
    sim.run_for(secs(4));
    assert!(sim.hosts[h].sockets.is_empty());
    assert_relay(&sim, h, e);
}

#[test]
fn hard_nat_on_both_sides_opens_no_sockets_and_sends_no_burst() {
    let mut sim = Sim::new(10);
    let a = sim.add_host(hard("10.0.0.2:41641", 1, "192.0.2.1"));
    let b = sim.add_host(hard("10.1.0.2:41641", 2, "198.51.100.1"));
    sim.introduce(a, b);
    sim.start_traffic(a, b);
    sim.run_for(secs(12));
    assert_eq!(sim.hosts[a].max_sockets + sim.hosts[b].max_sockets, 0);
    assert!(sim.hosts[a].sent + sim.hosts[b].sent < 100);
    assert_relay(&sim, a, b);
}

#[test]
fn easy_and_public_pairs_never_start_birthday_probing() {
    let mut sim = Sim::new(11);
    let a = sim.add_host(hard("10.0.0.2:41641", 1, "192.0.2.1"));
    let b = sim.add_host(super::sim::HostSpec::public("198.51.100.1:41641"));
    sim.introduce(a, b);
    sim.start_traffic(a, b);
    sim.run_for(Duration::from_millis(400));
    // Direct before the birthday delay: no sockets were ever opened.
    assert_direct(&sim, a, b);
    sim.run_for(secs(2));
    assert_eq!(sim.hosts[a].max_sockets, 0);
    assert_ne!(
        sim.hosts[a].sel.direct_mechanism(&sim.hosts[b].key()),
        Some(DirectMechanism::Birthday)
    );
}

#[test]
fn hard_nat_and_an_answering_easy_router_go_direct_after_the_hold() {
    // The hard side learns (opening probe) that the easy router answers, so
    // it holds its sockets' pings until the easy side has probed ~1,500
    // ports: its pings then arrive as replies (finding 1 turned around).
    for seed in 20..22 {
        let dialer = (seed % 2) as usize;
        let mut sim = Sim::new(seed);
        sim.opening_wait = PathConfig::default().opening_wait;
        let h = sim.add_host(hard("10.0.0.2:41641", 1, "192.0.2.1"));
        let mut answering = easy("10.1.0.2:41641", 2, "198.51.100.1");
        answering.answers = true;
        let e = sim.add_host(answering);
        sim.introduce(h, e);
        sim.start_traffic(dialer, 1 - dialer);
        sim.run_for(secs(5));
        assert_direct(&sim, h, e);
        assert_direct(&sim, e, h);
        let ek = sim.hosts[e].key();
        assert_eq!(sim.hosts[h].sel.direct_mechanism(&ek), Some(DirectMechanism::Birthday));
        let took = sim.hosts[h].sel.time_to_direct(&ek).unwrap();
        assert!(took <= secs(4), "seed {seed}: {took:?}");
    }
}

#[test]
fn without_the_hold_an_answering_easy_router_clashes() {
    // The same pair with no hold: the hard side's first pings are answered
    // by the easy router, and the easy host's hits clash with them.
    let mut sim = Sim::new(30);
    sim.opening_wait = PathConfig::default().opening_wait;
    sim.birthday_hold = Duration::ZERO;
    sim.birthday_deadline = secs(2);
    let h = sim.add_host(hard("10.0.0.2:41641", 1, "192.0.2.1"));
    let mut answering = easy("10.1.0.2:41641", 2, "198.51.100.1");
    answering.answers = true;
    let e = sim.add_host(answering);
    sim.introduce(h, e);
    sim.start_traffic(h, e);
    sim.run_for(secs(4));
    assert_relay(&sim, h, e);
}

#[test]
fn a_hard_side_whose_stun_answer_comes_late_is_still_probed() {
    // The hard side starts without its STUN mapping (one endpoint: it looks
    // like nothing); the easy side must look again once it is announced.
    let mut sim = Sim::new(40);
    let mut late = hard("10.0.0.2:41641", 1, "192.0.2.1");
    late.stun_late = true;
    let h = sim.add_host(late);
    let e = sim.add_host(easy("10.1.0.2:41641", 2, "198.51.100.1"));
    sim.introduce(h, e);
    sim.start_traffic(e, h);
    sim.run_for(secs(1));
    assert_relay(&sim, e, h);
    sim.stun_answers(h);
    sim.run_for(secs(3));
    assert_direct(&sim, e, h);
    let hk = sim.hosts[h].key();
    assert_eq!(sim.hosts[e].sel.direct_mechanism(&hk), Some(DirectMechanism::Birthday));
}

#[test]
fn an_answering_easy_side_that_hears_of_the_hard_side_late_still_goes_direct() {
    // The matrix's hard client → agent behind an answering router (finding
    // 2): the fresh hard client knows the agent at once, but the
    // coordinator tells the long-running agent about the client a second
    // later. Counting the hold from its own start, the hard side pinged
    // when the agent had probed a few hundred ports, its 256 ports were
    // claimed at the agent's router, and it stayed on the relay in most
    // runs; counting from the agent's first call-me-maybe, it goes direct.
    for seed in 70..74 {
        let mut sim = Sim::new(seed);
        sim.opening_wait = PathConfig::default().opening_wait;
        let h = sim.add_host(hard("10.0.0.2:41641", 1, "192.0.2.1"));
        let mut answering = easy("10.1.0.2:41641", 2, "198.51.100.1");
        answering.answers = true;
        let e = sim.add_host(answering);
        sim.tell(h, e);
        sim.start_traffic(h, e);
        sim.run_for(Duration::from_millis(1400));
        sim.tell(e, h);
        sim.run_for(secs(6));
        assert_direct(&sim, h, e);
        assert_direct(&sim, e, h);
        let ek = sim.hosts[e].key();
        assert_eq!(
            sim.hosts[h].sel.direct_mechanism(&ek),
            Some(DirectMechanism::Birthday),
            "seed {seed}"
        );
    }
}
