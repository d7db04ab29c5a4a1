//! Coordination endpoints (WebSocket): agents and clients exchange nodes
//! through the coordinator. See `docs/protocols/coordination.md`.
//!
//! - `GET /api/v2/workspaceagents/me/coordinate`: an agent, by agent token;
//! - `GET /api/v2/workspaceagents/{id}/coordinate`: a user's client for one
//!   agent (the tunnel to it opens implicitly);
//! - `GET /api/v2/tailnet`: a user's client that opens tunnels itself;
//! - `GET /api/v2/coderd/coordinate`: this coderd's own peer (app proxy,
//!   web terminal), by a per-process secret;
//! - `GET /api/v2/debug/coordinator`: peers, tunnels and replicas (owners).
//!
//! A user's upgrade authenticated by the session cookie must come from this
//! deployment's origin, like every cookie-authenticated WebSocket (the
//! [`Session`] extractor, `auth::check_websocket_origin`).
//!
//! The replica's coordination run loop starts with the first request and
//! lives as long as the router.

use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::response::Response;
use axum::Extension;
use codersdk::coordination::{MAX_MESSAGE_BYTES, PROTOCOL_VERSION};
use serde::Deserialize;
use tokio::sync::OnceCell;
use uuid::Uuid;

use super::agent_auth::AgentSession;
use super::auth::Session;
use super::error::{ApiError, ApiResult, Json, Path};
use super::routes::{Access, Routes};
use super::AppState;
use crate::authz::{Action, Object};
use crate::coordination::{self, DebugSnapshot, Kind, Principal, Replica};

/// This router's replica, started on first use.
#[derive(Clone, Default)]
struct ReplicaCell(Arc<OnceCell<Replica>>);

/// The coordination routes, merged under `/api/v2`.
pub fn routes() -> Routes {
    Routes::new()
        .get("/workspaceagents/me/coordinate", Access::Agent, agent_coordinate)
        .get("/workspaceagents/{id}/coordinate", Access::User, client_coordinate_agent)
        .get("/tailnet", Access::User, client_tailnet)
        .get("/coderd/coordinate", Access::Coderd, coderd_coordinate)
        .get("/debug/coordinator", Access::User, debug_coordinator)
        .map(|r| r.layer(Extension(ReplicaCell::default())))
}

/// The relay map sent in `hello`; opaque to coordination.
fn relay_map(state: &AppState) -> serde_json::Value {
    serde_json::to_value(state.relay_map.current()).unwrap_or(serde_json::Value::Null)
}

#[derive(Debug, Deserialize)]
struct CoordinateQuery {
    version: Option<u16>,
    /// A client's previous peer id, to keep its node id across reconnects.
    resume: Option<Uuid>,
}

impl CoordinateQuery {
    fn check_version(&self) -> ApiResult<()> {
        match self.version {
            None | Some(PROTOCOL_VERSION) => Ok(()),
            Some(v) => Err(ApiError::bad_request(format!(
                "Coordination protocol version {v} is not supported."
            ))
            .detail(format!(
                "This coordinator speaks version {PROTOCOL_VERSION}; upgrade your client."
            ))),
        }
    }
}

async fn replica(state: &AppState, cell: &ReplicaCell) -> ApiResult<Replica> {
    cell.0
        .get_or_try_init(|| {
            Replica::spawn(
                state.db.clone(),
                state.pubsub.clone(),
                state.config.coordination.clone(),
            )
        })
        .await
        .cloned()
        .map_err(ApiError::internal)
}

/// Everything a coordination endpoint needs besides the credential: the
/// checked query, the (size-limited) upgrade, and this router's replica.
struct Coordinate {
    ws: WebSocketUpgrade,
    resume: Option<Uuid>,
    replica: Replica,
    relay_map: serde_json::Value,
}

/// Bytes read from a coordination socket at a time.
const WS_READ_BUFFER: usize = 4 * 1024;

/// Bytes of queued frames kept before a write without waiting for the flush.
const WS_WRITE_BUFFER: usize = 8 * 1024;

