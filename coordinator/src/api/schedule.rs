//! Autostart and autostop settings: a workspace's TTL
//! (`PUT /workspaces/{id}/ttl`), its autostart schedule (`…/autostart`),
//! its running build's deadline (`…/extend`), and a template's default and
//! maximum TTL and whether it requires its active version
//! (`PATCH /templates/{template}`). Changing a workspace's
//! schedule is updating the workspace; each change writes an audit row in
//! its transaction. The scheduler that acts on them is `crate::scheduler`.

use axum::extract::State;
use chrono::Utc;
use codersdk::{
    AuditAction, PutExtendWorkspaceRequest, ResourceType, Template, UpdateTemplateMeta,
    UpdateWorkspaceAutostartRequest, UpdateWorkspaceTtlRequest, Workspace,
};
use serde_json::json;
use uuid::Uuid;

use super::audit::{changes, Entry, Origin};
use super::auth::Session;
use super::error::{ApiError, ApiResult, Json, Path};
use super::templates::template_row;
use super::workspaces::{resolve_workspace, workspace_to_api, WorkspaceRow};
use super::AppState;
use crate::authz::{Action, Object};
use crate::database::{schedules, templates};
use crate::scheduler::cron::Schedule;

/// The shortest TTL: the scheduler's tick makes anything shorter a lie.
const MIN_TTL_MS: i64 = 1_000;

fn human(ms: i64) -> String {
    let s = ms / 1000;
    let (h, m, s) = (s / 3600, s % 3600 / 60, s % 60);
    let mut out = String::new();
    if h > 0 {
        out += &format!("{h}h");
    }
    if m > 0 {
        out += &format!("{m}m");
    }
    if s > 0 || out.is_empty() {
        out += &format!("{s}s");
    }
    out
}

/// A workspace the caller may change the schedule of.
async fn writable(state: &AppState, session: &Session, id: Uuid) -> ApiResult<WorkspaceRow> {
    let w = resolve_workspace(state, session, id).await?;
    session.authorize(Action::Update, Object::Workspace { owner: w.owner_id })?;
    Ok(w)
}

/// Audits the change `diff` of `w` in `tx`, commits, and answers with the
/// workspace as it is now.
async fn commit_change(
    state: &AppState,
    session: &Session,
    origin: &Origin,
    mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
    w: &WorkspaceRow,
    diff: serde_json::Value,
) -> ApiResult<Json<Workspace>> {
    let entry = Entry::new(AuditAction::Write, ResourceType::Workspace, w.id, &w.name).diff(diff);
    origin.record(&mut *tx, session.into(), entry).await?;
    tx.commit().await?;
    let w = resolve_workspace(state, session, w.id).await?;
    Ok(Json(workspace_to_api(state, &w).await?))
}

/// `PUT /api/v2/workspaces/{id}/ttl`.
pub async fn update_ttl(
    State(state): State<AppState>,
    session: Session,
    origin: Origin,
    Path(id): Path<Uuid>,
    Json(req): Json<UpdateWorkspaceTtlRequest>,
) -> ApiResult<Json<Workspace>> {
    let w = writable(&state, &session, id).await?;
    let (_, _, max) = schedules::ttls(&state.db, w.id).await?;
    if let Some(ttl) = req.ttl_ms {
        if ttl < MIN_TTL_MS {
            return Err(ApiError::bad_request("The TTL must be at least 1s."));
        }
        if max > 0 && ttl > max {
            return Err(ApiError::bad_request(format!(
                "The TTL {} is longer than template {:?} allows ({}).",
                human(ttl),
                w.template_name,
                human(max)
            ))
            .detail("Choose a shorter one, or ask a template admin to raise --max-ttl."));
        }
    }
    let mut tx = state.db.begin().await?;
    schedules::set_ttl(&mut tx, w.id, req.ttl_ms).await?;
    let diff = changes(&[("ttl_ms", json!(w.ttl_ms), json!(req.ttl_ms))]);
    commit_change(&state, &session, &origin, tx, &w, diff).await
}

/// `PUT /api/v2/workspaces/{id}/autostart`.
pub async fn update_autostart(
    State(state): State<AppState>,
    session: Session,
    origin: Origin,
    Path(id): Path<Uuid>,
    Json(req): Json<UpdateWorkspaceAutostartRequest>,
) -> ApiResult<Json<Workspace>> {
    let w = writable(&state, &session, id).await?;
    let parsed = match req.schedule.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(s) => Some(s.parse::<Schedule>().map_err(|e| {
            ApiError::bad_request("Invalid autostart schedule.").detail(e.to_string())
        })?),
    };
    let canonical = parsed.map(|s| s.to_string());
    let next = parsed.map(|s| s.next_after(Utc::now()));
    let mut tx = state.db.begin().await?;
    schedules::set_autostart(&mut *tx, w.id, canonical.as_deref(), next).await?;
    let diff = changes(&[("autostart_schedule", json!(w.autostart_schedule), json!(canonical))]);
    commit_change(&state, &session, &origin, tx, &w, diff).await
}

