//! Running terraform for one provisioner job.
//!
//! A [`Terraform`] says where the binaries are and where job directories live. Each job
//! gets a [`Session`]: a fresh directory `work_root/<job id>/` that is terraform's
//! `HOME`, holding the CLI configuration (our provider from a filesystem mirror, plus
//! the shared plugin cache) and `template/`, the extracted template and terraform's
//! working directory. Dropping the session removes the directory.
//!
//! terraform sees only a curated environment ([`Session::env`]): `PATH`, `HOME`, the
//! automation switches, our CLI configuration, and the build facts of [`BuildEnv`] in
//! the variables the provider reads. Nothing else of the coordinator's environment
//! leaks in (in particular no `TF_CLI_CONFIG_FILE` and no database credentials).
//!
//! Every stdout/stderr line of `init`, `plan`, `apply` and `destroy` goes to the caller's
//! log channel as it is printed; `show -json` output is captured and parsed by
//! [`super::parse`].

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::parse::{self, ParseError, PlanResult, StateResources};
use super::process::{self, Invocation, ProcessError};
use super::tar::{self as template_tar, ExtractError, ExtractLimits, ExtractSummary};
use super::template::{sanitize_template, PLAN_FILE, STATE_FILE};
use crate::provisioner::{BuildEnv, JobLog, Parameter, Resource, Transition};

/// Where terraform and our provider are, and where jobs run.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Terraform {
    /// The `terraform` executable.
    pub binary: PathBuf,
    /// The `terraform-provider-coder` executable.
    pub provider_binary: PathBuf,
    /// Job directories are created under it.
    pub work_root: PathBuf,
    /// terraform's `plugin_cache_dir`, shared by all jobs.
    pub plugin_cache: PathBuf,
    /// Time between SIGINT and SIGKILL when a job is canceled.
    pub cancel_grace: Duration,
}

impl Terraform {
    /// A runner with the plugin cache at `work_root/plugin-cache` and a 10 s grace.
    pub fn new(binary: PathBuf, provider_binary: PathBuf, work_root: PathBuf) -> Self {
        let plugin_cache = work_root.join("plugin-cache");
        Self {
            binary,
            provider_binary,
            work_root,
            plugin_cache,
            cancel_grace: Duration::from_secs(10),
        }
    }

    /// Sets the time between SIGINT and SIGKILL on cancellation.
    pub fn with_cancel_grace(mut self, grace: Duration) -> Self {
        self.cancel_grace = grace;
        self
    }

    /// Creates the job's fresh directory (removing one left by an earlier attempt) and
    /// its CLI configuration.
    pub fn session(&self, job_id: Uuid, env: BuildEnv) -> Result<Session, SetupError> {
        let io_err = |path: &Path| {
            let path = path.to_owned();
            move |source| SetupError::Io { path, source }
        };
        // Job directories hold agent tokens (state, plans, the template's
        // `local-exec` environment): only this user may enter them, whatever
        // the umask.
        private_dir_all(&self.work_root).map_err(io_err(&self.work_root))?;
        let work_root = std::path::absolute(&self.work_root).map_err(io_err(&self.work_root))?;
        let root = work_root.join(job_id.to_string());
        match std::fs::remove_dir_all(&root) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&root)(e)),
        }
        private_dir(&root).map_err(io_err(&root))?;
        let dir = root.join("template");
        private_dir(&dir).map_err(io_err(&dir))?;
        let mut session = Session {
            binary: self.binary.clone(),
            grace: self.cancel_grace,
            cli_config: PathBuf::new(),
            root,
            dir,
            env,
        };
        let cli_config =
            provider::write_cli_config(session.root.join("cli").as_path(), &self.provider_binary)?;
        let cache = if self.plugin_cache.is_absolute() {
            self.plugin_cache.clone()
        } else {
            std::env::current_dir().map_err(io_err(&self.plugin_cache))?.join(&self.plugin_cache)
        };
        std::fs::create_dir_all(&cache).map_err(io_err(&cache))?;
        let mut config = std::fs::read_to_string(&cli_config).map_err(io_err(&cli_config))?;
        config.push_str(&format!("plugin_cache_dir = {}\n", hcl_quote(&cache.to_string_lossy())));
        std::fs::write(&cli_config, config).map_err(io_err(&cli_config))?;
        session.cli_config = cli_config;
        Ok(session)
    }
}

