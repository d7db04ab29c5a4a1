//! The store writer: one task that persists the core's [`StoreOp`]s in
//! order, off the run loop.
//!
//! It takes everything queued at once (up to [`BATCH`] writes) and persists
//! the ops in one transaction with one `NOTIFY` per ~150 peers, so a burst
//! of thousands of node updates costs a few statements rather than five
//! round trips and a notification each. Should the transaction fail (a node
//! whose key another peer holds, the database going away), the same ops are
//! written one by one, as before.
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

/// Writes taken off the queue at once: their ops go to Postgres in one
/// transaction with one announcement (`Store::apply_batch`).
const BATCH: usize = 512;

async fn run(
    store: Store,
    mut rx: mpsc::Receiver<Write>,
    dirty: Arc<AtomicBool>,
    conflicts: mpsc::Sender<Conflict>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut ops = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        for w in batch.drain(..) {
            let other = match w {
                Write::Op(op) => {
                    ops.push(op);
                    continue;
                }
                other => other,
            };
            // Everything queued before it lands first.
            apply(&store, &mut ops, &dirty, &conflicts).await;
            let result = match other {
                Write::Op(_) => Ok(()),
                Write::Prune(keep) => store.prune(&keep).await.map_err(|e| (e, "prune".to_owned())),
                Write::Unregister(done) => {
                    if let Err(e) = store.unregister().await {
                        tracing::warn!(error = %e, "coordination: cannot unregister");
                    }
                    let _ = done.send(());
                    Ok(())
                }
            };
            if let Err((e, what)) = result {
                failed(&dirty, &e, &what);
            }
        }
        apply(&store, &mut ops, &dirty, &conflicts).await;
    }
}

/// Persists and announces `ops` (emptying it): in one transaction, or, when
/// that fails, one by one, so that a refused node costs only its own write.
async fn apply(
    store: &Store,
    ops: &mut Vec<StoreOp>,
    dirty: &AtomicBool,
    conflicts: &mpsc::Sender<Conflict>,
) {
    if ops.is_empty() {
        return;
    }
    if ops.len() > 1 && store.apply_batch(ops).await.is_ok() {
        ops.clear();
        return;
    }
    for op in ops.drain(..) {
        let Err(e) = store.apply(&op).await else { continue };
        match (&op, store::key_conflict(&e)) {
            (StoreOp::UpsertPeer { id, node: Some(node), .. }, Some(kind)) => {
                tracing::info!(peer = %id, %kind, "coordination: the store refused a node whose key another peer holds");
                let conflict = Conflict { peer: *id, keys: Pinned::of(node), kind };
                let _ = conflicts.try_send(conflict);
            }
            _ => failed(dirty, &e, &format!("{op:?}")),
        }
    }
}

fn failed(dirty: &AtomicBool, e: &sqlx::Error, what: &str) {
    // The run loop resyncs when the database answers again.
    tracing::warn!(error = %e, write = %what, "coordination: store write failed");
    dirty.store(true, Ordering::Relaxed);
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::collections::HashSet;
    use std::time::Duration;

    use super::*;
    use crate::coordination::core::Kind;
    use crate::coordination::node_id;
    use crate::coordination::store::{Notice, CHANNEL};
    use crate::pubsub::{Message, Pubsub};
    use crate::testutil::{self, node};

    fn upsert(id: Uuid, node: mesh::Node) -> Write {
        Write::Op(StoreOp::UpsertPeer { id, kind: Kind::Agent, node: Some(node) })
    }

    #[tokio::test]
    async fn a_burst_is_one_transaction_and_a_refused_node_costs_only_its_write() {
        let db = testutil::database().await.unwrap();
        let pubsub = Pubsub::new(db.pool.clone());
        let mut notices = pubsub.subscribe(CHANNEL).await;
        let me = Uuid::new_v4();
        let store = Store::new(db.pool.clone(), pubsub.clone(), me);
        store.heartbeat().await.unwrap();
        let (conflicts_tx, mut conflicts) = mpsc::channel(8);
        let writer = Writer::spawn(store, conflicts_tx);

        // Queued before the writer runs (one thread): one batch.
        let peers: Vec<Uuid> = (0..200).map(|_| Uuid::new_v4()).collect();
        for p in &peers {
            writer.write(upsert(*p, node(node_id(*p), 1)));
        }
        writer.write(Write::Op(StoreOp::AddTunnel { src: peers[1], dst: peers[0] }));
        // The last write of a peer wins, even within one statement's run.
        writer.write(upsert(peers[0], node(node_id(peers[0]), 2)));

        let mut named = HashSet::new();
        let mut count = 0;
        while named.len() < peers.len() {
            let msg = tokio::time::timeout(Duration::from_secs(10), notices.recv())
                .await
                .expect("every written peer is announced")
                .unwrap();
            let Message::Payload(p) = msg else { continue };
            let notice: Notice = serde_json::from_str(&p).unwrap();
            assert_eq!(notice.from, me);
            named.extend(notice.changed());
            count += 1;
        }
        assert!(count <= 2, "{count} notices for one batch of 200 peers");
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM peers WHERE coordinator_id = $1")
            .bind(me)
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(rows, 200);
        let port: String =
            sqlx::query_scalar("SELECT node->'endpoints'->>0 FROM peers WHERE id = $1")
                .bind(peers[0])
                .fetch_one(&db.pool)
                .await
                .unwrap();
        assert!(port.ends_with(":2"), "{port}");
        let tunnels: i64 = sqlx::query_scalar("SELECT count(*) FROM tunnels WHERE src = $1")
            .bind(peers[1])
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(tunnels, 1);

        // A node carrying another peer's key fails the batch's transaction;
        // written one by one, only it is refused.
        let (thief, honest) = (Uuid::new_v4(), Uuid::new_v4());
        let mut stolen = node(node_id(thief), 1);
        stolen.key = node(node_id(peers[5]), 1).key;
        writer.write(upsert(thief, stolen));
        writer.write(upsert(honest, node(node_id(honest), 1)));
        let conflict = tokio::time::timeout(Duration::from_secs(10), conflicts.recv())
            .await
            .expect("the conflict is reported")
            .unwrap();
        assert_eq!((conflict.peer, conflict.kind), (thief, mesh::KeyKind::Node));
        // The honest write lands (and is announced) after the refused one.
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(10), notices.recv())
                .await
                .expect("the honest peer is announced")
                .unwrap();
            let Message::Payload(p) = msg else { continue };
            let notice: Notice = serde_json::from_str(&p).unwrap();
            if notice.changed().contains(&honest) {
                break;
            }
        }
        let stored: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM peers WHERE id = ANY($1)")
            .bind([thief, honest])
            .fetch_all(&db.pool)
            .await
            .unwrap();
        assert_eq!(stored, vec![honest]);
        assert!(!writer.take_dirty(), "a refused node is no failed write");
    }
}
