//! Personal API tokens: create, list, delete. A token is shown once, at
//! creation; afterwards only its id, name and times are listed.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::Duration;
use codersdk::{ApiKey, AuditAction, CreateTokenRequest, GenerateApiKeyResponse, ResourceType};
use serde_json::json;

use super::audit::{created, Entry, Origin};
use super::auth::{issue_token, Session};
use super::error::{ApiError, ApiResult, Json, Path};
use super::users::resolve_user;
use super::AppState;
use crate::authz::{Action, Object};
use crate::database::api_keys;

pub async fn create(
    State(state): State<AppState>,
    session: Session,
    origin: Origin,
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
    let mut tx = state.db.begin().await?;
    let key =
        match issue_token(&mut *tx, user.id, codersdk::LoginType::Token, Some(&name), lifetime)
            .await
        {
            Ok(key) => key,
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(ApiError::conflict(format!("A token named {name:?} already exists.")))
            }
            Err(e) => return Err(e.into()),
        };
    let diff = created(&[
        ("token_name", json!(name)),
        ("owner", json!(user.username)),
        ("lifetime_seconds", json!(lifetime.num_seconds())),
    ]);
    let mut entry = Entry::new(AuditAction::Create, ResourceType::ApiKey, user.id, &name)
        .diff(diff)
        .status(StatusCode::CREATED);
    // Api keys are named by text ids, not UUIDs: the row names the token.
    entry.resource_id = None;
    origin.record(&mut *tx, (&session).into(), entry).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(GenerateApiKeyResponse { key })))
}

pub async fn list(
    State(state): State<AppState>,
    session: Session,
    Path(user): Path<String>,
) -> ApiResult<Json<Vec<ApiKey>>> {
    let user = resolve_user(&state, &session, &user).await?;
    session.authorize(Action::Read, Object::ApiKey { owner: user.id })?;
    let rows = api_keys::personal_tokens(&state.db, user.id).await?;
    Ok(Json(rows.into_iter().map(api_keys::TokenRow::into_api).collect()))
}

/// Deletes a key by id or token name. Owners may delete anyone's keys.
pub async fn delete(
    State(state): State<AppState>,
    session: Session,
    origin: Origin,
    Path((user, key)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let user = resolve_user(&state, &session, &user).await?;
    session.authorize(Action::Delete, Object::ApiKey { owner: user.id })?;
    let mut tx = state.db.begin().await?;
    let deleted = api_keys::delete_by_id_or_name(&mut *tx, user.id, &key).await?;
    let Some((id, token_name)) = deleted else { return Err(ApiError::not_found("Token")) };
    let name = token_name.unwrap_or_else(|| id.clone());
    let mut entry = Entry::new(AuditAction::Delete, ResourceType::ApiKey, user.id, &name)
        .diff(json!({"key_id": {"old": id, "new": null}, "owner": {"old": user.username, "new": null}}))
        .status(StatusCode::NO_CONTENT);
    entry.resource_id = None;
    origin.record(&mut *tx, (&session).into(), entry).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
