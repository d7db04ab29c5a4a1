//! Subdomain apps and dev URLs: with `--wildcard-access-url *.apps.example`,
//! `SLUG--AGENT--WORKSPACE--OWNER.apps.example` (or `PORT--…`) is an app on
//! an origin of its own, so its scripts never run on the dashboard's origin.
//!
//! Each app origin gets its own cookie, `coder_app_session`, host-only
//! (no `Domain`), holding a key minted for that one host (`LoginType::AppConnect`)
//! that the API refuses. The dashboard session never reaches an app origin:
//!
//! ```text
//! app origin, no cookie ──303──▶ ACCESS_URL/api/v2/applications/auth-redirect?redirect_uri=…
//!   (dashboard session; mints a key for that host) ──303──▶ app URL?coder_app_token=KEY
//! app origin: sets coder_app_session=KEY (HttpOnly) ──303──▶ app URL without the parameter
//! ```

use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use url::Url;

use super::target::{AppRef, WorkspaceRef};
use crate::api::auth::{self, KeyScope, Session};
use crate::api::error::ApiError;
use crate::api::AppState;
use crate::authz::Subject;

/// The app origin's cookie.
pub const APP_COOKIE: &str = "coder_app_session";
/// The query parameter that carries a fresh key to the app origin, once.
pub const TOKEN_PARAM: &str = "coder_app_token";

/// `*.apps.example`: the suffix app hosts end with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wildcard {
    suffix: String,
}

impl Wildcard {
    /// Parses `*.SUFFIX` (a port, if any, is the access URL's).
    pub fn parse(pattern: &str) -> Option<Wildcard> {
        let suffix = pattern.strip_prefix("*.")?.trim_end_matches('.').to_ascii_lowercase();
        let valid = !suffix.is_empty()
            && suffix.split('.').all(|l| {
                !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        valid.then_some(Wildcard { suffix })
    }

    /// The app label of `host` (without port), if it is an app host.
    pub fn label<'a>(&self, host: &'a str) -> Option<&'a str> {
        let label = host.strip_suffix(self.suffix.as_str())?.strip_suffix('.')?;
        (!label.is_empty() && !label.contains('.')).then_some(label)
    }
}

/// `SLUG-OR-PORT--AGENT--WORKSPACE--OWNER`.
pub fn parse_label(label: &str) -> Option<(WorkspaceRef, AppRef)> {
    let parts: Vec<&str> = label.split("--").collect();
    let [app, agent, workspace, owner] = parts[..] else { return None };
    let path = format!("/@{owner}/{workspace}.{agent}/apps/{app}/");
    match super::target::parse(&path)? {
        super::target::Target::App { ws, app, .. } => Some((ws, app)),
        _ => None,
    }
}

/// The request's host without port, lowercased.
fn request_host(headers: &HeaderMap, uri: &axum::http::Uri) -> Option<String> {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).or_else(|| uri.host())?;
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    Some(host.to_ascii_lowercase())
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// The full URL of an app host on this deployment (scheme and port of the access URL).
fn app_url(state: &AppState, host: &str, path_and_query: &str) -> String {
    let a = &state.config.access_url;
    let port = a.port().map(|p| format!(":{p}")).unwrap_or_default();
    format!("{}://{host}{port}{path_and_query}", a.scheme())
}

/// Middleware: requests for an app host go to the app; the rest go on.
pub async fn layer(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(wildcard) = &state.config.wildcard else { return next.run(req).await };
    let Some(host) = request_host(req.headers(), req.uri()) else { return next.run(req).await };
    let Some(label) = wildcard.label(&host) else { return next.run(req).await };
    let Some((ws, app)) = parse_label(label) else {
        return ApiError::not_found("App").detail("Not an app host name.").into_response();
    };
    serve(&state, &host, req, ws, app).await
}

