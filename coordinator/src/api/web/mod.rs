//! The dashboard: server-rendered pages (no build step, nothing from a CDN)
//! plus one small embedded script for actions, live logs and the terminal.
//!
//! Pages read the `coder_session_token` cookie set by `POST
//! /api/v2/users/login`; actions call the JSON API with the session's CSRF
//! token (`X-CSRF-Token`, derived from the session, see `auth::csrf_token`).
//! Paths under `/@OWNER/WORKSPACE…` are the workspace page, the terminal
//! page, and the app proxy (`super::apps`).

mod admin;
mod agent_detail;
mod create;
pub mod live;
mod pages;
pub mod ports;
mod template_page;
pub mod terminal;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Request};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;
use std::collections::HashMap;

use super::apps::{self, target::Target};
use super::auth::{authenticate, csrf_token, presented_token, Session};
use super::error::ApiError;
use super::routes::{Access, Routes};
use super::AppState;
use crate::database;

/// The header carrying a cookie session's CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";

const SCRIPT: &str = include_str!("assets/dashboard.js");
const STYLE: &str = include_str!("assets/dashboard.css");
/// xterm.js and its fit addon, vendored by `scripts/update-xterm` (licenses
/// beside them in `assets/xterm/`).
const XTERM_JS: &str = include_str!("assets/xterm/xterm.js");
const XTERM_CSS: &str = include_str!("assets/xterm/xterm.css");
const XTERM_FIT_JS: &str = include_str!("assets/xterm/addon-fit.js");

/// The dashboard's routes (the `/@…` paths are served by [`fallback`]).
pub fn routes() -> Routes {
    use Access::{Dashboard, Public};
    Routes::new()
        .get("/", Public, || async { Redirect::to("/workspaces") })
        .get("/login", Public, login)
        .get("/workspaces", Dashboard, workspaces)
        .get("/templates", Dashboard, template_page::list)
        .get("/templates/{template}", Dashboard, template_page::detail)
        .get("/templates/{template}/workspace", Dashboard, create::page_for)
        .get("/cli-auth", Dashboard, cli_auth)
        .get("/users", Dashboard, admin::users)
        .get("/audit", Dashboard, admin::audit)
        .get("/assets/dashboard.js", Public, || async { asset(JS, SCRIPT) })
        .get("/assets/dashboard.css", Public, || async { asset("text/css", STYLE) })
        .get("/assets/xterm/{file}", Public, xterm_asset)
        .get("/icon/{file}", Public, icon_asset)
}

/// The icons coderd ships, for templates and apps to name as `/icon/NAME.svg`
/// (as Coder's `/icon/` set; our own drawings, no scripts in them).
const ICONS: &[(&str, &str)] = &[
    ("code.svg", include_str!("assets/icons/code.svg")),
    ("database.svg", include_str!("assets/icons/database.svg")),
    ("files.svg", include_str!("assets/icons/files.svg")),
    ("git.svg", include_str!("assets/icons/git.svg")),
    ("globe.svg", include_str!("assets/icons/globe.svg")),
    ("terminal.svg", include_str!("assets/icons/terminal.svg")),
];

/// `/icon/{name}.svg` for the names in [`ICONS`]; any other name is a 404.
async fn icon_asset(
    axum::extract::Path(file): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    match ICONS.iter().find(|(name, _)| *name == file) {
        Some((_, body)) => cached_asset("image/svg+xml", body, &headers),
        None => ApiError::not_found("Icon").into_response(),
    }
}

const JS: &str = "text/javascript; charset=utf-8";

