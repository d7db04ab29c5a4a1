//! `coderd server`: database (embedded or external), migrations, the HTTP
//! API (plain HTTP, and HTTPS with `--tls-address`: [`tls`]), and an
//! orderly shutdown on SIGINT/SIGTERM.

mod tls;

pub use tls::TlsConfig;

use std::net::SocketAddr;
use std::path::PathBuf;

use sqlx::postgres::PgConnectOptions;
use tokio::net::TcpListener;
use url::Url;

use crate::api::{self, ApiConfig, AppState};
use crate::database as db;
use crate::postgres::{self, Cluster, ClusterConfig};
use crate::provisionerd::{
    find_provider, find_terraform, ExecutorConfig, PgBackend, ProvisionerKey, Provisioners,
    StaleJobDetector,
};
use crate::relay::{relay_map, EmbeddedRelay, PeerKeys, RelayMaps};
use crate::replicas;

/// What `coderd server` needs to run.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    pub http_address: SocketAddr,
    /// The URL users and agents reach this deployment at; defaults to
    /// `http://<http_address>`.
    pub access_url: Option<Url>,
    /// An external database; `None` runs the embedded cluster.
    pub postgres_url: Option<String>,
    pub data_dir: PathBuf,
    /// In-process provisioner workers (0: none; jobs wait for external ones).
    pub provisioner_daemons: usize,
    /// `terraform`; default: found on PATH.
    pub terraform_path: Option<PathBuf>,
    /// `terraform-provider-coder`; default: beside this binary.
    pub provider_path: Option<PathBuf>,
    /// A running job whose worker is silent this long is failed.
    pub job_stale_after: std::time::Duration,
    /// The pre-shared key external provisioners (`coderd provisioner start`)
    /// authenticate with; `None` refuses them.
    pub provisioner_key: Option<ProvisionerKey>,
    /// How often the autostart/autostop scheduler runs (`crate::scheduler`).
    pub autobuild_poll_interval: std::time::Duration,
    /// Run the embedded relay at `/derp`.
    pub relay_enabled: bool,
    /// The embedded STUN listener; `None` disables it.
    pub stun_address: Option<SocketAddr>,
    /// Extra relay regions (JSON, the format of `GET /api/v2/derp-map`).
    pub derp_config_path: Option<PathBuf>,
    /// Subdomain apps under `*.SUFFIX` (the access URL's scheme and port).
    pub wildcard: Option<crate::Wildcard>,
    /// Who may open path apps, and their sandbox (`--dangerous-*path-app*`).
    pub path_apps: crate::PathAppConfig,
    /// The widest share level of ports and apps (`--max-port-share-level`).
    pub max_port_share: crate::authz::Share,
    /// Serve HTTPS too; the access URL must then be `https` (default:
    /// `https://<tls address>`).
    pub tls: Option<TlsConfig>,
    /// Where `GET /metrics` is served (`None`: nowhere; never on the API).
    pub prometheus_address: Option<SocketAddr>,
    /// The secret `derper --verify-clients` presents to
    /// `POST /api/v2/derp/verify-client`; `None`: that route is absent.
    pub derp_verify_key: Option<crate::relay::RelayVerifyKey>,
    /// OpenID Connect login (`--oidc-*`); discovered at start.
    pub oidc: Option<crate::oidc::OidcConfig>,
    /// Refuse password logins except the owners' (`--disable-password-auth`).
    pub disable_password_auth: bool,
    /// Where the other replicas reach this one's relay
    /// (`--derp-server-relay-url`); default: the HTTP listener, when it is
    /// a concrete address serving plain HTTP.
    pub derp_server_relay_url: Option<Url>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            http_address: SocketAddr::from(([127, 0, 0, 1], 3000)),
            access_url: None,
            postgres_url: None,
            data_dir: default_data_dir(),
            provisioner_daemons: 3,
            terraform_path: None,
            provider_path: None,
            job_stale_after: std::time::Duration::from_secs(90),
            provisioner_key: None,
            autobuild_poll_interval: std::time::Duration::from_secs(2),
            relay_enabled: true,
            stun_address: Some(ServerConfig::default_stun_address(SocketAddr::from((
                [127, 0, 0, 1],
                3000,
            )))),
            derp_config_path: None,
            wildcard: None,
            path_apps: crate::PathAppConfig::default(),
            max_port_share: crate::authz::Share::Authenticated,
            tls: None,
            prometheus_address: None,
            derp_verify_key: None,
            oidc: None,
            disable_password_auth: false,
            derp_server_relay_url: None,
        }
    }
}