/// `PUT /api/v2/workspaces/{id}/extend`.
pub async fn extend(
    State(state): State<AppState>,
    session: Session,
    origin: Origin,
    Path(id): Path<Uuid>,
    Json(req): Json<PutExtendWorkspaceRequest>,
) -> ApiResult<Json<Workspace>> {
    let w = writable(&state, &session, id).await?;
    if req.deadline <= Utc::now() {
        return Err(ApiError::bad_request("The new deadline is in the past."));
    }
    let mut tx = state.db.begin().await?;
    if !schedules::extend(&mut *tx, w.id, req.deadline).await? {
        return Err(ApiError::bad_request(
            "Only a running workspace with an autostop deadline can be extended, and not past \
             its template's maximum.",
        )
        .detail("See `coder schedule show`; set a TTL with `coder schedule stop`."));
    }
    let diff = changes(&[("deadline", json!(null), json!(req.deadline))]);
    commit_change(&state, &session, &origin, tx, &w, diff).await
}

/// `PATCH /api/v2/templates/{template}`: default and maximum TTL, display
/// name and description, and `require_active_version`.
pub async fn update_template(
    State(state): State<AppState>,
    session: Session,
    origin: Origin,
    Path(t): Path<String>,
    Json(req): Json<UpdateTemplateMeta>,
) -> ApiResult<Json<Template>> {
    session.authorize(Action::Update, Object::Template)?;
    let t = template_row(&state, &t).await?;
    let default = req.default_ttl_ms.unwrap_or(t.default_ttl_ms);
    let max = req.max_ttl_ms.unwrap_or(t.max_ttl_ms);
    if default < 0 || max < 0 {
        return Err(ApiError::bad_request("TTLs cannot be negative."));
    }
    if max > 0 && default > max {
        return Err(ApiError::bad_request(format!(
            "The default TTL {} is longer than the maximum {}.",
            human(default),
            human(max)
        )));
    }
    let display_name = req.display_name.unwrap_or_else(|| t.display_name.clone());
    let description = req.description.unwrap_or_else(|| t.description.clone());
    if display_name.chars().count() > 64 || description.chars().count() > 128 {
        return Err(ApiError::bad_request(
            "A display name has at most 64 characters, a description at most 128.",
        ));
    }
    let icon = req.icon.unwrap_or_else(|| t.icon.clone());
    if !templates::icon_allowed(&icon) {
        return Err(ApiError::bad_request("An icon must be a /-relative or https:// URL.")
            .detail("For example /icon/go.svg or https://example.com/logo.png."));
    }
    let mut tx = state.db.begin().await?;
    schedules::set_template_ttls(&mut *tx, t.id, default, max).await?;
    templates::set_icon(&mut *tx, t.id, &icon).await?;
    templates::set_names(&mut *tx, t.id, &display_name, &description).await?;
    let require = req.require_active_version.unwrap_or(t.require_active_version);
    templates::set_require_active_version(&mut *tx, t.id, require).await?;
    let diff = changes(&[
        ("default_ttl_ms", json!(t.default_ttl_ms), json!(default)),
        ("max_ttl_ms", json!(t.max_ttl_ms), json!(max)),
        ("display_name", json!(t.display_name), json!(display_name)),
        ("description", json!(t.description), json!(description)),
        ("require_active_version", json!(t.require_active_version), json!(require)),
        ("icon", json!(t.icon), json!(icon)),
    ]);
    let entry = Entry::new(AuditAction::Write, ResourceType::Template, t.id, &t.name).diff(diff);
    origin.record(&mut *tx, (&session).into(), entry).await?;
    tx.commit().await?;
    Ok(Json(template_row(&state, &t.id.to_string()).await?.to_api()))
}

#[cfg(test)]
mod tests {
    use super::human;

    #[test]
    fn durations_read_as_typed() {
        assert_eq!(human(8 * 3_600_000), "8h");
        assert_eq!(human(90_000), "1m30s");
        assert_eq!(human(3_601_000), "1h1s");
        assert_eq!(human(20_000), "20s");
        assert_eq!(human(30 * 60_000), "30m");
    }
}
