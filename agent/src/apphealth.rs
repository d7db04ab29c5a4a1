//! App health checks (`coder_app` `healthcheck` blocks), as Coder's agent
//! runs them: each checked app is GET'ed every `interval` seconds; a 2xx or
//! 3xx answer is healthy, `threshold` consecutive failures (errors, timeouts,
//! other statuses) make it unhealthy, and one success makes it healthy again.
//! Only changes are reported to the coordinator.
//!
//! [`Checker`] is the sans-IO state machine (time is passed in); [`spawn`]
//! runs one task per app plus one reporter.

use std::collections::BTreeMap;
use std::time::Duration;

use codersdk::{AppHealth, Client, PatchAppHealthRequest, WorkspaceApp};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use uuid::Uuid;

/// Longest a single check may take; Coder's checks are short too, so a hung
/// app counts as a failure rather than stalling the schedule.
const MAX_CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause before re-sending a report the coordinator did not take.
const REPORT_RETRY: Duration = Duration::from_secs(1);

/// One app's health: when the next check is due and what the results so far
/// make of it.
#[derive(Debug, Clone)]
pub struct Checker {
    interval: Duration,
    threshold: u32,
    failures: u32,
    health: AppHealth,
    next: Instant,
}

impl Checker {
    /// Starts `initializing`, with the first check due at once. An interval
    /// or threshold below 1 counts as 1.
    pub fn new(now: Instant, interval_seconds: i64, threshold: i64) -> Self {
        Checker {
            interval: Duration::from_secs(interval_seconds.clamp(1, 86_400) as u64),
            threshold: threshold.clamp(1, 1_000) as u32,
            failures: 0,
            health: AppHealth::Initializing,
            next: now,
        }
    }

    pub fn health(&self) -> AppHealth {
        self.health
    }

    /// When the next check is due.
    pub fn next_check(&self) -> Instant {
        self.next
    }

    /// How long one check may take: the interval, at most [`MAX_CHECK_TIMEOUT`].
    pub fn timeout(&self) -> Duration {
        self.interval.min(MAX_CHECK_TIMEOUT)
    }

    /// Records a check that finished at `now`; returns the new health if it
    /// changed. The next check is due an interval later.
    pub fn record(&mut self, now: Instant, ok: bool) -> Option<AppHealth> {
        self.next = now + self.interval;
        let before = self.health;
        if ok {
            self.failures = 0;
            self.health = AppHealth::Healthy;
        } else {
            self.failures = self.failures.saturating_add(1);
            if self.failures >= self.threshold {
                self.health = AppHealth::Unhealthy;
            }
        }
        (self.health != before).then_some(self.health)
    }
}

/// Runs the checks of every app with a healthcheck until the set is dropped.
pub fn spawn(client: Client, apps: &[WorkspaceApp]) -> JoinSet<()> {
    let mut set = JoinSet::new();
    let checked: Vec<_> =
        apps.iter().filter_map(|a| a.healthcheck.clone().map(|h| (a.id, h))).collect();
    if checked.is_empty() {
        return set;
    }
    // Checks must reach the workspace's own loopback and see redirects as
    // answers (3xx is healthy), never follow them or go through a proxy.
    let http = match reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "cannot build the app health HTTP client");
            return set;
        }
    };
    let (tx, rx) = mpsc::unbounded_channel();
    for (id, h) in checked {
        let checker = Checker::new(Instant::now(), h.interval, h.threshold);
        set.spawn(run_one(http.clone(), id, h.url, checker, tx.clone()));
    }
    set.spawn(report(client, rx));
    set
}

async fn run_one(
    http: reqwest::Client,
    id: Uuid,
    url: String,
    mut checker: Checker,
    changes: mpsc::UnboundedSender<(Uuid, AppHealth)>,
) {
    loop {
        tokio::time::sleep_until(checker.next_check()).await;
        let ok = check(&http, &url, checker.timeout()).await;
        if let Some(h) = checker.record(Instant::now(), ok) {
            tracing::info!(app = %id, health = h.as_str(), "app health changed");
            if changes.send((id, h)).is_err() {
                return;
            }
        }
    }
}

