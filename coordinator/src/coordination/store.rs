//! The Postgres side of coordination: the `coordinators`, `peers` and
//! `tunnels` tables (migration 0003; 0008 makes each node key unique across
//! peers) and the `coordination` pub/sub channel.
//!
//! Every write is followed by a notification naming what changed (a peer, or
//! all peers of a dead replica); receivers re-read the rows rather than trust
//! the payload, so a late or duplicated notification is harmless and the
//! payload stays far below `NOTIFY`'s 8000-byte limit.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use super::core::{Kind, Record, StoreOp};
use crate::pubsub::Pubsub;

/// The pub/sub channel coordination notifications travel on.
pub(crate) const CHANNEL: &str = "coordination";

/// A notification on [`CHANNEL`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Notice {
    /// The replica that wrote.
    pub from: Uuid,
    /// A peer whose row or outgoing tunnels changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<Uuid>,
    /// A replica whose peers were all marked lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordinator: Option<Uuid>,
}

#[derive(sqlx::FromRow)]
struct PeerRow {
    id: Uuid,
    coordinator_id: Uuid,
    node: Option<serde_json::Value>,
    status: String,
}

impl PeerRow {
    fn record(self) -> (Uuid, Record) {
        // A node that does not parse (written by a newer version) counts as none.
        let node = self.node.and_then(|v| serde_json::from_value(v).ok());
        let record = Record { coordinator: self.coordinator_id, node, lost: self.status == "lost" };
        (self.id, record)
    }
}

/// Which key a unique violation on `peers` (migration 0008) is about; `None`
/// for any other error.
pub(crate) fn key_conflict(e: &sqlx::Error) -> Option<mesh::KeyKind> {
    let db = e.as_database_error()?;
    if db.code().as_deref() != Some("23505") {
        return None;
    }
    match db.constraint()? {
        "peers_node_key" => Some(mesh::KeyKind::Node),
        "peers_disco_key" => Some(mesh::KeyKind::Disco),
        "peers_quic_key" => Some(mesh::KeyKind::Quic),
        _ => None,
    }
}

/// One replica's access to the shared state.
#[derive(Debug, Clone)]
pub(crate) struct Store {
    db: PgPool,
    pubsub: Pubsub,
    me: Uuid,
}

impl Store {
    pub fn new(db: PgPool, pubsub: Pubsub, me: Uuid) -> Self {
        Store { db, pubsub, me }
    }

    pub fn me(&self) -> Uuid {
        self.me
    }

    pub fn db(&self) -> &PgPool {
        &self.db
    }

    /// Records a heartbeat; `true` when this replica's row was missing (it was
    /// declared dead, or the database is new), so its state must be rewritten.
    pub async fn heartbeat(&self) -> Result<bool, sqlx::Error> {
        let inserted: bool = sqlx::query_scalar(
            "INSERT INTO coordinators (id) VALUES ($1)
             ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()
             RETURNING (xmax = 0)",
        )
        .bind(self.me)
        .fetch_one(&self.db)
        .await?;
        Ok(inserted)
    }

