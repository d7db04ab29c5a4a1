//! Workspaces and their builds. Every start, stop or delete is a build: a
//! provisioner job that runs terraform with the previous build's state.
//! Users see and build only their own workspaces; owners see all.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use codersdk::{
    AuditAction, CreateWorkspaceBuildRequest, CreateWorkspaceRequest, ProvisionerJobStatus,
    ResourceType, Transition, Workspace, WorkspaceBuild, WorkspaceBuildParameter,
    WorkspaceResource,
};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::audit::{changes, created, Actor, Entry, Origin};
use super::auth::Session;
use super::error::{ApiError, ApiResult, Json, Path};
use super::jobs::{self, job_to_api, LogsQuery};
use super::templates::{parameters, template_row, TemplateRow};
use super::users::resolve_user;
use super::AppState;
use crate::authz::{Action, Object};
use crate::database;
use crate::database::builds::{self, BuildRow};
use crate::database::schedules;
use crate::database::template_versions;
use crate::database::workspaces::{self, Listed, Owners};
use crate::provisionerd::queue::{self, JobInput, NewJob, Tags};

pub use crate::database::workspaces::WorkspaceRow;

async fn build_to_api(state: &AppState, b: &BuildRow) -> ApiResult<WorkspaceBuild> {
    let job = job_to_api(&jobs::job(&state.db, b.job_id).await?);
    Ok(b.to_api(job))
}

async fn latest_build(state: &AppState, workspace: Uuid) -> ApiResult<BuildRow> {
    builds::latest(&state.db, workspace).await?.ok_or_else(|| no_build(workspace))
}

fn no_build(workspace: Uuid) -> ApiError {
    ApiError::internal(format!("workspace {workspace} has no build"))
}

pub(crate) async fn workspace_to_api(state: &AppState, w: &WorkspaceRow) -> ApiResult<Workspace> {
    let b = latest_build(state, w.id).await?;
    Ok(w.to_api(build_to_api(state, &b).await?))
}

/// A workspace the caller may use, by id; 404 for anyone else's.
pub async fn resolve_workspace(
    state: &AppState,
    session: &Session,
    id: Uuid,
) -> ApiResult<WorkspaceRow> {
    let row = workspaces::by_id(&state.db, id).await?;
    match row {
        Some(w) if session.may(Action::Read, Object::Workspace { owner: w.owner_id }) => Ok(w),
        _ => Err(ApiError::not_found("Workspace")),
    }
}

/// The one decision on which template version a build may run: a version of
/// the workspace's own template whose import succeeded, and, unless the
/// caller is a template admin (an owner), the template's active version.
async fn authorize_version(
    state: &AppState,
    session: &Session,
    template: &TemplateRow,
    version: Uuid,
) -> ApiResult<()> {
    let row = template_versions::by_id(&state.db, version).await?;
    let Some(template_versions::VersionRow { template_id: owner_template, name, job_id, .. }) = row
    else {
        return Err(ApiError::bad_request("No such template version.").detail(format!(
            "List the versions of {:?} with `coder templates versions`.",
            template.name
        )));
    };
    if owner_template != Some(template.id) {
        return Err(ApiError::bad_request(format!(
            "Template version {name:?} is not a version of template {:?}.",
            template.name
        )));
    }
    let job = jobs::job(&state.db, job_id).await?;
    let status = job.status();
    if status != ProvisionerJobStatus::Succeeded {
        return Err(ApiError::bad_request(format!(
            "Template version {name:?} cannot be built: its import is {}.",
            format!("{status:?}").to_lowercase()
        ))
        .detail(job.error.unwrap_or_default()));
    }
    let active = version == template.active_version_id;
    if !session.may(Action::Use, Object::TemplateVersion { active }) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "Only template admins may build a version of {:?} other than its active one.",
                template.name
            ),
        )
        .detail(format!("Build its active version, {}.", template.active_version_id)));
    }
    Ok(())
}

