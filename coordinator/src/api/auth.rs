//! Authentication: the [`Session`] extractor turns a presented token (the
//! `Coder-Session-Token` header or the session cookie) into the user it
//! belongs to, or a 401.
//!
//! The session cookie is `coder_session_token` on a plain-HTTP deployment
//! and `__Host-coder_session_token` (with `Secure`) when the access URL is
//! `https`: browsers let no other host set or shadow a `__Host-` cookie, so
//! a workspace app on a sibling subdomain cannot plant a session of its
//! choosing. Only the deployment's own name is read back.
//!
//! Lookup is by the token's id; the secret is compared with the stored SHA-256
//! in constant time. Password sessions slide: each use more than an hour after
//! the last extension pushes expiry out by the session lifetime. Personal API
//! tokens keep the expiry they were created with. A suspended user's
//! sessions and tokens are refused with a 401 that says so.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use chrono::{Duration, Utc};
use codersdk::{
    LoginType, UserStatus, SECURE_SESSION_TOKEN_COOKIE, SESSION_TOKEN_COOKIE, SESSION_TOKEN_HEADER,
};
use sqlx::PgPool;
use uuid::Uuid;

use super::error::ApiError;
use super::{ApiConfig, AppState};
use crate::authz::{self, Action, Object, Subject};
use crate::database::{api_keys, users};
use crate::secrets;

pub use crate::database::users::UserRow;

/// An authenticated request.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: UserRow,
    pub key_id: String,
}

impl Session {
    /// The user as [`authz`] sees them.
    pub fn subject(&self) -> Subject {
        Subject::user(self.user.id, &self.user.roles.0)
    }

    /// [`authz::authorize`] for this user: a generic 403 when refused (sites
    /// that hide what the caller may not see map the refusal themselves).
    pub fn authorize(&self, action: Action, object: Object) -> Result<(), ApiError> {
        authz::authorize(&self.subject(), action, &object).map_err(|_| ApiError::forbidden())
    }

    /// Whether [`authz::authorize`] allows `action` on `object`.
    pub fn may(&self, action: Action, object: Object) -> bool {
        authz::authorize(&self.subject(), action, &object).is_ok()
    }
}

/// Where a request's token came from: a cookie is sent by the browser on
/// its own, so a state change authenticated by it needs a CSRF token too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    Header,
    Cookie,
}

/// Whether browsers reach this deployment over HTTPS (so its cookies are
/// `Secure`): its access URL says, whoever terminates the TLS.
pub fn secure_cookies(config: &ApiConfig) -> bool {
    config.access_url.scheme() == "https"
}

/// The name of this deployment's session cookie.
pub fn session_cookie_name(config: &ApiConfig) -> &'static str {
    if secure_cookies(config) {
        SECURE_SESSION_TOKEN_COOKIE
    } else {
        SESSION_TOKEN_COOKIE
    }
}

/// The `Set-Cookie` value that stores `token` as the session (an empty
/// `token` with `Max-Age=0` deletes it).
pub fn session_cookie(config: &ApiConfig, token: &str, max_age_zero: bool) -> String {
    let name = session_cookie_name(config);
    let secure = if secure_cookies(config) { "; Secure" } else { "" };
    let expire = if max_age_zero { "; Max-Age=0" } else { "" };
    format!("{name}={token}; Path=/; HttpOnly; SameSite=Lax{secure}{expire}")
}

/// The token a request presents: the header, else the cookie named
/// `cookie_name` (see [`session_cookie_name`]).
pub fn presented_token(
    headers: &axum::http::HeaderMap,
    cookie_name: &str,
) -> Option<(String, TokenSource)> {
    if let Some(v) = headers.get(SESSION_TOKEN_HEADER) {
        return v.to_str().ok().map(|t| (t.to_owned(), TokenSource::Header));
    }
    for header in headers.get_all(axum::http::header::COOKIE) {
        let Ok(s) = header.to_str() else { continue };
        for pair in s.split(';') {
            if let Some((k, v)) = pair.trim().split_once('=') {
                if k == cookie_name {
                    return Some((v.to_owned(), TokenSource::Cookie));
                }
            }
        }
    }
    None
}

/// The CSRF token of a session: derived from the session token, so it needs
/// no storage, and a page that shows it does not reveal the session.
pub fn csrf_token(session_token: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"coder-csrf\0");
    h.update(session_token.as_bytes());
    hex::encode(h.finalize())
}

/// A cookie-authenticated state change must carry the session's CSRF token
/// in the `X-CSRF-Token` header (constant-time compare).
fn check_csrf(parts: &Parts, token: &str, source: TokenSource) -> Result<(), ApiError> {
    if source == TokenSource::Header || parts.method.is_safe() {
        return Ok(());
    }
    let presented =
        parts.headers.get(super::web::CSRF_HEADER).map(|v| v.as_bytes()).unwrap_or_default();
    if secrets::constant_time_eq(presented, csrf_token(token).as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::forbidden().detail(
            "A request authenticated by the session cookie must carry the X-CSRF-Token header.",
        ))
    }
}

