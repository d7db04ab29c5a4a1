//! `coder ssh`: reach a workspace's SSH server over the mesh.
//!
//! `--stdio` joins the mesh, dials the agent and splices the SSH stream to
//! stdin/stdout: that is the `ProxyCommand` OpenSSH (and VS Code Remote-SSH)
//! runs. Without it, `coder ssh` runs the system `ssh` with that
//! `ProxyCommand`, so every OpenSSH feature (PTY, `-A`, `-R`, escape keys)
//! works as users know it.

use std::time::Duration;

use anyhow::{bail, Context};
use mesh::Service;
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

use super::build::resolve;
use super::Context_;
use codersdk::coordination::PeerKind;
use codersdk::meshnet::{MeshSession, SessionConfig};
use codersdk::{
    Client, LifecycleState, Transition, WorkspaceAgent, WorkspaceAgentStatus, WorkspaceStatus,
};

#[derive(clap::Args, Debug)]
pub struct SshArgs {
    /// `WORKSPACE` or `WORKSPACE.AGENT` (or `OWNER/WORKSPACE`).
    pub workspace: String,
    /// Act as an OpenSSH ProxyCommand: the SSH stream on stdin/stdout.
    #[arg(long)]
    pub stdio: bool,
    /// Whether to wait for the agent before connecting.
    #[arg(long, value_enum, default_value_t = Wait::Auto)]
    pub wait: Wait,
    /// Start the workspace first if it is stopped.
    #[arg(long)]
    pub start: bool,
    /// Forward the local SSH agent.
    #[arg(short = 'A', long = "forward-agent")]
    pub forward_agent: bool,
    /// Remote port forwards, as for `ssh -R`.
    #[arg(short = 'R', long = "remote-forward")]
    pub remote_forward: Vec<String>,
    /// Local port forwards, as for `ssh -L`.
    #[arg(short = 'L', long = "local-forward")]
    pub local_forward: Vec<String>,
    /// Say which path (direct or relay) the connection took.
    #[arg(short, long)]
    pub verbose: bool,
    /// Use only the relay.
    #[arg(long, env = "CODER_SSH_RELAY_ONLY")]
    pub relay_only: bool,
    /// A command to run instead of a shell.
    #[arg(last = true)]
    pub command: Vec<String>,
}

/// How long to wait for a workspace's agent before connecting to it.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Until its startup script has finished (or failed).
    Yes,
    /// Not at all: connect as soon as the agent is known.
    No,
    /// Until the agent is connected to the coordinator, and, when a script
    /// blocks logins (`start_blocks_login`, `startup_script_behavior =
    /// "blocking"`), until its start scripts have finished.
    Auto,
}

impl Wait {
    /// Whether an agent in this state is ready to connect to; `blocking`:
    /// its start scripts block logins.
    fn ready(
        self,
        status: WorkspaceAgentStatus,
        lifecycle: LifecycleState,
        blocking: bool,
    ) -> bool {
        match self {
            Wait::Yes => lifecycle.startup_done(),
            Wait::No => true,
            Wait::Auto => {
                status == WorkspaceAgentStatus::Connected && (!blocking || lifecycle.startup_done())
            }
        }
    }
}

