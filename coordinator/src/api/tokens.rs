//! Personal API tokens: create, list, delete. A token is shown once, at
//! creation; afterwards only its id, name and times are listed.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Duration, Utc};
use codersdk::{ApiKey, CreateTokenRequest, GenerateApiKeyResponse};
use uuid::Uuid;

use super::auth::{issue_token, Session};
use super::error::{ApiError, ApiResult, Json, Path};
use super::users::resolve_user;
use super::AppState;
use crate::authz::{Action, Object};

pub async fn create(
    State(state): State<AppState>,
    session: Session,
    Path(user): Path<String>,
    Json(req): Json<CreateTokenRequest>,
) -> ApiResult<(StatusCode, Json<GenerateApiKeyResponse>)> {
    let user = resolve_user(&state, &session, &user).await?;
    session.authorize(Action::Create, Object::ApiKey { owner: user.id })?;
    let name = if req.token_name.is_empty() {
        format!("token-{}", crate::secrets::random_string(6).to_lowercase())
    } else {
        req.token_name.clone()
    };
    if name.len() > 64 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
        return Err(ApiError::bad_request("Invalid token name.")
            .detail("Use up to 64 letters, digits, '-', '_' or '.'."));
    }
    let max = state.config.max_token_lifetime;
    let lifetime = match req.lifetime {
        0 => state.config.default_token_lifetime,
        s if s < 0 => return Err(ApiError::bad_request("Token lifetime must be positive.")),
        s if s > max.num_seconds() => {
            return Err(ApiError::bad_request(format!(
                "Token lifetime must be at most {} days.",
                max.num_days()
            )))
        }
        s => Duration::seconds(s),
    };
    match issue_token(&state.db, user.id, "token", Some(&name), lifetime).await {
        Ok(key) => Ok((StatusCode::CREATED, Json(GenerateApiKeyResponse { key }))),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            Err(ApiError::conflict(format!("A token named {name:?} already exists.")))
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(sqlx::FromRow)]
struct KeyRow {
    id: String,
    user_id: Uuid,
    token_name: Option<String>,
    login_type: String,
    expires_at: DateTime<Utc>,
    last_used: DateTime<Utc>,
    created_at: DateTime<Utc>,
}

pub async fn list(
    State(state): State<AppState>,
    session: Session,
    Path(user): Path<String>,
) -> ApiResult<Json<Vec<ApiKey>>> {
    let user = resolve_user(&state, &session, &user).await?;
    session.authorize(Action::Read, Object::ApiKey { owner: user.id })?;
    let rows: Vec<KeyRow> = sqlx::query_as(
        "SELECT id, user_id, token_name, login_type, expires_at, last_used, created_at
         FROM api_keys WHERE user_id = $1 AND login_type = 'token' ORDER BY created_at",
    )
    .bind(user.id)
    .fetch_all(&state.db)
    .await?;
    Ok(Json(
        rows.into_iter()
            .map(|r| ApiKey {
                id: r.id,
                user_id: r.user_id,
                token_name: r.token_name.unwrap_or_default(),
                login_type: r.login_type,
                expires_at: r.expires_at,
                last_used: r.last_used,
                created_at: r.created_at,
            })
            .collect(),
    ))
}

/// Deletes a key by id or token name. Owners may delete anyone's keys.
pub async fn delete(
    State(state): State<AppState>,
    session: Session,
    Path((user, key)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let user = resolve_user(&state, &session, &user).await?;
    session.authorize(Action::Delete, Object::ApiKey { owner: user.id })?;
    let deleted =
        sqlx::query("DELETE FROM api_keys WHERE user_id = $1 AND (id = $2 OR token_name = $2)")
            .bind(user.id)
            .bind(&key)
            .execute(&state.db)
            .await?
            .rows_affected();
    if deleted == 0 {
        return Err(ApiError::not_found("Token"));
    }
    Ok(StatusCode::NO_CONTENT)
}