impl FromRequestParts<AppState> for Coordinate {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        let Query(query) =
            Query::<CoordinateQuery>::from_request_parts(parts, state).await.map_err(|e| {
                ApiError::bad_request("Invalid query parameters.").detail(e.body_text())
            })?;
        query.check_version()?;
        let ws = WebSocketUpgrade::from_request_parts(parts, state).await.map_err(|_| {
            ApiError::bad_request("This endpoint speaks WebSocket only.")
                .detail("Connect with a WebSocket client; see docs/protocols/coordination.md.")
        })?;
        let Extension(cell) = Extension::<ReplicaCell>::from_request_parts(parts, state)
            .await
            .map_err(ApiError::internal)?;
        Ok(Coordinate {
            // tungstenite's default read chunk (128 KiB, zeroed, per socket)
            // would be most of a peer's memory; coordination messages are
            // small, and larger ones (up to the limit) still assemble.
            ws: ws
                .max_message_size(MAX_MESSAGE_BYTES)
                .max_frame_size(MAX_MESSAGE_BYTES)
                .read_buffer_size(WS_READ_BUFFER)
                // Frames queued together go out in one write (`conn.rs`
                // flushes after each batch); a lone frame still goes at once.
                .write_buffer_size(WS_WRITE_BUFFER),
            resume: query.resume,
            replica: replica(state, &cell).await?,
            relay_map: relay_map(state),
        })
    }
}

async fn agent_coordinate(agent: AgentSession, c: Coordinate) -> Response {
    let id = agent.agent_id;
    c.ws.on_upgrade(move |socket| async move {
        let principal = Principal::agent(id);
        c.replica.accept(socket, principal, id, Kind::Agent, None, c.relay_map).await;
    })
}

async fn client_coordinate_agent(
    session: Session,
    State(state): State<AppState>,
    Path(agent): Path<Uuid>,
    c: Coordinate,
) -> ApiResult<Response> {
    if !coordination::may_reach(&state.db, &session.subject(), agent).await? {
        return Err(ApiError::not_found("Agent"));
    }
    client(session, state, c, Some(agent)).await
}

async fn client_tailnet(
    session: Session,
    State(state): State<AppState>,
    c: Coordinate,
) -> ApiResult<Response> {
    client(session, state, c, None).await
}

async fn client(
    session: Session,
    state: AppState,
    c: Coordinate,
    single_agent: Option<Uuid>,
) -> ApiResult<Response> {
    let user = session.user.id;
    let peer = match c.resume {
        Some(id) if coordination::may_resume(&state.db, user, id).await? => id,
        _ => Uuid::new_v4(),
    };
    let principal = Principal::user(user, session.key_id);
    let kind = Kind::Client { owner: user };
    Ok(c.ws.on_upgrade(move |socket| async move {
        c.replica.accept(socket, principal, peer, kind, single_agent, c.relay_map).await;
    }))
}

/// This process's own mesh peer (`crate::meshpeer`), by its secret.
async fn coderd_coordinate(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    c: Coordinate,
) -> ApiResult<Response> {
    let presented = headers
        .get(codersdk::SESSION_TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !state.mesh.is_secret(presented) {
        return Err(ApiError::unauthorized());
    }
    // Only a previous coderd peer (owner nil) can be resumed.
    let peer = match c.resume {
        Some(id) if coordination::may_resume(&state.db, Uuid::nil(), id).await? => id,
        _ => Uuid::new_v4(),
    };
    let kind = Kind::Client { owner: Uuid::nil() };
    Ok(c.ws.on_upgrade(move |socket| async move {
        c.replica.accept(socket, Principal::Coderd, peer, kind, None, c.relay_map).await;
    }))
}

async fn debug_coordinator(
    session: Session,
    State(state): State<AppState>,
) -> ApiResult<Json<DebugSnapshot>> {
    session.authorize(Action::Read, Object::Deployment)?;
    Ok(Json(coordination::debug_snapshot(&state.db).await?))
}
