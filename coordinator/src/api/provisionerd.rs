//! The provisioner daemon API: how external provisioners (`coderd
//! provisioner start`) take jobs and report on them, over HTTP only.
//!
//! Every route requires the pre-shared key in `Coder-Provisioner-Key`,
//! compared in constant time with the one `coderd server
//! --provisioner-psk-file` was started with (a [`ProvisionerKey`] request
//! extension); without a configured key the routes answer 404. Each call is
//! a thin wrapper over [`PgBackend`], so external workers get exactly the
//! queue semantics in-process ones do: a job is heartbeated, logged and
//! completed only under the lease that acquired it (else 409).
//!
//! External worker ids are namespaced (`external:<id>`) so an external
//! worker can never act on a lease of an in-process one.

use std::time::Duration;

use axum::extract::{DefaultBodyLimit, FromRequestParts, State};
use axum::handler::Handler;
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

use super::error::{ApiError, ApiResult, Json, Path};
use super::routes::{Access, Routes};
use super::AppState;
use crate::provisionerd::http::{
    AcquireRequest, AcquireResponse, AgentShutdownResponse, CompleteRequest, FailRequest,
    HeartbeatRequest, HeartbeatResponse, LogsRequest, MAX_ACQUIRE_WAIT, PROVISIONER_KEY_HEADER,
};
use crate::provisionerd::{BackendError, JobBackend, Lease, PgBackend, ProvisionerKey};

/// The `complete` and `fail` bodies carry terraform state.
const MAX_RESULT_BYTES: usize = 32 << 20;
const MAX_LOG_BYTES: usize = 4 << 20;
const MAX_WORKER_ID_CHARS: usize = 200;

pub(super) fn routes() -> Routes {
    use Access::Provisioner;
    let results = || DefaultBodyLimit::max(MAX_RESULT_BYTES);
    Routes::new()
        .get("/provisionerdaemons/check", Provisioner, check)
        .post("/provisionerdaemons/acquire", Provisioner, acquire)
        .post("/provisionerdaemons/jobs/{id}/heartbeat", Provisioner, heartbeat)
        .post("/provisionerdaemons/jobs/{id}/agent-shutdown", Provisioner, agent_shutdown)
        .post(
            "/provisionerdaemons/jobs/{id}/logs",
            Provisioner,
            logs.layer(DefaultBodyLimit::max(MAX_LOG_BYTES)),
        )
        .post("/provisionerdaemons/jobs/{id}/complete", Provisioner, complete.layer(results()))
        .post("/provisionerdaemons/jobs/{id}/fail", Provisioner, fail.layer(results()))
}

/// Proof that the request carries the deployment's provisioner key.
struct ExternalProvisioner;

impl FromRequestParts<AppState> for ExternalProvisioner {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, ApiError> {
        let Some(key) = parts.extensions.get::<ProvisionerKey>() else {
            return Err(ApiError::not_found("Provisioner daemon API").detail(
                "This coderd accepts no external provisioners; start it with --provisioner-psk-file.",
            ));
        };
        let presented = parts.headers.get(PROVISIONER_KEY_HEADER).map(|v| v.as_bytes());
        match presented {
            Some(p) if !p.is_empty() && key.matches(p) => Ok(ExternalProvisioner),
            _ => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "The provisioner key is missing or wrong.",
            )
            .detail(format!(
                "Send the key of coderd's --provisioner-psk-file in the {PROVISIONER_KEY_HEADER} header."
            ))),
        }
    }
}

fn backend(state: &AppState) -> PgBackend {
    PgBackend::new(state.queue.clone(), state.config.access_url.to_string())
}

fn lease(job_id: Uuid, worker_id: &str) -> ApiResult<Lease> {
    Ok(Lease { job_id, worker_id: namespaced(worker_id)? })
}

fn namespaced(worker_id: &str) -> ApiResult<String> {
    if worker_id.is_empty() || worker_id.chars().count() > MAX_WORKER_ID_CHARS {
        return Err(ApiError::bad_request(format!(
            "worker_id must be 1 to {MAX_WORKER_ID_CHARS} characters."
        )));
    }
    Ok(format!("external:{worker_id}"))
}

fn backend_error(e: BackendError) -> ApiError {
    ApiError::internal(e)
}

/// 204 when recorded, 409 when the lease is gone.
fn recorded(done: bool) -> Response {
    if done {
        StatusCode::NO_CONTENT.into_response()
    } else {
        ApiError::conflict("The job is no longer this worker's.")
            .detail(
                "It finished, was canceled, or was failed because the worker stopped heartbeating.",
            )
            .into_response()
    }
}

async fn check(_: ExternalProvisioner) -> StatusCode {
    StatusCode::NO_CONTENT
}

async fn acquire(
    _: ExternalProvisioner,
    State(state): State<AppState>,
    Json(req): Json<AcquireRequest>,
) -> ApiResult<Json<AcquireResponse>> {
    let worker_id = namespaced(&req.worker.worker_id)?;
    let wait = req.wait_ms.map_or(MAX_ACQUIRE_WAIT, Duration::from_millis).min(MAX_ACQUIRE_WAIT);
    let job = backend(&state)
        .acquire_within(&worker_id, &req.worker.tags, wait)
        .await
        .map_err(backend_error)?;
    // The worker knows itself by its own id.
    let job = job.map(|mut j| {
        j.lease.worker_id = req.worker.worker_id;
        j
    });
    Ok(Json(AcquireResponse { job }))
}

async fn heartbeat(
    _: ExternalProvisioner,
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    Json(req): Json<HeartbeatRequest>,
) -> ApiResult<Json<HeartbeatResponse>> {
    let lease = lease(id, &req.worker_id)?;
    let hb = backend(&state).heartbeat(&lease).await.map_err(backend_error)?;
    Ok(Json(HeartbeatResponse { state: hb }))
}

async fn agent_shutdown(
    _: ExternalProvisioner,
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    Json(req): Json<HeartbeatRequest>,
) -> ApiResult<Response> {
    let lease = lease(id, &req.worker_id)?;
    match backend(&state).shutdown_agents(&lease).await.map_err(backend_error)? {
        Some(agents) => Ok(Json(AgentShutdownResponse { agents }).into_response()),
        None => Ok(recorded(false)),
    }
}

async fn logs(
    _: ExternalProvisioner,
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    Json(req): Json<LogsRequest>,
) -> ApiResult<Response> {
    let lease = lease(id, &req.worker_id)?;
    let done = backend(&state).append_logs(&lease, &req.logs).await.map_err(backend_error)?;
    Ok(recorded(done))
}

async fn complete(
    _: ExternalProvisioner,
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    Json(req): Json<CompleteRequest>,
) -> ApiResult<Response> {
    let lease = lease(id, &req.worker_id)?;
    let done = backend(&state).complete(&lease, &req.output).await.map_err(backend_error)?;
    Ok(recorded(done))
}

async fn fail(
    _: ExternalProvisioner,
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    Json(req): Json<FailRequest>,
) -> ApiResult<Response> {
    let lease = lease(id, &req.worker_id)?;
    let done = backend(&state).fail(&lease, &req.failure).await.map_err(backend_error)?;
    Ok(recorded(done))
}
