//! Sharing levels of dev-URL ports (`workspace_agent_port_shares`, Coder's
//! `workspace_agent_port_share`): one row per workspace, agent name and
//! port that opens for more than its owner. Levels are stored as written
//! (`owner`, `authenticated`, `public`); the deployment's maximum is applied
//! by the reader, so lowering it takes effect at once.

use sqlx::PgExecutor;
use uuid::Uuid;

/// One row.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PortShare {
    pub workspace_id: Uuid,
    pub agent_name: String,
    pub port: i32,
    pub share_level: String,
}

/// The shares of a workspace, by agent and port.
pub async fn list(db: impl PgExecutor<'_>, workspace: Uuid) -> Result<Vec<PortShare>, sqlx::Error> {
    sqlx::query_as(
        "SELECT workspace_id, agent_name, port, share_level FROM workspace_agent_port_shares
         WHERE workspace_id = $1 ORDER BY agent_name, port",
    )
    .bind(workspace)
    .fetch_all(db)
    .await
}

/// The stored level of one port, if it has a row.
pub async fn level(
    db: impl PgExecutor<'_>,
    workspace: Uuid,
    agent_name: &str,
    port: u16,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT share_level FROM workspace_agent_port_shares
         WHERE workspace_id = $1 AND agent_name = $2 AND port = $3",
    )
    .bind(workspace)
    .bind(agent_name)
    .bind(i32::from(port))
    .fetch_optional(db)
    .await
}

/// Creates or replaces a port's share; the previous level, if any.
pub async fn upsert(
    db: impl PgExecutor<'_>,
    workspace: Uuid,
    agent_name: &str,
    port: u16,
    share_level: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "WITH old AS (SELECT share_level FROM workspace_agent_port_shares
                      WHERE workspace_id = $1 AND agent_name = $2 AND port = $3),
              up AS (INSERT INTO workspace_agent_port_shares (workspace_id, agent_name, port, share_level)
                     VALUES ($1, $2, $3, $4)
                     ON CONFLICT (workspace_id, agent_name, port)
                     DO UPDATE SET share_level = EXCLUDED.share_level)
         SELECT share_level FROM old",
    )
    .bind(workspace)
    .bind(agent_name)
    .bind(i32::from(port))
    .bind(share_level)
    .fetch_optional(db)
    .await
}

/// Removes a port's share; its level if there was one.
pub async fn delete(
    db: impl PgExecutor<'_>,
    workspace: Uuid,
    agent_name: &str,
    port: u16,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "DELETE FROM workspace_agent_port_shares
         WHERE workspace_id = $1 AND agent_name = $2 AND port = $3
         RETURNING share_level",
    )
    .bind(workspace)
    .bind(agent_name)
    .bind(i32::from(port))
    .fetch_optional(db)
    .await
}

/// Whether a build of `workspace` has had an agent named `agent_name` (so a
/// stopped workspace's ports can be shared before it starts).
pub async fn agent_exists(
    db: impl PgExecutor<'_>,
    workspace: Uuid,
    agent_name: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM workspace_builds b
         JOIN workspace_resources r ON r.job_id = b.job_id
         JOIN workspace_agents a ON a.resource_id = r.id
         WHERE b.workspace_id = $1 AND a.name = $2)",
    )
    .bind(workspace)
    .bind(agent_name)
    .fetch_one(db)
    .await
}
