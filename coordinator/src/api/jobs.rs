//! Provisioner jobs as the API shows them: status, logs (with a resumable
//! cursor, optionally followed live over server-sent events), and the
//! resources a job recorded.

use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use codersdk::{
    AppHealth, LifecycleState, ProvisionerJob, ProvisionerJobLog, ProvisionerJobStatus,
    ResourceMetadata, Transition, WorkspaceAgent, WorkspaceAgentStatus, WorkspaceApp,
    WorkspaceResource,
};
use serde::Deserialize;
use sqlx::PgPool;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::error::{ApiError, ApiResult, Json};
use super::AppState;
use crate::provisioner::queue::{JobRow, JobStatus, CHANNEL_JOB_LOGS, JOB_COLUMNS};

pub fn job_to_api(row: &JobRow) -> ProvisionerJob {
    let status = match row.status() {
        JobStatus::Pending => ProvisionerJobStatus::Pending,
        JobStatus::Running => ProvisionerJobStatus::Running,
        JobStatus::Canceling => ProvisionerJobStatus::Canceling,
        JobStatus::Canceled => ProvisionerJobStatus::Canceled,
        JobStatus::Succeeded => ProvisionerJobStatus::Succeeded,
        JobStatus::Failed => ProvisionerJobStatus::Failed,
    };
    ProvisionerJob {
        id: row.id,
        status,
        created_at: row.created_at,
        started_at: row.started_at,
        completed_at: row.completed_at,
        canceled_at: row.canceled_at,
        error: row.error.clone().unwrap_or_default(),
        error_code: row.error_code.clone().unwrap_or_default(),
        worker_id: row.worker_id.clone().unwrap_or_default(),
    }
}

pub async fn job(db: &PgPool, id: Uuid) -> ApiResult<JobRow> {
    sqlx::query_as(&format!("SELECT {JOB_COLUMNS} FROM provisioner_jobs WHERE id = $1"))
        .bind(id)
        .fetch_optional(db)
        .await?
        .ok_or_else(|| ApiError::not_found("Job"))
}

#[derive(Debug, Deserialize, Default)]
pub struct LogsQuery {
    /// Only logs with an id greater than this.
    #[serde(default)]
    pub after: i64,
    /// Stream new logs until the job is done (server-sent events).
    #[serde(default)]
    pub follow: bool,
}

#[derive(sqlx::FromRow)]
struct LogRow {
    id: i64,
    created_at: DateTime<Utc>,
    stage: String,
    level: String,
    output: String,
}

async fn logs_after(
    db: &PgPool,
    job_id: Uuid,
    after: i64,
) -> Result<Vec<ProvisionerJobLog>, sqlx::Error> {
    let rows: Vec<LogRow> = sqlx::query_as(
        "SELECT id, created_at, stage, level, output FROM provisioner_job_logs
         WHERE job_id = $1 AND id > $2 ORDER BY id LIMIT 5000",
    )
    .bind(job_id)
    .bind(after)
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

/// Answers a logs request: a JSON array, or with `follow` an event stream of
/// `log` events (each `id:` is the cursor) that ends with an `end` event
/// carrying the job once it is done. Reconnecting with `after=<last id>`
/// (or `Last-Event-ID`) resumes without loss or duplicates.
pub async fn logs(
    state: &AppState,
    job_id: Uuid,
    q: LogsQuery,
    last_event_id: Option<i64>,
) -> ApiResult<Response> {
    let after = last_event_id.unwrap_or(q.after).max(q.after);
    if !q.follow {
        return Ok(Json(logs_after(&state.db, job_id, after).await?).into_response());
    }
    let mut notes = state.pubsub.subscribe(CHANNEL_JOB_LOGS).await;
    let (tx, mut rx) = mpsc::channel::<Event>(64);
    let db = state.db.clone();
    tokio::spawn(async move {
        let mut cursor = after;
        loop {
            let logs = match logs_after(&db, job_id, cursor).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "log stream query failed");
                    return;
                }
            };
            let drained = logs.len() < 5000;
            for log in logs {
                cursor = log.id;
                let Ok(ev) = Event::default().event("log").id(log.id.to_string()).json_data(&log)
                else {
                    return;
                };
                if tx.send(ev).await.is_err() {
                    return; // the client went away
                }
            }
            if !drained {
                continue;
            }
            match job(&db, job_id).await {
                Ok(row) if row.status().is_done() => {
                    // Logs written before completion are visible now; send any stragglers.
                    if let Ok(rest) = logs_after(&db, job_id, cursor).await {
                        for log in rest {
                            let Ok(ev) = Event::default()
                                .event("log")
                                .id(log.id.to_string())
                                .json_data(&log)
                            else {
                                return;
                            };
                            if tx.send(ev).await.is_err() {
                                return;
                            }
                        }
                    }
                    if let Ok(ev) = Event::default().event("end").json_data(job_to_api(&row)) {
                        let _ = tx.send(ev).await;
                    }
                    return;
                }
                Ok(_) => {}
                Err(_) => return,
            }
            // Wait for a notification; the timeout is only a safety net.
            tokio::select! {
                _ = notes.recv() => {}
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                _ = tx.closed() => return,
            }
        }
    });
    let stream =
        futures::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|o| o.map(Ok::<_, Infallible>)));
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// The `Last-Event-ID` header of a reconnecting event-stream client.
pub fn last_event_id(headers: &axum::http::HeaderMap) -> Option<i64> {
    headers.get("last-event-id")?.to_str().ok()?.parse().ok()
}

