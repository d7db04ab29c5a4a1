//! Workspace builds: the typed row (transition parsed), the status a build
//! gives its workspace, and the queries for latest, listing and inserting
//! builds with their parameter values.

use chrono::{DateTime, Utc};
use codersdk::{
    ProvisionerJob, ProvisionerJobStatus, Transition, WorkspaceBuild, WorkspaceBuildParameter,
    WorkspaceStatus,
};
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

#[derive(sqlx::FromRow, Clone)]
pub struct BuildRow {
    pub id: Uuid,
    pub workspace_id: Uuid,
    pub template_version_id: Uuid,
    pub build_number: i32,
    #[sqlx(try_from = "String")]
    pub transition: Transition,
    pub initiator_id: Uuid,
    pub job_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub deadline: Option<DateTime<Utc>>,
    pub max_deadline: Option<DateTime<Utc>>,
    pub reason: String,
}

impl BuildRow {
    /// The build as the API shows it, with its job.
    pub fn to_api(&self, job: ProvisionerJob) -> WorkspaceBuild {
        WorkspaceBuild {
            id: self.id,
            workspace_id: self.workspace_id,
            template_version_id: self.template_version_id,
            build_number: self.build_number,
            transition: self.transition,
            initiator_id: self.initiator_id,
            created_at: self.created_at,
            status: workspace_status(self.transition, job.status),
            job,
            deadline: self.deadline,
            max_deadline: self.max_deadline,
            reason: self.reason.clone(),
        }
    }
}

/// The status a workspace has while its latest build's job is in `job`.
pub fn workspace_status(transition: Transition, job: ProvisionerJobStatus) -> WorkspaceStatus {
    use ProvisionerJobStatus as J;
    use WorkspaceStatus as W;
    match (job, transition) {
        (J::Pending, _) => W::Pending,
        (J::Running, Transition::Start) => W::Starting,
        (J::Running, Transition::Stop) => W::Stopping,
        (J::Running, Transition::Delete) => W::Deleting,
        (J::Succeeded, Transition::Start) => W::Running,
        (J::Succeeded, Transition::Stop) => W::Stopped,
        (J::Succeeded, Transition::Delete) => W::Deleted,
        (J::Canceling, _) => W::Canceling,
        (J::Canceled, _) => W::Canceled,
        (J::Failed, _) => W::Failed,
    }
}

const COLUMNS: &str = "id, workspace_id, template_version_id, build_number, transition,
    initiator_id, job_id, created_at, deadline, max_deadline, reason";

pub async fn by_id(db: &PgPool, id: Uuid) -> Result<Option<BuildRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM workspace_builds WHERE id = $1"))
        .bind(id)
        .fetch_optional(db)
        .await
}

/// A workspace's latest build.
pub async fn latest(
    db: impl PgExecutor<'_>,
    workspace: Uuid,
) -> Result<Option<BuildRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM workspace_builds WHERE workspace_id = $1
         ORDER BY build_number DESC LIMIT 1"
    ))
    .bind(workspace)
    .fetch_optional(db)
    .await
}

/// The latest build of each of these workspaces, in one query.
pub async fn latest_of(db: &PgPool, workspaces: &[Uuid]) -> Result<Vec<BuildRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT DISTINCT ON (workspace_id) {COLUMNS} FROM workspace_builds
         WHERE workspace_id = ANY($1) ORDER BY workspace_id, build_number DESC"
    ))
    .bind(workspaces)
    .fetch_all(db)
    .await
}

/// A workspace's builds, newest first.
pub async fn of_workspace(db: &PgPool, workspace: Uuid) -> Result<Vec<BuildRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM workspace_builds WHERE workspace_id = $1 ORDER BY build_number DESC"
    ))
    .bind(workspace)
    .fetch_all(db)
    .await
}

/// A build to insert (its job is already queued).
pub struct NewBuild<'a> {
    pub id: Uuid,
    pub workspace_id: Uuid,
    pub template_version_id: Uuid,
    pub build_number: i32,
    pub transition: Transition,
    pub initiator_id: Uuid,
    pub job_id: Uuid,
    pub parameters: &'a [WorkspaceBuildParameter],
    /// `initiator`, `autostart` or `autostop`.
    pub reason: &'a str,
}

/// Inserts a build and its parameter values. A build number already taken
/// (a concurrent build of the same workspace) is a unique violation.
pub async fn insert(tx: &mut sqlx::PgConnection, b: NewBuild<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO workspace_builds (id, workspace_id, template_version_id, build_number, transition, initiator_id, job_id, reason)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(b.id)
    .bind(b.workspace_id)
    .bind(b.template_version_id)
    .bind(b.build_number)
    .bind(b.transition.as_str())
    .bind(b.initiator_id)
    .bind(b.job_id)
    .bind(b.reason)
    .execute(&mut *tx)
    .await?;
    for p in b.parameters {
        sqlx::query("INSERT INTO workspace_build_parameters (workspace_build_id, name, value) VALUES ($1, $2, $3)")
            .bind(b.id)
            .bind(&p.name)
            .bind(&p.value)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

/// The parameter values a build ran with.
pub async fn parameters(
    db: impl PgExecutor<'_>,
    build: Uuid,
) -> Result<Vec<WorkspaceBuildParameter>, sqlx::Error> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT name, value FROM workspace_build_parameters WHERE workspace_build_id = $1",
    )
    .bind(build)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|(name, value)| WorkspaceBuildParameter { name, value }).collect())
}
