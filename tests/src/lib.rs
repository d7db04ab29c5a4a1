//! Support for end-to-end tests that start the real binaries: `coderd`,
//! `coder`, `coder-agent`. Binaries are found beside the test executable
//! (`target/<profile>/`); `cargo nextest run --workspace` builds them.

mod balancer;
mod session;
pub mod topology;
pub mod webdriver;

pub use balancer::Balancer;
pub use session::HashedSession;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{bail, Context};

/// Path of a workspace binary built for this test run.
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent().context("test executable has no directory")?.to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    if !path.is_file() {
        bail!(
            "{} is not built; run the tests with `cargo nextest run --workspace`",
            path.display()
        );
    }
    Ok(path)
}

/// A `coderd server` process on an ephemeral port. Killed on drop.
pub struct Coderd {
    pub child: Child,
    pub url: url::Url,
    pub data_dir: PathBuf,
    /// Everything it logged, kept for failure messages.
    pub log: PathBuf,
    /// Leave the `local` template's agents running when dropped.
    pub keep_agents: bool,
}

impl Coderd {
    /// Starts `coderd server` with an embedded Postgres under `data_dir`,
    /// and waits (up to 60 s) for it to announce its address.
    pub fn spawn(data_dir: &Path, extra: &[&str]) -> anyhow::Result<Coderd> {
        Self::spawn_on(data_dir, "127.0.0.1:0", extra)
    }

    /// A free loopback address to pass to [`Coderd::spawn_on`], so that a
    /// restarted coderd keeps its URL.
    pub fn free_addr() -> anyhow::Result<String> {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        Ok(l.local_addr()?.to_string())
    }

    /// Like [`Coderd::spawn`] on a given HTTP address.
    pub fn spawn_on(data_dir: &Path, http_address: &str, extra: &[&str]) -> anyhow::Result<Coderd> {
        Self::spawn_env(data_dir, http_address, extra, &[])
    }

    /// Like [`Coderd::spawn_on`], with more environment variables.
    pub fn spawn_env(
        data_dir: &Path,
        http_address: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Coderd> {
        let log = data_dir.join(format!("coderd-{}.log", std::process::id()));
        std::fs::create_dir_all(data_dir)?;
        let log_file = std::fs::OpenOptions::new().create(true).append(true).open(&log)?;
        let mut child = Command::new(binary("coderd")?)
            .arg("server")
            .args(["--http-address", http_address, "--stun-address", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .env_remove("CODER_PG_CONNECTION_URL")
            // Templates like `local` keep workspaces under ~: keep them here.
            .env("HOME", data_dir.join("home"))
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .context("spawn coderd")?;
        let stdout = child.stdout.take().context("coderd stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("coderd is listening on ") {
                    let url = rest.split(';').next().unwrap_or_default().to_owned();
                    let _ = tx.send(url);
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(url) => Ok(Coderd {
                child,
                url: url::Url::parse(&url)?,
                data_dir: data_dir.to_path_buf(),
                log,
                keep_agents: false,
            }),
            Err(_) => {
                let _ = child.kill();
                let logged = std::fs::read_to_string(&log).unwrap_or_default();
                bail!("coderd did not start within 60 s; its log:\n{logged}")
            }
        }
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn terminate(mut self) -> anyhow::Result<std::process::ExitStatus> {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id())?);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
        Ok(self.child.wait()?)
    }

    /// `kill -9`: no chance to clean up. Workspace agents keep running.
    pub fn kill9(mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        self.keep_agents = true;
        Ok(())
    }

    /// A `coder` command pointed at this deployment with its own config dir.
    pub fn coder(&self, config_dir: &Path) -> anyhow::Result<Command> {
        let mut cmd = Command::new(binary("coder")?);
        cmd.env("CODER_CONFIG_DIR", config_dir)
            .env_remove("CODER_URL")
            .env_remove("CODER_SESSION_TOKEN");
        Ok(cmd)
    }
}

impl Drop for Coderd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !self.keep_agents {
            kill_local_agents(&self.data_dir.join("home"));
        }
    }
}