/// One GET: healthy on a 2xx or 3xx answer within `timeout`.
async fn check(http: &reqwest::Client, url: &str, timeout: Duration) -> bool {
    match tokio::time::timeout(timeout, http.get(url).send()).await {
        Ok(Ok(r)) => r.status().is_success() || r.status().is_redirection(),
        Ok(Err(e)) => {
            tracing::debug!(url, error = %e, "app health check failed");
            false
        }
        Err(_) => false,
    }
}

/// Sends the changes, coalesced: while a report is failing, later changes
/// replace earlier ones of the same app, and the latest state is retried.
async fn report(client: Client, mut rx: mpsc::UnboundedReceiver<(Uuid, AppHealth)>) {
    let mut pending = BTreeMap::new();
    loop {
        if pending.is_empty() {
            match rx.recv().await {
                Some((id, h)) => {
                    pending.insert(id, h);
                }
                None => return,
            }
        }
        while let Ok((id, h)) = rx.try_recv() {
            pending.insert(id, h);
        }
        let req = PatchAppHealthRequest { healths: pending.clone() };
        match client.patch_agent_app_health(&req).await {
            Ok(()) => pending.clear(),
            Err(e) => {
                tracing::debug!(error = %e, "app health report failed; retrying");
                tokio::time::sleep(REPORT_RETRY).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn threshold_failures_make_unhealthy_and_one_success_heals() {
        let t0 = Instant::now();
        let mut c = Checker::new(t0, 1, 2);
        assert_eq!(c.health(), AppHealth::Initializing);
        assert_eq!(c.next_check(), t0, "the first check is due at once");
        // A failure below the threshold while initializing changes nothing.
        assert_eq!(c.record(t0, false), None);
        assert_eq!(c.health(), AppHealth::Initializing);
        assert_eq!(c.next_check(), t0 + S);
        assert_eq!(c.record(t0 + S, true), Some(AppHealth::Healthy));
        // Healthy again: no report (only changes are reported).
        assert_eq!(c.record(t0 + 2 * S, true), None);
        assert_eq!(c.record(t0 + 3 * S, false), None, "one failure is below the threshold");
        assert_eq!(c.health(), AppHealth::Healthy);
        assert_eq!(c.record(t0 + 4 * S, false), Some(AppHealth::Unhealthy));
        assert_eq!(c.record(t0 + 5 * S, false), None, "still unhealthy, nothing to report");
        assert_eq!(c.next_check(), t0 + 6 * S);
        assert_eq!(c.record(t0 + 6 * S, true), Some(AppHealth::Healthy));
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let t0 = Instant::now();
        let mut c = Checker::new(t0, 10, 3);
        assert_eq!(c.record(t0, true), Some(AppHealth::Healthy));
        for (i, ok) in [false, false, true, false, false].into_iter().enumerate() {
            assert_eq!(c.record(t0 + (i as u32 + 1) * 10 * S, ok), None, "check {i}");
        }
        assert_eq!(c.health(), AppHealth::Healthy);
        assert_eq!(c.record(t0 + 60 * S, false), Some(AppHealth::Unhealthy));
    }

    #[test]
    fn never_answering_goes_from_initializing_to_unhealthy() {
        let t0 = Instant::now();
        let mut c = Checker::new(t0, 0, 0);
        // Interval and threshold below 1 count as 1.
        assert_eq!(c.timeout(), S);
        assert_eq!(c.record(t0, false), Some(AppHealth::Unhealthy));
        assert_eq!(c.next_check(), t0 + S);
        // The timeout never exceeds the cap, whatever the interval.
        assert_eq!(Checker::new(t0, 3600, 1).timeout(), MAX_CHECK_TIMEOUT);
    }
}
