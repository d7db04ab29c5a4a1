//! Workspace agents: the typed row (lifecycle parsed), how its connection
//! status is derived, and the queries of the agent API (manifest, lifecycle,
//! logs, stats, metadata) and of agent authentication.

use chrono::{DateTime, Utc};
use codersdk::{
    AgentMetadataDescription, AgentMetadataResult, LifecycleState, WorkspaceAgent,
    WorkspaceAgentLog, WorkspaceAgentStatus,
};
use sqlx::PgPool;
use uuid::Uuid;

use super::apps::AppRow;

#[derive(Debug, sqlx::FromRow)]
pub struct AgentRow {
    pub id: Uuid,
    pub resource_id: Uuid,
    pub name: String,
    pub os: String,
    pub arch: String,
    pub directory: String,
    #[sqlx(try_from = "String")]
    pub lifecycle_state: LifecycleState,
    pub connection_timeout_seconds: i32,
    pub first_connected_at: Option<DateTime<Utc>>,
    pub last_connected_at: Option<DateTime<Utc>>,
    pub disconnected_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// A start script keeps logins waiting (`start_blocks_login`).
    pub blocks_login: bool,
}

/// How long an agent may go without a heartbeat before it counts as gone.
const AGENT_INACTIVE: chrono::Duration = chrono::Duration::seconds(30);

impl AgentRow {
    pub fn status(&self, now: DateTime<Utc>) -> WorkspaceAgentStatus {
        match (self.first_connected_at, self.last_connected_at) {
            (None, _) | (_, None) => {
                if now - self.created_at
                    > chrono::Duration::seconds(self.connection_timeout_seconds.into())
                    && self.connection_timeout_seconds > 0
                {
                    WorkspaceAgentStatus::Timeout
                } else {
                    WorkspaceAgentStatus::Connecting
                }
            }
            (Some(_), Some(last)) => {
                if self.disconnected_at.is_some_and(|d| d >= last) || now - last > AGENT_INACTIVE {
                    WorkspaceAgentStatus::Disconnected
                } else {
                    WorkspaceAgentStatus::Connected
                }
            }
        }
    }

    /// The agent as the API shows it, with its apps from `apps`.
    pub fn to_api(&self, apps: &[AppRow], now: DateTime<Utc>) -> WorkspaceAgent {
        WorkspaceAgent {
            id: self.id,
            name: self.name.clone(),
            resource_id: self.resource_id,
            os: self.os.clone(),
            architecture: self.arch.clone(),
            directory: self.directory.clone(),
            status: self.status(now),
            lifecycle_state: self.lifecycle_state,
            first_connected_at: self.first_connected_at,
            last_connected_at: self.last_connected_at,
            apps: apps.iter().filter(|p| p.agent_id == self.id).map(AppRow::to_api).collect(),
            startup_script_behavior: if self.blocks_login { "blocking" } else { "non-blocking" }
                .to_owned(),
        }
    }
}

const COLUMNS: &str = "id, resource_id, name, os, arch, directory, lifecycle_state, \
    connection_timeout_seconds, first_connected_at, last_connected_at, disconnected_at, created_at, \
    EXISTS (SELECT 1 FROM workspace_agent_scripts s WHERE s.agent_id = workspace_agents.id \
            AND s.run_on_start AND s.start_blocks_login) AS blocks_login";

/// These agents (those that exist), by name.
pub async fn by_ids(db: &PgPool, ids: &[Uuid]) -> Result<Vec<AgentRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM workspace_agents WHERE id = ANY($1) ORDER BY name"
    ))
    .bind(ids)
    .fetch_all(db)
    .await
}

/// The agents of these resources, by name.
pub async fn of_resources(db: &PgPool, resources: &[Uuid]) -> Result<Vec<AgentRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM workspace_agents WHERE resource_id = ANY($1) ORDER BY name"
    ))
    .bind(resources)
    .fetch_all(db)
    .await
}

/// An agent of a workspace's latest build, found by its token's hash.
#[derive(Debug, Clone, sqlx::FromRow)]
#[allow(dead_code)] // not every endpoint needs every field
pub struct AgentIdentity {
    pub agent_id: Uuid,
    pub agent_name: String,
    pub resource_id: Uuid,
    pub workspace_id: Uuid,
    pub workspace_name: String,
    pub owner_id: Uuid,
    pub owner_name: String,
    pub build_id: Uuid,
}

