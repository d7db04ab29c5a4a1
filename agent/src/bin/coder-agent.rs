//! `coder-agent`: runs inside a workspace.

use std::time::Duration;

use anyhow::Context;
use clap::Parser;

/// mimalloc: with glibc's malloc, the buffers of a bulk QUIC transfer go back
/// to the kernel and fault in again; mimalloc keeps them, and a mesh stream
/// moves about a third more bytes on 2 cores (`bench quic`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "coder-agent",
    version,
    about = "The workspace agent: SSH and port forwards over the mesh"
)]
struct Args {
    /// The deployment's access URL.
    #[arg(long, env = "CODER_AGENT_URL")]
    url: url::Url,
    /// The agent token (from `coder_agent.token`).
    #[arg(long, env = "CODER_AGENT_TOKEN", hide_env_values = true)]
    token: String,
    /// Use the relay only (no direct UDP paths).
    #[arg(long, env = "CODER_AGENT_RELAY_ONLY")]
    relay_only: bool,
    /// Tokio worker threads [default: 1 with two cores or fewer, else 2].
    #[arg(long, env = "CODER_AGENT_WORKER_THREADS")]
    worker_threads: Option<usize>,
    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, env = "CODER_AGENT_LOG_FILTER", default_value = "info")]
    log_filter: String,
}

/// How long the runtime's leftover work (a DNS lookup on a blocking thread)
/// may hold up the exit once the agent has stopped.
const RUNTIME_SHUTDOWN: Duration = Duration::from_secs(1);

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // First, while this is the only thread: take the token out of the
    // process environment, so that nothing the agent starts inherits it.
    let inherited = agent::environ::Inherited::capture();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&args.log_filter))
        .with_writer(std::io::stderr)
        .init();
    let mut config = agent::AgentConfig::new(args.url, args.token);
    config.relay_only = args.relay_only;
    config.inherited = inherited;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(codersdk::runtime::worker_threads(args.worker_threads, 2))
        .enable_all()
        .build()
        .context("start tokio runtime")?;
    let result =
        rt.block_on(
            async move { agent::run(config, shutdown_signal()).await.context("coder-agent") },
        );
    rt.shutdown_timeout(RUNTIME_SHUTDOWN);
    result
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) =
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}
