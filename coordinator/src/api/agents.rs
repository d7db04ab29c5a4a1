//! The agent API: what an agent (authenticated by its token) fetches and
//! reports — manifest (with its scripts), lifecycle, script logs by log
//! source, liveness and stats, and the graceful-shutdown long poll — and the
//! user-facing views of an agent. Also serves the agent binary that the
//! provider's `init_script` downloads.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use codersdk::{
    AgentLogSource, AgentManifest, AgentMetadataResult, AgentStats, AppHealth, GracefulShutdown,
    PatchAgentLogsRequest, PatchAppHealthRequest, PostLifecycleRequest, WorkspaceAgentLog,
};
use uuid::Uuid;

use super::agent_auth::AgentSession;
use super::auth::Session;
use super::error::{ApiError, ApiResult, Json, Path};
use super::AppState;
use crate::authz::{Action, Object};
use crate::database::apps::{self, AppRow};
use crate::database::{agent_scripts, agents};

/// Largest batch of log lines per request, and stored bytes per agent.
const MAX_LOG_LINES: usize = 1000;
const MAX_LOG_BYTES_PER_AGENT: i64 = 4 << 20;
/// How often agents report stats (they also count as heartbeats).
pub const STATS_INTERVAL_SECONDS: u64 = 10;

pub async fn manifest(
    State(state): State<AppState>,
    agent: AgentSession,
) -> ApiResult<Json<AgentManifest>> {
    let row = agents::manifest(&state.db, agent.agent_id).await?;
    let apps = apps::of_agents(&state.db, &[agent.agent_id]).await?;
    let scripts = agent_scripts::of_agent(&state.db, agent.agent_id).await?;
    Ok(Json(AgentManifest {
        agent_id: agent.agent_id,
        agent_name: agent.agent_name,
        workspace_id: agent.workspace_id,
        workspace_name: agent.workspace_name,
        owner_name: agent.owner_name,
        directory: row.directory,
        environment_variables: row.env.0,
        startup_script: row.startup_script,
        metadata: row.metadata.0,
        apps: apps.iter().map(AppRow::to_api).collect(),
        relay_map: state.relay_map.current(),
        scripts,
    }))
}

/// The longest a graceful-shutdown poll is held open.
const SHUTDOWN_POLL: std::time::Duration = std::time::Duration::from_secs(25);

/// `GET /workspaceagents/me/graceful-shutdown`: answers as soon as a stop or
/// delete build asks this agent to shut down (at once if one already has),
/// else `shutdown_requested: false` after [`SHUTDOWN_POLL`]; the agent asks
/// again. Any replica answers: the request travels by pubsub.
pub async fn graceful_shutdown(
    State(state): State<AppState>,
    agent: AgentSession,
) -> ApiResult<Json<GracefulShutdown>> {
    // Subscribe before looking, so a request made in between still wakes us.
    let mut notices = state.pubsub.subscribe(agent_scripts::CHANNEL_AGENT_SHUTDOWN).await;
    let deadline = tokio::time::Instant::now() + SHUTDOWN_POLL;
    let id = agent.agent_id.to_string();
    loop {
        if agent_scripts::shutdown_requested(&state.db, agent.agent_id).await? {
            return Ok(Json(GracefulShutdown { shutdown_requested: true }));
        }
        // Wait for a notice about this agent (or a resync), then look again.
        loop {
            let notice = tokio::select! {
                m = notices.recv() => m,
                () = tokio::time::sleep_until(deadline) => {
                    return Ok(Json(GracefulShutdown { shutdown_requested: false }));
                }
            };
            match notice {
                Ok(crate::pubsub::Message::Payload(p)) if p != id => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    return Ok(Json(GracefulShutdown { shutdown_requested: false }));
                }
                _ => break,
            }
        }
    }
}

