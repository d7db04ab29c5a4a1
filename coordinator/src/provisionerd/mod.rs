//! `provisionerd`, the provisioner daemon: the job queue in Postgres, the
//! workers that take jobs, the stale-job detector, and the executor that runs
//! template imports and workspace builds through the provisioner
//! ([`crate::provisioner::terraform`]).
//!
//! ```text
//!            ┌──────────── coderd ─────────────┐
//! Postgres ◀─┤ Queue ◀── PgBackend ◀── Worker  │   in-process workers
//!            │              ▲                  │
//!            │   /api/v2/provisionerdaemons    │
//!            └──────────────┬──────────────────┘
//!                           │ HTTP + pre-shared key
//!               HttpBackend ◀── Worker             `coderd provisioner start`
//! ```
//!
//! Before a stop or delete build runs terraform, the worker asks the agents
//! it will destroy to run their shutdown scripts and waits for them
//! ([`shutdown`]).
//!
//! A [`Worker`] runs one job at a time through an [`Executor`]
//! ([`TerraformExecutor`]) against a [`JobBackend`]: the same code inside
//! coderd and on another machine.

pub mod backend;
pub mod executor;
pub mod http;
pub mod job;
pub mod pg;
pub mod queue;
pub mod shutdown;
pub mod worker;

pub use backend::{BackendError, JobBackend};
pub use executor::{find_provider, find_terraform, ExecutorConfig, TerraformExecutor};
pub use http::{HttpBackend, KeyError, ProvisionerKey};
pub use job::{AcquiredJob, AgentShutdown, Heartbeat, JobFailure, JobLog, JobOutput, Lease};
pub use pg::PgBackend;
pub use queue::{JobInput, JobRow, NewJob, Queue, QueuedJob, Tags};
pub use worker::{Executor, JobContext, StaleJobDetector, Worker, WorkerConfig};

use std::path::PathBuf;
use std::sync::Arc;

/// The in-process provisioner daemons of a `coderd`: `n` workers sharing one
/// executor, taking jobs straight from Postgres.
pub struct Provisioners {
    workers: Vec<Worker>,
}

impl Provisioners {
    pub fn spawn(backend: PgBackend, config: ExecutorConfig, n: usize) -> Provisioners {
        Self::spawn_with_heartbeat(backend, config, n, WorkerConfig::new("").heartbeat_interval)
    }

    /// [`Provisioners::spawn`] with workers heartbeating their jobs every
    /// `heartbeat` (a stale-job timeout must be several of these).
    pub fn spawn_with_heartbeat(
        backend: PgBackend,
        config: ExecutorConfig,
        n: usize,
        heartbeat: std::time::Duration,
    ) -> Provisioners {
        let executor = TerraformExecutor::new(config);
        let backend = Arc::new(backend);
        let host = hostname();
        let workers = (0..n)
            .map(|i| {
                let mut config = WorkerConfig::new(format!("{host}-{}-{i}", std::process::id()));
                config.heartbeat_interval = heartbeat;
                Worker::spawn(backend.clone(), Arc::clone(&executor), config)
            })
            .collect();
        Provisioners { workers }
    }

    /// Stops the workers (their jobs are abandoned, as if the process died).
    pub fn stop_workers(&mut self) {
        self.workers.clear();
    }
}

fn hostname() -> String {
    nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default()
}

/// What `coderd provisioner start` needs: where coderd is, the key, and
/// how to run terraform here.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ExternalConfig {
    pub url: url::Url,
    pub key: ProvisionerKey,
    /// Jobs whose tags are a subset of these run here.
    pub tags: Tags,
    /// Names this daemon in job rows and logs; default: the host name.
    pub name: Option<String>,
    pub executor: ExecutorConfig,
}

impl ExternalConfig {
    pub fn new(url: url::Url, key: ProvisionerKey, executor: ExecutorConfig) -> Self {
        ExternalConfig { url, key, tags: Tags::new(), name: None, executor }
    }
}

/// An external provisioner daemon: one worker talking to coderd over HTTP.
/// Dropping it stops the worker; a job it was running is failed by coderd's
/// stale-job detector.
pub struct ExternalProvisioner {
    _worker: Worker,
    pub worker_id: String,
}

impl ExternalProvisioner {
    /// Starts the worker without checking the key first (see [`Self::start`]).
    pub fn spawn(config: ExternalConfig) -> Result<Self, BackendError> {
        let backend = HttpBackend::new(config.url, config.key)?;
        Ok(Self::spawn_with(backend, config.executor, config.tags, config.name))
    }

    /// Checks the key with coderd, then starts the worker.
    pub async fn start(config: ExternalConfig) -> Result<Self, BackendError> {
        let backend = HttpBackend::new(config.url, config.key)?;
        backend.check().await?;
        Ok(Self::spawn_with(backend, config.executor, config.tags, config.name))
    }

    fn spawn_with(
        backend: HttpBackend,
        executor: ExecutorConfig,
        tags: Tags,
        name: Option<String>,
    ) -> Self {
        let name = name.filter(|n| !n.is_empty()).unwrap_or_else(hostname);
        let worker_id = format!("{name}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let mut wc = WorkerConfig::new(worker_id.clone());
        wc.tags = tags;
        let worker = Worker::spawn(Arc::new(backend), TerraformExecutor::new(executor), wc);
        ExternalProvisioner { _worker: worker, worker_id }
    }
}

/// Default work directory of an external provisioner.
pub fn default_external_work_dir() -> PathBuf {
    crate::server::default_data_dir().join("provisioner-external")
}
