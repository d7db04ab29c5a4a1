//! OpenID Connect accounts: the link from a provider's `(issuer, subject)` to
//! a user, the account an OIDC sign-up creates, role sync, and the logins in
//! flight (`oidc_login_states`). Users are read back through
//! [`super::users`], so their row type has one definition.

use chrono::{DateTime, Utc};
use codersdk::{LoginType, Role};
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

/// The user linked to `(issuer, subject)`, if any and not deleted. A link to
/// a deleted user is removed, so the identity can sign up again.
pub async fn linked_user(
    db: &PgPool,
    issuer: &str,
    subject: &str,
) -> Result<Option<Uuid>, sqlx::Error> {
    let row: Option<(Uuid, bool)> = sqlx::query_as(
        "SELECT l.user_id, u.deleted FROM user_links l JOIN users u ON u.id = l.user_id
         WHERE l.issuer = $1 AND l.subject = $2",
    )
    .bind(issuer)
    .bind(subject)
    .fetch_optional(db)
    .await?;
    match row {
        Some((id, false)) => Ok(Some(id)),
        Some((_, true)) => {
            sqlx::query("DELETE FROM user_links WHERE issuer = $1 AND subject = $2")
                .bind(issuer)
                .bind(subject)
                .execute(db)
                .await?;
            Ok(None)
        }
        None => Ok(None),
    }
}

/// An existing (not deleted) account with this email, and how it logs in.
pub async fn by_email(db: &PgPool, email: &str) -> Result<Option<(Uuid, LoginType)>, sqlx::Error> {
    let row: Option<(Uuid, String)> = sqlx::query_as(
        "SELECT id, login_type FROM users WHERE lower(email) = lower($1) AND NOT deleted",
    )
    .bind(email)
    .fetch_optional(db)
    .await?;
    Ok(row.and_then(|(id, t)| t.parse().ok().map(|t| (id, t))))
}

/// Whether a (not deleted) user has this username, case-insensitively.
pub async fn username_taken(db: impl PgExecutor<'_>, name: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM users WHERE lower(username) = lower($1) AND NOT deleted)",
    )
    .bind(name)
    .fetch_one(db)
    .await
}

/// A new OIDC account (no password) and its link, in one transaction. A
/// taken username or email is a unique violation.
pub struct NewOidcUser<'a> {
    pub issuer: &'a str,
    pub subject: &'a str,
    pub email: &'a str,
    pub username: &'a str,
    pub roles: &'a [Role],
}

pub async fn insert_user(db: &PgPool, u: NewOidcUser<'_>) -> Result<Uuid, sqlx::Error> {
    let id = Uuid::new_v4();
    let roles: Vec<&str> = u.roles.iter().map(|r| r.as_str()).collect();
    let mut tx = db.begin().await?;
    sqlx::query(
        "INSERT INTO users (id, email, username, hashed_password, roles, login_type)
         VALUES ($1, $2, $3, NULL, $4, $5)",
    )
    .bind(id)
    .bind(u.email)
    .bind(u.username)
    .bind(&roles)
    .bind(LoginType::Oidc.as_str())
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO user_links (user_id, login_type, issuer, subject, email) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id)
    .bind(LoginType::Oidc.as_str())
    .bind(u.issuer)
    .bind(u.subject)
    .bind(u.email)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(id)
}

/// Records a login through the link (the email the provider last sent).
pub async fn touch_link(
    db: &PgPool,
    issuer: &str,
    subject: &str,
    email: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE user_links SET email = $3, updated_at = now() WHERE issuer = $1 AND subject = $2",
    )
    .bind(issuer)
    .bind(subject)
    .bind(email)
    .execute(db)
    .await
    .map(drop)
}

/// Sets a user's roles (role sync from the provider's groups).
pub async fn set_roles(db: &PgPool, user_id: Uuid, roles: &[Role]) -> Result<(), sqlx::Error> {
    let roles: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
    sqlx::query("UPDATE users SET roles = $2, updated_at = now() WHERE id = $1")
        .bind(user_id)
        .bind(&roles)
        .execute(db)
        .await
        .map(drop)
}

/// A login in flight.
pub struct LoginState {
    pub nonce: String,
    pub pkce_verifier: String,
    pub redirect: String,
}

/// Stores a started login (and drops expired ones).
pub async fn insert_state(
    db: &PgPool,
    state_hash: &[u8],
    s: &LoginState,
    expires_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM oidc_login_states WHERE expires_at < now()").execute(db).await?;
    sqlx::query(
        "INSERT INTO oidc_login_states (state_hash, nonce, pkce_verifier, redirect, expires_at)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(state_hash)
    .bind(&s.nonce)
    .bind(&s.pkce_verifier)
    .bind(&s.redirect)
    .bind(expires_at)
    .execute(db)
    .await
    .map(drop)
}

/// Takes a login in flight: each state is used once, and not after expiry.
pub async fn take_state(db: &PgPool, state_hash: &[u8]) -> Result<Option<LoginState>, sqlx::Error> {
    let row: Option<(String, String, String)> = sqlx::query_as(
        "DELETE FROM oidc_login_states WHERE state_hash = $1 AND expires_at > now()
         RETURNING nonce, pkce_verifier, redirect",
    )
    .bind(state_hash)
    .fetch_optional(db)
    .await?;
    Ok(row.map(|(nonce, pkce_verifier, redirect)| LoginState { nonce, pkce_verifier, redirect }))
}

/// How a user logs in (`password` or `oidc`); the sessions they get carry it.
pub async fn login_type(db: &PgPool, user_id: Uuid) -> Result<LoginType, sqlx::Error> {
    let t: Option<String> = sqlx::query_scalar("SELECT login_type FROM users WHERE id = $1")
        .bind(user_id)
        .fetch_optional(db)
        .await?;
    Ok(t.and_then(|t| t.parse().ok()).unwrap_or(LoginType::Password))
}
