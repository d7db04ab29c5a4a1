//! Workspaces: the typed row (with its owner's and template's names), the
//! lookups the API makes, and the listing, which reads every workspace with
//! its latest build and job in a fixed number of queries.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use codersdk::{Workspace, WorkspaceBuild};
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

use super::builds::{self, BuildRow};
use super::jobs::{self, JobRow};

#[derive(sqlx::FromRow, Clone)]
pub struct WorkspaceRow {
    pub id: Uuid,
    pub name: String,
    pub owner_id: Uuid,
    pub owner_name: String,
    pub template_id: Uuid,
    pub template_name: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub ttl_ms: Option<i64>,
    pub autostart_schedule: Option<String>,
    pub next_start_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub template_active_version_id: Uuid,
    pub template_require_active_version: bool,
}

impl WorkspaceRow {
    /// The workspace as the API shows it, with its latest build.
    pub fn to_api(&self, latest_build: WorkspaceBuild) -> Workspace {
        Workspace {
            id: self.id,
            name: self.name.clone(),
            owner_id: self.owner_id,
            owner_name: self.owner_name.clone(),
            template_id: self.template_id,
            template_name: self.template_name.clone(),
            created_at: self.created_at,
            updated_at: self.updated_at,
            ttl_ms: self.ttl_ms,
            autostart_schedule: self.autostart_schedule.clone(),
            next_start_at: self.next_start_at,
            last_used_at: self.last_used_at,
            outdated: latest_build.template_version_id != self.template_active_version_id,
            template_active_version_id: self.template_active_version_id,
            latest_build,
        }
    }
}

const SELECT: &str = "SELECT w.id, w.name, w.owner_id, u.username AS owner_name, w.template_id,
    t.name AS template_name, w.created_at, w.updated_at, w.ttl_ms, w.autostart_schedule,
    w.next_start_at, w.last_used_at, t.active_version_id AS template_active_version_id,
    t.require_active_version AS template_require_active_version
    FROM workspaces w JOIN users u ON u.id = w.owner_id JOIN templates t ON t.id = w.template_id";

/// A workspace that is not deleted, by id.
pub async fn by_id(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<WorkspaceRow>, sqlx::Error> {
    sqlx::query_as(&format!("{SELECT} WHERE w.id = $1 AND NOT w.deleted"))
        .bind(id)
        .fetch_optional(db)
        .await
}

/// A user's workspace that is not deleted, by name (case-insensitively).
pub async fn by_owner_and_name(
    db: &PgPool,
    owner: Uuid,
    name: &str,
) -> Result<Option<WorkspaceRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "{SELECT} WHERE w.owner_id = $1 AND lower(w.name) = lower($2) AND NOT w.deleted"
    ))
    .bind(owner)
    .bind(name)
    .fetch_optional(db)
    .await
}

/// The owner of a workspace, deleted or not.
pub async fn owner_of(db: &PgPool, id: Uuid) -> Result<Uuid, sqlx::Error> {
    sqlx::query_scalar("SELECT owner_id FROM workspaces WHERE id = $1").bind(id).fetch_one(db).await
}

/// Whose workspaces a listing shows.
#[derive(Debug, Clone, Copy)]
pub enum Owners {
    All,
    Only(Uuid),
}

/// A listed workspace with its latest build and that build's job (`None`
/// only if the workspace has no build, which creation never leaves behind).
pub struct Listed {
    pub workspace: WorkspaceRow,
    pub latest: Option<(BuildRow, JobRow)>,
}

/// The workspaces that are not deleted, by owner name and name, each with
/// its latest build and job: three queries, however many workspaces.
pub async fn list(db: &PgPool, owners: Owners) -> Result<Vec<Listed>, sqlx::Error> {
    let (all, owner) = match owners {
        Owners::All => (true, Uuid::nil()),
        Owners::Only(id) => (false, id),
    };
    let rows: Vec<WorkspaceRow> = sqlx::query_as(&format!(
        "{SELECT} WHERE NOT w.deleted AND ($1 OR w.owner_id = $2) ORDER BY u.username, w.name"
    ))
    .bind(all)
    .bind(owner)
    .fetch_all(db)
    .await?;
    let ids: Vec<Uuid> = rows.iter().map(|w| w.id).collect();
    let builds = builds::latest_of(db, &ids).await?;
    let mut latest: HashMap<Uuid, (BuildRow, JobRow)> = jobs::attach(db, builds, |b| b.job_id)
        .await?
        .into_iter()
        .map(|(b, j)| (b.workspace_id, (b, j)))
        .collect();
    Ok(rows.into_iter().map(|w| Listed { latest: latest.remove(&w.id), workspace: w }).collect())
}

/// Inserts a workspace, with its template's default TTL (if any); a name
/// the owner already uses is a unique violation.
pub async fn insert(
    db: impl PgExecutor<'_>,
    id: Uuid,
    owner: Uuid,
    template: Uuid,
    name: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO workspaces (id, owner_id, template_id, name, ttl_ms)
         SELECT $1, $2, $3, $4, NULLIF(default_ttl_ms, 0) FROM templates WHERE id = $3",
    )
    .bind(id)
    .bind(owner)
    .bind(template)
    .bind(name)
    .execute(db)
    .await
    .map(drop)
}

/// Marks a workspace as changed now.
pub async fn touch(db: impl PgExecutor<'_>, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE workspaces SET updated_at = now() WHERE id = $1")
        .bind(id)
        .execute(db)
        .await
        .map(drop)
}
