//! Login throttling, sans-IO: counts failed password logins per account and
//! per source address, and says whether a new attempt may run and, if not,
//! when it may.
//!
//! The handler calls [`LoginThrottle::begin`] before it looks at the password
//! (a throttled attempt costs no database query and no argon2), then
//! [`LoginThrottle::finish`] with the outcome. An attempt in flight counts
//! against the budget until it finishes, so a burst of parallel guesses gets
//! no more tries than a sequence of them.
//!
//! Each key (a lower-cased login, or an address) gets `max_failures` failures
//! within `window`; the one that reaches the limit locks the key for
//! `lockout`, doubling with each further lockout up to `max_lockout`. A key
//! that has been locked is forgotten `forget_after` its last failure or the
//! end of its lockout, whichever is later; one that never was, when its
//! window ends. A successful login clears the account's keys (not the
//! address's: a valid account of one's own must not reset a spraying budget).
//!
//! Memory is bounded: each map holds at most `max_entries` keys. When full,
//! expired keys are dropped first, then the ones closest to being forgotten
//! (never one with an attempt in flight), down to 90 % so the sweep is
//! amortized.
//!
//! The state is per process: with several replicas behind a balancer, each
//! replica grants its own budget.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// How much one key may fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Failures within `window` that lock the key.
    pub max_failures: u32,
    pub window: Duration,
    /// The first lockout; each consecutive one doubles, up to `max_lockout`.
    pub lockout: Duration,
    pub max_lockout: Duration,
    /// A key that has been locked is remembered this long after its last
    /// failure or lockout, so waiting out one lockout doesn't reset the back-off.
    pub forget_after: Duration,
    /// Keys tracked at most.
    pub max_entries: usize,
}

impl Policy {
    /// Per account: 5 failures in 5 minutes lock it for 1 minute, then 2, 4,
    /// … up to an hour; the back-off is forgotten after an hour of quiet.
    pub const ACCOUNT: Policy = Policy {
        max_failures: 5,
        window: Duration::from_secs(5 * 60),
        lockout: Duration::from_secs(60),
        max_lockout: Duration::from_secs(60 * 60),
        forget_after: Duration::from_secs(60 * 60),
        max_entries: 50_000,
    };

    /// Per source address (an IPv6 /64): 30 failures in 5 minutes, across
    /// any accounts, lock it for 1 minute, doubling up to 15 minutes.
    pub const ADDRESS: Policy = Policy {
        max_failures: 30,
        window: Duration::from_secs(5 * 60),
        lockout: Duration::from_secs(60),
        max_lockout: Duration::from_secs(15 * 60),
        forget_after: Duration::from_secs(60 * 60),
        max_entries: 50_000,
    };

    fn lockout_after(&self, lockouts: u32) -> Duration {
        let factor = 1u32.checked_shl(lockouts.saturating_sub(1)).unwrap_or(u32::MAX);
        self.lockout.saturating_mul(factor).min(self.max_lockout)
    }
}

/// When an attempt that was refused may be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    pub retry_after: Duration,
}

/// Retry-after for a key whose budget is taken by attempts still in flight.
const IN_FLIGHT_RETRY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
struct Entry {
    /// Failures since `window_start`.
    failures: u32,
    window_start: Instant,
    /// Consecutive lockouts (the back-off exponent).
    lockouts: u32,
    /// Locked while `now < locked_until`.
    locked_until: Instant,
    last_failure: Instant,
    in_flight: u32,
}

impl Entry {
    fn new(now: Instant) -> Self {
        Entry {
            failures: 0,
            window_start: now,
            lockouts: 0,
            locked_until: now,
            last_failure: now,
            in_flight: 0,
        }
    }

    fn failures_in_window(&self, policy: &Policy, now: Instant) -> u32 {
        if now >= self.window_start + policy.window {
            0
        } else {
            self.failures
        }
    }

    /// When this entry carries no information any more.
    fn forget_at(&self, policy: &Policy) -> Instant {
        if self.lockouts == 0 {
            self.window_start + policy.window
        } else {
            self.locked_until.max(self.last_failure) + policy.forget_after
        }
    }

    fn expired(&self, policy: &Policy, now: Instant) -> bool {
        self.in_flight == 0 && now >= self.forget_at(policy)
    }
}

/// One budget per key.
#[derive(Debug)]
pub struct Limiter<K> {
    policy: Policy,
    entries: HashMap<K, Entry>,
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    pub fn new(policy: Policy) -> Self {
        Limiter { policy, entries: HashMap::new() }
    }

