//! The HTTP API: `app(state)` builds the router that `coderd` serves and that
//! tests drive in process.

mod agent_auth;
mod agents;
pub mod apps;
mod auth;
mod coordinate;
mod error;
mod files;
mod jobs;
mod passwords;
mod provisionerd;
mod relay_verify;
mod templates;
mod throttle;
mod tokens;
mod users;
pub mod web;
mod workspaces;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post};
use axum::Router;
use chrono::Duration;
use sqlx::PgPool;
use url::Url;

use error::{ApiError, Json};

use codersdk::RelayMap;

use crate::meshpeer::MeshPeer;
use crate::metrics::Metrics;
use crate::provisionerd::Queue;
use crate::pubsub::Pubsub;

/// Settings the API needs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ApiConfig {
    pub access_url: Url,
    /// This process's own listener, for its mesh peer to coordinate through
    /// (`None`: the access URL).
    pub internal_url: Option<Url>,
    pub session_lifetime: Duration,
    pub default_token_lifetime: Duration,
    pub max_token_lifetime: Duration,
    /// Subdomain apps: `*.apps.example` (`--wildcard-access-url`).
    pub wildcard: Option<apps::subdomain::Wildcard>,
    /// Largest JSON request body accepted.
    pub max_body_bytes: usize,
    /// Largest file (template archive) upload accepted.
    pub max_file_bytes: usize,
    /// Peer coordination (limits, re-authorization, heartbeats).
    pub coordination: crate::coordination::Config,
    /// Who may open path apps, and their sandbox (`--dangerous-*path-app*`).
    pub path_apps: apps::resolve::PathAppConfig,
    /// The agent binary `GET /bin/coder-agent-<os>-<arch>` serves
    /// (`None`: `coder-agent` beside this executable).
    pub agent_binary: Option<std::path::PathBuf>,
}

impl ApiConfig {
    pub fn new(access_url: Url) -> Self {
        ApiConfig { access_url, ..Default::default() }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            access_url: Url::parse("http://127.0.0.1:3000").unwrap_or_else(|_| unreachable!()),
            internal_url: None,
            wildcard: None,
            session_lifetime: users::default_session_lifetime(),
            default_token_lifetime: Duration::days(30),
            max_token_lifetime: Duration::days(365),
            max_body_bytes: 1 << 20,
            max_file_bytes: 10 << 20,
            coordination: crate::coordination::Config::default(),
            path_apps: apps::resolve::PathAppConfig::default(),
            agent_binary: None,
        }
    }
}

/// Everything a handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    pub db: PgPool,
    pub config: Arc<ApiConfig>,
    pub metrics: Arc<Metrics>,
    pub pubsub: Pubsub,
    pub queue: Queue,
    /// The embedded relay, when this coderd runs one.
    pub relay: Option<derp::Server>,
    pub relay_map: Arc<RelayMap>,
    /// This process as a mesh peer: the app proxy and web terminal dial agents with it.
    pub mesh: MeshPeer,
    /// Login throttling and the bound on concurrent password hashing; in
    /// memory, per replica.
    passwords: Arc<passwords::Passwords>,
}

impl AppState {
    /// Must be called inside a tokio runtime (it starts the pubsub listener).
    pub fn new(db: PgPool, config: ApiConfig) -> Self {
        let pubsub = Pubsub::new(db.clone());
        let queue = Queue::new(db.clone(), pubsub.clone());
        AppState {
            db,
            config: Arc::new(config),
            metrics: Arc::default(),
            pubsub,
            queue,
            relay: None,
            relay_map: Arc::default(),
            mesh: MeshPeer::new(),
            passwords: Arc::default(),
        }
    }

    /// The URL this process's mesh peer coordinates through.
    pub fn internal_url(&self) -> &Url {
        self.config.internal_url.as_ref().unwrap_or(&self.config.access_url)
    }

    /// Serves `relay` at `/derp` and hands out `map`.
    pub fn with_relay(mut self, relay: Option<derp::Server>, map: RelayMap) -> Self {
        self.relay = relay;
        self.relay_map = Arc::new(map);
        self
    }
}

