//! The web terminal: a page, and `GET /api/v2/workspaceagents/{id}/pty`,
//! a WebSocket that coderd bridges to the agent's reconnecting PTY over the
//! mesh (`mesh::Service::Pty`).
//!
//! Browser → coderd: text messages, JSON `{"data": "...", "height": H,
//! "width": W}` (any field optional). coderd → browser: binary messages of
//! raw terminal output. `reconnect=<uuid>` names the shell: the page keeps
//! it in its URL, so a reload re-attaches to the same shell.

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::Response;
use mesh::{pty_frame, Service};
use serde::Deserialize;
use uuid::Uuid;

use super::super::apps::resolve::{self, ResolveError};
use super::super::apps::target::WorkspaceRef;
use super::super::auth::Session;
use super::super::error::{ApiError, ApiResult, Path};
use super::super::AppState;
use super::{page as html_page, pages, Viewer};
use crate::coordination;

/// The terminal page of one agent.
pub async fn page(state: &AppState, v: Option<Viewer>, ws: &WorkspaceRef) -> ApiResult<Response> {
    let Some(v) = v else { return Err(ApiError::unauthorized()) };
    let agent = match resolve::agent(&state.db, ws).await {
        Ok(a) => a,
        Err(ResolveError::Database(e)) => return Err(e.into()),
        Err(_) => return Err(ApiError::not_found("Agent")),
    };
    if !coordination::may_reach(&state.db, &v.session.subject(), agent.agent_id).await? {
        return Err(ApiError::not_found("Agent"));
    }
    let title = format!("{}/{}.{}", ws.owner, ws.workspace, agent.agent_name);
    Ok(html_page(pages::terminal(&v, &title, agent.agent_id)))
}

/// Largest message a browser may send (a big paste still fits).
const MAX_MESSAGE_BYTES: usize = 1 << 20;

#[derive(Debug, Deserialize)]
pub struct PtyQuery {
    reconnect: Uuid,
    #[serde(default = "default_rows")]
    height: u16,
    #[serde(default = "default_cols")]
    width: u16,
}

fn default_rows() -> u16 {
    24
}
fn default_cols() -> u16 {
    80
}

#[derive(Debug, Deserialize)]
struct ClientMessage {
    #[serde(default)]
    data: String,
    height: Option<u16>,
    width: Option<u16>,
}

pub async fn pty(
    State(state): State<AppState>,
    session: Session,
    Path(agent): Path<Uuid>,
    q: Result<Query<PtyQuery>, axum::extract::rejection::QueryRejection>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let Query(q) = q.map_err(|e| ApiError::bad_request("Invalid query.").detail(e.body_text()))?;
    // A cookie-authenticated upgrade from another origin was refused by the
    // `Session` extractor (`auth::check_websocket_origin`).
    let ws = ws.map_err(|_| ApiError::bad_request("This endpoint speaks WebSocket only."))?;
    if !coordination::may_reach(&state.db, &session.subject(), agent).await? {
        return Err(ApiError::not_found("Agent"));
    }
    let service = Service::Pty { id: q.reconnect.as_u128(), rows: q.height, cols: q.width };
    let (send, recv) =
        state.mesh.open(state.internal_url(), &state.relay_map, agent, service).await.map_err(
            |e| {
                tracing::debug!(%agent, error = %e, "terminal: agent unreachable");
                ApiError::new(
                    axum::http::StatusCode::BAD_GATEWAY,
                    "The workspace agent is not reachable.",
                )
                .detail("Is the workspace running?")
            },
        )?;
    // Keystrokes and resizes are small; a huge message is an attack.
    let ws = ws.max_message_size(MAX_MESSAGE_BYTES).max_frame_size(MAX_MESSAGE_BYTES);
    Ok(ws.on_upgrade(move |socket| bridge(socket, send, recv)))
}

async fn bridge(socket: WebSocket, mut send: quinn::SendStream, mut recv: quinn::RecvStream) {
    use futures::{SinkExt, StreamExt};
    let (mut ws_tx, mut ws_rx) = socket.split();
    let down = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match recv.read(&mut buf).await {
                Ok(None) | Ok(Some(0)) | Err(_) => break,
                Ok(Some(n)) => {
                    let chunk = bytes::Bytes::copy_from_slice(buf.get(..n).unwrap_or_default());
                    if ws_tx.send(Message::Binary(chunk)).await.is_err() {
                        return;
                    }
                }
            }
        }
        let _ = ws_tx.send(Message::Close(None)).await;
    };
    let up = async {
        while let Some(Ok(msg)) = ws_rx.next().await {
            let text = match msg {
                Message::Text(t) => t,
                Message::Close(_) => break,
                _ => continue,
            };
            let Ok(m) = serde_json::from_str::<ClientMessage>(text.as_str()) else { continue };
            let mut out = Vec::new();
            if let (Some(h), Some(w)) = (m.height, m.width) {
                out.extend(pty_frame::resize(h, w));
            }
            for chunk in m.data.as_bytes().chunks(pty_frame::MAX_PAYLOAD) {
                out.extend(pty_frame::encode(pty_frame::INPUT, chunk));
            }
            if send.write_all(&out).await.is_err() {
                break;
            }
        }
        // Detach; the agent keeps the shell for the next attach.
        let _ = send.finish();
    };
    tokio::select! {
        _ = down => {}
        _ = up => {}
    }
}