/// Resolves the values a build runs with: the request's, else the previous
/// build's, else the default. Immutable parameters keep their first value.
async fn resolve_parameters(
    state: &AppState,
    version: Uuid,
    previous: &[WorkspaceBuildParameter],
    given: &[WorkspaceBuildParameter],
) -> ApiResult<Vec<WorkspaceBuildParameter>> {
    let params = parameters(&state.db, version).await?;
    let prev: HashMap<&str, &str> =
        previous.iter().map(|p| (p.name.as_str(), p.value.as_str())).collect();
    let mut req: HashMap<&str, &str> = HashMap::new();
    for p in given {
        if !params.iter().any(|d| d.name == p.name) {
            return Err(ApiError::bad_request(format!(
                "The template has no parameter {:?}.",
                p.name
            )));
        }
        req.insert(p.name.as_str(), p.value.as_str());
    }
    let mut out = Vec::with_capacity(params.len());
    for p in &params {
        let value = match (req.get(p.name.as_str()), prev.get(p.name.as_str())) {
            (Some(v), Some(old)) if !p.mutable && v != old => {
                return Err(ApiError::bad_request(format!(
                    "Parameter {:?} is immutable; it stays {old:?}.",
                    p.name
                )))
            }
            (Some(v), _) => (*v).to_owned(),
            (None, Some(old)) => (*old).to_owned(),
            (None, None) => match &p.default_value {
                Some(d) => d.clone(),
                None => {
                    return Err(ApiError::bad_request(format!(
                        "Parameter {:?} is required.",
                        p.name
                    ))
                    .detail(format!("Pass it with --parameter {}=<value>.", p.name)))
                }
            },
        };
        if !p.options.is_empty() && !p.options.iter().any(|o| o.value == value) {
            let allowed: Vec<&str> = p.options.iter().map(|o| o.value.as_str()).collect();
            return Err(ApiError::bad_request(format!(
                "{value:?} is not an option of parameter {:?}; choose one of {allowed:?}.",
                p.name
            )));
        }
        out.push(WorkspaceBuildParameter { name: p.name.clone(), value });
    }
    Ok(out)
}

async fn build_parameters(
    state: &AppState,
    build: Uuid,
) -> ApiResult<Vec<WorkspaceBuildParameter>> {
    Ok(builds::parameters(&state.db, build).await?)
}

/// A build to insert (its id and job are made here).
struct BuildSpec<'a> {
    workspace: Uuid,
    version: Uuid,
    number: i32,
    transition: Transition,
    initiator: Uuid,
    params: &'a [WorkspaceBuildParameter],
    reason: BuildReason,
}

/// Inserts a build and its job in one transaction.
async fn insert_build(tx: &mut sqlx::PgConnection, spec: BuildSpec<'_>) -> ApiResult<Uuid> {
    let BuildSpec { workspace, version, number, transition, initiator, params, reason } = spec;
    let file_id = template_versions::file_id(&mut *tx, version).await?;
    let build_id = Uuid::new_v4();
    let job_id = queue::enqueue(
        tx,
        &NewJob {
            input: JobInput::WorkspaceBuild { workspace_build_id: build_id },
            file_id,
            initiator_id: initiator,
            tags: Tags::new(),
        },
    )
    .await?;
    let build = builds::NewBuild {
        id: build_id,
        workspace_id: workspace,
        template_version_id: version,
        build_number: number,
        transition,
        initiator_id: initiator,
        job_id,
        parameters: params,
        reason: reason.as_str(),
    };
    let inserted = builds::insert(tx, build).await;
    if let Err(sqlx::Error::Database(e)) = &inserted {
        if e.is_unique_violation() {
            return Err(ApiError::conflict("Another build of this workspace was just started."));
        }
    }
    inserted?;
    schedules::clear_old_deadlines(&mut *tx, workspace, number).await?;
    Ok(build_id)
}

fn valid_workspace_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

