//! The terraform executor: runs template imports and workspace builds with
//! [`crate::provisioner::terraform`] — extract the archive, `terraform init`, then
//! plan (import) or apply/destroy (build), streaming every line and honoring
//! cancellation — and turns the result into a [`JobOutput`].
//!
//! It touches no database: its inputs come in the [`AcquiredJob`] and its
//! output goes back through the worker's [`JobBackend`](super::JobBackend),
//! so it runs the same inside coderd and on an external provisioner.

use std::path::PathBuf;
use std::sync::Arc;

use super::job::{AcquiredJob, JobFailure, JobOutput};
use super::queue::JobInput;
use super::worker::{Executor, JobContext};
use crate::provisioner::terraform::{ExtractLimits, Terraform};
use crate::provisioner::{LogLevel, Resource, Transition};

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

impl Executor for TerraformExecutor {
    async fn execute(&self, job: &AcquiredJob, ctx: JobContext) -> Result<JobOutput, JobFailure> {
        let transition = job.facts.transition;
        let logs = &ctx.logs;
        let session = self
            .terraform
            .session(job.lease.job_id, job.facts.clone())
            .map_err(|e| JobFailure::new(e, "setup"))?;
        if let Err(e) = session.extract(&job.archive, &self.config.limits) {
            ctx.log("extract", LogLevel::Error, e.to_string()).await;
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
                Ok(JobOutput::Import { parameters: result.parameters, resources: result.resources })
            }
            JobInput::WorkspaceBuild { .. } => {
                let stage = if transition == Transition::Delete { "destroy" } else { "apply" };
                match session.apply(job.prior_state.clone(), transition, logs, &ctx.cancel).await {
                    Ok(result) => Ok(JobOutput::Build {
                        state: result.state,
                        // A build records every resource of its state as persistent.
                        resources: result
                            .resources
                            .resources
                            .into_iter()
                            .map(|r| Resource { persistent: true, ..r })
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
