//! The job queue against a real Postgres: exactly-once delivery across
//! workers, tags, stale-worker detection, cancellation.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use codersdk::ProvisionerJobStatus;
use coordinator::provisioner::LogLevel;
use coordinator::provisionerd::queue::{self, CHANNEL_JOB_LOGS};
use coordinator::provisionerd::{
    AcquiredJob, Executor, JobBackend, JobContext, JobFailure, JobOutput, Lease, PgBackend, Queue,
    StaleJobDetector, Tags, Worker, WorkerConfig,
};
use coordinator::pubsub::Pubsub;
use coordinator::testutil::{self, TestServer};
use tokio::sync::mpsc;
use uuid::Uuid;

struct Fixture {
    _srv: TestServer,
    queue: Queue,
    backend: Arc<PgBackend>,
    file_id: Uuid,
    user_id: Uuid,
}

async fn fixture() -> Fixture {
    let srv = TestServer::start().await.unwrap();
    let owner = srv.owner().await.unwrap();
    let user_id = owner.me().await.unwrap().id;
    let file_id = testutil::empty_file(&srv.db.pool, user_id).await.unwrap();
    let queue = Queue::new(srv.db.pool.clone(), Pubsub::new(srv.db.pool.clone()));
    let backend = Arc::new(PgBackend::new(queue.clone(), srv.url.to_string()));
    Fixture { _srv: srv, queue, backend, file_id, user_id }
}

impl Fixture {
    /// Enqueues a template import (of an empty archive) with its version row.
    async fn enqueue(&self, tags: Tags) -> Uuid {
        testutil::enqueue_import(&self.queue.db, self.file_id, self.user_id, tags).await.unwrap()
    }

    /// Waits (on notifications, with a deadline) until the job is done.
    async fn wait_done(&self, job: Uuid, deadline: Duration) -> coordinator::provisionerd::JobRow {
        let mut rx = self.queue.pubsub.subscribe(CHANNEL_JOB_LOGS).await;
        tokio::time::timeout(deadline, async {
            loop {
                let row = self.queue.job(job).await.unwrap().unwrap();
                if row.status().is_done() {
                    return row;
                }
                let _ = rx.recv().await;
            }
        })
        .await
        .expect("job did not finish in time")
    }
}

/// Completes every job it gets and reports which worker ran it.
struct Recorder {
    ran: mpsc::UnboundedSender<(Uuid, String)>,
}

impl Executor for Recorder {
    async fn execute(&self, job: &AcquiredJob, ctx: JobContext) -> Result<JobOutput, JobFailure> {
        ctx.log("apply", LogLevel::Info, format!("running {}", job.lease.job_id)).await;
        let _ = self.ran.send((job.lease.job_id, ctx.worker_id.to_string()));
        Ok(JobOutput::Import { parameters: vec![], resources: vec![] })
    }
}

