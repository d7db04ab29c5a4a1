//! Files: template source archives, content-addressed by the SHA-256 of
//! their bytes.

use sqlx::PgPool;
use uuid::Uuid;

/// The id of the file with these bytes' hash, if one was uploaded.
pub async fn by_hash(db: &PgPool, hash: &str) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM files WHERE hash = $1").bind(hash).fetch_optional(db).await
}

/// Whether a file exists.
pub async fn exists(db: &PgPool, id: Uuid) -> Result<bool, sqlx::Error> {
    let found: Option<Uuid> = sqlx::query_scalar("SELECT id FROM files WHERE id = $1")
        .bind(id)
        .fetch_optional(db)
        .await?;
    Ok(found.is_some())
}

/// Stores a file; a concurrent upload of the same bytes yields the same id.
pub async fn insert(
    db: &PgPool,
    hash: &str,
    mimetype: &str,
    data: &[u8],
    created_by: Uuid,
) -> Result<Uuid, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO files (id, hash, mimetype, data, created_by) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (hash) DO UPDATE SET hash = EXCLUDED.hash RETURNING id",
    )
    .bind(Uuid::new_v4())
    .bind(hash)
    .bind(mimetype)
    .bind(data)
    .bind(created_by)
    .fetch_one(db)
    .await
}

/// A stored file with its uploader.
#[derive(sqlx::FromRow)]
pub struct FileRow {
    pub created_by: Uuid,
    pub mimetype: String,
    pub data: Vec<u8>,
}

pub async fn by_id(db: &PgPool, id: Uuid) -> Result<Option<FileRow>, sqlx::Error> {
    sqlx::query_as("SELECT created_by, mimetype, data FROM files WHERE id = $1")
        .bind(id)
        .fetch_optional(db)
        .await
}
