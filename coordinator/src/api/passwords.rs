//! Password checking for the handlers: the [`LoginThrottle`] behind a lock,
//! and a semaphore that bounds how many argon2 computations run at once.
//!
//! argon2 takes tens of milliseconds and ~19 MiB of memory per call on
//! tokio's blocking pool (up to 512 threads). At most `max(2, cores)` run at
//! once; a request that cannot get a slot within [`HASH_WAIT`] gets a 503
//! instead of queueing without bound. The permit moves into the blocking task,
//! so a client that hangs up does not free a slot its hash still occupies.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use super::error::ApiError;
use super::throttle::{Attempt, LoginThrottle, Outcome, Throttled};
use crate::secrets;

/// How long a request waits for a hashing slot before it gets a 503.
pub const HASH_WAIT: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub struct Passwords {
    /// Held only for map operations, never across an await.
    throttle: Mutex<LoginThrottle>,
    hashing: Arc<Semaphore>,
    /// How long a request waits for a hashing slot ([`HASH_WAIT`]).
    hash_wait: Duration,
}

impl Default for Passwords {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Passwords::new(LoginThrottle::default(), cores.max(2), HASH_WAIT)
    }
}

/// Why a password was not checked.
#[derive(Debug)]
pub enum Refusal {
    /// Too many failures for the login or from the address.
    Throttled(Throttled),
    /// Every hashing slot stayed busy for [`HASH_WAIT`].
    Busy,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Throttled(t) => {
                let secs = t.retry_after.as_secs() + u64::from(t.retry_after.subsec_nanos() > 0);
                let err = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "Too many failed login attempts for this account or from this address.",
                )
                .detail(format!("Try again in {secs} seconds."));
                ([(header::RETRY_AFTER, secs.to_string())], err).into_response()
            }
            Refusal::Busy => {
                let err = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The server is busy checking other passwords.",
                )
                .detail("Try again in a moment.");
                ([(header::RETRY_AFTER, "1")], err).into_response()
            }
        }
    }
}

impl Passwords {
    pub fn new(throttle: LoginThrottle, concurrent_hashes: usize, hash_wait: Duration) -> Self {
        Passwords {
            throttle: Mutex::new(throttle),
            hashing: Arc::new(Semaphore::new(concurrent_hashes.max(1))),
            hash_wait,
        }
    }

    fn throttle(&self) -> std::sync::MutexGuard<'_, LoginThrottle> {
        self.throttle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts a login for `logins` from `ip`, or refuses it without
    /// touching the database or the password.
    pub fn begin_login(&self, logins: &[&str], ip: IpAddr) -> Result<LoginAttempt<'_>, Refusal> {
        let attempt =
            self.throttle().begin(logins, ip, Instant::now()).map_err(Refusal::Throttled)?;
        Ok(LoginAttempt { passwords: self, attempt: Some(attempt), ip })
    }

    /// Runs `f` on the blocking pool once a hashing slot is free.
    async fn hashing<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let permit = tokio::time::timeout(self.hash_wait, self.hashing.clone().acquire_owned())
            .await
            .map_err(|_| HashError::Busy)?
            .map_err(|_| HashError::Busy)?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            f()
        })
        .await
        .map_err(|e| HashError::Internal(e.to_string()))
    }

    /// Hashes a new password (bounded like verification).
    pub async fn hash(&self, password: String) -> Result<String, ApiError> {
        match self.hashing(move || secrets::hash_password(&password)).await {
            Ok(Ok(hash)) => Ok(hash),
            Ok(Err(e)) => Err(ApiError::internal(e)),
            Err(HashError::Busy) => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "The server is busy hashing other passwords.",
            )
            .detail("Try again in a moment.")),
            Err(HashError::Internal(e)) => Err(ApiError::internal(e)),
        }
    }
}

#[derive(Debug)]
enum HashError {
    Busy,
    Internal(String),
}

/// A login the throttle let through. Dropped unfinished (the client hung up
/// mid-check), it counts as a failure: the guess was made.
#[derive(Debug)]
#[must_use]
pub struct LoginAttempt<'a> {
    passwords: &'a Passwords,
    attempt: Option<Attempt>,
    ip: IpAddr,
}

impl LoginAttempt<'_> {
    /// Checks `password` against `hash` (`None`: an unknown user, checked
    /// against a dummy hash so that it takes as long). `Err` only when no
    /// slot freed up; the attempt is then not counted.
    pub async fn verify(
        &mut self,
        password: String,
        hash: Option<String>,
    ) -> Result<bool, Response> {
        let checked = self
            .passwords
            .hashing(move || {
                let hash = hash.as_deref().unwrap_or_else(|| secrets::dummy_password_hash());
                secrets::verify_password(&password, hash)
            })
            .await;
        match checked {
            Ok(ok) => Ok(ok),
            Err(HashError::Busy) => {
                self.finish(Outcome::NotTried);
                Err(Refusal::Busy.into_response())
            }
            Err(HashError::Internal(e)) => {
                self.finish(Outcome::NotTried);
                Err(ApiError::internal(e).into_response())
            }
        }
    }

    pub fn finish(&mut self, outcome: Outcome) {
        let Some(attempt) = self.attempt.take() else { return };
        let locked = self.passwords.throttle().finish(attempt, outcome, Instant::now());
        if let Some(d) = locked.account {
            tracing::warn!(ip = %self.ip, lockout_secs = d.as_secs(), "login locked for an account after repeated failures");
        }
        if let Some(d) = locked.address {
            tracing::warn!(ip = %self.ip, lockout_secs = d.as_secs(), "logins from an address locked after repeated failures");
        }
    }
}

impl Drop for LoginAttempt<'_> {
    fn drop(&mut self) {
        self.finish(Outcome::Failure);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn no_more_than_the_bound_hash_at_once() {
        let passwords = Arc::new(Passwords::new(LoginThrottle::default(), 2, HASH_WAIT));
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let tasks = (0..8).map(|_| {
            let (passwords, running, most) = (passwords.clone(), running.clone(), most.clone());
            async move {
                passwords
                    .hashing(move || {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        // Stands in for argon2's work.
                        std::thread::sleep(Duration::from_millis(20));
                        running.fetch_sub(1, Ordering::SeqCst);
                    })
                    .await
                    .unwrap();
            }
        });
        futures::future::join_all(tasks).await;
        assert!(most.load(Ordering::SeqCst) <= 2, "{most:?} hashed at once");
    }

    #[tokio::test]
    async fn a_login_that_gets_no_hashing_slot_is_answered_503_and_not_counted() {
        let passwords = Passwords::new(LoginThrottle::default(), 1, Duration::from_millis(10));
        let _busy = passwords.hashing.clone().acquire_owned().await.unwrap();
        let ip = IpAddr::from([192, 0, 2, 1]);
        for _ in 0..10 {
            let mut attempt = passwords.begin_login(&["ivan"], ip).unwrap();
            let resp = attempt.verify("pw".into(), None).await.unwrap_err();
            assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert!(resp.headers().contains_key(header::RETRY_AFTER));
        }
        // Ten refusals for want of a slot used none of ivan's five tries.
        assert!(passwords.begin_login(&["ivan"], ip).is_ok());
    }
}