/// Creates `path` and its missing parents with mode 0700; a directory that
/// exists keeps its mode (the operator's choice).
fn private_dir_all(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(path)
}

/// Creates the fresh directory `path` with mode 0700 (set after creation too:
/// the umask only ever removes bits, but a platform default ACL may add some).
fn private_dir(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new().mode(0o700).create(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
}

/// Creates or truncates `path` as a file only its owner may read (0600, also
/// when it existed with another mode) and writes `contents`. terraform rewrites
/// its state and plan files in place, so they keep this mode.
async fn write_private(path: &Path, contents: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    use tokio::io::AsyncWriteExt;
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .await?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600)).await?;
    file.write_all(contents).await?;
    file.flush().await
}

/// terraform's copy of the previous state, beside [`STATE_FILE`].
const BACKUP_FILE: &str = "terraform.tfstate.backup";

fn hcl_quote(s: &str) -> String {
    let escaped = s.replace('\\', "\\\\").replace('"', "\\\"").replace("${", "$${");
    format!("\"{escaped}\"")
}

/// Why a job directory could not be prepared.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    #[error("cannot prepare {path:?}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    CliConfig(#[from] provider::CliConfigError),
}

/// Why `init`, `plan`, `import` or the apply itself failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TerraformError {
    #[error("cannot start terraform {stage}")]
    Spawn {
        stage: &'static str,
        #[source]
        source: ProcessError,
    },
    #[error("canceled during terraform {stage}")]
    Canceled { stage: &'static str },
    #[error("terraform {stage} failed ({status}){}", first_error.as_ref().map(|e| format!(": {e}")).unwrap_or_default())]
    Failed { stage: &'static str, status: ExitStatus, first_error: Option<String> },
    #[error("cannot read {path:?}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot understand terraform's JSON output")]
    Parse(#[from] ParseError),
}

impl TerraformError {
    /// Whether the operation stopped because it was canceled.
    pub fn is_canceled(&self) -> bool {
        matches!(self, Self::Canceled { .. })
    }
}

/// An apply or destroy that failed; `state` is the state terraform left behind (which
/// a failed apply may have partly changed), to be stored with the build anyway.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct ApplyError {
    pub state: Option<Vec<u8>>,
    #[source]
    pub error: TerraformError,
}

/// A successful apply or destroy.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ApplyResult {
    /// The new `terraform.tfstate`, to store with the build.
    pub state: Vec<u8>,
    /// The workspace's resources in that state, with their agents.
    pub resources: StateResources,
}

/// A template import: the `start` plan's resources, each marked computational or not
/// and persistent or not, and the template's parameters.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ImportResult {
    pub resources: Vec<Resource>,
    pub parameters: Vec<Parameter>,
    /// Agents of the `start` plan that no resource runs.
    pub detached_agents: Vec<crate::provisioner::Agent>,
}

/// One job's directory and environment. Dropping it removes the directory.
#[derive(Debug)]
pub struct Session {
    binary: PathBuf,
    grace: Duration,
    cli_config: PathBuf,
    root: PathBuf,
    dir: PathBuf,
    env: BuildEnv,
}

impl Session {
    /// Where the template goes; terraform's working directory.
    pub fn template_dir(&self) -> &Path {
        &self.dir
    }

    /// Unpacks a template archive into [`Self::template_dir`], then removes what the
    /// worker owns (see [`sanitize_template`]).
    pub fn extract(
        &self,
        archive: &[u8],
        limits: &ExtractLimits,
    ) -> Result<ExtractSummary, ExtractError> {
        let summary = template_tar::extract(archive, &self.dir, limits)?;
        sanitize_template(&self.dir)
            .map_err(|source| ExtractError::Write { path: self.dir.clone(), source })?;
        Ok(summary)
    }

