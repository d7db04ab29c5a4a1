//! OpenID Connect login routes (the protocol is [`crate::oidc`]):
//!
//! - `GET /api/v2/users/authmethods`: which login methods are on;
//! - `GET /api/v2/users/oidc/start?redirect=/path`: starts a login and sends
//!   the browser to the provider, with the state bound to it by a cookie;
//! - `GET /api/v2/users/oidc/callback?code&state`: the provider's redirect
//!   back; on success a session cookie is set and the browser lands on the
//!   path it started from.
//!
//! Linking: an account is found by the provider's `(issuer, sub)` only. A
//! first login whose email belongs to an existing account is refused, not
//! linked: a password account is never handed to whoever controls an IdP
//! account of the same email; an administrator resolves it.

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{AppendHeaders, IntoResponse, Redirect, Response};
use chrono::Utc;
use codersdk::{
    AuditAction, AuthMethod, AuthMethods, LoginType, OidcAuthMethod, ResourceType, Role, UserStatus,
};
use serde::Deserialize;
use url::Url;
use uuid::Uuid;

use super::audit::{Actor, Entry, Origin};
use super::auth::{issue_token, presented_token, secure_cookies, session_cookie};
use super::error::{ApiError, ApiResult, Json};
use super::AppState;
use crate::database::user_links::{self, LoginState, NewOidcUser};
use crate::database::users;
use crate::oidc::{self, claims, Identity, LoginStart, Provider};
use crate::secrets;

/// The cookie that binds a login's state to the browser that started it.
const STATE_COOKIE: &str = "oidc_state";
const SECURE_STATE_COOKIE: &str = "__Host-oidc_state";

/// The callback path, under the access URL.
pub const CALLBACK_PATH: &str = "/api/v2/users/oidc/callback";

pub async fn auth_methods(State(state): State<AppState>) -> Json<AuthMethods> {
    Json(AuthMethods {
        password: AuthMethod { enabled: !state.config.disable_password_auth },
        oidc: OidcAuthMethod {
            enabled: state.oidc.is_some(),
            sign_in_text: state
                .oidc
                .as_ref()
                .map(|p| p.config.sign_in_text.clone())
                .unwrap_or_default(),
        },
    })
}

fn provider(state: &AppState) -> ApiResult<&Provider> {
    state.oidc.as_deref().ok_or_else(|| {
        ApiError::not_found("OpenID Connect login")
            .detail("This deployment has no OpenID provider configured (coderd --oidc-issuer-url).")
    })
}

fn callback_url(state: &AppState) -> ApiResult<Url> {
    state.config.access_url.join(CALLBACK_PATH).map_err(ApiError::internal)
}

fn state_cookie_name(state: &AppState) -> &'static str {
    if secure_cookies(&state.config) {
        SECURE_STATE_COOKIE
    } else {
        STATE_COOKIE
    }
}

/// `SameSite=Lax`: the provider's redirect back is a cross-site top-level
/// navigation, which Lax cookies ride along on.
fn state_cookie(state: &AppState, value: &str, max_age: u64) -> String {
    let secure = if secure_cookies(&state.config) { "; Secure" } else { "" };
    format!(
        "{}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}",
        state_cookie_name(state)
    )
}

#[derive(Debug, Deserialize)]
pub struct StartQuery {
    #[serde(default)]
    redirect: String,
}

pub async fn start(
    State(state): State<AppState>,
    Query(q): Query<StartQuery>,
) -> ApiResult<Response> {
    let provider = provider(&state)?;
    let redirect = super::web::safe_redirect(&q.redirect).to_owned();
    let login = LoginStart::new();
    let row =
        LoginState { nonce: login.nonce.clone(), pkce_verifier: login.verifier.clone(), redirect };
    let expires =
        Utc::now() + chrono::Duration::from_std(oidc::LOGIN_TIMEOUT).map_err(ApiError::internal)?;
    user_links::insert_state(&state.db, &oidc::state_hash(&login.state), &row, expires).await?;
    let to = provider.authorize_url(&login, &callback_url(&state)?);
    let cookie = state_cookie(&state, &login.state, oidc::LOGIN_TIMEOUT.as_secs());
    Ok(([(header::SET_COOKIE, cookie)], Redirect::to(to.as_str())).into_response())
}

#[derive(Debug, Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// The provider's redirect back. Every refusal clears the state cookie and
/// sets no session.
pub async fn callback(
    State(state): State<AppState>,
    headers: HeaderMap,
    origin: Origin,
    Query(q): Query<CallbackQuery>,
) -> Response {
    let clear = [(header::SET_COOKIE, state_cookie(&state, "", 0))];
    // Login success and failure both end here, and each writes its audit
    // row. The session was issued inside `finish_login`, so the row follows
    // it rather than sharing its transaction; a failed write refuses the
    // login, and the session's token, never handed out, is unusable.
    let result = finish_login(&state, &headers, q).await;
    let (actor, entry) = match &result {
        Ok(done) => (
            Actor { id: Some(done.user_id), username: &done.username },
            Entry::new(AuditAction::Login, ResourceType::User, done.user_id, &done.username)
                .diff(serde_json::json!({ "login_type": LoginType::Oidc }))
                .status(StatusCode::CREATED),
        ),
        Err(e) => (
            Actor { id: None, username: "" },
            Entry {
                action: AuditAction::Login,
                resource_type: ResourceType::User,
                resource_id: None,
                resource_name: "",
                diff: serde_json::json!({ "login_type": LoginType::Oidc }),
                status: e.status,
            },
        ),
    };
    if let Err(e) = origin.record(&state.db, actor, entry).await {
        tracing::warn!(error = %e, "could not write the audit row of an OpenID Connect login");
        return (clear, ApiError::from(e)).into_response();
    }
    match result {
        Ok(done) => {
            tracing::info!(user = %done.username, "OpenID Connect login");
            let session = session_cookie(&state.config, &done.token, false);
            let cookies =
                [(header::SET_COOKIE, state_cookie(&state, "", 0)), (header::SET_COOKIE, session)];
            (AppendHeaders(cookies), Redirect::to(&done.redirect)).into_response()
        }
        Err(e) => {
            tracing::info!(status = %e.status, message = %e.message, "OpenID Connect login refused");
            (clear, e).into_response()
        }
    }
}

