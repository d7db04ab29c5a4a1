//! The HTTP API: `app(state)` builds the router that `coderd` serves and that
//! tests drive in process.

mod auth;
mod error;
mod tokens;
mod users;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use chrono::Duration;
use sqlx::PgPool;
use url::Url;

use error::{ApiError, Json};

use crate::metrics::Metrics;

/// Settings the API needs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ApiConfig {
    pub access_url: Url,
    pub session_lifetime: Duration,
    pub default_token_lifetime: Duration,
    pub max_token_lifetime: Duration,
    /// Largest JSON request body accepted.
    pub max_body_bytes: usize,
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
            session_lifetime: users::default_session_lifetime(),
            default_token_lifetime: Duration::days(30),
            max_token_lifetime: Duration::days(365),
            max_body_bytes: 1 << 20,
        }
    }
}

/// Everything a handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    pub db: PgPool,
    pub config: Arc<ApiConfig>,
    pub metrics: Arc<Metrics>,
}

impl AppState {
    pub fn new(db: PgPool, config: ApiConfig) -> Self {
        AppState { db, config: Arc::new(config), metrics: Arc::default() }
    }
}

/// The router with every route and middleware.
pub fn app(state: AppState) -> Router {
    let api = Router::new()
        .route("/buildinfo", get(build_info))
        .route("/users/first", get(users::first_user_exists).post(users::create_first_user))
        .route("/users/login", post(users::login))
        .route("/users/logout", post(users::logout))
        .route("/users", get(users::list_users).post(users::create_user))
        .route("/users/{user}", get(users::user))
        .route("/users/{user}/keys/tokens", get(tokens::list).post(tokens::create))
        .route("/users/{user}/keys/{key}", delete(tokens::delete))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .fallback(api_not_found);
    Router::new()
        .route("/healthz", get(|| async { "OK" }))
        .route("/metrics", get(metrics))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .nest("/api/v2", api)
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .with_state(state)
}

async fn build_info(State(state): State<AppState>) -> Json<client::sdk::BuildInfo> {
    Json(client::sdk::BuildInfo {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        external_url: state.config.access_url.to_string(),
    })
}

async fn api_not_found() -> ApiError {
    ApiError::not_found("Route")
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render())
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
