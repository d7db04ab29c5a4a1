//! Live state for the dashboard, as server-sent events:
//! `GET /api/v2/workspaces/watch` (every workspace of the viewer, for the
//! list page) and `GET /api/v2/workspaces/{id}/watch` (one, as Coder's route
//! of that name, for the workspace page).
//!
//! Each stream sends a `workspace` event with a workspace's state (status,
//! latest build and its job, agents with connection status, lifecycle and
//! app health) when the stream opens and whenever that state changes, and a
//! `gone` event (the id) when a listed workspace disappears. The state is
//! re-read through the API handlers, so it shows exactly what the viewer may
//! read (`authz::authorize`), after each Postgres notification that may
//! change it: provisioner job progress (`CHANNEL_JOB_LOGS`) and agent
//! lifecycle reports ([`CHANNEL_AGENT_UPDATES`]). Changes nothing notifies
//! (an agent's connection, app health) are picked up by a slow resync tick.
//! The single-workspace stream also carries each agent's `detail`
//! (`super::agent_detail::live`): metadata values, the mesh path, and the id
//! of the newest log line; metadata reports are not notified either (an
//! agent sends one per item per interval), so they arrive with the resync.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use codersdk::{Workspace, WorkspaceAgent};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;
use uuid::Uuid;

use super::super::auth::Session;
use super::super::error::{ApiError, ApiResult, Json, Path};
use super::super::workspaces::{self, ListQuery};
use super::super::AppState;
use crate::database;
use crate::provisionerd::queue::CHANNEL_JOB_LOGS;

/// Notified (payload: the agent id) when an agent reports a lifecycle state.
pub const CHANNEL_AGENT_UPDATES: &str = "workspace_agent_updates";

/// State nothing notifies about is re-read this often.
const RESYNC: Duration = Duration::from_secs(5);
/// A burst of notifications (a build's log lines) is read as one.
const MIN_INTERVAL: Duration = Duration::from_millis(250);

/// What a stream watches.
#[derive(Debug, Clone)]
enum Scope {
    /// What `GET /api/v2/workspaces` lists with the same `owner` query:
    /// the viewer's own, or (`owner=all`, for those who may) everyone's.
    List {
        owner: Option<String>,
    },
    One(Uuid),
}

pub async fn watch_all(
    State(state): State<AppState>,
    session: Session,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = q.map_err(|e| ApiError::bad_request("Invalid query.").detail(e.body_text()))?;
    let scope = Scope::List { owner: q.owner };
    // The first read answers errors (as the list would) before the stream starts.
    let first = snapshot(&state, &session, &scope).await?;
    Ok(stream(state, session, scope, first).await)
}

pub async fn watch_one(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<Uuid>,
) -> ApiResult<Response> {
    let first = snapshot(&state, &session, &Scope::One(id)).await?;
    Ok(stream(state, session, Scope::One(id), first).await)
}

/// The watched workspaces' states, by id.
async fn snapshot(
    state: &AppState,
    session: &Session,
    scope: &Scope,
) -> ApiResult<HashMap<Uuid, Value>> {
    let list = match scope {
        Scope::List { owner } => {
            let q = ListQuery { owner: owner.clone() };
            let Json(list) =
                workspaces::list(State(state.clone()), session.clone(), Ok(Query(q))).await?;
            list
        }
        Scope::One(id) => {
            let Json(w) = workspaces::get(State(state.clone()), session.clone(), Path(*id)).await?;
            vec![w]
        }
    };
    let jobs: Vec<Uuid> = list.iter().map(|w| w.latest_build.job.id).collect();
    let mut agents: HashMap<Uuid, Vec<WorkspaceAgent>> = HashMap::new();
    for r in database::resources::of_jobs(&state.db, &jobs).await? {
        agents.entry(r.job_id).or_default().extend(r.agents);
    }
    let mut out = HashMap::with_capacity(list.len());
    for w in &list {
        let a = agents.remove(&w.latest_build.job.id).unwrap_or_default();
        let mut v = workspace_state(w, &a);
        v["outdated"] = json!(w.outdated);
        // The workspace page also shows each agent's metadata, path and logs.
        if let (Scope::One(_), Some(shown)) = (scope, v["agents"].as_array_mut()) {
            for (json, agent) in shown.iter_mut().zip(&a) {
                json["detail"] = super::agent_detail::live(state, agent.id).await?;
            }
        }
        out.insert(w.id, v);
    }
    Ok(out)
}

