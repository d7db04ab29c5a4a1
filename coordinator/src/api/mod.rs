//! The HTTP API: `app(state)` builds the router that `coderd` serves and that
//! tests drive in process.

mod agent_auth;
mod agents;
pub mod apps;
pub mod audit;
mod auth;
mod coordinate;
mod error;
mod files;
mod jobs;
mod lifecycle;
pub mod oidc;
mod passwords;
mod port_share;
mod provisionerd;
mod relay_verify;
mod replicas;
mod routes;
mod schedule;
mod templates;
mod throttle;
mod tokens;
mod users;
pub mod web;
pub(crate) mod workspaces;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use chrono::Duration;
use sqlx::PgPool;
use url::Url;

pub(crate) use error::ApiError;
use error::Json;
pub use routes::Access;
use routes::Routes;

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
    /// The widest share level a dev-URL port (and a `coder_app`) opens at
    /// (`--max-port-share-level`); stored levels above it act as it.
    pub max_port_share: apps::resolve::Share,
    /// The agent binary `GET /bin/coder-agent-<os>-<arch>` serves
    /// (`None`: `coder-agent` beside this executable).
    pub agent_binary: Option<std::path::PathBuf>,
    /// Refuse password logins except the owners' (`--disable-password-auth`).
    pub disable_password_auth: bool,
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
            max_port_share: apps::resolve::Share::Authenticated,
            agent_binary: None,
            disable_password_auth: false,
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
    /// The relay map as this replica hands it out (`RelayMaps::current`).
    pub relay_map: crate::relay::RelayMaps,
    /// This process as a mesh peer: the app proxy and web terminal dial agents with it.
    pub mesh: MeshPeer,
    /// Login throttling and the bound on concurrent password hashing; in
    /// memory, per replica.
    passwords: Arc<passwords::Passwords>,
    /// The OpenID provider logins go through (`--oidc-issuer-url`).
    pub oidc: Option<Arc<crate::oidc::Provider>>,
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
            relay_map: Default::default(),
            mesh: MeshPeer::new(),
            passwords: Arc::default(),
            oidc: None,
        }
    }

    /// The URL this process's mesh peer coordinates through.
    pub fn internal_url(&self) -> &Url {
        self.config.internal_url.as_ref().unwrap_or(&self.config.access_url)
    }

    /// Logs users in through `provider` too.
    pub fn with_oidc(mut self, provider: crate::oidc::Provider) -> Self {
        self.oidc = Some(Arc::new(provider));
        self
    }

    /// Serves `relay` at `/derp` and hands out `map`.
    pub fn with_relay(
        mut self,
        relay: Option<derp::Server>,
        map: impl Into<crate::relay::RelayMaps>,
    ) -> Self {
        self.relay = relay;
        self.relay_map = map.into();
        self
    }
}

/// Every route, grouped by where it is mounted, before middleware.
struct Tree {
    /// At the root: health, the relay, the agent binary.
    root: Routes,
    /// Under `/api/v2`.
    api: Routes,
    /// Under `/api/v2`, with the larger upload limit.
    uploads: Routes,
    /// The dashboard, at the root.
    web: Routes,
}

const API: &str = "/api/v2";