pub async fn create(
    State(state): State<AppState>,
    session: Session,
    origin: Origin,
    Path(user): Path<String>,
    Json(req): Json<CreateWorkspaceRequest>,
) -> ApiResult<(StatusCode, Json<Workspace>)> {
    let owner = resolve_user(&state, &session, &user).await?;
    session.authorize(Action::Create, Object::Workspace { owner: owner.id })?;
    if !valid_workspace_name(&req.name) {
        return Err(ApiError::bad_request("Invalid workspace name.")
            .detail("Use 1-32 letters, digits or '-', not starting or ending with '-'."));
    }
    let template = template_row(&state, &req.template_id.to_string()).await?;
    let version = req.template_version_id.unwrap_or(template.active_version_id);
    authorize_version(&state, &session, &template, version).await?;
    let params = resolve_parameters(&state, version, &[], &req.rich_parameter_values).await?;
    let id = Uuid::new_v4();
    let mut tx = state.db.begin().await?;
    let inserted = workspaces::insert(&mut *tx, id, owner.id, template.id, &req.name).await;
    if let Err(sqlx::Error::Database(e)) = &inserted {
        if e.is_unique_violation() {
            return Err(ApiError::conflict(format!(
                "You already have a workspace named {:?}.",
                req.name
            )));
        }
    }
    inserted?;
    let spec = BuildSpec {
        workspace: id,
        version,
        number: 1,
        transition: Transition::Start,
        initiator: session.user.id,
        params: &params,
        reason: BuildReason::Initiator,
    };
    insert_build(&mut tx, spec).await?;
    let diff = created(&[
        ("name", json!(req.name)),
        ("owner", json!(owner.username)),
        ("template", json!(template.name)),
        ("template_version_id", json!(version)),
    ]);
    let entry = Entry::new(AuditAction::Create, ResourceType::Workspace, id, &req.name)
        .diff(diff)
        .status(StatusCode::CREATED);
    origin.record(&mut *tx, (&session).into(), entry).await?;
    tx.commit().await?;
    let w = resolve_workspace(&state, &session, id).await?;
    Ok((StatusCode::CREATED, Json(workspace_to_api(&state, &w).await?)))
}

