//! The web terminal: a page, and `GET /api/v2/workspaceagents/{id}/pty`,
//! a WebSocket that coderd bridges to the agent's reconnecting PTY over the
//! mesh (`mesh::Service::Pty`).
//!
//! Browser → coderd: text messages, JSON `{"data": "...", "height": H,
//! "width": W}` (Coder's `ReconnectingPTYRequest`; any field optional, a
//! resize needs both `height` and `width`, each 1..=[`MAX_DIMENSION`];
//! unknown fields or anything else refuse the message, which is dropped).
//! coderd → browser: binary messages of raw terminal output; on every attach
//! the agent first replays the shell's recent output, so a page (xterm.js in
//! `assets/dashboard.js`) that clears its screen on reconnect gets its
//! scrollback back. `reconnect=<uuid>` names the shell: the page keeps it in
//! its URL, so a reload re-attaches to the same shell.

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
use super::{pages, terminal_page as html_page, Viewer};
use crate::coordination;

/// The terminal page of one agent. `?app=SLUG` names a terminal-kind
/// `coder_app` (one with a `command`): the page types that command into the
/// new shell it opens. Only a command the template declared runs, never one
/// from the URL.
pub async fn page(
    state: &AppState,
    v: Option<Viewer>,
    ws: &WorkspaceRef,
    query: Option<&str>,
) -> ApiResult<Response> {
    let Some(v) = v else { return Err(ApiError::unauthorized()) };
    let agent = match resolve::agent(&state.db, ws).await {
        Ok(a) => a,
        Err(ResolveError::Database(e)) => return Err(e.into()),
        Err(_) => return Err(ApiError::not_found("Agent")),
    };
    if !coordination::may_reach(&state.db, &v.session.subject(), agent.agent_id).await? {
        return Err(ApiError::not_found("Agent"));
    }
    let slug = url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(k, _)| k == "app")
        .map(|(_, v)| v.into_owned());
    let command = match slug {
        Some(slug) => {
            let apps = crate::database::apps::of_agents(&state.db, &[agent.agent_id]).await?;
            let app = apps.into_iter().find(|a| a.slug == slug && !a.command.is_empty());
            Some(app.ok_or_else(|| ApiError::not_found("Terminal app"))?.command)
        }
        None => None,
    };
    let title = format!("{}/{}.{}", ws.owner, ws.workspace, agent.agent_name);
    Ok(html_page(pages::terminal(&v, &title, agent.agent_id, command.as_deref())))
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

/// Largest number of rows or columns a resize may ask for.
pub const MAX_DIMENSION: u16 = 1000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientMessage {
    #[serde(default)]
    data: String,
    height: Option<u16>,
    width: Option<u16>,
}

/// Why a browser's message was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
enum MessageError {
    #[error("not a terminal message: {0}")]
    Json(String),
    #[error("a resize needs both height and width, each 1..={MAX_DIMENSION}")]
    Size,
}

/// The agent's PTY frames for one browser message: a resize (if any)
/// first, then the input in frames of at most `MAX_PAYLOAD` bytes.
fn frames(text: &str) -> Result<Vec<u8>, MessageError> {
    let m: ClientMessage =
        serde_json::from_str(text).map_err(|e| MessageError::Json(e.to_string()))?;
    let dim = |d: u16| (1..=MAX_DIMENSION).contains(&d);
    let mut out = Vec::new();
    match (m.height, m.width) {
        (None, None) => {}
        (Some(h), Some(w)) if dim(h) && dim(w) => out.extend(pty_frame::resize(h, w)),
        _ => return Err(MessageError::Size),
    }
    for chunk in m.data.as_bytes().chunks(pty_frame::MAX_PAYLOAD) {
        out.extend(pty_frame::encode(pty_frame::INPUT, chunk));
    }
    Ok(out)
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
    let (send, recv) = state
        .mesh
        .open(state.internal_url(), &state.relay_map.current(), agent, service)
        .await
        .map_err(|e| {
            tracing::debug!(%agent, error = %e, "terminal: agent unreachable");
            ApiError::new(
                axum::http::StatusCode::BAD_GATEWAY,
                "The workspace agent is not reachable.",
            )
            .detail("Is the workspace running?")
        })?;
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
            let out = match frames(text.as_str()) {
                Ok(out) => out,
                Err(e) => {
                    tracing::debug!(error = %e, "terminal: dropped a browser message");
                    continue;
                }
            };
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn input_and_resize_become_pty_frames() {
        assert_eq!(frames(r#"{"data":"ls\r"}"#).unwrap(), pty_frame::encode(0, b"ls\r"));
        let mut both = pty_frame::resize(40, 120);
        both.extend(pty_frame::encode(pty_frame::INPUT, b"x"));
        assert_eq!(frames(r#"{"height":40,"width":120,"data":"x"}"#).unwrap(), both);
        assert_eq!(frames(r#"{"height":1,"width":1000}"#).unwrap(), pty_frame::resize(1, 1000));
        assert!(frames("{}").unwrap().is_empty());
        // A big paste is split into frames the agent accepts.
        let big = "a".repeat(pty_frame::MAX_PAYLOAD + 1);
        let out = frames(&serde_json::json!({ "data": big }).to_string()).unwrap();
        assert_eq!(out.len(), 2 * 3 + pty_frame::MAX_PAYLOAD + 1);
    }

    #[test]
    fn malformed_messages_are_refused() {
        for bad in [
            "",
            "not json",
            "[]",
            r#"{"data": 5}"#,
            r#"{"height": 24}"#,
            r#"{"width": 80}"#,
            r#"{"height": 0, "width": 80}"#,
            r#"{"height": 24, "width": 0}"#,
            r#"{"height": 24, "width": 1001}"#,
            r#"{"height": -1, "width": 80}"#,
            r#"{"height": 70000, "width": 80}"#,
            r#"{"height": 24.5, "width": 80}"#,
            r#"{"data": "x", "exec": "rm -rf /"}"#,
        ] {
            assert!(frames(bad).is_err(), "{bad:?}");
        }
    }
}