/// The router with every route and middleware.
pub fn app(state: AppState) -> Router {
    let api = Router::new()
        .route("/buildinfo", get(build_info))
        .route("/derp-map", get(relay_map))
        .route("/users/first", get(users::first_user_exists).post(users::create_first_user))
        .route("/users/login", post(users::login))
        .route("/users/logout", post(users::logout))
        .route("/users", get(users::list_users).post(users::create_user))
        .route("/users/{user}", get(users::user))
        .route("/users/{user}/keys/tokens", get(tokens::list).post(tokens::create))
        .route("/users/{user}/keys/{key}", delete(tokens::delete))
        .route("/users/{user}/workspaces", post(workspaces::create))
        .route("/users/{user}/workspace/{name}", get(workspaces::by_owner_and_name))
        .route("/files/{id}", get(files::download))
        .route("/templateversions", post(templates::create_version))
        .route("/templateversions/{id}", get(templates::version))
        .route("/templateversions/{id}/logs", get(templates::version_logs))
        .route("/templateversions/{id}/cancel", patch(templates::version_cancel))
        .route("/templateversions/{id}/resources", get(templates::version_resources))
        .route("/templateversions/{id}/parameters", get(templates::version_parameters))
        .route("/templates", get(templates::list_templates).post(templates::create_template))
        .route("/templates/{template}", get(templates::template))
        .route(
            "/templates/{template}/versions",
            get(templates::template_versions).patch(templates::update_active_version),
        )
        .route("/workspaceagents/me/manifest", get(agents::manifest))
        .route("/workspaceagents/me/lifecycle", post(agents::post_lifecycle))
        .route("/workspaceagents/me/logs", patch(agents::patch_logs))
        .route("/workspaceagents/me/stats", post(agents::post_stats))
        .route("/workspaceagents/me/metadata", post(agents::post_metadata))
        .route("/workspaceagents/me/app-health", patch(agents::patch_app_health))
        .route("/workspaceagents/{id}/logs", get(agents::agent_logs))
        .route("/workspaceagents/{id}/metadata", get(agents::metadata))
        .route("/workspaceagents/{id}/pty", get(web::terminal::pty))
        .route("/applications/auth-redirect", get(apps::subdomain::auth_redirect))
        .route("/workspaces", get(workspaces::list))
        .route("/workspaces/{id}", get(workspaces::get))
        .route(
            "/workspaces/{id}/builds",
            get(workspaces::list_builds).post(workspaces::create_build),
        )
        .route("/workspacebuilds/{id}", get(workspaces::build))
        .route("/workspacebuilds/{id}/logs", get(workspaces::build_logs))
        .route("/workspacebuilds/{id}/resources", get(workspaces::build_resources))
        .route("/workspacebuilds/{id}/cancel", patch(workspaces::cancel_build))
        .merge(coordinate::routes())
        .merge(provisionerd::routes())
        .route("/derp/verify-client", post(relay_verify::verify_client))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .fallback(api_not_found);
    // Uploads have their own, larger limit.
    let uploads = Router::new()
        .route("/files", post(files::upload))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .layer(DefaultBodyLimit::max(state.config.max_file_bytes));
    Router::new()
        .route("/healthz", get(|| async { "OK" }))
        .route("/derp", axum::routing::any(relay))
        .route("/bin/{name}", get(agents::agent_binary))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .nest("/api/v2", api.layer(DefaultBodyLimit::max(state.config.max_body_bytes)))
        .nest("/api/v2", uploads)
        .merge(web::routes())
        .fallback(web::fallback)
        // App hosts (subdomain apps) never reach the routes above.
        .layer(axum::middleware::from_fn_with_state(state.clone(), apps::subdomain::layer))
        .with_state(state)
}

async fn build_info(State(state): State<AppState>) -> Json<codersdk::BuildInfo> {
    Json(codersdk::BuildInfo {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        external_url: state.config.access_url.to_string(),
    })
}

async fn relay_map(State(state): State<AppState>) -> Json<RelayMap> {
    Json(state.relay_map.as_ref().clone())
}

/// The embedded relay: DERP-style upgrade or WebSocket on `/derp`.
async fn relay(State(state): State<AppState>, req: Request) -> Response {
    match &state.relay {
        Some(relay) => relay.handle_request(req).await.into_response(),
        None => ApiError::not_found("Relay")
            .detail("This coderd runs no embedded relay.")
            .into_response(),
    }
}

async fn api_not_found() -> ApiError {
    ApiError::not_found("Route")
}

/// Counts and times every request by its route template (not its path, so
/// ids don't explode the label space).
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let resp = next.run(req).await;
    state.metrics.observe(&method, &route, resp.status().as_u16(), start.elapsed());
    resp
}
