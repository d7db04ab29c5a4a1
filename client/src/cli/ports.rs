//! `coder ports WS`: the TCP ports listening in a workspace, asked of its agent
//! over the mesh (`listening-ports` service), ready to forward with
//! `coder tunnel WS --tcp PORT`.

use anyhow::Context;
use mesh::Service;
use tokio::io::AsyncReadExt;

use super::output::{self, OutputArgs};
use super::ping::AgentLink;
use super::Context_;
use codersdk::ListeningPort;

/// The agent's answer is a small JSON array; anything larger is refused.
const MAX_ANSWER: u64 = 1 << 20;

#[derive(clap::Args, Debug)]
pub struct PortsArgs {
    /// `WORKSPACE` or `WORKSPACE.AGENT`.
    pub workspace: String,
    /// Use only the relay.
    #[arg(long, env = "CODER_SSH_RELAY_ONLY")]
    pub relay_only: bool,
    #[command(flatten)]
    pub out: OutputArgs,
}

pub async fn run(ctx: &Context_, args: PortsArgs) -> anyhow::Result<()> {
    let link = AgentLink::connect(ctx, &args.workspace, args.relay_only).await?;
    let (_send, recv) = link
        .conn
        .open(Service::ListeningPorts)
        .await
        .context("ask the agent for its listening ports")?;
    let mut answer = Vec::new();
    recv.take(MAX_ANSWER + 1)
        .read_to_end(&mut answer)
        .await
        .context("read the agent's listening ports (is the agent up to date?)")?;
    anyhow::ensure!(answer.len() as u64 <= MAX_ANSWER, "the agent's answer is too large");
    let ports: Vec<ListeningPort> =
        serde_json::from_slice(&answer).context("the agent's answer is not a port list")?;
    let rows = ports
        .iter()
        .map(|p| {
            vec![
                p.port.to_string(),
                p.network.clone(),
                p.addresses.join(","),
                p.process_name.clone(),
            ]
        })
        .collect();
    output::print(args.out.output, &ports, &["port", "network", "address", "process"], rows)?;
    Ok(())
}
