//! Agent authentication: the [`AgentSession`] extractor turns an agent token
//! (`Coder-Session-Token` header, as Coder's agents send it) into the agent
//! it belongs to. Only agents of a workspace's latest build, of a workspace
//! that is not deleted, authenticate: a stopped or rebuilt workspace's old
//! agents are refused.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use codersdk::SESSION_TOKEN_HEADER;
use sha2::{Digest, Sha256};

use super::error::ApiError;
use super::AppState;
use crate::database::agents;

/// An authenticated agent.
pub use crate::database::agents::AgentIdentity as AgentSession;

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
    Ok(agents::by_token_hash(db, &hash).await?)
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