/// Kills agents that the `local` template started under `home` (each leads
/// its own process group, recorded in a pid file).
pub fn kill_local_agents(home: &Path) {
    let Ok(dirs) = std::fs::read_dir(home.join("coder-workspaces")) else { return };
    for d in dirs.flatten() {
        let pid_file = d.path().join(".coder-agent/agent.pid");
        let Ok(text) = std::fs::read_to_string(&pid_file) else { continue };
        if let Ok(pid) = text.trim().parse::<i32>() {
            if pid > 1 {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// Runs a command and returns its stdout, failing with its stderr.
pub fn run_ok(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// Stops an embedded cluster left behind under `data_dir` (after `kill -9`).
pub fn stop_embedded_postgres(data_dir: &Path) {
    let pg = data_dir.join("postgres/data");
    if let Ok(bins) = coordinator::postgres::Binaries::find() {
        let mut cmd = Command::new(bins.bin_dir.join("pg_ctl"));
        cmd.args(["stop", "-m", "immediate", "-D"])
            .arg(&pg)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if nix::unistd::geteuid().is_root() {
            if let Ok(Some(u)) = nix::unistd::User::from_name("postgres") {
                use std::os::unix::process::CommandExt;
                cmd.uid(u.uid.as_raw()).gid(u.gid.as_raw());
            }
        }
        let _ = cmd.status();
    }
}

/// A handle to the embedded cluster of a coderd on `data_dir`, starting it
/// if it is stopped (so [`coordinator::postgres::Cluster::stop`] then this
/// restarts it under a running coderd, as an operator's restart would).
pub fn embedded_postgres(data_dir: &Path) -> anyhow::Result<coordinator::postgres::Cluster> {
    let config = coordinator::postgres::ClusterConfig {
        dir: data_dir.join("postgres"),
        unsafe_no_fsync: false,
    };
    Ok(coordinator::postgres::Cluster::start(&config)?)
}

/// A temporary directory that the `postgres` OS user can enter (when tests
/// run as root, the embedded cluster runs as `postgres`).
pub fn tempdir() -> anyhow::Result<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new().prefix("coder-e2e-").tempdir()?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    Ok(dir)
}

/// `coder login URL` flags that create the first user, `dev`.
pub const FIRST_USER: [&str; 6] = [
    "--first-user-username",
    "dev",
    "--first-user-email",
    "dev@example.com",
    "--first-user-password",
    "dev-password",
];

/// Logs in to `srv` as a fresh first user (config in `cfg`), pushes
/// `examples/templates/local` as template `local` and creates workspace
/// `name` from it, waiting for the build. The agent runs on this host.
pub fn local_workspace(srv: &Coderd, cfg: &Path, scratch: &Path, name: &str) -> anyhow::Result<()> {
    let coder = |args: &[&str]| -> anyhow::Result<String> {
        let mut c = srv.coder(cfg)?;
        c.args(args);
        run_ok(&mut c)
    };
    login_first_user(srv, cfg)?;
    let tpl = scratch.join("tpl-local");
    let tpl_s = tpl.to_str().context("non-UTF-8 path")?;
    coder(&["templates", "init", tpl_s, "--id", "local"])?;
    coder(&["templates", "push", "local", "-d", tpl_s, "--yes"])?;
    coder(&["create", name, "-t", "local", "--yes"])?;
    Ok(())
}

/// `coder login` to a fresh deployment as its first user, `dev` (an owner).
pub fn login_first_user(srv: &Coderd, cfg: &Path) -> anyhow::Result<String> {
    run_ok(srv.coder(cfg)?.args(["login", srv.url.as_str()]).args(FIRST_USER))
}

/// Whether every program is on PATH; prints why the caller skips if not.
pub fn require_programs(names: &[&str]) -> bool {
    match names.iter().find(|name| !has_program(name)) {
        Some(missing) => {
            coordinator::testutil::skip(&format!("{missing} is not installed"));
            false
        }
        None => true,
    }
}

/// Whether a program is on PATH.
pub fn has_program(name: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .is_ok_and(|o| o.status.success())
}
