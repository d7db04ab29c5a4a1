//! The `coder` command line. Each subcommand lives in its own module; this
//! one parses global flags and resolves the deployment URL and token.

mod audit;
mod build;
mod config_ssh;
mod confirm;
mod login;
mod netcheck;
mod output;
mod ping;
mod ports;
mod schedule;
mod speedtest;
mod ssh;
mod templates;
mod tokens;
mod tunnel;
mod update;
mod users;

use std::path::PathBuf;

use anyhow::{anyhow, Context};
use clap::{Parser, Subcommand};
use url::Url;

use crate::config::ConfigDir;
use codersdk::{Client, Transition};

pub(crate) use output::{out, outln};
pub use output::{stdout_closed, write_stdout, OutputFormat, StdoutError};

#[derive(Parser, Debug)]
#[command(name = "coder", version, about = "Reach your workspaces over a peer-to-peer mesh")]
pub struct Cli {
    /// Deployment URL (overrides the one saved by `coder login`).
    #[arg(long, global = true, env = "CODER_URL")]
    pub url: Option<Url>,
    /// Session or API token (overrides the one saved by `coder login`).
    #[arg(long = "token", global = true, env = "CODER_SESSION_TOKEN", hide_env_values = true)]
    pub session_token: Option<String>,
    /// Where the login is stored.
    #[arg(long, global = true, env = "CODER_CONFIG_DIR")]
    pub global_config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Log in to a deployment (creating its first user if it has none).
    Login(login::LoginArgs),
    /// Forget the stored session and revoke it on the server.
    Logout,
    /// Show who you are logged in as.
    Whoami(output::OutputArgs),
    /// Manage users (owners and user admins; list: also auditors).
    #[command(subcommand)]
    Users(users::UsersCommand),
    /// Show the audit log (owners and auditors).
    Audit(audit::AuditArgs),
    /// Manage personal API tokens.
    #[command(subcommand)]
    Tokens(tokens::TokensCommand),
    /// Manage templates.
    #[command(subcommand, alias = "template")]
    Templates(templates::TemplatesCommand),
    /// Create a workspace from a template.
    Create(build::CreateArgs),
    /// List workspaces.
    #[command(alias = "ls")]
    List {
        /// Everyone's workspaces (owners only).
        #[arg(short, long)]
        all: bool,
        #[command(flatten)]
        out: output::OutputArgs,
    },
    /// Show a workspace's resources and agents.
    Show {
        workspace: String,
        #[command(flatten)]
        out: output::OutputArgs,
    },
    /// Start a workspace.
    Start {
        workspace: String,
        #[arg(long = "parameter", value_name = "NAME=VALUE")]
        parameters: Vec<String>,
        #[arg(short, long)]
        yes: bool,
    },
    /// Stop a workspace.
    Stop {
        workspace: String,
        #[arg(short, long)]
        yes: bool,
    },
    /// Stop, then start a workspace.
    Restart {
        workspace: String,
        #[arg(short, long)]
        yes: bool,
    },
    /// Rebuild a workspace on its template's active version, keeping its
    /// parameter values.
    Update(update::UpdateArgs),
    /// Delete a workspace (terraform destroy).
    #[command(alias = "rm")]
    Delete {
        workspace: String,
        /// Don't ask for confirmation (needed when stdin is not a terminal).
        #[arg(short, long)]
        yes: bool,
    },
    /// Show or set a workspace's autostart schedule and autostop TTL.
    #[command(subcommand)]
    Schedule(schedule::ScheduleCommand),
    /// SSH into a workspace over the mesh.
    Ssh(ssh::SshArgs),
    /// Add your workspaces to ~/.ssh/config (OpenSSH, VS Code Remote-SSH).
    ConfigSsh(config_ssh::ConfigSshArgs),
    /// Open a workspace in an editor.
    #[command(subcommand)]
    Open(OpenCommand),
    /// Forward local TCP and UDP ports to a workspace over the mesh.
    #[command(alias = "port-forward")]
    Tunnel(tunnel::TunnelArgs),
    /// Measure round trips to a workspace and show the path they take.
    Ping(ping::PingArgs),
    /// Measure throughput to or from a workspace.
    Speedtest(speedtest::SpeedtestArgs),
    /// List the TCP ports listening in a workspace.
    Ports(ports::PortsArgs),
    /// Check UDP, NAT and relay latency from this machine.
    Netcheck(netcheck::NetcheckArgs),
    /// Show the latest build's logs.
    Logs {
        workspace: String,
        /// Follow until the build finishes.
        #[arg(short, long)]
        follow: bool,
    },
}

/// Everything a subcommand needs from the global flags.
pub struct Context_ {
    pub config: ConfigDir,
    pub url: Option<Url>,
    pub token: Option<String>,
}

impl Context_ {
    /// An authenticated client, or an error that says how to log in.
    pub fn client(&self) -> anyhow::Result<Client> {
        let url = self
            .url
            .clone()
            .ok_or_else(|| anyhow!("You are not logged in. Run `coder login <url>`."))?;
        let token = self
            .token
            .clone()
            .ok_or_else(|| anyhow!("You are not logged in to {url}. Run `coder login {url}`."))?;
        Ok(Client::new(url).with_token(token))
    }
}

