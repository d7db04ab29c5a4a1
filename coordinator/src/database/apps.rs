//! Workspace apps: the typed row (health parsed) and the queries of the
//! agent API and the app proxy.

use codersdk::{AppHealth, WorkspaceApp};
use sqlx::PgPool;
use uuid::Uuid;

#[derive(sqlx::FromRow)]
pub struct AppRow {
    pub id: Uuid,
    pub agent_id: Uuid,
    pub slug: String,
    pub display_name: String,
    pub url: String,
    pub command: String,
    pub subdomain: bool,
    pub share: String,
    pub healthcheck: Option<sqlx::types::Json<codersdk::Healthcheck>>,
    #[sqlx(try_from = "String")]
    pub health: AppHealth,
    pub icon: String,
}

impl AppRow {
    pub fn to_api(&self) -> WorkspaceApp {
        WorkspaceApp {
            id: self.id,
            slug: self.slug.clone(),
            display_name: self.display_name.clone(),
            url: self.url.clone(),
            command: self.command.clone(),
            subdomain: self.subdomain,
            share: self.share.clone(),
            healthcheck: self.healthcheck.as_ref().map(|h| h.0.clone()),
            health: self.health,
            icon: self.icon.clone(),
        }
    }
}

const COLUMNS: &str =
    "id, agent_id, slug, display_name, url, command, subdomain, share, healthcheck, health, icon";

/// The apps of these agents, by slug.
pub async fn of_agents(db: &PgPool, agents: &[Uuid]) -> Result<Vec<AppRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM workspace_apps WHERE agent_id = ANY($1) ORDER BY slug"
    ))
    .bind(agents)
    .fetch_all(db)
    .await
}

/// Of these apps, the agent's own ones, each with whether it has a healthcheck.
pub async fn healthchecked(
    db: &PgPool,
    agent: Uuid,
    ids: &[Uuid],
) -> Result<Vec<(Uuid, bool)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, healthcheck IS NOT NULL FROM workspace_apps WHERE agent_id = $1 AND id = ANY($2)",
    )
    .bind(agent)
    .bind(ids)
    .fetch_all(db)
    .await
}

/// Sets the health of the agent's apps, pairwise.
pub async fn set_health(
    db: &PgPool,
    agent: Uuid,
    ids: &[Uuid],
    healths: &[AppHealth],
) -> Result<(), sqlx::Error> {
    let healths: Vec<&str> = healths.iter().map(|h| h.as_str()).collect();
    sqlx::query(
        "UPDATE workspace_apps a SET health = n.health
         FROM unnest($2::uuid[], $3::text[]) AS n(id, health)
         WHERE a.id = n.id AND a.agent_id = $1",
    )
    .bind(agent)
    .bind(ids)
    .bind(&healths)
    .execute(db)
    .await
    .map(drop)
}

/// The URL and share level of an agent's app, by slug.
pub async fn url_and_share(
    db: &PgPool,
    agent: Uuid,
    slug: &str,
) -> Result<Option<(String, String)>, sqlx::Error> {
    sqlx::query_as("SELECT url, share FROM workspace_apps WHERE agent_id = $1 AND slug = $2")
        .bind(agent)
        .bind(slug)
        .fetch_optional(db)
        .await
}