async fn serve(
    state: &AppState,
    host: &str,
    req: Request,
    ws: WorkspaceRef,
    app: AppRef,
) -> Response {
    let uri = req.uri().clone();
    let secure = if state.config.access_url.scheme() == "https" { "; Secure" } else { "" };
    // A fresh key from the auth redirect: keep it in this origin's cookie and
    // take it out of the URL before anything else sees it.
    let mut fresh = None;
    let mut rest_query = Vec::new();
    for (k, v) in url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes()) {
        if k == TOKEN_PARAM {
            fresh = Some(v.into_owned());
        } else {
            rest_query.push((k.into_owned(), v.into_owned()));
        }
    }
    if let Some(key) = fresh {
        return match auth::authenticate_for(&state.db, &key, KeyScope::App(host)).await {
            Ok(Some(_)) => {
                let mut to = uri.path().to_owned();
                if !rest_query.is_empty() {
                    to.push('?');
                    to.push_str(
                        &url::form_urlencoded::Serializer::new(String::new())
                            .extend_pairs(rest_query)
                            .finish(),
                    );
                }
                let set = format!("{APP_COOKIE}={key}; Path=/; HttpOnly; SameSite=Lax{secure}");
                ([(header::SET_COOKIE, set)], Redirect::to(&to)).into_response()
            }
            Ok(None) => ApiError::unauthorized().into_response(),
            Err(e) => e.into_response(),
        };
    }
    let session = match cookie(req.headers(), APP_COOKIE) {
        Some(key) => match auth::authenticate_for(&state.db, &key, KeyScope::App(host)).await {
            Ok(s) => s,
            Err(e) => return e.into_response(),
        },
        None => None,
    };
    // Without a session only a public app opens; anything else logs in first.
    let subject = session.as_ref().map(Session::subject).unwrap_or(Subject::Anonymous);
    let method = super::resolve::AccessMethod::Subdomain;
    let (agent, target) = match super::authorize_app(state, &subject, method, &ws, &app).await {
        Ok(found) => found,
        Err(e) if session.is_none() && e.status == axum::http::StatusCode::NOT_FOUND => {
            if matches!(*req.method(), axum::http::Method::GET | axum::http::Method::HEAD) {
                let back =
                    app_url(state, host, uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"));
                let mut to = state.config.access_url.clone();
                to.set_path("/api/v2/applications/auth-redirect");
                to.query_pairs_mut().clear().append_pair("redirect_uri", &back);
                return Redirect::to(to.as_str()).into_response();
            }
            return ApiError::unauthorized().into_response();
        }
        Err(e) => return e.into_response(),
    };
    // The app's own WebSockets come from its own origin. Another app host is
    // the same site, so this origin's Lax cookie rides along on its requests:
    // it must not drive this app as its user.
    let origin = req.headers().get(header::ORIGIN).and_then(|v| v.to_str().ok());
    if req.headers().contains_key(header::UPGRADE)
        && origin.is_some_and(|o| o != app_url(state, host, ""))
    {
        return ApiError::forbidden()
            .detail("An app's WebSocket must come from the app's own origin.")
            .into_response();
    }
    let rest = uri.path().to_owned();
    let (mut parts, body) = req.into_parts();
    // The app never sees its origin's key either.
    super::proxy::strip_cookie(&mut parts.headers, APP_COOKIE);
    let req = Request::from_parts(parts, body);
    match super::forward(state, &agent, &target, req, &rest).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

#[derive(Debug, Deserialize)]
pub struct AuthRedirectQuery {
    redirect_uri: String,
}

/// `GET /api/v2/applications/auth-redirect?redirect_uri=APP_URL`: on the
/// dashboard origin, with the dashboard session; mints a key for the app's
/// host and sends the browser back to it.
pub async fn auth_redirect(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<AuthRedirectQuery>,
) -> Result<Response, ApiError> {
    let Some(wildcard) = &state.config.wildcard else {
        return Err(
            ApiError::not_found("Subdomain apps").detail("Set --wildcard-access-url to use them.")
        );
    };
    let target = Url::parse(&q.redirect_uri)
        .map_err(|_| ApiError::bad_request("redirect_uri is not a URL."))?;
    let host = target.host_str().unwrap_or_default().to_ascii_lowercase();
    let is_app = target.scheme() == state.config.access_url.scheme()
        && target.port() == state.config.access_url.port()
        && wildcard.label(&host).and_then(parse_label).is_some();
    if !is_app {
        return Err(ApiError::bad_request("redirect_uri is not an app URL of this deployment."));
    }
    let Some(v) = crate::api::web::viewer(&state, &headers).await? else {
        let here = format!(
            "/api/v2/applications/auth-redirect?{}",
            url::form_urlencoded::Serializer::new(String::new())
                .append_pair("redirect_uri", target.as_str())
                .finish()
        );
        return Ok(super::login_redirect(&here));
    };
    // Authorization happens per request on the app origin; the key only says who.
    let key =
        auth::issue_app_key(&state.db, v.session.user.id, &host, state.config.session_lifetime)
            .await?;
    let mut back = target;
    back.query_pairs_mut().append_pair(TOKEN_PARAM, &key);
    let mut r = Redirect::to(back.as_str()).into_response();
    r.headers_mut()
        .insert(header::REFERRER_POLICY, axum::http::HeaderValue::from_static("no-referrer"));
    Ok(r)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_hosts() {
        let w = Wildcard::parse("*.apps.example.com").unwrap();
        assert_eq!(
            w.label("files--main--ws--alice.apps.example.com"),
            Some("files--main--ws--alice")
        );
        assert_eq!(w.label("apps.example.com"), None);
        assert_eq!(w.label("a.b.apps.example.com"), None);
        assert_eq!(w.label("xapps.example.com"), None);
        assert_eq!(w.label("coder.example.com"), None);
        assert!(Wildcard::parse("apps.example.com").is_none());
        assert!(Wildcard::parse("*.").is_none());
        assert!(Wildcard::parse("*.a..b").is_none());
    }

    #[test]
    fn labels() {
        let (ws, app) = parse_label("files--main--ws1--alice").unwrap();
        assert_eq!(
            (ws.owner.as_str(), ws.workspace.as_str(), ws.agent.as_deref()),
            ("alice", "ws1", Some("main"))
        );
        assert_eq!(app, AppRef::Slug("files".into()));
        assert_eq!(parse_label("8080--main--ws1--alice").unwrap().1, AppRef::Port(8080));
        assert!(parse_label("files--main--ws1").is_none());
        assert!(parse_label("files--main--ws1--alice--x").is_none());
        assert!(parse_label("fi.les--main--ws1--alice").is_none());
    }
}