/// Runs the CLI; returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = ConfigDir::new(cli.global_config.clone().unwrap_or_else(ConfigDir::default_path));
    let url = match cli.url.clone() {
        Some(u) => Some(u),
        None => match config.url().context("read stored URL")? {
            Some(s) => Some(
                Url::parse(&s)
                    .with_context(|| format!("stored URL {s:?} is invalid; run `coder login`"))?,
            ),
            None => None,
        },
    };
    let token = match cli.session_token.clone() {
        Some(t) => Some(t),
        None => config.session().context("read stored session")?,
    };
    let ctx = Context_ { config, url, token };
    match cli.command {
        Command::Login(args) => login::login(&ctx, args).await,
        Command::Logout => login::logout(&ctx).await,
        Command::Whoami(out) => login::whoami(&ctx, out).await,
        Command::Users(cmd) => users::run(&ctx, cmd).await,
        Command::Audit(args) => audit::run(&ctx, args).await,
        Command::Tokens(cmd) => tokens::run(&ctx, cmd).await,
        Command::Templates(cmd) => templates::run(&ctx, cmd).await,
        Command::Create(args) => build::create(&ctx, args).await,
        Command::List { all, out } => build::list(&ctx, all, out).await,
        Command::Show { workspace, out } => build::show(&ctx, &workspace, out).await,
        Command::Start { workspace, parameters, yes: _ } => {
            build::transition(&ctx, &workspace, Transition::Start, &parameters).await
        }
        Command::Stop { workspace, yes: _ } => {
            build::transition(&ctx, &workspace, Transition::Stop, &[]).await
        }
        Command::Restart { workspace, yes: _ } => {
            build::transition(&ctx, &workspace, Transition::Stop, &[]).await?;
            build::transition(&ctx, &workspace, Transition::Start, &[]).await
        }
        Command::Delete { workspace, yes } => build::delete(&ctx, &workspace, yes).await,
        Command::Update(args) => update::run(&ctx, args).await,
        Command::Schedule(cmd) => schedule::run(&ctx, cmd).await,
        Command::Logs { workspace, follow } => build::logs(&ctx, &workspace, follow).await,
        Command::Ssh(args) => ssh::run(&ctx, args).await,
        Command::ConfigSsh(args) => config_ssh::run(&ctx, args).await,
        Command::Tunnel(args) => tunnel::run(&ctx, args).await,
        Command::Ping(args) => ping::run(&ctx, args).await,
        Command::Speedtest(args) => speedtest::run(&ctx, args).await,
        Command::Ports(args) => ports::run(&ctx, args).await,
        Command::Netcheck(args) => netcheck::run(&ctx, args).await,
        Command::Open(OpenCommand::Vscode { workspace, dir, print }) => {
            open_vscode(&ctx, &workspace, dir.as_deref(), print).await
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum OpenCommand {
    /// Open the workspace in VS Code (Remote-SSH).
    Vscode {
        workspace: String,
        /// Directory to open (default: the agent's directory).
        dir: Option<String>,
        /// Print the URI instead of opening it.
        #[arg(long)]
        print: bool,
    },
}

async fn open_vscode(
    ctx: &Context_,
    workspace: &str,
    dir: Option<&str>,
    print: bool,
) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let agent = ssh::find_agent(&client, workspace, false, ssh::Wait::No).await?;
    let host =
        format!("{}{}", config_ssh::HOST_PREFIX, workspace.split('.').next().unwrap_or(workspace));
    let ssh_config = dirs::home_dir().unwrap_or_default().join(".ssh/config");
    let configured =
        std::fs::read_to_string(&ssh_config).is_ok_and(|s| s.contains(&format!("Host {host}\n")));
    if !configured {
        let mut args = config_ssh::ConfigSshArgs {
            ssh_config_file: ssh_config.to_string_lossy().into_owned(),
            yes: true,
            dry_run: false,
            remove: false,
        };
        args.yes = true;
        config_ssh::run(ctx, args).await?;
    }
    let dir = dir.map(str::to_owned).unwrap_or(agent.directory.clone());
    let dir = if dir.starts_with('/') { dir } else { format!("/{dir}") };
    let uri = format!("vscode://vscode-remote/ssh-remote+{host}{dir}");
    if print {
        outln!("{uri}")?;
        return Ok(());
    }
    let opened = std::process::Command::new("xdg-open")
        .arg(&uri)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !opened {
        outln!("Open this URI in VS Code: {uri}")?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_word_valued_flag_lists_its_choices_when_given_another() {
        for (args, choices) in [
            (
                &["coder", "templates", "init", "--id", "cloud"][..],
                "[possible values: local, netns, docker]",
            ),
            (&["coder", "list", "--output", "yaml"], "[possible values: table, json]"),
        ] {
            let e = Cli::try_parse_from(args).unwrap_err();
            assert_eq!(e.kind(), clap::error::ErrorKind::InvalidValue, "{args:?}");
            assert!(e.to_string().contains(choices), "{args:?}: {e}");
        }
        let parsed = Cli::try_parse_from(["coder", "templates", "init", "--id", "netns"]).unwrap();
        let Command::Templates(templates::TemplatesCommand::Init { id, .. }) = parsed.command
        else {
            panic!("not templates init: {parsed:?}")
        };
        assert_eq!(id, templates::Example::Netns);
    }
}
