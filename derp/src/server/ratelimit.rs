//! A token bucket, driven by the caller's clock (sans-IO).
//!
//! The relay charges each client's sent packet bytes against its bucket and,
//! when the bucket is empty, stops reading from that client for the time
//! the bucket needs to refill: only the sender is slowed, and TCP pushes
//! the back-pressure to it.

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    bytes_per_second: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub(crate) fn new(bytes_per_second: u32, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            bytes_per_second: f64::from(bytes_per_second.max(1)),
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Charges `bytes`; returns how long to wait before reading more.
    /// The debt is allowed to go negative so large packets still pass.
    pub(crate) fn take(&mut self, bytes: usize, now: Instant) -> Option<Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.bytes_per_second).min(self.burst);
        self.tokens -= bytes as f64;
        if self.tokens >= 0.0 {
            None
        } else {
            Some(Duration::from_secs_f64(-self.tokens / self.bytes_per_second))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_throttle_then_refill() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(1000, 2000, t0);
        assert_eq!(bucket.take(2000, t0), None);
        assert_eq!(bucket.take(500, t0), Some(Duration::from_millis(500)));
        // After the wait the debt is paid and a second later 1000 more fit.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(bucket.take(0, t1), None);
        assert_eq!(bucket.take(1000, t1 + Duration::from_secs(1)), None);
    }

    #[test]
    fn refill_is_capped_at_burst() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(1000, 1000, t0);
        let later = t0 + Duration::from_secs(3600);
        assert_eq!(bucket.take(1000, later), None);
        assert!(bucket.take(1, later).is_some());
    }
}