pub async fn post_lifecycle(
    State(state): State<AppState>,
    agent: AgentSession,
    Json(req): Json<PostLifecycleRequest>,
) -> ApiResult<StatusCode> {
    use codersdk::LifecycleState as L;
    let now = Utc::now();
    let started_at = matches!(req.state, L::Starting).then_some(now);
    let ready_at = matches!(req.state, L::Ready | L::StartError | L::StartTimeout).then_some(now);
    agents::set_lifecycle(
        &state.db,
        agent.agent_id,
        req.state,
        started_at,
        ready_at,
        req.exit_code,
    )
    .await?;
    tracing::info!(agent = %agent.agent_id, state = req.state.as_str(), "agent lifecycle");
    // The dashboard's live pages (`web::live`); a lost notice is resynced there.
    let _ = state
        .pubsub
        .publish(super::web::live::CHANNEL_AGENT_UPDATES, &agent.agent_id.to_string())
        .await;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn patch_logs(
    State(state): State<AppState>,
    agent: AgentSession,
    Json(req): Json<PatchAgentLogsRequest>,
) -> ApiResult<StatusCode> {
    if req.logs.len() > MAX_LOG_LINES {
        return Err(ApiError::bad_request(format!(
            "Send at most {MAX_LOG_LINES} log lines per request."
        )));
    }
    let incoming: i64 = req.logs.iter().map(|l| l.output.len() as i64).sum();
    let stored = agents::log_bytes(&state.db, agent.agent_id).await?;
    if stored + incoming > MAX_LOG_BYTES_PER_AGENT {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "The agent's log limit is reached.",
        )
        .detail(format!("Agents may store {} MiB of logs.", MAX_LOG_BYTES_PER_AGENT >> 20)));
    }
    if let Some(id) = req.log_source_id {
        if !agent_scripts::is_log_source_of(&state.db, agent.agent_id, id).await? {
            return Err(ApiError::bad_request(format!("Log source {id} is not this agent's.")));
        }
    }
    let source =
        if req.source.is_empty() { "startup_script".to_owned() } else { req.source.clone() };
    let levels: Vec<&str> = req.logs.iter().map(|l| l.level.as_str()).collect();
    let outputs: Vec<&str> = req.logs.iter().map(|l| l.output.as_str()).collect();
    agents::insert_logs(&state.db, agent.agent_id, &source, req.log_source_id, &levels, &outputs)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn post_stats(
    State(state): State<AppState>,
    agent: AgentSession,
    Json(stats): Json<AgentStats>,
) -> ApiResult<Json<serde_json::Value>> {
    agents::record_stats(&state.db, agent.agent_id, &stats).await?;
    if stats.is_active() {
        // Someone uses the workspace: push its autostop deadline forward.
        crate::database::schedules::bump(&state.db, agent.agent_id).await?;
    }
    Ok(Json(serde_json::json!({ "report_interval_seconds": STATS_INTERVAL_SECONDS })))
}

/// An agent a user may see: one of their own workspaces (or any, for owners).
pub async fn visible_agent(state: &AppState, session: &Session, id: Uuid) -> ApiResult<Uuid> {
    let owner = agents::workspace_owner(&state.db, id).await?;
    match owner {
        Some(owner) if session.may(Action::Read, Object::Agent { owner }) => Ok(id),
        _ => Err(ApiError::not_found("Agent")),
    }
}

pub async fn agent_logs(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Vec<WorkspaceAgentLog>>> {
    let id = visible_agent(&state, &session, id).await?;
    Ok(Json(agents::logs(&state.db, id).await?))
}

/// `GET /workspaceagents/{id}/log-sources`: where the agent's log lines come
/// from (one per script), so a client can group its logs.
pub async fn log_sources(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Vec<AgentLogSource>>> {
    let id = visible_agent(&state, &session, id).await?;
    Ok(Json(agent_scripts::log_sources(&state.db, id).await?))
}

/// `GET /bin/coder-agent-<os>-<arch>`: the agent binary built with this
/// coderd, for coderd's own platform. Unauthenticated (init scripts fetch
/// it before they hold anything), so it is streamed from the file in small
/// chunks: a request costs a file descriptor and a buffer, never the
/// binary's size in memory. A weak ETag (size and modification time) lets
/// a script that already has it skip the download.
pub async fn agent_binary(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let own = format!("coder-agent-{}-{}", std::env::consts::OS, go_arch());
    if name != own {
        return Err(
            ApiError::not_found("Agent binary").detail(format!("This coderd serves only {own}."))
        );
    }
    let not_installed = || {
        ApiError::not_found("Agent binary").detail("coder-agent is not installed beside coderd.")
    };
    let path = match &state.config.agent_binary {
        Some(path) => path.clone(),
        None => std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("coder-agent")))
            .ok_or_else(not_installed)?,
    };
    let file = match tokio::fs::File::open(&path).await {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(not_installed()),
        Err(e) => return Err(ApiError::internal(format!("open {}: {e}", path.display()))),
    };
    let meta = file.metadata().await.map_err(ApiError::internal)?;
    if !meta.is_file() {
        return Err(not_installed());
    }
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let etag = format!("W/\"{:x}-{modified:x}\"", meta.len());
    let cached = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    if cached {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    let body = axum::body::Body::from_stream(file_chunks(file));
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (header::CONTENT_LENGTH, meta.len().to_string()),
            (header::ETAG, etag),
        ],
        body,
    )
        .into_response())
}

