//! Workspace apps and dev URLs, path-based:
//! `/@OWNER/WORKSPACE[.AGENT]/apps/SLUG-OR-PORT/…` is proxied to the app's
//! port on the agent's host over the mesh (`crate::meshpeer`).
//!
//! Request flow: parse the path ([`target`]) → session (cookie or header)
//! → agent and app ([`resolve`]) → share level → mesh stream `tcp:<port>`
//! → HTTP/1.1 to the app ([`proxy`]). Apps another user may not use answer
//! 404, the same as apps that do not exist.
//!
//! A path app shares the dashboard's origin: its scripts could read a
//! dashboard page (and its CSRF token) and call the API as whoever opened
//! it. So, as in Coder, a path app opens for its workspace's owner only
//! unless the operator opts in ([`resolve::PathAppConfig`]), and its
//! responses carry `Content-Security-Policy: sandbox …` without
//! `allow-same-origin`, which gives its documents an opaque origin of their
//! own. Subdomain apps ([`subdomain`]) have a real origin of their own and
//! none of these limits.

pub mod proxy;
pub mod resolve;
pub mod subdomain;
pub mod target;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use mesh::Service;

use super::auth::{self, Session};
use super::error::ApiError;
use super::AppState;
use crate::authz::{self, Action, Forbidden, Object, Subject};
use resolve::{AccessMethod, ResolveError};
use target::{AppRef, WorkspaceRef};

/// Where an unauthenticated browser is sent to log in first.
pub fn login_redirect(path_and_query: &str) -> Response {
    let to: String = url::form_urlencoded::byte_serialize(path_and_query.as_bytes()).collect();
    Redirect::to(&format!("/login?redirect={to}")).into_response()
}

fn wants_html(req: &Request<Body>) -> bool {
    req.headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"))
}

fn app_not_found() -> ApiError {
    ApiError::not_found("App").detail("No such app, or you may not open it.")
}

fn path_app_owner_only(state: &AppState) -> ApiError {
    let how = if state.config.wildcard.is_some() {
        "Open it at its subdomain URL (SLUG--AGENT--WORKSPACE--OWNER on the wildcard domain)"
    } else {
        "Ask the operator to enable subdomain apps (coderd server --wildcard-access-url)"
    };
    ApiError::new(
        StatusCode::FORBIDDEN,
        "Path-based apps run on the dashboard's origin and open only for their workspace's owner.",
    )
    .detail(format!(
        "{how}, or to start coderd with --dangerous-allow-path-app-sharing \
         (shared apps) or --dangerous-allow-path-app-site-owner-access (site owners)."
    ))
}

/// The sandbox every proxied path-app response gets: scripts, forms and
/// popups work, but without `allow-same-origin` the document's origin is
/// opaque, so it can neither read the dashboard nor send its cookie.
pub const PATH_APP_CSP: &str = "sandbox allow-downloads allow-forms allow-modals allow-popups \
     allow-popups-to-escape-sandbox allow-presentation allow-scripts";

/// Serves one app request.
pub async fn serve(
    state: &AppState,
    session: Option<Session>,
    req: Request<Body>,
    ws: WorkspaceRef,
    app: AppRef,
    rest: String,
) -> Response {
    let path_and_query = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/").to_owned();
    // The app's own WebSockets: the browser sends the dashboard cookie along
    // from any site, so the origin must be ours.
    if let Some((_, source)) =
        auth::presented_token(req.headers(), auth::session_cookie_name(&state.config))
    {
        if let Err(e) = auth::check_websocket_origin(state, req.headers(), source) {
            return e.into_response();
        }
    }
    // Without a session only a public app opens; anything else asks to log in.
    let subject = session.as_ref().map(Session::subject).unwrap_or(Subject::Anonymous);
    let (agent, app) = match authorize_app(state, &subject, AccessMethod::Path, &ws, &app).await {
        Ok(found) => found,
        Err(e) if session.is_none() && e.status == StatusCode::NOT_FOUND => {
            if wants_html(&req) {
                return login_redirect(&path_and_query);
            }
            return ApiError::unauthorized().into_response();
        }
        Err(e) => return e.into_response(),
    };
    if rest.is_empty() {
        // Relative links in the app resolve below its prefix only with the slash.
        let mut to = format!("{}/", req.uri().path());
        if let Some(q) = req.uri().query() {
            to.push('?');
            to.push_str(q);
        }
        return Redirect::permanent(&to).into_response();
    }
    match forward(state, &agent, &app, req, &rest).await {
        Ok(mut r) => {
            if !state.config.path_apps.disable_csp_sandbox {
                // Appended: an app's own policy may narrow it, never widen it.
                r.headers_mut().append(
                    header::CONTENT_SECURITY_POLICY,
                    axum::http::HeaderValue::from_static(PATH_APP_CSP),
                );
            }
            r
        }
        Err(e) => e.into_response(),
    }
}