/// The agent of a workspace to connect to, waiting for it as asked.
pub async fn find_agent(
    client: &Client,
    target: &str,
    start: bool,
    wait: Wait,
) -> anyhow::Result<WorkspaceAgent> {
    let (ws_name, agent_name) = match target.rsplit_once('.') {
        Some((w, a)) if !w.is_empty() && !a.is_empty() => (w, Some(a)),
        _ => (target, None),
    };
    let mut ws = resolve(client, ws_name).await?;
    if ws.latest_build.status != WorkspaceStatus::Running {
        if start && ws.latest_build.status.is_startable() {
            eprintln!("Starting workspace {:?}…", ws.name);
            super::build::transition_quiet(client, &ws, Transition::Start).await?;
            ws = resolve(client, ws_name).await?;
        } else {
            bail!(
                "Workspace {:?} is {}; start it with `coder start {}` (or pass --start).",
                ws.name,
                ws.latest_build.status,
                ws.name
            );
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let resources = client.workspace_build_resources(ws.latest_build.id).await?;
        let agents: Vec<WorkspaceAgent> = resources.into_iter().flat_map(|r| r.agents).collect();
        let agent = match agent_name {
            Some(n) => agents
                .into_iter()
                .find(|a| a.name == n)
                .with_context(|| format!("Workspace {:?} has no agent {n:?}.", ws.name))?,
            None => {
                let mut it = agents.into_iter();
                match (it.next(), it.next()) {
                    (Some(a), None) => a,
                    (None, _) => bail!("Workspace {:?} has no agent to connect to.", ws.name),
                    (Some(_), Some(_)) => bail!(
                        "Workspace {:?} has several agents; name one: WORKSPACE.AGENT",
                        ws.name
                    ),
                }
            }
        };
        let blocking = agent.startup_script_behavior == "blocking";
        if wait.ready(agent.status, agent.lifecycle_state, blocking) {
            return Ok(agent);
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "The agent of {:?} did not become ready ({} / {}).",
                ws.name,
                agent.status,
                agent.lifecycle_state
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Joins the mesh as a client of one agent and opens an SSH stream to it.
pub async fn dial(
    ctx: &Context_,
    client: &Client,
    agent: Uuid,
    relay_only: bool,
) -> anyhow::Result<(MeshSession, mesh::MeshConnection)> {
    let token = ctx.token.clone().context("not logged in")?;
    let map = client.relay_map().await?;
    let sc = SessionConfig::default().with_relay_only(relay_only);
    let session =
        MeshSession::join(client.url(), &token, PeerKind::SingleAgent(agent), &map, sc).await?;
    let conn = session.dial_agent(agent, Duration::from_secs(30)).await?;
    Ok((session, conn))
}

pub async fn run(ctx: &Context_, args: SshArgs) -> anyhow::Result<()> {
    let client = ctx.client()?;
    if args.stdio {
        let agent = find_agent(&client, &args.workspace, args.start, args.wait).await?;
        return stdio(ctx, &client, agent.id, args.relay_only, args.verbose).await;
    }
    // Check the workspace before handing over to ssh, for a clear error.
    find_agent(&client, &args.workspace, args.start, args.wait).await?;
    let exe = std::env::current_exe().context("locate the coder binary")?;
    let mut proxy = format!("{} ssh --stdio --wait no", shell_quote(&exe.to_string_lossy()));
    if args.relay_only {
        proxy.push_str(" --relay-only");
    }
    if args.verbose {
        proxy.push_str(" -v");
    }
    proxy.push(' ');
    proxy.push_str(&shell_quote(&args.workspace));
    let mut cmd = std::process::Command::new("ssh");
    cmd.args(["-o", &format!("ProxyCommand={proxy}")])
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
        ])
        .args(["-o", "ServerAliveInterval=15"]);
    if args.forward_agent {
        cmd.arg("-A");
    }
    for r in &args.remote_forward {
        cmd.args(["-R", r]);
    }
    for l in &args.local_forward {
        cmd.args(["-L", l]);
    }
    if let Some(url) = &ctx.url {
        cmd.env("CODER_URL", url.as_str());
    }
    if let Some(t) = &ctx.token {
        cmd.env("CODER_SESSION_TOKEN", t);
    }
    cmd.env("CODER_CONFIG_DIR", ctx.config.path());
    cmd.arg(format!("coder.{}", args.workspace.replace('/', "--")));
    cmd.args(&args.command);
    let status = cmd.status().context("run ssh (is the OpenSSH client installed?)")?;
    std::process::exit(status.code().unwrap_or(255));
}

async fn stdio(
    ctx: &Context_,
    client: &Client,
    agent: Uuid,
    relay_only: bool,
    verbose: bool,
) -> anyhow::Result<()> {
    let (session, conn) = dial(ctx, client, agent, relay_only).await?;
    if verbose {
        report_path(&session, &conn);
    }
    let (mut send, mut recv) = conn.open(Service::Ssh).await.context("open the SSH stream")?;
    let up = async {
        let mut stdin = tokio::io::stdin();
        match mesh::copy_to_stream(&mut stdin, &mut send).await {
            Ok(_) => drop(send.finish()),
            Err(_) => drop(send.reset(1u32.into())),
        }
    };
    let down = async {
        let mut stdout = tokio::io::stdout();
        let _ = mesh::copy_from_stream(&mut recv, &mut stdout).await;
        let _ = stdout.flush().await;
    };
    // OpenSSH ends its ProxyCommand with SIGHUP as it exits, often before
    // this process has seen stdin close.
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    // The session ends when the agent closes its side, when OpenSSH is done,
    // or when the connection goes (a withdrawn peer is closed at once, with
    // a reason).
    tokio::select! {
        _ = async { tokio::join!(up, down) } => {}
        _ = conn.quic().closed() => {}
        _ = hangup.recv() => {}
        _ = term.recv() => {}
    }
    // A withdrawn connection is closed already: say why at once (OpenSSH may
    // end this process any moment now). Otherwise close the connection so
    // the agent learns at once that this session ended (an idle timeout
    // would take 30 s, and the session would count as activity that holds
    // off the workspace's autostop meanwhile).
    let withdrawn = conn.withdrawn_reason();
    if withdrawn.is_none() {
        release_stdio();
        let closed = session.endpoint().close();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), closed).await;
    }
    drop(session);
    match withdrawn {
        Some(reason) => bail!("The connection to the workspace was closed: {reason}."),
        None => Ok(()),
    }
}