struct LoggedIn {
    user_id: Uuid,
    username: String,
    token: String,
    redirect: String,
}

async fn finish_login(
    state: &AppState,
    headers: &HeaderMap,
    q: CallbackQuery,
) -> ApiResult<LoggedIn> {
    let provider = provider(state)?;
    if let Some(error) = q.error {
        let detail = q.error_description.unwrap_or_default();
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            format!("The identity provider refused the login: {error}."),
        )
        .detail(detail));
    }
    let (Some(code), Some(query_state)) = (q.code, q.state) else {
        return Err(ApiError::bad_request(
            "The callback needs `code` and `state`: start the login from the login page.",
        ));
    };
    // The state must be the one this browser started with.
    let cookie =
        presented_token(&strip_session_header(headers), state_cookie_name(state)).map(|(v, _)| v);
    let bound =
        cookie.is_some_and(|c| secrets::constant_time_eq(c.as_bytes(), query_state.as_bytes()));
    if !bound {
        return Err(ApiError::bad_request(
            "This login was not started in this browser (state mismatch).",
        )
        .detail("Start the login again from the login page."));
    }
    let Some(started) = user_links::take_state(&state.db, &oidc::state_hash(&query_state)).await?
    else {
        return Err(ApiError::bad_request("This login has expired or was already used.")
            .detail("Start the login again from the login page."));
    };
    let claims = provider
        .exchange(&code, &started.pkce_verifier, &started.nonce, &callback_url(state)?)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "OpenID Connect token exchange or verification failed");
            ApiError::new(StatusCode::UNAUTHORIZED, "The login could not be verified.")
                .detail(e.to_string())
        })?;
    let identity = claims::identity(&provider.config, &claims)
        .map_err(|r| ApiError::new(StatusCode::FORBIDDEN, r.to_string()))?;
    let user_id = account(state, provider, &identity).await?;
    let user = users::by_id(&state.db, user_id)
        .await?
        .ok_or_else(|| ApiError::internal("linked user vanished"))?;
    if user.status != UserStatus::Active {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "Your account is suspended.")
            .detail("Ask an administrator to activate it."));
    }
    let token =
        issue_token(&state.db, user.id, LoginType::Oidc, None, state.config.session_lifetime)
            .await?;
    Ok(LoggedIn { user_id: user.id, username: user.username, token, redirect: started.redirect })
}

/// Only cookies count for the state: a header named like the session's
/// must not stand in for it.
fn strip_session_header(headers: &HeaderMap) -> HeaderMap {
    let mut h = HeaderMap::new();
    for v in headers.get_all(header::COOKIE) {
        h.append(header::COOKIE, v.clone());
    }
    h
}

/// The account of a verified identity: the linked one (roles synced), or a
/// new one when sign-ups are allowed.
async fn account(state: &AppState, provider: &Provider, id: &Identity) -> ApiResult<Uuid> {
    let issuer = provider.metadata.issuer.as_str();
    let mapped = provider.config.role_mapping.as_ref().map(|m| claims::roles_for(m, &id.groups));
    if let Some(user_id) = user_links::linked_user(&state.db, issuer, &id.subject).await? {
        user_links::touch_link(&state.db, issuer, &id.subject, &id.email).await?;
        if let Some(roles) = &mapped {
            user_links::set_roles(&state.db, user_id, roles).await?;
        }
        return Ok(user_id);
    }
    if let Some((_, login_type)) = user_links::by_email(&state.db, &id.email).await? {
        return Err(ApiError::conflict(format!(
            "An account with the email {} already exists and logs in with {}.",
            id.email,
            if login_type == LoginType::Password { "a password" } else { "another identity" },
        ))
        .detail(
            "Log in the way that account does, or ask an administrator to resolve the conflict.",
        ));
    }
    if !provider.config.allow_signups {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "Sign-ups through OpenID Connect are disabled.",
        )
        .detail("Ask an administrator to create your account."));
    }
    let roles = mapped.unwrap_or_else(|| vec![Role::Member]);
    for n in 1..=100 {
        let username = claims::username_candidate(&id.username, n);
        if user_links::username_taken(&state.db, &username).await? {
            continue;
        }
        let new = NewOidcUser {
            issuer,
            subject: &id.subject,
            email: &id.email,
            username: &username,
            roles: &roles,
        };
        match user_links::insert_user(&state.db, new).await {
            Ok(user_id) => {
                tracing::info!(user = %username, "user signed up through OpenID Connect");
                return Ok(user_id);
            }
            // A concurrent login of the same person, or the name or email
            // taken meanwhile.
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                if let Some(user_id) =
                    user_links::linked_user(&state.db, issuer, &id.subject).await?
                {
                    return Ok(user_id);
                }
                if user_links::by_email(&state.db, &id.email).await?.is_some() {
                    return Err(ApiError::conflict(format!(
                        "An account with the email {} already exists.",
                        id.email
                    )));
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::conflict("No free username could be made from your identity provider's claims."))
}