/// A browser's WebSocket must come from our own origin: cookies ride along
/// on cross-site WebSocket requests, and CSRF tokens do not apply to GET.
/// Every cookie-authenticated upgrade passes here (the [`Session`]
/// extractor, and the path-app proxy for an app's own WebSockets).
pub fn check_websocket_origin(
    state: &AppState,
    headers: &axum::http::HeaderMap,
    source: TokenSource,
) -> Result<(), ApiError> {
    if source == TokenSource::Header || !headers.contains_key(axum::http::header::UPGRADE) {
        return Ok(());
    }
    if same_origin(state, headers) {
        return Ok(());
    }
    Err(ApiError::forbidden().detail(
        "A WebSocket authenticated by the session cookie must come from this deployment's \
         origin; other clients send the Coder-Session-Token header.",
    ))
}

fn same_origin(state: &AppState, headers: &axum::http::HeaderMap) -> bool {
    use axum::http::header;
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true; // not a browser
    };
    let ours = state.config.access_url.origin().ascii_serialization();
    let internal = state.internal_url().origin().ascii_serialization();
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or_default();
    origin == ours
        || origin == internal
        || origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://")) == Some(host)
}

/// What a key may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyScope<'a> {
    /// The API and the dashboard: any key but an app key.
    Api,
    /// The subdomain app at this host: only the app key minted for it.
    App(&'a str),
}

/// The `token_name` of an app key: the app's host and the key's id.
pub fn app_key_name(host: &str, key_id: &str) -> String {
    format!("{host} {key_id}")
}

/// Resolves a token to its user; `None` for any kind of invalid token.
pub async fn authenticate(db: &PgPool, token: &str) -> Result<Option<Session>, ApiError> {
    authenticate_for(db, token, KeyScope::Api).await
}

/// [`authenticate`] for a scope: app keys never reach the API, and open only
/// the app origin they were minted for.
pub async fn authenticate_for(
    db: &PgPool,
    token: &str,
    scope: KeyScope<'_>,
) -> Result<Option<Session>, ApiError> {
    let Some((id, secret)) = secrets::split_token(token) else {
        return Ok(None);
    };
    let key = api_keys::for_auth(db, id).await?;
    let Some(key) = key else { return Ok(None) };
    if !secrets::secret_matches(secret, &key.hashed_secret) {
        return Ok(None);
    }
    let in_scope = match scope {
        KeyScope::Api => key.login_type != LoginType::AppConnect,
        KeyScope::App(host) => {
            key.login_type == LoginType::AppConnect
                && key.token_name.as_deref() == Some(app_key_name(host, id).as_str())
        }
    };
    if !in_scope {
        return Ok(None);
    }
    let now = Utc::now();
    if key.expires_at <= now {
        return Ok(None);
    }
    let user = users::by_api_key(db, id).await?;
    let Some(user) = user else { return Ok(None) };
    if user.status != UserStatus::Active {
        return Err(suspended());
    }
    let lifetime = Duration::seconds(key.lifetime_seconds);
    let extend = matches!(key.login_type, LoginType::Password | LoginType::Oidc)
        && now + lifetime - key.expires_at > Duration::hours(1);
    if extend || now - key.last_used > Duration::minutes(1) {
        let expires_at = if extend { now + lifetime } else { key.expires_at };
        api_keys::touch(db, id, now, expires_at).await?;
    }
    Ok(Some(Session { user, key_id: id.to_owned() }))
}

/// The answer to a suspended user's credentials, however valid.
pub fn suspended() -> ApiError {
    ApiError::new(axum::http::StatusCode::UNAUTHORIZED, "Your account is suspended.")
        .detail("Ask an owner or user admin to activate it.")
}

impl FromRequestParts<AppState> for Session {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let cookie = session_cookie_name(&state.config);
        let (token, source) =
            presented_token(&parts.headers, cookie).ok_or_else(ApiError::unauthorized)?;
        let session = authenticate(&state.db, &token).await?.ok_or_else(ApiError::unauthorized)?;
        check_csrf(parts, &token, source)?;
        check_websocket_origin(state, &parts.headers, source)?;
        Ok(session)
    }
}

/// Mints a key that opens the subdomain app at `host` for `user_id`.
pub async fn issue_app_key(
    db: &PgPool,
    user_id: Uuid,
    host: &str,
    lifetime: Duration,
) -> Result<String, sqlx::Error> {
    let t = secrets::new_token();
    let name = app_key_name(host, &t.id);
    insert_key(db, t, user_id, LoginType::AppConnect, Some(&name), lifetime).await
}

/// Stores a new token for `user_id` and returns the string to hand out once
/// (on a transaction, to commit with its audit row).
pub async fn issue_token(
    db: impl sqlx::PgExecutor<'_>,
    user_id: Uuid,
    login_type: LoginType,
    token_name: Option<&str>,
    lifetime: Duration,
) -> Result<String, sqlx::Error> {
    insert_key(db, secrets::new_token(), user_id, login_type, token_name, lifetime).await
}

async fn insert_key(
    db: impl sqlx::PgExecutor<'_>,
    t: secrets::NewToken,
    user_id: Uuid,
    login_type: LoginType,
    token_name: Option<&str>,
    lifetime: Duration,
) -> Result<String, sqlx::Error> {
    let key = api_keys::NewKey {
        id: &t.id,
        hashed_secret: &t.hashed_secret,
        user_id,
        login_type,
        token_name,
        lifetime,
    };
    api_keys::insert(db, key).await?;
    Ok(t.token)
}