    /// `Err` when `key` may not try now.
    pub fn check(&self, key: &K, now: Instant) -> Result<(), Throttled> {
        let Some(e) = self.entries.get(key) else { return Ok(()) };
        if now < e.locked_until {
            return Err(Throttled { retry_after: e.locked_until - now });
        }
        if e.failures_in_window(&self.policy, now).saturating_add(e.in_flight)
            >= self.policy.max_failures
        {
            return Err(Throttled { retry_after: IN_FLIGHT_RETRY });
        }
        Ok(())
    }

    fn begin(&mut self, key: &K, now: Instant) {
        if !self.entries.contains_key(key) {
            self.make_room(now);
        }
        let e = self.entries.entry(key.clone()).or_insert_with(|| Entry::new(now));
        e.in_flight = e.in_flight.saturating_add(1);
    }

    /// Counts a failure; returns the lockout it started, if any.
    fn fail(&mut self, key: &K, now: Instant) -> Option<Duration> {
        if !self.entries.contains_key(key) {
            self.make_room(now);
        }
        let policy = self.policy;
        let e = self.entries.entry(key.clone()).or_insert_with(|| Entry::new(now));
        e.in_flight = e.in_flight.saturating_sub(1);
        if e.failures_in_window(&policy, now) == 0 {
            e.failures = 0;
            e.window_start = now;
        }
        e.failures = e.failures.saturating_add(1);
        e.last_failure = now;
        if e.failures < policy.max_failures {
            return None;
        }
        e.lockouts = e.lockouts.saturating_add(1);
        let lockout = policy.lockout_after(e.lockouts);
        e.locked_until = e.locked_until.max(now + lockout);
        e.failures = 0;
        e.window_start = now;
        Some(lockout)
    }

    /// Ends an attempt that neither failed nor should clear the key.
    fn release(&mut self, key: &K, now: Instant) {
        if let Some(e) = self.entries.get_mut(key) {
            e.in_flight = e.in_flight.saturating_sub(1);
            let blank = e.in_flight == 0 && e.failures == 0 && e.lockouts == 0;
            if blank || e.expired(&self.policy, now) {
                self.entries.remove(key);
            }
        }
    }

    /// Ends an attempt that succeeded: the key starts afresh.
    fn clear(&mut self, key: &K, now: Instant) {
        if let Some(e) = self.entries.get_mut(key) {
            let in_flight = e.in_flight.saturating_sub(1);
            if in_flight == 0 {
                self.entries.remove(key);
            } else {
                *e = Entry { in_flight, ..Entry::new(now) };
            }
        }
    }

    /// Keeps one slot free for a new key.
    fn make_room(&mut self, now: Instant) {
        if self.entries.len() < self.policy.max_entries {
            return;
        }
        let policy = self.policy;
        self.entries.retain(|_, e| !e.expired(&policy, now));
        let target = self.policy.max_entries / 10 * 9;
        if self.entries.len() < self.policy.max_entries {
            return;
        }
        let mut idle: Vec<(Instant, K)> = self
            .entries
            .iter()
            .filter(|(_, e)| e.in_flight == 0)
            .map(|(k, e)| (e.forget_at(&policy), k.clone()))
            .collect();
        let excess = self.entries.len().saturating_sub(target).min(idle.len());
        if excess == 0 {
            return;
        }
        idle.select_nth_unstable_by_key(excess - 1, |(at, _)| *at);
        for (_, k) in idle.iter().take(excess) {
            self.entries.remove(k);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// A login as a fixed-size key: SHA-256 of the lower-cased email or username,
/// so an attacker's megabyte-long "usernames" cost 32 bytes each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AccountKey([u8; 32]);

impl AccountKey {
    pub fn new(login: &str) -> Self {
        AccountKey(Sha256::digest(login.to_lowercase().as_bytes()).into())
    }
}

/// A source address; IPv6 by its /64, which one subscriber usually holds whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddressKey(IpAddr);

impl AddressKey {
    pub fn new(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V6(v6) => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                AddressKey(IpAddr::V6(bits.into()))
            }
            v4 => AddressKey(v4),
        }
    }
}

/// An attempt [`LoginThrottle::begin`] let through; hand it back to
/// [`LoginThrottle::finish`].
#[derive(Debug)]
#[must_use = "an attempt holds budget until it is finished"]
pub struct Attempt {
    accounts: Vec<AccountKey>,
    address: AddressKey,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The password matched: the account's keys are cleared.
    Success,
    /// A wrong password, an unknown or suspended account.
    Failure,
    /// The password was never checked (say, the server was too busy).
    NotTried,
}

/// Lockouts a finished attempt started, for the log.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Lockouts {
    pub account: Option<Duration>,
    pub address: Option<Duration>,
}

