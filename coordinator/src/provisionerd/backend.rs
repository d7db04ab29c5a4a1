//! The one seam between a worker and the place its jobs come from.
//!
//! A [`Worker`](super::Worker) runs the same code whether it lives inside
//! `coderd` ([`PgBackend`](super::PgBackend): the queue in Postgres) or on
//! another machine ([`HttpBackend`](super::HttpBackend): coderd's provisioner
//! daemon API, which itself calls a `PgBackend`).

use std::future::Future;

use futures::stream::BoxStream;
use uuid::Uuid;

use super::job::{AcquiredJob, AgentShutdown, Heartbeat, JobFailure, JobLog, JobOutput, Lease};
use super::queue::Tags;

/// Where jobs come from and where their results go.
///
/// Every method after `acquire` is accepted only under the job's [`Lease`]
/// and only while the job runs: `Ok(false)` (or [`Heartbeat::Lost`]) says the
/// job is no longer this worker's, e.g. because it was presumed dead.
pub trait JobBackend: Send + Sync + 'static {
    /// Takes the oldest pending job whose tags are a subset of `tags`,
    /// waiting a backend-defined while (a notification, a long poll) for one
    /// to be posted. `None`: nothing came; ask again.
    fn acquire(
        &self,
        worker_id: &str,
        tags: &Tags,
    ) -> impl Future<Output = Result<Option<AcquiredJob>, BackendError>> + Send;

    fn heartbeat(
        &self,
        lease: &Lease,
    ) -> impl Future<Output = Result<Heartbeat, BackendError>> + Send;

    /// Stores log lines, in order.
    fn append_logs(
        &self,
        lease: &Lease,
        logs: &[JobLog],
    ) -> impl Future<Output = Result<bool, BackendError>> + Send;

    /// Records the job's output and marks it succeeded, atomically.
    fn complete(
        &self,
        lease: &Lease,
        output: &JobOutput,
    ) -> impl Future<Output = Result<bool, BackendError>> + Send;

    /// Marks the job failed (keeping terraform's leftover state, if any).
    fn fail(
        &self,
        lease: &Lease,
        failure: &JobFailure,
    ) -> impl Future<Output = Result<bool, BackendError>> + Send;

    /// For a stop or delete build: asks the agents of the build it replaces
    /// to shut down (once; later calls only look) and returns their state.
    /// `None`: the job is no longer this worker's.
    fn shutdown_agents(
        &self,
        lease: &Lease,
    ) -> impl Future<Output = Result<Option<Vec<AgentShutdown>>, BackendError>> + Send;

    /// Yields whenever a cancel request for `job_id` may have arrived, so
    /// the worker heartbeats at once instead of at its next tick. Backends
    /// without such notifications never yield.
    fn cancel_notices(&self, job_id: Uuid) -> impl Future<Output = BoxStream<'static, ()>> + Send {
        let _ = job_id;
        async { Box::pin(futures::stream::pending()) as BoxStream<'static, ()> }
    }
}

/// Why a backend call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("cannot reach coderd: {0}")]
    Transport(#[from] reqwest::Error),
    #[error("coderd refused the provisioner key (401): check --psk-file against coderd's --provisioner-psk-file")]
    Unauthorized,
    #[error("coderd answered {status}: {message}")]
    Status { status: u16, message: String },
}

impl BackendError {
    /// Worth retrying: the network or the server had a bad moment.
    pub fn is_transient(&self) -> bool {
        match self {
            BackendError::Database(_) | BackendError::Transport(_) => true,
            BackendError::Status { status, .. } => *status >= 500 || *status == 429,
            BackendError::Unauthorized => false,
        }
    }
}