/// The current agent with this token hash: of a workspace that is not
/// deleted, and of its latest build — or of the build before it while that
/// latest build is a stop or delete still running, so the agent it is about
/// to destroy can run its shutdown scripts and report them.
pub async fn by_token_hash(db: &PgPool, hash: &[u8]) -> Result<Option<AgentIdentity>, sqlx::Error> {
    sqlx::query_as(
        "SELECT a.id AS agent_id, a.name AS agent_name, a.resource_id, w.id AS workspace_id,
                w.name AS workspace_name, u.id AS owner_id, u.username AS owner_name, b.id AS build_id
         FROM workspace_agents a
         JOIN workspace_resources r ON r.id = a.resource_id
         JOIN workspace_builds b ON b.job_id = r.job_id
         JOIN workspaces w ON w.id = b.workspace_id
         JOIN users u ON u.id = w.owner_id
         WHERE a.auth_token_hash = $1 AND NOT w.deleted
           AND (b.build_number = (SELECT max(build_number) FROM workspace_builds WHERE workspace_id = w.id)
                OR EXISTS (
                    SELECT 1 FROM workspace_builds nb JOIN provisioner_jobs j ON j.id = nb.job_id
                    WHERE nb.workspace_id = w.id AND nb.build_number = b.build_number + 1
                      AND nb.transition IN ('stop', 'delete') AND j.completed_at IS NULL
                      AND nb.build_number = (SELECT max(build_number) FROM workspace_builds
                                             WHERE workspace_id = w.id)))
         LIMIT 1",
    )
    .bind(hash)
    .fetch_optional(db)
    .await
}

/// The owner of the (not deleted) workspace an agent belongs to.
pub async fn workspace_owner(db: &PgPool, agent: Uuid) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT w.owner_id FROM workspace_agents a JOIN workspace_resources r ON r.id = a.resource_id
         JOIN workspace_builds b ON b.job_id = r.job_id JOIN workspaces w ON w.id = b.workspace_id
         WHERE a.id = $1 AND NOT w.deleted",
    )
    .bind(agent)
    .fetch_optional(db)
    .await
}

/// What an agent's manifest carries from its row.
#[derive(sqlx::FromRow)]
pub struct ManifestRow {
    pub directory: String,
    pub env: sqlx::types::Json<std::collections::BTreeMap<String, String>>,
    pub startup_script: String,
    pub metadata: sqlx::types::Json<Vec<AgentMetadataDescription>>,
}

pub async fn manifest(db: &PgPool, agent: Uuid) -> Result<ManifestRow, sqlx::Error> {
    sqlx::query_as(
        "SELECT directory, env, startup_script, metadata FROM workspace_agents WHERE id = $1",
    )
    .bind(agent)
    .fetch_one(db)
    .await
}

/// Records a lifecycle report; `None` times and exit code keep their values.
pub async fn set_lifecycle(
    db: &PgPool,
    agent: Uuid,
    state: LifecycleState,
    started_at: Option<DateTime<Utc>>,
    ready_at: Option<DateTime<Utc>>,
    exit_code: Option<i32>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE workspace_agents SET lifecycle_state = $2, updated_at = now(),
             started_at = COALESCE($3, started_at), ready_at = COALESCE($4, ready_at),
             startup_script_exit_code = COALESCE($5, startup_script_exit_code)
         WHERE id = $1",
    )
    .bind(agent)
    .bind(state.as_str())
    .bind(started_at)
    .bind(ready_at)
    .bind(exit_code)
    .execute(db)
    .await
    .map(drop)
}

/// Records a stats report, which is also a heartbeat.
pub async fn record_stats(
    db: &PgPool,
    agent: Uuid,
    stats: &codersdk::AgentStats,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE workspace_agents SET last_connected_at = now(), first_connected_at = COALESCE(first_connected_at, now()),
             disconnected_at = NULL, stats = $2, version = $3
         WHERE id = $1",
    )
    .bind(agent)
    .bind(sqlx::types::Json(stats))
    .bind(&stats.version)
    .execute(db)
    .await
    .map(drop)
}

/// Bytes of startup logs an agent has stored.
pub async fn log_bytes(db: &PgPool, agent: Uuid) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT COALESCE(sum(octet_length(output)), 0)::bigint FROM workspace_agent_logs WHERE agent_id = $1",
    )
    .bind(agent)
    .fetch_one(db)
    .await
}

/// Appends log lines (`levels` and `outputs` pairwise), in order, from
/// `source` (a name) or the log source `source_id` (one of the agent's).
pub async fn insert_logs(
    db: &PgPool,
    agent: Uuid,
    source: &str,
    source_id: Option<Uuid>,
    levels: &[&str],
    outputs: &[&str],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO workspace_agent_logs (agent_id, source, log_source_id, level, output)
         SELECT $1, $2, $5, l, o FROM unnest($3::text[], $4::text[]) WITH ORDINALITY AS t(l, o, n) ORDER BY n",
    )
    .bind(agent)
    .bind(source)
    .bind(levels)
    .bind(outputs)
    .bind(source_id)
    .execute(db)
    .await
    .map(drop)
}

#[derive(sqlx::FromRow)]
struct LogRow {
    id: i64,
    created_at: DateTime<Utc>,
    source: String,
    source_id: Option<Uuid>,
    #[sqlx(try_from = "String")]
    level: codersdk::LogLevel,
    output: String,
}

