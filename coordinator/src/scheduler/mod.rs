//! The autostart/autostop scheduler (Coder's `autobuild` lifecycle
//! executor): a task in every coderd that, every `interval`, fires the
//! transitions that are due as ordinary builds.
//!
//! Each tick runs [`tick`]: in one transaction it locks due workspaces with
//! `SELECT … FOR UPDATE SKIP LOCKED` (running builds whose deadline passed;
//! workspaces whose autostart minute came), re-reads each under its lock,
//! and inserts the stop or start build through the same function a user's
//! build takes (`api::workspaces::insert_next_build`: job, `NOTIFY`, audit
//! row), initiated by the workspace's owner with reason `autostop` or
//! `autostart`. The new latest build (or, for autostart, the moved
//! `next_start_at`) is the mark that the transition fired, committed with
//! the build: a coderd that dies before the commit fired nothing, and one
//! that dies after has nothing left to fire, so a restart neither loses nor
//! repeats a transition. Replicas skip each other's locked rows; one that
//! read a row just before another committed sees the new build when it
//! re-checks under the lock (and the build-number constraint would refuse a
//! second build anyway).
//!
//! When more than one batch is due, [`LANES`] transactions fire batches at
//! once (each skips the rows the others hold).
//!
//! Each workspace is fired inside a savepoint, so one that cannot be built
//! (a template version that no longer imports) is logged and left for the
//! next tick without holding up the others.

pub mod cron;

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use uuid::Uuid;

use crate::api::audit::{Actor, Origin};
use crate::api::workspaces::{insert_next_build, BuildReason, NextBuild};
use crate::api::AppState;
use crate::database::{builds, jobs, schedules, workspaces};
use codersdk::{ProvisionerJobStatus, Transition};

/// Workspaces locked per transaction.
const BATCH: i64 = 100;

/// What one tick did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Fired {
    /// Workspaces a stop build was started for.
    pub stopped: Vec<Uuid>,
    /// Workspaces a start build was started for.
    pub started: Vec<Uuid>,
}

/// Why a tick failed (its transaction rolled back; nothing fired).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TickError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

/// The running scheduler; dropping it stops the task.
#[derive(Debug)]
pub struct Scheduler {
    cancel: CancellationToken,
    task: AbortOnDropHandle<()>,
}

impl Scheduler {
    /// Starts ticking every `interval`.
    pub fn spawn(state: AppState, interval: Duration) -> Scheduler {
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run(state, interval, cancel.clone()));
        Scheduler { cancel, task: AbortOnDropHandle::new(task) }
    }

    /// Stops after the tick in progress (if any) ends.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        let _ = self.task.await;
    }
}

async fn run(state: AppState, interval: Duration, cancel: CancellationToken) {
    let mut every = tokio::time::interval(interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            _ = every.tick() => {}
        }
        match tick(&state, Utc::now()).await {
            Ok(f) if f.started.is_empty() && f.stopped.is_empty() => {}
            Ok(f) => tracing::info!(
                stopped = f.stopped.len(),
                started = f.started.len(),
                "scheduler fired"
            ),
            Err(e) => tracing::warn!(error = %e, "scheduler tick failed"),
        }
    }
}

/// Transactions that fire batches at once when more than one batch is due:
/// each takes the next due rows the others have not locked (`SKIP LOCKED`),
/// so they split the work, and firing a build is mostly waiting for
/// Postgres round trips, which overlap.
const LANES: usize = 8;

/// Fires every transition due at `now`, in batches of [`BATCH`]: one batch,
/// and when that one was full, [`LANES`] transactions at once until none
/// comes back full.
pub async fn tick(state: &AppState, now: DateTime<Utc>) -> Result<Fired, TickError> {
    let mut fired = Fired::default();
    if !batch(state, now, &mut fired).await? {
        return Ok(fired);
    }
    let lanes = (0..LANES).map(|_| async {
        let mut f = Fired::default();
        while batch(state, now, &mut f).await? {}
        Ok::<_, TickError>(f)
    });
    for lane in futures::future::join_all(lanes).await {
        let f = lane?;
        fired.stopped.extend(f.stopped);
        fired.started.extend(f.started);
    }
    Ok(fired)
}

