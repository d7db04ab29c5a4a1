//! The provisioner job queue, in Postgres.
//!
//! Enqueue inserts a row and `NOTIFY`s; idle workers `LISTEN` and acquire the
//! oldest pending job whose tags are a subset of theirs with
//! `UPDATE … WHERE id = (SELECT … FOR UPDATE SKIP LOCKED LIMIT 1)`, so two
//! workers never take the same job. A running job is owned by one worker id:
//! heartbeats, logs and completion are accepted only from that worker and only
//! while the job is still running, so a worker that was presumed dead (and
//! whose job was failed) cannot later overwrite the result.

use chrono::{DateTime, Utc};
use codersdk::ProvisionerJobStatus;
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

pub use super::job::{Heartbeat, JobLog};
use crate::pubsub::Pubsub;

pub const CHANNEL_JOB_POSTED: &str = "provisioner_job_posted";
pub const CHANNEL_JOB_LOGS: &str = "provisioner_job_logs";
pub const CHANNEL_JOB_CANCELED: &str = "provisioner_job_canceled";

/// Worker tags, and the tags a job requires (a subset of the worker's).
pub type Tags = serde_json::Map<String, serde_json::Value>;

/// What a job does, with the row it works on.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum JobInput {
    TemplateVersionImport { template_version_id: Uuid },
    WorkspaceBuild { workspace_build_id: Uuid },
}

impl JobInput {
    pub fn type_name(&self) -> &'static str {
        match self {
            JobInput::TemplateVersionImport { .. } => "template_version_import",
            JobInput::WorkspaceBuild { .. } => "workspace_build",
        }
    }
}

/// A job's row as acquired: what it is and which file it works on. The
/// backend ([`super::PgBackend`]) loads the rest of its inputs.
#[derive(Debug, Clone)]
pub struct QueuedJob {
    pub id: Uuid,
    pub input: JobInput,
    pub file_id: Uuid,
    pub initiator_id: Uuid,
}

/// A job's row as the API shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobRow {
    pub id: Uuid,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub canceled_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
    pub error_code: Option<String>,
    pub worker_id: Option<String>,
}

impl JobRow {
    /// The job's status, derived from its timestamps (the table has no status column).
    pub fn status(&self) -> ProvisionerJobStatus {
        match (self.started_at, self.canceled_at, self.completed_at, &self.error) {
            (_, Some(_), Some(_), _) => ProvisionerJobStatus::Canceled,
            (_, None, Some(_), Some(_)) => ProvisionerJobStatus::Failed,
            (_, None, Some(_), None) => ProvisionerJobStatus::Succeeded,
            (_, Some(_), None, _) => ProvisionerJobStatus::Canceling,
            (Some(_), None, None, _) => ProvisionerJobStatus::Running,
            (None, None, None, _) => ProvisionerJobStatus::Pending,
        }
    }
}

pub const JOB_COLUMNS: &str =
    "id, created_at, started_at, canceled_at, completed_at, error, error_code, worker_id";

/// A new job to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub input: JobInput,
    pub file_id: Uuid,
    pub initiator_id: Uuid,
    pub tags: Tags,
}

/// Inserts a job inside the caller's transaction; the `NOTIFY` is delivered
/// when it commits.
pub async fn enqueue(conn: &mut PgConnection, job: &NewJob) -> Result<Uuid, sqlx::Error> {
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO provisioner_jobs (id, type, input, file_id, initiator_id, tags)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(job.input.type_name())
    .bind(sqlx::types::Json(&job.input))
    .bind(job.file_id)
    .bind(job.initiator_id)
    .bind(sqlx::types::Json(&job.tags))
    .execute(&mut *conn)
    .await?;
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL_JOB_POSTED)
        .bind(id.to_string())
        .execute(&mut *conn)
        .await?;
    Ok(id)
}

/// The queue, as the workers and the API use it.
#[derive(Debug, Clone)]
pub struct Queue {
    pub db: PgPool,
    pub pubsub: Pubsub,
}

impl Queue {
    pub fn new(db: PgPool, pubsub: Pubsub) -> Queue {
        Queue { db, pubsub }
    }

