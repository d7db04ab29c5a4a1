//! Agent authentication: the [`AgentSession`] extractor turns an agent token
//! (`Coder-Session-Token` header, as Coder's agents send it) into the agent
//! it belongs to. Only agents of a workspace's latest build, of a workspace
//! that is not deleted, authenticate: a stopped or rebuilt workspace's old
//! agents are refused.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use codersdk::SESSION_TOKEN_HEADER;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::error::ApiError;
use super::AppState;

/// An authenticated agent.
#[derive(Debug, Clone, sqlx::FromRow)]
#[allow(dead_code)] // not every endpoint needs every field
pub struct AgentSession {
    pub agent_id: Uuid,
    pub agent_name: String,
    pub resource_id: Uuid,
    pub workspace_id: Uuid,
    pub workspace_name: String,
    pub owner_id: Uuid,
    pub owner_name: String,
    pub build_id: Uuid,
}

/// Resolves an agent token; `None` when it matches no current agent.
pub async fn authenticate_agent(
    db: &sqlx::PgPool,
    token: &str,
) -> Result<Option<AgentSession>, ApiError> {
    if token.is_empty() || token.len() > 256 {
        return Ok(None);
    }
    let hash = Sha256::digest(token.as_bytes()).to_vec();
    // The index lookup is by hash, so no secret comparison happens here.
    let row: Option<AgentSession> = sqlx::query_as(
        "SELECT a.id AS agent_id, a.name AS agent_name, a.resource_id, w.id AS workspace_id,
                w.name AS workspace_name, u.id AS owner_id, u.username AS owner_name, b.id AS build_id
         FROM workspace_agents a
         JOIN workspace_resources r ON r.id = a.resource_id
         JOIN workspace_builds b ON b.job_id = r.job_id
         JOIN workspaces w ON w.id = b.workspace_id
         JOIN users u ON u.id = w.owner_id
         WHERE a.auth_token_hash = $1 AND NOT w.deleted
           AND b.build_number = (SELECT max(build_number) FROM workspace_builds WHERE workspace_id = w.id)
         LIMIT 1",
    )
    .bind(hash)
    .fetch_optional(db)
    .await?;
    Ok(row)
}

impl FromRequestParts<AppState> for AgentSession {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let unauthorized = || {
            ApiError::new(axum::http::StatusCode::UNAUTHORIZED, "Invalid or expired agent token.")
                .detail("The agent token belongs to no running workspace; rebuild the workspace.")
        };
        let token = parts
            .headers
            .get(SESSION_TOKEN_HEADER)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(unauthorized)?;
        authenticate_agent(&state.db, token).await?.ok_or_else(unauthorized)
    }
}
