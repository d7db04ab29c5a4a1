//! Port-mapped endpoints on the simulated network: two hard NATs go direct
//! when either gateway maps a port, and both sides say it was the mapping.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;

use super::sim::{Filtering, Sim};
use super::tests::{assert_direct, easy, hard, secs};
use super::*;

/// Two hosts behind hard NATs; `mapped` (0 or 1) maps a port, before the
/// introduction (its record carries the mapping) or a second after it (its
/// call-me-maybe lists it, which cannot mark it; the coordinator hands the
/// republished record on two seconds later); host 0 starts the traffic.
fn hard_pair(seed: u64, mapped: usize, before: bool) -> Sim {
    let mut sim = Sim::new(seed);
    let a = sim.add_host(hard("10.0.0.2:41641", 1, "192.0.2.1"));
    let b = sim.add_host(hard("10.1.0.2:41641", 2, "198.51.100.1"));
    if before {
        sim.map_port(mapped);
    }
    sim.introduce(a, b);
    sim.start_traffic(a, b);
    if !before {
        sim.run_for(secs(1));
        sim.map_port(mapped);
        sim.run_for(secs(2));
        sim.tell(1 - mapped, mapped);
    }
    sim
}

#[test]
fn hard_pairs_go_direct_through_a_port_mapping_and_say_so() {
    for (seed, mapped, before) in [(60, 1, true), (61, 0, true), (62, 1, false), (63, 0, false)] {
        let mut sim = hard_pair(seed, mapped, before);
        sim.run_for(secs(3));
        let case = format!("seed {seed}, host {mapped} mapped, before intro {before}");
        let to_1 = assert_direct(&sim, 0, 1);
        let to_0 = assert_direct(&sim, 1, 0);
        let external = *sim.hosts[mapped].node.port_mapped.first().unwrap();
        // The mapped side is reached at its mapping and answers from it.
        assert_eq!([to_1, to_0][1 - mapped], external, "{case}");
        for (host, peer) in [(0, 1), (1, 0)] {
            let key = sim.hosts[peer].key();
            assert_eq!(
                sim.hosts[host].sel.direct_mechanism(&key),
                Some(DirectMechanism::PortMapping),
                "{case}: host {host}"
            );
        }
        assert_eq!(sim.hosts[mapped].sel.port_mapped_endpoints(), vec![external]);
        assert!(sim.hosts[mapped].sel.local_endpoints().contains(&external));
    }
}

/// A mapping already announced (a STUN answer can list the same address)
/// is marked, and the record republished; marking it again changes nothing.
#[test]
fn marking_a_known_endpoint_as_port_mapped_republishes_once() {
    let mut sim = Sim::new(64);
    let a = sim.add_host(hard("10.0.0.2:41641", 1, "192.0.2.1"));
    let known = sim.hosts[a].node.endpoints[1];
    let sel = &mut sim.hosts[a].sel;
    let now = sim.now;
    assert!(sel.port_mapped_endpoints().is_empty());
    assert!(sel.add_port_mapped_endpoint(known, now));
    assert!(matches!(sel.poll_event(), Some(PathEvent::LocalEndpointsChanged { .. })));
    assert_eq!(sel.port_mapped_endpoints(), vec![known]);
    assert!(!sel.add_port_mapped_endpoint(known, now));
    assert_eq!(sel.poll_event(), None);
}

/// A peer's record may mark only its own listed endpoints as mapped: a
/// claim on any other address (here the hard side's peer-reflexive one,
/// which the path goes through) is ignored.
#[test]
fn a_peer_marks_only_its_listed_endpoints_as_port_mapped() {
    let run = |claim: Option<SocketAddr>| {
        let mut sim = Sim::new(65);
        let mut easy_side = easy("10.1.0.2:41641", 2, "198.51.100.1");
        easy_side.filtering = Filtering::AddressDependent;
        let e = sim.add_host(easy_side);
        let h = sim.add_host(hard("10.0.0.2:41641", 1, "192.0.2.1"));
        sim.hosts[h].node.port_mapped.extend(claim);
        sim.introduce(e, h);
        sim.start_traffic(e, h);
        sim.run_for(secs(10));
        let how = sim.hosts[e].sel.direct_mechanism(&sim.hosts[h].key());
        (assert_direct(&sim, e, h), how)
    };
    let (reflexive, how) = run(None);
    assert_eq!(how, Some(DirectMechanism::PeerReflexive));
    // The same run (same seed), the hard side claiming that address.
    assert_eq!(run(Some(reflexive)), (reflexive, Some(DirectMechanism::PeerReflexive)));
}
