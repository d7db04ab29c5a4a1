//! A provisioner worker: asks its [`JobBackend`] for jobs, runs one at a
//! time through an [`Executor`], heartbeats while it runs, forwards its log
//! lines in order, turns cancel requests into a cancellation token, and hands
//! the output (or the failure) back to the backend.
//!
//! Waiting for jobs is the backend's business (`NOTIFY` for Postgres, a long
//! poll over HTTP), so an idle worker picks a job up within one round trip
//! of its insertion either way.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use super::backend::{BackendError, JobBackend};
use super::job::{AcquiredJob, Heartbeat, JobFailure, JobLog, JobOutput, Lease};
use super::queue::{JobInput, Queue, Tags};
use crate::provisioner::{LogLevel, Transition};

/// What an executor gets besides the job.
#[derive(Debug, Clone)]
pub struct JobContext {
    pub worker_id: Arc<str>,
    /// Send output lines here; they are stored in order.
    pub logs: mpsc::Sender<JobLog>,
    /// Cancelled when a user cancels the job or the job is lost.
    pub cancel: CancellationToken,
}

impl JobContext {
    pub async fn log(&self, stage: &str, level: LogLevel, output: impl Into<String>) {
        let _ =
            self.logs.send(JobLog { stage: stage.to_owned(), level, output: output.into() }).await;
    }
}

/// Runs jobs of every type: the output on success, else why it failed.
pub trait Executor: Send + Sync + 'static {
    fn execute(
        &self,
        job: &AcquiredJob,
        ctx: JobContext,
    ) -> impl Future<Output = Result<JobOutput, JobFailure>> + Send;
}

#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WorkerConfig {
    pub id: String,
    pub tags: Tags,
    pub heartbeat_interval: Duration,
    /// Pause after a failed `acquire` before asking again.
    pub retry_interval: Duration,
}

impl WorkerConfig {
    pub fn new(id: impl Into<String>) -> Self {
        WorkerConfig {
            id: id.into(),
            tags: Tags::new(),
            heartbeat_interval: Duration::from_secs(2),
            retry_interval: Duration::from_secs(5),
        }
    }
}

/// A running worker; dropping it stops the worker (and abandons its job,
/// which the stale-job detector then fails).
pub struct Worker {
    _task: AbortOnDropHandle<()>,
}

impl Worker {
    pub fn spawn<B: JobBackend, E: Executor>(
        backend: Arc<B>,
        executor: Arc<E>,
        config: WorkerConfig,
    ) -> Worker {
        let span = tracing::info_span!("worker", id = %config.id);
        let task =
            tokio::spawn(tracing::Instrument::instrument(run(backend, executor, config), span));
        Worker { _task: AbortOnDropHandle::new(task) }
    }
}

async fn run<B: JobBackend, E: Executor>(backend: Arc<B>, executor: Arc<E>, config: WorkerConfig) {
    let worker_id: Arc<str> = Arc::from(config.id.as_str());
    loop {
        match backend.acquire(&config.id, &config.tags).await {
            Ok(Some(job)) => {
                run_job(&backend, executor.as_ref(), &config, worker_id.clone(), job).await;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "acquire failed");
                tokio::time::sleep(config.retry_interval).await;
            }
        }
    }
}

async fn run_job<B: JobBackend, E: Executor>(
    backend: &Arc<B>,
    executor: &E,
    config: &WorkerConfig,
    worker_id: Arc<str>,
    job: AcquiredJob,
) {
    use tracing::Instrument;
    let span = tracing::info_span!("job", id = %job.lease.job_id, kind = job.input.type_name());
    run_job_inner(backend, executor, config, worker_id, job).instrument(span).await
}

async fn run_job_inner<B: JobBackend, E: Executor>(
    backend: &Arc<B>,
    executor: &E,
    config: &WorkerConfig,
    worker_id: Arc<str>,
    job: AcquiredJob,
) {
    tracing::info!("acquired");
    let cancel = CancellationToken::new();
    let (log_tx, log_rx) = mpsc::channel(1024);
    let lease = job.lease.clone();
    let logger =
        AbortOnDropHandle::new(tokio::spawn(forward_logs(backend.clone(), lease.clone(), log_rx)));
    let heart = AbortOnDropHandle::new(tokio::spawn(heartbeat(
        backend.clone(),
        lease.clone(),
        config.heartbeat_interval,
        cancel.clone(),
    )));
    let ctx = JobContext { worker_id, logs: log_tx, cancel };
    let destroys = matches!(job.input, JobInput::WorkspaceBuild { .. })
        && matches!(job.facts.transition, Transition::Stop | Transition::Delete);
    if destroys {
        super::shutdown::run(backend.as_ref(), &lease, &ctx).await;
    }
    let outcome = executor.execute(&job, ctx).await;
    drop(job);
    // All senders are gone once the executor returns: the logger drains and ends.
    let _ = logger.await;
    drop(heart);
    let recorded = match &outcome {
        Ok(output) => retry(|| backend.complete(&lease, output)).await,
        Err(failure) => {
            tracing::info!(error = %failure.error, code = %failure.code, "failed");
            retry(|| backend.fail(&lease, failure)).await
        }
    };
    match recorded {
        Ok(true) if outcome.is_ok() => tracing::info!("succeeded"),
        Ok(true) => {}
        Ok(false) => tracing::warn!("the job was no longer ours; its result was dropped"),
        Err(e) => tracing::warn!(error = %e, "could not record the job's result"),
    }
}

/// Retries transient failures a few times: a result lost to a network blip
/// would otherwise cost the whole job.
async fn retry<T, F, Fut>(mut f: F) -> Result<T, BackendError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, BackendError>>,
{
    let mut delay = Duration::from_millis(500);
    for _ in 0..5 {
        match f().await {
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e, "retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            other => return other,
        }
    }
    f().await
}

async fn forward_logs<B: JobBackend>(
    backend: Arc<B>,
    lease: Lease,
    mut rx: mpsc::Receiver<JobLog>,
) {
    let mut batch = Vec::with_capacity(64);
    while rx.recv_many(&mut batch, 256).await > 0 {
        if let Err(e) = retry(|| backend.append_logs(&lease, &batch)).await {
            tracing::warn!(error = %e, lines = batch.len(), "storing job logs failed");
        }
        batch.clear();
    }
}

async fn heartbeat<B: JobBackend>(
    backend: Arc<B>,
    lease: Lease,
    every: Duration,
    cancel: CancellationToken,
) {
    let mut notices = backend.cancel_notices(lease.job_id).await;
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            Some(()) = notices.next() => {}
        }
        match backend.heartbeat(&lease).await {
            Ok(Heartbeat::Running) => {}
            Ok(Heartbeat::CancelRequested) | Ok(Heartbeat::Lost) => cancel.cancel(),
            Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
        }
    }
}

/// Fails jobs whose worker stopped heartbeating, every `every`.
pub struct StaleJobDetector {
    _task: AbortOnDropHandle<()>,
}

impl StaleJobDetector {
    pub fn spawn(queue: Queue, timeout: Duration, every: Duration) -> StaleJobDetector {
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                if let Err(e) = queue.fail_stale(timeout).await {
                    tracing::warn!(error = %e, "stale job detector failed");
                }
            }
        });
        StaleJobDetector { _task: AbortOnDropHandle::new(task) }
    }
}
