//! A user's account over its life: suspend and activate, roles, password
//! change and reset, deletion. Each change and its audit row commit in one
//! transaction; the database's triggers (migration 0006) then announce it
//! to every replica's coordination, whose re-authorization sweep closes a
//! suspended or deleted user's connections and tunnels within seconds.
//!
//! Nobody suspends, deletes or re-roles themselves here (an owner could
//! lock the deployment out); only owners touch an owner's account or the
//! owner role ([`crate::authz`]).

use axum::extract::State;
use axum::http::StatusCode;
use codersdk::{
    AuditAction, ResourceType, Role, UpdatePasswordRequest, UpdateRolesRequest, User, UserStatus,
};
use serde_json::json;

use super::audit::{changes, Entry, Origin};
use super::auth::{Session, UserRow};
use super::error::{ApiError, ApiResult, Json, Path};
use super::users::{resolve_user, validate_password};
use super::AppState;
use crate::authz::{Action, Object};
use crate::database::{api_keys, users};

fn account(u: &UserRow) -> Object {
    Object::UserAccount { id: u.id, owner: u.roles.0.contains(&Role::Owner) }
}

/// The target of an administrative change: visible (else 404), not the
/// caller (else 400), and the caller may `action` it (else 403).
async fn target(
    state: &AppState,
    session: &Session,
    user: &str,
    action: Action,
    verb: &str,
) -> ApiResult<UserRow> {
    let u = resolve_user(state, session, user).await?;
    if u.id == session.user.id {
        return Err(ApiError::bad_request(format!("You cannot {verb} yourself."))
            .detail("Ask another owner or user admin."));
    }
    session.authorize(action, account(&u))?;
    Ok(u)
}

async fn set_status(
    state: &AppState,
    session: &Session,
    origin: &Origin,
    user: &str,
    status: UserStatus,
) -> ApiResult<Json<User>> {
    let verb = if status == UserStatus::Suspended { "suspend" } else { "activate" };
    let u = target(state, session, user, Action::Update, verb).await?;
    let mut tx = state.db.begin().await?;
    let old = users::lock(&mut *tx, u.id).await?.ok_or_else(|| ApiError::not_found("User"))?;
    let new = users::set_status(&mut *tx, u.id, status).await?;
    let diff = changes(&[("status", json!(old.status), json!(new.status))]);
    let entry = Entry::new(AuditAction::Write, ResourceType::User, u.id, &u.username).diff(diff);
    origin.record(&mut *tx, session.into(), entry).await?;
    tx.commit().await?;
    tracing::info!(user = %u.username, by = %session.user.username, %status, "user status changed");
    Ok(Json(new.to_api()))
}

/// `PUT /users/{user}/status/suspend`: their sessions, tokens and tunnels
/// stop working at once; nothing is deleted.
pub async fn suspend(
    State(state): State<AppState>,
    session: Session,
    origin: Origin,
    Path(user): Path<String>,
) -> ApiResult<Json<User>> {
    set_status(&state, &session, &origin, &user, UserStatus::Suspended).await
}

pub async fn activate(
    State(state): State<AppState>,
    session: Session,
    origin: Origin,
    Path(user): Path<String>,
) -> ApiResult<Json<User>> {
    set_status(&state, &session, &origin, &user, UserStatus::Active).await
}

/// The roles a user is stored with: sorted, without repeats, and always
/// with `member`.
fn normalized(roles: &[Role]) -> Vec<Role> {
    let mut out: Vec<Role> =
        Role::ALL.iter().copied().filter(|r| *r == Role::Member || roles.contains(r)).collect();
    out.dedup();
    out
}

