//! Templates and template versions. Creating a version queues an import job
//! (terraform init + plan for both transitions); a template points at its
//! active version. Owners manage templates; every user can read them.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use codersdk::{
    AuditAction, CreateTemplateRequest, CreateTemplateVersionRequest, ResourceType, Template,
    TemplateVersion, TemplateVersionParameter, UpdateActiveVersionRequest, WorkspaceResource,
};
use serde_json::json;
use uuid::Uuid;

use super::audit::{changes, created, Entry, Origin};
use super::auth::Session;
use super::error::{ApiError, ApiResult, Json, Path};
use super::jobs::{self, job_to_api, LogsQuery};
use super::AppState;
use crate::authz::{Action, Object};
use crate::database;
use crate::database::template_versions::{self, VersionRow};
use crate::database::{files, templates};
use crate::provisionerd::queue::{self, JobInput, NewJob, Tags};

async fn version_row(state: &AppState, id: Uuid) -> ApiResult<VersionRow> {
    template_versions::by_id(&state.db, id)
        .await?
        .ok_or_else(|| ApiError::not_found("Template version"))
}

async fn version_to_api(state: &AppState, v: VersionRow) -> ApiResult<TemplateVersion> {
    let job = jobs::job(&state.db, v.job_id).await?;
    Ok(v.into_api(job_to_api(&job)))
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !name.starts_with('-')
}

pub async fn create_version(
    State(state): State<AppState>,
    session: Session,
    origin: Origin,
    Json(req): Json<CreateTemplateVersionRequest>,
) -> ApiResult<(StatusCode, Json<TemplateVersion>)> {
    session.authorize(Action::Create, Object::TemplateVersion { active: false })?;
    if !files::exists(&state.db, req.file_id).await? {
        return Err(ApiError::bad_request(
            "No such file; upload it with POST /api/v2/files first.",
        ));
    }
    if let Some(t) = req.template_id {
        template_row(&state, &t.to_string()).await?;
    }
    let id = Uuid::new_v4();
    let name = if req.name.is_empty() {
        id.simple().to_string()[..8].to_owned()
    } else {
        req.name.clone()
    };
    let mut tx = state.db.begin().await?;
    let job_id = queue::enqueue(
        &mut tx,
        &NewJob {
            input: JobInput::TemplateVersionImport { template_version_id: id },
            file_id: req.file_id,
            initiator_id: session.user.id,
            tags: Tags::new(),
        },
    )
    .await?;
    let version = template_versions::NewVersion {
        id,
        template_id: req.template_id,
        name: &name,
        message: &req.message,
        job_id,
        created_by: session.user.id,
    };
    template_versions::insert(&mut *tx, version).await?;
    let diff = created(&[
        ("name", json!(name)),
        ("template_id", json!(req.template_id)),
        ("file_id", json!(req.file_id)),
        ("message", json!(req.message)),
    ]);
    let entry = Entry::new(AuditAction::Create, ResourceType::TemplateVersion, id, &name)
        .diff(diff)
        .status(StatusCode::CREATED);
    origin.record(&mut *tx, (&session).into(), entry).await?;
    tx.commit().await?;
    let v = version_row(&state, id).await?;
    Ok((StatusCode::CREATED, Json(version_to_api(&state, v).await?)))
}