/// Lets go of the caller's stdin, stdout and stderr (each becomes
/// `/dev/null`) once the session is over: whoever reads our output through a
/// pipe (a shell pipeline, `$(coder ssh ws -- cmd)`, OpenSSH's own stderr)
/// sees it end now, not after the QUIC close below, which waits out the
/// draining period (three probe timeouts, ~90 ms on a local network).
fn release_stdio() {
    use std::os::fd::AsRawFd;
    let Ok(null) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null") else {
        return;
    };
    for fd in 0..=2 {
        let _ = nix::unistd::dup2(null.as_raw_fd(), fd);
    }
}

pub fn report_path(session: &MeshSession, conn: &mesh::MeshConnection) {
    match session.endpoint().destination(&conn.peer().key) {
        Some(mesh::Destination::Direct(addr)) => eprintln!("connected via direct ({addr})"),
        Some(mesh::Destination::Relay(_)) | None => eprintln!("connected via relay"),
        #[allow(unreachable_patterns)]
        Some(_) => eprintln!("connected"),
    }
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-:=@".contains(&b)) {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    #[test]
    fn wait_decides_readiness() {
        use LifecycleState::{Ready, Starting};
        use WorkspaceAgentStatus::{Connected, Connecting};
        assert!(Wait::No.ready(Connecting, Starting, true));
        assert!(!Wait::Auto.ready(Connecting, Ready, false));
        assert!(Wait::Auto.ready(Connected, Starting, false));
        assert!(!Wait::Auto.ready(Connected, Starting, true), "a blocking script holds auto");
        assert!(Wait::Auto.ready(Connected, Ready, true));
        assert!(!Wait::Yes.ready(Connected, Starting, false));
        assert!(Wait::Yes.ready(Connected, Ready, false));
    }

    #[test]
    fn wait_takes_one_of_its_words() {
        let parsed = Cli::try_parse_from(["coder", "ssh", "ws", "--wait", "yes"]).unwrap();
        let Command::Ssh(args) = parsed.command else { panic!("not ssh: {parsed:?}") };
        assert_eq!(args.wait, Wait::Yes);
        let default = Cli::try_parse_from(["coder", "ssh", "ws"]).unwrap();
        let Command::Ssh(args) = default.command else { panic!("not ssh") };
        assert_eq!(args.wait, Wait::Auto);
        let e = Cli::try_parse_from(["coder", "ssh", "ws", "--wait", "maybe"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::InvalidValue);
        let msg = e.to_string();
        assert!(msg.contains("[possible values: yes, no, auto]"), "{msg}");
    }
}
