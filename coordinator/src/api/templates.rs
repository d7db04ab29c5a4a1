//! Templates and template versions. Creating a version queues an import job
//! (terraform init + plan for both transitions); a template points at its
//! active version. Owners manage templates; every user can read them.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use chrono::{DateTime, Utc};
use codersdk::{
    CreateTemplateRequest, CreateTemplateVersionRequest, ParameterOption, Template,
    TemplateVersion, TemplateVersionParameter, UpdateActiveVersionRequest, WorkspaceResource,
};
use uuid::Uuid;

use super::auth::Session;
use super::error::{ApiError, ApiResult, Json, Path};
use super::jobs::{self, job_to_api, LogsQuery};
use super::AppState;
use crate::authz::{Action, Object};
use crate::provisionerd::queue::{self, JobInput, NewJob, Tags};

#[derive(sqlx::FromRow)]
struct VersionRow {
    id: Uuid,
    template_id: Option<Uuid>,
    name: String,
    message: String,
    job_id: Uuid,
    created_by: Uuid,
    created_at: DateTime<Utc>,
}

const VERSION_COLUMNS: &str = "id, template_id, name, message, job_id, created_by, created_at";

async fn version_row(state: &AppState, id: Uuid) -> ApiResult<VersionRow> {
    sqlx::query_as(&format!("SELECT {VERSION_COLUMNS} FROM template_versions WHERE id = $1"))
        .bind(id)
        .fetch_optional(&state.db)
        .await?
        .ok_or_else(|| ApiError::not_found("Template version"))
}

