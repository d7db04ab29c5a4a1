//! Autostart and autostop state: a workspace's TTL and schedule, the
//! deadline of its running build, the activity bump, and the scheduler's
//! due selection (`FOR UPDATE … SKIP LOCKED`, so replicas split the due
//! workspaces and never take one twice).

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

/// The condition "build `b` is the workspace's latest build".
const LATEST: &str = "NOT EXISTS (SELECT 1 FROM workspace_builds n
    WHERE n.workspace_id = b.workspace_id AND n.build_number > b.build_number)";

/// Locks up to `limit` workspaces whose running build's deadline is at or
/// before `now`, oldest deadline first, skipping rows another transaction
/// holds. The caller re-checks each under the lock before it builds.
pub async fn lock_due_stops(
    tx: &mut PgConnection,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(&format!(
        "SELECT w.id FROM workspace_builds b
         JOIN workspaces w ON w.id = b.workspace_id
         JOIN provisioner_jobs j ON j.id = b.job_id
         WHERE b.deadline <= $1 AND b.transition = 'start' AND NOT w.deleted
           AND j.completed_at IS NOT NULL AND j.error IS NULL AND j.canceled_at IS NULL
           AND {LATEST}
         ORDER BY b.deadline LIMIT $2
         FOR UPDATE OF w SKIP LOCKED"
    ))
    .bind(now)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await
}

/// Locks up to `limit` workspaces whose next autostart is at or before `now`.
pub async fn lock_due_starts(
    tx: &mut PgConnection,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<(Uuid, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, autostart_schedule FROM workspaces
         WHERE next_start_at <= $1 AND autostart_schedule IS NOT NULL AND NOT deleted
         ORDER BY next_start_at LIMIT $2
         FOR UPDATE SKIP LOCKED",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await
}

/// Whether the workspace's latest build is still a start whose deadline is
/// at or before `now` (read afresh, under the workspace's lock).
pub async fn still_due_stop(
    tx: &mut PgConnection,
    workspace: Uuid,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(&format!(
        "SELECT EXISTS (SELECT 1 FROM workspace_builds b WHERE b.workspace_id = $1
           AND b.transition = 'start' AND b.deadline <= $2 AND {LATEST})"
    ))
    .bind(workspace)
    .bind(now)
    .fetch_one(&mut *tx)
    .await
}

/// The workspace's autostop TTL and its template's maximum TTL (0: none).
pub async fn ttls(
    db: impl PgExecutor<'_>,
    workspace: Uuid,
) -> Result<(Option<i64>, i64, i64), sqlx::Error> {
    sqlx::query_as(
        "SELECT w.ttl_ms, t.default_ttl_ms, t.max_ttl_ms FROM workspaces w
         JOIN templates t ON t.id = w.template_id WHERE w.id = $1",
    )
    .bind(workspace)
    .fetch_one(db)
    .await
}

/// Sets the workspace's TTL; a running build's deadline moves to `now + ttl`
/// (capped by its max deadline), or goes away with `None`.
pub async fn set_ttl(
    tx: &mut PgConnection,
    workspace: Uuid,
    ttl_ms: Option<i64>,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE workspaces SET ttl_ms = $2, updated_at = now() WHERE id = $1")
        .bind(workspace)
        .bind(ttl_ms)
        .execute(&mut *tx)
        .await?;
    sqlx::query(&format!(
        "UPDATE workspace_builds b SET deadline = CASE WHEN $2::bigint IS NULL THEN NULL
           ELSE LEAST(now() + make_interval(secs => $2::bigint / 1000.0),
                      COALESCE(b.max_deadline, 'infinity')) END
         FROM provisioner_jobs j
         WHERE b.workspace_id = $1 AND j.id = b.job_id AND b.transition = 'start'
           AND j.completed_at IS NOT NULL AND j.error IS NULL AND {LATEST}"
    ))
    .bind(workspace)
    .bind(ttl_ms)
    .execute(&mut *tx)
    .await
    .map(drop)
}

/// Sets the autostart schedule (canonical form) and its next start.
pub async fn set_autostart(
    db: impl PgExecutor<'_>,
    workspace: Uuid,
    schedule: Option<&str>,
    next: Option<DateTime<Utc>>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE workspaces SET autostart_schedule = $2, next_start_at = $3, updated_at = now()
         WHERE id = $1",
    )
    .bind(workspace)
    .bind(schedule)
    .bind(next)
    .execute(db)
    .await
    .map(drop)
}