fn tree() -> Tree {
    use Access::{Agent, Public, User};
    let api = Routes::new()
        .get("/buildinfo", Public, build_info)
        .get("/derp-map", Public, relay_map)
        .get("/replicas", User, replicas::list)
        .get("/users/first", Public, users::first_user_exists)
        .post("/users/first", Public, users::create_first_user)
        .post("/users/login", Public, users::login)
        .get("/users/authmethods", Public, oidc::auth_methods)
        .get("/users/oidc/start", Public, oidc::start)
        .get("/users/oidc/callback", Public, oidc::callback)
        .post("/users/logout", User, users::logout)
        .get("/users", User, users::list_users)
        .post("/users", User, users::create_user)
        .get("/users/{user}", User, users::user)
        .delete("/users/{user}", User, lifecycle::delete)
        .put("/users/{user}/status/suspend", User, lifecycle::suspend)
        .put("/users/{user}/status/activate", User, lifecycle::activate)
        .put("/users/{user}/roles", User, lifecycle::update_roles)
        .put("/users/{user}/password", User, lifecycle::update_password)
        .get("/audit", User, audit::list)
        .get("/users/{user}/keys/tokens", User, tokens::list)
        .post("/users/{user}/keys/tokens", User, tokens::create)
        .delete("/users/{user}/keys/{key}", User, tokens::delete)
        .post("/users/{user}/workspaces", User, workspaces::create)
        .get("/users/{user}/workspace/{name}", User, workspaces::by_owner_and_name)
        .get("/files/{id}", User, files::download)
        .post("/templateversions", User, templates::create_version)
        .get("/templateversions/{id}", User, templates::version)
        .get("/templateversions/{id}/logs", User, templates::version_logs)
        .patch("/templateversions/{id}/cancel", User, templates::version_cancel)
        .get("/templateversions/{id}/resources", User, templates::version_resources)
        .get("/templateversions/{id}/parameters", User, templates::version_parameters)
        .get("/templates", User, templates::list_templates)
        .post("/templates", User, templates::create_template)
        .get("/templates/{template}", User, templates::template)
        .get("/templates/{template}/versions", User, templates::template_versions)
        .patch("/templates/{template}/versions", User, templates::update_active_version)
        .patch("/templates/{template}", User, schedule::update_template)
        .get("/workspaceagents/me/manifest", Agent, agents::manifest)
        .post("/workspaceagents/me/lifecycle", Agent, agents::post_lifecycle)
        .patch("/workspaceagents/me/logs", Agent, agents::patch_logs)
        .post("/workspaceagents/me/stats", Agent, agents::post_stats)
        .post("/workspaceagents/me/metadata", Agent, agents::post_metadata)
        .patch("/workspaceagents/me/app-health", Agent, agents::patch_app_health)
        .get("/workspaceagents/me/graceful-shutdown", Agent, agents::graceful_shutdown)
        .get("/workspaceagents/{id}/logs", User, agents::agent_logs)
        .get("/workspaceagents/{id}/log-sources", User, agents::log_sources)
        .get("/workspaceagents/{id}/metadata", User, agents::metadata)
        .get("/workspaceagents/{id}/pty", User, web::terminal::pty)
        .get("/workspaceagents/{id}/listening-ports", User, web::ports::listening_ports)
        .get("/applications/auth-redirect", Access::Dashboard, apps::subdomain::auth_redirect)
        .get("/workspaces", User, workspaces::list)
        .get("/workspaces/{id}", User, workspaces::get)
        .get("/workspaces/watch", User, web::live::watch_all)
        .get("/workspaces/{id}/watch", User, web::live::watch_one)
        .get("/workspaces/{id}/builds", User, workspaces::list_builds)
        .post("/workspaces/{id}/builds", User, workspaces::create_build)
        .get("/workspaces/{id}/port-share", User, port_share::list)
        .post("/workspaces/{id}/port-share", User, port_share::upsert)
        .delete("/workspaces/{id}/port-share", User, port_share::delete)
        .put("/workspaces/{id}/ttl", User, schedule::update_ttl)
        .put("/workspaces/{id}/autostart", User, schedule::update_autostart)
        .put("/workspaces/{id}/extend", User, schedule::extend)
        .get("/workspacebuilds/{id}", User, workspaces::build)
        .get("/workspacebuilds/{id}/logs", User, workspaces::build_logs)
        .get("/workspacebuilds/{id}/resources", User, workspaces::build_resources)
        .get("/workspacebuilds/{id}/parameters", User, workspaces::build_parameter_values)
        .patch("/workspacebuilds/{id}/cancel", User, workspaces::cancel_build)
        .merge(coordinate::routes())
        .merge(provisionerd::routes())
        .post("/derp/verify-client", Access::RelayPsk, relay_verify::verify_client);
    let uploads = Routes::new().post("/files", User, files::upload);
    let root = Routes::new()
        .get("/healthz", Public, || async { "OK" })
        .any("/derp", Access::RelayNode, relay)
        .get("/bin/{name}", Public, agents::agent_binary);
    Tree { root, api, uploads, web: web::routes() }
}

/// Every route with the access it declares (`ANY`: every method).
pub fn route_table() -> Vec<(Method, String, Access)> {
    let t = tree();
    let routes = t.root.table("").chain(t.api.table(API)).chain(t.uploads.table(API));
    routes.chain(t.web.table("")).map(|r| (r.method, r.path, r.access)).collect()
}

/// The router with every route and middleware.
pub fn app(state: AppState) -> Router {
    let Tree { root, api, uploads, web } = tree();
    let observe = || axum::middleware::from_fn_with_state(state.clone(), observe);
    let api = api.into_router().route_layer(observe()).fallback(api_not_found);
    // Uploads have their own, larger limit.
    let uploads = uploads
        .into_router()
        .route_layer(observe())
        .layer(DefaultBodyLimit::max(state.config.max_file_bytes));
    root.into_router()
        .route_layer(observe())
        .nest(API, api.layer(DefaultBodyLimit::max(state.config.max_body_bytes)))
        .nest(API, uploads)
        .merge(web.into_router())
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
    Json(state.relay_map.current())
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
