//! The Postgres job backend: acquires from the [`Queue`], loads every input a
//! job needs (the template archive, build facts, parameters, the previous
//! state), and records what a job produced — parameters, resources, agents
//! (token hashes only) and apps, the new terraform state — in the same
//! transaction that completes it.
//!
//! In-process workers use it directly; the provisioner daemon API
//! (`/api/v2/provisionerdaemons`) serves external workers through it.

use std::time::Duration;

use futures::stream::BoxStream;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use uuid::Uuid;

use super::backend::{BackendError, JobBackend};
use super::job::{AcquiredJob, AgentShutdown, Heartbeat, JobFailure, JobLog, JobOutput, Lease};
use super::queue::{JobInput, Queue, QueuedJob, Tags, CHANNEL_JOB_CANCELED, CHANNEL_JOB_POSTED};
use crate::provisioner::{Agent, BuildEnv, Parameter, Resource, Transition};
use crate::pubsub::Message;

/// Added to an agent's longest stop script timeout: time to hear of the
/// request, start the scripts and report.
pub const SHUTDOWN_MARGIN_SECONDS: u64 = 15;

/// The queue in Postgres, as a [`JobBackend`].
#[derive(Debug, Clone)]
pub struct PgBackend {
    pub queue: Queue,
    /// Passed to templates as the URL agents reach coderd at.
    pub access_url: String,
    /// How long `acquire` waits for a job before answering `None`.
    pub acquire_wait: Duration,
}

impl PgBackend {
    pub fn new(queue: Queue, access_url: impl Into<String>) -> Self {
        PgBackend { queue, access_url: access_url.into(), acquire_wait: Duration::from_secs(5) }
    }