/// Moves the next autostart (the scheduler, after firing or skipping one).
pub async fn set_next_start(
    db: impl PgExecutor<'_>,
    workspace: Uuid,
    next: Option<DateTime<Utc>>,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE workspaces SET next_start_at = $2 WHERE id = $1")
        .bind(workspace)
        .bind(next)
        .execute(db)
        .await
        .map(drop)
}

/// Sets a running build's deadline (`coder schedule extend`); `false` when
/// the latest build is not a running start or `deadline` passes its max.
pub async fn extend(
    db: impl PgExecutor<'_>,
    workspace: Uuid,
    deadline: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(&format!(
        "UPDATE workspace_builds b SET deadline = $2 FROM provisioner_jobs j
         WHERE b.workspace_id = $1 AND j.id = b.job_id AND b.transition = 'start'
           AND j.completed_at IS NOT NULL AND j.error IS NULL AND {LATEST}
           AND $2 <= COALESCE(b.max_deadline, 'infinity')"
    ))
    .bind(workspace)
    .bind(deadline)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Gives a start build that just succeeded its deadline (now + the
/// workspace's TTL) and max deadline (now + the template's max TTL). Called
/// in the transaction that completes the build's job.
pub async fn start_deadline(tx: &mut PgConnection, build: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE workspace_builds b SET
           max_deadline = CASE WHEN t.max_ttl_ms > 0
             THEN now() + make_interval(secs => t.max_ttl_ms / 1000.0) END,
           deadline = CASE WHEN w.ttl_ms IS NOT NULL THEN LEAST(
             now() + make_interval(secs => w.ttl_ms / 1000.0),
             CASE WHEN t.max_ttl_ms > 0
               THEN now() + make_interval(secs => t.max_ttl_ms / 1000.0) ELSE 'infinity' END) END
         FROM workspaces w JOIN templates t ON t.id = w.template_id
         WHERE b.id = $1 AND w.id = b.workspace_id AND b.transition = 'start'",
    )
    .bind(build)
    .execute(&mut *tx)
    .await
    .map(drop)
}

/// Clears the deadlines of a workspace's earlier builds once a new build is
/// inserted, so the due selection's index only holds running workspaces.
pub async fn clear_old_deadlines(
    db: impl PgExecutor<'_>,
    workspace: Uuid,
    latest_number: i32,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE workspace_builds SET deadline = NULL
         WHERE workspace_id = $1 AND build_number < $2 AND deadline IS NOT NULL",
    )
    .bind(workspace)
    .bind(latest_number)
    .execute(db)
    .await
    .map(drop)
}

/// Activity on an agent: the workspace was used now, and if the agent
/// belongs to its running build, the deadline moves to at least now + TTL
/// (never past the max deadline). Returns whether a deadline moved.
pub async fn bump(db: impl PgExecutor<'_>, agent: Uuid) -> Result<bool, sqlx::Error> {
    let moved: Option<bool> = sqlx::query_scalar(&format!(
        "WITH ws AS (
           SELECT w.id, w.ttl_ms, b.id AS build FROM workspace_agents a
           JOIN workspace_resources r ON r.id = a.resource_id
           JOIN workspace_builds b ON b.job_id = r.job_id
           JOIN workspaces w ON w.id = b.workspace_id
           WHERE a.id = $1 AND {LATEST}
         ), used AS (
           UPDATE workspaces SET last_used_at = now() FROM ws WHERE workspaces.id = ws.id
         )
         UPDATE workspace_builds b SET deadline = LEAST(
           GREATEST(b.deadline, now() + make_interval(secs => ws.ttl_ms / 1000.0)),
           COALESCE(b.max_deadline, 'infinity'))
         FROM ws WHERE b.id = ws.build AND b.deadline IS NOT NULL AND ws.ttl_ms IS NOT NULL
         RETURNING true"
    ))
    .bind(agent)
    .fetch_optional(db)
    .await?;
    Ok(moved.unwrap_or(false))
}

/// Sets a template's TTL defaults.
pub async fn set_template_ttls(
    db: impl PgExecutor<'_>,
    template: Uuid,
    default_ttl_ms: i64,
    max_ttl_ms: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE templates SET default_ttl_ms = $2, max_ttl_ms = $3, updated_at = now() WHERE id = $1",
    )
    .bind(template)
    .bind(default_ttl_ms)
    .bind(max_ttl_ms)
    .execute(db)
    .await
    .map(drop)
}
