//! The administration pages: `/users` (the directory with status, login
//! type and roles) and `/audit` (the audit log, filtered by a search query
//! in a plain GET form). Both read through the API handlers, so they show
//! exactly what the viewer's roles allow (a 403 page otherwise). `/users`
//! also has, for owners and user admins, a "Create user" form, Suspend /
//! Activate buttons and role checkboxes; the page's script sends them to
//! the same API routes as `coder users …`, with the CSRF header, and shows
//! the API's refusals. The page only hides what the roles surely refuse.

use std::fmt::Write as _;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use codersdk::{AuditLog, Role, User, UserStatus};

use super::super::audit::AuditQuery;
use super::super::error::ApiError;
use super::super::AppState;
use super::pages::{esc, layout};
use super::{page, viewer, Viewer};
use crate::authz::{Action, Object};

pub async fn users(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Some(v) = viewer(&state, &headers).await? else {
        return Ok(super::super::apps::login_redirect("/users"));
    };
    let super::super::error::Json(list) =
        super::super::users::list_users(State(state.clone()), v.session.clone()).await?;
    Ok(page(users_page(&v, &list)))
}

/// A user's status badge: active is well, suspended is off.
fn status_class(s: UserStatus) -> &'static str {
    match s {
        UserStatus::Active => "ok",
        UserStatus::Suspended => "off",
    }
}