async fn version_to_api(state: &AppState, v: VersionRow) -> ApiResult<TemplateVersion> {
    let job = jobs::job(&state.db, v.job_id).await?;
    Ok(TemplateVersion {
        id: v.id,
        template_id: v.template_id,
        name: v.name,
        message: v.message,
        created_at: v.created_at,
        created_by: v.created_by,
        job: job_to_api(&job),
    })
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
    Json(req): Json<CreateTemplateVersionRequest>,
) -> ApiResult<(StatusCode, Json<TemplateVersion>)> {
    session.authorize(Action::Create, Object::TemplateVersion { active: false })?;
    let file: Option<Uuid> = sqlx::query_scalar("SELECT id FROM files WHERE id = $1")
        .bind(req.file_id)
        .fetch_optional(&state.db)
        .await?;
    if file.is_none() {
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
    sqlx::query(
        "INSERT INTO template_versions (id, template_id, name, message, job_id, created_by)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(req.template_id)
    .bind(&name)
    .bind(&req.message)
    .bind(job_id)
    .bind(session.user.id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    let v = version_row(&state, id).await?;
    Ok((StatusCode::CREATED, Json(version_to_api(&state, v).await?)))
}

pub async fn version(
    State(state): State<AppState>,
    _session: Session,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<TemplateVersion>> {
    let v = version_row(&state, id).await?;
    Ok(Json(version_to_api(&state, v).await?))
}

pub async fn version_logs(
    State(state): State<AppState>,
    _session: Session,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
    q: Result<Query<LogsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = q.map_err(|e| ApiError::bad_request("Invalid query.").detail(e.body_text()))?;
    let v = version_row(&state, id).await?;
    jobs::logs(&state, v.job_id, q, jobs::last_event_id(&headers)).await
}

pub async fn version_cancel(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<serde_json::Value>> {
    session.authorize(Action::Update, Object::TemplateVersion { active: false })?;
    let v = version_row(&state, id).await?;
    match state.queue.cancel(v.job_id).await? {
        Some(s) if s.is_done() && s != codersdk::ProvisionerJobStatus::Canceled => {
            Err(ApiError::bad_request("The job has already finished."))
        }
        _ => Ok(Json(serde_json::json!({"message": "Job canceled."}))),
    }
}

pub async fn version_resources(
    State(state): State<AppState>,
    _session: Session,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Vec<WorkspaceResource>>> {
    let v = version_row(&state, id).await?;
    Ok(Json(jobs::resources(&state.db, v.job_id).await?))
}

#[derive(sqlx::FromRow)]
struct ParamRow {
    name: String,
    display_name: String,
    description: String,
    #[sqlx(rename = "type")]
    type_: String,
    mutable: bool,
    default_value: Option<String>,
    required: bool,
    options: sqlx::types::Json<Vec<ParameterOption>>,
    validation: Option<sqlx::types::Json<serde_json::Value>>,
}

pub async fn parameters(
    db: &sqlx::PgPool,
    version: Uuid,
) -> ApiResult<Vec<TemplateVersionParameter>> {
    let rows: Vec<ParamRow> = sqlx::query_as(
        "SELECT name, display_name, description, type, mutable, default_value, required, options, validation
         FROM template_version_parameters WHERE template_version_id = $1 ORDER BY ordinal",
    )
    .bind(version)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| TemplateVersionParameter {
            name: r.name,
            display_name: r.display_name,
            description: r.description,
            type_: r.type_,
            mutable: r.mutable,
            default_value: r.default_value,
            required: r.required,
            options: r.options.0,
            validation: r.validation.map(|v| v.0),
        })
        .collect())
}

pub async fn version_parameters(
    State(state): State<AppState>,
    _session: Session,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Vec<TemplateVersionParameter>>> {
    version_row(&state, id).await?;
    Ok(Json(parameters(&state.db, id).await?))
}

#[derive(sqlx::FromRow)]
pub struct TemplateRow {
    pub id: Uuid,
    pub name: String,
    pub display_name: String,
    pub description: String,
    pub active_version_id: Uuid,
    pub created_by: Uuid,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const TEMPLATE_COLUMNS: &str =
    "id, name, display_name, description, active_version_id, created_by, created_at, updated_at";

impl TemplateRow {
    fn to_api(&self) -> Template {
        Template {
            id: self.id,
            name: self.name.clone(),
            display_name: self.display_name.clone(),
            description: self.description.clone(),
            active_version_id: self.active_version_id,
            created_at: self.created_at,
            updated_at: self.updated_at,
            created_by: self.created_by,
        }
    }
}

/// A template by id or name.
pub async fn template_row(state: &AppState, id_or_name: &str) -> ApiResult<TemplateRow> {
    let row: Option<TemplateRow> = match Uuid::parse_str(id_or_name) {
        Ok(id) => {
            sqlx::query_as(&format!(
                "SELECT {TEMPLATE_COLUMNS} FROM templates WHERE id = $1 AND NOT deleted"
            ))
            .bind(id)
            .fetch_optional(&state.db)
            .await?
        }
        Err(_) => {
            sqlx::query_as(&format!(
            "SELECT {TEMPLATE_COLUMNS} FROM templates WHERE lower(name) = lower($1) AND NOT deleted"
        ))
            .bind(id_or_name)
            .fetch_optional(&state.db)
            .await?
        }
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
    let inserted = sqlx::query(
        "INSERT INTO templates (id, name, display_name, description, active_version_id, created_by)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(&req.name)
    .bind(&req.display_name)
    .bind(&req.description)
    .bind(v.id)
    .bind(session.user.id)
    .execute(&mut *tx)
    .await;
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
    sqlx::query("UPDATE template_versions SET template_id = $1 WHERE id = $2")
        .bind(id)
        .bind(v.id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    let t = template_row(&state, &id.to_string()).await?;
    Ok((StatusCode::CREATED, Json(t.to_api())))
}

pub async fn list_templates(
    State(state): State<AppState>,
    _session: Session,
) -> ApiResult<Json<Vec<Template>>> {
    let rows: Vec<TemplateRow> = sqlx::query_as(&format!(
        "SELECT {TEMPLATE_COLUMNS} FROM templates WHERE NOT deleted ORDER BY name"
    ))
    .fetch_all(&state.db)
    .await?;
    Ok(Json(rows.iter().map(TemplateRow::to_api).collect()))
}

pub async fn template(
    State(state): State<AppState>,
    _session: Session,
    Path(t): Path<String>,
) -> ApiResult<Json<Template>> {
    Ok(Json(template_row(&state, &t).await?.to_api()))
}

pub async fn template_versions(
    State(state): State<AppState>,
    _session: Session,
    Path(t): Path<String>,
) -> ApiResult<Json<Vec<TemplateVersion>>> {
    let t = template_row(&state, &t).await?;
    let rows: Vec<VersionRow> = sqlx::query_as(&format!(
        "SELECT {VERSION_COLUMNS} FROM template_versions WHERE template_id = $1 ORDER BY created_at"
    ))
    .bind(t.id)
    .fetch_all(&state.db)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        out.push(version_to_api(&state, r).await?);
    }
    Ok(Json(out))
}

pub async fn update_active_version(
    State(state): State<AppState>,
    session: Session,
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
    sqlx::query("UPDATE template_versions SET template_id = $1 WHERE id = $2")
        .bind(t.id)
        .bind(v.id)
        .execute(&state.db)
        .await?;
    sqlx::query("UPDATE templates SET active_version_id = $1, updated_at = now() WHERE id = $2")
        .bind(v.id)
        .bind(t.id)
        .execute(&state.db)
        .await?;
    Ok(Json(template_row(&state, &t.id.to_string()).await?.to_api()))
}