    /// Acquires a job, waiting up to `wait` for one to be posted.
    pub async fn acquire_within(
        &self,
        worker_id: &str,
        tags: &Tags,
        wait: Duration,
    ) -> Result<Option<AcquiredJob>, BackendError> {
        // Subscribe before looking, so a job posted in between still wakes us.
        let mut posted = self.queue.pubsub.subscribe(CHANNEL_JOB_POSTED).await;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            while let Some(row) = self.queue.acquire(worker_id, tags).await? {
                if let Some(job) = self.load(row, worker_id).await? {
                    return Ok(Some(job));
                }
            }
            tokio::select! {
                m = posted.recv() => {
                    if let Err(tokio::sync::broadcast::error::RecvError::Closed) = m {
                        return Ok(None);
                    }
                }
                _ = tokio::time::sleep_until(deadline) => return Ok(None),
            }
        }
    }

    /// Loads a job's inputs; a job whose inputs are gone is failed (it must
    /// not wedge the queue) and `None` returned.
    async fn load(
        &self,
        row: QueuedJob,
        worker_id: &str,
    ) -> Result<Option<AcquiredJob>, BackendError> {
        let lease = Lease { job_id: row.id, worker_id: worker_id.to_owned() };
        let loaded = async {
            let (facts, prior_state) = match row.input {
                JobInput::TemplateVersionImport { template_version_id } => {
                    self.import_facts(row.id, template_version_id).await?
                }
                JobInput::WorkspaceBuild { workspace_build_id } => {
                    self.build_facts(workspace_build_id).await?
                }
            };
            let archive: Vec<u8> = sqlx::query_scalar("SELECT data FROM files WHERE id = $1")
                .bind(row.file_id)
                .fetch_one(&self.queue.db)
                .await?;
            Ok::<_, sqlx::Error>((facts, prior_state, archive))
        }
        .await;
        let (facts, prior_state, archive) = match loaded {
            Ok(x) => x,
            Err(sqlx::Error::RowNotFound) => {
                self.queue
                    .fail(
                        row.id,
                        worker_id,
                        "The job's template version, build or file is gone.",
                        "bad_input",
                    )
                    .await?;
                return Ok(None);
            }
            Err(e) => {
                // Fail it now rather than leave it taken until the stale-job sweep.
                let _ = self
                    .queue
                    .fail(
                        row.id,
                        worker_id,
                        "An internal error occurred loading the job.",
                        "internal",
                    )
                    .await;
                return Err(e.into());
            }
        };
        Ok(Some(AcquiredJob { lease, input: row.input, archive, facts, prior_state }))
    }

    async fn import_facts(
        &self,
        job_id: Uuid,
        version_id: Uuid,
    ) -> Result<(BuildEnv, Option<Vec<u8>>), sqlx::Error> {
        let (version_name, template_name): (String, Option<String>) = sqlx::query_as(
            "SELECT v.name, t.name FROM template_versions v LEFT JOIN templates t ON t.id = v.template_id
             WHERE v.id = $1",
        )
        .bind(version_id)
        .fetch_one(&self.queue.db)
        .await?;
        let facts = BuildEnv {
            access_url: self.access_url.clone(),
            workspace_name: "import".into(),
            owner_name: "import".into(),
            transition: Transition::Start,
            build_id: job_id,
            template_name: template_name.unwrap_or_default(),
            template_version: version_name,
            ..Default::default()
        };
        Ok((facts, None))
    }

    async fn build_facts(
        &self,
        build_id: Uuid,
    ) -> Result<(BuildEnv, Option<Vec<u8>>), sqlx::Error> {
        #[derive(sqlx::FromRow)]
        struct Facts {
            workspace_id: Uuid,
            workspace_name: String,
            owner_id: Uuid,
            owner_name: String,
            owner_email: String,
            template_id: Uuid,
            template_name: String,
            version_name: String,
            #[sqlx(try_from = "String")]
            transition: Transition,
            build_number: i32,
        }
        let db = &self.queue.db;
        let f: Facts = sqlx::query_as(
            "SELECT w.id AS workspace_id, w.name AS workspace_name, u.id AS owner_id, u.username AS owner_name,
                    u.email AS owner_email, t.id AS template_id, t.name AS template_name, v.name AS version_name,
                    b.transition, b.build_number
             FROM workspace_builds b JOIN workspaces w ON w.id = b.workspace_id JOIN users u ON u.id = w.owner_id
             JOIN templates t ON t.id = w.template_id JOIN template_versions v ON v.id = b.template_version_id
             WHERE b.id = $1",
        )
        .bind(build_id)
        .fetch_one(db)
        .await?;
        let parameters: Vec<(String, String)> = sqlx::query_as(
            "SELECT name, value FROM workspace_build_parameters WHERE workspace_build_id = $1",
        )
        .bind(build_id)
        .fetch_all(db)
        .await?;
        // The newest state an earlier build left (a build whose worker died has none).
        let prior: Option<Vec<u8>> = sqlx::query_scalar(
            "SELECT provisioner_state FROM workspace_builds
             WHERE workspace_id = $1 AND build_number < $2 AND provisioner_state IS NOT NULL
             ORDER BY build_number DESC LIMIT 1",
        )
        .bind(f.workspace_id)
        .bind(f.build_number)
        .fetch_optional(db)
        .await?;
        let facts = BuildEnv {
            access_url: self.access_url.clone(),
            workspace_id: f.workspace_id,
            workspace_name: f.workspace_name,
            owner_id: f.owner_id,
            owner_name: f.owner_name,
            owner_email: f.owner_email,
            transition: f.transition,
            build_id,
            template_id: f.template_id,
            template_name: f.template_name,
            template_version: f.version_name,
            parameters,
        };
        Ok((facts, prior))
    }

    /// The job's input, locked, if it still runs under `lease`.
    async fn lock_running(
        conn: &mut PgConnection,
        lease: &Lease,
    ) -> Result<Option<JobInput>, sqlx::Error> {
        let input: Option<sqlx::types::Json<serde_json::Value>> = sqlx::query_scalar(
            "SELECT input FROM provisioner_jobs
             WHERE id = $1 AND worker_id = $2 AND completed_at IS NULL FOR UPDATE",
        )
        .bind(lease.job_id)
        .bind(&lease.worker_id)
        .fetch_optional(&mut *conn)
        .await?;
        Ok(input.and_then(|j| serde_json::from_value(j.0).ok()))
    }
}

