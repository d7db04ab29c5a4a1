//! Exponential reconnect backoff with jitter, for clients and mesh links.

use std::time::Duration;

use rand::Rng;

#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        Self { initial, max, next: initial }
    }

    /// The next wait: doubles each time up to `max`, with ±25 % jitter so a
    /// relay restart does not bring every client back in the same instant.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        base.mul_f64(rand::thread_rng().gen_range(0.75..1.25))
    }

    pub(crate) fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_max_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
        let delays: Vec<_> = (0..4).map(|_| b.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(75) && delays[0] < Duration::from_millis(125));
        assert!(delays[3] >= Duration::from_millis(300) && delays[3] < Duration::from_millis(500));
        b.reset();
        assert!(b.next_delay() < Duration::from_millis(125));
    }
}
