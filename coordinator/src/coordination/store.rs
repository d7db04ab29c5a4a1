//! The Postgres side of coordination: the `coordinators`, `peers` and
//! `tunnels` tables (migration 0003; 0008 makes each node key unique across
//! peers) and the `coordination` pub/sub channel.
//!
//! Every write is followed by a notification naming what changed (a peer, up
//! to [`NOTICE_PEERS`] peers written in one transaction, or all peers of a
//! dead replica); receivers re-read the rows, all of a notice's in one query,
//! rather than trust the payload, so a late or duplicated notification is
//! harmless and the payload stays below `NOTIFY`'s 8000-byte limit.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use super::core::{Kind, Record, StoreOp};
use crate::pubsub::Pubsub;

/// The pub/sub channel coordination notifications travel on.
pub(crate) const CHANNEL: &str = "coordination";

/// Most peers one notice names: 39 bytes each in JSON, ~5.9 KB in all.
pub(crate) const NOTICE_PEERS: usize = 150;

/// A notification on [`CHANNEL`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Notice {
    /// The replica that wrote.
    pub from: Uuid,
    /// A peer whose row or outgoing tunnels changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<Uuid>,
    /// More such peers, written in one transaction ([`NOTICE_PEERS`] at
    /// most, so the payload stays under `NOTIFY`'s 8000 bytes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<Uuid>,
    /// A replica whose peers were all marked lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordinator: Option<Uuid>,
}

impl Notice {
    /// Every peer of replica `coordinator` changed.
    pub fn replica(from: Uuid, coordinator: Uuid) -> Self {
        Notice { from, peer: None, peers: Vec::new(), coordinator: Some(coordinator) }
    }

    /// These peers (at most [`NOTICE_PEERS`]) changed; one is named in
    /// `peer`, as replicas before batching expect.
    pub fn peers(from: Uuid, peers: &[Uuid]) -> Self {
        match peers {
            [one] => Notice { from, peer: Some(*one), peers: Vec::new(), coordinator: None },
            many => Notice { from, peer: None, peers: many.to_vec(), coordinator: None },
        }
    }

    /// Every peer it names.
    pub fn changed(&self) -> Vec<Uuid> {
        self.peer.iter().chain(&self.peers).copied().collect()
    }
}

#[derive(sqlx::FromRow)]
struct PeerRow {
    id: Uuid,
    coordinator_id: Uuid,
    node: Option<serde_json::Value>,
    status: String,
}

