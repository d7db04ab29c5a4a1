//! Which relay server of a region a link dials: sans-IO, on time the caller
//! passes in.
//!
//! A region may list several servers (*nodes*) whose relays mesh, so any of
//! them reaches every peer homed in the region: `coderd` lists one node per
//! replica, the replica the peer coordinates through first, and a node every
//! peer can reach (the access URL) last. [`RegionNodes`] keeps that list and
//! answers the link's two questions:
//!
//! - [`RegionNodes::dial_order`]: the order to dial after the link lost its
//!   connection (or before it had one): the map's order, except that a node
//!   that failed within [`FAILED_FOR`] goes after the others, so a dead
//!   replica costs one failed dial and not one per reconnect;
//! - [`RegionNodes::handle_nodes`]: a new list from the map (a replica joined
//!   or left); the link moves only when its node is no longer listed, so a
//!   map change costs the connected peers nothing.
//!
//! The answers change on [`RegionNodes::handle_connected`],
//! [`RegionNodes::handle_failed`] and `handle_nodes`, and as failures age.

use std::time::{Duration, Instant};

use derp::RelayUrl;

/// A node that failed this recently is dialed after the region's others.
pub const FAILED_FOR: Duration = Duration::from_secs(30);

/// The nodes of one region and which one the link is on.
#[derive(Debug, Clone)]
pub struct RegionNodes {
    /// In the map's order of preference; never empty.
    nodes: Vec<RelayUrl>,
    /// The node the link is connected to.
    current: Option<RelayUrl>,
    /// Nodes that failed (a dial or an established connection), and when.
    failed: Vec<(RelayUrl, Instant)>,
}

impl RegionNodes {
    /// A region served by `first` and then `rest`, in order of preference.
    pub fn new(first: RelayUrl, rest: impl IntoIterator<Item = RelayUrl>) -> Self {
        let mut nodes = vec![first];
        for url in rest {
            if !nodes.contains(&url) {
                nodes.push(url);
            }
        }
        Self { nodes, current: None, failed: Vec::new() }
    }

    /// The nodes in the map's order.
    pub fn nodes(&self) -> &[RelayUrl] {
        &self.nodes
    }

    /// The node the link is connected to, if any.
    pub fn current(&self) -> Option<&RelayUrl> {
        self.current.as_ref()
    }

    /// The order to dial in at `now`: the map's, nodes that failed within
    /// [`FAILED_FOR`] last (the oldest failure first among them).
    #[must_use]
    pub fn dial_order(&self, now: Instant) -> Vec<RelayUrl> {
        let failed_at = |url: &RelayUrl| {
            self.failed
                .iter()
                .find(|(u, at)| u == url && now.saturating_duration_since(*at) < FAILED_FOR)
                .map(|(_, at)| *at)
        };
        let mut order: Vec<(Option<Instant>, &RelayUrl)> =
            self.nodes.iter().map(|u| (failed_at(u), u)).collect();
        // Stable: healthy nodes keep the map's order ahead of failed ones.
        order.sort_by_key(|(failed, _)| *failed);
        order.into_iter().map(|(_, u)| u.clone()).collect()
    }

    /// The link connected to `url`.
    pub fn handle_connected(&mut self, url: &RelayUrl) {
        self.current = Some(url.clone());
        self.failed.retain(|(u, _)| u != url);
    }

    /// Dialing `url` failed, or the link's connection to it broke, at `now`.
    pub fn handle_failed(&mut self, url: &RelayUrl, now: Instant) {
        if self.current.as_ref() == Some(url) {
            self.current = None;
        }
        self.failed.retain(|(u, _)| u != url);
        self.failed.push((url.clone(), now));
    }

    /// A new node list from the relay map (an empty one is ignored: the
    /// region stays as it was). Returns whether the link must leave its
    /// node, which the new list no longer names.
    #[must_use]
    pub fn handle_nodes(&mut self, nodes: Vec<RelayUrl>) -> bool {
        let mut nodes = nodes.into_iter();
        let Some(first) = nodes.next() else { return false };
        let next = Self::new(first, nodes);
        self.failed.retain(|(u, _)| next.nodes.contains(u));
        self.nodes = next.nodes;
        self.current.as_ref().is_some_and(|c| !self.nodes.contains(c))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn url(n: u16) -> RelayUrl {
        format!("http://10.0.0.{n}:3000/derp").parse().unwrap()
    }

    #[test]
    fn dials_in_the_maps_order_without_duplicates() {
        let nodes = RegionNodes::new(url(1), [url(2), url(1), url(3)]);
        assert_eq!(nodes.nodes(), [url(1), url(2), url(3)]);
        assert_eq!(nodes.dial_order(Instant::now()), [url(1), url(2), url(3)]);
        assert_eq!(nodes.current(), None);
    }

    #[test]
    fn a_failed_node_goes_last_until_it_has_been_quiet_for_failed_for() {
        let t0 = Instant::now();
        let mut nodes = RegionNodes::new(url(1), [url(2), url(3)]);
        nodes.handle_connected(&url(1));
        // The preferred replica dies: the others first, it last.
        nodes.handle_failed(&url(1), t0);
        assert_eq!(nodes.current(), None);
        assert_eq!(nodes.dial_order(t0), [url(2), url(3), url(1)]);
        // The next one fails too: the older failure is retried first.
        nodes.handle_failed(&url(2), t0 + Duration::from_secs(1));
        assert_eq!(nodes.dial_order(t0 + Duration::from_secs(1)), [url(3), url(1), url(2)]);
        // Failures age out: back to the map's order.
        assert_eq!(
            nodes.dial_order(t0 + FAILED_FOR + Duration::from_secs(1)),
            [url(1), url(2), url(3)]
        );
        // A node that answers again is no longer demoted.
        nodes.handle_connected(&url(2));
        assert_eq!(nodes.dial_order(t0 + Duration::from_secs(2)), [url(2), url(3), url(1)]);
        assert_eq!(nodes.current(), Some(&url(2)));
    }

    #[test]
    fn a_map_change_moves_the_link_only_when_its_node_is_gone() {
        let t0 = Instant::now();
        let mut nodes = RegionNodes::new(url(1), [url(2), url(9)]);
        nodes.handle_connected(&url(2));
        nodes.handle_failed(&url(1), t0);
        // Another replica first now (the peer coordinates through it), ours still listed.
        assert!(!nodes.handle_nodes(vec![url(3), url(2), url(1), url(9)]));
        assert_eq!(nodes.nodes(), [url(3), url(2), url(1), url(9)]);
        assert_eq!(nodes.dial_order(t0), [url(3), url(2), url(9), url(1)]);
        // An empty list changes nothing.
        assert!(!nodes.handle_nodes(Vec::new()));
        assert_eq!(nodes.nodes().len(), 4);
        // Our replica left the map: move; the forgotten failure goes with it.
        assert!(nodes.handle_nodes(vec![url(3), url(9)]));
        assert_eq!(nodes.dial_order(t0), [url(3), url(9)]);
        // Not connected: nothing to leave.
        let mut idle = RegionNodes::new(url(1), []);
        assert!(!idle.handle_nodes(vec![url(2)]));
    }
}