    /// Takes the oldest pending job this worker's tags allow.
    pub async fn acquire(
        &self,
        worker_id: &str,
        worker_tags: &Tags,
    ) -> Result<Option<QueuedJob>, sqlx::Error> {
        #[derive(sqlx::FromRow)]
        struct Row {
            id: Uuid,
            input: sqlx::types::Json<serde_json::Value>,
            file_id: Uuid,
            initiator_id: Uuid,
        }
        let row: Option<Row> = sqlx::query_as(
            "UPDATE provisioner_jobs
             SET started_at = now(), updated_at = now(), heartbeat_at = now(), worker_id = $1
             WHERE id = (
                 SELECT id FROM provisioner_jobs
                 WHERE started_at IS NULL AND canceled_at IS NULL AND tags <@ $2
                 ORDER BY created_at
                 FOR UPDATE SKIP LOCKED
                 LIMIT 1)
             RETURNING id, input, file_id, initiator_id",
        )
        .bind(worker_id)
        .bind(sqlx::types::Json(worker_tags))
        .fetch_optional(&self.db)
        .await?;
        let Some(row) = row else { return Ok(None) };
        match serde_json::from_value::<JobInput>(row.input.0) {
            Ok(input) => Ok(Some(QueuedJob {
                id: row.id,
                input,
                file_id: row.file_id,
                initiator_id: row.initiator_id,
            })),
            Err(e) => {
                // A row we cannot understand must not wedge the queue.
                self.fail(row.id, worker_id, &format!("unreadable job input: {e}"), "bad_input")
                    .await?;
                Ok(None)
            }
        }
    }

    pub async fn heartbeat(&self, job_id: Uuid, worker_id: &str) -> Result<Heartbeat, sqlx::Error> {
        let row: Option<Option<DateTime<Utc>>> = sqlx::query_scalar(
            "UPDATE provisioner_jobs SET heartbeat_at = now(), updated_at = now()
             WHERE id = $1 AND worker_id = $2 AND completed_at IS NULL
             RETURNING canceled_at",
        )
        .bind(job_id)
        .bind(worker_id)
        .fetch_optional(&self.db)
        .await?;
        Ok(match row {
            None => Heartbeat::Lost,
            Some(Some(_)) => Heartbeat::CancelRequested,
            Some(None) => Heartbeat::Running,
        })
    }

    /// Appends log lines (in order) and wakes followers.
    pub async fn append_logs(&self, job_id: Uuid, logs: &[JobLog]) -> Result<(), sqlx::Error> {
        self.insert_logs(job_id, None, logs).await.map(|_| ())
    }

    /// Appends log lines (in order) if the job is still running under
    /// `worker_id`; false when it is not (nothing is stored).
    pub async fn append_logs_as(
        &self,
        job_id: Uuid,
        worker_id: &str,
        logs: &[JobLog],
    ) -> Result<bool, sqlx::Error> {
        self.insert_logs(job_id, Some(worker_id), logs).await
    }

    async fn insert_logs(
        &self,
        job_id: Uuid,
        worker_id: Option<&str>,
        logs: &[JobLog],
    ) -> Result<bool, sqlx::Error> {
        if logs.is_empty() {
            return Ok(true);
        }
        let stages: Vec<&str> = logs.iter().map(|l| l.stage.as_str()).collect();
        let levels: Vec<&str> = logs.iter().map(|l| l.level.as_str()).collect();
        let outputs: Vec<&str> = logs.iter().map(|l| l.output.as_str()).collect();
        let inserted = sqlx::query(
            "INSERT INTO provisioner_job_logs (job_id, stage, level, output)
             SELECT $1, s, l, o FROM unnest($2::text[], $3::text[], $4::text[])
                 WITH ORDINALITY AS t(s, l, o, n)
             WHERE $5::text IS NULL OR EXISTS (
                 SELECT 1 FROM provisioner_jobs
                 WHERE id = $1 AND worker_id = $5 AND completed_at IS NULL)
             ORDER BY n",
        )
        .bind(job_id)
        .bind(&stages)
        .bind(&levels)
        .bind(&outputs)
        .bind(worker_id)
        .execute(&self.db)
        .await?
        .rows_affected();
        if inserted == 0 {
            return Ok(false);
        }
        self.pubsub.publish(CHANNEL_JOB_LOGS, &job_id.to_string()).await?;
        Ok(true)
    }

