//! The terraform executor: runs template imports and workspace builds with
//! [`crate::provisionerd`] and records what they produced — parameters,
//! resources, agents (token hashes only) and apps, the new terraform state —
//! in the same transaction that completes the job.

use std::path::PathBuf;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::queue::{AcquiredJob, JobInput, JobLog, Queue};
use super::worker::{Executor, JobContext, Outcome};
use crate::provisionerd::{
    Agent, BuildEnv, ExtractLimits, ImportedResource, LogLine, Resource, Terraform, Transition,
};

/// What the executor needs to run terraform.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ExecutorConfig {
    pub terraform: PathBuf,
    pub provider: PathBuf,
    /// Job directories and the shared plugin cache live here.
    pub work_root: PathBuf,
    /// Passed to templates as the URL agents reach coderd at.
    pub access_url: String,
    pub limits: ExtractLimits,
}

impl ExecutorConfig {
    pub fn new(
        terraform: PathBuf,
        provider: PathBuf,
        work_root: PathBuf,
        access_url: String,
    ) -> Self {
        ExecutorConfig {
            terraform,
            provider,
            work_root,
            access_url,
            limits: ExtractLimits::new(10 << 20, 100 << 20, 10_000),
        }
    }
}

pub struct TerraformExecutor {
    terraform: Terraform,
    config: ExecutorConfig,
}

impl TerraformExecutor {
    pub fn new(config: ExecutorConfig) -> Arc<Self> {
        let terraform = Terraform::new(
            config.terraform.clone(),
            config.provider.clone(),
            config.work_root.clone(),
        );
        Arc::new(TerraformExecutor { terraform, config })
    }
}

/// Finds `terraform` on PATH.
pub fn find_terraform() -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join("terraform"))
        .find(|p| p.is_file())
}

/// Finds `terraform-provider-coder` beside the running binary.
pub fn find_provider() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    [dir.join("terraform-provider-coder"), dir.join("../terraform-provider-coder")]
        .into_iter()
        .find(|p| p.is_file())
}

/// Converts the core's log lines into the queue's, in order.
fn log_adapter(out: mpsc::Sender<JobLog>) -> (mpsc::Sender<LogLine>, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<LogLine>(1024);
    let task = tokio::spawn(async move {
        while let Some(l) = rx.recv().await {
            let log =
                JobLog { stage: l.stage, level: l.level.as_str().to_owned(), output: l.output };
            if out.send(log).await.is_err() {
                return;
            }
        }
    });
    (tx, task)
}

fn failed(error: impl std::fmt::Display, code: &'static str) -> Outcome {
    Outcome::Failed { error: error.to_string(), code }
}

impl Executor for TerraformExecutor {
    async fn execute(&self, job: AcquiredJob, ctx: JobContext) -> Outcome {
        let (logs, forward) = log_adapter(ctx.logs.clone());
        let outcome = match job.input {
            JobInput::TemplateVersionImport { template_version_id } => {
                self.import(&job, template_version_id, &ctx, &logs).await
            }
            JobInput::WorkspaceBuild { workspace_build_id } => {
                self.build(&job, workspace_build_id, &ctx, &logs).await
            }
        };
        drop(logs);
        let _ = forward.await;
        match outcome {
            Ok(o) => o,
            Err(e) => failed(format!("internal error: {e}"), "internal"),
        }
    }
}

async fn file_data(queue: &Queue, file_id: Uuid) -> Result<Vec<u8>, sqlx::Error> {
    sqlx::query_scalar("SELECT data FROM files WHERE id = $1")
        .bind(file_id)
        .fetch_one(&queue.db)
        .await
}