/// One workspace as the dashboard shows it live.
fn workspace_state(w: &Workspace, agents: &[WorkspaceAgent]) -> Value {
    let b = &w.latest_build;
    json!({
        "id": w.id,
        "owner_name": w.owner_name,
        "name": w.name,
        "status": b.status,
        "build": {
            "id": b.id,
            "build_number": b.build_number,
            "transition": b.transition,
            "job_status": b.job.status,
        },
        "agents": agents.iter().map(|a| json!({
            "id": a.id,
            "name": a.name,
            "status": a.status,
            "lifecycle_state": a.lifecycle_state,
            "apps": a.apps.iter().map(|p| json!({"slug": p.slug, "health": p.health})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

/// The differences between what the client has and `now`, as events.
fn changes(sent: &HashMap<Uuid, Value>, now: &HashMap<Uuid, Value>) -> Vec<Event> {
    let mut out = Vec::new();
    for (id, v) in now {
        if sent.get(id) != Some(v) {
            out.push(Event::default().event("workspace").data(v.to_string()));
        }
    }
    for id in sent.keys().filter(|id| !now.contains_key(id)) {
        out.push(Event::default().event("gone").data(id.to_string()));
    }
    out
}

async fn stream(
    state: AppState,
    session: Session,
    scope: Scope,
    first: HashMap<Uuid, Value>,
) -> Response {
    // Subscribed before the first events go out, so no change is missed.
    let mut jobs = state.pubsub.subscribe(CHANNEL_JOB_LOGS).await;
    let mut agents = state.pubsub.subscribe(CHANNEL_AGENT_UPDATES).await;
    let (tx, mut rx) = mpsc::channel::<Event>(64);
    tokio::spawn(async move {
        let mut sent = HashMap::new();
        let mut now = first;
        loop {
            for ev in changes(&sent, &now) {
                if tx.send(ev).await.is_err() {
                    return; // the client went away
                }
            }
            sent = now;
            let read_at = Instant::now();
            tokio::select! {
                _ = tx.closed() => return,
                _ = jobs.recv() => {}
                _ = agents.recv() => {}
                _ = tokio::time::sleep(RESYNC) => {}
            }
            tokio::select! {
                _ = tx.closed() => return,
                _ = tokio::time::sleep_until(read_at + MIN_INTERVAL) => {}
            }
            // Everything notified meanwhile is covered by the next read.
            while jobs.try_recv().is_ok() {}
            while agents.try_recv().is_ok() {}
            now = match snapshot(&state, &session, &scope).await {
                Ok(n) => n,
                Err(e) => {
                    // Deleted, or no longer readable: the stream ends, and a
                    // deleted workspace's page learns it from `gone`.
                    tracing::debug!(error = ?e, "workspace watch ended");
                    let gone =
                        sent.keys().map(|id| Event::default().event("gone").data(id.to_string()));
                    for ev in gone.collect::<Vec<_>>() {
                        let _ = tx.send(ev).await;
                    }
                    return;
                }
            };
        }
    });
    let stream =
        futures::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|o| o.map(Ok::<_, Infallible>)));
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_changes_are_sent() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let sent =
            HashMap::from([(a, json!({"status": "running"})), (b, json!({"status": "stopped"}))]);
        assert!(changes(&sent, &sent).is_empty());
        let now = HashMap::from([(a, json!({"status": "stopping"}))]);
        let events = changes(&sent, &now);
        // One update (a) and one removal (b).
        assert_eq!(events.len(), 2);
        assert_eq!(changes(&HashMap::new(), &now).len(), 1);
    }
}
