//! The replica registry's rows (`replicas`, migration 0013) and the
//! deployment's relay mesh key (`relay_mesh_key`).

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

/// One coderd replica as recorded in the database.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ReplicaRow {
    pub id: Uuid,
    pub hostname: String,
    /// Where the other replicas reach this one's relay; empty without one.
    pub relay_url: String,
    pub region_id: i32,
    pub version: String,
    pub started_at: DateTime<Utc>,
    pub heartbeat_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, hostname, relay_url, region_id, version, started_at, heartbeat_at";

/// Records a heartbeat of `replica` (inserting its row if another replica
/// deleted it, or on the first beat); the database's clock stamps it, so
/// replicas never compare clocks of their own. Returns whether the row was
/// new.
pub async fn heartbeat(db: &PgPool, replica: &ReplicaRow) -> Result<bool, sqlx::Error> {
    // `xmax = 0` only for a row this statement inserted.
    sqlx::query_scalar(
        "INSERT INTO replicas (id, hostname, relay_url, region_id, version, started_at, heartbeat_at)
         VALUES ($1, $2, $3, $4, $5, $6, now())
         ON CONFLICT (id) DO UPDATE SET heartbeat_at = now(), relay_url = EXCLUDED.relay_url
         RETURNING (xmax = 0)",
    )
    .bind(replica.id)
    .bind(&replica.hostname)
    .bind(&replica.relay_url)
    .bind(replica.region_id)
    .bind(&replica.version)
    .bind(replica.started_at)
    .fetch_one(db)
    .await
}

/// Deletes the replicas (other than `keep`) whose heartbeat is older than
/// `deadline`, returning them.
pub async fn expire(
    db: &PgPool,
    keep: Uuid,
    deadline: std::time::Duration,
) -> Result<Vec<ReplicaRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "DELETE FROM replicas
         WHERE id <> $1 AND heartbeat_at < now() - make_interval(secs => $2)
         RETURNING {COLUMNS}"
    ))
    .bind(keep)
    .bind(deadline.as_secs_f64())
    .fetch_all(db)
    .await
}

/// Every recorded replica, oldest first, with the database's clock.
pub async fn list(db: &PgPool) -> Result<(Vec<ReplicaRow>, DateTime<Utc>), sqlx::Error> {
    let mut tx = db.begin().await?;
    let now: DateTime<Utc> = sqlx::query_scalar("SELECT now()").fetch_one(&mut *tx).await?;
    let rows = sqlx::query_as(&format!("SELECT {COLUMNS} FROM replicas ORDER BY started_at, id"))
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok((rows, now))
}

/// Removes `id` (an orderly shutdown).
pub async fn delete(db: &PgPool, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM replicas WHERE id = $1").bind(id).execute(db).await.map(|_| ())
}

/// The deployment's relay mesh key: `candidate` if no replica stored one
/// yet, else the stored one (whoever inserted first wins; the key is a bind
/// parameter, so statement logs never carry it).
pub async fn relay_mesh_key(db: &PgPool, candidate: &str) -> Result<String, sqlx::Error> {
    sqlx::query("INSERT INTO relay_mesh_key (mesh_key) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(candidate)
        .execute(db)
        .await?;
    sqlx::query_scalar("SELECT mesh_key FROM relay_mesh_key").fetch_one(db).await
}