/// Bytes read per chunk of a streamed file.
const FILE_CHUNK: usize = 64 << 10;

/// The file's bytes, one fresh chunk at a time.
fn file_chunks(
    file: tokio::fs::File,
) -> impl futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send {
    use tokio::io::AsyncReadExt;
    futures::stream::try_unfold(file, |mut file| async move {
        let mut buf = bytes::BytesMut::with_capacity(FILE_CHUNK);
        match file.read_buf(&mut buf).await? {
            0 => Ok(None),
            _ => Ok(Some((buf.freeze(), file))),
        }
    })
}

/// Architecture names as Go (and so Coder's templates) spell them.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "armv7",
        other => other,
    }
}

/// Largest metadata value stored (Coder truncates at 2 KiB too).
const MAX_METADATA_VALUE: usize = 2048;

pub async fn post_metadata(
    State(state): State<AppState>,
    agent: AgentSession,
    Json(results): Json<Vec<AgentMetadataResult>>,
) -> ApiResult<StatusCode> {
    if results.len() > 128 {
        return Err(ApiError::bad_request("Send at most 128 metadata results per request."));
    }
    // Only keys the template declared are stored.
    let declared = agents::declared_metadata(&state.db, agent.agent_id).await?;
    for r in results {
        if !declared.iter().any(|d| d.key == r.key) {
            continue;
        }
        let stored = AgentMetadataResult {
            value: r.value.chars().take(MAX_METADATA_VALUE).collect(),
            error: r.error.chars().take(MAX_METADATA_VALUE).collect(),
            ..r
        };
        agents::upsert_metadata(&state.db, agent.agent_id, &stored).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `PATCH /workspaceagents/me/app-health`: the agent reports the apps whose
/// health changed. All or nothing: an app that is not this agent's, has no
/// healthcheck, or a state other than initializing/healthy/unhealthy makes
/// it a 400 and nothing is stored.
pub async fn patch_app_health(
    State(state): State<AppState>,
    agent: AgentSession,
    Json(req): Json<PatchAppHealthRequest>,
) -> ApiResult<StatusCode> {
    if req.healths.len() > 128 {
        return Err(ApiError::bad_request("Send at most 128 app healths per request."));
    }
    let ids: Vec<Uuid> = req.healths.keys().copied().collect();
    let checked = apps::healthchecked(&state.db, agent.agent_id, &ids).await?;
    for (id, health) in &req.healths {
        match checked.iter().find(|(c, _)| c == id) {
            None => {
                return Err(ApiError::bad_request(format!("App {id} is not this agent's.")));
            }
            Some((_, false)) => {
                return Err(ApiError::bad_request(format!("App {id} has no healthcheck.")));
            }
            Some(_) if *health == AppHealth::Disabled => {
                return Err(ApiError::bad_request(format!(
                    "App {id}: a checked app's health cannot be disabled."
                )));
            }
            Some(_) => {}
        }
    }
    let healths: Vec<AppHealth> = req.healths.values().copied().collect();
    apps::set_health(&state.db, agent.agent_id, &ids, &healths).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn metadata(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Vec<AgentMetadataResult>>> {
    let id = visible_agent(&state, &session, id).await?;
    Ok(Json(agents::metadata(&state.db, id).await?))
}