/// Per-account and per-address budgets of failed logins.
#[derive(Debug)]
pub struct LoginThrottle {
    accounts: Limiter<AccountKey>,
    addresses: Limiter<AddressKey>,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        Self::new(Policy::ACCOUNT, Policy::ADDRESS)
    }
}

impl LoginThrottle {
    pub fn new(accounts: Policy, addresses: Policy) -> Self {
        LoginThrottle { accounts: Limiter::new(accounts), addresses: Limiter::new(addresses) }
    }

    /// Lets an attempt for `logins` (the non-empty email and username the
    /// client presented) from `ip` run, or says when it may.
    pub fn begin(
        &mut self,
        logins: &[&str],
        ip: IpAddr,
        now: Instant,
    ) -> Result<Attempt, Throttled> {
        let mut accounts: Vec<AccountKey> =
            logins.iter().filter(|l| !l.is_empty()).map(|l| AccountKey::new(l)).collect();
        accounts.dedup();
        let address = AddressKey::new(ip);
        let refusals = accounts
            .iter()
            .map(|k| self.accounts.check(k, now))
            .chain(std::iter::once(self.addresses.check(&address, now)))
            .filter_map(Result::err);
        if let Some(longest) = refusals.max_by_key(|t| t.retry_after) {
            return Err(longest);
        }
        for k in &accounts {
            self.accounts.begin(k, now);
        }
        self.addresses.begin(&address, now);
        Ok(Attempt { accounts, address })
    }

    pub fn finish(&mut self, attempt: Attempt, outcome: Outcome, now: Instant) -> Lockouts {
        let mut locked = Lockouts::default();
        match outcome {
            Outcome::Success => {
                for k in &attempt.accounts {
                    self.accounts.clear(k, now);
                }
                self.addresses.release(&attempt.address, now);
            }
            Outcome::Failure => {
                for k in &attempt.accounts {
                    locked.account = locked.account.max(self.accounts.fail(k, now));
                }
                locked.address = self.addresses.fail(&attempt.address, now);
            }
            Outcome::NotTried => {
                for k in &attempt.accounts {
                    self.accounts.release(k, now);
                }
                self.addresses.release(&attempt.address, now);
            }
        }
        locked
    }

