//! `derper`: a standalone relay with a STUN server.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Parser;
use derp::server::{tls_acceptor_from_pem_files, ClientVerifier, RateLimit, UrlVerifier};
use derp::stun::StunServer;
use derp::{MeshKey, SecretKey, Server, ServerConfig};
use tracing_subscriber::EnvFilter;

/// mimalloc: with glibc's malloc, the buffers of a bulk QUIC transfer go back
/// to the kernel and fault in again; mimalloc keeps them, and a mesh stream
/// moves about a third more bytes on 2 cores (`bench quic`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A relay for the workspace mesh: forwards encrypted packets between
/// peers that cannot reach each other directly, and answers STUN.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address for HTTP(S): relay connections on /derp, /healthz, /metrics.
    #[arg(long, env = "DERPER_HTTP_ADDRESS", default_value = "0.0.0.0:3340")]
    http_address: SocketAddr,
    /// UDP address for STUN; the default `0.0.0.0` wildcard answers over
    /// IPv6 too (on `[::]`, where the host has IPv6).
    #[arg(long, env = "DERPER_STUN_ADDRESS", default_value = "0.0.0.0:3478")]
    stun_address: SocketAddr,
    /// Do not run the STUN server.
    #[arg(long, env = "DERPER_NO_STUN")]
    no_stun: bool,
    /// PEM certificate chain; with --tls-key serves HTTPS, else plain HTTP
    /// (put a TLS-terminating proxy in front).
    #[arg(long, env = "DERPER_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "DERPER_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// File holding the relay's secret key (hex); created if missing, so
    /// the relay keeps its key across restarts. Random per run if unset.
    #[arg(long, env = "DERPER_KEY_FILE")]
    key_file: Option<PathBuf>,
    /// File holding the region's mesh pre-shared key (64 hex digits).
    #[arg(long, env = "DERPER_MESH_PSK_FILE")]
    mesh_psk_file: Option<PathBuf>,
    /// Comma-separated relay URLs of the other relays of this region.
    #[arg(long, env = "DERPER_MESH_WITH", value_delimiter = ',')]
    mesh_with: Vec<String>,
    /// Per-client send limit in bytes per second (0: unlimited).
    #[arg(long, env = "DERPER_RATE_LIMIT", default_value_t = 0)]
    rate_limit: u32,
    /// Per-client burst for --rate-limit, in bytes.
    #[arg(long, env = "DERPER_RATE_BURST", default_value_t = 1 << 20)]
    rate_burst: u32,
    /// Admit only clients whose node key a coordinator vouches for: each
    /// client's key is checked with --verify-clients-url (fails closed).
    #[arg(
        long,
        env = "DERPER_VERIFY_CLIENTS",
        requires_all = ["verify_clients_url", "verify_clients_psk_file"]
    )]
    verify_clients: bool,
    /// coderd's access URL (the path /api/v2/derp/verify-client is added when
    /// the URL has none), or the full URL of a verification endpoint.
    #[arg(long, env = "DERPER_VERIFY_CLIENTS_URL", requires = "verify_clients")]
    verify_clients_url: Option<reqwest::Url>,
    /// File holding the secret shared with coderd's
    /// --derp-verify-clients-psk-file (16 characters or more).
    #[arg(long, env = "DERPER_VERIFY_CLIENTS_PSK_FILE", requires = "verify_clients")]
    verify_clients_psk_file: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let args = Args::parse();

    let mut config = ServerConfig::default();
    if let Some(path) = &args.key_file {
        config.secret_key = Some(load_or_create_key(path)?);
    }
    if let Some(path) = &args.mesh_psk_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading mesh key {}", path.display()))?;
        config.mesh_key = Some(
            text.parse::<MeshKey>()
                .with_context(|| format!("parsing mesh key {}", path.display()))?,
        );
    }
    config.mesh_with = args.mesh_with.iter().filter(|u| !u.is_empty()).cloned().collect();
    if args.rate_limit > 0 {
        config.rate_limit =
            Some(RateLimit { bytes_per_second: args.rate_limit, burst: args.rate_burst });
    }
    if args.verify_clients {
        config.verify_clients = Some(url_verifier(&args)?);
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(tls_acceptor_from_pem_files(cert, key)?),
        _ => None,
    };

    let server = Server::spawn(config).context("starting relay")?;
    let _stun = if args.no_stun {
        None
    } else {
        let stun = StunServer::spawn(args.stun_address)
            .await
            .with_context(|| format!("binding STUN on {}", args.stun_address))?;
        tracing::info!(addrs = ?stun.local_addrs(), "STUN listening");
        Some(stun)
    };
    let listener = tokio::net::TcpListener::bind(args.http_address)
        .await
        .with_context(|| format!("binding {}", args.http_address))?;
    tracing::info!(
        addr = %listener.local_addr()?,
        key = %server.public_key(),
        tls = tls.is_some(),
        "relay listening"
    );

    let serve = {
        let server = server.clone();
        async move {
            match tls {
                Some(tls) => server.serve_tls(listener, tls).await,
                None => server.serve(listener).await,
            }
        }
    };
    tokio::select! {
        result = serve => result.context("serving")?,
        () = shutdown_signal() => tracing::info!("shutting down"),
    }
    server.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}

/// The path coderd serves client verification at.
const VERIFY_CLIENT_PATH: &str = "/api/v2/derp/verify-client";

fn url_verifier(args: &Args) -> Result<ClientVerifier> {
    let (Some(url), Some(psk_file)) = (&args.verify_clients_url, &args.verify_clients_psk_file)
    else {
        bail!("--verify-clients needs --verify-clients-url and --verify-clients-psk-file");
    };
    let mut url = url.clone();
    if url.path() == "/" || url.path().is_empty() {
        url.set_path(VERIFY_CLIENT_PATH);
    }
    let secret = std::fs::read_to_string(psk_file)
        .with_context(|| format!("reading {}", psk_file.display()))?;
    let secret = secret.trim();
    if secret.chars().count() < 16 {
        bail!("{} holds a secret under 16 characters", psk_file.display());
    }
    tracing::info!(%url, "verifying relay clients with the coordinator");
    let verifier = UrlVerifier::new(url, secret.to_owned()).context("building the HTTP client")?;
    Ok(ClientVerifier::new(verifier))
}

fn load_or_create_key(path: &Path) -> Result<SecretKey> {
    match std::fs::read_to_string(path) {
        Ok(text) => text
            .trim()
            .parse::<SecretKey>()
            .with_context(|| format!("parsing relay key {}", path.display())),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let key = SecretKey::generate();
            write_private(path, &format!("{}\n", hex::encode(key.to_bytes())))
                .with_context(|| format!("writing relay key {}", path.display()))?;
            Ok(key)
        }
        Err(err) => bail!("reading relay key {}: {err}", path.display()),
    }
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(contents.as_bytes())
}
