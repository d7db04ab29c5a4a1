//! Provisioning: the job queue in Postgres, the workers that take jobs from
//! it, and the executor that runs terraform for template imports and
//! workspace builds (through [`crate::provisionerd`]).

pub mod executor;
pub mod queue;
pub mod worker;

pub use executor::{find_provider, find_terraform, ExecutorConfig, TerraformExecutor};
pub use queue::{AcquiredJob, JobInput, JobLog, JobRow, JobStatus, NewJob, Queue, Tags};
pub use worker::{Executor, JobContext, Outcome, StaleJobDetector, Worker, WorkerConfig};

use std::sync::Arc;
use std::time::Duration;

/// The in-process provisioner daemons of a `coderd`: `n` workers sharing one
/// executor, and the detector that fails jobs of workers that died.
pub struct Provisioners {
    workers: Vec<Worker>,
    _detector: StaleJobDetector,
}

impl Provisioners {
    pub fn spawn(
        queue: Queue,
        config: ExecutorConfig,
        n: usize,
        stale_after: Duration,
    ) -> Provisioners {
        let executor = TerraformExecutor::new(config);
        let host = nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default();
        let workers = (0..n)
            .map(|i| {
                let id = format!("{host}-{}-{i}", std::process::id());
                Worker::spawn(queue.clone(), Arc::clone(&executor), WorkerConfig::new(id))
            })
            .collect();
        let detector = StaleJobDetector::spawn(
            queue,
            stale_after,
            (stale_after / 4).max(Duration::from_millis(100)),
        );
        Provisioners { workers, _detector: detector }
    }

    /// Stops the workers (their jobs are abandoned, as if the process died)
    /// but keeps the stale-job detector running.
    pub fn stop_workers(&mut self) {
        self.workers.clear();
    }
}