/// `PUT /users/{user}/roles`: each role granted or taken away needs its own
/// permission (user admins never grant or remove `owner`).
pub async fn update_roles(
    State(state): State<AppState>,
    session: Session,
    origin: Origin,
    Path(user): Path<String>,
    Json(req): Json<UpdateRolesRequest>,
) -> ApiResult<Json<User>> {
    let u = target(&state, &session, &user, Action::Update, "change the roles of").await?;
    let new_roles = normalized(&req.roles);
    let mut tx = state.db.begin().await?;
    let old = users::lock(&mut *tx, u.id).await?.ok_or_else(|| ApiError::not_found("User"))?;
    let old_roles = normalized(&old.roles.0);
    for role in Role::ALL.iter().copied() {
        let action = match (old_roles.contains(&role), new_roles.contains(&role)) {
            (false, true) => Action::Create,
            (true, false) => Action::Delete,
            _ => continue,
        };
        if !session.may(action, Object::RoleAssignment { role }) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!("You may not grant or remove the {role} role."),
            )
            .detail("Only owners grant or remove the owner role."));
        }
    }
    let row = users::set_roles(&mut *tx, u.id, &new_roles).await?;
    let diff = changes(&[("roles", json!(old.roles.0), json!(row.roles.0))]);
    let entry = Entry::new(AuditAction::Write, ResourceType::User, u.id, &u.username).diff(diff);
    origin.record(&mut *tx, (&session).into(), entry).await?;
    tx.commit().await?;
    Ok(Json(row.to_api()))
}

/// `PUT /users/{user}/password`. One's own: the old password is required
/// (and checked under the login throttle). Another's (owners and user
/// admins): a reset. Either way the account's other password sessions end;
/// personal tokens stay.
pub async fn update_password(
    State(state): State<AppState>,
    session: Session,
    origin: Origin,
    Path(user): Path<String>,
    Json(req): Json<UpdatePasswordRequest>,
) -> ApiResult<StatusCode> {
    let u = resolve_user(&state, &session, &user).await?;
    let own = u.id == session.user.id;
    if own {
        let hash = users::hashed_password(&state.db, u.id).await?;
        let ip = origin.ip.unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]));
        let mut attempt = match state.passwords.begin_login(&[&u.username], ip) {
            Ok(a) => a,
            Err(_) => {
                return Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "Too many wrong passwords; try again later.",
                ))
            }
        };
        let ok = match attempt.verify(req.old_password.clone(), hash).await {
            Ok(ok) => ok,
            Err(_) => return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "Busy.")),
        };
        attempt.finish(if ok {
            super::throttle::Outcome::Success
        } else {
            super::throttle::Outcome::Failure
        });
        if !ok {
            return Err(ApiError::bad_request("The old password is incorrect."));
        }
    } else {
        session.authorize(Action::Update, account(&u))?;
    }
    validate_password(&req.password)?;
    let hashed = state.passwords.hash(req.password.clone()).await?;
    let mut tx = state.db.begin().await?;
    users::set_password(&mut *tx, u.id, &hashed).await?;
    let keep = if own { Some(session.key_id.as_str()) } else { None };
    api_keys::delete_password_sessions(&mut *tx, u.id, keep).await?;
    let diff = changes(&[("hashed_password", json!(""), json!("changed"))]);
    let entry = Entry::new(AuditAction::Write, ResourceType::User, u.id, &u.username).diff(diff);
    origin.record(&mut *tx, (&session).into(), entry).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /users/{user}`: refused (409) while they have workspaces; the
/// CLI's `--force` deletes those first with delete builds.
pub async fn delete(
    State(state): State<AppState>,
    session: Session,
    origin: Origin,
    Path(user): Path<String>,
) -> ApiResult<StatusCode> {
    let u = target(&state, &session, &user, Action::Delete, "delete").await?;
    let mut tx = state.db.begin().await?;
    users::lock(&mut *tx, u.id).await?.ok_or_else(|| ApiError::not_found("User"))?;
    let workspaces = users::workspace_names(&mut *tx, u.id).await?;
    if !workspaces.is_empty() {
        return Err(ApiError::conflict(format!(
            "{} still has {} workspace(s): {}.",
            u.username,
            workspaces.len(),
            workspaces.join(", ")
        ))
        .detail("Delete them first, or run `coder users delete --force`, which does."));
    }
    users::soft_delete(&mut tx, u.id).await?;
    let diff = changes(&[("deleted", json!(false), json!(true))]);
    let entry = Entry::new(AuditAction::Delete, ResourceType::User, u.id, &u.username).diff(diff);
    origin.record(&mut *tx, (&session).into(), entry).await?;
    tx.commit().await?;
    tracing::info!(user = %u.username, by = %session.user.username, "user deleted");
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_user_is_a_member_once() {
        assert_eq!(normalized(&[]), vec![Role::Member]);
        assert_eq!(
            normalized(&[Role::Auditor, Role::Member, Role::Auditor, Role::Owner]),
            vec![Role::Owner, Role::Auditor, Role::Member]
        );
    }
}