fn fast(id: &str) -> WorkerConfig {
    let mut c = WorkerConfig::new(id);
    c.heartbeat_interval = Duration::from_millis(200);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_jobs_across_four_workers_run_exactly_once() {
    let f = fixture().await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let exec = Arc::new(Recorder { ran: tx });
    let _workers: Vec<Worker> = (0..4)
        .map(|i| Worker::spawn(f.backend.clone(), exec.clone(), fast(&format!("w{i}"))))
        .collect();
    let mut ids = Vec::new();
    for _ in 0..200 {
        ids.push(f.enqueue(Tags::new()).await);
    }
    let mut seen: HashMap<Uuid, u32> = HashMap::new();
    let mut by_worker: HashMap<String, u32> = HashMap::new();
    tokio::time::timeout(Duration::from_secs(60), async {
        while seen.len() < 200 {
            let (id, w) = rx.recv().await.unwrap();
            *seen.entry(id).or_default() += 1;
            *by_worker.entry(w).or_default() += 1;
        }
    })
    .await
    .expect("not all jobs ran");
    for id in &ids {
        assert_eq!(seen.get(id), Some(&1), "job {id} ran {:?} times", seen.get(id));
    }
    assert!(by_worker.len() >= 2, "one worker took everything: {by_worker:?}");
    // The worker records each result after its executor returns.
    for id in &ids {
        assert_eq!(
            f.wait_done(*id, Duration::from_secs(30)).await.status(),
            ProvisionerJobStatus::Succeeded
        );
    }
    let done: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM provisioner_jobs WHERE completed_at IS NOT NULL AND error IS NULL",
    )
    .fetch_one(&f.queue.db)
    .await
    .unwrap();
    assert_eq!(done, 200);
    // Each worker stores a job's logs after the job's executor returns, so
    // the last lines may land just after the last "ran" message: wait for them.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let logs: i64 = sqlx::query_scalar("SELECT count(*) FROM provisioner_job_logs")
            .fetch_one(&f.queue.db)
            .await
            .unwrap();
        if logs == 200 {
            break;
        }
        assert!(logs < 200 && tokio::time::Instant::now() < deadline, "{logs} log lines");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn jobs_run_only_on_workers_with_matching_tags() {
    let f = fixture().await;
    let mut gpu = Tags::new();
    gpu.insert("gpu".into(), "true".into());
    let job = f.enqueue(gpu.clone()).await;
    assert!(f.queue.acquire("plain", &Tags::new()).await.unwrap().is_none());
    let got = f.queue.acquire("gpu-worker", &gpu).await.unwrap().unwrap();
    assert_eq!(got.id, job);
    assert!(f.queue.acquire("gpu-worker-2", &gpu).await.unwrap().is_none());

    // The backend hands out the job with its inputs loaded.
    let job = f.enqueue(gpu.clone()).await;
    let mut more = gpu.clone();
    more.insert("zone".into(), "a".into());
    let got = f.backend.acquire_within("w", &more, Duration::ZERO).await.unwrap().unwrap();
    assert_eq!(got.lease, Lease { job_id: job, worker_id: "w".into() });
    assert_eq!(got.facts.workspace_name, "import");
}

/// Blocks until cancelled, then reports how it ended.
struct Blocker {
    started: mpsc::UnboundedSender<Uuid>,
}

impl Executor for Blocker {
    async fn execute(&self, job: &AcquiredJob, ctx: JobContext) -> Result<JobOutput, JobFailure> {
        let _ = self.started.send(job.lease.job_id);
        ctx.cancel.cancelled().await;
        Err(JobFailure::new("canceled", "canceled"))
    }
}

#[tokio::test]
async fn a_dead_worker_fails_its_job_and_the_next_job_runs() {
    let f = fixture().await;
    let (tx, mut started) = mpsc::unbounded_channel();
    let worker =
        Worker::spawn(f.backend.clone(), Arc::new(Blocker { started: tx }), fast("doomed"));
    let job = f.enqueue(Tags::new()).await;
    assert_eq!(started.recv().await, Some(job));
    drop(worker); // the worker dies mid-job
    let _detector = StaleJobDetector::spawn(
        f.queue.clone(),
        Duration::from_secs(1),
        Duration::from_millis(100),
    );
    let row = f.wait_done(job, Duration::from_secs(30)).await;
    assert_eq!(row.status(), ProvisionerJobStatus::Failed);
    assert_eq!(row.error_code.as_deref(), Some("worker_lost"));
    // The dead worker cannot complete it late.
    let mut conn = f.queue.db.acquire().await.unwrap();
    assert!(!queue::Queue::complete_in(&mut conn, job, "doomed", None).await.unwrap());
    let lease = Lease { job_id: job, worker_id: "doomed".into() };
    let output = JobOutput::Import { parameters: vec![], resources: vec![] };
    assert!(!f.backend.complete(&lease, &output).await.unwrap());
    assert!(!f.backend.fail(&lease, &JobFailure::new("late", "late")).await.unwrap());
    assert_eq!(
        f.backend.heartbeat(&lease).await.unwrap(),
        coordinator::provisionerd::Heartbeat::Lost
    );

    let (tx, mut rx) = mpsc::unbounded_channel();
    let _w = Worker::spawn(f.backend.clone(), Arc::new(Recorder { ran: tx }), fast("healthy"));
    let next = f.enqueue(Tags::new()).await;
    assert_eq!(rx.recv().await.map(|r| r.0), Some(next));
    assert_eq!(
        f.wait_done(next, Duration::from_secs(30)).await.status(),
        ProvisionerJobStatus::Succeeded
    );
}

#[tokio::test]
async fn cancel_pending_and_running_jobs() {
    let f = fixture().await;
    // Pending: canceled at once, never runs.
    let pending = f.enqueue(Tags::new()).await;
    assert_eq!(f.queue.cancel(pending).await.unwrap(), Some(ProvisionerJobStatus::Canceled));
    assert_eq!(
        f.queue.job(pending).await.unwrap().unwrap().status(),
        ProvisionerJobStatus::Canceled
    );
    assert!(f.queue.acquire("w", &Tags::new()).await.unwrap().is_none());

    // Running: the worker sees the request and stops.
    let (tx, mut started) = mpsc::unbounded_channel();
    let _w = Worker::spawn(f.backend.clone(), Arc::new(Blocker { started: tx }), fast("w"));
    let running = f.enqueue(Tags::new()).await;
    assert_eq!(started.recv().await, Some(running));
    assert_eq!(f.queue.cancel(running).await.unwrap(), Some(ProvisionerJobStatus::Canceling));
    let row = f.wait_done(running, Duration::from_secs(30)).await;
    assert_eq!(row.status(), ProvisionerJobStatus::Canceled);
    // Canceling a finished job changes nothing.
    assert_eq!(f.queue.cancel(running).await.unwrap(), Some(ProvisionerJobStatus::Canceled));
    assert_eq!(f.queue.cancel(Uuid::new_v4()).await.unwrap(), None);
}