fn users_page(v: &Viewer, users: &[User]) -> String {
    let s = &v.session;
    let mut body = String::from(r#"<h1>Users</h1><p id="users-error" class="error" hidden></p>"#);
    if s.may(Action::Create, Object::Users) {
        body.push_str(
            r#"<form id="user-create" class="inline"><label>Username <input id="user-create-name" required autocomplete="off"></label><label>Email <input id="user-create-email" type="email" required autocomplete="off"></label><label>Password <input id="user-create-password" type="password" required minlength="8" autocomplete="new-password"></label><button type="submit" id="user-create-submit">Create user</button></form>"#,
        );
    }
    body.push_str(
        r#"<table id="users"><thead><tr><th>Username</th><th>Email</th><th>Status</th><th>Login type</th><th>Roles</th><th>Created</th><th>Actions</th></tr></thead><tbody>"#,
    );
    for u in users {
        let roles: Vec<&str> = u.roles.iter().map(|r| r.as_str()).collect();
        let _ = write!(
            body,
            r#"<tr data-user="{name}"><td>{name}</td><td>{email}</td><td><span class="badge {cls}" data-status="{st}">{st}</span></td><td>{lt}</td><td class="roles">{roles}</td><td>{created}</td><td>{actions}</td></tr>"#,
            name = esc(&u.username),
            email = esc(&u.email),
            st = u.status,
            cls = status_class(u.status),
            lt = u.login_type,
            roles = esc(&roles.join(", ")),
            created = u.created_at.format("%Y-%m-%d"),
            actions = user_actions(v, u),
        );
    }
    body.push_str("</tbody></table><p>Also from the CLI: <code>coder users create|suspend|activate|delete|edit-roles</code>.</p>");
    layout("Users", Some(v), &body)
}

/// A row's controls, for a viewer whose roles allow changing that account
/// (never their own): Suspend or Activate, and the roles as checkboxes,
/// each disabled when the viewer may not grant or remove it. The API
/// decides in the end; its refusals show on the page.
fn user_actions(v: &Viewer, u: &User) -> String {
    let s = &v.session;
    let account = Object::UserAccount { id: u.id, owner: u.roles.contains(&Role::Owner) };
    if u.id == s.user.id || !s.may(Action::Update, account) {
        return String::new();
    }
    let name = esc(&u.username);
    let (action, label) = if u.status == UserStatus::Suspended {
        ("activate", "Activate")
    } else {
        ("suspend", "Suspend")
    };
    let mut out = format!(
        r#"<button type="button" class="user-status" data-user="{name}" data-action="{action}">{label}</button><details class="roles-edit"><summary>Edit roles</summary><form class="roles-form" data-user="{name}">"#
    );
    for role in Role::ALL.iter().copied() {
        let held = u.roles.contains(&role);
        let action = if held { Action::Delete } else { Action::Create };
        let fixed = role == Role::Member || !s.may(action, Object::RoleAssignment { role });
        let _ = write!(
            out,
            r#"<label class="check"><input type="checkbox" name="role" value="{r}"{c}{d}> {r}</label>"#,
            r = role.as_str(),
            c = if held || role == Role::Member { " checked" } else { "" },
            d = if fixed { " disabled" } else { "" },
        );
    }
    out.push_str(
        r#"<button type="submit" class="roles-save">Save roles</button></form></details>"#,
    );
    out
}

pub async fn audit(
    State(state): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Some(v) = viewer(&state, &headers).await? else {
        return Ok(super::super::apps::login_redirect("/audit"));
    };
    let text = q.as_ref().map(|Query(q)| q.q.clone()).unwrap_or_default();
    let super::super::error::Json(logs) =
        super::super::audit::list(State(state.clone()), v.session.clone(), q).await?;
    Ok(page(audit_page(&v, &text, &logs.audit_logs, logs.count)))
}

fn audit_page(v: &Viewer, q: &str, logs: &[AuditLog], count: i64) -> String {
    let mut body = format!(
        r#"<h1>Audit log</h1><form method="get" action="/audit" class="inline"><label>Search <input id="audit-q" name="q" value="{q}" placeholder="username:alice action:login resource_type:user time_after:2026-01-01"></label><button type="submit">Filter</button></form><p>{count} matching</p>"#,
        q = esc(q)
    );
    body.push_str(r#"<table id="audit"><thead><tr><th>Time</th><th>User</th><th>Action</th><th>Resource</th><th>Diff</th><th>Status</th><th>Address</th><th>User agent</th></tr></thead><tbody>"#);
    for l in logs {
        let _ = write!(
            body,
            r#"<tr data-action="{action}"><td>{time}</td><td>{user}</td><td>{action}</td><td>{rt} {name}</td><td><code>{diff}</code></td><td>{status}</td><td>{ip}</td><td>{ua}</td></tr>"#,
            time = l.time.format("%Y-%m-%d %H:%M:%S"),
            user = esc(&l.username),
            action = l.action,
            rt = l.resource_type,
            name = esc(&l.resource_name),
            diff = esc(&l.diff.to_string()),
            status = l.status_code,
            ip = esc(l.ip.as_deref().unwrap_or_default()),
            ua = esc(&l.user_agent),
        );
    }
    body.push_str("</tbody></table>");
    layout("Audit", Some(v), &body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::database::users::{Roles, UserRow};
    use codersdk::LoginType;

    fn row(name: &str, roles: &[Role]) -> UserRow {
        UserRow {
            id: uuid::Uuid::new_v4(),
            email: format!("{name}@example.com"),
            username: name.to_owned(),
            roles: Roles(roles.to_vec()),
            status: UserStatus::Active,
            login_type: LoginType::Password,
            created_at: chrono::Utc::now(),
        }
    }

    fn viewer(u: &UserRow) -> Viewer {
        let session = super::super::super::auth::Session { user: u.clone(), key_id: "k".into() };
        Viewer { session, csrf: "c".into() }
    }

    /// The page hides what the roles refuse: members get no controls, user
    /// admins cannot touch owners or the owner role, nobody changes themself.
    #[test]
    fn controls_follow_the_viewers_roles() {
        let owner = row("olive", &[Role::Owner, Role::Member]);
        let admin = row("ursula", &[Role::UserAdmin, Role::Member]);
        let member = row("mel", &[Role::Member]);
        let all: Vec<User> = [&owner, &admin, &member].iter().map(|u| u.to_api()).collect();

        let page = users_page(&viewer(&member), &all);
        assert!(!page.contains("user-create") && !page.contains("user-status"), "{page}");

        let by_admin = |u: &UserRow| user_actions(&viewer(&admin), &u.to_api());
        assert_eq!(by_admin(&owner), "", "a user admin may not change an owner");
        assert_eq!(by_admin(&admin), "", "nobody changes themself");
        let m = by_admin(&member);
        assert!(m.contains(r#"data-action="suspend""#), "{m}");
        assert!(m.contains(r#"value="owner" disabled"#), "{m}");
        assert!(m.contains(r#"value="template-admin">"#), "{m}");
        assert!(users_page(&viewer(&admin), &all).contains(r#"id="user-create""#));

        let m = user_actions(&viewer(&owner), &member.to_api());
        assert!(m.contains(r#"value="owner">"#), "owners grant owner: {m}");
        assert!(user_actions(&viewer(&owner), &admin.to_api()).contains("user-status"));
    }
}
