//! API keys (session tokens, personal tokens, app keys): what authentication
//! reads and extends, and the personal-token listing. A key's secret is
//! stored only as its SHA-256.

use chrono::{DateTime, Utc};
use codersdk::LoginType;
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

/// What authentication checks about a key.
#[derive(sqlx::FromRow)]
pub struct KeyAuthRow {
    pub hashed_secret: Vec<u8>,
    #[sqlx(try_from = "String")]
    pub login_type: LoginType,
    pub token_name: Option<String>,
    pub lifetime_seconds: i64,
    pub expires_at: DateTime<Utc>,
    pub last_used: DateTime<Utc>,
}

pub async fn for_auth(db: &PgPool, id: &str) -> Result<Option<KeyAuthRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT hashed_secret, login_type, token_name, lifetime_seconds, expires_at, last_used
         FROM api_keys WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(db)
    .await
}

/// Records a use of the key and sets its expiry.
pub async fn touch(
    db: &PgPool,
    id: &str,
    now: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE api_keys SET last_used = $2, expires_at = $3 WHERE id = $1")
        .bind(id)
        .bind(now)
        .bind(expires_at)
        .execute(db)
        .await
        .map(drop)
}

/// A key to store.
pub struct NewKey<'a> {
    pub id: &'a str,
    pub hashed_secret: &'a [u8],
    pub user_id: Uuid,
    pub login_type: LoginType,
    pub token_name: Option<&'a str>,
    pub lifetime: chrono::Duration,
}

/// Inserts a key; a taken token name is a unique violation.
pub async fn insert(db: impl PgExecutor<'_>, k: NewKey<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO api_keys (id, hashed_secret, user_id, login_type, token_name, lifetime_seconds, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(k.id)
    .bind(k.hashed_secret)
    .bind(k.user_id)
    .bind(k.login_type.as_str())
    .bind(k.token_name)
    .bind(k.lifetime.num_seconds())
    .bind(Utc::now() + k.lifetime)
    .execute(db)
    .await
    .map(drop)
}

/// Deletes one key by id (logout).
pub async fn delete(db: impl PgExecutor<'_>, id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM api_keys WHERE id = $1").bind(id).execute(db).await.map(drop)
}

/// Deletes a user's key by id or token name; the deleted key's id and
/// name, if there was one.
pub async fn delete_by_id_or_name(
    db: impl PgExecutor<'_>,
    user: Uuid,
    key: &str,
) -> Result<Option<(String, Option<String>)>, sqlx::Error> {
    sqlx::query_as(
        "DELETE FROM api_keys WHERE user_id = $1 AND (id = $2 OR token_name = $2)
         RETURNING id, token_name",
    )
    .bind(user)
    .bind(key)
    .fetch_optional(db)
    .await
}

/// Ends a user's password sessions, except `keep` (the caller's own).
pub async fn delete_password_sessions(
    db: impl PgExecutor<'_>,
    user: Uuid,
    keep: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "DELETE FROM api_keys WHERE user_id = $1 AND login_type = 'password'
         AND id IS DISTINCT FROM $2",
    )
    .bind(user)
    .bind(keep)
    .execute(db)
    .await
    .map(drop)
}

/// A personal token as listed (never its secret).
#[derive(sqlx::FromRow)]
pub struct TokenRow {
    pub id: String,
    pub user_id: Uuid,
    pub token_name: Option<String>,
    #[sqlx(try_from = "String")]
    pub login_type: LoginType,
    pub expires_at: DateTime<Utc>,
    pub last_used: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

impl TokenRow {
    pub fn into_api(self) -> codersdk::ApiKey {
        codersdk::ApiKey {
            id: self.id,
            user_id: self.user_id,
            token_name: self.token_name.unwrap_or_default(),
            login_type: self.login_type,
            expires_at: self.expires_at,
            last_used: self.last_used,
            created_at: self.created_at,
        }
    }
}

/// A user's personal tokens, oldest first.
pub async fn personal_tokens(db: &PgPool, user: Uuid) -> Result<Vec<TokenRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, user_id, token_name, login_type, expires_at, last_used, created_at
         FROM api_keys WHERE user_id = $1 AND login_type = 'token' ORDER BY created_at",
    )
    .bind(user)
    .fetch_all(db)
    .await
}

/// A valid key's holder, as coordination re-checks it.
#[derive(sqlx::FromRow)]
pub struct KeyHolder {
    pub id: String,
    pub user_id: Uuid,
    #[sqlx(try_from = "Vec<String>")]
    pub roles: super::users::Roles,
}

/// The valid ones among `keys`: unexpired, of an active user that is not
/// deleted.
pub async fn valid_holders(db: &PgPool, keys: &[String]) -> Result<Vec<KeyHolder>, sqlx::Error> {
    sqlx::query_as(
        "SELECT k.id, k.user_id, u.roles
         FROM api_keys k JOIN users u ON u.id = k.user_id
         WHERE k.id = ANY($1) AND k.expires_at > now()
           AND NOT u.deleted AND u.status = 'active'",
    )
    .bind(keys)
    .fetch_all(db)
    .await
}
