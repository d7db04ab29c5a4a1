//! `GET /api/v2/workspaceagents/{id}/listening-ports` (Coder's route): the
//! TCP ports listening in a workspace, asked of its agent over the mesh
//! (`mesh::Service::ListeningPorts`, as `coder ports` does), for the
//! workspace page's ports panel. Each opens as a dev URL,
//! `/@OWNER/WORKSPACE.AGENT/apps/PORT/`, through the app proxy.

use axum::extract::State;
use axum::http::StatusCode;
use codersdk::ListeningPort;
use mesh::Service;
use serde::Serialize;
use tokio::io::AsyncReadExt;
use uuid::Uuid;

use super::super::auth::Session;
use super::super::error::{ApiError, ApiResult, Json, Path};
use super::super::AppState;
use crate::coordination;

/// The agent's answer is a small JSON array; anything larger is refused.
const MAX_ANSWER: u64 = 1 << 20;

/// Coder's `WorkspaceAgentListeningPortsResponse`.
#[derive(Debug, Serialize)]
pub struct ListeningPorts {
    pub ports: Vec<ListeningPort>,
}

pub async fn listening_ports(
    State(state): State<AppState>,
    session: Session,
    Path(agent): Path<Uuid>,
) -> ApiResult<Json<ListeningPorts>> {
    if !coordination::may_reach(&state.db, &session.subject(), agent).await? {
        return Err(ApiError::not_found("Agent"));
    }
    let unreachable = |e: String| {
        tracing::debug!(%agent, error = %e, "listening ports: agent unreachable");
        ApiError::new(StatusCode::BAD_GATEWAY, "The workspace agent is not reachable.")
            .detail("Is the workspace running?")
    };
    let (_send, recv) = state
        .mesh
        .open(state.internal_url(), &state.relay_map.current(), agent, Service::ListeningPorts)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let mut answer = Vec::new();
    recv.take(MAX_ANSWER + 1)
        .read_to_end(&mut answer)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let mut ports = parse(&answer).map_err(|e| {
        tracing::debug!(%agent, error = %e, "listening ports: bad answer from the agent");
        ApiError::new(StatusCode::BAD_GATEWAY, "The workspace agent sent a malformed port list.")
            .detail("Is the agent up to date?")
    })?;
    ports.sort();
    Ok(Json(ListeningPorts { ports }))
}

/// The agent's answer, refused when too large or not a port list.
fn parse(answer: &[u8]) -> Result<Vec<ListeningPort>, String> {
    if answer.len() as u64 > MAX_ANSWER {
        return Err("answer too large".into());
    }
    serde_json::from_slice(answer).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_the_agents_answer_strictly() {
        let ok =
            br#"[{"port":8000,"network":"tcp","addresses":["0.0.0.0"],"process_name":"python3"}]"#;
        let ports = parse(ok).unwrap();
        assert_eq!(ports.len(), 1);
        assert_eq!(ports[0].port, 8000);
        for bad in
            [&b""[..], b"{}", b"[{\"port\":70000,\"network\":\"tcp\",\"addresses\":[]}]", b"\xff"]
        {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let huge = vec![b' '; MAX_ANSWER as usize + 1];
        assert!(parse(&huge).is_err());
    }
}
