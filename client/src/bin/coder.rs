//! `coder`: the user's CLI.

use clap::Parser;

fn main() {
    let cli = client::cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("CODER_LOG"))
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Runtime::new() {
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