impl TerraformExecutor {
    async fn import(
        &self,
        job: &AcquiredJob,
        version_id: Uuid,
        ctx: &JobContext,
        logs: &mpsc::Sender<LogLine>,
    ) -> Result<Outcome, sqlx::Error> {
        let (version_name, template_name): (String, Option<String>) = sqlx::query_as(
            "SELECT v.name, t.name FROM template_versions v LEFT JOIN templates t ON t.id = v.template_id
             WHERE v.id = $1",
        )
        .bind(version_id)
        .fetch_one(&ctx.queue.db)
        .await?;
        let archive = file_data(&ctx.queue, job.file_id).await?;
        let env = BuildEnv {
            access_url: self.config.access_url.clone(),
            workspace_name: "import".into(),
            owner_name: "import".into(),
            transition: Transition::Start,
            build_id: job.id,
            template_name: template_name.unwrap_or_default(),
            template_version: version_name,
            ..Default::default()
        };
        let session = match self.terraform.session(job.id, env) {
            Ok(s) => s,
            Err(e) => return Ok(failed(e, "setup")),
        };
        if let Err(e) = session.extract(&archive, &self.config.limits) {
            ctx.log("extract", "error", e.to_string()).await;
            return Ok(failed(format!("The template archive was refused: {e}"), "bad_archive"));
        }
        if let Err(e) = session.init(logs, &ctx.cancel).await {
            return Ok(terraform_failed("init", e.is_canceled(), e));
        }
        let result = match session.import(logs, &ctx.cancel).await {
            Ok(r) => r,
            Err(e) => return Ok(terraform_failed("plan", e.is_canceled(), e)),
        };
        let mut tx = ctx.queue.db.begin().await?;
        for (i, p) in result.parameters.iter().enumerate() {
            let options: Vec<serde_json::Value> = p
                .options
                .iter()
                .map(|o| serde_json::json!({"name": o.name, "value": o.value, "description": o.description}))
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
            .bind(i32::try_from(i).unwrap_or(i32::MAX))
            .execute(&mut *tx)
            .await?;
        }
        for r in &result.resources {
            insert_resource(&mut tx, job.id, "start", r).await?;
        }
        if !Queue::complete_in(&mut tx, job.id, &ctx.worker_id, None).await? {
            return Ok(Outcome::Recorded); // no longer ours; nothing to record
        }
        tx.commit().await?;
        Ok(Outcome::Recorded)
    }

    async fn build(
        &self,
        job: &AcquiredJob,
        build_id: Uuid,
        ctx: &JobContext,
        logs: &mpsc::Sender<LogLine>,
    ) -> Result<Outcome, sqlx::Error> {
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
            transition: String,
            build_number: i32,
        }
        let f: Facts = sqlx::query_as(
            "SELECT w.id AS workspace_id, w.name AS workspace_name, u.id AS owner_id, u.username AS owner_name,
                    u.email AS owner_email, t.id AS template_id, t.name AS template_name, v.name AS version_name,
                    b.transition, b.build_number
             FROM workspace_builds b JOIN workspaces w ON w.id = b.workspace_id JOIN users u ON u.id = w.owner_id
             JOIN templates t ON t.id = w.template_id JOIN template_versions v ON v.id = b.template_version_id
             WHERE b.id = $1",
        )
        .bind(build_id)
        .fetch_one(&ctx.queue.db)
        .await?;
        let params: Vec<(String, String)> = sqlx::query_as(
            "SELECT name, value FROM workspace_build_parameters WHERE workspace_build_id = $1",
        )
        .bind(build_id)
        .fetch_all(&ctx.queue.db)
        .await?;
        // The newest state an earlier build left (a build whose worker died has none).
        let prior: Option<Vec<u8>> = sqlx::query_scalar(
            "SELECT provisioner_state FROM workspace_builds
             WHERE workspace_id = $1 AND build_number < $2 AND provisioner_state IS NOT NULL
             ORDER BY build_number DESC LIMIT 1",
        )
        .bind(f.workspace_id)
        .bind(f.build_number)
        .fetch_optional(&ctx.queue.db)
        .await?;
        let transition = match f.transition.as_str() {
            "stop" => Transition::Stop,
            "delete" => Transition::Delete,
            _ => Transition::Start,
        };
        let archive = file_data(&ctx.queue, job.file_id).await?;
        let env = BuildEnv {
            access_url: self.config.access_url.clone(),
            workspace_id: f.workspace_id,
            workspace_name: f.workspace_name,
            owner_id: f.owner_id,
            owner_name: f.owner_name,
            owner_email: f.owner_email,
            transition,
            build_id,
            template_id: f.template_id,
            template_name: f.template_name,
            template_version: f.version_name,
            parameters: params,
        };
        let session = match self.terraform.session(job.id, env) {
            Ok(s) => s,
            Err(e) => return Ok(failed(e, "setup")),
        };
        if let Err(e) = session.extract(&archive, &self.config.limits) {
            ctx.log("extract", "error", e.to_string()).await;
            return Ok(failed(format!("The template archive was refused: {e}"), "bad_archive"));
        }
        if let Err(e) = session.init(logs, &ctx.cancel).await {
            return Ok(terraform_failed("init", e.is_canceled(), e));
        }
        let stage = if transition == Transition::Delete { "destroy" } else { "apply" };
        match session.apply(prior, transition, logs, &ctx.cancel).await {
            Ok(result) => {
                let mut tx = ctx.queue.db.begin().await?;
                sqlx::query("UPDATE workspace_builds SET provisioner_state = $2 WHERE id = $1")
                    .bind(build_id)
                    .bind(&result.state)
                    .execute(&mut *tx)
                    .await?;
                let resources: Vec<ImportedResource> = result
                    .resources
                    .resources
                    .into_iter()
                    .map(|r| ImportedResource {
                        computational: !r.agents.is_empty(),
                        persistent: true,
                        resource: r,
                    })
                    .collect();
                for r in &resources {
                    insert_resource(&mut tx, job.id, transition.as_str(), r).await?;
                }
                if transition == Transition::Delete {
                    sqlx::query(
                        "UPDATE workspaces SET deleted = true, updated_at = now() WHERE id = $1",
                    )
                    .bind(f.workspace_id)
                    .execute(&mut *tx)
                    .await?;
                }
                if Queue::complete_in(&mut tx, job.id, &ctx.worker_id, None).await? {
                    tx.commit().await?;
                }
                Ok(Outcome::Recorded)
            }
            Err(e) => {
                // Keep whatever state terraform left: the next build starts from it.
                if let Some(state) = &e.state {
                    sqlx::query("UPDATE workspace_builds SET provisioner_state = $2 WHERE id = $1")
                        .bind(build_id)
                        .bind(state)
                        .execute(&ctx.queue.db)
                        .await?;
                }
                Ok(terraform_failed(stage, e.error.is_canceled(), e.error))
            }
        }
    }
}

