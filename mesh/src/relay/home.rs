//! Choosing the home relay region: sans-IO, on time the caller passes in.
//!
//! A node is reachable through exactly one relay region at a time, its
//! *home*, which it announces as `preferred_relay` so peers send there. The
//! I/O shell ([`super::Relays`]) measures each region's latency (a relay
//! round trip, netcheck-style) and tells [`HomeSelector`] whether the home
//! connection is up; the selector says when the home should change:
//!
//! - the first home is the fastest reachable region; regions within
//!   [`HomeConfig::equal_within`] of the fastest count as equal, and among
//!   equals the lowest region id wins, so the peers of one site meet on one
//!   relay instead of scattering over near-identical regions;
//! - a home that stays disconnected for [`HomeConfig::failover_after`] is
//!   left for the best other reachable region (a relay restart that comes
//!   back sooner keeps its clients);
//! - a reachable home is left only for a region faster by more than
//!   [`HomeConfig::switch_margin`] *and* `equal_within` (hysteresis, so two
//!   regions of similar latency do not make the node flap, each move costing
//!   every peer a node update).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::node::RegionId;

/// Thresholds of home region selection.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HomeConfig {
    /// A home disconnected this long is given up for another region.
    pub failover_after: Duration,
    /// Latencies this close count as equal (the lower region id wins).
    pub equal_within: Duration,
    /// A reachable home is left only for a region faster by this fraction.
    pub switch_margin: f64,
    /// Re-measure every region this often.
    pub probe_interval: Duration,
    /// A region that has not answered a probe within this is unreachable.
    pub probe_timeout: Duration,
}

impl Default for HomeConfig {
    fn default() -> Self {
        Self {
            failover_after: Duration::from_secs(2),
            equal_within: Duration::from_millis(10),
            switch_margin: 0.3,
            probe_interval: Duration::from_secs(30),
            probe_timeout: Duration::from_secs(3),
        }
    }
}

/// The home region state machine.
#[derive(Debug)]
pub struct HomeSelector {
    config: HomeConfig,
    /// The last measurement of each region: `None` is unreachable.
    latency: BTreeMap<RegionId, Option<Duration>>,
    home: Option<RegionId>,
    /// When the home connection went down, while it is down.
    home_down_since: Option<Instant>,
}

impl HomeSelector {
    /// A selector with no home and nothing measured.
    pub fn new(config: HomeConfig) -> Self {
        Self { config, latency: BTreeMap::new(), home: None, home_down_since: None }
    }

    /// The home a node with no home yet picks from these measurements (a
    /// region's round trip, `None` if it did not answer): the rule a mesh
    /// endpoint applies at bind time, for tools that measure the regions
    /// themselves (`coder netcheck`) to report the region the mesh would use.
    pub fn first_home(
        config: HomeConfig,
        latencies: impl IntoIterator<Item = (RegionId, Option<Duration>)>,
    ) -> Option<RegionId> {
        let mut selector = Self::new(config);
        for (region, latency) in latencies {
            selector.handle_latency(region, latency);
        }
        // Time matters only once a home has failed; there is none yet.
        selector.choose(Instant::now())
    }

    /// The current home.
    pub fn home(&self) -> Option<RegionId> {
        self.home
    }