/// An agent's startup logs, oldest first.
pub async fn logs(db: &PgPool, agent: Uuid) -> Result<Vec<WorkspaceAgentLog>, sqlx::Error> {
    let rows: Vec<LogRow> = sqlx::query_as(
        "SELECT g.id, g.created_at, COALESCE(s.display_name, g.source) AS source,
                g.log_source_id AS source_id, g.level, g.output
         FROM workspace_agent_logs g
         LEFT JOIN workspace_agent_log_sources s ON s.id = g.log_source_id
         WHERE g.agent_id = $1 ORDER BY g.id",
    )
    .bind(agent)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| WorkspaceAgentLog {
            id: r.id,
            created_at: r.created_at,
            source: r.source,
            source_id: r.source_id,
            level: r.level,
            output: r.output,
        })
        .collect())
}

/// The id of an agent's newest log line (`None`: no lines yet); the
/// dashboard re-reads the logs when it changes.
pub async fn latest_log_id(db: &PgPool, agent: Uuid) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT max(id) FROM workspace_agent_logs WHERE agent_id = $1")
        .bind(agent)
        .fetch_one(db)
        .await
}

/// The metadata keys the template declared for an agent.
pub async fn declared_metadata(
    db: &PgPool,
    agent: Uuid,
) -> Result<Vec<AgentMetadataDescription>, sqlx::Error> {
    let declared: sqlx::types::Json<Vec<AgentMetadataDescription>> =
        sqlx::query_scalar("SELECT metadata FROM workspace_agents WHERE id = $1")
            .bind(agent)
            .fetch_one(db)
            .await?;
    Ok(declared.0)
}

/// Stores one metadata result, replacing the key's previous one.
pub async fn upsert_metadata(
    db: &PgPool,
    agent: Uuid,
    r: &AgentMetadataResult,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO workspace_agent_metadata (agent_id, key, value, error, collected_at)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (agent_id, key) DO UPDATE
         SET value = EXCLUDED.value, error = EXCLUDED.error, collected_at = EXCLUDED.collected_at",
    )
    .bind(agent)
    .bind(&r.key)
    .bind(&r.value)
    .bind(&r.error)
    .bind(r.collected_at)
    .execute(db)
    .await
    .map(drop)
}

/// An agent's metadata results, by key.
pub async fn metadata(db: &PgPool, agent: Uuid) -> Result<Vec<AgentMetadataResult>, sqlx::Error> {
    let rows: Vec<(String, String, String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT key, value, error, collected_at FROM workspace_agent_metadata WHERE agent_id = $1 ORDER BY key",
    )
    .bind(agent)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(key, value, error, collected_at)| AgentMetadataResult {
            key,
            value,
            error,
            collected_at,
        })
        .collect())
}

/// One agent of a live workspace's latest build, as the app proxy finds it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AgentTarget {
    pub owner_id: Uuid,
    pub workspace_id: Uuid,
    pub agent_id: Uuid,
    pub agent_name: String,
}

/// The agents of the latest build of `owner`'s live workspace `workspace`
/// (both names case-insensitive), by name.
pub async fn of_workspace_named(
    db: &PgPool,
    owner: &str,
    workspace: &str,
) -> Result<Vec<AgentTarget>, sqlx::Error> {
    sqlx::query_as(
        "SELECT w.owner_id, w.id AS workspace_id, a.id AS agent_id, a.name AS agent_name
         FROM workspaces w
         JOIN users u ON u.id = w.owner_id
         JOIN workspace_builds b ON b.workspace_id = w.id
         JOIN workspace_resources r ON r.job_id = b.job_id
         JOIN workspace_agents a ON a.resource_id = r.id
         WHERE lower(u.username) = lower($1) AND lower(w.name) = lower($2) AND NOT w.deleted
           AND b.build_number = (SELECT max(build_number) FROM workspace_builds WHERE workspace_id = w.id)
         ORDER BY a.name",
    )
    .bind(owner)
    .bind(workspace)
    .fetch_all(db)
    .await
}

/// The live ones among `agents` (of the latest build of a workspace that is
/// not deleted), each with the workspace's owner.
pub async fn live_owners(db: &PgPool, agents: &[Uuid]) -> Result<Vec<(Uuid, Uuid)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT a.id, w.owner_id
         FROM workspace_agents a
         JOIN workspace_resources r ON r.id = a.resource_id
         JOIN workspace_builds b ON b.job_id = r.job_id
         JOIN workspaces w ON w.id = b.workspace_id
         WHERE a.id = ANY($1) AND NOT w.deleted
           AND b.build_number = (SELECT max(build_number) FROM workspace_builds WHERE workspace_id = w.id)",
    )
    .bind(agents)
    .fetch_all(db)
    .await
}
