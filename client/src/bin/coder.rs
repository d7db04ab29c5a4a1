//! `coder`: the user's CLI.

use clap::Parser;

/// mimalloc: with glibc's malloc, the buffers of a bulk QUIC transfer go back
/// to the kernel and fault in again; mimalloc keeps them, and a mesh stream
/// moves about a third more bytes on 2 cores (`bench quic`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit status of a process killed by SIGPIPE, as a shell reports it: what
/// `coder … | head` ends with once `head` has read enough. Rust ignores
/// SIGPIPE, so the write fails with `BrokenPipe` instead, and every command
/// writes through `outln!`, which returns that error up to here.
const SIGPIPE_STATUS: i32 = 128 + 13;

fn main() {
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
        if client::cli::stdout_closed(&e) {
            std::process::exit(SIGPIPE_STATUS);
        }
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
