//! `coder`: the user's CLI.

use clap::Parser;

/// mimalloc: with glibc's malloc, the buffers of a bulk QUIC transfer go back
/// to the kernel and fault in again; mimalloc keeps them, and a mesh stream
/// moves about a third more bytes on 2 cores (`bench quic`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit status of a process killed by SIGPIPE, as a shell reports it.
const SIGPIPE_STATUS: i32 = 128 + 13;

/// `coder … | head` closes our stdout early. Rust ignores SIGPIPE, so the
/// next `println!` panics with "Broken pipe": end quietly instead, as a
/// command killed by SIGPIPE would. Other panics keep the default report.
fn quiet_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.contains("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(SIGPIPE_STATUS);
        }
        default(info);
    }));
}

fn main() {
    quiet_broken_pipe();
    let cli = client::cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("CODER_LOG"))
        .with_writer(std::io::stderr)
        .init();
    // TOKIO_WORKER_THREADS overrides, as it does tokio's own default.
    let requested = std::env::var("TOKIO_WORKER_THREADS").ok().and_then(|n| n.parse().ok());
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(codersdk::runtime::worker_threads(requested, cores))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: start tokio runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(client::cli::run(cli)) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