pub async fn version(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<TemplateVersion>> {
    session.authorize(Action::Read, Object::TemplateVersion { active: false })?;
    let v = version_row(&state, id).await?;
    Ok(Json(version_to_api(&state, v).await?))
}

pub async fn version_logs(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
    q: Result<Query<LogsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    session.authorize(Action::Read, Object::TemplateVersion { active: false })?;
    let Query(q) = q.map_err(|e| ApiError::bad_request("Invalid query.").detail(e.body_text()))?;
    let v = version_row(&state, id).await?;
    jobs::logs(&state, v.job_id, q, jobs::last_event_id(&headers)).await
}

pub async fn version_cancel(
    State(state): State<AppState>,
    session: Session,
    origin: Origin,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<serde_json::Value>> {
    session.authorize(Action::Update, Object::TemplateVersion { active: false })?;
    let v = version_row(&state, id).await?;
    let entry = Entry::new(AuditAction::Cancel, ResourceType::TemplateVersion, v.id, &v.name);
    match jobs::cancel(&state, v.job_id, &origin, &session, entry).await? {
        Some(s) if s.is_done() && s != codersdk::ProvisionerJobStatus::Canceled => {
            Err(ApiError::bad_request("The job has already finished."))
        }
        _ => Ok(Json(serde_json::json!({"message": "Job canceled."}))),
    }
}

pub async fn version_resources(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Vec<WorkspaceResource>>> {
    session.authorize(Action::Read, Object::TemplateVersion { active: false })?;
    let v = version_row(&state, id).await?;
    Ok(Json(jobs::resources(&state.db, v.job_id).await?))
}

pub async fn parameters(
    db: &sqlx::PgPool,
    version: Uuid,
) -> ApiResult<Vec<TemplateVersionParameter>> {
    Ok(template_versions::parameters(db, version).await?)
}

pub async fn version_parameters(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Vec<TemplateVersionParameter>>> {
    session.authorize(Action::Read, Object::TemplateVersion { active: false })?;
    version_row(&state, id).await?;
    Ok(Json(parameters(&state.db, id).await?))
}

pub use crate::database::templates::TemplateRow;

/// A template by id or name.
pub async fn template_row(state: &AppState, id_or_name: &str) -> ApiResult<TemplateRow> {
    let row = match Uuid::parse_str(id_or_name) {
        Ok(id) => templates::by_id(&state.db, id).await?,
        Err(_) => templates::by_name(&state.db, id_or_name).await?,
    };
    row.ok_or_else(|| ApiError::not_found("Template"))
}

/// 400 unless the version imported successfully.
async fn require_imported(state: &AppState, version: &VersionRow) -> ApiResult<()> {
    let job = jobs::job(&state.db, version.job_id).await?;
    match job.status() {
        codersdk::ProvisionerJobStatus::Succeeded => Ok(()),
        s => Err(ApiError::bad_request(format!(
            "Template version {} is not usable: its import is {s:?}.",
            version.name
        ))
        .detail(job.error.unwrap_or_default())),
    }
}

pub async fn create_template(
    State(state): State<AppState>,
    session: Session,
    origin: Origin,
    Json(req): Json<CreateTemplateRequest>,
) -> ApiResult<(StatusCode, Json<Template>)> {
    session.authorize(Action::Create, Object::Template)?;
    if !valid_name(&req.name) {
        return Err(ApiError::bad_request("Invalid template name.")
            .detail("Use 1-64 letters, digits, '-' or '_', not starting with '-'."));
    }
    let v = version_row(&state, req.template_version_id).await?;
    if v.template_id.is_some() {
        return Err(ApiError::bad_request("That version already belongs to a template."));
    }
    require_imported(&state, &v).await?;
    let id = Uuid::new_v4();
    let mut tx = state.db.begin().await?;
    let template = templates::NewTemplate {
        id,
        name: &req.name,
        display_name: &req.display_name,
        description: &req.description,
        active_version_id: v.id,
        created_by: session.user.id,
    };
    let inserted = templates::insert(&mut *tx, template).await;
    match inserted {
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            return Err(ApiError::conflict(format!(
                "A template named {:?} already exists.",
                req.name
            )))
        }
        r => {
            r?;
        }
    }
    template_versions::set_template(&mut *tx, v.id, id).await?;
    let diff = created(&[
        ("name", json!(req.name)),
        ("display_name", json!(req.display_name)),
        ("description", json!(req.description)),
        ("active_version_id", json!(v.id)),
    ]);
    let entry = Entry::new(AuditAction::Create, ResourceType::Template, id, &req.name)
        .diff(diff)
        .status(StatusCode::CREATED);
    origin.record(&mut *tx, (&session).into(), entry).await?;
    tx.commit().await?;
    let t = template_row(&state, &id.to_string()).await?;
    Ok((StatusCode::CREATED, Json(t.to_api())))
}

pub async fn list_templates(
    State(state): State<AppState>,
    session: Session,
) -> ApiResult<Json<Vec<Template>>> {
    session.authorize(Action::Read, Object::Template)?;
    let rows = templates::list(&state.db).await?;
    Ok(Json(rows.iter().map(TemplateRow::to_api).collect()))
}

pub async fn template(
    State(state): State<AppState>,
    session: Session,
    Path(t): Path<String>,
) -> ApiResult<Json<Template>> {
    session.authorize(Action::Read, Object::Template)?;
    Ok(Json(template_row(&state, &t).await?.to_api()))
}

pub async fn template_versions(
    State(state): State<AppState>,
    session: Session,
    Path(t): Path<String>,
) -> ApiResult<Json<Vec<TemplateVersion>>> {
    session.authorize(Action::Read, Object::Template)?;
    let t = template_row(&state, &t).await?;
    let rows = template_versions::of_template(&state.db, t.id).await?;
    let rows = database::jobs::attach(&state.db, rows, |v| v.job_id).await?;
    Ok(Json(rows.into_iter().map(|(v, job)| v.into_api(job_to_api(&job))).collect()))
}

pub async fn update_active_version(
    State(state): State<AppState>,
    session: Session,
    origin: Origin,
    Path(t): Path<String>,
    Json(req): Json<UpdateActiveVersionRequest>,
) -> ApiResult<Json<Template>> {
    session.authorize(Action::Update, Object::Template)?;
    let t = template_row(&state, &t).await?;
    let v = version_row(&state, req.id).await?;
    if v.template_id.is_some_and(|id| id != t.id) {
        return Err(ApiError::bad_request("That version belongs to another template."));
    }
    require_imported(&state, &v).await?;
    let mut tx = state.db.begin().await?;
    template_versions::set_template(&mut *tx, v.id, t.id).await?;
    templates::set_active_version(&mut *tx, t.id, v.id).await?;
    let diff = changes(&[("active_version_id", json!(t.active_version_id), json!(v.id))]);
    let entry = Entry::new(AuditAction::Write, ResourceType::Template, t.id, &t.name).diff(diff);
    origin.record(&mut *tx, (&session).into(), entry).await?;
    tx.commit().await?;
    Ok(Json(template_row(&state, &t.id.to_string()).await?.to_api()))
}
