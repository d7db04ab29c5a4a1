//! Provisioner jobs as the API shows them: status, logs (with a resumable
//! cursor, optionally followed live over server-sent events), and the
//! resources a job recorded.

use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use codersdk::{ProvisionerJob, WorkspaceResource};
use serde::Deserialize;
use sqlx::PgPool;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::error::{ApiError, ApiResult, Json};
use super::AppState;
use crate::database;
use crate::provisionerd::queue::{JobRow, CHANNEL_JOB_LOGS};

pub fn job_to_api(row: &JobRow) -> ProvisionerJob {
    ProvisionerJob {
        id: row.id,
        status: row.status(),
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
    database::jobs::by_id(db, id).await?.ok_or_else(|| ApiError::not_found("Job"))
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
        return Ok(
            Json(database::jobs::logs_after(&state.db, job_id, after).await?).into_response()
        );
    }
    let mut notes = state.pubsub.subscribe(CHANNEL_JOB_LOGS).await;
    let (tx, mut rx) = mpsc::channel::<Event>(64);
    let db = state.db.clone();
    tokio::spawn(async move {
        let mut cursor = after;
        loop {
            let logs = match database::jobs::logs_after(&db, job_id, cursor).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "log stream query failed");
                    return;
                }
            };
            let drained = logs.len() < database::jobs::LOG_PAGE;
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
                    if let Ok(rest) = database::jobs::logs_after(&db, job_id, cursor).await {
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

/// The resources (with agents and apps) a job recorded.
pub async fn resources(db: &PgPool, job_id: Uuid) -> ApiResult<Vec<WorkspaceResource>> {
    Ok(database::resources::of_job(db, job_id).await?)
}

/// Cancels a job and, when that changed it, records `entry` in the same
/// transaction; the job's status before (`None`: no such job).
pub async fn cancel(
    state: &AppState,
    job_id: Uuid,
    origin: &super::audit::Origin,
    session: &super::auth::Session,
    entry: super::audit::Entry<'_>,
) -> ApiResult<Option<codersdk::ProvisionerJobStatus>> {
    let mut tx = state.db.begin().await?;
    let canceled = crate::provisionerd::queue::Queue::cancel_in(&mut tx, job_id).await?;
    if let Some((true, _)) = canceled {
        origin.record(&mut *tx, session.into(), entry).await?;
    }
    tx.commit().await?;
    Ok(canceled.map(|(_, s)| s))
}
