//! A provisioner worker: waits for jobs, runs one at a time through an
//! [`Executor`], heartbeats while it runs, forwards its log lines in order,
//! and turns cancel requests into a cancellation token.
//!
//! Waiting is event-driven (`NOTIFY` on enqueue) with a slow backup poll, so
//! an idle worker picks a job up within one round trip of its insertion.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use super::queue::{
    AcquiredJob, Heartbeat, JobLog, Queue, Tags, CHANNEL_JOB_CANCELED, CHANNEL_JOB_POSTED,
};
use crate::pubsub::Message;

/// How a job ended, from the executor's point of view. The executor records
/// success itself (with its results, in one transaction); the worker records
/// failures.
#[derive(Debug)]
pub enum Outcome {
    /// The executor completed the job (success or failure) itself.
    Recorded,
    /// The job failed: the message is for users, the code for machines.
    Failed { error: String, code: &'static str },
}

/// What an executor gets besides the job.
#[derive(Debug, Clone)]
pub struct JobContext {
    pub worker_id: Arc<str>,
    pub queue: Queue,
    /// Send output lines here; they are stored in order.
    pub logs: mpsc::Sender<JobLog>,
    /// Cancelled when a user cancels the job or the job is lost.
    pub cancel: CancellationToken,
}

impl JobContext {
    pub async fn log(&self, stage: &str, level: &str, output: impl Into<String>) {
        let _ = self
            .logs
            .send(JobLog {
                stage: stage.to_owned(),
                level: level.to_owned(),
                output: output.into(),
            })
            .await;
    }
}

/// Runs jobs of every type.
pub trait Executor: Send + Sync + 'static {
    fn execute(&self, job: AcquiredJob, ctx: JobContext) -> impl Future<Output = Outcome> + Send;
}

#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WorkerConfig {
    pub id: String,
    pub tags: Tags,
    pub heartbeat_interval: Duration,
    /// Backup poll when no notification arrives.
    pub poll_interval: Duration,
}

impl WorkerConfig {
    pub fn new(id: impl Into<String>) -> Self {
        WorkerConfig {
            id: id.into(),
            tags: Tags::new(),
            heartbeat_interval: Duration::from_secs(2),
            poll_interval: Duration::from_secs(5),
        }
    }
}

/// A running worker; dropping it stops the worker (and abandons its job,
/// which the stale-job detector then fails).
pub struct Worker {
    _task: AbortOnDropHandle<()>,
}

impl Worker {
    pub fn spawn<E: Executor>(queue: Queue, executor: Arc<E>, config: WorkerConfig) -> Worker {
        let task = tokio::spawn(run(queue, executor, config));
        Worker { _task: AbortOnDropHandle::new(task) }
    }
}

async fn run<E: Executor>(queue: Queue, executor: Arc<E>, config: WorkerConfig) {
    let mut posted = queue.pubsub.subscribe(CHANNEL_JOB_POSTED).await;
    let worker_id: Arc<str> = Arc::from(config.id.as_str());
    loop {
        match queue.acquire(&config.id, &config.tags).await {
            Ok(Some(job)) => {
                run_job(&queue, executor.as_ref(), &config, worker_id.clone(), job).await;
                continue;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(worker = %config.id, error = %e, "acquire failed"),
        }
        tokio::select! {
            m = posted.recv() => {
                if let Err(tokio::sync::broadcast::error::RecvError::Closed) = m {
                    return;
                }
            }
            _ = tokio::time::sleep(config.poll_interval) => {}
        }
    }
}

async fn run_job<E: Executor>(
    queue: &Queue,
    executor: &E,
    config: &WorkerConfig,
    worker_id: Arc<str>,
    job: AcquiredJob,
) {
    use tracing::Instrument;
    let span =
        tracing::info_span!("job", id = %job.id, kind = job.input.type_name(), worker = %config.id);
    run_job_inner(queue, executor, config, worker_id, job).instrument(span).await
}

async fn run_job_inner<E: Executor>(
    queue: &Queue,
    executor: &E,
    config: &WorkerConfig,
    worker_id: Arc<str>,
    job: AcquiredJob,
) {
    tracing::info!("acquired");
    let cancel = CancellationToken::new();
    let (log_tx, log_rx) = mpsc::channel(1024);
    let logger = AbortOnDropHandle::new(tokio::spawn(forward_logs(queue.clone(), job.id, log_rx)));
    let heart = AbortOnDropHandle::new(tokio::spawn(heartbeat(
        queue.clone(),
        job.id,
        worker_id.clone(),
        config.heartbeat_interval,
        cancel.clone(),
    )));
    let ctx =
        JobContext { worker_id: worker_id.clone(), queue: queue.clone(), logs: log_tx, cancel };
    let job_id = job.id;
    let outcome = executor.execute(job, ctx).await;
    // All senders are gone once the executor returns: the logger drains and ends.
    let _ = logger.await;
    drop(heart);
    if let Outcome::Failed { error, code } = outcome {
        tracing::info!(%error, code, "failed");
        if let Err(e) = queue.fail(job_id, &worker_id, &error, code).await {
            tracing::warn!(error = %e, "could not record the failure");
        }
    } else {
        tracing::info!("finished");
    }
}

async fn forward_logs(queue: Queue, job_id: uuid::Uuid, mut rx: mpsc::Receiver<JobLog>) {
    let mut batch = Vec::with_capacity(64);
    while rx.recv_many(&mut batch, 256).await > 0 {
        if let Err(e) = queue.append_logs(job_id, &batch).await {
            tracing::warn!(error = %e, lines = batch.len(), "storing job logs failed");
        }
        batch.clear();
    }
}

async fn heartbeat(
    queue: Queue,
    job_id: uuid::Uuid,
    worker_id: Arc<str>,
    every: Duration,
    cancel: CancellationToken,
) {
    let mut canceled = queue.pubsub.subscribe(CHANNEL_JOB_CANCELED).await;
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            m = canceled.recv() => match m {
                Ok(Message::Payload(id)) if id != job_id.to_string() => continue,
                _ => {}
            },
        }
        match queue.heartbeat(job_id, &worker_id).await {
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