#[derive(Debug, Deserialize, Default)]
pub struct ListQuery {
    /// `all` (owners only) lists everyone's workspaces.
    #[serde(default)]
    pub owner: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    session: Session,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Vec<Workspace>>> {
    let Query(q) = q.map_err(|e| ApiError::bad_request("Invalid query.").detail(e.body_text()))?;
    let all = q.owner.as_deref() == Some("all");
    if all {
        session.authorize(Action::Read, Object::Workspaces)?;
    }
    let owners = if all { Owners::All } else { Owners::Only(session.user.id) };
    let listed = workspaces::list(&state.db, owners).await?;
    let mut out = Vec::with_capacity(listed.len());
    for Listed { workspace: w, latest } in listed {
        let (b, job) = latest.ok_or_else(|| no_build(w.id))?;
        out.push(w.to_api(b.to_api(job_to_api(&job))));
    }
    Ok(Json(out))
}

pub async fn by_owner_and_name(
    State(state): State<AppState>,
    session: Session,
    Path((user, name)): Path<(String, String)>,
) -> ApiResult<Json<Workspace>> {
    let owner = resolve_user(&state, &session, &user).await?;
    let row = workspaces::by_owner_and_name(&state.db, owner.id, &name).await?;
    // Seeing the user (user admins do) is not seeing their workspaces.
    let w = row
        .filter(|w| session.may(Action::Read, Object::Workspace { owner: w.owner_id }))
        .ok_or_else(|| ApiError::not_found("Workspace"))?;
    Ok(Json(workspace_to_api(&state, &w).await?))
}

pub async fn get(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Workspace>> {
    let w = resolve_workspace(&state, &session, id).await?;
    Ok(Json(workspace_to_api(&state, &w).await?))
}

pub async fn create_build(
    State(state): State<AppState>,
    session: Session,
    origin: Origin,
    Path(id): Path<Uuid>,
    Json(req): Json<CreateWorkspaceBuildRequest>,
) -> ApiResult<(StatusCode, Json<WorkspaceBuild>)> {
    let w = resolve_workspace(&state, &session, id).await?;
    // Seeing a workspace (auditors, template admins) is not building it.
    let action = if req.transition == Transition::Delete { Action::Delete } else { Action::Update };
    session.authorize(action, Object::Workspace { owner: w.owner_id })?;
    session.authorize(Action::Create, Object::WorkspaceBuild { owner: w.owner_id })?;
    let prev = latest_build(&state, w.id).await?;
    let requested = start_version(&session, &w, &req)?;
    let version = requested.unwrap_or(prev.template_version_id);
    // Staying on the version the workspace runs needs no new permission.
    if version != prev.template_version_id {
        let template = template_row(&state, &w.template_id.to_string()).await?;
        authorize_version(&state, &session, &template, version).await?;
    }
    let mut tx = state.db.begin().await?;
    let next = NextBuild {
        transition: req.transition,
        version: requested,
        parameters: &req.rich_parameter_values,
        reason: BuildReason::Initiator,
    };
    let build =
        insert_next_build(&state, &mut tx, &w, &prev, next, (&session).into(), &origin).await?;
    tx.commit().await?;
    let b = build_row(&state, build).await?;
    Ok((StatusCode::CREATED, Json(build_to_api(&state, &b).await?)))
}

/// The version a build asks for (`None`: the one the workspace runs). On a
/// template that requires its active version, a start by a user who is not
/// a template admin builds the active version, as Coder's does: asked for
/// implicitly, it is moved there; a named other version is refused (403).
fn start_version(
    session: &Session,
    w: &WorkspaceRow,
    req: &CreateWorkspaceBuildRequest,
) -> ApiResult<Option<Uuid>> {
    let bound = req.transition == Transition::Start
        && w.template_require_active_version
        && !session.may(Action::Update, Object::Template);
    if !bound {
        return Ok(req.template_version_id);
    }
    match req.template_version_id {
        Some(v) if v != w.template_active_version_id => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("Template {:?} requires its active version.", w.template_name),
        )
        .detail(format!(
            "Start it without naming a version, or name {}.",
            w.template_active_version_id
        ))),
        _ => Ok(Some(w.template_active_version_id)),
    }
}

/// Why a build started (`workspace_builds.reason`, Coder's `BuildReason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildReason {
    /// A user asked for it.
    Initiator,
    Autostart,
    Autostop,
}

impl BuildReason {
    pub fn as_str(self) -> &'static str {
        match self {
            BuildReason::Initiator => "initiator",
            BuildReason::Autostart => "autostart",
            BuildReason::Autostop => "autostop",
        }
    }
}

/// The build to insert after a workspace's latest one.
pub struct NextBuild<'a> {
    pub transition: Transition,
    /// `None`: the version the workspace runs.
    pub version: Option<Uuid>,
    pub parameters: &'a [WorkspaceBuildParameter],
    pub reason: BuildReason,
}

/// Inserts the build after `prev` with its job and its audit row, in `tx`:
/// the one path of a user's build and the scheduler's, once the caller has
/// authorized it. Refuses while `prev` is still in progress.
pub async fn insert_next_build(
    state: &AppState,
    tx: &mut sqlx::PgConnection,
    w: &WorkspaceRow,
    prev: &BuildRow,
    next: NextBuild<'_>,
    actor: Actor<'_>,
    origin: &Origin,
) -> ApiResult<Uuid> {
    let prev_job = jobs::job(&state.db, prev.job_id).await?;
    if !prev_job.status().is_done() {
        return Err(ApiError::conflict("A build of this workspace is already in progress.")
            .detail("Wait for it (`coder logs -f`) or cancel it."));
    }
    let version = next.version.unwrap_or(prev.template_version_id);
    let previous = build_parameters(state, prev.id).await?;
    let resolve = next.transition == Transition::Start
        || next.version.is_some()
        || !next.parameters.is_empty();
    let params = if resolve {
        resolve_parameters(state, version, &previous, next.parameters).await?
    } else {
        previous
    };
    let initiator = actor.id.unwrap_or(w.owner_id);
    let number = prev.build_number + 1;
    let spec = BuildSpec {
        workspace: w.id,
        version,
        number,
        transition: next.transition,
        initiator,
        params: &params,
        reason: next.reason,
    };
    let build = insert_build(tx, spec).await?;
    workspaces::touch(&mut *tx, w.id).await?;
    let action = match next.transition {
        Transition::Start => AuditAction::Start,
        Transition::Stop => AuditAction::Stop,
        Transition::Delete => AuditAction::Delete,
    };
    let diff = changes(&[
        ("transition", json!(prev.transition), json!(next.transition)),
        ("template_version_id", json!(prev.template_version_id), json!(version)),
        ("build_number", json!(prev.build_number), json!(number)),
        ("reason", json!(prev.reason), json!(next.reason.as_str())),
    ]);
    let entry = Entry::new(action, ResourceType::WorkspaceBuild, build, &w.name)
        .diff(diff)
        .status(StatusCode::CREATED);
    origin.record(&mut *tx, actor, entry).await?;
    Ok(build)
}