fn terraform_failed(stage: &str, canceled: bool, e: impl std::fmt::Display) -> Outcome {
    if canceled {
        return failed("The job was canceled.", "canceled");
    }
    failed(format!("terraform {stage} failed: {e}"), "terraform")
}

fn token_hash(agent: &Agent) -> Vec<u8> {
    if agent.token.is_empty() {
        // Plans know no token yet: store a hash nothing can match.
        let random: [u8; 32] = rand::random();
        return Sha256::digest(random).to_vec();
    }
    Sha256::digest(agent.token.as_bytes()).to_vec()
}

async fn insert_resource(
    conn: &mut PgConnection,
    job_id: Uuid,
    transition: &str,
    r: &ImportedResource,
) -> Result<(), sqlx::Error> {
    let res: &Resource = &r.resource;
    let resource_id = Uuid::new_v4();
    let metadata: Vec<serde_json::Value> = res
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
    .bind(&res.type_)
    .bind(&res.name)
    .bind(&res.address)
    .bind(r.computational)
    .bind(r.persistent)
    .bind(res.hide)
    .bind(&res.icon)
    .bind(i32::try_from(res.daily_cost).unwrap_or(0))
    .bind(sqlx::types::Json(metadata))
    .execute(&mut *conn)
    .await?;
    for a in &res.agents {
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
        .bind(sqlx::types::Json(&a.env))
        .bind(&a.startup_script)
        .bind(i32::try_from(a.connection_timeout_seconds).unwrap_or(120))
        .bind(sqlx::types::Json(metadata))
        .execute(&mut *conn)
        .await?;
        for app in &a.apps {
            let healthcheck = app.healthcheck.as_ref().map(|h| {
                sqlx::types::Json(serde_json::json!({"url": h.url, "interval": h.interval, "threshold": h.threshold}))
            });
            sqlx::query(
                "INSERT INTO workspace_apps (id, agent_id, slug, display_name, url, command, subdomain, share, healthcheck)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
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
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(())
}