impl JobBackend for PgBackend {
    async fn acquire(
        &self,
        worker_id: &str,
        tags: &Tags,
    ) -> Result<Option<AcquiredJob>, BackendError> {
        self.acquire_within(worker_id, tags, self.acquire_wait).await
    }

    async fn heartbeat(&self, lease: &Lease) -> Result<Heartbeat, BackendError> {
        Ok(self.queue.heartbeat(lease.job_id, &lease.worker_id).await?)
    }

    async fn append_logs(&self, lease: &Lease, logs: &[JobLog]) -> Result<bool, BackendError> {
        Ok(self.queue.append_logs_as(lease.job_id, &lease.worker_id, logs).await?)
    }

    async fn complete(&self, lease: &Lease, output: &JobOutput) -> Result<bool, BackendError> {
        let mut tx = self.queue.db.begin().await?;
        let Some(input) = Self::lock_running(&mut tx, lease).await? else {
            return Ok(false);
        };
        match (input, output) {
            (
                JobInput::TemplateVersionImport { template_version_id },
                JobOutput::Import { parameters, resources },
            ) => {
                for (i, p) in parameters.iter().enumerate() {
                    insert_parameter(&mut tx, template_version_id, i, p).await?;
                }
                for r in resources {
                    insert_resource(&mut tx, lease.job_id, "start", r).await?;
                }
            }
            (
                JobInput::WorkspaceBuild { workspace_build_id },
                JobOutput::Build { state, resources },
            ) => {
                #[derive(sqlx::FromRow)]
                struct Build {
                    workspace_id: Uuid,
                    #[sqlx(try_from = "String")]
                    transition: Transition,
                }
                let Build { workspace_id, transition } = sqlx::query_as(
                    "UPDATE workspace_builds SET provisioner_state = $2 WHERE id = $1
                     RETURNING workspace_id, transition",
                )
                .bind(workspace_build_id)
                .bind(state)
                .fetch_one(&mut *tx)
                .await?;
                for r in resources {
                    insert_resource(&mut tx, lease.job_id, transition.as_str(), r).await?;
                }
                if transition == Transition::Start {
                    crate::database::schedules::start_deadline(&mut tx, workspace_build_id).await?;
                }
                if transition == Transition::Delete {
                    sqlx::query(
                        "UPDATE workspaces SET deleted = true, updated_at = now() WHERE id = $1",
                    )
                    .bind(workspace_id)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            _ => {
                drop(tx);
                let failure = JobFailure::new(
                    "The provisioner returned output of the wrong kind for this job.",
                    "internal",
                );
                self.fail(lease, &failure).await?;
                return Ok(true);
            }
        }
        let done = Queue::complete_in(&mut tx, lease.job_id, &lease.worker_id, None).await?;
        tx.commit().await?;
        Ok(done)
    }

    async fn fail(&self, lease: &Lease, failure: &JobFailure) -> Result<bool, BackendError> {
        let mut tx = self.queue.db.begin().await?;
        let Some(input) = Self::lock_running(&mut tx, lease).await? else {
            return Ok(false);
        };
        // Keep whatever state terraform left: the next build starts from it.
        if let (JobInput::WorkspaceBuild { workspace_build_id }, Some(state)) =
            (input, &failure.state)
        {
            sqlx::query("UPDATE workspace_builds SET provisioner_state = $2 WHERE id = $1")
                .bind(workspace_build_id)
                .bind(state)
                .execute(&mut *tx)
                .await?;
        }
        let error = Some((failure.error.as_str(), failure.code.as_str()));
        let done = Queue::complete_in(&mut tx, lease.job_id, &lease.worker_id, error).await?;
        tx.commit().await?;
        Ok(done)
    }

    async fn shutdown_agents(
        &self,
        lease: &Lease,
    ) -> Result<Option<Vec<AgentShutdown>>, BackendError> {
        use crate::database::agent_scripts;
        let mut conn = self.queue.db.acquire().await?;
        if Self::lock_running(&mut conn, lease).await?.is_none() {
            return Ok(None);
        }
        drop(conn);
        let (targets, newly) =
            agent_scripts::request_shutdown(&self.queue.db, lease.job_id).await?;
        for id in newly {
            self.queue
                .pubsub
                .publish(agent_scripts::CHANNEL_AGENT_SHUTDOWN, &id.to_string())
                .await?;
        }
        let now = chrono::Utc::now();
        Ok(Some(
            targets
                .into_iter()
                .map(|t| AgentShutdown {
                    agent_id: t.agent.id,
                    name: t.agent.name.clone(),
                    lifecycle: t.agent.lifecycle_state,
                    connected: t.agent.status(now) == codersdk::WorkspaceAgentStatus::Connected,
                    has_stop_scripts: t.stop_script_seconds > 0,
                    wait_seconds: u64::try_from(t.stop_script_seconds).unwrap_or(0)
                        + SHUTDOWN_MARGIN_SECONDS,
                })
                .collect(),
        ))
    }

    async fn cancel_notices(&self, job_id: Uuid) -> BoxStream<'static, ()> {
        let rx = self.queue.pubsub.subscribe(CHANNEL_JOB_CANCELED).await;
        let id = job_id.to_string();
        tokio_stream_from(rx)
            .filter(move |m| {
                let ours = !matches!(m, Message::Payload(p) if *p != id);
                async move { ours }
            })
            .map(|_| ())
            .boxed()
    }
}

/// A broadcast receiver as a stream; lagging counts as "maybe", so it yields.
fn tokio_stream_from(
    rx: tokio::sync::broadcast::Receiver<Message>,
) -> impl futures::Stream<Item = Message> + Send {
    futures::stream::unfold(rx, |mut rx| async move {
        match rx.recv().await {
            Ok(m) => Some((m, rx)),
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => Some((Message::Resync, rx)),
            Err(tokio::sync::broadcast::error::RecvError::Closed) => None,
        }
    })
}

async fn insert_parameter(
    conn: &mut PgConnection,
    version_id: Uuid,
    ordinal: usize,
    p: &Parameter,
) -> Result<(), sqlx::Error> {
    let options: Vec<serde_json::Value> = p
        .options
        .iter()
        .map(
            |o| serde_json::json!({"name": o.name, "value": o.value, "description": o.description}),
        )
        .collect();
    let validation = p.validation.as_ref().map(|v| {
        serde_json::json!({"min": v.min, "max": v.max, "regex": v.regex, "error": v.error, "monotonic": v.monotonic})
    });
    sqlx::query(
        "INSERT INTO template_version_parameters
         (template_version_id, name, display_name, description, type, mutable, default_value, required, options, validation, ordinal)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(version_id)
    .bind(&p.name)
    .bind(&p.display_name)
    .bind(&p.description)
    .bind(&p.type_)
    .bind(p.mutable)
    .bind(&p.default)
    .bind(p.required)
    .bind(sqlx::types::Json(options))
    .bind(validation.map(sqlx::types::Json))
    .bind(i32::try_from(ordinal).unwrap_or(i32::MAX))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The agent's `env` with its `coder_env`s set over it (a later `coder_env` of
/// the same name wins, by address order).
fn agent_env(agent: &Agent) -> std::collections::BTreeMap<String, String> {
    let mut env = agent.env.clone();
    env.extend(agent.extra_envs.iter().cloned());
    env
}

fn token_hash(agent: &Agent) -> Vec<u8> {
    if agent.token.is_empty() {
        // Plans know no token yet: store a hash nothing can match.
        let random: [u8; 32] = rand::random();
        return Sha256::digest(random).to_vec();
    }
    Sha256::digest(agent.token.as_bytes()).to_vec()
}

/// The app's icon if the dashboard may show it (`/`-relative or https);
/// anything else is dropped with a warning, so no stored icon is ever
/// another scheme or able to leave its attribute.
fn app_icon(app: &crate::provisioner::App) -> &str {
    if crate::database::templates::icon_allowed(&app.icon) {
        &app.icon
    } else {
        tracing::warn!(slug = %app.slug, "coder_app icon dropped: not a /-relative or https URL");
        ""
    }
}

async fn insert_resource(
    conn: &mut PgConnection,
    job_id: Uuid,
    transition: &str,
    r: &Resource,
) -> Result<(), sqlx::Error> {
    let resource_id = Uuid::new_v4();
    let metadata: Vec<serde_json::Value> = r
        .metadata
        .iter()
        .map(|m| {
            let value = if m.sensitive { String::new() } else { m.value.clone() };
            serde_json::json!({"key": m.key, "value": value, "sensitive": m.sensitive})
        })
        .collect();
    sqlx::query(
        "INSERT INTO workspace_resources
         (id, job_id, transition, type, name, address, computational, persistent, hide, icon, daily_cost, metadata)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(resource_id)
    .bind(job_id)
    .bind(transition)
    .bind(&r.type_)
    .bind(&r.name)
    .bind(&r.address)
    .bind(r.computational)
    .bind(r.persistent)
    .bind(r.hide)
    .bind(&r.icon)
    .bind(i32::try_from(r.daily_cost).unwrap_or(0))
    .bind(sqlx::types::Json(metadata))
    .execute(&mut *conn)
    .await?;
    for a in &r.agents {
        let agent_id = Uuid::new_v4();
        let metadata: Vec<serde_json::Value> = a
            .metadata
            .iter()
            .map(|m| {
                serde_json::json!({"key": m.key, "display_name": m.display_name, "script": m.script,
                    "interval": m.interval, "timeout": m.timeout})
            })
            .collect();
        sqlx::query(
            "INSERT INTO workspace_agents
             (id, resource_id, name, auth_token_hash, os, arch, directory, env, startup_script,
              connection_timeout_seconds, metadata)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(agent_id)
        .bind(resource_id)
        .bind(&a.name)
        .bind(token_hash(a))
        .bind(&a.os)
        .bind(&a.arch)
        .bind(&a.dir)
        .bind(sqlx::types::Json(agent_env(a)))
        .bind(&a.startup_script)
        .bind(i32::try_from(a.connection_timeout_seconds).unwrap_or(120))
        .bind(sqlx::types::Json(metadata))
        .execute(&mut *conn)
        .await?;
        crate::database::agent_scripts::insert(&mut *conn, agent_id, &a.scripts).await?;
        for app in &a.apps {
            let healthcheck = app.healthcheck.as_ref().map(|h| {
                sqlx::types::Json(serde_json::json!({"url": h.url, "interval": h.interval, "threshold": h.threshold}))
            });
            sqlx::query(
                "INSERT INTO workspace_apps (id, agent_id, slug, display_name, url, command, subdomain, share, healthcheck, health, icon)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9,
                         CASE WHEN $9::jsonb IS NULL THEN 'disabled' ELSE 'initializing' END, $10)",
            )
            .bind(Uuid::new_v4())
            .bind(agent_id)
            .bind(&app.slug)
            .bind(&app.display_name)
            .bind(&app.url)
            .bind(&app.command)
            .bind(app.subdomain)
            .bind(&app.share)
            .bind(healthcheck)
            .bind(app_icon(app))
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(())
}