pub async fn list_builds(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Vec<WorkspaceBuild>>> {
    let w = resolve_workspace(&state, &session, id).await?;
    let rows = builds::of_workspace(&state.db, w.id).await?;
    let rows = database::jobs::attach(&state.db, rows, |b| b.job_id).await?;
    Ok(Json(rows.into_iter().map(|(b, job)| b.to_api(job_to_api(&job))).collect()))
}

async fn build_row(state: &AppState, id: Uuid) -> ApiResult<BuildRow> {
    builds::by_id(&state.db, id).await?.ok_or_else(|| ApiError::not_found("Workspace build"))
}

/// A build the caller may see (deleted workspaces' builds included, for logs).
async fn visible_build(state: &AppState, session: &Session, id: Uuid) -> ApiResult<BuildRow> {
    let b = build_row(state, id).await?;
    let owner = workspaces::owner_of(&state.db, b.workspace_id).await?;
    if !session.may(Action::Read, Object::WorkspaceBuild { owner }) {
        return Err(ApiError::not_found("Workspace build"));
    }
    Ok(b)
}

pub async fn build(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<WorkspaceBuild>> {
    let b = visible_build(&state, &session, id).await?;
    Ok(Json(build_to_api(&state, &b).await?))
}

pub async fn build_logs(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
    q: Result<Query<LogsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = q.map_err(|e| ApiError::bad_request("Invalid query.").detail(e.body_text()))?;
    let b = visible_build(&state, &session, id).await?;
    jobs::logs(&state, b.job_id, q, jobs::last_event_id(&headers)).await
}

pub async fn build_resources(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Vec<WorkspaceResource>>> {
    let b = visible_build(&state, &session, id).await?;
    Ok(Json(jobs::resources(&state.db, b.job_id).await?))
}

/// `GET /api/v2/workspacebuilds/{id}/parameters`: the values it ran with
/// (what `coder update` carries over).
pub async fn build_parameter_values(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Vec<WorkspaceBuildParameter>>> {
    let b = visible_build(&state, &session, id).await?;
    Ok(Json(build_parameters(&state, b.id).await?))
}

pub async fn cancel_build(
    State(state): State<AppState>,
    session: Session,
    origin: Origin,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<serde_json::Value>> {
    let b = visible_build(&state, &session, id).await?;
    let owner = workspaces::owner_of(&state.db, b.workspace_id).await?;
    session.authorize(Action::Update, Object::WorkspaceBuild { owner })?;
    let name = format!("#{}", b.build_number);
    let entry = Entry::new(AuditAction::Cancel, ResourceType::WorkspaceBuild, b.id, &name);
    match jobs::cancel(&state, b.job_id, &origin, &session, entry).await? {
        Some(s) if s.is_done() && s != ProvisionerJobStatus::Canceled => {
            Err(ApiError::bad_request("The build has already finished."))
        }
        _ => Ok(Json(serde_json::json!({"message": "Build canceled."}))),
    }
}