    /// Marks the job done with `error` (`None`: success), inside the caller's
    /// transaction. Returns false when the job was no longer this worker's.
    pub async fn complete_in(
        conn: &mut PgConnection,
        job_id: Uuid,
        worker_id: &str,
        error: Option<(&str, &str)>,
    ) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE provisioner_jobs
             SET completed_at = now(), updated_at = now(), error = $3, error_code = $4
             WHERE id = $1 AND worker_id = $2 AND completed_at IS NULL",
        )
        .bind(job_id)
        .bind(worker_id)
        .bind(error.map(|e| e.0))
        .bind(error.map(|e| e.1))
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if done == 1 {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANNEL_JOB_LOGS)
                .bind(job_id.to_string())
                .execute(&mut *conn)
                .await?;
        }
        Ok(done == 1)
    }

    pub async fn fail(
        &self,
        job_id: Uuid,
        worker_id: &str,
        error: &str,
        code: &str,
    ) -> Result<bool, sqlx::Error> {
        let mut conn = self.db.acquire().await?;
        Self::complete_in(&mut conn, job_id, worker_id, Some((error, code))).await
    }

    /// Cancels a job: a pending one is finished at once; a running one is
    /// flagged, and its worker interrupts terraform and completes it.
    pub async fn cancel(&self, job_id: Uuid) -> Result<Option<ProvisionerJobStatus>, sqlx::Error> {
        let mut tx = self.db.begin().await?;
        let status = Self::cancel_in(&mut tx, job_id).await?;
        tx.commit().await?;
        Ok(status.map(|(_, s)| s))
    }

    /// [`Queue::cancel`] on the caller's transaction (which commits it,
    /// with its audit row): whether this call canceled the job, and its
    /// status, if the job exists.
    pub async fn cancel_in(
        tx: &mut sqlx::PgConnection,
        job_id: Uuid,
    ) -> Result<Option<(bool, ProvisionerJobStatus)>, sqlx::Error> {
        let row: Option<JobRow> = sqlx::query_as(&format!(
            "SELECT {JOB_COLUMNS} FROM provisioner_jobs WHERE id = $1 FOR UPDATE"
        ))
        .bind(job_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let status = row.status();
        match status {
            ProvisionerJobStatus::Pending => {
                sqlx::query(
                    "UPDATE provisioner_jobs SET canceled_at = now(), completed_at = now(),
                     updated_at = now(), error = 'canceled before it started', error_code = 'canceled'
                     WHERE id = $1",
                )
                .bind(job_id)
                .execute(&mut *tx)
                .await?;
            }
            ProvisionerJobStatus::Running => {
                sqlx::query(
                    "UPDATE provisioner_jobs SET canceled_at = now(), updated_at = now() WHERE id = $1",
                )
                .bind(job_id)
                .execute(&mut *tx)
                .await?;
            }
            _ => return Ok(Some((false, status))),
        }
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL_JOB_CANCELED)
            .bind(job_id.to_string())
            .execute(&mut *tx)
            .await?;
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL_JOB_LOGS)
            .bind(job_id.to_string())
            .execute(&mut *tx)
            .await?;
        Ok(Some((
            true,
            if status == ProvisionerJobStatus::Pending {
                ProvisionerJobStatus::Canceled
            } else {
                ProvisionerJobStatus::Canceling
            },
        )))
    }

    /// Fails running jobs whose worker has not heartbeated within `timeout`.
    pub async fn fail_stale(&self, timeout: std::time::Duration) -> Result<Vec<Uuid>, sqlx::Error> {
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "UPDATE provisioner_jobs
             SET completed_at = now(), updated_at = now(),
                 error = 'The provisioner stopped responding (no heartbeat); the build was abandoned.',
                 error_code = 'worker_lost'
             WHERE started_at IS NOT NULL AND completed_at IS NULL
               AND heartbeat_at < now() - make_interval(secs => $1)
             RETURNING id",
        )
        .bind(timeout.as_secs_f64())
        .fetch_all(&self.db)
        .await?;
        for id in &ids {
            tracing::warn!(job = %id, "failed a job whose worker stopped heartbeating");
            self.pubsub.publish(CHANNEL_JOB_LOGS, &id.to_string()).await?;
        }
        Ok(ids)
    }

    pub async fn job(&self, job_id: Uuid) -> Result<Option<JobRow>, sqlx::Error> {
        sqlx::query_as(&format!("SELECT {JOB_COLUMNS} FROM provisioner_jobs WHERE id = $1"))
            .bind(job_id)
            .fetch_optional(&self.db)
            .await
    }
}
