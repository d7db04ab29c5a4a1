//! Users: first-user setup, password login and logout (each audited), `me`,
//! and the user directory (owners, user admins, template admins and
//! auditors read it; owners and user admins add to it). The account
//! lifecycle is [`super::lifecycle`].

use std::net::IpAddr;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Duration;
use codersdk::{
    AuditAction, CreateFirstUserRequest, CreateFirstUserResponse, CreateUserRequest,
    LoginWithPasswordRequest, LoginWithPasswordResponse, ResourceType, Role, User, UserStatus,
};
use serde_json::json;
use uuid::Uuid;

use super::audit::{created, Actor, Entry, Origin};
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
    validate_password(password)
}

pub fn validate_password(password: &str) -> ApiResult<()> {
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
    origin: Origin,
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
    let actor = Actor { id: Some(user.id), username: &user.username };
    let entry = Entry::new(AuditAction::Create, ResourceType::User, user.id, &user.username)
        .diff(user_fields(&user))
        .status(StatusCode::CREATED);
    origin.record(&mut *tx, actor, entry).await?;
    tx.commit().await?;
    tracing::info!(user = %user.username, "first user created");
    Ok((StatusCode::CREATED, Json(CreateFirstUserResponse { user_id: user.id })))
}

/// Password login, throttled per login and per source address
/// ([`super::throttle`]): a throttled attempt gets a 429 with `Retry-After`
/// before the database or argon2 is touched, even with the right password.
pub async fn login(
    State(state): State<AppState>,
    origin: Origin,
    Json(req): Json<LoginWithPasswordRequest>,
) -> ApiResult<Response> {
    // Served without connect info (only in-process tests do), every client
    // shares one address budget.
    let ip = origin.ip.unwrap_or(IpAddr::from([0, 0, 0, 0]));
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
    let attempted = if req.username.is_empty() { &req.email } else { &req.username };
    let (user, err) = match row {
        Some(r) if ok && r.status == UserStatus::Active => (r, None),
        // The right password of a suspended account: say why (a wrong one
        // learns nothing about the account).
        Some(r) if ok => (r, Some(super::auth::suspended())),
        r => {
            let err = ApiError::new(StatusCode::UNAUTHORIZED, "Incorrect login or password.");
            let Some(r) = r else {
                attempt.finish(Outcome::Failure);
                let actor = Actor { id: None, username: attempted };
                let entry = login_entry(None, attempted, StatusCode::UNAUTHORIZED);
                origin.record(&state.db, actor, entry).await?;
                return Err(err);
            };
            (r, Some(err))
        }
    };
    let actor = Actor { id: Some(user.id), username: &user.username };
    if let Some(err) = err {
        attempt.finish(Outcome::Failure);
        let entry = login_entry(Some(user.id), &user.username, StatusCode::UNAUTHORIZED);
        origin.record(&state.db, actor, entry).await?;
        return Err(err);
    }
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
    let mut tx = state.db.begin().await?;
    let token = issue_token(
        &mut *tx,
        user.id,
        codersdk::LoginType::Password,
        None,
        state.config.session_lifetime,
    )
    .await?;
    let entry = login_entry(Some(user.id), &user.username, StatusCode::CREATED);
    origin.record(&mut *tx, actor, entry).await?;
    tx.commit().await?;
    let cookie = super::auth::session_cookie(&state.config, &token, false);
    Ok((
        StatusCode::CREATED,
        [(header::SET_COOKIE, cookie)],
        Json(LoginWithPasswordResponse { session_token: token }),
    )
        .into_response())
}

fn login_entry(id: Option<Uuid>, name: &str, status: StatusCode) -> Entry<'_> {
    Entry {
        action: AuditAction::Login,
        resource_type: ResourceType::User,
        resource_id: id,
        resource_name: name,
        diff: json!({}),
        status,
    }
}

fn user_fields(u: &UserRow) -> serde_json::Value {
    created(&[
        ("username", json!(u.username)),
        ("email", json!(u.email)),
        ("roles", json!(u.roles.0)),
        ("status", json!(u.status)),
        ("login_type", json!(u.login_type)),
    ])
}

pub async fn logout(
    State(state): State<AppState>,
    session: Session,
    origin: Origin,
) -> ApiResult<Response> {
    let mut tx = state.db.begin().await?;
    api_keys::delete(&mut *tx, &session.key_id).await?;
    let entry = Entry::new(
        AuditAction::Logout,
        ResourceType::User,
        session.user.id,
        &session.user.username,
    );
    origin.record(&mut *tx, (&session).into(), entry).await?;
    tx.commit().await?;
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
    origin: Origin,
    Json(req): Json<CreateUserRequest>,
) -> ApiResult<(StatusCode, Json<User>)> {
    session.authorize(Action::Create, Object::Users)?;
    validate_new_user(&req.email, &req.username, &req.password)?;
    let roles = if req.roles.is_empty() { vec![Role::Member] } else { req.roles.clone() };
    for role in roles.iter().copied().filter(|r| *r != Role::Member) {
        if !session.may(Action::Create, Object::RoleAssignment { role }) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!("You may not grant the {role} role."),
            ));
        }
    }
    let mut tx = state.db.begin().await?;
    let user =
        insert_user(&mut *tx, &state.passwords, &req.email, &req.username, &req.password, &roles)
            .await?;
    let entry = Entry::new(AuditAction::Create, ResourceType::User, user.id, &user.username)
        .diff(user_fields(&user))
        .status(StatusCode::CREATED);
    origin.record(&mut *tx, (&session).into(), entry).await?;
    tx.commit().await?;
    tracing::info!(user = %user.username, by = %session.user.username, "user created");
    Ok((StatusCode::CREATED, Json(user.to_api())))
}

/// Lifetime of a password session.
pub fn default_session_lifetime() -> Duration {
    Duration::hours(24)
}
