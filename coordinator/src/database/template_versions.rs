//! Template versions and their parameters. A version is an uploaded file
//! plus the import job that planned it; it may belong to a template.

use chrono::{DateTime, Utc};
use codersdk::{ParameterOption, TemplateVersionParameter};
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

#[derive(sqlx::FromRow)]
pub struct VersionRow {
    pub id: Uuid,
    pub template_id: Option<Uuid>,
    pub name: String,
    pub message: String,
    pub job_id: Uuid,
    pub created_by: Uuid,
    pub created_at: DateTime<Utc>,
}

impl VersionRow {
    pub fn into_api(self, job: codersdk::ProvisionerJob) -> codersdk::TemplateVersion {
        codersdk::TemplateVersion {
            id: self.id,
            template_id: self.template_id,
            name: self.name,
            message: self.message,
            created_at: self.created_at,
            created_by: self.created_by,
            job,
        }
    }
}

const COLUMNS: &str = "id, template_id, name, message, job_id, created_by, created_at";

pub async fn by_id(db: &PgPool, id: Uuid) -> Result<Option<VersionRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM template_versions WHERE id = $1"))
        .bind(id)
        .fetch_optional(db)
        .await
}

/// A template's versions, oldest first.
pub async fn of_template(db: &PgPool, template: Uuid) -> Result<Vec<VersionRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM template_versions WHERE template_id = $1 ORDER BY created_at"
    ))
    .bind(template)
    .fetch_all(db)
    .await
}

/// A version to create (its import job is already queued).
pub struct NewVersion<'a> {
    pub id: Uuid,
    pub template_id: Option<Uuid>,
    pub name: &'a str,
    pub message: &'a str,
    pub job_id: Uuid,
    pub created_by: Uuid,
}

pub async fn insert(db: impl PgExecutor<'_>, v: NewVersion<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO template_versions (id, template_id, name, message, job_id, created_by)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(v.id)
    .bind(v.template_id)
    .bind(v.name)
    .bind(v.message)
    .bind(v.job_id)
    .bind(v.created_by)
    .execute(db)
    .await
    .map(drop)
}

/// Makes a version one of a template's.
pub async fn set_template(
    db: impl PgExecutor<'_>,
    version: Uuid,
    template: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE template_versions SET template_id = $1 WHERE id = $2")
        .bind(template)
        .bind(version)
        .execute(db)
        .await
        .map(drop)
}

/// The file a version was uploaded as (what its builds run).
pub async fn file_id(db: impl PgExecutor<'_>, version: Uuid) -> Result<Uuid, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT j.file_id FROM template_versions v JOIN provisioner_jobs j ON j.id = v.job_id WHERE v.id = $1",
    )
    .bind(version)
    .fetch_one(db)
    .await
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

/// A version's parameters, in declaration order.
pub async fn parameters(
    db: &PgPool,
    version: Uuid,
) -> Result<Vec<TemplateVersionParameter>, sqlx::Error> {
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
