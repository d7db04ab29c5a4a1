//! The replica's heartbeat task: records that this replica is alive, expires
//! replicas that stopped heartbeating, and reports each beat to the run loop.
//!
//! It runs apart from the run loop so that a heartbeat waiting on a
//! restarting Postgres never stalls the peers. After an outage (a failed
//! heartbeat, or the pub/sub listener reconnecting) it waits one heartbeat
//! timeout before expiring anyone: every replica's heartbeat went stale
//! during the outage, and the others need a beat of their own to catch up,
//! else a database restart would mark every other replica's peers lost.

use std::sync::Arc;

use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tokio_util::task::AbortOnDropHandle;
use uuid::Uuid;

use super::store::Store;
use super::Config;

/// What one successful heartbeat found.
#[derive(Debug, Default)]
pub(crate) struct Beat {
    /// This replica's row was missing: another declared it dead, or the
    /// database is new. Its state must be rewritten.
    pub declared_dead: bool,
    /// The heartbeat before this one failed: the database was away.
    pub recovered: bool,
    /// Replicas found dead (their peers are now marked lost).
    pub dead: Vec<Uuid>,
}

/// The heartbeat task; dropping it stops the task.
#[derive(Debug)]
pub(crate) struct Heartbeat {
    outage: Arc<Notify>,
    _task: AbortOnDropHandle<()>,
}

impl Heartbeat {
    /// Starts beating; beats go to `beats` (the first one has already been
    /// recorded by the caller).
    pub fn spawn(store: Store, config: Config, beats: mpsc::Sender<Beat>) -> Self {
        let outage = Arc::new(Notify::new());
        let task = tokio::spawn(run(store, config, beats, outage.clone()));
        Heartbeat { outage, _task: AbortOnDropHandle::new(task) }
    }

    /// The database was away (say, the listener reconnected): hold off
    /// expiring other replicas for a heartbeat timeout.
    pub fn outage(&self) {
        self.outage.notify_one();
    }
}

async fn run(store: Store, config: Config, beats: mpsc::Sender<Beat>, outage: Arc<Notify>) {
    let mut tick = tokio::time::interval_at(
        Instant::now() + config.heartbeat_interval,
        config.heartbeat_interval,
    );
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    // No expiry before this (set after an outage).
    let mut grace_until: Option<Instant> = None;
    let mut count: u64 = 0;
    loop {
        tokio::select! {
            biased;
            _ = outage.notified() => {
                grace_until = Some(Instant::now() + config.heartbeat_timeout);
                continue;
            }
            _ = tick.tick() => {}
        }
        count += 1;
        // A beat must not outlast the interval: a late beat is a failed one.
        let beat = tokio::time::timeout(config.heartbeat_interval, store.heartbeat()).await;
        let declared_dead = match beat {
            Ok(Ok(inserted)) => inserted,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "coordination: heartbeat failed");
                failing = true;
                continue;
            }
            Err(_) => {
                tracing::warn!("coordination: heartbeat timed out");
                failing = true;
                continue;
            }
        };
        let now = Instant::now();
        let recovered = std::mem::take(&mut failing);
        if recovered {
            tracing::info!("coordination: the database answers again");
            grace_until = Some(now + config.heartbeat_timeout);
        }
        let mut dead = Vec::new();
        if grace_until.is_none_or(|g| now >= g) {
            match store.expire_dead(config.heartbeat_timeout).await {
                Ok(d) => dead = d,
                Err(e) => tracing::warn!(error = %e, "coordination: cannot expire dead replicas"),
            }
        }
        if count.checked_rem(30) == Some(0) {
            if let Err(e) = store.collect_lost(config.lost_retention).await {
                tracing::warn!(error = %e, "coordination: cannot collect lost peers");
            }
        }
        if beats.send(Beat { declared_dead, recovered, dead }).await.is_err() {
            return;
        }
    }
}
