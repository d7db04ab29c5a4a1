//! Users: the typed row (roles parsed once, into [`Role`]s) and the queries
//! for sign-up, login, lookup, the directory and the account lifecycle
//! (status, roles, password, deletion). Soft-deleted users are
//! invisible to every query here.

use chrono::{DateTime, Utc};
use codersdk::{LoginType, Role, UnknownValue, User, UserStatus};
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

/// A user's roles, parsed from the `roles TEXT[]` column; a role this build
/// does not know makes reading the row fail.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Roles(pub Vec<Role>);

impl TryFrom<Vec<String>> for Roles {
    type Error = UnknownValue;

    fn try_from(names: Vec<String>) -> Result<Self, UnknownValue> {
        names.iter().map(|n| n.parse()).collect::<Result<_, _>>().map(Roles)
    }
}

/// A user row as the API needs it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    pub id: Uuid,
    pub email: String,
    pub username: String,
    #[sqlx(try_from = "Vec<String>")]
    pub roles: Roles,
    #[sqlx(try_from = "String")]
    pub status: UserStatus,
    #[sqlx(try_from = "String")]
    pub login_type: LoginType,
    pub created_at: DateTime<Utc>,
}

impl UserRow {
    pub fn to_api(&self) -> User {
        User {
            id: self.id,
            username: self.username.clone(),
            email: self.email.clone(),
            roles: self.roles.0.clone(),
            status: self.status,
            login_type: self.login_type,
            created_at: self.created_at,
        }
    }
}

const COLUMNS: &str = "id, email, username, roles, status, login_type, created_at";

/// A new user; the password is already hashed.
pub struct NewUser<'a> {
    pub email: &'a str,
    pub username: &'a str,
    pub hashed_password: String,
    pub roles: &'a [Role],
}

/// Inserts a user. A taken username or email is a unique violation.
pub async fn insert(db: impl PgExecutor<'_>, u: NewUser<'_>) -> Result<UserRow, sqlx::Error> {
    let roles: Vec<&str> = u.roles.iter().map(|r| r.as_str()).collect();
    sqlx::query_as(&format!(
        "INSERT INTO users (id, email, username, hashed_password, roles)
         VALUES ($1, $2, $3, $4, $5) RETURNING {COLUMNS}"
    ))
    .bind(Uuid::new_v4())
    .bind(u.email)
    .bind(u.username)
    .bind(u.hashed_password)
    .bind(&roles)
    .fetch_one(db)
    .await
}

/// Whether any user exists (deleted ones included: the first user is made once).
pub async fn any_exists(db: impl PgExecutor<'_>) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users)").fetch_one(db).await
}

/// Serializes first-user creation: held until the transaction ends.
pub async fn lock_first_user(db: impl PgExecutor<'_>) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(7301)").execute(db).await.map(drop)
}

pub async fn by_id(db: &PgPool, id: Uuid) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM users WHERE id = $1 AND NOT deleted"))
        .bind(id)
        .fetch_optional(db)
        .await
}

/// By username, case-insensitively.
pub async fn by_username(db: &PgPool, name: &str) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM users WHERE lower(username) = lower($1) AND NOT deleted"
    ))
    .bind(name)
    .fetch_optional(db)
    .await
}

/// The owner of an API key.
pub async fn by_api_key(db: &PgPool, key_id: &str) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM users
         WHERE id = (SELECT user_id FROM api_keys WHERE id = $1) AND NOT deleted"
    ))
    .bind(key_id)
    .fetch_optional(db)
    .await
}

/// Every user, by username.
pub async fn list(db: &PgPool) -> Result<Vec<UserRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM users WHERE NOT deleted ORDER BY username"))
        .fetch_all(db)
        .await
}

/// What a password login checks.
#[derive(sqlx::FromRow)]
pub struct LoginRow {
    pub id: Uuid,
    pub username: String,
    pub hashed_password: Option<String>,
    #[sqlx(try_from = "String")]
    pub status: UserStatus,
}

/// The user a login names, by email or username (case-insensitively).
pub async fn for_login(
    db: &PgPool,
    email: &str,
    username: &str,
) -> Result<Option<LoginRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, username, hashed_password, status FROM users
         WHERE NOT deleted AND (lower(email) = lower($1) OR lower(username) = lower($2))
         LIMIT 1",
    )
    .bind(email)
    .bind(username)
    .fetch_optional(db)
    .await
}

/// The user `id`, locked until the transaction ends (a lifecycle change
/// reads the old values for the audit diff and writes in one step).
pub async fn lock(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM users WHERE id = $1 AND NOT deleted FOR UPDATE"))
        .bind(id)
        .fetch_optional(db)
        .await
}

pub async fn set_status(
    db: impl PgExecutor<'_>,
    id: Uuid,
    status: UserStatus,
) -> Result<UserRow, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE users SET status = $2, updated_at = now() WHERE id = $1 RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(status.as_str())
    .fetch_one(db)
    .await
}

pub async fn set_roles(
    db: impl PgExecutor<'_>,
    id: Uuid,
    roles: &[Role],
) -> Result<UserRow, sqlx::Error> {
    let roles: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
    sqlx::query_as(&format!(
        "UPDATE users SET roles = $2, updated_at = now() WHERE id = $1 RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(&roles)
    .fetch_one(db)
    .await
}

/// The stored password hash (`None`: the account has no password).
pub async fn hashed_password(
    db: impl PgExecutor<'_>,
    id: Uuid,
) -> Result<Option<String>, sqlx::Error> {
    let h: Option<Option<String>> =
        sqlx::query_scalar("SELECT hashed_password FROM users WHERE id = $1 AND NOT deleted")
            .bind(id)
            .fetch_optional(db)
            .await?;
    Ok(h.flatten())
}

pub async fn set_password(
    db: impl PgExecutor<'_>,
    id: Uuid,
    hashed: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET hashed_password = $2, updated_at = now() WHERE id = $1")
        .bind(id)
        .bind(hashed)
        .execute(db)
        .await
        .map(drop)
}

/// Soft-deletes a user (the row stays for the audit log's sake; the name
/// and email are free again). Their keys go with them.
pub async fn soft_delete(conn: &mut sqlx::PgConnection, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM api_keys WHERE user_id = $1").bind(id).execute(&mut *conn).await?;
    sqlx::query("UPDATE users SET deleted = true, updated_at = now() WHERE id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await
        .map(drop)
}

/// The names of the user's workspaces that are not deleted.
pub async fn workspace_names(
    db: impl PgExecutor<'_>,
    id: Uuid,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT name FROM workspaces WHERE owner_id = $1 AND NOT deleted ORDER BY name",
    )
    .bind(id)
    .fetch_all(db)
    .await
}