/// Fires one batch in one transaction; whether another may be due (the
/// batch was full and fired something: a batch of only failures would loop).
async fn batch(state: &AppState, now: DateTime<Utc>, fired: &mut Fired) -> Result<bool, TickError> {
    let mut tx = state.db.begin().await?;
    let stops = schedules::lock_due_stops(&mut tx, now, BATCH).await?;
    let starts = schedules::lock_due_starts(&mut tx, now, BATCH).await?;
    let full = stops.len() as i64 == BATCH || starts.len() as i64 == BATCH;
    let mut progressed = false;
    for id in stops {
        let mut sp = sqlx::Connection::begin(&mut *tx).await?;
        match fire_stop(state, &mut sp, id, now).await {
            Ok(true) => {
                sp.commit().await?;
                fired.stopped.push(id);
                progressed = true;
            }
            Ok(false) => sp.commit().await?,
            Err(e) => {
                tracing::warn!(workspace = %id, error = %e, "autostop failed; retrying next tick");
                sp.rollback().await?;
            }
        }
    }
    for (id, schedule) in starts {
        let mut sp = sqlx::Connection::begin(&mut *tx).await?;
        match fire_start(state, &mut sp, id, &schedule, now).await {
            Ok(started) => {
                sp.commit().await?;
                progressed = true;
                if started {
                    fired.started.push(id);
                }
            }
            Err(e) => {
                tracing::warn!(workspace = %id, error = %e, "autostart failed; retrying next tick");
                sp.rollback().await?;
            }
        }
    }
    tx.commit().await?;
    Ok(full && progressed)
}

/// A failure to fire one workspace (its savepoint is rolled back).
#[derive(Debug, thiserror::Error)]
enum FireError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("{0}")]
    Build(String),
}

impl From<crate::api::ApiError> for FireError {
    fn from(e: crate::api::ApiError) -> Self {
        FireError::Build(format!("{} {}", e.message, e.detail))
    }
}

/// Starts the stop build of a locked workspace whose deadline passed;
/// `false` if, read again under the lock, it is no longer due.
async fn fire_stop(
    state: &AppState,
    tx: &mut sqlx::PgConnection,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<bool, FireError> {
    if !schedules::still_due_stop(tx, id, now).await? {
        return Ok(false);
    }
    build(state, tx, id, Transition::Stop, BuildReason::Autostop).await?;
    Ok(true)
}

/// Moves a locked workspace's next autostart on, and starts it if it is
/// stopped (a running or failed workspace just waits for the next minute,
/// as in Coder). Returns whether a build started.
async fn fire_start(
    state: &AppState,
    tx: &mut sqlx::PgConnection,
    id: Uuid,
    schedule: &str,
    now: DateTime<Utc>,
) -> Result<bool, FireError> {
    let next = schedule.parse::<cron::Schedule>().ok().map(|s| s.next_after(now));
    schedules::set_next_start(&mut *tx, id, next).await?;
    let Some(prev) = builds::latest(&mut *tx, id).await? else { return Ok(false) };
    let job = jobs::by_id(&state.db, prev.job_id).await?;
    let stopped = job.is_some_and(|j| j.status() == ProvisionerJobStatus::Succeeded);
    if prev.transition != Transition::Stop || !stopped {
        return Ok(false);
    }
    build(state, tx, id, Transition::Start, BuildReason::Autostart).await?;
    Ok(true)
}

/// The build itself, as the workspace's owner, audited as the scheduler's.
async fn build(
    state: &AppState,
    tx: &mut sqlx::PgConnection,
    id: Uuid,
    transition: Transition,
    reason: BuildReason,
) -> Result<(), FireError> {
    let w = workspaces::by_id(&mut *tx, id)
        .await?
        .ok_or_else(|| FireError::Build("workspace is gone".into()))?;
    let prev =
        builds::latest(&mut *tx, id).await?.ok_or_else(|| FireError::Build("no build".into()))?;
    // As in Coder, an autostart of a template that requires its active
    // version builds that version.
    let version = (transition == Transition::Start && w.template_require_active_version)
        .then_some(w.template_active_version_id);
    let next = NextBuild { transition, version, parameters: &[], reason };
    let actor = Actor { id: Some(w.owner_id), username: &w.owner_name };
    let origin = Origin { ip: None, user_agent: format!("coderd scheduler ({})", reason.as_str()) };
    insert_next_build(state, tx, &w, &prev, next, actor, &origin).await?;
    Ok(())
}