    /// Deletes replicas whose heartbeat is older than `timeout`, marks their
    /// peers lost, announces it, and returns them.
    pub async fn expire_dead(
        &self,
        timeout: std::time::Duration,
    ) -> Result<Vec<Uuid>, sqlx::Error> {
        let dead: Vec<Uuid> = sqlx::query_scalar(
            "WITH dead AS (
                 DELETE FROM coordinators
                 WHERE heartbeat_at < now() - make_interval(secs => $1) AND id <> $2
                 RETURNING id),
             lost AS (
                 UPDATE peers SET status = 'lost', updated_at = now()
                 WHERE coordinator_id IN (SELECT id FROM dead) AND status <> 'lost'
                 RETURNING 1)
             SELECT id FROM dead",
        )
        .bind(timeout.as_secs_f64())
        .bind(self.me)
        .fetch_all(&self.db)
        .await?;
        for coordinator in &dead {
            self.announce(Notice { from: self.me, peer: None, coordinator: Some(*coordinator) })
                .await;
        }
        Ok(dead)
    }

    /// Deletes peers that have been lost for longer than `retention`.
    pub async fn collect_lost(&self, retention: std::time::Duration) -> Result<(), sqlx::Error> {
        sqlx::query(
            "DELETE FROM peers WHERE status = 'lost' AND updated_at < now() - make_interval(secs => $1)",
        )
        .bind(retention.as_secs_f64())
        .execute(&self.db)
        .await?;
        Ok(())
    }

    /// Removes this replica and its peers (graceful shutdown).
    pub async fn unregister(&self) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM peers WHERE coordinator_id = $1")
            .bind(self.me)
            .execute(&self.db)
            .await?;
        sqlx::query("DELETE FROM coordinators WHERE id = $1")
            .bind(self.me)
            .execute(&self.db)
            .await?;
        self.announce(Notice { from: self.me, peer: None, coordinator: Some(self.me) }).await;
        Ok(())
    }

    /// Deletes this replica's rows of peers that are not in `keep` (their
    /// deletes were lost while the database was away) and announces each.
    pub async fn prune(&self, keep: &[Uuid]) -> Result<(), sqlx::Error> {
        let gone: Vec<Uuid> = sqlx::query_scalar(
            "DELETE FROM peers WHERE coordinator_id = $1 AND NOT (id = ANY($2)) RETURNING id",
        )
        .bind(self.me)
        .bind(keep)
        .fetch_all(&self.db)
        .await?;
        for peer in gone {
            tracing::info!(%peer, "coordination: pruned the row of a peer that left while the database was away");
            self.announce(Notice { from: self.me, peer: Some(peer), coordinator: None }).await;
        }
        Ok(())
    }

    /// Persists one core write and announces the peer it touched.
    pub async fn apply(&self, op: &StoreOp) -> Result<(), sqlx::Error> {
        let peer = match op {
            StoreOp::UpsertPeer { id, kind, node } => {
                let owner = match kind {
                    Kind::Client { owner } => Some(*owner),
                    Kind::Agent => None,
                };
                let node = node.as_ref().and_then(|n| serde_json::to_value(n).ok());
                let mut tx = self.db.begin().await?;
                sqlx::query(
                    "INSERT INTO peers (id, coordinator_id, kind, owner_id, node, status, updated_at)
                     VALUES ($1, $2, $3, $4, $5, 'ok', now())
                     ON CONFLICT (id) DO UPDATE SET coordinator_id = $2, kind = $3, owner_id = $4,
                         node = $5, status = 'ok', updated_at = now()",
                )
                .bind(id)
                .bind(self.me)
                .bind(kind.as_str())
                .bind(owner)
                .bind(node)
                .execute(&mut *tx)
                .await?;
                sqlx::query("UPDATE tunnels SET coordinator_id = $2 WHERE src = $1 AND coordinator_id <> $2")
                    .bind(id)
                    .bind(self.me)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                *id
            }
            StoreOp::DeletePeer { id } => {
                // Only our own row: the peer may already live on another replica.
                sqlx::query("DELETE FROM peers WHERE id = $1 AND coordinator_id = $2")
                    .bind(id)
                    .bind(self.me)
                    .execute(&self.db)
                    .await?;
                *id
            }
            StoreOp::AddTunnel { src, dst } => {
                sqlx::query(
                    "INSERT INTO tunnels (src, dst, coordinator_id)
                     SELECT $1, $2, $3 WHERE EXISTS (SELECT 1 FROM peers WHERE id = $1 AND coordinator_id = $3)
                     ON CONFLICT DO NOTHING",
                )
                .bind(src)
                .bind(dst)
                .bind(self.me)
                .execute(&self.db)
                .await?;
                *src
            }
            StoreOp::RemoveTunnel { src, dst } => {
                sqlx::query("DELETE FROM tunnels WHERE src = $1 AND dst = $2")
                    .bind(src)
                    .bind(dst)
                    .execute(&self.db)
                    .await?;
                *src
            }
        };
        self.announce(Notice { from: self.me, peer: Some(peer), coordinator: None }).await;
        Ok(())
    }

    async fn announce(&self, notice: Notice) {
        let Ok(payload) = serde_json::to_string(&notice) else { return };
        if let Err(e) = self.pubsub.publish(CHANNEL, &payload).await {
            // Other replicas catch up at their next resync.
            tracing::warn!(error = %e, "coordination: cannot announce a change");
        }
    }

    /// A peer's row and the tunnels it opened.
    pub async fn peer(&self, id: Uuid) -> Result<(Option<Record>, Vec<Uuid>), sqlx::Error> {
        bounded(self.peer_inner(id)).await
    }

    async fn peer_inner(&self, id: Uuid) -> Result<(Option<Record>, Vec<Uuid>), sqlx::Error> {
        let row: Option<PeerRow> =
            sqlx::query_as("SELECT id, coordinator_id, node, status FROM peers WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.db)
                .await?;
        let tunnels = sqlx::query_scalar("SELECT dst FROM tunnels WHERE src = $1")
            .bind(id)
            .fetch_all(&self.db)
            .await?;
        Ok((row.map(|r| r.record().1), tunnels))
    }

    /// The ids of a replica's peers.
    pub async fn peers_of(&self, coordinator: Uuid) -> Result<Vec<Uuid>, sqlx::Error> {
        bounded(
            sqlx::query_scalar("SELECT id FROM peers WHERE coordinator_id = $1")
                .bind(coordinator)
                .fetch_all(&self.db),
        )
        .await
    }

    /// Every peer and tunnel.
    #[allow(clippy::type_complexity)]
    pub async fn snapshot(&self) -> Result<(Vec<(Uuid, Record)>, Vec<(Uuid, Uuid)>), sqlx::Error> {
        bounded(self.snapshot_inner()).await
    }

    #[allow(clippy::type_complexity)]
    async fn snapshot_inner(
        &self,
    ) -> Result<(Vec<(Uuid, Record)>, Vec<(Uuid, Uuid)>), sqlx::Error> {
        let rows: Vec<PeerRow> =
            sqlx::query_as("SELECT id, coordinator_id, node, status FROM peers")
                .fetch_all(&self.db)
                .await?;
        let tunnels = sqlx::query_as("SELECT src, dst FROM tunnels").fetch_all(&self.db).await?;
        Ok((rows.into_iter().map(PeerRow::record).collect(), tunnels))
    }
}

