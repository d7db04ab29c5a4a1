//! Workspace resources a provisioner job recorded, with their agents and
//! apps: always three queries, however many jobs are asked about.

use chrono::Utc;
use codersdk::{ResourceMetadata, Transition, WorkspaceResource};
use sqlx::PgPool;
use uuid::Uuid;

use super::{agents, apps};

#[derive(sqlx::FromRow)]
struct ResourceRow {
    id: Uuid,
    job_id: Uuid,
    #[sqlx(try_from = "String")]
    transition: Transition,
    #[sqlx(rename = "type")]
    type_: String,
    name: String,
    computational: bool,
    persistent: bool,
    hide: bool,
    icon: String,
    daily_cost: i32,
    metadata: sqlx::types::Json<Vec<ResourceMetadata>>,
}

/// The resources (with agents and apps) these jobs recorded, grouped by job
/// and, within a job, by transition, type and name.
pub async fn of_jobs(db: &PgPool, jobs: &[Uuid]) -> Result<Vec<WorkspaceResource>, sqlx::Error> {
    let rows: Vec<ResourceRow> = sqlx::query_as(
        "SELECT id, job_id, transition, type, name, computational, persistent, hide, icon, daily_cost, metadata
         FROM workspace_resources WHERE job_id = ANY($1) ORDER BY job_id, transition, type, name",
    )
    .bind(jobs)
    .fetch_all(db)
    .await?;
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let agents = agents::of_resources(db, &ids).await?;
    let agent_ids: Vec<Uuid> = agents.iter().map(|a| a.id).collect();
    let apps = apps::of_agents(db, &agent_ids).await?;
    let now = Utc::now();
    Ok(rows
        .into_iter()
        .map(|r| WorkspaceResource {
            id: r.id,
            job_id: r.job_id,
            transition: r.transition,
            type_: r.type_,
            name: r.name,
            computational: r.computational,
            persistent: r.persistent,
            hide: r.hide,
            icon: r.icon,
            daily_cost: r.daily_cost,
            metadata: r.metadata.0,
            agents: agents
                .iter()
                .filter(|a| a.resource_id == r.id)
                .map(|a| a.to_api(&apps, now))
                .collect(),
        })
        .collect())
}

/// The resources one job recorded.
pub async fn of_job(db: &PgPool, job: Uuid) -> Result<Vec<WorkspaceResource>, sqlx::Error> {
    of_jobs(db, &[job]).await
}