    /// The complete environment terraform runs with, for `transition`.
    pub fn env(&self, transition: Transition) -> Vec<(OsString, OsString)> {
        let path =
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
        // The provisioner's own HOME: templates like `local` keep workspaces
        // under `~`, which must outlive the job directory.
        let home = std::env::var_os("HOME").unwrap_or_else(|| self.root.clone().into());
        let mut env: Vec<(OsString, OsString)> =
            vec![("PATH".into(), path), ("HOME".into(), home), ("TF_INPUT".into(), "0".into())];
        env.extend(
            provider::terraform_env(&self.cli_config).into_iter().map(|(k, v)| (k.into(), v)),
        );
        let e = &self.env;
        let facts: [(&str, String); 11] = [
            (provider::ACCESS_URL_ENV, e.access_url.clone()),
            ("CODER_WORKSPACE_ID", e.workspace_id.to_string()),
            ("CODER_WORKSPACE_NAME", e.workspace_name.clone()),
            ("CODER_WORKSPACE_TRANSITION", transition.as_str().to_owned()),
            ("CODER_WORKSPACE_BUILD_ID", e.build_id.to_string()),
            ("CODER_WORKSPACE_OWNER_ID", e.owner_id.to_string()),
            ("CODER_WORKSPACE_OWNER", e.owner_name.clone()),
            ("CODER_WORKSPACE_OWNER_EMAIL", e.owner_email.clone()),
            ("CODER_WORKSPACE_TEMPLATE_ID", e.template_id.to_string()),
            ("CODER_WORKSPACE_TEMPLATE_NAME", e.template_name.clone()),
            ("CODER_WORKSPACE_TEMPLATE_VERSION", e.template_version.clone()),
        ];
        // Empty means unknown: the provider applies its defaults to unset variables.
        env.extend(
            facts.into_iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| (k.into(), v.into())),
        );
        for (name, value) in &e.parameters {
            env.push((provider::parameter_env_var(name).into(), value.into()));
        }
        env
    }

    async fn run(
        &self,
        stage: &'static str,
        args: &[&str],
        transition: Transition,
        logs: &mpsc::Sender<JobLog>,
        cancel: &CancellationToken,
    ) -> Result<(), TerraformError> {
        self.exec(stage, args, transition, false, logs, cancel).await.map(drop)
    }

    /// Runs one command; `capture` keeps stdout instead of logging it.
    async fn exec(
        &self,
        stage: &'static str,
        args: &[&str],
        transition: Transition,
        capture: bool,
        logs: &mpsc::Sender<JobLog>,
        cancel: &CancellationToken,
    ) -> Result<Vec<u8>, TerraformError> {
        let env = self.env(transition);
        let inv = Invocation { program: &self.binary, args, dir: &self.dir, env: &env, stage };
        match process::run(inv, capture, logs, cancel, self.grace).await {
            Ok(out) if out.status.success() => Ok(out.stdout),
            Ok(out) => Err(TerraformError::Failed {
                stage,
                status: out.status,
                first_error: out.first_error,
            }),
            Err(ProcessError::Canceled) => Err(TerraformError::Canceled { stage }),
            Err(source) => Err(TerraformError::Spawn { stage, source }),
        }
    }

    /// `terraform init`: installs the template's providers (ours from the mirror).
    pub async fn init(
        &self,
        logs: &mpsc::Sender<JobLog>,
        cancel: &CancellationToken,
    ) -> Result<(), TerraformError> {
        let args = ["init", "-no-color", "-input=false"];
        self.run("init", &args, self.env.transition, logs, cancel).await
    }

    /// `terraform plan` for `transition` (`-destroy` for delete) against whatever state
    /// the directory holds, then `show -json` of the plan, parsed. Returns the raw plan
    /// JSON too.
    async fn plan_json(
        &self,
        transition: Transition,
        logs: &mpsc::Sender<JobLog>,
        cancel: &CancellationToken,
    ) -> Result<Vec<u8>, TerraformError> {
        let plan_path = self.dir.join(PLAN_FILE);
        write_private(&plan_path, b"")
            .await
            .map_err(|source| TerraformError::Io { path: plan_path, source })?;
        let out = format!("-out={PLAN_FILE}");
        let mut args = vec!["plan", "-no-color", "-input=false", out.as_str()];
        if transition == Transition::Delete {
            args.push("-destroy");
        }
        self.run("plan", &args, transition, logs, cancel).await?;
        let show = ["show", "-json", "-no-color", PLAN_FILE];
        self.exec("plan", &show, transition, true, logs, cancel).await
    }

    /// `terraform graph` of the configuration: resource-to-resource edges, resolved
    /// through locals (see [`parse::graph_edges`]). `None` if terraform could not draw
    /// it; the expressions' references still apply then.
    async fn graph(
        &self,
        stage: &'static str,
        logs: &mpsc::Sender<JobLog>,
        cancel: &CancellationToken,
    ) -> Result<Option<String>, TerraformError> {
        let args = ["graph", "-no-color"];
        match self.exec(stage, &args, self.env.transition, true, logs, cancel).await {
            Ok(dot) => Ok(Some(String::from_utf8_lossy(&dot).into_owned())),
            Err(e @ TerraformError::Canceled { .. }) => Err(e),
            Err(_) => Ok(None),
        }
    }

    /// Plans `transition` and reads resources, agents and parameters from the plan.
    pub async fn plan(
        &self,
        transition: Transition,
        logs: &mpsc::Sender<JobLog>,
        cancel: &CancellationToken,
    ) -> Result<PlanResult, TerraformError> {
        let json = self.plan_json(transition, logs, cancel).await?;
        let graph = self.graph("plan", logs, cancel).await?;
        Ok(parse::parse_plan(&json, graph.as_deref())?)
    }

    /// A template import: plans `start` and `stop` and merges them (see
    /// [`parse::merge_import`]). Call [`Self::init`] first.
    pub async fn import(
        &self,
        logs: &mpsc::Sender<JobLog>,
        cancel: &CancellationToken,
    ) -> Result<ImportResult, TerraformError> {
        let graph = self.graph("plan", logs, cancel).await?;
        let start = self.plan_json(Transition::Start, logs, cancel).await?;
        let start = parse::parse_plan(&start, graph.as_deref())?;
        let stop = self.plan_json(Transition::Stop, logs, cancel).await?;
        let stop = parse::parse_plan(&stop, graph.as_deref())?;
        Ok(ImportResult {
            resources: parse::merge_import(&start.resources, &stop.resources),
            parameters: start.parameters,
            detached_agents: start.detached_agents,
        })
    }

    /// Applies `transition` on top of `prior_state` (the previous build's state; `None`
    /// for a workspace's first build): `plan` then `apply` of that plan for start and
    /// stop, `destroy` for delete. Call [`Self::init`] first.
    ///
    /// On failure or cancellation the error carries the state terraform left.
    pub async fn apply(
        &self,
        prior_state: Option<Vec<u8>>,
        transition: Transition,
        logs: &mpsc::Sender<JobLog>,
        cancel: &CancellationToken,
    ) -> Result<ApplyResult, ApplyError> {
        let state_path = self.dir.join(STATE_FILE);
        // A first build starts from nothing (an empty state file is no state
        // to terraform), whatever an earlier step left here.
        // The backup terraform writes beside it is rewritten in place too.
        let backup = self.dir.join(BACKUP_FILE);
        let written = match write_private(&backup, b"").await {
            Ok(()) => write_private(&state_path, prior_state.as_deref().unwrap_or_default()).await,
            Err(e) => Err(e),
        };
        if let Err(source) = written {
            let error = TerraformError::Io { path: state_path, source };
            return Err(ApplyError { state: prior_state, error });
        }
        match self.apply_inner(transition, logs, cancel).await {
            Ok(result) => Ok(result),
            Err(error) => {
                let left = tokio::fs::read(&state_path).await.ok().filter(|s| !s.is_empty());
                let state = left.or(prior_state);
                Err(ApplyError { state, error })
            }
        }
    }

    async fn apply_inner(
        &self,
        transition: Transition,
        logs: &mpsc::Sender<JobLog>,
        cancel: &CancellationToken,
    ) -> Result<ApplyResult, TerraformError> {
        let (plan, graph) = if transition == Transition::Delete {
            let args = ["destroy", "-no-color", "-input=false", "-auto-approve"];
            self.run("destroy", &args, transition, logs, cancel).await?;
            (None, None)
        } else {
            let plan = self.plan_json(transition, logs, cancel).await?;
            let args = ["apply", "-no-color", "-input=false", "-auto-approve", PLAN_FILE];
            self.run("apply", &args, transition, logs, cancel).await?;
            (Some(plan), self.graph("apply", logs, cancel).await?)
        };
        let state_path = self.dir.join(STATE_FILE);
        let state = tokio::fs::read(&state_path)
            .await
            .map_err(|source| TerraformError::Io { path: state_path, source })?;
        let stage = if transition == Transition::Delete { "destroy" } else { "apply" };
        let show = ["show", "-json", "-no-color"];
        let json = self.exec(stage, &show, transition, true, logs, cancel).await?;
        let resources = parse::parse_state(&json, plan.as_deref(), graph.as_deref())?;
        Ok(ApplyResult { state, resources })
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Best effort: a leftover directory is replaced by the next attempt anyway.
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn session_env_is_curated() {
        let tmp = tempfile::tempdir().unwrap();
        let bin = tmp.path().join("provider");
        std::fs::write(&bin, "").unwrap();
        let tf = Terraform::new("terraform".into(), bin, tmp.path().join("jobs"));
        let env = BuildEnv {
            access_url: "http://coder.test".into(),
            owner_name: "alice".into(),
            parameters: vec![("region".into(), "eu".into())],
            ..BuildEnv::default()
        };
        let session = tf.session(Uuid::new_v4(), env).unwrap();
        let vars = session.env(Transition::Stop);
        let get = |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(get("CODER_WORKSPACE_TRANSITION").unwrap(), "stop");
        assert_eq!(get("CODER_AGENT_URL").unwrap(), "http://coder.test");
        assert_eq!(get("CODER_WORKSPACE_OWNER").unwrap(), "alice");
        assert_eq!(get(&provider::parameter_env_var("region")).unwrap(), "eu");
        let home = std::env::var_os("HOME").unwrap_or_else(|| session.root.clone().into());
        assert_eq!(get("HOME").unwrap(), home);
        assert!(get("CODER_WORKSPACE_NAME").is_none());
        let config = get("TF_CLI_CONFIG_FILE").unwrap();
        let text = std::fs::read_to_string(&config).unwrap();
        assert!(text.contains("plugin_cache_dir"), "{text}");
        assert!(vars.iter().all(|(k, _)| k != "CARGO" && k != "USER"));

        let root = session.root.clone();
        drop(session);
        assert!(!root.exists());
    }

    fn mode(p: &Path) -> u32 {
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).unwrap().permissions())
            & 0o777
    }

    #[tokio::test]
    async fn job_directories_and_state_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        // The usual umask, which leaves files world-readable.
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
        let tmp = tempfile::tempdir().unwrap();
        let bin = tmp.path().join("provider");
        std::fs::write(&bin, "").unwrap();
        let tf = Terraform::new("terraform".into(), bin, tmp.path().join("work/jobs"));
        let session = tf.session(Uuid::new_v4(), BuildEnv::default()).unwrap();
        assert_eq!(mode(&tmp.path().join("work/jobs")), 0o700, "a new work root");
        assert_eq!(mode(&session.root), 0o700, "the job directory");
        assert_eq!(mode(session.template_dir()), 0o700);

        // A state file left world-readable (by an earlier step) is made private.
        let state = session.template_dir().join(STATE_FILE);
        std::fs::write(&state, "old").unwrap();
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&state, b"{\"version\": 4}").await.unwrap();
        assert_eq!(mode(&state), 0o600);
        assert_eq!(std::fs::read(&state).unwrap(), b"{\"version\": 4}");
        let plan = session.template_dir().join(PLAN_FILE);
        write_private(&plan, b"").await.unwrap();
        assert_eq!(mode(&plan), 0o600);
    }
}