#[derive(sqlx::FromRow)]
struct ResourceRow {
    id: Uuid,
    job_id: Uuid,
    #[sqlx(try_from = "String")]
    transition: Transition,
    #[sqlx(rename = "type")]
    type_: String,
    name: String,
    computational: bool,
    persistent: bool,
    hide: bool,
    icon: String,
    daily_cost: i32,
    metadata: sqlx::types::Json<Vec<ResourceMetadata>>,
}

#[derive(sqlx::FromRow)]
pub struct AgentRow {
    pub id: Uuid,
    pub resource_id: Uuid,
    pub name: String,
    pub os: String,
    pub arch: String,
    pub directory: String,
    #[sqlx(try_from = "String")]
    pub lifecycle_state: LifecycleState,
    pub connection_timeout_seconds: i32,
    pub first_connected_at: Option<DateTime<Utc>>,
    pub last_connected_at: Option<DateTime<Utc>>,
    pub disconnected_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// How long an agent may go without a heartbeat before it counts as gone.
const AGENT_INACTIVE: chrono::Duration = chrono::Duration::seconds(30);

impl AgentRow {
    pub fn status(&self, now: DateTime<Utc>) -> WorkspaceAgentStatus {
        match (self.first_connected_at, self.last_connected_at) {
            (None, _) | (_, None) => {
                if now - self.created_at
                    > chrono::Duration::seconds(self.connection_timeout_seconds.into())
                    && self.connection_timeout_seconds > 0
                {
                    WorkspaceAgentStatus::Timeout
                } else {
                    WorkspaceAgentStatus::Connecting
                }
            }
            (Some(_), Some(last)) => {
                if self.disconnected_at.is_some_and(|d| d >= last) || now - last > AGENT_INACTIVE {
                    WorkspaceAgentStatus::Disconnected
                } else {
                    WorkspaceAgentStatus::Connected
                }
            }
        }
    }
}

#[derive(sqlx::FromRow)]
pub struct AppRow {
    pub id: Uuid,
    pub agent_id: Uuid,
    pub slug: String,
    pub display_name: String,
    pub url: String,
    pub command: String,
    pub subdomain: bool,
    pub share: String,
    pub healthcheck: Option<sqlx::types::Json<codersdk::Healthcheck>>,
    #[sqlx(try_from = "String")]
    pub health: AppHealth,
}

impl AppRow {
    pub fn to_api(&self) -> WorkspaceApp {
        WorkspaceApp {
            id: self.id,
            slug: self.slug.clone(),
            display_name: self.display_name.clone(),
            url: self.url.clone(),
            command: self.command.clone(),
            subdomain: self.subdomain,
            share: self.share.clone(),
            healthcheck: self.healthcheck.as_ref().map(|h| h.0.clone()),
            health: self.health,
        }
    }
}

pub const APP_COLUMNS: &str =
    "id, agent_id, slug, display_name, url, command, subdomain, share, healthcheck, health";

pub const AGENT_COLUMNS: &str = "id, resource_id, name, os, arch, directory, lifecycle_state, \
    connection_timeout_seconds, first_connected_at, last_connected_at, disconnected_at, created_at";

/// The resources (with agents and apps) a job recorded.
pub async fn resources(db: &PgPool, job_id: Uuid) -> ApiResult<Vec<WorkspaceResource>> {
    let rows: Vec<ResourceRow> = sqlx::query_as(
        "SELECT id, job_id, transition, type, name, computational, persistent, hide, icon, daily_cost, metadata
         FROM workspace_resources WHERE job_id = $1 ORDER BY transition, type, name",
    )
    .bind(job_id)
    .fetch_all(db)
    .await?;
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let agents: Vec<AgentRow> = sqlx::query_as(&format!(
        "SELECT {AGENT_COLUMNS} FROM workspace_agents WHERE resource_id = ANY($1) ORDER BY name"
    ))
    .bind(&ids)
    .fetch_all(db)
    .await?;
    let agent_ids: Vec<Uuid> = agents.iter().map(|a| a.id).collect();
    let apps: Vec<AppRow> = sqlx::query_as(&format!(
        "SELECT {APP_COLUMNS} FROM workspace_apps WHERE agent_id = ANY($1) ORDER BY slug"
    ))
    .bind(&agent_ids)
    .fetch_all(db)
    .await?;
    let now = Utc::now();
    Ok(rows
        .into_iter()
        .map(|r| WorkspaceResource {
            id: r.id,
            job_id: r.job_id,
            transition: r.transition,
            type_: r.type_,
            name: r.name,
            computational: r.computational,
            persistent: r.persistent,
            hide: r.hide,
            icon: r.icon,
            daily_cost: r.daily_cost,
            metadata: r.metadata.0,
            agents: agents
                .iter()
                .filter(|a| a.resource_id == r.id)
                .map(|a| agent_to_api(a, &apps, now))
                .collect(),
        })
        .collect())
}

fn agent_to_api(a: &AgentRow, apps: &[AppRow], now: DateTime<Utc>) -> WorkspaceAgent {
    WorkspaceAgent {
        id: a.id,
        name: a.name.clone(),
        resource_id: a.resource_id,
        os: a.os.clone(),
        architecture: a.arch.clone(),
        directory: a.directory.clone(),
        status: a.status(now),
        lifecycle_state: a.lifecycle_state,
        first_connected_at: a.first_connected_at,
        last_connected_at: a.last_connected_at,
        apps: apps.iter().filter(|p| p.agent_id == a.id).map(AppRow::to_api).collect(),
    }
}
