//! Users: first-user setup, password login and logout, `me`, and the
//! owner-only user directory.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use chrono::Duration;
use codersdk::{
    CreateFirstUserRequest, CreateFirstUserResponse, CreateUserRequest, LoginWithPasswordRequest,
    LoginWithPasswordResponse, Role, User, UserStatus,
};
use uuid::Uuid;

use super::auth::{issue_token, Session, UserRow};
use super::error::{ApiError, ApiResult, Json, Path};
use super::passwords::Passwords;
use super::throttle::Outcome;
use super::AppState;
use crate::authz::{Action, Object};
use crate::database::{api_keys, users};

const MIN_PASSWORD_LEN: usize = 8;

fn validate_new_user(email: &str, username: &str, password: &str) -> ApiResult<()> {
    let valid_username = !username.is_empty()
        && username.len() <= 32
        && username.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !username.starts_with('-');
    if !valid_username {
        return Err(ApiError::bad_request("Invalid username.")
            .detail("Use 1-32 letters, digits, '-' or '_', not starting with '-'."));
    }
    if username.eq_ignore_ascii_case("me") {
        return Err(ApiError::bad_request("The username \"me\" is reserved."));
    }
    let valid_email = email.len() <= 254
        && matches!(email.split_once('@'), Some((l, d)) if !l.is_empty() && d.contains('.') && !d.starts_with('.'));
    if !valid_email {
        return Err(ApiError::bad_request("Invalid email address."));
    }
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(ApiError::bad_request(format!(
            "Password must be at least {MIN_PASSWORD_LEN} characters."
        )));
    }
    Ok(())
}

async fn insert_user(
    db: impl sqlx::PgExecutor<'_>,
    passwords: &Passwords,
    email: &str,
    username: &str,
    password: &str,
    roles: &[Role],
) -> ApiResult<UserRow> {
    let hashed = passwords.hash(password.to_owned()).await?;
    let row =
        users::insert(db, users::NewUser { email, username, hashed_password: hashed, roles }).await;
    match row {
        Ok(row) => Ok(row),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            Err(ApiError::conflict("A user with that username or email already exists."))
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn first_user_exists(State(state): State<AppState>) -> ApiResult<Response> {
    let exists = users::any_exists(&state.db).await?;
    if exists {
        Ok((
            StatusCode::OK,
            Json(serde_json::json!({"message": "The first user has been created."})),
        )
            .into_response())
    } else {
        Err(ApiError::not_found("The first user").detail("Create it with `coder login`."))
    }
}

pub async fn create_first_user(
    State(state): State<AppState>,
    Json(req): Json<CreateFirstUserRequest>,
) -> ApiResult<(StatusCode, Json<CreateFirstUserResponse>)> {
    validate_new_user(&req.email, &req.username, &req.password)?;
    let mut tx = state.db.begin().await?;
    // Serialize concurrent attempts so exactly one can win.
    users::lock_first_user(&mut *tx).await?;
    let exists = users::any_exists(&mut *tx).await?;
    if exists {
        return Err(ApiError::conflict("The first user has already been created.")
            .detail("Log in with `coder login` instead."));
    }
    let user = insert_user(
        &mut *tx,
        &state.passwords,
        &req.email,
        &req.username,
        &req.password,
        &[Role::Owner],
    )
    .await?;
    tx.commit().await?;
    tracing::info!(user = %user.username, "first user created");
    Ok((StatusCode::CREATED, Json(CreateFirstUserResponse { user_id: user.id })))
}

/// Password login, throttled per login and per source address
/// ([`super::throttle`]): a throttled attempt gets a 429 with `Retry-After`
/// before the database or argon2 is touched, even with the right password.
pub async fn login(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    Json(req): Json<LoginWithPasswordRequest>,
) -> ApiResult<Response> {
    // Served without connect info (only in-process tests do), every client
    // shares one address budget.
    let ip = peer.map_or(IpAddr::from([0, 0, 0, 0]), |Extension(ConnectInfo(a))| a.ip());
    let mut attempt = match state.passwords.begin_login(&[&req.email, &req.username], ip) {
        Ok(a) => a,
        Err(refusal) => return Ok(refusal.into_response()),
    };
    let row = match users::for_login(&state.db, &req.email, &req.username).await {
        Ok(row) => row,
        Err(e) => {
            attempt.finish(Outcome::NotTried);
            return Err(e.into());
        }
    };
    let hash = row.as_ref().and_then(|r| r.hashed_password.clone());
    let ok = match attempt.verify(req.password.clone(), hash).await {
        Ok(ok) => ok,
        Err(resp) => return Ok(resp),
    };
    let user = match row {
        Some(r) if ok && r.status == UserStatus::Active => r,
        _ => {
            attempt.finish(Outcome::Failure);
            return Err(ApiError::new(StatusCode::UNAUTHORIZED, "Incorrect login or password."));
        }
    };
    attempt.finish(Outcome::Success);
    if state.config.disable_password_auth {
        // Owners keep a way in when the identity provider is down (as Coder).
        let owner = users::by_id(&state.db, user.id).await?;
        if !owner.is_some_and(|u| u.roles.0.contains(&Role::Owner)) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "Password authentication is disabled on this deployment.",
            )
            .detail("Log in with OpenID Connect (`coder login` opens it); only owners may use a password."));
        }
    }
    let token = issue_token(
        &state.db,
        user.id,
        codersdk::LoginType::Password,
        None,
        state.config.session_lifetime,
    )
    .await?;
    let cookie = super::auth::session_cookie(&state.config, &token, false);
    Ok((
        StatusCode::CREATED,
        [(header::SET_COOKIE, cookie)],
        Json(LoginWithPasswordResponse { session_token: token }),
    )
        .into_response())
}

