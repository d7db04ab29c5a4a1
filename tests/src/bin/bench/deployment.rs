//! A real deployment for the groups that need one (`ssh`, `jobs`, `agent`):
//! `coderd server` from the bench's own target directory (embedded Postgres,
//! relay, provisioners), a first user logged in with `coder login`, the
//! `local` template pushed, and workspace `ws1` created, the way
//! `tests/tests/e2e_ssh.rs` does it.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use codersdk::{Client, LoginWithPasswordRequest};
use tests::{run_ok, stop_embedded_postgres, tempdir, Coderd};

pub const WORKSPACE: &str = "ws1";
const USER: &str = "dev";
const EMAIL: &str = "dev@example.com";
const PASSWORD: &str = "dev-password";

/// The binaries the deployment groups run, found beside the bench binary.
pub const BINARIES: [&str; 5] =
    ["coderd", "coder", "coder-agent", "derper", "terraform-provider-coder"];

pub struct Deployment {
    pub tmp: tempfile::TempDir,
    pub data: PathBuf,
    pub srv: Option<Coderd>,
    /// `coder`'s config directory (session token).
    pub config: PathBuf,
    /// The `local` template as `coder templates init` wrote it.
    pub template: PathBuf,
    /// The SDK, logged in as the first user.
    pub api: Client,
    /// Wall time of `coder create ws1` (the first build: cold caches).
    pub first_create: Duration,
}

impl Deployment {
    pub async fn start() -> anyhow::Result<Self> {
        let tmp = tempdir()?;
        let data = tmp.path().join("data");
        let config = tmp.path().join("config");
        let srv = Coderd::spawn(&data, &[])?;
        let url = srv.url.clone();
        let mut dep = Self {
            template: tmp.path().join("tpl"),
            tmp,
            data,
            srv: Some(srv),
            config,
            api: Client::new(url.clone()),
            first_create: Duration::ZERO,
        };
        dep.coder_ok(&[
            "login",
            url.as_str(),
            "--first-user-username",
            USER,
            "--first-user-email",
            EMAIL,
            "--first-user-password",
            PASSWORD,
        ])
        .context("coder login")?;
        let login = Client::new(url.clone())
            .login_with_password(&LoginWithPasswordRequest {
                email: EMAIL.to_owned(),
                username: String::new(),
                password: PASSWORD.to_owned(),
            })
            .await
            .context("log in through the API")?;
        dep.api = Client::new(url).with_token(login.session_token);
        let tpl = dep.template.to_string_lossy().into_owned();
        dep.coder_ok(&["templates", "init", &tpl, "--id", "local"])?;
        dep.coder_ok(&["templates", "push", "local", "-d", &tpl, "--yes"])?;
        let start = Instant::now();
        dep.coder_ok(&["create", WORKSPACE, "-t", "local", "--yes"])?;
        dep.first_create = start.elapsed();
        dep.wait_agent_ready().await?;
        Ok(dep)
    }

    /// Waits until the agent of [`WORKSPACE`] reports lifecycle `ready`.
    /// `coder create` returns when the build is done, while the agent may still
    /// be in its init script (downloading itself), so the groups that look at
    /// the agent process or connect to it start from here.
    async fn wait_agent_ready(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let ws = self.api.workspace_by_owner_and_name("me", WORKSPACE).await?;
            let resources = self.api.workspace_build_resources(ws.latest_build.id).await?;
            let states: Vec<codersdk::LifecycleState> =
                resources.iter().flat_map(|r| &r.agents).map(|a| a.lifecycle_state).collect();
            if !states.is_empty() && states.iter().all(|s| *s == codersdk::LifecycleState::Ready) {
                return Ok(());
            }
            if states.iter().any(|s| {
                matches!(
                    s,
                    codersdk::LifecycleState::StartError | codersdk::LifecycleState::StartTimeout
                )
            }) {
                anyhow::bail!("the agent of {WORKSPACE} failed to start: {states:?}");
            }
            if Instant::now() > deadline {
                anyhow::bail!("the agent of {WORKSPACE} was not ready after 120 s: {states:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn srv(&self) -> anyhow::Result<&Coderd> {
        self.srv.as_ref().context("coderd is stopped")
    }

    /// A `coder` command for this deployment.
    pub fn coder(&self, args: &[&str]) -> anyhow::Result<Command> {
        let mut cmd = self.srv()?.coder(&self.config)?;
        cmd.args(args);
        Ok(cmd)
    }

    /// Runs `coder ARGS`; its stdout, or an error with its stderr.
    pub fn coder_ok(&self, args: &[&str]) -> anyhow::Result<String> {
        run_ok(&mut self.coder(args)?)
    }

    /// Directory of a workspace made by the `local` template.
    pub fn workspace_dir(&self, id: uuid::Uuid) -> PathBuf {
        self.data.join("home/coder-workspaces").join(id.to_string())
    }

    /// Stops coderd and its Postgres; the workspaces' agents die with it.
    pub fn shutdown(mut self) {
        if let Some(srv) = self.srv.take() {
            let _ = srv.terminate();
        }
        tests::kill_local_agents(&self.data.join("home"));
        stop_embedded_postgres(&self.data);
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        // `Coderd`'s own drop kills it and the agents; Postgres is ours to stop.
        drop(self.srv.take());
        stop_embedded_postgres(&self.data);
    }
}
