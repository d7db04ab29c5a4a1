//! The terraform executor: runs template imports and workspace builds with
//! [`crate::provisionerd`] — extract the archive, `terraform init`, then
//! plan (import) or apply/destroy (build), streaming every line and honoring
//! cancellation — and turns the result into a [`JobOutput`].
//!
//! It touches no database: its inputs come in the [`AcquiredJob`] and its
//! output goes back through the worker's [`JobBackend`](super::JobBackend),
//! so it runs the same inside coderd and on an external provisioner.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::job::{AcquiredJob, JobFailure, JobLog, JobOutput, ResourceRecord};
use super::queue::JobInput;
use super::worker::{Executor, JobContext};
use crate::provisionerd::{ExtractLimits, LogLine, Terraform, Transition};

/// What the executor needs to run terraform.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ExecutorConfig {
    pub terraform: PathBuf,
    pub provider: PathBuf,
    /// Job directories and the shared plugin cache live here.
    pub work_root: PathBuf,
    pub limits: ExtractLimits,
}

impl ExecutorConfig {
    pub fn new(terraform: PathBuf, provider: PathBuf, work_root: PathBuf) -> Self {
        ExecutorConfig {
            terraform,
            provider,
            work_root,
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

/// Converts the core's log lines into the job's, in order.
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

impl Executor for TerraformExecutor {
    async fn execute(&self, job: &AcquiredJob, ctx: JobContext) -> Result<JobOutput, JobFailure> {
        let (logs, forward) = log_adapter(ctx.logs.clone());
        let outcome = self.run(job, &ctx, &logs).await;
        drop(logs);
        let _ = forward.await;
        outcome
    }
}

impl TerraformExecutor {
    async fn run(
        &self,
        job: &AcquiredJob,
        ctx: &JobContext,
        logs: &mpsc::Sender<LogLine>,
    ) -> Result<JobOutput, JobFailure> {
        let transition = job.facts.transition;
        let session = self
            .terraform
            .session(job.lease.job_id, job.facts.clone().into())
            .map_err(|e| JobFailure::new(e, "setup"))?;
        if let Err(e) = session.extract(&job.archive, &self.config.limits) {
            ctx.log("extract", "error", e.to_string()).await;
            return Err(JobFailure::new(
                format!("The template archive was refused: {e}"),
                "bad_archive",
            ));
        }
        if let Err(e) = session.init(logs, &ctx.cancel).await {
            return Err(terraform_failed("init", e.is_canceled(), e));
        }
        match job.input {
            JobInput::TemplateVersionImport { .. } => {
                let result = session
                    .import(logs, &ctx.cancel)
                    .await
                    .map_err(|e| terraform_failed("plan", e.is_canceled(), e))?;
                Ok(JobOutput::Import {
                    parameters: result.parameters.into_iter().map(Into::into).collect(),
                    resources: result.resources.into_iter().map(Into::into).collect(),
                })
            }
            JobInput::WorkspaceBuild { .. } => {
                let stage = if transition == Transition::Delete { "destroy" } else { "apply" };
                match session.apply(job.prior_state.clone(), transition, logs, &ctx.cancel).await {
                    Ok(result) => Ok(JobOutput::Build {
                        state: result.state,
                        resources: result
                            .resources
                            .resources
                            .into_iter()
                            .map(|r| {
                                let computational = !r.agents.is_empty();
                                ResourceRecord::new(r, computational, true)
                            })
                            .collect(),
                    }),
                    Err(e) => {
                        let mut failure = terraform_failed(stage, e.error.is_canceled(), e.error);
                        failure.state = e.state;
                        Err(failure)
                    }
                }
            }
        }
    }
}

fn terraform_failed(stage: &str, canceled: bool, e: impl std::fmt::Display) -> JobFailure {
    if canceled {
        return JobFailure::new("The job was canceled.", "canceled");
    }
    JobFailure::new(format!("terraform {stage} failed: {e}"), "terraform")
}