/// The agent and app `ws`/`app_ref` name, if `subject` may open them by
/// `method`: a 404 otherwise, the same as for apps that do not exist.
pub(crate) async fn authorize_app(
    state: &AppState,
    subject: &Subject,
    method: AccessMethod,
    ws: &WorkspaceRef,
    app_ref: &AppRef,
) -> Result<(resolve::AgentTarget, resolve::App), ApiError> {
    let agent = match resolve::agent(&state.db, ws).await {
        Ok(a) => a,
        Err(ResolveError::NotFound) => return Err(app_not_found()),
        Err(ResolveError::Ambiguous) => {
            return Err(ApiError::bad_request("The workspace has several agents.")
                .detail("Name one: /@OWNER/WORKSPACE.AGENT/apps/…"))
        }
        Err(ResolveError::Database(e)) => return Err(e.into()),
    };
    let max = state.config.max_port_share;
    let app = resolve::app(&state.db, &agent, app_ref, max).await?.ok_or_else(app_not_found)?;
    let share = app.as_ref().map(|a| a.share).unwrap_or(resolve::Share::Owner);
    let object =
        Object::App { owner: agent.owner_id, share, method, path_apps: state.config.path_apps };
    match authz::authorize(subject, Action::ApplicationConnect, &object) {
        Ok(()) => {}
        Err(Forbidden::PathAppOwnerOnly) => return Err(path_app_owner_only(state)),
        Err(_) => return Err(app_not_found()),
    }
    let app = app.map_err(|e| {
        ApiError::new(StatusCode::BAD_GATEWAY, "This app cannot be proxied.").detail(e.to_string())
    })?;
    Ok((agent, app))
}

/// Proxies `req` to `app` of `agent`, which [`authorize_app`] allowed.
pub(crate) async fn forward(
    state: &AppState,
    agent: &resolve::AgentTarget,
    app: &resolve::App,
    req: Request<Body>,
    rest: &str,
) -> Result<Response, ApiError> {
    let host = state.config.access_url.host_str().unwrap_or_default().to_owned();
    let proto = state.config.access_url.scheme().to_owned();
    let upstream = proxy::upstream_request(req, app, rest, &host, &proto).map_err(|e| {
        ApiError::bad_request("This request cannot be forwarded.").detail(e.to_string())
    })?;
    let (send, recv) = state
        .mesh
        .open(
            state.internal_url(),
            &state.relay_map.current(),
            agent.agent_id,
            Service::Tcp(app.port),
        )
        .await
        .map_err(|e| {
            tracing::debug!(agent = %agent.agent_id, error = %e, "app proxy: agent unreachable");
            ApiError::new(StatusCode::BAD_GATEWAY, "The workspace agent is not reachable.").detail(
                "Is the workspace running? Check its status in the dashboard or with `coder list`.",
            )
        })?;
    proxy::forward(send, recv, upstream).await.map_err(|e| {
        ApiError::new(StatusCode::BAD_GATEWAY, "The app did not answer.")
            .detail(format!("Is it listening on port {}? ({e})", app.port))
    })
}