/// How long the run loop waits for a read before it gives up and resyncs
/// later: a read that waits out the pool's acquire timeout while Postgres
/// restarts would stall every peer of the replica.
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

async fn bounded<T>(
    read: impl std::future::Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, sqlx::Error> {
    tokio::time::timeout(READ_TIMEOUT, read).await.unwrap_or(Err(sqlx::Error::PoolTimedOut))
}

/// What `GET /api/v2/debug/coordinator` shows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DebugSnapshot {
    pub replicas: Vec<DebugReplica>,
    pub peers: Vec<DebugPeer>,
    pub tunnels: Vec<DebugTunnel>,
}

#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
pub struct DebugReplica {
    pub id: Uuid,
    pub heartbeat_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
pub struct DebugPeer {
    pub id: Uuid,
    pub coordinator_id: Uuid,
    pub kind: String,
    pub owner_id: Option<Uuid>,
    pub node: Option<serde_json::Value>,
    pub status: String,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
pub struct DebugTunnel {
    pub src: Uuid,
    pub dst: Uuid,
    pub coordinator_id: Uuid,
    pub created_at: DateTime<Utc>,
}

/// Every replica, peer and tunnel, as stored.
pub async fn debug_snapshot(db: &PgPool) -> Result<DebugSnapshot, sqlx::Error> {
    Ok(DebugSnapshot {
        replicas: sqlx::query_as("SELECT id, heartbeat_at, created_at FROM coordinators ORDER BY created_at")
            .fetch_all(db)
            .await?,
        peers: sqlx::query_as(
            "SELECT id, coordinator_id, kind, owner_id, node, status, updated_at FROM peers ORDER BY id",
        )
        .fetch_all(db)
        .await?,
        tunnels: sqlx::query_as("SELECT src, dst, coordinator_id, created_at FROM tunnels ORDER BY src, dst")
            .fetch_all(db)
            .await?,
    })
}

/// Whether a peer connected to any replica (its row not lost) announced
/// `key` as its node key: the relays admit only those
/// ([`crate::relay::PeerKeys`]). Read-only; a row is written behind the
/// fan-out, so a just-announced key shows up a moment later (announced on
/// [`peer_changes`]).
pub async fn node_key_is_known(db: &PgPool, key: &mesh::NodeKey) -> Result<bool, sqlx::Error> {
    bounded(
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM peers WHERE status = 'ok' AND node->>'key' = $1)",
        )
        .bind(key.to_string())
        .fetch_one(db),
    )
    .await
}

/// Fires after every peer row change of any replica (and on a resync).
pub async fn peer_changes(
    pubsub: &Pubsub,
) -> tokio::sync::broadcast::Receiver<crate::pubsub::Message> {
    pubsub.subscribe(CHANNEL).await
}
