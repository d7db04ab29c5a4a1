//! The store writer: one task that persists the core's [`StoreOp`]s in
//! order, off the run loop.
//!
//! The run loop only queues writes, so peers on one replica keep
//! exchanging nodes while Postgres is slow or restarting. A write that fails
//! (or does not fit the queue) marks the replica *dirty*; the run loop then
//! resyncs once the database answers again, rewriting its peers and pruning
//! rows whose deletes were lost. A node the store refuses because another
//! peer's row holds one of its keys is no failure: the writer reports it
//! ([`Conflict`]) and the run loop refuses that peer. Shutdown goes through
//! the same queue, so the replica's rows are removed after every earlier
//! write landed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio_util::task::AbortOnDropHandle;
use uuid::Uuid;

use super::core::StoreOp;
use super::keys::Pinned;
use super::store::{self, Store};

/// Writes queued beyond this mark the replica dirty instead (a resync
/// rewrites everything anyway).
const QUEUE: usize = 65_536;

/// The store refused a peer's node: another peer's row holds its `kind` key.
#[derive(Debug)]
pub(crate) struct Conflict {
    pub peer: Uuid,
    pub keys: Pinned,
    pub kind: mesh::KeyKind,
}

/// Conflicts reported beyond this are dropped (the peer's node then stays
/// out of the store, and other replicas never see it).
pub(crate) const CONFLICTS: usize = 1024;

/// One queued write.
// Node records dominate these; boxing them would cost an allocation per update.
#[allow(clippy::large_enum_variant)]
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
    /// Starts the writer; refused nodes are reported on `conflicts`.
    pub fn spawn(store: Store, conflicts: mpsc::Sender<Conflict>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let dirty = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(run(store, rx, dirty.clone(), conflicts));
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

async fn run(
    store: Store,
    mut rx: mpsc::Receiver<Write>,
    dirty: Arc<AtomicBool>,
    conflicts: mpsc::Sender<Conflict>,
) {
    while let Some(w) = rx.recv().await {
        let result = match w {
            Write::Op(op) => match store.apply(&op).await {
                Err(e) => match (&op, store::key_conflict(&e)) {
                    (StoreOp::UpsertPeer { id, node: Some(node), .. }, Some(kind)) => {
                        tracing::info!(peer = %id, %kind, "coordination: the store refused a node whose key another peer holds");
                        let conflict = Conflict { peer: *id, keys: Pinned::of(node), kind };
                        let _ = conflicts.try_send(conflict);
                        continue;
                    }
                    _ => Err((e, format!("{op:?}"))),
                },
                Ok(()) => Ok(()),
            },
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
