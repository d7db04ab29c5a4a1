//! The store writer: one task that persists the core's [`StoreOp`]s in
//! order, off the run loop.
//!
//! The run loop only queues writes, so peers on one replica keep
//! exchanging nodes while Postgres is slow or restarting. A write that fails
//! (or does not fit the queue) marks the replica *dirty*; the run loop then
//! resyncs once the database answers again, rewriting its peers and pruning
//! rows whose deletes were lost. Shutdown goes through the same queue, so the
//! replica's rows are removed after every earlier write landed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio_util::task::AbortOnDropHandle;
use uuid::Uuid;

use super::core::StoreOp;
use super::store::Store;

/// Writes queued beyond this mark the replica dirty instead (a resync
/// rewrites everything anyway).
const QUEUE: usize = 65_536;

/// One queued write.
#[derive(Debug)]
pub(crate) enum Write {
    Op(StoreOp),
    /// Delete this replica's rows of peers other than these.
    Prune(Vec<Uuid>),
    /// Remove the replica and its peers, then report.
    Unregister(oneshot::Sender<()>),
}

/// The handle of the writer task; dropping it stops the task.
#[derive(Debug)]
pub(crate) struct Writer {
    tx: mpsc::Sender<Write>,
    dirty: Arc<AtomicBool>,
    _task: AbortOnDropHandle<()>,
}

impl Writer {
    pub fn spawn(store: Store) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let dirty = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(run(store, rx, dirty.clone()));
        Writer { tx, dirty, _task: AbortOnDropHandle::new(task) }
    }

    /// Queues a write; when the queue is full the write is dropped and the
    /// replica marked dirty.
    pub fn write(&self, w: Write) {
        if self.tx.try_send(w).is_err() {
            self.dirty.store(true, Ordering::Relaxed);
        }
    }

    /// Whether a write was lost since the last call (and forget it).
    pub fn take_dirty(&self) -> bool {
        self.dirty.swap(false, Ordering::Relaxed)
    }

    /// Marks the replica dirty (a read failed; resync later).
    pub fn mark_dirty(&self) {
        self.dirty.store(true, Ordering::Relaxed);
    }
}

async fn run(store: Store, mut rx: mpsc::Receiver<Write>, dirty: Arc<AtomicBool>) {
    while let Some(w) = rx.recv().await {
        let result = match w {
            Write::Op(op) => store.apply(&op).await.map_err(|e| (e, format!("{op:?}"))),
            Write::Prune(keep) => store.prune(&keep).await.map_err(|e| (e, "prune".to_owned())),
            Write::Unregister(done) => {
                if let Err(e) = store.unregister().await {
                    tracing::warn!(error = %e, "coordination: cannot unregister");
                }
                let _ = done.send(());
                continue;
            }
        };
        if let Err((e, what)) = result {
            // The run loop resyncs when the database answers again.
            tracing::warn!(error = %e, write = %what, "coordination: store write failed");
            dirty.store(true, Ordering::Relaxed);
        }
    }
}