    /// The last measured latencies of reachable regions.
    pub fn latencies(&self) -> impl Iterator<Item = (RegionId, Duration)> + '_ {
        self.latency.iter().filter_map(|(r, l)| l.map(|l| (*r, l)))
    }

    /// A measurement of `region`: its round trip, or `None` if it did not answer.
    pub fn handle_latency(&mut self, region: RegionId, latency: Option<Duration>) {
        self.latency.insert(region, latency);
    }

    /// The home connection went up or down.
    pub fn handle_home_connected(&mut self, connected: bool, now: Instant) {
        if connected {
            self.home_down_since = None;
        } else if self.home_down_since.is_none() {
            self.home_down_since = Some(now);
        }
    }

    /// When the selector next needs [`Self::poll_home`] without new input:
    /// the moment a down home has been down for `failover_after`.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.home_down_since.map(|since| since + self.config.failover_after)
    }

    /// Whether the home is down long enough to leave it.
    pub fn home_failed(&self, now: Instant) -> bool {
        self.poll_timeout().is_some_and(|at| now >= at)
    }

    /// Decides, from what was measured so far: `Some(region)` when the home
    /// changes to `region` (it is the new [`Self::home`] on return).
    pub fn poll_home(&mut self, now: Instant) -> Option<RegionId> {
        let next = self.choose(now)?;
        if Some(next) == self.home {
            return None;
        }
        tracing::debug!(from = ?self.home, to = next, "home relay region changes");
        self.home = Some(next);
        // The new home is connected (it just answered a probe).
        self.home_down_since = None;
        Some(next)
    }

    fn choose(&self, now: Instant) -> Option<RegionId> {
        let failed = self.home_failed(now);
        let candidates = self
            .latencies()
            .filter(|(region, _)| !(failed && Some(*region) == self.home))
            .collect::<Vec<_>>();
        let best = self.best(&candidates)?;
        let Some(home) = self.home else { return Some(best) };
        if failed {
            return Some(best);
        }
        let Some(Some(home_latency)) = self.latency.get(&home).copied() else {
            // Unmeasured or unanswered but still connected: keep it until the
            // connection itself says otherwise.
            return Some(home);
        };
        let best_latency = candidates.iter().find(|(r, _)| *r == best).map(|(_, l)| *l)?;
        let margin = home_latency.mul_f64(self.config.switch_margin).max(self.config.equal_within);
        if best_latency + margin < home_latency {
            Some(best)
        } else {
            Some(home)
        }
    }

    /// The fastest region, the lowest id among those within `equal_within` of it.
    fn best(&self, candidates: &[(RegionId, Duration)]) -> Option<RegionId> {
        let fastest = candidates.iter().map(|(_, l)| *l).min()?;
        candidates
            .iter()
            .filter(|(_, l)| *l <= fastest + self.config.equal_within)
            .map(|(r, _)| *r)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Option<Duration> {
        Some(Duration::from_millis(n))
    }

    #[test]
    fn first_home_is_the_fastest_with_ties_to_the_lowest_id() {
        let mut s = HomeSelector::new(HomeConfig::default());
        let now = Instant::now();
        assert_eq!(s.poll_home(now), None, "nothing measured, no home");
        s.handle_latency(999, ms(1));
        s.handle_latency(2, ms(3));
        s.handle_latency(1, ms(8));
        s.handle_latency(3, None);
        // All within 10 ms of the fastest: the lowest id.
        assert_eq!(s.poll_home(now), Some(1));
        assert_eq!(s.home(), Some(1));
        assert_eq!(s.poll_home(now), None, "no change");

        let mut s = HomeSelector::new(HomeConfig::default());
        s.handle_latency(1, ms(80));
        s.handle_latency(7, ms(20));
        s.handle_latency(9, None);
        assert_eq!(s.poll_home(now), Some(7), "clearly faster wins over a lower id");
    }

    #[test]
    fn first_home_applies_the_same_rule() {
        let pick = |l: &[(RegionId, Option<Duration>)]| {
            HomeSelector::first_home(HomeConfig::default(), l.iter().copied())
        };
        assert_eq!(pick(&[(999, ms(1)), (2, ms(3)), (1, ms(8)), (3, None)]), Some(1));
        assert_eq!(pick(&[(1, ms(80)), (7, ms(20)), (9, None)]), Some(7));
        assert_eq!(pick(&[(1, None)]), None);
        assert_eq!(pick(&[]), None);
    }

    #[test]
    fn a_home_down_for_failover_after_is_left_and_a_short_blip_is_not() {
        let config = HomeConfig::default();
        let mut s = HomeSelector::new(config.clone());
        let t0 = Instant::now();
        s.handle_latency(1, ms(2));
        s.handle_latency(2, ms(3));
        assert_eq!(s.poll_home(t0), Some(1));

        // A blip shorter than failover_after: stays.
        s.handle_home_connected(false, t0);
        assert_eq!(s.poll_timeout(), Some(t0 + config.failover_after));
        s.handle_latency(1, None);
        assert_eq!(s.poll_home(t0 + config.failover_after / 2), None);
        s.handle_home_connected(true, t0 + config.failover_after / 2);
        assert_eq!(s.poll_timeout(), None);
        assert_eq!(s.poll_home(t0 + config.failover_after * 3), None);
        assert_eq!(s.home(), Some(1));

        // Down for good: at failover_after (not before), the next region.
        let t1 = t0 + Duration::from_secs(60);
        s.handle_home_connected(false, t1);
        s.handle_home_connected(false, t1 + Duration::from_millis(500)); // keeps the first time
        assert_eq!(s.poll_home(t1 + config.failover_after - Duration::from_millis(1)), None);
        assert_eq!(s.poll_home(t1 + config.failover_after), Some(2));
        assert_eq!(s.poll_timeout(), None, "the new home is up");
        // The old region answering again is no reason to move back.
        s.handle_latency(1, ms(2));
        assert_eq!(s.poll_home(t1 + Duration::from_secs(90)), None);
        assert_eq!(s.home(), Some(2));
    }

    #[test]
    fn failover_waits_for_a_reachable_region() {
        let config = HomeConfig::default();
        let mut s = HomeSelector::new(config.clone());
        let t0 = Instant::now();
        s.handle_latency(1, ms(2));
        s.handle_latency(2, None);
        assert_eq!(s.poll_home(t0), Some(1));
        s.handle_home_connected(false, t0);
        s.handle_latency(1, None);
        let later = t0 + config.failover_after * 2;
        assert_eq!(s.poll_home(later), None, "nowhere to go: keep the home, retrying");
        s.handle_latency(2, ms(40));
        assert_eq!(s.poll_home(later), Some(2));
    }

    #[test]
    fn a_reachable_home_moves_only_for_a_clearly_faster_region() {
        let mut s = HomeSelector::new(HomeConfig::default());
        let now = Instant::now();
        s.handle_latency(1, ms(100));
        assert_eq!(s.poll_home(now), Some(1));
        // 25 % faster: inside the 30 % margin, stays.
        s.handle_latency(2, ms(75));
        assert_eq!(s.poll_home(now), None);
        // 40 % faster: moves.
        s.handle_latency(2, ms(60));
        assert_eq!(s.poll_home(now), Some(2));
        // Small latencies: the absolute margin (10 ms) applies.
        let mut s = HomeSelector::new(HomeConfig::default());
        s.handle_latency(1, ms(12));
        assert_eq!(s.poll_home(now), Some(1));
        s.handle_latency(2, ms(3));
        assert_eq!(s.poll_home(now), None, "9 ms faster is within equal_within");
        // An unanswered probe of a connected home does not move it.
        s.handle_latency(1, None);
        assert_eq!(s.poll_home(now), None);
    }
}