    /// Keys tracked (accounts, addresses).
    #[cfg(test)]
    fn len(&self) -> (usize, usize) {
        (self.accounts.len(), self.addresses.len())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn fail(
        t: &mut LoginThrottle,
        login: &str,
        from: &str,
        now: Instant,
    ) -> Result<Lockouts, Throttled> {
        let a = t.begin(&[login], ip(from), now)?;
        Ok(t.finish(a, Outcome::Failure, now))
    }

    #[test]
    fn five_failures_lock_the_account_with_growing_back_off() {
        let mut t = LoginThrottle::default();
        let t0 = Instant::now();
        for i in 0..4 {
            assert_eq!(fail(&mut t, "Alice", "192.0.2.1", t0).unwrap(), Lockouts::default(), "{i}");
        }
        let locked = fail(&mut t, "alice", "192.0.2.2", t0).unwrap();
        assert_eq!(locked.account, Some(MIN));
        // Locked for everyone, whatever the case of the login or the address.
        let err = t.begin(&["ALICE"], ip("198.51.100.7"), t0 + MIN / 2).unwrap_err();
        assert_eq!(err.retry_after, MIN / 2);
        // Another account is unaffected.
        assert!(fail(&mut t, "bob", "192.0.2.1", t0).is_ok());
        // After the lockout: five more tries, then twice as long.
        let t1 = t0 + MIN;
        for _ in 0..4 {
            assert_eq!(fail(&mut t, "alice", "192.0.2.1", t1).unwrap().account, None);
        }
        assert_eq!(fail(&mut t, "alice", "192.0.2.1", t1).unwrap().account, Some(2 * MIN));
        let t2 = t1 + 2 * MIN;
        for _ in 0..4 {
            fail(&mut t, "alice", "192.0.2.1", t2).unwrap();
        }
        assert_eq!(fail(&mut t, "alice", "192.0.2.1", t2).unwrap().account, Some(4 * MIN));
        // The back-off is capped.
        let mut now = t2 + 4 * MIN;
        let mut last = None;
        for _ in 0..10 {
            for _ in 0..5 {
                last = fail(&mut t, "alice", "192.0.2.1", now).unwrap().account.or(last);
            }
            now += last.unwrap();
        }
        assert_eq!(last, Some(Policy::ACCOUNT.max_lockout));
    }

    #[test]
    fn failures_outside_the_window_do_not_add_up() {
        let mut t = LoginThrottle::default();
        let t0 = Instant::now();
        for i in 0..20 {
            // Four failures per window, forever: never locked.
            let now = t0 + Policy::ACCOUNT.window * (i / 4);
            assert_eq!(fail(&mut t, "carol", "192.0.2.1", now).unwrap().account, None, "{i}");
        }
    }

    #[test]
    fn success_clears_the_account_but_not_the_address() {
        let mut t = LoginThrottle::default();
        let t0 = Instant::now();
        for _ in 0..4 {
            fail(&mut t, "dave", "192.0.2.1", t0).unwrap();
        }
        let a = t.begin(&["dave"], ip("192.0.2.1"), t0).unwrap();
        t.finish(a, Outcome::Success, t0);
        for _ in 0..4 {
            assert_eq!(fail(&mut t, "dave", "192.0.2.1", t0).unwrap().account, None);
        }
        // The address kept its eight failures: 22 more lock it.
        for i in 0..22 {
            let locked = fail(&mut t, &format!("user{i}"), "192.0.2.1", t0).unwrap();
            assert_eq!(locked.address.is_some(), i == 21, "{i}");
        }
        let err = t.begin(&["erin"], ip("192.0.2.1"), t0).unwrap_err();
        assert_eq!(err.retry_after, MIN);
        assert!(t.begin(&["erin"], ip("192.0.2.2"), t0).is_ok());
    }

    #[test]
    fn attempts_in_flight_count_against_the_budget() {
        let mut t = LoginThrottle::default();
        let t0 = Instant::now();
        let attempts: Vec<Attempt> =
            (0..5).map(|_| t.begin(&["frank"], ip("192.0.2.1"), t0).unwrap()).collect();
        let err = t.begin(&["frank"], ip("192.0.2.9"), t0).unwrap_err();
        assert_eq!(err.retry_after, IN_FLIGHT_RETRY);
        let mut locked = None;
        for a in attempts {
            locked = t.finish(a, Outcome::Failure, t0).account.or(locked);
        }
        assert_eq!(locked, Some(MIN));
        // Not tried: the budget comes back.
        let a = t.begin(&["grace"], ip("192.0.2.1"), t0).unwrap();
        t.finish(a, Outcome::NotTried, t0);
        assert_eq!(t.len().0, 1, "only frank is remembered");
    }

    #[test]
    fn email_and_username_are_both_charged() {
        let mut t = LoginThrottle::default();
        let t0 = Instant::now();
        for _ in 0..5 {
            let a = t.begin(&["heidi@example.com", "heidi"], ip("192.0.2.1"), t0).unwrap();
            t.finish(a, Outcome::Failure, t0);
        }
        assert!(t.begin(&["heidi"], ip("192.0.2.2"), t0).is_err());
        assert!(t.begin(&["HEIDI@example.com"], ip("192.0.2.2"), t0).is_err());
    }

    #[test]
    fn ipv6_is_throttled_by_its_64_and_mapped_v4_as_v4() {
        assert_eq!(
            AddressKey::new(ip("2001:db8:1:2:aaaa::1")),
            AddressKey::new(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(AddressKey::new(ip("2001:db8:1:2::1")), AddressKey::new(ip("2001:db8:1:3::1")));
        assert_eq!(AddressKey::new(ip("::ffff:192.0.2.1")), AddressKey::new(ip("192.0.2.1")));
    }

    #[test]
    fn state_is_bounded_and_expired_keys_go_first() {
        let policy = Policy { max_entries: 100, ..Policy::ACCOUNT };
        let mut t = LoginThrottle::new(policy, Policy { max_entries: 100, ..Policy::ADDRESS });
        let t0 = Instant::now();
        // A locked account that must survive the flood.
        for _ in 0..5 {
            fail(&mut t, "victim", "192.0.2.1", t0).unwrap();
        }
        for i in 0..10_000u32 {
            let from = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            let a = t.begin(&[&format!("spray{i}")], from, t0).unwrap();
            t.finish(a, Outcome::Failure, t0);
            let (accounts, addresses) = t.len();
            assert!(accounts <= 100 && addresses <= 100, "{accounts} {addresses}");
        }
        assert!(t.begin(&["victim"], ip("192.0.2.3"), t0).is_err(), "the lockout survived");
        // Once the old keys have expired, the next sweep drops them all.
        let later = t0 + Policy::ACCOUNT.forget_after + 2 * MIN;
        for i in 0..100u32 {
            let from = IpAddr::from(std::net::Ipv4Addr::from(0x0b00_0000 + i));
            let a = t.begin(&[&format!("late{i}")], from, later).unwrap();
            t.finish(a, Outcome::Failure, later);
        }
        // Every old key was swept; only the hundred late ones are left.
        assert_eq!(t.len(), (100, 100));
    }
}
