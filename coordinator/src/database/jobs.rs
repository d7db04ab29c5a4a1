//! Provisioner jobs as the API reads them: by id, in batches, and their logs.
//! The queue's own queries (enqueue, acquire, complete) and the job row live
//! with the queue in `provisionerd::queue`.

use std::collections::HashMap;

use codersdk::ProvisionerJobLog;
use sqlx::PgPool;
use uuid::Uuid;

pub use crate::provisionerd::queue::JobRow;
use crate::provisionerd::queue::JOB_COLUMNS;

/// Largest page of logs one read returns.
pub const LOG_PAGE: usize = 5000;

pub async fn by_id(db: &PgPool, id: Uuid) -> Result<Option<JobRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {JOB_COLUMNS} FROM provisioner_jobs WHERE id = $1"))
        .bind(id)
        .fetch_optional(db)
        .await
}

/// Several jobs in one query (in no particular order).
pub async fn by_ids(db: &PgPool, ids: &[Uuid]) -> Result<Vec<JobRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {JOB_COLUMNS} FROM provisioner_jobs WHERE id = ANY($1)"))
        .bind(ids)
        .fetch_all(db)
        .await
}

/// Pairs each row with its job (`job_of` names it), all read in one query.
/// A job is never deleted while a build or version points at it (foreign
/// keys), so a missing one is [`sqlx::Error::RowNotFound`].
pub async fn attach<R>(
    db: &PgPool,
    rows: Vec<R>,
    job_of: impl Fn(&R) -> Uuid,
) -> Result<Vec<(R, JobRow)>, sqlx::Error> {
    let ids: Vec<Uuid> = rows.iter().map(&job_of).collect();
    let mut jobs: HashMap<Uuid, JobRow> =
        by_ids(db, &ids).await?.into_iter().map(|j| (j.id, j)).collect();
    rows.into_iter()
        .map(|r| {
            let job = jobs.remove(&job_of(&r)).ok_or(sqlx::Error::RowNotFound)?;
            Ok((r, job))
        })
        .collect()
}

#[derive(sqlx::FromRow)]
struct LogRow {
    id: i64,
    created_at: chrono::DateTime<chrono::Utc>,
    stage: String,
    #[sqlx(try_from = "String")]
    level: codersdk::LogLevel,
    output: String,
}

/// Up to [`LOG_PAGE`] of a job's logs with an id greater than `after`.
pub async fn logs_after(
    db: &PgPool,
    job_id: Uuid,
    after: i64,
) -> Result<Vec<ProvisionerJobLog>, sqlx::Error> {
    let rows: Vec<LogRow> = sqlx::query_as(
        "SELECT id, created_at, stage, level, output FROM provisioner_job_logs
         WHERE job_id = $1 AND id > $2 ORDER BY id LIMIT $3",
    )
    .bind(job_id)
    .bind(after)
    .bind(LOG_PAGE as i64)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| ProvisionerJobLog {
            id: r.id,
            created_at: r.created_at,
            stage: r.stage,
            level: r.level,
            output: r.output,
        })
        .collect())
}