pub async fn logout(State(state): State<AppState>, session: Session) -> ApiResult<Response> {
    api_keys::delete(&state.db, &session.key_id).await?;
    let cookie = super::auth::session_cookie(&state.config, "", true);
    Ok((
        [(header::SET_COOKIE, cookie)],
        Json(serde_json::json!({"message": "You have been logged out."})),
    )
        .into_response())
}

/// Resolves `{user}` (`me`, an id, or a username) to a user the caller may see.
pub async fn resolve_user(state: &AppState, session: &Session, user: &str) -> ApiResult<UserRow> {
    if user == "me" {
        return Ok(session.user.clone());
    }
    let row = match Uuid::parse_str(user) {
        Ok(id) => users::by_id(&state.db, id).await?,
        Err(_) => users::by_username(&state.db, user).await?,
    };
    match row {
        Some(r) if session.may(Action::Read, Object::User { id: r.id }) => Ok(r),
        // Members learn nothing about other users, not even whether they exist.
        _ => Err(ApiError::not_found("User")),
    }
}

pub async fn user(
    State(state): State<AppState>,
    session: Session,
    Path(user): Path<String>,
) -> ApiResult<Json<User>> {
    Ok(Json(resolve_user(&state, &session, &user).await?.to_api()))
}

pub async fn list_users(
    State(state): State<AppState>,
    session: Session,
) -> ApiResult<Json<Vec<User>>> {
    session.authorize(Action::Read, Object::Users)?;
    let rows = users::list(&state.db).await?;
    Ok(Json(rows.iter().map(UserRow::to_api).collect()))
}

pub async fn create_user(
    State(state): State<AppState>,
    session: Session,
    Json(req): Json<CreateUserRequest>,
) -> ApiResult<(StatusCode, Json<User>)> {
    session.authorize(Action::Create, Object::Users)?;
    validate_new_user(&req.email, &req.username, &req.password)?;
    let roles = if req.roles.is_empty() { vec![Role::Member] } else { req.roles.clone() };
    let user =
        insert_user(&state.db, &state.passwords, &req.email, &req.username, &req.password, &roles)
            .await?;
    tracing::info!(user = %user.username, by = %session.user.username, "user created");
    Ok((StatusCode::CREATED, Json(user.to_api())))
}

/// Lifetime of a password session.
pub fn default_session_lifetime() -> Duration {
    Duration::hours(24)
}
