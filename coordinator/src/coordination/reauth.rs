//! Re-authorization of all of a replica's connections at once, off the run
//! loop.
//!
//! The run loop asks for a sweep every `reauthorize_interval` and whenever
//! the database announces, on [`CHANNEL`], a change that can take a right
//! away (migration 0006's triggers: an api key deleted or shortened, a user
//! suspended or deleted, a workspace deleted or given away, a new build, an
//! agent removed). A sweep is two queries however many peers are connected
//! ([`Sweep`]); this task runs it and hands the [`Verdicts`] back, and the
//! run loop closes what is revoked and removes tunnels no longer allowed.
//! At most one sweep runs at a time; requests meanwhile coalesce into one
//! more, so a storm of notifications costs a sweep at a time, not one each.

use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio_util::task::AbortOnDropHandle;

use super::authz::{Sweep, Verdicts};

/// The pub/sub channel the database's triggers announce revocations on.
pub(crate) const CHANNEL: &str = "coordination_authz";

/// A finished sweep.
pub(crate) type Outcome = Result<Verdicts, sqlx::Error>;

/// The handle of the sweeping task; dropping it stops the task.
#[derive(Debug)]
pub(crate) struct Reauthorizer {
    requests: mpsc::Sender<Sweep>,
    busy: bool,
    pending: bool,
    _task: AbortOnDropHandle<()>,
}

impl Reauthorizer {
    /// Starts the task; its verdicts arrive on the returned receiver.
    pub fn spawn(db: PgPool) -> (Self, mpsc::Receiver<Outcome>) {
        let (requests, mut rx) = mpsc::channel::<Sweep>(1);
        let (verdicts, verdicts_rx) = mpsc::channel(1);
        let task = tokio::spawn(async move {
            while let Some(sweep) = rx.recv().await {
                if verdicts.send(sweep.run(&db).await).await.is_err() {
                    return;
                }
            }
        });
        let handle = Reauthorizer {
            requests,
            busy: false,
            pending: false,
            _task: AbortOnDropHandle::new(task),
        };
        (handle, verdicts_rx)
    }

    /// A sweep is due: starts one built by `gather` now, or, if one is
    /// running, once it finished.
    pub fn want(&mut self, gather: impl FnOnce() -> Sweep) {
        if self.busy {
            self.pending = true;
            return;
        }
        let sweep = gather();
        if !sweep.is_empty() {
            self.busy = self.requests.try_send(sweep).is_ok();
        }
    }

    /// The running sweep finished; whether another was asked for meanwhile.
    pub fn finished(&mut self) -> bool {
        self.busy = false;
        std::mem::take(&mut self.pending)
    }
}
