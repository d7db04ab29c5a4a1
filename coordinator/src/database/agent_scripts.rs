//! Agent scripts and log sources (Coder's `workspace_agent_scripts` and
//! `workspace_agent_log_sources`), and the graceful-shutdown request that a
//! stop or delete build makes of the agents it is about to destroy.
//!
//! Every script has exactly one log source (its id is the script's key): the
//! agent attributes each output line to it, and the logs API names it.

use chrono::{DateTime, Utc};
use codersdk::{AgentLogSource, AgentScript};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::agents::AgentRow;
use crate::provisioner::Script;

/// Pubsub channel whose payload is the id of an agent asked to shut down.
pub const CHANNEL_AGENT_SHUTDOWN: &str = "agent_shutdown";

/// Wait bound for a stop script without a timeout of its own.
pub const UNBOUNDED_SCRIPT_WAIT_SECONDS: i64 = 300;

/// Records an agent's scripts, each with a fresh log source.
pub async fn insert(
    conn: &mut PgConnection,
    agent: Uuid,
    scripts: &[Script],
) -> Result<(), sqlx::Error> {
    for (ordinal, s) in scripts.iter().enumerate() {
        let source = Uuid::new_v4();
        sqlx::query(
            "INSERT INTO workspace_agent_log_sources (id, agent_id, display_name, icon)
             VALUES ($1, $2, $3, $4)",
        )
        .bind(source)
        .bind(agent)
        .bind(&s.display_name)
        .bind(&s.icon)
        .execute(&mut *conn)
        .await?;
        sqlx::query(
            "INSERT INTO workspace_agent_scripts (log_source_id, agent_id, ordinal, script, cron,
                 log_path, run_on_start, run_on_stop, start_blocks_login, timeout_seconds)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(source)
        .bind(agent)
        .bind(i32::try_from(ordinal).unwrap_or(i32::MAX))
        .bind(&s.script)
        .bind(&s.cron)
        .bind(&s.log_path)
        .bind(s.run_on_start)
        .bind(s.run_on_stop)
        .bind(s.start_blocks_login)
        .bind(i32::try_from(s.timeout_seconds.max(0)).unwrap_or(i32::MAX))
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

#[derive(sqlx::FromRow)]
struct ScriptRow {
    log_source_id: Uuid,
    display_name: String,
    script: String,
    cron: String,
    log_path: String,
    run_on_start: bool,
    run_on_stop: bool,
    start_blocks_login: bool,
    timeout_seconds: i32,
}

/// An agent's scripts, in declaration order.
pub async fn of_agent(db: &PgPool, agent: Uuid) -> Result<Vec<AgentScript>, sqlx::Error> {
    let rows: Vec<ScriptRow> = sqlx::query_as(
        "SELECT s.log_source_id, l.display_name, s.script, s.cron, s.log_path, s.run_on_start,
                s.run_on_stop, s.start_blocks_login, s.timeout_seconds
         FROM workspace_agent_scripts s
         JOIN workspace_agent_log_sources l ON l.id = s.log_source_id
         WHERE s.agent_id = $1 ORDER BY s.ordinal",
    )
    .bind(agent)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| AgentScript {
            log_source_id: r.log_source_id,
            display_name: r.display_name,
            script: r.script,
            cron: r.cron,
            log_path: r.log_path,
            run_on_start: r.run_on_start,
            run_on_stop: r.run_on_stop,
            start_blocks_login: r.start_blocks_login,
            timeout_seconds: r.timeout_seconds.into(),
        })
        .collect())
}

#[derive(sqlx::FromRow)]
struct SourceRow {
    id: Uuid,
    agent_id: Uuid,
    created_at: DateTime<Utc>,
    display_name: String,
    icon: String,
}

/// An agent's log sources, oldest first.
pub async fn log_sources(db: &PgPool, agent: Uuid) -> Result<Vec<AgentLogSource>, sqlx::Error> {
    let rows: Vec<SourceRow> = sqlx::query_as(
        "SELECT id, agent_id, created_at, display_name, icon FROM workspace_agent_log_sources
         WHERE agent_id = $1 ORDER BY created_at, display_name",
    )
    .bind(agent)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| AgentLogSource {
            id: r.id,
            workspace_agent_id: r.agent_id,
            created_at: r.created_at,
            display_name: r.display_name,
            icon: r.icon,
        })
        .collect())
}

/// Whether `source` is one of `agent`'s log sources.
pub async fn is_log_source_of(db: &PgPool, agent: Uuid, source: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM workspace_agent_log_sources WHERE id = $1 AND agent_id = $2)",
    )
    .bind(source)
    .bind(agent)
    .fetch_one(db)
    .await
}

/// Whether a build asked this agent to shut down.
pub async fn shutdown_requested(db: &PgPool, agent: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT shutdown_requested_at IS NOT NULL FROM workspace_agents WHERE id = $1",
    )
    .bind(agent)
    .fetch_optional(db)
    .await
    .map(|r| r.unwrap_or(false))
}

/// One agent that a stop or delete build waits for.
#[derive(Debug)]
pub struct ShutdownTarget {
    pub agent: AgentRow,
    /// The longest of its stop scripts' timeouts (a script without one counts
    /// as [`UNBOUNDED_SCRIPT_WAIT_SECONDS`]); 0 without stop scripts.
    pub stop_script_seconds: i64,
}

/// Asks the agents of the build before `job`'s (the ones its destroy will
/// remove) to shut down, once; returns them with their current state and the
/// ids newly asked (to notify).
pub async fn request_shutdown(
    db: &PgPool,
    job: Uuid,
) -> Result<(Vec<ShutdownTarget>, Vec<Uuid>), sqlx::Error> {
    const PREVIOUS_AGENTS: &str = "
        SELECT a.id FROM workspace_builds cur
        JOIN workspace_builds prev ON prev.workspace_id = cur.workspace_id
                                  AND prev.build_number = cur.build_number - 1
        JOIN workspace_resources r ON r.job_id = prev.job_id
        JOIN workspace_agents a ON a.resource_id = r.id
        WHERE cur.job_id = $1";
    let newly: Vec<Uuid> = sqlx::query_scalar(&format!(
        "UPDATE workspace_agents SET shutdown_requested_at = now()
         WHERE id IN ({PREVIOUS_AGENTS}) AND shutdown_requested_at IS NULL RETURNING id"
    ))
    .bind(job)
    .fetch_all(db)
    .await?;
    let rows: Vec<(Uuid, i64)> = sqlx::query_as(&format!(
        "SELECT a.id, COALESCE((SELECT max(CASE WHEN s.timeout_seconds = 0 THEN $2
                                                ELSE s.timeout_seconds::bigint END)
                                FROM workspace_agent_scripts s
                                WHERE s.agent_id = a.id AND s.run_on_stop), 0)
         FROM workspace_agents a WHERE a.id IN ({PREVIOUS_AGENTS})"
    ))
    .bind(job)
    .bind(UNBOUNDED_SCRIPT_WAIT_SECONDS)
    .fetch_all(db)
    .await?;
    let ids: Vec<Uuid> = rows.iter().map(|(id, _)| *id).collect();
    let agents = super::agents::by_ids(db, &ids).await?;
    let targets = agents
        .into_iter()
        .map(|agent| {
            let stop_script_seconds =
                rows.iter().find(|(id, _)| *id == agent.id).map_or(0, |(_, s)| *s);
            ShutdownTarget { agent, stop_script_seconds }
        })
        .collect();
    Ok((targets, newly))
}