/// `/assets/xterm/{xterm.js, xterm.css, addon-fit.js}`; any other name is a 404.
async fn xterm_asset(
    axum::extract::Path(file): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    let (content_type, body) = match file.as_str() {
        "xterm.js" => (JS, XTERM_JS),
        "xterm.css" => ("text/css; charset=utf-8", XTERM_CSS),
        "addon-fit.js" => (JS, XTERM_FIT_JS),
        _ => return ApiError::not_found("Asset").into_response(),
    };
    cached_asset(content_type, body, &headers)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// An embedded asset with a strong `ETag` (a hash of its bytes): browsers
/// keep it and revalidate with `If-None-Match`, so an upgraded coderd's new
/// file is picked up at once and an unchanged one costs a 304.
fn cached_asset(content_type: &'static str, body: &'static str, headers: &HeaderMap) -> Response {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    body.hash(&mut h);
    let etag = format!("\"{:016x}\"", h.finish());
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let common = [
        (header::CONTENT_TYPE, content_type.to_owned()),
        (header::CACHE_CONTROL, "public, no-cache".to_owned()),
        (header::ETAG, etag),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
    ];
    if fresh {
        return (axum::http::StatusCode::NOT_MODIFIED, common).into_response();
    }
    (common, body).into_response()
}

/// A page with the headers every dashboard page carries: no inline script
/// may run, no other site may frame it.
fn page(html: String) -> Response {
    page_with_csp(
        html,
        "default-src 'self'; img-src 'self' https:; script-src 'self'; style-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    )
}

/// The terminal page: xterm.js creates `<style>` elements for its grid and
/// colors, so that page allows inline styles (never inline scripts).
fn terminal_page(html: String) -> Response {
    page_with_csp(
        html,
        "default-src 'self'; img-src 'self' https:; script-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    )
}

fn page_with_csp(html: String, csp: &'static str) -> Response {
    let mut r = Html(html).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(csp));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// A logged-in page's viewer: the session and its CSRF token.
pub struct Viewer {
    pub session: Session,
    pub csrf: String,
}

/// The session behind a request's cookie or header, if any valid one.
pub async fn viewer(state: &AppState, headers: &HeaderMap) -> Result<Option<Viewer>, ApiError> {
    let cookie = super::auth::session_cookie_name(&state.config);
    let Some((token, _)) = presented_token(headers, cookie) else { return Ok(None) };
    Ok(authenticate(&state.db, &token)
        .await?
        .map(|session| Viewer { session, csrf: csrf_token(&token) }))
}

#[derive(Debug, Deserialize)]
struct LoginQuery {
    #[serde(default)]
    redirect: String,
}

/// Where to go after logging in: `to` if it is a path on this origin, else
/// `/`. Browsers drop tabs and newlines from a URL and read `\` as `/`, so
/// `/<TAB>/evil.example` or `/\evil.example` would be `//evil.example`, another
/// site: any control character or backslash refuses it, and so does
/// whatever a URL parser resolves to another origin.
pub(crate) fn safe_redirect(to: &str) -> &str {
    let plain = to.starts_with('/')
        && !to.starts_with("//")
        && !to.chars().any(|c| c.is_control() || c == '\\');
    if plain && stays_on_origin(to) {
        to
    } else {
        "/"
    }
}

fn stays_on_origin(path: &str) -> bool {
    let Ok(base) = url::Url::parse("http://coderd.invalid/") else { return false };
    base.join(path).is_ok_and(|u| u.origin() == base.origin())
}

async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> Result<Response, ApiError> {
    let to = safe_redirect(&q.redirect);
    if viewer(&state, &headers).await?.is_some() {
        return Ok(Redirect::to(to).into_response());
    }
    let super::error::Json(methods) = super::oidc::auth_methods(State(state.clone())).await;
    Ok(page(pages::login(to, &methods)))
}

async fn workspaces(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Some(v) = viewer(&state, &headers).await? else {
        return Ok(apps::login_redirect("/workspaces"));
    };
    let super::error::Json(list) = super::workspaces::list(
        State(state.clone()),
        v.session.clone(),
        Ok(Query(super::workspaces::ListQuery::default())),
    )
    .await?;
    // One batch for every workspace's resources, not a query per workspace.
    let jobs: Vec<uuid::Uuid> = list.iter().map(|w| w.latest_build.job.id).collect();
    let mut agents: HashMap<uuid::Uuid, Vec<_>> = HashMap::new();
    for r in database::resources::of_jobs(&state.db, &jobs).await? {
        agents.entry(r.job_id).or_default().extend(r.agents);
    }
    let rows: Vec<_> = list
        .into_iter()
        .map(|w| {
            let a = agents.remove(&w.latest_build.job.id).unwrap_or_default();
            (w, a)
        })
        .collect();
    let super::error::Json(templates) =
        super::templates::list_templates(State(state.clone()), v.session.clone()).await?;
    Ok(page(pages::workspaces(&v, &rows, &templates)))
}

/// `/cli-auth`: after a (browser) login, a new session token for the CLI,
/// as Coder's page of that name. A GET that mints a token: another site can
/// make a browser load it but never read it (the page cannot be framed and
/// is not readable cross-origin), so the worst is an unused session.
async fn cli_auth(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let Some(v) = viewer(&state, &headers).await? else {
        return Ok(apps::login_redirect("/cli-auth"));
    };
    let login_type = database::user_links::login_type(&state.db, v.session.user.id).await?;
    let token = super::auth::issue_token(
        &state.db,
        v.session.user.id,
        login_type,
        None,
        state.config.session_lifetime,
    )
    .await?;
    Ok(page(pages::cli_auth(&v, &token)))
}

/// Everything under `/@`; anything else is a 404.
pub async fn fallback(State(state): State<AppState>, req: Request<Body>) -> Response {
    let Some(target) = apps::target::parse(req.uri().path()) else {
        return ApiError::not_found("Page").into_response();
    };
    let v = match viewer(&state, req.headers()).await {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    match target {
        Target::App { ws, app, rest } => {
            apps::serve(&state, v.map(|v| v.session), req, ws, app, rest).await
        }
        Target::Workspace(ws) | Target::Terminal(ws) if v.is_none() => {
            let _ = ws;
            apps::login_redirect(req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/"))
        }
        Target::Workspace(ws) => match workspace_page(&state, v, &ws.owner, &ws.workspace).await {
            Ok(r) => r,
            Err(e) => e.into_response(),
        },
        Target::Terminal(ws) => match terminal::page(&state, v, &ws, req.uri().query()).await {
            Ok(r) => r,
            Err(e) => e.into_response(),
        },
    }
}

async fn workspace_page(
    state: &AppState,
    v: Option<Viewer>,
    owner: &str,
    name: &str,
) -> Result<Response, ApiError> {
    let Some(v) = v else { return Err(ApiError::unauthorized()) };
    let super::error::Json(w) = super::workspaces::by_owner_and_name(
        State(state.clone()),
        v.session.clone(),
        super::error::Path((owner.to_owned(), name.to_owned())),
    )
    .await?;
    let resources = super::jobs::resources(&state.db, w.latest_build.job.id).await?;
    let agents: Vec<_> = resources.into_iter().flat_map(|r| r.agents).collect();
    let mut details = Vec::with_capacity(agents.len());
    for a in &agents {
        details.push(agent_detail::load(state, a.id).await?);
    }
    Ok(page(pages::workspace(&v, &w, &agents, &details)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_stay_on_site() {
        for ok in [
            "/",
            "/@a/w",
            "/@a/w.main/apps/files/x?y=1#z",
            "/workspaces?q=a%2F%2Fb",
            "/api/v2/applications/auth-redirect?redirect_uri=http%3A%2F%2Fx",
            "/a//b",
            "/a/\u{e9}",
        ] {
            assert_eq!(safe_redirect(ok), ok, "{ok:?}");
        }
        for bad in [
            "",
            "//evil.example/",
            "///evil.example/",
            "/\\evil.example/",
            "/\\/evil.example/",
            "/a\\b",
            "/\t/evil.example",
            "/\n/evil.example",
            "/\r/evil.example",
            "/\u{0}/evil.example",
            "/\u{7f}",
            "/\u{85}/evil.example",
            "\t//evil.example",
            " /x",
            "https://evil.example/",
            "javascript:alert(1)",
            "evil.example",
            "@evil.example",
            "?redirect=/x",
        ] {
            assert_eq!(safe_redirect(bad), "/", "{bad:?}");
        }
    }
}
