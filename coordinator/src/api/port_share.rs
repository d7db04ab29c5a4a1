//! Sharing levels of a workspace's dev-URL ports, Coder's routes:
//! `GET|POST|DELETE /api/v2/workspaces/{id}/port-share`. A port without a
//! share opens for its workspace's owner only; a share makes it open for any
//! logged-in user (`authenticated`) or anyone (`public`), never wider than
//! the deployment's `--max-port-share-level`, which also caps stored shares
//! when the app proxy reads them. Changing a share is the workspace owner's
//! (and owners'); each change writes an audit row in its transaction.

use axum::extract::State;
use axum::http::StatusCode;
use codersdk::{AuditAction, ResourceType};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use super::audit::{changes, Entry, Origin};
use super::auth::Session;
use super::error::{ApiError, ApiResult, Json, Path};
use super::workspaces::resolve_workspace;
use super::AppState;
use crate::authz::{Action, Object, Share};
use crate::database::port_shares;
use crate::database::workspaces::WorkspaceRow;

/// Coder's `WorkspaceAgentPortShare`.
#[derive(Debug, Serialize)]
pub struct PortShare {
    pub workspace_id: Uuid,
    pub agent_name: String,
    pub port: i32,
    /// The level in effect: the stored one, capped by the deployment's.
    pub share_level: String,
    pub protocol: &'static str,
}

/// Coder's `WorkspaceAgentPortShares`.
#[derive(Debug, Serialize)]
pub struct PortShares {
    pub shares: Vec<PortShare>,
    /// The widest level this deployment allows (for the dashboard's select).
    pub max_share_level: &'static str,
}

/// Coder's `UpsertWorkspaceAgentPortShareRequest`.
#[derive(Debug, Deserialize)]
pub struct UpsertRequest {
    pub agent_name: String,
    pub port: i64,
    pub share_level: String,
}

/// Coder's `DeleteWorkspaceAgentPortShareRequest`.
#[derive(Debug, Deserialize)]
pub struct DeleteRequest {
    pub agent_name: String,
    pub port: i64,
}

/// `GET /api/v2/workspaces/{id}/port-share`.
pub async fn list(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<PortShares>> {
    let w = resolve_workspace(&state, &session, id).await?;
    session.authorize(Action::Read, Object::PortShares { owner: w.owner_id })?;
    let max = state.config.max_port_share;
    let shares = port_shares::list(&state.db, w.id)
        .await?
        .into_iter()
        .map(|r| PortShare {
            workspace_id: r.workspace_id,
            agent_name: r.agent_name,
            port: r.port,
            share_level: Share::parse(&r.share_level).capped(max).name().to_owned(),
            protocol: "http",
        })
        .collect();
    Ok(Json(PortShares { shares, max_share_level: max.name() }))
}

/// The workspace, if the caller may change its shares, and the port and
/// agent named, if valid.
async fn target(
    state: &AppState,
    session: &Session,
    id: Uuid,
    agent_name: &str,
    port: i64,
) -> ApiResult<(WorkspaceRow, u16)> {
    let w = resolve_workspace(state, session, id).await?;
    session.authorize(Action::Update, Object::PortShares { owner: w.owner_id })?;
    let port = u16::try_from(port).ok().filter(|p| *p != 0).ok_or_else(|| {
        ApiError::bad_request(format!("Port {port} is not a TCP port.")).detail("Use 1 to 65535.")
    })?;
    if !port_shares::agent_exists(&state.db, w.id, agent_name).await? {
        return Err(ApiError::bad_request(format!(
            "Workspace {:?} has no agent named {agent_name:?}.",
            w.name
        )));
    }
    Ok((w, port))
}

async fn audit(
    session: &Session,
    origin: &Origin,
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    w: &WorkspaceRow,
    what: String,
    old: Option<String>,
    new: Option<&str>,
) -> ApiResult<()> {
    let diff = changes(&[(&what, json!(old), json!(new))]);
    let entry = Entry::new(AuditAction::Write, ResourceType::Workspace, w.id, &w.name).diff(diff);
    origin.record(&mut **tx, session.into(), entry).await?;
    Ok(())
}

/// `POST /api/v2/workspaces/{id}/port-share`: creates or changes a share.
pub async fn upsert(
    State(state): State<AppState>,
    session: Session,
    origin: Origin,
    Path(id): Path<Uuid>,
    Json(req): Json<UpsertRequest>,
) -> ApiResult<Json<PortShare>> {
    let (w, port) = target(&state, &session, id, &req.agent_name, req.port).await?;
    let level = Share::from_name(&req.share_level).ok_or_else(|| {
        ApiError::bad_request(format!("{:?} is not a share level.", req.share_level))
            .detail("Use owner, authenticated or public.")
    })?;
    let max = state.config.max_port_share;
    if level > max {
        return Err(ApiError::bad_request(format!(
            "This deployment shares ports at most at level {:?}.",
            max.name()
        ))
        .detail("An operator sets it with coderd --max-port-share-level."));
    }
    let mut tx = state.db.begin().await?;
    let old = port_shares::upsert(&mut *tx, w.id, &req.agent_name, port, level.name()).await?;
    let what = format!("port_share {}:{port}", req.agent_name);
    audit(&session, &origin, &mut tx, &w, what, old, Some(level.name())).await?;
    tx.commit().await?;
    Ok(Json(PortShare {
        workspace_id: w.id,
        agent_name: req.agent_name,
        port: i32::from(port),
        share_level: level.name().to_owned(),
        protocol: "http",
    }))
}

/// `DELETE /api/v2/workspaces/{id}/port-share`: the port is the owner's
/// only again (204 whether or not it had a share).
pub async fn delete(
    State(state): State<AppState>,
    session: Session,
    origin: Origin,
    Path(id): Path<Uuid>,
    Json(req): Json<DeleteRequest>,
) -> ApiResult<StatusCode> {
    let (w, port) = target(&state, &session, id, &req.agent_name, req.port).await?;
    let mut tx = state.db.begin().await?;
    if let Some(old) = port_shares::delete(&mut *tx, w.id, &req.agent_name, port).await? {
        let what = format!("port_share {}:{port}", req.agent_name);
        audit(&session, &origin, &mut tx, &w, what, Some(old), None).await?;
    }
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