#[derive(sqlx::FromRow)]
struct PeerTunnelsRow {
    #[sqlx(flatten)]
    peer: PeerRow,
    tunnels: Vec<Uuid>,
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
            self.announce(Notice::replica(self.me, *coordinator)).await;
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
        self.announce(Notice::replica(self.me, self.me)).await;
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
            self.announce(Notice::peers(self.me, &[peer])).await;
        }
        Ok(())
    }

    /// Persists one core write and announces the peer it touched.
    pub async fn apply(&self, op: &StoreOp) -> Result<(), sqlx::Error> {
        let mut conn = self.db.acquire().await?;
        let peer = self.write(&mut conn, std::slice::from_ref(op)).await?;
        drop(conn);
        self.announce(Notice::peers(self.me, &[peer])).await;
        Ok(())
    }

    /// Persists core writes in order in one transaction, which also
    /// announces every peer they touched (delivered on commit). A run of
    /// upserts is one statement.
    pub async fn apply_batch(&self, ops: &[StoreOp]) -> Result<(), sqlx::Error> {
        let mut tx = self.db.begin().await?;
        let mut touched = Vec::with_capacity(ops.len());
        let mut rest = ops;
        while !rest.is_empty() {
            let upserts = rest.iter().take_while(|op| matches!(op, StoreOp::UpsertPeer { .. }));
            let n = upserts.count().max(1);
            let (now, later) = rest.split_at(n);
            if n > 1 {
                touched.extend(self.upsert_peers(&mut tx, now).await?);
            } else {
                touched.push(self.write(&mut tx, now).await?);
            }
            rest = later;
        }
        let mut seen = std::collections::HashSet::with_capacity(touched.len());
        touched.retain(|p| seen.insert(*p));
        let payloads: Vec<String> = touched
            .chunks(NOTICE_PEERS)
            .filter_map(|chunk| serde_json::to_string(&Notice::peers(self.me, chunk)).ok())
            .collect();
        sqlx::query("SELECT pg_notify($1, payload) FROM UNNEST($2::text[]) AS payload")
            .bind(CHANNEL)
            .bind(payloads)
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }

    /// Upserts each peer's row (the last op of a peer wins) and moves its
    /// tunnels to this replica, in one statement; returns the peers.
    async fn upsert_peers(
        &self,
        conn: &mut sqlx::PgConnection,
        ops: &[StoreOp],
    ) -> Result<Vec<Uuid>, sqlx::Error> {
        let mut last = std::collections::HashMap::with_capacity(ops.len());
        for (i, op) in ops.iter().enumerate() {
            if let StoreOp::UpsertPeer { id, .. } = op {
                last.insert(*id, i);
            }
        }
        let n = last.len();
        let (mut ids, mut kinds, mut owners, mut nodes) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for (i, op) in ops.iter().enumerate() {
            let StoreOp::UpsertPeer { id, kind, node } = op else { continue };
            if last.get(id) != Some(&i) {
                continue;
            }
            ids.push(*id);
            kinds.push(kind.as_str());
            owners.push(match kind {
                Kind::Client { owner } => Some(*owner),
                Kind::Agent => None,
            });
            nodes.push(node.as_ref().and_then(|n| serde_json::to_string(n).ok()));
        }
        sqlx::query(
            "WITH input AS (
                 SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::uuid[], $4::text[])
                     AS t(id, kind, owner_id, node)),
             up AS (
                 INSERT INTO peers (id, coordinator_id, kind, owner_id, node, status, updated_at)
                 SELECT id, $5, kind, owner_id, node::jsonb, 'ok', now() FROM input
                 ON CONFLICT (id) DO UPDATE SET coordinator_id = $5, kind = EXCLUDED.kind,
                     owner_id = EXCLUDED.owner_id, node = EXCLUDED.node, status = 'ok',
                     updated_at = now()
                 RETURNING id)
             UPDATE tunnels SET coordinator_id = $5
             WHERE src IN (SELECT id FROM up) AND coordinator_id <> $5",
        )
        .bind(&ids)
        .bind(kinds)
        .bind(owners)
        .bind(nodes)
        .bind(self.me)
        .execute(&mut *conn)
        .await?;
        Ok(ids)
    }

    /// Persists one op (`ops` holds exactly one); returns the peer it touched.
    async fn write(
        &self,
        conn: &mut sqlx::PgConnection,
        ops: &[StoreOp],
    ) -> Result<Uuid, sqlx::Error> {
        let Some(op) = ops.first() else { return Ok(Uuid::nil()) };
        Ok(match op {
            StoreOp::UpsertPeer { id, .. } => {
                self.upsert_peers(conn, ops).await?;
                *id
            }
            StoreOp::DeletePeer { id } => {
                // Only our own row: the peer may already live on another replica.
                sqlx::query("DELETE FROM peers WHERE id = $1 AND coordinator_id = $2")
                    .bind(id)
                    .bind(self.me)
                    .execute(&mut *conn)
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
                .execute(&mut *conn)
                .await?;
                *src
            }
            StoreOp::RemoveTunnel { src, dst } => {
                sqlx::query("DELETE FROM tunnels WHERE src = $1 AND dst = $2")
                    .bind(src)
                    .bind(dst)
                    .execute(&mut *conn)
                    .await?;
                *src
            }
        })
    }

    async fn announce(&self, notice: Notice) {
        let Ok(payload) = serde_json::to_string(&notice) else { return };
        if let Err(e) = self.pubsub.publish(CHANNEL, &payload).await {
            // Other replicas catch up at their next resync.
            tracing::warn!(error = %e, "coordination: cannot announce a change");
        }
    }

    /// Each peer's row (`None`: it has none) and the tunnels it opened, in
    /// one query.
    #[allow(clippy::type_complexity)]
    pub async fn peers(
        &self,
        ids: &[Uuid],
    ) -> Result<Vec<(Uuid, Option<Record>, Vec<Uuid>)>, sqlx::Error> {
        let rows: Vec<PeerTunnelsRow> = bounded(
            sqlx::query_as(
                "SELECT p.id, p.coordinator_id, p.node, p.status,
                        ARRAY(SELECT t.dst FROM tunnels t WHERE t.src = p.id) AS tunnels
                 FROM peers p WHERE p.id = ANY($1)",
            )
            .bind(ids)
            .fetch_all(&self.db),
        )
        .await?;
        let mut found: std::collections::HashMap<Uuid, (Record, Vec<Uuid>)> = rows
            .into_iter()
            .map(|r| {
                let tunnels = r.tunnels;
                let (id, record) = r.peer.record();
                (id, (record, tunnels))
            })
            .collect();
        Ok(ids
            .iter()
            .map(|id| match found.remove(id) {
                Some((record, tunnels)) => (*id, Some(record), tunnels),
                None => (*id, None, Vec::new()),
            })
            .collect())
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_notice_names_one_peer_as_before_and_many_in_a_list_under_notifys_limit() {
        let (from, a, b) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
        let one = serde_json::to_string(&Notice::peers(from, &[a])).unwrap();
        assert_eq!(one, format!(r#"{{"from":"{from}","peer":"{a}"}}"#));
        let many = serde_json::to_string(&Notice::peers(from, &[a, b])).unwrap();
        let back: Notice = serde_json::from_str(&many).unwrap();
        assert_eq!(back.changed(), vec![a, b]);
        let most = vec![Uuid::max(); NOTICE_PEERS];
        let payload = serde_json::to_string(&Notice::peers(Uuid::max(), &most)).unwrap();
        assert!(payload.len() < 8000, "{} bytes", payload.len());
    }
}