impl ServerConfig {
    /// The STUN listener when none is configured: port 3478 on the HTTP
    /// listener's host, so a coderd serving its API on loopback opens no
    /// public UDP port, and one on `0.0.0.0` answers STUN everywhere.
    pub fn default_stun_address(http_address: SocketAddr) -> SocketAddr {
        SocketAddr::new(http_address.ip(), 3478)
    }
}

/// `$XDG_DATA_HOME/coderd` for users; `/var/lib/coderd` for root, because
/// the `postgres` user that runs the embedded cluster cannot enter `/root`.
pub fn default_data_dir() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/lib/coderd");
    }
    dirs::data_dir().unwrap_or_else(std::env::temp_dir).join("coderd")
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    #[error(transparent)]
    Postgres(#[from] postgres::PostgresError),
    #[error("invalid --postgres-url: {0}")]
    PostgresUrl(sqlx::Error),
    #[error("cannot connect to the database: {0}")]
    Connect(sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Relay(#[from] crate::relay::RelayError),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("{0}")]
    Other(String),
}

/// Starts everything and serves until `shutdown` resolves; then stops the
/// embedded cluster if this process runs one.
pub async fn run(
    config: ServerConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let (options, cluster) = match &config.postgres_url {
        Some(url) => (url.parse::<PgConnectOptions>().map_err(ServerError::PostgresUrl)?, None),
        None => {
            let cfg =
                ClusterConfig { dir: config.data_dir.join("postgres"), unsafe_no_fsync: false };
            let cluster = tokio::task::spawn_blocking(move || Cluster::start(&cfg))
                .await
                .map_err(|e| ServerError::Other(e.to_string()))??;
            postgres::ensure_database(&cluster, postgres::DATABASE)
                .await
                .map_err(ServerError::Connect)?;
            (cluster.connect_options(postgres::DATABASE), Some(cluster))
        }
    };
    let result = serve(&config, options, shutdown).await;
    if let Some(cluster) = cluster {
        tracing::info!("stopping embedded postgres");
        let stopped = tokio::task::spawn_blocking(move || cluster.stop()).await;
        if let Ok(Err(e)) = stopped {
            tracing::warn!(error = %e, "embedded postgres did not stop cleanly");
        }
    }
    result
}

async fn serve(
    config: &ServerConfig,
    options: PgConnectOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let pool = db::connect(options, 20).await.map_err(ServerError::Connect)?;
    db::migrate(&pool).await?;
    let listener = TcpListener::bind(config.http_address)
        .await
        .map_err(|source| ServerError::Listen { addr: config.http_address, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| ServerError::Listen { addr: config.http_address, source })?;
    let https = match &config.tls {
        Some(t) => Some(HttpsListener::bind(t).await?),
        None => None,
    };
    let access_url = match (&config.access_url, &https) {
        (Some(u), _) => Ok(u.clone()),
        (None, Some(h)) => Url::parse(&format!("https://{}", h.local)),
        (None, None) => Url::parse(&format!("http://{local}")),
    }
    .map_err(|e| ServerError::Other(e.to_string()))?;
    if https.is_some() && access_url.scheme() != "https" {
        return Err(ServerError::Tls(format!(
            "the access URL {access_url} must be https:// when TLS is enabled"
        )));
    }
    // With plain HTTP redirecting, our own mesh peer (which coordinates over
    // plain HTTP: the certificate need not name 127.0.0.1) gets a loopback
    // listener of its own that serves without the redirect.
    let internal = match &https {
        Some(h) if h.redirect_http => {
            let addr = SocketAddr::new(loopback(local), 0);
            let l = TcpListener::bind(addr)
                .await
                .map_err(|source| ServerError::Listen { addr, source })?;
            Some(l)
        }
        _ => None,
    };
    let internal_local = match &internal {
        Some(l) => l.local_addr().map_err(|source| ServerError::Listen { addr: local, source })?,
        None => local,
    };
    let mut api_config = ApiConfig::new(access_url.clone());
    api_config.internal_url = Some(internal_url(internal_local)?);
    api_config.wildcard = config.wildcard.clone();
    api_config.path_apps = config.path_apps;
    api_config.max_port_share = config.max_port_share;
    api_config.disable_password_auth = config.disable_password_auth;
    let mut state = AppState::new(pool.clone(), api_config);
    if let Some(oidc) = &config.oidc {
        let provider = crate::oidc::Provider::discover(oidc.clone())
            .await
            .map_err(|e| ServerError::Other(format!("OpenID Connect (--oidc-issuer-url): {e}")))?;
        tracing::info!(issuer = %provider.metadata.issuer, "OpenID Connect login enabled");
        state = state.with_oidc(provider);
    }
    let embedded = if config.relay_enabled {
        // Only keys of connected coordination peers may use it; the other
        // replicas' relays mesh with it using the deployment's key.
        let verifier = PeerKeys::verifier(state.db.clone(), state.pubsub.clone());
        let mesh_key =
            replicas::relay_mesh_key(&pool).await.map_err(|e| ServerError::Other(e.to_string()))?;
        Some(
            EmbeddedRelay::spawn_meshed(config.stun_address, Some(verifier), Some(mesh_key))
                .await?,
        )
    } else {
        None
    };
    let registry =
        register_replica(config, &state, embedded.is_some(), local, https.is_some()).await?;
    let _relay_mesh = embedded
        .as_ref()
        .map(|r| replicas::RelayMesh::spawn(r.server.clone(), registry.id(), registry.live()));
    let map = relay_map(&access_url, embedded.as_ref(), config.derp_config_path.as_deref())?;
    let map = RelayMaps::per_replica(map, registry.id(), registry.live(), &access_url);
    if let Some(stun) = embedded.as_ref().and_then(|r| r.stun.as_ref()) {
        tracing::info!(addrs = ?stun.local_addrs(), "STUN listening");
    }
    let state = state.with_relay(embedded.as_ref().map(|r| r.server.clone()), map);
    let _prometheus = match config.prometheus_address {
        Some(addr) => {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| ServerError::Listen { addr, source })?;
            let bound =
                listener.local_addr().map_err(|source| ServerError::Listen { addr, source })?;
            tracing::info!(%bound, "prometheus metrics at /metrics");
            let relay = embedded.as_ref().map(|r| r.server.clone());
            let serve = crate::metrics::serve(listener, state.metrics.clone(), relay);
            Some(tokio_util::task::AbortOnDropHandle::new(tokio::spawn(serve)))
        }
        None => None,
    };
    let _provisioners = start_provisioners(config, &state, &access_url);
    // Whoever runs the jobs (in-process or external workers), a job whose
    // worker went silent must end.
    let stale = config.job_stale_after;
    let _detector = StaleJobDetector::spawn(
        state.queue.clone(),
        stale,
        (stale / 4).max(std::time::Duration::from_millis(100)),
    );
    let _scheduler =
        crate::scheduler::Scheduler::spawn(state.clone(), config.autobuild_poll_interval);
    let mut app = api::app(state).layer(axum::Extension(registry.clone()));
    if let Some(key) = &config.provisioner_key {
        tracing::info!("external provisioners may connect (pre-shared key configured)");
        app = app.layer(axum::Extension(key.clone()));
    }
    if let Some(key) = &config.derp_verify_key {
        tracing::info!("derpers may verify relay clients (pre-shared key configured)");
        app = app.layer(axum::Extension(key.clone()));
    }
    tracing::info!(%local, %access_url, "coderd listening");
    println!("coderd is listening on http://{local}; access URL {access_url}");
    if let Some(h) = &https {
        tracing::info!(local = %h.local, "coderd listening for HTTPS");
        println!("coderd is listening on https://{} (TLS)", h.local);
    }
    println!("Log in with: coder login {access_url}");
    let listeners = Listeners { http: listener, https, internal };
    serve_all(listeners, app, &access_url, config, shutdown).await?;
    registry.shutdown().await;
    if let Some(relay) = &embedded {
        // Tell relay clients to reconnect elsewhere (or to us, after a restart).
        relay.server.shutdown().await;
    }
    pool.close().await;
    Ok(())
}

/// Records this process in the replica registry. Its relay URL is
/// `--derp-server-relay-url`, else the plain HTTP listener when that is a
/// concrete address (a wildcard one names no host the others can dial).
async fn register_replica(
    config: &ServerConfig,
    state: &AppState,
    relay: bool,
    local: SocketAddr,
    https: bool,
) -> Result<replicas::ReplicaRegistry, ServerError> {
    let relay_url = match (&config.derp_server_relay_url, relay) {
        (_, false) => None,
        (Some(url), true) => Some(replicas::relay_endpoint(url.clone())),
        (None, true) if local.ip().is_unspecified() || https => {
            tracing::warn!("no --derp-server-relay-url: other replicas cannot mesh with this relay (peers homed on different replicas then meet only directly)");
            None
        }
        (None, true) => Url::parse(&format!("http://{local}/derp")).ok(),
    };
    let replica = replicas::ReplicaConfig { relay_url, ..replicas::ReplicaConfig::default() };
    replicas::ReplicaRegistry::spawn(state.db.clone(), state.pubsub.clone(), replica)
        .await
        .map_err(ServerError::Connect)
}

/// The HTTPS listener and what its responses carry.
struct HttpsListener {
    listener: tls::TlsListener,
    local: SocketAddr,
    hsts: Option<axum::http::HeaderValue>,
    redirect_http: bool,
}

impl HttpsListener {
    async fn bind(config: &TlsConfig) -> Result<HttpsListener, ServerError> {
        let hsts = config.hsts().map_err(ServerError::Tls)?;
        let acceptor =
            derp::server::tls_acceptor_from_pem_files(&config.cert_file, &config.key_file)
                .map_err(|e| ServerError::Tls(e.to_string()))?;
        let tcp = TcpListener::bind(config.address)
            .await
            .map_err(|source| ServerError::Listen { addr: config.address, source })?;
        let listener = tls::TlsListener::new(tcp, acceptor)
            .map_err(|source| ServerError::Listen { addr: config.address, source })?;
        let local = axum::serve::Listener::local_addr(&listener)
            .map_err(|source| ServerError::Listen { addr: config.address, source })?;
        Ok(HttpsListener { listener, local, hsts, redirect_http: config.redirect_http })
    }
}

/// What `coderd server` listens on.
struct Listeners {
    http: TcpListener,
    https: Option<HttpsListener>,
    /// Loopback, for our own mesh peer, when `http` redirects.
    internal: Option<TcpListener>,
}

/// Serves `app` on every listener until `shutdown`. With HTTPS, plain HTTP
/// redirects to it (unless turned off) and only HTTPS responses carry
/// `Strict-Transport-Security`.
async fn serve_all(
    listeners: Listeners,
    app: axum::Router,
    access_url: &Url,
    config: &ServerConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    use axum::serve::ListenerExt;
    let stop = tokio_util::sync::CancellationToken::new();
    let trigger = stop.clone();
    let _shutdown = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
        shutdown.await;
        trigger.cancel();
    }));
    let failed =
        |what: &'static str| move |e: std::io::Error| ServerError::Other(format!("{what}: {e}"));
    let Listeners { http, https, internal } = listeners;
    let http_app = if https.as_ref().is_some_and(|h| h.redirect_http) {
        let redirect = std::sync::Arc::new(tls::HttpsRedirect {
            access_url: access_url.clone(),
            wildcard: config.wildcard.clone(),
        });
        axum::Router::new().fallback(tls::redirect_to_https).with_state(redirect)
    } else {
        app.clone()
    };
    let http = axum::serve(http, http_app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(stop.clone().cancelled_owned());
    let http = async { http.await.map_err(failed("http server")) };
    let internal = async {
        let Some(l) = internal else { return Ok(()) };
        axum::serve(l, app.clone().into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(stop.clone().cancelled_owned())
            .await
            .map_err(failed("internal http server"))
    };
    let https = async {
        let Some(h) = https else { return Ok(()) };
        let mut app = app.clone();
        if let Some(value) = h.hsts {
            app = app.layer(axum::middleware::from_fn_with_state(value, tls::add_hsts));
        }
        // `tap_io` only to get axum's `ConnectInfo<SocketAddr>` for a
        // listener of our own.
        let listener = h.listener.tap_io(|_: &mut tls::Conn| {});
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(stop.clone().cancelled_owned())
            .await
            .map_err(failed("https server"))
    };
    tokio::try_join!(http, https, internal)?;
    Ok(())
}

/// The loopback address of `local`'s family.
fn loopback(local: SocketAddr) -> std::net::IpAddr {
    match local {
        SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
        SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
    }
}

/// The loopback URL of our own listener (for our mesh peer): a wildcard
/// bind address is reached through the loopback of its family.
fn internal_url(local: SocketAddr) -> Result<Url, ServerError> {
    let mut addr = local;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    Url::parse(&format!("http://{addr}")).map_err(|e| ServerError::Other(e.to_string()))
}

fn start_provisioners(
    config: &ServerConfig,
    state: &AppState,
    access_url: &Url,
) -> Option<Provisioners> {
    if config.provisioner_daemons == 0 {
        return None;
    }
    let Some(terraform) = config.terraform_path.clone().or_else(find_terraform) else {
        tracing::warn!("terraform is not on PATH: no provisioners run, builds will wait (install terraform or pass --terraform-path)");
        return None;
    };
    let Some(provider) = config.provider_path.clone().or_else(find_provider) else {
        tracing::warn!("terraform-provider-coder is not beside coderd: no provisioners run (pass --provider-path)");
        return None;
    };
    let work_root = config.data_dir.join("provisioner");
    let exec = ExecutorConfig::new(terraform, provider, work_root);
    let backend = PgBackend::new(state.queue.clone(), access_url.to_string());
    tracing::info!(n = config.provisioner_daemons, "starting provisioner daemons");
    Some(Provisioners::spawn(backend, exec, config.provisioner_daemons))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stun_follows_the_http_host_by_default() {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 3000));
        assert_eq!(ServerConfig::default().http_address, loopback);
        assert_eq!(
            ServerConfig::default().stun_address,
            Some("127.0.0.1:3478".parse().unwrap_or(loopback))
        );
        let any = SocketAddr::from(([0, 0, 0, 0], 8080));
        assert_eq!(ServerConfig::default_stun_address(any), SocketAddr::from(([0, 0, 0, 0], 3478)));
        let v6: SocketAddr = "[::1]:3000".parse().unwrap_or(any);
        assert_eq!(ServerConfig::default_stun_address(v6).to_string(), "[::1]:3478");
    }
}
