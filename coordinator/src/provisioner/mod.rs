//! Provisioning: the job queue in Postgres, the workers that take jobs from
//! it, and the executor that runs terraform for template imports and
//! workspace builds (through [`crate::provisionerd`]).

pub mod queue;
pub mod worker;

pub use queue::{AcquiredJob, JobInput, JobLog, JobRow, JobStatus, NewJob, Queue, Tags};
pub use worker::{Executor, JobContext, Outcome, StaleJobDetector, Worker, WorkerConfig};
